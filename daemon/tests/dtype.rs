//! `--dtype`: the UNet in bf16/fp16 with the sampler's arithmetic kept in fp32, on the
//! shipped model, on the CPU (libtorch runs bf16 and fp16 there; faster than fp32 only
//! where the CPU has bf16 instructions).
use ddimd::cli::default_model_dir;
use ddimd::engine::compiled::CompiledMode;
use ddimd::engine::model::UNetDtype;
use ddimd::engine::noise;
use ddimd::engine::sampler::{self, SamplerOptions};
use ddimd::engine::{Model, Solver};
use tch::{Device, Kind, Tensor};

fn shipped(dtype: UNetDtype) -> Model {
    let mut m = Model::load(&default_model_dir(), Device::Cpu).expect("the shipped model loads");
    m.set_dtype(dtype)
        .expect("libtorch runs the UNet in this dtype on the CPU");
    m
}

/// Per-dimension MSE on [0, 1] between two batches in model space [−1, 1].
fn mse01(a: &Tensor, b: &Tensor) -> f64 {
    ((a - b) / 2.0)
        .square()
        .mean(Kind::Double)
        .double_value(&[])
}

fn sample(m: &Model, solver: Solver) -> Tensor {
    let _g = tch::no_grad_guard();
    let opts = SamplerOptions {
        steps: 20,
        solver,
        ..Default::default()
    };
    let seeds = noise::seeds(11, 4);
    let xt = noise::initial_noise(&seeds, m.sample_shape(), Device::Cpu);
    sampler::sample(m, &xt, &opts, &seeds, &mut |_| true).unwrap()
}

/// bf16 sampling runs, returns fp32, and lands close to the fp32 sample from the same
/// x_T. How close: bf16 keeps 8 mantissa bits, so ε̂ differs from fp32's by about 1%;
/// the η = 0 ODE carries a perturbation made at high noise (where x̂0 amplifies ε̂'s
/// error by √(1−ᾱ)/√ᾱ, ~150 at t = 999) through to the image, so the bf16 sample is the
/// same garment with slightly different detail, not the same bits. Measured here on
/// 4 samples, S = 20: MSE on [0, 1] of 1e-3–7e-3 per sample (4e-3 mean), while two
/// different seeds' samples are 8e-2–3e-1 apart. The bounds: mean below 2e-2 (a quarter
/// of the closest two seeds' distance), and each sample 5× closer to its fp32 twin than
/// to the next seed's sample: bf16 keeps the image, not only the statistics.
#[test]
fn bf16_sampling_stays_close_to_fp32() {
    let fp32 = shipped(UNetDtype::Fp32);
    let bf16 = shipped(UNetDtype::Bf16);
    assert_eq!(bf16.dtype, UNetDtype::Bf16);
    for solver in [Solver::Ddim, Solver::DpmPP2M] {
        let a = sample(&fp32, solver);
        let b = sample(&bf16, solver);
        assert_eq!(b.kind(), Kind::Float, "the sampler's state stays fp32");
        assert!(b.isfinite().all().int64_value(&[]) == 1);
        let d = mse01(&a, &b);
        let apart = (0..4)
            .map(|i| mse01(&a.get((i + 1) % 4), &a.get(i)))
            .fold(f64::INFINITY, f64::min);
        eprintln!(
            "{solver}: MSE(bf16, fp32) on [0, 1] = {d:.2e}; closest two fp32 samples {apart:.2e}"
        );
        for i in 0..4 {
            let own = mse01(&a.get(i), &b.get(i));
            let other = mse01(&a.get((i + 1) % 4), &b.get(i));
            eprintln!("  sample {i}: to its fp32 twin {own:.2e}, to the next seed's {other:.2e}");
            assert!(
                own * 5.0 < other,
                "{solver}, sample {i}: {own:.2e} vs {other:.2e}"
            );
        }
        assert!(
            d < 2e-2,
            "{solver}: bf16 sample is {d:.2e} from fp32 (closest seeds {apart:.2e})"
        );
    }
}

/// The UNet's output comes back as fp32 (the update's arithmetic is fp32) and differs
/// from fp32's by bf16 rounding, not more.
#[test]
fn bf16_eps_is_fp32_and_close() {
    let _g = tch::no_grad_guard();
    let fp32 = shipped(UNetDtype::Fp32);
    let bf16 = shipped(UNetDtype::Bf16);
    let seeds = noise::seeds(3, 2);
    let x = noise::initial_noise(&seeds, fp32.sample_shape(), Device::Cpu);
    for t in [0, 500, 999] {
        let (a, b) = (fp32.forward(&x, t), bf16.forward(&x, t));
        assert_eq!(b.kind(), Kind::Float);
        let rel = (&a - &b).abs().max().double_value(&[]) / a.abs().max().double_value(&[]);
        // A few bf16 ulps (2⁻⁸ relative each) through ~30 layers; fp32 differences are 1e-6.
        assert!(rel < 0.1, "t = {t}: relative difference {rel:.2e}");
        assert!(
            rel > 0.0,
            "t = {t}: bf16 gave the fp32 bits; the cast did not happen"
        );
    }
}

/// fp32 is the default and leaves the model as loaded; a second half-precision dtype on
/// a converted model, and compiled packages with half precision, are refused in one line
/// naming the flag.
#[test]
fn dtype_changes_are_checked() {
    let mut m = Model::load(&default_model_dir(), Device::Cpu).unwrap();
    assert_eq!(m.dtype, UNetDtype::Fp32);
    m.set_dtype(UNetDtype::Fp32).unwrap();
    assert_eq!(
        m.vs.variables().values().next().unwrap().kind(),
        Kind::Float
    );
    m.set_dtype(UNetDtype::Bf16).unwrap();
    assert_eq!(
        m.vs.variables().values().next().unwrap().kind(),
        Kind::BFloat16
    );
    let e = m.set_dtype(UNetDtype::Fp16).unwrap_err().to_string();
    assert!(e.contains("--dtype fp16") && !e.contains('\n'), "{e}");
    let e = m
        .use_compiled(
            CompiledMode::Require,
            Some(std::path::Path::new("/nonexistent")),
        )
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("--compiled require") && e.contains("--dtype bf16") && !e.contains('\n'),
        "{e}"
    );
    // auto: runs eagerly in bf16, no error.
    m.use_compiled(CompiledMode::Auto, None).unwrap();
    assert!(m.compiled.is_none());
}
