//! The worker: one `std::thread` that owns the ε-model (tch tensors are not
//! `Sync`) and runs what the [`Scheduler`] hands it. What a job *does* lives
//! in its kind's module under [`super::jobs`]; this file is the loop that
//! claims, batches, reports progress and settles.
//!
//! Batchable jobs (sample, interpolate, single-S decode, …) run through one
//! batched loop: the rows of every job in the batch ([`Rows`]) are
//! concatenated along dim 0 with their own [`SampleSeed`]s and stepped
//! together with `sampler::solver_step` (each member keeps its rows' previous
//! x̂0 for the multistep solver); a job cancelled mid-run has its rows
//! dropped between two steps. Because noise is drawn per (seed, index), a
//! job's result does not depend on what it was batched with. Other jobs run
//! alone ([`super::jobs::JobKindSpec::run`]), ticking through
//! [`Worker::engine`].
//!
//! A job's latents and result are written in one transaction with its move
//! to DONE, so a cancelled, failed or interrupted job leaves nothing behind.
use ddim_proto::v1 as pb;
use prost::Message;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tch::{Device, Kind, Tensor};
use tracing::{error, info, info_span, warn};

use super::conversions::{latent_id, now_ms, ModelMeta};
use super::error::{Result, ServerError};
use super::events::{Hub, JobUpdate};
use super::jobs::{self, Outcome, Rows};
use super::queue::{DecodeNow, Queued, Scheduler, Taken, Work};
use super::store::{JobRecord, JobState, LatentRecord, OriginRecord, Store, RECORD_VERSION};
use crate::engine::noise::SampleSeed;
use crate::engine::{imageio, sampler, Model, SamplerOptions, Spacing};

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub model_dir: PathBuf,
    pub device: Device,
    pub max_batch: u32,
    pub max_wait: Duration,
    /// `--compiled`: AOTInductor packages for the UNet.
    pub compiled: crate::compile::CompiledArgs,
    /// This daemon's name in a job's `ran_by`: `HOST:PID` on a PostgreSQL
    /// store (as `daemons.id`), the listen address on sled.
    pub name: String,
}

/// Starts the worker thread: it loads the model, reports its metadata (or the
/// load error) on `ready`, then serves work until shutdown.
pub fn spawn(
    cfg: WorkerConfig,
    store: Arc<Store>,
    sched: Arc<Scheduler>,
    hub: Arc<Hub>,
    ready: tokio::sync::oneshot::Sender<Result<ModelMeta>>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("ddimd-worker".into()).spawn(move || {
        let t0 = Instant::now();
        let model = match Model::load(&cfg.model_dir, cfg.device)
            .and_then(|mut m| cfg.compiled.apply(&mut m).map(|()| m))
        {
            Ok(m) => m,
            Err(e) => {
                let _ = ready.send(Err(ServerError::Config(format!("--model {}: {e}", cfg.model_dir.display()))));
                return;
            }
        };
        let meta = model_meta(&model);
        info!(fingerprint = %meta.fingerprint, device = %meta.info.device, secs = t0.elapsed().as_secs_f64(), "model loaded");
        let _ = ready.send(Ok(meta.clone()));
        let w = Worker { model, meta, store, sched, hub, cfg };
        w.run();
    })
}

pub fn model_meta(m: &Model) -> ModelMeta {
    let shape = m.sample_shape();
    ModelMeta {
        shape,
        t: m.num_train_timesteps(),
        fingerprint: m.fingerprint.clone(),
        info: pb::ModelInfo {
            config_json: m.config.to_diffusers_json().to_string(),
            num_train_timesteps: m.num_train_timesteps() as u32,
            beta_schedule: m.schedule.kind.as_str().into(),
            prediction_type: m.schedule.prediction.as_str().into(),
            device: m.device_name(),
            fingerprint: m.fingerprint.clone(),
            parameters: m.parameter_count(),
            sample_shape: shape.iter().map(|d| *d as u32).collect(),
            path: m.path.display().to_string(),
        },
    }
}

