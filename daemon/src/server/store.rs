//! The typed store: sled hidden behind records and state moves.
//!
//! One tree per record kind, keyed by big-endian `u64` ids from
//! `Db::generate_id`, so key order is creation order:
//!
//! | tree             | key                     | value                              |
//! |------------------|-------------------------|------------------------------------|
//! | `latents`        | latent id               | [`LatentRecord`] (JSON, `v`)       |
//! | `latent_xt`      | latent id               | x_T, f32 little-endian [C, H, W]   |
//! | `latent_source`  | latent id               | source PNG at model size           |
//! | `latent_preview` | latent id               | preview PNG (x_0 at preview_steps) |
//! | `jobs`           | job id                  | [`JobRecord`] (JSON, `v`)          |
//! | `job_specs`      | job id                  | `ddim.v1.JobSpec` (protobuf)       |
//! | `job_results`    | job id                  | `ddim.v1.JobResult` (protobuf)     |
//! | `idempotency`    | key bytes               | job id                             |
//! | `job_latents`    | latent id ‖ job id      | empty: jobs that read or made it   |
//!
//! Every write that touches several trees is one transaction whose closure has
//! no side effects (sled retries it). Writers serialise on one mutex so that
//! the checks made before a transaction (scans are not transactional) still
//! hold inside it, and so that the in-memory catalogue of latent metadata (the
//! name/tag index `ListLatents` pages through) follows the store exactly.
//! Callers flush before acknowledging a write.
//!
//! Flushes take the same mutex as the transactions. sled 0.34 deadlocks when
//! a transaction waits for its exclusive lock while `flush_async` threads hold
//! shared locks and wait for the background flusher, which itself queues
//! behind the transaction (seen here under 16 concurrent submits: worker in
//! `ConcurrencyControl::write`, flusher in `read`, sled-io threads in
//! `make_stable`). So there is no `flush_async`: async callers run
//! [`Store::flush`] on the blocking pool.
use serde::{Deserialize, Serialize};
use sled::transaction::{abort, ConflictableTransactionError, TransactionalTree};
use sled::{Transactional, Tree};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use super::error::{Result, ServerError};

/// Version of the record formats written by this build.
pub const RECORD_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Done,
    Failed,
    Cancelled,
}

impl JobState {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Done | JobState::Failed | JobState::Cancelled
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Interactive,
    Batch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    Encode,
    Sample,
    Decode,
    Reconstruct,
    Interpolate,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Encode => "encode",
            JobKind::Sample => "sample",
            JobKind::Decode => "decode",
            JobKind::Reconstruct => "reconstruct",
            JobKind::Interpolate => "interpolate",
        }
    }
}

/// What jobs can share one batched model call per step: same S, η, spacing
/// and σ̂ (η kept as its bit pattern so the key is `Eq`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BatchKey {
    pub steps: u32,
    pub eta_bits: u32,
    /// Index in `Spacing::ALL`.
    pub spacing: u8,
    pub sigma_hat: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub v: u32,
    pub id: u64,
    pub kind: JobKind,
    pub state: JobState,
    pub priority: Priority,
    pub created_ms: i64,
    pub started_ms: i64,
    pub finished_ms: i64,
    pub attempts: u32,
    pub error: String,
    /// Model calls the job makes.
    pub total_steps: u32,
    /// Latents the job reads.
    pub reads: Vec<u64>,
    /// Latents the job made (set when DONE).
    pub produced: Vec<u64>,
    pub idempotency_key: String,
    /// Set when the job can share model calls with others.
    pub batch: Option<BatchKey>,
    /// Rows (samples) the job puts in a batch.
    pub rows: u32,
    /// Images the job produces (for images/s).
    pub images: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum OriginRecord {
    Encoded {
        filename: String,
        has_source: bool,
    },
    Sampled {
        seed: u64,
        index: u32,
    },
    Interpolated {
        a: u64,
        b: u64,
        alpha: f32,
        method: String,
    },
}

