//! Serving from PostgreSQL: the [`super::super::store::Store`] operations on a
//! database that several daemons share (docs/scale-out.md).
//!
//! The daemon's store API is synchronous (the worker thread and the handlers'
//! `spawn_blocking` closures call it); tokio-postgres is async. [`PgStore`] owns a
//! small runtime of its own that holds the pool's connections and runs every
//! statement; a caller blocks on a channel for the answer. From a blocking thread
//! (the worker, `spawn_blocking`) that is a plain wait; from an async task of the
//! daemon's multi-thread runtime (a few cheap reads the handlers make inline, such
//! as `get_latent`) the wait goes through `block_in_place`, so no runtime worker is
//! ever parked with tasks on it.
//!
//! Jobs: a daemon's claimer ([`PgStore::claim`]) takes queued jobs with `FOR UPDATE
//! SKIP LOCKED` under a lease (`lease_owner`, `lease_until`, `ran_by`), in priority
//! then id order, of its model's fingerprint (or none), and hands them to the local
//! scheduler. The worker's queued → running move is accepted only from the lease
//! holder (or for an unleased job); every later move (done, failed, cancelled,
//! back to the queue) only while the job is running under this daemon's lease, so a
//! late result from a daemon whose lease ran out is refused. The lease keeper
//! renews the leases of the jobs this daemon holds; the sweep (any daemon) puts
//! running jobs whose lease ran out back in the queue, or fails them as
//! `interrupted` after `--max-attempts`.
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio_postgres::types::Json;

use super::{db_err, Backoff, Pg, Reach, Wake};
use crate::server::error::{Result, ServerError};
use crate::server::store::{
    Cursor, Inserted, JobKind, JobRecord, JobState, LatentFilter, LatentOrder, LatentPage,
    LatentPng, LatentRecord, NewLatent, OriginRecord, Priority, SortKey,
};

/// A PostgreSQL store as the daemon serves it.
pub struct PgStore {
    rt: Option<tokio::runtime::Runtime>,
    pg: Pg,
    /// This daemon's name in `lease_owner`, `ran_by` and `daemons`.
    pub daemon: String,
    /// The model's fingerprint, once loaded (new jobs are pinned to it).
    pub fingerprint: OnceLock<String>,
    /// This daemon's `--max-queue`: a submit is refused while that many jobs wait
    /// in the database (checked and inserted under one lock across daemons).
    pub max_queue: OnceLock<u64>,
    pub lease: Duration,
    /// Whether the database answers (health, `GetStats`, the fleet's waits).
    pub reach: Arc<Reach>,
    /// Wakes the claimer: a job was queued (here, or `NOTIFY`d by another daemon).
    pub wake: Arc<Wake>,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

fn i64_of(id: u64) -> i64 {
    i64::try_from(id).unwrap_or(i64::MAX)
}

pub(crate) fn state_name(s: JobState) -> &'static str {
    match s {
        JobState::Queued => "queued",
        JobState::Running => "running",
        JobState::Done => "done",
        JobState::Failed => "failed",
        JobState::Cancelled => "cancelled",
    }
}

fn priority_num(p: Priority) -> i16 {
    match p {
        Priority::Interactive => 0,
        Priority::Batch => 1,
    }
}

fn latent_of(row: &tokio_postgres::Row) -> Result<LatentRecord> {
    let Json(r): Json<LatentRecord> = row
        .try_get(0)
        .map_err(|e| ServerError::Corrupt(format!("latent record: {e}")))?;
    Ok(r)
}

fn job_of(row: &tokio_postgres::Row) -> Result<JobRecord> {
    let Json(r): Json<JobRecord> = row
        .try_get(0)
        .map_err(|e| ServerError::Corrupt(format!("job record: {e}")))?;
    Ok(r)
}

/// The job columns derived from its record, as `UPDATE … SET` text for
/// parameters $2 (record), $3 (state), $4 (attempts).
const SET_JOB: &str = "record = $2, state = $3, attempts = $4";

/// The channels daemons on one store tell each other on (`NOTIFY`, delivered
/// at commit): job state changes and library changes. Payloads are JSON
/// ([`Note`]).
pub const JOBS_CHANNEL: &str = "ddimd_jobs";
pub const LIBRARY_CHANNEL: &str = "ddimd_library";
/// A job became runnable (submitted, or put back in the queue): wakes the
/// claimers. The payload is the model fingerprint the job is pinned to ("" for
/// any), so daemons of another model stay asleep.
pub const QUEUE_CHANNEL: &str = "ddimd_queue";

/// The advisory lock a submit holds from counting the queue to inserting its job
/// ("dqueue" in ASCII; the schema runner's lock is another key).
const SUBMIT_LOCK_KEY: i64 = 0x6471_7565_7565;

/// The job an idempotency key names, if any.
async fn job_by_key(
    tx: &tokio_postgres::Transaction<'_>,
    key: &Option<String>,
) -> Result<Option<JobRecord>> {
    let r = tx
        .query_opt("SELECT record FROM jobs WHERE idempotency_key = $1", &[key])
        .await
        .map_err(db_err("read a job"))?;
    r.map(|r| job_of(&r)).transpose()
}

/// The refusal of a submit to a full shared queue.
fn queue_full(n: u64, max: u64) -> ServerError {
    ServerError::QueueFull(format!(
        "the queue is full ({n} jobs queued in the shared database, --max-queue {max}); retry later"
    ))
}

/// A notification between daemons.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Note {
    /// The daemon that sent it.
    pub d: String,
    /// A job's id, or a latent's (library channel).
    pub id: u64,
    /// The job's new state, or "changed" / "deleted" for a latent.
    pub state: String,
    #[serde(default)]
    pub attempt: u32,
    /// Latents a finished job made.
    #[serde(default)]
    pub latents: Vec<u64>,
    /// A running job's progress (state [`PROGRESS`], on the jobs channel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<ProgressNote>,
}

fn note(me: &str, id: u64, state: &str, attempt: u32, latents: Vec<u64>) -> String {
    serde_json::to_string(&Note {
        d: me.to_string(),
        id,
        state: state.to_string(),
        attempt,
        latents,
        progress: None,
    })
    .expect("a note serialises")
}

/// The state of a progress note: not a job state (the job is running).
pub const PROGRESS: &str = "progress";

/// The most a `NOTIFY` payload may hold: PostgreSQL refuses 8000 bytes or more.
pub const NOTIFY_MAX: usize = 7999;

