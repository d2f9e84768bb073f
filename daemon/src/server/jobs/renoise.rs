//! `renoise`: DDIM's SDEdit. Invert the image with η = 0 up to step
//! k = ⌈s·S⌉ of an S-step plan, optionally perturb x_{τ_k}, sample back to 0
//! with η and the seed; the edited image is encoded (η = 0, S steps) into a
//! latent. "Keep the shape, redraw the texture."
use ddim_proto::v1 as pb;
use serde_json::json;
use tch::Tensor;

use super::lineage::{
    check_count, check_source, check_unit, encode_results, source_image, EditOut, Lineage,
};
use super::{Check, JobKindSpec, Outcome, SpecInfo};
use crate::engine::edit;
use crate::server::conversions::{edit_sampler_from_pb, latent_id};
use crate::server::error::Result;
use crate::server::store::{JobKind, JobRecord};
use crate::server::worker::{Track, Worker};

fn input(j: &pb::RenoiseJob) -> (Option<&str>, Option<&[u8]>) {
    match &j.input {
        Some(pb::renoise_job::Input::LatentId(id)) => (Some(id.as_str()), None),
        Some(pb::renoise_job::Input::Image(b)) => (None, Some(b.as_slice())),
        None => (None, None),
    }
}

/// The edited images at S = `steps` (the plan's S unless a preview).
fn edit(
    j: &pb::RenoiseJob,
    w: &Worker,
    steps: Option<usize>,
    cb: &mut dyn FnMut(&crate::engine::StepEvent) -> bool,
) -> Result<(Tensor, Option<u64>, String)> {
    let (lat, img) = input(j);
    let src = source_image(w, lat, img, &j.image_name, "renoise")?;
    let mut opts = edit_sampler_from_pb(j.sampler.as_ref(), w.meta.t, "renoise.sampler")?;
    if let Some(s) = steps {
        opts.steps = s;
    }
    let n = check_count(j.count, "renoise.count")?;
    let x = edit::renoise(
        &w.model,
        &src.x0,
        j.strength as f64,
        &opts,
        &crate::engine::noise::seeds(j.seed, n),
        j.perturb as f64,
        cb,
    )?;
    Ok((x, src.parent, src.base))
}

impl JobKindSpec for pb::RenoiseJob {
    fn kind(&self) -> JobKind {
        JobKind::Renoise
    }

    fn is_edit(&self) -> bool {
        true
    }

    fn validate(&self, cx: &Check) -> Result<SpecInfo> {
        let (lat, img) = input(self);
        let parent = check_source(cx, lat, img, &self.image_name, "renoise")?;
        let s = check_unit(self.strength, "renoise.strength")?;
        check_unit(self.perturb, "renoise.perturb")?;
        let opts = edit_sampler_from_pb(self.sampler.as_ref(), cx.meta.t, "renoise.sampler")?;
        let n = check_count(self.count, "renoise.count")? as u32;
        let out = EditOut::from_pb(self.out.as_ref(), cx.meta.t, "renoise.out")?;
        let k = edit::renoise_steps(s, opts.steps);
        Ok(SpecInfo {
            kind: JobKind::Renoise,
            reads: parent.into_iter().collect(),
            total_steps: (2 * k + opts.steps + out.preview_steps) as u32,
            batch: None,
            rows: n,
            images: n,
        })
    }

    fn run(&self, w: &Worker, rec: &JobRecord, tr: &mut Track) -> Result<Outcome> {
        let (x, parent, base) = w.engine(tr, |cb| edit(self, w, None, cb))?;
        let opts = edit_sampler_from_pb(self.sampler.as_ref(), w.meta.t, "renoise.sampler")?;
        let out = EditOut::from_pb(self.out.as_ref(), w.meta.t, "renoise.out")?;
        let n = x.size()[0] as usize;
        encode_results(w, tr, rec, &out, &x, &opts, |i| {
            let what = parent
                .map(latent_id)
                .unwrap_or_else(|| self.image_name.clone());
            (
                out.name("renoise", &base, i, n),
                Lineage {
                    op: "renoise",
                    params: json!({
                        "strength": self.strength, "steps": opts.steps, "eta": opts.eta,
                        "spacing": opts.spacing.as_str(), "seed": self.seed, "index": i,
                        "perturb": self.perturb, "image_name": self.image_name,
                    }),
                    parents: parent.into_iter().collect(),
                    summary: format!(
                        "renoise of {what}, strength {}, η {}, S {}, seed {} #{i}",
                        self.strength, opts.eta, opts.steps, self.seed
                    ),
                },
            )
        })
    }

    fn preview(&self, w: &Worker, steps: usize) -> Result<Vec<Tensor>> {
        let (x, _, _) = edit(self, w, Some(steps), &mut |_| true)?;
        Ok((0..x.size()[0]).map(|i| x.get(i)).collect())
    }

    fn strip_inputs(&mut self) {
        if let Some(pb::renoise_job::Input::Image(b)) = &mut self.input {
            b.clear();
        }
    }
}
