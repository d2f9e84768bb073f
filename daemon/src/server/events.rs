//! Broadcasts from the worker and the service to the watch streams.
use ddim_proto::v1 as pb;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
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
}

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
        }
    }

    pub fn job(&self, u: JobUpdate) {
        let _ = self.jobs.send(u);
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