/// A running job's progress as the daemon running it tells the others (at most
/// a few a second per job, docs/scale-out.md): the step, and the x̂0 preview its
/// own watchers get, when it fits the payload.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ProgressNote {
    pub step: u32,
    pub total: u32,
    pub eta: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<PreviewNote>,
}

/// A small PNG in a note: base64, with its size.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PreviewNote {
    pub w: u32,
    pub h: u32,
    pub png: String,
}

impl PreviewNote {
    pub fn of(img: &ddim_proto::v1::Image) -> PreviewNote {
        use base64::Engine;
        PreviewNote {
            w: img.width,
            h: img.height,
            png: base64::engine::general_purpose::STANDARD.encode(&img.png),
        }
    }

    /// The image back; `None` for a payload that is not base64.
    pub fn image(&self) -> Option<ddim_proto::v1::Image> {
        use base64::Engine;
        let png = base64::engine::general_purpose::STANDARD
            .decode(&self.png)
            .ok()?;
        Some(ddim_proto::v1::Image {
            width: self.w,
            height: self.h,
            png,
        })
    }
}

/// The payload of job `id`'s progress note from daemon `me`, or `None` when it
/// would not fit a `NOTIFY` ([`NOTIFY_MAX`]; only a preview makes it that big).
pub fn progress_note(me: &str, id: u64, attempt: u32, p: ProgressNote) -> Option<String> {
    let s = serde_json::to_string(&Note {
        d: me.to_string(),
        id,
        state: PROGRESS.to_string(),
        attempt,
        latents: vec![],
        progress: Some(p),
    })
    .expect("a note serialises");
    (s.len() <= NOTIFY_MAX).then_some(s)
}

/// A claimed job as the scheduler needs it.
pub struct Claimed {
    pub record: JobRecord,
}

