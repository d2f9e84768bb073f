//! `ddimd store verify|salvage|backup|restore`: the store's repair kit
//! (docs/daemon.md, Storage). Each reads or writes the backend-neutral record
//! stream of [`super::dump`].
//!
//! Exit statuses: 0 done (verify: clean), 1 verify found damage or the command
//! failed (a bad folder, a non-empty target), 2 a usage error (clap), 3 the store
//! cannot be opened at all.
use clap::{Args, Subcommand};
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use super::dump::{self, Checks, Dump};

/// Reading sled's log past damage (salvage); its own file beside this one.
#[path = "carve.rs"]
pub mod carve;
use super::error::{Result, ServerError};
use super::store::Store;

/// Exit status: the store cannot be opened at all (also `ddimd serve`'s).
pub const EXIT_UNOPENABLE: u8 = 3;
/// Exit status: verify found damage.
pub const EXIT_DAMAGED: u8 = 1;

#[derive(Debug, Args)]
pub struct StoreArgs {
    #[command(subcommand)]
    pub command: StoreCommand,
}

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Read every record of every tree and check that they hold together; exit 0 only
    /// when clean (1: damage found, 3: the store cannot be opened).
    Verify(VerifyArgs),
    /// Copy every readable record into a fresh store (ids keep running) and report
    /// what was lost; then serve the new folder.
    Salvage(SalvageArgs),
    /// Write a backup archive (tar: manifest.json, latents.jsonl, jobs.jsonl, .npy,
    /// .png, .pb) of a stopped store (--data) or of a serving daemon (--addr).
    Backup(BackupArgs),
    /// Restore a backup archive into a new, empty store folder.
    Restore(RestoreArgs),
}

fn data_default() -> PathBuf {
    super::default_data_dir()
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Store folder (as `ddimd serve --data`).
    #[arg(long, env = "DDIMD_DATA", default_value_os_t = data_default())]
    pub data: PathBuf,
    /// Model folder: x_T must have its C×H×W (read from its config.json, no weights).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Print exactly one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SalvageArgs {
    /// The damaged store folder.
    #[arg(long, env = "DDIMD_DATA", default_value_os_t = data_default())]
    pub data: PathBuf,
    /// A new, empty folder for the salvaged store.
    #[arg(long)]
    pub to: PathBuf,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("from").args(["data", "addr"])))]
pub struct BackupArgs {
    /// A stopped store's folder.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// A serving daemon (host:port, http://… or https://…): a point-in-time copy
    /// taken without stopping it.
    #[arg(long)]
    pub addr: Option<String>,
    /// Bearer token of the daemon.
    #[arg(long, env = "DDIMD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// CA certificate (PEM) for an https:// daemon.
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// The archive to write.
    #[arg(long)]
    pub to: PathBuf,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// A backup archive made by `ddimd store backup` or `serve --backup-every`.
    pub file: PathBuf,
    /// A new (or empty) store folder.
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long)]
    pub json: bool,
}

/// Runs a `ddimd store` command; prints its report, or one `error:` line.
pub fn main(args: StoreArgs) -> ExitCode {
    let r = match args.command {
        StoreCommand::Verify(a) => verify(&a),
        StoreCommand::Salvage(a) => salvage(&a),
        StoreCommand::Backup(a) => backup(&a),
        StoreCommand::Restore(a) => restore(&a),
    };
    match r {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(exit_code(&e))
        }
    }
}

/// The exit status of a failed command.
pub fn exit_code(e: &ServerError) -> u8 {
    match e {
        ServerError::Unopenable(_) => EXIT_UNOPENABLE,
        _ => 1,
    }
}

/// Opens an existing store for reading it whole.
fn open_existing(dir: &Path, flag: &str) -> Result<Store> {
    must_exist(dir, flag)?;
    Store::open(dir).map_err(|e| match e {
        // Store::open names the folder as serve's flag.
        ServerError::Config(m) if flag != "--data" => {
            ServerError::Config(m.replacen("--data ", &format!("{flag} "), 1))
        }
        e => e,
    })
}

