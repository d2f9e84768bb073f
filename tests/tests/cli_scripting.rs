//! The `ddim` scripting subcommands against a real `ddimd serve` on 127.0.0.1:0 with a
//! tiny random-weight model: JSON output parsed and checked, exit codes, token handling.
//!
//! Needs the binaries built first (`cargo build --workspace --bins`, as scripts/test.sh
//! does); the daemon comes from the shared fixture in `ddim_tests`.

use std::process::Command;

use ddim_tests::cli::{code, s, stderr, Ddim};
use ddim_tests::{bin, Daemon};
use serde_json::Value;

#[tokio::test]
async fn scripting_round_trip() {
    let daemon = Daemon::builder().start().await;
    let d = Ddim { d: &daemon };
    d.wait_ready(None);
    let ls = d.json(&["ls"]);
    assert_eq!(ls["total"], 0);
    // On the embedded store there is no fleet: an empty list, and a line saying so.
    let fleet = d.json(&["daemons"]);
    assert_eq!(
        (&fleet["shared"], &fleet["daemons"], &fleet["queued"]),
        (&false.into(), &serde_json::json!([]), &0.into())
    );
    assert!(d.text(&["daemons"]).contains("sled"));

    // sample → two latents
    let job = d.json(&[
        "sample", "--count", "2", "--seed", "7", "--steps", "5", "--wait",
    ]);
    assert_eq!(job["state"], "done", "{job}");
    assert_eq!(job["kind"], "sample");
    let ids: Vec<String> = job["result"]["latent_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| s(v).to_string())
        .collect();
    assert_eq!(ids.len(), 2);
    let ls = d.json(&["ls"]);
    assert_eq!(ls["total"], 2);
    // Sorted by the daemon, from an offset.
    let ls = d.json(&["ls", "--sort", "oldest", "--offset", "1", "--limit", "5"]);
    assert_eq!((&ls["total"], &ls["offset"]), (&2.into(), &1.into()));
    let listed: Vec<&str> = ls["latents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| s(&l["id"]))
        .collect();
    assert_eq!(listed, [ids[1].as_str()]);
    let ls = d.json(&["ls", "--sort", "name", "--limit", "1"]);
    assert_eq!(ls["latents"].as_array().unwrap().len(), 1);
    let show = d.json(&["show", &ids[0]]);
    assert_eq!(show["id"], ids[0].as_str());
    assert_eq!(show["origin"], "sampled");

    // export x_T as .npy: the daemon's values, shape [1, 1, 32, 32]
    let npy = daemon.dir.path().join("x.npy");
    let exp = d.json(&["export", &ids[0], npy.to_str().unwrap()]);
    assert_eq!(exp["shape"], serde_json::json!([1, 1, 32, 32]), "{exp}");
    assert_eq!(exp["latent_shape"], serde_json::json!([1, 32, 32]), "{exp}");
    let out = d
        .cmd(&["export", &ids[0], npy.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("shape (1, 1, 32, 32)"),
        "the shape numpy.load gives: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let (header, values) = ddim_tests::npy_values(&std::fs::read(&npy).unwrap());
    assert!(header.contains("(1, 1, 32, 32)"), "{header}");
    assert_eq!(values.len(), 1024);
    assert!(values.iter().all(|v| v.is_finite()) && values.iter().any(|v| *v != 0.0));
    let out = d
        .cmd(&["export", &ids[0], npy.to_str().unwrap(), "--steps", "5"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains(".npy"), "{}", stderr(&out));

    // export → a PNG, which encodes back into a latent with a source image
    let png = daemon.dir.path().join("sample0.png");
    let exp = d.json(&["export", &ids[0], png.to_str().unwrap()]);
    assert_eq!(exp["width"], 32);
    assert!(std::fs::read(&png).unwrap().starts_with(b"\x89PNG"));
    let enc = d.json(&["encode", png.to_str().unwrap(), "--steps", "5", "--wait"]);
    assert_eq!(enc["state"], "done", "{enc}");
    let encoded = s(&enc["result"]["latent_ids"][0]).to_string();
    let show = d.json(&["show", &encoded]);
    assert_eq!(show["origin"], "encoded");
    assert_eq!(show["name"], "sample0");
    assert_eq!(show["encode_steps"], 5);

    // reconstruct at two step counts: one MSE each
    let rec = d.json(&["reconstruct", &encoded, "--steps", "5,10", "--wait"]);
    assert_eq!(rec["state"], "done", "{rec}");
    let pts = rec["result"]["reconstruction"].as_array().unwrap();
    assert_eq!(
        pts.iter()
            .map(|p| p["steps"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [5, 10]
    );
    assert!(pts
        .iter()
        .all(|p| p["mse"].as_f64().is_some_and(|m| m.is_finite() && m >= 0.0)));

    // spacing and σ̂ reach the daemon, and the job's JSON says what it was asked
    let q = d.json(&[
        "sample",
        "--count",
        "1",
        "--steps",
        "4",
        "--spacing",
        "quad",
        "--sigma-hat",
        "--eta",
        "1",
        "--wait",
    ]);
    assert_eq!(q["state"], "done", "{q}");
    let o = &q["spec"]["sample"]["sampler"];
    assert_eq!(
        (&o["spacing"], &o["sigma_hat"], &o["steps"]),
        (&"quad".into(), &true.into(), &4.into()),
        "{q}"
    );
    let out = d.cmd(&["sample", "--spacing", "cubic"]).output().unwrap();
    assert_eq!(code(&out), 2, "{}", stderr(&out));

    // decode at S × η, written as PNGs
    let out_dir = daemon.dir.path().join("grid");
    let dec = d.json(&[
        "decode",
        &ids[0],
        "--steps",
        "2,3",
        "--eta",
        "0,1",
        "--seed",
        "4",
        "--out-dir",
        out_dir.to_str().unwrap(),
    ]);
    assert_eq!(dec["state"], "done", "{dec}");
    let got: Vec<(f64, u64)> = dec["result"]["decodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| (x["eta"].as_f64().unwrap(), x["steps"].as_u64().unwrap()))
        .collect();
    assert_eq!(got, [(0.0, 2), (0.0, 3), (1.0, 2), (1.0, 3)]);
    let files = dec["files"].as_array().unwrap();
    assert_eq!(files.len(), 4);
    assert!(out_dir.join("decode_S3_eta1.png").exists());
    for f in files {
        assert!(std::fs::read(s(f)).unwrap().starts_with(b"\x89PNG"));
    }
    let out = d
        .cmd(&["decode", &ids[0], "--eta", "0,-1"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 2, "usage error: {}", stderr(&out));
    assert!(stderr(&out).contains("η"), "{}", stderr(&out));

    // several latents reconstruct as one batch: the mean over them ± its s.e.m.
    let png1 = daemon.dir.path().join("sample1.png");
    d.json(&["export", &ids[1], png1.to_str().unwrap()]);
    let enc1 = d.json(&["encode", png1.to_str().unwrap(), "--steps", "5", "--wait"]);
    let encoded1 = s(&enc1["result"]["latent_ids"][0]).to_string();
    let both = [
        "reconstruct",
        encoded.as_str(),
        encoded1.as_str(),
        "--steps",
        "5",
        "--wait",
    ];
    let rec = d.json(&both);
    let p = &rec["result"]["reconstruction"][0];
    assert_eq!(p["images"], 2, "{rec}");
    let per: Vec<f64> = p["image_mse"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(per.len(), 2);
    let mean = p["mse"].as_f64().unwrap();
    assert!((mean - (per[0] + per[1]) / 2.0).abs() < 1e-12, "{p}");
    assert!((p["mse_sem"].as_f64().unwrap() - (per[0] - per[1]).abs() / 2.0).abs() < 1e-12);
    let out = d.cmd(&both).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("± s.e.m.") && text.contains("mean over 2 images"),
        "{text}"
    );

    // interpolate, saving the middle frame
    let it = d.json(&[
        "interpolate",
        &ids[0],
        &ids[1],
        "--frames",
        "3",
        "--steps",
        "5",
        "--save",
        "1",
        "--wait",
    ]);
    assert_eq!(it["state"], "done", "{it}");
    let frames = it["result"]["frames"].as_array().unwrap();
    assert_eq!(frames.len(), 3);
    assert!(
        !s(&frames[1]["latent_id"]).is_empty(),
        "frame 1 saved: {it}"
    );

    // jobs lists them all
    let jobs = d.json(&["jobs"]);
    let kinds: Vec<&str> = jobs["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| s(&j["kind"]))
        .collect();
    for k in ["sample", "encode", "reconstruct", "interpolate"] {
        assert!(kinds.contains(&k), "{k} in {kinds:?}");
    }
    // … and --kind only those kinds.
    let only = d.json(&["jobs", "--kind", "encode,interpolate"]);
    let only: Vec<&str> = only["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| s(&j["kind"]))
        .collect();
    assert!(!only.is_empty() && only.len() < kinds.len(), "{only:?}");
    assert!(
        only.iter().all(|k| ["encode", "interpolate"].contains(k)),
        "{only:?}"
    );
    let err = d.fails(&["jobs", "--kind", "encoder"], 1);
    assert!(err.contains("kinds[0]") && err.contains("encoder"), "{err}");

    // human output too
    let out = d.cmd(&["ls"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&encoded) && text.contains("of 6 latents"),
        "{text}"
    );

    // rm, then it is gone: exit 3
    let rm = d.json(&["rm", &ids[1]]);
    assert_eq!(rm["deleted"], true);
    let out = d.cmd(&["show", &ids[1]]).output().unwrap();
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert_eq!(
        stderr(&out).trim().lines().count(),
        1,
        "one line: {}",
        stderr(&out)
    );
}

#[tokio::test]
async fn cancel_and_watch_a_long_job() {
    let daemon = Daemon::builder().start().await;
    let d = Ddim { d: &daemon };
    d.wait_ready(None);
    let job = d.json(&["sample", "--count", "8", "--steps", "1000"]);
    assert!(["queued", "running"].contains(&s(&job["state"])), "{job}");
    let id = s(&job["id"]).to_string();
    let c = d.json(&["cancel", &id]);
    assert!(
        ["cancelled", "running", "queued"].contains(&s(&c["state"])),
        "{c}"
    );
    // watch follows it to its end: cancelled is a failure exit with one line
    let out = d.cmd(&["watch", &id]).output().unwrap();
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("cancelled"), "{}", stderr(&out));
    let shown = d.json(&["jobs"]);
    let j = shown["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["id"] == id.as_str())
        .unwrap()
        .clone();
    assert_eq!(j["state"], "cancelled");
}

/// More images or latents than one job takes (256): `ddim encode` and `ddim reconstruct`
/// run a job per 256; reconstruct merges their per-image errors into one table.
#[tokio::test]
async fn reconstruct_more_than_one_job_takes() {
    let daemon = Daemon::builder().start().await;
    let d = Ddim { d: &daemon };
    d.wait_ready(None);
    let dir = daemon.dir.path().join("imgs");
    std::fs::create_dir_all(&dir).unwrap();
    let files: Vec<String> = (0..257u32)
        .map(|i| {
            let f = dir.join(format!("g{i}.png"));
            std::fs::write(
                &f,
                ddim_tests::png(8, 8, |x, y| ((x * 31 + y * 7 + i) % 256) as u8),
            )
            .unwrap();
            f.to_str().unwrap().to_string()
        })
        .collect();
    let mut args = vec!["encode", "--steps", "1", "--wait"];
    args.extend(files.iter().map(String::as_str));
    let enc = d.json(&args);
    let states: Vec<&Value> = enc["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| &j["state"])
        .collect();
    assert_eq!(
        states,
        [&Value::from("done"), &Value::from("done")],
        "a job per 256 images"
    );
    let ls = d.json(&["ls", "--limit", "1000"]);
    let ids: Vec<&str> = ls["latents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| s(&l["id"]))
        .collect();
    assert_eq!(ids.len(), 257);
    let mut args = vec!["reconstruct", "--steps", "1,2"];
    args.extend(&ids);
    let r = d.json(&args);
    assert_eq!(r["jobs"].as_array().unwrap().len(), 2, "256 + 1");
    for p in r["reconstruction"].as_array().unwrap() {
        let per: Vec<f64> = p["image_mse"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!((per.len(), p["images"].as_u64()), (257, Some(257)));
        let mean = per.iter().sum::<f64>() / 257.0;
        assert!((p["mse"].as_f64().unwrap() - mean).abs() < 1e-12, "{p}");
        assert!(p["mse_sem"].as_f64().unwrap() > 0.0);
    }
}

/// `ddim export ID x.npy` then `ddim import x.npy`: a new latent with the same x_T,
/// named after the file, origin imported; a wrong file is one line, exit 1.
#[tokio::test]
async fn export_then_import_a_latent() {
    let daemon = Daemon::builder().start().await;
    let d = Ddim { d: &daemon };
    d.wait_ready(None);
    let job = d.json(&["sample", "--count", "1", "--steps", "3", "--wait"]);
    let id = s(&job["result"]["latent_ids"][0]).to_string();
    let npy = daemon.dir.path().join("mine.npy");
    d.json(&["export", &id, npy.to_str().unwrap()]);
    let imp = d.json(&[
        "import",
        npy.to_str().unwrap(),
        "--steps",
        "3",
        "--tag",
        "edited",
        "--wait",
    ]);
    assert_eq!(imp["state"], "done", "{imp}");
    assert_eq!(imp["spec"]["import"]["latents"][0]["name"], "mine");
    let new_id = s(&imp["result"]["latent_ids"][0]).to_string();
    let show = d.json(&["show", &new_id]);
    assert_eq!(
        (&show["origin"], &show["name"], &show["tags"][0]),
        (&"imported".into(), &"mine".into(), &"edited".into()),
        "{show}"
    );
    let again = daemon.dir.path().join("again.npy");
    d.json(&["export", &new_id, again.to_str().unwrap()]);
    assert_eq!(std::fs::read(&npy).unwrap(), std::fs::read(&again).unwrap());
    let ls = d.json(&["ls", "--origin", "imported"]);
    assert_eq!(ls["total"], 1);
    // A PNG is not an x_T.
    let png = daemon.dir.path().join("p.png");
    d.json(&["export", &id, png.to_str().unwrap()]);
    let out = d.cmd(&["import", png.to_str().unwrap()]).output().unwrap();
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    // The message names the file, not the request field.
    assert!(
        stderr(&out).contains(png.to_str().unwrap()) && !stderr(&out).contains("latents[0]"),
        "{}",
        stderr(&out)
    );
    assert_eq!(stderr(&out).trim().lines().count(), 1);
}

/// What a first-time user types wrong gets the real reason, naming the file or flag:
/// `encode` of a .npy points to `import`, a bad image is named by its path, negative
/// numbers reach validation, repeated or empty list items are refused, origin prefixes
/// work, and `ls` keeps its columns apart.
#[tokio::test]
async fn messages_name_the_file_the_flag_and_the_reason() {
    let daemon = Daemon::builder().start().await;
    let d = Ddim { d: &daemon };
    d.wait_ready(None);
    let dir = daemon.dir.path();
    let fail = |args: &[&str], want_code: i32, want: &[&str]| {
        let out = d.cmd(args).output().unwrap();
        let err = stderr(&out);
        assert_eq!(code(&out), want_code, "ddim {args:?}: {err}");
        assert_eq!(
            err.trim().lines().count(),
            1,
            "ddim {args:?}: one line: {err}"
        );
        for w in want {
            assert!(err.contains(w), "ddim {args:?}: no {w:?} in {err}");
        }
        err
    };

    // encode: a .npy is x_T for `ddim import`; a file that is no image is named.
    let job = d.json(&["sample", "--count", "1", "--steps", "3", "--wait"]);
    let id = s(&job["result"]["latent_ids"][0]).to_string();
    let npy = dir.join("x.npy");
    d.json(&["export", &id, npy.to_str().unwrap()]);
    fail(
        &["encode", npy.to_str().unwrap()],
        1,
        &["ddim import", "x.npy"],
    );
    let junk = dir.join("notapng.png");
    std::fs::write(&junk, b"hello").unwrap();
    let err = fail(
        &["encode", junk.to_str().unwrap()],
        1,
        &[junk.to_str().unwrap(), "not a decodable PNG or JPEG"],
    );
    assert!(!err.contains("images[0]"), "{err}");

    // Negative numbers reach validation and are refused for what they are.
    let err = fail(&["sample", "--eta", "-1"], 1, &["rejected by the daemon"]);
    assert!(!err.contains("unexpected argument"), "{err}");
    fail(&["sample", "--count", "-1"], 2, &["--count", "≥ 0"]);
    fail(&["decode", &id, "--eta", "-1,0"], 2, &["--eta", "≥ 0"]);

    // Lists: a repeated or empty item is an error naming the flag.
    fail(&["decode", &id, "--eta", "0,0"], 2, &["--eta", "twice"]);
    fail(
        &["reconstruct", &id, "--steps", "10,,20"],
        2,
        &["--steps", "empty"],
    );
    fail(
        &["decode", &id, "--steps", "10,10"],
        2,
        &["--steps", "twice"],
    );
    fail(
        &["interpolate", &id, &id, "--save", "1,"],
        2,
        &["--save", "empty"],
    );

    // Origins: a unique prefix names the kind, as in the TUI's filter.
    let png = dir.join("p.png");
    d.json(&["export", &id, png.to_str().unwrap()]);
    let tags = ["--tag", "fashion-mnist", "--tag", "seed"];
    let mut args = vec!["encode", png.to_str().unwrap(), "--steps", "3", "--wait"];
    args.extend(tags);
    d.json(&args);
    assert_eq!(d.json(&["ls", "--origin", "enc"])["total"], 1);
    assert_eq!(d.json(&["ls", "--origin", "samp"])["total"], 1);

    // ls: the tags column is cut with … and a space keeps it off the origin.
    let out = d.cmd(&["ls", "--origin", "encoded"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let row = text
        .lines()
        .find(|l| l.contains(" p "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(row.contains("fashion-mnist,s… encoded"), "{row}");
}

/// Completion scripts for both binaries name their subcommands and flags; no daemon
/// is needed.
#[test]
fn shell_completions() {
    for (bin_name, shell, want) in [
        ("ddim", "bash", ["_ddim()", "reconstruct", "--only-saved"]),
        ("ddim", "zsh", ["#compdef ddim", "decode", "--spacing"]),
        (
            "ddimd",
            "bash",
            ["_ddimd()", "serve", "--fashion-mnist-test"],
        ),
        (
            "ddimd",
            "fish",
            ["complete -c ddimd", "train", "torch-threads"],
        ),
    ] {
        let out = Command::new(bin(bin_name))
            .args(["completions", shell])
            .env_remove("DDIM_ADDR")
            .output()
            .unwrap();
        assert!(out.status.success(), "{bin_name} {shell}: {}", stderr(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        for w in want {
            assert!(text.contains(w), "{bin_name} {shell}: no {w:?}");
        }
    }
    let out = Command::new(bin("ddim"))
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 2, "{}", stderr(&out));
}

#[test]
fn exit_codes_for_usage_unreachable_and_not_found() {
    // usage: clap's 2
    let out = Command::new(bin("ddim"))
        .arg("reconstruct")
        .output()
        .unwrap();
    assert_eq!(code(&out), 2);
    let out = Command::new(bin("ddim"))
        .args(["reconstruct", "x", "--steps", "ten"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 2);
    // unreachable: 4, with the address in the one-line message
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new(bin("ddim"))
        .args(["--addr", &format!("127.0.0.1:{port}"), "ls"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("127.0.0.1:{port}")),
        "{}",
        stderr(&out)
    );
    assert_eq!(stderr(&out).trim().lines().count(), 1);
}

#[tokio::test]
async fn token_is_sent_from_flag_env_and_config() {
    let daemon = Daemon::builder().token("s3cret").start().await;
    let d = Ddim { d: &daemon };
    d.wait_ready(Some("s3cret"));
    let out = d.cmd(&["ls"]).output().unwrap();
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("DDIM_TOKEN"), "{}", stderr(&out));
    assert!(d
        .cmd(&["ls", "--token", "s3cret"])
        .output()
        .unwrap()
        .status
        .success());
    assert!(d
        .cmd(&["ls"])
        .env("DDIM_TOKEN", "s3cret")
        .output()
        .unwrap()
        .status
        .success());
    let cfg = daemon.dir.path().join("config.toml");
    std::fs::write(&cfg, "token = \"s3cret\"\n").unwrap();
    let out = d.cmd(&["ls"]).env("DDIM_CONFIG", &cfg).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}
