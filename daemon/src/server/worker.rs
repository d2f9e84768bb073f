//! The worker: one `std::thread` that owns the ε-model (tch tensors are not
//! `Sync`) and runs what the [`Scheduler`] hands it.
//!
//! Sample, interpolate and single-S decode jobs run through one batched loop:
//! the rows of every job in the batch are concatenated along dim 0 with their
//! own [`SampleSeed`]s and stepped together with `sampler::step`; a job
//! cancelled mid-run has its rows dropped between two steps. Because noise is
//! drawn per (seed, index), a job's result does not depend on what it was
//! batched with. Encode, reconstruct and multi-S decode jobs run alone
//! through the engine's `invert` / `sample` / `reconstruct`.
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

use super::conversions::{
    import_preview_steps, import_rows, latent_id, method_from_pb, now_ms, reconstruct_steps,
    sampler_from_pb, spacing_from_pb, ModelMeta,
};
use super::error::{Result, ServerError};
use super::events::{Hub, JobUpdate};
use super::queue::{DecodeNow, Queued, Scheduler, Taken, Work};
use super::store::{
    JobRecord, JobState, LatentPng, LatentRecord, NewLatent, OriginRecord, Store, RECORD_VERSION,
};
use crate::engine::noise::{self, SampleSeed};
use crate::engine::{imageio, interp, sampler, Model, SamplerOptions, Spacing};

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub model_dir: PathBuf,
    pub device: Device,
    pub max_batch: u32,
    pub max_wait: Duration,
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
        let model = match Model::load(&cfg.model_dir, cfg.device) {
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
    let img = imageio::tensor_to_image(t);
    let img = if img.width() > 64 {
        img.thumbnail(64, 64)
    } else {
        img
    };
    pb::Image {
        width: img.width(),
        height: img.height(),
        png: imageio::png_bytes(&img),
    }
}

fn xt_values(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(
        t.to_device(Device::Cpu)
            .to_kind(Kind::Float)
            .contiguous()
            .reshape([-1]),
    )
    .unwrap_or_default()
}

/// Progress of one job: counts model calls, publishes events, and says
/// whether to go on.
struct Track {
    id: u64,
    cancel: Arc<AtomicBool>,
    step: u32,
    total: u32,
    t0: Instant,
}

/// Why a job stopped early.
enum Stop {
    Cancelled,
    Interrupted,
}

struct Worker {
    model: Model,
    meta: ModelMeta,
    store: Arc<Store>,
    sched: Arc<Scheduler>,
    hub: Arc<Hub>,
    cfg: WorkerConfig,
}

/// A job in the batched loop.
struct Member {
    rec: JobRecord,
    spec: pb::JobSpec,
    track: Track,
    /// The starting rows (x_T) and the current rows.
    x_start: Tensor,
    x: Tensor,
    seeds: Vec<SampleSeed>,
}

/// What a job produced.
struct Outcome {
    result: pb::JobResult,
    latents: Vec<NewLatent>,
}

