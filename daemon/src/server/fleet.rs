//! N daemons on one PostgreSQL store (`ddimd serve --store postgres://…`,
//! docs/scale-out.md): the threads that feed this daemon's scheduler from the
//! shared queue and keep its leases.
//!
//! - the claimer: whenever this daemon has nothing queued and nothing running, it
//!   claims runnable jobs ([`PgStore::claim`]: `FOR UPDATE SKIP LOCKED`, priority
//!   then id, this model's fingerprint) and pushes them into the local
//!   [`Scheduler`], which batches and runs them as on sled. It polls every
//!   [`CLAIM_POLL`] (a new job is not announced by NOTIFY yet).
//! - the keeper, every third of `--lease`: renews the leases of the running jobs
//!   (a job whose lease was lost, or whose cancel another daemon asked for, gets
//!   its cancel flag set), sweeps expired leases of any daemon back into the
//!   queue (or to FAILED `interrupted` after `--max-attempts`), and beats this
//!   daemon's row in `daemons`.
//! - the listener: what other daemons `NOTIFY` (a job started or ended, latents
//!   made, renamed, tagged or deleted; see [`super::pg::Note`]) goes to this
//!   daemon's [`Hub`], so `WatchJob` and `WatchLibrary` here follow work done
//!   there (without progress steps or previews yet).
//!
//! Both are plain threads: the store's PostgreSQL calls block (see
//! [`super::pg::PgStore`]).
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use ddim_proto::v1 as pb;

use super::conversions::{latent_id, latent_to_pb, now_ms};
use super::error::Result;
use super::events::{Hub, JobUpdate};
use super::pg::{Note, PgStore, JOBS_CHANNEL};
use super::queue::{Queued, Scheduler};
use super::store::{JobRecord, JobState, Store};

/// How often an idle daemon looks for queued jobs.
pub const CLAIM_POLL: Duration = Duration::from_millis(20);

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
        while !self.sched.is_shutting_down() {
            let idle = {
                let st = self.sched.lock();
                st.is_empty() && st.running.is_empty()
            };
            if !idle || pg.fingerprint.get().is_none() {
                std::thread::sleep(CLAIM_POLL);
                continue;
            }
            match pg.claim(self.max_batch) {
                Ok(jobs) if jobs.is_empty() => std::thread::sleep(CLAIM_POLL),
                Ok(jobs) => {
                    failing = false;
                    let mut st = self.sched.lock();
                    for c in jobs {
                        let r = c.record;
                        st.push(Queued::of(&r));
                    }
                    drop(st);
                    self.sched.notify();
                }
                Err(e) => {
                    if !failing {
                        warn!("claiming jobs: {e}");
                    }
                    failing = true;
                    std::thread::sleep(Duration::from_millis(500));
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
            if let Err(e) = self.keep(&pg) {
                warn!("renewing leases: {e}");
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

    /// Tells this daemon's watchers what another daemon did.
    fn told(&self, channel: &str, n: Note) {
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
