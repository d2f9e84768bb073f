//! `ddimd train`: the DDPM objective L_simple (L_γ with γ = 1) — the paper's
//! point is that a DDIM needs no other training.
//!
//! Each step draws t ~ U{0..T−1} and ε ~ N(0, I), and minimises
//! ‖ε_θ(√ᾱ_t x0 + √(1−ᾱ_t) ε, t) − ε‖². Adam with linear warm-up and
//! gradient-norm clipping; an EMA of the weights is what gets saved and sampled.
//!
//! Determinism and resume: all randomness of step s (batch indices, t, ε,
//! dropout) comes from `tch::manual_seed(step_seed(seed, s))`, so the RNG state
//! is a function of the seed and the step and a checkpoint needs only the weights, the EMA,
//! Adam's moments and the step. Adam is written out here (a few lines) because
//! tch's optimizer does not expose its state for saving.
pub mod data;

use anyhow::{bail, Context, Result};
use clap::Args;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tch::{nn, Device, Kind, Tensor};

use crate::engine::config::UNetConfig;
use crate::engine::noise;
use crate::engine::sampler::{self, SamplerOptions};
use crate::engine::schedule::SchedulerConfig;
use crate::engine::unet::UNet2DModel;
use crate::engine::{imageio, model::save_pipeline, parse_device, Model, Spacing};

/// `ddimd train`'s flags. The settings that shape the run are `Option`s: a fresh run
/// takes the default of one not given, a `--resume`d run takes the checkpoint's, and a
/// flag given with `--resume` that contradicts the checkpoint is an error naming the
/// flag and both values (a resumed run is exact; only `--steps`, the step to stop at,
/// may move).
#[derive(Debug, Clone, Args)]
pub struct TrainArgs {
    /// Output: a diffusers pipeline folder (EMA weights), with checkpoint/,
    /// loss.csv and samples/ beside.
    #[arg(long)]
    pub out: PathBuf,
    /// `fashion-mnist` (Debian's dataset-fashion-mnist) or a folder of images
    /// [default: fashion-mnist].
    #[arg(long)]
    pub data: Option<String>,
    /// A preset (test, test-attn, tiny, medium, small, cifar10) or a diffusers
    /// config.json [default: tiny].
    #[arg(long)]
    pub model_size: Option<String>,
    /// Image channels of a preset [default: 1].
    #[arg(long)]
    pub channels: Option<i64>,
    /// Image size of a preset [default: 32].
    #[arg(long)]
    pub size: Option<i64>,
    /// Total optimisation steps; with --resume it may differ from the checkpoint's
    /// (train further) [default: 5000].
    #[arg(long)]
    pub steps: Option<u64>,
    /// [default: 64]
    #[arg(long)]
    pub batch: Option<i64>,
    /// [default: 1e-3]
    #[arg(long)]
    pub lr: Option<f64>,
    /// [default: 200]
    #[arg(long)]
    pub warmup: Option<u64>,
    /// The learning rate after the warm-up: constant at --lr, or cosine from --lr
    /// down to 0 at --steps [default: constant].
    #[arg(long, value_enum)]
    pub lr_schedule: Option<LrSchedule>,
    /// [default: 1.0]
    #[arg(long)]
    pub grad_clip: Option<f64>,
    /// [default: 0.999]
    #[arg(long)]
    pub ema_decay: Option<f64>,
    #[arg(long, default_value = "500")]
    pub checkpoint_every: u64,
    /// Write a 50-step sample grid every N steps (0: never).
    #[arg(long, default_value = "1000")]
    pub sample_every: u64,
    /// [default: 0]
    #[arg(long)]
    pub seed: Option<u64>,
    /// Continue from <out>/checkpoint with its settings (model, data, batch, lr and
    /// its schedule, warm-up, clipping, EMA decay, seed and, unless given, --steps).
    #[arg(long, conflicts_with = "init_from")]
    pub resume: bool,
    /// Start from the weights of a pipeline folder (e.g. the shipped model) with a
    /// fresh optimizer; its unet/config.json replaces --model-size.
    #[arg(long)]
    pub init_from: Option<PathBuf>,
    #[arg(long, env = "DDIMD_DEVICE", default_value = "auto")]
    pub device: String,
    /// libtorch CPU threads (0: libtorch's default).
    #[arg(long, env = "DDIMD_TORCH_THREADS", default_value_t = 0)]
    pub torch_threads: i32,
    /// Stop after this many steps of this run (for tests), checkpointing.
    #[arg(long, hide = true)]
    pub stop_after: Option<u64>,
}

