//! The generalized DDIM step (Song et al. 2020, eq. 12), its σ̂ variant, and
//! inversion along the η = 0 ODE.
//!
//! With ᾱ_prev = 1 at the last step (diffusers `set_alpha_to_one=True`):
//! ```text
//! x̂0     = (x_t − √(1−ᾱ_t)·ε̂) / √ᾱ_t
//! σ(η)   = η·√((1−ᾱ_prev)/(1−ᾱ_t))·√(1−ᾱ_t/ᾱ_prev)
//! x_prev = √ᾱ_prev·x̂0 + √(1−ᾱ_prev−σ²)·ε̂ + σ·z
//! ```
//! (diffusers `scheduling_ddim.py` `DDIMScheduler.step`). σ̂ follows
//! ermongroup's `ddpm_noisy`: the DDPM posterior mean with standard deviation
//! σ̂ = √(1 − ᾱ_t/ᾱ_prev), no noise on the final step. x̂0 is never clipped.
//!
//! Inversion (x0 → x_T) walks τ ascending with the same update at η = 0, and
//! evaluates ε̂ at the *target* timestep: the step τ_{k−1} → τ_k uses
//! ε̂(x_{τ_{k−1}}, τ_k), the same (x, t) pairing the decoder's step
//! τ_k → τ_{k−1} uses (diffusers `DDIMInverseScheduler`, PR #5145). The first
//! step starts from x0 at ᾱ = 1.
use tch::Tensor;

use super::dpm::{self, Solver};
use super::model::Model;
use super::noise::{batch_normal, SampleSeed};
use super::spacing::{validate_steps, Spacing};
use super::EngineError;

/// How to run the reverse process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplerOptions {
    /// S, the number of model calls (1..=T).
    pub steps: usize,
    /// η ≥ 0; 0 is deterministic DDIM, 1 is DDPM-like.
    pub eta: f64,
    pub spacing: Spacing,
    /// Use σ̂ (Table 1's last row) instead of σ(η).
    pub sigma_hat: bool,
    /// The ODE solver: DDIM (any η) or DPM-Solver++(2M) (η = 0 only).
    pub solver: Solver,
}

impl Default for SamplerOptions {
    fn default() -> Self {
        Self {
            steps: 50,
            eta: 0.0,
            spacing: Spacing::Uniform,
            sigma_hat: false,
            solver: Solver::Ddim,
        }
    }
}

impl SamplerOptions {
    pub fn validate(&self, t: usize) -> Result<(), EngineError> {
        validate_steps(self.steps, t).map_err(EngineError::InvalidInput)?;
        if !self.eta.is_finite() || self.eta < 0.0 {
            return Err(EngineError::InvalidInput(format!(
                "eta must be a finite number ≥ 0, got {}",
                self.eta
            )));
        }
        if self.solver == Solver::DpmPP2M && (self.eta != 0.0 || self.sigma_hat) {
            return Err(EngineError::InvalidInput(format!(
                "solver dpmpp-2m is deterministic: eta must be 0{}, got eta {}",
                if self.sigma_hat {
                    " and sigma_hat off"
                } else {
                    ""
                },
                self.eta
            )));
        }
        Ok(())
    }

    /// Whether the sampler draws noise (η > 0 or σ̂).
    pub fn stochastic(&self) -> bool {
        self.sigma_hat || self.eta > 0.0
    }
}

/// Progress of a loop: `step` of `total` model calls done.
pub struct StepEvent<'a> {
    pub step: usize,
    pub total: usize,
    pub t: i64,
    /// The current prediction of x0 (or, while encoding, the current latent).
    pub x0_hat: &'a Tensor,
}

/// (t, prev) pairs of a sampling run, descending; prev = −1 at the end.
pub fn plan(opts: &SamplerOptions, t_train: usize) -> Vec<(i64, i64)> {
    let ts = opts.spacing.timesteps(opts.steps, t_train);
    (0..ts.len())
        .rev()
        .map(|i| (ts[i], if i == 0 { -1 } else { ts[i - 1] }))
        .collect()
}

