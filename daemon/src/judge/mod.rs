//! The judge: a small CNN classifier for Fashion-MNIST (1×32×32 in [−1, 1], the
//! engine's model space) whose penultimate activations are the feature space of
//! [`crate::eval`] — the Fashion-MNIST counterpart of the Inception features behind
//! FID, trained by the project (`ddimd train-judge`).
//!
//! Architecture (`ddimd-judge-cnn-v1`): three blocks conv3×3 → BatchNorm → ReLU →
//! max-pool 2 (channels c1, c2, c3; 32 → 16 → 8 → 4), flatten (c3·16), a linear
//! layer to `feature_dim` with ReLU (the **features**), dropout 0.3 while training,
//! and a linear layer to the 10 classes. The default 32/64/128 → 128 has 366k
//! parameters (1.5 MB of safetensors).
//!
//! A judge folder holds `judge.json` (architecture, classes, how it was trained and
//! its test accuracy) and `judge.safetensors`. Its fingerprint is the SHA-256 of
//! both (first 8 bytes, hex), as a model's is.
use anyhow::{bail, Context, Result};
use clap::Args;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::nn::{self, ModuleT, OptimizerConfig};
use tch::{Device, Kind, Tensor};

use crate::engine::{first_line, parse_device, EngineError};
use crate::train::data::{self, Split, FASHION_MNIST_CLASSES};

pub const CONFIG: &str = "judge.json";
pub const WEIGHTS: &str = "judge.safetensors";
pub const ARCH: &str = "ddimd-judge-cnn-v1";

/// How the judge was trained (recorded in `judge.json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Training {
    pub command: String,
    pub epochs: u64,
    pub steps: u64,
    pub batch: i64,
    pub lr: f64,
    pub seed: u64,
    pub train_images: usize,
    pub wall_seconds: f64,
    pub device: String,
}

/// `judge.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JudgeConfig {
    pub arch: String,
    pub in_channels: i64,
    pub image_size: i64,
    pub channels: [i64; 3],
    pub feature_dim: i64,
    pub classes: Vec<String>,
    /// Accuracy on the test split (`test_images` images), None when not measured.
    pub test_accuracy: Option<f64>,
    pub test_images: usize,
    pub training: Training,
}

impl JudgeConfig {
    pub fn new(channels: [i64; 3], feature_dim: i64) -> Self {
        Self {
            arch: ARCH.into(),
            in_channels: 1,
            image_size: 32,
            channels,
            feature_dim,
            classes: FASHION_MNIST_CLASSES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            test_accuracy: None,
            test_images: 0,
            training: Training::default(),
        }
    }

    fn validate(&self, path: &Path) -> Result<(), EngineError> {
        let bad = |what: String| EngineError::Config(format!("{}: {what}", path.display()));
        if self.arch != ARCH {
            return Err(bad(format!("arch {:?} is not {ARCH:?}", self.arch)));
        }
        if self.in_channels != 1 || self.image_size != 32 {
            return Err(bad(format!(
                "expects 1×32×32 inputs, got {}×{}×{}",
                self.in_channels, self.image_size, self.image_size
            )));
        }
        if self.channels.iter().any(|&c| c < 1) || self.feature_dim < 1 {
            return Err(bad("channels and feature_dim must be ≥ 1".into()));
        }
        if self.classes.len() < 2 {
            return Err(bad("needs at least 2 classes".into()));
        }
        Ok(())
    }
}

/// The network.
#[derive(Debug)]
struct Net {
    convs: Vec<(nn::Conv2D, nn::BatchNorm)>,
    fc1: nn::Linear,
    fc2: nn::Linear,
}

impl Net {
    fn new(p: &nn::Path, cfg: &JudgeConfig) -> Self {
        let conv = nn::ConvConfig {
            padding: 1,
            ..Default::default()
        };
        let mut c_in = cfg.in_channels;
        let mut convs = vec![];
        for (i, &c) in cfg.channels.iter().enumerate() {
            convs.push((
                nn::conv2d(p / format!("conv{}", i + 1), c_in, c, 3, conv),
                nn::batch_norm2d(p / format!("bn{}", i + 1), c, Default::default()),
            ));
            c_in = c;
        }
        let s = cfg.image_size / 8;
        let fc1 = nn::linear(p / "fc1", c_in * s * s, cfg.feature_dim, Default::default());
        let fc2 = nn::linear(
            p / "fc2",
            cfg.feature_dim,
            cfg.classes.len() as i64,
            Default::default(),
        );
        Self { convs, fc1, fc2 }
    }

