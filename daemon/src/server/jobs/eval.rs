//! `eval`: the paper's Table 1 on the served model ([`crate::eval`]): for each
//! (S, η) cell, and σ̂ per S, N seeded samples, the Fréchet distance of the judge's
//! features to the test split's with a bootstrap interval, the class histogram and
//! the mean confidence, each η ≠ 0 and σ̂ cell paired with its S's η = 0 cell
//! ([`ev::vs_eta0`]); and the real-vs-real floor. Runs alone, one progress tick per
//! model call.
//!
//! The judge is the folder `judge/` beside the model (`ddimd train-judge`). Without
//! one the job is refused at submission with FAILED_PRECONDITION naming the folder.
//! The judge and the test split's statistics are kept by the worker thread between
//! jobs (the features also on disk, see [`crate::eval::test_split_features`]).
use ddim_proto::v1 as pb;
use std::cell::RefCell;
use std::path::{Path, PathBuf};

use super::{Check, JobKindSpec, Outcome, SpecInfo};
use crate::engine::imageio;
use crate::eval::{self as ev, EvalSettings, Reference};
use crate::judge::{self, Judge};
use crate::server::conversions::{
    check_eta, check_solver_eta, check_step_list, solver_from_pb, solver_to_pb, spacing_from_pb,
    spacing_to_pb,
};
use crate::server::error::{Result, ServerError};
use crate::server::store::{JobKind, JobRecord};
use crate::server::worker::{Track, Worker};

/// N at most.
pub const MAX_SAMPLES: u32 = 10_000;
/// η values at most.
pub const MAX_EVAL_ETAS: usize = 16;
/// Samples per model call.
pub const EVAL_BATCH: u32 = 64;
/// Bootstrap resamples per interval.
pub const BOOTSTRAP: usize = 200;

/// The judge folder beside a model.
pub fn judge_dir(model_path: &str) -> PathBuf {
    Path::new(model_path).join("judge")
}

fn missing_judge(dir: &Path) -> ServerError {
    ServerError::FailedPrecondition(format!(
        "eval: no judge beside the model ({} is missing; train one with `ddimd train-judge --out {}`)",
        dir.join(judge::CONFIG).display(),
        dir.display()
    ))
}

thread_local! {
    /// The worker thread's judge and the test split's statistics under it.
    static LOADED: RefCell<Option<(Judge, Reference)>> = const { RefCell::new(None) };
}

/// The spec's S and η lists, checked (errors name the field).
fn check(job: &pb::EvalJob, t: usize) -> Result<(Vec<usize>, Vec<f64>)> {
    {
        let this = job;
        let steps = check_step_list(&this.steps, t, "eval.steps")?;
        if this.etas.len() > MAX_EVAL_ETAS {
            return Err(ServerError::invalid(
                "eval.etas",
                format!("at most {MAX_EVAL_ETAS} values, got {}", this.etas.len()),
            ));
        }
        let mut etas = vec![];
        for (i, e) in this.etas.iter().enumerate() {
            let f = format!("eval.etas[{i}]");
            let v = check_eta(*e, &f)?;
            if this.etas[..i].contains(e) {
                return Err(ServerError::invalid(f, format!("η {e} is listed twice")));
            }
            etas.push(v);
        }
        if etas.is_empty() && !this.sigma_hat {
            etas.push(0.0);
        }
        if this.samples == 0 || this.samples > MAX_SAMPLES {
            return Err(ServerError::invalid(
                "eval.samples",
                format!("N must be in 1..={MAX_SAMPLES}, got {}", this.samples),
            ));
        }
        spacing_from_pb(this.spacing, "eval.spacing")?;
        let solver = solver_from_pb(this.solver, "eval.solver")?;
        for (i, e) in etas.iter().enumerate() {
            check_solver_eta(solver, *e, &format!("eval.etas[{i}]"), None)?;
        }
        check_solver_eta(
            solver,
            0.0,
            "eval.etas",
            Some((this.sigma_hat, "eval.sigma_hat")),
        )?;
        Ok((steps, etas))
    }
}

/// The cells of the table: for each S, the η cells then σ̂.
fn cells(job: &pb::EvalJob, t: usize) -> Result<Vec<ev::CellSpec>> {
    let (steps, etas) = check(job, t)?;
    let spacing = spacing_from_pb(job.spacing, "eval.spacing")?;
    let solver = solver_from_pb(job.solver, "eval.solver")?;
    Ok(ev::cells(&steps, &etas, job.sigma_hat, spacing, solver))
}

