//! `ddimd migrate --from SRC --to DST [--json]`: copies a whole library (latents
//! with x_T and PNGs, jobs with specs and results, the id counter) from one store
//! to another, each a sled folder or a `postgres://` URL, then reads the copy back
//! and checks it against what was read (docs/daemon.md, Moving a library).
//!
//! It is the record stream of [`super::dump`] again: the source is read whole
//! ([`super::admin`]'s reading of a stopped sled store, or [`super::pg::read`]),
//! written into an empty target ([`super::dump::load`] or [`super::pg::load`], one
//! transaction there), read back the same way and compared record by record.
//!
//! Exit statuses as `ddimd store`: 0 done and identical, 1 an error (a bad URL, an
//! unreachable server, a target that is not empty, a copy that reads back
//! different), 3 a sled source that cannot be opened at all.
use clap::Args;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use super::admin;
use super::dump::{self, Checks, Dump};
use super::error::{Result, ServerError};
use super::pg::{self, Pg, Schema};
use super::store::Store;

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The library to copy: a stopped daemon's store folder (its --data) or a
    /// postgres://USER:PASSWORD@HOST:PORT/DB URL.
    #[arg(long)]
    pub from: String,
    /// Where to: a new (or empty) folder, or a postgres:// URL of a database that
    /// holds no library (its schema is created).
    #[arg(long)]
    pub to: String,
    /// Print exactly one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// One side of a migration.
#[derive(Debug, Clone, PartialEq)]
enum Side {
    Sled(PathBuf),
    Pg(String),
}

impl Side {
    fn parse(s: &str, flag: &str) -> Result<Side> {
        if pg::is_url(s) {
            Ok(Side::Pg(s.to_string()))
        } else if s.contains("://") {
            Err(ServerError::Config(format!(
                "{flag} {}: neither a folder nor a postgres:// URL",
                pg::redact(s)
            )))
        } else if s.is_empty() {
            Err(ServerError::Config(format!(
                "{flag}: give a folder or a postgres:// URL"
            )))
        } else {
            Ok(Side::Sled(PathBuf::from(s)))
        }
    }

    /// For messages: the folder, or the URL without its password.
    fn shown(&self) -> String {
        match self {
            Side::Sled(d) => d.display().to_string(),
            Side::Pg(u) => pg::redact(u),
        }
    }
}

/// Runs `ddimd migrate`; prints its report, or one `error:` line.
pub fn main(a: MigrateArgs) -> ExitCode {
    match run(&a) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(admin::exit_code(&e))
        }
    }
}

/// An open target.
enum Target {
    Sled(PathBuf),
    Pg(Pg),
}

fn run(a: &MigrateArgs) -> Result<()> {
    let t0 = Instant::now();
    let from = Side::parse(&a.from, "--from")?;
    let to = Side::parse(&a.to, "--to")?;
    if same(&from, &to) {
        return Err(ServerError::Config(format!(
            "--from and --to are the same store ({})",
            to.shown()
        )));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ServerError::Internal(format!("runtime: {e}")))?;
    rt.block_on(async {
        // The target first: a full or unreachable one fails before a long read.
        let target = match &to {
            Side::Sled(dir) => {
                admin::check_empty(dir, "--to")?;
                Target::Sled(dir.clone())
            }
            Side::Pg(url) => {
                let pg = Pg::connect(url, "--to", 2, Schema::Migrate).await?;
                let n = pg.counts().await?;
                if n.latents > 0 || n.jobs > 0 || n.next_id > 0 {
                    return Err(not_empty(&pg, &format!(
                        "not empty ({} latents, {} jobs, next id {})",
                        n.latents, n.jobs, n.next_id
                    )));
                }
                Target::Pg(pg)
            }
        };
        // Read.
        let t_read = Instant::now();
        let src = match &from {
            Side::Sled(dir) => admin::read_stopped(dir, "--from")?,
            Side::Pg(url) => {
                Pg::connect(url, "--from", 2, Schema::Existing)
                    .await?
                    .read()
                    .await?
            }
        };
        let read_ms = t_read.elapsed().as_millis();
        // Write, then read back what was written.
        let t_write = Instant::now();
        let (back, write_ms, t_check) = match &target {
            Target::Sled(dir) => {
                let store = Store::open(dir).map_err(|e| match e {
                    ServerError::Config(m) => {
                        ServerError::Config(m.replacen("--data ", "--to ", 1))
                    }
                    e => e,
                })?;
                dump::load(&store, &src)?;
                store.flush()?;
                let write_ms = t_write.elapsed().as_millis();
                let t_check = Instant::now();
                let back = store.frozen(|t| dump::read(t, &Checks::default()))?;
                (back, write_ms, t_check)
            }
            Target::Pg(pg) => {
                pg.load(&src).await.map_err(|e| match e {
                    ServerError::FailedPrecondition(m) => not_empty(pg, &m),
                    e => e,
                })?;
                let write_ms = t_write.elapsed().as_millis();
                let t_check = Instant::now();
                let n = pg.counts().await?;
                let back = pg.read().await?;
                if (n.latents, n.jobs) != (back.latents.len() as u64, back.jobs.len() as u64) {
                    return Err(ServerError::Config(format!(
                        "--to {}: counts {} latents and {} jobs but reads {} and {}",
                        pg.shown(),
                        n.latents,
                        n.jobs,
                        back.latents.len(),
                        back.jobs.len()
                    )));
                }
                (back, write_ms, t_check)
            }
        };
        let diffs = differences(&src, &back);
        if !diffs.is_empty() {
            let shown: Vec<&str> = diffs.iter().take(10).map(String::as_str).collect();
            return Err(ServerError::Config(format!(
                "--to {}: the copy does not read back identical ({} differences: {}{}); remove it before trying again",
                to.shown(),
                diffs.len(),
                shown.join(", "),
                if diffs.len() > 10 { ", …" } else { "" }
            )));
        }
        let check_ms = t_check.elapsed().as_millis();
        report(a, &from, &to, &src, [read_ms, write_ms, check_ms], t0);
        Ok(())
    })
}

