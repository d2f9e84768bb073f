//! Focused checks of the shipped default model, `models/fashion-mnist`.
//! The figures (grids, the reconstruction table) live in its MODEL.md.
use ddimd::cli::default_model_dir;
use ddimd::engine::noise;
use ddimd::engine::sampler::{self, SamplerOptions};
use ddimd::engine::{Model, Solver, Spacing};
use ddimd::train::data::{fashion_mnist, Split};
use tch::{Device, Kind, Tensor};

fn shipped() -> Model {
    let m = Model::load(&default_model_dir(), Device::Cpu).expect("the shipped model loads");
    assert_eq!(m.sample_shape(), [1, 32, 32]);
    assert!(m.config.to_diffusers_json()["_class_name"] == "UNet2DModel");
    m
}

#[test]
fn shipped_model_samples_are_sane() {
    let m = shipped();
    assert!(m.parameter_count() > 1_000_000);
    let opts = SamplerOptions {
        steps: 10,
        ..Default::default()
    };
    let seeds = noise::seeds(2026, 3);
    let xt = noise::initial_noise(&seeds, m.sample_shape(), Device::Cpu);
    let x = sampler::sample(&m, &xt, &opts, &seeds, &mut |_| true).unwrap();
    assert_eq!(x.size(), vec![3, 1, 32, 32]);
    // Finite, in range (a trained model lands near [−1, 1]), not constant.
    assert!(x.isfinite().all().int64_value(&[]) == 1);
    let (lo, hi) = (x.min().double_value(&[]), x.max().double_value(&[]));
    assert!(lo > -1.5 && hi < 1.5, "range [{lo}, {hi}]");
    for i in 0..3 {
        let std = x.get(i).std(true).double_value(&[]);
        assert!(std > 0.1, "sample {i} is nearly constant (std {std})");
        // Fashion-MNIST: a dark background around the garment.
        let corner = x.get(i).get(0).get(0).get(0).double_value(&[]);
        assert!(
            corner < -0.5,
            "sample {i}: corner {corner} is not background"
        );
    }
    // Different seeds give different images; the same seed the same one.
    assert!(
        (x.get(0) - x.get(1))
            .abs()
            .mean(Kind::Float)
            .double_value(&[])
            > 0.05
    );
    let again =
        sampler::sample(&m, &xt.narrow(0, 0, 1), &opts, &seeds[..1], &mut |_| true).unwrap();
    let err = (again.get(0) - x.get(0)).abs().max().double_value(&[]);
    assert!(err < 1e-4, "{err}");
}

#[test]
fn shipped_model_reconstruction_error_falls_with_steps() {
    let m = shipped();
    let x0: Tensor = fashion_mnist(Split::Test, m.sample_shape())
        .unwrap()
        .narrow(0, 0, 2);
    let err = |s: usize| {
        let (mse, _) = sampler::reconstruct(&m, &x0, s, Spacing::Uniform, &mut |_| true).unwrap();
        mse.iter().sum::<f64>() / mse.len() as f64
    };
    let (e5, e20, e50) = (err(5), err(12), err(30));
    assert!(
        e5 > e20 && e20 > e50,
        "MSE must fall with S: {e5} {e20} {e50}"
    );
    assert!(
        e50 < 0.01,
        "30-step reconstruction MSE {e50} is too large for a trained model"
    );
}

/// DPM-Solver++(2M) on the shipped model: its encode → decode reconstructs
/// closely, and far closer than DDIM's at the same S (measured 15–30×, so the
/// margin is wide). Figures: docs/benchmarks.md.
#[test]
fn shipped_model_dpmpp_2m_reconstructs_closer_than_ddim() {
    let m = shipped();
    let x0: Tensor = fashion_mnist(Split::Test, m.sample_shape())
        .unwrap()
        .narrow(0, 0, 2);
    let rec = |s: usize, solver: Solver| {
        let (mse, _) =
            sampler::reconstruct_with(&m, &x0, s, Spacing::Uniform, solver, &mut |_| true).unwrap();
        mse.iter().sum::<f64>() / mse.len() as f64
    };
    for s in [10, 20] {
        let (e_ddim, e_dpm) = (rec(s, Solver::Ddim), rec(s, Solver::DpmPP2M));
        eprintln!("S = {s} reconstruction MSE: ddim {e_ddim:.2e}, dpmpp-2m {e_dpm:.2e}");
        assert!(
            e_dpm < 0.01 && 2.0 * e_dpm < e_ddim,
            "S = {s}: dpmpp-2m reconstruction MSE {e_dpm} is not well below ddim's {e_ddim}"
        );
    }
}

/// At equal S, DPM-Solver++(2M) samples are closer to the 1000-step DDIM sample
/// from the same x_T than DDIM's, on `linspace` steps (which start at t = 999 like
/// the 1000-step run; `uniform` starts at T − T/S, a different starting level,
/// and there the comparison measures that offset, not the solver). 1000 model
/// calls: set DDIMD_TEST_SOLVER_REFERENCE=1 to run it.
#[test]
fn shipped_model_dpmpp_2m_is_closer_to_the_1000_step_sample() {
    if std::env::var_os("DDIMD_TEST_SOLVER_REFERENCE").is_none() {
        eprintln!("skipped: set DDIMD_TEST_SOLVER_REFERENCE=1 (1000 model calls)");
        return;
    }
    let m = shipped();
    let seeds = noise::seeds(0, 4);
    let xt = noise::initial_noise(&seeds, m.sample_shape(), Device::Cpu);
    let run = |steps: usize, solver: Solver| {
        let opts = SamplerOptions {
            steps,
            solver,
            spacing: Spacing::Linspace,
            ..Default::default()
        };
        sampler::sample(&m, &xt, &opts, &seeds, &mut |_| true).unwrap()
    };
    let reference = run(1000, Solver::Ddim);
    let dist = |x: &Tensor| {
        let d = sampler::mse01(x, &reference);
        d.iter().sum::<f64>() / d.len() as f64
    };
    for s in [10, 20] {
        let (d_ddim, d_dpm) = (dist(&run(s, Solver::Ddim)), dist(&run(s, Solver::DpmPP2M)));
        eprintln!("S = {s}: MSE to the 1000-step sample: ddim {d_ddim:.2e}, dpmpp-2m {d_dpm:.2e}");
        assert!(
            d_dpm < d_ddim,
            "S = {s}: dpmpp-2m ({d_dpm}) is not closer to the 1000-step sample than ddim ({d_ddim})"
        );
    }
}
