//! A PostgreSQL store as the neutral record stream of [`crate::server::dump`]:
//! [`read`] the whole store into a [`Dump`] (one snapshot), [`load`] a dump into an
//! empty store (one transaction, binary COPY).
//!
//! Records go in as the JSON the sled store holds (jsonb), bytes as bytea; the
//! columns beside them are derived here, in one place ([`latent_row`],
//! [`job_row`]), so they cannot disagree with the record.
use std::collections::{BTreeMap, BTreeSet};
use std::pin::pin;

use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{Json, ToSql, Type};
use tokio_postgres::{Client, GenericClient, IsolationLevel};

use super::db_err;
use crate::server::dump::{Dump, JobDump, LatentDump, Problem};
use crate::server::error::{Result, ServerError};
use crate::server::store::{from_json, JobRecord, LatentRecord, Priority};

/// What a store holds, counted by the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    pub latents: u64,
    pub jobs: u64,
    /// The next id the `ids` sequence hands out.
    pub next_id: u64,
}

fn as_i64(id: u64, what: &str) -> Result<i64> {
    i64::try_from(id)
        .map_err(|_| ServerError::Internal(format!("{what}: {id} does not fit a bigint")))
}

/// The next value of the `ids` sequence, from its `last_value` and `is_called`.
const NEXT_ID: &str = "SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END FROM ids";

/// Latents, jobs and the next id.
pub async fn counts(c: &impl GenericClient) -> Result<Counts> {
    let r = c
        .query_one(
            &format!(
                "SELECT (SELECT count(*) FROM latents), (SELECT count(*) FROM jobs), ({NEXT_ID})"
            ),
            &[],
        )
        .await
        .map_err(db_err("counting the store"))?;
    Ok(Counts {
        latents: r.get::<_, i64>(0) as u64,
        jobs: r.get::<_, i64>(1) as u64,
        next_id: r.get::<_, i64>(2) as u64,
    })
}

/// Reads every latent and job in one REPEATABLE READ snapshot (a point-in-time
/// copy while daemons write). What does not parse, or whose x_T does not fit its
/// shape, is a [`Problem`] (lost), as [`crate::server::dump::read`] reports it.
pub async fn read(c: &mut Client) -> Result<Dump> {
    let tx = c
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(db_err("reading the store"))?;
    let mut problems = vec![];
    let mut max_id = 0u64;
    let rows = tx
        .query(
            "SELECT id, record::text, xt, source, preview FROM latents ORDER BY id",
            &[],
        )
        .await
        .map_err(db_err("reading latents"))?;
    let mut latents = Vec::with_capacity(rows.len());
    for r in rows {
        let id = r.get::<_, i64>(0) as u64;
        max_id = max_id.max(id + 1);
        let name = format!("lat-{id}");
        let text: &str = r.get(1);
        let record: LatentRecord = match from_json(&format!("latent {name}"), text.as_bytes()) {
            Ok(rec) => rec,
            Err(e) => {
                problems.push(Problem {
                    id: name,
                    what: format!("metadata does not parse: {e}"),
                    lost: true,
                });
                continue;
            }
        };
        if record.id != id {
            problems.push(Problem {
                id: name.clone(),
                what: format!("metadata names id {} (kept under {id})", record.id),
                lost: false,
            });
        }
        let xt: Vec<u8> = r.get(2);
        let [ch, h, w] = record.shape;
        let want = 4 * ch as usize * h as usize * w as usize;
        if xt.len() != want {
            problems.push(Problem {
                id: name,
                what: format!(
                    "x_T has {} bytes, its shape {ch}×{h}×{w} needs {want}",
                    xt.len()
                ),
                lost: true,
            });
            continue;
        }
        latents.push(LatentDump {
            record,
            xt,
            source: r.get(3),
            preview: r.get(4),
        });
    }
    let rows = tx
        .query(
            "SELECT id, record::text, spec, result FROM jobs ORDER BY id",
            &[],
        )
        .await
        .map_err(db_err("reading jobs"))?;
    let mut jobs = Vec::with_capacity(rows.len());
    for r in rows {
        let id = r.get::<_, i64>(0) as u64;
        max_id = max_id.max(id + 1);
        let name = format!("job-{id}");
        let text: &str = r.get(1);
        match from_json::<JobRecord>(&format!("job {name}"), text.as_bytes()) {
            Ok(record) => jobs.push(JobDump {
                record,
                spec: r.get(2),
                result: r.get(3),
            }),
            Err(e) => problems.push(Problem {
                id: name,
                what: format!("record does not parse: {e}"),
                lost: true,
            }),
        }
    }
    let next: i64 = tx
        .query_one(NEXT_ID, &[])
        .await
        .map_err(db_err("reading the id counter"))?
        .get(0);
    tx.commit().await.map_err(db_err("reading the store"))?;
    Ok(Dump {
        counter: (next as u64).max(max_id),
        latents,
        jobs,
        problems,
    })
}

