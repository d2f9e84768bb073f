//! `reencode`: carry latents over to the loaded model. A latent's x_T means
//! something only to the weights that made it, so after a model upgrade the
//! library's old latents are refused. Their images are not lost: each latent
//! keeps its source image (encoded ones) or its preview. This kind encodes
//! that image (η = 0, DDIM, S steps) with the loaded model into a new latent
//! that keeps the old one's name and tags and records it as its parent; the
//! old latent is left as it was.
use std::sync::Arc;

use ddim_proto::v1 as pb;
use serde_json::json;
use tch::Tensor;

use super::lineage::{encode_results, latent_image, EditOut, Lineage};
use super::{Check, JobKindSpec, Outcome, SpecInfo};
use crate::engine::{imageio, SamplerOptions};
use crate::server::conversions::{check_steps, latent_id, latent_of_shape, ModelMeta, MAX_ITEMS};
use crate::server::error::{Result, ServerError};
use crate::server::store::{JobKind, JobRecord, LatentRecord, Store};
use crate::server::worker::{Track, Worker};

/// S of the inversion when `reencode.steps` is 0: `ddim encode`'s default (a carried-over
/// latent should reconstruct as well as a freshly encoded one).
pub const DEFAULT_REENCODE_STEPS: u32 = 100;

/// The inversion's S.
fn steps(j: &pb::ReencodeJob, t: usize) -> Result<usize> {
    let s = if j.steps == 0 {
        DEFAULT_REENCODE_STEPS.min(t as u32)
    } else {
        j.steps
    };
    check_steps(s, t, "reencode.steps")
}

/// The listed latents (1..=MAX_ITEMS, each once, of the model's shape, of any weights).
fn records(j: &pb::ReencodeJob, store: &Store, meta: &ModelMeta) -> Result<Vec<Arc<LatentRecord>>> {
    if j.latent_ids.is_empty() || j.latent_ids.len() > MAX_ITEMS {
        return Err(ServerError::invalid(
            "reencode.latent_ids",
            format!("1..={MAX_ITEMS} latent ids, got {}", j.latent_ids.len()),
        ));
    }
    let mut out: Vec<Arc<LatentRecord>> = vec![];
    for (i, id) in j.latent_ids.iter().enumerate() {
        let field = field(i);
        let rec = latent_of_shape(store, meta, id, &field)?;
        if out.iter().any(|o| o.id == rec.id) {
            return Err(ServerError::invalid(
                field,
                format!("latent {id} is listed twice"),
            ));
        }
        out.push(rec);
    }
    Ok(out)
}

fn field(i: usize) -> String {
    format!("reencode.latent_ids[{i}]")
}

impl JobKindSpec for pb::ReencodeJob {
    fn kind(&self) -> JobKind {
        JobKind::Reencode
    }

    fn validate(&self, cx: &Check) -> Result<SpecInfo> {
        let s = steps(self, cx.meta.t)?;
        let out = EditOut::from_pb(self.out.as_ref(), cx.meta.t, "reencode.out")?;
        let recs = records(self, cx.store, cx.meta)?;
        let n = recs.len() as u32;
        Ok(SpecInfo {
            kind: JobKind::Reencode,
            reads: recs.iter().map(|r| r.id).collect(),
            total_steps: (s + out.preview_steps) as u32,
            batch: None,
            rows: n,
            images: n,
        })
    }

    fn run(&self, w: &Worker, rec: &JobRecord, tr: &mut Track) -> Result<Outcome> {
        let s = steps(self, w.meta.t)?;
        let out = EditOut::from_pb(self.out.as_ref(), w.meta.t, "reencode.out")?;
        let recs = records(self, &w.store, &w.meta)?;
        // The image each latent stands for, read once, here (validation only checks ids).
        let mut rows = vec![];
        let mut images = vec![];
        for (i, (rec, id)) in recs.iter().zip(&self.latent_ids).enumerate() {
            let (png, image) = latent_image(&w.store, rec.id, id, &field(i))?;
            rows.push(imageio::decode_to_tensor(&png, w.meta.shape, &field(i))?);
            images.push(image);
        }
        let x0 = Tensor::cat(&rows, 0).to_device(w.model.device);
        // The η = 0 DDIM inversion on the preview's spacing, at S.
        let enc = SamplerOptions {
            steps: s,
            ..out.preview_opts()
        };
        let n = recs.len();
        let mut o = encode_results(w, tr, rec, &out, &x0, &enc, |i| {
            let old = &recs[i];
            let name = if out.name.is_empty() {
                old.name.clone()
            } else {
                out.name("reencode", &latent_id(old.id), i, n)
            };
            let short = &old.fingerprint[..old.fingerprint.len().min(8)];
            let lineage = Lineage {
                op: "reencode",
                params: json!({
                    "steps": s,
                    "spacing": out.spacing.as_str(),
                    "image": images[i].as_str(),
                    "model": old.fingerprint,
                }),
                parents: vec![old.id],
                summary: format!(
                    "re-encode of {} (model {short}) from its {} image at S = {s}",
                    latent_id(old.id),
                    images[i].as_str()
                ),
            };
            (name, lineage)
        })?;
        // Each keeps its parent's tags, then the ones asked for.
        for (new, old) in o.latents.iter_mut().zip(&recs) {
            let mut tags = old.tags.clone();
            for t in &out.tags {
                if !tags.contains(t) {
                    tags.push(t.clone());
                }
            }
            new.record.tags = tags;
        }
        Ok(o)
    }
}