impl PgStore {
    /// Connects (applying the schema) as daemon `daemon`.
    pub fn connect(url: &str, daemon: String, lease: Duration) -> Result<PgStore> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("ddimd-pg")
            .enable_all()
            .build()
            .map_err(|e| ServerError::Internal(format!("database runtime: {e}")))?;
        let u = url.to_string();
        let pg = wait(rt.handle(), async move {
            Pg::connect(&u, "--store", 16, super::Schema::Migrate).await
        })?;
        Ok(PgStore {
            rt: Some(rt),
            pg,
            daemon,
            fingerprint: OnceLock::new(),
            max_queue: OnceLock::new(),
            lease,
            reach: Arc::new(Reach::new()),
            wake: Arc::new(Wake::default()),
        })
    }

    pub fn shown(&self) -> &str {
        self.pg.shown()
    }

    fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(Pg) -> std::pin::Pin<Box<dyn Future<Output = Result<T>> + Send>>,
    ) -> Result<T> {
        let rt = self.rt.as_ref().expect("runtime until drop");
        match wait(rt.handle(), f(self.pg.clone())) {
            Err(ServerError::Unavailable(m)) => {
                if self.reach.failed(&m) {
                    self.probe();
                }
                Err(ServerError::Unavailable(if m.contains("database") {
                    m
                } else {
                    format!("the database is unreachable: {m}")
                }))
            }
            r => {
                self.reach.answered();
                r
            }
        }
    }

    /// At the start of an outage: reconnects with a capped exponential backoff until
    /// the database answers `SELECT 1` (or another statement got through first).
    fn probe(&self) {
        let (pg, reach) = (self.pg.clone(), self.reach.clone());
        let rt = self.rt.as_ref().expect("runtime until drop");
        rt.spawn(async move {
            let mut backoff = Backoff::default();
            loop {
                tokio::time::sleep(backoff.pause()).await;
                if reach.is_up() {
                    return;
                }
                let r = async {
                    let c = pg.client().await?;
                    c.simple_query("SELECT 1")
                        .await
                        .map_err(db_err("reconnect"))?;
                    Ok::<_, ServerError>(())
                }
                .await;
                match r {
                    Err(ServerError::Unavailable(m)) => {
                        reach.failed(&m);
                    }
                    _ => {
                        reach.answered();
                        return;
                    }
                }
            }
        });
    }

    fn lease_ms(&self) -> f64 {
        self.lease.as_secs_f64() * 1000.0
    }

    // ------------------------------------------------------------ latents --

    pub fn latent_count(&self) -> Result<u64> {
        self.run(|pg| {
            Box::pin(async move {
                let c = pg.client().await?;
                let r = c
                    .query_one("SELECT count(*) FROM latents", &[])
                    .await
                    .map_err(db_err("count latents"))?;
                Ok(r.get::<_, i64>(0) as u64)
            })
        })
    }

    pub fn get_latent(&self, id: u64) -> Result<Option<LatentRecord>> {
        self.run(move |pg| {
            Box::pin(async move {
                let c = pg.client().await?;
                let r = c
                    .query_opt("SELECT record FROM latents WHERE id = $1", &[&i64_of(id)])
                    .await
                    .map_err(db_err("read a latent"))?;
                r.as_ref().map(latent_of).transpose()
            })
        })
    }

    pub fn latent_xt(&self, id: u64) -> Result<Option<Vec<u8>>> {
        self.run(move |pg| {
            Box::pin(async move {
                let c = pg.client().await?;
                let r = c
                    .query_opt("SELECT xt FROM latents WHERE id = $1", &[&i64_of(id)])
                    .await
                    .map_err(db_err("read x_T"))?;
                Ok(r.map(|r| r.get::<_, Vec<u8>>(0)))
            })
        })
    }

    /// `None`: no such latent; `Some(None)`: no such PNG.
    pub fn latent_png(&self, id: u64, which: LatentPng) -> Result<Option<Option<Vec<u8>>>> {
        let col = match which {
            LatentPng::Preview => "preview",
            LatentPng::Source => "source",
        };
        self.run(move |pg| {
            Box::pin(async move {
                let c = pg.client().await?;
                let r = c
                    .query_opt(
                        &format!("SELECT {col} FROM latents WHERE id = $1"),
                        &[&i64_of(id)],
                    )
                    .await
                    .map_err(db_err("read a PNG"))?;
                Ok(r.map(|r| r.get::<_, Option<Vec<u8>>>(0)))
            })
        })
    }

    /// A page of `ListLatents` in SQL: the same orders, filters and page tokens as
    /// the sled catalogue. Names compare byte-wise (`COLLATE "C"`), as Rust's `str`.
    pub fn list_latents(
        &self,
        f: &LatentFilter,
        order: LatentOrder,
        cursor: &Cursor,
        size: usize,
    ) -> Result<LatentPage> {
        let f = f.clone();
        let cursor = cursor.clone();
        self.run(move |pg| {
            Box::pin(async move {
                let c = pg.client().await?;
                let parent = f.parent.map(i64_of);
                let filter = "strpos(lower_name, $1) > 0 AND ($2 = '' OR tags @> ARRAY[$2]) \
                     AND ($3 = '' OR origin = $3) AND ($4::bigint IS NULL OR parents @> ARRAY[$4::bigint])";
                let total = c
                    .query_one(
                        &format!("SELECT count(*) FROM latents WHERE {filter}"),
                        &[&f.name_contains, &f.tag, &f.origin, &parent],
                    )
                    .await
                    .map_err(db_err("count latents"))?
                    .get::<_, i64>(0) as u64;
                let order_by = match order {
                    LatentOrder::Newest => "id DESC",
                    LatentOrder::Oldest => "id ASC",
                    LatentOrder::Name => "lower_name COLLATE \"C\", id",
                    LatentOrder::EncodeSteps => "encode_steps DESC, id DESC",
                };
                let (after, offset): (String, i64) = match &cursor {
                    Cursor::Offset(o) => (String::new(), i64::try_from(*o).unwrap_or(i64::MAX)),
                    Cursor::After(k) => (
                        match k {
                            SortKey::Id(_) if order == LatentOrder::Oldest => " AND id > $5".into(),
                            SortKey::Id(_) => " AND id < $5".into(),
                            SortKey::Name(..) => {
                                " AND (lower_name COLLATE \"C\", id) > ($6::text COLLATE \"C\", $5)"
                                    .into()
                            }
                            SortKey::Steps(..) => " AND (encode_steps, id) < ($7::int, $5)".into(),
                        },
                        0,
                    ),
                };
                let (kid, kname, ksteps) = match &cursor {
                    Cursor::After(SortKey::Id(i)) => (i64_of(*i), String::new(), 0i32),
                    Cursor::After(SortKey::Name(n, i)) => (i64_of(*i), n.clone(), 0),
                    Cursor::After(SortKey::Steps(s, i)) => {
                        (i64_of(*i), String::new(), i32::try_from(*s).unwrap_or(i32::MAX))
                    }
                    Cursor::Offset(_) => (0, String::new(), 0),
                };
                let limit = i64::try_from(size).unwrap_or(i64::MAX).saturating_add(1);
                let rows = c
                    .query(
                        &format!(
                            "SELECT record FROM latents WHERE {filter} \
                             AND ($5::bigint IS NOT NULL) AND ($6::text IS NOT NULL) AND ($7::int IS NOT NULL){after} \
                             ORDER BY {order_by} OFFSET $8 LIMIT $9"
                        ),
                        &[
                            &f.name_contains,
                            &f.tag,
                            &f.origin,
                            &parent,
                            &kid,
                            &kname,
                            &ksteps,
                            &offset,
                            &limit,
                        ],
                    )
                    .await
                    .map_err(db_err("list latents"))?;
                let mut hits = rows.iter().map(latent_of).collect::<Result<Vec<_>>>()?;
                let more = hits.len() > size;
                hits.truncate(size);
                let next = if more {
                    hits.last().map(|r| match order {
                        LatentOrder::Newest | LatentOrder::Oldest => SortKey::Id(r.id),
                        LatentOrder::Name => SortKey::Name(r.name.to_lowercase(), r.id),
                        LatentOrder::EncodeSteps => SortKey::Steps(r.encode_steps, r.id),
                    })
                } else {
                    None
                };
                Ok(LatentPage {
                    latents: hits.into_iter().map(Arc::new).collect(),
                    next,
                    total,
                })
            })
        })
    }

    pub fn latent_ids(&self) -> Result<Vec<u64>> {
        self.run(|pg| {
            Box::pin(async move {
                let c = pg.client().await?;
                let rows = c
                    .query("SELECT id FROM latents ORDER BY id", &[])
                    .await
                    .map_err(db_err("list latent ids"))?;
                Ok(rows.iter().map(|r| r.get::<_, i64>(0) as u64).collect())
            })
        })
    }

    /// Writes a changed latent record (and its derived columns).
    pub fn put_latent(&self, r: &LatentRecord) -> Result<()> {
        let r = r.clone();
        let msg = note(&self.daemon, r.id, "changed", 0, vec![]);
        self.run(move |pg| {
            Box::pin(async move {
                let c = pg.client().await?;
                let parents: Vec<i64> = r.origin.parents().iter().map(|p| i64_of(*p)).collect();
                let n = c
                    .execute(
                        "UPDATE latents SET record = $2, name = $3, lower_name = $4, tags = $5, \
                         parents = $6 WHERE id = $1",
                        &[
                            &i64_of(r.id),
                            &Json(&r),
                            &r.name,
                            &r.name.to_lowercase(),
                            &r.tags,
                            &parents,
                        ],
                    )
                    .await
                    .map_err(db_err("update a latent"))?;
                if n == 0 {
                    return Err(ServerError::not_found(
                        "id",
                        "latent",
                        format!("lat-{}", r.id),
                    ));
                }
                c.execute("SELECT pg_notify($1, $2)", &[&LIBRARY_CHANNEL, &msg])
                    .await
                    .map_err(db_err("notify"))?;
                Ok(())
            })
        })
    }

    /// Deletes a latent and the finished jobs that belong only to it; refuses while
    /// a queued or running job uses it.
    pub fn delete_latent(&self, id: u64) -> Result<u32> {
        let msg = note(&self.daemon, id, "deleted", 0, vec![]);
        self.run(move |pg| {
            Box::pin(async move {
                let mut c = pg.client().await?;
                let tx = c.transaction().await.map_err(db_err("begin"))?;
                let lid = i64_of(id);
                let exists = tx
                    .query_opt("SELECT 1 FROM latents WHERE id = $1 FOR UPDATE", &[&lid])
                    .await
                    .map_err(db_err("lock a latent"))?;
                if exists.is_none() {
                    return Err(ServerError::not_found("id", "latent", format!("lat-{id}")));
                }
                let rows = tx
                    .query(
                        "SELECT j.record FROM jobs j JOIN job_latents l ON l.job = j.id \
                         WHERE l.latent = $1 ORDER BY j.id FOR UPDATE OF j",
                        &[&lid],
                    )
                    .await
                    .map_err(db_err("read a latent's jobs"))?;
                let mut doomed = vec![];
                for row in &rows {
                    let job = job_of(row)?;
                    if !job.state.is_terminal() {
                        return Err(ServerError::FailedPrecondition(format!(
                            "id: latent lat-{id} is used by {} job job-{}; cancel it or wait for it to finish",
                            if job.state == JobState::Running { "running" } else { "queued" },
                            job.id
                        )));
                    }
                    let others: Vec<i64> = job
                        .reads
                        .iter()
                        .chain(job.produced.iter())
                        .filter(|&&l| l != id)
                        .map(|l| i64_of(*l))
                        .collect();
                    let alive = tx
                        .query_one(
                            "SELECT count(*) FROM latents WHERE id = ANY($1)",
                            &[&others],
                        )
                        .await
                        .map_err(db_err("read latents"))?
                        .get::<_, i64>(0);
                    if alive == 0 {
                        doomed.push(i64_of(job.id));
                    }
                }
                tx.execute("DELETE FROM jobs WHERE id = ANY($1)", &[&doomed])
                    .await
                    .map_err(db_err("delete jobs"))?;
                tx.execute("DELETE FROM latents WHERE id = $1", &[&lid])
                    .await
                    .map_err(db_err("delete a latent"))?;
                tx.execute("SELECT pg_notify($1, $2)", &[&LIBRARY_CHANNEL, &msg])
                    .await
                    .map_err(db_err("notify"))?;
                tx.commit().await.map_err(db_err("commit"))?;
                Ok(doomed.len() as u32)
            })
        })
    }

    // ------------------------------------------------------------------ ids --

    pub fn next_id(&self) -> Result<u64> {
        self.run(|pg| Box::pin(async move { pg.next_id().await }))
    }

    /// The next id the sequence hands out.
    pub fn counter(&self) -> Result<u64> {
        self.run(|pg| Box::pin(async move { Ok(pg.counts().await?.next_id) }))
    }

    pub fn is_empty(&self) -> Result<bool> {
        self.run(|pg| {
            Box::pin(async move {
                let c = pg.counts().await?;
                Ok(c.latents == 0 && c.jobs == 0)
            })
        })
    }

    // --------------------------------------------------------------- jobs --

    /// Jobs waiting in the shared queue, every daemon's (claimed or not): what
    /// `--max-queue` bounds on this store.
    pub fn queued_count(&self) -> Result<u64> {
        self.run(|pg| {
            Box::pin(async move {
                let c = pg.client().await?;
                let row = c
                    .query_one("SELECT count(*) FROM jobs WHERE state = 'queued'", &[])
                    .await
                    .map_err(db_err("count the queued jobs"))?;
                Ok(row.get::<_, i64>(0) as u64)
            })
        })
    }

    /// How many queued jobs come before job `id` in the shared queue (priority,
    /// then id: the claim order), whichever daemon will run them; `None` when `id`
    /// is not queued.
    pub fn queue_position(&self, id: u64) -> Result<Option<u32>> {
        self.run(move |pg| {
            Box::pin(async move {
                let c = pg.client().await?;
                let row = c
                    .query_opt(
                        "SELECT (SELECT count(*) FROM jobs q WHERE q.state = 'queued' \
                         AND (q.priority, q.id) < (me.priority, me.id)) \
                         FROM jobs me WHERE me.id = $1 AND me.state = 'queued'",
                        &[&i64_of(id)],
                    )
                    .await
                    .map_err(db_err("a queue position"))?;
                Ok(row.map(|r| r.get::<_, i64>(0).clamp(0, u32::MAX as i64) as u32))
            })
        })
    }

    pub fn get_job(&self, id: u64) -> Result<Option<JobRecord>> {
        self.run(move |pg| {
            Box::pin(async move {
                let c = pg.client().await?;
                let r = c
                    .query_opt("SELECT record FROM jobs WHERE id = $1", &[&i64_of(id)])
                    .await
                    .map_err(db_err("read a job"))?;
                r.as_ref().map(job_of).transpose()
            })
        })
    }

    pub fn job_by_key(&self, k: &str) -> Result<Option<JobRecord>> {
        let k = k.to_string();
        self.run(move |pg| {
            Box::pin(async move {
                let c = pg.client().await?;
                let r = c
                    .query_opt("SELECT record FROM jobs WHERE idempotency_key = $1", &[&k])
                    .await
                    .map_err(db_err("read a job"))?;
                r.as_ref().map(job_of).transpose()
            })
        })
    }

    fn job_bytes(&self, id: u64, col: &'static str) -> Result<Option<Vec<u8>>> {
        self.run(move |pg| {
            Box::pin(async move {
                let c = pg.client().await?;
                let r = c
                    .query_opt(
                        &format!("SELECT {col} FROM jobs WHERE id = $1"),
                        &[&i64_of(id)],
                    )
                    .await
                    .map_err(db_err("read a job"))?;
                Ok(r.and_then(|r| r.get::<_, Option<Vec<u8>>>(0)))
            })
        })
    }

    pub fn job_spec(&self, id: u64) -> Result<Option<Vec<u8>>> {
        self.job_bytes(id, "spec")
    }

    pub fn job_result(&self, id: u64) -> Result<Option<Vec<u8>>> {
        self.job_bytes(id, "result")
    }

    /// Inserts a queued job pinned to this daemon's model; a taken idempotency key
    /// returns the job that has it (`ON CONFLICT DO NOTHING`). With `--max-queue`
    /// set, a submit is refused (`QueueFull`) while that many jobs wait in the
    /// database: the count and the insert run under one advisory lock, so
    /// submits to several daemons at once cannot overshoot the bound.
    pub fn insert_job(&self, job: &JobRecord, spec: &[u8]) -> Result<Inserted> {
        let (job, spec) = (job.clone(), spec.to_vec());
        let fp = self.fingerprint.get().cloned();
        let max = self.max_queue.get().copied();
        self.run(move |pg| {
            Box::pin(async move {
                let mut c = pg.client().await?;
                let tx = c.transaction().await.map_err(db_err("begin"))?;
                let key = (!job.idempotency_key.is_empty()).then_some(job.idempotency_key.clone());
                if let Some(max) = max {
                    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SUBMIT_LOCK_KEY])
                        .await
                        .map_err(db_err("take the submit lock"))?;
                    let n = tx
                        .query_one("SELECT count(*) FROM jobs WHERE state = 'queued'", &[])
                        .await
                        .map_err(db_err("count the queued jobs"))?
                        .get::<_, i64>(0) as u64;
                    if n >= max {
                        // A retried submit whose job is in already is answered
                        // with that job, full queue or not.
                        return match job_by_key(&tx, &key).await? {
                            Some(j) => Ok(Inserted::Existing(j)),
                            None => Err(queue_full(n, max)),
                        };
                    }
                }
                let n = tx
                    .execute(
                        "INSERT INTO jobs (id, record, kind, state, priority, created_ms, attempts, \
                         fingerprint, spec, idempotency_key) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10) \
                         ON CONFLICT (idempotency_key) DO NOTHING",
                        &[
                            &i64_of(job.id),
                            &Json(&job),
                            &job.kind.as_str(),
                            &state_name(job.state),
                            &priority_num(job.priority),
                            &job.created_ms,
                            &(job.attempts as i32),
                            &fp,
                            &spec,
                            &key,
                        ],
                    )
                    .await
                    .map_err(db_err("insert a job"))?;
                if n == 0 {
                    let j = job_by_key(&tx, &key).await?;
                    return j.map(Inserted::Existing).ok_or_else(|| {
                        ServerError::Internal("a job's idempotency key vanished".into())
                    });
                }
                let reads: Vec<i64> = job.reads.iter().map(|l| i64_of(*l)).collect();
                let linked = tx
                    .execute(
                        "INSERT INTO job_latents (latent, job) SELECT l, $2 FROM unnest($1::bigint[]) l",
                        &[&reads, &i64_of(job.id)],
                    )
                    .await;
                if let Err(e) = linked {
                    if e.code() == Some(&tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION) {
                        return Err(ServerError::not_found("spec", "latent", "a latent it reads"));
                    }
                    return Err(db_err("link a job")(e));
                }
                let pinned = fp.clone().unwrap_or_default();
                tx.execute("SELECT pg_notify($1, $2)", &[&QUEUE_CHANNEL, &pinned])
                    .await
                    .map_err(db_err("notify"))?;
                tx.commit().await.map_err(db_err("commit"))?;
                Ok(Inserted::New(job))
            })
        })
        .inspect(|i| {
            if matches!(i, Inserted::New(_)) {
                self.wake.set();
            }
        })
    }

    /// Writes a job whose state moved from `from`. Queued → running is this
    /// daemon's start of a job it claimed (or that nobody holds); a move from
    /// running needs this daemon's lease; a queued job's cancel needs no lease.
    pub fn move_job(&self, job: &JobRecord, from: JobState) -> Result<()> {
        let job = job.clone();
        let me = self.daemon.clone();
        let lease = self.lease_ms();
        self.run(move |pg| {
            Box::pin(async move {
                let c = pg.client().await?;
                let (id, rec, st, att) = (
                    i64_of(job.id),
                    Json(&job),
                    state_name(job.state),
                    job.attempts as i32,
                );
                let n = match (from, job.state) {
                    (JobState::Queued, JobState::Running) => c
                        .execute(
                            &format!(
                                "UPDATE jobs SET {SET_JOB}, lease_owner = $5, ran_by = $5, \
                                 lease_until = now() + $6 * interval '1 millisecond' \
                                 WHERE id = $1 AND state = 'queued' AND (lease_owner IS NULL \
                                 OR lease_owner = $5 OR lease_until < now())"
                            ),
                            &[&id, &rec, &st, &att, &me, &lease],
                        )
                        .await,
                    (JobState::Queued, _) => c
                        .execute(
                            &format!("UPDATE jobs SET {SET_JOB} WHERE id = $1 AND state = 'queued'"),
                            &[&id, &rec, &st, &att],
                        )
                        .await,
                    (_, next) => {
                        let keep_lease = next == JobState::Running;
                        c.execute(
                            &format!(
                                "UPDATE jobs SET {SET_JOB}{} WHERE id = $1 AND state = $6 \
                                 AND lease_owner = $5",
                                if keep_lease { "" } else { ", lease_until = NULL" }
                            ),
                            &[&id, &rec, &st, &att, &me, &state_name(from)],
                        )
                        .await
                    }
                }
                .map_err(db_err("move a job"))?;
                if n == 0 {
                    return Err(ServerError::FailedPrecondition(format!(
                        "job-{} is not {} under this daemon's lease (another daemon holds it, or the lease ran out)",
                        job.id,
                        state_name(from)
                    )));
                }
                let msg = note(&me, job.id, st, job.attempts, vec![]);
                c.execute("SELECT pg_notify($1, $2)", &[&JOBS_CHANNEL, &msg])
                    .await
                    .map_err(db_err("notify"))?;
                if from != JobState::Queued && job.state == JobState::Queued {
                    // Back in the queue (a graceful stop): any daemon may take it.
                    c.execute("SELECT pg_notify($1, '')", &[&QUEUE_CHANNEL])
                        .await
                        .map_err(db_err("notify"))?;
                }
                Ok(())
            })
        })
    }

    /// Commits a finished job (record, result, latents, links) in one transaction,
    /// only while it runs under this daemon's lease.
    pub fn finish_job(&self, job: &JobRecord, result: &[u8], latents: &[NewLatent]) -> Result<()> {
        let (job, result, latents) = (job.clone(), result.to_vec(), latents.to_vec());
        let me = self.daemon.clone();
        self.run(move |pg| {
            Box::pin(async move {
                let mut c = pg.client().await?;
                let tx = c.transaction().await.map_err(db_err("begin"))?;
                let n = tx
                    .execute(
                        &format!(
                            "UPDATE jobs SET {SET_JOB}, result = $5, lease_until = NULL \
                             WHERE id = $1 AND state = 'running' AND lease_owner = $6"
                        ),
                        &[
                            &i64_of(job.id),
                            &Json(&job),
                            &state_name(job.state),
                            &(job.attempts as i32),
                            &result,
                            &me,
                        ],
                    )
                    .await
                    .map_err(db_err("finish a job"))?;
                if n == 0 {
                    return Err(ServerError::FailedPrecondition(format!(
                        "job-{} is not running under this daemon's lease (the lease ran out; another daemon may have run it): the result is not written",
                        job.id
                    )));
                }
                for l in &latents {
                    let r = &l.record;
                    let xt: Vec<u8> = l.xt.iter().flat_map(|v| v.to_le_bytes()).collect();
                    let parents: Vec<i64> = r.origin.parents().iter().map(|p| i64_of(*p)).collect();
                    tx.execute(
                        "INSERT INTO latents (id, record, name, lower_name, tags, created_ms, \
                         encode_steps, origin, parents, fingerprint, job_id, xt, source, preview) \
                         VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14)",
                        &[
                            &i64_of(r.id),
                            &Json(r),
                            &r.name,
                            &r.name.to_lowercase(),
                            &r.tags,
                            &r.created_ms,
                            &i32::try_from(r.encode_steps).unwrap_or(i32::MAX),
                            &r.origin.name(),
                            &parents,
                            &r.fingerprint,
                            &i64_of(r.job_id),
                            &xt,
                            &l.source_png,
                            &Some(l.preview_png.clone()),
                        ],
                    )
                    .await
                    .map_err(db_err("insert a latent"))?;
                    tx.execute(
                        "INSERT INTO job_latents (latent, job) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                        &[&i64_of(r.id), &i64_of(job.id)],
                    )
                    .await
                    .map_err(db_err("link a latent"))?;
                }
                let made = latents.iter().map(|l| l.record.id).collect();
                let msg = note(&me, job.id, "done", job.attempts, made);
                tx.execute("SELECT pg_notify($1, $2)", &[&JOBS_CHANNEL, &msg])
                    .await
                    .map_err(db_err("notify"))?;
                tx.commit().await.map_err(db_err("commit"))?;
                Ok(())
            })
        })
    }

    /// Jobs newest first, filtered by state, by kind (empty: all) and by a latent.
    pub fn list_jobs(
        &self,
        states: &[JobState],
        kinds: &[JobKind],
        latent: Option<u64>,
        limit: usize,
    ) -> Result<Vec<JobRecord>> {
        let states: Vec<&'static str> = states.iter().map(|s| state_name(*s)).collect();
        let kinds: Vec<&'static str> = kinds.iter().map(|k| k.as_str()).collect();
        let latent = latent.map(i64_of);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.run(move |pg| {
            Box::pin(async move {
                let c = pg.client().await?;
                let rows = c
                    .query(
                        "SELECT record FROM jobs j WHERE (cardinality($1::text[]) = 0 OR state = ANY($1)) \
                         AND ($2::bigint IS NULL OR EXISTS (SELECT 1 FROM job_latents l \
                         WHERE l.job = j.id AND l.latent = $2)) \
                         AND (cardinality($4::text[]) = 0 OR kind = ANY($4)) \
                         ORDER BY id DESC LIMIT $3",
                        &[&states, &latent, &limit, &kinds],
                    )
                    .await
                    .map_err(db_err("list jobs"))?;
                rows.iter().map(job_of).collect()
            })
        })
    }

    /// Every job, oldest first.
    pub fn all_jobs(&self) -> Result<Vec<JobRecord>> {
        self.list_jobs(&[], &[], None, usize::MAX).map(|mut v| {
            v.reverse();
            v
        })
    }

    /// Writes a job record as is.
    pub fn put_job(&self, job: &JobRecord) -> Result<()> {
        let job = job.clone();
        self.run(move |pg| {
            Box::pin(async move {
                let c = pg.client().await?;
                c.execute(
                    &format!("UPDATE jobs SET {SET_JOB} WHERE id = $1"),
                    &[
                        &i64_of(job.id),
                        &Json(&job),
                        &state_name(job.state),
                        &(job.attempts as i32),
                    ],
                )
                .await
                .map_err(db_err("write a job"))?;
                Ok(())
            })
        })
    }

    /// Asks the daemon running job `id` to cancel it (it sees the flag when it
    /// renews its lease).
    pub fn request_cancel(&self, id: u64) -> Result<()> {
        self.run(move |pg| {
            Box::pin(async move {
                let c = pg.client().await?;
                c.execute(
                    "UPDATE jobs SET cancel_requested = true WHERE id = $1",
                    &[&i64_of(id)],
                )
                .await
                .map_err(db_err("request a cancel"))?;
                Ok(())
            })
        })
    }

    // ------------------------------------------------------- claims, leases --

    /// Claims runnable jobs for this daemon: the first queued job (priority, then
    /// id) of this model (or unpinned) that no live lease holds, and when it is
    /// batchable, up to `room - 1` more of the same batch key. `SKIP LOCKED`: two
    /// daemons claiming at once never wait on or take the same row.
    pub fn claim(&self, room: u32) -> Result<Vec<Claimed>> {
        let me = self.daemon.clone();
        let fp = self.fingerprint.get().cloned();
        let lease = self.lease_ms();
        self.run(move |pg| {
            Box::pin(async move {
                let c = pg.client().await?;
                // RETURNING comes in no particular order: the claimed jobs are sorted
                // again (priority, then id), so a batch runs and settles its jobs in
                // queue order, as on sled.
                let claim = |extra: &str, limit: i64| {
                    format!(
                        "WITH claimed AS (UPDATE jobs SET lease_owner = $1, ran_by = $1, \
                         lease_until = now() + $3 * interval '1 millisecond' \
                         WHERE id IN (SELECT id FROM jobs WHERE state = 'queued' \
                         AND (fingerprint IS NULL OR fingerprint = $2) \
                         AND (lease_owner IS NULL OR lease_until IS NULL OR lease_until < now()){extra} \
                         ORDER BY priority, id FOR UPDATE SKIP LOCKED LIMIT {limit}) \
                         RETURNING record, priority, id) \
                         SELECT record FROM claimed ORDER BY priority, id"
                    )
                };
                let first = c
                    .query(&claim("", 1), &[&me, &fp, &lease])
                    .await
                    .map_err(db_err("claim a job"))?;
                let mut out = first.iter().map(job_of).collect::<Result<Vec<_>>>()?;
                if let Some(key) = out.first().and_then(|j| j.batch) {
                    let rows = out[0].rows;
                    if room > rows {
                        let more = c
                            .query(
                                &claim(
                                    " AND record->'batch' = $4",
                                    i64::from(room - rows),
                                ),
                                &[&me, &fp, &lease, &Json(key)],
                            )
                            .await
                            .map_err(db_err("claim jobs"))?;
                        for r in &more {
                            out.push(job_of(r)?);
                        }
                    }
                }
                Ok(out.into_iter().map(|record| Claimed { record }).collect())
            })
        })
    }

    /// Renews the leases of `ids` (jobs this daemon holds); returns the ids whose
    /// lease it still holds, and those of them whose cancel was requested.
    pub fn renew(&self, ids: Vec<u64>) -> Result<(Vec<u64>, Vec<u64>)> {
        let me = self.daemon.clone();
        let lease = self.lease_ms();
        self.run(move |pg| {
            Box::pin(async move {
                let c = pg.client().await?;
                let ids: Vec<i64> = ids.into_iter().map(i64_of).collect();
                let rows = c
                    .query(
                        "UPDATE jobs SET lease_until = now() + $3 * interval '1 millisecond' \
                         WHERE id = ANY($1) AND lease_owner = $2 AND state IN ('queued', 'running') \
                         RETURNING id, cancel_requested",
                        &[&ids, &me, &lease],
                    )
                    .await
                    .map_err(db_err("renew leases"))?;
                let held = rows.iter().map(|r| r.get::<_, i64>(0) as u64).collect();
                let cancel = rows
                    .iter()
                    .filter(|r| r.get::<_, bool>(1))
                    .map(|r| r.get::<_, i64>(0) as u64)
                    .collect();
                Ok((held, cancel))
            })
        })
    }

    /// Puts running jobs whose lease ran out back in the queue (a daemon that
    /// crashed or was cut off), failing as `interrupted` those that used up
    /// `max_attempts`. Returns (re-queued, failed) ids.
    pub fn sweep(&self, max_attempts: u32, now_ms: i64) -> Result<(Vec<u64>, Vec<u64>)> {
        self.run(move |pg| {
            Box::pin(async move {
                let c = pg.client().await?;
                let failed = c
                    .query(
                        "UPDATE jobs SET state = 'failed', lease_until = NULL, \
                         record = record || jsonb_build_object('state', 'failed', 'error', 'interrupted', 'finished_ms', $2::bigint) \
                         WHERE state = 'running' AND lease_until < now() AND attempts >= $1 RETURNING id",
                        &[&(max_attempts as i32), &now_ms],
                    )
                    .await
                    .map_err(db_err("sweep leases"))?;
                let again = c
                    .query(
                        "UPDATE jobs SET state = 'queued', lease_owner = NULL, lease_until = NULL, \
                         record = record || jsonb_build_object('state', 'queued', 'started_ms', 0) \
                         WHERE state = 'running' AND lease_until < now() RETURNING id",
                        &[],
                    )
                    .await
                    .map_err(db_err("sweep leases"))?;
                if !again.is_empty() {
                    c.execute("SELECT pg_notify($1, '')", &[&QUEUE_CHANNEL])
                        .await
                        .map_err(db_err("notify"))?;
                }
                let ids = |v: Vec<tokio_postgres::Row>| {
                    v.iter().map(|r| r.get::<_, i64>(0) as u64).collect()
                };
                Ok((ids(again), ids(failed)))
            })
        })
    }

    /// The daemons sharing the store whose heartbeat is within three leases (of
    /// this daemon's), by id.
    pub fn daemons(&self) -> Result<Vec<ddim_proto::v1::StoreDaemon>> {
        let lease = self.lease_ms() * 3.0;
        self.run(move |pg| {
            Box::pin(async move {
                let c = pg.client().await?;
                let rows = c
                    .query(
                        "SELECT id, address, device, fingerprint, running_job, \
                         (extract(epoch FROM heartbeat) * 1000)::bigint, \
                         (extract(epoch FROM started) * 1000)::bigint FROM daemons \
                         WHERE heartbeat > now() - $1 * interval '1 millisecond' ORDER BY id",
                        &[&lease],
                    )
                    .await
                    .map_err(db_err("list daemons"))?;
                Ok(rows
                    .iter()
                    .map(|r| ddim_proto::v1::StoreDaemon {
                        id: r.get(0),
                        address: r.get(1),
                        device: r.get(2),
                        fingerprint: r.get(3),
                        running_job_id: r
                            .get::<_, Option<i64>>(4)
                            .map_or(String::new(), |j| format!("job-{j}")),
                        heartbeat_unix_ms: r.get(5),
                        started_unix_ms: r.get(6),
                    })
                    .collect())
            })
        })
    }

    /// Upserts this daemon's row in `daemons` and beats its heartbeat.
    pub fn heartbeat(&self, address: &str, device: &str, running: Option<u64>) -> Result<()> {
        let (me, address, device) = (self.daemon.clone(), address.to_string(), device.to_string());
        let fp = self.fingerprint.get().cloned().unwrap_or_default();
        let running = running.map(i64_of);
        self.run(move |pg| {
            Box::pin(async move {
                let c = pg.client().await?;
                c.execute(
                    "INSERT INTO daemons (id, address, device, fingerprint, running_job) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO UPDATE SET address = $2, \
                     device = $3, fingerprint = $4, running_job = $5, heartbeat = now()",
                    &[&me, &address, &device, &fp, &running],
                )
                .await
                .map_err(db_err("heartbeat"))?;
                Ok(())
            })
        })
    }
}