    /// (features, logits).
    fn forward(&self, x: &Tensor, train: bool) -> (Tensor, Tensor) {
        let mut h = x.shallow_clone();
        for (conv, bn) in &self.convs {
            h = bn
                .forward_t(&h.apply(conv), train)
                .relu()
                .max_pool2d_default(2);
        }
        let f = h.flatten(1, -1).apply(&self.fc1).relu();
        let logits = f.dropout(0.3, train).apply(&self.fc2);
        (f, logits)
    }
}

/// A loaded judge.
#[derive(Debug)]
pub struct Judge {
    vs: nn::VarStore,
    net: Net,
    pub config: JudgeConfig,
    pub fingerprint: String,
    pub path: PathBuf,
    pub device: Device,
}

/// What the judge says about a set of images.
#[derive(Debug)]
pub struct Embedding {
    /// [N, D] float64 on the CPU.
    pub features: Tensor,
    /// [N, classes] softmax probabilities, float64 on the CPU.
    pub probs: Tensor,
}

impl Embedding {
    /// Counts of the argmax class.
    pub fn class_histogram(&self) -> Vec<u64> {
        let k = self.probs.size()[1] as usize;
        let mut h = vec![0u64; k];
        let am = Vec::<i64>::try_from(self.probs.argmax(1, false)).expect("argmax");
        for a in am {
            h[a as usize] += 1;
        }
        h
    }

    /// The mean of the largest class probability.
    pub fn mean_confidence(&self) -> f64 {
        if self.probs.size()[0] == 0 {
            return f64::NAN;
        }
        self.probs
            .amax(1, false)
            .mean(Kind::Double)
            .double_value(&[])
    }
}

impl Judge {
    /// A judge with fresh (seeded) random weights.
    pub fn random(config: JudgeConfig, seed: u64, device: Device) -> Self {
        tch::manual_seed(seed as i64);
        let vs = nn::VarStore::new(device);
        let net = Net::new(&vs.root(), &config);
        Self {
            vs,
            net,
            config,
            fingerprint: "random".into(),
            path: PathBuf::new(),
            device,
        }
    }

    /// Loads `dir/judge.json` and `dir/judge.safetensors`.
    pub fn load(dir: &Path, device: Device) -> Result<Self, EngineError> {
        let cfg_path = dir.join(CONFIG);
        let w_path = dir.join(WEIGHTS);
        let read = |p: &Path| {
            std::fs::read(p).map_err(|e| EngineError::Config(format!("{}: {e}", p.display())))
        };
        if !cfg_path.is_file() {
            return Err(EngineError::Config(format!(
                "no judge at {} ({CONFIG} is missing; train one with `ddimd train-judge --out {}`)",
                dir.display(),
                dir.display()
            )));
        }
        let cfg_bytes = read(&cfg_path)?;
        let config: JudgeConfig = serde_json::from_slice(&cfg_bytes)
            .map_err(|e| EngineError::Config(format!("{}: {e}", cfg_path.display())))?;
        config.validate(&cfg_path)?;
        let w_bytes = read(&w_path)?;
        let mut j = Self::random(config, 0, device);
        j.vs.load(&w_path).map_err(|e| {
            EngineError::Config(format!(
                "{}: {}",
                w_path.display(),
                first_line(&e.to_string())
            ))
        })?;
        let mut h = Sha256::new();
        h.update(&cfg_bytes);
        h.update(&w_bytes);
        j.fingerprint = hex::encode(&h.finalize()[..8]);
        j.path = dir.to_path_buf();
        Ok(j)
    }