impl OriginRecord {
    pub fn name(&self) -> &'static str {
        match self {
            OriginRecord::Encoded { .. } => "encoded",
            OriginRecord::Sampled { .. } => "sampled",
            OriginRecord::Interpolated { .. } => "interpolated",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatentRecord {
    pub v: u32,
    pub id: u64,
    pub name: String,
    pub tags: Vec<String>,
    pub created_ms: i64,
    pub shape: [u32; 3],
    pub fingerprint: String,
    pub encode_steps: u32,
    /// Spacing name of the encode, empty when not encoded.
    pub encode_spacing: String,
    pub origin: OriginRecord,
    pub preview_steps: u32,
    pub job_id: u64,
}

/// A latent to create when a job commits.
#[derive(Debug, Clone)]
pub struct NewLatent {
    pub record: LatentRecord,
    pub xt: Vec<f32>,
    pub source_png: Option<Vec<u8>>,
    pub preview_png: Vec<u8>,
}

/// Which PNG of a latent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatentPng {
    Preview,
    Source,
}

/// Filter of `ListLatents`.
#[derive(Debug, Clone, Default)]
pub struct LatentFilter {
    /// Lower-case substring of the name.
    pub name_contains: String,
    pub tag: String,
    /// "", "encoded", "sampled" or "interpolated".
    pub origin: String,
}

impl LatentFilter {
    fn matches(&self, r: &CatalogEntry) -> bool {
        (self.origin.is_empty() || r.record.origin.name() == self.origin)
            && (self.name_contains.is_empty() || r.lower_name.contains(&self.name_contains))
            && (self.tag.is_empty() || r.record.tags.contains(&self.tag))
    }
}

struct CatalogEntry {
    record: Arc<LatentRecord>,
    lower_name: String,
}

/// Latent metadata in memory, newest last, with a tag index.
#[derive(Default)]
struct Catalog {
    by_id: BTreeMap<u64, CatalogEntry>,
    by_tag: HashMap<String, BTreeSet<u64>>,
}

impl Catalog {
    fn insert(&mut self, r: LatentRecord) {
        self.remove(r.id);
        for t in &r.tags {
            self.by_tag.entry(t.clone()).or_default().insert(r.id);
        }
        let lower_name = r.name.to_lowercase();
        self.by_id.insert(
            r.id,
            CatalogEntry {
                record: Arc::new(r),
                lower_name,
            },
        );
    }

    fn remove(&mut self, id: u64) {
        if let Some(old) = self.by_id.remove(&id) {
            for t in &old.record.tags {
                if let Some(set) = self.by_tag.get_mut(t) {
                    set.remove(&id);
                    if set.is_empty() {
                        self.by_tag.remove(t);
                    }
                }
            }
        }
    }

    /// One page, newest first, of the latents matching `f` with ids below
    /// `before`; whether more follow; and how many match in all.
    ///
    /// With no filter, or a tag alone, the page is a range walk from `before`
    /// and the total a set size: O(page). A name or origin filter has to test
    /// every candidate to count the total: O(candidates).
    fn page(
        &self,
        f: &LatentFilter,
        before: Option<u64>,
        size: usize,
    ) -> (Vec<Arc<LatentRecord>>, bool, u64) {
        let end = before.unwrap_or(u64::MAX);
        let empty = BTreeSet::new();
        let tagged = if f.tag.is_empty() {
            None
        } else {
            Some(self.by_tag.get(&f.tag).unwrap_or(&empty))
        };
        let all = || -> Box<dyn DoubleEndedIterator<Item = u64> + '_> {
            match tagged {
                Some(set) => Box::new(set.iter().copied()),
                None => Box::new(self.by_id.keys().copied()),
            }
        };
        let below = || -> Box<dyn DoubleEndedIterator<Item = u64> + '_> {
            match tagged {
                Some(set) => Box::new(set.range(..end).copied()),
                None => Box::new(self.by_id.range(..end).map(|(k, _)| *k)),
            }
        };
        let fine = !f.name_contains.is_empty() || !f.origin.is_empty();
        let total = if fine {
            all().rev().filter(|id| f.matches(&self.by_id[id])).count() as u64
        } else {
            tagged.map_or(self.by_id.len(), |s| s.len()) as u64
        };
        let mut out = Vec::with_capacity(size);
        let mut more = false;
        for id in below().rev() {
            let e = &self.by_id[&id];
            if fine && !f.matches(e) {
                continue;
            }
            if out.len() == size {
                more = true;
                break;
            }
            out.push(e.record.clone());
        }
        (out, more, total)
    }
}

