//! `mix`: latent arithmetic, x' = rescale(Σ wᵢ·xᵢ) to the parents' radius
//! (Σ|wᵢ|·‖xᵢ‖/Σ|wᵢ|) or √d (`radius`), e.g.
//! `lat-1 + 0.8*(lat-2 - lat-3)` (the expression is parsed by the client
//! with `ddim_proto::mix::parse_mix`; the daemon gets the terms).
use ddim_proto::v1 as pb;
use serde_json::json;
use tch::Tensor;

use super::lineage::{commit_rows, radius_from_pb, EditOut, Lineage};
use super::{Check, JobKindSpec, Outcome, Rows, SpecInfo};
use crate::engine::{edit, noise::SampleSeed};
use crate::server::conversions::{batch_key, latent_id, usable_latent};
use crate::server::error::{Result, ServerError};
use crate::server::store::{JobKind, JobRecord};
use crate::server::worker::Worker;

/// Most terms of one mix.
pub const MAX_TERMS: usize = 16;

impl JobKindSpec for pb::MixJob {
    fn kind(&self) -> JobKind {
        JobKind::Mix
    }

    fn is_edit(&self) -> bool {
        true
    }

    fn validate(&self, cx: &Check) -> Result<SpecInfo> {
        let pb::MixJob {
            terms,
            expression,
            out,
            radius,
        } = self;
        radius_from_pb(*radius, "mix.radius")?;
        if terms.is_empty() || terms.len() > MAX_TERMS {
            return Err(ServerError::invalid(
                "mix.terms",
                format!("1..={MAX_TERMS} terms, got {}", terms.len()),
            ));
        }
        if expression.len() > 1024 {
            return Err(ServerError::invalid("mix.expression", "at most 1024 bytes"));
        }
        let mut reads = vec![];
        for (i, t) in terms.iter().enumerate() {
            let pb::MixTerm { latent_id, weight } = t;
            let field = format!("mix.terms[{i}]");
            let r = usable_latent(cx.store, cx.meta, latent_id, &format!("{field}.latent_id"))?;
            if !weight.is_finite() {
                return Err(ServerError::invalid(
                    format!("{field}.weight"),
                    format!("must be a finite number, got {weight}"),
                ));
            }
            if reads.contains(&r.id) {
                return Err(ServerError::invalid(
                    format!("{field}.latent_id"),
                    format!("{latent_id} is listed twice (add its weights)"),
                ));
            }
            reads.push(r.id);
        }
        if terms.iter().all(|t| t.weight == 0.0) {
            return Err(ServerError::invalid(
                "mix.terms",
                "every weight is 0: the sum has no direction to rescale",
            ));
        }
        let out = EditOut::from_pb(out.as_ref(), cx.meta.t, "mix.out")?;
        Ok(SpecInfo {
            kind: JobKind::Mix,
            reads,
            total_steps: out.preview_steps as u32,
            batch: Some(batch_key(&out.preview_opts())),
            rows: 1,
            images: 1,
        })
    }

    fn rows(&self, w: &Worker) -> Result<Rows> {
        let mut xs = vec![];
        let mut ws = vec![];
        for (i, t) in self.terms.iter().enumerate() {
            let r = w.latent(&t.latent_id, &format!("mix.terms[{i}].latent_id"))?;
            xs.push(w.load_xt(&r)?);
            ws.push(t.weight);
        }
        let out = EditOut::from_pb(self.out.as_ref(), w.meta.t, "mix.out")?;
        Ok(Rows {
            opts: out.preview_opts(),
            x: edit::combine(&xs, &ws, radius_from_pb(self.radius, "mix.radius")?)?,
            seeds: vec![SampleSeed::new(0, 0)],
        })
    }

    fn finish(&self, w: &Worker, rec: &JobRecord, rows: &Rows, x: &Tensor) -> Result<Outcome> {
        let out = EditOut::from_pb(self.out.as_ref(), w.meta.t, "mix.out")?;
        let mut parents = vec![];
        for (i, t) in self.terms.iter().enumerate() {
            parents.push(
                w.latent(&t.latent_id, &format!("mix.terms[{i}].latent_id"))?
                    .id,
            );
        }
        let terms: Vec<(String, f64)> = parents
            .iter()
            .zip(&self.terms)
            .map(|(p, t)| (latent_id(*p), t.weight))
            .collect();
        let formula = ddim_proto::mix::format_mix(&terms);
        let radius = radius_from_pb(self.radius, "mix.radius")?;
        commit_rows(w, rec, &out, &rows.x, x, |i| {
            (
                out.name("mix", &latent_id(parents[0]), i, 1),
                Lineage {
                    op: "mix",
                    params: json!({
                        "terms": terms.iter().map(|(id, wt)| json!({"latent_id": id, "weight": wt})).collect::<Vec<_>>(),
                        "expression": self.expression,
                        "radius": radius.name(),
                    }),
                    parents: parents.clone(),
                    summary: format!("mix {formula}"),
                },
            )
        })
    }
}
