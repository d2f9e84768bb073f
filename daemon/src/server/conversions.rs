//! proto ⇄ domain: request validation and record → message conversion.
//!
//! Request messages are destructured field by field, so a field added to the
//! proto breaks the build here until it is handled.
use ddim_proto::v1 as pb;
use std::sync::Arc;

use super::error::{Result, ServerError};
use super::store::{
    BatchKey, JobRecord, JobState, LatentOrder, LatentRecord, OriginRecord, Priority, Store,
};
use crate::engine::interp::Method;
use crate::engine::{SamplerOptions, Solver, Spacing};

/// Most images in one encode job, samples in one sample job.
pub const MAX_ITEMS: usize = 256;
/// Most S values in one decode or reconstruct job.
pub const MAX_STEP_LIST: usize = 16;
/// Interpolation frames.
pub const MAX_FRAMES: u32 = 64;
pub const DEFAULT_RECONSTRUCT_STEPS: [u32; 4] = [10, 20, 50, 100];

/// What the service needs to know about the loaded model.
#[derive(Debug, Clone)]
pub struct ModelMeta {
    pub shape: [i64; 3],
    pub t: usize,
    pub fingerprint: String,
    pub info: pb::ModelInfo,
}

// ------------------------------------------------------------------ ids --

pub fn latent_id(id: u64) -> String {
    format!("lat-{id}")
}

pub fn job_id(id: u64) -> String {
    format!("job-{id}")
}

fn parse_id(s: &str, prefix: &str, field: &str, what: &'static str) -> Result<u64> {
    if s.is_empty() {
        return Err(ServerError::invalid(
            field,
            format!("a {what} id is required"),
        ));
    }
    s.strip_prefix(prefix)
        .and_then(|n| n.parse::<u64>().ok())
        .ok_or_else(|| ServerError::not_found(field, what, s))
}

pub fn parse_latent_id(s: &str, field: &str) -> Result<u64> {
    parse_id(s, "lat-", field, "latent")
}

pub fn parse_job_id(s: &str, field: &str) -> Result<u64> {
    parse_id(s, "job-", field, "job")
}

// ---------------------------------------------------------------- enums --

pub fn spacing_from_pb(v: i32, field: &str) -> Result<Spacing> {
    match pb::Spacing::try_from(v) {
        Ok(pb::Spacing::Unspecified | pb::Spacing::Uniform) => Ok(Spacing::Uniform),
        Ok(pb::Spacing::Quad) => Ok(Spacing::Quad),
        Ok(pb::Spacing::Leading) => Ok(Spacing::Leading),
        Ok(pb::Spacing::Trailing) => Ok(Spacing::Trailing),
        Ok(pb::Spacing::Linspace) => Ok(Spacing::Linspace),
        Err(_) => Err(ServerError::invalid(field, format!("unknown spacing {v}"))),
    }
}

pub fn solver_from_pb(v: i32, field: &str) -> Result<Solver> {
    match pb::Solver::try_from(v) {
        Ok(pb::Solver::Unspecified | pb::Solver::Ddim) => Ok(Solver::Ddim),
        Ok(pb::Solver::Dpmpp2m) => Ok(Solver::DpmPP2M),
        Err(_) => Err(ServerError::invalid(
            field,
            format!("unknown solver {v} (expected SOLVER_DDIM or SOLVER_DPMPP_2M)"),
        )),
    }
}

pub fn solver_to_pb(s: Solver) -> pb::Solver {
    match s {
        Solver::Ddim => pb::Solver::Ddim,
        Solver::DpmPP2M => pb::Solver::Dpmpp2m,
    }
}

/// DPM-Solver++(2M) is deterministic: with it, η (`eta_field`) must be 0 and
/// σ̂ (`sigma_hat_field`, when the message has one) off.
pub fn check_solver_eta(
    solver: Solver,
    eta: f64,
    eta_field: &str,
    sigma_hat: Option<(bool, &str)>,
) -> Result<()> {
    if solver != Solver::DpmPP2M {
        return Ok(());
    }
    if eta != 0.0 {
        return Err(ServerError::invalid(
            eta_field,
            format!("must be 0 with solver dpmpp-2m (it is deterministic), got {eta}"),
        ));
    }
    if let Some((true, field)) = sigma_hat {
        return Err(ServerError::invalid(
            field,
            "σ̂ cannot be used with solver dpmpp-2m (it is deterministic)",
        ));
    }
    Ok(())
}

