//! `ddimd serve`: the gRPC daemon (package `ddim.v1`, see docs/daemon.md).
//!
//! - [`service`]: the `Ddim` RPC methods (thin: validate → delegate → convert).
//! - [`conversions`]: request validation and record ⇄ message conversion.
//! - [`store`]: the typed sled store (latents, jobs, results, indexes).
//! - [`dump`], [`admin`], [`archive`]: the store as a backend-neutral record stream;
//!   `ddimd store verify|salvage|backup|restore` and the backup archive.
//! - [`pg`]: the PostgreSQL store (schema, migrations, pool) and [`migrate`]:
//!   `ddimd migrate` between sled and PostgreSQL (docs/scale-out.md).
//! - [`queue`]: the in-memory queue, running set, dynamic batching, counters.
//! - [`jobs`]: one module per job kind (validation, running, committing).
//! - [`worker`]: the thread that owns the model: claims, batches, reports
//!   progress and settles jobs.
//! - [`events`]: broadcasts behind `WatchJob` / `WatchLibrary`.
//! - [`auth`]: the bearer-token interceptor.
//! - [`device`]: CUDA memory for `GetStats`.
//! - [`seed`]: `--seed-images`, a first library on an empty store.
//! - [`error`]: [`ServerError`] and its gRPC status codes.
//!
//! Start-up: open the store, re-queue jobs left running by a crash (failing
//! those out of attempts), serve with health NOT_SERVING while the worker
//! loads the model, then SERVING. Shutdown (SIGTERM/SIGINT): NOT_SERVING,
//! refuse new jobs, stop the running job between two steps (it goes back to
//! the queue), end the streams, flush the store, exit 0.
pub mod admin;
pub mod archive;
pub mod auth;
pub mod conversions;
pub mod device;
pub mod dump;
pub mod error;
pub mod events;
pub mod fleet;
pub mod jobs;
pub mod migrate;
pub mod origin;
pub mod pg;
pub mod queue;
pub mod seed;
pub mod service;
pub mod store;
pub mod worker;

use ddim_proto::v1::ddim_server::DdimServer;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic_health::ServingStatus;
use tracing::{error, info, warn};

use error::Result;
pub use error::ServerError;
use events::Hub;
use queue::{Queued, Scheduler};
use service::{DdimService, Shared};
use store::{JobState, Store};