impl PgStore {
    /// Listens on [`JOBS_CHANNEL`] and [`LIBRARY_CHANNEL`] on a connection of its
    /// own and sends every notification of another daemon to `tx` as (channel,
    /// note); a [`QUEUE_CHANNEL`] notification of this daemon's model (or of any)
    /// wakes the claimer ([`PgStore::wake`]). When the connection drops (a database
    /// restart) it reconnects with a capped exponential backoff, logging once per
    /// outage, LISTENs again, and catches up on what other daemons did meanwhile
    /// (notifications sent while nobody listened are lost): the jobs they started
    /// or ended since the connection dropped go to `tx` as notes. Stops when `tx` is
    /// closed.
    pub fn listen(&self, tx: std::sync::mpsc::Sender<(String, Note)>) {
        let l = Listener {
            cfg: self.pg.config().clone(),
            tls: self.pg.tls().clone(),
            me: self.daemon.clone(),
            fingerprint: self.fingerprint.get().cloned().unwrap_or_default(),
            wake: self.wake.clone(),
            tx,
        };
        let rt = self.rt.as_ref().expect("runtime until drop");
        rt.spawn(async move {
            let mut backoff = Backoff::default();
            // Since when (Unix ms) the connection is down, while it is.
            let mut lost: Option<i64> = None;
            loop {
                let mut connected = false;
                let r = l.once(lost, &mut connected).await;
                if connected {
                    backoff.reset();
                    lost = None;
                }
                match r {
                    Ok(()) => return,
                    Err(e) => {
                        if lost.is_none() {
                            tracing::warn!(
                                "listening for other daemons: {e}; reconnecting with backoff"
                            );
                            lost = Some(crate::server::conversions::now_ms());
                        }
                        // Queue notifications missed meanwhile: the claimer's
                        // fallback poll (fleet.rs CLAIM_POLL) finds those jobs.
                        tokio::time::sleep(backoff.pause()).await;
                    }
                }
            }
        });
    }
}

