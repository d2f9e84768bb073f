//! `import`: x_T from .npy files made elsewhere, with a preview decode.
use ddim_proto::v1 as pb;
use tch::Tensor;

use super::{input_name, Check, JobKindSpec, Outcome, SpecInfo};
use crate::engine::{noise, sampler, SamplerOptions};
use crate::server::conversions::{
    check_name, check_tags, import_preview_steps, import_rows, latent_id, spacing_from_pb,
    MAX_ITEMS,
};
use crate::server::error::{Result, ServerError};
use crate::server::store::{JobKind, JobRecord, NewLatent, OriginRecord};
use crate::server::worker::{image_pb, Encoding, Track, Worker};

impl JobKindSpec for pb::ImportJob {
    fn kind(&self) -> JobKind {
        JobKind::Import
    }

    fn validate(&self, cx: &Check) -> Result<SpecInfo> {
        let pb::ImportJob {
            latents,
            preview_steps,
            spacing,
        } = self;
        if latents.is_empty() {
            return Err(ServerError::invalid(
                "import.latents",
                "at least one .npy is required",
            ));
        }
        let mut rows = 0usize;
        for (i, input) in latents.iter().enumerate() {
            let pb::ImportInput { npy, name, tags } = input;
            rows += import_rows(npy, cx.meta, &format!("import.latents[{i}].npy"))?.0;
            check_name(name, &format!("import.latents[{i}].name"))?;
            check_tags(tags, &format!("import.latents[{i}].tags"))?;
        }
        if rows > MAX_ITEMS {
            return Err(ServerError::invalid(
                "import.latents",
                format!("at most {MAX_ITEMS} latents in all, got {rows}"),
            ));
        }
        spacing_from_pb(*spacing, "import.spacing")?;
        let p = import_preview_steps(*preview_steps, cx.meta.t)?;
        Ok(SpecInfo {
            kind: JobKind::Import,
            reads: vec![],
            total_steps: p as u32,
            batch: None,
            rows: rows as u32,
            images: rows as u32,
        })
    }

    fn run(&self, w: &Worker, rec: &JobRecord, tr: &mut Track) -> Result<Outcome> {
        let preview_steps = import_preview_steps(self.preview_steps, w.meta.t)?;
        let opts = SamplerOptions {
            steps: preview_steps,
            eta: 0.0,
            spacing: spacing_from_pb(self.spacing, "import.spacing")?,
            sigma_hat: false,
            solver: Default::default(),
        };
        // (input index, row within it, rows in that input, x_T values).
        let mut rows = vec![];
        for (i, input) in self.latents.iter().enumerate() {
            let field = format!("import.latents[{i}].npy");
            let (n, values) = import_rows(&input.npy, &w.meta, &field)?;
            let per = values.len() / n;
            for (k, v) in values.chunks_exact(per).enumerate() {
                rows.push((i, k, n, v.to_vec()));
            }
        }
        let [c, h, wd] = w.meta.shape;
        let xt = Tensor::cat(
            &rows
                .iter()
                .map(|r| Tensor::from_slice(&r.3).reshape([1, c, h, wd]))
                .collect::<Vec<_>>(),
            0,
        )
        .to_device(w.model.device);
        let seeds = noise::seeds(0, rows.len());
        let dec = w.engine(tr, |cb| sampler::sample(&w.model, &xt, &opts, &seeds, cb))?;
        let mut out = Outcome::empty();
        for (j, (i, k, n, values)) in rows.into_iter().enumerate() {
            let input = &self.latents[i];
            let id = w.store.next_id()?;
            let base = input_name(&input.name, "imported", id);
            let name = if n > 1 { format!("{base}-{k}") } else { base };
            let preview = image_pb(&dec.get(j as i64));
            out.latents.push(NewLatent {
                record: w.latent_record(
                    id,
                    rec.id,
                    name,
                    input.tags.clone(),
                    OriginRecord::Imported {
                        filename: input.name.clone(),
                    },
                    Encoding::NONE,
                    preview_steps as u32,
                ),
                xt: values,
                source_png: None,
                preview_png: preview.png.clone(),
            });
            out.result.latent_ids.push(latent_id(id));
            out.result.images.push(preview);
        }
        Ok(out)
    }

    fn strip_inputs(&mut self) {
        for i in &mut self.latents {
            i.npy.clear();
        }
    }
}
