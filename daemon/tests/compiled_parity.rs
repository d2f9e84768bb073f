//! The compiled UNet (AOTInductor package, `ddimd compile`, loaded through libtorch's
//! `AOTIModelPackageLoader`) against the eager one: ε within 1e-4 relative on every
//! batch path (exact bucket, zero-padded bucket, a batch split over several runs) and a
//! whole 20-step η = 0 sample within the same tolerance. Needs the setup's venv (torch + diffusers;
//! `scripts/setup.sh`), which exports and compiles.
//!
//! - `random_attention_model_*` (normal suite): a random `test-attn` model (attention at
//!   8×8), 16×16, one package (batch 4). Compiling it takes about a minute on 2 cores.
//! - `shipped_model_*`: the shipped Fashion-MNIST model, batch 1. Its compile takes
//!   30–50 s on an idle 2-core machine and several minutes on a busy one, so it is gated:
//!   `DDIMD_TEST_COMPILED_SHIPPED=1 cargo test -p ddimd --test compiled_parity`
//!   (set it to a folder to use that as the package cache and keep the packages
//!   between runs).
use std::path::{Path, PathBuf};

use ddimd::engine::compiled::{self, CompileRequest, CompiledMode};
use ddimd::engine::config::UNetConfig;
use ddimd::engine::noise;
use ddimd::engine::sampler::{self, SamplerOptions};
use ddimd::engine::schedule::SchedulerConfig;
use ddimd::engine::Model;
use tch::{Device, Tensor};

const TOL: f64 = 1e-4;

