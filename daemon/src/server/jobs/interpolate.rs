//! `interpolate`: frames between two latents (slerp or lerp), decoded
//! batched; the frames asked for are saved as latents.
use ddim_proto::v1 as pb;
use tch::Tensor;

use super::{Check, JobKindSpec, Outcome, Rows, SpecInfo};
use crate::engine::{interp, noise};
use crate::server::conversions::{
    batch_key, latent_id, method_from_pb, parse_latent_id, sampler_from_pb, usable_latent,
    MAX_FRAMES,
};
use crate::server::error::{Result, ServerError};
use crate::server::store::{JobKind, JobRecord, NewLatent, OriginRecord};
use crate::server::worker::{image_pb, xt_values, Encoding, Worker};

impl JobKindSpec for pb::InterpolateJob {
    fn kind(&self) -> JobKind {
        JobKind::Interpolate
    }

    fn validate(&self, cx: &Check) -> Result<SpecInfo> {
        let pb::InterpolateJob {
            a,
            b,
            frames,
            method,
            sampler,
            save_frames,
            only_saved_frames,
        } = self;
        let ra = usable_latent(cx.store, cx.meta, a, "interpolate.a")?;
        let rb = usable_latent(cx.store, cx.meta, b, "interpolate.b")?;
        if !(2..=MAX_FRAMES).contains(frames) {
            return Err(ServerError::invalid(
                "interpolate.frames",
                format!("must be in 2..={MAX_FRAMES}, got {frames}"),
            ));
        }
        method_from_pb(*method, "interpolate.method")?;
        let o = sampler_from_pb(sampler.as_ref(), cx.meta.t, "interpolate.sampler")?;
        for (i, f) in save_frames.iter().enumerate() {
            if f >= frames {
                return Err(ServerError::invalid(
                    format!("interpolate.save_frames[{i}]"),
                    format!("frame {f} is not in 0..{frames}"),
                ));
            }
            if save_frames[..i].contains(f) {
                return Err(ServerError::invalid(
                    format!("interpolate.save_frames[{i}]"),
                    format!("frame {f} is listed twice"),
                ));
            }
        }
        if *only_saved_frames && save_frames.is_empty() {
            return Err(ServerError::invalid(
                "interpolate.save_frames",
                "only_saved_frames needs at least one frame to save",
            ));
        }
        let rows = if *only_saved_frames {
            save_frames.len() as u32
        } else {
            *frames
        };
        let mut reads = vec![ra.id];
        if rb.id != ra.id {
            reads.push(rb.id);
        }
        Ok(SpecInfo {
            kind: JobKind::Interpolate,
            reads,
            total_steps: o.steps as u32,
            batch: Some(batch_key(&o)),
            rows,
            images: rows,
        })
    }

    fn rows(&self, w: &Worker) -> Result<Rows> {
        let a = w.load_xt(&*w.latent(&self.a, "interpolate.a")?)?;
        let b = w.load_xt(&*w.latent(&self.b, "interpolate.b")?)?;
        let method = method_from_pb(self.method, "interpolate.method")?;
        let opts = sampler_from_pb(self.sampler.as_ref(), w.meta.t, "interpolate.sampler")?;
        let rows: Vec<Tensor> = frame_list(self)
            .into_iter()
            .map(|(_, al)| interp::interpolate(&a, &b, al, method))
            .collect();
        let seeds = noise::seeds(0, rows.len());
        Ok(Rows {
            opts,
            x: Tensor::cat(&rows, 0),
            seeds,
        })
    }

    fn finish(&self, w: &Worker, rec: &JobRecord, rows: &Rows, x: &Tensor) -> Result<Outcome> {
        let mut out = Outcome::empty();
        let (a, b) = (
            parse_latent_id(&self.a, "a")?,
            parse_latent_id(&self.b, "b")?,
        );
        let method = method_from_pb(self.method, "interpolate.method")?;
        for (row, (k, alpha)) in frame_list(self).into_iter().enumerate() {
            let img = image_pb(&x.get(row as i64));
            let mut frame = pb::Frame {
                index: k as u32,
                alpha: alpha as f32,
                image: Some(img.clone()),
                latent_id: String::new(),
            };
            if self.save_frames.contains(&(k as u32)) {
                let id = w.store.next_id()?;
                let origin = OriginRecord::Interpolated {
                    a,
                    b,
                    alpha: alpha as f32,
                    method: method.as_str().into(),
                };
                out.latents.push(NewLatent {
                    record: w.latent_record(
                        id,
                        rec.id,
                        format!("interp-{a}-{b}-{k}"),
                        vec![],
                        origin,
                        Encoding::NONE,
                        rows.opts.steps as u32,
                    ),
                    xt: xt_values(&rows.x.get(row as i64)),
                    source_png: None,
                    preview_png: img.png,
                });
                frame.latent_id = latent_id(id);
                out.result.latent_ids.push(latent_id(id));
            }
            out.result.frames.push(frame);
        }
        Ok(out)
    }
}

/// The frames an interpolation decodes, as (index, α): all of them, or only the
/// ones to save when `only_saved_frames` is set.
fn frame_list(ip: &pb::InterpolateJob) -> Vec<(usize, f64)> {
    interp::alphas(ip.frames as usize)
        .into_iter()
        .enumerate()
        .filter(|(k, _)| !ip.only_saved_frames || ip.save_frames.contains(&(*k as u32)))
        .collect()
}
