//! `ddimd train`: resume gives the same weights as an uninterrupted run, the
//! written pipeline loads in diffusers unchanged, and bad data is reported.
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use tch::Tensor;

fn ddimd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ddimd"))
}

fn train(out: &Path, extra: &[&str]) -> std::process::Output {
    let o = ddimd()
        .args([
            "train",
            "--model-size",
            "test-attn",
            "--steps",
            "12",
            "--batch",
            "4",
            "--warmup",
            "3",
        ])
        .args([
            "--checkpoint-every",
            "100",
            "--sample-every",
            "0",
            "--device",
            "cpu",
            "--out",
        ])
        .arg(out)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "train failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// The rows of a run's `loss.csv` as (step, column `col`): 2 is lr, 4 elapsed_s.
fn log_column(out: &Path, col: usize) -> Vec<(u64, f64)> {
    let csv = std::fs::read_to_string(out.join("loss.csv")).unwrap();
    csv.lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0].parse().unwrap(), f[col].parse().unwrap())
        })
        .collect()
}

fn tensors(p: &Path) -> BTreeMap<String, Tensor> {
    Tensor::read_safetensors(p).unwrap().into_iter().collect()
}

#[test]
fn resumed_run_is_bit_identical_to_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    train(&a, &[]);
    train(&b, &["--stop-after", "6"]);
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(b.join("checkpoint/state.json")).unwrap()).unwrap();
    assert_eq!(state["step"], 6);
    let first_s = state["elapsed_s"]
        .as_f64()
        .expect("elapsed_s in state.json");
    assert!(first_s > 0.0);
    let o = train(&b, &["--resume"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("resuming at step 6"));
    let ta = tensors(&a.join("checkpoint/state.safetensors"));
    let tb = tensors(&b.join("checkpoint/state.safetensors"));
    assert_eq!(ta.len(), tb.len());
    assert!(
        ta.keys().any(|k| k.starts_with("adam_v.")) && ta.keys().any(|k| k.starts_with("ema."))
    );
    for (k, x) in &ta {
        assert!(x.equal(&tb[k]), "{k} differs after resume");
    }
    // And the run really trained: the weights moved from the initial ones.
    let c = dir.path().join("c");
    train(&c, &["--stop-after", "1"]);
    let tc = tensors(&c.join("checkpoint/state.safetensors"));
    assert!(ta
        .iter()
        .any(|(k, x)| k.starts_with("model.") && !x.equal(&tc[k])));
    // The loss log has one header and rows; its time goes on across the resume
    // (the training time of both runs), as does the checkpoint's.
    let csv = std::fs::read_to_string(b.join("loss.csv")).unwrap();
    assert!(
        csv.starts_with("step,loss") && csv.lines().count() >= 3,
        "{csv}"
    );
    let rows = log_column(&b, 4);
    let after = rows
        .iter()
        .find(|(step, _)| *step > 6)
        .expect("a row after the resume");
    assert!(
        after.1 >= (first_s * 10.0).floor() / 10.0,
        "{csv} (first run {first_s} s)"
    );
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(b.join("checkpoint/state.json")).unwrap()).unwrap();
    assert!(state["elapsed_s"].as_f64().unwrap() > first_s);
    assert!(String::from_utf8_lossy(&o.stderr).contains("s over every run"));
}

#[test]
fn refuses_to_overwrite_a_checkpoint_without_resume() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    train(&a, &["--stop-after", "1"]);
    let o = ddimd()
        .args([
            "train",
            "--model-size",
            "test",
            "--steps",
            "2",
            "--device",
            "cpu",
            "--out",
        ])
        .arg(&a)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--resume"));
}

#[test]
fn image_folder_counts_and_skips_unreadable_files() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("imgs");
    std::fs::create_dir_all(&data).unwrap();
    for i in 0..3u8 {
        image::GrayImage::from_pixel(28, 28, image::Luma([i * 60]))
            .save(data.join(format!("{i}.png")))
            .unwrap();
    }
    std::fs::write(data.join("broken.png"), b"not a png").unwrap();
    let out = dir.path().join("m");
    let o = ddimd()
        .args([
            "train",
            "--model-size",
            "test",
            "--steps",
            "2",
            "--batch",
            "2",
            "--sample-every",
            "0",
            "--device",
            "cpu",
        ])
        .args([
            "--data",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("skipped 1 unreadable image(s) of 4"), "{err}");
    let o = ddimd()
        .args([
            "train",
            "--model-size",
            "test",
            "--steps",
            "2",
            "--device",
            "cpu",
            "--data",
            "/nonexistent",
            "--out",
        ])
        .arg(dir.path().join("n"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a folder"));
}

#[test]
fn trained_pipeline_loads_unchanged_in_diffusers() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m");
    train(&m, &["--stop-after", "2"]);
    let model = ddimd::engine::Model::load(&m, tch::Device::Cpu).unwrap();
    tch::manual_seed(3);
    let x = Tensor::randn([2, 1, 32, 32], (tch::Kind::Float, tch::Device::Cpu));
    let xp = dir.path().join("x.npy");
    x.write_npy(&xp).unwrap();
    let out = dir.path().join("out.npy");
    let py = std::env::var_os("DDIM_VENV")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/ddim/venv")
        })
        .join("bin/python");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/load_pipeline.py");
    let o = Command::new(py)
        .arg(script)
        .arg(&m)
        .arg(&xp)
        .arg(&out)
        .arg("321")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("DDIMPipeline DDIMScheduler"));
    let want = Tensor::read_npy(&out).unwrap();
    let got = tch::no_grad(|| model.forward(&x, 321));
    let err = (got - want).abs().max().double_value(&[]);
    assert!(err < 1e-4, "max abs error {err}");
}

