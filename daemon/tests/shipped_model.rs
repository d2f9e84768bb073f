//! Focused checks of the shipped default model, `models/fashion-mnist`.
//! The figures (grids, the reconstruction table) live in its MODEL.md.
use ddimd::cli::default_model_dir;
use ddimd::engine::noise;
use ddimd::engine::sampler::{self, SamplerOptions};
use ddimd::engine::{Model, Spacing};
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