/// Every record of a stopped store (`serve` must not hold it: sled locks the
/// folder), with what did not read as problems: what `store backup --data` and
/// `ddimd migrate` copy. `flag` names the folder's flag in errors.
pub(super) fn read_stopped(dir: &Path, flag: &str) -> Result<Dump> {
    must_exist(dir, flag)?;
    // sled would read only what precedes the first damaged message, and discard
    // the rest of the log on opening it: refuse, and point at salvage.
    if let Ok((n, after)) = carve::sled_would_discard(&dir.join("store")) {
        if after > 0 {
            return Err(ServerError::Config(format!(
                "{flag} {}: sled's log holds {n} damaged messages with {after} intact ones after \
                 the first, which sled would discard on opening it; copy what survives with \
                 `ddimd store salvage --data {} --to NEW` and use NEW",
                dir.display(),
                dir.display()
            )));
        }
    }
    let store = open_existing(dir, flag)?;
    store.frozen(|t| dump::read(t, &Checks::default()))
}

/// Called by `serve` before sled opens `DATA/store` in place. sled's recovery
/// stops at the first damaged message of its log and writes on from there,
/// discarding every intact record after it that `store salvage` could still read.
/// When the log holds such records, `DATA/store` (with the clean-stop inventory)
/// is first copied to `DATA/damaged-<UTC stamp>/` — once: not while such a copy
/// exists — and the line to log is returned.
pub fn keep_damaged_log(data: &Path) -> Option<String> {
    let store = data.join("store");
    if !store.join("db").is_file() {
        return None;
    }
    let kept = |e: &std::fs::DirEntry| e.file_name().to_string_lossy().starts_with("damaged-");
    if std::fs::read_dir(data).ok()?.flatten().any(|e| kept(&e)) {
        return None;
    }
    let (n, after) = carve::sled_would_discard(&store).ok()?;
    if after == 0 {
        return None;
    }
    let to = data.join(format!("damaged-{}", stamp(super::conversions::now_ms())));
    let copied = copy_tree(&store, &to.join("store")).and_then(|_| {
        for f in [dump::INVENTORY_MARKER, dump::INVENTORY_KEPT] {
            if data.join(f).is_file() {
                std::fs::copy(data.join(f), to.join(f))?;
            }
        }
        Ok(())
    });
    Some(match copied {
        Ok(()) => format!(
            "the store's log holds {n} damaged messages with {after} intact ones after the first; \
             sled will serve only what precedes it and write over the rest, so the store as it \
             was is kept in {}: copy what survives with `ddimd store salvage --data {} --to NEW`",
            to.display(),
            to.display()
        ),
        Err(e) => format!(
            "the store's log holds {n} damaged messages with {after} intact ones after the first, \
             which sled will write over; keeping a copy in {} failed ({e})",
            to.display()
        ),
    })
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            copy_tree(&e.path(), &to.join(e.file_name()))?;
        } else {
            std::fs::copy(e.path(), to.join(e.file_name()))?;
        }
    }
    Ok(())
}

fn must_exist(dir: &Path, flag: &str) -> Result<()> {
    if !dir.join("store").exists() {
        return Err(ServerError::Config(format!(
            "{flag} {}: no store there (expected {}/store)",
            dir.display(),
            dir.display()
        )));
    }
    Ok(())
}

/// A scratch folder beside `dir` (same disk), else in the system's temp folder.
fn scratch(dir: &Path) -> Result<tempfile::TempDir> {
    let parent = std::path::absolute(dir)
        .ok()
        .and_then(|d| d.parent().map(Path::to_path_buf));
    parent
        .and_then(|p| {
            tempfile::Builder::new()
                .prefix(".ddimd-scratch-")
                .tempdir_in(p)
                .ok()
        })
        .map(Ok)
        .unwrap_or_else(|| {
            tempfile::Builder::new()
                .prefix("ddimd-scratch-")
                .tempdir()
                .map_err(|e| ServerError::Config(format!("cannot make a scratch folder: {e}")))
        })
}

