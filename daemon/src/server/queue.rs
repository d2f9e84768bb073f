//! The in-memory job queue (the store is the source of truth; this is its
//! index of what to run next), the running set with cancel flags, and the
//! counters behind `GetStats`.
//!
//! [`QueueState`] is a plain struct, unit-tested without a runtime.
//! [`Scheduler`] wraps it in a `Mutex` + `Condvar`: the consumer is the one
//! blocking worker thread that owns the model, so a condition variable (with
//! a timeout for dynamic batching) is its natural wait; async handlers hold
//! the lock only for a few field updates and never across an `.await`.
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

use super::error::{Result, ServerError};
use super::store::{BatchKey, JobRecord, LatentRecord, Priority};

/// A queued job as the queue sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Queued {
    pub id: u64,
    pub priority: Priority,
    pub batch: Option<BatchKey>,
    pub rows: u32,
    /// When it was submitted (for the mean queue wait).
    pub created_ms: i64,
}

impl Queued {
    /// The queue entry of a stored job.
    pub fn of(rec: &JobRecord) -> Queued {
        Queued {
            id: rec.id,
            priority: rec.priority,
            batch: rec.batch,
            rows: rec.rows,
            created_ms: rec.created_ms,
        }
    }
}

#[derive(Debug)]
pub struct Running {
    pub cancel: Arc<AtomicBool>,
    pub step: u32,
    pub total: u32,
}

/// `GetLatentImage` with kind DECODE: runs before any queued job.
pub struct DecodeNow {
    pub latent: Arc<LatentRecord>,
    pub steps: usize,
    pub reply: oneshot::Sender<Result<Vec<u8>>>,
}

/// `PreviewEdit`: an edit run at a small S and returned, not stored; runs
/// before any queued job (after `DecodeNow`).
pub struct PreviewNow {
    pub spec: ddim_proto::v1::JobSpec,
    pub steps: usize,
    /// A newer preview of the same client replaces this one while it waits.
    pub client: String,
    pub reply: oneshot::Sender<Result<Vec<ddim_proto::v1::Image>>>,
}

/// A job handed to the worker with its cancel flag.
pub struct Taken {
    pub job: Queued,
    pub cancel: Arc<AtomicBool>,
}

pub enum Work {
    Decode(DecodeNow),
    Preview(PreviewNow),
    Jobs(Vec<Taken>),
    Shutdown,
}

#[derive(Debug, Default, Clone)]
pub struct Counters {
    pub done: u64,
    pub failed: u64,
    pub cancelled: u64,
    /// (when, images) of jobs finished in the last minute.
    pub recent: VecDeque<(Instant, u32)>,
    pub wait_ms_sum: f64,
    pub wait_n: u64,
}

impl Counters {
    pub fn images_per_second(&mut self, now: Instant, uptime: Duration) -> f64 {
        while self
            .recent
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > Duration::from_secs(60))
        {
            self.recent.pop_front();
        }
        let n: u32 = self.recent.iter().map(|(_, n)| n).sum();
        n as f64 / uptime.as_secs_f64().clamp(1.0, 60.0)
    }
}

#[derive(Default)]
pub struct QueueState {
    interactive: VecDeque<Queued>,
    batch: VecDeque<Queued>,
    reserved: usize,
    /// Submits in progress (validating or persisting), see [`Scheduler::arrive`].
    arriving: usize,
    pub max_queue: usize,
    pub running: HashMap<u64, Running>,
    decodes: VecDeque<DecodeNow>,
    previews: VecDeque<PreviewNow>,
    pub shutting_down: bool,
    pub counters: Counters,
}

impl QueueState {
    pub fn new(max_queue: usize) -> Self {
        QueueState {
            max_queue,
            ..Default::default()
        }
    }

