//! The store as a stream of backend-neutral records, and the checks every tool
//! that reads a whole store shares.
//!
//! `store verify`, `store salvage`, `store backup` and `store restore` (and, later,
//! `ddimd migrate` to another backend) are all "read records from one place, check
//! them, write them to another": [`read`] turns an open sled store into a [`Dump`]
//! (every record that reads, and a [`Problem`] for every one that does not), and
//! [`load`] writes a dump into an empty store, rebuilding the indexes
//! (`job_latents`, `idempotency`) from the records rather than copying them.
//!
//! What a dump holds is exactly what a backup archive holds (docs/daemon.md, Backups):
//! the id counter, latents (metadata, x_T as f32 little-endian, the source and preview
//! PNGs) and jobs (record, `ddim.v1.JobSpec` and `ddim.v1.JobResult` bytes).
use ddim_proto::v1 as pb;
use prost::Message;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::error::{Result, ServerError};
use super::store::{
    from_json, id_of, key, pair_key, scan_tree, to_json, JobRecord, JobState, LatentRecord,
    OriginRecord, Store, Trees,
};

/// One latent with everything stored about it.
#[derive(Debug, Clone, PartialEq)]
pub struct LatentDump {
    pub record: LatentRecord,
    /// x_T, f32 little-endian, C·H·W values.
    pub xt: Vec<u8>,
    pub source: Option<Vec<u8>>,
    pub preview: Option<Vec<u8>>,
}

/// One job with its spec and result.
#[derive(Debug, Clone, PartialEq)]
pub struct JobDump {
    pub record: JobRecord,
    /// `ddim.v1.JobSpec` bytes.
    pub spec: Option<Vec<u8>>,
    /// `ddim.v1.JobResult` bytes.
    pub result: Option<Vec<u8>>,
}

/// A record of the neutral stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// The next id to hand out (ids are never reused, so it travels).
    Counter(u64),
    Latent(Box<LatentDump>),
    Job(Box<JobDump>),
}

/// Something that did not read or does not hold together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Problem {
    /// `lat-N`, `job-N`, or a tree's name.
    pub id: String,
    pub what: String,
    /// The record itself is gone (a salvage cannot keep it); otherwise a part of it
    /// (a PNG, a spec) or a link is.
    pub lost: bool,
}

/// What [`read`] checks beyond "it reads".
#[derive(Debug, Clone, Default)]
pub struct Checks {
    /// [C, H, W] of the model: every x_T must have C·H·W values of this shape.
    pub model_shape: Option<[u32; 3]>,
    /// Decode every PNG.
    pub decode_pngs: bool,
}

/// A whole store as records, and what is wrong with it.
#[derive(Debug, Clone, Default)]
pub struct Dump {
    pub counter: u64,
    pub latents: Vec<LatentDump>,
    pub jobs: Vec<JobDump>,
    pub problems: Vec<Problem>,
}

impl Dump {
    /// The records as the neutral stream: the counter, latents, then jobs.
    pub fn records(self) -> impl Iterator<Item = Record> {
        std::iter::once(Record::Counter(self.counter))
            .chain(
                self.latents
                    .into_iter()
                    .map(|l| Record::Latent(Box::new(l))),
            )
            .chain(self.jobs.into_iter().map(|j| Record::Job(Box::new(j))))
    }

    /// Gathers a stream back into a dump (no problems).
    pub fn from_records(records: impl IntoIterator<Item = Record>) -> Dump {
        let mut d = Dump::default();
        for r in records {
            match r {
                Record::Counter(c) => d.counter = d.counter.max(c),
                Record::Latent(l) => d.latents.push(*l),
                Record::Job(j) => d.jobs.push(*j),
            }
        }
        d
    }

    /// Damaged ids, each once, in order.
    pub fn damaged_ids(&self) -> Vec<String> {
        let set: BTreeSet<(u64, &str)> = self
            .problems
            .iter()
            .map(|p| (id_num(&p.id), p.id.as_str()))
            .collect();
        set.into_iter().map(|(_, s)| s.to_string()).collect()
    }