/// Checks that `x` is [N, C, H, W] for this model, finite.
pub fn check_input(model: &Model, x: &Tensor, what: &str) -> Result<(), EngineError> {
    let [c, h, w] = model.sample_shape();
    let size = x.size();
    if size.len() != 4 || size[1] != c || size[2] != h || size[3] != w || size[0] < 1 {
        return Err(EngineError::InvalidInput(format!(
            "{what}: expected shape [N, {c}, {h}, {w}], got {size:?}"
        )));
    }
    if x.kind() != tch::Kind::Float {
        return Err(EngineError::InvalidInput(format!(
            "{what}: expected float32, got {:?}",
            x.kind()
        )));
    }
    check_finite(x, what)
}

pub fn check_finite(x: &Tensor, what: &str) -> Result<(), EngineError> {
    let ok = x.f_isfinite()?.f_all()?.int64_value(&[]) != 0;
    if ok {
        Ok(())
    } else {
        Err(EngineError::NonFinite(what.to_string()))
    }
}

/// One reverse step t → prev for the whole batch. `k` numbers the step (0 is
/// the first) and picks the η-noise stream. Returns (x_prev, x̂0).
pub fn step(
    model: &Model,
    x: &Tensor,
    t: i64,
    prev: i64,
    k: usize,
    opts: &SamplerOptions,
    seeds: &[SampleSeed],
) -> Result<(Tensor, Tensor), EngineError> {
    let (eps, x0) = model.eps_and_x0(x, t);
    let a = model.schedule.alpha_bar(t);
    let ap = model.schedule.alpha_bar(prev);
    let noise = |sigma: f64| -> Tensor {
        let z = batch_normal(seeds, k as u64 + 1, model.sample_shape(), x.device());
        z * sigma
    };
    let x_prev = if opts.sigma_hat {
        // DDPM posterior mean with variance β = 1 − ᾱ_t/ᾱ_prev.
        let beta = 1.0 - a / ap;
        let mean = &x0 * (ap.sqrt() * beta / (1.0 - a))
            + x * ((1.0 - beta).sqrt() * (1.0 - ap) / (1.0 - a));
        if prev < 0 {
            mean
        } else {
            mean + noise(beta.sqrt())
        }
    } else {
        let sigma = opts.eta * ((1.0 - ap) / (1.0 - a)).sqrt() * (1.0 - a / ap).sqrt();
        let dir = (1.0 - ap - sigma * sigma).max(0.0).sqrt();
        let mean = &x0 * ap.sqrt() + &eps * dir;
        if sigma > 0.0 {
            mean + noise(sigma)
        } else {
            mean
        }
    };
    Ok((x_prev, x0))
}

/// Step `k` of `plan` (see [`plan`]) with the solver of `opts`. `hist` is the
/// x̂0 step k − 1 returned (DPM-Solver++(2M) keeps it; DDIM ignores it; `None`
/// makes the step first order). Returns (x_prev, x̂0).
pub fn solver_step(
    model: &Model,
    x: &Tensor,
    plan: &[(i64, i64)],
    k: usize,
    opts: &SamplerOptions,
    seeds: &[SampleSeed],
    hist: Option<&Tensor>,
) -> Result<(Tensor, Tensor), EngineError> {
    let (t, prev) = plan[k];
    match opts.solver {
        Solver::Ddim => step(model, x, t, prev, k, opts, seeds),
        Solver::DpmPP2M => {
            let h = match (k, hist) {
                (1.., Some(d)) => Some((plan[k - 1].0, d)),
                _ => None,
            };
            Ok(dpm::step(model, x, t, prev, h))
        }
    }
}

/// Runs the reverse process from x_T. `seeds[i]` seeds row i's η-noise.
/// `on_step` returns false to cancel.
pub fn sample(
    model: &Model,
    xt: &Tensor,
    opts: &SamplerOptions,
    seeds: &[SampleSeed],
    on_step: &mut dyn FnMut(&StepEvent) -> bool,
) -> Result<Tensor, EngineError> {
    opts.validate(model.num_train_timesteps())?;
    check_input(model, xt, "x_T")?;
    if seeds.len() as i64 != xt.size()[0] {
        return Err(EngineError::InvalidInput(format!(
            "{} seeds for {} samples",
            seeds.len(),
            xt.size()[0]
        )));
    }
    let _guard = tch::no_grad_guard();
    let steps = plan(opts, model.num_train_timesteps());
    let total = steps.len();
    let mut x = xt.to_device(model.device);
    let mut hist: Option<Tensor> = None;
    for k in 0..total {
        let (xp, x0) = solver_step(model, &x, &steps, k, opts, seeds, hist.as_ref())?;
        x = xp;
        if !on_step(&StepEvent {
            step: k + 1,
            total,
            t: steps[k].0,
            x0_hat: &x0,
        }) {
            return Err(EngineError::Cancelled);
        }
        hist = Some(x0);
    }
    check_finite(&x, "sample")?;
    Ok(x)
}

