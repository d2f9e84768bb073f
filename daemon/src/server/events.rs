//! Broadcasts from the worker and the service to the watch streams.
use ddim_proto::v1 as pb;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, watch};

/// What happened to a job (watchers filter by id).
#[derive(Debug, Clone)]
pub enum JobUpdate {
    /// The queue changed: queued jobs may have moved.
    Queue,
    Started {
        job: u64,
        attempt: u32,
    },
    Progress {
        job: u64,
        step: u32,
        total: u32,
        eta_seconds: f64,
        preview: Option<Arc<pb::Image>>,
        /// From the daemon running the job on a shared store (throttled there):
        /// a watcher that wants previews takes its preview whatever the step.
        relayed: bool,
    },
    /// Reached a final state (or went back to the queue at shutdown); read the store.
    Finished {
        job: u64,
    },
}

pub struct Hub {
    jobs: broadcast::Sender<JobUpdate>,
    library: broadcast::Sender<pb::LibraryEvent>,
    shutdown: watch::Sender<bool>,
    /// job id → the `preview_every` of each watcher that wants previews.
    previews: Mutex<HashMap<u64, Vec<u32>>>,
    /// On a shared store: progress notes for the other daemons.
    pub shared: Outbox,
    /// On a shared store: the last step of each job running on another daemon
    /// (from its progress notes; gone when it ends), for `GetJob`/`ListJobs` here.
    remote: Mutex<HashMap<u64, u32>>,
}

/// At most this many jobs' remote steps are kept (a job whose end was never
/// heard of would otherwise stay).
const REMOTE_STEPS_MAX: usize = 4096;

impl Default for Hub {
    fn default() -> Self {
        Self::new()
    }
}

impl Hub {
    pub fn new() -> Self {
        Hub {
            jobs: broadcast::channel(4096).0,
            library: broadcast::channel(4096).0,
            shutdown: watch::channel(false).0,
            previews: Mutex::new(HashMap::new()),
            shared: Outbox::default(),
            remote: Mutex::new(HashMap::new()),
        }
    }

    pub fn job(&self, u: JobUpdate) {
        match &u {
            JobUpdate::Progress {
                job,
                step,
                relayed: true,
                ..
            } => {
                let mut r = self.remote.lock().unwrap_or_else(|e| e.into_inner());
                if r.len() >= REMOTE_STEPS_MAX && !r.contains_key(job) {
                    r.clear();
                }
                r.insert(*job, *step);
            }
            JobUpdate::Finished { job } | JobUpdate::Started { job, .. } => {
                let mut r = self.remote.lock().unwrap_or_else(|e| e.into_inner());
                r.remove(job);
            }
            _ => {}
        }
        let _ = self.jobs.send(u);
    }

    /// The last step another daemon reported for `job`, while it runs there.
    pub fn remote_step(&self, job: u64) -> Option<u32> {
        let r = self.remote.lock().unwrap_or_else(|e| e.into_inner());
        r.get(&job).copied()
    }

    pub fn library(&self, kind: pb::library_event::Kind, id: String, latent: Option<pb::Latent>) {
        let _ = self.library.send(pb::LibraryEvent {
            kind: kind as i32,
            id,
            latent,
        });
    }

    pub fn subscribe_jobs(&self) -> broadcast::Receiver<JobUpdate> {
        self.jobs.subscribe()
    }

    pub fn subscribe_library(&self) -> broadcast::Receiver<pb::LibraryEvent> {
        self.library.subscribe()
    }

    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Registers a watcher's preview interval; dropping the guard removes it.
    pub fn want_previews(self: &Arc<Self>, job: u64, every: u32) -> PreviewGuard {
        if every > 0 {
            self.previews
                .lock()
                .expect("previews lock")
                .entry(job)
                .or_default()
                .push(every);
        }
        PreviewGuard {
            hub: self.clone(),
            job,
            every,
        }
    }

    /// Whether some watcher wants a preview at `step` of `job`.
    pub fn preview_due(&self, job: u64, step: u32) -> bool {
        let p = self.previews.lock().expect("previews lock");
        p.get(&job)
            .is_some_and(|v| v.iter().any(|k| step.is_multiple_of(*k)))
    }
}

/// Progress notes of the jobs this daemon runs, waiting to go to the daemons
/// sharing its PostgreSQL store (`super::fleet`'s sender thread `NOTIFY`s them):
/// the latest per job, so a slow database drops steps, never the newest. The
/// worker never waits on the database for progress; it waits only, briefly, at
/// the end of a job ([`Outbox::flush`]) so that the other daemons hear of its
/// last steps before its end.
#[derive(Default)]
pub struct Outbox {
    st: Mutex<OutboxState>,
    changed: Condvar,
}