/// Copies `DIR/store` into a scratch folder: sled's recovery writes to the files it
/// opens (it rewrote part of a damaged log here before giving up), so verify and
/// salvage never open the original. `skip_snapshot` leaves sled's snapshot out (sled
/// then replays the whole log); `cut` truncates the copy's log.
fn copy_store(dir: &Path, skip_snapshot: bool, cut: Option<u64>) -> Result<tempfile::TempDir> {
    let tmp = scratch(dir)?;
    let io =
        |e: std::io::Error| ServerError::Config(format!("copying {}/store: {e}", dir.display()));
    fn copy_dir(from: &Path, to: &Path, skip_snapshot: bool) -> std::io::Result<()> {
        std::fs::create_dir_all(to)?;
        for e in std::fs::read_dir(from)? {
            let e = e?;
            let name = e.file_name();
            if skip_snapshot && name.to_string_lossy().starts_with("snap.") {
                continue;
            }
            if e.file_type()?.is_dir() {
                copy_dir(&e.path(), &to.join(&name), skip_snapshot)?;
            } else {
                std::fs::copy(e.path(), to.join(&name))?;
            }
        }
        Ok(())
    }
    let store = tmp.path().join("store");
    copy_dir(&dir.join("store"), &store, skip_snapshot).map_err(io)?;
    if let Some(c) = cut {
        std::fs::OpenOptions::new()
            .write(true)
            .open(store.join("db"))
            .and_then(|f| f.set_len(c))
            .map_err(io)?;
    }
    Ok(tmp)
}

/// Opens a copy of the store in `dir` (see [`copy_store`]); a failure names `dir`.
fn open_copy(dir: &Path) -> Result<(tempfile::TempDir, Store)> {
    must_exist(dir, "--data")?;
    let tmp = copy_store(dir, false, None)?;
    match Store::open(tmp.path()) {
        Ok(s) => Ok((tmp, s)),
        Err(ServerError::Unopenable(m)) => Err(ServerError::Unopenable(m.replace(
            &tmp.path().display().to_string(),
            &dir.display().to_string(),
        ))),
        Err(e) => Err(e),
    }
}

/// Refuses a target folder that holds anything.
pub(super) fn check_empty(dir: &Path, flag: &str) -> Result<()> {
    if let Ok(mut rd) = std::fs::read_dir(dir) {
        if rd.next().is_some() {
            return Err(ServerError::Config(format!(
                "{flag} {}: not empty; give a new folder",
                dir.display()
            )));
        }
    }
    Ok(())
}

fn problems_json(d: &Dump) -> serde_json::Value {
    json!(d.problems)
}

fn verify(a: &VerifyArgs) -> Result<u8> {
    let t0 = Instant::now();
    let mut notes = vec![];
    let model_shape = match &a.model {
        Some(m) => Some(dump::model_shape(m)?),
        None => {
            notes
                .push("no --model: each x_T is checked against its own recorded shape".to_string());
            None
        }
    };
    let (_copy, store) = open_copy(&a.data)?;
    let checks = Checks {
        model_shape,
        decode_pngs: true,
    };
    let mut d = store.frozen(|t| dump::read(t, &checks))?;
    if let Some(inv) = dump::Inventory::load(&a.data) {
        inv.apply(&mut d);
    } else {
        notes.push("no clean-shutdown inventory: a silent rollback by sled cannot be told".into());
    }
    for p in dump::load_lost(&a.data) {
        if !d.problems.contains(&p) {
            d.problems.push(p);
        }
    }
    // sled's read stops at the first damaged message of its log; what a salvage,
    // which reads past it, would keep.
    let salvage = match carve::carve(&a.data.join("store")) {
        Ok(c) if c.damaged > 0 => carved_dump(&a.data, &c).ok().map(|cd| {
            notes.push(format!(
                "sled's log holds {} damaged messages (of {}); `store salvage` reads past them and would keep {} latents and {} jobs",
                c.damaged,
                c.messages,
                cd.latents.len(),
                cd.jobs.len()
            ));
            json!({
                "damaged_messages": c.damaged,
                "latents": cd.latents.len(),
                "jobs": cd.jobs.len(),
            })
        }),
        _ => None,
    };
    let clean = d.problems.is_empty();
    let damaged = d.damaged_ids();
    let lost = d.lost_ids();
    let ms = t0.elapsed().as_millis();
    if a.json {
        let v = json!({
            "data": a.data,
            "clean": clean,
            "latents": d.latents.len(),
            "jobs": d.jobs.len(),
            "next_id": d.counter,
            "damaged_ids": damaged,
            "lost_ids": lost,
            "problems": problems_json(&d),
            "notes": notes,
            "salvage": salvage,
            "ms": ms,
        });
        println!("{v}");
    } else {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "store {}: {} latents and {} jobs read, next id {} ({ms} ms)",
            a.data.display(),
            d.latents.len(),
            d.jobs.len(),
            d.counter
        );
        for n in &notes {
            let _ = writeln!(out, "note: {n}");
        }
        for p in &d.problems {
            let _ = writeln!(
                out,
                "  {}: {}{}",
                p.id,
                p.what,
                if p.lost { " (lost)" } else { "" }
            );
        }
        if clean {
            let _ = writeln!(out, "clean");
        } else {
            let _ = writeln!(
                out,
                "DAMAGED: {} records ({}); {} lost ({}). Copy what survives with `ddimd store salvage --data {} --to NEW`",
                damaged.len(),
                damaged.join(", "),
                lost.len(),
                lost.join(", "),
                a.data.display()
            );
        }
    }
    Ok(if clean { 0 } else { EXIT_DAMAGED })
}