    /// Ids whose record is lost.
    pub fn lost_ids(&self) -> Vec<String> {
        let set: BTreeSet<(u64, &str)> = self
            .problems
            .iter()
            .filter(|p| p.lost)
            .map(|p| (id_num(&p.id), p.id.as_str()))
            .collect();
        set.into_iter().map(|(_, s)| s.to_string()).collect()
    }
}

/// Sorts `lat-10` after `lat-9`.
fn id_num(id: &str) -> u64 {
    id.rsplit('-')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(u64::MAX)
}

/// x_T bytes as a float count, if whole.
fn floats(xt: &[u8]) -> Option<usize> {
    xt.len().is_multiple_of(4).then_some(xt.len() / 4)
}

/// Reads every record of every tree of `t` and checks that they hold together: each
/// latent has its x_T (of its own shape, and of the model's when known), its preview
/// (and its source when it was encoded from one), PNGs that decode, and its job; each
/// job has its spec, a finished job its result, and every latent the index links to
/// it exists. Never fails: what does not read is a [`Problem`].
pub fn read(t: &Trees, checks: &Checks) -> Dump {
    let mut problems = vec![];
    let mut problem = |id: String, what: String, lost: bool| {
        problems.push(Problem { id, what, lost });
    };
    let counter = t.counter();
    if counter.is_none() {
        problem(
            "meta".into(),
            "the id counter is unreadable (rebuilt from the ids in use)".into(),
            false,
        );
    }
    let upper = counter.unwrap_or(0);
    // Every id-keyed tree, read in full (a damaged node: probed id by id).
    let mut scan = |tree: &sled::Tree, name: &'static str, prefix: &'static str| {
        let (good, bad) = scan_tree(tree, upper);
        let mut damaged = BTreeSet::new();
        for (id, why) in bad {
            match id {
                Some(i) => {
                    damaged.insert(i);
                    problem(format!("{prefix}{i}"), format!("{name}: {why}"), false);
                }
                None => problem(name.into(), why, false),
            }
        }
        (
            good.into_iter().collect::<BTreeMap<u64, sled::IVec>>(),
            damaged,
        )
    };
    let (latents, bad_latents) = scan(&t.latents, "latents", "lat-");
    let (xts, _) = scan(&t.latent_xt, "latent_xt", "lat-");
    let (sources, _) = scan(&t.latent_source, "latent_source", "lat-");
    let (previews, _) = scan(&t.latent_preview, "latent_preview", "lat-");
    let (jobs, bad_jobs) = scan(&t.jobs, "jobs", "job-");
    let (specs, _) = scan(&t.job_specs, "job_specs", "job-");
    let (results, _) = scan(&t.job_results, "job_results", "job-");
    // The latent ↔ job index.
    let mut pairs: BTreeSet<(u64, u64)> = BTreeSet::new();
    for kv in t.job_latents.iter() {
        match kv {
            Ok((k, _)) if k.len() == 16 => {
                let (l, j) = (id_of(&k[..8]), id_of(&k[8..]));
                if let (Ok(l), Ok(j)) = (l, j) {
                    pairs.insert((l, j));
                }
            }
            Ok(_) => problem("job_latents".into(), "a malformed key".into(), false),
            Err(e) => {
                problem(
                    "job_latents".into(),
                    format!("unreadable: {}", super::store::sled_text(&e)),
                    false,
                );
                break;
            }
        }
    }
    let mut idem: Vec<(String, u64)> = vec![];
    for kv in t.idempotency.iter() {
        match kv {
            Ok((k, v)) => match id_of(&v) {
                Ok(j) => idem.push((String::from_utf8_lossy(&k).into_owned(), j)),
                Err(_) => problem("idempotency".into(), "a malformed entry".into(), false),
            },
            Err(e) => {
                problem(
                    "idempotency".into(),
                    format!("unreadable: {}", super::store::sled_text(&e)),
                    false,
                );
                break;
            }
        }
    }
    let mut problem = |id: String, what: String, lost: bool| {
        problems.push(Problem { id, what, lost });
    };

    // Latents.
    let mut out_latents = vec![];
    let mut max_id = 0u64;
    let mut known_latents = BTreeSet::new();
    for (&id, v) in &latents {
        let name = format!("lat-{id}");
        max_id = max_id.max(id + 1);
        let record: LatentRecord = match from_json(&format!("latent {name}"), v) {
            Ok(r) => r,
            Err(e) => {
                problem(name.clone(), format!("metadata does not parse: {e}"), true);
                continue;
            }
        };
        if record.id != id {
            problem(
                name.clone(),
                format!("metadata names id {} (kept under {id})", record.id),
                false,
            );
        }
        let Some(xt) = xts.get(&id) else {
            problem(name.clone(), "x_T is missing or unreadable".into(), true);
            continue;
        };
        let [c, h, w] = record.shape;
        let want = (c as usize) * (h as usize) * (w as usize);
        if floats(xt) != Some(want) {
            problem(
                name.clone(),
                format!(
                    "x_T has {} bytes, its shape {c}×{h}×{w} needs {}",
                    xt.len(),
                    want * 4
                ),
                true,
            );
            continue;
        }
        if let Some(m) = checks.model_shape {
            if m != record.shape {
                problem(
                    name.clone(),
                    format!(
                        "shape {c}×{h}×{w} is not the model's {}×{}×{}",
                        m[0], m[1], m[2]
                    ),
                    false,
                );
            }
        }
        let png = |which: &str,
                   bytes: Option<&sled::IVec>,
                   problem: &mut dyn FnMut(String, String, bool)| {
            let b = bytes?;
            if checks.decode_pngs {
                if let Err(e) = image::load_from_memory_with_format(b, image::ImageFormat::Png) {
                    problem(
                        name.clone(),
                        format!("the {which} PNG does not decode: {e}"),
                        false,
                    );
                    return None;
                }
            }
            Some(b.to_vec())
        };
        let preview = png("preview", previews.get(&id), &mut problem);
        if !previews.contains_key(&id) {
            problem(
                name.clone(),
                "the preview PNG is missing or unreadable".into(),
                false,
            );
        }
        let has_source = matches!(
            record.origin,
            OriginRecord::Encoded {
                has_source: true,
                ..
            }
        );
        let source = png("source", sources.get(&id), &mut problem);
        if has_source && !sources.contains_key(&id) {
            problem(
                name.clone(),
                "the source PNG is missing or unreadable".into(),
                false,
            );
        }
        if !jobs.contains_key(&record.job_id) && !bad_jobs.contains(&record.job_id) {
            problem(
                name.clone(),
                format!("its job job-{} is missing", record.job_id),
                false,
            );
        }
        known_latents.insert(id);
        out_latents.push(LatentDump {
            record,
            xt: xt.to_vec(),
            source,
            preview,
        });
    }
    // Parts whose latent record is gone: the latent was there, and is lost.
    for (tree, name) in [(&xts, "x_T"), (&previews, "preview"), (&sources, "source")] {
        for &id in tree.keys() {
            max_id = max_id.max(id + 1);
            if !latents.contains_key(&id) && !bad_latents.contains(&id) {
                problem(
                    format!("lat-{id}"),
                    format!("its {name} is stored but its metadata is gone"),
                    true,
                );
            }
        }
    }
    for &id in &bad_latents {
        problem(format!("lat-{id}"), "metadata unreadable".into(), true);
    }

    // Jobs.
    let mut out_jobs = vec![];
    let mut known_jobs = BTreeSet::new();
    for (&id, v) in &jobs {
        let name = format!("job-{id}");
        max_id = max_id.max(id + 1);
        let record: JobRecord = match from_json(&format!("job {name}"), v) {
            Ok(r) => r,
            Err(e) => {
                problem(name.clone(), format!("record does not parse: {e}"), true);
                continue;
            }
        };
        let spec = specs.get(&id).map(|b| b.to_vec());
        match &spec {
            None => problem(
                name.clone(),
                "its spec is missing or unreadable".into(),
                false,
            ),
            Some(b) if pb::JobSpec::decode(b.as_slice()).is_err() => {
                problem(name.clone(), "its spec does not decode".into(), false)
            }
            _ => {}
        }
        let result = results.get(&id).map(|b| b.to_vec());
        match &result {
            None if record.state == JobState::Done => problem(
                name.clone(),
                "its result is missing or unreadable".into(),
                false,
            ),
            Some(b) if pb::JobResult::decode(b.as_slice()).is_err() => {
                problem(name.clone(), "its result does not decode".into(), false)
            }
            _ => {}
        }
        if !record.state.is_terminal() {
            for l in &record.reads {
                if !latents.contains_key(l) && !bad_latents.contains(l) {
                    problem(
                        name.clone(),
                        format!("it reads lat-{l}, which is missing"),
                        false,
                    );
                }
            }
        }
        // Deleting a job's last latent deletes the job: a finished job none of whose
        // latents exists lost them to damage.
        let linked: BTreeSet<u64> = record
            .reads
            .iter()
            .chain(record.produced.iter())
            .copied()
            .collect();
        let exists =
            |l: &u64| latents.contains_key(l) || bad_latents.contains(l) || xts.contains_key(l);
        if record.state.is_terminal() && !linked.is_empty() && !linked.iter().any(exists) {
            for l in &linked {
                problem(
                    format!("lat-{l}"),
                    format!("vanished: {name} used it and none of its latents is left"),
                    true,
                );
            }
        }
        known_jobs.insert(id);
        out_jobs.push(JobDump {
            record,
            spec,
            result,
        });
    }
    for &id in specs.keys().chain(results.keys()) {
        max_id = max_id.max(id + 1);
        if !jobs.contains_key(&id) && !bad_jobs.contains(&id) && known_jobs.insert(id) {
            problem(
                format!("job-{id}"),
                "its spec or result is stored but its record is gone".into(),
                true,
            );
        }
    }
    for &id in &bad_jobs {
        problem(format!("job-{id}"), "record unreadable".into(), true);
    }
    // The index: a link names a latent and a job that both exist (a delete removes
    // the link with the latent), so a dangling link is a record that vanished.
    for &(l, j) in &pairs {
        if !latents.contains_key(&l) && !bad_latents.contains(&l) && !xts.contains_key(&l) {
            problem(
                format!("lat-{l}"),
                format!("job-{j} links to it but it is gone"),
                true,
            );
        }
        if !jobs.contains_key(&j) && !bad_jobs.contains(&j) {
            problem(
                format!("job-{j}"),
                format!("lat-{l} links to it but it is gone"),
                true,
            );
        }
    }
    for (k, j) in idem {
        if !jobs.contains_key(&j) && !bad_jobs.contains(&j) {
            problem(
                format!("job-{j}"),
                format!("idempotency key {k:?} names it but it is gone"),
                true,
            );
        }
    }
    problems.sort_by(|a, b| (id_num(&a.id), &a.id).cmp(&(id_num(&b.id), &b.id)));
    problems.dedup();
    Dump {
        counter: counter.unwrap_or(0).max(max_id),
        latents: out_latents,
        jobs: out_jobs,
        problems,
    }
}