pub fn spacing_to_pb(s: Spacing) -> pb::Spacing {
    match s {
        Spacing::Uniform => pb::Spacing::Uniform,
        Spacing::Quad => pb::Spacing::Quad,
        Spacing::Leading => pb::Spacing::Leading,
        Spacing::Trailing => pb::Spacing::Trailing,
        Spacing::Linspace => pb::Spacing::Linspace,
    }
}

pub fn method_from_pb(v: i32, field: &str) -> Result<Method> {
    match pb::InterpolationMethod::try_from(v) {
        Ok(pb::InterpolationMethod::Unspecified | pb::InterpolationMethod::Slerp) => {
            Ok(Method::Slerp)
        }
        Ok(pb::InterpolationMethod::Lerp) => Ok(Method::Lerp),
        Err(_) => Err(ServerError::invalid(
            field,
            format!("unknown interpolation method {v}"),
        )),
    }
}

pub fn method_to_pb(m: &str) -> pb::InterpolationMethod {
    match m {
        "lerp" => pb::InterpolationMethod::Lerp,
        _ => pb::InterpolationMethod::Slerp,
    }
}

pub fn priority_from_pb(v: i32) -> Result<Priority> {
    match pb::Priority::try_from(v) {
        Ok(pb::Priority::Unspecified | pb::Priority::Interactive) => Ok(Priority::Interactive),
        Ok(pb::Priority::Batch) => Ok(Priority::Batch),
        Err(_) => Err(ServerError::invalid(
            "priority",
            format!("unknown priority {v}"),
        )),
    }
}

/// `ListLatentsRequest.order_by`.
pub fn order_from_pb(v: i32) -> Result<LatentOrder> {
    match pb::SortOrder::try_from(v) {
        Ok(pb::SortOrder::Unspecified | pb::SortOrder::Newest) => Ok(LatentOrder::Newest),
        Ok(pb::SortOrder::Oldest) => Ok(LatentOrder::Oldest),
        Ok(pb::SortOrder::Name) => Ok(LatentOrder::Name),
        Ok(pb::SortOrder::EncodeSteps) => Ok(LatentOrder::EncodeSteps),
        Err(_) => Err(ServerError::invalid(
            "order_by",
            format!("unknown sort order {v} (expected 0..=4: newest, oldest, name, encode steps)"),
        )),
    }
}

pub fn state_from_pb(v: i32, field: &str) -> Result<JobState> {
    match pb::JobState::try_from(v) {
        Ok(pb::JobState::Queued) => Ok(JobState::Queued),
        Ok(pb::JobState::Running) => Ok(JobState::Running),
        Ok(pb::JobState::Done) => Ok(JobState::Done),
        Ok(pb::JobState::Failed) => Ok(JobState::Failed),
        Ok(pb::JobState::Cancelled) => Ok(JobState::Cancelled),
        Ok(pb::JobState::Unspecified) | Err(_) => Err(ServerError::invalid(
            field,
            format!("unknown job state {v}"),
        )),
    }
}

pub fn state_to_pb(s: JobState) -> pb::JobState {
    match s {
        JobState::Queued => pb::JobState::Queued,
        JobState::Running => pb::JobState::Running,
        JobState::Done => pb::JobState::Done,
        JobState::Failed => pb::JobState::Failed,
        JobState::Cancelled => pb::JobState::Cancelled,
    }
}

// ------------------------------------------------------------- sampling --

pub fn check_steps(steps: u32, t: usize, field: &str) -> Result<usize> {
    if steps == 0 || steps as usize > t {
        return Err(ServerError::invalid(
            field,
            format!("S must be in 1..={t}, got {steps}"),
        ));
    }
    Ok(steps as usize)
}

/// At most this many η values in one decode job.
pub const MAX_ETAS: usize = 8;

pub fn check_eta(eta: f32, field: &str) -> Result<f64> {
    if !eta.is_finite() || eta < 0.0 {
        return Err(ServerError::invalid(
            field,
            format!("η must be a finite number ≥ 0, got {eta}"),
        ));
    }
    Ok(eta as f64)
}

