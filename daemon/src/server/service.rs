//! The `ddim.v1.Ddim` service: thin methods that validate, delegate to the
//! store, the queue or the worker, and convert back. sled calls run on the
//! blocking pool; nothing here touches the model.
use ddim_proto::v1 as pb;
use ddim_proto::v1::ddim_server::Ddim;
use prost::Message;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::conversions::{
    check_name, check_steps, job_id, job_to_pb, latent_id, latent_to_pb, now_ms, order_from_pb,
    parse_job_id, parse_latent_id, priority_from_pb, state_from_pb, usable_latent, with_lineage,
    ModelMeta,
};
use super::error::{Result, ServerError};
use super::events::{Hub, JobUpdate};
use super::jobs::{strip_images, validate_spec, DEFAULT_PREVIEW_STEPS};
use super::queue::{DecodeNow, PreviewNow, Queued, Scheduler};
use super::store::{
    Cursor, Inserted, JobKind, JobRecord, JobState, LatentFilter, LatentPng, SortKey, Store,
    RECORD_VERSION,
};

/// How long `CancelJob` waits for a running job to stop.
const CANCEL_WAIT: Duration = Duration::from_secs(30);

pub struct Shared {
    pub store: Arc<Store>,
    pub sched: Arc<Scheduler>,
    pub hub: Arc<Hub>,
    pub meta: OnceLock<ModelMeta>,
    pub max_batch: u32,
    pub max_queue: u32,
}

#[derive(Clone)]
pub struct DdimService {
    pub shared: Arc<Shared>,
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await?
}

enum Lookup {
    Existing(JobRecord),
    New(super::jobs::SpecInfo, Option<pb::JobSpec>),
}

impl DdimService {
    fn meta(&self) -> Result<&ModelMeta> {
        self.shared.meta.get().ok_or_else(|| {
            ServerError::Unavailable(
                "the model is still loading; retry shortly (health reports SERVING when ready)"
                    .into(),
            )
        })
    }

    fn store(&self) -> Arc<Store> {
        self.shared.store.clone()
    }

    async fn flush(&self) -> Result<()> {
        let store = self.store();
        blocking(move || store.flush()).await
    }

    /// Validates, persists and queues a job; returns it once it is on disk.
    pub async fn submit(&self, req: pb::SubmitJobRequest) -> Result<pb::Job> {
        // While this submit runs, a batchable job the worker has just taken waits
        // (up to --max-wait-ms) for it to join; ended as soon as the job is queued.
        let arriving = self.shared.sched.arrive();
        {
            // A full disk (or one below --min-free-mb) refuses before anything is
            // written; once there is room again after sled hit ENOSPC, it is reopened.
            let store = self.store();
            blocking(move || store.check_space()).await?;
        }
        let pb::SubmitJobRequest {
            spec,
            priority,
            idempotency_key,
        } = req;
        let meta = self.meta()?.clone();
        let priority = priority_from_pb(priority)?;
        if idempotency_key.len() > 256 {
            return Err(ServerError::invalid("idempotency_key", "at most 256 bytes"));
        }
        let store = self.store();
        let key = idempotency_key.clone();
        let lookup = blocking(move || {
            if !key.is_empty() {
                if let Some(j) = store.job_by_key(&key)? {
                    return Ok(Lookup::Existing(j));
                }
            }
            let info = validate_spec(spec.as_ref(), &meta, &store)?;
            Ok(Lookup::New(info, spec))
        })
        .await?;
        let (info, spec) = match lookup {
            Lookup::Existing(j) => return self.job_message(j, false).await,
            Lookup::New(info, spec) => (info, spec.unwrap_or_default()),
        };
        self.shared.sched.lock().reserve()?;
        // On a shared store --max-queue bounds the database's queue, every
        // daemon's jobs: PgStore::insert_job checks it under its submit lock.
        let store = self.store();
        let inserted = blocking(move || {
            let rec = JobRecord {
                v: RECORD_VERSION,
                id: store.next_id()?,
                kind: info.kind,
                state: JobState::Queued,
                priority,
                created_ms: now_ms(),
                started_ms: 0,
                finished_ms: 0,
                attempts: 0,
                error: String::new(),
                total_steps: info.total_steps,
                reads: info.reads,
                produced: vec![],
                idempotency_key,
                batch: info.batch,
                rows: info.rows,
                images: info.images,
                stopped_at: 0,
                ran_by: String::new(),
            };
            let r = store.insert_job(&rec, &spec.encode_to_vec())?;
            Ok((r, spec))
        })
        .await;
        let (inserted, spec) = match inserted {
            Ok(v) => v,
            Err(e) => {
                self.shared.sched.lock().unreserve();
                return Err(e);
            }
        };
        let rec = match inserted {
            Inserted::Existing(j) => {
                self.shared.sched.lock().unreserve();
                return self.job_message(j, false).await;
            }
            Inserted::New(rec) => rec,
        };
        let flushed = self.flush().await;
        if let Err(e @ ServerError::DiskFull(_)) = flushed {
            // Not on disk, so not acknowledged and not queued: sled is reopened from
            // what is on disk once there is room (the record goes with it).
            self.shared.sched.lock().unreserve();
            return Err(e);
        }
        if self.shared.store.pg().is_some() {
            // A shared store: the job waits in the database for whichever daemon
            // claims it first (fleet.rs).
            self.shared.sched.lock().unreserve();
        } else {
            let mut st = self.shared.sched.lock();
            st.unreserve();
            st.push(Queued::of(&rec));
        }
        drop(arriving);
        self.shared.sched.notify();
        self.shared.hub.job(JobUpdate::Queue);
        flushed?;
        tracing::info!(job = %job_id(rec.id), kind = rec.kind.as_str(), "queued");
        Ok(job_to_pb(&rec, Some(strip_images(spec)), None, None))
    }