#[test]
fn init_from_starts_at_the_given_weights() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    train(&a, &["--stop-after", "3"]);
    // Zero steps of training from A: the written EMA equals A's weights.
    let o = ddimd()
        .args([
            "train",
            "--steps",
            "1",
            "--stop-after",
            "0",
            "--sample-every",
            "0",
            "--device",
            "cpu",
            "--init-from",
        ])
        .arg(&a)
        .arg("--out")
        .arg(&b)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("initialised from"));
    let w = "unet/diffusion_pytorch_model.safetensors";
    let (ta, tb) = (tensors(&a.join(w)), tensors(&b.join(w)));
    assert_eq!(ta.len(), tb.len());
    for (k, x) in &ta {
        assert!(x.equal(&tb[k]), "{k} differs");
    }
}

fn state(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("checkpoint/state.json")).unwrap()).unwrap()
}

/// `--resume` without the flags of the first run continues with the checkpoint's
/// settings (it used to fall back to the defaults: batch 64, lr 1e-3, seed 0), and a
/// flag that contradicts the checkpoint is refused naming the flag and both values,
/// leaving the checkpoint as it was.
#[test]
fn resume_keeps_the_checkpoints_settings_and_refuses_contradicting_flags() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let settings = [
        "--seed",
        "5",
        "--lr",
        "2e-3",
        "--ema-decay",
        "0.99",
        "--lr-schedule",
        "cosine",
    ];
    train(&a, &settings);
    let mut first = settings.to_vec();
    first.extend(["--stop-after", "5"]);
    train(&b, &first);
    let saved = std::fs::read(b.join("checkpoint/state.json")).unwrap();
    let resume = |extra: &[&str]| {
        ddimd()
            .args([
                "train",
                "--resume",
                "--sample-every",
                "0",
                "--device",
                "cpu",
            ])
            .arg("--out")
            .arg(&b)
            .args(extra)
            .output()
            .unwrap()
    };
    for (flags, wants) in [
        (
            &["--batch", "64"][..],
            &["--batch 64", "checkpoint has 4"][..],
        ),
        (&["--lr", "1e-3"], &["--lr 0.001", "checkpoint has 0.002"]),
        (&["--seed", "0"], &["--seed 0", "checkpoint has 5"]),
        (
            &["--lr-schedule", "constant"],
            &["--lr-schedule constant", "checkpoint has cosine"],
        ),
        (
            &["--ema-decay", "0.999"],
            &["--ema-decay 0.999", "checkpoint has 0.99"],
        ),
        (
            &["--model-size", "test"],
            &["--model-size test", "another model config"],
        ),
        (
            &["--data", "/elsewhere"],
            &["--data /elsewhere", "checkpoint has fashion-mnist"],
        ),
    ] {
        let o = resume(flags);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{flags:?} was accepted: {err}");
        for w in wants {
            assert!(err.contains(w), "{flags:?}: {err} lacks {w:?}");
        }
        assert_eq!(
            std::fs::read(b.join("checkpoint/state.json")).unwrap(),
            saved,
            "{flags:?} rewrote state.json"
        );
    }
    // Flags that agree with the checkpoint are fine; none at all takes its settings,
    // --steps included, and ends where the uninterrupted run ended, bit for bit.
    let o = resume(&["--batch", "4", "--stop-after", "2"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = resume(&[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("resuming at step 7 of 12"), "{err}");
    let (sa, sb) = (state(&a), state(&b));
    for k in [
        "step",
        "batch",
        "lr",
        "seed",
        "warmup",
        "ema_decay",
        "steps",
        "lr_schedule",
    ] {
        assert_eq!(sa[k], sb[k], "{k}");
    }
    assert_eq!(sb["batch"], 4);
    assert_eq!(sb["lr_schedule"], "cosine");
    // The cosine's learning rates, as the loss log has them (every 10th step and
    // the last): 2e-3 × ½(1 + cos(π·(step−3)/9)) after 3 warm-up steps, 0 at the end.
    let lrs = log_column(&a, 2);
    assert_eq!(lrs.len(), 2, "{lrs:?}");
    for (step, lr) in lrs {
        let step = step as f64;
        let want = 2e-3 * 0.5 * (1.0 + (std::f64::consts::PI * (step - 1.0 - 3.0) / 9.0).cos());
        assert!(
            (lr - want).abs() <= 1e-3 * want + 1e-12,
            "step {step}: lr {lr}, want {want}"
        );
    }
    assert_eq!(sb["step"], 12);
    let ta = tensors(&a.join("checkpoint/state.safetensors"));
    let tb = tensors(&b.join("checkpoint/state.safetensors"));
    for (k, x) in &ta {
        assert!(x.equal(&tb[k]), "{k} differs after resume");
    }
    // --steps may move on resume: train further.
    let o = resume(&["--steps", "14"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(state(&b)["step"], 14);
}
