//! The eval job kind over a real daemon: a tiny random model with a tiny random
//! judge beside it (`ddimd train-judge --steps 0`); bad input names the field; a
//! model without a judge is FAILED_PRECONDITION naming the judge; a small eval job
//! completes with well-formed cells and is deterministic for a seed; its η ≠ 0 and σ̂
//! cells are paired with the η = 0 cell of their S (also through `ddim eval`); the
//! solver is carried into the cells; `ListJobs` by kind lists the eval jobs.
//!
//! Backends: every test here runs on sled and on PostgreSQL (`on_backends!` at the
//! end: `NAME::sled`, `NAME::postgres`; the PostgreSQL ones each on a database of
//! their own on one server per test binary). Left sled-only: none.
//!
//! Needs the binaries (`cargo build --workspace --bins`) and Debian's
//! dataset-fashion-mnist (the judge's reference is the test split): skipped without it.
use ddim_proto::v1 as pb;
use ddim_tests::*;
use std::path::Path;
use std::process::Command;
use tonic::Code;

/// The small eval both the job's `ddim eval` and the offline `ddimd eval` run: S = 2,
/// η = 0 and 1, N = 6, seed 5 (the same cells as the job's S = 2 row).
const SMALL_EVAL: [&str; 9] = [
    "eval",
    "--samples",
    "6",
    "--steps",
    "2",
    "--eta",
    "0,1",
    "--seed",
    "5",
];

fn have_data() -> bool {
    let dir = std::env::var_os("DDIM_FASHION_MNIST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/usr/share/datasets/fashion-mnist".into());
    let ok = dir.join("t10k-images-idx3-ubyte.gz").exists()
        && dir.join("train-images-idx3-ubyte.gz").exists();
    if !ok {
        eprintln!("Fashion-MNIST is not installed: skipping");
    }
    ok
}