/// The learning rate after the warm-up.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum LrSchedule {
    /// --lr until the end.
    #[default]
    Constant,
    /// Half a cosine from --lr at the end of the warm-up to 0 at --steps (the
    /// annealed finish of diffusers' `--lr_scheduler cosine`).
    Cosine,
}

impl std::fmt::Display for LrSchedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LrSchedule::Constant => "constant",
            LrSchedule::Cosine => "cosine",
        })
    }
}

/// The learning rate of (0-based) step `step` of a run of `steps`: a linear
/// warm-up over `warmup` steps, then the schedule.
fn lr_at(lr: f64, schedule: LrSchedule, warmup: u64, steps: u64, step: u64) -> f64 {
    let warm = ((step + 1) as f64 / warmup.max(1) as f64).min(1.0);
    let after = match schedule {
        LrSchedule::Constant => 1.0,
        LrSchedule::Cosine if step < warmup => 1.0,
        LrSchedule::Cosine => {
            let span = steps.saturating_sub(warmup).max(1) as f64;
            let done = ((step - warmup) as f64 / span).min(1.0);
            0.5 * (1.0 + (std::f64::consts::PI * done).cos())
        }
    };
    lr * warm * after
}

/// The settings of a run: the flags with their defaults, or a checkpoint's.
#[derive(Debug, Clone)]
struct Settings {
    data: String,
    /// What `model:` logs: the preset or file, or "the checkpoint's config".
    model_name: String,
    cfg: UNetConfig,
    steps: u64,
    batch: i64,
    lr: f64,
    warmup: u64,
    lr_schedule: LrSchedule,
    grad_clip: f64,
    ema_decay: f64,
    seed: u64,
}

const DEFAULT_DATA: &str = "fashion-mnist";
const DEFAULT_MODEL_SIZE: &str = "tiny";
const DEFAULT_STEPS: u64 = 5000;
const DEFAULT_BATCH: i64 = 64;
const DEFAULT_LR: f64 = 1e-3;
const DEFAULT_WARMUP: u64 = 200;
const DEFAULT_GRAD_CLIP: f64 = 1.0;
const DEFAULT_EMA_DECAY: f64 = 0.999;

impl Settings {
    /// A fresh run: the flags, defaults for those not given.
    fn fresh(a: &TrainArgs) -> Result<Self> {
        Ok(Settings {
            data: a.data.clone().unwrap_or_else(|| DEFAULT_DATA.into()),
            model_name: match (&a.init_from, &a.model_size) {
                (Some(dir), _) => format!("{} (its unet/config.json)", dir.display()),
                (None, Some(m)) => m.clone(),
                (None, None) => DEFAULT_MODEL_SIZE.into(),
            },
            cfg: resolve_config(a)?,
            steps: a.steps.unwrap_or(DEFAULT_STEPS),
            batch: a.batch.unwrap_or(DEFAULT_BATCH),
            lr: a.lr.unwrap_or(DEFAULT_LR),
            warmup: a.warmup.unwrap_or(DEFAULT_WARMUP),
            lr_schedule: a.lr_schedule.unwrap_or_default(),
            grad_clip: a.grad_clip.unwrap_or(DEFAULT_GRAD_CLIP),
            ema_decay: a.ema_decay.unwrap_or(DEFAULT_EMA_DECAY),
            seed: a.seed.unwrap_or(0),
        })
    }

