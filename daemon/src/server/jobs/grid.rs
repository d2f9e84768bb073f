//! `grid`: four corner latents, an N×N grid by slerp along both axes
//! (row-major cells); the cells asked for are saved as latents.
use ddim_proto::v1 as pb;
use serde_json::json;
use tch::Tensor;

use super::lineage::{EditOut, Lineage};
use super::{Check, JobKindSpec, Outcome, Rows, SpecInfo};
use crate::engine::{edit, noise::SampleSeed};
use crate::server::conversions::{batch_key, latent_id, usable_latent};
use crate::server::error::{Result, ServerError};
use crate::server::store::{JobKind, JobRecord, NewLatent};
use crate::server::worker::{image_pb, xt_values, Encoding, Worker};

/// Largest N.
pub const MAX_GRID: u32 = 9;

/// The output settings, with `preview_steps` (the cells' decode S)
/// standing in for `out.preview_steps` when set.
fn output(j: &pb::GridJob, t: usize) -> Result<EditOut> {
    let mut o = j.out.clone().unwrap_or_default();
    if j.preview_steps != 0 {
        o.preview_steps = j.preview_steps;
    }
    EditOut::from_pb(Some(&o), t, "grid.out")
}

impl JobKindSpec for pb::GridJob {
    fn kind(&self) -> JobKind {
        JobKind::Grid
    }

    fn is_edit(&self) -> bool {
        true
    }

    fn validate(&self, cx: &Check) -> Result<SpecInfo> {
        let pb::GridJob {
            corners,
            size,
            save,
            preview_steps: _,
            out: _,
        } = self;
        if corners.len() != 4 {
            return Err(ServerError::invalid(
                "grid.corners",
                format!(
                    "exactly 4 latents (top-left, top-right, bottom-left, bottom-right), got {}",
                    corners.len()
                ),
            ));
        }
        let mut reads = vec![];
        for (i, c) in corners.iter().enumerate() {
            let r = usable_latent(cx.store, cx.meta, c, &format!("grid.corners[{i}]"))?;
            if !reads.contains(&r.id) {
                reads.push(r.id);
            }
        }
        if !(2..=MAX_GRID).contains(size) {
            return Err(ServerError::invalid(
                "grid.size",
                format!("N must be in 2..={MAX_GRID}, got {size}"),
            ));
        }
        let cells = size * size;
        for (i, c) in save.iter().enumerate() {
            if *c >= cells {
                return Err(ServerError::invalid(
                    format!("grid.save[{i}]"),
                    format!("cell {c} is not in 0..{cells} (row·N + column)"),
                ));
            }
            if save[..i].contains(c) {
                return Err(ServerError::invalid(
                    format!("grid.save[{i}]"),
                    format!("cell {c} is listed twice"),
                ));
            }
        }
        let out = output(self, cx.meta.t)?;
        Ok(SpecInfo {
            kind: JobKind::Grid,
            reads,
            total_steps: out.preview_steps as u32,
            batch: Some(batch_key(&out.preview_opts())),
            rows: cells,
            images: cells,
        })
    }

    fn rows(&self, w: &Worker) -> Result<Rows> {
        let mut c = vec![];
        for (i, id) in self.corners.iter().enumerate() {
            c.push(w.load_xt(&*w.latent(id, &format!("grid.corners[{i}]"))?)?);
        }
        let cells = edit::grid([&c[0], &c[1], &c[2], &c[3]], self.size as usize)?;
        let out = output(self, w.meta.t)?;
        Ok(Rows {
            opts: out.preview_opts(),
            seeds: (0..cells.len() as u64)
                .map(|i| SampleSeed::new(0, i))
                .collect(),
            x: Tensor::cat(&cells, 0),
        })
    }

    fn finish(&self, w: &Worker, rec: &JobRecord, rows: &Rows, x: &Tensor) -> Result<Outcome> {
        let out = output(self, w.meta.t)?;
        let mut parents = vec![];
        for (i, id) in self.corners.iter().enumerate() {
            parents.push(w.latent(id, &format!("grid.corners[{i}]"))?.id);
        }
        let n = self.size as usize;
        let mut o = Outcome::empty();
        for cell in 0..n * n {
            let img = image_pb(&x.get(cell as i64));
            let mut frame = pb::Frame {
                index: cell as u32,
                alpha: 0.0,
                image: Some(img.clone()),
                latent_id: String::new(),
            };
            if self.save.contains(&(cell as u32)) {
                let (r, c) = (cell / n, cell % n);
                let id = w.store.next_id()?;
                let l = Lineage {
                    op: "grid",
                    params: json!({"size": n, "row": r, "column": c,
                        "u": c as f64 / (n - 1) as f64, "v": r as f64 / (n - 1) as f64}),
                    parents: parents.clone(),
                    summary: format!(
                        "grid {n}×{n} cell ({r}, {c}) of {}",
                        parents
                            .iter()
                            .map(|p| latent_id(*p))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                };
                let name = if out.name.is_empty() {
                    format!("grid-{}-{r}-{c}", latent_id(parents[0]))
                } else {
                    format!("{}-{r}-{c}", out.name)
                };
                o.latents.push(NewLatent {
                    record: w.latent_record(
                        id,
                        rec.id,
                        name,
                        out.tags.clone(),
                        l.origin(),
                        Encoding::NONE,
                        out.preview_steps as u32,
                    ),
                    xt: xt_values(&rows.x.get(cell as i64)),
                    source_png: None,
                    preview_png: img.png,
                });
                frame.latent_id = latent_id(id);
                o.result.latent_ids.push(latent_id(id));
            }
            o.result.frames.push(frame);
        }
        Ok(o)
    }
}
