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
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, RwLock};

use super::error::{Result, ServerError};
use super::pg::PgStore;

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
    Import,
    Variation,
    Mix,
    Direction,
    Renoise,
    Inpaint,
    Grid,
    Eval,
    Reencode,
}

impl JobKind {
    pub const ALL: [JobKind; 14] = [
        JobKind::Encode,
        JobKind::Sample,
        JobKind::Decode,
        JobKind::Reconstruct,
        JobKind::Interpolate,
        JobKind::Import,
        JobKind::Variation,
        JobKind::Mix,
        JobKind::Direction,
        JobKind::Renoise,
        JobKind::Inpaint,
        JobKind::Grid,
        JobKind::Eval,
        JobKind::Reencode,
    ];

    /// The kind named `s` (`Job.kind`'s names).
    pub fn parse(s: &str) -> Option<JobKind> {
        JobKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Encode => "encode",
            JobKind::Sample => "sample",
            JobKind::Decode => "decode",
            JobKind::Reconstruct => "reconstruct",
            JobKind::Interpolate => "interpolate",
            JobKind::Import => "import",
            JobKind::Variation => "variation",
            JobKind::Mix => "mix",
            JobKind::Direction => "direction",
            JobKind::Renoise => "renoise",
            JobKind::Inpaint => "inpaint",
            JobKind::Grid => "grid",
            JobKind::Eval => "eval",
            JobKind::Reencode => "reencode",
        }
    }
}

/// What jobs can share one batched model call per step: same S, η, spacing,
/// σ̂ and solver (η kept as its bit pattern so the key is `Eq`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BatchKey {
    pub steps: u32,
    pub eta_bits: u32,
    /// Index in `Spacing::ALL`.
    pub spacing: u8,
    pub sigma_hat: bool,
    /// Index in `Solver::ALL` (0, DDIM, in records written before solvers).
    #[serde(default)]
    pub solver: u8,
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
    /// Model calls made when the job ended; what a cancelled or failed job
    /// shows as "stopped at step N".
    #[serde(default)]
    pub stopped_at: u32,
    /// The daemon that ran it (last attempt), set when it starts: on a
    /// PostgreSQL store its `HOST:PID` (`daemons.id`), on sled the listen
    /// address. Empty for a job never started (and in stores older than it).
    #[serde(default)]
    pub ran_by: String,
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
    Imported {
        filename: String,
    },
    /// Made by an edit job: its lineage.
    Edited {
        /// `variation`, `mix`, `direction`, `renoise`, `inpaint`, `grid` or `reencode`.
        op: String,
        /// The operation's parameters as a JSON object.
        params: String,
        /// The latents it was made from (they may be deleted since).
        parents: Vec<u64>,
        /// One line for people.
        summary: String,
    },
}

impl OriginRecord {
    pub fn name(&self) -> &'static str {
        match self {
            OriginRecord::Encoded { .. } => "encoded",
            OriginRecord::Sampled { .. } => "sampled",
            OriginRecord::Interpolated { .. } => "interpolated",
            OriginRecord::Imported { .. } => "imported",
            OriginRecord::Edited { .. } => "edited",
        }
    }

    /// The latents this one was edited from.
    pub fn parents(&self) -> &[u64] {
        match self {
            OriginRecord::Edited { parents, .. } => parents,
            _ => &[],
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
    /// Solver of the encode's inversion (`ddim`, `dpmpp-2m`); empty when not
    /// encoded, and in latents made before it was recorded.
    #[serde(default)]
    pub encode_solver: String,
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
    /// "", "encoded", "sampled", "interpolated", "imported" or "edited".
    pub origin: String,
    /// Only latents edited from this one.
    pub parent: Option<u64>,
}

impl LatentFilter {
    fn matches(&self, r: &CatalogEntry) -> bool {
        (self.origin.is_empty() || r.record.origin.name() == self.origin)
            && (self.name_contains.is_empty() || r.lower_name.contains(&self.name_contains))
            && (self.tag.is_empty() || r.record.tags.contains(&self.tag))
            && self
                .parent
                .is_none_or(|p| r.record.origin.parents().contains(&p))
    }

    /// A filter that a tag set or a count alone cannot answer.
    fn is_fine(&self) -> bool {
        !self.name_contains.is_empty() || !self.origin.is_empty() || self.parent.is_some()
    }
}

/// Order of `ListLatents`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LatentOrder {
    #[default]
    Newest,
    Oldest,
    /// Lower-case name, then id.
    Name,
    /// Encode S, highest first, then newest first.
    EncodeSteps,
}

impl LatentOrder {
    pub const ALL: [LatentOrder; 4] = [
        LatentOrder::Newest,
        LatentOrder::Oldest,
        LatentOrder::Name,
        LatentOrder::EncodeSteps,
    ];

    /// The index the order walks, and whether it walks it backwards.
    fn index(self) -> (Index, bool) {
        match self {
            LatentOrder::Newest => (Index::Id, true),
            LatentOrder::Oldest => (Index::Id, false),
            LatentOrder::Name => (Index::Name, false),
            LatentOrder::EncodeSteps => (Index::Steps, true),
        }
    }

    fn key_of(self, r: &CatalogEntry) -> SortKey {
        match self.index().0 {
            Index::Id => SortKey::Id(r.record.id),
            Index::Name => SortKey::Name(r.lower_name.clone(), r.record.id),
            Index::Steps => SortKey::Steps(r.record.encode_steps, r.record.id),
        }
    }
}

/// Where a latent sits in an order: what a page token carries, so a page
/// continues after the last latent shown even if that one was renamed or
/// deleted since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SortKey {
    Id(u64),
    /// Lower-case name, id.
    Name(String, u64),
    /// Encode steps, id.
    Steps(u32, u64),
}

impl SortKey {
    /// The page token: a newest-first token is the bare id (as before sorting
    /// existed); the others carry a letter naming their order.
    pub fn token(&self, order: LatentOrder) -> String {
        match (order, self) {
            (LatentOrder::Oldest, SortKey::Id(id)) => format!("o{id}"),
            (_, SortKey::Id(id)) => id.to_string(),
            (_, SortKey::Name(name, id)) => format!("n{id}:{name}"),
            (_, SortKey::Steps(s, id)) => format!("s{s}:{id}"),
        }
    }

    /// Parses a page token made by [`SortKey::token`] for `order`.
    pub fn parse(order: LatentOrder, token: &str) -> Option<SortKey> {
        match order {
            LatentOrder::Newest => token.parse().ok().map(SortKey::Id),
            LatentOrder::Oldest => token.strip_prefix('o')?.parse().ok().map(SortKey::Id),
            LatentOrder::Name => {
                let (id, name) = token.strip_prefix('n')?.split_once(':')?;
                Some(SortKey::Name(name.to_string(), id.parse().ok()?))
            }
            LatentOrder::EncodeSteps => {
                let (s, id) = token.strip_prefix('s')?.split_once(':')?;
                Some(SortKey::Steps(s.parse().ok()?, id.parse().ok()?))
            }
        }
    }
}

/// Where a page starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cursor {
    /// At this position of the filtered, sorted list.
    Offset(u64),
    /// Just after this key (a page token).
    After(SortKey),
}

impl Default for Cursor {
    fn default() -> Self {
        Cursor::Offset(0)
    }
}

/// A page of `ListLatents`.
#[derive(Debug, Clone)]
pub struct LatentPage {
    pub latents: Vec<Arc<LatentRecord>>,
    /// Continues after the last latent of the page; `None` at the end.
    pub next: Option<SortKey>,
    /// Matches in all.
    pub total: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Index {
    Id,
    Name,
    Steps,
}

struct CatalogEntry {
    record: Arc<LatentRecord>,
    lower_name: String,
}

impl CatalogEntry {
    fn cmp(&self, other: &CatalogEntry, index: Index) -> Ordering {
        let (a, b) = (&self.record, &other.record);
        match index {
            Index::Id => a.id.cmp(&b.id),
            Index::Name => (self.lower_name.as_str(), a.id).cmp(&(other.lower_name.as_str(), b.id)),
            Index::Steps => (a.encode_steps, a.id).cmp(&(b.encode_steps, b.id)),
        }
    }

