//! Bad input to the offline CLI exits non-zero with one clear line on stderr,
//! never a panic or a backtrace.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use tch::{Kind, Tensor};

fn model() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // Cargo's scratch folder for integration tests (nothing is left in /tmp),
        // emptied first: one run's files never mix with another's.
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ddim-cli-errors");
        let _ = std::fs::remove_dir_all(&dir);
        let o = Command::new(env!("CARGO_BIN_EXE_ddimd"))
            .args(["init-model", "--preset", "test", "--out"])
            .arg(&dir)
            .output()
            .unwrap();
        assert!(o.status.success());
        dir
    })
}

/// Runs ddimd with the test model and returns stderr, asserting failure.
fn fails(args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_ddimd"))
        .args(args)
        .env("DDIMD_MODEL", model())
        .env("DDIMD_DEVICE", "cpu")
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(!o.status.success(), "{args:?} succeeded");
    assert!(
        !err.contains("panicked") && !err.contains("stack backtrace"),
        "{args:?} panicked: {err}"
    );
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    // clap's usage errors carry a usage line and a help hint; ours are one line.
    assert!(lines.len() <= 4, "{args:?}: too chatty: {err}");
    err
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[test]
fn missing_and_unreadable_files() {
    let d = tmp();
    let out = d.path().join("o.npy");
    let e = fails(&[
        "decode",
        "--xt",
        "/nonexistent.npy",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        e.contains("/nonexistent.npy") && e.contains("no such file"),
        "{e}"
    );
    let junk = d.path().join("junk.npy");
    std::fs::write(&junk, b"\x93NUMPY garbage").unwrap();
    let e = fails(&[
        "decode",
        "--xt",
        junk.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(e.contains("junk.npy"), "{e}");
    let e = fails(&[
        "encode",
        "--image",
        "/nonexistent.png",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(e.contains("/nonexistent.png"), "{e}");
    let png = d.path().join("bad.png");
    std::fs::write(&png, b"nope").unwrap();
    let e = fails(&[
        "encode",
        "--image",
        png.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(e.contains("bad.png") && e.contains("decodable"), "{e}");
}

#[test]
fn wrong_shape_dtype_and_nan() {
    let d = tmp();
    let out = d.path().join("o.npy");
    let p = d.path().join("x.npy");
    Tensor::zeros([2, 3, 32, 32], (Kind::Float, tch::Device::Cpu))
        .write_npy(&p)
        .unwrap();
    let e = fails(&[
        "decode",
        "--xt",
        p.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        e.contains("expected shape [N, 1, 32, 32]") && e.contains("[2, 3, 32, 32]"),
        "{e}"
    );
    Tensor::zeros([1, 1, 32, 32], (Kind::Double, tch::Device::Cpu))
        .write_npy(&p)
        .unwrap();
    let e = fails(&[
        "decode",
        "--xt",
        p.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(e.contains("float32"), "{e}");
    Tensor::full([1, 1, 32, 32], f64::NAN, (Kind::Float, tch::Device::Cpu))
        .write_npy(&p)
        .unwrap();
    let e = fails(&[
        "decode",
        "--xt",
        p.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(e.contains("NaN"), "{e}");
    let e = fails(&[
        "encode",
        "--x0",
        p.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(e.contains("NaN"), "{e}");
}

#[test]
fn steps_eta_spacing_out_of_range() {
    let d = tmp();
    let out = d.path().join("o.npy");
    let o = out.to_str().unwrap();
    let e = fails(&["sample", "--count", "1", "--steps", "0", "--out", o]);
    assert!(e.contains("steps"), "{e}");
    let e = fails(&["sample", "--count", "1", "--steps", "1001", "--out", o]);
    assert!(e.contains("steps must be in 1..=1000"), "{e}");
    let e = fails(&["sample", "--count", "1", "--eta", "-0.5", "--out", o]);
    assert!(e.contains("eta"), "{e}");
    let e = fails(&["sample", "--count", "1", "--spacing", "cubic", "--out", o]);
    assert!(e.contains("cubic"), "{e}");
    let e = fails(&["reconstruct", "--x0", "/nonexistent.npy", "--steps", "10,0"]);
    assert!(e.contains("steps"), "{e}");
    // A repeated S is refused as the daemon refuses it in a job's list.
    let e = fails(&[
        "reconstruct",
        "--x0",
        "/nonexistent.npy",
        "--steps",
        "10,20,10",
    ]);
    assert!(
        e.contains("--steps") && e.contains("10 is listed twice"),
        "{e}"
    );
    let e = fails(&[
        "interpolate",
        "--a",
        "/x.npy",
        "--b",
        "/y.npy",
        "--frames",
        "1",
        "--out",
        o,
    ]);
    assert!(e.contains("frames"), "{e}");
}

#[test]
fn fashion_mnist_test_range_is_checked() {
    let e = fails(&["reconstruct", "--fashion-mnist-test", "0", "--steps", "2"]);
    assert!(e.contains("--fashion-mnist-test 0"), "{e}");
    let e = fails(&[
        "reconstruct",
        "--fashion-mnist-test",
        "20000",
        "--steps",
        "2",
    ]);
    assert!(e.contains("10000 images"), "{e}");
    let e = fails(&[
        "reconstruct",
        "--fashion-mnist-test",
        "2",
        "--skip",
        "9999",
        "--steps",
        "2",
    ]);
    assert!(e.contains("--skip 9999"), "{e}");
    let e = fails(&["reconstruct", "--x0", "/x.npy", "--skip", "3"]);
    assert!(e.contains("--fashion-mnist-test"), "{e}");
    let e = fails(&["reconstruct", "--x0", "/x.npy", "--batch", "0"]);
    assert!(e.contains("--batch"), "{e}");
}

/// Runs `ddimd reconstruct … --json` with the test model and parses its output.
fn reconstruct_json(args: &[&str]) -> serde_json::Value {
    let o = Command::new(env!("CARGO_BIN_EXE_ddimd"))
        .args(["reconstruct", "--device", "cpu", "--json"])
        .args(args)
        .env("DDIMD_MODEL", model())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).expect("exactly one JSON object on stdout")
}

/// Shards made with --skip merge (weighted by `images`) into the unsharded table.
#[test]
fn reconstruction_shards_merge_into_the_whole() {
    let whole = reconstruct_json(&["--fashion-mnist-test", "3", "--steps", "2,4"]);
    let a = reconstruct_json(&["--fashion-mnist-test", "1", "--steps", "2,4"]);
    let b = reconstruct_json(&[
        "--fashion-mnist-test",
        "2",
        "--skip",
        "1",
        "--steps",
        "2,4",
        "--batch",
        "1",
    ]);
    assert_eq!(b["source"]["fashion_mnist_test"]["first"], 1);
    assert_eq!(b["source"]["fashion_mnist_test"]["count"], 2);
    for i in 0..2 {
        let (w, a, b) = (&whole["results"][i], &a["results"][i], &b["results"][i]);
        assert_eq!(w["images"], 3);
        assert_eq!(a["images"], 1);
        assert_eq!(b["images"], 2);
        assert_eq!(a["mse_std"], 0.0);
        let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap();
        let merged = (f(a, "mse") + 2.0 * f(b, "mse")) / 3.0;
        assert!(
            (merged - f(w, "mse")).abs() <= 1e-6 * f(w, "mse").max(1e-12),
            "S={}: merged {merged} vs whole {}",
            w["steps"],
            w["mse"]
        );
        // Different images reconstruct differently: the spread is not zero.
        assert!(f(w, "mse_std") > 0.0 && f(w, "mse_sem") < f(w, "mse_std"));
    }
}

#[test]
fn a_folder_that_is_not_a_model() {
    let d = tmp();
    let out = d.path().join("o.npy");
    let e = fails(&[
        "sample",
        "--model",
        d.path().to_str().unwrap(),
        "--count",
        "1",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(e.contains("is not a model folder"), "{e}");
    let e = fails(&[
        "sample",
        "--model",
        "/nonexistent-model",
        "--count",
        "1",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(e.contains("does not exist"), "{e}");
    // An unsupported config value names the field and the value.
    let m = d.path().join("m");
    let src = model();
    std::fs::create_dir_all(m.join("unet")).unwrap();
    std::fs::copy(
        src.join("unet/diffusion_pytorch_model.safetensors"),
        m.join("unet/diffusion_pytorch_model.safetensors"),
    )
    .unwrap();
    let cfg = std::fs::read_to_string(src.join("unet/config.json"))
        .unwrap()
        .replace("\"silu\"", "\"gelu\"");
    std::fs::write(m.join("unet/config.json"), cfg).unwrap();
    let e = fails(&[
        "sample",
        "--model",
        m.to_str().unwrap(),
        "--count",
        "1",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(e.contains("act_fn") && e.contains("gelu"), "{e}");
}

#[test]
fn happy_path_round_trip_writes_files() {
    let d = tmp();
    let x = d.path().join("x.npy");
    let png = d.path().join("g.png");
    let o = Command::new(env!("CARGO_BIN_EXE_ddimd"))
        .args([
            "sample", "--device", "cpu", "--count", "3", "--seed", "1", "--steps", "5", "--out",
        ])
        .arg(&x)
        .arg("--png")
        .arg(&png)
        .env("DDIMD_MODEL", model())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let t = Tensor::read_npy(&x).unwrap();
    assert_eq!(t.size(), vec![3, 1, 32, 32]);
    assert!(image::open(&png).is_ok());
    let o = Command::new(env!("CARGO_BIN_EXE_ddimd"))
        .args(["reconstruct", "--device", "cpu", "--x0"])
        .arg(&x)
        .args(["--steps", "2,5", "--json"])
        .env("DDIMD_MODEL", model())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value =
        serde_json::from_slice(&o.stdout).expect("exactly one JSON object on stdout");
    let r = v["results"].as_array().unwrap();
    assert_eq!(r.len(), 2);
    assert_eq!(r[0]["steps"], 2);
    assert!(r[1]["mse"].as_f64().unwrap() >= 0.0);
    assert_eq!(r[1]["images"], 3);
    assert_eq!(v["source"], "files");
}

/// Runs ddimd with the test model: (exit code, stderr).
fn status_and_stderr(args: &[&str]) -> (Option<i32>, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_ddimd"))
        .args(args)
        .env("DDIMD_MODEL", model())
        .env("DDIMD_DEVICE", "cpu")
        .output()
        .unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).to_string(),
    )
}

/// A value clap refuses (S = 0, η < 0, an unknown spacing, a negative count) is bad
/// input like any other: exit 1 and one line `error: …` naming the flag and the reason
/// (docs/user-guide.md). Negative numbers reach validation instead of being read as
/// flags.
#[test]
fn value_errors_are_one_line_naming_the_flag_and_exit_1() {
    let d = tmp();
    let out = d.path().join("o.npy");
    let o = out.to_str().unwrap();
    let cases: [(&[&str], &[&str]); 11] = [
        (
            &["sample", "--count", "1", "--steps", "0", "--out", o],
            &["--steps", "\"0\"", "steps must be ≥ 1"],
        ),
        (
            &["sample", "--count", "1", "--eta", "-1", "--out", o],
            &["--eta", "\"-1\"", "eta must be ≥ 0"],
        ),
        (
            &["sample", "--count", "1", "--spacing", "cubic", "--out", o],
            &[
                "--spacing",
                "cubic",
                "uniform, quad, leading, trailing or linspace",
            ],
        ),
        (
            &["sample", "--count", "-1", "--out", o],
            &["--count", "\"-1\""],
        ),
        (
            &["decode", "--xt", "x.npy", "--eta", "-0.5", "--out", o],
            &["--eta", "eta must be ≥ 0"],
        ),
        (
            &["encode", "--x0", "x.npy", "--steps", "-3", "--out", o],
            &["--steps", "\"-3\""],
        ),
        (
            &["reconstruct", "--x0", "x.npy", "--steps", "10,,20"],
            &["--steps", "\"\""],
        ),
        (
            &[
                "interpolate",
                "--a",
                "a.npy",
                "--b",
                "b.npy",
                "--method",
                "cubic",
                "--out",
                o,
            ],
            &["--method", "cubic"],
        ),
        (
            &[
                "interpolate",
                "--a",
                "a.npy",
                "--b",
                "b.npy",
                "--frames",
                "-2",
                "--out",
                o,
            ],
            &["--frames", "\"-2\""],
        ),
        (
            &[
                "eval",
                "--samples",
                "2",
                "--solver",
                "dpmpp-2m",
                "--eta",
                "0,0.5",
            ],
            &["--eta", "dpmpp-2m", "η must be 0", "0.5"],
        ),
        (
            &[
                "eval",
                "--samples",
                "2",
                "--solver",
                "dpmpp-2m",
                "--sigma-hat",
            ],
            &["--sigma-hat", "--solver ddim"],
        ),
    ];
    for (args, wants) in cases {
        let (code, err) = status_and_stderr(args);
        assert_eq!(code, Some(1), "{args:?}: {err}");
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{args:?}: not one line: {err}");
        assert!(lines[0].starts_with("error: "), "{args:?}: {err}");
        for w in wants {
            assert!(lines[0].contains(w), "{args:?}: {err} lacks {w}");
        }
    }
}

/// What clap cannot parse at all (an unknown flag, a missing argument) keeps clap's
/// usage text and exit 2; a missing input names every input the command takes.
#[test]
fn usage_errors_exit_2_and_a_missing_input_names_them_all() {
    let (code, err) = status_and_stderr(&["sample", "--bogus", "--out", "o.npy"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--bogus") && err.contains("Usage"), "{err}");
    let cases: [(&[&str], &[&str]); 4] = [
        (
            &["reconstruct", "--steps", "10"],
            &["--x0", "--image", "--fashion-mnist-test"],
        ),
        (
            &["encode", "--steps", "2", "--out", "o.npy"],
            &["--x0", "--image"],
        ),
        (&["decode", "--out", "o.npy"], &["--xt"]),
        (&["interpolate", "--out", "o.npy"], &["--a", "--b"]),
    ];
    for (args, wants) in cases {
        let (code, err) = status_and_stderr(args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        let first = err.split("Usage").next().unwrap();
        for w in wants {
            assert!(
                first.contains(w),
                "{args:?}: the error does not name {w}: {err}"
            );
        }
    }
    // Two inputs at once are refused too (they used to be silently preferred).
    let (code, err) =
        status_and_stderr(&["reconstruct", "--x0", "x.npy", "--fashion-mnist-test", "2"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--fashion-mnist-test") && err.contains("--x0"),
        "{err}"
    );
}