/// Writes a dump into an empty store: records, then the indexes rebuilt from them
/// (a job links to each of its latents that exists; a job's idempotency key names
/// it), the counter, and a flush.
pub fn load(store: &Store, dump: &Dump) -> Result<()> {
    if !store.is_empty() {
        return Err(ServerError::FailedPrecondition(
            "the target store is not empty".into(),
        ));
    }
    let t = store.t()?;
    let present: BTreeSet<u64> = dump.latents.iter().map(|l| l.record.id).collect();
    let mut max_id = 0u64;
    for l in &dump.latents {
        let id = l.record.id;
        max_id = max_id.max(id + 1);
        t.latents.insert(key(id), to_json(&l.record))?;
        t.latent_xt.insert(key(id), l.xt.as_slice())?;
        if let Some(s) = &l.source {
            t.latent_source.insert(key(id), s.as_slice())?;
        }
        if let Some(p) = &l.preview {
            t.latent_preview.insert(key(id), p.as_slice())?;
        }
    }
    for j in &dump.jobs {
        let id = j.record.id;
        max_id = max_id.max(id + 1);
        t.jobs.insert(key(id), to_json(&j.record))?;
        if let Some(s) = &j.spec {
            t.job_specs.insert(key(id), s.as_slice())?;
        }
        if let Some(r) = &j.result {
            t.job_results.insert(key(id), r.as_slice())?;
        }
        for l in j.record.reads.iter().chain(j.record.produced.iter()) {
            if present.contains(l) {
                t.job_latents.insert(pair_key(*l, id), &[])?;
            }
        }
        if !j.record.idempotency_key.is_empty() {
            t.idempotency
                .insert(j.record.idempotency_key.as_bytes(), &key(id))?;
        }
    }
    let next = dump.counter.max(max_id);
    t.meta.insert(b"next_id", &next.to_be_bytes())?;
    t.db.flush()?;
    store.reload_catalog()?;
    Ok(())
}