    pub fn len(&self) -> usize {
        self.interactive.len() + self.batch.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes a slot for a job about to be persisted.
    pub fn reserve(&mut self) -> Result<()> {
        if self.shutting_down {
            return Err(ServerError::Unavailable(
                "the daemon is shutting down".into(),
            ));
        }
        if self.len() + self.reserved >= self.max_queue {
            return Err(ServerError::QueueFull(format!(
                "the queue is full ({} jobs queued, --max-queue {}); retry later",
                self.len() + self.reserved,
                self.max_queue
            )));
        }
        self.reserved += 1;
        Ok(())
    }

    pub fn unreserve(&mut self) {
        self.reserved = self.reserved.saturating_sub(1);
    }

    pub fn push(&mut self, q: Queued) {
        match q.priority {
            Priority::Interactive => self.interactive.push_back(q),
            Priority::Batch => self.batch.push_back(q),
        }
    }

    /// 0-based position in run order (interactive jobs first).
    pub fn position(&self, id: u64) -> Option<u32> {
        self.interactive
            .iter()
            .chain(self.batch.iter())
            .position(|q| q.id == id)
            .map(|p| p as u32)
    }

    pub fn remove(&mut self, id: u64) -> Option<Queued> {
        for d in [&mut self.interactive, &mut self.batch] {
            if let Some(i) = d.iter().position(|q| q.id == id) {
                return d.remove(i);
            }
        }
        None
    }

    pub fn pop(&mut self) -> Option<Queued> {
        self.interactive
            .pop_front()
            .or_else(|| self.batch.pop_front())
    }

    /// Removes queued jobs with `key` whose rows fit in `room`, in run order.
    pub fn take_compatible(&mut self, key: BatchKey, mut room: u32) -> Vec<Queued> {
        let mut out = vec![];
        for d in [&mut self.interactive, &mut self.batch] {
            let mut i = 0;
            while i < d.len() && room > 0 {
                if d[i].batch == Some(key) && d[i].rows <= room {
                    let q = d.remove(i).expect("index in range");
                    room -= q.rows;
                    out.push(q);
                } else {
                    i += 1;
                }
            }
        }
        out
    }

    fn start(&mut self, q: Queued) -> Taken {
        let cancel = Arc::new(AtomicBool::new(false));
        self.running.insert(
            q.id,
            Running {
                cancel: cancel.clone(),
                step: 0,
                total: 0,
            },
        );
        Taken { job: q, cancel }
    }
}

/// A submit in progress ([`Scheduler::arrive`]); dropping it ends the arrival.
pub struct Arrival<'a>(&'a Scheduler);

impl Drop for Arrival<'_> {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        st.arriving = st.arriving.saturating_sub(1);
        drop(st);
        self.0.notify();
    }
}

pub struct Scheduler {
    state: Mutex<QueueState>,
    cv: Condvar,
    shutdown: AtomicBool,
    pub started: Instant,
}