fn salvage(a: &SalvageArgs) -> Result<u8> {
    let t0 = Instant::now();
    check_empty(&a.to, "--to")?;
    must_exist(&a.data, "--data")?;
    // sled's own read of a copy, and the carve of the log (which reads past damage).
    let carved = carve::carve(&a.data.join("store"));
    let by_sled = match open_copy(&a.data) {
        Ok((_copy, store)) => Ok(store.frozen(|t| dump::read(t, &salvage_checks()))?),
        Err(e) => Err(e),
    };
    let size = |d: &Dump| d.latents.len() + d.jobs.len();
    let mut carved_used: Option<carve::Carved> = None;
    let (d, how) = match (carved, by_sled) {
        // A log without a damaged message: sled's own read is the store.
        (Ok(c), Ok(d)) if c.damaged == 0 => (d, None),
        (Ok(c), by_sled) if c.damaged > 0 || matches!(by_sled, Err(ServerError::Unopenable(_))) => {
            let cd = carved_dump(&a.data, &c)?;
            match by_sled {
                // Never fewer records than sled's own recovery gives.
                Ok(sd) if size(&sd) > size(&cd) => (sd, None),
                Ok(sd) => {
                    let how = format!(
                        "read sled's log directly past {} damaged messages ({} messages in {} segments); \
                         sled's own recovery stops at the first and read {} latents and {} jobs",
                        c.damaged, c.messages, c.segments, sd.latents.len(), sd.jobs.len()
                    );
                    carved_used = Some(c);
                    (cd, Some(how))
                }
                Err(_) if c.damaged == 0 => match salvage_unopenable(&a.data)? {
                    Some((d, how)) => (d, Some(how)),
                    None => {
                        carved_used = Some(c);
                        (
                            cd,
                            Some("sled could not open it; read its log directly".to_string()),
                        )
                    }
                },
                Err(_) => {
                    let how = format!(
                        "sled could not open it; read its log directly past {} damaged messages ({} messages in {} segments)",
                        c.damaged, c.messages, c.segments
                    );
                    carved_used = Some(c);
                    (cd, Some(how))
                }
            }
        }
        (_, Ok(d)) => (d, None),
        (_, Err(ServerError::Unopenable(why))) => match salvage_unopenable(&a.data)? {
            Some((d, how)) => (d, Some(how)),
            None => return Err(ServerError::Unopenable(why)),
        },
        (_, Err(e)) => return Err(e),
    };
    let mut d = d;
    let inventory = dump::Inventory::load(&a.data);
    if let Some(inv) = &inventory {
        inv.apply(&mut d);
        if let Some(c) = &carved_used {
            vanished(inv, c, &mut d);
        }
    }
    for p in dump::load_lost(&a.data) {
        if !d.problems.contains(&p) {
            d.problems.push(p);
        }
    }
    let target = Store::open(&a.to)?;
    dump::load(&target, &d)?;
    target.flush()?;
    drop(target);
    let lost = d.lost_ids();
    let partial: Vec<&dump::Problem> = d
        .problems
        .iter()
        .filter(|p| !p.lost && !lost.contains(&p.id))
        .collect();
    // Whether every lost record is named: sled's read of a healthy log, a carve
    // whose damage is tied to keys, or any read checked against the inventory.
    let complete = inventory.is_some()
        || match &carved_used {
            Some(c) => c.unnamed.is_empty(),
            None => how.is_none(),
        };
    if a.json {
        println!(
            "{}",
            json!({
                "from": a.data,
                "to": a.to,
                "complete": complete,
                "how": how.as_deref().unwrap_or("read"),
                "carved": carved_used.is_some(),
                "latents": d.latents.len(),
                "jobs": d.jobs.len(),
                "next_id": d.counter,
                "lost_ids": lost,
                "problems": problems_json(&d),
                "ms": t0.elapsed().as_millis(),
            })
        );
    } else {
        println!(
            "salvaged {} latents and {} jobs from {} into {} (next id {}; {})",
            d.latents.len(),
            d.jobs.len(),
            a.data.display(),
            a.to.display(),
            d.counter,
            how.as_deref().unwrap_or("every record read")
        );
        if !complete {
            println!(
                "lost: not all countable — damage the salvage could not tie to records (no clean-stop inventory to check against){}",
                if lost.is_empty() { String::new() } else { format!("; named: {} ({})", lost.len(), lost.join(", ")) }
            );
        } else if lost.is_empty() {
            println!("lost: nothing");
        } else {
            println!("lost: {} ({})", lost.len(), lost.join(", "));
        }
        for p in partial {
            println!("  kept with damage: {}: {}", p.id, p.what);
        }
        println!("serve it with `ddimd serve --data {}`", a.to.display());
    }
    Ok(0)
}