/// What the store held at its last clean stop: written by `serve` at a graceful
/// stop (`DATA/clean-shutdown`, kept as `DATA/last-clean-stop.json` while serving).
/// sled's recovery can silently roll a damaged store back to an older state (its
/// log replay stops at the first damaged entry): the id counter then runs behind
/// this one, and the ids listed here that are gone were lost.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct Inventory {
    pub stopped_unix_ms: i64,
    pub next_id: u64,
    pub latents: u64,
    pub jobs: u64,
    /// Latent ids as inclusive ranges.
    pub latent_ids: Vec<[u64; 2]>,
    pub job_ids: Vec<[u64; 2]>,
}

fn ranges(ids: impl IntoIterator<Item = u64>) -> Vec<[u64; 2]> {
    let mut out: Vec<[u64; 2]> = vec![];
    for id in ids {
        match out.last_mut() {
            Some(r) if r[1] + 1 == id => r[1] = id,
            _ => out.push([id, id]),
        }
    }
    out
}

fn expand(r: &[[u64; 2]]) -> impl Iterator<Item = u64> + '_ {
    r.iter().flat_map(|[a, b]| *a..=*b)
}

impl Inventory {
    /// The store's ids now (latents from the catalogue, jobs by key).
    pub fn of(store: &Store, now_ms: i64) -> Result<Inventory> {
        let t = store.t()?;
        let latents = store.latent_ids();
        let jobs: Vec<u64> = t
            .jobs
            .iter()
            .keys()
            .filter_map(|k| k.ok().and_then(|k| id_of(&k).ok()))
            .collect();
        Ok(Inventory {
            stopped_unix_ms: now_ms,
            next_id: t.counter().unwrap_or(0),
            latents: latents.len() as u64,
            jobs: jobs.len() as u64,
            latent_ids: ranges(latents),
            job_ids: ranges(jobs),
        })
    }

