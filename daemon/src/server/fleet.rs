//! N daemons on one PostgreSQL store (`ddimd serve --store postgres://…`,
//! docs/scale-out.md): the threads that feed this daemon's scheduler from the
//! shared queue and keep its leases.
//!
//! - the claimer: whenever this daemon has nothing queued and nothing running, it
//!   claims runnable jobs ([`PgStore::claim`]: `FOR UPDATE SKIP LOCKED`, priority
//!   then id, this model's fingerprint) and pushes them into the local
//!   [`Scheduler`], which batches and runs them as on sled. A submit (on any
//!   daemon) `NOTIFY`s [`super::pg::QUEUE_CHANNEL`], which wakes it; it also looks
//!   every [`CLAIM_POLL`] in case a notification was missed (the LISTEN connection
//!   was down). Whether it is idle is a local check, every [`IDLE_POLL`].
//! - the keeper, every third of `--lease`: renews the leases of the running jobs
//!   (a job whose lease was lost, or whose cancel another daemon asked for, gets
//!   its cancel flag set), sweeps expired leases of any daemon back into the
//!   queue (or to FAILED `interrupted` after `--max-attempts`), and beats this
//!   daemon's row in `daemons`.
//! - the listener: what other daemons `NOTIFY` (a job started, stepped or ended,
//!   latents made, renamed, tagged or deleted; see [`super::pg::Note`]) goes to
//!   this daemon's [`Hub`], so `WatchJob` and `WatchLibrary` here follow work
//!   done there, progress steps and x̂0 previews included.
//! - the progress sender: the worker leaves a note in the hub's outbox at most
//!   every [`super::worker::SHARE_EVERY`] per running job (step, total, ETA and
//!   the x̂0 preview, shrunk until the note fits a `NOTIFY`); this thread
//!   `NOTIFY`s them on the jobs channel, so the worker never waits on the
//!   database for progress. The worker flushes the outbox before it settles a
//!   job, so the other daemons hear its last steps before its end.
//!
//! They are plain threads: the store's PostgreSQL calls block (see
//! [`super::pg::PgStore`]).
//!
//! A database restart: every statement that cannot reach the server marks the
//! store's [`super::pg::Reach`] away (one log line, health `NOT_SERVING`) and
//! one prober reconnects with a capped exponential backoff. Meanwhile the claimer
//! and the keeper wait for it ([`super::pg::Reach::wait_up`]) instead of logging
//! each failure, and the worker holds what it could not write: a job's start, and
//! its end (result and latents in memory), are retried by [`until_answered`] until
//! the database answers. The answer decides: the end of a job is written only if
//! the job is still `running` under this daemon's name (its lease renewed by the
//! keeper once the database is back, or not yet swept by anyone), else it is refused
//! and the job runs again on whichever daemon claims it. A job is never written
//! twice, and an acknowledged job is never lost: it is a committed row, either
//! settled by the daemon that ran it or put back in the queue by the sweep once its
//! lease has run out.
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use ddim_proto::v1 as pb;

use super::conversions::{latent_id, latent_to_pb, now_ms};
use super::error::{Result, ServerError};
use super::events::{Hub, JobUpdate};
use super::pg::{Backoff, Note, PgStore, JOBS_CHANNEL, PROGRESS};
use super::queue::{Queued, Scheduler};
use super::store::{JobRecord, JobState, Store};

/// How often an idle daemon looks for queued jobs without being woken by a
/// `NOTIFY` (a fallback for notifications missed while not listening).
pub const CLAIM_POLL: Duration = Duration::from_secs(1);

/// How often the claimer checks whether this daemon is idle (a local check).
pub const IDLE_POLL: Duration = Duration::from_millis(20);

/// What the fleet threads need.
pub struct Fleet {
    pub store: Arc<Store>,
    pub sched: Arc<Scheduler>,
    pub hub: Arc<Hub>,
    pub max_batch: u32,
    pub max_attempts: u32,
    pub address: String,
    pub device: String,
}

impl Fleet {
    fn pg(&self) -> &Arc<PgStore> {
        self.store.pg().expect("a fleet runs on a PostgreSQL store")
    }

