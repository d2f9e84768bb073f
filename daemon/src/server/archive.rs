//! The backup archive: a plain tar file a user can open with `tar xf`.
//!
//! ```text
//! manifest.json               format "ddimd-backup", version 1, created time, counts,
//!                             next_id, the model fingerprints and shapes of the latents,
//!                             the ids that could not be read when it was taken
//! latents.jsonl               one latent record (JSON, as stored) per line, oldest first
//! jobs.jsonl                  one job record (JSON, as stored) per line, oldest first
//! xt/lat-N.npy                x_T, float32 [C, H, W] (numpy .npy 1.0)
//! png/lat-N.preview.png       the preview
//! png/lat-N.source.png        the source image (encoded latents)
//! jobs/job-N.spec.pb          the ddim.v1.JobSpec message (protobuf binary)
//! jobs/job-N.result.pb        the ddim.v1.JobResult message (finished jobs)
//! ```
//!
//! [`write`] turns a [`Dump`] into this archive and [`read`] back; a restore is
//! `read` then [`super::dump::load`] into an empty store.
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Write};

use super::dump::{Dump, JobDump, LatentDump};
use super::error::{Result, ServerError};
use super::store::{JobRecord, LatentRecord};

pub const FORMAT: &str = "ddimd-backup";
pub const VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    pub created_unix_ms: i64,
    pub ddimd_version: String,
    /// The next id the store hands out (ids are never reused).
    pub next_id: u64,
    pub latents: u64,
    pub jobs: u64,
    /// Fingerprints of the models that made the latents.
    pub fingerprints: Vec<String>,
    /// [C, H, W] of the latents.
    pub shapes: Vec<[u32; 3]>,
    /// Ids that could not be read when the backup was taken (not in it).
    pub damaged: Vec<String>,
}

fn bad(what: impl std::fmt::Display) -> ServerError {
    ServerError::Config(format!("backup archive: {what}"))
}

/// x_T bytes (f32 LE) as a .npy 1.0 file of `shape`.
pub fn npy(shape: &[u32], xt: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let dims = if dims.len() == 1 {
        format!("{},", dims[0])
    } else {
        dims.join(", ")
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({dims}), }}");
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(xt);
    out
}

/// Writes `dump` as an archive to `out`; returns its manifest.
pub fn write<W: Write>(dump: &Dump, out: W) -> Result<Manifest> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let fingerprints: BTreeSet<&str> = dump
        .latents
        .iter()
        .map(|l| l.record.fingerprint.as_str())
        .collect();
    let shapes: BTreeSet<[u32; 3]> = dump.latents.iter().map(|l| l.record.shape).collect();
    let manifest = Manifest {
        format: FORMAT.into(),
        version: VERSION,
        created_unix_ms: now.as_millis() as i64,
        ddimd_version: env!("CARGO_PKG_VERSION").into(),
        next_id: dump.counter,
        latents: dump.latents.len() as u64,
        jobs: dump.jobs.len() as u64,
        fingerprints: fingerprints.into_iter().map(String::from).collect(),
        shapes: shapes.into_iter().collect(),
        damaged: dump.lost_ids(),
    };
    let mtime = now.as_secs();
    let mut tar = tar::Builder::new(out);
    let io = |e: std::io::Error| ServerError::Internal(format!("writing the backup: {e}"));
    let mut add = |path: &str, data: &[u8]| -> Result<()> {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(mtime);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, path, data).map_err(io)
    };
    let mut m = serde_json::to_vec_pretty(&manifest).expect("manifest serialises");
    m.push(b'\n');
    add("manifest.json", &m)?;
    let mut lines = vec![];
    for l in &dump.latents {
        lines.extend(serde_json::to_vec(&l.record).expect("records serialise"));
        lines.push(b'\n');
    }
    add("latents.jsonl", &lines)?;
    lines.clear();
    for j in &dump.jobs {
        lines.extend(serde_json::to_vec(&j.record).expect("records serialise"));
        lines.push(b'\n');
    }
    add("jobs.jsonl", &lines)?;
    for l in &dump.latents {
        let id = l.record.id;
        add(&format!("xt/lat-{id}.npy"), &npy(&l.record.shape, &l.xt))?;
        if let Some(p) = &l.preview {
            add(&format!("png/lat-{id}.preview.png"), p)?;
        }
        if let Some(s) = &l.source {
            add(&format!("png/lat-{id}.source.png"), s)?;
        }
    }
    for j in &dump.jobs {
        let id = j.record.id;
        if let Some(s) = &j.spec {
            add(&format!("jobs/job-{id}.spec.pb"), s)?;
        }
        if let Some(r) = &j.result {
            add(&format!("jobs/job-{id}.result.pb"), r)?;
        }
    }
    tar.into_inner().map_err(io)?.flush().map_err(io)?;
    Ok(manifest)
}

