//! What every edit kind shares: its output settings ([`EditOut`]), the
//! lineage it records ([`Lineage`]), and committing new x_T rows with their
//! preview decodes as latents.
use ddim_proto::v1 as pb;
use serde_json::Value;
use tch::Tensor;

use super::Outcome;
use crate::engine::{noise, SamplerOptions, Spacing};
use crate::server::conversions::{check_name, check_steps, check_tags, latent_id, spacing_from_pb};
use crate::server::error::{Result, ServerError};
use crate::server::store::{JobRecord, NewLatent, OriginRecord};
use crate::server::worker::{image_pb, xt_values, Encoding, Worker};

/// S of an edit's stored preview when `EditOutput.preview_steps` is 0.
pub const DEFAULT_EDIT_PREVIEW_STEPS: u32 = 50;
/// Most results of one edit (variation count, weights, renoise count).
pub const MAX_EDIT_RESULTS: usize = 64;

/// Validated `EditOutput`.
pub struct EditOut {
    pub preview_steps: usize,
    pub spacing: Spacing,
    pub name: String,
    pub tags: Vec<String>,
}

impl EditOut {
    /// `field` names the message, e.g. `variation.out`.
    pub fn from_pb(o: Option<&pb::EditOutput>, t: usize, field: &str) -> Result<Self> {
        let pb::EditOutput {
            preview_steps,
            spacing,
            name,
            tags,
        } = o.cloned().unwrap_or_default();
        let p = if preview_steps == 0 {
            DEFAULT_EDIT_PREVIEW_STEPS.min(t as u32)
        } else {
            preview_steps
        };
        check_name(&name, &format!("{field}.name"))?;
        check_tags(&tags, &format!("{field}.tags"))?;
        Ok(EditOut {
            preview_steps: check_steps(p, t, &format!("{field}.preview_steps"))?,
            spacing: spacing_from_pb(spacing, &format!("{field}.spacing"))?,
            name,
            tags,
        })
    }

    /// The η = 0 preview decode.
    pub fn preview_opts(&self) -> SamplerOptions {
        SamplerOptions {
            steps: self.preview_steps,
            eta: 0.0,
            spacing: self.spacing,
            sigma_hat: false,
            solver: Default::default(),
        }
    }

    /// The name of result `i` of `n`: the given name (with `-i` when several),
    /// or `{op}-{base}-{i}`.
    pub fn name(&self, op: &str, base: &str, i: usize, n: usize) -> String {
        match (self.name.is_empty(), n) {
            (false, 1) => self.name.clone(),
            (false, _) => format!("{}-{i}", self.name),
            (true, _) => format!("{op}-{base}-{i}"),
        }
    }
}

/// The lineage of one result.
pub struct Lineage {
    pub op: &'static str,
    pub params: Value,
    pub parents: Vec<u64>,
    pub summary: String,
}

impl Lineage {
    pub fn origin(self) -> OriginRecord {
        OriginRecord::Edited {
            op: self.op.into(),
            params: self.params.to_string(),
            parents: self.parents,
            summary: self.summary,
        }
    }
}

/// Checks `v` is a finite number in [0, 1].
pub fn check_unit(v: f32, field: &str) -> Result<f64> {
    if !v.is_finite() || !(0.0..=1.0).contains(&v) {
        return Err(ServerError::invalid(
            field,
            format!("must be a number in [0, 1], got {v}"),
        ));
    }
    Ok(v as f64)
}

/// Checks a result count (0 is taken as 1).
/// The radius of a linear edit (`mix.radius`, `direction.radius`); unspecified is the
/// parents' radius.
pub fn radius_from_pb(v: i32, field: &str) -> Result<crate::engine::edit::Radius> {
    use crate::engine::edit::Radius;
    match pb::Radius::try_from(v) {
        Ok(pb::Radius::Unspecified | pb::Radius::Parents) => Ok(Radius::Parents),
        Ok(pb::Radius::SqrtD) => Ok(Radius::SqrtD),
        Err(_) => Err(ServerError::invalid(
            field,
            format!("unknown radius {v} (expected RADIUS_PARENTS or RADIUS_SQRT_D)"),
        )),
    }
}

pub fn check_count(count: u32, field: &str) -> Result<usize> {
    let n = count.max(1) as usize;
    if n > MAX_EDIT_RESULTS {
        return Err(ServerError::invalid(
            field,
            format!("at most {MAX_EDIT_RESULTS}, got {count}"),
        ));
    }
    Ok(n)
}

/// New latents from rows of x_T (`start`, [N, …]) and their decodes `x`:
/// `lineage(i)` gives row i's lineage and `name(i)` its name.
pub fn commit_rows(
    w: &Worker,
    rec: &JobRecord,
    out: &EditOut,
    start: &Tensor,
    x: &Tensor,
    mut lineage: impl FnMut(usize) -> (String, Lineage),
) -> Result<Outcome> {
    let mut o = Outcome::empty();
    for i in 0..start.size()[0] as usize {
        let id = w.store.next_id()?;
        let img = image_pb(&x.get(i as i64));
        let (name, l) = lineage(i);
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
            xt: xt_values(&start.get(i as i64)),
            source_png: None,
            preview_png: img.png.clone(),
        });
        o.result.latent_ids.push(latent_id(id));
        o.result.images.push(img);
    }
    Ok(o)
}

/// The image an image-space edit (renoise, inpaint) starts from.
pub struct SourceImage {
    /// [1, C, H, W] in model space.
    pub x0: Tensor,
    /// The latent it came from (its source image, or its preview when it has none).
    pub parent: Option<u64>,
    /// What names the results: the parent's id or the image's file stem.
    pub base: String,
}

