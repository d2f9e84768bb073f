//! The DDPM UNet as diffusers' `UNet2DModel` builds it, on tch.
//!
//! VarStore paths spell diffusers' checkpoint keys
//! (`down_blocks.0.resnets.1.conv1.weight`), so a
//! `diffusion_pytorch_model.safetensors` loads with `VarStore::load` and
//! nothing else, and a trained VarStore saves to one diffusers reads.
mod attention;
mod blocks;
mod embeddings;
mod resnet;
mod unet_2d;

pub use unet_2d::UNet2DModel;
