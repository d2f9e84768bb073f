//! Job lifecycle across cancellation, crashes and shutdown: cancel queued and
//! running jobs, kill -9 mid-job and restart, SIGTERM, attempts, queue
//! bounds and health.
//!
//! Needs the binaries: `cargo build --workspace --bins`.
use ddim_proto::v1 as pb;
use ddim_tests::*;
use std::time::{Duration, Instant};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// A job that runs for a few seconds on the test model.
fn long_job(seed: u64) -> pb::JobSpec {
    sample_spec(8, seed, 1000)
}

async fn latent_total(c: &mut Client) -> u64 {
    c.list_latents(pb::ListLatentsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .total
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_queued_and_running_jobs_leave_nothing() {
    let d = Daemon::builder().start().await;
    let mut c = d.client().await;
    let running = c
        .submit_job(submit(long_job(1)))
        .await
        .unwrap()
        .into_inner();
    wait_running(&mut c, &running.id).await;
    let queued = c
        .submit_job(submit(sample_spec(2, 2, 3)))
        .await
        .unwrap()
        .into_inner();
    // Queued: cancelled at once, never started.
    let q = c
        .cancel_job(pb::CancelJobRequest {
            id: queued.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (q.state(), q.attempts, q.started_unix_ms),
        (pb::JobState::Cancelled, 0, 0)
    );
    // Running: stopped between two steps.
    let r = c
        .cancel_job(pb::CancelJobRequest {
            id: running.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.state(), pb::JobState::Cancelled);
    assert!(r.step < r.total_steps, "{} of {}", r.step, r.total_steps);
    assert!(r.result.is_none());
    assert_eq!(latent_total(&mut c).await, 0);
    // Cancelling again is refused and changes nothing.
    let e = c
        .cancel_job(pb::CancelJobRequest {
            id: running.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(e.message().contains("already cancelled"), "{}", e.message());
    let st = c
        .get_stats(pb::GetStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!((st.cancelled, st.done, st.queued, st.running), (2, 0, 0, 0));
    // The worker goes on with new work.
    run_job(&mut c, sample_spec(1, 3, 2)).await;
    assert_eq!(latent_total(&mut c).await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn kill9_mid_job_then_restart_completes_it_once() {
    let mut d = Daemon::builder().start().await;
    let mut c = d.client().await;
    let job = c
        .submit_job(submit(long_job(5)))
        .await
        .unwrap()
        .into_inner();
    let queued = c
        .submit_job(submit(sample_spec(2, 6, 3)))
        .await
        .unwrap()
        .into_inner();
    wait_running(&mut c, &job.id).await;
    d.kill9();
    d.restart().await;
    let mut c = d.client().await;
    let done = wait_job(&mut c, &job.id).await;
    assert_eq!(done.state(), pb::JobState::Done, "{}", done.error);
    assert_eq!(done.attempts, 2);
    let other = wait_job(&mut c, &queued.id).await;
    assert_eq!((other.state(), other.attempts), (pb::JobState::Done, 1));
    // Exactly the latents of the two jobs, once each.
    assert_eq!(latent_total(&mut c).await, 8 + 2);
    let jobs = c
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert_eq!(jobs.len(), 2);
    assert!(d.log_text().contains("found running after a crash"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_interrupted_three_times_fails_as_interrupted() {
    let mut d = Daemon::builder().start().await;
    let mut c = d.client().await;
    let job = c
        .submit_job(submit(long_job(9)))
        .await
        .unwrap()
        .into_inner();
    for attempt in 1..=3 {
        wait_running(&mut c, &job.id).await;
        let j = c
            .get_job(pb::GetJobRequest { id: job.id.clone() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!((j.state(), j.attempts), (pb::JobState::Running, attempt));
        d.kill9();
        d.restart().await;
        c = d.client().await;
    }
    let j = c
        .get_job(pb::GetJobRequest { id: job.id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (j.state(), j.error.as_str(), j.attempts),
        (pb::JobState::Failed, "interrupted", 3)
    );
    assert_eq!(latent_total(&mut c).await, 0);
    let st = c
        .get_stats(pb::GetStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(st.failed, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_requeues_the_running_job_and_exits_zero() {
    let mut d = Daemon::builder().start().await;
    let mut c = d.client().await;
    let job = c
        .submit_job(submit(long_job(3)))
        .await
        .unwrap()
        .into_inner();
    wait_running(&mut c, &job.id).await;
    // Health goes NOT_SERVING on the Watch stream during shutdown.
    let mut h = HealthClient::new(channel(&d.addr).await);
    let mut watch = h
        .watch(HealthCheckRequest {
            service: "ddim.v1.Ddim".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        watch.message().await.unwrap().unwrap().status(),
        ServingStatus::Serving
    );
    let t0 = Instant::now();
    let pid = d.pid();
    let waiter = tokio::spawn(async move {
        let mut statuses = vec![];
        while let Ok(Some(m)) = watch.message().await {
            statuses.push(m.status());
        }
        statuses
    });
    let status = tokio::task::spawn_blocking(move || {
        let s = d.terminate(Duration::from_secs(20));
        (s, d)
    })
    .await
    .unwrap();
    let (exit, mut d) = status;
    assert!(
        exit.success(),
        "exit status {exit:?} (pid {pid}); log:\n{}",
        d.log_text()
    );
    assert!(t0.elapsed() < Duration::from_secs(15));
    let statuses = waiter.await.unwrap();
    assert_eq!(
        statuses.first(),
        Some(&ServingStatus::NotServing),
        "{statuses:?}"
    );
    // Restarted, the job is queued again without a used-up attempt and completes.
    d.restart().await;
    let mut c = d.client().await;
    let j = c
        .get_job(pb::GetJobRequest { id: job.id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(j.state(), pb::JobState::Failed);
    let done = wait_job(&mut c, &job.id).await;
    assert_eq!((done.state(), done.attempts), (pb::JobState::Done, 1));
    assert!(d
        .log_text()
        .contains("interrupted by shutdown, back in the queue"));
    assert_eq!(latent_total(&mut c).await, 8);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_queue_refuses_with_resource_exhausted() {
    let d = Daemon::builder().args(&["--max-queue", "2"]).start().await;
    let mut c = d.client().await;
    let running = c
        .submit_job(submit(long_job(1)))
        .await
        .unwrap()
        .into_inner();
    wait_running(&mut c, &running.id).await;
    c.submit_job(submit(sample_spec(1, 1, 2))).await.unwrap();
    c.submit_job(submit(sample_spec(1, 2, 2))).await.unwrap();
    let e = c
        .submit_job(submit(sample_spec(1, 3, 2)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted);
    assert!(e.message().contains("--max-queue 2"), "{}", e.message());
    let jobs = c
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert_eq!(jobs.len(), 3);
    let st = c
        .get_stats(pb::GetStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!((st.queued, st.running, st.max_queue), (2, 1, 2));
}

#[tokio::test(flavor = "multi_thread")]
async fn health_is_not_serving_until_the_model_is_loaded() {
    // The "small" preset (6.5M parameters) takes long enough to load (and
    // fingerprint) to watch health go NOT_SERVING → SERVING.
    let dir = tempfile::tempdir().unwrap();
    let model = init_model(&dir.path().join("small"), "small", 1, 32, 0);
    let d = Daemon::builder()
        .model(&model)
        .token("t")
        .no_wait()
        .start()
        .await;
    let mut h = HealthClient::new(channel(&d.addr).await);
    let mut watch = h
        .watch(HealthCheckRequest {
            service: "ddim.v1.Ddim".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap().status();
    assert_eq!(first, ServingStatus::NotServing);
    // Meanwhile model-bound RPCs are UNAVAILABLE, library ones work.
    let mut c = d.client().await;
    let e = c
        .get_model_info(pb::GetModelInfoRequest {})
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable);
    assert!(e.message().contains("loading"), "{}", e.message());
    assert_eq!(latent_total(&mut c).await, 0);
    let next = tokio::time::timeout(TIMEOUT, watch.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
        .status();
    assert_eq!(next, ServingStatus::Serving);
    // Both "" and the service report SERVING; health needs no token.
    for service in ["", "ddim.v1.Ddim"] {
        let s = h
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(s.status(), ServingStatus::Serving, "{service:?}");
    }
    assert_eq!(
        c.get_model_info(pb::GetModelInfoRequest {})
            .await
            .unwrap()
            .into_inner()
            .parameters,
        6_469_889
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_model_that_cannot_load_stops_the_daemon_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::builder()
        .model(&dir.path().join("nope"))
        .no_wait()
        .start()
        .await;
    let exit = d.wait_exit(TIMEOUT);
    assert!(!exit.success());
    let log = d.log_text();
    assert!(
        log.contains("--model") && log.contains("does not exist"),
        "{log}"
    );
}

/// Bad flags stop the daemon at once with a message naming the flag.
#[tokio::test(flavor = "multi_thread")]
async fn bad_flags_are_refused() {
    let d = Daemon::builder().start().await;
    let run = |args: &[&str]| {
        let out = std::process::Command::new(bin("ddimd"))
            .args(["serve", "--model"])
            .arg(&d.model)
            .arg("--data")
            .arg(d.dir.path().join("other-data"))
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} was accepted");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    assert!(run(&[
        "--addr",
        "127.0.0.1:0",
        "--device",
        "cpu",
        "--max-batch",
        "0"
    ])
    .contains("--max-batch"));
    assert!(run(&[
        "--addr",
        "127.0.0.1:0",
        "--device",
        "cpu",
        "--max-message-mb",
        "0"
    ])
    .contains("--max-message-mb"));
    assert!(run(&["--addr", "127.0.0.1:0", "--device", "tpu"]).contains("tpu"));
    assert!(run(&[
        "--addr",
        "127.0.0.1:0",
        "--device",
        "cpu",
        "--tls-cert",
        "/nonexistent.pem"
    ])
    .contains("--tls-key"));
    let busy = run(&["--addr", &d.addr, "--device", "cpu"]);
    assert!(busy.contains("--addr") && busy.contains(&d.addr), "{busy}");
    // The store of a running daemon is locked.
    let out = std::process::Command::new(bin("ddimd"))
        .args([
            "serve",
            "--device",
            "cpu",
            "--addr",
            "127.0.0.1:0",
            "--model",
        ])
        .arg(&d.model)
        .arg("--data")
        .arg(&d.data)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("in use by another ddimd"),
        "{err}"
    );
}

/// The default in a help line: `[default: X]`.
fn help_default(bin_name: &str, args: &[&str], flag: &str) -> String {
    let out = std::process::Command::new(bin(bin_name))
        .args(args)
        .env_remove("DDIMD_ADDR")
        .env_remove("DDIM_ADDR")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout).to_string();
    let at = help
        .find(flag)
        .unwrap_or_else(|| panic!("{bin_name} {args:?}: no {flag}"));
    let rest = &help[at..];
    let start = rest.find("[default: ").expect("a default") + "[default: ".len();
    rest[start..start + rest[start..].find(']').unwrap()].to_string()
}

/// A plain `ddimd serve` and a plain `ddim` meet: the client's default address
/// is the daemon's default listen address.
#[test]
fn daemon_and_client_default_to_the_same_address() {
    let daemon = help_default("ddimd", &["serve", "--help"], "--addr");
    let client = help_default("ddim", &["--help"], "--addr");
    assert_eq!(daemon, "127.0.0.1:7860");
    assert_eq!(client, format!("http://{daemon}"));
}