/// The service name health reports on (besides the server as a whole, "").
pub const SERVICE_NAME: &str = "ddim.v1.Ddim";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `ddimd serve` flags; each is also an environment variable.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Model folder (a diffusers pipeline or a bare UNet2DModel folder).
    #[arg(long, env = "DDIMD_MODEL", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/fashion-mnist"))]
    pub model: PathBuf,
    /// Store folder (default: the user's data dir, e.g. ~/.local/share/ddimd).
    #[arg(long, env = "DDIMD_DATA")]
    pub data: Option<PathBuf>,
    /// Serve the library and the queue from this PostgreSQL database
    /// (postgres://USER:PASSWORD@HOST:PORT/DB) instead of a sled folder; daemons
    /// on one database share them (docs/scale-out.md).
    #[arg(long, env = "DDIMD_STORE", hide_env_values = true)]
    pub store: Option<String>,
    /// With --store: how long a claimed job stays this daemon's without a renewal
    /// ("30s", "2m"); a crashed daemon's jobs run elsewhere after it.
    #[arg(long, env = "DDIMD_LEASE", value_parser = admin::parse_duration, default_value = "30s")]
    pub lease: Duration,
    /// Address to listen on; port 0 picks a free port (printed on stdout).
    #[arg(long, env = "DDIMD_ADDR", default_value = "127.0.0.1:7860")]
    pub addr: SocketAddr,
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, env = "DDIMD_DEVICE", default_value = "auto")]
    pub device: String,
    /// Require `authorization: Bearer <token>` on every RPC but health.
    #[arg(long, env = "DDIMD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Most samples in one batched model call.
    #[arg(long, env = "DDIMD_MAX_BATCH", default_value_t = 16)]
    pub max_batch: u32,
    /// How long a batchable job waits for companions before it runs (only while
    /// other submits are arriving; a lone job starts at once).
    #[arg(long, env = "DDIMD_MAX_WAIT_MS", default_value_t = 10)]
    pub max_wait_ms: u64,
    /// Most queued jobs; more are refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "DDIMD_MAX_QUEUE", default_value_t = 1000)]
    pub max_queue: u32,
    /// Largest request or response message, in MiB.
    #[arg(long, env = "DDIMD_MAX_MESSAGE_MB", default_value_t = 64)]
    pub max_message_mb: usize,
    /// Starts of a job (crashes included) before it fails as "interrupted".
    #[arg(long, env = "DDIMD_MAX_ATTEMPTS", default_value_t = 3)]
    pub max_attempts: u32,
    #[arg(long, env = "DDIMD_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// PEM certificate chain: serve TLS (with --tls-key).
    #[arg(long, env = "DDIMD_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "DDIMD_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// On the first start (empty store), encode this many Fashion-MNIST test images.
    #[arg(long, env = "DDIMD_SEED_IMAGES", default_value_t = 0)]
    pub seed_images: usize,
    /// S for the --seed-images encode.
    #[arg(long, env = "DDIMD_SEED_STEPS", default_value_t = 50)]
    pub seed_steps: u32,
    /// idx3-ubyte.gz file the seed images come from.
    #[arg(
        long,
        env = "DDIMD_SEED_FILE",
        default_value = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"
    )]
    pub seed_file: PathBuf,
    /// libtorch intra-op threads (0: libtorch's default). 1 avoids OpenMP
    /// spin-waiting on a busy machine.
    #[arg(long, env = "DDIMD_TORCH_THREADS", default_value_t = 0)]
    pub torch_threads: i32,
    #[command(flatten)]
    pub compiled: crate::compile::CompiledArgs,
    /// Seconds to wait at shutdown for the running step before giving up on it.
    #[arg(long, env = "DDIMD_SHUTDOWN_TIMEOUT_S", default_value_t = 10)]
    pub shutdown_timeout_s: u64,
    /// Refuse new jobs and edits (RESOURCE_EXHAUSTED) while the disk holding the
    /// store has less free space than this, in MiB (0: only when the disk is full).
    #[arg(long, env = "DDIMD_MIN_FREE_MB", default_value_t = 16)]
    pub min_free_mb: u64,
    /// Write a backup archive this often ("30m", "6h", "1d") into --backup-dir.
    #[arg(long, env = "DDIMD_BACKUP_EVERY", value_parser = admin::parse_duration, requires = "backup_dir")]
    pub backup_every: Option<Duration>,
    /// Folder of the --backup-every archives (ddimd-backup-<UTC time>.tar).
    #[arg(long, env = "DDIMD_BACKUP_DIR", requires = "backup_every")]
    pub backup_dir: Option<PathBuf>,
    /// Keep the newest N archives in --backup-dir.
    #[arg(long, env = "DDIMD_BACKUP_KEEP", default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..))]
    pub backup_keep: u32,
}

/// Written in the data folder at a graceful stop (with the store's inventory, see
/// [`dump::Inventory`]), renamed to `last-clean-stop.json` at start: a store found
/// without it was not shut down cleanly and is verified in the background.
pub const CLEAN_MARKER: &str = dump::INVENTORY_MARKER;

/// Verifies the store in the background (after an unclean stop) and feeds what it
/// finds to the store's damage list (GetStats: `store_degraded`). Reads run beside
/// the writers; what looks damaged is read again under the write lock, so a commit
/// landing between two trees is not taken for damage.
fn verify_in_background(
    store: Arc<Store>,
    inventory: Option<dump::Inventory>,
    lost: Vec<dump::Problem>,
) {
    store.set_check_state("running");
    tokio::task::spawn_blocking(move || {
        let t0 = std::time::Instant::now();
        let checks = dump::Checks {
            model_shape: None,
            decode_pngs: true,
        };
        let run = || -> Result<dump::Dump> {
            let mut first = dump::read(&*store.t()?, &checks);
            if let Some(inv) = &inventory {
                inv.apply(&mut first);
            }
            if first.problems.is_empty() && lost.is_empty() {
                return Ok(first);
            }
            let mut again = store.frozen(|t| dump::read(t, &checks))?;
            if let Some(inv) = &inventory {
                inv.apply(&mut again);
            }
            again.problems.extend(lost.iter().cloned());
            Ok(again)
        };
        // Not `quiet_catch`: that silences panics process-wide for the whole run.
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).map_err(|p| {
            p.downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into())
        });
        match caught {
            Ok(Ok(d)) if d.problems.is_empty() => {
                store.set_check_state("clean");
                info!(
                    latents = d.latents.len(),
                    jobs = d.jobs.len(),
                    ms = t0.elapsed().as_millis() as u64,
                    "store verified after an unclean stop: clean"
                );
            }
            Ok(Ok(d)) => {
                for p in &d.problems {
                    store.note_damage(p.id.clone(), p.what.clone());
                }
                store.set_check_state("damaged");
                error!(
                    damaged = %d.damaged_ids().join(","),
                    lost = %d.lost_ids().join(","),
                    ms = t0.elapsed().as_millis() as u64,
                    "store verified after an unclean stop: DAMAGED; still serving what reads; copy what survives with `ddimd store salvage`"
                );
            }
            Ok(Err(e)) => {
                store.set_check_state("damaged");
                error!("store verify after an unclean stop failed: {e}");
            }
            Err(p) => {
                store.note_damage("store".into(), format!("sled panicked reading it: {p}"));
                store.set_check_state("damaged");
                error!("store verify after an unclean stop: sled panicked: {p}");
            }
        }
    });
}

