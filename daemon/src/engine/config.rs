//! `unet/config.json` of a diffusers `UNet2DModel`, and what of it the engine
//! supports. A value it does not support fails with an error naming the field
//! and the value.
use serde::{Deserialize, Serialize};
use std::path::Path;

use super::EngineError;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UNetConfig {
    #[serde(default = "d_sample_size")]
    pub sample_size: serde_json::Value,
    #[serde(default = "d_ch")]
    pub in_channels: i64,
    #[serde(default = "d_ch")]
    pub out_channels: i64,
    #[serde(default)]
    pub center_input_sample: bool,
    #[serde(default = "d_time_embedding_type")]
    pub time_embedding_type: String,
    #[serde(default = "d_true")]
    pub flip_sin_to_cos: bool,
    #[serde(default)]
    pub freq_shift: i64,
    #[serde(default = "d_down")]
    pub down_block_types: Vec<String>,
    #[serde(default = "d_up")]
    pub up_block_types: Vec<String>,
    #[serde(default = "d_boc")]
    pub block_out_channels: Vec<i64>,
    #[serde(default = "d_two")]
    pub layers_per_block: i64,
    #[serde(default = "d_one_f")]
    pub mid_block_scale_factor: f64,
    #[serde(default = "d_one")]
    pub downsample_padding: i64,
    #[serde(default = "d_conv")]
    pub downsample_type: String,
    #[serde(default = "d_conv")]
    pub upsample_type: String,
    #[serde(default)]
    pub dropout: f64,
    #[serde(default = "d_silu")]
    pub act_fn: String,
    #[serde(default = "d_head")]
    pub attention_head_dim: Option<i64>,
    #[serde(default = "d_groups")]
    pub norm_num_groups: i64,
    #[serde(default)]
    pub attn_norm_num_groups: Option<i64>,
    #[serde(default = "d_eps")]
    pub norm_eps: f64,
    #[serde(default = "d_default")]
    pub resnet_time_scale_shift: String,
    #[serde(default = "d_true")]
    pub add_attention: bool,
    #[serde(default)]
    pub class_embed_type: Option<String>,
    #[serde(default)]
    pub num_class_embeds: Option<i64>,
    #[serde(default)]
    pub num_train_timesteps: Option<i64>,
}

fn d_sample_size() -> serde_json::Value {
    serde_json::Value::Null
}
fn d_ch() -> i64 {
    3
}
fn d_time_embedding_type() -> String {
    "positional".into()
}
fn d_true() -> bool {
    true
}
fn d_down() -> Vec<String> {
    [
        "DownBlock2D",
        "AttnDownBlock2D",
        "AttnDownBlock2D",
        "AttnDownBlock2D",
    ]
    .map(String::from)
    .to_vec()
}
fn d_up() -> Vec<String> {
    [
        "AttnUpBlock2D",
        "AttnUpBlock2D",
        "AttnUpBlock2D",
        "UpBlock2D",
    ]
    .map(String::from)
    .to_vec()
}
fn d_boc() -> Vec<i64> {
    vec![224, 448, 672, 896]
}
fn d_two() -> i64 {
    2
}
fn d_one() -> i64 {
    1
}
fn d_one_f() -> f64 {
    1.0
}
fn d_conv() -> String {
    "conv".into()
}
fn d_silu() -> String {
    "silu".into()
}
fn d_head() -> Option<i64> {
    Some(8)
}
fn d_groups() -> i64 {
    32
}
fn d_eps() -> f64 {
    1e-5
}
fn d_default() -> String {
    "default".into()
}

fn bad(field: &str, value: impl std::fmt::Debug, why: &str) -> EngineError {
    EngineError::Config(format!(
        "unet/config.json: {field} = {value:?} is not supported: {why}"
    ))
}

