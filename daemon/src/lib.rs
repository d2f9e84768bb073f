//! `ddimd`: the DDIM engine, the trainer and the gRPC daemon.
//!
//! - [`engine`]: the ε-model (UNet2DModel on tch), schedules, the DDIM sampler,
//!   inversion, interpolation, seeded noise, image and .npy I/O.
//! - [`train`]: `ddimd train` (L_simple, Adam, EMA, checkpoints, Fashion-MNIST).
//! - [`cli`]: the offline subcommands (`sample`, `encode`, `decode`,
//!   `reconstruct`, `interpolate`, `info`, `init-model`).
//! - [`judge`]: the Fashion-MNIST feature network (`ddimd train-judge`).
//! - [`compile`]: `ddimd compile` (AOTInductor packages) and `--compiled`.
pub mod cli;
pub mod compile;
pub mod engine;
pub mod judge;
pub mod server;
pub mod train;
