//! The kill -9 harness: a daemon under load from several concurrent clients
//! (sample, encode, decode and import jobs, every submit with an idempotency
//! key), SIGKILL at a random moment, restart on the same data folder, and
//! checks of what the daemon promised before the kill:
//!
//! - every acknowledged job (SubmitJob returned its id) still exists, with the
//!   same kind and creation time, and in the end reaches a terminal state:
//!   DONE, or FAILED `interrupted` after `--max-attempts` starts;
//! - a job seen DONE stays DONE with the same latents; every latent of a DONE
//!   job exists and its ExportLatent `.npy` and stored preview PNG are
//!   byte-identical to what was read before the kill;
//! - no duplicate latents: every latent belongs to exactly one DONE job's
//!   result, and latents of unfinished jobs do not exist;
//! - ids are never reused: a seen id keeps its record, job and latent numbers
//!   never collide, and a job created after a restart has a number above every
//!   id seen before it;
//! - a submit whose reply was lost in the crash, retried with its idempotency
//!   key, gives one job, not two (at the end the jobs are exactly the
//!   acknowledged ones).
//!
//! 10 rounds by default; more with `DDIM_CRASH_ROUNDS` (docs/reliability.md):
//!
//! ```sh
//! DDIM_CRASH_ROUNDS=100 cargo test -p ddim-tests --test crash_harness -- --nocapture
//! ```
//!
//! The seed is printed; `DDIM_CRASH_SEED=N` replays a run's choices (the kill
//! moments are the same delays, not the same instructions).
//!
//! Needs the binaries: `cargo build --workspace --bins`.
use ddim_proto::v1 as pb;
use ddim_tests::*;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Concurrent clients per round.
const CLIENTS: usize = 3;
/// The daemon's `--max-attempts`.
const MAX_ATTEMPTS: u32 = 3;
/// Longest wait before the kill, from the moment the clients start.
const MAX_KILL_DELAY_MS: u64 = 1200;

/// SplitMix64: small, seedable, good enough to pick moments and jobs.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in lo..=hi.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// A job whose SubmitJob answered.
#[derive(Clone, Debug)]
struct Ack {
    kind: String,
    created: i64,
}

/// A latent read back while its job was DONE.
#[derive(Clone)]
struct SeenLatent {
    job: String,
    npy: Vec<u8>,
    preview: Vec<u8>,
    created: i64,
}

#[derive(Default)]
struct State {
    /// Acknowledged jobs by id.
    acks: BTreeMap<String, Ack>,
    /// Idempotency key → the job id it was acknowledged with.
    keys: HashMap<String, String>,
    /// Submits whose reply never came (the daemon died): retried with the same key.
    pending: Vec<pb::SubmitJobRequest>,
    /// Jobs seen DONE → their latents.
    done: BTreeMap<String, Vec<String>>,
    latents: BTreeMap<String, SeenLatent>,
    /// Jobs seen in a terminal state → the state.
    terminal: BTreeMap<String, i32>,
    /// Highest id number seen (jobs and latents share one counter).
    max_seen: Option<u64>,
    /// Keys first submitted after the last restart.
    fresh_keys: BTreeSet<String>,
    /// Anything wrong seen while the daemon was alive.
    failures: Vec<String>,
    submits: u64,
    /// Submits retried after a lost reply.
    retried: u64,
    byte_checks: u64,
}

fn num(id: &str) -> u64 {
    id.rsplit('-')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("id {id:?} is not prefix-N"))
}

type Shared = Arc<Mutex<State>>;

/// Whether an RPC error is the daemon going away under the client.
fn lost_connection(killed: &AtomicBool) -> bool {
    killed.load(Ordering::SeqCst)
}

struct Model {
    shape: Vec<usize>,
}

fn random_png(rng: &mut Rng) -> Vec<u8> {
    let (a, b) = (rng.range(20, 200) as u8, rng.range(0, 40) as u8);
    let (x0, y0) = (rng.range(2, 10) as u32, rng.range(2, 10) as u32);
    png(28, 28, move |x, y| {
        if x >= x0 && y >= y0 && x < x0 + 14 && y < y0 + 16 {
            a.wrapping_add((x * y) as u8 % 7)
        } else {
            b
        }
    })
}

fn steps(rng: &mut Rng) -> u32 {
    rng.range(2, 5) as u32
}

