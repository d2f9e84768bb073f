//! Sinusoidal timestep embedding and its MLP (diffusers `embeddings.py`:
//! `get_timestep_embedding`, `Timesteps`, `TimestepEmbedding`).
use tch::{nn, nn::Module, Kind, Tensor};

/// `get_timestep_embedding(t, dim, flip_sin_to_cos, downscale_freq_shift)`.
pub fn timestep_embedding(t: &Tensor, dim: i64, flip_sin_to_cos: bool, freq_shift: f64) -> Tensor {
    let half = dim / 2;
    let exponent = Tensor::arange(half, (Kind::Float, t.device())) * (-(10000f64.ln()))
        / (half as f64 - freq_shift);
    let freqs = exponent.exp();
    let args = t.to_kind(Kind::Float).unsqueeze(1) * freqs.unsqueeze(0);
    let emb = if flip_sin_to_cos {
        Tensor::cat(&[args.cos(), args.sin()], -1)
    } else {
        Tensor::cat(&[args.sin(), args.cos()], -1)
    };
    if dim % 2 == 1 {
        emb.pad([0, 1, 0, 0], "constant", Some(0.0))
    } else {
        emb
    }
}

/// `TimestepEmbedding`: linear_1 → SiLU → linear_2.
#[derive(Debug)]
pub struct TimestepEmbedding {
    linear_1: nn::Linear,
    linear_2: nn::Linear,
}

impl TimestepEmbedding {
    pub fn new(vs: nn::Path, in_dim: i64, dim: i64) -> Self {
        Self {
            linear_1: nn::linear(&vs / "linear_1", in_dim, dim, Default::default()),
            linear_2: nn::linear(&vs / "linear_2", dim, dim, Default::default()),
        }
    }
}

impl Module for TimestepEmbedding {
    fn forward(&self, xs: &Tensor) -> Tensor {
        xs.apply(&self.linear_1).silu().apply(&self.linear_2)
    }
}
