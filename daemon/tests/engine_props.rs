//! Engine properties on tiny random models: seeded samples do not depend on
//! the batch, inversion is consistent, η = 0 is deterministic, and the
//! reconstruction error of a (briefly) trained model falls with S.
use ddimd::engine::config::UNetConfig;
use ddimd::engine::noise::{self, SampleSeed};
use ddimd::engine::sampler::{self, SamplerOptions};
use ddimd::engine::schedule::SchedulerConfig;
use ddimd::engine::{Model, Spacing};
use tch::{Device, Tensor};

fn random_model(preset: &str) -> Model {
    tch::manual_seed(0);
    Model::from_config(
        UNetConfig::preset(preset, 1, 16).unwrap(),
        SchedulerConfig::default(),
        Device::Cpu,
    )
    .unwrap()
}

#[test]
fn seeded_sample_is_independent_of_batch_size_and_position() {
    let m = random_model("test-attn");
    for opts in [
        SamplerOptions {
            steps: 8,
            eta: 0.0,
            spacing: Spacing::Uniform,
            sigma_hat: false,
            solver: Default::default(),
        },
        SamplerOptions {
            steps: 8,
            eta: 1.0,
            spacing: Spacing::Quad,
            sigma_hat: false,
            solver: Default::default(),
        },
        SamplerOptions {
            steps: 8,
            eta: 0.0,
            spacing: Spacing::Trailing,
            sigma_hat: true,
            solver: Default::default(),
        },
    ] {
        let target = SampleSeed::new(42, 5);
        let alone = {
            let s = [target];
            let xt = noise::initial_noise(&s, m.sample_shape(), Device::Cpu);
            sampler::sample(&m, &xt, &opts, &s, &mut |_| true).unwrap()
        };
        let batch = [
            SampleSeed::new(1, 0),
            SampleSeed::new(42, 4),
            target,
            SampleSeed::new(7, 5),
        ];
        let xt = noise::initial_noise(&batch, m.sample_shape(), Device::Cpu);
        let out = sampler::sample(&m, &xt, &opts, &batch, &mut |_| true).unwrap();
        // x_T and the η-noise are bit-identical (noise.rs); the network's
        // float rounding may depend on the batch size, so compare relatively.
        assert!(xt
            .get(2)
            .equal(&noise::initial_noise(&[target], m.sample_shape(), Device::Cpu).get(0)));
        let scale = alone.abs().max().double_value(&[]).max(1.0);
        let err = (out.get(2) - alone.get(0)).abs().max().double_value(&[]) / scale;
        assert!(
            err < 1e-5,
            "{opts:?}: batch changed the sample by {err} (relative)"
        );
        // And the other rows differ (the noise is really per sample).
        assert!((out.get(1) - out.get(2)).abs().max().double_value(&[]) > 1e-3);
    }
}

#[test]
fn eta_zero_is_deterministic_and_eta_one_is_not_noise_free() {
    let m = random_model("test");
    let s = noise::seeds(3, 2);
    let xt = noise::initial_noise(&s, m.sample_shape(), Device::Cpu);
    let o0 = SamplerOptions {
        steps: 10,
        ..Default::default()
    };
    let a = sampler::sample(&m, &xt, &o0, &s, &mut |_| true).unwrap();
    let s2 = noise::seeds(99, 2);
    let b = sampler::sample(&m, &xt, &o0, &s2, &mut |_| true).unwrap();
    assert!(a.equal(&b), "η = 0 must not draw noise");
    let o1 = SamplerOptions { eta: 1.0, ..o0 };
    let c = sampler::sample(&m, &xt, &o1, &s, &mut |_| true).unwrap();
    let d = sampler::sample(&m, &xt, &o1, &s2, &mut |_| true).unwrap();
    assert!(!c.equal(&d), "η = 1 with other seeds must differ");
}