    /// Reads `DATA/clean-shutdown` or `DATA/last-clean-stop.json`.
    pub fn load(data: &Path) -> Option<Inventory> {
        [INVENTORY_MARKER, INVENTORY_KEPT]
            .iter()
            .find_map(|n| std::fs::read(data.join(n)).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
    }

    /// Problems of a store whose counter `counter` runs behind this inventory, with
    /// `has_latent`/`has_job` saying what it holds: the ids gone since.
    pub fn check(
        &self,
        counter: u64,
        has_latent: impl Fn(u64) -> bool,
        has_job: impl Fn(u64) -> bool,
    ) -> Vec<Problem> {
        if counter >= self.next_id {
            return vec![];
        }
        let mut out = vec![Problem {
            id: "store".into(),
            what: format!(
                "rolled back: its id counter is {counter}, the last clean stop had handed out ids up to {}",
                self.next_id
            ),
            lost: false,
        }];
        for l in expand(&self.latent_ids).filter(|l| !has_latent(*l)) {
            out.push(Problem {
                id: format!("lat-{l}"),
                what: "vanished: it was in the store at its last clean stop".into(),
                lost: true,
            });
        }
        for j in expand(&self.job_ids).filter(|j| !has_job(*j)) {
            out.push(Problem {
                id: format!("job-{j}"),
                what: "vanished: it was in the store at its last clean stop".into(),
                lost: true,
            });
        }
        out
    }

    /// Adds the problems of [`Inventory::check`] to a dump, and moves its counter
    /// past every id ever handed out.
    pub fn apply(&self, d: &mut Dump) {
        let latents: BTreeSet<u64> = d.latents.iter().map(|l| l.record.id).collect();
        let jobs: BTreeSet<u64> = d.jobs.iter().map(|j| j.record.id).collect();
        let mut p = self.check(d.counter, |l| latents.contains(&l), |j| jobs.contains(&j));
        d.problems.append(&mut p);
        d.problems
            .sort_by(|a, b| (id_num(&a.id), &a.id).cmp(&(id_num(&b.id), &b.id)));
        d.problems.dedup();
        d.counter = d.counter.max(self.next_id);
    }
}

/// Records found gone by a rollback check, kept in `DATA/lost-records.json` so every
/// later start, verify and `GetStats` still say so (delete the file once the
/// store is salvaged or restored elsewhere).
pub const LOST_RECORDS: &str = "lost-records.json";

/// Reads `DATA/lost-records.json`.
pub fn load_lost(data: &Path) -> Vec<Problem> {
    std::fs::read(data.join(LOST_RECORDS))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Adds `problems` to `DATA/lost-records.json`.
pub fn save_lost(data: &Path, problems: &[Problem]) -> std::io::Result<()> {
    let mut all = load_lost(data);
    for p in problems {
        if !all.contains(p) {
            all.push(p.clone());
        }
    }
    std::fs::write(data.join(LOST_RECORDS), serde_json::to_vec_pretty(&all)?)
}

/// Written at a graceful stop (with the [`Inventory`]); its absence at start means
/// the store was not shut down cleanly.
pub const INVENTORY_MARKER: &str = "clean-shutdown";
/// What `serve` renames the marker to at start.
pub const INVENTORY_KEPT: &str = "last-clean-stop.json";

/// The [C, H, W] a model folder works on, read from its `config.json` (no weights).
pub fn model_shape(dir: &Path) -> Result<[u32; 3]> {
    let cfg = if dir.join("unet").join("config.json").is_file() {
        dir.join("unet").join("config.json")
    } else {
        dir.join("config.json")
    };
    let c = crate::engine::config::UNetConfig::from_file(&cfg)
        .map_err(|e| ServerError::Config(format!("--model {}: {e}", dir.display())))?;
    let (h, w) = c
        .sample_hw()
        .map_err(|e| ServerError::Config(format!("--model {}: {e}", dir.display())))?;
    Ok([c.in_channels as u32, h as u32, w as u32])
}

#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;
    use crate::server::store::{NewLatent, Priority, RECORD_VERSION};

    fn png() -> Vec<u8> {
        let img = image::GrayImage::from_pixel(2, 2, image::Luma([9]));
        let mut out = std::io::Cursor::new(vec![]);
        image::DynamicImage::ImageLuma8(img)
            .write_to(&mut out, image::ImageFormat::Png)
            .unwrap();
        out.into_inner()
    }

    pub fn filled() -> Store {
        let s = Store::temporary().unwrap();
        let jid = s.next_id().unwrap();
        let mut j = JobRecord {
            v: RECORD_VERSION,
            id: jid,
            kind: super::super::store::JobKind::Sample,
            state: JobState::Queued,
            priority: Priority::Batch,
            created_ms: 1,
            started_ms: 0,
            finished_ms: 0,
            attempts: 0,
            error: String::new(),
            total_steps: 1,
            reads: vec![],
            produced: vec![],
            idempotency_key: "key".into(),
            batch: None,
            rows: 2,
            images: 2,
            stopped_at: 0,
            ran_by: String::new(),
        };
        s.insert_job(&j, &pb::JobSpec::default().encode_to_vec())
            .unwrap();
        let mut run = j.clone();
        run.state = JobState::Running;
        s.move_job(&run, JobState::Queued).unwrap();
        let ids = [s.next_id().unwrap(), s.next_id().unwrap()];
        j.state = JobState::Done;
        j.produced = ids.to_vec();
        let news: Vec<NewLatent> = ids
            .iter()
            .map(|&id| NewLatent {
                record: LatentRecord {
                    v: RECORD_VERSION,
                    id,
                    name: format!("n{id}"),
                    tags: vec!["t".into()],
                    created_ms: 2,
                    shape: [1, 2, 2],
                    fingerprint: "f".into(),
                    encode_steps: 0,
                    encode_spacing: String::new(),
                    encode_solver: String::new(),
                    origin: OriginRecord::Sampled { seed: 1, index: 0 },
                    preview_steps: 10,
                    job_id: jid,
                },
                xt: vec![id as f32, -0.5, f32::MIN_POSITIVE, 3.0],
                source_png: None,
                preview_png: png(),
            })
            .collect();
        s.finish_job(&j, &pb::JobResult::default().encode_to_vec(), &news)
            .unwrap();
        s
    }

    #[test]
    fn a_healthy_store_reads_clean_and_loads_identically() {
        let s = filled();
        let checks = Checks {
            model_shape: Some([1, 2, 2]),
            decode_pngs: true,
        };
        let d = s.frozen(|t| read(t, &checks)).unwrap();
        assert!(d.problems.is_empty(), "{:?}", d.problems);
        assert_eq!((d.latents.len(), d.jobs.len(), d.counter), (2, 1, 3));
        let copy = Store::temporary().unwrap();
        load(&copy, &Dump::from_records(d.clone().records())).unwrap();
        let again = copy.frozen(|t| read(t, &checks)).unwrap();
        assert_eq!(again.latents, d.latents);
        assert_eq!(again.jobs, d.jobs);
        assert_eq!(copy.next_id().unwrap(), 3, "the counter travels");
        assert_eq!(copy.latent_count(), 2);
        assert_eq!(copy.job_by_key("key").unwrap().unwrap().id, 0);
        assert_eq!(copy.list_jobs(&[], Some(1), 10).unwrap().len(), 1);
        // A model of another shape is named.
        let other = Checks {
            model_shape: Some([3, 2, 2]),
            decode_pngs: true,
        };
        let d = s.frozen(|t| read(t, &other)).unwrap();
        assert_eq!(d.damaged_ids(), vec!["lat-1", "lat-2"]);
        assert!(d.lost_ids().is_empty());
    }

    #[test]
    fn missing_and_unparsable_records_are_named() {
        let s = filled();
        {
            let t = s.t().unwrap();
            t.latents.insert(key(1), b"{not json".to_vec()).unwrap();
            t.latent_preview.remove(key(2)).unwrap();
            t.job_specs.remove(key(0)).unwrap();
        }
        let d = s.frozen(|t| read(t, &Checks::default())).unwrap();
        assert_eq!(d.damaged_ids(), vec!["job-0", "lat-1", "lat-2"]);
        assert_eq!(d.lost_ids(), vec!["lat-1"]);
        assert_eq!(d.latents.len(), 1);
        // x_T of the wrong length: lost.
        s.t()
            .unwrap()
            .latent_xt
            .insert(key(2), vec![0u8; 5])
            .unwrap();
        let d = s.frozen(|t| read(t, &Checks::default())).unwrap();
        assert_eq!(d.lost_ids(), vec!["lat-1", "lat-2"]);
        assert!(d.latents.is_empty());
        // The index still links job-0 to both: their records vanished.
        assert!(d
            .problems
            .iter()
            .any(|p| p.id == "lat-1" && p.what.contains("metadata does not parse")));
    }
}
