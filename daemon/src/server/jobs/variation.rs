//! `variation`: x' = slerp(x_T, z, s) with z the seed's noise, "more like
//! this one" (docs/editing.md).
use ddim_proto::v1 as pb;
use serde_json::json;
use tch::Tensor;

use super::lineage::{check_count, check_unit, commit_rows, EditOut, Lineage};
use super::{Check, JobKindSpec, Outcome, Rows, SpecInfo};
use crate::engine::edit;
use crate::server::conversions::{batch_key, latent_id, usable_latent};
use crate::server::error::Result;
use crate::server::store::{JobKind, JobRecord};
use crate::server::worker::Worker;

impl JobKindSpec for pb::VariationJob {
    fn kind(&self) -> JobKind {
        JobKind::Variation
    }

    fn is_edit(&self) -> bool {
        true
    }

    fn validate(&self, cx: &Check) -> Result<SpecInfo> {
        let pb::VariationJob {
            latent_id,
            strength,
            seed: _,
            count,
            out,
        } = self;
        let r = usable_latent(cx.store, cx.meta, latent_id, "variation.latent_id")?;
        check_unit(*strength, "variation.strength")?;
        let n = check_count(*count, "variation.count")? as u32;
        let out = EditOut::from_pb(out.as_ref(), cx.meta.t, "variation.out")?;
        Ok(SpecInfo {
            kind: JobKind::Variation,
            reads: vec![r.id],
            total_steps: out.preview_steps as u32,
            batch: Some(batch_key(&out.preview_opts())),
            rows: n,
            images: n,
        })
    }

    fn rows(&self, w: &Worker) -> Result<Rows> {
        let r = w.latent(&self.latent_id, "variation.latent_id")?;
        let x = w.load_xt(&r)?;
        let out = EditOut::from_pb(self.out.as_ref(), w.meta.t, "variation.out")?;
        let n = check_count(self.count, "variation.count")?;
        let s = crate::engine::noise::seeds(self.seed, n);
        Ok(Rows {
            opts: out.preview_opts(),
            x: edit::variation(&x, self.strength as f64, &s)?,
            seeds: s,
        })
    }

    fn finish(&self, w: &Worker, rec: &JobRecord, rows: &Rows, x: &Tensor) -> Result<Outcome> {
        let out = EditOut::from_pb(self.out.as_ref(), w.meta.t, "variation.out")?;
        let parent = w.latent(&self.latent_id, "variation.latent_id")?.id;
        let n = rows.seeds.len();
        commit_rows(w, rec, &out, &rows.x, x, |i| {
            (
                out.name("variation", &latent_id(parent), i, n),
                Lineage {
                    op: "variation",
                    params: json!({"strength": self.strength, "seed": self.seed, "index": i}),
                    parents: vec![parent],
                    summary: format!(
                        "variation of {}, strength {}, seed {} #{i}",
                        latent_id(parent),
                        self.strength,
                        self.seed
                    ),
                },
            )
        })
    }
}