/// The record a carved key belongs to (`lat-N`, `job-N`); `None` for the indexes,
/// which a load rebuilds.
fn record_id(tree: &str, key: &[u8]) -> Option<String> {
    let id = u64::from_be_bytes(key.try_into().ok()?);
    match tree {
        "latents" | "latent_xt" | "latent_source" | "latent_preview" => Some(format!("lat-{id}")),
        "jobs" | "job_specs" | "job_results" => Some(format!("job-{id}")),
        _ => None,
    }
}

/// The carve's trees written into a scratch sled store and read back through
/// [`dump::read`] (every check `verify` makes), with the carve's own findings.
fn carved_dump(dir: &Path, c: &carve::Carved) -> Result<Dump> {
    let tmp = scratch(dir)?;
    let store = Store::open(tmp.path())?;
    {
        let t = store.t()?;
        for (name, kv) in &c.trees {
            let tree = match name.as_str() {
                "latents" => &t.latents,
                "latent_xt" => &t.latent_xt,
                "latent_source" => &t.latent_source,
                "latent_preview" => &t.latent_preview,
                "jobs" => &t.jobs,
                "job_specs" => &t.job_specs,
                "job_results" => &t.job_results,
                "idempotency" => &t.idempotency,
                "job_latents" => &t.job_latents,
                "meta" => &t.meta,
                _ => continue,
            };
            for (k, v) in kv {
                tree.insert(k.as_slice(), v.as_slice())?;
            }
        }
    }
    let mut d = store.frozen(|t| dump::read(t, &salvage_checks()))?;
    drop(store);
    for n in &c.lost {
        if let Some(id) = record_id(&n.tree, &n.key) {
            // A lost part (x_T, a PNG, a spec, a result): `dump::read` has already
            // said whether the record survives without it.
            d.problems.push(dump::Problem {
                id,
                what: format!("{}: {}", n.tree, n.what),
                lost: matches!(n.tree.as_str(), "latents" | "jobs"),
            });
        }
    }
    for n in &c.older {
        let Some(id) = record_id(&n.tree, &n.key) else {
            continue;
        };
        let mut what = format!("{}: {}", n.tree, n.what);
        // A job whose newest state is damaged is not run again from an older,
        // unfinished one (its latents may be committed): it is kept failed.
        if n.tree == "jobs" {
            if let Some(j) = d
                .jobs
                .iter_mut()
                .find(|j| format!("job-{}", j.record.id) == id && !j.record.state.is_terminal())
            {
                j.record.state = super::store::JobState::Failed;
                j.record.error =
                    "salvaged: its newest state was damaged; failed rather than run again".into();
                what.push_str("; it was unfinished there, and is kept failed");
            }
        }
        d.problems.push(dump::Problem {
            id,
            what,
            lost: false,
        });
    }
    for u in &c.unnamed {
        d.problems.push(dump::Problem {
            id: "store".into(),
            what: u.clone(),
            lost: false,
        });
    }
    d.problems.dedup();
    Ok(d)
}