    fn cmp_key(&self, k: &SortKey) -> Ordering {
        let r = &self.record;
        match k {
            SortKey::Id(id) => r.id.cmp(id),
            SortKey::Name(name, id) => (self.lower_name.as_str(), r.id).cmp(&(name.as_str(), *id)),
            SortKey::Steps(s, id) => (r.encode_steps, r.id).cmp(&(*s, *id)),
        }
    }
}

type Entry = Arc<CatalogEntry>;

/// Latent metadata in memory, with a tag index and the entries sorted three
/// ways (each ascending; an order walks its index forwards or backwards), so
/// that a page at any offset of an unfiltered list is a slice: O(page).
///
/// The sorted indexes are `Vec`s kept sorted on every change (binary search,
/// then a shift of at most the whole vector: ~50 µs at 100k latents); bulk
/// loads and large commits sort the new latents and merge them in.
#[derive(Default)]
struct Catalog {
    by_id: BTreeMap<u64, Entry>,
    by_tag: HashMap<String, BTreeSet<u64>>,
    ids: Vec<Entry>,
    by_name: Vec<Entry>,
    by_steps: Vec<Entry>,
}

/// Above this many latents in one change, the new ones are sorted and merged
/// into the indexes instead of inserted one by one.
const BULK: usize = 64;

const INDEXES: [Index; 3] = [Index::Id, Index::Name, Index::Steps];

impl Catalog {
    fn index(&self, i: Index) -> &[Entry] {
        match i {
            Index::Id => &self.ids,
            Index::Name => &self.by_name,
            Index::Steps => &self.by_steps,
        }
    }

    fn index_mut(&mut self, i: Index) -> &mut Vec<Entry> {
        match i {
            Index::Id => &mut self.ids,
            Index::Name => &mut self.by_name,
            Index::Steps => &mut self.by_steps,
        }
    }

    /// Position of `e` in the sorted index `i` (where it is, or would go).
    fn position(&self, i: Index, e: &CatalogEntry) -> std::result::Result<usize, usize> {
        self.index(i).binary_search_by(|x| x.cmp(e, i))
    }

    fn insert(&mut self, r: LatentRecord) {
        self.insert_many(vec![r]);
    }

    /// Adds or replaces latents.
    fn insert_many(&mut self, rs: Vec<LatentRecord>) {
        let bulk = rs.len() > BULK;
        let mut fresh: Vec<Entry> = vec![];
        for r in rs {
            let id = r.id;
            let entry = Arc::new(CatalogEntry {
                lower_name: r.name.to_lowercase(),
                record: Arc::new(r),
            });
            self.remove(id);
            for t in &entry.record.tags {
                self.by_tag.entry(t.clone()).or_default().insert(id);
            }
            self.by_id.insert(id, entry.clone());
            if bulk {
                fresh.push(entry);
                continue;
            }
            for i in INDEXES {
                let at = match self.position(i, &entry) {
                    Ok(at) | Err(at) => at,
                };
                self.index_mut(i).insert(at, entry.clone());
            }
        }
        if !fresh.is_empty() {
            for i in INDEXES {
                fresh.sort_unstable_by(|a, b| a.cmp(b, i));
                let merged = merge(i, self.index(i), &fresh);
                *self.index_mut(i) = merged;
            }
        }
    }

    fn remove(&mut self, id: u64) {
        let Some(old) = self.by_id.remove(&id) else {
            return;
        };
        for i in INDEXES {
            if let Ok(at) = self.position(i, &old) {
                self.index_mut(i).remove(at);
            }
        }
        for t in &old.record.tags {
            if let Some(set) = self.by_tag.get_mut(t) {
                set.remove(&id);
                if set.is_empty() {
                    self.by_tag.remove(t);
                }
            }
        }
    }

    /// One page of the latents matching `f` in `order`, from `cursor`.
    ///
    /// Without a filter the page is a slice of a sorted index at any offset
    /// and the total its length: O(page). A tag alone walks the tag's set
    /// (newest/oldest: from a token, O(page); from an offset, O(offset)), or,
    /// for name/steps, sorts the set when it is small and otherwise walks the
    /// whole index. A name or origin filter tests every candidate to count
    /// the total: O(candidates).
    fn page(
        &self,
        f: &LatentFilter,
        order: LatentOrder,
        cursor: &Cursor,
        size: usize,
    ) -> LatentPage {
        let empty = BTreeSet::new();
        let tagged = if f.tag.is_empty() {
            None
        } else {
            Some(self.by_tag.get(&f.tag).unwrap_or(&empty))
        };
        let fine = f.is_fine();
        let total = match (fine, tagged) {
            (false, None) => self.by_id.len() as u64,
            (false, Some(set)) => set.len() as u64,
            (true, Some(set)) => set.iter().filter(|id| f.matches(&self.by_id[*id])).count() as u64,
            (true, None) => self.by_id.values().filter(|e| f.matches(e)).count() as u64,
        };
        let (index, rev) = order.index();
        // Matches to skip before the page starts.
        let skip = match cursor {
            Cursor::Offset(o) => usize::try_from(*o).unwrap_or(usize::MAX),
            Cursor::After(_) => 0,
        };
        let filtered = fine || tagged.is_some();
        // The page and one more (is there a next page?), from a sorted list.
        let walk = |sorted: &[Entry]| -> Vec<Entry> {
            let n = sorted.len();
            let mut start = match cursor {
                Cursor::After(k) => resume(sorted, rev, k),
                Cursor::Offset(_) => 0,
            };
            let mut skip = skip;
            if !filtered {
                start = start.saturating_add(skip).min(n);
                skip = 0;
            }
            let at = |i: usize| if rev { &sorted[n - 1 - i] } else { &sorted[i] };
            (start..n)
                .map(at)
                .filter(|e| !filtered || f.matches(e))
                .skip(skip)
                .take(size + 1)
                .cloned()
                .collect()
        };
        let hits: Vec<Entry> = match (tagged, index) {
            (Some(set), Index::Id) => {
                let from: Box<dyn Iterator<Item = &u64>> = match (cursor, rev) {
                    (Cursor::After(SortKey::Id(k)), true) => Box::new(set.range(..*k).rev()),
                    (Cursor::After(SortKey::Id(k)), false) => {
                        Box::new(set.range((Bound::Excluded(*k), Bound::Unbounded)))
                    }
                    (_, true) => Box::new(set.iter().rev()),
                    (_, false) => Box::new(set.iter()),
                };
                if fine {
                    from.map(|id| &self.by_id[id])
                        .filter(|e| f.matches(e))
                        .skip(skip)
                        .take(size + 1)
                        .cloned()
                        .collect()
                } else {
                    from.skip(skip)
                        .take(size + 1)
                        .map(|id| self.by_id[id].clone())
                        .collect()
                }
            }
            (Some(set), _) if set.len().saturating_mul(16) < self.by_id.len() => {
                let mut sorted: Vec<Entry> = set.iter().map(|id| self.by_id[id].clone()).collect();
                sorted.sort_unstable_by(|a, b| a.cmp(b, index));
                walk(&sorted)
            }
            _ => walk(self.index(index)),
        };
        let more = hits.len() > size;
        let next = if more {
            size.checked_sub(1).map(|last| order.key_of(&hits[last]))
        } else {
            None
        };
        LatentPage {
            latents: hits.iter().take(size).map(|e| e.record.clone()).collect(),
            next,
            total,
        }
    }
}

/// Where a cursor `After(k)` continues in `sorted` (ascending) walked
/// forwards, or backwards when `rev`: a position in walking order.
fn resume(sorted: &[Entry], rev: bool, k: &SortKey) -> usize {
    if rev {
        sorted.len() - sorted.partition_point(|e| e.cmp_key(k).is_lt())
    } else {
        sorted.partition_point(|e| e.cmp_key(k).is_le())
    }
}

/// Sorted `fresh` merged into the sorted index `a`: a binary search for each
/// fresh entry and block copies in between, O(k log n + n).
fn merge(i: Index, a: &[Entry], fresh: &[Entry]) -> Vec<Entry> {
    let mut out = Vec::with_capacity(a.len() + fresh.len());
    let mut x = 0;
    for e in fresh {
        let at = x + a[x..].partition_point(|o| o.cmp(e, i).is_le());
        out.extend_from_slice(&a[x..at]);
        out.push(e.clone());
        x = at;
    }
    out.extend_from_slice(&a[x..]);
    out
}

pub fn key(id: u64) -> [u8; 8] {
    id.to_be_bytes()
}

pub(crate) fn pair_key(latent: u64, job: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&latent.to_be_bytes());
    k[8..].copy_from_slice(&job.to_be_bytes());
    k
}