    /// Writes `judge.json` and `judge.safetensors` into `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), EngineError> {
        let io = |e: std::io::Error| EngineError::Io(format!("{}: {e}", dir.display()));
        std::fs::create_dir_all(dir).map_err(io)?;
        let named: Vec<(String, Tensor)> = self
            .vs
            .variables()
            .into_iter()
            .map(|(k, v)| (k, v.to_device(Device::Cpu).contiguous()))
            .collect();
        let tmp = dir.join(format!("{WEIGHTS}.tmp"));
        Tensor::write_safetensors(&named, &tmp).map_err(|e| EngineError::Io(e.to_string()))?;
        std::fs::rename(&tmp, dir.join(WEIGHTS)).map_err(io)?;
        let json = serde_json::to_string_pretty(&self.config).expect("json") + "\n";
        std::fs::write(dir.join(CONFIG), json).map_err(io)?;
        Ok(())
    }

    pub fn parameter_count(&self) -> u64 {
        self.vs
            .trainable_variables()
            .iter()
            .map(|t| t.numel() as u64)
            .sum()
    }

    /// Checks that `x` is [N, 1, 32, 32].
    fn check(&self, x: &Tensor) -> Result<(), EngineError> {
        let s = x.size();
        let c = &self.config;
        if s.len() != 4 || s[1] != c.in_channels || s[2] != c.image_size || s[3] != c.image_size {
            return Err(EngineError::InvalidInput(format!(
                "the judge expects images [N, {}, {}, {}], got {s:?}",
                c.in_channels, c.image_size, c.image_size
            )));
        }
        Ok(())
    }

    /// Features and class probabilities of `x` ([N, 1, 32, 32] in [−1, 1]), `batch`
    /// rows per call, in eval mode.
    pub fn embed(&self, x: &Tensor, batch: usize) -> Result<Embedding, EngineError> {
        self.check(x)?;
        let _g = tch::no_grad_guard();
        let n = x.size()[0];
        let b = batch.max(1) as i64;
        let (mut fs, mut ps) = (vec![], vec![]);
        let mut start = 0;
        while start < n {
            let len = b.min(n - start);
            let xb = x
                .narrow(0, start, len)
                .to_kind(Kind::Float)
                .to_device(self.device);
            let (f, logits) = self.net.forward(&xb, false);
            fs.push(f.to_device(Device::Cpu).to_kind(Kind::Double));
            ps.push(logits.softmax(1, Kind::Double).to_device(Device::Cpu));
            start += len;
        }
        let d = self.config.feature_dim;
        let k = self.config.classes.len() as i64;
        Ok(Embedding {
            features: if fs.is_empty() {
                Tensor::zeros([0, d], (Kind::Double, Device::Cpu))
            } else {
                Tensor::cat(&fs, 0)
            },
            probs: if ps.is_empty() {
                Tensor::zeros([0, k], (Kind::Double, Device::Cpu))
            } else {
                Tensor::cat(&ps, 0)
            },
        })
    }

    /// Accuracy of the argmax on `x` against `labels` (int64 [N]).
    pub fn accuracy(&self, x: &Tensor, labels: &Tensor, batch: usize) -> Result<f64, EngineError> {
        let e = self.embed(x, batch)?;
        let pred = e.probs.argmax(1, false);
        Ok(pred
            .eq_tensor(&labels.to_device(Device::Cpu))
            .to_kind(Kind::Double)
            .mean(Kind::Double)
            .double_value(&[]))
    }
}

/// The labels of a Fashion-MNIST split as int64 [N].
pub fn fashion_mnist_labels(split: Split) -> Result<Tensor> {
    let images = data::fashion_mnist_path(split);
    let path = data::labels_path_for(&images)
        .with_context(|| format!("{}: no label file name for it", images.display()))?;
    let labels = data::read_idx_labels(&path)?;
    Ok(Tensor::from_slice(&labels).to_kind(Kind::Int64))
}

fn parse_channels(s: &str) -> Result<[i64; 3], String> {
    let v: Vec<i64> = s
        .split(',')
        .map(|p| p.trim().parse::<i64>())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("not three comma-separated integers: {s:?}"))?;
    match v.as_slice() {
        &[a, b, c] if a > 0 && b > 0 && c > 0 => Ok([a, b, c]),
        _ => Err(format!("expected three channel counts ≥ 1, got {s:?}")),
    }
}