/// The LISTEN side of a daemon (see [`PgStore::listen`]).
struct Listener {
    cfg: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    me: String,
    fingerprint: String,
    wake: Arc<Wake>,
    tx: std::sync::mpsc::Sender<(String, Note)>,
}

impl Listener {
    /// One LISTEN connection until it fails (`Err`) or `tx` is closed (`Ok`);
    /// `connected` once it listens. `lost`: since when the previous connection
    /// was down (then it catches up first).
    async fn once(
        &self,
        lost: Option<i64>,
        connected: &mut bool,
    ) -> std::result::Result<(), String> {
        let own = |channel: &str, payload: &str| {
            if channel == QUEUE_CHANNEL {
                if payload.is_empty() || payload == self.fingerprint {
                    self.wake.set();
                }
                // A job queued anywhere may move the places of those waiting:
                // watchers read theirs again (an empty note on the queue channel).
                let _ = self.tx.send((
                    QUEUE_CHANNEL.to_string(),
                    Note {
                        d: String::new(),
                        id: 0,
                        state: String::new(),
                        attempt: 0,
                        latents: vec![],
                        progress: None,
                    },
                ));
                true
            } else {
                false
            }
        };
        listen_once(
            &self.cfg, &self.tls, &self.me, &self.tx, own, lost, connected,
        )
        .await
    }
}