/// A random judge with small layers, written by `ddimd train-judge --steps 0`.
fn tiny_judge(dir: &Path) {
    let out = Command::new(bin("ddimd"))
        .args([
            "train-judge",
            "--steps",
            "0",
            "--channels",
            "4,8,8",
            "--features",
            "8",
        ])
        .args([
            "--test-images",
            "100",
            "--torch-threads",
            "1",
            "--device",
            "cpu",
            "--out",
        ])
        .arg(dir)
        .output()
        .expect("run ddimd train-judge");
    assert!(
        out.status.success(),
        "ddimd train-judge: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn eval_spec(steps: &[u32], etas: &[f32], sigma_hat: bool, samples: u32, seed: u64) -> pb::JobSpec {
    pb::JobSpec {
        kind: Some(pb::job_spec::Kind::Eval(pb::EvalJob {
            steps: steps.to_vec(),
            etas: etas.to_vec(),
            sigma_hat,
            spacing: pb::Spacing::Uniform as i32,
            samples,
            seed,
            ..Default::default()
        })),
    }
}

fn refused(r: Result<tonic::Response<pb::Job>, tonic::Status>, code: Code, field: &str) {
    let e = r.expect_err("expected an error");
    assert_eq!(e.code(), code, "{field}: {}", e.message());
    assert!(
        e.message().contains(field),
        "message {:?} does not name {field:?}",
        e.message()
    );
}

async fn eval_jobs_validate_run_and_are_deterministic(b: Backend) {
    if !have_data() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let model = init_model(&tmp.path().join("model"), "test", 1, 32, 0);
    tiny_judge(&model.join("judge"));
    let d = Daemon::builder().model(&model).backend(b).start().await;
    let mut c = d.client().await;

    for (spec, field) in [
        (eval_spec(&[2], &[0.0], false, 0, 0), "eval.samples"),
        (eval_spec(&[2], &[-0.5], false, 4, 0), "eval.etas[0]"),
        (eval_spec(&[2], &[0.0, 0.0], false, 4, 0), "eval.etas[1]"),
        (eval_spec(&[0], &[0.0], false, 4, 0), "eval.steps[0]"),
        (eval_spec(&[2, 1001], &[0.0], false, 4, 0), "eval.steps[1]"),
        (eval_spec(&[], &[0.0], false, 4, 0), "eval.steps"),
        (
            dpmpp(eval_spec(&[2], &[0.0, 0.5], false, 4, 0)),
            "eval.etas[1]",
        ),
        (dpmpp(eval_spec(&[2], &[0.0], true, 4, 0)), "eval.sigma_hat"),
    ] {
        refused(
            c.submit_job(submit(spec)).await,
            Code::InvalidArgument,
            field,
        );
    }

    let spec = eval_spec(&[2, 3], &[0.0, 1.0], true, 6, 5);
    let job = c
        .submit_job(submit(spec.clone()))
        .await
        .unwrap()
        .into_inner();
    let done = wait_job(&mut c, &job.id).await;
    assert_eq!(done.state, pb::JobState::Done as i32, "{}", done.error);
    assert_eq!(done.kind, "eval");
    // S × ⌈N / 64⌉ model calls per cell: (2 + 3) × 3 cells.
    assert_eq!(done.total_steps, 15);
    let r = done.result.unwrap().eval.expect("an eval result");
    assert_eq!(r.cells.len(), 6);
    assert_eq!(r.classes.len(), 10);
    assert_eq!(r.reference_images, 10_000);
    assert!(!r.judge_fingerprint.is_empty());
    let labels: Vec<(u32, f32, bool)> = r
        .cells
        .iter()
        .map(|c| (c.steps, c.eta, c.sigma_hat))
        .collect();
    assert_eq!(
        labels,
        [
            (2, 0.0, false),
            (2, 1.0, false),
            (2, 0.0, true),
            (3, 0.0, false),
            (3, 1.0, false),
            (3, 0.0, true)
        ]
    );
    for cell in &r.cells {
        assert_eq!(cell.n, 6);
        assert_eq!(cell.class_histogram.len(), 10);
        assert_eq!(cell.class_histogram.iter().sum::<u64>(), 6);
        assert!(cell.fd.is_finite() && cell.fd >= 0.0, "{cell:?}");
        assert!(cell.fd_low <= cell.fd_high, "{cell:?}");
        assert!((0.0..=1.0).contains(&cell.confidence), "{cell:?}");
        let g = cell.grid.as_ref().expect("a grid");
        assert!(g.png.starts_with(b"\x89PNG") && g.width > 0);
    }
    // Each η = 1 and σ̂ cell is paired with the η = 0 cell of its S (same x_T, same
    // resamples): the difference of the FDs with an interval; the η = 0 cells are not
    // paired with themselves.
    for (i, cell) in r.cells.iter().enumerate() {
        let base = &r.cells[i / 3 * 3];
        match (&cell.vs_eta0, i % 3) {
            (None, 0) => {}
            (Some(p), 1 | 2) => {
                assert!((p.diff - (cell.fd - base.fd)).abs() < 1e-9, "{p:?}");
                assert!(p.low.is_finite() && p.low <= p.high, "{p:?}");
            }
            (p, _) => panic!("cell {i} ({cell:?}): vs_eta0 {p:?}"),
        }
    }
    let floor = r.floor.expect("a floor");
    assert_eq!(floor.n, 6);
    assert!(floor.fd_low <= floor.fd_high && floor.fd >= 0.0);

    // The same spec again: the same numbers (fixed per-sample seeds, seeded bootstrap).
    let again = c.submit_job(submit(spec)).await.unwrap().into_inner();
    let r2 = wait_job(&mut c, &again.id)
        .await
        .result
        .unwrap()
        .eval
        .unwrap();
    for (a, b) in r.cells.iter().zip(&r2.cells) {
        assert_eq!((a.fd, a.fd_low, a.fd_high), (b.fd, b.fd_low, b.fd_high));
        assert_eq!(a.class_histogram, b.class_histogram);
    }

    // The solver is carried into the cells.
    // run_job asserts DONE.
    let dp = run_job(&mut c, dpmpp(eval_spec(&[3], &[0.0], false, 6, 5))).await;
    let cells = dp.result.clone().unwrap().eval.unwrap().cells;
    assert_eq!(cells.len(), 1);
    assert_eq!(cells[0].solver, pb::Solver::Dpmpp2m as i32);
    assert_eq!(r.cells[3].solver, pb::Solver::Ddim as i32);

    // Listing by kind: the three eval jobs, not the sample job that came after them.
    let other = run_job(&mut c, sample_spec(1, 0, 2)).await;
    let list = |kinds: &[&str]| pb::ListJobsRequest {
        kinds: kinds.iter().map(|k| k.to_string()).collect(),
        ..Default::default()
    };
    let evals = c
        .list_jobs(list(&["eval"]))
        .await
        .unwrap()
        .into_inner()
        .jobs;
    let ids: Vec<&str> = evals.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(ids, [dp.id.as_str(), again.id.as_str(), job.id.as_str()]);
    let both = c
        .list_jobs(list(&["sample", "eval"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(both.jobs.len(), 4);
    assert_eq!(both.jobs[0].id, other.id);
    let e = c.list_jobs(list(&["eval", "evil"])).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("kinds[1]") && e.message().contains("evil"),
        "{}",
        e.message()
    );

    // `ddim eval` shows the pairing: in --json as `ddimd eval --json` has it, and a
    // line per paired cell for people.
    let cli = cli::Ddim { d: &d };
    let args: Vec<&str> = SMALL_EVAL.iter().copied().chain(["--wait"]).collect();
    let v = cli.json(&args);
    let cells = v["result"]["eval"]["cells"]
        .as_array()
        .expect("cells")
        .clone();
    assert_eq!(cells.len(), 2, "{v}");
    assert!(cells[0].get("vs_eta0").is_none(), "{}", cells[0]);
    let p = &cells[1]["vs_eta0"];
    let diff = cells[1]["fd"].as_f64().unwrap() - cells[0]["fd"].as_f64().unwrap();
    assert!((p["diff"].as_f64().unwrap() - diff).abs() < 1e-9, "{p}");
    // The same cells as the job above: the pairing is part of the deterministic result.
    assert!((diff - (r.cells[1].fd - r.cells[0].fd)).abs() < 1e-9);
    let text = cli.text(&args);
    assert!(
        text.contains(&format!("S=2 η=1 − η=0, paired: {:+.2} (", diff)),
        "{text}"
    );
}

fn dpmpp(mut spec: pb::JobSpec) -> pb::JobSpec {
    if let Some(pb::job_spec::Kind::Eval(e)) = spec.kind.as_mut() {
        e.solver = pb::Solver::Dpmpp2m as i32;
    }
    spec
}

async fn a_model_without_a_judge_refuses_eval_naming_the_judge(b: Backend) {
    let d = Daemon::builder().backend(b).start().await;
    let mut c = d.client().await;
    let r = c
        .submit_job(submit(eval_spec(&[2], &[0.0], false, 4, 0)))
        .await;
    refused(r, Code::FailedPrecondition, "judge");
    let e = c
        .submit_job(submit(eval_spec(&[2], &[0.0], false, 4, 0)))
        .await
        .unwrap_err();
    assert!(e.message().contains("train-judge"), "{}", e.message());
}

// The tests above on both stores: sled and PostgreSQL (`NAME::sled`, `NAME::postgres`).
on_backends!(
    eval_jobs_validate_run_and_are_deterministic,
    a_model_without_a_judge_refuses_eval_naming_the_judge,
);

/// The offline `ddimd eval` on the same tiny model and judge: the JSON pairs each
/// η row with the η = 0 cell of its S (`vs_eta0`: the difference and its paired
/// basic interval), and a rerun on the progress file reuses the cells, pairing
/// included (the resampled FDs are kept in the progress lines).
#[test]
fn offline_eval_pairs_eta_rows_with_eta0_and_resumes() {
    if !have_data() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let model = init_model(&tmp.path().join("model"), "test", 1, 32, 0);
    tiny_judge(&model.join("judge"));
    let progress = tmp.path().join("p.jsonl");
    let (model_arg, progress_arg) = (model.to_str().unwrap(), progress.to_str().unwrap());
    // The small eval on this model and progress file, printed as `format`.
    let args = |format: &'static str| {
        let mut args = SMALL_EVAL.to_vec();
        args.extend([
            "--batch",
            "6",
            "--torch-threads",
            "1",
            format,
            "--model",
            model_arg,
            "--progress-file",
            progress_arg,
        ]);
        args
    };
    let run = || {
        let out = ddim_tests::cli::ddimd(&args("--json"));
        let err = ddim_tests::cli::stderr(&out);
        assert!(out.status.success(), "ddimd eval: {err}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        v["cells"].as_array().expect("cells").clone()
    };
    let cells = run();
    assert_eq!(cells.len(), 2);
    assert!(cells[0].get("vs_eta0").is_none(), "{}", cells[0]);
    let p = &cells[1]["vs_eta0"];
    let (diff, low, high) = (
        p["diff"].as_f64().expect("diff"),
        p["low"].as_f64().expect("low"),
        p["high"].as_f64().expect("high"),
    );
    let want = cells[1]["fd"].as_f64().unwrap() - cells[0]["fd"].as_f64().unwrap();
    assert!((diff - want).abs() < 1e-9, "{diff} vs {want}");
    assert!(low <= diff && diff <= high, "{p}");
    let lines = std::fs::read_to_string(&progress).unwrap();
    assert_eq!(lines.lines().count(), 2);
    assert!(lines.contains("\"resampled\""), "{lines}");
    // The rerun computes nothing and prints the same cells, pairing included, to the
    // last bit (floats round-trip through the progress file exactly).
    let again = run();
    assert_eq!(again, cells);
    assert_eq!(std::fs::read_to_string(&progress).unwrap(), lines);
    // `--markdown` prints the same cells as a report's table (FD to one decimal, the
    // paired row under η = 1), again computing nothing.
    let out = ddim_tests::cli::ddimd(&args("--markdown"));
    assert!(out.status.success(), "{}", ddim_tests::cli::stderr(&out));
    let md = String::from_utf8(out.stdout).unwrap();
    let row = |label: &str| {
        md.lines()
            .find(|l| l.starts_with(&format!("| {label} |")))
            .unwrap_or_else(|| panic!("no row {label} in\n{md}"))
            .to_string()
    };
    let one = |x: f64| format!("{x:.1}").replace('-', "−");
    for (label, c) in [("η = 0", &cells[0]), ("η = 1", &cells[1])] {
        let want = format!("| {label} | {} [", one(c["fd"].as_f64().unwrap()));
        assert!(row(label).starts_with(&want), "{want} in\n{md}");
    }
    let paired = row("η = 1 − η = 0, paired");
    assert!(
        paired.contains(&format!("{:+.1}", diff).replace('-', "−")),
        "{paired}"
    );
    assert!(md.contains("Floor (real vs real, "), "{md}");
    assert!(md.starts_with("| | S = 2 |\n|---|---|\n"), "{md}");
    let caption = md.trim_end().lines().last().unwrap();
    assert!(
        caption.starts_with("N = 6 per cell, uniform spacing, ddim solver, seed 5,"),
        "{caption}"
    );
    assert_eq!(std::fs::read_to_string(&progress).unwrap(), lines);
}
