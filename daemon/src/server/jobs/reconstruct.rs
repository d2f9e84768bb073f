//! `reconstruct`: the paper's Table 2 on one image or a batch of encoded
//! latents' sources: encode and decode with each S (and the job's solver), MSE
//! per image.
use ddim_proto::v1 as pb;
use tch::Tensor;

use super::{Check, JobKindSpec, Outcome, SpecInfo};
use crate::engine::{imageio, sampler};
use crate::server::conversions::{
    check_image, check_step_list, reconstruct_steps, solver_from_pb, spacing_from_pb, with_source,
    MAX_ITEMS,
};
use crate::server::error::{Result, ServerError};
use crate::server::store::{JobKind, JobRecord, LatentPng};
use crate::server::worker::{image_pb, Track, Worker};

impl JobKindSpec for pb::ReconstructJob {
    fn kind(&self) -> JobKind {
        JobKind::Reconstruct
    }

    fn validate(&self, cx: &Check) -> Result<SpecInfo> {
        let pb::ReconstructJob {
            input,
            steps,
            spacing,
            solver,
        } = self;
        let mut reads = vec![];
        match input {
            Some(pb::reconstruct_job::Input::LatentId(id)) => {
                reads.push(with_source(cx.store, cx.meta, id, "reconstruct.latent_id")?);
            }
            Some(pb::reconstruct_job::Input::Image(bytes)) => {
                check_image(bytes, "reconstruct.image")?
            }
            Some(pb::reconstruct_job::Input::Latents(list)) => {
                if list.ids.is_empty() || list.ids.len() > MAX_ITEMS {
                    return Err(ServerError::invalid(
                        "reconstruct.latents.ids",
                        format!("1..={MAX_ITEMS} ids, got {}", list.ids.len()),
                    ));
                }
                let field = |i| format!("reconstruct.latents.ids[{i}]");
                for (i, id) in list.ids.iter().enumerate() {
                    if list.ids[..i].contains(id) {
                        let msg = format!("{id} is listed twice");
                        return Err(ServerError::invalid(field(i), msg));
                    }
                }
                for (i, id) in list.ids.iter().enumerate() {
                    reads.push(with_source(cx.store, cx.meta, id, &field(i))?);
                }
            }
            None => {
                return Err(ServerError::invalid(
                    "reconstruct.input",
                    "a latent_id, an image or latents is required",
                ))
            }
        }
        let list = if steps.is_empty() {
            reconstruct_steps(&[], cx.meta.t)
        } else {
            check_step_list(steps, cx.meta.t, "reconstruct.steps")?
        };
        spacing_from_pb(*spacing, "reconstruct.spacing")?;
        solver_from_pb(*solver, "reconstruct.solver")?;
        let rows = reads.len().max(1) as u32;
        Ok(SpecInfo {
            kind: JobKind::Reconstruct,
            reads,
            total_steps: 2 * list.iter().sum::<usize>() as u32,
            batch: None,
            rows,
            images: list.len() as u32,
        })
    }

    fn run(&self, w: &Worker, _rec: &JobRecord, tr: &mut Track) -> Result<Outcome> {
        use pb::reconstruct_job::Input;
        let shape = w.meta.shape;
        let source = |id: &str, field: &str| -> Result<Tensor> {
            let r = w.latent(id, field)?;
            let png = w
                .store
                .latent_png(r.id, LatentPng::Source)?
                .ok_or_else(|| {
                    ServerError::FailedPrecondition(format!(
                        "{field}: latent {id} has no source image"
                    ))
                })?;
            Ok(imageio::decode_to_tensor(&png, shape, "source image")?)
        };
        let x0 = match &self.input {
            Some(Input::LatentId(id)) => source(id, "reconstruct.latent_id")?,
            Some(Input::Image(b)) => imageio::decode_to_tensor(b, shape, "reconstruct.image")?,
            Some(Input::Latents(list)) => {
                let rows = list
                    .ids
                    .iter()
                    .enumerate()
                    .map(|(i, id)| source(id, &format!("reconstruct.latents.ids[{i}]")))
                    .collect::<Result<Vec<_>>>()?;
                if rows.is_empty() {
                    return Err(ServerError::invalid(
                        "reconstruct.latents.ids",
                        "at least one id is required",
                    ));
                }
                Tensor::cat(&rows, 0)
            }
            None => {
                return Err(ServerError::invalid(
                    "reconstruct.input",
                    "a latent_id, an image or latents is required",
                ))
            }
        };
        let spacing = spacing_from_pb(self.spacing, "reconstruct.spacing")?;
        let solver = solver_from_pb(self.solver, "reconstruct.solver")?;
        let mut out = Outcome::empty();
        out.result.original = Some(image_pb(&x0.get(0)));
        for s in reconstruct_steps(&self.steps, w.meta.t) {
            let (mse, rec_img) = w.engine(tr, |cb| {
                sampler::reconstruct_with(&w.model, &x0, s, spacing, solver, cb)
            })?;
            let e = ddim_proto::stats::error_stats(&mse);
            out.result.reconstruction.push(pb::ReconstructionPoint {
                steps: s as u32,
                mse: e.mean,
                image: Some(image_pb(&rec_img.get(0))),
                images: mse.len() as u32,
                mse_sem: e.sem,
                image_mse: mse,
            });
        }
        Ok(out)
    }

    fn strip_inputs(&mut self) {
        if let Some(pb::reconstruct_job::Input::Image(b)) = &mut self.input {
            b.clear();
        }
    }
}
