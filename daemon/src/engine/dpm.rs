//! DPM-Solver++(2M) (Lu et al. 2022, arXiv 2211.01095): the same η = 0
//! probability-flow ODE as DDIM, integrated in λ = log(α/σ) with the data
//! prediction x̂0 and one previous x̂0 kept (multistep, second order), on the
//! same timestep sub-sequence τ (any [`super::Spacing`]) as DDIM.
//!
//! With α_t = √ᾱ_t, σ_t = √(1−ᾱ_t), λ_t = log α_t − log σ_t, a step s → t
//! (h = λ_t − λ_s) from x_s with D0 = x̂0(x_s, s) and the previous model call's
//! D_{s1} = x̂0(x_{s1}, s1) (h_0 = λ_s − λ_{s1}, r_0 = h_0 / h) is
//! ```text
//! first order (= DDIM η = 0):  x_t = (σ_t/σ_s)·x_s − α_t·(e^{−h} − 1)·D0
//! second order (2M, midpoint): x_t = (σ_t/σ_s)·x_s − α_t·(e^{−h} − 1)·(D0 + ½·(D0 − D_{s1})/r_0)
//! ```
//! (diffusers `DPMSolverMultistepScheduler`, `algorithm_type="dpmsolver++"`,
//! `solver_order=2`, `solver_type="midpoint"`, `lower_order_final=True`,
//! `final_sigmas_type="zero"`). Sampling: the first step is first order (no
//! history yet), every later step second order, and the last step (to ᾱ = 1,
//! σ = 0, λ = +∞) is first order, which is x_0 = D0 — the same final step as
//! DDIM's. S = 1 and S = 2 are therefore plain DDIM.
//!
//! Inversion (x0 → x_T) runs the same update from t small to t large (h < 0):
//! - the first step 0 → τ_1 is DDIM's ([`super::sampler::invert_step`]: ε̂
//!   evaluated on x0 at τ_1; the data-prediction form has no defined start at
//!   σ = 0);
//! - the step τ_{k−1} → τ_k (k ≥ 2) evaluates D0 = x̂0(x_{τ_{k−1}}, τ_{k−1}) at the
//!   point's own level (the explicit multistep integrator run upward) and, from
//!   k ≥ 3, keeps D_{s1} = x̂0(x_{τ_{k−2}}, τ_{k−2}) from the previous step:
//!   first order at k = 2, second order after.
//!
//! S model calls in both directions.
use std::fmt;
use std::str::FromStr;

use tch::Tensor;

use super::model::Model;
use super::sampler::{check_finite, invert_step, StepEvent};
use super::EngineError;

/// Which ODE solver runs the η = 0 process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Solver {
    /// DDIM (eq. 12), any η, σ̂.
    #[default]
    Ddim,
    /// DPM-Solver++(2M), deterministic only (η = 0).
    DpmPP2M,
}

impl Solver {
    pub const ALL: [Solver; 2] = [Solver::Ddim, Solver::DpmPP2M];

    pub fn as_str(self) -> &'static str {
        match self {
            Solver::Ddim => "ddim",
            Solver::DpmPP2M => "dpmpp-2m",
        }
    }
}

impl fmt::Display for Solver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Solver {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Solver::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown solver {s:?} (expected ddim or dpmpp-2m)"))
    }
}

/// α, σ and λ at one noise level (t = −1: α = 1, σ = 0, λ = +∞).
#[derive(Debug, Clone, Copy)]
pub struct Level {
    pub alpha: f64,
    pub sigma: f64,
    pub lambda: f64,
}

impl Level {
    pub fn at(model: &Model, t: i64) -> Self {
        let a = model.schedule.alpha_bar(t);
        let (alpha, sigma) = (a.sqrt(), (1.0 - a).max(0.0).sqrt());
        Level {
            alpha,
            sigma,
            lambda: alpha.ln() - sigma.ln(),
        }
    }
}

/// The DPM-Solver++ update s → t (either direction) from `x` at s with `d0` =
/// x̂0 at s and, for the second order, `hist` = (λ of the previous model call,
/// its x̂0). `σ_t = 0` gives `d0` (the first-order limit).
pub fn update(x: &Tensor, s: Level, t: Level, d0: &Tensor, hist: Option<(f64, &Tensor)>) -> Tensor {
    if t.sigma == 0.0 {
        return d0.shallow_clone();
    }
    let h = t.lambda - s.lambda;
    let c = -t.alpha * ((-h).exp() - 1.0);
    let lin = x * (t.sigma / s.sigma);
    match hist {
        Some((lambda_s1, d1)) if lambda_s1.is_finite() => {
            let r0 = (s.lambda - lambda_s1) / h;
            let d = d0 + (d0 - d1) * (0.5 / r0);
            lin + d * c
        }
        _ => lin + d0 * c,
    }
}