pub(crate) fn id_of(k: &[u8]) -> Result<u64> {
    let b: [u8; 8] = k
        .try_into()
        .map_err(|_| ServerError::Corrupt(format!("key of {} bytes", k.len())))?;
    Ok(u64::from_be_bytes(b))
}

fn u64_of(v: &[u8]) -> Result<u64> {
    id_of(v).map_err(|_| ServerError::Corrupt(format!("counter of {} bytes", v.len())))
}

pub(crate) fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("records serialise")
}

/// Parses a JSON record; `name` ("latent lat-4") goes in the error.
pub(crate) fn from_json<T: for<'de> Deserialize<'de>>(name: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| ServerError::Corrupt(format!("{name}: {e}")))
}

type TxResult<T> = std::result::Result<T, ConflictableTransactionError<ServerError>>;

fn tx_job(jobs: &TransactionalTree, id: u64) -> TxResult<JobRecord> {
    match jobs.get(key(id))? {
        Some(b) => {
            from_json(&format!("job job-{id}"), &b).map_err(ConflictableTransactionError::Abort)
        }
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

/// The trees of one open sled database.
pub struct Trees {
    pub(crate) db: sled::Db,
    pub(crate) latents: Tree,
    pub(crate) latent_xt: Tree,
    pub(crate) latent_source: Tree,
    pub(crate) latent_preview: Tree,
    pub(crate) jobs: Tree,
    pub(crate) job_specs: Tree,
    pub(crate) job_results: Tree,
    pub(crate) idempotency: Tree,
    pub(crate) job_latents: Tree,
    /// `next_id`: the id counter (sled's own `generate_id` skips ahead by up to a million
    /// on every restart, which would make ids like `lat-2000008`).
    pub(crate) meta: Tree,
}

impl Trees {
    fn new(db: sled::Db) -> Result<Trees> {
        Ok(Trees {
            latents: db.open_tree("latents")?,
            latent_xt: db.open_tree("latent_xt")?,
            latent_source: db.open_tree("latent_source")?,
            latent_preview: db.open_tree("latent_preview")?,
            jobs: db.open_tree("jobs")?,
            job_specs: db.open_tree("job_specs")?,
            job_results: db.open_tree("job_results")?,
            idempotency: db.open_tree("idempotency")?,
            job_latents: db.open_tree("job_latents")?,
            meta: db.open_tree("meta")?,
            db,
        })
    }

    /// The stored id counter, if it reads.
    pub(crate) fn counter(&self) -> Option<u64> {
        self.meta
            .get(NEXT_ID)
            .ok()
            .flatten()
            .and_then(|v| u64_of(&v).ok())
    }
}

/// Runs `f`, turning a panic into `Err(message)` without printing it (sled panics
/// inside its recovery on some damaged files). The panic hook is process-wide: it is
/// silenced for the call and restored after.
pub fn quiet_catch<T>(f: impl FnOnce() -> T) -> std::result::Result<T, String> {
    static HOOK: Mutex<()> = Mutex::new(());
    let _one = HOOK.lock().unwrap_or_else(|p| p.into_inner());
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    std::panic::set_hook(prev);
    r.map_err(|p| {
        p.downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into())
    })
}

/// The one-line error of a store that cannot be opened: the folder and what to run.
pub fn unopenable(dir: &Path, why: &str) -> ServerError {
    let d = dir.display();
    ServerError::Unopenable(format!(
        "the store in {d}/store cannot be opened ({why}); see what is damaged with \
         `ddimd store verify --data {d}`, copy what survives with `ddimd store salvage --data {d} --to NEW` \
         or restore a backup with `ddimd store restore FILE --data NEW`, then serve NEW"
    ))
}

/// sled's error as a short phrase (its corruption message carries an empty backtrace).
pub fn sled_text(e: &sled::Error) -> String {
    match e {
        sled::Error::Corruption { at, .. } => match at {
            Some(p) => format!("sled: corrupted data at {p:?}"),
            None => "sled: corrupted data".into(),
        },
        e => format!("sled: {e}"),
    }
}

/// Free bytes for unprivileged writers on the filesystem holding `dir`.
pub fn free_bytes(dir: &Path) -> Option<u64> {
    let s = rustix::fs::statvfs(dir).ok()?;
    Some(s.f_bavail.saturating_mul(s.f_frsize))
}

/// Records that could not be read, by id (`lat-N`, `job-N`, or a tree's name).
pub type Damage = BTreeMap<String, String>;

pub struct Store {
    /// The data folder (`None`: a temporary store).
    dir: Option<PathBuf>,
    /// `None` only while the database is reopened after a full disk.
    trees: RwLock<Option<Arc<Trees>>>,
    catalog: RwLock<Catalog>,
    write: Mutex<()>,
    /// Damaged records seen so far (at load, on reads, by a verify run).
    damage: Mutex<Damage>,
    /// sled hit ENOSPC: it refuses every write until the database is reopened.
    poisoned: AtomicBool,
    /// Writes that add data are refused below this many free bytes.
    min_free: AtomicU64,
    /// The background verify: "", "running", "clean" or "damaged".
    check: Mutex<&'static str>,
    /// Called after a reopen.
    #[allow(clippy::type_complexity)]
    on_reopen: Mutex<Option<Box<dyn Fn() + Send + Sync>>>,
    /// Serving from PostgreSQL (`ddimd serve --store postgres://…`): every
    /// operation goes to the database; no sled tree is open and the catalogue
    /// stays empty (docs/architecture.md, Storage backends).
    pg: Option<Arc<PgStore>>,
}

const NEXT_ID: &[u8] = b"next_id";

/// What a read of a whole tree yields: good entries, and the ids (or `None` for the
/// tree itself) that did not read.
type Scanned = (Vec<(u64, sled::IVec)>, Vec<(Option<u64>, String)>);

/// Reads every entry of `tree` keyed by an id. When iteration fails (a damaged node),
/// the rest is probed id by id up to `upper`, so one bad node loses only its records.
pub(crate) fn scan_tree(tree: &Tree, upper: u64) -> Scanned {
    let mut good = vec![];
    let mut bad = vec![];
    let mut last: Option<u64> = None;
    let mut failed = false;
    for kv in tree.iter() {
        match kv {
            Ok((k, v)) => match id_of(&k) {
                Ok(id) => {
                    good.push((id, v));
                    last = Some(id);
                }
                Err(e) => bad.push((None, e.to_string())),
            },
            Err(e) => {
                bad.push((last.map(|l| l + 1), sled_text(&e)));
                failed = true;
                break;
            }
        }
    }
    if failed {
        let from = last.map_or(0, |l| l + 1);
        let upper = upper.max(from);
        // The first probe re-reads where iteration stopped; its error replaces the
        // iteration's (same record).
        bad.pop();
        for id in from..upper {
            match tree.get(key(id)) {
                Ok(Some(v)) => good.push((id, v)),
                Ok(None) => {}
                Err(e) => bad.push((Some(id), sled_text(&e))),
            }
        }
        if let Ok(it) = tree.range(key(upper)..).collect::<sled::Result<Vec<_>>>() {
            for (k, v) in it {
                if let Ok(id) = id_of(&k) {
                    good.push((id, v));
                }
            }
        }
    }
    (good, bad)
}

impl Store {
    /// Opens (or creates) the store in `dir`. A store sled cannot open (or panics
    /// on) is [`ServerError::Unopenable`]; a locked one a config error.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| {
            ServerError::Config(format!("--data {}: cannot create ({e})", dir.display()))
        })?;
        let db = Self::open_db(dir)?;
        match quiet_catch(|| Self::from_db(Some(dir.to_path_buf()), db)) {
            Ok(r) => r,
            Err(p) => Err(unopenable(dir, &format!("sled panicked reading it: {p}"))),
        }
    }

    fn open_db(dir: &Path) -> Result<sled::Db> {
        let path = dir.join("store");
        match quiet_catch(|| sled::Config::new().path(&path).open()) {
            Ok(Ok(db)) => Ok(db),
            Ok(Err(sled::Error::Io(io))) if io.to_string().contains("could not acquire lock") => {
                Err(ServerError::Config(format!(
                    "--data {}: the store is in use by another ddimd process",
                    dir.display()
                )))
            }
            Ok(Err(sled::Error::Io(io))) if !io.to_string().contains("corrupt") => {
                Err(ServerError::Config(format!(
                    "--data {}: cannot open the store: {io}",
                    dir.display()
                )))
            }
            Ok(Err(e)) => Err(unopenable(dir, &sled_text(&e))),
            Err(p) => Err(unopenable(dir, &format!("sled panicked in recovery: {p}"))),
        }
    }

    /// A throw-away store (tests).
    pub fn temporary() -> Result<Self> {
        Self::from_db(None, sled::Config::new().temporary(true).open()?)
    }

    fn from_db(dir: Option<PathBuf>, db: sled::Db) -> Result<Self> {
        let trees = Trees::new(db)?;
        let s = Self::empty(dir, None);
        s.load(trees)?;
        Ok(s)
    }

    /// A store served from PostgreSQL (see [`PgStore`]).
    pub fn postgres(pg: PgStore) -> Store {
        Self::empty(None, Some(Arc::new(pg)))
    }

    /// A store with nothing loaded: sled's trees are loaded by [`Self::load`];
    /// on PostgreSQL there is nothing to load.
    fn empty(dir: Option<PathBuf>, pg: Option<Arc<PgStore>>) -> Store {
        Store {
            dir,
            trees: RwLock::new(None),
            catalog: RwLock::new(Catalog::default()),
            write: Mutex::new(()),
            damage: Mutex::new(Damage::new()),
            poisoned: AtomicBool::new(false),
            min_free: AtomicU64::new(0),
            check: Mutex::new(""),
            on_reopen: Mutex::new(None),
            pg,
        }
    }

    /// The PostgreSQL backend, when the store is one.
    pub fn pg(&self) -> Option<&Arc<PgStore>> {
        self.pg.as_ref()
    }

    /// Loads the catalogue from `trees` (skipping damaged latents, which are noted)
    /// and makes them the store's.
    fn load(&self, trees: Trees) -> Result<()> {
        self.fill_catalog(&trees);
        *self.trees.write().expect("trees lock") = Some(Arc::new(trees));
        self.init_next_id()
    }

    /// Rebuilds the catalogue from the latents tree (after a bulk load).
    pub fn reload_catalog(&self) -> Result<()> {
        let t = self.t()?;
        self.fill_catalog(&t);
        Ok(())
    }

    fn fill_catalog(&self, trees: &Trees) {
        let upper = trees.counter().unwrap_or(0);
        let (good, bad) = scan_tree(&trees.latents, upper);
        let mut all = vec![];
        for (id, v) in good {
            match from_json::<LatentRecord>(&format!("latent lat-{id}"), &v) {
                Ok(r) => all.push(r),
                Err(e) => self.note_damage(format!("lat-{id}"), e.to_string()),
            }
        }
        for (id, why) in bad {
            let name = id.map_or("latents".to_string(), |i| format!("lat-{i}"));
            self.note_damage(name, why);
        }
        let mut cat = Catalog::default();
        cat.insert_many(all);
        *self.catalog.write().expect("catalog lock") = cat;
    }

    /// The open trees.
    pub(crate) fn t(&self) -> Result<Arc<Trees>> {
        if let Some(pg) = &self.pg {
            return Err(ServerError::FailedPrecondition(format!(
                "the store is the PostgreSQL database {}: this works on a sled folder only",
                pg.shown()
            )));
        }
        self.trees
            .read()
            .expect("trees lock")
            .clone()
            .ok_or_else(|| ServerError::Unavailable("the store is being reopened; retry".into()))
    }

    /// The data folder (`None` for a temporary store).
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Writes that add data are refused with RESOURCE_EXHAUSTED while the disk
    /// holding the store has fewer free bytes.
    pub fn set_min_free(&self, bytes: u64) {
        self.min_free.store(bytes, AtomicOrdering::Relaxed);
    }

    /// Notes a damaged record (by `lat-N`/`job-N`), for stats and DATA_LOSS answers.
    pub fn note_damage(&self, id: String, why: String) {
        let mut d = self.damage.lock().unwrap_or_else(|p| p.into_inner());
        if let std::collections::btree_map::Entry::Vacant(v) = d.entry(id) {
            tracing::error!(record = %v.key(), "damaged record: {why}");
            v.insert(why);
        }
    }

    /// State of the background verify ("", "running", "clean", "damaged").
    pub fn check_state(&self) -> String {
        self.check
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .to_string()
    }

    pub fn set_check_state(&self, s: &'static str) {
        *self.check.lock().unwrap_or_else(|p| p.into_inner()) = s;
    }

    /// The damaged records seen so far.
    pub fn damage(&self) -> Damage {
        self.damage
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A sled error reading `what` ("latent lat-4", "job job-7"): corruption is noted
    /// and answers DATA_LOSS naming the record; a full disk names the folder.
    fn read_err(&self, id: String, what: &str, e: sled::Error) -> ServerError {
        match ServerError::from(e) {
            ServerError::DataLoss(_) | ServerError::Corrupt(_) => {
                let why = format!("{what} unreadable ({})", "sled: corrupted data");
                self.note_damage(id.clone(), why.clone());
                ServerError::DataLoss(format!(
                    "{id}: {why}; run `ddimd store verify` and see docs/daemon.md (Storage)"
                ))
            }
            other => self.write_err(other),
        }
    }

    /// A record that parsed badly or lacks a companion: noted, DATA_LOSS.
    fn corrupt(&self, id: String, why: String) -> ServerError {
        self.note_damage(id.clone(), why.clone());
        ServerError::Corrupt(format!("{id}: {why}"))
    }

    /// Adds the folder to a full-disk error and marks sled as needing a reopen.
    fn write_err(&self, e: impl Into<ServerError>) -> ServerError {
        match e.into() {
            ServerError::DiskFull(m) => {
                if !self.poisoned.swap(true, AtomicOrdering::SeqCst) {
                    tracing::error!("the store's disk is full ({m}); writes are refused until there is room again");
                }
                self.disk_full()
            }
            e => e,
        }
    }

    fn disk_full(&self) -> ServerError {
        let dir = self
            .dir
            .as_deref()
            .map_or("(temporary)".to_string(), |d| d.display().to_string());
        let free = self
            .dir
            .as_deref()
            .and_then(free_bytes)
            .map_or(String::new(), |b| format!(", {} KiB free", b / 1024));
        ServerError::DiskFull(format!(
            "disk full: no room for the store in {dir}{free}; free space on that disk (nothing was written)"
        ))
    }

    /// Refuses a write that adds data when the disk is below `--min-free-mb`, and
    /// reopens sled after a full disk once there is room again.
    pub fn check_space(&self) -> Result<()> {
        if self.pg.is_some() {
            return Ok(());
        }
        let Some(dir) = self.dir.as_deref() else {
            return Ok(());
        };
        let min = self.min_free.load(AtomicOrdering::Relaxed);
        let poisoned = self.poisoned.load(AtomicOrdering::SeqCst);
        if min == 0 && !poisoned {
            return Ok(());
        }
        let free = free_bytes(dir).unwrap_or(u64::MAX);
        if free < min.max(if poisoned { 1 << 20 } else { 0 }) {
            return Err(self.disk_full());
        }
        if poisoned && self.reopen()? {
            let hook = self.on_reopen.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(h) = hook.as_ref() {
                h();
            }
        }
        Ok(())
    }

    /// Runs `f` after sled was reopened (the daemon re-queues jobs whose state moves
    /// did not reach the disk).
    pub fn on_reopen(&self, f: Box<dyn Fn() + Send + Sync>) {
        *self.on_reopen.lock().unwrap_or_else(|p| p.into_inner()) = Some(f);
    }

    /// Reopens sled (it refuses every write after an I/O error until then) and
    /// reloads the catalogue from what is on disk.
    fn reopen(&self) -> Result<bool> {
        let _w = self.lock();
        if !self.poisoned.load(AtomicOrdering::SeqCst) {
            return Ok(false);
        }
        let dir = self.dir.clone().expect("a folder");
        // Ids handed out in memory may never have reached the disk: never again.
        let high = self.t()?.counter().unwrap_or(0);
        tracing::info!(dir = %dir.display(), "room again on the store's disk: reopening sled");
        *self.trees.write().expect("trees lock") = None;
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let db = loop {
            match Self::open_db(&dir) {
                Ok(db) => break db,
                Err(ServerError::Config(_)) if std::time::Instant::now() < until => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => return Err(e),
            }
        };
        self.load(Trees::new(db)?)?;
        let t = self.t()?;
        if t.counter().is_none_or(|c| c < high) {
            t.meta
                .insert(NEXT_ID, &high.to_be_bytes())
                .map_err(|e| self.write_err(e))?;
        }
        t.db.flush().map_err(|e| self.write_err(e))?;
        self.poisoned.store(false, AtomicOrdering::SeqCst);
        tracing::warn!(dir = %dir.display(), "the store was reopened after a full disk");
        Ok(true)
    }

    /// Makes the counter at least one past every id in use. A store written before the
    /// counter existed starts past sled's `generate_id`, which is above every id it ever
    /// handed out (deleted ones included), so no id is reused.
    fn init_next_id(&self) -> Result<()> {
        let t = self.t()?;
        let last = |t: &Tree| -> u64 {
            match t.last() {
                Ok(Some((k, _))) => id_of(&k).map_or(0, |i| i + 1),
                _ => 0,
            }
        };
        let in_catalog = self
            .catalog
            .read()
            .expect("catalog lock")
            .by_id
            .keys()
            .next_back()
            .map_or(0, |i| i + 1);
        let in_use = last(&t.latents).max(last(&t.jobs)).max(in_catalog);
        let stored = match t.counter() {
            Some(v) => v,
            None => t.db.generate_id()?,
        };
        let next = stored.max(in_use);
        if t.counter() != Some(next) {
            t.meta
                .insert(NEXT_ID, &next.to_be_bytes())
                .map_err(|e| self.write_err(e))?;
        }
        Ok(())
    }

    /// A fresh id (latents and jobs share the counter).
    pub fn next_id(&self) -> Result<u64> {
        if let Some(pg) = &self.pg {
            return pg.next_id();
        }
        let bump = |old: Option<&[u8]>| {
            let n = old.and_then(|v| u64_of(v).ok()).unwrap_or(0);
            Some((n + 1).to_be_bytes().to_vec())
        };
        match self
            .t()?
            .meta
            .fetch_and_update(NEXT_ID, bump)
            .map_err(|e| self.write_err(e))?
        {
            Some(v) => u64_of(&v),
            None => Ok(0),
        }
    }

    /// Makes every write so far durable (fsync). Blocking.
    pub fn flush(&self) -> Result<()> {
        if self.pg.is_some() {
            // Every statement committed before it answered.
            return Ok(());
        }
        let _w = self.lock();
        self.t()?.db.flush().map_err(|e| self.write_err(e))?;
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        if let Some(pg) = &self.pg {
            return pg.is_empty().unwrap_or(false);
        }
        self.t()
            .map(|t| t.latents.is_empty() && t.jobs.is_empty())
            .unwrap_or(false)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.write.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` with every write held off: a point-in-time view of all trees
    /// (backups). Reads go on; writers wait.
    pub fn frozen<T>(&self, f: impl FnOnce(&Trees) -> T) -> Result<T> {
        let _w = self.lock();
        let t = self.t()?;
        Ok(f(&t))
    }

    // ------------------------------------------------------------ latents --

    pub fn latent_count(&self) -> u64 {
        if let Some(pg) = &self.pg {
            return pg.latent_count().unwrap_or_else(|e| {
                tracing::warn!("count latents: {e}");
                0
            });
        }
        self.catalog.read().expect("catalog lock").by_id.len() as u64
    }

    pub fn get_latent(&self, id: u64) -> Option<Arc<LatentRecord>> {
        if let Some(pg) = &self.pg {
            return match pg.get_latent(id) {
                Ok(r) => r.map(Arc::new),
                Err(e) => {
                    tracing::warn!("read lat-{id}: {e}");
                    None
                }
            };
        }
        self.catalog
            .read()
            .expect("catalog lock")
            .by_id
            .get(&id)
            .map(|e| e.record.clone())
    }

    /// A latent's metadata, or NOT_FOUND naming `field`, or DATA_LOSS when the id
    /// names a latent known to be damaged.
    /// [`Store::get_latent`] for answering a request: on PostgreSQL a failed read is
    /// the database's error (UNAVAILABLE while it is away), not "no such latent".
    pub fn find_latent(&self, id: u64) -> Result<Option<Arc<LatentRecord>>> {
        match &self.pg {
            Some(pg) => Ok(pg.get_latent(id)?.map(Arc::new)),
            None => Ok(self.get_latent(id)),
        }
    }

    pub fn latent(&self, id: u64, field: &str) -> Result<Arc<LatentRecord>> {
        if let Some(r) = self.find_latent(id)? {
            return Ok(r);
        }
        let name = format!("lat-{id}");
        match self.damage().get(&name) {
            Some(why) => Err(ServerError::DataLoss(format!(
                "{field}: latent {name} is damaged ({why}); run `ddimd store verify`"
            ))),
            None => Err(ServerError::not_found(field, "latent", name)),
        }
    }

    /// The error for a latent id not in the catalogue: DATA_LOSS when it is known
    /// damaged, else NOT_FOUND naming `field` and the id as the client wrote it.
    pub fn missing_latent(&self, id: u64, field: &str, as_given: &str) -> ServerError {
        match self.latent(id, field) {
            Err(e @ ServerError::DataLoss(_)) => e,
            _ => ServerError::not_found(field, "latent", as_given),
        }
    }

    /// x_T of a latent as f32 values [C·H·W].
    pub fn latent_xt(&self, id: u64) -> Result<Vec<f32>> {
        let name = format!("lat-{id}");
        let b = match &self.pg {
            Some(pg) => pg.latent_xt(id)?.map(sled::IVec::from),
            None => self
                .t()?
                .latent_xt
                .get(key(id))
                .map_err(|e| self.read_err(name.clone(), "x_T", e))?,
        };
        let Some(b) = b else {
            if self.get_latent(id).is_some() {
                return Err(self.corrupt(name, "x_T is missing".into()));
            }
            return Err(ServerError::not_found("id", "latent", name));
        };
        if !b.len().is_multiple_of(4) {
            return Err(self.corrupt(name, format!("x_T has {} bytes", b.len())));
        }
        Ok(b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    pub fn latent_png(&self, id: u64, which: LatentPng) -> Result<Option<Vec<u8>>> {
        if let Some(pg) = &self.pg {
            let name = format!("lat-{id}");
            return match pg.latent_png(id, which)? {
                None => Ok(None),
                Some(Some(png)) => Ok(Some(png)),
                Some(None) => match pg.get_latent(id)? {
                    Some(r) if super::pg::png_expected(&r, which) => {
                        Err(self.corrupt(name, "a PNG is missing".into()))
                    }
                    _ => Ok(None),
                },
            };
        }
        let t = self.t()?;
        let (tree, what) = match which {
            LatentPng::Preview => (&t.latent_preview, "preview PNG"),
            LatentPng::Source => (&t.latent_source, "source PNG"),
        };
        let name = format!("lat-{id}");
        let v = tree
            .get(key(id))
            .map_err(|e| self.read_err(name.clone(), what, e))?;
        if v.is_none() {
            let expected = self.get_latent(id).is_some_and(|r| match which {
                LatentPng::Preview => true,
                LatentPng::Source => matches!(
                    r.origin,
                    OriginRecord::Encoded {
                        has_source: true,
                        ..
                    }
                ),
            });
            if expected {
                return Err(self.corrupt(name, format!("the {what} is missing")));
            }
        }
        Ok(v.map(|v| v.to_vec()))
    }

    /// A page of the latents matching `f` in `order`, from `cursor`.
    pub fn list_latents(
        &self,
        f: &LatentFilter,
        order: LatentOrder,
        cursor: &Cursor,
        size: usize,
    ) -> LatentPage {
        // On PostgreSQL the catalogue is empty: callers there use try_list_latents.
        debug_assert!(self.pg.is_none(), "list_latents reads sled's catalogue");
        self.catalog
            .read()
            .expect("catalog lock")
            .page(f, order, cursor, size)
    }

    /// [`Store::list_latents`] on either backend: on PostgreSQL a query (which
    /// can fail), on sled the catalogue.
    pub fn try_list_latents(
        &self,
        f: &LatentFilter,
        order: LatentOrder,
        cursor: &Cursor,
        size: usize,
    ) -> Result<LatentPage> {
        match &self.pg {
            Some(pg) => pg.list_latents(f, order, cursor, size),
            None => Ok(self.list_latents(f, order, cursor, size)),
        }
    }

    /// Every latent id in the catalogue, ascending.
    pub fn latent_ids(&self) -> Vec<u64> {
        if let Some(pg) = &self.pg {
            return pg.latent_ids().unwrap_or_default();
        }
        self.catalog
            .read()
            .expect("catalog lock")
            .by_id
            .keys()
            .copied()
            .collect()
    }

    /// Moves the id counter up to at least `n` (ids handed out before a rollback).
    pub fn ensure_next_id(&self, n: u64) -> Result<()> {
        let _w = self.lock();
        let t = self.t()?;
        if t.counter().is_none_or(|c| c < n) {
            t.meta
                .insert(NEXT_ID, &n.to_be_bytes())
                .map_err(|e| self.write_err(e))?;
            t.db.flush().map_err(|e| self.write_err(e))?;
        }
        Ok(())
    }

    /// The id counter as stored.
    pub fn counter(&self) -> Option<u64> {
        if let Some(pg) = &self.pg {
            return pg.counter().ok();
        }
        self.t().ok().and_then(|t| t.counter())
    }

    /// Latents known to be damaged (not in listings).
    pub fn damaged_latents(&self) -> u64 {
        self.damage()
            .keys()
            .filter(|k| k.starts_with("lat-"))
            .count() as u64
    }

    /// Applies `change` to a latent's metadata and stores it.
    pub fn update_latent(
        &self,
        id: u64,
        change: impl Fn(&mut LatentRecord),
    ) -> Result<LatentRecord> {
        self.check_space()?;
        let _w = self.lock();
        let mut r = (*self.latent(id, "id")?).clone();
        change(&mut r);
        if let Some(pg) = &self.pg {
            pg.put_latent(&r)?;
            return Ok(r);
        }
        self.t()?
            .latents
            .insert(key(id), to_json(&r))
            .map_err(|e| self.write_err(e))?;
        self.catalog
            .write()
            .expect("catalog lock")
            .insert(r.clone());
        Ok(r)
    }

    /// Jobs that read or made latent `id`.
    fn jobs_of_latent(&self, id: u64) -> Result<Vec<u64>> {
        let mut out = vec![];
        for kv in self.t()?.job_latents.scan_prefix(key(id)) {
            let (k, _) = kv.map_err(|e| self.read_err(format!("lat-{id}"), "job index", e))?;
            out.push(id_of(&k[8..])?);
        }
        Ok(out)
    }

    /// Deletes a latent, and the finished jobs (specs, results, idempotency
    /// keys) that belong only to it. Refuses while a queued or running job
    /// reads it. Returns the number of jobs deleted.
    pub fn delete_latent(&self, id: u64) -> Result<u32> {
        if let Some(pg) = &self.pg {
            return pg.delete_latent(id);
        }
        if self.poisoned.load(AtomicOrdering::SeqCst) {
            self.check_space()?;
        }
        let _w = self.lock();
        self.latent(id, "id")?;
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
        let t = self.t()?;
        let trees = [
            &t.latents,
            &t.latent_xt,
            &t.latent_source,
            &t.latent_preview,
            &t.jobs,
            &t.job_specs,
            &t.job_results,
            &t.idempotency,
            &t.job_latents,
        ];
        let own_pairs: Vec<[u8; 16]> = self
            .jobs_of_latent(id)?
            .into_iter()
            .map(|j| pair_key(id, j))
            .collect();
        trees[..]
            .transaction(|t| {
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
            })
            .map_err(|e| self.write_err(e))?;
        self.catalog.write().expect("catalog lock").remove(id);
        Ok(doomed.len() as u32)
    }

    // --------------------------------------------------------------- jobs --

    pub fn get_job(&self, id: u64) -> Result<Option<JobRecord>> {
        if let Some(pg) = &self.pg {
            return pg.get_job(id);
        }
        let name = format!("job-{id}");
        match self
            .t()?
            .jobs
            .get(key(id))
            .map_err(|e| self.read_err(name.clone(), "record", e))?
        {
            Some(b) => match from_json(&format!("job {name}"), &b) {
                Ok(j) => Ok(Some(j)),
                Err(e) => Err(self.corrupt(name, e.to_string())),
            },
            None => Ok(None),
        }
    }

    pub fn job_by_key(&self, k: &str) -> Result<Option<JobRecord>> {
        if let Some(pg) = &self.pg {
            return pg.job_by_key(k);
        }
        let v = self
            .t()?
            .idempotency
            .get(k.as_bytes())
            .map_err(|e| self.read_err("idempotency".into(), "key index", e))?;
        match v {
            Some(b) => self.get_job(id_of(&b)?),
            None => Ok(None),
        }
    }

    pub fn job_spec(&self, id: u64) -> Result<Option<Vec<u8>>> {
        if let Some(pg) = &self.pg {
            return pg.job_spec(id);
        }
        Ok(self
            .t()?
            .job_specs
            .get(key(id))
            .map_err(|e| self.read_err(format!("job-{id}"), "spec", e))?
            .map(|v| v.to_vec()))
    }

    pub fn job_result(&self, id: u64) -> Result<Option<Vec<u8>>> {
        if let Some(pg) = &self.pg {
            return pg.job_result(id);
        }
        Ok(self
            .t()?
            .job_results
            .get(key(id))
            .map_err(|e| self.read_err(format!("job-{id}"), "result", e))?
            .map(|v| v.to_vec()))
    }

    /// Persists a new queued job with its spec, its idempotency key (unless
    /// the key already names a job, which is returned instead) and its
    /// latent links. The latents it reads must still exist.
    pub fn insert_job(&self, job: &JobRecord, spec: &[u8]) -> Result<Inserted> {
        self.check_space()?;
        let _w = self.lock();
        for &l in &job.reads {
            self.latent(l, "spec")?;
        }
        if let Some(pg) = &self.pg {
            return pg.insert_job(job, spec);
        }
        let t = self.t()?;
        let r = (&t.jobs, &t.job_specs, &t.idempotency, &t.job_latents)
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
            })
            .map_err(|e| self.write_err(e))?;
        Ok(match r {
            Some(existing) => Inserted::Existing(existing),
            None => Inserted::New(job.clone()),
        })
    }

    /// Writes a job record whose state moved (queued → running, → cancelled,
    /// → failed, running → queued). Fails if the stored state is not `from`.
    pub fn move_job(&self, job: &JobRecord, from: JobState) -> Result<()> {
        if let Some(pg) = &self.pg {
            return pg.move_job(job, from);
        }
        let _w = self.lock();
        self.t()?
            .jobs
            .transaction(|jobs| {
                let cur = tx_job(jobs, job.id)?;
                if cur.state != from {
                    return abort(ServerError::FailedPrecondition(format!(
                        "job-{} is {:?}, not {:?}",
                        job.id, cur.state, from
                    )));
                }
                jobs.insert(&key(job.id), to_json(job))?;
                Ok(())
            })
            .map_err(|e| self.write_err(e))?;
        Ok(())
    }

    /// Commits a finished job: its record (state DONE), its result and the
    /// latents it made, in one transaction.
    pub fn finish_job(&self, job: &JobRecord, result: &[u8], latents: &[NewLatent]) -> Result<()> {
        if let Some(pg) = &self.pg {
            return pg.finish_job(job, result, latents);
        }
        if !latents.is_empty() {
            self.check_space()?;
        }
        let _w = self.lock();
        let t = self.t()?;
        let trees = [
            &t.jobs,
            &t.job_results,
            &t.latents,
            &t.latent_xt,
            &t.latent_source,
            &t.latent_preview,
            &t.job_latents,
        ];
        trees[..]
            .transaction(|t| {
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
            })
            .map_err(|e| self.write_err(e))?;
        self.catalog
            .write()
            .expect("catalog lock")
            .insert_many(latents.iter().map(|n| n.record.clone()).collect());
        Ok(())
    }

    /// Jobs newest first, filtered by state (empty: all) and by a latent.
    pub fn list_jobs(
        &self,
        states: &[JobState],
        latent: Option<u64>,
        limit: usize,
    ) -> Result<Vec<JobRecord>> {
        Ok(self.list_jobs_skipping(states, &[], latent, limit)?.0)
    }

    /// [`Store::list_jobs`], also filtered by kind (empty: all), that skips damaged
    /// jobs (noted) and counts them.
    pub fn list_jobs_skipping(
        &self,
        states: &[JobState],
        kinds: &[JobKind],
        latent: Option<u64>,
        limit: usize,
    ) -> Result<(Vec<JobRecord>, u32)> {
        if let Some(pg) = &self.pg {
            return Ok((pg.list_jobs(states, kinds, latent, limit)?, 0));
        }
        let keep = |j: &JobRecord| {
            (states.is_empty() || states.contains(&j.state))
                && (kinds.is_empty() || kinds.contains(&j.kind))
        };
        let mut out = vec![];
        let mut skipped = 0u32;
        let ids: Vec<u64> = match latent {
            Some(l) => {
                let mut ids = self.jobs_of_latent(l)?;
                ids.sort_unstable();
                ids.reverse();
                ids
            }
            None => {
                let t = self.t()?;
                let mut ids = vec![];
                let mut broke = None;
                for kv in t.jobs.iter().keys().rev() {
                    match kv {
                        Ok(k) => ids.push(id_of(&k)?),
                        Err(_) => {
                            broke = Some(ids.last().copied());
                            break;
                        }
                    }
                }
                if let Some(last) = broke {
                    // A damaged node: probe the ids below the last good key one by one.
                    let top = last.unwrap_or_else(|| t.counter().unwrap_or(0));
                    for id in (0..top).rev() {
                        match t.jobs.get(key(id)) {
                            Ok(Some(_)) => ids.push(id),
                            Ok(None) => {}
                            Err(e) => {
                                let _ = self.read_err(format!("job-{id}"), "record", e);
                                skipped += 1;
                            }
                        }
                    }
                }
                ids
            }
        };
        for id in ids {
            match self.get_job(id) {
                Ok(Some(j)) if keep(&j) => {
                    out.push(j);
                    if out.len() == limit {
                        break;
                    }
                }
                Ok(_) => {}
                Err(ServerError::DataLoss(_) | ServerError::Corrupt(_)) => skipped += 1,
                Err(e) => return Err(e),
            }
        }
        Ok((out, skipped))
    }

    /// Every job, oldest first (start-up sweep); damaged ones are noted and skipped.
    pub fn all_jobs(&self) -> Result<Vec<JobRecord>> {
        if let Some(pg) = &self.pg {
            return pg.all_jobs();
        }
        let t = self.t()?;
        let (good, bad) = scan_tree(&t.jobs, t.counter().unwrap_or(0));
        for (id, why) in bad {
            let name = id.map_or("jobs".to_string(), |i| format!("job-{i}"));
            self.note_damage(name, why);
        }
        let mut out = vec![];
        for (id, v) in good {
            match from_json(&format!("job job-{id}"), &v) {
                Ok(j) => out.push(j),
                Err(e) => self.note_damage(format!("job-{id}"), e.to_string()),
            }
        }
        Ok(out)
    }

    /// Writes a record as is (start-up sweep).
    pub fn put_job(&self, job: &JobRecord) -> Result<()> {
        if let Some(pg) = &self.pg {
            return pg.put_job(job);
        }
        let _w = self.lock();
        self.t()?
            .jobs
            .insert(key(job.id), to_json(job))
            .map_err(|e| self.write_err(e))?;
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
            encode_solver: String::new(),
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
            stopped_at: 0,
            ran_by: String::new(),
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

    /// Every page of `f` in `order`, following tokens.
    fn by_tokens(s: &Store, f: &LatentFilter, order: LatentOrder, size: usize) -> Vec<u64> {
        let mut seen = vec![];
        let mut cursor = Cursor::default();
        loop {
            let p = s.list_latents(f, order, &cursor, size);
            seen.extend(p.latents.iter().map(|r| r.id));
            match p.next {
                // Round trip through the token, as a client does.
                Some(k) => cursor = Cursor::After(SortKey::parse(order, &k.token(order)).unwrap()),
                None => break,
            }
        }
        seen
    }

    /// Every page of `f` in `order`, by offset.
    fn by_offsets(s: &Store, f: &LatentFilter, order: LatentOrder, size: usize) -> Vec<u64> {
        let mut seen = vec![];
        loop {
            let p = s.list_latents(f, order, &Cursor::Offset(seen.len() as u64), size);
            assert!(p.latents.len() <= size);
            seen.extend(p.latents.iter().map(|r| r.id));
            if p.latents.len() < size || seen.len() as u64 == p.total {
                assert!(p.next.is_none() || p.latents.len() == size);
                break;
            }
        }
        seen
    }

    /// The order the catalogue must produce, by brute force.
    fn expected(s: &Store, f: &LatentFilter, order: LatentOrder) -> Vec<u64> {
        let cat = s.catalog.read().unwrap();
        let mut v: Vec<&Entry> = cat.by_id.values().filter(|e| f.matches(e)).collect();
        match order {
            LatentOrder::Newest => v.sort_by_key(|e| std::cmp::Reverse(e.record.id)),
            LatentOrder::Oldest => v.sort_by_key(|e| e.record.id),
            LatentOrder::Name => v.sort_by_key(|e| (e.record.name.to_lowercase(), e.record.id)),
            LatentOrder::EncodeSteps => v.sort_by_key(|e| {
                (
                    std::cmp::Reverse(e.record.encode_steps),
                    std::cmp::Reverse(e.record.id),
                )
            }),
        }
        v.iter().map(|e| e.record.id).collect()
    }

    fn check_every_order(s: &Store) {
        let filters = [
            LatentFilter::default(),
            LatentFilter {
                tag: "even".into(),
                ..Default::default()
            },
            LatentFilter {
                tag: "rare".into(),
                ..Default::default()
            },
            LatentFilter {
                name_contains: "b".into(),
                ..Default::default()
            },
            LatentFilter {
                tag: "even".into(),
                origin: "sampled".into(),
                name_contains: "a".into(),
                parent: None,
            },
            LatentFilter {
                tag: "none such".into(),
                ..Default::default()
            },
        ];
        for f in &filters {
            for order in LatentOrder::ALL {
                let want = expected(s, f, order);
                for size in [1, 7, 50, 1000] {
                    assert_eq!(by_tokens(s, f, order, size), want, "{f:?} {order:?} {size}");
                    assert_eq!(
                        by_offsets(s, f, order, size),
                        want,
                        "{f:?} {order:?} {size}"
                    );
                }
                let p = s.list_latents(f, order, &Cursor::Offset(want.len() as u64 + 5), 10);
                assert!(p.latents.is_empty() && p.next.is_none());
                assert_eq!(p.total, want.len() as u64);
            }
        }
    }

    /// Names with case and ties, steps with ties, two origins, two tags.
    fn varied(i: u64) -> LatentRecord {
        let names = ["b", "A", "a", "Bee", "alpha", "B", "zed", "Äpfel"];
        let mut r = latent(i, names[i as usize % names.len()], &[]);
        if i.is_multiple_of(2) {
            r.tags.push("even".into());
        }
        if i.is_multiple_of(41) {
            r.tags.push("rare".into());
        }
        r.encode_steps = [0, 50, 100, 50][i as usize % 4];
        if i.is_multiple_of(3) {
            r.origin = OriginRecord::Encoded {
                filename: String::new(),
                has_source: false,
            };
        }
        r
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
        let all = LatentFilter::default();
        assert_eq!(
            by_tokens(&s, &all, LatentOrder::Newest, 100),
            (1..=250).rev().collect::<Vec<_>>()
        );
        let f = LatentFilter {
            tag: "even".into(),
            name_contains: "shirt 2".into(),
            ..Default::default()
        };
        let p = s.list_latents(&f, LatentOrder::Newest, &Cursor::default(), 5);
        assert_eq!(
            p.latents.iter().map(|r| r.id).collect::<Vec<_>>(),
            vec![250, 248, 246, 244, 242]
        );
        // 2; 20..=28 even; 200..=250 even. The newest-first token is the bare id.
        assert_eq!((p.next.clone(), p.total), (Some(SortKey::Id(242)), 32));
        assert_eq!(p.next.unwrap().token(LatentOrder::Newest), "242");
        // An offset in the unfiltered list is a slice.
        let p = s.list_latents(&all, LatentOrder::Oldest, &Cursor::Offset(240), 20);
        assert_eq!(
            p.latents.iter().map(|r| r.id).collect::<Vec<_>>(),
            (241..=250).collect::<Vec<_>>()
        );
        assert_eq!((p.next, p.total), (None, 250));
        assert_eq!(s.latent_xt(7).unwrap(), vec![0.5; 4]);
    }

    #[test]
    fn every_order_pages_by_token_and_offset() {
        let s = Store::temporary().unwrap();
        // Commits above BULK (sorted and merged in), then single inserts.
        s.catalog
            .write()
            .unwrap()
            .insert_many((1..=300).step_by(2).map(varied).collect());
        s.catalog
            .write()
            .unwrap()
            .insert_many((2..=600).step_by(2).map(varied).collect());
        for i in (301..=400).step_by(2) {
            s.catalog.write().unwrap().insert(varied(i));
        }
        check_every_order(&s);
        // Renames move a latent in the name order; a tag change does not.
        for i in (1..=200).step_by(7) {
            s.update_latent(i, |r| r.name = format!("renamed {}", 300 - i))
                .unwrap();
        }
        // A bulk replace of existing latents with new names.
        let again: Vec<LatentRecord> = (100..=500)
            .filter_map(|i| s.get_latent(i))
            .map(|r| {
                let mut r = (*r).clone();
                r.name = format!("again {}", r.id % 13);
                r
            })
            .collect();
        assert!(again.len() > BULK);
        s.catalog.write().unwrap().insert_many(again);
        s.update_latent(5, |r| r.tags.push("rare".into())).unwrap();
        check_every_order(&s);
        for i in (1..=600).step_by(5) {
            s.catalog.write().unwrap().remove(i);
        }
        check_every_order(&s);
        let cat = s.catalog.read().unwrap();
        let n = cat.by_id.len();
        for i in INDEXES {
            assert!(cat.index(i).windows(2).all(|w| w[0].cmp(&w[1], i).is_lt()));
        }
        assert_eq!(
            (cat.ids.len(), cat.by_name.len(), cat.by_steps.len()),
            (n, n, n)
        );
    }

    #[test]
    fn name_and_steps_orders_and_tokens() {
        let s = Store::temporary().unwrap();
        let mut cat = s.catalog.write().unwrap();
        for (id, name, steps) in [
            (1, "beta", 50),
            (2, "Alpha", 100),
            (3, "alpha", 0),
            (4, "Gamma", 50),
        ] {
            let mut r = latent(id, name, &[]);
            r.encode_steps = steps;
            cat.insert(r);
        }
        drop(cat);
        let all = LatentFilter::default();
        let ids = |order| by_tokens(&s, &all, order, 1);
        assert_eq!(ids(LatentOrder::Name), vec![2, 3, 1, 4]);
        assert_eq!(ids(LatentOrder::EncodeSteps), vec![2, 4, 1, 3]);
        assert_eq!(ids(LatentOrder::Oldest), vec![1, 2, 3, 4]);
        let p = s.list_latents(&all, LatentOrder::Name, &Cursor::Offset(1), 1);
        let k = p.next.unwrap();
        assert_eq!(k.token(LatentOrder::Name), "n3:alpha");
        // The token holds the key: it still resumes after its latent is gone.
        s.catalog.write().unwrap().remove(3);
        let p = s.list_latents(&all, LatentOrder::Name, &Cursor::After(k), 10);
        assert_eq!(
            p.latents.iter().map(|r| r.id).collect::<Vec<_>>(),
            vec![1, 4]
        );
        assert_eq!(
            SortKey::parse(LatentOrder::EncodeSteps, "s50:4"),
            Some(SortKey::Steps(50, 4))
        );
        assert_eq!(
            SortKey::parse(LatentOrder::Name, "n4:a:b"),
            Some(SortKey::Name("a:b".into(), 4))
        );
        // A token of one order is refused by another.
        assert_eq!(SortKey::parse(LatentOrder::Oldest, "42"), None);
        assert_eq!(SortKey::parse(LatentOrder::Newest, "o42"), None);
        assert_eq!(SortKey::parse(LatentOrder::Name, "s1:2"), None);
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

    /// Opens the store in `dir` as a restarted daemon would. In one process sled's flusher
    /// thread can hold the file lock a moment after the last handle is dropped.
    fn reopen(dir: &Path) -> Store {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match Store::open(dir) {
                Ok(s) => return s,
                Err(ServerError::Config(_)) if std::time::Instant::now() < until => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// Ids run on without gaps across restarts and are never handed out twice, even
    /// after the newest record is deleted.
    #[test]
    fn ids_continue_across_restarts_without_reuse() {
        let dir = tempfile::tempdir().unwrap();
        let first: Vec<u64> = {
            let s = reopen(dir.path());
            (0..3).map(|_| s.next_id().unwrap()).collect()
        };
        assert_eq!(first, [0, 1, 2]);
        let s = reopen(dir.path());
        let (j, l) = (s.next_id().unwrap(), s.next_id().unwrap());
        assert_eq!((j, l), (3, 4), "no jump on restart");
        commit(&s, job(j, vec![]), &[(l, "x", &[])]);
        // The newest latent and the job that only it used go.
        assert_eq!(s.delete_latent(l).unwrap(), 1);
        s.flush().unwrap();
        drop(s);
        let s = reopen(dir.path());
        assert_eq!(s.next_id().unwrap(), 5, "deleted ids are not reused");
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