/// Reads an archive made by [`write`].
pub fn read<R: Read>(input: R) -> Result<(Manifest, Dump)> {
    let mut files: HashMap<String, Vec<u8>> = HashMap::new();
    let mut tar = tar::Archive::new(input);
    for e in tar.entries().map_err(bad)? {
        let mut e = e.map_err(bad)?;
        if !e.header().entry_type().is_file() {
            continue;
        }
        let path = e.path().map_err(bad)?.to_string_lossy().into_owned();
        let mut data = vec![];
        e.read_to_end(&mut data).map_err(bad)?;
        files.insert(path, data);
    }
    let manifest: Manifest = serde_json::from_slice(
        files
            .get("manifest.json")
            .ok_or_else(|| bad("no manifest.json (not a ddimd backup)"))?,
    )
    .map_err(|e| bad(format!("manifest.json: {e}")))?;
    if manifest.format != FORMAT {
        return Err(bad(format!(
            "format {:?} is not {FORMAT:?}",
            manifest.format
        )));
    }
    if manifest.version > VERSION {
        return Err(bad(format!(
            "format version {} is newer than this ddimd reads ({VERSION})",
            manifest.version
        )));
    }
    let lines = |name: &str| -> Result<Vec<Vec<u8>>> {
        Ok(files
            .get(name)
            .ok_or_else(|| bad(format!("no {name}")))?
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec)
            .collect())
    };
    let mut dump = Dump {
        counter: manifest.next_id,
        ..Dump::default()
    };
    for (i, line) in lines("latents.jsonl")?.iter().enumerate() {
        let record: LatentRecord = serde_json::from_slice(line)
            .map_err(|e| bad(format!("latents.jsonl line {}: {e}", i + 1)))?;
        let id = record.id;
        let npy = files
            .get(&format!("xt/lat-{id}.npy"))
            .ok_or_else(|| bad(format!("no xt/lat-{id}.npy")))?;
        let (_, values) = crate::engine::npy::from_bytes(npy)
            .map_err(|e| bad(format!("xt/lat-{id}.npy: {e}")))?;
        dump.latents.push(LatentDump {
            xt: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            preview: files.get(&format!("png/lat-{id}.preview.png")).cloned(),
            source: files.get(&format!("png/lat-{id}.source.png")).cloned(),
            record,
        });
    }
    for (i, line) in lines("jobs.jsonl")?.iter().enumerate() {
        let record: JobRecord = serde_json::from_slice(line)
            .map_err(|e| bad(format!("jobs.jsonl line {}: {e}", i + 1)))?;
        let id = record.id;
        dump.jobs.push(JobDump {
            spec: files.get(&format!("jobs/job-{id}.spec.pb")).cloned(),
            result: files.get(&format!("jobs/job-{id}.result.pb")).cloned(),
            record,
        });
    }
    Ok((manifest, dump))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::dump::{self, Checks};
    use crate::server::store::Store;

    #[test]
    fn archive_round_trip_is_exact() {
        let s = crate::server::dump::tests_support::filled();
        let d = s.frozen(|t| dump::read(t, &Checks::default())).unwrap();
        let mut bytes = vec![];
        let m = write(&d, &mut bytes).unwrap();
        assert_eq!((m.latents, m.jobs, m.next_id), (2, 1, 3));
        let (m2, back) = read(bytes.as_slice()).unwrap();
        assert_eq!(m, m2);
        assert_eq!(back.latents, d.latents);
        assert_eq!(back.jobs, d.jobs);
        let copy = Store::temporary().unwrap();
        dump::load(&copy, &back).unwrap();
        assert_eq!(copy.latent_xt(1).unwrap(), s.latent_xt(1).unwrap());
        // The .npy reads as numpy would.
        let (shape, v) =
            crate::engine::npy::from_bytes(&npy(&[1, 2, 2], &d.latents[0].xt)).unwrap();
        assert_eq!((shape, v.len()), (vec![1, 2, 2], 4));
        assert!(read(&b"not a tar"[..]).is_err());
    }
}