/// A random job spec; decode picks a latent already seen DONE.
fn random_spec(rng: &mut Rng, st: &Shared, model: &Model) -> pb::JobSpec {
    let latent = {
        let s = st.lock().unwrap();
        if s.latents.is_empty() {
            None
        } else {
            let k = rng.range(0, s.latents.len() as u64 - 1) as usize;
            s.latents.keys().nth(k).cloned()
        }
    };
    use pb::job_spec::Kind as K;
    let kind = match rng.range(0, 9) {
        0..=3 => K::Sample(pb::SampleJob {
            count: rng.range(1, 3) as u32,
            seed: rng.next() % 1000,
            sampler: Some(sampler(steps(rng))),
            name_prefix: String::new(),
            tags: vec!["crash".into()],
        }),
        4..=5 => {
            let n = rng.range(1, 2) as usize;
            let imgs = (0..n)
                .map(|i| (format!("img-{i}"), random_png(rng)))
                .collect();
            return encode_spec(imgs, steps(rng));
        }
        6..=7 if latent.is_some() => {
            let a = steps(rng);
            let b = steps(rng);
            let list = if a == b { vec![a] } else { vec![a, b] };
            return decode_spec(latent.as_deref().unwrap(), &list);
        }
        _ => {
            let rows = rng.range(1, 2) as usize;
            let per: usize = model.shape.iter().product();
            let values: Vec<f32> = (0..rows * per).map(|_| rng.unit() * 2.0 - 1.0).collect();
            let mut shape = vec![rows];
            shape.extend(&model.shape);
            let shape = if rows == 1 { &shape[1..] } else { &shape[..] };
            K::Import(pb::ImportJob {
                latents: vec![pb::ImportInput {
                    npy: npy_bytes(shape, &values),
                    name: "imported".into(),
                    tags: vec![],
                }],
                preview_steps: steps(rng),
                spacing: pb::Spacing::Uniform as i32,
            })
        }
    };
    pb::JobSpec { kind: Some(kind) }
}

/// Submits one request; records the acknowledgement or, when the daemon died, the
/// pending retry. Returns false when the connection is gone.
async fn submit_one(
    c: &mut Client,
    req: pb::SubmitJobRequest,
    st: &Shared,
    killed: &AtomicBool,
) -> bool {
    match c.submit_job(req.clone()).await {
        Ok(job) => {
            let job = job.into_inner();
            let mut s = st.lock().unwrap();
            s.submits += 1;
            let key = req.idempotency_key.clone();
            if let Some(prev) = s.keys.get(&key) {
                if *prev != job.id {
                    let m = format!("key {key}: acknowledged as {prev}, then as {}", job.id);
                    s.failures.push(m);
                }
            }
            s.keys.insert(key, job.id.clone());
            s.max_seen = s.max_seen.max(Some(num(&job.id)));
            let ack = Ack {
                kind: job.kind.clone(),
                created: job.created_unix_ms,
            };
            if let Some(prev) = s.acks.get(&job.id) {
                if (prev.kind.as_str(), prev.created) != (ack.kind.as_str(), ack.created) {
                    let m = format!("{} changed identity: {prev:?} → {ack:?}", job.id);
                    s.failures.push(m);
                }
            }
            s.acks.insert(job.id.clone(), ack);
            true
        }
        Err(e) => {
            let mut s = st.lock().unwrap();
            if lost_connection(killed) {
                s.pending.push(req);
                false
            } else {
                s.failures
                    .push(format!("submit refused while alive: {e:?}"));
                false
            }
        }
    }
}

/// Reads a DONE job's latents (export + preview) and records or compares them.
/// Err(()) when the connection is gone.
async fn observe_job(c: &mut Client, id: &str, st: &Shared, killed: &AtomicBool) -> Result<(), ()> {
    let alive_fail = |m: String| {
        if !lost_connection(killed) {
            st.lock().unwrap().failures.push(m);
        }
    };
    let job = match c.get_job(pb::GetJobRequest { id: id.into() }).await {
        Ok(j) => j.into_inner(),
        Err(e) => {
            alive_fail(format!("GetJob {id} while alive: {e:?}"));
            return Err(());
        }
    };
    record_terminal(st, &job);
    if job.state() != pb::JobState::Done {
        return Ok(());
    }
    let ids = job.result.map(|r| r.latent_ids).unwrap_or_default();
    {
        let mut s = st.lock().unwrap();
        if let Some(prev) = s.done.get(id) {
            if *prev != ids {
                let m = format!("{id}: latents {prev:?} became {ids:?}");
                s.failures.push(m);
            }
        }
        s.done.insert(id.to_string(), ids.clone());
    }
    for lat in ids {
        match read_latent(c, &lat).await {
            Ok(seen) => compare_or_record(st, &lat, id, seen),
            Err(e) => {
                alive_fail(format!("{lat} of DONE {id} while alive: {e:?}"));
                return Err(());
            }
        }
    }
    Ok(())
}

