//! `ResnetBlock2D` (time_embedding_norm "default"), `Downsample2D` and
//! `Upsample2D` with convolutions (diffusers `resnet.py`, `downsampling.py`,
//! `upsampling.py`).
use tch::{nn, nn::Module, Tensor};

#[derive(Debug)]
pub struct ResnetBlock2D {
    norm1: nn::GroupNorm,
    conv1: nn::Conv2D,
    time_emb_proj: nn::Linear,
    norm2: nn::GroupNorm,
    conv2: nn::Conv2D,
    conv_shortcut: Option<nn::Conv2D>,
    dropout: f64,
    output_scale_factor: f64,
}

fn group_norm(vs: nn::Path, groups: i64, ch: i64, eps: f64) -> nn::GroupNorm {
    nn::group_norm(
        vs,
        groups,
        ch,
        nn::GroupNormConfig {
            eps,
            ..Default::default()
        },
    )
}

pub fn conv3(vs: nn::Path, cin: i64, cout: i64) -> nn::Conv2D {
    nn::conv2d(
        vs,
        cin,
        cout,
        3,
        nn::ConvConfig {
            padding: 1,
            ..Default::default()
        },
    )
}

impl ResnetBlock2D {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        vs: nn::Path,
        cin: i64,
        cout: i64,
        temb: i64,
        groups: i64,
        eps: f64,
        dropout: f64,
        output_scale_factor: f64,
    ) -> Self {
        Self {
            norm1: group_norm(&vs / "norm1", groups, cin, eps),
            conv1: conv3(&vs / "conv1", cin, cout),
            time_emb_proj: nn::linear(&vs / "time_emb_proj", temb, cout, Default::default()),
            norm2: group_norm(&vs / "norm2", groups, cout, eps),
            conv2: conv3(&vs / "conv2", cout, cout),
            conv_shortcut: (cin != cout)
                .then(|| nn::conv2d(&vs / "conv_shortcut", cin, cout, 1, Default::default())),
            dropout,
            output_scale_factor,
        }
    }

    pub fn forward(&self, xs: &Tensor, temb: &Tensor, train: bool) -> Tensor {
        let h = xs.apply(&self.norm1).silu().apply(&self.conv1);
        let t = temb
            .silu()
            .apply(&self.time_emb_proj)
            .unsqueeze(-1)
            .unsqueeze(-1);
        let h = (h + t).apply(&self.norm2).silu();
        let h = h.dropout(self.dropout, train).apply(&self.conv2);
        let skip = match &self.conv_shortcut {
            Some(c) => xs.apply(c),
            None => xs.shallow_clone(),
        };
        let out = skip + h;
        if self.output_scale_factor == 1.0 {
            out
        } else {
            out / self.output_scale_factor
        }
    }
}

/// Stride-2 3×3 conv; with `downsample_padding` 0 it pads (0,1,0,1) by hand
/// first (the DDPM convention), with 1 the conv pads itself.
#[derive(Debug)]
pub struct Downsample2D {
    conv: nn::Conv2D,
    pad_by_hand: bool,
}

impl Downsample2D {
    pub fn new(vs: nn::Path, ch: i64, padding: i64) -> Self {
        let cfg = nn::ConvConfig {
            stride: 2,
            padding,
            ..Default::default()
        };
        Self {
            conv: nn::conv2d(&vs / "conv", ch, ch, 3, cfg),
            pad_by_hand: padding == 0,
        }
    }
}

impl Module for Downsample2D {
    fn forward(&self, xs: &Tensor) -> Tensor {
        if self.pad_by_hand {
            xs.pad([0, 1, 0, 1], "constant", Some(0.0))
                .apply(&self.conv)
        } else {
            xs.apply(&self.conv)
        }
    }
}

/// Nearest ×2 then a 3×3 conv.
#[derive(Debug)]
pub struct Upsample2D {
    conv: nn::Conv2D,
}

impl Upsample2D {
    pub fn new(vs: nn::Path, ch: i64) -> Self {
        Self {
            conv: conv3(&vs / "conv", ch, ch),
        }
    }
}

impl Module for Upsample2D {
    fn forward(&self, xs: &Tensor) -> Tensor {
        let (_, _, h, w) = xs.size4().expect("4-d input");
        xs.upsample_nearest2d([h * 2, w * 2], None, None)
            .apply(&self.conv)
    }
}