pub fn key(id: u64) -> [u8; 8] {
    id.to_be_bytes()
}

fn pair_key(latent: u64, job: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&latent.to_be_bytes());
    k[8..].copy_from_slice(&job.to_be_bytes());
    k
}

fn id_of(k: &[u8]) -> Result<u64> {
    let b: [u8; 8] = k
        .try_into()
        .map_err(|_| ServerError::Corrupt(format!("key of {} bytes", k.len())))?;
    Ok(u64::from_be_bytes(b))
}

fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("records serialise")
}

fn from_json<T: for<'de> Deserialize<'de>>(what: &str, id: u64, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| ServerError::Corrupt(format!("{what} {id}: {e}")))
}

type TxResult<T> = std::result::Result<T, ConflictableTransactionError<ServerError>>;

fn tx_job(jobs: &TransactionalTree, id: u64) -> TxResult<JobRecord> {
    match jobs.get(key(id))? {
        Some(b) => from_json("job", id, &b).map_err(ConflictableTransactionError::Abort),
        None => abort(ServerError::not_found("id", "job", format!("job-{id}"))),
    }
}

/// Outcome of [`Store::insert_job`].
pub enum Inserted {
    New(JobRecord),
    /// The idempotency key already named this job.
    Existing(JobRecord),
}

/// Counts of jobs by final state, read at start-up.
#[derive(Debug, Default, Clone, Copy)]
pub struct JobCounts {
    pub done: u64,
    pub failed: u64,
    pub cancelled: u64,
}

pub struct Store {
    db: sled::Db,
    latents: Tree,
    latent_xt: Tree,
    latent_source: Tree,
    latent_preview: Tree,
    jobs: Tree,
    job_specs: Tree,
    job_results: Tree,
    idempotency: Tree,
    job_latents: Tree,
    catalog: RwLock<Catalog>,
    write: Mutex<()>,
}

