//! `inpaint`: redraw inside rectangles, keep the rest. At every reverse step
//! the kept region is replaced by the original's own x_t (η = 0: its
//! trajectory; η > 0: a q(x_t | x0) sample); the result is encoded (η = 0,
//! S steps) into a latent. A library latent is edited from its own x_T (its
//! decode is the kept image, no inversion needed).
use ddim_proto::v1 as pb;
use serde_json::json;
use tch::Tensor;

use super::lineage::{check_count, check_source, encode_results, source_image, EditOut, Lineage};
use super::{Check, JobKindSpec, Outcome, SpecInfo};
use crate::engine::edit::{self, Rect};
use crate::server::conversions::{edit_sampler_from_pb, latent_id};
use crate::server::error::{Result, ServerError};
use crate::server::store::{JobKind, JobRecord};
use crate::server::worker::{Track, Worker};

/// Most rectangles of one edit.
pub const MAX_RECTS: usize = 16;

fn input(j: &pb::InpaintJob) -> (Option<&str>, Option<&[u8]>) {
    match &j.input {
        Some(pb::inpaint_job::Input::LatentId(id)) => (Some(id.as_str()), None),
        Some(pb::inpaint_job::Input::Image(b)) => (None, Some(b.as_slice())),
        None => (None, None),
    }
}

fn rects(j: &pb::InpaintJob) -> Vec<Rect> {
    j.rects
        .iter()
        .map(|r| Rect {
            x: r.x as i64,
            y: r.y as i64,
            w: r.width as i64,
            h: r.height as i64,
        })
        .collect()
}

/// The keep mask, INVALID_ARGUMENT naming `inpaint.rects[i]`.
fn mask(j: &pb::InpaintJob, shape: [i64; 3]) -> Result<Tensor> {
    if j.rects.is_empty() || j.rects.len() > MAX_RECTS {
        return Err(ServerError::invalid(
            "inpaint.rects",
            format!("1..={MAX_RECTS} rectangles, got {}", j.rects.len()),
        ));
    }
    edit::rect_mask(shape, &rects(j)).map_err(|e| {
        let msg = e.to_string();
        let field = msg
            .strip_prefix("rects[")
            .and_then(|r| r.split(']').next())
            .map(|i| format!("inpaint.rects[{i}]"))
            .unwrap_or_else(|| "inpaint.rects".into());
        ServerError::invalid(field, msg)
    })
}

/// Model calls of the edit itself at S.
fn edit_calls(j: &pb::InpaintJob, s: usize, eta_stochastic: bool) -> usize {
    match (input(j), eta_stochastic) {
        ((Some(_), _), _) => 2 * s,
        (_, true) => s,
        (_, false) => 3 * s,
    }
}

fn edit(
    j: &pb::InpaintJob,
    w: &Worker,
    steps: Option<usize>,
    cb: &mut dyn FnMut(&crate::engine::StepEvent) -> bool,
) -> Result<(Tensor, Option<u64>, String)> {
    let keep = mask(j, w.meta.shape)?.to_device(w.model.device);
    let mut opts = edit_sampler_from_pb(j.sampler.as_ref(), w.meta.t, "inpaint.sampler")?;
    if let Some(s) = steps {
        opts.steps = s;
    }
    let n = check_count(j.count, "inpaint.count")?;
    let sd = crate::engine::noise::seeds(j.seed, n);
    match input(j) {
        (Some(id), _) => {
            let r = w.latent(id, "inpaint.latent_id")?;
            let xt = w.load_xt(&r)?;
            let x = edit::inpaint_latent(&w.model, &xt, &keep, &opts, &sd, cb)?;
            Ok((x, Some(r.id), latent_id(r.id)))
        }
        (None, img) => {
            let src = source_image(w, None, img, &j.image_name, "inpaint")?;
            let x = edit::inpaint(&w.model, &src.x0, &keep, &opts, &sd, cb)?;
            Ok((x, None, src.base))
        }
    }
}

impl JobKindSpec for pb::InpaintJob {
    fn kind(&self) -> JobKind {
        JobKind::Inpaint
    }

    fn is_edit(&self) -> bool {
        true
    }

    fn validate(&self, cx: &Check) -> Result<SpecInfo> {
        let (lat, img) = input(self);
        let parent = check_source(cx, lat, img, &self.image_name, "inpaint")?;
        let _keep = mask(self, cx.meta.shape)?;
        let opts = edit_sampler_from_pb(self.sampler.as_ref(), cx.meta.t, "inpaint.sampler")?;
        let n = check_count(self.count, "inpaint.count")? as u32;
        let out = EditOut::from_pb(self.out.as_ref(), cx.meta.t, "inpaint.out")?;
        let calls = edit_calls(self, opts.steps, opts.stochastic());
        Ok(SpecInfo {
            kind: JobKind::Inpaint,
            reads: parent.into_iter().collect(),
            total_steps: (calls + opts.steps + out.preview_steps) as u32,
            batch: None,
            rows: n,
            images: n,
        })
    }

    fn run(&self, w: &Worker, rec: &JobRecord, tr: &mut Track) -> Result<Outcome> {
        let (x, parent, base) = w.engine(tr, |cb| edit(self, w, None, cb))?;
        let opts = edit_sampler_from_pb(self.sampler.as_ref(), w.meta.t, "inpaint.sampler")?;
        let out = EditOut::from_pb(self.out.as_ref(), w.meta.t, "inpaint.out")?;
        let n = x.size()[0] as usize;
        let rects: Vec<[u32; 4]> = self
            .rects
            .iter()
            .map(|r| [r.x, r.y, r.width, r.height])
            .collect();
        encode_results(w, tr, rec, &out, &x, &opts, |i| {
            let what = parent
                .map(latent_id)
                .unwrap_or_else(|| self.image_name.clone());
            (
                out.name("inpaint", &base, i, n),
                Lineage {
                    op: "inpaint",
                    params: json!({
                        "rects": rects, "steps": opts.steps, "eta": opts.eta,
                        "spacing": opts.spacing.as_str(), "seed": self.seed, "index": i,
                        "image_name": self.image_name,
                    }),
                    parents: parent.into_iter().collect(),
                    summary: format!(
                        "inpaint of {what}, {} rect{}, η {}, S {}, seed {} #{i}",
                        rects.len(),
                        if rects.len() == 1 { "" } else { "s" },
                        opts.eta,
                        opts.steps,
                        self.seed
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
        if let Some(pb::inpaint_job::Input::Image(b)) = &mut self.input {
            b.clear();
        }
    }
}