/// max |a − b| / max |b|.
fn rel(a: &Tensor, b: &Tensor) -> f64 {
    let d = (a - b).abs().max().double_value(&[]);
    d / b.abs().max().double_value(&[]).max(1e-12)
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("ddim-compiled")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn compile(model: &Model, batches: &[i64], cache: &Path) {
    let python = compiled::default_python();
    let req = CompileRequest {
        model_dir: &model.path,
        fingerprint: &model.fingerprint,
        device: Device::Cpu,
        batches,
        cache,
        python: &python,
        force: false,
    };
    let t0 = std::time::Instant::now();
    let done = compiled::compile(&req, &mut |p| {
        eprintln!(
            "compiled batch {} in {:.0} s (script's check: {:.1e})",
            p.batch, p.seconds, p.max_rel_diff
        )
    })
    .unwrap_or_else(|e| panic!("ddimd compile failed with {}: {e}", python.display()));
    eprintln!(
        "{} package(s) in {:.0} s",
        done.len(),
        t0.elapsed().as_secs_f64()
    );
}

/// ε parity at several t, and a 20-step η = 0 sample, for a batch of `n`.
fn check(compiled: &Model, eager: &Model, n: usize) -> (f64, f64) {
    let _g = tch::no_grad_guard();
    let seeds = noise::seeds(7, n);
    let x = noise::initial_noise(&seeds, compiled.sample_shape(), Device::Cpu);
    let mut worst: f64 = 0.0;
    for t in [0, 250, 500, 999] {
        let c = compiled.forward(&x, t);
        let e = eager.forward(&x, t);
        assert_eq!(c.size(), e.size());
        let r = rel(&c, &e);
        assert!(
            r <= TOL,
            "batch {n}, t = {t}: compiled ε differs by {r:.2e} (relative)"
        );
        worst = worst.max(r);
    }
    let opts = SamplerOptions {
        steps: 20,
        ..Default::default()
    };
    let sc = sampler::sample(compiled, &x, &opts, &seeds, &mut |_| true).unwrap();
    let se = sampler::sample(eager, &x, &opts, &seeds, &mut |_| true).unwrap();
    let rs = rel(&sc, &se);
    assert!(
        rs <= TOL,
        "batch {n}: 20-step sample differs by {rs:.2e} (relative)"
    );
    eprintln!("batch {n}: ε max rel diff {worst:.2e}, 20-step sample {rs:.2e}");
    (worst, rs)
}

#[test]
fn random_attention_model_compiled_matches_eager() {
    let dir = scratch("random-attn");
    tch::manual_seed(11);
    let cfg = UNetConfig::preset("test-attn", 1, 16).unwrap();
    let m = Model::from_config(cfg, SchedulerConfig::default(), Device::Cpu).unwrap();
    m.save_pipeline(&dir.join("model")).unwrap();

    // No packages: auto stays eager, require names the command to run.
    let mut model = Model::load(&dir.join("model"), Device::Cpu).unwrap();
    let empty = dir.join("empty-cache");
    model
        .use_compiled(CompiledMode::Auto, Some(&empty))
        .unwrap();
    assert!(model.compiled.is_none());
    let err = model
        .use_compiled(CompiledMode::Require, Some(&empty))
        .unwrap_err()
        .to_string();
    assert!(err.contains("ddimd compile"), "{err}");

    let cache = dir.join("cache");

    compile(&model, &[4], &cache);
    // CPU packages are keyed by the thread count they were compiled for (Inductor writes
    // it into every parallel loop): this process's.
    let n = compiled::cpu_threads();
    let pkg_dir = compiled::package_dir(&cache, &model.fingerprint, Device::Cpu);
    assert!(
        pkg_dir.ends_with(format!("cpu-t{n}")),
        "{}",
        pkg_dir.display()
    );
    // Packages for another thread count only: auto stays eager, require names the flag.
    let other = dir.join("other-threads");
    let other_dir = compiled::package_dir(&other, &model.fingerprint, Device::Cpu)
        .with_file_name(format!("cpu-t{}", n + 7));
    std::fs::create_dir_all(&other_dir).unwrap();
    std::fs::copy(pkg_dir.join("b4.pt2"), other_dir.join("b4.pt2")).unwrap();
    let err = model
        .use_compiled(CompiledMode::Require, Some(&other))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--torch-threads")
            && err.contains(&format!("[{}]", n + 7))
            && !err.contains('\n'),
        "{err}"
    );
    model
        .use_compiled(CompiledMode::Auto, Some(&other))
        .unwrap();
    assert!(model.compiled.is_none());

    model
        .use_compiled(CompiledMode::Require, Some(&cache))
        .unwrap();
    assert_eq!(model.compiled.as_ref().unwrap().batches(), vec![4]);
    let eager = Model::load(&dir.join("model"), Device::Cpu).unwrap();

    check(&model, &eager, 4); // the package's own batch
    check(&model, &eager, 3); // padded to 4
    check(&model, &eager, 1); // padded to 4

    check(&model, &eager, 9); // larger than the package: 4 + 4 + 1 padded to 4

    // Off drops the packages: the eager path exactly.
    model.use_compiled(CompiledMode::Off, Some(&cache)).unwrap();
    assert!(model.compiled.is_none());
    let _g = tch::no_grad_guard();
    let x = noise::initial_noise(&noise::seeds(1, 4), model.sample_shape(), Device::Cpu);
    assert!(model.forward(&x, 300).equal(&eager.forward(&x, 300)));
}

#[test]
fn shipped_model_compiled_matches_eager() {
    let Some(gate) = std::env::var_os("DDIMD_TEST_COMPILED_SHIPPED") else {
        eprintln!("skipped: set DDIMD_TEST_COMPILED_SHIPPED=1 (or a cache folder) to compile the shipped model");
        return;
    };
    let cache = if Path::new(&gate).is_dir() {
        PathBuf::from(gate)
    } else {
        scratch("shipped").join("cache")
    };
    let model_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/fashion-mnist");
    let mut model = Model::load(&model_dir, Device::Cpu).unwrap();
    compile(&model, &[1], &cache);
    model
        .use_compiled(CompiledMode::Require, Some(&cache))
        .unwrap();
    let eager = Model::load(&model_dir, Device::Cpu).unwrap();
    check(&model, &eager, 1);
}
