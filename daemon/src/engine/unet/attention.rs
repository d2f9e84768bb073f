//! The spatial self-attention of the DDPM UNet: diffusers `Attention` with a
//! group norm, residual connection and `rescale_output_factor`, as built by
//! `AttnDownBlock2D`/`UNetMidBlock2D` (keys `group_norm`, `to_q`, `to_k`,
//! `to_v`, `to_out.0`), computed with libtorch's fused scaled-dot-product
//! attention like diffusers' `AttnProcessor2_0`.
use tch::{nn, Tensor};

#[derive(Debug)]
pub struct SpatialAttention {
    group_norm: nn::GroupNorm,
    to_q: nn::Linear,
    to_k: nn::Linear,
    to_v: nn::Linear,
    to_out: nn::Linear,
    heads: i64,
    rescale: f64,
}

impl SpatialAttention {
    pub fn new(vs: nn::Path, ch: i64, head_dim: i64, groups: i64, eps: f64, rescale: f64) -> Self {
        let lin = |name: &str| nn::linear(&vs / name, ch, ch, Default::default());
        Self {
            group_norm: nn::group_norm(
                &vs / "group_norm",
                groups,
                ch,
                nn::GroupNormConfig {
                    eps,
                    ..Default::default()
                },
            ),
            to_q: lin("to_q"),
            to_k: lin("to_k"),
            to_v: lin("to_v"),
            to_out: nn::linear(&vs / "to_out" / 0, ch, ch, Default::default()),
            heads: ch / head_dim,
            rescale,
        }
    }

    pub fn forward(&self, xs: &Tensor) -> Tensor {
        let (b, c, h, w) = xs.size4().expect("4-d input");
        let hd = c / self.heads;
        // (B, C, H, W) → (B, HW, C)
        let x = xs
            .apply(&self.group_norm)
            .view([b, c, h * w])
            .transpose(1, 2);
        let split = |t: Tensor| t.view([b, h * w, self.heads, hd]).transpose(1, 2);
        let q = split(x.apply(&self.to_q));
        let k = split(x.apply(&self.to_k));
        let v = split(x.apply(&self.to_v));
        // Fused attention (flash / memory-efficient kernels where libtorch
        // has them), as diffusers' AttnProcessor2_0: the B·heads·HW² score
        // matrix is never materialised.
        let attn = Tensor::scaled_dot_product_attention(
            &q,
            &k,
            &v,
            None::<Tensor>,
            0.0,
            false,
            (hd as f64).powf(-0.5),
            false,
        );
        let out = attn
            .transpose(1, 2)
            .reshape([b, h * w, c])
            .apply(&self.to_out)
            .transpose(1, 2)
            .reshape([b, c, h, w]);
        let out = out + xs;
        if self.rescale == 1.0 {
            out
        } else {
            out / self.rescale
        }
    }
}
