//! JSON views of proto messages for `--json` output (image bytes are left out; their
//! sizes are kept).

use ddim_proto::v1 as pb;
use serde_json::{json, Value};

use crate::format;

pub fn latent(l: &pb::Latent) -> Value {
    json!({
        "id": l.id,
        "name": l.name,
        "tags": l.tags,
        "created_unix_ms": l.created_unix_ms,
        "shape": l.shape,
        "model_fingerprint": l.model_fingerprint,
        "encode_steps": l.encode_steps,
        "encode_spacing": (l.encode_steps > 0).then(|| format::spacing_name(l.encode_spacing)),
        "encode_solver": format::solver_name(l.encode_solver),
        "origin": format::origin_kind(l),
        "origin_detail": format::origin_detail(l),
        "preview_steps": l.preview_steps,
        "job_id": l.job_id,
        "lineage": lineage(l),
    })
}

/// An edited latent's lineage (operation, parameters, parents), null for other origins.
pub fn lineage(l: &pb::Latent) -> Value {
    match edited(l) {
        Some(e) => json!({
            "op": e.op,
            "params": params(e),
            "parent_ids": e.parent_ids,
            "deleted_parent_ids": e.deleted_parent_ids,
            "summary": e.summary,
        }),
        None => Value::Null,
    }
}

/// The lineage of a latent made by an edit.
pub fn edited(l: &pb::Latent) -> Option<&pb::EditedOrigin> {
    match l.origin.as_ref().and_then(|o| o.kind.as_ref()) {
        Some(pb::origin::Kind::Edited(e)) => Some(e),
        _ => None,
    }
}

/// An edit's parameters as JSON (the daemon's text when it does not parse).
pub fn params(e: &pb::EditedOrigin) -> Value {
    serde_json::from_str(&e.params_json).unwrap_or_else(|_| Value::String(e.params_json.clone()))
}

fn image(i: &Option<pb::Image>) -> Value {
    match i {
        Some(i) => json!({"width": i.width, "height": i.height, "png_bytes": i.png.len()}),
        None => Value::Null,
    }
}

pub fn result(r: &pb::JobResult) -> Value {
    json!({
        "latent_ids": r.latent_ids,
        "images": r.images.iter().map(|i| image(&Some(i.clone()))).collect::<Vec<_>>(),
        "decodes": r.decodes.iter().map(|d| json!({"steps": d.steps, "eta": d.eta, "image": image(&d.image)})).collect::<Vec<_>>(),
        "reconstruction": r.reconstruction.iter().map(|p| json!({"steps": p.steps, "mse": p.mse, "mse_sem": p.mse_sem, "images": p.images, "image_mse": p.image_mse, "image": image(&p.image)})).collect::<Vec<_>>(),
        "original": image(&r.original),
        "frames": r.frames.iter().map(|f| json!({"index": f.index, "alpha": f.alpha, "latent_id": f.latent_id, "image": image(&f.image)})).collect::<Vec<_>>(),
        "eval": r.eval.as_ref().map(eval),
    })
}

/// An eval result in `ddimd eval --json`'s shape (σ̂ cells have `"eta": null`; η ≠ 0
/// and σ̂ cells have `"vs_eta0": {"diff", "low", "high"}` when the job had the η = 0
/// cell of their S), with each cell's sample grid.
pub fn eval(e: &pb::EvalResult) -> Value {
    let floor = e.floor.unwrap_or_default();
    json!({
        "cells": e.cells.iter().map(|c| {
            let mut v = json!({
                "steps": c.steps,
                "eta": if c.sigma_hat { Value::Null } else { json!(c.eta) },
                "sigma_hat": c.sigma_hat,
                "spacing": format::spacing_name(c.spacing),
                "n": c.n, "fd": c.fd, "fd_low": c.fd_low, "fd_high": c.fd_high,
                "confidence": c.confidence, "class_histogram": c.class_histogram,
                "seconds": c.seconds, "grid": image(&c.grid),
            });
            if let Some(p) = &c.vs_eta0 {
                v["vs_eta0"] = json!({"diff": p.diff, "low": p.low, "high": p.high});
            }
            v
        }).collect::<Vec<_>>(),
        "floor": {"fd": floor.fd, "fd_low": floor.fd_low, "fd_high": floor.fd_high, "n": floor.n},
        "judge": {
            "fingerprint": e.judge_fingerprint, "test_accuracy": e.judge_accuracy,
            "classes": e.classes, "reference_images": e.reference_images, "bootstrap": e.bootstrap,
        },
    })
}

pub fn job(j: &pb::Job) -> Value {
    json!({
        "id": j.id,
        "kind": j.kind,
        "state": format::state_name(j.state),
        "created_unix_ms": j.created_unix_ms,
        "started_unix_ms": j.started_unix_ms,
        "finished_unix_ms": j.finished_unix_ms,
        "attempts": j.attempts,
        "ran_by": (!j.ran_by.is_empty()).then_some(&j.ran_by),
        "error": j.error,
        "step": j.step,
        "total_steps": j.total_steps,
        "latent_ids": j.latent_ids,
        "spec": j.spec.as_ref().map(spec),
        "result": j.result.as_ref().map(result),
    })
}

fn sampler(o: Option<pb::SamplerOptions>) -> Value {
    let o = o.unwrap_or_default();
    json!({
        "steps": o.steps,
        "eta": o.eta,
        "spacing": format::spacing_name(o.spacing),
        "sigma_hat": o.sigma_hat,
    })
}

