//! Noise schedules: β_t and ᾱ_t = ∏_{s≤t}(1 − β_s), read from a diffusers
//! `scheduler_config.json` (DDIMScheduler or DDPMScheduler).
//!
//! Betas follow diffusers' `scheduling_ddim.py` (`betas_for_alpha_bar` for the
//! cosine schedule), computed in f64 and stored as f64 so that the sampler's
//! coefficients are exact; the cosine schedule divides in floating point (the
//! Rust ports' integer `i / T` bug gives all-zero betas).
use serde::Deserialize;
use std::path::Path;

use super::EngineError;

/// What the network predicts (diffusers `prediction_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PredictionType {
    Epsilon,
    VPrediction,
    Sample,
}

impl PredictionType {
    pub fn parse(s: &str) -> Result<Self, EngineError> {
        match s {
            "epsilon" => Ok(Self::Epsilon),
            "v_prediction" => Ok(Self::VPrediction),
            "sample" => Ok(Self::Sample),
            other => Err(EngineError::Config(format!(
                "scheduler_config.json: prediction_type {other:?} is not supported (epsilon, v_prediction, sample)"
            ))),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Epsilon => "epsilon",
            Self::VPrediction => "v_prediction",
            Self::Sample => "sample",
        }
    }
}

/// β schedule kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BetaSchedule {
    Linear,
    ScaledLinear,
    SquaredCosCapV2,
}

impl BetaSchedule {
    pub fn parse(s: &str) -> Result<Self, EngineError> {
        match s {
            "linear" => Ok(Self::Linear),
            "scaled_linear" => Ok(Self::ScaledLinear),
            "squaredcos_cap_v2" => Ok(Self::SquaredCosCapV2),
            other => Err(EngineError::Config(format!(
                "scheduler_config.json: beta_schedule {other:?} is not supported (linear, scaled_linear, squaredcos_cap_v2)"
            ))),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Linear => "linear",
            Self::ScaledLinear => "scaled_linear",
            Self::SquaredCosCapV2 => "squaredcos_cap_v2",
        }
    }
}

/// The subset of diffusers' scheduler config that defines the forward process.
/// Sampling-time settings (clip_sample, steps_offset, timestep_spacing) are
/// ignored on purpose: the engine's sampler takes them per request.
#[derive(Debug, Clone, Deserialize)]
pub struct SchedulerConfig {
    #[serde(default = "default_t")]
    pub num_train_timesteps: usize,
    #[serde(default = "default_beta_start")]
    pub beta_start: f64,
    #[serde(default = "default_beta_end")]
    pub beta_end: f64,
    #[serde(default = "default_beta_schedule")]
    pub beta_schedule: String,
    #[serde(default = "default_prediction_type")]
    pub prediction_type: String,
    #[serde(default)]
    pub trained_betas: Option<serde_json::Value>,
}

fn default_t() -> usize {
    1000
}
fn default_beta_start() -> f64 {
    0.0001
}
fn default_beta_end() -> f64 {
    0.02
}
fn default_beta_schedule() -> String {
    "linear".into()
}
fn default_prediction_type() -> String {
    "epsilon".into()
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            beta_start: 0.0001,
            beta_end: 0.02,
            beta_schedule: "linear".into(),
            prediction_type: "epsilon".into(),
            trained_betas: None,
        }
    }
}

impl SchedulerConfig {
    pub fn from_file(path: &Path) -> Result<Self, EngineError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| EngineError::Config(format!("{}: {e}", path.display())))?;
        serde_json::from_str(&text)
            .map_err(|e| EngineError::Config(format!("{}: {e}", path.display())))
    }

    /// A diffusers-compatible `scheduler_config.json` (DDIMScheduler).
    pub fn to_diffusers_json(&self) -> serde_json::Value {
        serde_json::json!({
            "_class_name": "DDIMScheduler",
            "_diffusers_version": "0.42.1",
            "num_train_timesteps": self.num_train_timesteps,
            "beta_start": self.beta_start,
            "beta_end": self.beta_end,
            "beta_schedule": self.beta_schedule,
            "prediction_type": self.prediction_type,
            "clip_sample": false,
            "set_alpha_to_one": true,
            "steps_offset": 0,
            "timestep_spacing": "leading",
            "trained_betas": null,
        })
    }
}

/// The forward process: β_t and ᾱ_t for t = 0..T−1.
#[derive(Debug, Clone)]
pub struct NoiseSchedule {
    pub betas: Vec<f64>,
    pub alphas_cumprod: Vec<f64>,
    pub prediction: PredictionType,
    pub kind: BetaSchedule,
}