fn record_terminal(st: &Shared, job: &pb::Job) {
    let mut s = st.lock().unwrap();
    s.max_seen = s.max_seen.max(Some(num(&job.id)));
    let state = job.state();
    if let Some(prev) = s.terminal.get(&job.id) {
        if *prev != state as i32 {
            let m = format!("{} left terminal state {prev} for {state:?}", job.id);
            s.failures.push(m);
        }
    }
    if matches!(
        state,
        pb::JobState::Done | pb::JobState::Failed | pb::JobState::Cancelled
    ) {
        s.terminal.insert(job.id.clone(), state as i32);
    }
}

async fn read_latent(c: &mut Client, id: &str) -> Result<SeenLatent, tonic::Status> {
    let ex = c
        .export_latent(pb::ExportLatentRequest { id: id.into() })
        .await?
        .into_inner();
    let preview = c
        .get_latent_image(pb::GetLatentImageRequest {
            id: id.into(),
            kind: pb::LatentImageKind::Preview as i32,
            steps: 0,
        })
        .await?
        .into_inner()
        .png;
    let l = ex.latent.unwrap_or_default();
    Ok(SeenLatent {
        job: l.job_id,
        npy: ex.npy,
        preview,
        created: l.created_unix_ms,
    })
}

fn compare_or_record(st: &Shared, lat: &str, job: &str, seen: SeenLatent) {
    let mut s = st.lock().unwrap();
    s.max_seen = s.max_seen.max(Some(num(lat)));
    if seen.job != job {
        let m = format!("{lat} is in {job}'s result but says job {}", seen.job);
        s.failures.push(m);
    }
    let same = s.latents.get(lat).map(|prev| {
        prev.job == seen.job
            && prev.npy == seen.npy
            && prev.preview == seen.preview
            && prev.created == seen.created
    });
    match same {
        Some(same) => {
            s.byte_checks += 1;
            if !same {
                let m = format!("{lat} changed: export or preview bytes differ from before");
                s.failures.push(m);
            }
        }
        None => {
            s.latents.insert(lat.to_string(), seen);
        }
    }
}