/// A PNG message of one sample ([C, H, W] or [1, C, H, W]).
pub fn image_pb(t: &Tensor) -> pb::Image {
    let img = imageio::tensor_to_image(t);
    pb::Image {
        width: img.width(),
        height: img.height(),
        png: imageio::png_bytes(&img),
    }
}

/// A preview: at most 64 px wide.
fn preview_pb(t: &Tensor) -> pb::Image {
    preview_at_most(t, 64)
}

/// A preview at most `side` px wide and high.
fn preview_at_most(t: &Tensor, side: u32) -> pb::Image {
    let img = imageio::tensor_to_image(t);
    let img = if img.width() > side || img.height() > side {
        img.thumbnail(side, side)
    } else {
        img
    };
    pb::Image {
        width: img.width(),
        height: img.height(),
        png: imageio::png_bytes(&img),
    }
}

pub fn xt_values(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(
        t.to_device(Device::Cpu)
            .to_kind(Kind::Float)
            .contiguous()
            .reshape([-1]),
    )
    .unwrap_or_default()
}

/// How a latent's x_T was encoded (the η = 0 inversion): S, spacing and solver;
/// [`Encoding::NONE`] for latents not encoded from an image (sampled, mixed, …).
#[derive(Debug, Clone, Copy, Default)]
pub struct Encoding {
    pub steps: u32,
    pub spacing: Option<Spacing>,
    pub solver: Option<crate::engine::Solver>,
}

impl Encoding {
    pub const NONE: Encoding = Encoding {
        steps: 0,
        spacing: None,
        solver: None,
    };

    pub fn of(steps: usize, spacing: Spacing, solver: crate::engine::Solver) -> Encoding {
        Encoding {
            steps: steps as u32,
            spacing: Some(spacing),
            solver: Some(solver),
        }
    }
}

/// Progress of one job: counts model calls, publishes events, and says
/// whether to go on.
pub struct Track {
    id: u64,
    cancel: Arc<AtomicBool>,
    step: u32,
    total: u32,
    t0: Instant,
    attempt: u32,
    /// When its progress last went to the daemons sharing the store.
    shared_at: Option<Instant>,
}

/// How often a job's progress goes to the daemons sharing a PostgreSQL store
/// (at most), with an x̂0 preview each time.
pub const SHARE_EVERY: Duration = Duration::from_millis(250);

/// A job's progress note for the other daemons: with its x̂0 preview (`local`,
/// the one made for this daemon's watchers, else one made now) at 64 px, else at
/// 40 px (a 40×40 RGB PNG always fits a `NOTIFY`), else without.
fn shared_note(me: &str, tr: &Track, eta: f64, x0: &Tensor, local: Option<&pb::Image>) -> String {
    use super::pg::{progress_note, PreviewNote, ProgressNote};
    let note = |preview: Option<&pb::Image>| {
        let p = ProgressNote {
            step: tr.step,
            total: tr.total,
            eta: if eta.is_finite() { eta } else { 0.0 },
            preview: preview.map(PreviewNote::of),
        };
        progress_note(me, tr.id, tr.attempt, p)
    };
    let first = local.cloned().unwrap_or_else(|| preview_pb(&x0.get(0)));
    note(Some(&first))
        .or_else(|| note(Some(&preview_at_most(&x0.get(0), 40))))
        .or_else(|| note(None))
        .expect("a note without a preview fits")
}

/// Why a job stopped early.
enum Stop {
    Cancelled,
    Interrupted,
}

pub struct Worker {
    pub model: Model,
    pub meta: ModelMeta,
    pub store: Arc<Store>,
    sched: Arc<Scheduler>,
    hub: Arc<Hub>,
    cfg: WorkerConfig,
}