fn not_empty(pg: &Pg, why: &str) -> ServerError {
    ServerError::Config(format!(
        "--to {}: {why}; give an empty database",
        pg.shown()
    ))
}

fn same(a: &Side, b: &Side) -> bool {
    match (a, b) {
        (Side::Sled(x), Side::Sled(y)) => {
            let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
            canon(x) == canon(y)
        }
        (Side::Pg(x), Side::Pg(y)) => x == y,
        _ => false,
    }
}

/// What differs between a dump and its copy read back: counts, the counter, and
/// each record (`lat-3: x_T`), in id order.
fn differences(a: &Dump, b: &Dump) -> Vec<String> {
    let mut out = vec![];
    if a.latents.len() != b.latents.len() {
        out.push(format!(
            "{} latents, the copy has {}",
            a.latents.len(),
            b.latents.len()
        ));
    }
    if a.jobs.len() != b.jobs.len() {
        out.push(format!(
            "{} jobs, the copy has {}",
            a.jobs.len(),
            b.jobs.len()
        ));
    }
    if a.counter != b.counter {
        out.push(format!(
            "next id {}, the copy's is {}",
            a.counter, b.counter
        ));
    }
    let copied: BTreeMap<u64, _> = b.latents.iter().map(|l| (l.record.id, l)).collect();
    for l in &a.latents {
        let name = format!("lat-{}", l.record.id);
        match copied.get(&l.record.id) {
            None => out.push(format!("{name}: missing")),
            Some(c) => {
                for (part, same) in [
                    ("metadata", c.record == l.record),
                    ("x_T", c.xt == l.xt),
                    ("source PNG", c.source == l.source),
                    ("preview PNG", c.preview == l.preview),
                ] {
                    if !same {
                        out.push(format!("{name}: {part}"));
                    }
                }
            }
        }
    }
    let copied: BTreeMap<u64, _> = b.jobs.iter().map(|j| (j.record.id, j)).collect();
    for j in &a.jobs {
        let name = format!("job-{}", j.record.id);
        match copied.get(&j.record.id) {
            None => out.push(format!("{name}: missing")),
            Some(c) => {
                for (part, same) in [
                    ("record", c.record == j.record),
                    ("spec", c.spec == j.spec),
                    ("result", c.result == j.result),
                ] {
                    if !same {
                        out.push(format!("{name}: {part}"));
                    }
                }
            }
        }
    }
    out
}

/// Bytes of x_T, PNGs, specs and results copied.
fn payload_bytes(d: &Dump) -> u64 {
    let opt = |b: &Option<Vec<u8>>| b.as_ref().map_or(0, Vec::len);
    let l: usize = d
        .latents
        .iter()
        .map(|l| l.xt.len() + opt(&l.source) + opt(&l.preview))
        .sum();
    let j: usize = d.jobs.iter().map(|j| opt(&j.spec) + opt(&j.result)).sum();
    (l + j) as u64
}

fn report(a: &MigrateArgs, from: &Side, to: &Side, d: &Dump, ms: [u128; 3], t0: Instant) {
    let damaged = d.damaged_ids();
    let total = t0.elapsed().as_millis();
    if a.json {
        println!(
            "{}",
            json!({
                "from": from.shown(),
                "to": to.shown(),
                "latents": d.latents.len(),
                "jobs": d.jobs.len(),
                "next_id": d.counter,
                "bytes": payload_bytes(d),
                "verified": true,
                "damaged_ids": damaged,
                "problems": d.problems,
                "read_ms": ms[0],
                "write_ms": ms[1],
                "check_ms": ms[2],
                "ms": total,
            })
        );
        return;
    }
    println!(
        "migrated {} latents and {} jobs (next id {}, {} bytes of x_T, images, specs and results) \
         from {} to {} in {total} ms (read {} ms, write {} ms, check {} ms); the copy reads back identical",
        d.latents.len(),
        d.jobs.len(),
        d.counter,
        payload_bytes(d),
        from.shown(),
        to.shown(),
        ms[0],
        ms[1],
        ms[2]
    );
    if !damaged.is_empty() {
        println!(
            "note: damaged in {} and not copied whole: {} (see `ddimd store verify`)",
            from.shown(),
            damaged.join(", ")
        );
    }
    if let Side::Sled(dir) = to {
        println!("serve it with `ddimd serve --data {}`", dir.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sides_and_differences() {
        assert_eq!(
            Side::parse("postgres://u:pw@h:5432/db", "--to").unwrap(),
            Side::Pg("postgres://u:pw@h:5432/db".into())
        );
        assert_eq!(
            Side::parse("/var/lib/ddimd", "--from").unwrap(),
            Side::Sled("/var/lib/ddimd".into())
        );
        let e = Side::parse("mysql://u:pw@h/db", "--to")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "--to mysql://u:***@h/db: neither a folder nor a postgres:// URL"
        );
        let s = dump::tests_support::filled();
        let d = s.frozen(|t| dump::read(t, &Checks::default())).unwrap();
        assert!(differences(&d, &d.clone()).is_empty());
        let mut c = d.clone();
        c.latents[1].xt[0] ^= 1;
        c.jobs[0].result = None;
        c.counter += 1;
        assert_eq!(
            differences(&d, &c),
            vec!["next id 3, the copy's is 4", "lat-2: x_T", "job-0: result"]
        );
    }
}
