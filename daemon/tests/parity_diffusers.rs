//! Parity with huggingface/diffusers 0.42 on the same weights, run against
//! the Python in the setup's venv (`$DDIM_VENV`, default
//! ~/.cache/ddim/venv; `scripts/setup.sh` installs it).
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use ddimd::engine::noise::SampleSeed;
use ddimd::engine::sampler::{self, SamplerOptions};
use ddimd::engine::schedule::{betas, BetaSchedule};
use ddimd::engine::{npy, Model, Solver, Spacing};
use tch::{Device, Tensor};

pub fn venv_python() -> PathBuf {
    let venv = std::env::var_os("DDIM_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache")
                });
            cache.join("ddim/venv")
        });
    venv.join("bin/python")
}

/// Runs the reference script once per test binary.
fn reference() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // Cargo's scratch folder for integration tests (nothing is left in /tmp),
        // emptied first: one run's files never mix with another's.
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ddim-parity");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let py = venv_python();
        assert!(
            py.exists(),
            "{} missing: run scripts/setup.sh",
            py.display()
        );
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/parity_reference.py");
        let out = Command::new(&py)
            .arg(&script)
            .arg(&dir)
            .output()
            .expect("run python");
        assert!(
            out.status.success(),
            "reference script failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
}

fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

fn check_unet(name: &str) {
    let d = reference().join(name);
    let model = Model::load(&d, Device::Cpu).unwrap();
    let x = npy::read(&d.join("x.npy")).unwrap();
    let _g = tch::no_grad_guard();
    for t in [0, 37, 500, 999] {
        let want = npy::read(&d.join(format!("out_t{t}.npy"))).unwrap();
        let got = model.forward(&x, t);
        let err = max_abs(&got, &want);
        assert!(err <= 1e-4, "{name} t={t}: max abs error {err}");
    }
}

#[test]
fn unet_matches_diffusers_gray_without_attention() {
    check_unet("gray_noattn");
}

#[test]
fn a_bare_unet_folder_loads_like_the_pipeline() {
    let d = reference().join("gray_noattn");
    let pipe = Model::load(&d, Device::Cpu).unwrap();
    let bare = Model::load(&d.join("unet"), Device::Cpu).unwrap();
    let x = npy::read(&d.join("x.npy")).unwrap();
    let _g = tch::no_grad_guard();
    assert!(pipe.forward(&x, 37).equal(&bare.forward(&x, 37)));
    assert_eq!(bare.num_train_timesteps(), 1000);
}

#[test]
fn unet_matches_diffusers_rgb_with_attention() {
    check_unet("rgb_attn");
}

fn check_loop(name: &str) {
    let d = reference().join(name);
    let model = Model::load(&d, Device::Cpu).unwrap();
    let xt = npy::read(&d.join("xt.npy")).unwrap();
    let want = npy::read(&d.join("sample50.npy")).unwrap();
    let ts: Vec<i64> =
        serde_json::from_slice(&std::fs::read(d.join("timesteps50.json")).unwrap()).unwrap();
    let opts = SamplerOptions {
        steps: 50,
        eta: 0.0,
        spacing: Spacing::Leading,
        sigma_hat: false,
        solver: Default::default(),
    };
    let plan: Vec<i64> = sampler::plan(&opts, 1000)
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    assert_eq!(plan, ts, "leading timesteps differ from diffusers'");
    let seeds: Vec<SampleSeed> = (0..2).map(|i| SampleSeed::new(0, i)).collect();
    let got = sampler::sample(&model, &xt, &opts, &seeds, &mut |_| true).unwrap();
    let scale = want.abs().max().double_value(&[]).max(1.0);
    let rel = max_abs(&got, &want) / scale;
    assert!(
        rel <= 1e-5,
        "{name}: 50-step DDIM loop relative error {rel} (scale {scale})"
    );
}

#[test]
fn ddim_loop_matches_diffusers_gray() {
    check_loop("gray_noattn");
}

#[test]
fn ddim_loop_matches_diffusers_rgb() {
    check_loop("rgb_attn");
}

#[test]
fn betas_match_diffusers() {
    for (name, kind) in [
        ("linear", BetaSchedule::Linear),
        ("scaled_linear", BetaSchedule::ScaledLinear),
        ("squaredcos_cap_v2", BetaSchedule::SquaredCosCapV2),
    ] {
        let want = Tensor::read_npy(reference().join(format!("betas_{name}.npy"))).unwrap();
        let want = Vec::<f64>::try_from(want.to_kind(tch::Kind::Double)).unwrap();
        let got = betas(kind, 1e-4, 0.02, 1000);
        assert_eq!(got.len(), want.len());
        let err = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(err <= 1e-6, "{name}: max beta error {err}");
    }
}

/// DPM-Solver++(2M) against diffusers' `DPMSolverMultistepScheduler`
/// (`dpmsolver++`, order 2, midpoint, `lower_order_final`, final σ = 0) from the
/// same x_T on the same (explicitly passed) timesteps.
fn check_dpm(name: &str) {
    let d = reference().join(name);
    let model = Model::load(&d, Device::Cpu).unwrap();
    let xt = npy::read(&d.join("xt.npy")).unwrap();
    let seeds: Vec<SampleSeed> = (0..2).map(|i| SampleSeed::new(0, i)).collect();
    for (spacing, steps) in [
        (Spacing::Uniform, 2),
        (Spacing::Uniform, 3),
        (Spacing::Uniform, 10),
        (Spacing::Uniform, 20),
        (Spacing::Quad, 10),
    ] {
        let case = format!("dpm_{spacing}{steps}");
        let want = npy::read(&d.join(format!("{case}.npy"))).unwrap();
        let ts: Vec<i64> =
            serde_json::from_slice(&std::fs::read(d.join(format!("{case}.json"))).unwrap())
                .unwrap();
        let opts = SamplerOptions {
            steps,
            eta: 0.0,
            spacing,
            sigma_hat: false,
            solver: Solver::DpmPP2M,
        };
        let plan: Vec<i64> = sampler::plan(&opts, 1000)
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        assert_eq!(plan, ts, "{name} {case}: timesteps differ from diffusers'");
        let got = sampler::sample(&model, &xt, &opts, &seeds, &mut |_| true).unwrap();
        let scale = want.abs().max().double_value(&[]).max(1.0);
        let rel = max_abs(&got, &want) / scale;
        assert!(
            rel <= 1e-5,
            "{name} {case}: DPM-Solver++(2M) loop relative error {rel} (scale {scale})"
        );
        // Not DDIM: from S = 3 on the second-order steps change the result.
        if steps >= 3 {
            let ddim = SamplerOptions {
                solver: Solver::Ddim,
                ..opts
            };
            let g = sampler::sample(&model, &xt, &ddim, &seeds, &mut |_| true).unwrap();
            assert!(
                max_abs(&g, &want) / scale > 1e-3,
                "{name} {case}: equals DDIM"
            );
        } else {
            let ddim = SamplerOptions {
                solver: Solver::Ddim,
                ..opts
            };
            let g = sampler::sample(&model, &xt, &ddim, &seeds, &mut |_| true).unwrap();
            let r = max_abs(&g, &want) / scale;
            assert!(r <= 1e-5, "{name} {case}: S = 2 is DDIM, off by {r}");
        }
    }
}

#[test]
fn dpmpp_2m_loop_matches_diffusers_gray() {
    check_dpm("gray_noattn");
}

#[test]
fn dpmpp_2m_loop_matches_diffusers_rgb() {
    check_dpm("rgb_attn");
}