/// How far before the moment its connection was seen dropped the listener looks
/// back when it catches up: a cut connection may take a minute to be noticed
/// (`TCP_TIMEOUT` of silence, then probes for as long again), notifications are
/// lost from the cut on, and job times are the daemons' clocks. Looking too far
/// back only repeats events, which watchers take twice without harm (they read
/// the job; a library reload).
const CATCH_UP_MARGIN_MS: i64 = 3 * super::TCP_TIMEOUT.as_millis() as i64;

/// What other daemons did while this one was not listening: a note for each job
/// (not run by `me`) that started or ended since `since` (Unix ms, less
/// [`CATCH_UP_MARGIN_MS`]), as its notification would have said. Returns how many.
async fn catch_up(
    client: &tokio_postgres::Client,
    me: &str,
    since: i64,
    tx: &std::sync::mpsc::Sender<(String, Note)>,
) -> std::result::Result<usize, String> {
    let rows = client
        .query(
            "SELECT record FROM jobs WHERE ran_by IS DISTINCT FROM $1 AND \
             ((state IN ('done', 'failed', 'cancelled') AND (record->>'finished_ms')::bigint >= $2) \
             OR (state = 'running' AND (record->>'started_ms')::bigint >= $2)) ORDER BY id",
            &[&me, &(since - CATCH_UP_MARGIN_MS)],
        )
        .await
        .map_err(|e| super::error_text(&e))?;
    let mut n = 0;
    for row in &rows {
        let Ok(j) = job_of(row) else { continue };
        let note = Note {
            d: String::new(),
            id: j.id,
            state: state_name(j.state).to_string(),
            attempt: j.attempts,
            latents: j.produced.clone(),
            progress: None,
        };
        if tx.send((JOBS_CHANNEL.to_string(), note)).is_err() {
            break;
        }
        n += 1;
    }
    Ok(n)
}

