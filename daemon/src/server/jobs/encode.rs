//! `encode`: images → x_T along the η = 0 ODE (S steps, DDIM or
//! DPM-Solver++(2M)), then a preview decode with the same solver; one latent per
//! image, its source image kept.
use ddim_proto::v1 as pb;
use tch::Tensor;

use super::{input_name, Check, JobKindSpec, Outcome, SpecInfo};
use crate::engine::{imageio, noise, sampler, SamplerOptions};
use crate::server::conversions::{
    check_image, check_name, check_steps, check_tags, latent_id, solver_from_pb, spacing_from_pb,
    MAX_ITEMS,
};
use crate::server::error::{Result, ServerError};
use crate::server::store::{JobKind, JobRecord, NewLatent, OriginRecord};
use crate::server::worker::{image_pb, xt_values, Encoding, Track, Worker};

impl JobKindSpec for pb::EncodeJob {
    fn kind(&self) -> JobKind {
        JobKind::Encode
    }

    fn validate(&self, cx: &Check) -> Result<SpecInfo> {
        let t = cx.meta.t;
        let pb::EncodeJob {
            images,
            steps,
            spacing,
            preview_steps,
            solver,
        } = self;
        if images.is_empty() || images.len() > MAX_ITEMS {
            return Err(ServerError::invalid(
                "encode.images",
                format!("1..={MAX_ITEMS} images, got {}", images.len()),
            ));
        }
        let s = check_steps(*steps, t, "encode.steps")?;
        spacing_from_pb(*spacing, "encode.spacing")?;
        solver_from_pb(*solver, "encode.solver")?;
        let p = if *preview_steps == 0 {
            s
        } else {
            check_steps(*preview_steps, t, "encode.preview_steps")?
        };
        for (i, img) in images.iter().enumerate() {
            let pb::EncodeInput { data, name, tags } = img;
            check_image(data, &image_field(i, name))?;
            check_name(name, &format!("encode.images[{i}].name"))?;
            check_tags(tags, &format!("encode.images[{i}].tags"))?;
        }
        Ok(SpecInfo {
            kind: JobKind::Encode,
            reads: vec![],
            total_steps: (s + p) as u32,
            batch: None,
            rows: images.len() as u32,
            images: images.len() as u32,
        })
    }

    fn run(&self, w: &Worker, rec: &JobRecord, tr: &mut Track) -> Result<Outcome> {
        let m = &w.model;
        let steps = self.steps as usize;
        let spacing = spacing_from_pb(self.spacing, "encode.spacing")?;
        let solver = solver_from_pb(self.solver, "encode.solver")?;
        let preview_steps = if self.preview_steps == 0 {
            steps
        } else {
            self.preview_steps as usize
        };
        let rows = self
            .images
            .iter()
            .enumerate()
            .map(|(i, img)| {
                imageio::decode_to_tensor(&img.data, w.meta.shape, &image_field(i, &img.name))
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let x0 = Tensor::cat(&rows, 0);
        let xt = w.engine(tr, |cb| {
            sampler::invert_with(m, &x0, steps, spacing, solver, cb)
        })?;
        let opts = SamplerOptions {
            steps: preview_steps,
            eta: 0.0,
            spacing,
            sigma_hat: false,
            solver,
        };
        let seeds = noise::seeds(0, rows.len());
        let dec = w.engine(tr, |cb| sampler::sample(m, &xt, &opts, &seeds, cb))?;
        let mut out = Outcome::empty();
        for (i, input) in self.images.iter().enumerate() {
            let id = w.store.next_id()?;
            let preview = image_pb(&dec.get(i as i64));
            out.latents.push(NewLatent {
                record: w.latent_record(
                    id,
                    rec.id,
                    input_name(&input.name, "image", id),
                    input.tags.clone(),
                    OriginRecord::Encoded {
                        filename: input.name.clone(),
                        has_source: true,
                    },
                    Encoding::of(steps, spacing, solver),
                    preview_steps as u32,
                ),
                xt: xt_values(&xt.get(i as i64)),
                source_png: Some(imageio::tensor_png(&x0.get(i as i64), 1)),
                preview_png: preview.png.clone(),
            });
            out.result.latent_ids.push(latent_id(id));
            out.result.images.push(preview);
        }
        Ok(out)
    }

    fn strip_inputs(&mut self) {
        for i in &mut self.images {
            i.data.clear();
        }
    }
}

/// The field of image `i`, with its file name when the client sent one, so
/// that an error names the file the user gave.
fn image_field(i: usize, name: &str) -> String {
    super::lineage::named_field(&format!("encode.images[{i}].data"), name)
}
