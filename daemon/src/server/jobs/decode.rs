//! `decode`: one latent at one or more S and η. A single (S, η) runs batched
//! with other jobs; several run alone, one after another on the same noise.
use ddim_proto::v1 as pb;
use tch::Tensor;

use super::{Check, JobKindSpec, Outcome, Rows, SpecInfo};
use crate::engine::noise::SampleSeed;
use crate::engine::{sampler, SamplerOptions};
use crate::server::conversions::{
    batch_key, check_eta, check_solver_eta, check_step_list, solver_from_pb, spacing_from_pb,
    usable_latent, MAX_ETAS,
};
use crate::server::error::{Result, ServerError};
use crate::server::store::{JobKind, JobRecord};
use crate::server::worker::{image_pb, Track, Worker};

impl JobKindSpec for pb::DecodeJob {
    fn kind(&self) -> JobKind {
        JobKind::Decode
    }

    fn validate(&self, cx: &Check) -> Result<SpecInfo> {
        let pb::DecodeJob {
            latent_id,
            steps,
            eta,
            spacing,
            seed: _,
            etas,
            solver,
        } = self;
        let r = usable_latent(cx.store, cx.meta, latent_id, "decode.latent_id")?;
        let list = check_step_list(steps, cx.meta.t, "decode.steps")?;
        check_eta(*eta, "decode.eta")?;
        if etas.len() > MAX_ETAS {
            return Err(ServerError::invalid(
                "decode.etas",
                format!("at most {MAX_ETAS} values, got {}", etas.len()),
            ));
        }
        for (i, e) in etas.iter().enumerate() {
            let field = format!("decode.etas[{i}]");
            check_eta(*e, &field)?;
            if etas[..i].contains(e) {
                return Err(ServerError::invalid(
                    field,
                    format!("η {e} is listed twice"),
                ));
            }
        }
        let solver = solver_from_pb(*solver, "decode.solver")?;
        let eta_field = if etas.is_empty() {
            "decode.eta"
        } else {
            "decode.etas"
        };
        for e in self.eta_values() {
            check_solver_eta(solver, e as f64, eta_field, None)?;
        }
        let etas = self.eta_values();
        let spacing = spacing_from_pb(*spacing, "decode.spacing")?;
        let batch = (list.len() == 1 && etas.len() == 1).then(|| {
            batch_key(&SamplerOptions {
                steps: list[0],
                eta: etas[0] as f64,
                spacing,
                sigma_hat: false,
                solver,
            })
        });
        let n = etas.len() as u32;
        Ok(SpecInfo {
            kind: JobKind::Decode,
            reads: vec![r.id],
            total_steps: n * list.iter().sum::<usize>() as u32,
            batch,
            rows: 1,
            images: n * list.len() as u32,
        })
    }

    fn run(&self, w: &Worker, _rec: &JobRecord, tr: &mut Track) -> Result<Outcome> {
        let r = w.latent(&self.latent_id, "decode.latent_id")?;
        let x = w.load_xt(&r)?;
        let spacing = spacing_from_pb(self.spacing, "decode.spacing")?;
        let solver = solver_from_pb(self.solver, "decode.solver")?;
        let seeds = [SampleSeed::new(self.seed, 0)];
        let mut out = Outcome::empty();
        for eta in self.eta_values() {
            for &s in &self.steps {
                let opts = SamplerOptions {
                    steps: s as usize,
                    eta: eta as f64,
                    spacing,
                    sigma_hat: false,
                    solver,
                };
                let img = w.engine(tr, |cb| sampler::sample(&w.model, &x, &opts, &seeds, cb))?;
                out.result.decodes.push(pb::DecodeResult {
                    steps: s,
                    image: Some(image_pb(&img)),
                    eta,
                });
            }
        }
        Ok(out)
    }

    fn rows(&self, w: &Worker) -> Result<Rows> {
        let r = w.latent(&self.latent_id, "decode.latent_id")?;
        let spacing = spacing_from_pb(self.spacing, "decode.spacing")?;
        let steps = *self
            .steps
            .first()
            .ok_or_else(|| ServerError::invalid("decode.steps", "empty"))?
            as usize;
        let opts = SamplerOptions {
            steps,
            eta: self.eta_values()[0] as f64,
            spacing,
            sigma_hat: false,
            solver: solver_from_pb(self.solver, "decode.solver")?,
        };
        Ok(Rows {
            opts,
            x: w.load_xt(&r)?,
            seeds: vec![SampleSeed::new(self.seed, 0)],
        })
    }

    fn finish(&self, _w: &Worker, _rec: &JobRecord, rows: &Rows, x: &Tensor) -> Result<Outcome> {
        let mut out = Outcome::empty();
        out.result.decodes.push(pb::DecodeResult {
            steps: rows.opts.steps as u32,
            image: Some(image_pb(x)),
            eta: rows.opts.eta as f32,
        });
        Ok(out)
    }
}
