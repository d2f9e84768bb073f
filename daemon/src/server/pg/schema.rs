//! The schema's migrations, embedded in the binary and applied at connect.
//!
//! Each version is one SQL file, `migrations/NNNN_name.sql`, listed in
//! [`MIGRATIONS`]; `schema_version` records the versions applied. Everything
//! runs in ONE transaction that first takes `pg_advisory_xact_lock`: daemons
//! starting together against a new database queue on the lock, the first creates
//! the schema, the others then find it applied and do nothing; a failed
//! migration leaves nothing behind (PostgreSQL's DDL is transactional), and the
//! lock goes with the transaction even if the process dies.
//!
//! Why not the `refinery` crate: it takes no lock, so two daemons starting
//! together on an empty database race to create the same tables (one of them
//! fails on a duplicate key in the catalogue); serialising that is the whole
//! point for N daemons. What remains is forty lines, with no extra dependency.
use tokio_postgres::Client;

use super::db_err;
use crate::server::error::{Result, ServerError};

/// One version of the schema.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every version, oldest first. A released migration is never edited: a change is
/// a new file.
pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "store",
    sql: include_str!("migrations/0001_store.sql"),
}];

/// The key of the advisory lock the runner takes ("ddimd" in ASCII).
const LOCK_KEY: i64 = 0x0064_6469_6d64;

/// The newest version applied, `None` when the database has no store at all.
pub async fn version(c: &Client) -> Result<Option<i32>> {
    let exists: bool = c
        .query_one("SELECT to_regclass('schema_version') IS NOT NULL", &[])
        .await
        .map_err(db_err("reading the schema version"))?
        .get(0);
    if !exists {
        return Ok(None);
    }
    let v: Option<i32> = c
        .query_one("SELECT max(version) FROM schema_version", &[])
        .await
        .map_err(db_err("reading the schema version"))?
        .get(0);
    Ok(Some(v.unwrap_or(0)))
}

/// Applies the migrations this database lacks; returns the versions applied (none:
/// it was up to date). A database whose schema is newer than this build's is
/// refused (an older `ddimd` would misread it).
pub async fn migrate(c: &mut Client) -> Result<Vec<i32>> {
    let tx = c
        .transaction()
        .await
        .map_err(db_err("starting the schema migration"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
        .await
        .map_err(db_err("taking the schema lock"))?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_version (
             version integer PRIMARY KEY,
             name    text NOT NULL,
             applied timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await
    .map_err(db_err("creating schema_version"))?;
    let applied: Vec<(i32, String)> = tx
        .query(
            "SELECT version, name FROM schema_version ORDER BY version",
            &[],
        )
        .await
        .map_err(db_err("reading schema_version"))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let known = MIGRATIONS.last().map_or(0, |m| m.version);
    if let Some((v, _)) = applied.iter().find(|(v, _)| *v > known) {
        return Err(ServerError::Config(format!(
            "the database's schema is version {v}, newer than this ddimd's ({known}): upgrade ddimd"
        )));
    }
    for (v, name) in &applied {
        if let Some(m) = MIGRATIONS.iter().find(|m| m.version == *v) {
            if m.name != name {
                return Err(ServerError::Config(format!(
                    "the database's schema version {v} is {name:?}, this ddimd's is {:?}: not a ddimd store, or another build's",
                    m.name
                )));
            }
        }
    }
    let mut done = vec![];
    for m in MIGRATIONS {
        if applied.iter().any(|(v, _)| *v == m.version) {
            continue;
        }
        tx.batch_execute(m.sql).await.map_err(|e| {
            ServerError::Database(format!(
                "schema migration {} ({}): {}",
                m.version,
                m.name,
                super::error_text(&e)
            ))
        })?;
        tx.execute(
            "INSERT INTO schema_version (version, name) VALUES ($1, $2)",
            &[&m.version, &m.name],
        )
        .await
        .map_err(db_err("recording the schema version"))?;
        done.push(m.version);
    }
    tx.commit()
        .await
        .map_err(db_err("committing the schema migration"))?;
    if !done.is_empty() {
        tracing::info!(versions = ?done, "PostgreSQL schema migrated");
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::super::{Pg, Schema};
    use super::*;
    use ddim_tests::pg::PgServer;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn migrations_applied_twice_are_a_no_op() {
        let server = PgServer::start();
        rt().block_on(async {
            let pg = Pg::connect(&server.url(), "--store", 2, Schema::Migrate)
                .await
                .unwrap();
            let mut c = pg.client().await.unwrap();
            assert_eq!(version(&c).await.unwrap(), Some(1));
            // Again: nothing to apply, nothing changes.
            assert_eq!(migrate(&mut c).await.unwrap(), Vec::<i32>::new());
            let n: i64 = c
                .query_one("SELECT count(*) FROM schema_version", &[])
                .await
                .unwrap()
                .get(0);
            assert_eq!(n, 1);
            // A schema newer than this build's is refused.
            c.execute(
                "INSERT INTO schema_version (version, name) VALUES (99, 'future')",
                &[],
            )
            .await
            .unwrap();
            let e = migrate(&mut c).await.unwrap_err().to_string();
            assert!(e.contains("version 99, newer"), "{e}");
        });
    }

    #[test]
    fn concurrent_connects_both_succeed_and_ids_stay_unique() {
        let server = PgServer::start();
        let url = server.url();
        rt().block_on(async {
            // Four daemons starting at once on an empty database.
            let pgs = futures::future::join_all(
                (0..4).map(|_| Pg::connect(&url, "--store", 2, Schema::Migrate)),
            )
            .await
            .into_iter()
            .collect::<Result<Vec<_>>>()
            .unwrap();
            let c = pgs[0].client().await.unwrap();
            assert_eq!(version(&c).await.unwrap(), Some(1));
            let n: i64 = c
                .query_one("SELECT count(*) FROM schema_version", &[])
                .await
                .unwrap()
                .get(0);
            assert_eq!(n, 1, "applied once");
            // Ids from every connection, interleaved: never the same twice.
            let ids = futures::future::join_all((0..40).map(|i| {
                let pg = pgs[i % 4].clone();
                async move { pg.next_id().await.unwrap() }
            }))
            .await;
            let set: std::collections::BTreeSet<u64> = ids.iter().copied().collect();
            assert_eq!(set.len(), 40);
            assert_eq!(*set.first().unwrap(), 0, "ids start at 0, as in sled");
        });
    }

    #[test]
    fn a_database_without_a_store_is_not_a_source() {
        let server = PgServer::start();
        rt().block_on(async {
            let e = Pg::connect(&server.url(), "--from", 1, Schema::Existing)
                .await
                .unwrap_err()
                .to_string();
            assert!(e.contains("--from postgres://ddim@127.0.0.1:"), "{e}");
            assert!(e.contains("no ddimd store in that database"), "{e}");
            let e = Pg::connect("postgres://ddim@127.0.0.1:1/x", "--to", 1, Schema::Migrate)
                .await
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with("--to postgres://ddim@127.0.0.1:1/x: cannot connect"),
                "{e}"
            );
            assert!(!e.contains('\n'), "{e}");
        });
    }
}
