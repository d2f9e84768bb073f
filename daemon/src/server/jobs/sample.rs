//! `sample`: x_T from per-sample seeds, sampled batched; one latent per
//! sample.
use ddim_proto::v1 as pb;
use tch::Tensor;

use super::{Check, JobKindSpec, Outcome, Rows, SpecInfo};
use crate::engine::noise;
use crate::server::conversions::{
    batch_key, check_name, check_tags, job_id, latent_id, sampler_from_pb, MAX_ITEMS,
};
use crate::server::error::{Result, ServerError};
use crate::server::store::{JobKind, JobRecord, NewLatent, OriginRecord};
use crate::server::worker::{image_pb, xt_values, Encoding, Worker};

impl JobKindSpec for pb::SampleJob {
    fn kind(&self) -> JobKind {
        JobKind::Sample
    }

    fn validate(&self, cx: &Check) -> Result<SpecInfo> {
        let pb::SampleJob {
            count,
            seed: _,
            sampler,
            name_prefix,
            tags,
        } = self;
        if *count == 0 || *count as usize > MAX_ITEMS {
            return Err(ServerError::invalid(
                "sample.count",
                format!("must be in 1..={MAX_ITEMS}, got {count}"),
            ));
        }
        let o = sampler_from_pb(sampler.as_ref(), cx.meta.t, "sample.sampler")?;
        check_name(name_prefix, "sample.name_prefix")?;
        check_tags(tags, "sample.tags")?;
        Ok(SpecInfo {
            kind: JobKind::Sample,
            reads: vec![],
            total_steps: o.steps as u32,
            batch: Some(batch_key(&o)),
            rows: *count,
            images: *count,
        })
    }

    fn rows(&self, w: &Worker) -> Result<Rows> {
        let opts = sampler_from_pb(self.sampler.as_ref(), w.meta.t, "sample.sampler")?;
        let seeds = noise::seeds(self.seed, self.count as usize);
        Ok(Rows {
            opts,
            x: noise::initial_noise(&seeds, w.meta.shape, w.model.device),
            seeds,
        })
    }

    fn finish(&self, w: &Worker, rec: &JobRecord, rows: &Rows, x: &Tensor) -> Result<Outcome> {
        let mut out = Outcome::empty();
        for i in 0..self.count {
            let id = w.store.next_id()?;
            let img = image_pb(&x.get(i as i64));
            out.latents.push(NewLatent {
                record: w.latent_record(
                    id,
                    rec.id,
                    sample_name(&self.name_prefix, self.seed, i, rec.id),
                    self.tags.clone(),
                    OriginRecord::Sampled {
                        seed: self.seed,
                        index: i,
                    },
                    Encoding::NONE,
                    rows.opts.steps as u32,
                ),
                xt: xt_values(&rows.x.get(i as i64)),
                source_png: None,
                preview_png: img.png.clone(),
            });
            out.result.latent_ids.push(latent_id(id));
            out.result.images.push(img);
        }
        Ok(out)
    }
}

/// The name of sample `i`: `{prefix}{i}`, or `sample-{seed}-{i}-{job}` so
/// that two jobs with the same seed do not make latents of the same name.
pub fn sample_name(prefix: &str, seed: u64, i: u32, job: u64) -> String {
    if prefix.is_empty() {
        format!("sample-{seed}-{i}-{}", job_id(job))
    } else {
        format!("{prefix}{i}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names_carry_the_job_so_equal_seeds_do_not_collide() {
        assert_eq!(sample_name("", 0, 3, 7), "sample-0-3-job-7");
        assert_ne!(sample_name("", 0, 3, 7), sample_name("", 0, 3, 8));
        assert_eq!(sample_name("shoe-", 0, 3, 7), "shoe-3");
    }
}