impl NoiseSchedule {
    pub fn new(cfg: &SchedulerConfig) -> Result<Self, EngineError> {
        if cfg.trained_betas.as_ref().is_some_and(|v| !v.is_null()) {
            return Err(EngineError::Config(
                "scheduler_config.json: trained_betas is not supported".into(),
            ));
        }
        let t = cfg.num_train_timesteps;
        if !(2..=100_000).contains(&t) {
            return Err(EngineError::Config(format!(
                "scheduler_config.json: num_train_timesteps {t} is out of range 2..=100000"
            )));
        }
        let kind = BetaSchedule::parse(&cfg.beta_schedule)?;
        let betas = betas(kind, cfg.beta_start, cfg.beta_end, t);
        if betas.iter().any(|b| !(*b > 0.0 && *b < 1.0)) {
            return Err(EngineError::Config(format!(
                "scheduler_config.json: beta_start {} / beta_end {} give betas outside (0, 1)",
                cfg.beta_start, cfg.beta_end
            )));
        }
        let mut alphas_cumprod = Vec::with_capacity(t);
        let mut acc = 1.0f64;
        for b in &betas {
            acc *= 1.0 - b;
            alphas_cumprod.push(acc);
        }
        Ok(Self {
            betas,
            alphas_cumprod,
            prediction: PredictionType::parse(&cfg.prediction_type)?,
            kind,
        })
    }

    /// T, the number of training timesteps.
    pub fn len(&self) -> usize {
        self.betas.len()
    }

    pub fn is_empty(&self) -> bool {
        self.betas.is_empty()
    }

    /// ᾱ_t, with ᾱ_{−1} = 1 (diffusers `set_alpha_to_one=True`).
    pub fn alpha_bar(&self, t: i64) -> f64 {
        if t < 0 {
            1.0
        } else {
            self.alphas_cumprod[t as usize]
        }
    }
}

/// β_0..β_{T−1} as diffusers computes them.
pub fn betas(kind: BetaSchedule, beta_start: f64, beta_end: f64, t: usize) -> Vec<f64> {
    match kind {
        // torch.linspace(beta_start, beta_end, T, dtype=float32)
        BetaSchedule::Linear => linspace(beta_start, beta_end, t),
        // torch.linspace(beta_start**0.5, beta_end**0.5, T) ** 2
        BetaSchedule::ScaledLinear => linspace(beta_start.sqrt(), beta_end.sqrt(), t)
            .into_iter()
            .map(|b| b * b)
            .collect(),
        // betas_for_alpha_bar(T, max_beta=0.999, alpha_transform_type="cosine")
        BetaSchedule::SquaredCosCapV2 => {
            let f = |x: f64| {
                ((x + 0.008) / 1.008 * std::f64::consts::PI / 2.0)
                    .cos()
                    .powi(2)
            };
            (0..t)
                .map(|i| {
                    let t1 = i as f64 / t as f64;
                    let t2 = (i + 1) as f64 / t as f64;
                    (1.0 - f(t2) / f(t1)).min(0.999)
                })
                .collect()
        }
    }
}

fn linspace(a: f64, b: f64, n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![a];
    }
    let step = (b - a) / (n - 1) as f64;
    (0..n)
        .map(|i| {
            // torch.linspace fills the second half from the end for symmetry.
            if i < n / 2 {
                a + step * i as f64
            } else {
                b - step * (n - 1 - i) as f64
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched() -> NoiseSchedule {
        NoiseSchedule::new(&SchedulerConfig::default()).unwrap()
    }

    fn variance(s: &NoiseSchedule, t: i64, prev: i64) -> f64 {
        let (a, ap) = (s.alpha_bar(t), s.alpha_bar(prev));
        (1.0 - ap) / (1.0 - a) * (1.0 - a / ap)
    }

    #[test]
    fn diffusers_variance_vectors() {
        // diffusers tests/schedulers/test_scheduler_ddim.py::test_variance
        let s = sched();
        for (t, p, want) in [
            (420, 400, 0.14771),
            (980, 960, 0.32460),
            (487, 486, 0.00979),
            (999, 998, 0.02),
        ] {
            let got = variance(&s, t, p);
            assert!((got - want).abs() < 1e-5, "({t},{p}): {got} vs {want}");
        }
        assert!((variance(&s, 0, -1) - 0.0).abs() < 1e-12);
    }

    #[test]
    fn linear_alpha_bar_ends() {
        let s = sched();
        assert!((s.alpha_bar(0) - 0.9999).abs() < 1e-12);
        assert!(
            (s.alpha_bar(999) - 4.04e-5).abs() < 1e-6,
            "{}",
            s.alpha_bar(999)
        );
        assert_eq!(s.alpha_bar(-1), 1.0);
    }

    #[test]
    fn cosine_betas_are_not_all_zero() {
        let b = betas(BetaSchedule::SquaredCosCapV2, 0.0, 0.0, 1000);
        assert!(b.iter().all(|&x| x > 0.0 && x <= 0.999));
        assert!(b[0] < 1e-3 && b[999] == 0.999);
    }

    #[test]
    fn unknown_schedule_names_the_field() {
        let cfg = SchedulerConfig {
            beta_schedule: "sigmoid".into(),
            ..Default::default()
        };
        let e = NoiseSchedule::new(&cfg).unwrap_err().to_string();
        assert!(e.contains("beta_schedule") && e.contains("sigmoid"), "{e}");
    }
}