    /// A resumed run: the checkpoint's settings. A flag given that contradicts one
    /// is an error naming the flag and both values; a setting an older checkpoint did
    /// not record comes from its flag or default.
    fn resumed(a: &TrainArgs, st: &TrainState, state_path: &Path) -> Result<Self> {
        let mut clashes: Vec<String> = vec![];
        fn pick<T: PartialEq + std::fmt::Display + Clone>(
            clashes: &mut Vec<String>,
            flag: &str,
            given: &Option<T>,
            saved: Option<T>,
            default: T,
        ) -> T {
            match (given, saved) {
                (Some(g), Some(s)) if *g != s => {
                    clashes.push(format!("{flag} {g} (the checkpoint has {s})"));
                    s
                }
                (_, Some(s)) => s,
                (Some(g), None) => g.clone(),
                (None, None) => default,
            }
        }
        let data = pick(
            &mut clashes,
            "--data",
            &a.data,
            st.data.clone(),
            DEFAULT_DATA.to_string(),
        );
        let batch = pick(&mut clashes, "--batch", &a.batch, Some(st.batch), 0);
        let lr = pick(&mut clashes, "--lr", &a.lr, Some(st.lr), 0.0);
        let seed = pick(&mut clashes, "--seed", &a.seed, Some(st.seed), 0);
        let warmup = pick(
            &mut clashes,
            "--warmup",
            &a.warmup,
            st.warmup,
            DEFAULT_WARMUP,
        );
        let lr_schedule = pick(
            &mut clashes,
            "--lr-schedule",
            &a.lr_schedule,
            st.lr_schedule,
            LrSchedule::Constant,
        );
        let grad_clip = pick(
            &mut clashes,
            "--grad-clip",
            &a.grad_clip,
            st.grad_clip,
            DEFAULT_GRAD_CLIP,
        );
        let ema_decay = pick(
            &mut clashes,
            "--ema-decay",
            &a.ema_decay,
            st.ema_decay,
            DEFAULT_EMA_DECAY,
        );
        let saved_cfg: UNetConfig = serde_json::from_value(st.config.clone())
            .with_context(|| format!("{}: config", state_path.display()))?;
        saved_cfg.validate()?;
        let model_flags = a.model_size.is_some() || a.channels.is_some() || a.size.is_some();
        let model_name = if model_flags {
            // The flags not given are the checkpoint's.
            let name = a
                .model_size
                .clone()
                .or_else(|| st.model_size.clone())
                .unwrap_or_else(|| DEFAULT_MODEL_SIZE.into());
            let channels = a.channels.unwrap_or(saved_cfg.in_channels);
            let size = a.size.unwrap_or(saved_cfg.sample_hw()?.0);
            let given = resolve_model(&name, channels, size)?;
            if given.to_diffusers_json() != st.config {
                let flags: Vec<String> = [
                    a.model_size.as_ref().map(|m| format!("--model-size {m}")),
                    a.channels.map(|c| format!("--channels {c}")),
                    a.size.map(|c| format!("--size {c}")),
                ]
                .into_iter()
                .flatten()
                .collect();
                let (h, w) = saved_cfg.sample_hw()?;
                clashes.push(format!(
                    "{} (the checkpoint has another model config: {}{} channel(s), {h}×{w})",
                    flags.join(" "),
                    st.model_size
                        .as_ref()
                        .map(|m| format!("{m}, "))
                        .unwrap_or_default(),
                    saved_cfg.in_channels,
                ));
            }
            name
        } else {
            st.model_size
                .clone()
                .unwrap_or_else(|| "the checkpoint's config".into())
        };
        if !clashes.is_empty() {
            bail!(
                "--resume: {} contradicts the checkpoint in {}; a resumed run keeps its                  settings (drop the flag, or train into another --out)",
                clashes.join(", "),
                state_path.display()
            );
        }
        Ok(Settings {
            data,
            model_name,
            cfg: saved_cfg,
            steps: a.steps.or(st.steps).unwrap_or(DEFAULT_STEPS),
            batch,
            lr,
            warmup,
            lr_schedule,
            grad_clip,
            ema_decay,
            seed,
        })
    }
}

/// Adam moments and the step counter.
struct Adam {
    m: BTreeMap<String, Tensor>,
    v: BTreeMap<String, Tensor>,
}

const B1: f64 = 0.9;
const B2: f64 = 0.999;
const EPS: f64 = 1e-8;

impl Adam {
    fn new(vars: &BTreeMap<String, Tensor>) -> Self {
        let z = |t: &Tensor| t.zeros_like();
        Self {
            m: vars.iter().map(|(k, t)| (k.clone(), z(t))).collect(),
            v: vars.iter().map(|(k, t)| (k.clone(), z(t))).collect(),
        }
    }

