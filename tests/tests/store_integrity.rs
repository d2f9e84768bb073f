//! A damaged disk: real stores made by a real daemon, then damaged on disk (bytes
//! flipped inside chosen records, the log truncated), a full disk (a tiny tmpfs),
//! and backups. What must hold: never a panic; a store sled cannot open is one
//! `error:` line naming the folder and the next commands, exit 3; `store verify`
//! names every damaged record (exit 1) and never changes the files; `store salvage`
//! keeps every undamaged record byte for byte; a serving daemon answers DATA_LOSS
//! naming the latent; backup → restore gives byte-identical exports; a full disk is
//! RESOURCE_EXHAUSTED naming the folder and the daemon carries on once there is room.
//!
//! Needs the binaries: `cargo build --workspace --bins`.
use ddim_proto::v1 as pb;
use ddim_tests::cli::{ddimd, one_line_error, stderr, stdout};
use ddim_tests::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Everything a client can read about each latent: x_T export and both PNGs.
type Exports = BTreeMap<String, (Vec<u8>, Option<Vec<u8>>, Option<Vec<u8>>)>;

/// Every latent's x_T export, preview and source (`None`: not readable).
async fn exports(c: &mut Client) -> Exports {
    let mut out = BTreeMap::new();
    let list = c
        .list_latents(pb::ListLatentsRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    for l in list.latents {
        let npy = c
            .export_latent(pb::ExportLatentRequest { id: l.id.clone() })
            .await
            .unwrap()
            .into_inner()
            .npy;
        let img = |kind: pb::LatentImageKind| pb::GetLatentImageRequest {
            id: l.id.clone(),
            kind: kind as i32,
            steps: 0,
        };
        let preview = c
            .get_latent_image(img(pb::LatentImageKind::Preview))
            .await
            .ok()
            .map(|r| r.into_inner().png);
        let source = c
            .get_latent_image(img(pb::LatentImageKind::Source))
            .await
            .ok()
            .map(|r| r.into_inner().png);
        out.insert(l.id, (npy, preview, source));
    }
    out
}

/// A real store: sample and encode jobs on a real daemon, stopped with SIGTERM.
/// Returns the model, the store folder (kept in `root`), and every latent's exports.
async fn make_store(root: &Path) -> (PathBuf, PathBuf, Exports) {
    make_store_with(root, 0).await
}

/// [`make_store`] with `big` more jobs of 64 latents (a store of several sled segments,
/// with a snapshot).
async fn make_store_with(root: &Path, big: u64) -> (PathBuf, PathBuf, Exports) {
    let model = init_model(&root.join("model"), "test", 1, 32, 0);
    let data = root.join("data");
    let mut d = Daemon::builder().model(&model).data(&data).start().await;
    let mut c = d.client().await;
    for seed in 0..4 {
        run_job(&mut c, sample_spec(6, seed, 2)).await;
    }
    let images = (0..4)
        .map(|i| {
            (
                format!("img{i}.png"),
                png(32, 32, |x, y| ((x * 7 + y * i) % 256) as u8),
            )
        })
        .collect();
    run_job(&mut c, encode_spec(images, 2)).await;
    for k in 0..big {
        run_job(&mut c, sample_spec(64, 100 + k, 1)).await;
    }
    let before = exports(&mut c).await;
    assert_eq!(before.len() as u64, 28 + 64 * big);
    assert!(d.terminate(Duration::from_secs(30)).success());
    (model, data, before)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// Every offset in `hay` where `needle` starts.
fn find_all(hay: &[u8], needle: &[u8]) -> Vec<usize> {
    hay.windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i)
        .collect()
}

/// Flips a byte in the middle of every stored copy of `bytes` in `db`; returns how many.
fn damage_value(db: &Path, bytes: &[u8]) -> usize {
    let mut f = std::fs::read(db).unwrap();
    let at = find_all(&f, bytes);
    for &a in &at {
        f[a + bytes.len() / 2] ^= 0x5a;
    }
    std::fs::write(db, f).unwrap();
    at.len()
}

fn verify_json(data: &Path, model: &Path) -> (i32, serde_json::Value) {
    let o = ddimd(&[
        "store",
        "verify",
        "--data",
        s(data),
        "--model",
        s(model),
        "--json",
    ]);
    let code = o.status.code().unwrap();
    let v = if code == 3 {
        one_line_error(&o);
        serde_json::Value::Null
    } else {
        assert!(!stderr(&o).contains("panicked at"), "{}", stderr(&o));
        serde_json::from_str(&stdout(&o)).unwrap_or_else(|e| panic!("{e}: {}", stdout(&o)))
    };
    (code, v)
}

fn ids(v: &serde_json::Value, key: &str) -> Vec<String> {
    v[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn damaged_records_are_found_salvaged_around_and_answer_data_loss() {
    let root = tempfile::tempdir().unwrap();
    let (model, data, before) = make_store(root.path()).await;
    let (code, v) = verify_json(&data, &model);
    assert_eq!((code, v["clean"].as_bool()), (0, Some(true)), "{v}");
    assert_eq!(v["latents"], 28);

    // Damage two latents' x_T and one latent's preview, inside sled's log.
    let xt_of = |id: &str| ddim_tests::npy_values(&before[id].0).1;
    let raw = |vals: Vec<f32>| -> Vec<u8> { vals.iter().flat_map(|f| f.to_le_bytes()).collect() };
    let ids_all: Vec<String> = before.keys().cloned().collect();
    let (a, b, p) = (&ids_all[3], &ids_all[17], &ids_all[25]);
    let bad = root.path().join("bad");
    copy_dir(&data, &bad);
    let db = bad.join("store").join("db");
    assert!(damage_value(&db, &raw(xt_of(a))) >= 1);
    assert!(damage_value(&db, &raw(xt_of(b))) >= 1);
    assert!(damage_value(&db, before[p].1.as_ref().unwrap()) >= 1);
    let damaged_bytes = std::fs::read(&db).unwrap();

    // verify: exit 1, the damaged latents named; the files untouched.
    let (code, v) = verify_json(&bad, &model);
    assert_eq!(code, 1, "{v}");
    let named = ids(&v, "damaged_ids");
    for id in [a, b, p] {
        assert!(named.contains(id), "{id} not in {named:?}");
    }
    assert_eq!(
        std::fs::read(&db).unwrap(),
        damaged_bytes,
        "verify wrote to the store"
    );
    // The text report lists them too, exit 1.
    let o = ddimd(&["store", "verify", "--data", s(&bad)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("DAMAGED") && stdout(&o).contains(a.as_str()));

    // A serving daemon on it: DATA_LOSS naming the latent, the rest reads, stats say so.
    let mut d = Daemon::builder().model(&model).data(&bad).start().await;
    let mut c = d.client().await;
    let e = c
        .export_latent(pb::ExportLatentRequest { id: a.clone() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::DataLoss, "{e:?}");
    assert!(e.message().contains(a.as_str()), "{}", e.message());
    // sled's recovery may also have rolled the store back (its log replay stops at the
    // first damaged entry): whatever is left reads as it was.
    if let Some(good) = ids_all.iter().find(|i| !named.contains(i)) {
        let ok = c
            .export_latent(pb::ExportLatentRequest { id: good.clone() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(ok.npy, before[good].0);
    }
    let st = c
        .get_stats(pb::GetStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(st.store_degraded && st.damaged_ids.contains(a), "{st:?}");
    let jobs = c
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(!jobs.jobs.is_empty());
    // Killed (no clean-shutdown marker): the next start verifies in the background.
    d.restart().await;
    let mut c = d.client().await;
    let until = Instant::now() + TIMEOUT;
    let st = loop {
        let st = c
            .get_stats(pb::GetStatsRequest {})
            .await
            .unwrap()
            .into_inner();
        if st.store_check != "running" && !st.store_check.is_empty() {
            break st;
        }
        assert!(Instant::now() < until, "the background verify never ended");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(st.store_check, "damaged");
    for id in [a, b, p] {
        assert!(st.damaged_ids.contains(id), "{id}: {st:?}");
    }
    assert!(d.log_text().contains("DAMAGED"), "{}", d.log_text());
    d.kill9();

    // salvage: every undamaged latent kept byte for byte; the lost ones named.
    let new = root.path().join("new");
    let o = ddimd(&[
        "store",
        "salvage",
        "--data",
        s(&bad),
        "--to",
        s(&new),
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let lost = ids(&r, "lost_ids");
    assert!(lost.contains(a) && lost.contains(b), "{r}");
    let d = Daemon::builder().model(&model).data(&new).start().await;
    let mut c = d.client().await;
    let after = exports(&mut c).await;
    for (id, e) in &before {
        match after.get(id) {
            // Undamaged: everything as it was.
            Some(got) if !named.contains(id) => assert_eq!(got, e, "{id}"),
            // Damaged but kept (a PNG lost): its x_T as it was.
            Some(got) => assert_eq!(got.0, e.0, "{id}: x_T"),
            None => assert!(lost.contains(id), "{id} dropped but not reported lost"),
        }
    }
    for id in &lost {
        assert!(named.contains(id), "{id} lost but not found by verify");
    }
    let identical = before
        .iter()
        .filter(|(id, e)| after.get(*id) == Some(*e))
        .count();
    println!(
        "damaged values: 3 of {} latents; verify named {}; salvage kept {} ({identical} \
         byte-identical), lost {}",
        before.len(),
        named.len(),
        after.len(),
        lost.len()
    );
    // Ids run on: a new job gets an id above every old one.
    let job = run_job(&mut c, sample_spec(1, 99, 2)).await;
    let n: u64 = job.id.trim_start_matches("job-").parse().unwrap();
    assert!(n >= 33, "{}", job.id);

    // But serve kept the store as it was before sled wrote over its log: salvage
    // of that copy reads past the damage.
    let kept = std::fs::read_dir(&bad)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("damaged-")
        })
        .expect("serve kept a copy of the damaged store");
    let new = root.path().join("from-kept");
    let o = ddimd(&[
        "store",
        "salvage",
        "--data",
        s(&kept),
        "--to",
        s(&new),
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let lost_kept = ids(&r, "lost_ids");
    let d = Daemon::builder().model(&model).data(&new).start().await;
    let mut c = d.client().await;
    let after = exports(&mut c).await;
    for (id, e) in &before {
        match after.get(id) {
            Some(got) => assert_eq!(got.0, e.0, "{id}: x_T"),
            None => assert!(lost_kept.contains(id), "{id} dropped, not reported: {r}"),
        }
    }
    assert!(lost_kept.contains(a) && lost_kept.contains(b), "{r}");
    println!(
        "salvage of the copy serve kept: {} latents, lost {}",
        after.len(),
        lost_kept.len()
    );
}

/// Latent ids in the order they were made (`lat-9` before `lat-10`).
fn by_number(ids: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut v: Vec<String> = ids.into_iter().collect();
    v.sort_by_key(|i| i.rsplit('-').next().unwrap().parse::<u64>().unwrap());
    v
}

/// sled's recovery stops at the first damaged message and rolls back everything
/// after it; salvage reads the log past it (docs/reliability.md, A damaged disk).
#[tokio::test(flavor = "multi_thread")]
async fn salvage_reads_past_damage_early_in_the_log() {
    let root = tempfile::tempdir().unwrap();
    let (model, data, before) = make_store(root.path()).await;
    let (code, v) = verify_json(&data, &model);
    assert_eq!(code, 0, "{v}");
    let jobs_before = v["jobs"].as_u64().unwrap();

    // The first latent made (its x_T is among the first values in the log), its
    // neighbour's preview, and a later latent's x_T: every stored copy flipped.
    let order = by_number(before.keys().cloned());
    let (a, p, b) = (&order[0], &order[1], &order[20]);
    let raw = |id: &str| -> Vec<u8> {
        ddim_tests::npy_values(&before[id].0)
            .1
            .iter()
            .flat_map(|f| f.to_le_bytes())
            .collect()
    };
    let bad = root.path().join("bad");
    copy_dir(&data, &bad);
    let db = bad.join("store").join("db");
    assert!(damage_value(&db, &raw(a)) >= 1);
    assert!(damage_value(&db, before[p].1.as_ref().unwrap()) >= 1);
    assert!(damage_value(&db, &raw(b)) >= 1);

    // What sled's own recovery gives (verify reads a copy through sled).
    let (code, v) = verify_json(&bad, &model);
    assert_eq!(code, 1, "{v}");
    let sled_latents = v["latents"].as_u64().unwrap();
    // verify says what a salvage would keep.
    let would = v["salvage"]["latents"]
        .as_u64()
        .expect("verify reports the salvage");

    // A backup would open it with sled, which discards the log past the damage:
    // refused, pointing at salvage, the files untouched.
    let damaged_bytes = std::fs::read(&db).unwrap();
    let o = ddimd(&[
        "store",
        "backup",
        "--data",
        s(&bad),
        "--to",
        s(&root.path().join("b.tar")),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(one_line_error(&o).contains("ddimd store salvage --data"));
    assert_eq!(std::fs::read(&db).unwrap(), damaged_bytes);

    let new = root.path().join("new");
    let o = ddimd(&[
        "store",
        "salvage",
        "--data",
        s(&bad),
        "--to",
        s(&new),
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!stderr(&o).contains("panicked at"), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(r["carved"], true, "{r}");
    assert_eq!(r["complete"], true, "{r}");
    // The damaged bytes are every stored copy of those values: a latent whose x_T
    // is the same bytes as a or b lost it too, one whose preview is p's lost that.
    let xt_hit: Vec<String> = by_number(
        before
            .keys()
            .filter(|i| raw(i) == raw(a) || raw(i) == raw(b))
            .cloned(),
    );
    let png_hit: Vec<&String> = before
        .keys()
        .filter(|i| !xt_hit.contains(i) && before[*i].1 == before[p].1)
        .collect();
    assert!(png_hit.contains(&p));
    // Lost: the latents whose x_T has no intact copy left, and those whose only
    // copy sat in a damaged page frame beside them (a consolidated sled node holds
    // several records; its checksum covers them all): each named, with why.
    let lost = ids(&r, "lost_ids");
    let problems = r["problems"].as_array().unwrap();
    for id in &xt_hit {
        assert!(lost.contains(id), "{id} not reported lost: {r}");
    }
    let beside: Vec<&String> = lost.iter().filter(|i| !xt_hit.contains(i)).collect();
    for id in &beside {
        assert!(
            problems.iter().any(|q| q["id"] == id.as_str()
                && q["what"]
                    .as_str()
                    .unwrap()
                    .contains("newest write is damaged")),
            "{id} lost without the damaged frame named: {r}"
        );
    }
    assert_eq!(r["latents"].as_u64(), Some(would), "verify's figure: {v}");
    // More than sled's own recovery (which stops at the first damaged message).
    assert!(
        r["latents"].as_u64().unwrap() > sled_latents,
        "salvage kept no more than sled: {r}"
    );
    assert_eq!(r["jobs"].as_u64(), Some(jobs_before), "every job kept: {r}");
    assert_eq!(
        r["latents"].as_u64(),
        Some((before.len() - lost.len()) as u64),
        "{r}"
    );

    // The salvaged store serves every undamaged latent byte for byte; a latent kept
    // without a part (its preview damaged, or sitting in a damaged frame beside a
    // damaged one) has its x_T and the report names what it lost.
    let d = Daemon::builder().model(&model).data(&new).start().await;
    let mut c = d.client().await;
    let after = exports(&mut c).await;
    let named = |id: &str| {
        problems.iter().any(|q| {
            q["id"] == id && q["lost"] == false && q["what"].as_str().unwrap().contains("preview")
        })
    };
    let mut partial = 0;
    for (id, e) in &before {
        if lost.contains(id) {
            assert!(!after.contains_key(id), "{id} kept from a damaged x_T");
            continue;
        }
        let got = after.get(id).unwrap_or_else(|| panic!("{id} dropped"));
        assert_eq!(
            (&got.0, &got.2),
            (&e.0, &e.2),
            "{id}: x_T and source as they were"
        );
        if png_hit.contains(&id) || got != e {
            assert!(
                got.1.is_none() && named(id),
                "{id}: a changed preview not reported: {r}"
            );
            partial += 1;
        }
    }
    assert!(png_hit
        .iter()
        .all(|i| lost.contains(i) || after[*i].1.is_none()));
    let jobs = c
        .list_jobs(pb::ListJobsRequest {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(jobs.jobs.len() as u64, jobs_before);
    assert!(jobs.jobs.iter().all(|j| j.state() == pb::JobState::Done));
    // Ids run on.
    let job = run_job(&mut c, sample_spec(1, 99, 2)).await;
    let n: u64 = job.id.trim_start_matches("job-").parse().unwrap();
    assert!(n >= 33, "{}", job.id);
    println!(
        "damage early in the log: 3 values of {} latents and {jobs_before} jobs ({} x_T and {} \
         previews share their bytes); sled's recovery kept {sled_latents} latents; salvage \
         kept {} latents ({partial} without their preview) and {} jobs, lost {} ({}; {} only in a \
         damaged frame beside them)",
        before.len(),
        xt_hit.len(),
        png_hit.len(),
        r["latents"],
        r["jobs"],
        lost.len(),
        lost.join(", "),
        beside.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_sled_cannot_open_is_one_line_and_exit_3() {
    let root = tempfile::tempdir().unwrap();
    let (model, data, before) = make_store_with(root.path(), 3).await;
    let len = std::fs::metadata(data.join("store").join("db"))
        .unwrap()
        .len();
    let mut seen_3 = 0;
    let mut not_clean = 0;
    for (i, cut) in [len / 2, 100_000].into_iter().enumerate() {
        let bad = root.path().join(format!("cut{i}"));
        copy_dir(&data, &bad);
        let db = bad.join("store").join("db");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&db)
            .unwrap()
            .set_len(cut)
            .unwrap();
        let Some(o) = serve_until_listening(&model, &bad) else {
            // sled recovered a prefix of the log: verify reads it, and tells a rollback
            // from the clean-shutdown inventory (the copy carries it).
            let (code, v) = verify_json(&bad, &model);
            assert!(matches!(code, 0 | 1), "cut {cut}: verify {code}");
            if code == 1 {
                not_clean += 1;
                assert!(!ids(&v, "damaged_ids").is_empty(), "{v}");
            }
            continue;
        };
        assert!(
            !stderr(&o).contains("panicked at"),
            "cut {cut}: {}",
            stderr(&o)
        );
        assert_eq!(o.status.code(), Some(3), "cut {cut}: {}", stderr(&o));
        if o.status.code() == Some(3) {
            seen_3 += 1;
            let line = stderr(&o)
                .lines()
                .find(|l| l.starts_with("error: "))
                .unwrap_or_default()
                .to_string();
            assert!(line.contains(s(&bad)), "{line}");
            assert!(line.contains("ddimd store verify --data"), "{line}");
            assert!(line.contains("ddimd store salvage --data"), "{line}");
            assert!(line.contains("ddimd store restore"), "{line}");
            let (code, _) = verify_json(&bad, &model);
            assert_eq!(code, 3, "verify of an unopenable store (cut {cut})");
            // salvage never panics; it reports what a copy gave, or one error line.
            let new = root.path().join(format!("salvaged{i}"));
            let o = ddimd(&["store", "salvage", "--data", s(&bad), "--to", s(&new)]);
            assert!(!stderr(&o).contains("panicked at"), "{}", stderr(&o));
            assert!(matches!(o.status.code(), Some(0 | 3)), "{}", stderr(&o));
        }
    }
    assert!(seen_3 + not_clean >= 1, "no truncation was noticed");
    // Bytes flipped all over the log (20, evenly spread): sled refuses the store.
    let bad = root.path().join("flipped");
    copy_dir(&data, &bad);
    let db = bad.join("store").join("db");
    let mut f = std::fs::read(&db).unwrap();
    let n = f.len();
    for k in 0..20 {
        f[n * (2 * k + 1) / 40] ^= 0x10;
    }
    std::fs::write(&db, &f).unwrap();
    // Salvage a copy of it first (a daemon serving a damaged store writes over the
    // log past the damage): whatever it keeps is as it was; whatever it does not
    // keep it names.
    let flipped = root.path().join("flipped-copy");
    copy_dir(&bad, &flipped);
    let new = root.path().join("from-flipped");
    let o = ddimd(&[
        "store",
        "salvage",
        "--data",
        s(&flipped),
        "--to",
        s(&new),
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(r["complete"], true, "{r}");
    let lost = ids(&r, "lost_ids");
    {
        let d = Daemon::builder().model(&model).data(&new).start().await;
        let mut c = d.client().await;
        let after = exports(&mut c).await;
        let mut partial = 0;
        for (id, e) in &before {
            match after.get(id) {
                Some(got) => {
                    assert_eq!(got.0, e.0, "{id}: x_T kept with other bytes");
                    if got != e {
                        assert!(got.1.is_none(), "{id}: another preview");
                        partial += 1;
                    }
                }
                None => assert!(lost.contains(id), "{id} dropped, not reported lost: {r}"),
            }
        }
        println!(
            "20 flipped bytes over {} latents: salvage kept {} ({partial} without their \
             preview), lost {} latents ({}); {}",
            before.len(),
            after.len(),
            lost.iter().filter(|i| i.starts_with("lat-")).count(),
            r["how"],
            r["jobs"]
        );
    }
    match serve_until_listening(&model, &bad) {
        Some(o) => {
            assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
            assert!(!stderr(&o).contains("panicked at"));
            seen_3 += 1;
        }
        None => {
            let (code, _) = verify_json(&bad, &model);
            assert!(matches!(code, 0 | 1));
        }
    }
    // A damaged snapshot: sled refuses the store (exit 3, one line); salvage reads a
    // copy without it (sled replays the whole log) and keeps every record.
    // sled writes its snapshot when it reopens a store with a log: open it once.
    let o = ddimd(&[
        "store",
        "backup",
        "--data",
        s(&data),
        "--to",
        s(&root.path().join("b.tar")),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let bad = root.path().join("snapshot");
    copy_dir(&data, &bad);
    let snap = std::fs::read_dir(bad.join("store"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("snap.")
        })
        .expect("sled wrote a snapshot at the clean stop");
    let mut b = std::fs::read(&snap).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0xff;
    std::fs::write(&snap, b).unwrap();
    let o = serve_until_listening(&model, &bad).expect("sled refuses a damaged snapshot");
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let line = stderr(&o)
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_default()
        .to_string();
    assert!(!stderr(&o).contains("panicked at"), "{}", stderr(&o));
    assert!(
        line.contains(s(&bad)) && line.contains("ddimd store salvage --data"),
        "{line}"
    );
    seen_3 += 1;
    let (code, _) = verify_json(&bad, &model);
    assert_eq!(code, 3);
    let new = root.path().join("from-snapshot");
    let o = ddimd(&[
        "store",
        "salvage",
        "--data",
        s(&bad),
        "--to",
        s(&new),
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(
        (r["latents"].as_u64(), r["complete"].as_bool()),
        (Some(220), Some(true)),
        "{r}"
    );
    let d = Daemon::builder().model(&model).data(&new).start().await;
    let mut c = d.client().await;
    assert_eq!(exports(&mut c).await, before);
    println!("truncations and flips: {seen_3} refused by sled (exit 3), {not_clean} rolled back (verify exit 1)");
    // A bad flag is another status.
    let o = ddimd(&["store", "verify", "--data", s(&data), "--bogus"]);
    assert_eq!(o.status.code(), Some(2));
    let o = ddimd(&["store", "verify", "--data", s(&root.path().join("none"))]);
    assert_eq!(o.status.code(), Some(1));
    one_line_error(&o);
}

#[tokio::test(flavor = "multi_thread")]
async fn backup_and_restore_give_byte_identical_exports() {
    let root = tempfile::tempdir().unwrap();
    let (model, data, before) = make_store(root.path()).await;
    // From the stopped store.
    let file = root.path().join("stopped.tar");
    let o = ddimd(&[
        "store",
        "backup",
        "--data",
        s(&data),
        "--to",
        s(&file),
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let m: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(m["manifest"]["latents"], 28);
    assert_eq!(m["manifest"]["format"], "ddimd-backup");
    // From a serving daemon (with background backups on), without stopping it.
    let backups = root.path().join("backups");
    let mut d = Daemon::builder()
        .model(&model)
        .data(&data)
        .args(&[
            "--backup-every",
            "1s",
            "--backup-dir",
            s(&backups),
            "--backup-keep",
            "2",
        ])
        .start()
        .await;
    let live = root.path().join("live.tar");
    let o = ddimd(&["store", "backup", "--addr", &d.addr, "--to", s(&live)]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("28 latents"), "{}", stdout(&o));
    let until = Instant::now() + TIMEOUT;
    // Finished backups (`.tar`; one being written is a `.tmp` until it is renamed).
    let tars = || -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&backups)
            .map(|r| r.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        v.retain(|p| p.extension().is_some_and(|x| x == "tar"));
        v
    };
    loop {
        // The newest is renamed into place before the oldest is pruned, so for a
        // moment there are keep + 1.
        let n = tars().len();
        assert!(n <= 3, "--backup-keep 2 kept {n}");
        if n == 2 && d.log_text().matches("backup written").count() >= 3 {
            break;
        }
        assert!(Instant::now() < until, "no backups: {}", d.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    d.terminate(Duration::from_secs(30));

    // Restore each into a new folder and compare every export.
    let scheduled = std::fs::read_dir(&backups)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "tar"))
        .unwrap();
    for (i, f) in [&file, &live, &scheduled].into_iter().enumerate() {
        let target = root.path().join(format!("restored{i}"));
        let o = ddimd(&["store", "restore", s(f), "--data", s(&target)]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        // Not twice into the same folder.
        let o = ddimd(&["store", "restore", s(f), "--data", s(&target)]);
        assert_eq!(o.status.code(), Some(1));
        assert!(one_line_error(&o).contains("not empty"));
        let (code, v) = verify_json(&target, &model);
        assert_eq!(code, 0, "{v}");
        let d = Daemon::builder().model(&model).data(&target).start().await;
        let mut c = d.client().await;
        assert_eq!(exports(&mut c).await, before, "restore of {}", f.display());
        if i == 0 {
            let j = c
                .list_jobs(pb::ListJobsRequest::default())
                .await
                .unwrap()
                .into_inner();
            assert_eq!(j.jobs.len(), 5);
            assert!(j.jobs.iter().all(|j| j.state() == pb::JobState::Done));
            let job = run_job(&mut c, sample_spec(1, 5, 2)).await;
            let n: u64 = job.id.trim_start_matches("job-").parse().unwrap();
            assert!(n >= 33, "ids continue: {}", job.id);
        }
    }
}

/// Runs `ddimd serve` on `data`: `Some(output)` when it exits by itself, `None`
/// (after killing it) when it opened the store and listens.
fn serve_until_listening(model: &Path, data: &Path) -> Option<Output> {
    use std::io::Read;
    let mut child = Command::new(bin("ddimd"))
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--device",
            "cpu",
            "--model",
        ])
        .arg(model)
        .arg("--data")
        .arg(data)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let rx = listening_addr(child.stdout.take().unwrap());
    let until = Instant::now() + TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = vec![];
            child.stderr.take().unwrap().read_to_end(&mut err).unwrap();
            return Some(Output {
                status,
                stdout: vec![],
                stderr: err,
            });
        }
        if rx.try_recv().is_ok() {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        if Instant::now() >= until {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ddimd serve neither exited nor listened");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the filesystem of `dir` with a file until the write fails.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let p = dir.join("filler");
    let mut f = std::fs::File::create(&p).unwrap();
    let block = vec![0xaau8; 64 * 1024];
    while f.write_all(&block).is_ok() {}
    let small = [0u8; 512];
    while f.write_all(&small).is_ok() {}
    let _ = f.sync_all();
    p
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_is_resource_exhausted_and_the_daemon_carries_on() {
    if !is_root() {
        println!("skipped: mounting a tmpfs needs root");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let model = init_model(&root.path().join("model"), "test", 1, 32, 0);
    let data = root.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(&data)
        .status()
        .unwrap();
    assert!(ok.success(), "mount -t tmpfs");
    let _m = Mount(data.clone());
    let mut d = Daemon::builder()
        .model(&model)
        .data(&data)
        .args(&["--min-free-mb", "0"])
        .start()
        .await;
    let mut c = d.client().await;
    run_job(&mut c, sample_spec(2, 1, 2)).await;
    let before = exports(&mut c).await;

    // Full: sled's own write fails (ENOSPC) → RESOURCE_EXHAUSTED naming the folder.
    let filler = fill(&data);
    let mut refused = 0;
    for seed in 0..5 {
        match c.submit_job(submit(sample_spec(2, 10 + seed, 2))).await {
            Ok(j) => {
                // Small enough to fit: it must then really be on disk and run.
                let j = wait_job(&mut c, &j.into_inner().id).await;
                assert!(matches!(
                    j.state(),
                    pb::JobState::Done | pb::JobState::Failed
                ));
            }
            Err(e) => {
                assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
                assert!(e.message().contains(s(&data)), "{}", e.message());
                assert!(e.message().contains("disk full"), "{}", e.message());
                refused += 1;
                break;
            }
        }
    }
    assert!(refused > 0, "a full disk never refused a submit");
    // Reads still serve.
    let listed = c
        .list_latents(pb::ListLatentsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.total >= 2);

    // Room again (remount bigger; the filler stays): the same daemon carries on.
    let ok = Command::new("mount")
        .args(["-o", "remount,size=64m"])
        .arg(&data)
        .status()
        .unwrap();
    assert!(ok.success());
    let done = run_job(&mut c, sample_spec(2, 42, 2)).await;
    assert_eq!(done.state(), pb::JobState::Done);
    let now = exports(&mut c).await;
    for (id, e) in &before {
        assert_eq!(now.get(id), Some(e), "{id} changed");
    }
    std::fs::remove_file(filler).unwrap();

    // The reserve: below --min-free-mb, refused before anything is written.
    assert!(d.terminate(Duration::from_secs(30)).success());
    let (code, v) = verify_json(&data, &model);
    assert_eq!(code, 0, "no record half-written: {v}");
    let total = v["latents"].as_u64().unwrap();
    let d = Daemon::builder()
        .model(&model)
        .data(&data)
        .args(&["--min-free-mb", "100"])
        .start()
        .await;
    let mut c = d.client().await;
    let e = c
        .submit_job(submit(sample_spec(1, 7, 2)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted);
    assert!(e.message().contains(s(&data)), "{}", e.message());
    let st = c
        .get_stats(pb::GetStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(st.latents, total);
    assert!(st.store_free_bytes > 0);
}
