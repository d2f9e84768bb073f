//! The model-driven editing operations on a tiny random model, against their closed
//! forms: the partial sampler pieces compose to the full ones bit for bit, re-noise at
//! s = 0 / s = 1 is the image / encode + decode, and inpainting keeps and redraws
//! exactly what it says.
use ddimd::engine::config::UNetConfig;
use ddimd::engine::edit::{self, Rect};
use ddimd::engine::noise::{initial_noise, seeds, SampleSeed};
use ddimd::engine::sampler::{self, SamplerOptions, StepEvent};
use ddimd::engine::schedule::SchedulerConfig;
use ddimd::engine::{EngineError, Model, Spacing};
use tch::{Device, Kind, Tensor};

const S: usize = 6;

fn model() -> Model {
    tch::manual_seed(0);
    Model::from_config(
        UNetConfig::preset("test", 1, 16).unwrap(),
        SchedulerConfig::default(),
        Device::Cpu,
    )
    .unwrap()
}

/// An image-like x0 in [−1, 1]: a bright square on a dark background.
fn image() -> Tensor {
    let x = Tensor::full([1, 1, 16, 16], -0.9, (Kind::Float, Device::Cpu));
    let _ = x.narrow(2, 4, 8).narrow(3, 5, 6).fill_(0.7);
    x
}

fn opts(eta: f64, spacing: Spacing) -> SamplerOptions {
    SamplerOptions {
        steps: S,
        eta,
        spacing,
        sigma_hat: false,
        solver: Default::default(),
    }
}

fn quiet() -> impl FnMut(&StepEvent) -> bool {
    |_| true
}

