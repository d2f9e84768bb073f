//! `UNet2DModel` (diffusers `unets/unet_2d.py`) with positional time
//! embedding: conv_in → down blocks → mid block → up blocks → GroupNorm →
//! SiLU → conv_out.
use tch::{nn, nn::Module, Tensor};

use super::blocks::{BlockConfig, DownBlock, MidBlock, UpBlock};
use super::embeddings::{timestep_embedding, TimestepEmbedding};
use super::resnet::conv3;
use crate::engine::config::UNetConfig;
use crate::engine::EngineError;

#[derive(Debug)]
pub struct UNet2DModel {
    time_embedding: TimestepEmbedding,
    conv_in: nn::Conv2D,
    down_blocks: Vec<DownBlock>,
    mid_block: MidBlock,
    up_blocks: Vec<UpBlock>,
    conv_norm_out: nn::GroupNorm,
    conv_out: nn::Conv2D,
    base: i64,
    flip_sin_to_cos: bool,
    freq_shift: f64,
}

impl UNet2DModel {
    /// Builds the module tree under `vs` (the VarStore root: no prefix).
    pub fn new(vs: &nn::Path, cfg: &UNetConfig) -> Result<Self, EngineError> {
        cfg.validate()?;
        let boc = &cfg.block_out_channels;
        let base = boc[0];
        let temb = base * 4;
        let c = BlockConfig {
            temb,
            groups: cfg.norm_num_groups,
            eps: cfg.norm_eps,
            dropout: cfg.dropout,
            head_dim: cfg.attention_head_dim,
        };
        let n = boc.len();
        let mut down_blocks = vec![];
        let mut out = base;
        for (i, ty) in cfg.down_block_types.iter().enumerate() {
            let cin = out;
            out = boc[i];
            let last = i == n - 1;
            down_blocks.push(DownBlock::new(
                vs / "down_blocks" / i,
                cin,
                out,
                cfg.layers_per_block,
                ty == "AttnDownBlock2D",
                (!last).then_some(cfg.downsample_padding),
                c,
            ));
        }
        let mid_block = MidBlock::new(
            vs / "mid_block",
            boc[n - 1],
            cfg.add_attention,
            cfg.mid_block_scale_factor,
            c,
        );
        let rev: Vec<i64> = boc.iter().rev().copied().collect();
        let mut up_blocks = vec![];
        let mut out = rev[0];
        for (i, ty) in cfg.up_block_types.iter().enumerate() {
            let prev = out;
            out = rev[i];
            let cin = rev[(i + 1).min(n - 1)];
            let last = i == n - 1;
            up_blocks.push(UpBlock::new(
                vs / "up_blocks" / i,
                cin,
                prev,
                out,
                cfg.layers_per_block + 1,
                ty == "AttnUpBlock2D",
                !last,
                c,
            ));
        }
        Ok(Self {
            time_embedding: TimestepEmbedding::new(vs / "time_embedding", base, temb),
            conv_in: conv3(vs / "conv_in", cfg.in_channels, base),
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out: nn::group_norm(
                vs / "conv_norm_out",
                cfg.norm_num_groups,
                base,
                nn::GroupNormConfig {
                    eps: cfg.norm_eps,
                    ..Default::default()
                },
            ),
            conv_out: conv3(vs / "conv_out", base, cfg.out_channels),
            base,
            flip_sin_to_cos: cfg.flip_sin_to_cos,
            freq_shift: cfg.freq_shift as f64,
        })
    }

    /// The network output for `xs` [B, C, H, W] at timesteps `t` [B] (any
    /// numeric kind; positions, not normalised).
    pub fn forward_t(&self, xs: &Tensor, t: &Tensor, train: bool) -> Tensor {
        let t_emb = timestep_embedding(t, self.base, self.flip_sin_to_cos, self.freq_shift)
            .to_kind(xs.kind());
        let emb = self.time_embedding.forward(&t_emb);
        let mut h = xs.apply(&self.conv_in);
        let mut skips = vec![h.shallow_clone()];
        for d in &self.down_blocks {
            h = d.forward(&h, &emb, &mut skips, train);
        }
        h = self.mid_block.forward(&h, &emb, train);
        for u in &self.up_blocks {
            debug_assert!(skips.len() >= u.len());
            h = u.forward(&h, &emb, &mut skips, train);
        }
        h.apply(&self.conv_norm_out).silu().apply(&self.conv_out)
    }
}
