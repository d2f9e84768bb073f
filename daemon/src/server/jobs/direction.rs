//! `direction`: an attribute direction from tags, dir = mean(x_T tagged
//! `to_tag`) − mean(x_T tagged `from_tag`); x' = rescale(x + w·dir) to ‖x‖ or √d
//! (`radius`), one result per weight (`sneaker → ankle-boot`).
use ddim_proto::v1 as pb;
use serde_json::json;
use tch::Tensor;

use super::lineage::{check_count, commit_rows, radius_from_pb, EditOut, Lineage};
use super::{Check, JobKindSpec, Outcome, Rows, SpecInfo};
use crate::engine::{edit, noise::SampleSeed};
use crate::server::conversions::{batch_key, latent_id, usable_latent, ModelMeta};
use crate::server::error::{Result, ServerError};
use crate::server::store::{Cursor, JobKind, JobRecord, LatentFilter, LatentOrder, Store};
use crate::server::worker::Worker;

/// Most latents averaged per tag (the newest).
pub const MAX_TAG_SET: usize = 1000;

/// The ids of the latents tagged `tag` that the loaded model can use (on either
/// backend: on PostgreSQL a query, which can fail).
fn tagged(store: &Store, meta: &ModelMeta, tag: &str) -> Result<Vec<u64>> {
    let f = LatentFilter {
        tag: tag.to_string(),
        ..Default::default()
    };
    let want = meta.shape.map(|d| d as u32);
    Ok(store
        .try_list_latents(&f, LatentOrder::Newest, &Cursor::Offset(0), MAX_TAG_SET)?
        .latents
        .iter()
        .filter(|r| r.shape == want && r.fingerprint == meta.fingerprint)
        .map(|r| r.id)
        .collect())
}

fn check_tag(store: &Store, meta: &ModelMeta, tag: &str, field: &str) -> Result<Vec<u64>> {
    if tag.trim().is_empty() {
        return Err(ServerError::invalid(field, "a tag is required"));
    }
    let ids = tagged(store, meta, tag)?;
    if ids.is_empty() {
        return Err(ServerError::invalid(
            field,
            format!("no latent of the loaded model is tagged {tag:?}"),
        ));
    }
    Ok(ids)
}

/// The weights, `[1]` when none are given.
fn weights(w: &[f32]) -> Vec<f32> {
    if w.is_empty() {
        vec![1.0]
    } else {
        w.to_vec()
    }
}

impl JobKindSpec for pb::DirectionJob {
    fn kind(&self) -> JobKind {
        JobKind::Direction
    }

    fn is_edit(&self) -> bool {
        true
    }

    fn validate(&self, cx: &Check) -> Result<SpecInfo> {
        let pb::DirectionJob {
            latent_id,
            from_tag,
            to_tag,
            weights: ws,
            out,
            radius,
        } = self;
        let r = usable_latent(cx.store, cx.meta, latent_id, "direction.latent_id")?;
        radius_from_pb(*radius, "direction.radius")?;
        check_tag(cx.store, cx.meta, from_tag, "direction.from_tag")?;
        check_tag(cx.store, cx.meta, to_tag, "direction.to_tag")?;
        if from_tag == to_tag {
            return Err(ServerError::invalid(
                "direction.to_tag",
                format!("is the same tag as from_tag ({to_tag:?}): the direction would be 0"),
            ));
        }
        let n = check_count(ws.len() as u32, "direction.weights")? as u32;
        for (i, v) in ws.iter().enumerate() {
            if !v.is_finite() {
                return Err(ServerError::invalid(
                    format!("direction.weights[{i}]"),
                    format!("must be a finite number, got {v}"),
                ));
            }
        }
        let out = EditOut::from_pb(out.as_ref(), cx.meta.t, "direction.out")?;
        Ok(SpecInfo {
            kind: JobKind::Direction,
            reads: vec![r.id],
            total_steps: out.preview_steps as u32,
            batch: Some(batch_key(&out.preview_opts())),
            rows: n,
            images: n,
        })
    }

    fn rows(&self, w: &Worker) -> Result<Rows> {
        let x = w.load_xt(&*w.latent(&self.latent_id, "direction.latent_id")?)?;
        let set = |tag: &str, field: &str| -> Result<Tensor> {
            let ids = check_tag(&w.store, &w.meta, tag, field)?;
            let mut rows = vec![];
            for id in ids {
                if let Some(r) = w.store.get_latent(id) {
                    rows.push(w.load_xt(&r)?);
                }
            }
            Ok(Tensor::cat(&rows, 0))
        };
        let dir = edit::direction(
            &set(&self.to_tag, "direction.to_tag")?,
            &set(&self.from_tag, "direction.from_tag")?,
        )?;
        let ws = weights(&self.weights);
        let radius = radius_from_pb(self.radius, "direction.radius")?;
        let rows = ws
            .iter()
            .map(|v| edit::apply_direction(&x, &dir, *v as f64, radius))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let out = EditOut::from_pb(self.out.as_ref(), w.meta.t, "direction.out")?;
        Ok(Rows {
            opts: out.preview_opts(),
            x: Tensor::cat(&rows, 0),
            seeds: (0..ws.len() as u64)
                .map(|i| SampleSeed::new(0, i))
                .collect(),
        })
    }

    fn finish(&self, w: &Worker, rec: &JobRecord, rows: &Rows, x: &Tensor) -> Result<Outcome> {
        let out = EditOut::from_pb(self.out.as_ref(), w.meta.t, "direction.out")?;
        let parent = w.latent(&self.latent_id, "direction.latent_id")?.id;
        let ws = weights(&self.weights);
        let from_n = tagged(&w.store, &w.meta, &self.from_tag)?.len();
        let to_n = tagged(&w.store, &w.meta, &self.to_tag)?.len();
        let radius = radius_from_pb(self.radius, "direction.radius")?;
        commit_rows(w, rec, &out, &rows.x, x, |i| {
            (
                out.name("direction", &latent_id(parent), i, ws.len()),
                Lineage {
                    op: "direction",
                    params: json!({
                        "from_tag": self.from_tag, "to_tag": self.to_tag, "weight": ws[i],
                        "from_count": from_n, "to_count": to_n, "radius": radius.name(),
                    }),
                    parents: vec![parent],
                    summary: format!(
                        "{} + {}·({} − {})",
                        latent_id(parent),
                        ws[i],
                        self.to_tag,
                        self.from_tag
                    ),
                },
            )
        })
    }
}