/// `ddimd train-judge`'s flags.
#[derive(Debug, Clone, Args)]
pub struct TrainJudgeArgs {
    /// Output folder (judge.json, judge.safetensors), e.g. models/fashion-mnist/judge.
    #[arg(long)]
    pub out: PathBuf,
    /// Passes over the training split.
    #[arg(long, default_value = "4", value_parser = clap::value_parser!(u64).range(1..))]
    pub epochs: u64,
    /// Seed of the initial weights, the shuffling and the dropout.
    #[arg(long, default_value = "0")]
    pub seed: u64,
    #[arg(long, default_value = "128", value_parser = clap::value_parser!(i64).range(1..))]
    pub batch: i64,
    /// Adam's learning rate (cosine-decayed to 5% over the run).
    #[arg(long, default_value = "2e-3")]
    pub lr: f64,
    /// Stop after this many optimisation steps (0: keep the random weights; for tests).
    #[arg(long)]
    pub steps: Option<u64>,
    /// Use only the first N training images (for tests).
    #[arg(long)]
    pub train_images: Option<usize>,
    /// Measure the accuracy on the first N test images [default: all 10,000].
    #[arg(long)]
    pub test_images: Option<usize>,
    /// Channels of the three conv blocks.
    #[arg(long, default_value = "32,64,128", value_parser = parse_channels)]
    pub channels: [i64; 3],
    /// Width of the feature layer.
    #[arg(long, default_value = "128", value_parser = clap::value_parser!(i64).range(1..))]
    pub features: i64,
    #[arg(long, env = "DDIMD_DEVICE", default_value = "auto")]
    pub device: String,
    /// libtorch CPU threads (0: libtorch's default).
    #[arg(long, env = "DDIMD_TORCH_THREADS", default_value_t = 0)]
    pub torch_threads: i32,
}

