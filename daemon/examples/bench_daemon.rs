//! Daemon benchmark (not a test): prints the figures docs/benchmarks.md quotes.
//!
//! ```text
//! cargo build --release -p ddimd --bin ddimd --example bench_daemon
//! target/release/examples/bench_daemon [--preset tiny] [--threads 1] [--steps 20] [--latents 100000]
//! target/release/examples/bench_daemon --only library   # part 3 alone (no model, no ddimd)
//! target/release/examples/bench_daemon --only overhead|batching|study   # part 2, 1 or 4 alone
//! target/release/examples/bench_daemon --only edit [--threads 2]   # part 5, the shipped model
//! ```
//!
//! 1. Batching gain: 16 concurrent single-image sample jobs against one such
//!    job, on a daemon with `--max-batch 16` and on one with `--max-batch 1`.
//! 2. Daemon overhead: a 50-step single-image sample job through the daemon
//!    (submit → WatchJob finished) against the same work through the offline
//!    engine in this process (median of 5).
//! 3. Library paging: `ListLatents`-style pages over N latents in the store, in
//!    every order, by token and by offset, and the cost of a rename (which
//!    moves a latent in the name index).
//! 4. Study jobs: 8 encoded Fashion-MNIST test images reconstructed at
//!    S = 10, 20 by one `latents` job against 8 single-latent jobs; one frame
//!    of a 16-frame interpolation saved with `only_saved_frames` against the
//!    whole job.
//! 5. Editing (`--only edit`), with the shipped model `models/fashion-mnist` (not the
//!    random preset): the time of a live `PreviewEdit` at S = 10, batch 1 (variation and
//!    renoise), and of a committed edit (variation with its S = 50 preview decode;
//!    renoise at S = 50), each as median and p90 of repeated runs on an idle daemon.
use ddim_proto::v1 as pb;
use ddim_proto::v1::ddim_client::DdimClient;
use ddimd::engine::config::UNetConfig;
use ddimd::engine::noise;
use ddimd::engine::schedule::SchedulerConfig;
use ddimd::engine::{sampler, Model, SamplerOptions, Spacing};
use ddimd::server::store::{
    Cursor, JobKind, JobRecord, JobState, LatentFilter, LatentOrder, LatentRecord, NewLatent,
    OriginRecord, Priority, Store, RECORD_VERSION,
};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

struct Args {
    preset: String,
    threads: i32,
    steps: u32,
    latents: u64,
    /// Only this part ("library", "study", "edit"); empty: all but "edit".
    only: String,
}

fn args() -> Args {
    let mut a = Args {
        preset: "tiny".into(),
        threads: 1,
        steps: 20,
        latents: 100_000,
        only: String::new(),
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    for w in v.chunks(2) {
        let val = w.get(1).cloned().unwrap_or_default();
        match w[0].as_str() {
            "--preset" => a.preset = val,
            "--threads" => a.threads = val.parse().expect("--threads N"),
            "--steps" => a.steps = val.parse().expect("--steps N"),
            "--latents" => a.latents = val.parse().expect("--latents N"),
            "--only" => a.only = val,
            f => panic!("unknown flag {f}"),
        }
    }
    a
}

struct Daemon {
    child: Child,
    addr: String,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ddimd_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("exe");
    let p = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .join("ddimd");
    assert!(
        p.exists(),
        "{} is missing: cargo build --release -p ddimd --bin ddimd",
        p.display()
    );
    p
}

fn start(model: &Path, data: &Path, threads: i32, extra: &[&str]) -> Daemon {
    let mut child = Command::new(ddimd_bin())
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--device",
            "cpu",
            "--torch-threads",
            &threads.to_string(),
            "--model",
        ])
        .arg(model)
        .arg("--data")
        .arg(data)
        .args(extra)
        .env("OMP_NUM_THREADS", threads.to_string())
        .stdout(Stdio::piped())
        .stderr(
            std::fs::File::create(
                std::env::temp_dir().join(format!("bench_ddimd{}.log", extra.join("_"))),
            )
            .map(Stdio::from)
            .unwrap_or(Stdio::null()),
        )
        .spawn()
        .expect("spawn ddimd");
    let out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let addr = out
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("listening on ").map(str::to_string))
        .expect("listening on");
    Daemon { child, addr }
}