    /// A job message; `full` keeps image bytes in the spec.
    async fn job_message(&self, rec: JobRecord, full: bool) -> Result<pb::Job> {
        let store = self.store();
        let id = rec.id;
        let (spec, result) = blocking(move || {
            let spec = store
                .job_spec(id)?
                .map(|b| pb::JobSpec::decode(b.as_slice()))
                .transpose();
            let result = store
                .job_result(id)?
                .map(|b| pb::JobResult::decode(b.as_slice()))
                .transpose();
            match (spec, result) {
                (Ok(s), Ok(r)) => Ok((s, r)),
                (Err(e), _) | (_, Err(e)) => Err(ServerError::Corrupt(format!("job {id}: {e}"))),
            }
        })
        .await?;
        let spec = spec.map(|s| if full { s } else { strip_images(s) });
        let progress = self.shared.sched.lock().running.get(&id).map(|r| r.step);
        let progress = progress.or_else(|| self.shared.hub.remote_step(id));
        Ok(job_to_pb(&rec, spec, result, progress))
    }

    async fn get_job_record(&self, id: u64, field: &str) -> Result<JobRecord> {
        let store = self.store();
        blocking(move || store.get_job(id))
            .await?
            .ok_or_else(|| ServerError::not_found(field, "job", job_id(id)))
    }