/// What the job was asked to do (image bytes as their sizes).
pub fn spec(s: &pb::JobSpec) -> Value {
    use pb::job_spec::Kind;
    match &s.kind {
        Some(Kind::Encode(e)) => json!({
            "encode": {
                "images": e.images.iter().map(|i| json!({"name": i.name, "tags": i.tags, "bytes": i.data.len()})).collect::<Vec<_>>(),
                "steps": e.steps,
                "spacing": format::spacing_name(e.spacing),
                "preview_steps": e.preview_steps,
            }
        }),
        Some(Kind::Sample(x)) => json!({
            "sample": {"count": x.count, "seed": x.seed, "sampler": sampler(x.sampler)}
        }),
        Some(Kind::Decode(d)) => json!({
            "decode": {
                "latent_id": d.latent_id,
                "steps": d.steps,
                "eta": d.eta,
                "etas": d.etas,
                "seed": d.seed,
                "spacing": format::spacing_name(d.spacing),
            }
        }),
        Some(Kind::Reconstruct(r)) => {
            use pb::reconstruct_job::Input;
            let input = match &r.input {
                Some(Input::LatentId(id)) => json!({"latent_id": id}),
                Some(Input::Latents(l)) => json!({"latents": l.ids}),
                Some(Input::Image(b)) => json!({"image_bytes": b.len()}),
                None => Value::Null,
            };
            json!({
                "reconstruct": {
                    "input": input,
                    "steps": r.steps,
                    "spacing": format::spacing_name(r.spacing),
                }
            })
        }
        Some(Kind::Interpolate(i)) => json!({
            "interpolate": {
                "a": i.a,
                "b": i.b,
                "frames": i.frames,
                "method": format::method_name(i.method),
                "sampler": sampler(i.sampler),
                "save_frames": i.save_frames,
                "only_saved_frames": i.only_saved_frames,
            }
        }),
        Some(Kind::Import(im)) => json!({
            "import": {
                "latents": im.latents.iter().map(|i| json!({"name": i.name, "tags": i.tags, "bytes": i.npy.len()})).collect::<Vec<_>>(),
                "preview_steps": im.preview_steps,
                "spacing": format::spacing_name(im.spacing),
            }
        }),
        Some(Kind::Variation(v)) => json!({
            "variation": {
                "latent_id": v.latent_id, "strength": v.strength, "seed": v.seed,
                "count": v.count, "out": edit_out(&v.out),
            }
        }),
        Some(Kind::Mix(m)) => json!({
            "mix": {
                "terms": m.terms.iter().map(|t| json!({"latent_id": t.latent_id, "weight": t.weight})).collect::<Vec<_>>(),
                "expression": m.expression, "radius": radius_name(m.radius), "out": edit_out(&m.out),
            }
        }),
        Some(Kind::Direction(d)) => json!({
            "direction": {
                "latent_id": d.latent_id, "from_tag": d.from_tag, "to_tag": d.to_tag,
                "weights": d.weights, "radius": radius_name(d.radius), "out": edit_out(&d.out),
            }
        }),
        Some(Kind::Renoise(r)) => json!({
            "renoise": {
                "input": edit_input(r.input.as_ref().map(|i| match i {
                    pb::renoise_job::Input::LatentId(id) => Ok(id.as_str()),
                    pb::renoise_job::Input::Image(b) => Err(b.len()),
                }), &r.image_name),
                "strength": r.strength, "sampler": sampler(r.sampler), "seed": r.seed,
                "count": r.count, "perturb": r.perturb, "out": edit_out(&r.out),
            }
        }),
        Some(Kind::Inpaint(r)) => json!({
            "inpaint": {
                "input": edit_input(r.input.as_ref().map(|i| match i {
                    pb::inpaint_job::Input::LatentId(id) => Ok(id.as_str()),
                    pb::inpaint_job::Input::Image(b) => Err(b.len()),
                }), &r.image_name),
                "rects": r.rects.iter().map(|q| json!([q.x, q.y, q.width, q.height])).collect::<Vec<_>>(),
                "sampler": sampler(r.sampler), "seed": r.seed, "count": r.count,
                "out": edit_out(&r.out),
            }
        }),
        Some(Kind::Grid(g)) => json!({
            "grid": {
                "corners": g.corners, "size": g.size, "save": g.save,
                "preview_steps": g.preview_steps, "out": edit_out(&g.out),
            }
        }),
        Some(Kind::Eval(e)) => json!({
            "eval": {
                "steps": e.steps, "etas": e.etas, "sigma_hat": e.sigma_hat,
                "spacing": format::spacing_name(e.spacing), "samples": e.samples, "seed": e.seed,
            }
        }),
        Some(Kind::Reencode(r)) => json!({
            "reencode": {"latent_ids": r.latent_ids, "steps": r.steps, "out": edit_out(&r.out)}
        }),
        None => Value::Null,
    }
}

/// A mix's or direction's radius by name (unspecified: the daemon's default, parents).
fn radius_name(v: i32) -> &'static str {
    match pb::Radius::try_from(v) {
        Ok(pb::Radius::SqrtD) => "sqrt-d",
        Ok(pb::Radius::Parents | pb::Radius::Unspecified) => "parents",
        Err(_) => "unknown",
    }
}

fn edit_out(o: &Option<pb::EditOutput>) -> Value {
    let o = o.clone().unwrap_or_default();
    json!({
        "preview_steps": o.preview_steps,
        "spacing": format::spacing_name(o.spacing),
        "name": o.name,
        "tags": o.tags,
    })
}

/// An edit's input: a latent id, or an image (its byte count) with its file name.
fn edit_input(i: Option<Result<&str, usize>>, name: &str) -> Value {
    match i {
        Some(Ok(id)) => json!({"latent_id": id}),
        Some(Err(n)) => json!({"image_bytes": n, "image_name": name}),
        None => Value::Null,
    }
}
