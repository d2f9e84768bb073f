//! `DownBlock2D`/`AttnDownBlock2D`, `UNetMidBlock2D` and
//! `UpBlock2D`/`AttnUpBlock2D` (diffusers `unet_2d_blocks.py`). An attention
//! block follows every resnet in the Attn variants.
use tch::{nn, nn::Module, Tensor};

use super::attention::SpatialAttention;
use super::resnet::{Downsample2D, ResnetBlock2D, Upsample2D};

/// What every block shares.
#[derive(Debug, Clone, Copy)]
pub struct BlockConfig {
    pub temb: i64,
    pub groups: i64,
    pub eps: f64,
    pub dropout: f64,
    pub head_dim: Option<i64>,
}

impl BlockConfig {
    fn head_dim(&self, ch: i64) -> i64 {
        self.head_dim.unwrap_or(ch)
    }
}

#[derive(Debug)]
pub struct DownBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<SpatialAttention>,
    downsampler: Option<Downsample2D>,
}

impl DownBlock {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        vs: nn::Path,
        cin: i64,
        cout: i64,
        layers: i64,
        attn: bool,
        downsample: Option<i64>,
        c: BlockConfig,
    ) -> Self {
        let mut resnets = vec![];
        let mut attentions = vec![];
        for j in 0..layers {
            let i = if j == 0 { cin } else { cout };
            resnets.push(ResnetBlock2D::new(
                &vs / "resnets" / j,
                i,
                cout,
                c.temb,
                c.groups,
                c.eps,
                c.dropout,
                1.0,
            ));
            if attn {
                attentions.push(SpatialAttention::new(
                    &vs / "attentions" / j,
                    cout,
                    c.head_dim(cout),
                    c.groups,
                    c.eps,
                    1.0,
                ));
            }
        }
        let downsampler =
            downsample.map(|pad| Downsample2D::new(&vs / "downsamplers" / 0, cout, pad));
        Self {
            resnets,
            attentions,
            downsampler,
        }
    }

    /// Returns the block output and pushes every intermediate state on `skips`.
    pub fn forward(
        &self,
        xs: &Tensor,
        temb: &Tensor,
        skips: &mut Vec<Tensor>,
        train: bool,
    ) -> Tensor {
        let mut h = xs.shallow_clone();
        for (j, r) in self.resnets.iter().enumerate() {
            h = r.forward(&h, temb, train);
            if let Some(a) = self.attentions.get(j) {
                h = a.forward(&h);
            }
            skips.push(h.shallow_clone());
        }
        if let Some(d) = &self.downsampler {
            h = d.forward(&h);
            skips.push(h.shallow_clone());
        }
        h
    }
}

#[derive(Debug)]
pub struct MidBlock {
    resnet0: ResnetBlock2D,
    attention: Option<SpatialAttention>,
    resnet1: ResnetBlock2D,
}

impl MidBlock {
    pub fn new(vs: nn::Path, ch: i64, add_attention: bool, scale: f64, c: BlockConfig) -> Self {
        Self {
            resnet0: ResnetBlock2D::new(
                &vs / "resnets" / 0,
                ch,
                ch,
                c.temb,
                c.groups,
                c.eps,
                c.dropout,
                scale,
            ),
            attention: add_attention.then(|| {
                SpatialAttention::new(
                    &vs / "attentions" / 0,
                    ch,
                    c.head_dim(ch),
                    c.groups,
                    c.eps,
                    scale,
                )
            }),
            resnet1: ResnetBlock2D::new(
                &vs / "resnets" / 1,
                ch,
                ch,
                c.temb,
                c.groups,
                c.eps,
                c.dropout,
                scale,
            ),
        }
    }

    pub fn forward(&self, xs: &Tensor, temb: &Tensor, train: bool) -> Tensor {
        let mut h = self.resnet0.forward(xs, temb, train);
        if let Some(a) = &self.attention {
            h = a.forward(&h);
        }
        self.resnet1.forward(&h, temb, train)
    }
}

#[derive(Debug)]
pub struct UpBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<SpatialAttention>,
    upsampler: Option<Upsample2D>,
}

impl UpBlock {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        vs: nn::Path,
        cin: i64,
        prev: i64,
        cout: i64,
        layers: i64,
        attn: bool,
        upsample: bool,
        c: BlockConfig,
    ) -> Self {
        let mut resnets = vec![];
        let mut attentions = vec![];
        for j in 0..layers {
            let skip = if j == layers - 1 { cin } else { cout };
            let rin = if j == 0 { prev } else { cout };
            resnets.push(ResnetBlock2D::new(
                &vs / "resnets" / j,
                rin + skip,
                cout,
                c.temb,
                c.groups,
                c.eps,
                c.dropout,
                1.0,
            ));
            if attn {
                attentions.push(SpatialAttention::new(
                    &vs / "attentions" / j,
                    cout,
                    c.head_dim(cout),
                    c.groups,
                    c.eps,
                    1.0,
                ));
            }
        }
        let upsampler = upsample.then(|| Upsample2D::new(&vs / "upsamplers" / 0, cout));
        Self {
            resnets,
            attentions,
            upsampler,
        }
    }

    /// Pops one skip state per resnet from the end of `skips`.
    pub fn forward(
        &self,
        xs: &Tensor,
        temb: &Tensor,
        skips: &mut Vec<Tensor>,
        train: bool,
    ) -> Tensor {
        let mut h = xs.shallow_clone();
        for (j, r) in self.resnets.iter().enumerate() {
            let s = skips.pop().expect("one skip per resnet");
            h = r.forward(&Tensor::cat(&[h, s], 1), temb, train);
            if let Some(a) = self.attentions.get(j) {
                h = a.forward(&h);
            }
        }
        if let Some(u) = &self.upsampler {
            h = u.forward(&h);
        }
        h
    }

    pub fn len(&self) -> usize {
        self.resnets.len()
    }
}