    async fn cancel(&self, id: u64) -> Result<pb::Job> {
        enum Found {
            Queued,
            Running(Arc<std::sync::atomic::AtomicBool>),
            Elsewhere,
        }
        let mut events = self.shared.hub.subscribe_jobs();
        let found = {
            let mut st = self.shared.sched.lock();
            if st.remove(id).is_some() {
                Found::Queued
            } else if let Some(r) = st.running.get(&id) {
                Found::Running(r.cancel.clone())
            } else {
                Found::Elsewhere
            }
        };
        match found {
            Found::Queued => {
                let store = self.store();
                let rec = blocking(move || {
                    let mut rec = store
                        .get_job(id)?
                        .ok_or_else(|| ServerError::not_found("id", "job", job_id(id)))?;
                    rec.state = JobState::Cancelled;
                    rec.finished_ms = now_ms();
                    store.move_job(&rec, JobState::Queued)?;
                    Ok(rec)
                })
                .await?;
                self.flush().await?;
                self.shared.sched.lock().counters.cancelled += 1;
                self.shared.hub.job(JobUpdate::Finished { job: id });
                self.shared.hub.job(JobUpdate::Queue);
                tracing::info!(job = %job_id(id), "cancelled while queued");
                self.job_message(rec, false).await
            }
            Found::Running(flag) => {
                flag.store(true, Ordering::SeqCst);
                self.shared.sched.notify();
                let deadline = tokio::time::Instant::now() + CANCEL_WAIT;
                loop {
                    match tokio::time::timeout_at(deadline, events.recv()).await {
                        Ok(Ok(JobUpdate::Finished { job })) if job == id => break,
                        Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => {
                            if !self.shared.sched.lock().running.contains_key(&id) {
                                break;
                            }
                        }
                        Ok(Err(broadcast::error::RecvError::Closed)) | Err(_) => break,
                    }
                }
                let rec = self.get_job_record(id, "id").await?;
                self.job_message(rec, false).await
            }
            Found::Elsewhere if self.shared.store.pg().is_some() => {
                let store = self.store();
                if let Some(rec) =
                    blocking(move || super::fleet::cancel_elsewhere(&store, id)).await?
                {
                    if rec.state == JobState::Cancelled {
                        self.shared.hub.job(JobUpdate::Finished { job: id });
                        return self.job_message(rec, false).await;
                    }
                }
                // Running on another daemon: it sees the request at its next lease
                // renewal.
                let deadline = tokio::time::Instant::now() + CANCEL_WAIT;
                loop {
                    let rec = self.get_job_record(id, "id").await?;
                    if rec.state.is_terminal() || tokio::time::Instant::now() >= deadline {
                        return self.job_message(rec, false).await;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            Found::Elsewhere => {
                let rec = self.get_job_record(id, "id").await?;
                match rec.state {
                    JobState::Done | JobState::Failed | JobState::Cancelled => {
                        Err(ServerError::FailedPrecondition(format!(
                            "id: {} is already {}",
                            job_id(id),
                            format!("{:?}", rec.state).to_lowercase()
                        )))
                    }
                    JobState::Queued | JobState::Running => Err(ServerError::Unavailable(format!(
                        "id: {} is changing state; retry",
                        job_id(id)
                    ))),
                }
            }
        }
    }

    fn latent_record(&self, id: &str, field: &str) -> Result<Arc<super::store::LatentRecord>> {
        let n = parse_latent_id(id, field)?;
        let store = &self.shared.store;
        store
            .find_latent(n)?
            .ok_or_else(|| store.missing_latent(n, field, id))
    }

    async fn change_latent(
        &self,
        id: &str,
        change: impl Fn(&mut super::store::LatentRecord) + Send + 'static,
    ) -> Result<pb::Latent> {
        let n = parse_latent_id(id, "id")?;
        let store = self.store();
        let rec = blocking(move || store.update_latent(n, change)).await?;
        self.flush().await?;
        let msg = latent_to_pb(&rec);
        self.shared.hub.library(
            pb::library_event::Kind::Changed,
            msg.id.clone(),
            Some(msg.clone()),
        );
        Ok(msg)
    }

    fn stats(&self) -> pb::Stats {
        let damage = self.shared.store.damage();
        // On PostgreSQL: whether the database answers (no query while it does not,
        // the store reconnects by itself).
        let away = self.shared.store.pg().and_then(|pg| pg.reach.away());
        // Before the scheduler's lock: on PostgreSQL these are queries.
        let latents = if away.is_some() {
            0
        } else {
            self.shared.store.latent_count()
        };
        let (daemons, shared_queued) = match self.shared.store.pg() {
            Some(pg) if away.is_none() => (
                pg.daemons().unwrap_or_else(|e| {
                    tracing::warn!("{e}");
                    vec![]
                }),
                pg.queued_count().unwrap_or_else(|e| {
                    tracing::warn!("{e}");
                    0
                }),
            ),
            _ => (vec![], 0),
        };
        let mut st = self.shared.sched.lock();
        let queued = st.len() as u32;
        let running = st.running.len() as u32;
        let started = self.shared.sched.started;
        let ips = st
            .counters
            .images_per_second(Instant::now(), started.elapsed());
        let c = &st.counters;
        pb::Stats {
            queued,
            running,
            done: c.done,
            failed: c.failed,
            cancelled: c.cancelled,
            images_per_second: ips,
            mean_queue_wait_ms: if c.wait_n == 0 {
                0.0
            } else {
                c.wait_ms_sum / c.wait_n as f64
            },
            device_memory_bytes: 0,
            latents,
            daemons,
            max_queue: self.shared.max_queue,
            max_batch: self.shared.max_batch,
            store_degraded: !damage.is_empty(),
            damaged_records: damage.len() as u64,
            damaged_ids: damage.keys().take(100).cloned().collect(),
            store_check: self.shared.store.check_state(),
            store_free_bytes: self
                .shared
                .store
                .dir()
                .and_then(super::store::free_bytes)
                .unwrap_or(0),
            store_unreachable: away.is_some(),
            store_unreachable_since_unix_ms: away.as_ref().map_or(0, |a| a.1),
            store_error: away.map(|a| a.0).unwrap_or_default(),
            shared_queued: shared_queued.min(u32::MAX as u64) as u32,
        }
    }
}

const CHUNK: usize = 1 << 20;

/// Sends what is written in chunks of [`CHUNK`] bytes (from a blocking thread).
struct ChunkWriter {
    tx: mpsc::Sender<std::result::Result<pb::BackupChunk, Status>>,
    buf: Vec<u8>,
}

impl ChunkWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(Ok(pb::BackupChunk { data }))
            .map_err(|_| std::io::Error::other("the client went away"))
    }
}

impl std::io::Write for ChunkWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

fn event(job: u64, e: pb::job_event::Event) -> std::result::Result<pb::JobEvent, Status> {
    Ok(pb::JobEvent {
        job_id: job_id(job),
        event: Some(e),
    })
}

#[tonic::async_trait]
impl Ddim for DdimService {
    #[tracing::instrument(skip_all)]
    async fn list_latents(
        &self,
        req: Request<pb::ListLatentsRequest>,
    ) -> std::result::Result<Response<pb::ListLatentsResponse>, Status> {
        let pb::ListLatentsRequest {
            page_size,
            page_token,
            name_contains,
            tag,
            origin,
            order_by,
            offset,
            parent,
        } = req.into_inner();
        let size = match page_size {
            0 => 50,
            1..=1000 => page_size as usize,
            _ => {
                return Err(ServerError::invalid(
                    "page_size",
                    format!("at most 1000, got {page_size}"),
                )
                .into())
            }
        };
        let order = order_from_pb(order_by)?;
        let cursor = if page_token.is_empty() {
            Cursor::Offset(offset)
        } else {
            Cursor::After(SortKey::parse(order, &page_token).ok_or_else(|| {
                ServerError::invalid(
                    "page_token",
                    "not a token from a previous response with the same order_by",
                )
            })?)
        };
        let origin = super::origin::origin_filter(&origin)?.to_string();
        let parent = if parent.is_empty() {
            None
        } else {
            Some(parse_latent_id(&parent, "parent")?)
        };
        let f = LatentFilter {
            name_contains: name_contains.to_lowercase(),
            tag,
            origin,
            parent,
        };
        let store = self.store();
        let page = {
            let store = store.clone();
            blocking(move || store.try_list_latents(&f, order, &cursor, size)).await?
        };
        Ok(Response::new(pb::ListLatentsResponse {
            latents: page
                .latents
                .iter()
                .map(|r| with_lineage(&store, r))
                .collect(),
            next_page_token: page.next.map(|k| k.token(order)).unwrap_or_default(),
            total: page.total,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_latent(
        &self,
        req: Request<pb::GetLatentRequest>,
    ) -> std::result::Result<Response<pb::Latent>, Status> {
        let pb::GetLatentRequest { id } = req.into_inner();
        Ok(Response::new(with_lineage(
            &self.shared.store,
            &*self.latent_record(&id, "id")?,
        )))
    }

    #[tracing::instrument(skip_all)]
    async fn rename_latent(
        &self,
        req: Request<pb::RenameLatentRequest>,
    ) -> std::result::Result<Response<pb::Latent>, Status> {
        let pb::RenameLatentRequest { id, name } = req.into_inner();
        check_name(&name, "name")?;
        if name.trim().is_empty() {
            return Err(ServerError::invalid("name", "must not be blank").into());
        }
        Ok(Response::new(
            self.change_latent(&id, move |r| r.name = name.clone())
                .await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn tag_latent(
        &self,
        req: Request<pb::TagLatentRequest>,
    ) -> std::result::Result<Response<pb::Latent>, Status> {
        let pb::TagLatentRequest { id, add, remove } = req.into_inner();
        for (i, t) in add.iter().enumerate() {
            if t.trim().is_empty() || t.len() > 64 {
                return Err(ServerError::invalid(
                    format!("add[{i}]"),
                    "tags are 1..=64 bytes, not blank",
                )
                .into());
            }
        }
        Ok(Response::new(
            self.change_latent(&id, move |r| {
                r.tags.retain(|t| !remove.contains(t));
                for t in &add {
                    if !r.tags.contains(t) {
                        r.tags.push(t.clone());
                    }
                }
            })
            .await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn delete_latent(
        &self,
        req: Request<pb::DeleteLatentRequest>,
    ) -> std::result::Result<Response<pb::DeleteLatentResponse>, Status> {
        let pb::DeleteLatentRequest { id } = req.into_inner();
        let n = parse_latent_id(&id, "id")?;
        let store = self.store();
        let jobs_deleted = blocking(move || store.delete_latent(n)).await?;
        self.flush().await?;
        self.shared
            .hub
            .library(pb::library_event::Kind::Deleted, latent_id(n), None);
        Ok(Response::new(pb::DeleteLatentResponse { jobs_deleted }))
    }

    #[tracing::instrument(skip_all)]
    async fn export_latent(
        &self,
        req: Request<pb::ExportLatentRequest>,
    ) -> std::result::Result<Response<pb::ExportLatentResponse>, Status> {
        let pb::ExportLatentRequest { id } = req.into_inner();
        let r = self.latent_record(&id, "id")?;
        let store = self.store();
        let rr = r.clone();
        let npy = blocking(move || {
            let v = store.latent_xt(rr.id)?;
            let [c, h, w] = rr.shape.map(|d| d as i64);
            let t = tch::Tensor::f_from_slice(&v)
                .and_then(|t| t.f_reshape([1, c, h, w]))
                .map_err(|e| ServerError::Corrupt(format!("x_T of {}: {e}", latent_id(rr.id))))?;
            Ok(crate::engine::npy::to_bytes(&t))
        })
        .await?;
        Ok(Response::new(pb::ExportLatentResponse {
            npy,
            latent: Some(latent_to_pb(&r)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_latent_image(
        &self,
        req: Request<pb::GetLatentImageRequest>,
    ) -> std::result::Result<Response<pb::Image>, Status> {
        let pb::GetLatentImageRequest { id, kind, steps } = req.into_inner();
        let r = self.latent_record(&id, "id")?;
        let [_, h, w] = r.shape;
        let which = match pb::LatentImageKind::try_from(kind) {
            Ok(pb::LatentImageKind::Unspecified | pb::LatentImageKind::Preview) => {
                LatentPng::Preview
            }
            Ok(pb::LatentImageKind::Source) => LatentPng::Source,
            Ok(pb::LatentImageKind::Decode) => {
                let meta = self.meta()?;
                let r = usable_latent(&self.shared.store, meta, &id, "id")?;
                let steps = check_steps(steps, meta.t, "steps")?;
                let (tx, rx) = oneshot::channel();
                self.shared.sched.decode_now(DecodeNow {
                    latent: r,
                    steps,
                    reply: tx,
                })?;
                let png = rx
                    .await
                    .map_err(|_| ServerError::Unavailable("the worker stopped".into()))??;
                return Ok(Response::new(pb::Image {
                    png,
                    width: w,
                    height: h,
                }));
            }
            Err(_) => {
                return Err(
                    ServerError::invalid("kind", format!("unknown image kind {kind}")).into(),
                )
            }
        };
        let store = self.store();
        let n = r.id;
        let png = blocking(move || store.latent_png(n, which)).await?;
        let png = png.ok_or_else(|| {
            ServerError::FailedPrecondition(format!(
                "id: latent {id} has no source image (only encoded latents keep one)"
            ))
        })?;
        Ok(Response::new(pb::Image {
            png,
            width: w,
            height: h,
        }))
    }

    type WatchLibraryStream = ReceiverStream<std::result::Result<pb::LibraryEvent, Status>>;

    #[tracing::instrument(skip_all)]
    async fn watch_library(
        &self,
        _req: Request<pb::WatchLibraryRequest>,
    ) -> std::result::Result<Response<Self::WatchLibraryStream>, Status> {
        let mut rx = self.shared.hub.subscribe_library();
        let mut shutdown = self.shared.hub.shutdown_signal();
        let (tx, out) = mpsc::channel(256);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    ev = rx.recv() => match ev {
                        Ok(ev) => if tx.send(Ok(ev)).await.is_err() { break },
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            tracing::warn!("library watcher lagged by {n} events");
                        }
                        Err(broadcast::error::RecvError::Closed) => break,
                    },
                    _ = shutdown.changed() => break,
                    _ = tx.closed() => break,
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(out)))
    }

    #[tracing::instrument(skip_all)]
    async fn submit_job(
        &self,
        req: Request<pb::SubmitJobRequest>,
    ) -> std::result::Result<Response<pb::Job>, Status> {
        Ok(Response::new(self.submit(req.into_inner()).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn get_job(
        &self,
        req: Request<pb::GetJobRequest>,
    ) -> std::result::Result<Response<pb::Job>, Status> {
        let pb::GetJobRequest { id } = req.into_inner();
        let n = parse_job_id(&id, "id")?;
        let rec = self.get_job_record(n, "id").await?;
        Ok(Response::new(self.job_message(rec, true).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn list_jobs(
        &self,
        req: Request<pb::ListJobsRequest>,
    ) -> std::result::Result<Response<pb::ListJobsResponse>, Status> {
        let pb::ListJobsRequest {
            states,
            limit,
            latent_id: lid,
            kinds,
        } = req.into_inner();
        let states = states
            .iter()
            .enumerate()
            .map(|(i, s)| state_from_pb(*s, &format!("states[{i}]")))
            .collect::<Result<Vec<_>>>()?;
        let kinds = kinds
            .iter()
            .enumerate()
            .map(|(i, k)| {
                JobKind::parse(k).ok_or_else(|| {
                    let known: Vec<&str> = JobKind::ALL.iter().map(|k| k.as_str()).collect();
                    ServerError::invalid(
                        format!("kinds[{i}]"),
                        format!("unknown job kind {k:?} (one of {})", known.join(", ")),
                    )
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let limit = match limit {
            0 => 100,
            1..=1000 => limit as usize,
            _ => {
                return Err(
                    ServerError::invalid("limit", format!("at most 1000, got {limit}")).into(),
                )
            }
        };
        let latent = if lid.is_empty() {
            None
        } else {
            Some(parse_latent_id(&lid, "latent_id")?)
        };
        let store = self.store();
        let (recs, skipped) = blocking(move || {
            let (recs, mut skipped) = store.list_jobs_skipping(&states, &kinds, latent, limit)?;
            let mut out = vec![];
            for r in recs {
                // A job whose spec cannot be read is left out (and counted), not the page.
                let spec = match store.job_spec(r.id) {
                    Ok(b) => b.map(|b| pb::JobSpec::decode(b.as_slice()).map(strip_images)),
                    Err(ServerError::DataLoss(_) | ServerError::Corrupt(_)) => {
                        skipped += 1;
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                match spec.transpose() {
                    Ok(spec) => out.push((r, spec)),
                    Err(e) => {
                        store.note_damage(job_id(r.id), format!("spec does not decode: {e}"));
                        skipped += 1;
                    }
                }
            }
            if skipped > 0 {
                tracing::warn!(skipped, "ListJobs left out damaged jobs");
            }
            Ok((out, skipped))
        })
        .await?;
        let st = self.shared.sched.lock();
        let jobs = recs
            .into_iter()
            .map(|(r, spec)| {
                let p = st.running.get(&r.id).map(|x| x.step);
                let p = p.or_else(|| self.shared.hub.remote_step(r.id));
                job_to_pb(&r, spec, None, p)
            })
            .collect();
        Ok(Response::new(pb::ListJobsResponse { jobs, skipped }))
    }

    #[tracing::instrument(skip_all)]
    async fn cancel_job(
        &self,
        req: Request<pb::CancelJobRequest>,
    ) -> std::result::Result<Response<pb::Job>, Status> {
        let pb::CancelJobRequest { id } = req.into_inner();
        let n = parse_job_id(&id, "id")?;
        Ok(Response::new(self.cancel(n).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn preview_edit(
        &self,
        req: Request<pb::PreviewEditRequest>,
    ) -> std::result::Result<Response<pb::PreviewEditResponse>, Status> {
        let pb::PreviewEditRequest {
            spec,
            steps,
            client_id,
        } = req.into_inner();
        let meta = self.meta()?.clone();
        let steps = if steps == 0 {
            DEFAULT_PREVIEW_STEPS.min(meta.t as u32)
        } else {
            steps
        };
        let steps = check_steps(steps, meta.t, "steps")?;
        if client_id.len() > 256 {
            return Err(ServerError::invalid("client_id", "at most 256 bytes").into());
        }
        let store = self.store();
        let spec = blocking(move || {
            let spec = spec.ok_or_else(|| ServerError::invalid("spec", "an edit spec is required"))?;
            let j = super::jobs::job(&spec)?;
            if !j.is_edit() {
                return Err(ServerError::invalid(
                    "spec",
                    format!("{} is not an edit (PreviewEdit takes variation, mix, direction, renoise, inpaint or grid)", j.kind().as_str()),
                ));
            }
            validate_spec(Some(&spec), &meta, &store)?;
            Ok(spec)
        })
        .await?;
        let t0 = std::time::Instant::now();
        let (tx, rx) = oneshot::channel();
        self.shared.sched.preview_now(PreviewNow {
            spec,
            steps,
            client: client_id,
            reply: tx,
        })?;
        let images = rx
            .await
            .map_err(|_| ServerError::Unavailable("the worker stopped".into()))??;
        Ok(Response::new(pb::PreviewEditResponse {
            images,
            seconds: t0.elapsed().as_secs_f64(),
        }))
    }

    type WatchJobStream = ReceiverStream<std::result::Result<pb::JobEvent, Status>>;

    #[tracing::instrument(skip_all)]
    async fn watch_job(
        &self,
        req: Request<pb::WatchJobRequest>,
    ) -> std::result::Result<Response<Self::WatchJobStream>, Status> {
        use pb::job_event::Event;
        let pb::WatchJobRequest { id, preview_every } = req.into_inner();
        let n = parse_job_id(&id, "id")?;
        let mut rx = self.shared.hub.subscribe_jobs();
        let guard = self.shared.hub.want_previews(n, preview_every);
        let rec = self.get_job_record(n, "id").await?;
        let (tx, out) = mpsc::channel(256);
        let svc = self.clone();
        tokio::spawn(async move {
            let _guard = guard;
            let mut shutdown = svc.shared.hub.shutdown_signal();
            // Sends the finished job (or the error building it) to the watcher.
            let send_finished = |rec: JobRecord| {
                let (svc, tx) = (svc.clone(), tx.clone());
                async move {
                    let ev = svc.job_message(rec, false).await.map(Event::Finished);
                    let ev = ev.map(|e| pb::JobEvent {
                        job_id: job_id(n),
                        event: Some(e),
                    });
                    let _ = tx.send(ev.map_err(Status::from)).await;
                }
            };
            if rec.state.is_terminal() {
                send_finished(rec).await;
                return;
            }
            let mut last_pos = None;
            // On a shared store a job may wait in the database (no daemon has
            // claimed it): its place there, read again when the queue may have
            // moved (a job queued, started or ended anywhere), not on progress.
            let shared = svc.shared.store.pg().cloned();
            let mut moved = true;
            // Not while it runs (no place to read); again if it goes back to the
            // queue (its daemon stopped, its lease ran out).
            let mut running = rec.state == JobState::Running;
            let started = Event::Started(pb::Started {
                attempt: rec.attempts,
            });
            if rec.state == JobState::Running && tx.send(event(n, started)).await.is_err() {
                return;
            }
            loop {
                let mut pos = svc.shared.sched.lock().position(n);
                if let (None, Some(pg), true, false) = (pos, &shared, moved, running) {
                    let pg = pg.clone();
                    pos = blocking(move || pg.queue_position(n)).await.ok().flatten();
                }
                moved = false;
                if pos.is_some() && pos != last_pos {
                    last_pos = pos;
                    if tx
                        .send(event(n, Event::QueuedPosition(pos.unwrap_or(0))))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                let ev = tokio::select! {
                    ev = rx.recv() => ev,
                    _ = shutdown.changed() => return,
                    _ = tx.closed() => return,
                };
                let msg = match ev {
                    Ok(JobUpdate::Queue) => {
                        moved = true;
                        continue;
                    }
                    Ok(JobUpdate::Started { job, attempt }) if job == n => {
                        last_pos = None;
                        running = true;
                        Event::Started(pb::Started { attempt })
                    }
                    Ok(JobUpdate::Progress {
                        job,
                        step,
                        total,
                        eta_seconds,
                        preview,
                        relayed,
                    }) if job == n => Event::Progress(pb::Progress {
                        step,
                        total,
                        eta_seconds,
                        preview: preview
                            .filter(|_| {
                                preview_every > 0 && (relayed || step.is_multiple_of(preview_every))
                            })
                            .map(|p| (*p).clone()),
                    }),
                    Ok(JobUpdate::Finished { job }) if job == n => {
                        let rec = match svc.get_job_record(n, "id").await {
                            Ok(r) => r,
                            Err(e) => {
                                let _ = tx.send(Err(e.into())).await;
                                return;
                            }
                        };
                        if !rec.state.is_terminal() {
                            running = rec.state == JobState::Running;
                            moved = true;
                            continue;
                        }
                        send_finished(rec).await;
                        return;
                    }
                    Ok(JobUpdate::Progress { .. }) => continue,
                    Ok(_) => {
                        moved = true;
                        continue;
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        if let Ok(rec) = svc.get_job_record(n, "id").await {
                            if rec.state.is_terminal() {
                                send_finished(rec).await;
                                return;
                            }
                        }
                        moved = true;
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if tx.send(event(n, msg)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(out)))
    }

    #[tracing::instrument(skip_all)]
    async fn get_model_info(
        &self,
        _req: Request<pb::GetModelInfoRequest>,
    ) -> std::result::Result<Response<pb::ModelInfo>, Status> {
        Ok(Response::new(self.meta()?.info.clone()))
    }

    type BackupStream = ReceiverStream<std::result::Result<pb::BackupChunk, Status>>;

    /// The backup archive (docs/daemon.md, Backups), streamed. The records are read
    /// under the store's write lock (a point-in-time copy: writers wait, readers do
    /// not), then the archive is written from memory in 1 MiB chunks.
    #[tracing::instrument(skip_all)]
    async fn backup(
        &self,
        _req: Request<pb::BackupRequest>,
    ) -> std::result::Result<Response<Self::BackupStream>, Status> {
        let store = self.store();
        let t0 = Instant::now();
        let dump = blocking(move || {
            store.frozen(|t| super::dump::read(t, &super::dump::Checks::default()))
        })
        .await?;
        let frozen_ms = t0.elapsed().as_millis();
        let (tx, out) = mpsc::channel(4);
        tokio::task::spawn_blocking(move || {
            let w = ChunkWriter {
                tx: tx.clone(),
                buf: Vec::with_capacity(CHUNK),
            };
            match super::archive::write(&dump, w) {
                Ok(m) => tracing::info!(
                    latents = m.latents,
                    jobs = m.jobs,
                    frozen_ms,
                    "backup streamed"
                ),
                Err(e) => {
                    let _ = tx.blocking_send(Err(e.into()));
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(out)))
    }

    #[tracing::instrument(skip_all)]
    async fn get_stats(
        &self,
        _req: Request<pb::GetStatsRequest>,
    ) -> std::result::Result<Response<pb::Stats>, Status> {
        let mut stats = self.stats();
        if let Some(device) = self.shared.meta.get().map(|m| m.info.device.clone()) {
            stats.device_memory_bytes =
                blocking(move || Ok(super::device::memory_bytes(&device))).await?;
        }
        Ok(Response::new(stats))
    }
}