/// One client: submits jobs and reads finished ones until the daemon dies.
async fn client_loop(
    addr: String,
    mut rng: Rng,
    tag: String,
    st: Shared,
    killed: Arc<AtomicBool>,
    model: Arc<Model>,
) {
    // The daemon may already be gone (a kill at once).
    let Ok(ch) = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
    else {
        return;
    };
    let mut c = pb::ddim_client::DdimClient::with_interceptor(ch, Bearer::new(None))
        .max_decoding_message_size(CLIENT_MAX_MESSAGE)
        .max_encoding_message_size(CLIENT_MAX_MESSAGE);
    for n in 0.. {
        if rng.chance(40) {
            let spec = random_spec(&mut rng, &st, &model);
            let key = format!("{tag}-{n}");
            let priority = if rng.chance(70) {
                pb::Priority::Interactive
            } else {
                pb::Priority::Batch
            };
            let req = pb::SubmitJobRequest {
                spec: Some(spec),
                priority: priority as i32,
                idempotency_key: key.clone(),
            };
            st.lock().unwrap().fresh_keys.insert(key);
            if !submit_one(&mut c, req, &st, &killed).await {
                return;
            }
        } else {
            let id = {
                let s = st.lock().unwrap();
                if s.acks.is_empty() {
                    None
                } else {
                    let k = rng.range(0, s.acks.len() as u64 - 1) as usize;
                    s.acks.keys().nth(k).cloned()
                }
            };
            if let Some(id) = id {
                if observe_job(&mut c, &id, &st, &killed).await.is_err() {
                    return;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.range(10, 80))).await;
    }
}

/// Runs `f` on every item, 32 at a time (one RPC at a time would pay the round
/// trip per record), in the items' order.
async fn par<T, F, Fut, R>(items: Vec<T>, f: F) -> Vec<R>
where
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = R>,
{
    use futures::StreamExt;
    futures::stream::iter(items.into_iter().map(f))
        .buffered(32)
        .collect()
        .await
}

/// After a restart: the retries of lost replies, then every acknowledged job, a
/// sample (or all) of the latents seen, and the whole library.
async fn check_after_restart(c: &mut Client, st: &Shared, rng: &mut Rng, all_latents: bool) {
    let never = AtomicBool::new(false);
    // Lost replies: retried with the same key (one job, whatever happened before).
    let pending = std::mem::take(&mut st.lock().unwrap().pending);
    st.lock().unwrap().retried += pending.len() as u64;
    for req in pending {
        if !submit_one(c, req, st, &never).await {
            panic!("retry refused: {:?}", st.lock().unwrap().failures);
        }
    }
    // An acknowledged key submitted again answers the same job.
    let again: Vec<(String, String)> = {
        let s = st.lock().unwrap();
        let keys: Vec<_> = s.keys.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        (0..2.min(keys.len()))
            .map(|_| keys[rng.range(0, keys.len() as u64 - 1) as usize].clone())
            .collect()
    };
    for (key, id) in again {
        let r = c
            .submit_job(pb::SubmitJobRequest {
                spec: Some(sample_spec(1, 999, 2)),
                priority: pb::Priority::Interactive as i32,
                idempotency_key: key.clone(),
            })
            .await
            .expect("resubmit with a known key");
        assert_eq!(r.into_inner().id, id, "key {key} answered another job");
    }
    // Every acknowledged job, with its identity.
    let acks: Vec<(String, Ack)> = st
        .lock()
        .unwrap()
        .acks
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let jobs = par(acks, |(id, ack)| {
        let mut c = c.clone();
        async move {
            let j = c
                .get_job(pb::GetJobRequest { id: id.clone() })
                .await
                .unwrap_or_else(|e| panic!("acknowledged {id} lost after kill -9: {e:?}"))
                .into_inner();
            assert_eq!(
                (j.kind.as_str(), j.created_unix_ms),
                (ack.kind.as_str(), ack.created),
                "{id} is another job than the one acknowledged"
            );
            j
        }
    })
    .await;
    for j in &jobs {
        record_terminal(st, j);
    }
    // Jobs seen DONE keep their latents, byte for byte.
    let done: Vec<String> = {
        let s = st.lock().unwrap();
        if all_latents {
            s.acks.keys().cloned().collect()
        } else if s.done.len() <= 24 {
            s.done.keys().cloned().collect()
        } else {
            let ids: Vec<String> = s.done.keys().cloned().collect();
            (0..24)
                .map(|_| ids[rng.range(0, ids.len() as u64 - 1) as usize].clone())
                .collect()
        }
    };
    par(done, |id| {
        let (mut c, st) = (c.clone(), st.clone());
        async move {
            let never = AtomicBool::new(false);
            observe_job(&mut c, &id, &st, &never)
                .await
                .expect("daemon alive during checks");
        }
    })
    .await;
    check_library(c, st).await;
    let failures = std::mem::take(&mut st.lock().unwrap().failures);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The whole library: each latent once, each belonging to a DONE job that lists it.
async fn check_library(c: &mut Client, st: &Shared) {
    let mut seen = BTreeSet::new();
    let mut by_job: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut token = String::new();
    loop {
        let page = c
            .list_latents(pb::ListLatentsRequest {
                page_size: 1000,
                page_token: token.clone(),
                order_by: pb::SortOrder::Oldest as i32,
                ..Default::default()
            })
            .await
            .expect("list latents")
            .into_inner();
        for l in page.latents {
            assert!(seen.insert(l.id.clone()), "{} listed twice", l.id);
            by_job.entry(l.job_id.clone()).or_default().push(l.id);
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    par(by_job.into_iter().collect(), |(job, mut lats)| {
        let mut c = c.clone();
        async move {
            let j = c
                .get_job(pb::GetJobRequest { id: job.clone() })
                .await
                .unwrap_or_else(|e| panic!("{job}, which made {lats:?}, is gone: {e:?}"))
                .into_inner();
            assert_eq!(
                j.state(),
                pb::JobState::Done,
                "{job} is {:?} but has latents {lats:?}",
                j.state()
            );
            let mut result = j.result.unwrap_or_default().latent_ids;
            result.sort();
            lats.sort();
            assert_eq!(lats, result, "{job}: library and result disagree");
        }
    })
    .await;
    let s = st.lock().unwrap();
    for lat in s.latents.keys() {
        assert!(seen.contains(lat), "{lat} was seen DONE and is gone");
    }
    let jobs: BTreeSet<u64> = s.acks.keys().map(|k| num(k)).collect();
    for lat in &seen {
        assert!(
            !jobs.contains(&num(lat)),
            "{lat} shares its number with a job"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kill9_under_load_loses_nothing_acknowledged() {
    let rounds: usize = std::env::var("DDIM_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let seed: u64 = std::env::var("DDIM_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("crash harness: seed {seed} (DDIM_CRASH_SEED={seed} replays), {rounds} rounds");
    let started = Instant::now();
    let mut rng = Rng(seed);
    let mut d = Daemon::builder()
        .args(&["--max-attempts", &MAX_ATTEMPTS.to_string()])
        .start()
        .await;
    let mut c = d.client().await;
    let info = c
        .get_model_info(pb::GetModelInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    let model = Arc::new(Model {
        shape: info.sample_shape.iter().map(|d| *d as usize).collect(),
    });
    let st: Shared = Arc::default();
    let mut kills = 0;
    for round in 0..rounds {
        let killed = Arc::new(AtomicBool::new(false));
        let before = st.lock().unwrap().max_seen;
        st.lock().unwrap().fresh_keys.clear();
        let tasks: Vec<_> = (0..CLIENTS)
            .map(|k| {
                tokio::spawn(client_loop(
                    d.addr.clone(),
                    Rng(rng.next()),
                    format!("s{seed}-r{round}-c{k}"),
                    st.clone(),
                    killed.clone(),
                    model.clone(),
                ))
            })
            .collect();
        let delay = rng.range(0, MAX_KILL_DELAY_MS);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        killed.store(true, Ordering::SeqCst);
        d.kill9();
        kills += 1;
        for t in tasks {
            if tokio::time::timeout(Duration::from_secs(30), t)
                .await
                .is_err()
            {
                panic!("a client did not notice the kill within 30 s");
            }
        }
        let t = Instant::now();
        d.restart().await;
        let restart_ms = t.elapsed().as_millis();
        c = d.client().await;
        let t = Instant::now();
        check_after_restart(&mut c, &st, &mut rng, false).await;
        let check_ms = t.elapsed().as_millis();
        // Jobs created after the restart's predecessor saw `before` have higher numbers.
        let s = st.lock().unwrap();
        for key in &s.fresh_keys {
            if let (Some(id), Some(before)) = (s.keys.get(key), before) {
                let n = num(id);
                // A fresh key acknowledged before the kill was created after `before`
                // was recorded, so it is above it too.
                assert!(n > before, "{id} (key {key}) reuses a number ≤ {before}");
            }
        }
        let (acks, lats) = (s.acks.len(), s.latents.len());
        drop(s);
        println!(
            "round {round}: killed after {delay} ms, restart {restart_ms} ms, checks {check_ms} ms; \
             {acks} jobs acknowledged, {lats} latents seen"
        );
    }
    // The end: no more kills; every acknowledged job reaches a terminal state.
    let t = Instant::now();
    let acks: Vec<String> = st.lock().unwrap().acks.keys().cloned().collect();
    let (mut done, mut interrupted) = (0, 0);
    let ends = par(acks, |id| {
        let mut c = c.clone();
        async move { wait_job(&mut c, &id).await }
    })
    .await;
    let rerun = ends.iter().filter(|j| j.attempts > 1).count();
    for j in ends {
        match j.state() {
            pb::JobState::Done => done += 1,
            pb::JobState::Failed => {
                assert_eq!(
                    (j.error.as_str(), j.attempts),
                    ("interrupted", MAX_ATTEMPTS),
                    "{} failed for another reason",
                    j.id
                );
                interrupted += 1;
            }
            s => panic!("{} ended {s:?}: {}", j.id, j.error),
        }
    }
    println!("drained in {} ms", t.elapsed().as_millis());
    check_after_restart(&mut c, &st, &mut rng, true).await;
    // Exactly the acknowledged jobs exist: a lost reply retried with its key made one job.
    let listed: BTreeSet<String> = c
        .list_jobs(pb::ListJobsRequest {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .jobs
        .into_iter()
        .map(|j| j.id)
        .collect();
    let s = st.lock().unwrap();
    if s.acks.len() < 1000 {
        let acked: BTreeSet<String> = s.acks.keys().cloned().collect();
        assert_eq!(
            listed, acked,
            "the jobs are not exactly the acknowledged ones"
        );
    }
    let committed: usize = s.done.values().map(Vec::len).sum();
    assert_eq!(committed, s.latents.len(), "a latent in two jobs' results");
    println!(
        "crash harness: seed {seed}: {rounds} rounds, {kills} kills, {} submits, {} jobs acknowledged \
         ({done} done, {interrupted} failed interrupted, {rerun} re-run after a kill), \
         {} lost replies retried by key, {} latents checked byte for byte \
         ({} comparisons), lost 0, duplicates 0, {:.1} s",
        s.submits,
        s.acks.len(),
        s.retried,
        s.latents.len(),
        s.byte_checks,
        started.elapsed().as_secs_f64()
    );
}