    /// Starts the claimer and the keeper; they stop when the scheduler shuts down.
    pub fn spawn(self) -> std::io::Result<()> {
        let me = Arc::new(self);
        let m = me.clone();
        std::thread::Builder::new()
            .name("ddimd-claimer".into())
            .spawn(move || m.claimer())?;
        let m = me.clone();
        std::thread::Builder::new()
            .name("ddimd-keeper".into())
            .spawn(move || m.keeper())?;
        me.hub.shared.open();
        let m = me.clone();
        std::thread::Builder::new()
            .name("ddimd-progress".into())
            .spawn(move || m.sender())?;
        let (tx, rx) = std::sync::mpsc::channel();
        me.pg().listen(tx);
        std::thread::Builder::new()
            .name("ddimd-listener".into())
            .spawn(move || {
                while let Ok((channel, note)) = rx.recv() {
                    if me.sched.is_shutting_down() {
                        break;
                    }
                    me.told(&channel, note);
                }
            })?;
        Ok(())
    }

    fn claimer(&self) {
        let pg = self.pg().clone();
        let mut failing = false;
        let mut backoff = Backoff::default();
        while !self.sched.is_shutting_down() {
            let idle = {
                let st = self.sched.lock();
                st.is_empty() && st.running.is_empty()
            };
            if !idle || pg.fingerprint.get().is_none() {
                std::thread::sleep(IDLE_POLL);
                continue;
            }
            // Before the claim: a NOTIFY that comes during it is kept for the wait.
            pg.wake.clear();
            match pg.claim(self.max_batch) {
                Ok(jobs) if jobs.is_empty() => {
                    failing = false;
                    backoff.reset();
                    pg.wake.wait(CLAIM_POLL);
                }
                Ok(jobs) => {
                    failing = false;
                    backoff.reset();
                    let mut st = self.sched.lock();
                    for c in jobs {
                        let r = c.record;
                        st.push(Queued::of(&r));
                    }
                    drop(st);
                    self.sched.notify();
                }
                Err(ServerError::Unavailable(_)) => {
                    // The store logged the outage once and reconnects; wait for it.
                    pg.reach.wait_up(backoff.pause());
                }
                Err(e) => {
                    if !failing {
                        warn!("claiming jobs: {e}");
                    }
                    failing = true;
                    std::thread::sleep(backoff.pause());
                }
            }
        }
    }

    fn keeper(&self) {
        let pg = self.pg().clone();
        let every = (pg.lease / 3).max(Duration::from_millis(100));
        let mut next = Instant::now();
        while !self.sched.is_shutting_down() {
            std::thread::sleep(Duration::from_millis(50).min(every));
            if Instant::now() < next {
                continue;
            }
            next = Instant::now() + every;
            match self.keep(&pg) {
                // Logged once per outage by the store; renewed once it is back.
                Err(ServerError::Unavailable(_)) => {
                    if pg.reach.wait_up(every) {
                        next = Instant::now();
                    }
                }
                Err(e) => warn!("renewing leases: {e}"),
                Ok(()) => {}
            }
        }
    }

    fn keep(&self, pg: &PgStore) -> Result<()> {
        let running: Vec<u64> = self.sched.lock().running.keys().copied().collect();
        if !running.is_empty() {
            let (held, cancel) = pg.renew(running.clone())?;
            // Database reads before the scheduler's lock, which the worker takes.
            let lost: Vec<u64> = running
                .iter()
                .copied()
                .filter(|id| !held.contains(id) && !cancel.contains(id))
                .filter(|id| self.started(pg, *id))
                .collect();
            let st = self.sched.lock();
            for id in &running {
                let Some(r) = st.running.get(id) else {
                    continue;
                };
                if cancel.contains(id) {
                    info!(job = id, "cancel requested through the store");
                    r.cancel.store(true, Ordering::SeqCst);
                } else if lost.contains(id) {
                    warn!(
                        job = id,
                        "lease lost (another daemon may run it): stopping; its result will not be written"
                    );
                    r.cancel.store(true, Ordering::SeqCst);
                }
            }
            drop(st);
            self.sched.notify();
        }
        let (again, failed) = pg.sweep(self.max_attempts, now_ms())?;
        if !again.is_empty() {
            info!(jobs = ?again, "leases ran out: back in the queue");
        }
        if !failed.is_empty() {
            warn!(jobs = ?failed, "leases ran out too often: failed as interrupted");
        }
        let running = self.sched.lock().running.keys().next().copied();
        pg.heartbeat(&self.address, &self.device, running)
    }

    /// The progress sender: `NOTIFY`s the progress notes the worker leaves in the
    /// hub's outbox (at most one per job every [`super::worker::SHARE_EVERY`]),
    /// off the worker's thread, so a slow or absent database never slows a job.
    fn sender(&self) {
        let pg = self.pg().clone();
        let mut failing = false;
        while !self.sched.is_shutting_down() {
            let notes = self.hub.shared.take(Duration::from_millis(200));
            if notes.is_empty() {
                continue;
            }
            match pg.notify(JOBS_CHANNEL, notes) {
                Ok(()) => failing = false,
                // Progress is worth nothing later: dropped, logged once.
                Err(e) => {
                    if !failing {
                        warn!("sending progress to the other daemons: {e}");
                    }
                    failing = true;
                }
            }
            self.hub.shared.sent();
        }
        // The worker's last settles (a job back in the queue) need not wait for it.
        self.hub.shared.close();
    }