    /// One update at (1-based) step `n`.
    fn step(&mut self, vars: &BTreeMap<String, Tensor>, lr: f64, n: u64) {
        let _g = tch::no_grad_guard();
        let c1 = 1.0 - B1.powi(n as i32);
        let c2 = 1.0 - B2.powi(n as i32);
        for (k, p) in vars {
            let g = p.grad();
            if !g.defined() {
                continue;
            }
            let m = self.m.get_mut(k).expect("moment");
            let v = self.v.get_mut(k).expect("moment");
            let _ = m.g_mul_scalar_(B1).g_add_(&(&g * (1.0 - B1)));
            let _ = v.g_mul_scalar_(B2).g_add_(&(g.square() * (1.0 - B2)));
            let upd = (&*m / c1) / ((&*v / c2).sqrt() + EPS) * lr;
            let mut p = p.shallow_clone();
            let _ = p.g_sub_(&upd);
        }
    }
}

fn vars(vs: &nn::VarStore) -> BTreeMap<String, Tensor> {
    vs.variables().into_iter().collect()
}

/// Clips the global gradient norm to `max` on the device (no host sync);
/// returns the norm before clipping as a 0-d tensor.
fn clip_grad_norm(vars: &BTreeMap<String, Tensor>, max: f64) -> Tensor {
    let _g = tch::no_grad_guard();
    let grads: Vec<Tensor> = vars
        .values()
        .map(|p| p.grad())
        .filter(|g| g.defined())
        .collect();
    let sq: Vec<Tensor> = grads.iter().map(|g| g.square().sum(Kind::Float)).collect();
    let norm = Tensor::stack(&sq, 0).sum(Kind::Float).sqrt();
    if max > 0.0 {
        let scale = (norm.reciprocal() * max).clamp_max(1.0);
        for g in &grads {
            let mut g = g.shallow_clone();
            let _ = g.g_mul_(&scale);
        }
    }
    norm
}

/// Re-draws the weights of a freshly built UNet as PyTorch (and so diffusers'
/// `UNet2DModel`) initialises them: every conv and linear weight and its bias
/// uniform in ±1/√fan_in (`reset_parameters`: Kaiming-uniform with a = √5), the
/// GroupNorm scales and shifts left at 1 and 0. tch's defaults differ (Kaiming-uniform
/// with the ReLU gain, ±√(6/fan_in): √6 ≈ 2.45 times wider; conv biases 0): with them
/// the untrained model's output has 2.6 times the standard deviation of diffusers' and
/// training starts from a higher loss and converges more slowly (docs/reproduction.md,
/// the trainer check). Draws in name order from tch's generator, so a seed gives the
/// same weights.
pub fn pytorch_init(vars: &BTreeMap<String, Tensor>) {
    let _g = tch::no_grad_guard();
    let fan_in = |w: &Tensor| -> Option<i64> {
        let s = w.size();
        (s.len() >= 2).then(|| s[1..].iter().product())
    };
    for (k, t) in vars {
        let fan = if k.ends_with(".weight") {
            fan_in(t)
        } else if let Some(stem) = k.strip_suffix(".bias") {
            vars.get(&format!("{stem}.weight")).and_then(fan_in)
        } else {
            None
        };
        if let Some(fan) = fan {
            let b = 1.0 / (fan.max(1) as f64).sqrt();
            let mut t = t.shallow_clone();
            let _ = t.uniform_(-b, b);
        }
    }
}

fn zero_grad(vars: &BTreeMap<String, Tensor>) {
    for p in vars.values() {
        let mut g = p.grad();
        if g.defined() {
            let _ = g.detach_().zero_();
        }
    }
}

fn resolve_config(a: &TrainArgs) -> Result<UNetConfig> {
    if let Some(dir) = &a.init_from {
        return Ok(UNetConfig::from_file(&dir.join("unet/config.json"))?);
    }
    resolve_model(
        a.model_size.as_deref().unwrap_or(DEFAULT_MODEL_SIZE),
        a.channels.unwrap_or(1),
        a.size.unwrap_or(32),
    )
}

/// `--model-size`: a preset or a config.json file.
fn resolve_model(name: &str, channels: i64, size: i64) -> Result<UNetConfig> {
    if let Some(c) = UNetConfig::preset(name, channels, size) {
        return Ok(c);
    }
    let p = Path::new(name);
    if p.is_file() {
        return Ok(UNetConfig::from_file(p)?);
    }
    bail!("--model-size {name:?}: not a preset (test, test-attn, tiny, medium, small, cifar10) nor a config.json file")
}