impl JobKindSpec for pb::EvalJob {
    fn kind(&self) -> JobKind {
        JobKind::Eval
    }

    fn validate(&self, cx: &Check) -> Result<SpecInfo> {
        let cells = cells(self, cx.meta.t)?;
        let dir = judge_dir(&cx.meta.info.path);
        if !dir.join(judge::CONFIG).is_file() {
            return Err(missing_judge(&dir));
        }
        let chunks = self.samples.div_ceil(EVAL_BATCH) as u64;
        let total: u64 = cells.iter().map(|c| c.steps as u64 * chunks).sum();
        Ok(SpecInfo {
            kind: JobKind::Eval,
            reads: vec![],
            total_steps: u32::try_from(total).map_err(|_| {
                ServerError::invalid("eval.samples", "too many model calls for one job")
            })?,
            batch: None,
            rows: self.samples.min(EVAL_BATCH),
            images: cells.len() as u32,
        })
    }

    fn run(&self, w: &Worker, _rec: &JobRecord, tr: &mut Track) -> Result<Outcome> {
        let cells = cells(self, w.meta.t)?;
        let dir = judge_dir(&w.meta.info.path);
        if !dir.join(judge::CONFIG).is_file() {
            return Err(missing_judge(&dir));
        }
        let loaded = Judge::load(&dir, w.model.device)?;
        LOADED.with(|cell| -> Result<Outcome> {
            let mut slot = cell.borrow_mut();
            let fresh = slot
                .as_ref()
                .is_none_or(|(j, _)| j.fingerprint != loaded.fingerprint);
            if fresh {
                let features = ev::test_split_features(&loaded)?;
                *slot = Some((loaded, Reference::new(features)));
            }
            let (judge, reference) = slot.as_ref().expect("loaded");
            let settings = EvalSettings {
                samples: self.samples as usize,
                seed: self.seed,
                batch: EVAL_BATCH as usize,
                bootstrap: BOOTSTRAP,
            };
            let mut result = pb::EvalResult {
                judge_fingerprint: judge.fingerprint.clone(),
                judge_accuracy: judge.config.test_accuracy.unwrap_or(f64::NAN),
                classes: judge.config.classes.clone(),
                reference_images: reference.images() as u32,
                bootstrap: BOOTSTRAP as u32,
                ..Default::default()
            };
            let mut results = vec![];
            for spec in &cells {
                let (r, kept) = w.engine(tr, |cb| {
                    ev::evaluate_cell(
                        &w.model,
                        judge,
                        &reference.all,
                        spec,
                        &settings,
                        &mut |e, _| cb(e),
                    )
                })?;
                result.cells.push(pb::EvalCell {
                    steps: spec.steps as u32,
                    eta: if spec.sigma_hat { 0.0 } else { spec.eta as f32 },
                    sigma_hat: spec.sigma_hat,
                    spacing: spacing_to_pb(spec.spacing) as i32,
                    solver: solver_to_pb(spec.solver) as i32,
                    n: r.n as u32,
                    fd: r.fd.fd,
                    fd_low: r.fd.fd_low,
                    fd_high: r.fd.fd_high,
                    confidence: r.confidence,
                    class_histogram: r.class_histogram.clone(),
                    seconds: r.seconds,
                    grid: Some({
                        let img = imageio::grid(&kept, 0, 2);
                        pb::Image {
                            width: img.width(),
                            height: img.height(),
                            png: imageio::png_bytes(&img),
                        }
                    }),
                    vs_eta0: None,
                });
                results.push(r);
            }
            for (cell, p) in result.cells.iter_mut().zip(ev::vs_eta0(&results)) {
                cell.vs_eta0 = p.map(|p| pb::EvalPaired {
                    diff: p.diff,
                    low: p.low,
                    high: p.high,
                });
            }
            let (floor, n) = reference.floor(settings.samples, BOOTSTRAP, self.seed);
            result.floor = Some(pb::EvalFloor {
                fd: floor.fd,
                fd_low: floor.fd_low,
                fd_high: floor.fd_high,
                n: n as u32,
            });
            let mut out = Outcome::empty();
            out.result.eval = Some(result);
            Ok(out)
        })
    }
}