/// `--backup-every`: a backup now and then, the newest `keep` kept.
fn schedule_backups(store: Arc<Store>, every: Duration, dir: PathBuf, keep: usize) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let (store, dir) = (store.clone(), dir.clone());
            match tokio::task::spawn_blocking(move || admin::scheduled_backup(&store, &dir, keep))
                .await
            {
                Ok(Ok(p)) => info!(path = %p.display(), "backup written"),
                Ok(Err(e)) => error!("--backup-every: {e}"),
                Err(e) => error!("--backup-every: {e}"),
            }
        }
    });
}

/// The default store folder.
pub fn default_data_dir() -> PathBuf {
    dirs::data_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("ddimd")
}

fn init_logging(format: LogFormat) {
    // deadpool.postgres warns once per pooled connection a database restart closes;
    // the store logs the outage itself, once (pg/reach.rs).
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(
            "info,h2=warn,tower=warn,hyper=warn,deadpool.postgres=error",
        )
    });
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let _ = match format {
        LogFormat::Text => b.try_init(),
        LogFormat::Json => b.json().try_init(),
    };
}

/// Runs the daemon until SIGTERM or SIGINT.
pub fn run(args: ServeArgs) -> Result<()> {
    init_logging(args.log_format);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| ServerError::Config(format!("cannot start the runtime: {e}")))?;
    rt.block_on(serve(args))
}

fn check_args(a: &ServeArgs) -> Result<()> {
    let bad = |flag: &str, msg: &str| Err(ServerError::Config(format!("{flag}: {msg}")));
    if a.max_batch == 0 {
        return bad("--max-batch", "must be ≥ 1");
    }
    if a.max_queue == 0 {
        return bad("--max-queue", "must be ≥ 1");
    }
    if !(1..=2047).contains(&a.max_message_mb) {
        return bad("--max-message-mb", "must be in 1..=2047");
    }
    if a.max_attempts == 0 {
        return bad("--max-attempts", "must be ≥ 1");
    }
    if a.token.as_deref().is_some_and(|t| t.trim().is_empty()) {
        return bad("--token", "must not be empty");
    }
    Ok(())
}

/// Re-queues the jobs a crash left running (failing those that used up
/// their attempts), rebuilds the queue and the counters.
fn sweep(store: &Store, sched: &Scheduler, max_attempts: u32) -> Result<()> {
    let mut st = sched.lock();
    for mut j in store.all_jobs()? {
        match j.state {
            JobState::Running if j.attempts >= max_attempts => {
                warn!(
                    job = j.id,
                    attempts = j.attempts,
                    "interrupted too often: failed"
                );
                j.state = JobState::Failed;
                j.error = "interrupted".into();
                j.finished_ms = conversions::now_ms();
                store.put_job(&j)?;
                st.counters.failed += 1;
            }
            JobState::Running | JobState::Queued => {
                if j.state == JobState::Running {
                    info!(
                        job = j.id,
                        attempts = j.attempts,
                        "found running after a crash: re-queued"
                    );
                    j.state = JobState::Queued;
                    j.started_ms = 0;
                    store.put_job(&j)?;
                }
                st.push(Queued::of(&j));
            }
            JobState::Done => st.counters.done += 1,
            JobState::Failed => st.counters.failed += 1,
            JobState::Cancelled => st.counters.cancelled += 1,
        }
    }
    drop(st);
    store.flush()
}