fn load_data(source: &str, shape: [i64; 3]) -> Result<Tensor> {
    if source == "fashion-mnist" {
        data::fashion_mnist(data::Split::Train, shape)
    } else {
        data::image_folder(Path::new(source), shape)
    }
}

/// The generator seed of training step `step` under `--seed seed` (also the judge
/// trainer's per-epoch seed).
///
/// libtorch's CPU generator (mt19937) keeps only the low 32 bits of a seed, so the
/// seed must reach those bits: `seed · 2^32 + step`, used before, made `--seed`
/// a no-op on CPU (every seed drew the same batches, t and ε). The low half is
/// `step` plus a multiplicative hash of the seed, the high half the seed itself
/// (CUDA's Philox uses all 64 bits). Seed 0 gives `step`, as before, so runs and
/// checkpoints made with the default seed draw what they drew.
pub fn step_seed(seed: u64, step: u64) -> i64 {
    let mix = (seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as u32;
    let low = (step as u32).wrapping_add(mix);
    ((seed << 32) | u64::from(low)) as i64
}

/// `checkpoint/state.json`. Version 1 recorded only step, seed, batch, lr and the
/// model config; version 2 adds the rest of the settings a resume keeps.
#[derive(serde::Serialize, serde::Deserialize)]
struct TrainState {
    v: u32,
    step: u64,
    seed: u64,
    batch: i64,
    lr: f64,
    config: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    steps: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    warmup: Option<u64>,
    /// Absent in checkpoints before schedules: constant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lr_schedule: Option<LrSchedule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    grad_clip: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ema_decay: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    model_size: Option<String>,
    /// Seconds of training so far, over every run of this checkpoint (a resumed
    /// run's `loss.csv` goes on from it); absent in checkpoints before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    elapsed_s: Option<f64>,
}

fn read_state(dir: &Path) -> Result<TrainState> {
    let path = dir.join("state.json");
    let bytes = std::fs::read(&path).with_context(|| {
        format!(
            "--resume: no checkpoint in {} (state.json missing)",
            dir.display()
        )
    })?;
    serde_json::from_slice(&bytes).with_context(|| format!("{}", path.display()))
}

fn save_checkpoint(
    dir: &Path,
    model: &nn::VarStore,
    ema: &nn::VarStore,
    adam: &Adam,
    state: &TrainState,
) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut named: Vec<(String, Tensor)> = vec![];
    for (k, t) in vars(model) {
        named.push((format!("model.{k}"), t.to_device(Device::Cpu).contiguous()));
    }
    for (k, t) in vars(ema) {
        named.push((format!("ema.{k}"), t.to_device(Device::Cpu).contiguous()));
    }
    for (k, t) in &adam.m {
        named.push((format!("adam_m.{k}"), t.to_device(Device::Cpu).contiguous()));
    }
    for (k, t) in &adam.v {
        named.push((format!("adam_v.{k}"), t.to_device(Device::Cpu).contiguous()));
    }
    let tmp = dir.join("state.safetensors.tmp");
    Tensor::write_safetensors(&named, &tmp)?;
    std::fs::rename(&tmp, dir.join("state.safetensors"))?;
    std::fs::write(
        dir.join("state.json.tmp"),
        serde_json::to_vec_pretty(state)?,
    )?;
    std::fs::rename(dir.join("state.json.tmp"), dir.join("state.json"))?;
    Ok(())
}

fn load_checkpoint(
    dir: &Path,
    model: &mut nn::VarStore,
    ema: &mut nn::VarStore,
    adam: &mut Adam,
) -> Result<()> {
    let tensors: BTreeMap<String, Tensor> =
        Tensor::read_safetensors(dir.join("state.safetensors"))?
            .into_iter()
            .collect();
    let _g = tch::no_grad_guard();
    let get = |key: String| {
        tensors
            .get(&key)
            .with_context(|| format!("checkpoint lacks {key}"))
    };
    for (k, mut t) in vars(model) {
        t.copy_(get(format!("model.{k}"))?);
    }
    for (k, mut t) in vars(ema) {
        t.copy_(get(format!("ema.{k}"))?);
    }
    for (k, t) in adam.m.iter_mut() {
        t.copy_(get(format!("adam_m.{k}"))?);
    }
    for (k, t) in adam.v.iter_mut() {
        t.copy_(get(format!("adam_v.{k}"))?);
    }
    Ok(())
}