/// A carved store checked against the last clean stop's inventory: every id it
/// held that the carve neither found nor saw deleted is lost.
fn vanished(inv: &dump::Inventory, c: &carve::Carved, d: &mut Dump) {
    let have_l: std::collections::BTreeSet<u64> = d.latents.iter().map(|l| l.record.id).collect();
    let have_j: std::collections::BTreeSet<u64> = d.jobs.iter().map(|j| j.record.id).collect();
    let deleted = |tree: &str, id: u64| {
        c.deleted
            .get(tree)
            .is_some_and(|s| s.contains(id.to_be_bytes().as_slice()))
    };
    let mut add = |id: String| {
        let p = dump::Problem {
            id,
            what: "vanished: it was in the store at its last clean stop and no intact copy of it is left".into(),
            lost: true,
        };
        if !d.problems.iter().any(|q| q.id == p.id && q.lost) {
            d.problems.push(p);
        }
    };
    for [lo, hi] in &inv.latent_ids {
        for l in *lo..=*hi {
            if !have_l.contains(&l) && !deleted("latents", l) {
                add(format!("lat-{l}"));
            }
        }
    }
    for [lo, hi] in &inv.job_ids {
        for j in *lo..=*hi {
            if !have_j.contains(&j) && !deleted("jobs", j) {
                add(format!("job-{j}"));
            }
        }
    }
}

fn salvage_checks() -> Checks {
    Checks {
        model_shape: None,
        decode_pngs: true,
    }
}

/// A store sled cannot open (it panics in recovery on a truncated log, or refuses a
/// damaged one): try copies without the snapshot (sled then replays the whole log),
/// and with the log cut back to each segment boundary; keep the copy that gives the
/// most records. What sled's recovery cannot reach is lost, and not countable.
fn salvage_unopenable(dir: &Path) -> Result<Option<(Dump, String)>> {
    let db_len = std::fs::metadata(dir.join("store").join("db"))
        .map(|m| m.len())
        .unwrap_or(0);
    const SEGMENT: u64 = 512 * 1024;
    let mut tries: Vec<(bool, Option<u64>)> = vec![(true, None)];
    let mut at = db_len.div_ceil(SEGMENT) * SEGMENT;
    while at > SEGMENT {
        at -= SEGMENT;
        if at < db_len {
            tries.push((false, Some(at)));
            tries.push((true, Some(at)));
        }
    }
    let mut best: Option<(Dump, String)> = None;
    for (skip, cut) in tries {
        let tmp = copy_store(dir, skip, cut)?;
        let Ok(store) = Store::open(tmp.path()) else {
            continue;
        };
        let Ok(d) = store.frozen(|t| dump::read(t, &salvage_checks())) else {
            continue;
        };
        let n = d.latents.len() + d.jobs.len();
        if best
            .as_ref()
            .is_none_or(|(b, _)| n > b.latents.len() + b.jobs.len())
        {
            let how = format!(
                "sled could not open it; read a copy{}{}",
                if skip { " without its snapshot" } else { "" },
                cut.map_or(String::new(), |c| format!(
                    ", its log cut to {c} of {db_len} bytes"
                ))
            );
            best = Some((d, how));
        }
    }
    Ok(best)
}