impl UNetConfig {
    pub fn from_file(path: &Path) -> Result<Self, EngineError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| EngineError::Config(format!("{}: {e}", path.display())))?;
        let cfg: UNetConfig = serde_json::from_str(&text)
            .map_err(|e| EngineError::Config(format!("{}: {e}", path.display())))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// (height, width) of samples.
    pub fn sample_hw(&self) -> Result<(i64, i64), EngineError> {
        match &self.sample_size {
            serde_json::Value::Number(n) => {
                let v = n
                    .as_i64()
                    .filter(|v| *v > 0)
                    .ok_or_else(|| bad("sample_size", n, "must be a positive integer"))?;
                Ok((v, v))
            }
            serde_json::Value::Array(a) if a.len() == 2 => {
                let h = a[0].as_i64().filter(|v| *v > 0);
                let w = a[1].as_i64().filter(|v| *v > 0);
                match (h, w) {
                    (Some(h), Some(w)) => Ok((h, w)),
                    _ => Err(bad("sample_size", a, "must be positive integers")),
                }
            }
            v => Err(bad("sample_size", v, "must be an integer or [h, w]")),
        }
    }

    pub fn head_dim(&self, channels: i64) -> i64 {
        self.attention_head_dim.unwrap_or(channels)
    }

    pub fn validate(&self) -> Result<(), EngineError> {
        let (h, w) = self.sample_hw()?;
        let n = self.block_out_channels.len();
        if n == 0 {
            return Err(bad(
                "block_out_channels",
                &self.block_out_channels,
                "must not be empty",
            ));
        }
        if self.down_block_types.len() != n {
            return Err(bad(
                "down_block_types",
                &self.down_block_types,
                "needs one entry per block_out_channels",
            ));
        }
        if self.up_block_types.len() != n {
            return Err(bad(
                "up_block_types",
                &self.up_block_types,
                "needs one entry per block_out_channels",
            ));
        }
        for t in &self.down_block_types {
            if t != "DownBlock2D" && t != "AttnDownBlock2D" {
                return Err(bad(
                    "down_block_types",
                    t,
                    "expected DownBlock2D or AttnDownBlock2D",
                ));
            }
        }
        for t in &self.up_block_types {
            if t != "UpBlock2D" && t != "AttnUpBlock2D" {
                return Err(bad(
                    "up_block_types",
                    t,
                    "expected UpBlock2D or AttnUpBlock2D",
                ));
            }
        }
        let down = 1i64 << (n - 1);
        if h % down != 0 || w % down != 0 {
            return Err(bad(
                "sample_size",
                &self.sample_size,
                "must be divisible by 2^(levels-1)",
            ));
        }
        if self.in_channels < 1 || self.out_channels < 1 {
            return Err(bad("in_channels", self.in_channels, "channels must be ≥ 1"));
        }
        if self.layers_per_block < 1 {
            return Err(bad(
                "layers_per_block",
                self.layers_per_block,
                "must be ≥ 1",
            ));
        }
        for &c in &self.block_out_channels {
            if c < 1 || c % self.norm_num_groups != 0 {
                return Err(bad(
                    "norm_num_groups",
                    self.norm_num_groups,
                    "must divide every block_out_channels",
                ));
            }
            let hd = self.head_dim(c);
            if hd < 1 || c % hd != 0 {
                return Err(bad(
                    "attention_head_dim",
                    self.attention_head_dim,
                    "must divide every block_out_channels",
                ));
            }
        }
        if self.time_embedding_type != "positional" {
            return Err(bad(
                "time_embedding_type",
                &self.time_embedding_type,
                "only positional",
            ));
        }
        if self.act_fn != "silu" {
            return Err(bad("act_fn", &self.act_fn, "only silu"));
        }
        if self.resnet_time_scale_shift != "default" {
            return Err(bad(
                "resnet_time_scale_shift",
                &self.resnet_time_scale_shift,
                "only default",
            ));
        }
        if self.downsample_type != "conv" {
            return Err(bad("downsample_type", &self.downsample_type, "only conv"));
        }
        if self.upsample_type != "conv" {
            return Err(bad("upsample_type", &self.upsample_type, "only conv"));
        }
        if self.center_input_sample {
            return Err(bad("center_input_sample", true, "only false"));
        }
        if self.class_embed_type.is_some() {
            return Err(bad(
                "class_embed_type",
                &self.class_embed_type,
                "class conditioning is not supported",
            ));
        }
        if self.num_class_embeds.is_some() {
            return Err(bad(
                "num_class_embeds",
                self.num_class_embeds,
                "class conditioning is not supported",
            ));
        }
        if let Some(g) = self.attn_norm_num_groups {
            if g != self.norm_num_groups {
                return Err(bad(
                    "attn_norm_num_groups",
                    g,
                    "only equal to norm_num_groups",
                ));
            }
        }
        if self.downsample_padding != 0 && self.downsample_padding != 1 {
            return Err(bad(
                "downsample_padding",
                self.downsample_padding,
                "only 0 or 1",
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(bad("dropout", self.dropout, "must be in [0, 1)"));
        }
        Ok(())
    }

    /// A diffusers-compatible config.json (UNet2DModel).
    pub fn to_diffusers_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).expect("config serialises");
        let m = v.as_object_mut().expect("object");
        m.insert("_class_name".into(), "UNet2DModel".into());
        m.insert("_diffusers_version".into(), "0.42.1".into());
        v
    }

    /// Named sizes for `ddimd train` and `ddimd init-model`.
    pub fn preset(name: &str, channels: i64, size: i64) -> Option<Self> {
        let base = |boc: Vec<i64>,
                    down: &[&str],
                    up: &[&str],
                    layers: i64,
                    groups: i64,
                    dropout: f64,
                    freq: (bool, i64)| UNetConfig {
            sample_size: size.into(),
            in_channels: channels,
            out_channels: channels,
            center_input_sample: false,
            time_embedding_type: "positional".into(),
            flip_sin_to_cos: freq.0,
            freq_shift: freq.1,
            down_block_types: down.iter().map(|s| s.to_string()).collect(),
            up_block_types: up.iter().map(|s| s.to_string()).collect(),
            block_out_channels: boc,
            layers_per_block: layers,
            mid_block_scale_factor: 1.0,
            downsample_padding: 0,
            downsample_type: "conv".into(),
            upsample_type: "conv".into(),
            dropout,
            act_fn: "silu".into(),
            attention_head_dim: Some(8),
            norm_num_groups: groups,
            attn_norm_num_groups: None,
            norm_eps: 1e-6,
            resnet_time_scale_shift: "default".into(),
            add_attention: true,
            class_embed_type: None,
            num_class_embeds: None,
            num_train_timesteps: None,
        };
        Some(match name {
            // For tests: a few thousand parameters, random weights.
            "test" => base(
                vec![8, 16],
                &["DownBlock2D", "DownBlock2D"],
                &["UpBlock2D", "UpBlock2D"],
                1,
                4,
                0.0,
                (false, 1),
            ),
            "test-attn" => base(
                vec![8, 16],
                &["DownBlock2D", "AttnDownBlock2D"],
                &["AttnUpBlock2D", "UpBlock2D"],
                1,
                4,
                0.0,
                (false, 1),
            ),
            // ~1.1M parameters: trains on a 2-core CPU in about an hour.
            "tiny" => base(
                vec![32, 64, 64],
                &["DownBlock2D", "DownBlock2D", "AttnDownBlock2D"],
                &["AttnUpBlock2D", "UpBlock2D", "UpBlock2D"],
                1,
                8,
                0.0,
                (false, 1),
            ),
            // 3.8M parameters (15 MB): the shipped Fashion-MNIST model, for a GPU.
            "medium" => base(
                vec![48, 96, 96],
                &["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"],
                &["AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
                2,
                16,
                0.0,
                (false, 1),
            ),
            // ~6M parameters, for a GPU.
            "small" => base(
                vec![64, 128, 128],
                &["DownBlock2D", "AttnDownBlock2D", "DownBlock2D"],
                &["UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
                2,
                32,
                0.1,
                (false, 1),
            ),
            // Ho et al. CIFAR-10: ch 128, mult 1,2,2,2, attention at 16x16, 35.7M.
            "cifar10" => base(
                vec![128, 256, 256, 256],
                &[
                    "DownBlock2D",
                    "AttnDownBlock2D",
                    "DownBlock2D",
                    "DownBlock2D",
                ],
                &["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
                2,
                32,
                0.1,
                (false, 1),
            ),
            _ => return None,
        })
    }
}