impl Worker {
    fn run(self) {
        let _guard = tch::no_grad_guard();
        loop {
            match self.sched.next_work(self.cfg.max_batch, self.cfg.max_wait) {
                Work::Shutdown => break,
                Work::Decode(d) => self.decode_now(d),
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

    fn load_xt(&self, r: &LatentRecord) -> Result<Tensor> {
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

    fn latent(&self, id: &str, field: &str) -> Result<Arc<LatentRecord>> {
        super::conversions::usable_latent(&self.store, &self.meta, id, field)
    }

    /// Marks the taken jobs running; returns those that are to run.
    fn start(&self, taken: Vec<Taken>) -> Vec<(JobRecord, pb::JobSpec, Track)> {
        let mut out = vec![];
        for t in taken {
            let id = t.job.id;
            let started = (|| -> Result<Option<(JobRecord, pb::JobSpec)>> {
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
                self.store.move_job(&rec, JobState::Queued)?;
                Ok(Some((rec, spec)))
            })();
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
        if let Err(e) = self.store.flush() {
            error!("flush: {e}");
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
            let r = self.run_single(&rec, &spec, &mut track);
            self.settle(rec, r);
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
        self.hub.job(JobUpdate::Progress {
            job: tr.id,
            step: tr.step,
            total: tr.total,
            eta_seconds: eta,
            preview,
        });
        if tr.cancel.load(Ordering::SeqCst) {
            Err(Stop::Cancelled)
        } else if self.sched.is_shutting_down() {
            Err(Stop::Interrupted)
        } else {
            Ok(())
        }
    }

    /// Runs an engine loop with `tick` as its step callback.
    fn engine<T>(
        &self,
        tr: &mut Track,
        f: impl FnOnce(
            &mut dyn FnMut(&sampler::StepEvent) -> bool,
        ) -> std::result::Result<T, crate::engine::EngineError>,
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

    fn run_single(&self, rec: &JobRecord, spec: &pb::JobSpec, tr: &mut Track) -> Result<Outcome> {
        use pb::job_spec::Kind as K;
        let shape = self.meta.shape;
        let m = &self.model;
        match spec.kind.as_ref() {
            Some(K::Encode(e)) => {
                let steps = e.steps as usize;
                let spacing = spacing_from_pb(e.spacing, "encode.spacing")?;
                let preview_steps = if e.preview_steps == 0 {
                    steps
                } else {
                    e.preview_steps as usize
                };
                let rows = e
                    .images
                    .iter()
                    .enumerate()
                    .map(|(i, img)| {
                        imageio::decode_to_tensor(
                            &img.data,
                            shape,
                            &format!("encode.images[{i}].data"),
                        )
                    })
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                let x0 = Tensor::cat(&rows, 0);
                let xt = self.engine(tr, |cb| sampler::invert(m, &x0, steps, spacing, cb))?;
                let n = rows.len();
                let opts = SamplerOptions {
                    steps: preview_steps,
                    eta: 0.0,
                    spacing,
                    sigma_hat: false,
                };
                let seeds = noise::seeds(0, n);
                let dec = self.engine(tr, |cb| sampler::sample(m, &xt, &opts, &seeds, cb))?;
                let mut out = Outcome {
                    result: pb::JobResult::default(),
                    latents: vec![],
                };
                for (i, input) in e.images.iter().enumerate() {
                    let id = self.store.next_id()?;
                    let preview = image_pb(&dec.get(i as i64));
                    out.latents.push(NewLatent {
                        record: self.latent_record(
                            id,
                            rec.id,
                            input_name(&input.name, "image", id),
                            input.tags.clone(),
                            OriginRecord::Encoded {
                                filename: input.name.clone(),
                                has_source: true,
                            },
                            steps as u32,
                            spacing.as_str(),
                            preview_steps as u32,
                        ),
                        xt: xt_values(&xt.get(i as i64)),
                        source_png: Some(imageio::tensor_png(&x0.get(i as i64), 1)),
                        preview_png: preview.png.clone(),
                    });
                    out.result.latent_ids.push(latent_id(id));
                    out.result.images.push(preview);
                }
                Ok(out)
            }
            Some(K::Decode(d)) => {
                let r = self.latent(&d.latent_id, "decode.latent_id")?;
                let x = self.load_xt(&r)?;
                let spacing = spacing_from_pb(d.spacing, "decode.spacing")?;
                let seeds = [SampleSeed::new(d.seed, 0)];
                let mut out = Outcome {
                    result: pb::JobResult::default(),
                    latents: vec![],
                };
                for eta in d.eta_values() {
                    for &s in &d.steps {
                        let opts = SamplerOptions {
                            steps: s as usize,
                            eta: eta as f64,
                            spacing,
                            sigma_hat: false,
                        };
                        let img =
                            self.engine(tr, |cb| sampler::sample(m, &x, &opts, &seeds, cb))?;
                        out.result.decodes.push(pb::DecodeResult {
                            steps: s,
                            image: Some(image_pb(&img)),
                            eta,
                        });
                    }
                }
                Ok(out)
            }
            Some(K::Reconstruct(rc)) => {
                use pb::reconstruct_job::Input;
                let source = |id: &str, field: &str| -> Result<Tensor> {
                    let r = self.latent(id, field)?;
                    let png = self
                        .store
                        .latent_png(r.id, LatentPng::Source)?
                        .ok_or_else(|| {
                            ServerError::FailedPrecondition(format!(
                                "{field}: latent {id} has no source image"
                            ))
                        })?;
                    Ok(imageio::decode_to_tensor(&png, shape, "source image")?)
                };
                let x0 = match &rc.input {
                    Some(Input::LatentId(id)) => source(id, "reconstruct.latent_id")?,
                    Some(Input::Image(b)) => {
                        imageio::decode_to_tensor(b, shape, "reconstruct.image")?
                    }
                    Some(Input::Latents(list)) => {
                        let rows = list
                            .ids
                            .iter()
                            .enumerate()
                            .map(|(i, id)| source(id, &format!("reconstruct.latents.ids[{i}]")))
                            .collect::<Result<Vec<_>>>()?;
                        if rows.is_empty() {
                            return Err(ServerError::invalid(
                                "reconstruct.latents.ids",
                                "at least one id is required",
                            ));
                        }
                        Tensor::cat(&rows, 0)
                    }
                    None => {
                        return Err(ServerError::invalid(
                            "reconstruct.input",
                            "a latent_id, an image or latents is required",
                        ))
                    }
                };
                let spacing = spacing_from_pb(rc.spacing, "reconstruct.spacing")?;
                let mut out = Outcome {
                    result: pb::JobResult::default(),
                    latents: vec![],
                };
                out.result.original = Some(image_pb(&x0.get(0)));
                for s in reconstruct_steps(&rc.steps, self.meta.t) {
                    let (mse, rec_img) =
                        self.engine(tr, |cb| sampler::reconstruct(m, &x0, s, spacing, cb))?;
                    let e = ddim_proto::stats::error_stats(&mse);
                    out.result.reconstruction.push(pb::ReconstructionPoint {
                        steps: s as u32,
                        mse: e.mean,
                        image: Some(image_pb(&rec_img.get(0))),
                        images: mse.len() as u32,
                        mse_sem: e.sem,
                        image_mse: mse,
                    });
                }
                Ok(out)
            }
            Some(K::Import(im)) => {
                let preview_steps = import_preview_steps(im.preview_steps, self.meta.t)?;
                let opts = SamplerOptions {
                    steps: preview_steps,
                    eta: 0.0,
                    spacing: spacing_from_pb(im.spacing, "import.spacing")?,
                    sigma_hat: false,
                };
                // (input index, row within it, x_T values) for every latent.
                let mut rows = vec![];
                for (i, input) in im.latents.iter().enumerate() {
                    let field = format!("import.latents[{i}].npy");
                    let (n, values) = import_rows(&input.npy, &self.meta, &field)?;
                    let per = values.len() / n;
                    for (k, v) in values.chunks_exact(per).enumerate() {
                        rows.push((i, k, n, v.to_vec()));
                    }
                }
                let [c, h, w] = shape;
                let xt = Tensor::cat(
                    &rows
                        .iter()
                        .map(|r| Tensor::from_slice(&r.3).reshape([1, c, h, w]))
                        .collect::<Vec<_>>(),
                    0,
                )
                .to_device(m.device);
                let seeds = noise::seeds(0, rows.len());
                let dec = self.engine(tr, |cb| sampler::sample(m, &xt, &opts, &seeds, cb))?;
                let mut out = Outcome {
                    result: pb::JobResult::default(),
                    latents: vec![],
                };
                for (j, (i, k, n, values)) in rows.into_iter().enumerate() {
                    let input = &im.latents[i];
                    let id = self.store.next_id()?;
                    let base = input_name(&input.name, "imported", id);
                    let name = if n > 1 { format!("{base}-{k}") } else { base };
                    let preview = image_pb(&dec.get(j as i64));
                    out.latents.push(NewLatent {
                        record: self.latent_record(
                            id,
                            rec.id,
                            name,
                            input.tags.clone(),
                            OriginRecord::Imported {
                                filename: input.name.clone(),
                            },
                            0,
                            "",
                            preview_steps as u32,
                        ),
                        xt: values,
                        source_png: None,
                        preview_png: preview.png.clone(),
                    });
                    out.result.latent_ids.push(latent_id(id));
                    out.result.images.push(preview);
                }
                Ok(out)
            }
            Some(K::Sample(_) | K::Interpolate(_)) => Err(ServerError::Internal(format!(
                "{} jobs run batched",
                rec.kind.as_str()
            ))),
            None => Err(ServerError::invalid("spec", "empty job spec")),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn latent_record(
        &self,
        id: u64,
        job: u64,
        name: String,
        tags: Vec<String>,
        origin: OriginRecord,
        encode_steps: u32,
        encode_spacing: &str,
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
            encode_steps,
            encode_spacing: encode_spacing.into(),
            origin,
            preview_steps,
            job_id: job,
        }
    }

    /// The sampler options and starting rows of a batchable job.
    fn prepare(&self, spec: &pb::JobSpec) -> Result<(SamplerOptions, Tensor, Vec<SampleSeed>)> {
        use pb::job_spec::Kind as K;
        let dev = self.model.device;
        match spec.kind.as_ref() {
            Some(K::Sample(s)) => {
                let opts = sampler_from_pb(s.sampler.as_ref(), self.meta.t, "sample.sampler")?;
                let seeds = noise::seeds(s.seed, s.count as usize);
                Ok((
                    opts,
                    noise::initial_noise(&seeds, self.meta.shape, dev),
                    seeds,
                ))
            }
            Some(K::Decode(d)) => {
                let r = self.latent(&d.latent_id, "decode.latent_id")?;
                let spacing = spacing_from_pb(d.spacing, "decode.spacing")?;
                let steps = *d
                    .steps
                    .first()
                    .ok_or_else(|| ServerError::invalid("decode.steps", "empty"))?
                    as usize;
                let opts = SamplerOptions {
                    steps,
                    eta: d.eta_values()[0] as f64,
                    spacing,
                    sigma_hat: false,
                };
                Ok((opts, self.load_xt(&r)?, vec![SampleSeed::new(d.seed, 0)]))
            }
            Some(K::Interpolate(ip)) => {
                let a = self.load_xt(&*self.latent(&ip.a, "interpolate.a")?)?;
                let b = self.load_xt(&*self.latent(&ip.b, "interpolate.b")?)?;
                let method = method_from_pb(ip.method, "interpolate.method")?;
                let opts =
                    sampler_from_pb(ip.sampler.as_ref(), self.meta.t, "interpolate.sampler")?;
                let rows: Vec<Tensor> = frame_list(ip)
                    .into_iter()
                    .map(|(_, al)| interp::interpolate(&a, &b, al, method))
                    .collect();
                let seeds = noise::seeds(0, rows.len());
                Ok((opts, Tensor::cat(&rows, 0), seeds))
            }
            _ => Err(ServerError::Internal("not a batchable job".into())),
        }
    }

    fn run_batch(&self, jobs: Vec<(JobRecord, pb::JobSpec, Track)>) {
        let mut members: Vec<Member> = vec![];
        let mut opts: Option<SamplerOptions> = None;
        for (rec, spec, track) in jobs {
            match self.prepare(&spec) {
                Ok((o, x, seeds)) => {
                    opts.get_or_insert(o);
                    members.push(Member {
                        rec,
                        spec,
                        track,
                        x_start: x.shallow_clone(),
                        x,
                        seeds,
                    });
                }
                Err(e) => self.settle(rec, Err(e)),
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
            rows = members.iter().map(|m| m.seeds.len()).sum::<usize>(),
            "started"
        );
        let plan = sampler::plan(&opts, self.meta.t);
        for (k, &(t, prev)) in plan.iter().enumerate() {
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
                .flat_map(|m| m.seeds.iter().copied())
                .collect();
            let (xp, x0) = match sampler::step(&self.model, &x, t, prev, k, &opts, &seeds) {
                Ok(v) => v,
                Err(e) => {
                    for m in members.drain(..) {
                        self.settle(
                            m.rec,
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
                let n = m.seeds.len() as i64;
                m.x = xp.narrow(0, off, n);
                let x0m = x0.narrow(0, off, n);
                off += n;
                match self.tick(&mut m.track, &x0m) {
                    Ok(()) => keep.push(m),
                    Err(Stop::Cancelled) => self.settle_batched(m.rec, Err(ServerError::Cancelled)),
                    Err(Stop::Interrupted) => {
                        self.settle_batched(m.rec, Err(ServerError::Interrupted))
                    }
                }
            }
            members = keep;
        }
        for m in members {
            let r = sampler::check_finite(&m.x, "sample")
                .map_err(ServerError::from)
                .and_then(|_| self.finish_batched(&m));
            self.settle_batched(m.rec, r);
        }
    }

    fn finish_batched(&self, m: &Member) -> Result<Outcome> {
        use pb::job_spec::Kind as K;
        let mut out = Outcome {
            result: pb::JobResult::default(),
            latents: vec![],
        };
        match m.spec.kind.as_ref() {
            Some(K::Sample(s)) => {
                let steps = s.sampler.as_ref().map(|o| o.steps).unwrap_or(0);
                for i in 0..s.count {
                    let id = self.store.next_id()?;
                    let img = image_pb(&m.x.get(i as i64));
                    let name = if s.name_prefix.is_empty() {
                        format!("sample-{}-{i}", s.seed)
                    } else {
                        format!("{}{i}", s.name_prefix)
                    };
                    out.latents.push(NewLatent {
                        record: self.latent_record(
                            id,
                            m.rec.id,
                            name,
                            s.tags.clone(),
                            OriginRecord::Sampled {
                                seed: s.seed,
                                index: i,
                            },
                            0,
                            "",
                            steps,
                        ),
                        xt: xt_values(&m.x_start.get(i as i64)),
                        source_png: None,
                        preview_png: img.png.clone(),
                    });
                    out.result.latent_ids.push(latent_id(id));
                    out.result.images.push(img);
                }
            }
            Some(K::Decode(d)) => {
                out.result.decodes.push(pb::DecodeResult {
                    steps: d.steps[0],
                    image: Some(image_pb(&m.x)),
                    eta: d.eta_values()[0],
                });
            }
            Some(K::Interpolate(ip)) => {
                let steps = ip.sampler.as_ref().map(|o| o.steps).unwrap_or(0);
                let (a, b) = (
                    super::conversions::parse_latent_id(&ip.a, "a")?,
                    super::conversions::parse_latent_id(&ip.b, "b")?,
                );
                let method = method_from_pb(ip.method, "interpolate.method")?;
                for (row, (k, alpha)) in frame_list(ip).into_iter().enumerate() {
                    let img = image_pb(&m.x.get(row as i64));
                    let mut frame = pb::Frame {
                        index: k as u32,
                        alpha: alpha as f32,
                        image: Some(img.clone()),
                        latent_id: String::new(),
                    };
                    if ip.save_frames.contains(&(k as u32)) {
                        let id = self.store.next_id()?;
                        let origin = OriginRecord::Interpolated {
                            a,
                            b,
                            alpha: alpha as f32,
                            method: method.as_str().into(),
                        };
                        out.latents.push(NewLatent {
                            record: self.latent_record(
                                id,
                                m.rec.id,
                                format!("interp-{a}-{b}-{k}"),
                                vec![],
                                origin,
                                0,
                                "",
                                steps,
                            ),
                            xt: xt_values(&m.x_start.get(row as i64)),
                            source_png: None,
                            preview_png: img.png,
                        });
                        frame.latent_id = latent_id(id);
                        out.result.latent_ids.push(latent_id(id));
                    }
                    out.result.frames.push(frame);
                }
            }
            _ => return Err(ServerError::Internal("not a batchable job".into())),
        }
        Ok(out)
    }

    /// Records how a job ended and tells the watchers.
    /// [`Self::settle`] inside a span naming the job (batches span several).
    fn settle_batched(&self, rec: JobRecord, r: Result<Outcome>) {
        let span =
            info_span!("job", id = %super::conversions::job_id(rec.id), kind = rec.kind.as_str());
        let _e = span.enter();
        self.settle(rec, r);
    }

    fn settle(&self, mut rec: JobRecord, r: Result<Outcome>) {
        let id = rec.id;
        let images = rec.images;
        let written = match r {
            Ok(out) => {
                rec.state = JobState::Done;
                rec.finished_ms = now_ms();
                rec.error.clear();
                rec.produced = out.latents.iter().map(|l| l.record.id).collect();
                let bytes = out.result.encode_to_vec();
                match self.store.finish_job(&rec, &bytes, &out.latents) {
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
                    Err(e) => self.fail(rec, format!("cannot store the result: {e}")),
                }
            }
            Err(ServerError::Cancelled) => {
                rec.state = JobState::Cancelled;
                rec.finished_ms = now_ms();
                info!(job = id, "cancelled");
                let w = self.store.move_job(&rec, JobState::Running);
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
                self.sched.lock().push(Queued {
                    id,
                    priority: rec.priority,
                    batch: rec.batch,
                    rows: rec.rows,
                    created_ms: rec.created_ms,
                });
                w
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
        self.store.move_job(&rec, JobState::Running)
    }
}

/// The frames an interpolation decodes, as (index, α): all of them, or only the
/// ones to save when `only_saved_frames` is set.
fn frame_list(ip: &pb::InterpolateJob) -> Vec<(usize, f64)> {
    interp::alphas(ip.frames as usize)
        .into_iter()
        .enumerate()
        .filter(|(k, _)| !ip.only_saved_frames || ip.save_frames.contains(&(*k as u32)))
        .collect()
}

fn input_name(name: &str, what: &str, id: u64) -> String {
    if name.is_empty() {
        format!("{what}-{id}")
    } else {
        name.to_string()
    }
}