fn write_archive(d: &Dump, to: &Path) -> Result<super::archive::Manifest> {
    let tmp = to.with_extension("tmp");
    let f = std::fs::File::create(&tmp)
        .map_err(|e| ServerError::Config(format!("--to {}: {e}", to.display())))?;
    let mut w = std::io::BufWriter::new(f);
    let m = super::archive::write(d, &mut w)?;
    let f = w
        .into_inner()
        .map_err(|e| ServerError::Config(format!("--to {}: {e}", to.display())))?;
    f.sync_all()
        .map_err(|e| ServerError::Config(format!("--to {}: {e}", to.display())))?;
    std::fs::rename(&tmp, to)
        .map_err(|e| ServerError::Config(format!("--to {}: {e}", to.display())))?;
    Ok(m)
}

fn backup(a: &BackupArgs) -> Result<u8> {
    let t0 = Instant::now();
    let (bytes, m) = match (&a.data, &a.addr) {
        (Some(dir), _) => {
            let d = read_stopped(dir, "--data")?;
            let m = write_archive(&d, &a.to)?;
            (std::fs::metadata(&a.to).map(|m| m.len()).unwrap_or(0), m)
        }
        (None, Some(addr)) => {
            let bytes = remote_backup(addr, a.token.as_deref(), a.ca.as_deref())?;
            // Check what came before keeping it.
            let (m, _) = super::archive::read(bytes.as_slice())?;
            let tmp = a.to.with_extension("tmp");
            std::fs::write(&tmp, &bytes)
                .and_then(|_| std::fs::rename(&tmp, &a.to))
                .map_err(|e| ServerError::Config(format!("--to {}: {e}", a.to.display())))?;
            (bytes.len() as u64, m)
        }
        (None, None) => {
            return Err(ServerError::Config(
                "give --data DIR (a stopped store) or --addr HOST:PORT (a serving daemon)".into(),
            ))
        }
    };
    if a.json {
        println!(
            "{}",
            json!({
                "to": a.to,
                "bytes": bytes,
                "manifest": m,
                "ms": t0.elapsed().as_millis(),
            })
        );
    } else {
        println!(
            "wrote {} ({} bytes): {} latents, {} jobs, next id {}{}",
            a.to.display(),
            bytes,
            m.latents,
            m.jobs,
            m.next_id,
            if m.damaged.is_empty() {
                String::new()
            } else {
                format!(
                    "; damaged and left out: {} (run `ddimd store verify`)",
                    m.damaged.join(", ")
                )
            }
        );
    }
    Ok(0)
}

fn remote_backup(addr: &str, token: Option<&str>, ca: Option<&Path>) -> Result<Vec<u8>> {
    use ddim_proto::v1 as pb;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ServerError::Internal(format!("runtime: {e}")))?;
    let url = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    rt.block_on(async move {
        let bad = |e: &dyn std::fmt::Display| ServerError::Config(format!("--addr {addr}: {e}"));
        let mut ep = tonic::transport::Endpoint::from_shared(url.clone())
            .map_err(|e| bad(&e))?
            .connect_timeout(Duration::from_secs(10));
        if url.starts_with("https://") {
            let mut tls = tonic::transport::ClientTlsConfig::new().with_enabled_roots();
            if let Some(ca) = ca {
                let pem = std::fs::read(ca)
                    .map_err(|e| ServerError::Config(format!("--ca {}: {e}", ca.display())))?;
                tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem));
            }
            ep = ep.tls_config(tls).map_err(|e| bad(&e))?;
        }
        let ch = ep.connect().await.map_err(|e| bad(&e))?;
        let mut c =
            ddim_proto::v1::ddim_client::DdimClient::new(ch).max_decoding_message_size(64 << 20);
        let mut req = tonic::Request::new(pb::BackupRequest {});
        if let Some(t) = token {
            let v = format!("Bearer {t}")
                .parse()
                .map_err(|_| ServerError::Config("--token: not ASCII".into()))?;
            req.metadata_mut().insert("authorization", v);
        }
        let mut s = c
            .backup(req)
            .await
            .map_err(|e| bad(&format!("{}: {}", e.code(), e.message())))?
            .into_inner();
        let mut out = vec![];
        while let Some(chunk) = s
            .message()
            .await
            .map_err(|e| bad(&format!("{}: {}", e.code(), e.message())))?
        {
            out.extend_from_slice(&chunk.data);
        }
        Ok(out)
    })
}