impl Scheduler {
    pub fn new(max_queue: usize) -> Self {
        Scheduler {
            state: Mutex::new(QueueState::new(max_queue)),
            cv: Condvar::new(),
            shutdown: AtomicBool::new(false),
            started: Instant::now(),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes the worker after a change.
    pub fn notify(&self) {
        self.cv.notify_all();
    }

    pub fn push(&self, q: Queued) {
        self.lock().push(q);
        self.notify();
    }

    /// Marks a submit in progress until the guard drops (drop it right after the job
    /// is queued). A batchable job waits up to `max_wait` for companions only while
    /// submits are arriving: a lone job starts at once, and a burst of concurrent
    /// submits still shares its model calls.
    pub fn arrive(&self) -> Arrival<'_> {
        self.lock().arriving += 1;
        Arrival(self)
    }

    /// Queues a preview; a waiting preview of the same client is answered
    /// ABORTED (superseded) and dropped.
    pub fn preview_now(&self, p: PreviewNow) -> Result<()> {
        let mut st = self.lock();
        if st.shutting_down {
            return Err(ServerError::Unavailable(
                "the daemon is shutting down".into(),
            ));
        }
        if !p.client.is_empty() {
            let (old, keep): (VecDeque<_>, VecDeque<_>) =
                st.previews.drain(..).partition(|o| o.client == p.client);
            st.previews = keep;
            for o in old {
                let _ = o.reply.send(Err(ServerError::Aborted(
                    "superseded by a newer preview from the same client".into(),
                )));
            }
        }
        st.previews.push_back(p);
        drop(st);
        self.notify();
        Ok(())
    }

    pub fn decode_now(&self, d: DecodeNow) -> Result<()> {
        let mut st = self.lock();
        if st.shutting_down {
            return Err(ServerError::Unavailable(
                "the daemon is shutting down".into(),
            ));
        }
        st.decodes.push_back(d);
        drop(st);
        self.notify();
        Ok(())
    }

    pub fn shutdown(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
        self.lock().shutting_down = true;
        self.notify();
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.load(Ordering::SeqCst)
    }

    /// Blocks until there is work: a synchronous decode, or the next job with
    /// the queued jobs that can share its model calls (waiting up to
    /// `max_wait` for more while the batch has fewer than `max_batch` rows and
    /// submits are arriving, [`Scheduler::arrive`]).
    pub fn next_work(&self, max_batch: u32, max_wait: Duration) -> Work {
        let mut st = self.lock();
        let first = loop {
            if st.shutting_down {
                return Work::Shutdown;
            }
            if let Some(d) = st.decodes.pop_front() {
                return Work::Decode(d);
            }
            if let Some(p) = st.previews.pop_front() {
                return Work::Preview(p);
            }
            if let Some(q) = st.pop() {
                break q;
            }
            st = self.cv.wait(st).unwrap_or_else(|p| p.into_inner());
        };
        let mut jobs = vec![st.start(first)];
        if let Some(key) = first.batch {
            let mut rows = first.rows;
            let deadline = Instant::now() + max_wait;
            loop {
                for q in st.take_compatible(key, max_batch.saturating_sub(rows)) {
                    rows += q.rows;
                    let t = st.start(q);
                    jobs.push(t);
                }
                let now = Instant::now();
                if rows >= max_batch || st.shutting_down || now >= deadline || st.arriving == 0 {
                    break;
                }
                st = self
                    .cv
                    .wait_timeout(st, deadline - now)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
        }
        Work::Jobs(jobs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(id: u64, priority: Priority, batch: Option<BatchKey>, rows: u32) -> Queued {
        Queued {
            id,
            priority,
            batch,
            rows,
            created_ms: 0,
        }
    }

    fn key(steps: u32) -> BatchKey {
        BatchKey {
            steps,
            eta_bits: 0,
            spacing: 0,
            sigma_hat: false,
            solver: 0,
        }
    }

    #[test]
    fn interactive_first_and_positions() {
        let mut s = QueueState::new(10);
        s.push(q(1, Priority::Batch, None, 1));
        s.push(q(2, Priority::Interactive, None, 1));
        s.push(q(3, Priority::Interactive, None, 1));
        assert_eq!(
            (s.position(2), s.position(3), s.position(1)),
            (Some(0), Some(1), Some(2))
        );
        assert_eq!(s.remove(3).map(|x| x.id), Some(3));
        assert_eq!(s.pop().map(|x| x.id), Some(2));
        assert_eq!(s.pop().map(|x| x.id), Some(1));
        assert!(s.pop().is_none());
    }

    #[test]
    fn bounded_with_reservations() {
        let mut s = QueueState::new(2);
        s.reserve().unwrap();
        s.reserve().unwrap();
        assert!(matches!(s.reserve(), Err(ServerError::QueueFull(_))));
        s.unreserve();
        s.push(q(1, Priority::Interactive, None, 1));
        assert!(matches!(s.reserve(), Err(ServerError::QueueFull(_))));
        s.shutting_down = true;
        s.pop();
        assert!(matches!(s.reserve(), Err(ServerError::Unavailable(_))));
    }

    #[test]
    fn compatible_jobs_fill_the_batch() {
        let mut s = QueueState::new(10);
        s.push(q(1, Priority::Interactive, Some(key(10)), 2));
        s.push(q(2, Priority::Interactive, Some(key(20)), 1));
        s.push(q(3, Priority::Interactive, Some(key(10)), 8));
        s.push(q(4, Priority::Batch, Some(key(10)), 3));
        s.push(q(5, Priority::Interactive, None, 1));
        let got: Vec<u64> = s.take_compatible(key(10), 6).iter().map(|x| x.id).collect();
        assert_eq!(got, vec![1, 4]);
        assert_eq!(s.len(), 3);
    }

    #[test]
    fn scheduler_batches_within_the_wait() {
        let s = Scheduler::new(10);
        s.push(q(1, Priority::Interactive, Some(key(10)), 1));
        s.push(q(2, Priority::Interactive, Some(key(10)), 1));
        s.push(q(3, Priority::Interactive, Some(key(11)), 1));
        match s.next_work(4, Duration::from_millis(5)) {
            Work::Jobs(j) => assert_eq!(j.iter().map(|t| t.job.id).collect::<Vec<_>>(), vec![1, 2]),
            _ => panic!("expected jobs"),
        }
        assert!(s.lock().running.contains_key(&2));
        s.shutdown();
        assert!(matches!(s.next_work(4, Duration::ZERO), Work::Shutdown));
    }

    fn ids(w: Work) -> Vec<u64> {
        match w {
            Work::Jobs(j) => j.iter().map(|t| t.job.id).collect(),
            _ => panic!("expected jobs"),
        }
    }

    #[test]
    fn a_lone_job_starts_at_once_and_arriving_submits_join_its_batch() {
        let s = Scheduler::new(10);
        // Nothing arriving: the job starts without waiting out max_wait (an hour here).
        s.push(q(1, Priority::Interactive, Some(key(10)), 1));
        assert_eq!(ids(s.next_work(4, Duration::from_secs(3600))), vec![1]);
        // A submit in progress: the worker waits for it, and its job joins.
        s.push(q(2, Priority::Interactive, Some(key(10)), 1));
        std::thread::scope(|sc| {
            let arriving = s.arrive();
            let s = &s;
            sc.spawn(move || {
                std::thread::sleep(Duration::from_millis(30));
                s.push(q(3, Priority::Interactive, Some(key(10)), 1));
                drop(arriving);
            });
            assert_eq!(ids(s.next_work(4, Duration::from_secs(3600))), vec![2, 3]);
        });
        // A submit that ends without queueing (refused) ends the wait too.
        s.push(q(4, Priority::Interactive, Some(key(10)), 1));
        std::thread::scope(|sc| {
            let arriving = s.arrive();
            sc.spawn(move || {
                std::thread::sleep(Duration::from_millis(30));
                drop(arriving);
            });
            assert_eq!(ids(s.next_work(4, Duration::from_secs(3600))), vec![4]);
        });
    }
}