fn write_samples(
    cfg: &UNetConfig,
    sched: &SchedulerConfig,
    ema: &nn::VarStore,
    device: Device,
    path: &Path,
) -> Result<()> {
    let mut m = Model::from_config(cfg.clone(), sched.clone(), device)?;
    m.vs.copy(ema)?;
    let seeds = noise::seeds(0, 16);
    let xt = noise::initial_noise(&seeds, m.sample_shape(), device);
    let opts = SamplerOptions {
        steps: 50,
        eta: 0.0,
        spacing: Spacing::Uniform,
        sigma_hat: false,
        solver: Default::default(),
    };
    let x0 = sampler::sample(&m, &xt, &opts, &seeds, &mut |_| true)?;
    imageio::save_png(&imageio::grid(&x0, 4, 2), path)?;
    Ok(())
}

pub fn run(a: &TrainArgs) -> Result<()> {
    if a.torch_threads > 0 {
        tch::set_num_threads(a.torch_threads);
    }
    let device = parse_device(&a.device)?;
    let ckpt = a.out.join("checkpoint");
    let mut start = 0u64;
    let s = if a.resume {
        let st = read_state(&ckpt)?;
        start = st.step;
        Settings::resumed(a, &st, &ckpt.join("state.json"))?
    } else {
        if ckpt.join("state.json").exists() {
            bail!(
                "{} already holds a checkpoint: pass --resume to continue it, or choose another --out",
                ckpt.display()
            );
        }
        Settings::fresh(a)?
    };
    let cfg = s.cfg.clone();
    let sched = SchedulerConfig::default();
    let schedule = crate::engine::schedule::NoiseSchedule::new(&sched)?;
    let shape = {
        let (h, w) = cfg.sample_hw()?;
        [cfg.in_channels, h, w]
    };
    if s.batch < 1 || s.steps < 1 {
        bail!("--batch and --steps must be ≥ 1");
    }
    let data = load_data(&s.data, shape)?;
    let n_data = data.size()[0];
    eprintln!(
        "data: {n_data} images of {shape:?}; device {}",
        crate::engine::model::device_name(device)
    );
    let data = data.to_device(device);

    tch::manual_seed(s.seed as i64);
    let mut vs = nn::VarStore::new(device);
    let unet = UNet2DModel::new(&vs.root(), &cfg)?;
    let mut ema = nn::VarStore::new(device);
    let _ema_unet = UNet2DModel::new(&ema.root(), &cfg)?;
    pytorch_init(&vars(&vs));
    if let Some(dir) = &a.init_from {
        let w = dir.join("unet").join(crate::engine::model::WEIGHTS);
        vs.load(&w)
            .with_context(|| format!("--init-from: cannot load {}", w.display()))?;
        eprintln!("initialised from {}", dir.display());
    }
    ema.copy(&vs)?;
    let params = vars(&vs);
    let mut adam = Adam::new(&params);
    // Training time of the runs before this one (a resumed checkpoint's).
    let mut before_s = 0.0;
    if a.resume {
        before_s = read_state(&ckpt)?.elapsed_s.unwrap_or(0.0);
        load_checkpoint(&ckpt, &mut vs, &mut ema, &mut adam)?;
        eprintln!(
            "resuming at step {start} of {} with the checkpoint's settings: data {}, batch {}, \
             lr {} ({}), warmup {}, grad clip {}, EMA decay {}, seed {}",
            s.steps,
            s.data,
            s.batch,
            s.lr,
            s.lr_schedule,
            s.warmup,
            s.grad_clip,
            s.ema_decay,
            s.seed
        );
    }
    std::fs::create_dir_all(a.out.join("samples"))?;
    let n_params: i64 = params.values().map(|t| t.numel() as i64).sum();
    eprintln!("model: {} ({n_params} parameters)", s.model_name);

    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        let _ = ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst));
    }
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(a.out.join("loss.csv"))?;
    if log.metadata()?.len() == 0 {
        writeln!(log, "step,loss,lr,grad_norm,elapsed_s")?;
    }
    let alpha_bar = Tensor::from_slice(&schedule.alphas_cumprod)
        .to_kind(Kind::Float)
        .to_device(device);
    let t_train = schedule.len() as i64;
    let pb = crate::cli::progress(s.steps, "training");
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "step {pos}/{len} [{bar:30}] {msg} {per_sec} ETA {eta}",
        )
        .expect("template")
        .progress_chars("=> "),
    );
    pb.set_position(start);
    let started = Instant::now();
    let mut smooth = f64::NAN;
    let save = |step: u64, vs: &nn::VarStore, ema: &nn::VarStore, adam: &Adam| -> Result<()> {
        let st = TrainState {
            v: 2,
            step,
            seed: s.seed,
            batch: s.batch,
            lr: s.lr,
            config: cfg.to_diffusers_json(),
            steps: Some(s.steps),
            warmup: Some(s.warmup),
            lr_schedule: Some(s.lr_schedule),
            grad_clip: Some(s.grad_clip),
            ema_decay: Some(s.ema_decay),
            data: Some(s.data.clone()),
            model_size: Some(s.model_name.clone()),
            elapsed_s: Some(before_s + started.elapsed().as_secs_f64()),
        };
        save_checkpoint(&ckpt, vs, ema, adam, &st)?;
        save_pipeline(ema, &cfg, &sched, &a.out)?;
        Ok(())
    };
    // The map holds shallow clones: the EMA update writes the VarStore's own tensors.
    let ema_vars = vars(&ema);
    let mut step = start;
    let end = a
        .stop_after
        .map(|k| (start + k).min(s.steps))
        .unwrap_or(s.steps);
    while step < end {
        if stop.load(Ordering::SeqCst) {
            pb.suspend(|| eprintln!("interrupted: writing a checkpoint at step {step}"));
            save(step, &vs, &ema, &adam)?;
            pb.abandon();
            eprintln!(
                "checkpoint written to {}; continue with --resume",
                ckpt.display()
            );
            return Ok(());
        }
        tch::manual_seed(step_seed(s.seed, step));
        let idx = Tensor::randint(n_data, [s.batch], (Kind::Int64, device));
        let x0 = data.index_select(0, &idx);
        let t = Tensor::randint(t_train, [s.batch], (Kind::Int64, device));
        let eps = Tensor::randn(x0.size(), (Kind::Float, device));
        let ab = alpha_bar.index_select(0, &t).view([-1, 1, 1, 1]);
        let xt = &x0 * ab.sqrt() + &eps * (ab.ones_like() - &ab).sqrt();
        let pred = unet.forward_t(&xt, &t, true);
        let loss = (pred - &eps).square().mean(Kind::Float);
        zero_grad(&params);
        loss.backward();
        let gn = clip_grad_norm(&params, s.grad_clip);
        let lr = lr_at(s.lr, s.lr_schedule, s.warmup, s.steps, step);
        adam.step(&params, lr, step + 1);
        {
            let _g = tch::no_grad_guard();
            let d = s.ema_decay.min((1.0 + step as f64) / (10.0 + step as f64));
            for (k, p) in &params {
                let mut e = ema_vars[k].shallow_clone();
                let _ = e.g_mul_scalar_(d).g_add_(&(p * (1.0 - d)));
            }
        }
        step += 1;
        let l = loss.double_value(&[]);
        let gn = if step.is_multiple_of(10) || step == end {
            gn.double_value(&[])
        } else {
            f64::NAN
        };
        if !l.is_finite() {
            bail!("loss became {l} at step {step}: lower --lr");
        }
        smooth = if smooth.is_nan() {
            l
        } else {
            0.98 * smooth + 0.02 * l
        };
        pb.set_position(step);
        pb.set_message(format!("loss {smooth:.4}"));
        if step.is_multiple_of(10) || step == end {
            writeln!(
                log,
                "{step},{l:.6},{lr:.3e},{gn:.4},{:.1}",
                before_s + started.elapsed().as_secs_f64()
            )?;
        }
        if step.is_multiple_of(a.checkpoint_every.max(1)) || step == end {
            save(step, &vs, &ema, &adam)?;
        }
        if a.sample_every > 0 && (step.is_multiple_of(a.sample_every) || step == s.steps) {
            write_samples(
                &cfg,
                &sched,
                &ema,
                device,
                &a.out.join("samples").join(format!("step_{step:06}.png")),
            )?;
        }
    }
    if step == start {
        // Nothing to train (already at --steps): still write the pipeline.
        save(step, &vs, &ema, &adam)?;
    }
    pb.finish();
    let run_s = started.elapsed().as_secs_f64();
    let total = if before_s > 0.0 {
        format!(" ({:.1} s over every run)", before_s + run_s)
    } else {
        String::new()
    };
    eprintln!(
        "trained to step {step} in {run_s:.1} s{total}, smoothed loss {smooth:.4}; pipeline in {}",
        a.out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// libtorch's CPU generator keeps the low 32 bits of a seed: they must differ
    /// between seeds at the same step (and between steps), and seed 0 keeps the
    /// step as its seed (runs made with the default seed draw what they drew).
    #[test]
    fn step_seed_reaches_the_bits_the_cpu_generator_keeps() {
        let low = |seed, step| step_seed(seed, step) as u64 & 0xFFFF_FFFF;
        for step in [0u64, 1, 7, 2849, 100_000] {
            assert_eq!(step_seed(0, step), step as i64);
            let lows: std::collections::BTreeSet<u64> =
                (0..64).map(|seed| low(seed, step)).collect();
            assert_eq!(lows.len(), 64, "seeds collide at step {step}");
        }
        let per_seed: std::collections::BTreeSet<u64> =
            (0..5000).map(|step| low(3, step)).collect();
        assert_eq!(per_seed.len(), 5000);
        // The same seed drawn in the high half too (CUDA's Philox keeps all 64 bits).
        assert_eq!(step_seed(5, 9) as u64 >> 32, 5);
    }

    /// The warm-up rises linearly to --lr; constant stays there; cosine falls from
    /// --lr at the warm-up's end through half at the middle to 0 at --steps.
    #[test]
    fn lr_schedules() {
        let c = |step| lr_at(1.0, LrSchedule::Constant, 10, 110, step);
        let k = |step| lr_at(1.0, LrSchedule::Cosine, 10, 110, step);
        assert_eq!((c(0), c(4), c(9), c(109)), (0.1, 0.5, 1.0, 1.0));
        assert_eq!((k(0), k(4), k(10)), (0.1, 0.5, 1.0));
        assert!((k(60) - 0.5).abs() < 1e-12);
        assert!(k(109) > 0.0 && k(109) < 1e-3 && k(110) == 0.0);
        assert!((11..110).all(|s| k(s) < k(s - 1)));
        // No warm-up, and a run with nothing after it.
        assert_eq!(lr_at(2.0, LrSchedule::Cosine, 0, 4, 0), 2.0);
        assert_eq!(lr_at(2.0, LrSchedule::Cosine, 5, 5, 4), 2.0);
    }

    /// The test-attn preset initialised as PyTorch does: conv and linear weights and
    /// biases inside ±1/√fan_in with a uniform's spread, GroupNorm at 1 and 0.
    #[test]
    fn pytorch_init_matches_torch_reset_parameters() {
        tch::manual_seed(0);
        let cfg = UNetConfig::preset("test-attn", 1, 32).unwrap();
        let vs = nn::VarStore::new(Device::Cpu);
        let _unet = UNet2DModel::new(&vs.root(), &cfg).unwrap();
        let v = vars(&vs);
        pytorch_init(&v);
        let mut convs = 0;
        for (k, t) in &v {
            let weight = v
                .get(&k.replace(".bias", ".weight"))
                .filter(|w| w.dim() >= 2);
            let Some(w) = weight else {
                // GroupNorm: scale 1, shift 0.
                let want = if k.ends_with(".weight") { 1.0 } else { 0.0 };
                assert_eq!(t.min().double_value(&[]), want, "{k}");
                assert_eq!(t.max().double_value(&[]), want, "{k}");
                continue;
            };
            let fan: i64 = w.size()[1..].iter().product();
            let b = 1.0 / (fan as f64).sqrt();
            let amax = t.abs().max().double_value(&[]);
            assert!(
                amax <= b + 1e-7 && amax > 0.0,
                "{k}: max |x| {amax}, bound {b}"
            );
            if t.numel() >= 1000 {
                // A uniform on ±b has standard deviation b/√3.
                let sd = t.std(true).double_value(&[]);
                let want = b / 3f64.sqrt();
                assert!((sd / want - 1.0).abs() < 0.1, "{k}: sd {sd}, want {want}");
                convs += 1;
            }
        }
        assert!(convs > 5, "{convs} large weights checked");
    }
}