/// A job in the batched loop.
struct Member {
    rec: JobRecord,
    spec: pb::JobSpec,
    track: Track,
    /// The starting rows and the current rows.
    rows: Rows,
    x: Tensor,
    /// The rows' x̂0 of the previous step (the multistep solver's history).
    x0: Option<Tensor>,
}

impl Worker {
    fn run(self) {
        let _guard = tch::no_grad_guard();
        loop {
            match self.sched.next_work(self.cfg.max_batch, self.cfg.max_wait) {
                Work::Shutdown => break,
                Work::Decode(d) => self.decode_now(d),
                Work::Preview(p) => {
                    let r = jobs::job(&p.spec).and_then(|j| j.preview(&self, p.steps));
                    let _ = p
                        .reply
                        .send(r.map(|imgs| imgs.iter().map(image_pb).collect()));
                }
                Work::Jobs(jobs) => self.run_jobs(jobs),
            }
        }
        info!("worker stopped");
    }

    fn decode_now(&self, d: DecodeNow) {
        let r = (|| -> Result<Vec<u8>> {
            let x = self.load_xt(&d.latent)?;
            let opts = SamplerOptions {
                steps: d.steps,
                eta: 0.0,
                spacing: Spacing::Uniform,
                sigma_hat: false,
                solver: Default::default(),
            };
            let out = sampler::sample(
                &self.model,
                &x,
                &opts,
                &[SampleSeed::new(0, 0)],
                &mut |_| true,
            )?;
            Ok(imageio::tensor_png(&out, 1))
        })();
        let _ = d.reply.send(r);
    }

    pub fn load_xt(&self, r: &LatentRecord) -> Result<Tensor> {
        let v = self.store.latent_xt(r.id)?;
        let [c, h, w] = self.meta.shape;
        if v.len() as i64 != c * h * w {
            return Err(ServerError::FailedPrecondition(format!(
                "latent {} holds {} values, the model expects {c}×{h}×{w}",
                latent_id(r.id),
                v.len()
            )));
        }
        Ok(Tensor::from_slice(&v)
            .reshape([1, c, h, w])
            .to_device(self.model.device))
    }

    pub fn latent(&self, id: &str, field: &str) -> Result<Arc<LatentRecord>> {
        super::conversions::usable_latent(&self.store, &self.meta, id, field)
    }