/// Validated sampler options (`field` names the message, e.g. `sample.sampler`).
pub fn sampler_from_pb(
    o: Option<&pb::SamplerOptions>,
    t: usize,
    field: &str,
) -> Result<SamplerOptions> {
    let o = o.ok_or_else(|| {
        ServerError::invalid(field, "sampler options are required (at least steps)")
    })?;
    let pb::SamplerOptions {
        steps,
        eta,
        spacing,
        sigma_hat,
        solver,
    } = *o;
    let opts = SamplerOptions {
        steps: check_steps(steps, t, &format!("{field}.steps"))?,
        eta: check_eta(eta, &format!("{field}.eta"))?,
        spacing: spacing_from_pb(spacing, &format!("{field}.spacing"))?,
        sigma_hat,
        solver: solver_from_pb(solver, &format!("{field}.solver"))?,
    };
    check_solver_eta(
        opts.solver,
        opts.eta,
        &format!("{field}.eta"),
        Some((opts.sigma_hat, &format!("{field}.sigma_hat"))),
    )?;
    Ok(opts)
}

/// [`sampler_from_pb`] for the edits that re-encode and step region by region
/// (renoise, inpaint): they run DDIM only, and name `{field}.solver` otherwise.
pub fn edit_sampler_from_pb(
    o: Option<&pb::SamplerOptions>,
    t: usize,
    field: &str,
) -> Result<SamplerOptions> {
    let opts = sampler_from_pb(o, t, field)?;
    if opts.solver != Solver::Ddim {
        return Err(ServerError::invalid(
            format!("{field}.solver"),
            format!(
                "edits run DDIM only (their partial inversion and per-step region \
                 replacement are DDIM's); got {}",
                opts.solver
            ),
        ));
    }
    Ok(opts)
}

pub fn batch_key(o: &SamplerOptions) -> BatchKey {
    BatchKey {
        steps: o.steps as u32,
        eta_bits: (o.eta as f32).to_bits(),
        spacing: Spacing::ALL
            .iter()
            .position(|s| *s == o.spacing)
            .unwrap_or(0) as u8,
        sigma_hat: o.sigma_hat,
        solver: Solver::ALL.iter().position(|s| *s == o.solver).unwrap_or(0) as u8,
    }
}

pub fn check_step_list(list: &[u32], t: usize, field: &str) -> Result<Vec<usize>> {
    if list.is_empty() {
        return Err(ServerError::invalid(field, "at least one S is required"));
    }
    if list.len() > MAX_STEP_LIST {
        return Err(ServerError::invalid(
            field,
            format!("at most {MAX_STEP_LIST} values, got {}", list.len()),
        ));
    }
    list.iter()
        .enumerate()
        .map(|(i, s)| {
            let f = format!("{field}[{i}]");
            if list[..i].contains(s) {
                return Err(ServerError::invalid(f, format!("S {s} is listed twice")));
            }
            check_steps(*s, t, &f)
        })
        .collect()
}

pub fn check_tags(tags: &[String], field: &str) -> Result<()> {
    for (i, t) in tags.iter().enumerate() {
        if t.trim().is_empty() || t.len() > 64 {
            return Err(ServerError::invalid(
                format!("{field}[{i}]"),
                "tags are 1..=64 bytes, not blank",
            ));
        }
    }
    Ok(())
}

pub fn check_name(name: &str, field: &str) -> Result<()> {
    if name.len() > 256 {
        return Err(ServerError::invalid(
            field,
            format!("at most 256 bytes, got {}", name.len()),
        ));
    }
    Ok(())
}

/// A stored latent whose images have the loaded model's shape, made by any weights
/// (what a reencode job takes; everything else needs [`usable_latent`]).
pub fn latent_of_shape(
    store: &Store,
    meta: &ModelMeta,
    id: &str,
    field: &str,
) -> Result<Arc<LatentRecord>> {
    let n = parse_latent_id(id, field)?;
    let r = store
        .find_latent(n)?
        .ok_or_else(|| store.missing_latent(n, field, id))?;
    let want = meta.shape.map(|d| d as u32);
    if r.shape != want {
        return Err(ServerError::FailedPrecondition(format!(
            "{field}: latent {id} has shape {:?} but the loaded model works on {:?}",
            r.shape, want
        )));
    }
    Ok(r)
}

