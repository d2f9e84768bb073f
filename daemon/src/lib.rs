//! `ddimd`: the DDIM engine, the trainer and the gRPC daemon.
//!
//! - [`engine`]: the ε-model (UNet2DModel on tch), schedules, the DDIM sampler,
//!   inversion, interpolation, seeded noise, image and .npy I/O.
//! - [`train`]: `ddimd train` (L_simple, Adam, EMA, checkpoints, Fashion-MNIST).
//! - [`cli`]: the offline subcommands (`sample`, `encode`, `decode`,
//!   `reconstruct`, `interpolate`, `info`, `init-model`, `eval`).
//! - [`compile`]: `ddimd compile` (AOTInductor packages) and `--compiled`.
//! - [`judge`]: the Fashion-MNIST feature network (`ddimd train-judge`).
//! - [`eval`]: Fréchet distance on the judge's features, bootstrap intervals, the
//!   real-vs-real floor (the paper's Table 1 on this model).
pub mod cli;
pub mod compile;
pub mod engine;
pub mod eval;
pub mod judge;
pub mod server;
pub mod train;