/// One LISTEN connection until it fails (`Err`) or `tx` is closed (`Ok`).
/// `own(channel, payload)` takes the notifications it handles itself (true);
/// `connected` is set once the LISTEN is in place, after catching up on what
/// happened since `lost` (see [`catch_up`]).
async fn listen_once(
    cfg: &tokio_postgres::Config,
    tls: &tokio_postgres_rustls::MakeRustlsConnect,
    me: &str,
    tx: &std::sync::mpsc::Sender<(String, Note)>,
    own: impl Fn(&str, &str) -> bool,
    lost: Option<i64>,
    connected: &mut bool,
) -> std::result::Result<(), String> {
    use futures::StreamExt;
    let (client, mut conn) = cfg
        .connect(tls.clone())
        .await
        .map_err(|e| super::error_text(&e))?;
    let (ntx, mut nrx) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut stream = futures::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(m) = stream.next().await {
            match m {
                Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                    if ntx.send(n).is_err() {
                        return Ok(());
                    }
                }
                Ok(_) => {}
                Err(e) => return Err(super::error_text(&e)),
            }
        }
        Err("the connection closed".to_string())
    });
    client
        .batch_execute(&format!(
            "LISTEN {JOBS_CHANNEL}; LISTEN {LIBRARY_CHANNEL}; LISTEN {QUEUE_CHANNEL}"
        ))
        .await
        .map_err(|e| super::error_text(&e))?;
    if let Some(since) = lost {
        let n = catch_up(&client, me, since, tx).await?;
        tracing::info!(caught_up = n, "listening for other daemons again");
    }
    *connected = true;
    while let Some(n) = nrx.recv().await {
        if own(n.channel(), n.payload()) {
            continue;
        }
        let Ok(note) = serde_json::from_str::<Note>(n.payload()) else {
            continue;
        };
        if note.d == me {
            continue;
        }
        if tx.send((n.channel().to_string(), note)).is_err() {
            driver.abort();
            return Ok(());
        }
    }
    match driver.await {
        Ok(Err(e)) => Err(e),
        _ => Err("the connection closed".to_string()),
    }
}