    /// Marks the taken jobs running; returns those that are to run.
    fn start(&self, taken: Vec<Taken>) -> Vec<(JobRecord, pb::JobSpec, Track)> {
        let mut out = vec![];
        for t in taken {
            let id = t.job.id;
            // On PostgreSQL, a database restart does not drop a claimed job: its
            // start is tried again once the database answers.
            let started = self.until_answered(
                "the start",
                id,
                || -> Result<Option<(JobRecord, pb::JobSpec)>> {
                    let Some(mut rec) = self.store.get_job(id)? else {
                        return Ok(None);
                    };
                    if rec.state != JobState::Queued {
                        return Ok(None);
                    }
                    let spec_bytes = self
                        .store
                        .job_spec(id)?
                        .ok_or_else(|| ServerError::Corrupt(format!("job {id}: no spec")))?;
                    let spec = pb::JobSpec::decode(spec_bytes.as_slice())
                        .map_err(|e| ServerError::Corrupt(format!("job {id} spec: {e}")))?;
                    if t.cancel.load(Ordering::SeqCst) {
                        rec.state = JobState::Cancelled;
                        rec.finished_ms = now_ms();
                        self.store.move_job(&rec, JobState::Queued)?;
                        self.sched.lock().counters.cancelled += 1;
                        return Ok(None);
                    }
                    rec.state = JobState::Running;
                    rec.attempts += 1;
                    rec.started_ms = now_ms();
                    rec.ran_by = self.cfg.name.clone();
                    self.store.move_job(&rec, JobState::Queued)?;
                    Ok(Some((rec, spec)))
                },
            );
            match started {
                Ok(Some((rec, spec))) => {
                    {
                        let mut st = self.sched.lock();
                        st.counters.wait_ms_sum += (rec.started_ms - rec.created_ms).max(0) as f64;
                        st.counters.wait_n += 1;
                        if let Some(r) = st.running.get_mut(&id) {
                            r.total = rec.total_steps;
                        }
                    }
                    self.hub.job(JobUpdate::Started {
                        job: id,
                        attempt: rec.attempts,
                    });
                    let track = Track {
                        id,
                        cancel: t.cancel,
                        step: 0,
                        total: rec.total_steps,
                        t0: Instant::now(),
                        attempt: rec.attempts,
                        shared_at: None,
                    };
                    out.push((rec, spec, track));
                }
                Ok(None) => {
                    self.sched.lock().running.remove(&id);
                    self.hub.job(JobUpdate::Finished { job: id });
                }
                Err(e) => {
                    error!(job = id, "cannot start: {e}");
                    self.sched.lock().running.remove(&id);
                    self.hub.job(JobUpdate::Finished { job: id });
                }
            }
        }
        // The running state (and the attempt it counts) is made durable beside the
        // model calls instead of before them: nothing is acknowledged on it, it is on
        // disk within one fsync of the start (so a job that kills the daemon still
        // uses up its attempts), and the result's own flush covers it in any case.
        let store = self.store.clone();
        let flushed = std::thread::Builder::new()
            .name("ddimd-start-flush".into())
            .spawn(move || {
                if let Err(e) = store.flush() {
                    error!("flush: {e}");
                }
            });
        if flushed.is_err() {
            if let Err(e) = self.store.flush() {
                error!("flush: {e}");
            }
        }
        self.hub.job(JobUpdate::Queue);
        out
    }

    fn run_jobs(&self, taken: Vec<Taken>) {
        let jobs = self.start(taken);
        if jobs.is_empty() {
            return;
        }
        if jobs[0].0.batch.is_some() {
            self.run_batch(jobs);
            return;
        }
        for (rec, spec, mut track) in jobs {
            let span = info_span!("job", id = %super::conversions::job_id(rec.id), kind = rec.kind.as_str());
            let _e = span.enter();
            info!(attempt = rec.attempts, "started");
            let r = jobs::job(&spec).and_then(|j| j.run(self, &rec, &mut track));
            self.settle(rec, track.step, r);
        }
    }

    /// Counts one model call of `tr`'s job; `x0` holds its rows of x̂0.
    fn tick(&self, tr: &mut Track, x0: &Tensor) -> std::result::Result<(), Stop> {
        tr.step += 1;
        let elapsed = tr.t0.elapsed().as_secs_f64();
        let eta = elapsed / tr.step as f64 * tr.total.saturating_sub(tr.step) as f64;
        if let Some(r) = self.sched.lock().running.get_mut(&tr.id) {
            r.step = tr.step;
            r.total = tr.total;
        }
        let preview = self
            .hub
            .preview_due(tr.id, tr.step)
            .then(|| Arc::new(preview_pb(&x0.get(0))));
        if let Some(pg) = self.store.pg() {
            if self.hub.shared.is_open() && tr.shared_at.is_none_or(|t| t.elapsed() >= SHARE_EVERY)
            {
                tr.shared_at = Some(Instant::now());
                let note = shared_note(&pg.daemon, tr, eta, x0, preview.as_deref());
                self.hub.shared.put(tr.id, note);
            }
        }
        self.hub.job(JobUpdate::Progress {
            job: tr.id,
            step: tr.step,
            total: tr.total,
            eta_seconds: eta,
            preview,
            relayed: false,
        });
        if tr.cancel.load(Ordering::SeqCst) {
            Err(Stop::Cancelled)
        } else if self.sched.is_shutting_down() {
            Err(Stop::Interrupted)
        } else {
            Ok(())
        }
    }