/// After sled was reopened (a full disk): jobs whose state moves never reached the
/// disk are queued again, as the start-up sweep would.
fn requeue_after_reopen(store: &Store, sched: &Scheduler) -> Result<()> {
    let mut st = sched.lock();
    let mut again = 0;
    for mut j in store.all_jobs()? {
        if st.running.contains_key(&j.id) || st.position(j.id).is_some() {
            continue;
        }
        match j.state {
            JobState::Running | JobState::Queued => {
                if j.state == JobState::Running {
                    j.state = JobState::Queued;
                    j.started_ms = 0;
                    store.put_job(&j)?;
                }
                st.push(Queued::of(&j));
                again += 1;
            }
            _ => {}
        }
    }
    drop(st);
    if again > 0 {
        warn!(
            jobs = again,
            "jobs whose end did not reach the full disk are queued again"
        );
        sched.notify();
    }
    store.flush()
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                error!("cannot listen for SIGTERM: {e}");
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => info!("SIGTERM"),
            _ = tokio::signal::ctrl_c() => info!("SIGINT"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn set_health(h: &tonic_health::server::HealthReporter, s: ServingStatus) {
    h.set_service_status("", s).await;
    h.set_service_status(SERVICE_NAME, s).await;
}

/// On a PostgreSQL store: health `NOT_SERVING` while the database cannot be
/// reached, `SERVING` again once it answers (see [`pg::Reach`]). Aborted at
/// shutdown.
fn health_follows_the_database(
    health: &tonic_health::server::HealthReporter,
    pg: &pg::PgStore,
) -> tokio::task::JoinHandle<()> {
    let mut up = pg.reach.subscribe();
    let health = health.clone();
    tokio::spawn(async move {
        loop {
            let now = *up.borrow_and_update();
            let s = if now {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            set_health(&health, s).await;
            if up.changed().await.is_err() {
                return;
            }
        }
    })
}

/// This daemon's name in a shared store (`lease_owner`, `ran_by`, `daemons`):
/// host and process id.
fn daemon_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "ddimd".into());
    format!("{host}:{}", std::process::id())
}

async fn serve(args: ServeArgs) -> Result<()> {
    check_args(&args)?;
    let device = crate::engine::parse_device(&args.device)
        .map_err(|e| ServerError::Config(e.to_string()))?;
    let data = args.data.clone().unwrap_or_else(default_data_dir);
    let marker = data.join(CLEAN_MARKER);
    let shared_store = args.store.is_some();
    let unclean = !shared_store && data.join("store").exists() && !marker.exists();
    let store = match args.store.clone() {
        Some(url) => {
            if !pg::is_url(&url) {
                return Err(ServerError::Config(format!(
                    "--store {}: expected postgres://USER:PASSWORD@HOST:PORT/DB",
                    pg::redact(&url)
                )));
            }
            let name = daemon_name();
            let lease = args.lease;
            let pg = tokio::task::spawn_blocking(move || pg::PgStore::connect(&url, name, lease))
                .await??;
            info!(store = %pg.shown(), daemon = %pg.daemon, "serving from PostgreSQL");
            Arc::new(Store::postgres(pg))
        }
        None => {
            let data = data.clone();
            Arc::new(
                tokio::task::spawn_blocking(move || {
                    // Before sled discards a log past its damage: keep a copy.
                    if let Some(line) = admin::keep_damaged_log(&data) {
                        warn!("{line}");
                    }
                    Store::open(&data)
                })
                .await??,
            )
        }
    };
    store.set_min_free(args.min_free_mb.saturating_mul(1 << 20));
    // The inventory of the last clean stop: a store whose id counter runs behind it
    // was rolled back by sled's recovery (records silently gone).
    let inventory = if shared_store {
        None
    } else {
        dump::Inventory::load(&data)
    };
    if let Some(inv) = &inventory {
        let counter = store.counter().unwrap_or(0);
        if counter < inv.next_id {
            let jobs: std::collections::BTreeSet<u64> =
                store.all_jobs()?.iter().map(|j| j.id).collect();
            let problems = inv.check(
                counter,
                |l| store.get_latent(l).is_some(),
                |j| jobs.contains(&j),
            );
            if let Err(e) = dump::save_lost(&data, &problems) {
                warn!("cannot write {}: {e}", dump::LOST_RECORDS);
            }
            error!(
                counter,
                next_id = inv.next_id,
                lost = problems.len().saturating_sub(1),
                "the store was rolled back by sled's recovery: records it held at its last clean stop are gone (see GetStats.damaged_ids); serving what is left, ids continue after the old ones"
            );
            let s2 = store.clone();
            let n = inv.next_id;
            tokio::task::spawn_blocking(move || s2.ensure_next_id(n)).await??;
        }
    }
    let lost = if shared_store {
        vec![]
    } else {
        dump::load_lost(&data)
    };
    for p in &lost {
        store.note_damage(p.id.clone(), p.what.clone());
    }
    if !shared_store && marker.exists() {
        if let Err(e) = std::fs::rename(&marker, data.join(dump::INVENTORY_KEPT)) {
            warn!("cannot rename {}: {e}", marker.display());
        }
    }
    if !store.damage().is_empty() {
        error!(
            damaged = %store.damage().keys().cloned().collect::<Vec<_>>().join(","),
            "the store has damaged records; serving the rest (see `ddimd store verify`)"
        );
    }
    if unclean {
        info!("the store was not shut down cleanly: verifying it in the background");
        verify_in_background(store.clone(), inventory.clone(), lost.clone());
    }
    if let (Some(every), Some(dir)) = (args.backup_every, args.backup_dir.clone()) {
        schedule_backups(store.clone(), every, dir, args.backup_keep as usize);
    }
    let fresh = store.is_empty();
    let sched = Arc::new(Scheduler::new(args.max_queue as usize));
    {
        let (weak, sched) = (Arc::downgrade(&store), sched.clone());
        store.on_reopen(Box::new(move || {
            if let Some(store) = weak.upgrade() {
                if let Err(e) = requeue_after_reopen(&store, &sched) {
                    error!("after reopening the store: {e}");
                }
            }
        }));
    }
    let hub = Arc::new(Hub::new());
    {
        let (store, sched) = (store.clone(), sched.clone());
        let attempts = args.max_attempts;
        if !shared_store {
            // On PostgreSQL the jobs are claimed from the shared queue, and the
            // keeper sweeps expired leases (fleet.rs).
            tokio::task::spawn_blocking(move || sweep(&store, &sched, attempts)).await??;
        }
    }

    let (health, health_svc) = tonic_health::server::health_reporter();
    set_health(&health, ServingStatus::NotServing).await;
    let shared = Arc::new(Shared {
        store: store.clone(),
        sched: sched.clone(),
        hub: hub.clone(),
        meta: OnceLock::new(),
        max_batch: args.max_batch,
        max_queue: args.max_queue,
    });
    let svc = DdimService {
        shared: shared.clone(),
    };
    let limit = args.max_message_mb * 1024 * 1024;
    let ddim = DdimServer::new(svc.clone())
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    let auth = auth::Auth::new(args.token.as_deref());
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(ddim_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let refl_err =
        |e: tonic_reflection::server::Error| ServerError::Internal(format!("reflection: {e}"));
    let refl_v1 = reflection().build_v1().map_err(refl_err)?;
    let refl_v1alpha = reflection().build_v1alpha().map_err(refl_err)?;

    let mut builder = Server::builder();
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        let read = |p: &PathBuf, flag: &str| {
            std::fs::read(p)
                .map_err(|e| ServerError::Config(format!("{flag} {}: {e}", p.display())))
        };
        let identity = Identity::from_pem(read(cert, "--tls-cert")?, read(key, "--tls-key")?);
        builder = builder
            .tls_config(ServerTlsConfig::new().identity(identity))
            .map_err(|e| ServerError::Config(format!("--tls-cert/--tls-key: {e}")))?;
    }
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .map_err(|e| ServerError::Config(format!("--addr {}: {e}", args.addr)))?;
    let local = listener
        .local_addr()
        .map_err(|e| ServerError::Config(format!("--addr: {e}")))?;
    let router = builder
        .add_service(health_svc)
        .add_service(InterceptedService::new(ddim, auth.clone()))
        .add_service(InterceptedService::new(refl_v1, auth.clone()))
        .add_service(InterceptedService::new(refl_v1alpha, auth));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    // Nagle off on every accepted socket (tonic's own listener does this; a
    // listener stream passed in does not): replies of a few KB otherwise wait
    // ~40 ms for the client's delayed ACK.
    let incoming = tokio_stream::StreamExt::map(TcpListenerStream::new(listener), |s| {
        if let Ok(s) = &s {
            let _ = s.set_nodelay(true);
        }
        s
    });
    let server = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async {
        let _ = stop_rx.await;
    }));
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening on {local}");
        let _ = out.flush();
    }
    info!(addr = %local, tls = args.tls_cert.is_some(), auth = args.token.is_some(), "listening; loading the model");

    if args.torch_threads > 0 {
        tch::set_num_threads(args.torch_threads);
    }
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let cfg = worker::WorkerConfig {
        model_dir: args.model.clone(),
        device,
        max_batch: args.max_batch,
        max_wait: Duration::from_millis(args.max_wait_ms),
        compiled: args.compiled.clone(),
        name: match store.pg() {
            Some(pg) => pg.daemon.clone(),
            None => local.to_string(),
        },
    };
    let worker = worker::spawn(cfg, store.clone(), sched.clone(), hub.clone(), ready_tx)
        .map_err(|e| ServerError::Internal(format!("cannot start the worker thread: {e}")))?;

    let signal = shutdown_signal();
    tokio::pin!(signal);
    let mut load_error = None;
    let mut stopped_early = false;
    let mut follow_store = None;
    tokio::select! {
        r = ready_rx => match r {
            Ok(Ok(meta)) => {
                if let Some(pg) = store.pg() {
                    let _ = pg.fingerprint.set(meta.fingerprint.clone());
                    let _ = pg.max_queue.set(args.max_queue as u64);
                    let fleet = fleet::Fleet {
                        store: store.clone(),
                        sched: sched.clone(),
                        hub: hub.clone(),
                        max_batch: args.max_batch,
                        max_attempts: args.max_attempts,
                        address: local.to_string(),
                        device: meta.info.device.clone(),
                    };
                    if let Err(e) = fleet.spawn() {
                        load_error = Some(ServerError::Internal(format!("cannot start the claimer: {e}")));
                    }
                }
                let _ = shared.meta.set(meta);
                set_health(&health, ServingStatus::Serving).await;
                follow_store = store.pg().map(|pg| health_follows_the_database(&health, pg));
                info!("serving");
            }
            Ok(Err(e)) => load_error = Some(e),
            Err(_) => load_error = Some(ServerError::Internal("the worker thread died while loading the model".into())),
        },
        _ = &mut signal => stopped_early = true,
    }
    if load_error.is_none() && !stopped_early {
        if fresh && args.seed_images > 0 {
            let (svc, path, n, steps) = (
                svc.clone(),
                args.seed_file.clone(),
                args.seed_images,
                args.seed_steps,
            );
            tokio::spawn(async move {
                match seed::submit(&svc, &path, n, steps).await {
                    Ok(jobs) => info!(jobs = jobs.len(), images = n, "queued the seed images"),
                    Err(e) => error!("--seed-images: {e}"),
                }
            });
        }
        signal.await;
    }

    info!("shutting down");
    if let Some(t) = follow_store {
        t.abort();
    }
    set_health(&health, ServingStatus::NotServing).await;
    sched.shutdown();
    hub.shutdown();
    let joined = tokio::task::spawn_blocking(move || worker.join());
    if tokio::time::timeout(Duration::from_secs(args.shutdown_timeout_s), joined)
        .await
        .is_err()
    {
        warn!("the worker did not stop within {}s; its job stays running and is re-queued on the next start", args.shutdown_timeout_s);
    }
    let _ = stop_tx.send(());
    match tokio::time::timeout(Duration::from_secs(5), server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => error!("server: {e}"),
        Ok(Err(e)) => error!("server task: {e}"),
        Err(_) => warn!("connections still open after 5 s; closing anyway"),
    }
    let flushed = tokio::task::spawn_blocking(move || store.flush().map(|_| store));
    match tokio::time::timeout(Duration::from_secs(args.shutdown_timeout_s), flushed).await {
        Ok(r) => {
            let store = r??;
            if store.pg().is_some() {
                info!("stopped");
                return match load_error {
                    Some(e) => Err(e),
                    None => Ok(()),
                };
            }
            let written = dump::Inventory::of(&store, conversions::now_ms()).and_then(|inv| {
                let tmp = marker.with_extension("tmp");
                let json = serde_json::to_vec(&inv).expect("inventory serialises");
                std::fs::write(&tmp, json)
                    .and_then(|_| std::fs::rename(&tmp, &marker))
                    .map_err(|e| ServerError::Config(format!("{}: {e}", marker.display())))
            });
            if let Err(e) = written {
                warn!("cannot write the clean-shutdown marker: {e}");
            }
        }
        Err(_) => warn!(
            "the store did not flush within {}s",
            args.shutdown_timeout_s
        ),
    }
    info!("stopped");
    match load_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