/// `ddimd train-judge`: trains the classifier on Fashion-MNIST's train split
/// (reproducible for a seed on one device), reports and records its test accuracy.
pub fn train(a: &TrainJudgeArgs) -> Result<()> {
    if a.torch_threads > 0 {
        tch::set_num_threads(a.torch_threads);
    }
    if !a.lr.is_finite() || a.lr <= 0.0 {
        bail!("invalid value \"{}\" for --lr: must be > 0", a.lr);
    }
    let device = parse_device(&a.device)?;
    let started = Instant::now();
    let mut x = data::fashion_mnist(Split::Train, [1, 32, 32])?;
    let mut y = fashion_mnist_labels(Split::Train)?;
    if let Some(n) = a.train_images {
        let n = (n as i64).clamp(1, x.size()[0]);
        x = x.narrow(0, 0, n);
        y = y.narrow(0, 0, n);
    }
    let n = x.size()[0];
    let (x, y) = (x.to_device(device), y.to_device(device));
    let per_epoch = (n + a.batch - 1) / a.batch;
    let total = a.steps.unwrap_or(a.epochs * per_epoch as u64);
    let mut cfg = JudgeConfig::new(a.channels, a.features);
    let mut judge = Judge::random(cfg.clone(), a.seed, device);
    eprintln!(
        "judge: {} parameters; {n} training images; {total} steps of batch {} on {}",
        judge.parameter_count(),
        a.batch,
        crate::engine::model::device_name(device)
    );
    let mut opt = nn::Adam::default().build(&judge.vs, a.lr)?;
    let train_started = Instant::now();
    let pb = crate::cli::progress(total, "training");
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "step {pos}/{len} [{bar:30}] {msg} {per_sec} ETA {eta}",
        )
        .expect("template")
        .progress_chars("=> "),
    );
    let mut step = 0u64;
    let mut epoch = 0u64;
    let mut smooth = f64::NAN;
    'outer: while step < total {
        tch::manual_seed(crate::train::step_seed(a.seed, (1 << 31) ^ epoch));
        let perm = Tensor::randperm(n, (Kind::Int64, device));
        for b in 0..per_epoch {
            if step >= total {
                break 'outer;
            }
            let idx = perm.narrow(0, b * a.batch, a.batch.min(n - b * a.batch));
            let xb = x.index_select(0, &idx);
            let yb = y.index_select(0, &idx);
            // A cosine decay from lr to 5% of it.
            let frac = step as f64 / total.max(1) as f64;
            let lr = a.lr * (0.05 + 0.95 * 0.5 * (1.0 + (std::f64::consts::PI * frac).cos()));
            opt.set_lr(lr);
            let (_, logits) = judge.net.forward(&xb, true);
            let loss = logits.cross_entropy_for_logits(&yb);
            opt.backward_step(&loss);
            let l = loss.double_value(&[]);
            smooth = if smooth.is_nan() {
                l
            } else {
                0.98 * smooth + 0.02 * l
            };
            step += 1;
            pb.set_position(step);
            pb.set_message(format!("epoch {} loss {smooth:.4}", epoch + 1));
            if pb.is_hidden() && (step.is_multiple_of(100) || step == total) {
                // No terminal (a background run): a line per 100 steps instead.
                eprintln!(
                    "step {step}/{total} epoch {} loss {smooth:.4} lr {lr:.2e} {:.0} s",
                    epoch + 1,
                    train_started.elapsed().as_secs_f64()
                );
            }
        }
        epoch += 1;
    }
    pb.finish_and_clear();
    let train_secs = started.elapsed().as_secs_f64();
    let xt = data::fashion_mnist(Split::Test, [1, 32, 32])?;
    let yt = fashion_mnist_labels(Split::Test)?;
    let m = a
        .test_images
        .unwrap_or(xt.size()[0] as usize)
        .min(xt.size()[0] as usize);
    let acc = judge.accuracy(&xt.narrow(0, 0, m as i64), &yt.narrow(0, 0, m as i64), 500)?;
    cfg.test_accuracy = Some(acc);
    cfg.test_images = m;
    cfg.training = Training {
        command: std::iter::once("ddimd".to_string())
            .chain(std::env::args().skip(1))
            .collect::<Vec<_>>()
            .join(" "),
        epochs: a.epochs,
        steps: step,
        batch: a.batch,
        lr: a.lr,
        seed: a.seed,
        train_images: n as usize,
        wall_seconds: (train_secs * 10.0).round() / 10.0,
        device: crate::engine::model::device_name(device),
    };
    judge.config = cfg;
    judge.save(&a.out)?;
    let j = Judge::load(&a.out, Device::Cpu)?;
    eprintln!(
        "test accuracy {:.2}% on {m} images; {step} steps in {train_secs:.0} s; wrote {} (fingerprint {})",
        acc * 100.0,
        a.out.display(),
        j.fingerprint
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_round_trip_and_shapes() {
        let dir = tempfile::tempdir().unwrap();
        let j = Judge::random(JudgeConfig::new([4, 8, 8], 16), 3, Device::Cpu);
        j.save(dir.path()).unwrap();
        let k = Judge::load(dir.path(), Device::Cpu).unwrap();
        assert_eq!(k.config, j.config);
        assert_eq!(k.fingerprint.len(), 16);
        let x = Tensor::rand([5, 1, 32, 32], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
        let (a, b) = (j.embed(&x, 2).unwrap(), k.embed(&x, 5).unwrap());
        assert_eq!(a.features.size(), [5, 16]);
        assert_eq!(a.probs.size(), [5, 10]);
        assert!(a.features.allclose(&b.features, 1e-5, 1e-6, false));
        assert_eq!(a.class_histogram().iter().sum::<u64>(), 5);
        let c = a.mean_confidence();
        assert!((0.1..=1.0).contains(&c), "{c}");
        let e = j.embed(
            &Tensor::zeros([2, 1, 28, 28], (Kind::Float, Device::Cpu)),
            2,
        );
        assert!(e.unwrap_err().to_string().contains("[N, 1, 32, 32]"));
    }

    #[test]
    fn a_folder_without_a_judge_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let e = Judge::load(dir.path(), Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no judge at") && e.contains("train-judge"),
            "{e}"
        );
    }
}