impl Store {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| {
            ServerError::Config(format!("--data {}: cannot create ({e})", dir.display()))
        })?;
        let db = sled::Config::new()
            .path(dir.join("store"))
            .open()
            .map_err(|e| match e {
                sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
                    ServerError::Config(format!(
                        "--data {}: the store is in use by another ddimd process",
                        dir.display()
                    ))
                }
                e => ServerError::Store(e),
            })?;
        Self::from_db(db)
    }

    /// A throw-away store (tests).
    pub fn temporary() -> Result<Self> {
        Self::from_db(sled::Config::new().temporary(true).open()?)
    }

    fn from_db(db: sled::Db) -> Result<Self> {
        let s = Store {
            latents: db.open_tree("latents")?,
            latent_xt: db.open_tree("latent_xt")?,
            latent_source: db.open_tree("latent_source")?,
            latent_preview: db.open_tree("latent_preview")?,
            jobs: db.open_tree("jobs")?,
            job_specs: db.open_tree("job_specs")?,
            job_results: db.open_tree("job_results")?,
            idempotency: db.open_tree("idempotency")?,
            job_latents: db.open_tree("job_latents")?,
            catalog: RwLock::new(Catalog::default()),
            write: Mutex::new(()),
            db,
        };
        {
            let mut cat = s.catalog.write().expect("catalog lock");
            for kv in s.latents.iter() {
                let (k, v) = kv?;
                let id = id_of(&k)?;
                cat.insert(from_json("latent", id, &v)?);
            }
        }
        Ok(s)
    }

    /// A fresh id (latents and jobs share the counter).
    pub fn next_id(&self) -> Result<u64> {
        Ok(self.db.generate_id()?)
    }

    /// Makes every write so far durable (fsync). Blocking.
    pub fn flush(&self) -> Result<()> {
        let _w = self.lock();
        self.db.flush()?;
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.latents.is_empty() && self.jobs.is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.write.lock().unwrap_or_else(|p| p.into_inner())
    }

    // ------------------------------------------------------------ latents --

    pub fn latent_count(&self) -> u64 {
        self.catalog.read().expect("catalog lock").by_id.len() as u64
    }

    pub fn get_latent(&self, id: u64) -> Option<Arc<LatentRecord>> {
        self.catalog
            .read()
            .expect("catalog lock")
            .by_id
            .get(&id)
            .map(|e| e.record.clone())
    }

    /// x_T of a latent as f32 values [C·H·W].
    pub fn latent_xt(&self, id: u64) -> Result<Vec<f32>> {
        let b = self
            .latent_xt
            .get(key(id))?
            .ok_or_else(|| ServerError::not_found("id", "latent", format!("lat-{id}")))?;
        if !b.len().is_multiple_of(4) {
            return Err(ServerError::Corrupt(format!(
                "x_T of latent {id}: {} bytes",
                b.len()
            )));
        }
        Ok(b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    pub fn latent_png(&self, id: u64, which: LatentPng) -> Result<Option<Vec<u8>>> {
        let tree = match which {
            LatentPng::Preview => &self.latent_preview,
            LatentPng::Source => &self.latent_source,
        };
        Ok(tree.get(key(id))?.map(|v| v.to_vec()))
    }

    /// A page of latents, newest first: (latents, next page token, total).
    pub fn list_latents(
        &self,
        f: &LatentFilter,
        before: Option<u64>,
        size: usize,
    ) -> (Vec<Arc<LatentRecord>>, Option<u64>, u64) {
        let cat = self.catalog.read().expect("catalog lock");
        let (page, more, total) = cat.page(f, before, size);
        let next = if more {
            page.last().map(|r| r.id)
        } else {
            None
        };
        (page, next, total)
    }

    /// Applies `change` to a latent's metadata and stores it.
    pub fn update_latent(
        &self,
        id: u64,
        change: impl Fn(&mut LatentRecord),
    ) -> Result<LatentRecord> {
        let _w = self.lock();
        let mut r = (*self
            .get_latent(id)
            .ok_or_else(|| ServerError::not_found("id", "latent", format!("lat-{id}")))?)
        .clone();
        change(&mut r);
        self.latents.insert(key(id), to_json(&r))?;
        self.catalog
            .write()
            .expect("catalog lock")
            .insert(r.clone());
        Ok(r)
    }

    /// Jobs that read or made latent `id`.
    fn jobs_of_latent(&self, id: u64) -> Result<Vec<u64>> {
        let mut out = vec![];
        for kv in self.job_latents.scan_prefix(key(id)) {
            let (k, _) = kv?;
            out.push(id_of(&k[8..])?);
        }
        Ok(out)
    }

    /// Deletes a latent, and the finished jobs (specs, results, idempotency
    /// keys) that belong only to it. Refuses while a queued or running job
    /// reads it. Returns the number of jobs deleted.
    pub fn delete_latent(&self, id: u64) -> Result<u32> {
        let _w = self.lock();
        if self.get_latent(id).is_none() {
            return Err(ServerError::not_found("id", "latent", format!("lat-{id}")));
        }
        let mut doomed: Vec<JobRecord> = vec![];
        for j in self.jobs_of_latent(id)? {
            let Some(job) = self.get_job(j)? else {
                continue;
            };
            if !job.state.is_terminal() {
                return Err(ServerError::FailedPrecondition(format!(
                    "id: latent lat-{id} is used by {} job job-{j}; cancel it or wait for it to finish",
                    match job.state {
                        JobState::Running => "running",
                        _ => "queued",
                    }
                )));
            }
            let others = job
                .reads
                .iter()
                .chain(job.produced.iter())
                .any(|&l| l != id && self.get_latent(l).is_some());
            if !others {
                doomed.push(job);
            }
        }
        let trees = [
            &self.latents,
            &self.latent_xt,
            &self.latent_source,
            &self.latent_preview,
            &self.jobs,
            &self.job_specs,
            &self.job_results,
            &self.idempotency,
            &self.job_latents,
        ];
        let own_pairs: Vec<[u8; 16]> = self
            .jobs_of_latent(id)?
            .into_iter()
            .map(|j| pair_key(id, j))
            .collect();
        trees[..].transaction(|t| {
            let (latents, xt, src, prev, jobs, specs, results, idem, jl) = (
                &t[0], &t[1], &t[2], &t[3], &t[4], &t[5], &t[6], &t[7], &t[8],
            );
            for tr in [latents, xt, src, prev] {
                tr.remove(&key(id))?;
            }
            for p in &own_pairs {
                jl.remove(p)?;
            }
            for job in &doomed {
                jobs.remove(&key(job.id))?;
                specs.remove(&key(job.id))?;
                results.remove(&key(job.id))?;
                if !job.idempotency_key.is_empty() {
                    idem.remove(job.idempotency_key.as_bytes())?;
                }
                for l in job.reads.iter().chain(job.produced.iter()) {
                    jl.remove(&pair_key(*l, job.id))?;
                }
            }
            Ok(())
        })?;
        self.catalog.write().expect("catalog lock").remove(id);
        Ok(doomed.len() as u32)
    }

    // --------------------------------------------------------------- jobs --

    pub fn get_job(&self, id: u64) -> Result<Option<JobRecord>> {
        match self.jobs.get(key(id))? {
            Some(b) => Ok(Some(from_json("job", id, &b)?)),
            None => Ok(None),
        }
    }

    pub fn job_by_key(&self, k: &str) -> Result<Option<JobRecord>> {
        match self.idempotency.get(k.as_bytes())? {
            Some(b) => self.get_job(id_of(&b)?),
            None => Ok(None),
        }
    }

    pub fn job_spec(&self, id: u64) -> Result<Option<Vec<u8>>> {
        Ok(self.job_specs.get(key(id))?.map(|v| v.to_vec()))
    }

    pub fn job_result(&self, id: u64) -> Result<Option<Vec<u8>>> {
        Ok(self.job_results.get(key(id))?.map(|v| v.to_vec()))
    }

    /// Persists a new queued job with its spec, its idempotency key (unless
    /// the key already names a job, which is returned instead) and its
    /// latent links. The latents it reads must still exist.
    pub fn insert_job(&self, job: &JobRecord, spec: &[u8]) -> Result<Inserted> {
        let _w = self.lock();
        for &l in &job.reads {
            if self.get_latent(l).is_none() {
                return Err(ServerError::not_found("spec", "latent", format!("lat-{l}")));
            }
        }
        let r = (
            &self.jobs,
            &self.job_specs,
            &self.idempotency,
            &self.job_latents,
        )
            .transaction(|(jobs, specs, idem, jl)| {
                if !job.idempotency_key.is_empty() {
                    if let Some(existing) = idem.get(job.idempotency_key.as_bytes())? {
                        let eid = id_of(&existing).map_err(ConflictableTransactionError::Abort)?;
                        return Ok(Some(tx_job(jobs, eid)?));
                    }
                    idem.insert(job.idempotency_key.as_bytes(), &key(job.id))?;
                }
                jobs.insert(&key(job.id), to_json(job))?;
                specs.insert(&key(job.id), spec)?;
                for &l in &job.reads {
                    jl.insert(&pair_key(l, job.id), &[])?;
                }
                Ok(None)
            })?;
        Ok(match r {
            Some(existing) => Inserted::Existing(existing),
            None => Inserted::New(job.clone()),
        })
    }

    /// Writes a job record whose state moved (queued → running, → cancelled,
    /// → failed, running → queued). Fails if the stored state is not `from`.
    pub fn move_job(&self, job: &JobRecord, from: JobState) -> Result<()> {
        let _w = self.lock();
        self.jobs.transaction(|jobs| {
            let cur = tx_job(jobs, job.id)?;
            if cur.state != from {
                return abort(ServerError::FailedPrecondition(format!(
                    "job-{} is {:?}, not {:?}",
                    job.id, cur.state, from
                )));
            }
            jobs.insert(&key(job.id), to_json(job))?;
            Ok(())
        })?;
        Ok(())
    }

    /// Commits a finished job: its record (state DONE), its result and the
    /// latents it made, in one transaction.
    pub fn finish_job(&self, job: &JobRecord, result: &[u8], latents: &[NewLatent]) -> Result<()> {
        let _w = self.lock();
        let trees = [
            &self.jobs,
            &self.job_results,
            &self.latents,
            &self.latent_xt,
            &self.latent_source,
            &self.latent_preview,
            &self.job_latents,
        ];
        trees[..].transaction(|t| {
            let (jobs, results, lat, xt, src, prev, jl) =
                (&t[0], &t[1], &t[2], &t[3], &t[4], &t[5], &t[6]);
            let cur = tx_job(jobs, job.id)?;
            if cur.state != JobState::Running {
                return abort(ServerError::FailedPrecondition(format!(
                    "job-{} is {:?}, not running",
                    job.id, cur.state
                )));
            }
            jobs.insert(&key(job.id), to_json(job))?;
            results.insert(&key(job.id), result)?;
            for n in latents {
                let id = n.record.id;
                lat.insert(&key(id), to_json(&n.record))?;
                let bytes: Vec<u8> = n.xt.iter().flat_map(|v| v.to_le_bytes()).collect();
                xt.insert(&key(id), bytes)?;
                if let Some(s) = &n.source_png {
                    src.insert(&key(id), s.as_slice())?;
                }
                prev.insert(&key(id), n.preview_png.as_slice())?;
                jl.insert(&pair_key(id, job.id), &[])?;
            }
            Ok(())
        })?;
        let mut cat = self.catalog.write().expect("catalog lock");
        for n in latents {
            cat.insert(n.record.clone());
        }
        Ok(())
    }

    /// Jobs newest first, filtered by state (empty: all) and by a latent.
    pub fn list_jobs(
        &self,
        states: &[JobState],
        latent: Option<u64>,
        limit: usize,
    ) -> Result<Vec<JobRecord>> {
        let keep = |j: &JobRecord| states.is_empty() || states.contains(&j.state);
        let mut out = vec![];
        if let Some(l) = latent {
            let mut ids = self.jobs_of_latent(l)?;
            ids.sort_unstable();
            for id in ids.into_iter().rev() {
                if let Some(j) = self.get_job(id)? {
                    if keep(&j) {
                        out.push(j);
                        if out.len() == limit {
                            break;
                        }
                    }
                }
            }
            return Ok(out);
        }
        for kv in self.jobs.iter().rev() {
            let (k, v) = kv?;
            let j: JobRecord = from_json("job", id_of(&k)?, &v)?;
            if keep(&j) {
                out.push(j);
                if out.len() == limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Every job, oldest first (start-up sweep).
    pub fn all_jobs(&self) -> Result<Vec<JobRecord>> {
        self.jobs
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                from_json("job", id_of(&k)?, &v)
            })
            .collect()
    }

    /// Writes a record as is (start-up sweep).
    pub fn put_job(&self, job: &JobRecord) -> Result<()> {
        let _w = self.lock();
        self.jobs.insert(key(job.id), to_json(job))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn latent(id: u64, name: &str, tags: &[&str]) -> LatentRecord {
        LatentRecord {
            v: RECORD_VERSION,
            id,
            name: name.into(),
            tags: tags.iter().map(|s| s.to_string()).collect(),
            created_ms: 0,
            shape: [1, 2, 2],
            fingerprint: "f".into(),
            encode_steps: 0,
            encode_spacing: String::new(),
            origin: OriginRecord::Sampled { seed: 1, index: 0 },
            preview_steps: 10,
            job_id: 0,
        }
    }

    pub fn job(id: u64, reads: Vec<u64>) -> JobRecord {
        JobRecord {
            v: RECORD_VERSION,
            id,
            kind: JobKind::Sample,
            state: JobState::Queued,
            priority: Priority::Interactive,
            created_ms: 0,
            started_ms: 0,
            finished_ms: 0,
            attempts: 0,
            error: String::new(),
            total_steps: 10,
            reads,
            produced: vec![],
            idempotency_key: String::new(),
            batch: None,
            rows: 1,
            images: 1,
        }
    }

    fn commit(s: &Store, mut j: JobRecord, made: &[(u64, &str, &[&str])]) -> JobRecord {
        s.insert_job(&j, b"spec").unwrap();
        let mut run = j.clone();
        run.state = JobState::Running;
        s.move_job(&run, JobState::Queued).unwrap();
        j.state = JobState::Done;
        j.produced = made.iter().map(|m| m.0).collect();
        let news: Vec<NewLatent> = made
            .iter()
            .map(|(id, n, t)| NewLatent {
                record: latent(*id, n, t),
                xt: vec![0.5; 4],
                source_png: None,
                preview_png: vec![1],
            })
            .collect();
        s.finish_job(&j, b"result", &news).unwrap();
        j
    }

    #[test]
    fn pages_newest_first_with_filters() {
        let s = Store::temporary().unwrap();
        let made: Vec<(u64, String, Vec<&str>)> = (1..=250u64)
            .map(|i| {
                (
                    i,
                    format!("Shirt {i}"),
                    if i.is_multiple_of(2) {
                        vec!["even"]
                    } else {
                        vec![]
                    },
                )
            })
            .collect();
        let refs: Vec<(u64, &str, &[&str])> = made
            .iter()
            .map(|(i, n, t)| (*i, n.as_str(), t.as_slice()))
            .collect();
        commit(&s, job(1000, vec![]), &refs);
        let mut seen = vec![];
        let mut token = None;
        loop {
            let (page, next, total) = s.list_latents(&LatentFilter::default(), token, 100);
            assert_eq!(total, 250);
            seen.extend(page.iter().map(|r| r.id));
            match next {
                Some(n) => token = Some(n),
                None => break,
            }
        }
        assert_eq!(seen, (1..=250).rev().collect::<Vec<_>>());
        let f = LatentFilter {
            tag: "even".into(),
            name_contains: "shirt 2".into(),
            ..Default::default()
        };
        let (page, next, total) = s.list_latents(&f, None, 5);
        assert_eq!(
            page.iter().map(|r| r.id).collect::<Vec<_>>(),
            vec![250, 248, 246, 244, 242]
        );
        assert_eq!((next, total), (Some(242), 32)); // 2; 20..=28 even; 200..=250 even
        assert_eq!(s.latent_xt(7).unwrap(), vec![0.5; 4]);
    }

    #[test]
    fn delete_removes_jobs_owned_only_by_the_latent() {
        let s = Store::temporary().unwrap();
        commit(&s, job(10, vec![]), &[(1, "a", &[]), (2, "b", &[])]);
        let mut single = job(20, vec![]);
        single.idempotency_key = "k".into();
        commit(&s, single, &[(3, "c", &[])]);
        let decode = commit(&s, job(30, vec![3]), &[]);
        assert_eq!(s.list_jobs(&[], Some(3), 10).unwrap().len(), 2);
        // A queued job reading latent 1 blocks its deletion.
        s.insert_job(&job(40, vec![1]), b"spec").unwrap();
        assert!(matches!(
            s.delete_latent(1),
            Err(ServerError::FailedPrecondition(_))
        ));
        // Latent 3: its encode job (20) and the decode job (30) go with it.
        assert_eq!(s.delete_latent(3).unwrap(), 2);
        assert!(s.get_job(20).unwrap().is_none() && s.get_job(decode.id).unwrap().is_none());
        assert!(s.job_by_key("k").unwrap().is_none());
        // Latent 2: job 10 also made latent 1, so it stays.
        assert_eq!(s.delete_latent(2).unwrap(), 0);
        assert!(s.get_job(10).unwrap().is_some());
        assert!(matches!(
            s.delete_latent(2),
            Err(ServerError::NotFound { .. })
        ));
        assert_eq!(s.latent_count(), 1);
    }

    #[test]
    fn idempotency_key_returns_the_first_job() {
        let s = Store::temporary().unwrap();
        let mut a = job(1, vec![]);
        a.idempotency_key = "same".into();
        assert!(matches!(s.insert_job(&a, b"x").unwrap(), Inserted::New(_)));
        let mut b = job(2, vec![]);
        b.idempotency_key = "same".into();
        match s.insert_job(&b, b"y").unwrap() {
            Inserted::Existing(j) => assert_eq!(j.id, 1),
            Inserted::New(_) => panic!("duplicate"),
        }
        assert!(s.get_job(2).unwrap().is_none());
        // A reader of a missing latent is refused and nothing is written.
        assert!(matches!(
            s.insert_job(&job(3, vec![99]), b"z"),
            Err(ServerError::NotFound { .. })
        ));
        assert!(s.get_job(3).unwrap().is_none());
    }

    #[test]
    fn finish_requires_running() {
        let s = Store::temporary().unwrap();
        let j = job(1, vec![]);
        s.insert_job(&j, b"x").unwrap();
        let mut done = j.clone();
        done.state = JobState::Done;
        assert!(s.finish_job(&done, b"r", &[]).is_err());
        assert!(s.job_result(1).unwrap().is_none());
    }
}