/// Which stored image stands for a latent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageOf {
    /// The image it was encoded from (encoded and image-edited latents keep it).
    Source,
    /// Its stored preview decode (every other latent).
    Preview,
}

impl ImageOf {
    pub fn as_str(self) -> &'static str {
        match self {
            ImageOf::Source => "source",
            ImageOf::Preview => "preview",
        }
    }
}

/// The PNG that stands for latent record `rec` (`id` as the client gave it): its source
/// image when it keeps one, else its preview; `field` names it in the error.
pub fn latent_image(
    store: &crate::server::store::Store,
    rec: u64,
    id: &str,
    field: &str,
) -> Result<(Vec<u8>, ImageOf)> {
    use crate::server::store::LatentPng;
    if let Some(p) = store.latent_png(rec, LatentPng::Source)? {
        return Ok((p, ImageOf::Source));
    }
    let p = store.latent_png(rec, LatentPng::Preview)?.ok_or_else(|| {
        ServerError::FailedPrecondition(format!(
            "{field}: latent {id} has neither a source image nor a preview"
        ))
    })?;
    Ok((p, ImageOf::Preview))
}

/// The image of `latent_id` (source, else preview) or the sent `image` bytes.
pub fn source_image(
    w: &Worker,
    latent: Option<&str>,
    image: Option<&[u8]>,
    image_name: &str,
    op: &str,
) -> Result<SourceImage> {
    use crate::engine::imageio;
    let shape = w.meta.shape;
    match (latent, image) {
        (Some(id), _) => {
            let field = format!("{op}.latent_id");
            let r = w.latent(id, &field)?;
            let (png, _) = latent_image(&w.store, r.id, id, &field)?;
            Ok(SourceImage {
                x0: imageio::decode_to_tensor(&png, shape, &field)?.to_device(w.model.device),
                parent: Some(r.id),
                base: latent_id(r.id),
            })
        }
        (None, Some(bytes)) => {
            let field = image_field(op, image_name);
            let stem = std::path::Path::new(image_name)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "image".into());
            Ok(SourceImage {
                x0: imageio::decode_to_tensor(bytes, shape, &field)?.to_device(w.model.device),
                parent: None,
                base: stem,
            })
        }
        (None, None) => Err(ServerError::invalid(
            format!("{op}.input"),
            "a latent_id or an image is required",
        )),
    }
}

/// The field of an edit's image, with the file name when the client sent one.
pub fn image_field(op: &str, image_name: &str) -> String {
    named_field(&format!("{op}.image"), image_name)
}

/// A request field as errors name it, with the file name the client gave, if any
/// (`encode.images[2].data (boot.png)`).
pub fn named_field(field: &str, name: &str) -> String {
    if name.is_empty() {
        field.to_string()
    } else {
        format!("{field} ({name})")
    }
}

/// Validates an image-space edit's input: the latent (its id when usable) or
/// the image bytes.
pub fn check_source(
    cx: &super::Check,
    latent: Option<&str>,
    image: Option<&[u8]>,
    image_name: &str,
    op: &str,
) -> Result<Option<u64>> {
    use crate::server::conversions::{check_image, usable_latent};
    check_name(image_name, &format!("{op}.image_name"))?;
    match (latent, image) {
        (Some(id), _) => Ok(Some(
            usable_latent(cx.store, cx.meta, id, &format!("{op}.latent_id"))?.id,
        )),
        (None, Some(b)) => {
            check_image(b, &image_field(op, image_name))?;
            Ok(None)
        }
        (None, None) => Err(ServerError::invalid(
            format!("{op}.input"),
            "a latent_id or an image is required",
        )),
    }
}

/// Encodes edited images (η = 0, `enc` steps and spacing) into latents with
/// their previews; each keeps its edited image as its source, so it can be
/// reconstructed like an encoded image.
#[allow(clippy::too_many_arguments)]
pub fn encode_results(
    w: &Worker,
    tr: &mut crate::server::worker::Track,
    rec: &JobRecord,
    out: &EditOut,
    edited: &Tensor,
    enc: &SamplerOptions,
    mut lineage: impl FnMut(usize) -> (String, Lineage),
) -> Result<Outcome> {
    use crate::engine::{imageio, sampler};
    let x0 = edited.clamp(-1.0, 1.0);
    let xt = w.engine(tr, |cb| {
        sampler::invert(&w.model, &x0, enc.steps, enc.spacing, cb)
    })?;
    let n = xt.size()[0] as usize;
    let prev = out.preview_opts();
    let s = noise::seeds(0, n);
    let dec = w.engine(tr, |cb| sampler::sample(&w.model, &xt, &prev, &s, cb))?;
    let mut o = Outcome::empty();
    for i in 0..n {
        let id = w.store.next_id()?;
        let img = image_pb(&dec.get(i as i64));
        let (name, l) = lineage(i);
        o.latents.push(NewLatent {
            record: w.latent_record(
                id,
                rec.id,
                name,
                out.tags.clone(),
                l.origin(),
                Encoding::of(enc.steps, enc.spacing, crate::engine::Solver::Ddim),
                out.preview_steps as u32,
            ),
            xt: xt_values(&xt.get(i as i64)),
            source_png: Some(imageio::tensor_png(&x0.get(i as i64), 1)),
            preview_png: img.png.clone(),
        });
        o.result.latent_ids.push(latent_id(id));
        o.result.images.push(img);
    }
    Ok(o)
}
