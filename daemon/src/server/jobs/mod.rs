//! One module per job kind: how a kind is validated, run and committed sits
//! side by side in its file, and the worker ([`super::worker`]) is only the
//! loop that claims, batches, reports progress and settles.
//!
//! A kind is its `JobSpec` message implementing [`JobKindSpec`]; adding a
//! kind is one new file plus one line in the [`registry!`] below.
//!
//! Two ways to run:
//! - **alone** ([`JobKindSpec::run`]): encode, reconstruct, import, multi-S
//!   decode: the job drives the engine itself, ticking progress through
//!   [`Worker::engine`];
//! - **batched** ([`JobKindSpec::rows`] then [`JobKindSpec::finish`]): the
//!   job gives its starting rows x_T with per-row seeds and the sampler
//!   options; the worker steps the rows of every compatible job together and
//!   hands each job back its rows to commit.
use ddim_proto::v1 as pb;
use tch::Tensor;

use super::conversions::ModelMeta;
use super::error::{Result, ServerError};
use super::store::{BatchKey, JobKind, JobRecord, NewLatent, Store};
use super::worker::{Track, Worker};
use crate::engine::noise::SampleSeed;
use crate::engine::SamplerOptions;

mod decode;
mod direction;
mod encode;
mod eval;
mod grid;
mod import;
mod inpaint;
mod interpolate;
pub mod lineage;
mod mix;
mod reconstruct;
mod reencode;
mod renoise;
mod sample;
mod variation;

/// S of a `PreviewEdit` when the request leaves it 0.
pub const DEFAULT_PREVIEW_STEPS: u32 = 10;

/// What a valid job spec implies for the queue.
#[derive(Debug, Clone)]
pub struct SpecInfo {
    pub kind: JobKind,
    /// Latents the job reads.
    pub reads: Vec<u64>,
    /// Model calls the job makes.
    pub total_steps: u32,
    /// Set when the job can share model calls with others.
    pub batch: Option<BatchKey>,
    /// Rows the job puts in a batch.
    pub rows: u32,
    /// Images the job produces.
    pub images: u32,
}

/// What validation may read.
pub struct Check<'a> {
    pub meta: &'a ModelMeta,
    pub store: &'a Store,
}

/// What a job produced: its result message and the latents to commit with
/// its move to DONE.
pub struct Outcome {
    pub result: pb::JobResult,
    pub latents: Vec<NewLatent>,
}

impl Outcome {
    pub fn empty() -> Self {
        Outcome {
            result: pb::JobResult::default(),
            latents: vec![],
        }
    }
}

/// The starting point of a batched job.
pub struct Rows {
    pub opts: SamplerOptions,
    /// x_T, [N, C, H, W] on the model's device.
    pub x: Tensor,
    /// One per row.
    pub seeds: Vec<SampleSeed>,
}

/// One job kind. Implemented by the kind's `JobSpec` message.
pub trait JobKindSpec {
    fn kind(&self) -> JobKind;

    /// Checks the spec against the model and the library (blocking: may read
    /// the store and decode images). Errors name the field.
    fn validate(&self, cx: &Check) -> Result<SpecInfo>;

    /// Runs the job alone.
    fn run(&self, w: &Worker, rec: &JobRecord, tr: &mut Track) -> Result<Outcome> {
        let _ = (w, tr);
        Err(ServerError::Internal(format!(
            "{} jobs run batched",
            rec.kind.as_str()
        )))
    }

    /// The starting rows of a batched job.
    fn rows(&self, w: &Worker) -> Result<Rows> {
        let _ = w;
        Err(ServerError::Internal(format!(
            "{} jobs do not run batched",
            self.kind().as_str()
        )))
    }

    /// Commits a batched job: `rows` is what [`Self::rows`] gave, `x` the
    /// sampled rows.
    fn finish(&self, w: &Worker, rec: &JobRecord, rows: &Rows, x: &Tensor) -> Result<Outcome> {
        let _ = (w, rows, x);
        Err(ServerError::Internal(format!(
            "{} jobs do not run batched",
            rec.kind.as_str()
        )))
    }

    /// Whether the kind is an edit (`PreviewEdit` takes it).
    fn is_edit(&self) -> bool {
        false
    }

    /// The images the edit would make, at `steps` (S) and without storing
    /// anything: by default the batched rows sampled at that S.
    fn preview(&self, w: &Worker, steps: usize) -> Result<Vec<Tensor>> {
        if !self.is_edit() {
            return Err(ServerError::invalid(
                "spec",
                format!("{} is not an edit", self.kind().as_str()),
            ));
        }
        let mut rows = self.rows(w)?;
        rows.opts.steps = steps;
        let x = crate::engine::sampler::sample(
            &w.model,
            &rows.x,
            &rows.opts,
            &rows.seeds,
            &mut |_| true,
        )?;
        Ok((0..x.size()[0]).map(|i| x.get(i)).collect())
    }

    /// Drops image and .npy bytes (listings and streams).
    fn strip_inputs(&mut self) {}
}

macro_rules! registry {
    ($($variant:ident),* $(,)?) => {
        /// The kind of a spec.
        pub fn job(spec: &pb::JobSpec) -> Result<&dyn JobKindSpec> {
            use pb::job_spec::Kind as K;
            match spec.kind.as_ref() {
                $(Some(K::$variant(m)) => Ok(m),)*
                None => Err(ServerError::invalid(
                    "spec",
                    format!(
                        "a job spec ({}) is required",
                        [$(stringify!($variant)),*].join(", ").to_lowercase()
                    ),
                )),
            }
        }

        fn job_mut(spec: &mut pb::JobSpec) -> Option<&mut dyn JobKindSpec> {
            use pb::job_spec::Kind as K;
            match spec.kind.as_mut() {
                $(Some(K::$variant(m)) => Some(m),)*
                None => None,
            }
        }
    };
}

registry! {
    Encode,
    Sample,
    Decode,
    Reconstruct,
    Interpolate,
    Import,
    Variation,
    Mix,
    Direction,
    Renoise,
    Inpaint,
    Grid,
    Eval,
    Reencode,
}

/// Validates a job spec (see [`JobKindSpec::validate`]).
pub fn validate_spec(
    spec: Option<&pb::JobSpec>,
    meta: &ModelMeta,
    store: &Store,
) -> Result<SpecInfo> {
    let spec = spec.ok_or_else(|| ServerError::invalid("spec", "a job spec is required"))?;
    job(spec)?.validate(&Check { meta, store })
}

/// The spec without image or .npy bytes (listings and streams).
pub fn strip_images(mut spec: pb::JobSpec) -> pb::JobSpec {
    if let Some(j) = job_mut(&mut spec) {
        j.strip_inputs();
    }
    spec
}

/// `name`, or `{what}-{id}` when it is empty.
pub(crate) fn input_name(name: &str, what: &str, id: u64) -> String {
    if name.is_empty() {
        format!("{what}-{id}")
    } else {
        name.to_string()
    }
}