    /// Another daemon's progress note for a job it runs, to this daemon's watchers.
    fn relay(&self, n: Note) {
        let Some(p) = n.progress else {
            return;
        };
        self.hub.job(JobUpdate::Progress {
            job: n.id,
            step: p.step,
            total: p.total,
            eta_seconds: p.eta,
            preview: p.preview.and_then(|i| i.image()).map(Arc::new),
            relayed: true,
        });
    }

    /// Tells this daemon's watchers what another daemon did.
    fn told(&self, channel: &str, n: Note) {
        if channel == JOBS_CHANNEL && n.state == PROGRESS {
            self.relay(n);
            return;
        }
        if channel == super::pg::QUEUE_CHANNEL {
            // A job was queued (by any daemon): queue places may have moved.
            self.hub.job(JobUpdate::Queue);
            return;
        }
        let added = |id: u64, kind: pb::library_event::Kind| {
            if let Some(r) = self.store.get_latent(id) {
                self.hub
                    .library(kind, latent_id(id), Some(latent_to_pb(&r)));
            }
        };
        if channel == JOBS_CHANNEL {
            match n.state.as_str() {
                "running" => self.hub.job(JobUpdate::Started {
                    job: n.id,
                    attempt: n.attempt,
                }),
                _ => {
                    for l in &n.latents {
                        added(*l, pb::library_event::Kind::Added);
                    }
                    self.hub.job(JobUpdate::Finished { job: n.id });
                }
            }
            self.hub.job(JobUpdate::Queue);
        } else {
            match n.state.as_str() {
                "deleted" => {
                    self.hub
                        .library(pb::library_event::Kind::Deleted, latent_id(n.id), None)
                }
                _ => added(n.id, pb::library_event::Kind::Changed),
            }
        }
    }

    /// Whether job `id` was started here (a job just taken from the local queue
    /// may not have reached the running state yet, and holds no lease to renew).
    fn started(&self, pg: &PgStore, id: u64) -> bool {
        match pg.get_job(id) {
            Ok(Some(j)) => !(j.state == JobState::Queued && j.attempts == 0),
            _ => true,
        }
    }
}

/// Runs `op` (a write the worker must not drop: a job's start or end) until the
/// database answers: while it is unreachable, waits for the reconnect (capped
/// exponential backoff) and tries again, until `stop()` (the daemon stops). Any
/// answer ends it, an error too (`FAILED_PRECONDITION`: the lease is no longer
/// this daemon's). On sled, `op` once. `what` names the write in the one line
/// logged when it has to wait ("the end of job-7").
pub fn until_answered<T>(
    store: &Store,
    what: &dyn Fn() -> String,
    stop: &dyn Fn() -> bool,
    mut op: impl FnMut() -> Result<T>,
) -> Result<T> {
    let Some(pg) = store.pg() else {
        return op();
    };
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
    let mut held = false;
    loop {
        match op() {
            Err(ServerError::Unavailable(_)) if !stop() => {
                if !held {
                    info!("{}: held until the database answers", what());
                    held = true;
                }
                let pause = backoff.pause();
                if pg.reach.wait_up(pause) {
                    // Reachable as far as the store knows; do not spin on a flap.
                    std::thread::sleep(pause.min(Duration::from_millis(100)));
                }
            }
            r => return r,
        }
    }
}

/// `CancelJob` for a job this daemon neither queues nor runs, on a shared store:
/// a queued one is cancelled in the database (a daemon that claimed it finds it
/// gone when it starts it); a running one gets `cancel_requested`, which its
/// daemon sees at its next lease renewal. Returns the record after, or `None`
/// when the job is running elsewhere (the caller waits for it to end).
pub fn cancel_elsewhere(store: &Store, id: u64) -> Result<Option<JobRecord>> {
    let Some(pg) = store.pg() else {
        return Ok(None);
    };
    let Some(mut rec) = pg.get_job(id)? else {
        return Ok(None);
    };
    match rec.state {
        JobState::Queued => {
            rec.state = JobState::Cancelled;
            rec.finished_ms = now_ms();
            pg.move_job(&rec, JobState::Queued)?;
            Ok(Some(rec))
        }
        JobState::Running => {
            pg.request_cancel(id)?;
            Ok(None)
        }
        _ => Ok(Some(rec)),
    }
}