#[derive(Default)]
struct OutboxState {
    /// A sender runs (on sled nothing is kept).
    open: bool,
    pending: BTreeMap<u64, String>,
    /// The sender is sending what it took.
    busy: bool,
}

impl Outbox {
    fn state(&self) -> std::sync::MutexGuard<'_, OutboxState> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A sender runs from now on.
    pub fn open(&self) {
        self.state().open = true;
    }

    /// The sender stopped (the daemon stops): what waits is dropped, and nothing
    /// more is kept or waited for.
    pub fn close(&self) {
        let mut s = self.state();
        s.open = false;
        s.busy = false;
        s.pending.clear();
        self.changed.notify_all();
    }

    /// Whether a sender runs (progress notes are worth making).
    pub fn is_open(&self) -> bool {
        self.state().open
    }

    /// Job `job`'s latest note (it replaces one not sent yet).
    pub fn put(&self, job: u64, note: String) {
        let mut s = self.state();
        if s.open {
            s.pending.insert(job, note);
            self.changed.notify_all();
        }
    }

    /// For the sender: the notes waiting, after waiting up to `wait` for one.
    /// They are in flight until [`Outbox::sent`].
    pub fn take(&self, wait: Duration) -> Vec<String> {
        let mut s = self.state();
        if s.pending.is_empty() {
            s = self
                .changed
                .wait_timeout(s, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let notes: Vec<String> = std::mem::take(&mut s.pending).into_values().collect();
        s.busy = !notes.is_empty();
        notes
    }

    /// For the sender: what it took is sent (or given up).
    pub fn sent(&self) {
        self.state().busy = false;
        self.changed.notify_all();
    }

    /// Waits, at most `within`, until every note put so far is sent; true if so.
    pub fn flush(&self, within: Duration) -> bool {
        let until = Instant::now() + within;
        let mut s = self.state();
        while s.open && (s.busy || !s.pending.is_empty()) {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            s = self
                .changed
                .wait_timeout(s, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

pub struct PreviewGuard {
    hub: Arc<Hub>,
    job: u64,
    every: u32,
}

impl Drop for PreviewGuard {
    fn drop(&mut self) {
        if self.every == 0 {
            return;
        }
        let mut p = self.hub.previews.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = p.get_mut(&self.job) {
            if let Some(i) = v.iter().position(|k| *k == self.every) {
                v.remove(i);
            }
            if v.is_empty() {
                p.remove(&self.job);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outbox_keeps_the_latest_note_per_job_and_flush_waits_for_the_sender() {
        let ob = Arc::new(Outbox::default());
        // No sender (sled): nothing is kept, nothing to wait for.
        ob.put(1, "a".into());
        assert!(ob.take(Duration::ZERO).is_empty());
        assert!(ob.flush(Duration::ZERO));
        ob.open();
        ob.put(1, "1@3".into());
        ob.put(2, "2@1".into());
        ob.put(1, "1@4".into());
        assert!(!ob.flush(Duration::from_millis(10)), "two notes wait");
        let sender = {
            let ob = ob.clone();
            std::thread::spawn(move || {
                let notes = ob.take(Duration::from_secs(5));
                std::thread::sleep(Duration::from_millis(50));
                ob.sent();
                notes
            })
        };
        assert!(ob.flush(Duration::from_secs(10)), "flushed once sent");
        let sent = sender.join().unwrap();
        assert_eq!(sent, ["1@4", "2@1"], "the latest per job");
        assert!(ob.take(Duration::from_millis(1)).is_empty());
        // A sender that stopped is not waited for.
        ob.put(3, "3@1".into());
        ob.close();
        assert!(ob.flush(Duration::ZERO));
        ob.put(3, "3@2".into());
        assert!(ob.take(Duration::ZERO).is_empty(), "closed: nothing kept");
    }

    /// Steps relayed from another daemon are kept for GetJob/ListJobs while the job
    /// runs there; a local job's steps are not (the scheduler has them), and a
    /// start (a new attempt) or the end forgets them.
    #[test]
    fn remote_steps_last_while_the_job_runs_elsewhere() {
        let hub = Hub::new();
        let progress = |job, step, relayed| JobUpdate::Progress {
            job,
            step,
            total: 50,
            eta_seconds: 1.0,
            preview: None,
            relayed,
        };
        hub.job(progress(7, 3, true));
        hub.job(progress(7, 9, true));
        hub.job(progress(8, 5, false));
        assert_eq!((hub.remote_step(7), hub.remote_step(8)), (Some(9), None));
        hub.job(JobUpdate::Started { job: 7, attempt: 2 });
        assert_eq!(hub.remote_step(7), None);
        hub.job(progress(7, 1, true));
        hub.job(JobUpdate::Finished { job: 7 });
        assert_eq!(hub.remote_step(7), None);
    }
}