/// Checks that a stored latent can be used with the loaded model: its shape, and
/// the weights that made it (a latent of other weights names the way to carry it over).
pub fn usable_latent(
    store: &Store,
    meta: &ModelMeta,
    id: &str,
    field: &str,
) -> Result<Arc<LatentRecord>> {
    let r = latent_of_shape(store, meta, id, field)?;
    if r.fingerprint != meta.fingerprint {
        return Err(ServerError::FailedPrecondition(format!(
            "{field}: latent {id} was made by model {} but the loaded model is {} \
             (a reencode job carries it over: `ddim reencode {id}`)",
            r.fingerprint, meta.fingerprint
        )));
    }
    Ok(r)
}

/// Default S of an imported latent's preview.
pub const DEFAULT_IMPORT_PREVIEW_STEPS: u32 = 50;

pub fn import_preview_steps(preview_steps: u32, t: usize) -> Result<usize> {
    let s = if preview_steps == 0 {
        (DEFAULT_IMPORT_PREVIEW_STEPS as usize).min(t) as u32
    } else {
        preview_steps
    };
    check_steps(s, t, "import.preview_steps")
}

/// An imported .npy as rows of the model's shape: (N, values), checked for the dtype,
/// the shape and finite values. `field` names the input.
pub fn import_rows(npy: &[u8], meta: &ModelMeta, field: &str) -> Result<(usize, Vec<f32>)> {
    let (shape, values) =
        crate::engine::npy::from_bytes(npy).map_err(|e| ServerError::invalid(field, e))?;
    let want: Vec<usize> = meta.shape.iter().map(|d| *d as usize).collect();
    let n = match shape.len() {
        3 if shape == want => 1,
        4 if shape[1..] == want[..] && shape[0] > 0 => shape[0],
        _ => {
            return Err(ServerError::invalid(
                field,
                format!("shape {shape:?} is not the model's [C, H, W] = {want:?} or [N, ..] of it"),
            ))
        }
    };
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(ServerError::invalid(
            field,
            format!("value {i} is {} (x_T must be finite)", values[i]),
        ));
    }
    Ok((n, values))
}

/// A usable latent that has a source image to reconstruct: its record number.
pub fn with_source(store: &Store, meta: &ModelMeta, id: &str, field: &str) -> Result<u64> {
    let r = usable_latent(store, meta, id, field)?;
    if store
        .latent_png(r.id, super::store::LatentPng::Source)?
        .is_none()
    {
        return Err(ServerError::FailedPrecondition(format!(
            "{field}: latent {id} has no source image (only encoded latents do)"
        )));
    }
    Ok(r.id)
}

pub fn check_image(bytes: &[u8], field: &str) -> Result<()> {
    if bytes.is_empty() {
        return Err(ServerError::invalid(field, "image bytes are required"));
    }
    image::load_from_memory(bytes).map(|_| ()).map_err(|e| {
        ServerError::invalid(field, format!("not a decodable PNG or JPEG image ({e})"))
    })
}

/// Decode steps of a decode job's spec, or the defaults of reconstruct.
pub fn reconstruct_steps(list: &[u32], t: usize) -> Vec<usize> {
    if list.is_empty() {
        DEFAULT_RECONSTRUCT_STEPS
            .iter()
            .map(|s| (*s as usize).min(t))
            .collect()
    } else {
        list.iter().map(|s| *s as usize).collect()
    }
}

// ------------------------------------------------------- records → pb --

