//! Two daemons on one PostgreSQL store (`ddimd serve --store`, docs/scale-out.md):
//! one queue (every job runs exactly once, on one of them), one library (the same
//! from both), the same bytes as on sled, and a daemon killed mid-job whose job
//! finishes on the other once its lease runs out.
//!
//! The daemons serve one tiny random model folder, made once, so both have the same
//! fingerprint and either may run every job.
//!
//! Needs the binaries: `cargo build --workspace --bins`.
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use ddim_proto::v1 as pb;
use ddim_tests::pg::PgServer;
use ddim_tests::*;

/// Polls `GetJob` until the job ends, whichever daemon runs it (the database's
/// view, independent of notifications).
async fn poll_job(c: &mut Client, id: &str) -> pb::Job {
    let until = Instant::now() + TIMEOUT;
    loop {
        let j = c
            .get_job(pb::GetJobRequest { id: id.into() })
            .await
            .unwrap_or_else(|e| panic!("get {id}: {e}"))
            .into_inner();
        if matches!(
            j.state(),
            pb::JobState::Done | pb::JobState::Failed | pb::JobState::Cancelled
        ) {
            return j;
        }
        assert!(Instant::now() < until, "{id} did not finish in {TIMEOUT:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn db(pg: &PgServer) -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls)
        .await
        .expect("connect to the test database");
    tokio::spawn(conn);
    c
}

fn job_num(id: &str) -> i64 {
    id.trim_start_matches("job-").parse().expect("job id")
}

/// Two daemons on one database: `--lease` short so that a killed daemon's job
/// moves on quickly.
async fn two(pg: &PgServer, model: &std::path::Path, lease: &str) -> (Daemon, Daemon) {
    let url = pg.url();
    let b = |_: ()| {
        Daemon::builder()
            .model(model)
            .store(&url)
            .args(&["--lease", lease])
            .start()
    };
    let (a, bb) = tokio::join!(b(()), b(()));
    (a, bb)
}

async fn all_latents(c: &mut Client) -> Vec<(String, String)> {
    let r = c
        .list_latents(pb::ListLatentsRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    r.latents.into_iter().map(|l| (l.id, l.name)).collect()
}

/// 200 small jobs submitted across two daemons run exactly once each (one attempt,
/// one latent each, `ran_by` naming one of the two), both daemons do some, and the
/// library reads the same from both.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_daemons_share_one_queue_and_one_library() {
    let pg = tokio::task::spawn_blocking(PgServer::start).await.unwrap();
    let root = tempfile::tempdir().unwrap();
    let model = init_model(&root.path().join("model"), "test", 1, 32, 0);
    let (a, b) = two(&pg, &model, "10s").await;
    let (mut ca, mut cb) = (a.client().await, b.client().await);
    let t0 = Instant::now();
    let mut ids = vec![];
    for i in 0..200u64 {
        let c = if i % 2 == 0 { &mut ca } else { &mut cb };
        let j = c
            .submit_job(submit(sample_spec(1, 1000 + i, 2)))
            .await
            .expect("submit")
            .into_inner();
        ids.push(j.id);
    }
    let submitted = t0.elapsed();
    let mut latents = BTreeSet::new();
    for (i, id) in ids.iter().enumerate() {
        let c = if i % 3 == 0 { &mut ca } else { &mut cb };
        let j = poll_job(c, id).await;
        assert_eq!(j.state(), pb::JobState::Done, "{id}: {}", j.error);
        assert_eq!(j.attempts, 1, "{id} ran more than once");
        let made = j.result.expect("result").latent_ids;
        assert_eq!(made.len(), 1, "{id} made {made:?}");
        assert!(latents.insert(made[0].clone()), "{} made twice", made[0]);
    }
    let all = t0.elapsed();
    // Who ran what, from the database.
    let c = db(&pg).await;
    let nums: Vec<i64> = ids.iter().map(|i| job_num(i)).collect();
    let rows = c
        .query(
            "SELECT ran_by, count(*), max(attempts) FROM jobs WHERE id = ANY($1) GROUP BY ran_by",
            &[&nums],
        )
        .await
        .unwrap();
    let per: BTreeMap<String, i64> = rows
        .iter()
        .map(|r| (r.get::<_, Option<String>>(0).expect("ran_by set"), r.get(1)))
        .collect();
    assert!(rows.iter().all(|r| r.get::<_, i32>(2) == 1));
    assert_eq!(per.values().sum::<i64>(), 200);
    assert_eq!(per.len(), 2, "both daemons ran jobs: {per:?}");
    let names: BTreeSet<String> = per.keys().cloned().collect();
    let pids: BTreeSet<String> = [a.pid(), b.pid()].iter().map(|p| format!(":{p}")).collect();
    for n in &names {
        assert!(pids.iter().any(|p| n.ends_with(p)), "{n} is neither daemon");
    }
    eprintln!(
        "200 jobs (S=2): submitted in {:.2}s, all done in {:.2}s; per daemon {per:?}",
        submitted.as_secs_f64(),
        all.as_secs_f64()
    );
    // Both daemons list each other in GetStats.
    let stats = ca
        .get_stats(pb::GetStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    let listed: BTreeSet<String> = stats.daemons.iter().map(|d| d.id.clone()).collect();
    assert_eq!(listed, names, "GetStats.daemons: {:?}", stats.daemons);
    assert!(stats
        .daemons
        .iter()
        .all(|d| d.device == "cpu" && !d.fingerprint.is_empty() && d.heartbeat_unix_ms > 0));
    // `ddim daemons` on the other daemon prints the same fleet.
    let v = ddim_tests::cli::Ddim { d: &b }.json(&["daemons"]);
    assert_eq!(v["shared"], true, "{v}");
    let listed: BTreeSet<String> = v["daemons"]
        .as_array()
        .expect("daemons")
        .iter()
        .map(|d| ddim_tests::cli::s(&d["id"]).to_string())
        .collect();
    assert_eq!(listed, names, "ddim daemons: {v}");
    // One library, the same from both daemons.
    let (la, lb) = (all_latents(&mut ca).await, all_latents(&mut cb).await);
    assert_eq!(la.len(), 200);
    assert_eq!(la, lb);
    assert_eq!(
        la.iter().map(|l| l.0.clone()).collect::<BTreeSet<_>>(),
        latents
    );
    // A rename on one is seen by the other.
    let first = la[0].0.clone();
    ca.rename_latent(pb::RenameLatentRequest {
        id: first.clone(),
        name: "renamed on a".into(),
    })
    .await
    .expect("rename");
    let seen = cb
        .get_latent(pb::GetLatentRequest { id: first })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(seen.name, "renamed on a");
}

/// A sample with a given seed gives the same x_T and preview bytes on a PostgreSQL
/// store as on sled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeded_sample_is_the_same_bytes_as_on_sled() {
    let root = tempfile::tempdir().unwrap();
    let model = init_model(&root.path().join("model"), "test", 1, 32, 0);
    let sled = Daemon::builder().model(&model).start().await;
    let pg = Daemon::builder()
        .model(&model)
        .backend(Backend::Postgres)
        .start()
        .await;
    let mut out = vec![];
    for d in [&sled, &pg] {
        let mut c = d.client().await;
        let j = run_job(&mut c, sample_spec(2, 42, 6)).await;
        let mut bytes = vec![];
        for id in j.result.unwrap().latent_ids {
            let npy = c
                .export_latent(pb::ExportLatentRequest { id: id.clone() })
                .await
                .unwrap()
                .into_inner()
                .npy;
            let png = c
                .get_latent_image(pb::GetLatentImageRequest {
                    id,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .png;
            bytes.push((npy, png));
        }
        out.push(bytes);
    }
    assert_eq!(out[0].len(), 2);
    assert_eq!(out[0], out[1]);
}

/// kill -9 of the daemon running a job: its lease runs out, the other daemon's sweep
/// puts the job back in the queue and it runs there (a second attempt); nothing is
/// lost and nothing is written twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_daemon_killed_mid_job_leaves_it_to_the_other() {
    let pg = tokio::task::spawn_blocking(PgServer::start).await.unwrap();
    let root = tempfile::tempdir().unwrap();
    let model = init_model(&root.path().join("model"), "test", 1, 32, 0);
    let (mut a, mut b) = two(&pg, &model, "2s").await;
    let mut ca = a.client().await;
    // Long enough to be caught running (S=400 on the test model: a few seconds).
    let job = ca
        .submit_job(submit(sample_spec(1, 9, 400)))
        .await
        .expect("submit")
        .into_inner();
    let c = db(&pg).await;
    let num = job_num(&job.id);
    let until = Instant::now() + TIMEOUT;
    let runner = loop {
        let r = c
            .query_one("SELECT state, ran_by FROM jobs WHERE id = $1", &[&num])
            .await
            .unwrap();
        let (state, by): (String, Option<String>) = (r.get(0), r.get(1));
        if state == "running" {
            break by.expect("ran_by of a running job");
        }
        assert!(Instant::now() < until, "{} never ran", job.id);
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (killed, survivor) = if runner.ends_with(&format!(":{}", a.pid())) {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t_kill = Instant::now();
    killed.kill9();
    let mut cs = survivor.client().await;
    let done = poll_job(&mut cs, &job.id).await;
    eprintln!(
        "killed {runner} mid-job; done on the other {:.2}s later",
        t_kill.elapsed().as_secs_f64()
    );
    assert_eq!(done.state(), pb::JobState::Done, "{}", done.error);
    assert_eq!(done.attempts, 2);
    let r = c
        .query_one("SELECT ran_by FROM jobs WHERE id = $1", &[&num])
        .await
        .unwrap();
    let by: String = r.get(0);
    assert!(by.ends_with(&format!(":{}", survivor.pid())), "ran by {by}");
    let made = done.result.unwrap().latent_ids;
    assert_eq!(made.len(), 1);
    let n: i64 = c
        .query_one("SELECT count(*) FROM latents WHERE job_id = $1", &[&num])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1, "one latent, written once");
}

/// Figures for docs/scale-out.md (run by hand: `cargo test -p ddim-tests --test
/// scale_out -- --ignored --nocapture`): the claim latency of a job submitted to
/// idle daemons, a 16-job load on one daemon (sled, PostgreSQL) and on two, and a
/// 50-step job on sled against PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "measurement, prints figures"]
async fn measure() {
    let pg = tokio::task::spawn_blocking(PgServer::start).await.unwrap();
    let root = tempfile::tempdir().unwrap();
    let model = init_model(&root.path().join("model"), "test", 1, 32, 0);
    let db = db(&pg).await;
    // created → started of one job at a time, on two idle daemons.
    {
        let (a, b) = two(&pg, &model, "30s").await;
        let mut c = a.client().await;
        let mut waits = vec![];
        for i in 0..30 {
            let j = run_job_polled(&mut c, sample_spec(1, i, 2)).await;
            waits.push((j.started_unix_ms - j.created_unix_ms) as f64);
        }
        waits.sort_by(f64::total_cmp);
        eprintln!(
            "claim latency (submit → running, idle daemons, 30 jobs): median {} ms, max {} ms",
            waits[15], waits[29]
        );
        // The submitting daemon busy with a long job: the other claims each job when
        // the NOTIFY wakes it (the fallback poll is 1 s).
        let long = c
            .submit_job(submit(sample_spec(8, 99, 1000)))
            .await
            .unwrap()
            .into_inner();
        wait_running(&mut c, &long.id).await;
        let by = c
            .get_job(pb::GetJobRequest {
                id: long.id.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .ran_by;
        let mut c = if by.ends_with(&format!(":{}", a.pid())) {
            c
        } else {
            b.client().await
        };
        let mut waits = vec![];
        for i in 0..10 {
            let j = run_job_polled(&mut c, sample_spec(1, 100 + i, 2)).await;
            waits.push((j.started_unix_ms - j.created_unix_ms) as f64);
        }
        waits.sort_by(f64::total_cmp);
        eprintln!(
            "claim latency on the other daemon (woken by NOTIFY, 10 jobs): median {} ms, max {} ms",
            waits[5], waits[9]
        );
        c.cancel_job(pb::CancelJobRequest { id: long.id })
            .await
            .unwrap();
    }
    db.batch_execute("TRUNCATE jobs, latents, job_latents, daemons")
        .await
        .unwrap();
    // A 50-step job alone: sled against PostgreSQL (median of 5).
    let sled = Daemon::builder().model(&model).start().await;
    let one_pg = Daemon::builder()
        .model(&model)
        .store(&pg.url())
        .start()
        .await;
    for (name, d) in [("sled", &sled), ("postgres", &one_pg)] {
        let mut c = d.client().await;
        let mut t = vec![];
        for i in 0..5 {
            let t0 = Instant::now();
            run_job_polled(&mut c, sample_spec(1, i, 50)).await;
            t.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
        t.sort_by(f64::total_cmp);
        eprintln!(
            "50-step sample, submit → done, {name}: median {:.0} ms",
            t[2]
        );
    }
    // 16 jobs (S=50), --max-batch 4 so that two daemons can share them.
    let load = |c: Vec<Client>| async move {
        let t0 = Instant::now();
        let mut ids = vec![];
        for i in 0..16u64 {
            let mut cc = c[i as usize % c.len()].clone();
            ids.push(
                cc.submit_job(submit(sample_spec(1, 500 + i, 50)))
                    .await
                    .unwrap()
                    .into_inner()
                    .id,
            );
        }
        for id in &ids {
            let mut cc = c[0].clone();
            assert_eq!(poll_job(&mut cc, id).await.state(), pb::JobState::Done);
        }
        t0.elapsed().as_secs_f64()
    };
    let args = ["--max-batch", "4", "--lease", "30s"];
    let s1 = Daemon::builder().model(&model).args(&args).start().await;
    let t_sled = load(vec![s1.client().await]).await;
    drop(s1);
    let p1 = Daemon::builder()
        .model(&model)
        .store(&pg.url())
        .args(&args)
        .start()
        .await;
    let t_pg1 = load(vec![p1.client().await]).await;
    let p2 = Daemon::builder()
        .model(&model)
        .store(&pg.url())
        .args(&args)
        .start()
        .await;
    let t_pg2 = load(vec![p1.client().await, p2.client().await]).await;
    eprintln!(
        "16 jobs S=50 (--max-batch 4): one daemon on sled {t_sled:.2}s, one on PostgreSQL {t_pg1:.2}s, two on PostgreSQL {t_pg2:.2}s"
    );
}

async fn run_job_polled(c: &mut Client, spec: pb::JobSpec) -> pb::Job {
    let j = c.submit_job(submit(spec)).await.unwrap().into_inner();
    let j = poll_job(c, &j.id).await;
    assert_eq!(j.state(), pb::JobState::Done, "{}", j.error);
    j
}

/// Submits `spec` to one daemon and follows it from another: a watch there sees
/// the job end DONE, and that daemon's library watch `lib` sees the latent it made.
async fn followed_across(
    from: &mut Client,
    to: &mut Client,
    lib: &mut tonic::Streaming<pb::LibraryEvent>,
    spec: pb::JobSpec,
) {
    let j = from
        .submit_job(submit(spec))
        .await
        .expect("submit")
        .into_inner();
    let done = wait_job(to, &j.id).await;
    assert_eq!(done.state(), pb::JobState::Done, "{}", done.error);
    let made = done.result.expect("result").latent_ids;
    let ev = tokio::time::timeout(TIMEOUT, lib.message())
        .await
        .expect("a library event on the other daemon")
        .expect("the library stream")
        .expect("not ended");
    assert_eq!(
        (ev.kind(), &ev.id),
        (pb::library_event::Kind::Added, &made[0])
    );
}

/// A daemon runs only the jobs of its model: with two models on one store, a job
/// submitted to A runs on A, never on B; a watch on B still follows it to the end
/// (LISTEN/NOTIFY), and B's `WatchLibrary` sees the latent it made.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watch_on_one_daemon_follows_a_job_on_the_other() {
    let pg = tokio::task::spawn_blocking(PgServer::start).await.unwrap();
    let root = tempfile::tempdir().unwrap();
    let model_a = init_model(&root.path().join("a"), "test", 1, 32, 0);
    let model_b = init_model(&root.path().join("b"), "test", 1, 32, 1);
    let a = Daemon::builder()
        .model(&model_a)
        .store(&pg.url())
        .start()
        .await;
    let b = Daemon::builder()
        .model(&model_b)
        .store(&pg.url())
        .start()
        .await;
    let (mut ca, mut cb) = (a.client().await, b.client().await);
    let mut lib = cb
        .watch_library(pb::WatchLibraryRequest {})
        .await
        .unwrap()
        .into_inner();
    for i in 0..3 {
        followed_across(&mut ca, &mut cb, &mut lib, sample_spec(1, i, 20)).await;
    }
    let c = db(&pg).await;
    let by: Vec<String> = c
        .query("SELECT DISTINCT ran_by FROM jobs", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(by, vec![format!("{}", by[0])]);
    assert!(by[0].ends_with(&format!(":{}", a.pid())), "ran on {by:?}");
}

/// Progress across daemons: a watch on A of a job that B runs gets B's progress
/// steps with x̂0 previews (relayed by NOTIFY, throttled by B) before the end, and
/// the finished job names B as the daemon that ran it. The two daemons serve two
/// models, so the job (pinned to B's model) can only run on B; B is kept busy with
/// a long job while the watch on A is set up, then that job is cancelled and B
/// takes the watched one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watch_on_one_daemon_sees_progress_and_previews_of_a_job_on_the_other() {
    use pb::job_event::Event;
    let pg = tokio::task::spawn_blocking(PgServer::start).await.unwrap();
    let root = tempfile::tempdir().unwrap();
    let model_a = init_model(&root.path().join("a"), "test", 1, 32, 0);
    let model_b = init_model(&root.path().join("b"), "test", 1, 32, 1);
    let (a, b) = tokio::join!(
        Daemon::builder().model(&model_a).store(&pg.url()).start(),
        Daemon::builder().model(&model_b).store(&pg.url()).start()
    );
    let (mut ca, mut cb) = (a.client().await, b.client().await);
    // B busy: a long job, running before the watched one is submitted.
    let long = cb
        .submit_job(submit(sample_spec(1, 1, 1000)))
        .await
        .unwrap()
        .into_inner();
    let until = Instant::now() + TIMEOUT;
    loop {
        let j = cb
            .get_job(pb::GetJobRequest {
                id: long.id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        if j.state() == pb::JobState::Running {
            break;
        }
        assert_eq!(j.state(), pb::JobState::Queued, "{}", j.error);
        assert!(Instant::now() < until, "{} never ran", long.id);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let job = cb
        .submit_job(submit(sample_spec(1, 2, 40)))
        .await
        .unwrap()
        .into_inner();
    let mut watch = ca
        .watch_job(pb::WatchJobRequest {
            id: job.id.clone(),
            preview_every: 1,
        })
        .await
        .expect("watch on a")
        .into_inner();
    // The watch is in place (A answered it): let B go on to the watched job.
    let cancelled = cb
        .cancel_job(pb::CancelJobRequest {
            id: long.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.state(), pb::JobState::Cancelled);
    let mut steps = vec![];
    let mut previews = 0;
    let finished = loop {
        let ev = tokio::time::timeout(TIMEOUT, watch.message())
            .await
            .expect("an event within the timeout")
            .expect("the watch stream")
            .expect("the watch ends with the finished job");
        match ev.event {
            Some(Event::Progress(p)) => {
                assert_eq!(p.total, 40);
                assert!((1..=40).contains(&p.step), "step {}", p.step);
                steps.push(p.step);
                if let Some(img) = p.preview {
                    let png = image::load_from_memory(&img.png).expect("a PNG preview");
                    assert_eq!((png.width(), png.height()), (img.width, img.height));
                    assert!(img.width > 0 && img.width <= 64, "{}", img.width);
                    previews += 1;
                }
            }
            Some(Event::Finished(j)) => break j,
            _ => {}
        }
    };
    assert_eq!(finished.state(), pb::JobState::Done, "{}", finished.error);
    assert!(
        steps.iter().any(|s| *s < 40),
        "no progress before the end on a: {steps:?}"
    );
    assert!(previews > 0, "no x̂0 preview on a ({steps:?})");
    assert!(
        steps.windows(2).all(|w| w[0] < w[1]),
        "steps out of order: {steps:?}"
    );
    // Ran on B, and A says so, with B's id as the fleet lists it.
    assert!(
        finished.ran_by.ends_with(&format!(":{}", b.pid())),
        "ran by {:?}",
        finished.ran_by
    );
    let stats = ca
        .get_stats(pb::GetStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    let d = stats
        .daemons
        .iter()
        .find(|d| d.id == finished.ran_by)
        .unwrap_or_else(|| panic!("{} not in the fleet {:?}", finished.ran_by, stats.daemons));
    assert_eq!(d.address, b.addr);
}

/// A network partition, as a paused process (SIGSTOP): the daemon running a job
/// stops renewing its lease, the other daemon runs the job again and finishes it;
/// when the first comes back (SIGCONT) its late result is refused: the job stays
/// done by the other, with one latent.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_late_result_after_the_lease_ran_out_is_refused() {
    let pg = tokio::task::spawn_blocking(PgServer::start).await.unwrap();
    let root = tempfile::tempdir().unwrap();
    let model = init_model(&root.path().join("model"), "test", 1, 32, 0);
    let (a, b) = two(&pg, &model, "2s").await;
    let mut ca = a.client().await;
    let job = ca
        .submit_job(submit(sample_spec(1, 3, 300)))
        .await
        .expect("submit")
        .into_inner();
    let c = db(&pg).await;
    let num = job_num(&job.id);
    let until = Instant::now() + TIMEOUT;
    let runner = loop {
        let r = c
            .query_one("SELECT state, ran_by FROM jobs WHERE id = $1", &[&num])
            .await
            .unwrap();
        let (state, by): (String, Option<String>) = (r.get(0), r.get(1));
        if state == "running" {
            break by.expect("ran_by");
        }
        assert!(Instant::now() < until, "{} never ran", job.id);
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (cut, other) = if runner.ends_with(&format!(":{}", a.pid())) {
        (&a, &b)
    } else {
        (&b, &a)
    };
    let signal = |sig: &str, pid: u32| {
        let ok = std::process::Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    };
    signal("-STOP", cut.pid());
    let mut co = other.client().await;
    let done = poll_job(&mut co, &job.id).await;
    signal("-CONT", cut.pid());
    assert_eq!(done.state(), pb::JobState::Done, "{}", done.error);
    assert_eq!(done.attempts, 2);
    // Give the resumed daemon time to try to settle (or to see its lease lost).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let r = c
        .query_one(
            "SELECT state, ran_by, attempts FROM jobs WHERE id = $1",
            &[&num],
        )
        .await
        .unwrap();
    let (state, by, attempts): (String, String, i32) = (r.get(0), r.get(1), r.get(2));
    assert_eq!(state, "done");
    assert!(by.ends_with(&format!(":{}", other.pid())), "ran by {by}");
    assert_eq!(attempts, 2);
    let n: i64 = c
        .query_one("SELECT count(*) FROM latents WHERE job_id = $1", &[&num])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1, "the late result was not written");
    let log = cut.log_text();
    assert!(
        log.contains("lease lost") || log.contains("under this daemon's lease"),
        "the cut-off daemon's log says nothing of its lease:\n{log}"
    );
}

/// With the database away, a read answers UNAVAILABLE (retry), not NOT_FOUND (which
/// would tell a client the latent is gone); once it is back, the same read works.
#[tokio::test(flavor = "multi_thread")]
async fn reads_while_the_database_is_down_are_unavailable_not_not_found() {
    let mut pg = PgServer::start();
    let d = Daemon::builder().store(&pg.url()).start().await;
    let mut c = d.client().await;
    let job = run_job(&mut c, sample_spec(1, 5, 2)).await;
    let id = job.result.expect("result").latent_ids[0].clone();
    let before = c
        .export_latent(pb::ExportLatentRequest { id: id.clone() })
        .await
        .expect("export")
        .into_inner();

    pg.stop();
    for _ in 0..2 {
        let e = c
            .export_latent(pb::ExportLatentRequest { id: id.clone() })
            .await
            .expect_err("the database is stopped");
        assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
        let e = c
            .get_latent(pb::GetLatentRequest { id: id.clone() })
            .await
            .expect_err("the database is stopped");
        assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    }

    pg.restart();
    let until = Instant::now() + TIMEOUT;
    let after = loop {
        match c
            .export_latent(pb::ExportLatentRequest { id: id.clone() })
            .await
        {
            Ok(r) => break r.into_inner(),
            Err(e) => {
                assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
                assert!(Instant::now() < until, "never readable again: {e:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(after.npy, before.npy);
}

/// Health of the whole server (`""`), as a load balancer asks it.
async fn health(d: &Daemon) -> tonic_health::pb::health_check_response::ServingStatus {
    let mut h = tonic_health::pb::health_client::HealthClient::new(channel(&d.addr).await);
    let r = h
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health answers whatever the database does")
        .into_inner();
    r.status()
}

/// Polls until `f` holds for daemon `d` (health, stats), panicking after TIMEOUT.
async fn until_health(d: &Daemon, want: tonic_health::pb::health_check_response::ServingStatus) {
    let until = Instant::now() + TIMEOUT;
    loop {
        let now = health(d).await;
        if now == want {
            return;
        }
        assert!(
            Instant::now() < until,
            "health stayed {now:?}, never {want:?}; log:\n{}",
            d.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A database restart mid-load (the server stopped with jobs queued, running and
/// done, then started again on the same data): every job whose submit was
/// acknowledged finishes DONE exactly once with its latent; submits during the
/// outage answer UNAVAILABLE naming the database (no hang, no panic); health is
/// NOT_SERVING and `GetStats` says the store is unreachable while it is away, and
/// both are back once the daemons reconnect. The outage is far shorter than the
/// lease (60 s), so no lease runs out: each job in flight when the server stopped
/// is settled after the reconnect by the daemon that ran it, and no job runs twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_restart_mid_load_loses_no_acknowledged_job() {
    use tonic_health::pb::health_check_response::ServingStatus;
    let mut pg = tokio::task::spawn_blocking(PgServer::start).await.unwrap();
    let root = tempfile::tempdir().unwrap();
    let model = init_model(&root.path().join("model"), "test", 1, 32, 0);
    let url = pg.url();
    let start = |_: ()| {
        Daemon::builder()
            .model(&model)
            .store(&url)
            .args(&["--lease", "60s", "--max-batch", "2"])
            .start()
    };
    let (a, b) = tokio::join!(start(()), start(()));
    let (mut ca, mut cb) = (a.client().await, b.client().await);
    let mut acked = vec![];
    for i in 0..30u64 {
        let c = if i % 2 == 0 { &mut ca } else { &mut cb };
        let j = c
            .submit_job(submit(sample_spec(1, 7000 + i, 40)))
            .await
            .expect("submit before the outage")
            .into_inner();
        acked.push(j.id);
    }
    // Mid-load: some jobs done, the rest queued or running.
    let until = Instant::now() + TIMEOUT;
    loop {
        let j = ca
            .get_job(pb::GetJobRequest {
                id: acked[3].clone(),
            })
            .await
            .expect("get")
            .into_inner();
        if j.state() == pb::JobState::Done {
            break;
        }
        assert!(Instant::now() < until, "{} never ran", acked[3]);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pending = {
        let c = db(&pg).await;
        let r = c
            .query_one("SELECT count(*) FROM jobs WHERE state <> 'done'", &[])
            .await
            .unwrap();
        r.get::<_, i64>(0)
    };
    assert!(pending > 0, "the load finished before the outage");

    tokio::task::block_in_place(|| pg.stop());
    // Submits while the database is away: UNAVAILABLE, naming it, on both daemons.
    for c in [&mut ca, &mut cb] {
        let e = tokio::time::timeout(TIMEOUT, c.submit_job(submit(sample_spec(1, 1, 2))))
            .await
            .expect("a submit during the outage answers")
            .expect_err("the database is stopped");
        assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
        assert!(e.message().contains("database"), "{e:?}");
    }
    for (d, c) in [(&a, &mut ca), (&b, &mut cb)] {
        until_health(d, ServingStatus::NotServing).await;
        let s = c
            .get_stats(pb::GetStatsRequest {})
            .await
            .expect("GetStats answers during the outage")
            .into_inner();
        assert!(s.store_unreachable, "{s:?}");
        assert!(!s.store_error.is_empty() && s.store_unreachable_since_unix_ms > 0);
    }

    // A daemon ends a job (or starts one it claimed) while the database is away: it
    // holds the write (the result in memory) until the database answers.
    let until = Instant::now() + TIMEOUT;
    while ![&a, &b]
        .iter()
        .any(|d| d.log_text().contains("held until the database answers"))
    {
        assert!(Instant::now() < until, "no job ended during the outage");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    tokio::task::block_in_place(|| pg.restart());
    for (d, c) in [(&a, &mut ca), (&b, &mut cb)] {
        until_health(d, ServingStatus::Serving).await;
        let s = c
            .get_stats(pb::GetStatsRequest {})
            .await
            .unwrap()
            .into_inner();
        assert!(!s.store_unreachable, "{s:?}");
    }
    // A submit after the reconnect is accepted and runs.
    let j = ca
        .submit_job(submit(sample_spec(1, 9999, 2)))
        .await
        .expect("submit after the reconnect")
        .into_inner();
    acked.push(j.id);

    let mut latents = BTreeSet::new();
    for (i, id) in acked.iter().enumerate() {
        let c = if i % 2 == 0 { &mut cb } else { &mut ca };
        let j = poll_job(c, id).await;
        assert_eq!(j.state(), pb::JobState::Done, "{id}: {}", j.error);
        assert_eq!(j.attempts, 1, "{id} ran more than once");
        let made = j.result.expect("result").latent_ids;
        assert_eq!(made.len(), 1, "{id} made {made:?}");
        assert!(latents.insert(made[0].clone()), "{} made twice", made[0]);
    }
    // The database agrees: nothing left behind, one latent per job.
    let c = db(&pg).await;
    let left: i64 = c
        .query_one("SELECT count(*) FROM jobs WHERE state <> 'done'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "jobs not done after the restart");
    let nums: Vec<i64> = acked.iter().map(|i| job_num(i)).collect();
    let rows = c
        .query(
            "SELECT j.id, count(l.id) FROM jobs j LEFT JOIN latents l ON l.job_id = j.id \
             WHERE j.id = ANY($1) GROUP BY j.id",
            &[&nums],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), acked.len());
    for r in &rows {
        assert_eq!(r.get::<_, i64>(1), 1, "job-{}: latents", r.get::<_, i64>(0));
    }
    // Each daemon said once that the database went away and once that it came back.
    for d in [&a, &b] {
        let log = d.log_text();
        assert_eq!(
            log.matches("reconnecting with backoff (health NOT_SERVING")
                .count(),
            1,
            "one line per outage, not per attempt:\n{log}"
        );
        assert!(log.contains("the database is reachable again"), "{log}");
        assert!(!log.contains("panicked"), "{log}");
    }
}

/// A daemon stopped (SIGTERM) while the database is away does not hang on the
/// writes it holds: it exits, its running job stays `running` under its lease, and
/// once the database is back and the lease has run out the other daemon's sweep
/// puts the job back in the queue and runs it (a second attempt, one latent).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_daemon_stopped_while_the_database_is_away_leaves_its_job_to_the_other() {
    let mut pg = tokio::task::spawn_blocking(PgServer::start).await.unwrap();
    let root = tempfile::tempdir().unwrap();
    let model = init_model(&root.path().join("model"), "test", 1, 32, 0);
    let (mut a, mut b) = two(&pg, &model, "3s").await;
    let mut ca = a.client().await;
    let job = ca
        .submit_job(submit(sample_spec(1, 11, 400)))
        .await
        .expect("submit")
        .into_inner();
    let num = job_num(&job.id);
    let runner = {
        let c = db(&pg).await;
        let until = Instant::now() + TIMEOUT;
        loop {
            let r = c
                .query_one("SELECT state, ran_by FROM jobs WHERE id = $1", &[&num])
                .await
                .unwrap();
            let (state, by): (String, Option<String>) = (r.get(0), r.get(1));
            if state == "running" {
                break by.expect("ran_by of a running job");
            }
            assert!(Instant::now() < until, "{} never ran", job.id);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let (stopped, other) = if runner.ends_with(&format!(":{}", a.pid())) {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    tokio::task::block_in_place(|| pg.stop());
    let status = tokio::task::block_in_place(|| stopped.terminate(TIMEOUT));
    assert!(status.success(), "{status:?}; log:\n{}", stopped.log_text());
    tokio::task::block_in_place(|| pg.restart());
    let mut co = other.client().await;
    let until = Instant::now() + TIMEOUT;
    let done = loop {
        // UNAVAILABLE until the other daemon has reconnected.
        match co.get_job(pb::GetJobRequest { id: job.id.clone() }).await {
            Ok(j) if j.get_ref().state() == pb::JobState::Done => break j.into_inner(),
            Ok(j) => assert!(
                !matches!(
                    j.get_ref().state(),
                    pb::JobState::Failed | pb::JobState::Cancelled
                ),
                "{:?}",
                j.get_ref()
            ),
            Err(e) => assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}"),
        }
        assert!(Instant::now() < until, "{} never finished", job.id);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(done.attempts, 2, "the stopped daemon's attempt counts");
    assert!(
        done.ran_by.ends_with(&format!(":{}", other.pid())),
        "{}",
        done.ran_by
    );
    assert_eq!(done.result.expect("result").latent_ids.len(), 1);
    let c = db(&pg).await;
    let n: i64 = c
        .query_one("SELECT count(*) FROM latents WHERE job_id = $1", &[&num])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
}

/// A watch on daemon A of a job running on daemon B ends when the job does, even
/// when the job's end was written while A was not listening: the database is
/// stopped while B runs the job (B holds the end), and started again after A's
/// listener has backed off, so B's end is usually committed before A listens
/// again and A learns it from its catch-up read rather than a notification.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watch_across_daemons_ends_after_a_database_restart() {
    let mut pg = tokio::task::spawn_blocking(PgServer::start).await.unwrap();
    let root = tempfile::tempdir().unwrap();
    // Two models: a job submitted to B runs on B only.
    let model_a = init_model(&root.path().join("a"), "test", 1, 32, 0);
    let model_b = init_model(&root.path().join("b"), "test", 1, 32, 1);
    let a = Daemon::builder()
        .model(&model_a)
        .store(&pg.url())
        .start()
        .await;
    let b = Daemon::builder()
        .model(&model_b)
        .store(&pg.url())
        .start()
        .await;
    let (mut ca, mut cb) = (a.client().await, b.client().await);
    let job = cb
        .submit_job(submit(sample_spec(1, 21, 300)))
        .await
        .expect("submit")
        .into_inner();
    let mut watch = ca
        .watch_job(pb::WatchJobRequest {
            id: job.id.clone(),
            preview_every: 0,
        })
        .await
        .expect("watch on a")
        .into_inner();
    wait_running(&mut cb, &job.id).await;
    tokio::task::block_in_place(|| pg.stop());
    // B ends the job while the database is away and holds the end.
    let until = Instant::now() + TIMEOUT;
    while !b.log_text().contains("held until the database answers") {
        assert!(Instant::now() < until, "b never held the end of {}", job.id);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Long enough for A's listener to back off to seconds between attempts.
    tokio::time::sleep(Duration::from_secs(6)).await;
    tokio::task::block_in_place(|| pg.restart());
    let finished = tokio::time::timeout(TIMEOUT, async {
        while let Some(ev) = watch.message().await.expect("the watch on a") {
            if let Some(pb::job_event::Event::Finished(j)) = ev.event {
                return j;
            }
        }
        panic!("the watch on a ended without a finished event")
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "the watch on a never saw {} end; a's log:\n{}",
            job.id,
            a.log_text()
        )
    });
    assert_eq!(finished.state(), pb::JobState::Done, "{}", finished.error);
    assert_eq!(finished.attempts, 1, "the held end was written");
    assert!(
        finished.ran_by.ends_with(&format!(":{}", b.pid())),
        "{}",
        finished.ran_by
    ); // Which way A learned it (--nocapture): `caught_up=1` is the catch-up read.
    for l in a.log_text().lines() {
        if l.contains("listening for other daemons again") {
            eprintln!("a: {l}");
        }
    }
}

/// TLS to the database (docs/scale-out.md, TLS): two daemons on a PostgreSQL that
/// takes TCP connections only over TLS and logs in by client certificate, with
/// `sslmode=verify-full`. A job submitted to A (pinned to A's model) is followed to
/// the end by a watch on B, and B's `WatchLibrary` sees its latent: the LISTEN
/// connection works over TLS too. Every connection of both daemons is encrypted.
/// A daemon given another CA's roots does not start: one line naming the store
/// and why, exit 1, the key's path and no password printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_daemons_over_tls_with_client_certificates() {
    use ddim_tests::pg::ServerTls;
    use ddim_tests::tls::Ca;
    let ca = Ca::new("ddim test CA");
    let other = Ca::new("another CA");
    let tls = ServerTls {
        server: ca.issue(&["localhost"], "db"),
        client_ca: Some(ca.pem().to_string()),
    };
    let pg = tokio::task::spawn_blocking(move || PgServer::start_tls(tls))
        .await
        .unwrap();
    let root = tempfile::tempdir().unwrap();
    let ca_file = ca.write(root.path(), "ca.crt");
    let other_file = other.write(root.path(), "other.crt");
    let (crt, key) = ca.issue(&[], "ddim").write(root.path(), "ddim");
    let url = |roots: &std::path::Path| {
        format!(
            "postgres://ddim@localhost:{}/ddim?sslmode=verify-full&sslrootcert={}&sslcert={}&sslkey={}",
            pg.port(),
            roots.display(),
            crt.display(),
            key.display()
        )
    };
    let model_a = init_model(&root.path().join("a"), "test", 1, 32, 0);
    let model_b = init_model(&root.path().join("b"), "test", 1, 32, 1);
    let a = Daemon::builder()
        .model(&model_a)
        .store(&url(&ca_file))
        .start()
        .await;
    let b = Daemon::builder()
        .model(&model_b)
        .store(&url(&ca_file))
        .start()
        .await;
    let (mut ca_c, mut cb) = (a.client().await, b.client().await);
    let mut lib = cb
        .watch_library(pb::WatchLibraryRequest {})
        .await
        .unwrap()
        .into_inner();
    followed_across(&mut ca_c, &mut cb, &mut lib, sample_spec(1, 7, 5)).await;
    // The daemons' connections, seen from the server (through its socket).
    let (c, conn) = tokio_postgres::connect(&pg.socket_conninfo(), tokio_postgres::NoTls)
        .await
        .expect("connect through the socket");
    tokio::spawn(conn);
    let r = c
        .query_one(
            "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl), \
             count(*) FILTER (WHERE a.query LIKE 'LISTEN%' AND s.ssl), \
             count(DISTINCT s.client_dn) FILTER (WHERE s.ssl) \
             FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
             WHERE a.application_name = 'ddimd'",
            &[],
        )
        .await
        .unwrap();
    let (enc, plain, listen, dns): (i64, i64, i64, i64) = (r.get(0), r.get(1), r.get(2), r.get(3));
    assert_eq!(plain, 0, "a daemon connection without TLS");
    assert_eq!(listen, 2, "one LISTEN connection per daemon, over TLS");
    assert!(
        enc >= 4,
        "pools and LISTEN connections of two daemons: {enc}"
    );
    assert_eq!(dns, 1, "every connection shows the client certificate");
    // Another CA's roots: the daemon refuses to start.
    let o = tokio::task::spawn_blocking({
        let (u, m) = (url(&other_file), model_a.clone());
        let data = root.path().join("unused");
        move || {
            ddim_tests::cli::ddimd(&[
                "serve",
                "--model",
                m.to_str().unwrap(),
                "--data",
                data.to_str().unwrap(),
                "--store",
                &u,
                "--addr",
                "127.0.0.1:0",
            ])
        }
    })
    .await
    .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", ddim_tests::cli::stderr(&o));
    let e = ddim_tests::cli::one_line_error(&o);
    assert!(
        e.starts_with(&format!(
            "error: --store postgres://ddim@localhost:{}/ddim",
            pg.port()
        )) && e.contains("cannot connect")
            && e.contains("invalid peer certificate: UnknownIssuer (the server's certificate is not signed by"),
        "{e}"
    );
}

/// The shared queue as one queue. A runs one job and is paused (SIGSTOP) with
/// four batch-priority jobs queued behind it, so the places are known: a watch on
/// B of the last (A will run it) starts at place 3, counting every daemon's
/// queued jobs ahead; B's `--max-queue 4` refuses a submit while those four wait,
/// and `GetStats`/`ddim daemons` on B give the shared queue's length. An
/// interactive job submitted to C (B and C busy, so it waits) moves the watched
/// job to place 4: the watch on B hears of a submit to another daemon. Once A
/// runs again the place counts down to the job's start.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn positions_and_max_queue_count_the_shared_queue() {
    use pb::job_event::Event;
    let pg = tokio::task::spawn_blocking(PgServer::start).await.unwrap();
    let root = tempfile::tempdir().unwrap();
    let model_a = init_model(&root.path().join("a"), "test", 1, 32, 0);
    let model_b = init_model(&root.path().join("b"), "test", 1, 32, 1);
    let start = |model: std::path::PathBuf, args: &'static [&'static str]| {
        let url = pg.url();
        async move {
            Daemon::builder()
                .model(&model)
                .store(&url)
                .args(args)
                .start()
                .await
        }
    };
    let a = start(model_a, &["--max-batch", "1"]).await;
    // B and C serve one model: each kept busy by a job of its own that would
    // outlast the test's TIMEOUT (cancelled below), so no job of theirs ends
    // meanwhile and nothing but the queue's NOTIFY can move a place.
    let b = start(model_b.clone(), &["--max-queue", "4", "--max-batch", "1"]).await;
    let cd = start(model_b, &["--max-batch", "1"]).await;
    let (mut ca, mut cb, mut cc) = (a.client().await, b.client().await, cd.client().await);
    let c = db(&pg).await;
    let running = |id: String| {
        let c = &c;
        async move {
            let n = job_num(&id);
            let until = Instant::now() + TIMEOUT;
            while c
                .query_one("SELECT state FROM jobs WHERE id = $1", &[&n])
                .await
                .unwrap()
                .get::<_, String>(0)
                != "running"
            {
                assert!(Instant::now() < until, "{id} never ran");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let mut busy = vec![];
    for cl in [&mut cb, &mut cc] {
        let id = long_job(cl).await;
        running(id.clone()).await;
        busy.push(id);
    }
    let mut ids = vec![];
    for (i, steps) in [300, 5, 5, 5, 5].into_iter().enumerate() {
        let mut req = submit(sample_spec(1, i as u64, steps));
        if i > 0 {
            req.priority = pb::Priority::Batch as i32;
        }
        let j = ca.submit_job(req).await.expect("submit to a").into_inner();
        ids.push(j.id);
    }
    // A runs the first (pinned to A's model, so B and C never take any of them).
    running(ids[0].clone()).await;
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &a.pid().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    };
    signal("-STOP");
    let mut watch = cb
        .watch_job(pb::WatchJobRequest {
            id: ids[4].clone(),
            preview_every: 0,
        })
        .await
        .expect("watch on b")
        .into_inner();
    let e = next_event(&mut watch).await;
    assert!(matches!(e, Event::QueuedPosition(3)), "{e:?}");
    // B's bound counts the four jobs waiting in the database.
    let full = cb
        .submit_job(submit(sample_spec(1, 9, 5)))
        .await
        .expect_err("the shared queue is full");
    assert_eq!(full.code(), tonic::Code::ResourceExhausted);
    assert!(
        full.message()
            .contains("4 jobs queued in the shared database")
            && full.message().contains("--max-queue 4"),
        "{}",
        full.message()
    );
    // GetStats and `ddim daemons` on B give the shared queue's length.
    let st = cb
        .get_stats(pb::GetStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!((st.shared_queued, st.queued, st.max_queue), (4, 0, 4));
    let v = ddim_tests::cli::Ddim { d: &b }.json(&["daemons"]);
    assert_eq!(
        (&v["queued"], &v["max_queue"]),
        (&4.into(), &4.into()),
        "{v}"
    );
    // An interactive job submitted to C goes ahead of the batch jobs; B hears of
    // it (NOTIFY ddimd_queue) and the place moves back.
    let x = cc
        .submit_job(submit(sample_spec(1, 10, 5)))
        .await
        .expect("submit to c")
        .into_inner();
    let e = next_event(&mut watch).await;
    assert!(matches!(e, Event::QueuedPosition(4)), "{e:?}");
    // B and C free again: X runs, and the place is 3 again.
    for (cl, id) in [&mut cb, &mut cc].into_iter().zip(&busy) {
        cl.cancel_job(pb::CancelJobRequest { id: id.clone() })
            .await
            .expect("cancel a long job");
    }
    assert_eq!(poll_job(&mut cc, &x.id).await.state(), pb::JobState::Done);
    let e = next_event(&mut watch).await;
    assert!(matches!(e, Event::QueuedPosition(3)), "{e:?}");
    signal("-CONT");
    let mut last = 3;
    loop {
        match next_event(&mut watch).await {
            Event::QueuedPosition(p) => {
                assert!(p < last, "the place went from {last} to {p}");
                last = p;
            }
            Event::Started(_) => break,
            e => panic!("before the start: {e:?}"),
        }
    }
    let done = loop {
        if let Event::Finished(j) = next_event(&mut watch).await {
            break j;
        }
    };
    assert_eq!(done.state(), pb::JobState::Done, "{}", done.error);
    assert!(
        done.ran_by.ends_with(&format!(":{}", a.pid())),
        "{}",
        done.ran_by
    );
    // With the queue drained, B takes jobs again.
    let j = run_job_polled(&mut cb, sample_spec(1, 9, 5)).await;
    assert!(
        j.ran_by.ends_with(&format!(":{}", b.pid()))
            || j.ran_by.ends_with(&format!(":{}", cd.pid())),
        "{}",
        j.ran_by
    );
}

/// `--max-queue` holds across daemons: with both busy (so nothing leaves the
/// queue), twelve submits at once, six to each daemon, leave exactly three jobs
/// queued; the other nine are refused with RESOURCE_EXHAUSTED. A retry of an
/// accepted submit (its idempotency key) is answered with its job while the queue
/// is full.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn max_queue_holds_under_concurrent_submits_to_two_daemons() {
    let pg = tokio::task::spawn_blocking(PgServer::start).await.unwrap();
    let root = tempfile::tempdir().unwrap();
    let model = init_model(root.path(), "test", 1, 32, 0);
    let start = || {
        Daemon::builder()
            .model(&model)
            .store(&pg.url())
            .args(&["--max-queue", "3", "--max-batch", "1"])
            .start()
    };
    let (a, b) = tokio::join!(start(), start());
    let (mut ca, mut cb) = (a.client().await, b.client().await);
    // Each daemon busy with a job that would outlast the test (cancelled below).
    let mut busy = vec![];
    for cl in [&mut ca, &mut cb] {
        busy.push(long_job(cl).await);
    }
    let c = db(&pg).await;
    let until = Instant::now() + TIMEOUT;
    loop {
        let n: i64 = c
            .query_one("SELECT count(*) FROM jobs WHERE state = 'running'", &[])
            .await
            .unwrap()
            .get(0);
        if n == 2 {
            break;
        }
        assert!(Instant::now() < until, "the long jobs never both ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut submits = tokio::task::JoinSet::new();
    for i in 0..12u64 {
        let mut cl = if i % 2 == 0 { ca.clone() } else { cb.clone() };
        submits.spawn(async move {
            let mut req = submit(sample_spec(1, i, 5));
            req.idempotency_key = format!("k{i}");
            (req.clone(), cl.submit_job(req).await)
        });
    }
    let (mut accepted, mut refused) = (vec![], 0);
    while let Some(r) = submits.join_next().await {
        match r.unwrap() {
            (req, Ok(j)) => accepted.push((req, j.into_inner().id)),
            (_, Err(e)) => {
                assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e}");
                refused += 1;
            }
        }
    }
    let ids: Vec<_> = accepted.iter().map(|(_, id)| id).collect();
    assert_eq!((accepted.len(), refused), (3, 9), "accepted {ids:?}");
    let queued: i64 = c
        .query_one("SELECT count(*) FROM jobs WHERE state = 'queued'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(queued, 3);
    // Retried on the other daemon, an accepted submit gets its job back.
    let (req, id) = accepted[0].clone();
    let again = cb
        .submit_job(req)
        .await
        .expect("a retry while full")
        .into_inner();
    assert_eq!(again.id, id);
    for (cl, id) in [&mut ca, &mut cb].into_iter().zip(&busy) {
        cl.cancel_job(pb::CancelJobRequest { id: id.clone() })
            .await
            .expect("cancel a long job");
    }
}

/// Submits a job that would outlast a test (64 images, 1,000 steps) and returns
/// its id: it keeps the daemon that takes it busy until cancelled.
async fn long_job(c: &mut Client) -> String {
    c.submit_job(submit(sample_spec(64, 0, 1000)))
        .await
        .expect("a long job")
        .into_inner()
        .id
}

/// The next event of a watch (within [`TIMEOUT`]).
async fn next_event(w: &mut tonic::Streaming<pb::JobEvent>) -> pb::job_event::Event {
    tokio::time::timeout(TIMEOUT, w.message())
        .await
        .expect("an event in time")
        .expect("the stream")
        .expect("not ended")
        .event
        .expect("an event")
}