    /// Runs an engine loop with [`Self::tick`] as its step callback.
    pub fn engine<T, E: Into<ServerError>>(
        &self,
        tr: &mut Track,
        f: impl FnOnce(&mut dyn FnMut(&sampler::StepEvent) -> bool) -> std::result::Result<T, E>,
    ) -> Result<T> {
        let mut stop = None;
        let r = f(
            &mut |ev: &sampler::StepEvent| match self.tick(tr, ev.x0_hat) {
                Ok(()) => true,
                Err(s) => {
                    stop = Some(s);
                    false
                }
            },
        );
        match (r, stop) {
            (Ok(v), _) => Ok(v),
            (Err(_), Some(Stop::Cancelled)) => Err(ServerError::Cancelled),
            (Err(_), Some(Stop::Interrupted)) => Err(ServerError::Interrupted),
            (Err(e), None) => Err(e.into()),
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub fn latent_record(
        &self,
        id: u64,
        job: u64,
        name: String,
        tags: Vec<String>,
        origin: OriginRecord,
        enc: Encoding,
        preview_steps: u32,
    ) -> LatentRecord {
        LatentRecord {
            v: RECORD_VERSION,
            id,
            name,
            tags,
            created_ms: now_ms(),
            shape: self.meta.shape.map(|d| d as u32),
            fingerprint: self.meta.fingerprint.clone(),
            encode_steps: enc.steps,
            encode_spacing: enc
                .spacing
                .map(|s| s.as_str().to_string())
                .unwrap_or_default(),
            encode_solver: enc
                .solver
                .map(|s| s.as_str().to_string())
                .unwrap_or_default(),
            origin,
            preview_steps,
            job_id: job,
        }
    }

    fn run_batch(&self, jobs: Vec<(JobRecord, pb::JobSpec, Track)>) {
        let mut members: Vec<Member> = vec![];
        let mut opts: Option<SamplerOptions> = None;
        for (rec, spec, track) in jobs {
            match jobs::job(&spec).and_then(|j| j.rows(self)) {
                Ok(rows) => {
                    opts.get_or_insert(rows.opts);
                    members.push(Member {
                        rec,
                        spec,
                        track,
                        x: rows.x.shallow_clone(),
                        x0: None,
                        rows,
                    });
                }
                Err(e) => self.settle(rec, 0, Err(e)),
            }
        }
        let Some(opts) = opts else { return };
        let ids: Vec<String> = members
            .iter()
            .map(|m| super::conversions::job_id(m.rec.id))
            .collect();
        let span = info_span!("batch", jobs = %ids.join(","), steps = opts.steps);
        let _e = span.enter();
        info!(
            rows = members.iter().map(|m| m.rows.seeds.len()).sum::<usize>(),
            "started"
        );
        let plan = sampler::plan(&opts, self.meta.t);
        for k in 0..plan.len() {
            if members.is_empty() {
                return;
            }
            let x = Tensor::cat(
                &members
                    .iter()
                    .map(|m| m.x.shallow_clone())
                    .collect::<Vec<_>>(),
                0,
            );
            let seeds: Vec<SampleSeed> = members
                .iter()
                .flat_map(|m| m.rows.seeds.iter().copied())
                .collect();
            // Every member has its history from step 1 on (members only leave).
            let hist = (k > 0).then(|| {
                Tensor::cat(
                    &members
                        .iter()
                        .filter_map(|m| m.x0.as_ref().map(|t| t.shallow_clone()))
                        .collect::<Vec<_>>(),
                    0,
                )
            });
            let r = sampler::solver_step(&self.model, &x, &plan, k, &opts, &seeds, hist.as_ref());
            let (xp, x0) = match r {
                Ok(v) => v,
                Err(e) => {
                    for m in members.drain(..) {
                        self.settle(
                            m.rec,
                            m.track.step,
                            Err(ServerError::Engine(crate::engine::EngineError::Torch(
                                e.to_string(),
                            ))),
                        );
                    }
                    return;
                }
            };
            let mut off = 0i64;
            let mut keep = vec![];
            for mut m in members.drain(..) {
                let n = m.rows.seeds.len() as i64;
                m.x = xp.narrow(0, off, n);
                let x0m = x0.narrow(0, off, n);
                m.x0 = Some(x0m.shallow_clone());
                off += n;
                match self.tick(&mut m.track, &x0m) {
                    Ok(()) => keep.push(m),
                    Err(Stop::Cancelled) => {
                        self.settle_batched(m.rec, m.track.step, Err(ServerError::Cancelled))
                    }
                    Err(Stop::Interrupted) => {
                        self.settle_batched(m.rec, m.track.step, Err(ServerError::Interrupted))
                    }
                }
            }
            members = keep;
        }
        for m in members {
            let r = sampler::check_finite(&m.x, "sample")
                .map_err(ServerError::from)
                .and_then(|_| jobs::job(&m.spec)?.finish(self, &m.rec, &m.rows, &m.x));
            self.settle_batched(m.rec, m.track.step, r);
        }
    }

    /// Records how a job ended and tells the watchers.
    /// [`Self::settle`] inside a span naming the job (batches span several).
    fn settle_batched(&self, rec: JobRecord, step: u32, r: Result<Outcome>) {
        let span =
            info_span!("job", id = %super::conversions::job_id(rec.id), kind = rec.kind.as_str());
        let _e = span.enter();
        self.settle(rec, step, r);
    }

    /// `step`: the model calls the job made before it ended, kept for a job
    /// that was cancelled or failed ("stopped at step 60/400").
    fn settle(&self, mut rec: JobRecord, step: u32, r: Result<Outcome>) {
        let id = rec.id;
        // The other daemons' watchers hear of the last steps before the end.
        self.hub.shared.flush(Duration::from_secs(2));
        rec.stopped_at = step;
        let images = rec.images;
        let written = match r {
            Ok(out) => {
                rec.state = JobState::Done;
                rec.finished_ms = now_ms();
                rec.error.clear();
                rec.produced = out.latents.iter().map(|l| l.record.id).collect();
                let bytes = out.result.encode_to_vec();
                // Held in memory while the database is away (docs/scale-out.md).
                match self.until_answered("the end", id, || {
                    self.store.finish_job(&rec, &bytes, &out.latents)
                }) {
                    Ok(()) => {
                        info!(job = id, latents = out.latents.len(), "done");
                        for l in &out.latents {
                            self.hub.library(
                                pb::library_event::Kind::Added,
                                latent_id(l.record.id),
                                Some(super::conversions::latent_to_pb(&l.record)),
                            );
                        }
                        let mut st = self.sched.lock();
                        st.counters.done += 1;
                        st.counters.recent.push_back((Instant::now(), images));
                        Ok(())
                    }
                    Err(e @ ServerError::Unavailable(_)) => {
                        // Only when stopping with the database away: the job stays
                        // running under its lease, which runs out; then it runs again.
                        warn!(job = id, "the result is not written (the daemon stops while the database is away): the job runs again once its lease runs out");
                        Err(e)
                    }
                    Err(e) => self.fail(rec, format!("cannot store the result: {e}")),
                }
            }
            Err(ServerError::Cancelled) => {
                rec.state = JobState::Cancelled;
                rec.finished_ms = now_ms();
                info!(job = id, "cancelled");
                let w = self.until_answered("the end", id, || {
                    self.store.move_job(&rec, JobState::Running)
                });
                self.sched.lock().counters.cancelled += 1;
                w
            }
            Err(ServerError::Interrupted) => {
                // Back to the queue; a graceful stop does not use up an attempt.
                rec.state = JobState::Queued;
                rec.attempts = rec.attempts.saturating_sub(1);
                rec.started_ms = 0;
                info!(job = id, "interrupted by shutdown, back in the queue");
                let w = self.store.move_job(&rec, JobState::Running);
                self.sched.lock().push(Queued::of(&rec));
                w
            }
            Err(ServerError::Unavailable(e)) if self.store.pg().is_some() => {
                // The database went away under the job (it read a latent): back in
                // the queue once it answers, without using up an attempt.
                rec.state = JobState::Queued;
                rec.attempts = rec.attempts.saturating_sub(1);
                rec.started_ms = 0;
                warn!(
                    job = id,
                    "stopped, the database is away ({e}): back in the queue once it answers"
                );
                self.until_answered("the requeue", id, || {
                    self.store.move_job(&rec, JobState::Running)
                })
            }
            Err(e) => {
                warn!(job = id, "failed: {e}");
                self.fail(rec, e.to_string())
            }
        };
        if let Err(e) = written.and_then(|_| self.store.flush()) {
            error!(job = id, "cannot record the end of the job: {e}");
        }
        self.sched.lock().running.remove(&id);
        self.hub.job(JobUpdate::Finished { job: id });
    }

    fn fail(&self, mut rec: JobRecord, reason: String) -> Result<()> {
        rec.state = JobState::Failed;
        rec.finished_ms = now_ms();
        rec.error = reason;
        self.sched.lock().counters.failed += 1;
        let id = rec.id;
        self.until_answered("the end", id, || {
            self.store.move_job(&rec, JobState::Running)
        })
    }

    /// A write of a job's start or end: on PostgreSQL, tried again while the
    /// database is away, until it answers or the daemon stops
    /// ([`super::fleet::until_answered`]).
    fn until_answered<T>(&self, what: &str, job: u64, op: impl FnMut() -> Result<T>) -> Result<T> {
        super::fleet::until_answered(
            &self.store,
            &|| format!("{what} of {}", super::conversions::job_id(job)),
            &|| self.sched.is_shutting_down(),
            op,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::pg::{Note, NOTIFY_MAX, PROGRESS};

    fn track(step: u32) -> Track {
        Track {
            id: 9,
            cancel: Arc::new(AtomicBool::new(false)),
            step,
            total: 50,
            t0: Instant::now(),
            attempt: 2,
            shared_at: None,
        }
    }

    /// A progress note for the other daemons always fits a NOTIFY: a small model's
    /// preview as the watchers here get it, a 64-px RGB one of noise (a PNG that
    /// does not compress) shrunk to 40 px.
    #[test]
    fn progress_notes_fit_a_notify_with_a_preview() {
        let read = |s: &str| -> Note { serde_json::from_str(s).expect("a note") };
        let small = Tensor::rand([1, 1, 32, 32], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
        let n = read(&shared_note("h:1", &track(3), 1.5, &small, None));
        assert_eq!((n.id, n.state.as_str(), n.attempt), (9, PROGRESS, 2));
        let p = n.progress.expect("progress");
        assert_eq!((p.step, p.total, p.eta), (3, 50, 1.5));
        let img = p.preview.expect("a preview").image().expect("base64");
        assert_eq!((img.width, img.height), (32, 32));
        let png = image::load_from_memory(&img.png).expect("a PNG");
        assert_eq!(png.width(), 32);

        let big = Tensor::rand([1, 3, 64, 64], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
        assert!(
            preview_pb(&big.get(0)).png.len() * 4 / 3 > NOTIFY_MAX,
            "noise does not fit at 64 px"
        );
        let s = shared_note("h:1", &track(4), f64::INFINITY, &big, None);
        assert!(s.len() <= NOTIFY_MAX, "{}", s.len());
        let p = read(&s).progress.expect("progress");
        assert_eq!(p.eta, 0.0, "an unknown ETA is 0");
        let img = p.preview.expect("a preview at 40 px").image().unwrap();
        assert_eq!((img.width, img.height), (40, 40));
        assert!(image::load_from_memory(&img.png).is_ok());
    }
}