#[test]
fn progress_reports_every_step_and_cancel_stops() {
    let m = random_model("test");
    let s = noise::seeds(0, 1);
    let xt = noise::initial_noise(&s, m.sample_shape(), Device::Cpu);
    let mut seen = vec![];
    let opts = SamplerOptions {
        steps: 7,
        ..Default::default()
    };
    let _ = sampler::sample(&m, &xt, &opts, &s, &mut |e| {
        seen.push((e.step, e.total));
        true
    })
    .unwrap();
    assert_eq!(seen, (1..=7).map(|i| (i, 7)).collect::<Vec<_>>());
    let mut calls = 0;
    let r = sampler::sample(&m, &xt, &opts, &s, &mut |_| {
        calls += 1;
        calls < 3
    });
    assert!(matches!(r, Err(ddimd::engine::EngineError::Cancelled)));
    assert_eq!(calls, 3);
}

#[test]
fn last_step_lands_on_alpha_one() {
    let m = random_model("test");
    for sp in Spacing::ALL {
        let plan = sampler::plan(
            &SamplerOptions {
                steps: 13,
                spacing: sp,
                ..Default::default()
            },
            1000,
        );
        assert_eq!(plan.last().unwrap().1, -1, "{sp}");
        assert_eq!(m.schedule.alpha_bar(-1), 1.0);
        assert!(
            plan.windows(2).all(|w| w[0].1 == w[1].0),
            "{sp}: steps must chain"
        );
    }
}

/// Trains the test model briefly on a few smooth images, then checks that
/// encode→decode error falls as S grows 10 → 100 → 1000.
#[test]
fn reconstruction_error_falls_with_steps_on_a_trained_model() {
    tch::manual_seed(1);
    let cfg = UNetConfig::preset("test", 1, 16).unwrap();
    let m = Model::from_config(cfg, SchedulerConfig::default(), Device::Cpu).unwrap();
    // A few smooth blobs as data.
    let g = Tensor::linspace(-1.0, 1.0, 16, (tch::Kind::Float, Device::Cpu));
    let yy = g.view([16, 1]).expand([16, 16], false);
    let xx = g.view([1, 16]).expand([16, 16], false);
    let mut imgs = vec![];
    for k in 0..8 {
        let (cx, cy) = ((k as f64 * 0.37).sin() * 0.5, (k as f64 * 0.71).cos() * 0.5);
        let r2 = (&xx - cx).square() + (&yy - cy).square();
        imgs.push(((r2 * -6.0).exp() * 2.0 - 1.0).view([1, 1, 16, 16]));
    }
    let data = Tensor::cat(&imgs, 0);
    let ab = Tensor::from_slice(&m.schedule.alphas_cumprod).to_kind(tch::Kind::Float);
    let mut opt = tch::nn::OptimizerConfig::build(tch::nn::Adam::default(), &m.vs, 3e-3).unwrap();
    for step in 0..300 {
        tch::manual_seed(step);
        let t = Tensor::randint(1000, [8], (tch::Kind::Int64, Device::Cpu));
        let eps = Tensor::randn([8, 1, 16, 16], (tch::Kind::Float, Device::Cpu));
        let a = ab.index_select(0, &t).view([-1, 1, 1, 1]);
        let xt = &data * a.sqrt() + &eps * (a.ones_like() - &a).sqrt();
        let loss = (m.unet.forward_t(&xt, &t, true) - eps)
            .square()
            .mean(tch::Kind::Float);
        opt.backward_step(&loss);
    }
    let x0 = data.narrow(0, 0, 4);
    let err = |s: usize| {
        let (mse, _) = sampler::reconstruct(&m, &x0, s, Spacing::Uniform, &mut |_| true).unwrap();
        mse.iter().sum::<f64>() / mse.len() as f64
    };
    let (e10, e100, e1000) = (err(10), err(100), err(1000));
    assert!(
        e10 > e100 && e100 > e1000,
        "MSE must fall with S: {e10} {e100} {e1000}"
    );
}
