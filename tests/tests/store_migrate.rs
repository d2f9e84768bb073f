//! `ddimd migrate` between sled and a real PostgreSQL server (tests/src/pg.rs: its
//! own cluster per test, on a free loopback port). A library made by a real daemon
//! (sampled, encoded, imported and edited latents, a rename, a tag, a delete, done
//! jobs with results) goes sled → PostgreSQL → a new sled folder; served from
//! there, every `ddim export` (x_T and preview), every source image and every job
//! is byte-identical to the original's, and ids carry on. A target that is not
//! empty is refused and left as it was, and so is a source folder being served; an
//! unreachable server, a malformed URL, a database without a library are one
//! `error:` line.
//!
//! Needs the binaries (`cargo build --workspace --bins`) and PostgreSQL's server
//! programs (installed by the fixture through apt when missing and root).
use ddim_proto::v1 as pb;
use ddim_tests::cli::{ddimd, one_line_error, stderr};
use ddim_tests::pg::PgServer;
use ddim_tests::*;
use prost::Message;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// `ddimd migrate --from FROM --to TO --json`: its report and how long it took.
fn migrate(from: &str, to: &str) -> (serde_json::Value, Duration) {
    let t0 = Instant::now();
    let o = ddimd(&["migrate", "--from", from, "--to", to, "--json"]);
    let took = t0.elapsed();
    assert_eq!(
        o.status.code(),
        Some(0),
        "migrate {from} → {to}: {}",
        stderr(&o)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "not one JSON object ({e}): {}",
            String::from_utf8_lossy(&o.stdout)
        )
    });
    assert_eq!(v["verified"], true, "{v}");
    (v, took)
}

/// What a client reads of every latent: `ddim export ID x.npy` and `ddim export ID
/// x.png` (the files), and the source image.
type Exports = BTreeMap<String, (Vec<u8>, Vec<u8>, Option<Vec<u8>>)>;