pub fn latent_to_pb(r: &LatentRecord) -> pb::Latent {
    let LatentRecord {
        v: _,
        id,
        name,
        tags,
        created_ms,
        shape,
        fingerprint,
        encode_steps,
        encode_spacing,
        encode_solver,
        origin,
        preview_steps,
        job_id: job,
    } = r;
    let origin = match origin {
        OriginRecord::Encoded {
            filename,
            has_source,
        } => pb::origin::Kind::Encoded(pb::EncodedOrigin {
            filename: filename.clone(),
            has_source: *has_source,
        }),
        OriginRecord::Sampled { seed, index } => pb::origin::Kind::Sampled(pb::SampledOrigin {
            seed: *seed,
            index: *index,
        }),
        OriginRecord::Interpolated {
            a,
            b,
            alpha,
            method,
        } => pb::origin::Kind::Interpolated(pb::InterpolatedOrigin {
            a: latent_id(*a),
            b: latent_id(*b),
            alpha: *alpha,
            method: method_to_pb(method) as i32,
        }),
        OriginRecord::Imported { filename } => pb::origin::Kind::Imported(pb::ImportedOrigin {
            filename: filename.clone(),
        }),
        OriginRecord::Edited {
            op,
            params,
            parents,
            summary,
        } => pb::origin::Kind::Edited(pb::EditedOrigin {
            op: op.clone(),
            params_json: params.clone(),
            parent_ids: parents.iter().map(|p| latent_id(*p)).collect(),
            // Filled by `with_lineage` where the store is at hand.
            deleted_parent_ids: vec![],
            summary: summary.clone(),
        }),
    };
    pb::Latent {
        id: latent_id(*id),
        name: name.clone(),
        tags: tags.clone(),
        created_unix_ms: *created_ms,
        shape: shape.to_vec(),
        model_fingerprint: fingerprint.clone(),
        encode_steps: *encode_steps,
        encode_spacing: encode_spacing
            .parse::<Spacing>()
            .map(|s| spacing_to_pb(s) as i32)
            .unwrap_or(pb::Spacing::Unspecified as i32),
        encode_solver: encode_solver
            .parse::<Solver>()
            .map(|s| solver_to_pb(s) as i32)
            .unwrap_or(pb::Solver::Unspecified as i32),
        origin: Some(pb::Origin { kind: Some(origin) }),
        preview_steps: *preview_steps,
        job_id: job_id(*job),
    }
}

/// A latent message with its lineage's deleted parents marked.
pub fn with_lineage(store: &Store, r: &LatentRecord) -> pb::Latent {
    let mut l = latent_to_pb(r);
    if let Some(pb::origin::Kind::Edited(e)) = l.origin.as_mut().and_then(|o| o.kind.as_mut()) {
        e.deleted_parent_ids = r
            .origin
            .parents()
            .iter()
            .filter(|p| store.get_latent(**p).is_none())
            .map(|p| latent_id(*p))
            .collect();
    }
    l
}