fn restore(a: &RestoreArgs) -> Result<u8> {
    let t0 = Instant::now();
    check_empty(&a.data, "--data")?;
    let f = std::fs::File::open(&a.file)
        .map_err(|e| ServerError::Config(format!("{}: {e}", a.file.display())))?;
    let (m, d) = super::archive::read(std::io::BufReader::new(f))?;
    let store = Store::open(&a.data)?;
    dump::load(&store, &d)?;
    store.flush()?;
    drop(store);
    if a.json {
        println!(
            "{}",
            json!({
                "data": a.data,
                "latents": d.latents.len(),
                "jobs": d.jobs.len(),
                "next_id": d.counter,
                "manifest": m,
                "ms": t0.elapsed().as_millis(),
            })
        );
    } else {
        println!(
            "restored {} latents and {} jobs (next id {}) into {}; serve it with `ddimd serve --data {}`",
            d.latents.len(),
            d.jobs.len(),
            d.counter,
            a.data.display(),
            a.data.display()
        );
    }
    Ok(0)
}

/// Parses "90s", "30m", "6h", "1d", "1h30m".
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let mut total = 0u64;
    let mut num = String::new();
    let mut any = false;
    for ch in s.trim().chars() {
        if ch.is_ascii_digit() {
            num.push(ch);
            continue;
        }
        let n: u64 = num
            .parse()
            .map_err(|_| format!("expected e.g. 30m, 6h or 1d, got {s:?}"))?;
        let unit = match ch {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => return Err(format!("unknown unit {ch:?} in {s:?} (s, m, h or d)")),
        };
        total += n * unit;
        num.clear();
        any = true;
    }
    if !num.is_empty() || !any {
        return Err(format!("expected e.g. 30m, 6h or 1d, got {s:?}"));
    }
    if total == 0 {
        return Err("must be longer than 0s".into());
    }
    Ok(Duration::from_secs(total))
}

/// `YYYYMMDDTHHMMSSZ` of a Unix time in ms (UTC).
pub fn stamp(unix_ms: i64) -> String {
    let secs = unix_ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// One scheduled backup: `DIR/ddimd-backup-<UTC stamp>.tar`, then only the newest
/// `keep` such files are kept.
pub fn scheduled_backup(store: &Store, dir: &Path, keep: usize) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)
        .map_err(|e| ServerError::Config(format!("--backup-dir {}: {e}", dir.display())))?;
    let d = store.frozen(|t| dump::read(t, &Checks::default()))?;
    let now = super::conversions::now_ms();
    let path = dir.join(format!("ddimd-backup-{}.tar", stamp(now)));
    write_archive(&d, &path)?;
    let mut all: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| ServerError::Config(format!("--backup-dir {}: {e}", dir.display())))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("ddimd-backup-") && n.ends_with(".tar"))
        })
        .collect();
    all.sort();
    let n = all.len();
    for old in all.into_iter().take(n.saturating_sub(keep)) {
        let _ = std::fs::remove_file(old);
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_stamps() {
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_duration("6h").unwrap(), Duration::from_secs(21600));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        for bad in ["", "30", "m", "5x", "0s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(stamp(0), "19700101T000000Z");
        assert_eq!(stamp(1_764_502_245_000), "20251130T113045Z");
    }

    #[test]
    fn scheduled_backups_keep_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let s = super::super::dump::tests_support::filled();
        for name in [
            "ddimd-backup-20000101T000000Z.tar",
            "ddimd-backup-20000102T000000Z.tar",
        ] {
            std::fs::write(dir.path().join(name), b"old").unwrap();
        }
        let p = scheduled_backup(&s, dir.path(), 2).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left.len(), 2);
        assert_eq!(left[0], "ddimd-backup-20000102T000000Z.tar");
        let (m, _) = super::super::archive::read(std::fs::File::open(p).unwrap()).unwrap();
        assert_eq!(m.latents, 2);
    }
}