/// The latents table's columns as [`load`] copies them, and their types.
const LATENT_COLUMNS: &str = "id, record, name, lower_name, tags, created_ms, encode_steps, \
     origin, parents, fingerprint, job_id, xt, source, preview";
const LATENT_TYPES: &[Type] = &[
    Type::INT8,
    Type::JSONB,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT_ARRAY,
    Type::INT8,
    Type::INT4,
    Type::TEXT,
    Type::INT8_ARRAY,
    Type::TEXT,
    Type::INT8,
    Type::BYTEA,
    Type::BYTEA,
    Type::BYTEA,
];

/// A latent's row: the record and what is derived from it.
struct LatentRow<'a> {
    id: i64,
    record: Json<&'a LatentRecord>,
    lower_name: String,
    created_ms: i64,
    encode_steps: i32,
    origin: &'static str,
    parents: Vec<i64>,
    job_id: i64,
}

fn latent_row(l: &LatentDump) -> Result<LatentRow<'_>> {
    let r = &l.record;
    Ok(LatentRow {
        id: as_i64(r.id, "latent id")?,
        record: Json(r),
        lower_name: r.name.to_lowercase(),
        created_ms: r.created_ms,
        encode_steps: i32::try_from(r.encode_steps).unwrap_or(i32::MAX),
        origin: r.origin.name(),
        parents: r
            .origin
            .parents()
            .iter()
            .map(|p| as_i64(*p, "parent id"))
            .collect::<Result<_>>()?,
        job_id: as_i64(r.job_id, "job id")?,
    })
}

const JOB_COLUMNS: &str = "id, record, kind, state, priority, created_ms, attempts, fingerprint, \
     spec, result, idempotency_key, ran_by";
const JOB_TYPES: &[Type] = &[
    Type::INT8,
    Type::JSONB,
    Type::TEXT,
    Type::TEXT,
    Type::INT2,
    Type::INT8,
    Type::INT4,
    Type::TEXT,
    Type::BYTEA,
    Type::BYTEA,
    Type::TEXT,
    Type::TEXT,
];

/// A job's row: the record and what is derived from it.
struct JobRow<'a> {
    id: i64,
    record: Json<&'a JobRecord>,
    kind: &'static str,
    state: &'static str,
    priority: i16,
    created_ms: i64,
    attempts: i32,
}

fn job_row(j: &JobDump) -> Result<JobRow<'_>> {
    let r = &j.record;
    Ok(JobRow {
        id: as_i64(r.id, "job id")?,
        record: Json(r),
        kind: r.kind.as_str(),
        state: state_name(r),
        priority: match r.priority {
            Priority::Interactive => 0,
            Priority::Batch => 1,
        },
        created_ms: r.created_ms,
        attempts: i32::try_from(r.attempts).unwrap_or(i32::MAX),
    })
}

fn state_name(r: &JobRecord) -> &'static str {
    use crate::server::store::JobState::*;
    match r.state {
        Queued => "queued",
        Running => "running",
        Done => "done",
        Failed => "failed",
        Cancelled => "cancelled",
    }
}