/// Runs the last `k` steps of the S-step plan of `opts`: from `x_k`, the latent at
/// τ_k (1-based: τ_1 < … < τ_S are the plan's timesteps, τ_0 := −1 with ᾱ = 1), down
/// through τ_{k−1}, …, τ_1 to x0. The step τ_i → τ_{i−1} is `plan(opts)[S − i]` and
/// draws the η-noise stream of that plan index, so `sample_from(.., k = S, ..)` is
/// [`sample`] bit for bit, and the noise at a level does not depend on k. `k = 0`
/// returns `x_k` unchanged. Events count `1..=k` of `k`.
pub fn sample_from(
    model: &Model,
    x_k: &Tensor,
    opts: &SamplerOptions,
    k: usize,
    seeds: &[SampleSeed],
    on_step: &mut dyn FnMut(&StepEvent) -> bool,
) -> Result<Tensor, EngineError> {
    opts.validate(model.num_train_timesteps())?;
    check_input(model, x_k, "x_k")?;
    if k > opts.steps {
        return Err(EngineError::InvalidInput(format!(
            "k must be in 0..={} (the plan's steps), got {k}",
            opts.steps
        )));
    }
    if seeds.len() as i64 != x_k.size()[0] {
        return Err(EngineError::InvalidInput(format!(
            "{} seeds for {} samples",
            seeds.len(),
            x_k.size()[0]
        )));
    }
    let _guard = tch::no_grad_guard();
    let steps = plan(opts, model.num_train_timesteps());
    let first = steps.len() - k;
    let mut x = x_k.to_device(model.device);
    let mut hist: Option<Tensor> = None;
    for j in first..steps.len() {
        let (xp, x0) = solver_step(model, &x, &steps, j, opts, seeds, hist.as_ref())?;
        x = xp;
        if !on_step(&StepEvent {
            step: j - first + 1,
            total: k,
            t: steps[j].0,
            x0_hat: &x0,
        }) {
            return Err(EngineError::Cancelled);
        }
        hist = Some(x0);
    }
    check_finite(&x, "sample")?;
    Ok(x)
}

/// One inversion step prev → t (ascending) at η = 0, with ε̂ at t.
pub fn invert_step(model: &Model, x: &Tensor, prev: i64, t: i64) -> Tensor {
    let (eps, _) = model.eps_and_x0(x, t);
    let a_prev = model.schedule.alpha_bar(prev);
    let a = model.schedule.alpha_bar(t);
    // x̂0 from the current point at its own noise level, then renoise to t.
    let x0 = (x - &eps * (1.0 - a_prev).sqrt()) / a_prev.sqrt();
    x0 * a.sqrt() + eps * (1.0 - a).sqrt()
}

/// Encodes x0 into x_T along the η = 0 ODE with S steps of `spacing`.
pub fn invert(
    model: &Model,
    x0: &Tensor,
    steps: usize,
    spacing: Spacing,
    on_step: &mut dyn FnMut(&StepEvent) -> bool,
) -> Result<Tensor, EngineError> {
    validate_steps(steps, model.num_train_timesteps()).map_err(EngineError::InvalidInput)?;
    check_input(model, x0, "x0")?;
    let _guard = tch::no_grad_guard();
    let ts = spacing.timesteps(steps, model.num_train_timesteps());
    let mut x = x0.to_device(model.device);
    let mut prev = -1;
    for (k, &t) in ts.iter().enumerate() {
        x = invert_step(model, &x, prev, t);
        prev = t;
        if !on_step(&StepEvent {
            step: k + 1,
            total: ts.len(),
            t,
            x0_hat: &x,
        }) {
            return Err(EngineError::Cancelled);
        }
    }
    check_finite(&x, "latent")?;
    Ok(x)
}