/// Whether a latent's PNG is expected (a missing one is damage).
pub(crate) fn png_expected(r: &LatentRecord, which: LatentPng) -> bool {
    match which {
        LatentPng::Preview => true,
        LatentPng::Source => matches!(
            r.origin,
            OriginRecord::Encoded {
                has_source: true,
                ..
            }
        ),
    }
}

/// Runs `f` on `rt` and waits for it: a plain wait on a thread outside any
/// runtime or on a blocking thread; `block_in_place` on a worker thread of a
/// multi-thread runtime.
fn wait<T: Send + 'static>(
    rt: &tokio::runtime::Handle,
    f: impl Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    rt.spawn(async move {
        let _ = tx.send(f.await);
    });
    let recv = move || {
        rx.recv()
            .unwrap_or_else(|_| Err(ServerError::Unavailable("the database task stopped".into())))
    };
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(recv)
        }
        _ => recv(),
    }
}

impl PgStore {
    /// Sends `payloads` on `channel` in one statement (progress notes, which
    /// belong to no transaction).
    pub fn notify(&self, channel: &'static str, payloads: Vec<String>) -> Result<()> {
        self.run(move |pg| {
            Box::pin(async move {
                let c = pg.client().await?;
                c.execute(
                    "SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p",
                    &[&channel, &payloads],
                )
                .await
                .map_err(db_err("notify"))?;
                Ok(())
            })
        })
    }
}