async fn client(addr: &str) -> DdimClient<Channel> {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let mut c = DdimClient::connect(format!("http://{addr}"))
            .await
            .expect("connect");
        if c.get_model_info(pb::GetModelInfoRequest {}).await.is_ok() {
            return c;
        }
        assert!(Instant::now() < until, "daemon never served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn sample(seed: u64, steps: u32) -> pb::SubmitJobRequest {
    pb::SubmitJobRequest {
        spec: Some(pb::JobSpec {
            kind: Some(pb::job_spec::Kind::Sample(pb::SampleJob {
                count: 1,
                seed,
                sampler: Some(pb::SamplerOptions {
                    steps,
                    eta: 0.0,
                    spacing: 0,
                    sigma_hat: false,
                    solver: 0,
                }),
                name_prefix: String::new(),
                tags: vec![],
            })),
        }),
        priority: 0,
        idempotency_key: String::new(),
    }
}

async fn wait(c: &mut DdimClient<Channel>, id: &str) {
    let mut s = c
        .watch_job(pb::WatchJobRequest {
            id: id.into(),
            preview_every: 0,
        })
        .await
        .expect("watch")
        .into_inner();
    while let Some(ev) = s.message().await.expect("watch") {
        if let Some(pb::job_event::Event::Finished(j)) = ev.event {
            assert_eq!(j.state(), pb::JobState::Done, "{}", j.error);
            return;
        }
    }
    panic!("stream ended");
}

/// Seconds for `n` concurrent single-image jobs, submitted at once.
async fn concurrent(addr: &str, n: u64, steps: u32) -> f64 {
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let addr = addr.to_string();
            tokio::spawn(async move {
                let mut c = client(&addr).await;
                let job = c
                    .submit_job(sample(1000 + i, steps))
                    .await
                    .expect("submit")
                    .into_inner();
                wait(&mut c, &job.id).await;
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("job task");
    }
    t0.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    v[v.len() / 2]
}

async fn batching(model: &Path, a: &Args) {
    println!(
        "## batching gain ({} preset, S = {}, {} torch thread(s))",
        a.preset, a.steps, a.threads
    );
    let mut t16s = vec![];
    for max_batch in ["16", "1"] {
        let dir = tempfile::tempdir().expect("tmp");
        let d = start(
            model,
            dir.path(),
            a.threads,
            &["--max-batch", max_batch, "--max-wait-ms", "20"],
        );
        let mut c = client(&d.addr).await;
        // Warm up.
        let j = c
            .submit_job(sample(1, a.steps))
            .await
            .expect("submit")
            .into_inner();
        wait(&mut c, &j.id).await;
        let mut singles = vec![];
        for k in 0..3 {
            let t0 = Instant::now();
            let j = c
                .submit_job(sample(2 + k, a.steps))
                .await
                .expect("submit")
                .into_inner();
            wait(&mut c, &j.id).await;
            singles.push(t0.elapsed().as_secs_f64());
        }
        let t1 = median(singles);
        let mut rounds = vec![];
        for _ in 0..3 {
            rounds.push(concurrent(&d.addr, 16, a.steps).await);
        }
        let t16 = median(rounds);
        t16s.push(t16);
        println!(
            "--max-batch {max_batch:>2}: one job {:.3} s ({:.1} images/s); 16 concurrent jobs {:.3} s ({:.1} images/s): {:.2}x one job's rate",
            t1,
            1.0 / t1,
            t16,
            16.0 / t16,
            16.0 * t1 / t16
        );
    }
    println!(
        "batching gain on 16 concurrent jobs (--max-batch 16 vs 1): {:.2}x",
        t16s[1] / t16s[0]
    );
}

async fn overhead(model_dir: &Path, a: &Args) {
    const S: u32 = 50;
    const RUNS: u64 = 15;
    println!("## daemon overhead (one image, S = {S})");
    let dir = tempfile::tempdir().expect("tmp");
    let d = start(model_dir, dir.path(), a.threads, &[]);
    let mut c = client(&d.addr).await;
    // The same work offline, in this process, with the same number of torch threads.
    tch::set_num_threads(a.threads);
    let model = Model::load(model_dir, tch::Device::Cpu).expect("load");
    let opts = SamplerOptions {
        steps: S as usize,
        eta: 0.0,
        spacing: Spacing::Uniform,
        sigma_hat: false,
        solver: Default::default(),
    };
    let run = |seed: u64| {
        let seeds = noise::seeds(seed, 1);
        let xt = noise::initial_noise(&seeds, model.sample_shape(), model.device);
        let x = sampler::sample(&model, &xt, &opts, &seeds, &mut |_| true).expect("sample");
        ddimd::engine::imageio::tensor_png(&x, 1)
    };
    // Warm both up, then alternate a daemon job and the offline run (never at the
    // same time), so a load that drifts during the run hits both alike; the overhead
    // is the median of the paired differences.
    let j = c
        .submit_job(sample(1, S))
        .await
        .expect("submit")
        .into_inner();
    wait(&mut c, &j.id).await;
    run(1);
    let (mut daemon_times, mut offline, mut diffs) = (vec![], vec![], vec![]);
    for k in 0..RUNS {
        let t0 = Instant::now();
        let j = c
            .submit_job(sample(10 + k, S))
            .await
            .expect("submit")
            .into_inner();
        wait(&mut c, &j.id).await;
        let td = t0.elapsed().as_secs_f64();
        let t0 = Instant::now();
        run(10 + k);
        let to = t0.elapsed().as_secs_f64();
        daemon_times.push(td);
        offline.push(to);
        diffs.push(td - to);
    }
    let (dm, om, diff) = (median(daemon_times), median(offline), median(diffs));
    println!(
        "daemon {dm:.3} s, offline engine {om:.3} s (medians of {RUNS}, alternated): overhead {:.1}% ({:.1} ms per job, median of the paired differences)",
        diff / om * 100.0,
        diff * 1000.0
    );
}

fn library(n: u64) {
    println!("## library paging ({n} latents)");
    let dir = tempfile::tempdir().expect("tmp");
    let t0 = Instant::now();
    {
        let store = Store::open(dir.path()).expect("store");
        let per_job = 1000;
        for j in 0..n.div_ceil(per_job) {
            let job = JobRecord {
                v: RECORD_VERSION,
                id: store.next_id().expect("id"),
                kind: JobKind::Sample,
                state: JobState::Queued,
                priority: Priority::Batch,
                created_ms: 0,
                started_ms: 0,
                finished_ms: 0,
                attempts: 0,
                error: String::new(),
                total_steps: 1,
                reads: vec![],
                produced: vec![],
                idempotency_key: String::new(),
                batch: None,
                rows: 1,
                images: 1,
                stopped_at: 0,
                ran_by: String::new(),
            };
            store.insert_job(&job, b"").expect("insert");
            let mut run = job.clone();
            run.state = JobState::Running;
            store.move_job(&run, JobState::Queued).expect("run");
            let latents: Vec<NewLatent> = (0..per_job.min(n - j * per_job))
                .map(|i| {
                    let id = store.next_id().expect("id");
                    let k = j * per_job + i;
                    NewLatent {
                        record: LatentRecord {
                            v: RECORD_VERSION,
                            id,
                            name: format!("sample-{k}"),
                            tags: if k % 100 == 0 {
                                vec!["rare".into()]
                            } else {
                                vec!["common".into()]
                            },
                            created_ms: 0,
                            shape: [1, 32, 32],
                            fingerprint: "bench".into(),
                            encode_steps: [0, 20, 50, 100][k as usize % 4],
                            encode_spacing: String::new(),
                            encode_solver: String::new(),
                            origin: OriginRecord::Sampled { seed: k, index: 0 },
                            preview_steps: 20,
                            job_id: job.id,
                        },
                        xt: vec![0.0; 16],
                        source_png: None,
                        preview_png: vec![0; 64],
                    }
                })
                .collect();
            let mut done = run.clone();
            done.state = JobState::Done;
            done.produced = latents.iter().map(|l| l.record.id).collect();
            store.finish_job(&done, b"", &latents).expect("finish");
        }
        store.flush().expect("flush");
    }
    println!("insert: {:.1} s", t0.elapsed().as_secs_f64());
    let t0 = Instant::now();
    let store = Store::open(dir.path()).expect("reopen");
    println!(
        "open (catalogue load): {:.0} ms",
        t0.elapsed().as_secs_f64() * 1e3
    );
    let name = |o: LatentOrder| match o {
        LatentOrder::Newest => "newest",
        LatentOrder::Oldest => "oldest",
        LatentOrder::Name => "name",
        LatentOrder::EncodeSteps => "encode steps",
    };
    // The first 20 pages, following the tokens.
    let time = |what: &str, f: LatentFilter, order: LatentOrder| {
        let t0 = Instant::now();
        let mut cursor = Cursor::default();
        let mut pages = 0;
        let mut total = 0;
        for _ in 0..20 {
            let p = store.list_latents(&f, order, &cursor, 50);
            total = p.total;
            pages += 1;
            match std::hint::black_box(p).next {
                Some(k) => cursor = Cursor::After(k),
                None => break,
            }
        }
        println!(
            "{what}, {}: {:.1} µs per page of 50 (first {pages} pages, total {total})",
            name(order),
            t0.elapsed().as_secs_f64() * 1e6 / pages as f64
        );
    };
    for order in LatentOrder::ALL {
        time("no filter", LatentFilter::default(), order);
    }
    let rare = LatentFilter {
        tag: "rare".into(),
        ..Default::default()
    };
    time("tag (1%)", rare.clone(), LatentOrder::Newest);
    time("tag (1%)", rare.clone(), LatentOrder::Name);
    let common = LatentFilter {
        tag: "common".into(),
        ..Default::default()
    };
    time("tag (99%)", common.clone(), LatentOrder::Name);
    let substring = LatentFilter {
        name_contains: "-4242".into(),
        ..Default::default()
    };
    time("name substring", substring.clone(), LatentOrder::Newest);
    time("name substring", substring, LatentOrder::Name);
    // One page at an offset (what the TUI's G and far jumps ask), median of 21.
    let jump = |what: &str, f: &LatentFilter, order: LatentOrder, at: u64| {
        let mut us: Vec<f64> = (0..21)
            .map(|_| {
                let t0 = Instant::now();
                std::hint::black_box(store.list_latents(f, order, &Cursor::Offset(at), 50));
                t0.elapsed().as_secs_f64() * 1e6
            })
            .collect();
        us.sort_by(f64::total_cmp);
        println!(
            "{what}, {}, page at offset {at}: {:.1} µs",
            name(order),
            us[10]
        );
    };
    let all = LatentFilter::default();
    for order in LatentOrder::ALL {
        jump("no filter", &all, order, n / 2);
        jump("no filter", &all, order, n.saturating_sub(50));
    }
    jump(
        "tag (1%)",
        &rare,
        LatentOrder::Newest,
        (n / 100).saturating_sub(50),
    );
    jump("tag (99%)", &common, LatentOrder::Newest, n / 2);
    jump("tag (99%)", &common, LatentOrder::Name, n / 2);
    // Renames: the latent moves in the name index (sled write included, no flush).
    let ids: Vec<u64> = store
        .list_latents(&all, LatentOrder::Oldest, &Cursor::Offset(n / 3), 200)
        .latents
        .iter()
        .map(|r| r.id)
        .collect();
    let t0 = Instant::now();
    for (i, id) in ids.iter().enumerate() {
        store
            .update_latent(*id, |r| r.name = format!("renamed-{i}"))
            .expect("rename");
    }
    println!(
        "rename: {:.1} µs each ({} renames)",
        t0.elapsed().as_secs_f64() * 1e6 / ids.len().max(1) as f64,
        ids.len()
    );
}

fn job(kind: pb::job_spec::Kind) -> pb::SubmitJobRequest {
    pb::SubmitJobRequest {
        spec: Some(pb::JobSpec { kind: Some(kind) }),
        priority: 0,
        idempotency_key: String::new(),
    }
}

/// Seconds to run all `jobs`, submitted at once; returns the finished jobs' ids.
async fn run_all(
    c: &mut DdimClient<Channel>,
    jobs: Vec<pb::SubmitJobRequest>,
) -> (f64, Vec<String>) {
    let t0 = Instant::now();
    let mut ids = vec![];
    for j in jobs {
        ids.push(c.submit_job(j).await.expect("submit").into_inner().id);
    }
    for id in &ids {
        wait(c, id).await;
    }
    (t0.elapsed().as_secs_f64(), ids)
}

async fn study(model: &Path, a: &Args) {
    use pb::job_spec::Kind;
    println!(
        "## study jobs ({} preset, {} torch thread(s))",
        a.preset, a.threads
    );
    let dir = tempfile::tempdir().expect("tmp");
    let d = start(model, dir.path(), a.threads, &[]);
    let mut c = client(&d.addr).await;
    let images = ddimd::train::data::fashion_mnist_images(ddimd::train::data::Split::Test)
        .expect("Debian's dataset-fashion-mnist");
    let inputs = images[..8]
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let mut png = std::io::Cursor::new(vec![]);
            g.write_to(&mut png, image::ImageFormat::Png).expect("png");
            pb::EncodeInput {
                data: png.into_inner(),
                name: format!("test-{i}"),
                tags: vec![],
            }
        })
        .collect();
    let enc = Kind::Encode(pb::EncodeJob {
        images: inputs,
        steps: 10,
        spacing: 0,
        preview_steps: 0,
        solver: 0,
    });
    let (_, ids) = run_all(&mut c, vec![job(enc)]).await;
    let latents = c
        .get_job(pb::GetJobRequest { id: ids[0].clone() })
        .await
        .expect("job")
        .into_inner()
        .result
        .expect("encode result")
        .latent_ids;
    let recon = |input| {
        job(Kind::Reconstruct(pb::ReconstructJob {
            input: Some(input),
            steps: vec![10, 20],
            spacing: 0,
            solver: 0,
        }))
    };
    use pb::reconstruct_job::Input;
    let mut single = vec![];
    let mut batched = vec![];
    for _ in 0..3 {
        let jobs = latents
            .iter()
            .map(|l| recon(Input::LatentId(l.clone())))
            .collect();
        single.push(run_all(&mut c, jobs).await.0);
        let list = pb::LatentIdList {
            ids: latents.clone(),
        };
        batched.push(run_all(&mut c, vec![recon(Input::Latents(list))]).await.0);
    }
    let (s, b) = (median(single), median(batched));
    println!(
        "reconstruct 8 latents at S = 10, 20: 8 jobs {s:.3} s, one latents job {b:.3} s: {:.2}x",
        s / b
    );
    let interp = |only: bool| {
        job(Kind::Interpolate(pb::InterpolateJob {
            a: latents[0].clone(),
            b: latents[1].clone(),
            frames: 16,
            method: 0,
            sampler: Some(pb::SamplerOptions {
                steps: a.steps,
                ..Default::default()
            }),
            save_frames: vec![7],
            only_saved_frames: only,
        }))
    };
    let mut full = vec![];
    let mut one = vec![];
    for _ in 0..3 {
        full.push(run_all(&mut c, vec![interp(false)]).await.0);
        one.push(run_all(&mut c, vec![interp(true)]).await.0);
    }
    let (f, o) = (median(full), median(one));
    println!(
        "save frame 7 of 16 (S = {}): whole interpolation {f:.3} s, only_saved_frames {o:.3} s: {:.2}x",
        a.steps,
        f / o
    );
}