fn rows(x: &Tensor, n: i64) -> Tensor {
    x.repeat([n, 1, 1, 1])
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

#[test]
fn sample_from_and_invert_partial_at_k_equal_s_are_the_full_runs() {
    let m = model();
    let x0 = image();
    for (eta, spacing) in [
        (0.0, Spacing::Uniform),
        (1.0, Spacing::Quad),
        (0.5, Spacing::Trailing),
    ] {
        let o = opts(eta, spacing);
        let full = sampler::invert(&m, &x0, S, spacing, &mut quiet()).unwrap();
        let part = sampler::invert_partial(&m, &x0, S, spacing, S, &mut quiet()).unwrap();
        assert!(part.equal(&full), "invert {spacing}");
        let sd = seeds(3, 2);
        let xt = initial_noise(&sd, [1, 16, 16], Device::Cpu);
        let a = sampler::sample(&m, &xt, &o, &sd, &mut quiet()).unwrap();
        let b = sampler::sample_from(&m, &xt, &o, S, &sd, &mut quiet()).unwrap();
        assert!(a.equal(&b), "sample η={eta} {spacing}");
    }
    // k = 0 is the identity for both.
    let o = opts(1.0, Spacing::Uniform);
    let x0 = image();
    assert!(
        sampler::invert_partial(&m, &x0, S, Spacing::Uniform, 0, &mut quiet())
            .unwrap()
            .equal(&x0)
    );
    let sd = seeds(0, 1);
    assert!(sampler::sample_from(&m, &x0, &o, 0, &sd, &mut quiet())
        .unwrap()
        .equal(&x0));
}

#[test]
fn partial_runs_walk_the_right_levels_and_validate_k() {
    let m = model();
    let x0 = image();
    let o = opts(0.0, Spacing::Uniform);
    let ts = Spacing::Uniform.timesteps(S, m.num_train_timesteps());
    let k = 4;
    let mut seen = vec![];
    let xk = sampler::invert_partial(&m, &x0, S, Spacing::Uniform, k, &mut |e| {
        seen.push((e.step, e.total, e.t));
        true
    })
    .unwrap();
    assert_eq!(
        seen,
        (0..k).map(|i| (i + 1, k, ts[i])).collect::<Vec<_>>(),
        "inversion visits τ_1..τ_k"
    );
    // Inverting k steps = the full inversion's first k steps: continuing by hand from
    // x_{τ_k} with the remaining invert_steps gives the full x_T.
    let mut x = xk.shallow_clone();
    for i in k..S {
        x = sampler::invert_step(&m, &x, ts[i - 1], ts[i]);
    }
    let full = sampler::invert(&m, &x0, S, Spacing::Uniform, &mut quiet()).unwrap();
    assert!(max_diff(&x, &full) == 0.0);
    let mut seen = vec![];
    let sd = seeds(0, 1);
    let _ = sampler::sample_from(&m, &xk, &o, k, &sd, &mut |e| {
        seen.push((e.step, e.total, e.t));
        true
    })
    .unwrap();
    assert_eq!(
        seen,
        (0..k)
            .map(|i| (i + 1, k, ts[k - 1 - i]))
            .collect::<Vec<_>>(),
        "sampling goes τ_k → … → τ_1 → 0"
    );
    let e = sampler::invert_partial(&m, &x0, S, Spacing::Uniform, S + 1, &mut quiet());
    let e = e.unwrap_err().to_string();
    assert!(
        e.contains("k must be in 0..=6 (the plan's steps), got 7"),
        "{e}"
    );
    let e = sampler::sample_from(&m, &xk, &o, S + 1, &sd, &mut quiet());
    assert!(e.unwrap_err().to_string().contains("got 7"));
}

#[test]
fn renoise_endpoints_and_the_partial_composition() {
    let m = model();
    let x0 = image();
    let sd = seeds(11, 3);
    let o = opts(1.0, Spacing::Uniform);
    // s = 0: the image, once per seed.
    let r0 = edit::renoise(&m, &x0, 0.0, &o, &sd, 0.0, &mut quiet()).unwrap();
    assert!(r0.equal(&rows(&x0, 3)));
    // s = 1: a full encode followed by a stochastic decode with the same seeds.
    let r1 = edit::renoise(&m, &x0, 1.0, &o, &sd, 0.0, &mut quiet()).unwrap();
    let xt = sampler::invert(&m, &x0, S, o.spacing, &mut quiet()).unwrap();
    let want = sampler::sample(&m, &rows(&xt, 3), &o, &sd, &mut quiet()).unwrap();
    assert!(r1.equal(&want), "s = 1 is invert + sample bit for bit");
    // 0 < s < 1: invert k = ⌈s·S⌉ steps, sample the last k; events count 2k.
    let s = 0.5;
    let k = edit::renoise_steps(s, S);
    assert_eq!(k, 3);
    let mut events = vec![];
    let r = edit::renoise(&m, &x0, s, &o, &sd, 0.0, &mut |e| {
        events.push((e.step, e.total));
        true
    })
    .unwrap();
    assert_eq!(events, (1..=2 * k).map(|i| (i, 2 * k)).collect::<Vec<_>>());
    let xk = sampler::invert_partial(&m, &x0, S, o.spacing, k, &mut quiet()).unwrap();
    let want = sampler::sample_from(&m, &rows(&xk, 3), &o, k, &sd, &mut quiet()).unwrap();
    assert!(r.equal(&want));
    // η > 0 redraws per seed; η = 0 without perturbation is deterministic.
    assert!(max_diff(&r.get(0), &r.get(1)) > 1e-4);
    let det = opts(0.0, Spacing::Uniform);
    let r = edit::renoise(&m, &x0, s, &det, &sd, 0.0, &mut quiet()).unwrap();
    assert!(r.get(0).equal(&r.get(1)) && r.get(1).equal(&r.get(2)));
    // η = 0 with perturbation: x_{τ_k} is slerped towards the seed's noise first.
    let p = 0.4;
    let r = edit::renoise(&m, &x0, s, &det, &sd, p, &mut quiet()).unwrap();
    let z = initial_noise(&sd, [1, 16, 16], Device::Cpu);
    let moved = ddimd::engine::interp::slerp(&rows(&xk, 3), &z, p);
    let want = sampler::sample_from(&m, &moved, &det, k, &sd, &mut quiet()).unwrap();
    assert!(r.equal(&want));
    assert!(max_diff(&r.get(0), &r.get(1)) > 1e-4);
}

#[test]
fn renoise_validates() {
    let m = model();
    let x0 = image();
    let sd = seeds(0, 2);
    let o = opts(0.0, Spacing::Uniform);
    let msg = |r: Result<Tensor, EngineError>| r.unwrap_err().to_string();
    assert!(msg(edit::renoise(&m, &x0, 1.2, &o, &sd, 0.0, &mut quiet())).contains("strength"));
    assert!(msg(edit::renoise(&m, &x0, 0.5, &o, &sd, -0.1, &mut quiet())).contains("perturb"));
    let three = rows(&x0, 3);
    assert!(
        msg(edit::renoise(&m, &three, 0.5, &o, &sd, 0.0, &mut quiet()))
            .contains("3 rows for 2 seeds")
    );
    let bad = Tensor::zeros([1, 1, 8, 8], (Kind::Float, Device::Cpu));
    assert!(
        msg(edit::renoise(&m, &bad, 0.5, &o, &sd, 0.0, &mut quiet())).contains("expected shape")
    );
    let r = edit::renoise(&m, &x0, 0.5, &o, &sd, 0.0, &mut |_| false);
    assert!(matches!(r, Err(EngineError::Cancelled)));
}

fn all(v: f64) -> Tensor {
    Tensor::full([1, 1, 16, 16], v, (Kind::Float, Device::Cpu))
}

#[test]
fn inpaint_keep_all_is_the_reconstruction_and_keep_none_is_sampling() {
    let m = model();
    let x0 = image();
    let sd = seeds(7, 2);
    let det = opts(0.0, Spacing::Uniform);
    let xt = sampler::invert(&m, &x0, S, det.spacing, &mut quiet()).unwrap();
    let rec = sampler::sample(&m, &xt, &det, &[SampleSeed::new(0, 0)], &mut quiet()).unwrap();
    let mut n_events = 0;
    let kept = edit::inpaint(&m, &x0, &all(1.0), &det, &sd, &mut |e| {
        n_events += 1;
        assert_eq!(e.total, 3 * S);
        true
    })
    .unwrap();
    assert_eq!(n_events, 3 * S);
    assert!(
        kept.equal(&rows(&rec, 2)),
        "keep = 1, η = 0: the plain reconstruction"
    );
    let z = initial_noise(&sd, [1, 16, 16], Device::Cpu);
    let none = edit::inpaint(&m, &x0, &all(0.0), &det, &sd, &mut quiet()).unwrap();
    assert!(none.equal(&sampler::sample(&m, &z, &det, &sd, &mut quiet()).unwrap()));
    let sto = opts(1.0, Spacing::Quad);
    let none = edit::inpaint(&m, &x0, &all(0.0), &sto, &sd, &mut quiet()).unwrap();
    assert!(none.equal(&sampler::sample(&m, &z, &sto, &sd, &mut quiet()).unwrap()));
    // η > 0 keeps q(x_t | x0) samples, ending at x0 itself.
    let kept = edit::inpaint(&m, &x0, &all(1.0), &sto, &sd, &mut quiet()).unwrap();
    assert!(kept.equal(&rows(&x0, 2)));
    // From a latent: keep = 1 is its η = 0 decode.
    let kept = edit::inpaint_latent(&m, &xt, &all(1.0), &det, &sd, &mut quiet()).unwrap();
    assert!(kept.equal(&rows(&rec, 2)));
}

#[test]
fn inpaint_keeps_outside_the_rectangle_and_redraws_inside() {
    let m = model();
    let x0 = image();
    let sd = seeds(7, 2);
    let keep = edit::rect_mask(
        m.sample_shape(),
        &[Rect {
            x: 3,
            y: 2,
            w: 6,
            h: 5,
        }],
    )
    .unwrap();
    let inside = keep
        .lt(0.5)
        .to_kind(Kind::Bool)
        .expand([2, 1, 16, 16], false);
    let outside = keep.to_kind(Kind::Bool).expand([2, 1, 16, 16], false);
    let pick = |x: &Tensor, sel: &Tensor| x.masked_select(sel);
    let det = opts(0.0, Spacing::Uniform);
    let xt = sampler::invert(&m, &x0, S, det.spacing, &mut quiet()).unwrap();
    let rec = rows(
        &sampler::sample(&m, &xt, &det, &[SampleSeed::new(0, 0)], &mut quiet()).unwrap(),
        2,
    );
    let out = edit::inpaint(&m, &x0, &keep, &det, &sd, &mut quiet()).unwrap();
    assert_eq!(out.size(), vec![2, 1, 16, 16]);
    assert!(
        pick(&out, &outside).equal(&pick(&rec, &outside)),
        "kept = reconstruction"
    );
    assert!(
        max_diff(&pick(&out, &inside), &pick(&rec, &inside)) > 1e-3,
        "inside redrawn"
    );
    assert!(
        max_diff(&out.get(0), &out.get(1)) > 1e-3,
        "each seed redraws differently"
    );
    // Row i depends only on its seed.
    let alone = edit::inpaint(&m, &x0, &keep, &det, &sd[1..], &mut quiet()).unwrap();
    let (d, scale) = (
        max_diff(&alone.get(0), &out.get(1)),
        out.abs().max().double_value(&[]),
    );
    assert!(d < 1e-5 * scale.max(1.0), "{d} {scale}");
    // η > 0: the kept region is the original itself; a [1, C, H, W] mask works too.
    let sto = opts(1.0, Spacing::Uniform);
    let out = edit::inpaint(&m, &x0, &keep, &sto, &sd, &mut quiet()).unwrap();
    let x0r = rows(&x0, 2);
    assert!(pick(&out, &outside).equal(&pick(&x0r, &outside)));
    assert!(max_diff(&pick(&out, &inside), &pick(&x0r, &inside)) > 1e-3);
}

#[test]
fn inpaint_validates() {
    let m = model();
    let x0 = image();
    let sd = seeds(0, 1);
    let o = opts(0.0, Spacing::Uniform);
    let msg = |r: Result<Tensor, EngineError>| r.unwrap_err().to_string();
    let wrong = Tensor::ones([1, 1, 8, 8], (Kind::Float, Device::Cpu));
    assert!(msg(edit::inpaint(&m, &x0, &wrong, &o, &sd, &mut quiet()))
        .contains("keep: expected a mask of shape [1, 1, 16, 16]"));
    assert!(msg(edit::inpaint(&m, &x0, &all(2.0), &o, &sd, &mut quiet())).contains("[0, 1]"));
    assert!(msg(edit::inpaint(
        &m,
        &rows(&x0, 2),
        &all(1.0),
        &o,
        &sd,
        &mut quiet()
    ))
    .contains("one image"));
    assert!(msg(edit::inpaint(&m, &x0, &all(1.0), &o, &[], &mut quiet())).contains("seed"));
    let r = edit::inpaint(&m, &x0, &all(1.0), &o, &sd, &mut |e| e.step < 2);
    assert!(matches!(r, Err(EngineError::Cancelled)));
}