/// [`invert`] with a choice of solver: DDIM, or DPM-Solver++(2M)'s inversion
/// ([`dpm::invert`]). Same S model calls.
pub fn invert_with(
    model: &Model,
    x0: &Tensor,
    steps: usize,
    spacing: Spacing,
    solver: Solver,
    on_step: &mut dyn FnMut(&StepEvent) -> bool,
) -> Result<Tensor, EngineError> {
    match solver {
        Solver::Ddim => invert(model, x0, steps, spacing, on_step),
        Solver::DpmPP2M => {
            validate_steps(steps, model.num_train_timesteps())
                .map_err(EngineError::InvalidInput)?;
            check_input(model, x0, "x0")?;
            let ts = spacing.timesteps(steps, model.num_train_timesteps());
            dpm::invert(model, x0, &ts, on_step)
        }
    }
}

/// The first `k` steps of [`invert`] with S = `steps`: x0 → x_{τ_k} (1-based τ as in
/// [`sample_from`]), the η = 0 partial inversion DDIM's SDEdit starts from.
/// `invert_partial(.., k = S, ..)` is [`invert`] bit for bit; `k = 0` returns x0.
/// Events count `1..=k` of `k`.
pub fn invert_partial(
    model: &Model,
    x0: &Tensor,
    steps: usize,
    spacing: Spacing,
    k: usize,
    on_step: &mut dyn FnMut(&StepEvent) -> bool,
) -> Result<Tensor, EngineError> {
    validate_steps(steps, model.num_train_timesteps()).map_err(EngineError::InvalidInput)?;
    check_input(model, x0, "x0")?;
    if k > steps {
        return Err(EngineError::InvalidInput(format!(
            "k must be in 0..={steps} (the plan's steps), got {k}"
        )));
    }
    let _guard = tch::no_grad_guard();
    let ts = spacing.timesteps(steps, model.num_train_timesteps());
    let mut x = x0.to_device(model.device);
    let mut prev = -1;
    for (i, &t) in ts.iter().take(k).enumerate() {
        x = invert_step(model, &x, prev, t);
        prev = t;
        if !on_step(&StepEvent {
            step: i + 1,
            total: k,
            t,
            x0_hat: &x,
        }) {
            return Err(EngineError::Cancelled);
        }
    }
    check_finite(&x, "latent")?;
    Ok(x)
}

/// Per-dimension MSE between two batches on the [0, 1] pixel scale, per row.
pub fn mse01(a: &Tensor, b: &Tensor) -> Vec<f64> {
    let d = ((a - b) / 2.0).square();
    let n = d.size()[0];
    let per = d.reshape([n, -1]).mean_dim(1, false, tch::Kind::Double);
    Vec::<f64>::try_from(per.to_device(tch::Device::Cpu)).unwrap_or_default()
}

/// Encode then decode with S steps (η = 0) and return per-row MSE on [0, 1]
/// and the reconstructions. Images are clamped to [−1, 1] before comparison,
/// as a viewer would see them.
pub fn reconstruct(
    model: &Model,
    x0: &Tensor,
    steps: usize,
    spacing: Spacing,
    on_step: &mut dyn FnMut(&StepEvent) -> bool,
) -> Result<(Vec<f64>, Tensor), EngineError> {
    reconstruct_with(model, x0, steps, spacing, Solver::Ddim, on_step)
}

/// [`reconstruct`] with a choice of solver (the same one encodes and decodes).
pub fn reconstruct_with(
    model: &Model,
    x0: &Tensor,
    steps: usize,
    spacing: Spacing,
    solver: Solver,
    on_step: &mut dyn FnMut(&StepEvent) -> bool,
) -> Result<(Vec<f64>, Tensor), EngineError> {
    let n = x0.size()[0] as usize;
    let xt = invert_with(model, x0, steps, spacing, solver, on_step)?;
    let opts = SamplerOptions {
        steps,
        eta: 0.0,
        spacing,
        sigma_hat: false,
        solver,
    };
    let seeds: Vec<SampleSeed> = (0..n as u64).map(|i| SampleSeed::new(0, i)).collect();
    let rec = sample(model, &xt, &opts, &seeds, on_step)?.clamp(-1.0, 1.0);
    let x0 = x0.to_device(model.device).clamp(-1.0, 1.0);
    Ok((mse01(&rec, &x0), rec))
}