/// One reverse step t → prev of DPM-Solver++(2M) for the whole batch, with
/// `hist` = (timestep of the previous model call, its x̂0), `None` on the first
/// step. Returns (x_prev, x̂0).
pub fn step(
    model: &Model,
    x: &Tensor,
    t: i64,
    prev: i64,
    hist: Option<(i64, &Tensor)>,
) -> (Tensor, Tensor) {
    let (_, x0) = model.eps_and_x0(x, t);
    let s = Level::at(model, t);
    let p = Level::at(model, prev);
    let h = hist.map(|(t1, d1)| (Level::at(model, t1).lambda, d1));
    (update(x, s, p, &x0, h), x0)
}

/// The first `ts.len()` steps of the DPM-Solver++(2M) inversion over the
/// ascending timesteps `ts` (the plan's τ_1 < … < τ_k): x0 → x_{τ_k}. See the
/// module documentation for the update. Events count `1..=ts.len()`.
pub fn invert(
    model: &Model,
    x0: &Tensor,
    ts: &[i64],
    on_step: &mut dyn FnMut(&StepEvent) -> bool,
) -> Result<Tensor, EngineError> {
    let _guard = tch::no_grad_guard();
    let mut x = x0.to_device(model.device);
    let mut hist: Option<(f64, Tensor)> = None;
    let mut prev = -1i64;
    for (k, &t) in ts.iter().enumerate() {
        x = if prev < 0 {
            invert_step(model, &x, prev, t)
        } else {
            let (_, d0) = model.eps_and_x0(&x, prev);
            let s = Level::at(model, prev);
            let xt = update(
                &x,
                s,
                Level::at(model, t),
                &d0,
                hist.as_ref().map(|(l, d)| (*l, d)),
            );
            hist = Some((s.lambda, d0));
            xt
        };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_round_trip_and_errors() {
        for s in Solver::ALL {
            assert_eq!(s.as_str().parse::<Solver>().unwrap(), s);
        }
        assert_eq!(Solver::default(), Solver::Ddim);
        let e = "heun".parse::<Solver>().unwrap_err();
        assert!(e.contains("heun") && e.contains("dpmpp-2m"), "{e}");
    }

    fn lv(a: f64) -> Level {
        let (alpha, sigma) = (a.sqrt(), (1.0 - a).sqrt());
        Level {
            alpha,
            sigma,
            lambda: alpha.ln() - sigma.ln(),
        }
    }

    #[test]
    fn first_order_is_the_ddim_step() {
        // x_prev = √ᾱ_p·x̂0 + √(1−ᾱ_p)·ε with ε = (x − √ᾱ_t·x̂0)/√(1−ᾱ_t).
        let (a, ap) = (0.3f64, 0.7f64);
        let x = Tensor::from_slice(&[0.5f32, -1.2, 2.0]);
        let x0 = Tensor::from_slice(&[0.1f32, -0.4, 0.9]);
        let eps = (&x - &x0 * a.sqrt()) / (1.0 - a).sqrt();
        let want = &x0 * ap.sqrt() + eps * (1.0 - ap).sqrt();
        let got = update(&x, lv(a), lv(ap), &x0, None);
        let err = (got - want).abs().max().double_value(&[]);
        assert!(err < 1e-6, "{err}");
        // To σ = 0 the step returns x̂0.
        let last = update(&x, lv(a), lv(1.0), &x0, None);
        assert!(last.equal(&x0));
    }

    #[test]
    fn second_order_is_exact_for_linear_in_lambda_data() {
        // If x̂0(λ) is affine in λ, the 2M step matches the exact
        // exponential integrator, x_t = (σ_t/σ_s) x_s + σ_t ∫ e^λ x̂0(λ) dλ.
        let (s1, s, t) = (lv(0.2), lv(0.35), lv(0.6));
        let f = |l: f64| 0.3 + 0.5 * l; // x̂0(λ)
        let xs = 1.7f64;
        // ∫_{λs}^{λt} e^λ (p + q λ) dλ = [e^λ (p + q (λ − 1))]
        let prim = |l: f64| l.exp() * (0.3 + 0.5 * (l - 1.0));
        let want = t.sigma / s.sigma * xs + t.sigma * (prim(t.lambda) - prim(s.lambda));
        let x = Tensor::from_slice(&[xs]);
        let d0 = Tensor::from_slice(&[f(s.lambda)]);
        let d1 = Tensor::from_slice(&[f(s1.lambda)]);
        let got = update(&x, s, t, &d0, Some((s1.lambda, &d1))).double_value(&[0]);
        // The midpoint variant is second order, not exact: close for small h.
        assert!((got - want).abs() < 5e-3, "got {got}, want {want}");
        let first = update(&x, s, t, &d0, None).double_value(&[0]);
        assert!((got - want).abs() < (first - want).abs());
    }
}