/// (median, p90) of `v`.
fn median_p90(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    let p90 = ((v.len() - 1) as f64 * 0.9).round() as usize;
    (v[v.len() / 2], v[p90])
}

/// One PreviewEdit at S = 10: (client wall seconds, the daemon's `seconds`, images).
async fn preview(c: &DdimClient<Channel>, kind: pb::job_spec::Kind) -> (f64, f64, usize) {
    let req = pb::PreviewEditRequest {
        spec: Some(pb::JobSpec { kind: Some(kind) }),
        steps: 10,
        client_id: "bench".into(),
    };
    let t0 = Instant::now();
    let r = c
        .clone()
        .preview_edit(req)
        .await
        .expect("preview")
        .into_inner();
    (t0.elapsed().as_secs_f64(), r.seconds, r.images.len())
}

/// Part 5: PreviewEdit and committed edits with the shipped model.
async fn edits(a: &Args) {
    use pb::job_spec::Kind;
    const PREVIEW_REPS: u64 = 11;
    const COMMIT_REPS: u64 = 5;
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/fashion-mnist");
    println!(
        "## editing (models/fashion-mnist, {} torch thread(s))",
        a.threads
    );
    let dir = tempfile::tempdir().expect("tmp");
    let d = start(&model, dir.path(), a.threads, &[]);
    let mut c = client(&d.addr).await;
    // One encoded test image (the first ankle boot is test image 0), S = 50.
    let images = ddimd::train::data::fashion_mnist_images(ddimd::train::data::Split::Test)
        .expect("Debian's dataset-fashion-mnist");
    let mut png = std::io::Cursor::new(vec![]);
    images[0]
        .write_to(&mut png, image::ImageFormat::Png)
        .expect("png");
    let enc = Kind::Encode(pb::EncodeJob {
        images: vec![pb::EncodeInput {
            data: png.into_inner(),
            name: "test-0".into(),
            tags: vec![],
        }],
        steps: 50,
        spacing: 0,
        preview_steps: 0,
        solver: 0,
    });
    let (_, ids) = run_all(&mut c, vec![job(enc)]).await;
    let latent = c
        .get_job(pb::GetJobRequest { id: ids[0].clone() })
        .await
        .expect("job")
        .into_inner()
        .result
        .expect("encode result")
        .latent_ids[0]
        .clone();
    let variation = |seed: u64, count: u32| {
        Kind::Variation(pb::VariationJob {
            latent_id: latent.clone(),
            strength: 0.3,
            seed,
            count,
            out: None,
        })
    };
    let renoise = |seed: u64, count: u32| {
        Kind::Renoise(pb::RenoiseJob {
            input: Some(pb::renoise_job::Input::LatentId(latent.clone())),
            image_name: String::new(),
            strength: 0.5,
            sampler: Some(pb::SamplerOptions {
                steps: 50,
                eta: 1.0,
                spacing: 0,
                sigma_hat: false,
                solver: 0,
            }),
            seed,
            count,
            perturb: 0.0,
            out: None,
        })
    };
    // Warm up (first model calls, allocator).
    preview(&c, variation(0, 1)).await;
    preview(&c, renoise(0, 1)).await;
    type Make<'a> = &'a dyn Fn(u64, u32) -> Kind;
    let cases: [(&str, Make, u32); 4] = [
        ("variation s = 0.3 (10 model calls)", &variation, 1),
        (
            "renoise s = 0.5, η = 1 (2·⌈0.5·10⌉ = 10 model calls)",
            &renoise,
            1,
        ),
        (
            "variation s = 0.3, count 4 (10 calls on a batch of 4)",
            &variation,
            4,
        ),
        ("renoise s = 0.5, η = 1, count 4", &renoise, 4),
    ];
    for (what, make, count) in cases {
        let mut wall = vec![];
        let mut server = vec![];
        for k in 0..PREVIEW_REPS {
            let (w, s, n) = preview(&c, make(100 + k, count)).await;
            assert_eq!(n, count as usize, "{what}: images");
            wall.push(w);
            server.push(s);
        }
        let (wm, w90) = median_p90(wall);
        let (sm, s90) = median_p90(server);
        println!(
            "PreviewEdit S = 10, {what}: client {:.0} ms median, {:.0} ms p90; daemon-side {:.0} / {:.0} ms (n = {PREVIEW_REPS})",
            wm * 1e3,
            w90 * 1e3,
            sm * 1e3,
            s90 * 1e3
        );
    }
    let commits: [(&str, Make); 2] = [
        (
            "variation s = 0.3, count 1 (its preview decode: 50 model calls)",
            &variation,
        ),
        (
            "renoise s = 0.5, η = 1, S = 50, count 1 (25 + 25 edit, 50 re-encode, 50 preview decode)",
            &renoise,
        ),
    ];
    for (what, make) in commits {
        let mut times = vec![];
        for k in 0..COMMIT_REPS {
            times.push(run_all(&mut c, vec![job(make(200 + k, 1))]).await.0);
        }
        let (m, p90) = median_p90(times);
        println!(
            "committed {what}: submit → finished {m:.2} s median, {p90:.2} s p90 (n = {COMMIT_REPS})"
        );
    }
}

#[tokio::main]
async fn main() {
    let a = args();
    if a.only == "edit" {
        edits(&a).await;
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let model_dir = dir.path().join("model");
    let cfg = UNetConfig::preset(&a.preset, 1, 32).expect("preset");
    tch::manual_seed(0);
    let m = Model::from_config(cfg, SchedulerConfig::default(), tch::Device::Cpu).expect("model");
    m.save_pipeline(&model_dir).expect("save");
    println!(
        "model: {} preset, {} parameters, 1×32×32, cpu",
        a.preset,
        m.parameter_count()
    );
    drop(m);
    if a.only.is_empty() {
        batching(&model_dir, &a).await;
        overhead(&model_dir, &a).await;
        study(&model_dir, &a).await;
    } else if a.only == "study" {
        study(&model_dir, &a).await;
        return;
    } else if a.only == "overhead" {
        overhead(&model_dir, &a).await;
        return;
    } else if a.only == "batching" {
        batching(&model_dir, &a).await;
        return;
    }
    library(a.latents);
}
