//! `reencode`: carry latents over to the loaded model. A latent's x_T means
//! something only to the weights that made it, so after a model upgrade the
//! library's old latents are refused. Their images are not lost: each latent
//! keeps its source image (encoded ones) or its preview. This kind encodes
//! that image (η = 0, DDIM, S steps) with the loaded model into a new latent
//! that keeps the old one's name and tags and records it as its parent; the
//! old latent is left as it was.
use ddim_proto::v1 as pb;
use serde_json::json;
use tch::Tensor;

use super::lineage::{encode_results, EditOut, Lineage};
use super::{Check, JobKindSpec, Outcome, SpecInfo};
use crate::engine::{imageio, SamplerOptions};
use crate::server::conversions::{check_steps, latent_id, latent_of_shape, ModelMeta, MAX_ITEMS};
use crate::server::error::{Result, ServerError};
use crate::server::store::{JobKind, JobRecord, LatentPng, LatentRecord, Store};
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

/// A latent to carry over and the image that stands for it.
struct Input {
    rec: std::sync::Arc<LatentRecord>,
    png: Vec<u8>,
    /// "source" or "preview".
    image: &'static str,
}

/// Each listed latent (once, of the model's shape) with its source image, else its preview.
fn inputs(j: &pb::ReencodeJob, store: &Store, meta: &ModelMeta) -> Result<Vec<Input>> {
    if j.latent_ids.is_empty() || j.latent_ids.len() > MAX_ITEMS {
        return Err(ServerError::invalid(
            "reencode.latent_ids",
            format!("1..={MAX_ITEMS} latent ids, got {}", j.latent_ids.len()),
        ));
    }
    let mut out: Vec<Input> = vec![];
    for (i, id) in j.latent_ids.iter().enumerate() {
        let field = format!("reencode.latent_ids[{i}]");
        let rec = latent_of_shape(store, meta, id, &field)?;
        if out.iter().any(|o| o.rec.id == rec.id) {
            return Err(ServerError::invalid(
                field,
                format!("latent {id} is listed twice"),
            ));
        }
        let (png, image) = match store.latent_png(rec.id, LatentPng::Source)? {
            Some(p) => (p, "source"),
            None => (
                store
                    .latent_png(rec.id, LatentPng::Preview)?
                    .ok_or_else(|| {
                        ServerError::FailedPrecondition(format!(
                            "{field}: latent {id} has neither a source image nor a preview"
                        ))
                    })?,
                "preview",
            ),
        };
        out.push(Input { rec, png, image });
    }
    Ok(out)
}

impl JobKindSpec for pb::ReencodeJob {
    fn kind(&self) -> JobKind {
        JobKind::Reencode
    }

    fn validate(&self, cx: &Check) -> Result<SpecInfo> {
        let s = steps(self, cx.meta.t)?;
        let out = EditOut::from_pb(self.out.as_ref(), cx.meta.t, "reencode.out")?;
        let inputs = inputs(self, cx.store, cx.meta)?;
        let n = inputs.len() as u32;
        Ok(SpecInfo {
            kind: JobKind::Reencode,
            reads: inputs.iter().map(|i| i.rec.id).collect(),
            total_steps: (s + out.preview_steps) as u32,
            batch: None,
            rows: n,
            images: n,
        })
    }

    fn run(&self, w: &Worker, rec: &JobRecord, tr: &mut Track) -> Result<Outcome> {
        let s = steps(self, w.meta.t)?;
        let out = EditOut::from_pb(self.out.as_ref(), w.meta.t, "reencode.out")?;
        let inputs = inputs(self, &w.store, &w.meta)?;
        let rows = inputs
            .iter()
            .enumerate()
            .map(|(i, input)| {
                let field = format!("reencode.latent_ids[{i}]");
                imageio::decode_to_tensor(&input.png, w.meta.shape, &field)
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let x0 = Tensor::cat(&rows, 0).to_device(w.model.device);
        let enc = SamplerOptions {
            steps: s,
            eta: 0.0,
            spacing: out.spacing,
            sigma_hat: false,
            solver: Default::default(),
        };
        let n = inputs.len();
        let mut o = encode_results(w, tr, rec, &out, &x0, &enc, |i| {
            let old = &inputs[i].rec;
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
                    "image": inputs[i].image,
                    "model": old.fingerprint,
                }),
                parents: vec![old.id],
                summary: format!(
                    "re-encode of {} (model {short}) from its {} image at S = {s}",
                    latent_id(old.id),
                    inputs[i].image
                ),
            };
            (name, lineage)
        })?;
        // Each keeps its parent's tags, then the ones asked for.
        for (new, input) in o.latents.iter_mut().zip(&inputs) {
            let mut tags = input.rec.tags.clone();
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