async fn exports(d: &Daemon, work: &Path) -> Exports {
    let mut c = d.client().await;
    let list = c
        .list_latents(pb::ListLatentsRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    std::fs::create_dir_all(work).unwrap();
    // No user config file.
    std::fs::write(work.join("none.toml"), "").unwrap();
    let mut out = BTreeMap::new();
    for l in list.latents {
        let export = |ext: &str| {
            let f = work.join(format!("{}.{ext}", l.id));
            let o = Command::new(bin("ddim"))
                .args(["--addr", &d.addr, "export", &l.id])
                .arg(&f)
                .env_remove("DDIM_TOKEN")
                .env("DDIM_CONFIG", work.join("none.toml"))
                .output()
                .expect("run ddim export");
            assert!(o.status.success(), "ddim export {}: {}", l.id, stderr(&o));
            std::fs::read(&f).unwrap()
        };
        let npy = export("npy");
        let png = export("png");
        let source = c
            .get_latent_image(pb::GetLatentImageRequest {
                id: l.id.clone(),
                kind: pb::LatentImageKind::Source as i32,
                steps: 0,
            })
            .await
            .ok()
            .map(|r| r.into_inner().png);
        out.insert(l.id, (npy, png, source));
    }
    out
}

/// Every job as `GetJob` answers it (record, spec summary, result), encoded.
async fn jobs(d: &Daemon) -> BTreeMap<String, Vec<u8>> {
    let mut c = d.client().await;
    let list = c
        .list_jobs(pb::ListJobsRequest {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.skipped, 0);
    let mut out = BTreeMap::new();
    for j in list.jobs {
        let full = c
            .get_job(pb::GetJobRequest { id: j.id.clone() })
            .await
            .unwrap()
            .into_inner();
        out.insert(j.id, full.encode_to_vec());
    }
    out
}

fn spec(k: pb::job_spec::Kind) -> pb::JobSpec {
    pb::JobSpec { kind: Some(k) }
}

/// A library on sled made by a real daemon, stopped with SIGTERM: returns the model,
/// the store folder, what `ddim export` gives for every latent, and every job.
async fn make_library(root: &Path) -> (PathBuf, PathBuf, Exports, BTreeMap<String, Vec<u8>>) {
    let model = init_model(&root.join("model"), "test", 1, 32, 0);
    let data = root.join("sled");
    let mut d = Daemon::builder().model(&model).data(&data).start().await;
    let mut c = d.client().await;
    let a = run_job(&mut c, sample_spec(3, 1, 2)).await;
    run_job(&mut c, sample_spec(2, 2, 3)).await;
    let images = (0..2)
        .map(|i| {
            (
                format!("img{i}.png"),
                png(32, 32, |x, y| ((x * 5 + y * (i + 1)) % 256) as u8),
            )
        })
        .collect();
    run_job(&mut c, encode_spec(images, 2)).await;
    let values: Vec<f32> = (0..2 * 32 * 32)
        .map(|i| ((i % 17) as f32 - 8.0) / 4.0)
        .collect();
    run_job(
        &mut c,
        spec(pb::job_spec::Kind::Import(pb::ImportJob {
            latents: vec![pb::ImportInput {
                npy: npy_bytes(&[2, 1, 32, 32], &values),
                name: "imported".into(),
                tags: vec!["from-numpy".into()],
            }],
            preview_steps: 2,
            spacing: pb::Spacing::Uniform as i32,
        })),
    )
    .await;
    let sampled = a.result.unwrap().latent_ids;
    run_job(
        &mut c,
        spec(pb::job_spec::Kind::Variation(pb::VariationJob {
            latent_id: sampled[0].clone(),
            strength: 0.3,
            seed: 4,
            count: 2,
            out: Some(pb::EditOutput {
                preview_steps: 2,
                ..Default::default()
            }),
        })),
    )
    .await;
    c.rename_latent(pb::RenameLatentRequest {
        id: sampled[1].clone(),
        name: "Renamed Ü".into(),
    })
    .await
    .unwrap();
    c.tag_latent(pb::TagLatentRequest {
        id: sampled[1].clone(),
        add: vec!["keep".into(), "shirts".into()],
        remove: vec![],
    })
    .await
    .unwrap();
    // A hole in the ids: they are never reused, so the counter must travel.
    c.delete_latent(pb::DeleteLatentRequest {
        id: sampled[2].clone(),
    })
    .await
    .unwrap();
    let before = exports(&d, &root.join("exports-before")).await;
    let jobs = jobs(&d).await;
    assert_eq!(before.len(), 3 + 2 + 2 + 2 + 2 - 1);
    assert_eq!(jobs.len(), 5);
    assert!(d.terminate(Duration::from_secs(30)).success());
    (model, data, before, jobs)
}

/// File names and sizes under `dir`, to tell it was not touched.
fn listing(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else {
                out.push((e.path(), m.len()));
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn sled_to_postgres_and_back_gives_byte_identical_exports() {
    let t0 = Instant::now();
    let pg = PgServer::start();
    eprintln!("PostgreSQL cluster started in {:?}", pg.startup);
    assert!(t0.elapsed() < Duration::from_secs(60));
    let root = tempfile::tempdir().unwrap();
    let (model, data, before, jobs_before) = make_library(root.path()).await;

    // sled → PostgreSQL.
    let (v, took) = migrate(s(&data), &pg.url());
    eprintln!("sled → PostgreSQL: {took:?} ({v})");
    assert_eq!(v["latents"], 10);
    assert_eq!(v["jobs"], 5);
    assert_eq!(v["to"], pg.url());
    assert_eq!(v["damaged_ids"], serde_json::json!([]));
    let next_id = v["next_id"].as_u64().unwrap();
    assert!(next_id >= 16, "{v}");

    // PostgreSQL → a new sled folder.
    let back = root.path().join("back");
    let (w, took) = migrate(&pg.url(), s(&back));
    eprintln!("PostgreSQL → sled: {took:?} ({w})");
    for k in ["latents", "jobs", "next_id", "bytes"] {
        assert_eq!(w[k], v[k], "{k}: {v} vs {w}");
    }

    // A target that is not empty is refused and left as it was: the database…
    let o = ddimd(&["migrate", "--from", s(&data), "--to", &pg.url()]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let e = one_line_error(&o);
    assert!(
        e.contains(&format!(
            "--to {}: not empty (10 latents, 5 jobs, next id {next_id})",
            pg.url()
        )),
        "{e}"
    );
    // …(it still reads the same)…
    let again = root.path().join("again");
    let (x, _) = migrate(&pg.url(), s(&again));
    for k in ["latents", "jobs", "next_id", "bytes"] {
        assert_eq!(x[k], v[k], "{k}");
    }
    // …and the folder.
    let files = listing(&back);
    let o = ddimd(&["migrate", "--from", &pg.url(), "--to", s(&back)]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(one_line_error(&o).contains("not empty"));
    assert_eq!(listing(&back), files);
    // The source is not a target either.
    let o = ddimd(&["migrate", "--from", s(&back), "--to", s(&back)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(one_line_error(&o).contains("the same store"));

    // Served from the round trip: the same bytes, the same jobs, ids carry on.
    let d = Daemon::builder().model(&model).data(&back).start().await;
    // A folder being served is not a source (sled locks it): stop the daemon first.
    let o = ddimd(&[
        "migrate",
        "--from",
        s(&back),
        "--to",
        s(&root.path().join("no")),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let e = one_line_error(&o);
    assert!(
        e.contains("--from") && e.contains("in use by another ddimd process"),
        "{e}"
    );
    let after = exports(&d, &root.path().join("exports-after")).await;
    assert_eq!(after.len(), before.len());
    for (id, (npy, png, source)) in &before {
        let (n, p, src) = &after[id];
        assert_eq!(n, npy, "{id}: ddim export .npy");
        assert_eq!(p, png, "{id}: ddim export .png");
        assert_eq!(src, source, "{id}: source image");
    }
    assert_eq!(after, before);
    assert_eq!(jobs(&d).await, jobs_before);
    let mut c = d.client().await;
    let job = run_job(&mut c, sample_spec(1, 5, 2)).await;
    let n: u64 = job.id.trim_start_matches("job-").parse().unwrap();
    assert!(n >= next_id, "ids continue past {next_id}: {}", job.id);
}

#[test]
fn an_unreachable_server_or_a_bad_url_is_one_line() {
    let root = tempfile::tempdir().unwrap();
    let empty = root.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    // The target is checked before the source is read.
    let o = ddimd(&[
        "migrate",
        "--from",
        s(&empty),
        "--to",
        "postgres://127.0.0.1:1/x",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let e = one_line_error(&o);
    assert!(
        e.starts_with(
            "error: --to postgres://127.0.0.1:1/x: cannot connect: error connecting to server"
        ),
        "{e}"
    );
    // A source that cannot be reached: nothing is made at the target.
    let new = root.path().join("new");
    let o = ddimd(&[
        "migrate",
        "--from",
        "postgres://u:hunter2@127.0.0.1:1/x",
        "--to",
        s(&new),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let e = one_line_error(&o);
    assert!(
        e.contains("--from postgres://u:***@127.0.0.1:1/x: cannot connect"),
        "{e}"
    );
    assert!(!e.contains("hunter2"), "the password is not printed: {e}");
    assert!(!new.exists());
    // Not a URL of PostgreSQL, not a URL at all.
    let o = ddimd(&[
        "migrate",
        "--from",
        s(&empty),
        "--to",
        "postgres://u@h:port/x",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(one_line_error(&o).contains("not a PostgreSQL URL"));
    let o = ddimd(&["migrate", "--from", s(&empty), "--to", "mysql://u@h/x"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(one_line_error(&o).contains("neither a folder nor a postgres:// URL"));
    // A folder without a store.
    let o = ddimd(&["migrate", "--from", s(&empty), "--to", s(&new)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(one_line_error(&o).contains("--from"), "{}", stderr(&o));
    // A database with no library is not a source.
    let pg = PgServer::start();
    let o = ddimd(&["migrate", "--from", &pg.url(), "--to", s(&new)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(one_line_error(&o).contains("no ddimd store in that database"));
    assert!(!new.exists());
}