/// A job message. `progress` overlays the live step counter of a running job.
pub fn job_to_pb(
    r: &JobRecord,
    spec: Option<pb::JobSpec>,
    result: Option<pb::JobResult>,
    progress: Option<u32>,
) -> pb::Job {
    let JobRecord {
        v: _,
        id,
        kind,
        state,
        priority,
        created_ms,
        started_ms,
        finished_ms,
        attempts,
        error,
        total_steps,
        reads,
        produced: _,
        idempotency_key: _,
        batch: _,
        rows: _,
        images: _,
        stopped_at,
        ran_by,
    } = r;
    let step = match state {
        JobState::Done => *total_steps,
        JobState::Running => progress.unwrap_or(0),
        JobState::Cancelled | JobState::Failed => *stopped_at,
        JobState::Queued => 0,
    };
    pb::Job {
        id: job_id(*id),
        kind: kind.as_str().into(),
        state: state_to_pb(*state) as i32,
        priority: match priority {
            Priority::Interactive => pb::Priority::Interactive,
            Priority::Batch => pb::Priority::Batch,
        } as i32,
        spec,
        created_unix_ms: *created_ms,
        started_unix_ms: *started_ms,
        finished_unix_ms: *finished_ms,
        attempts: *attempts,
        error: error.clone(),
        step,
        total_steps: *total_steps,
        result,
        latent_ids: reads.iter().map(|l| latent_id(*l)).collect(),
        ran_by: ran_by.clone(),
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_reject_garbage() {
        assert_eq!(parse_latent_id(&latent_id(42), "id").unwrap(), 42);
        assert_eq!(parse_job_id(&job_id(7), "id").unwrap(), 7);
        assert!(matches!(
            parse_latent_id("job-1", "id"),
            Err(ServerError::NotFound { .. })
        ));
        assert!(matches!(
            parse_latent_id("", "id"),
            Err(ServerError::InvalidArgument { .. })
        ));
    }

    #[test]
    fn sort_orders_map_and_unknown_names_the_field() {
        assert_eq!(order_from_pb(0).unwrap(), LatentOrder::Newest);
        assert_eq!(order_from_pb(2).unwrap(), LatentOrder::Oldest);
        assert_eq!(order_from_pb(3).unwrap(), LatentOrder::Name);
        assert_eq!(order_from_pb(4).unwrap(), LatentOrder::EncodeSteps);
        let e = order_from_pb(9).unwrap_err().to_string();
        assert!(e.starts_with("order_by"), "{e}");
    }

    #[test]
    fn sampler_validation_names_the_field() {
        let o = pb::SamplerOptions {
            steps: 0,
            eta: 0.0,
            spacing: 0,
            sigma_hat: false,
            solver: 0,
        };
        let e = sampler_from_pb(Some(&o), 1000, "sample.sampler")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("sample.sampler.steps"), "{e}");
        let o = pb::SamplerOptions {
            steps: 10,
            eta: -1.0,
            spacing: 0,
            sigma_hat: false,
            solver: 0,
        };
        let e = sampler_from_pb(Some(&o), 1000, "sample.sampler")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("sample.sampler.eta"), "{e}");
        let o = pb::SamplerOptions {
            steps: 10,
            eta: 0.5,
            spacing: 99,
            sigma_hat: false,
            solver: 0,
        };
        assert!(sampler_from_pb(Some(&o), 1000, "s").is_err());
        let o = pb::SamplerOptions {
            steps: 10,
            eta: 0.5,
            spacing: 2,
            sigma_hat: true,
            solver: 0,
        };
        let ok = sampler_from_pb(Some(&o), 1000, "s").unwrap();
        assert_eq!(
            (ok.steps, ok.spacing, ok.sigma_hat, ok.solver),
            (10, Spacing::Quad, true, Solver::Ddim)
        );
        assert_eq!(batch_key(&ok), batch_key(&ok.clone()));
    }

    #[test]
    fn solver_validation_names_the_field_and_keys_batches() {
        let o = |eta: f32, sigma_hat: bool, solver: i32| pb::SamplerOptions {
            steps: 10,
            eta,
            spacing: 0,
            sigma_hat,
            solver,
        };
        let e = sampler_from_pb(Some(&o(0.0, false, 9)), 1000, "sample.sampler")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("sample.sampler.solver"), "{e}");
        let dpm = pb::Solver::Dpmpp2m as i32;
        let e = sampler_from_pb(Some(&o(0.5, false, dpm)), 1000, "sample.sampler")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("sample.sampler.eta") && e.contains("dpmpp-2m"),
            "{e}"
        );
        let e = sampler_from_pb(Some(&o(0.0, true, dpm)), 1000, "sample.sampler")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("sample.sampler.sigma_hat"), "{e}");
        let a = sampler_from_pb(Some(&o(0.0, false, dpm)), 1000, "s").unwrap();
        assert_eq!(a.solver, Solver::DpmPP2M);
        let b = sampler_from_pb(Some(&o(0.0, false, 0)), 1000, "s").unwrap();
        let c = sampler_from_pb(Some(&o(0.0, false, 1)), 1000, "s").unwrap();
        assert_eq!((b.solver, c.solver), (Solver::Ddim, Solver::Ddim));
        // Different solvers never share a batch; unspecified and ddim do.
        assert_ne!(batch_key(&a), batch_key(&b));
        assert_eq!(batch_key(&b), batch_key(&c));
        for s in Solver::ALL {
            assert_eq!(solver_from_pb(solver_to_pb(s) as i32, "f").unwrap(), s);
        }
    }

    /// A job record written before `ran_by` existed (an older store, sled or
    /// PostgreSQL) reads with it empty; a record that has it carries it to the
    /// `Job` message.
    #[test]
    fn ran_by_reads_from_old_records_and_reaches_the_message() {
        let old = r#"{"v":1,"id":5,"kind":"sample","state":"done","priority":"batch",
            "created_ms":1,"started_ms":2,"finished_ms":3,"attempts":1,"error":"",
            "total_steps":10,"reads":[],"produced":[6],"idempotency_key":"",
            "batch":null,"rows":1,"images":1}"#;
        let mut r: JobRecord = serde_json::from_str(old).expect("an old record reads");
        assert_eq!(r.ran_by, "");
        assert_eq!(job_to_pb(&r, None, None, None).ran_by, "");
        r.ran_by = "gpu3:4242".into();
        let back: JobRecord = serde_json::from_slice(&serde_json::to_vec(&r).unwrap()).unwrap();
        assert_eq!(job_to_pb(&back, None, None, None).ran_by, "gpu3:4242");
    }
}
