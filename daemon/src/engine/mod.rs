//! The DDIM engine: the ε-model, the noise schedule, the generalized DDIM
//! step, inversion, interpolation and per-sample seeded noise.
//!
//! - [`model`]: loads a diffusers pipeline folder (or a bare UNet folder).
//! - [`unet`]: `UNet2DModel` on tch with diffusers' key names.
//! - [`schedule`], [`spacing`]: ᾱ_t and the sub-sequences τ.
//! - [`sampler`]: eq. 12 for any η, σ̂, and the η = 0 ODE run backwards.
//! - [`dpm`]: DPM-Solver++(2M), the second-order solver of the same η = 0 ODE.
//! - [`noise`]: x_T and η-noise from a per-(seed, index) generator.
//! - [`interp`]: slerp / lerp.
//! - [`edit`]: editing on x_T: variation, combination on the sphere, attribute
//!   directions, the 2-D grid, re-noise (partial inversion) and inpainting.
//! - [`imageio`], [`npy`]: PNG and .npy conversions.
//! - [`compiled`]: AOTInductor packages of the UNet (`ddimd compile`, `--compiled`).
pub mod compiled;
pub mod config;
pub mod dpm;
pub mod edit;
pub mod imageio;
pub mod interp;
pub mod model;
pub mod noise;
pub mod npy;
pub mod sampler;
pub mod schedule;
pub mod spacing;
pub mod unet;

pub use dpm::Solver;
pub use model::{parse_device, Model};
pub use sampler::{SamplerOptions, StepEvent};
pub use spacing::Spacing;

/// Errors of the engine. Every variant's message is one line a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    InvalidInput(String),
    #[error("{0}")]
    Io(String),
    #[error("the output contains NaN or Inf ({0}); the model or the input is broken")]
    NonFinite(String),
    #[error("cancelled")]
    Cancelled,
    #[error("torch: {0}")]
    Torch(String),
}

impl From<tch::TchError> for EngineError {
    fn from(e: tch::TchError) -> Self {
        EngineError::Torch(first_line(&e.to_string()))
    }
}

/// The first line of a libtorch message (the rest is a C++ backtrace).
pub(crate) fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").to_string()
}