/// Writes `dump` into an empty store, in one transaction: every latent, every job,
/// the latent ↔ job links rebuilt from the records (as [`crate::server::dump::load`]
/// does: a link to a latent that is not there is left out), each idempotency key
/// on its job (a key two jobs carry goes to the later, as in sled), and the id
/// counter. A job's model fingerprint is that of the latents it read or made (a
/// job that touched none is left unpinned, NULL). A store that holds anything is
/// refused ([`ServerError::FailedPrecondition`]) and left as it was.
pub async fn load(c: &mut Client, dump: &Dump) -> Result<()> {
    let tx = c.transaction().await.map_err(db_err("writing the store"))?;
    // No daemon may write while the copy goes in.
    tx.batch_execute("LOCK TABLE latents, jobs, job_latents IN EXCLUSIVE MODE")
        .await
        .map_err(db_err("locking the store"))?;
    let n = counts(&tx).await?;
    if n.latents > 0 || n.jobs > 0 || n.next_id > 0 {
        return Err(ServerError::FailedPrecondition(format!(
            "not empty ({} latents, {} jobs, next id {})",
            n.latents, n.jobs, n.next_id
        )));
    }
    let fingerprints: BTreeMap<u64, &str> = dump
        .latents
        .iter()
        .map(|l| (l.record.id, l.record.fingerprint.as_str()))
        .collect();

    // Latents.
    let sink = tx
        .copy_in(&format!(
            "COPY latents ({LATENT_COLUMNS}) FROM STDIN BINARY"
        ))
        .await
        .map_err(db_err("copying latents"))?;
    let mut w = pin!(BinaryCopyInWriter::new(sink, LATENT_TYPES));
    for l in &dump.latents {
        let row = latent_row(l)?;
        let r = &l.record;
        let values: [&(dyn ToSql + Sync); 14] = [
            &row.id,
            &row.record,
            &r.name,
            &row.lower_name,
            &r.tags,
            &row.created_ms,
            &row.encode_steps,
            &row.origin,
            &row.parents,
            &r.fingerprint,
            &row.job_id,
            &l.xt,
            &l.source,
            &l.preview,
        ];
        w.as_mut()
            .write(&values)
            .await
            .map_err(db_err(&format!("copying lat-{}", r.id)))?;
    }
    w.finish().await.map_err(db_err("copying latents"))?;

    // Jobs.
    let mut key_owner: BTreeMap<&str, u64> = BTreeMap::new();
    for j in &dump.jobs {
        if !j.record.idempotency_key.is_empty() {
            key_owner.insert(&j.record.idempotency_key, j.record.id);
        }
    }
    let sink = tx
        .copy_in(&format!("COPY jobs ({JOB_COLUMNS}) FROM STDIN BINARY"))
        .await
        .map_err(db_err("copying jobs"))?;
    let mut w = pin!(BinaryCopyInWriter::new(sink, JOB_TYPES));
    let mut links: BTreeSet<(i64, i64)> = BTreeSet::new();
    for j in &dump.jobs {
        let row = job_row(j)?;
        let r = &j.record;
        let touched = || r.reads.iter().chain(r.produced.iter());
        let fingerprint: Option<&str> = touched().find_map(|l| fingerprints.get(l).copied());
        for l in touched().filter(|l| fingerprints.contains_key(l)) {
            links.insert((as_i64(*l, "latent id")?, row.id));
        }
        let key: Option<&str> = (key_owner.get(r.idempotency_key.as_str()) == Some(&r.id))
            .then_some(r.idempotency_key.as_str());
        // The daemon that ran it, as the record says (NULL: never started).
        let ran_by: Option<&str> = (!r.ran_by.is_empty()).then_some(r.ran_by.as_str());
        let values: [&(dyn ToSql + Sync); 12] = [
            &row.id,
            &row.record,
            &row.kind,
            &row.state,
            &row.priority,
            &row.created_ms,
            &row.attempts,
            &fingerprint,
            &j.spec,
            &j.result,
            &key,
            &ran_by,
        ];
        w.as_mut()
            .write(&values)
            .await
            .map_err(db_err(&format!("copying job-{}", r.id)))?;
    }
    w.finish().await.map_err(db_err("copying jobs"))?;

    // The latent ↔ job index.
    let sink = tx
        .copy_in("COPY job_latents (latent, job) FROM STDIN BINARY")
        .await
        .map_err(db_err("copying job_latents"))?;
    let mut w = pin!(BinaryCopyInWriter::new(sink, &[Type::INT8, Type::INT8]));
    for (l, j) in &links {
        w.as_mut()
            .write(&[l, j])
            .await
            .map_err(db_err("copying job_latents"))?;
    }
    w.finish().await.map_err(db_err("copying job_latents"))?;

    // The counter: ids are never reused, so it travels (past every id in use).
    let max_id = dump
        .latents
        .iter()
        .map(|l| l.record.id + 1)
        .chain(dump.jobs.iter().map(|j| j.record.id + 1))
        .max()
        .unwrap_or(0);
    let next = as_i64(dump.counter.max(max_id), "next id")?;
    tx.execute("SELECT setval('ids', $1, false)", &[&next])
        .await
        .map_err(db_err("setting the id counter"))?;
    tx.commit().await.map_err(db_err("committing the copy"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{Pg, Schema};
    use crate::server::dump::{self, tests_support::filled, Checks};
    use crate::server::store::Store;
    use ddim_tests::pg::PgServer;

    #[test]
    fn a_store_goes_into_postgres_and_comes_back_identical() {
        let server = PgServer::start();
        let sled = filled();
        let mut d = sled.frozen(|t| dump::read(t, &Checks::default())).unwrap();
        // A job that ran on a sled daemon: its record names it, and so does the column.
        d.jobs[0].record.ran_by = "127.0.0.1:7860".into();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let back = rt.block_on(async {
            let pg = Pg::connect(&server.url(), "--to", 2, Schema::Migrate)
                .await
                .unwrap();
            pg.load(&d).await.unwrap();
            let n = pg.counts().await.unwrap();
            assert_eq!((n.latents, n.jobs, n.next_id), (2, 1, 3));
            // Not twice.
            let e = pg.load(&d).await.unwrap_err().to_string();
            assert!(
                e.contains("not empty (2 latents, 1 jobs, next id 3)"),
                "{e}"
            );
            let c = pg.client().await.unwrap();
            let r = c
                .query_one(
                    "SELECT fingerprint, idempotency_key, state, priority, ran_by FROM jobs",
                    &[],
                )
                .await
                .unwrap();
            assert_eq!(r.get::<_, Option<&str>>(0), Some("f"));
            assert_eq!(r.get::<_, Option<&str>>(1), Some("key"));
            assert_eq!(r.get::<_, &str>(2), "done");
            assert_eq!(r.get::<_, i16>(3), 1);
            assert_eq!(r.get::<_, Option<&str>>(4), Some("127.0.0.1:7860"));
            let links: i64 = c
                .query_one("SELECT count(*) FROM job_latents", &[])
                .await
                .unwrap()
                .get(0);
            assert_eq!(links, 2);
            let tagged: i64 = c
                .query_one("SELECT count(*) FROM latents WHERE tags @> '{t}'", &[])
                .await
                .unwrap()
                .get(0);
            assert_eq!(tagged, 2);
            // Ids carry on after the migrated ones.
            assert_eq!(pg.next_id().await.unwrap(), 3);
            pg.read().await.unwrap()
        });
        assert!(back.problems.is_empty(), "{:?}", back.problems);
        assert_eq!(back.latents, d.latents);
        assert_eq!(back.jobs, d.jobs);
        assert_eq!(back.counter, 4, "3 was handed out above");
        // And back into sled.
        let copy = Store::temporary().unwrap();
        dump::load(&copy, &back).unwrap();
        let again = copy.frozen(|t| dump::read(t, &Checks::default())).unwrap();
        assert_eq!(again.latents, d.latents);
        assert_eq!(again.jobs, d.jobs);
    }
}
