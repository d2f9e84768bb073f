//! The offline subcommands of `ddimd`: the engine without the daemon.
//! Tensors are .npy float32 [N, C, H, W] in model space [−1, 1].
use clap::Args;
use std::path::PathBuf;
use tch::{Device, Tensor};

use crate::engine::config::UNetConfig;
use crate::engine::interp::{self, Method};
use crate::engine::noise::{self, SampleSeed};
use crate::engine::sampler::{self, SamplerOptions, StepEvent};
use crate::engine::schedule::SchedulerConfig;
use crate::engine::{imageio, npy, parse_device, EngineError, Model, Solver, Spacing};

/// The model and device every engine subcommand takes.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// A diffusers pipeline folder or a bare UNet folder.
    #[arg(long, env = "DDIMD_MODEL", default_value_os_t = default_model_dir())]
    pub model: PathBuf,
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, env = "DDIMD_DEVICE", default_value = "auto")]
    pub device: String,
    /// libtorch CPU threads (0: libtorch's default, one per core). On a busy
    /// machine fewer threads avoid OpenMP spin-waiting.
    #[arg(long, env = "DDIMD_TORCH_THREADS", default_value_t = 0)]
    pub torch_threads: i32,
    #[command(flatten)]
    pub compiled: crate::compile::CompiledArgs,
}

/// The shipped model: `models/fashion-mnist` in the repository.
pub fn default_model_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/fashion-mnist")
}

impl ModelArgs {
    pub fn load(&self) -> Result<Model, EngineError> {
        if self.torch_threads > 0 {
            tch::set_num_threads(self.torch_threads);
        }
        let device = parse_device(&self.device)?;
        let mut model = Model::load(&self.model, device)?;
        self.compiled.apply(&mut model)?;
        Ok(model)
    }
}

fn parse_eta(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("not a number: {s:?}"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!("eta must be ≥ 0, got {s}"));
    }
    Ok(v)
}

fn parse_steps(s: &str) -> Result<usize, String> {
    let v: usize = s
        .parse()
        .map_err(|_| format!("not a positive integer: {s:?}"))?;
    if v == 0 {
        return Err("steps must be ≥ 1".into());
    }
    Ok(v)
}

/// Sampler options as flags.
#[derive(Debug, Clone, Args)]
pub struct SamplerArgs {
    /// S: the number of sampling steps (1..=T).
    #[arg(long, default_value = "50", value_parser = parse_steps)]
    pub steps: usize,
    /// η ≥ 0 (0: deterministic DDIM; 1: DDPM-like).
    #[arg(long, default_value = "0", value_parser = parse_eta, allow_negative_numbers = true)]
    pub eta: f64,
    /// uniform, quad, leading, trailing or linspace.
    #[arg(long, default_value = "uniform")]
    pub spacing: Spacing,
    /// Use σ̂ (the larger-variance row of the paper's Table 1).
    #[arg(long)]
    pub sigma_hat: bool,
    /// ddim or dpmpp-2m (DPM-Solver++(2M): second order, η = 0 only).
    #[arg(long, default_value = "ddim")]
    pub solver: Solver,
}

impl SamplerArgs {
    pub fn options(&self) -> SamplerOptions {
        SamplerOptions {
            steps: self.steps,
            eta: self.eta,
            spacing: self.spacing,
            sigma_hat: self.sigma_hat,
            solver: self.solver,
        }
    }
}

#[derive(Debug, Args)]
pub struct SampleArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Start from these x_T instead of seeded noise.
    #[arg(long, conflicts_with_all = ["count"])]
    pub xt: Option<PathBuf>,
    /// Number of samples drawn from seeded noise.
    #[arg(long, default_value = "16")]
    pub count: usize,
    /// Seed: sample i uses the noise of (seed, i).
    #[arg(long, default_value = "0")]
    pub seed: u64,
    #[command(flatten)]
    pub sampler: SamplerArgs,
    /// Model calls process at most this many samples at once.
    #[arg(long, default_value = "64")]
    pub batch: usize,
    #[arg(long)]
    pub out: PathBuf,
    /// Also write an image grid.
    #[arg(long)]
    pub png: Option<PathBuf>,
}

/// Exactly one input; a missing one is a usage error that names every input.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("input").required(true).multiple(false).args(["x0", "image"])))]
pub struct EncodeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Images in model space as .npy.
    #[arg(long)]
    pub x0: Option<PathBuf>,
    /// PNG/JPEG images (converted as docs/user-guide.md says).
    #[arg(long, num_args = 1..)]
    pub image: Vec<PathBuf>,
    #[arg(long, default_value = "50", value_parser = parse_steps)]
    pub steps: usize,
    #[arg(long, default_value = "uniform")]
    pub spacing: Spacing,
    /// ddim or dpmpp-2m: the solver of the inversion (decode with the same one).
    #[arg(long, default_value = "ddim")]
    pub solver: Solver,
    #[arg(long, default_value = "64")]
    pub batch: usize,
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct DecodeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[arg(long)]
    pub xt: PathBuf,
    #[command(flatten)]
    pub sampler: SamplerArgs,
    /// Seed of the η-noise (sample i uses (seed, i)).
    #[arg(long, default_value = "0")]
    pub seed: u64,
    #[arg(long, default_value = "64")]
    pub batch: usize,
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long)]
    pub png: Option<PathBuf>,
}

/// Exactly one input; a missing one is a usage error that names every input.
#[derive(Debug, Args)]
#[command(group(
    clap::ArgGroup::new("input")
        .required(true)
        .multiple(false)
        .args(["x0", "image", "fashion_mnist_test"])
))]
pub struct ReconstructArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Images in model space as .npy.
    #[arg(long)]
    pub x0: Option<PathBuf>,
    /// PNG/JPEG images.
    #[arg(long, num_args = 1..)]
    pub image: Vec<PathBuf>,
    /// Use N images of Fashion-MNIST's test split (the first N, or from --skip on).
    #[arg(long)]
    pub fashion_mnist_test: Option<usize>,
    /// With --fashion-mnist-test: start at this test image, to split a long run into
    /// shards (merge them with the per-S `images`, `mse` and `mse_std` of --json).
    #[arg(long, default_value = "0", requires = "fashion_mnist_test")]
    pub skip: usize,
    /// Step counts, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "10,20,50,100", value_parser = parse_steps)]
    pub steps: Vec<usize>,
    #[arg(long, default_value = "uniform")]
    pub spacing: Spacing,
    /// ddim or dpmpp-2m: encodes and decodes with this solver.
    #[arg(long, default_value = "ddim")]
    pub solver: Solver,
    /// Images per batch.
    #[arg(long, default_value = "64", value_parser = clap::value_parser!(u32).range(1..))]
    pub batch: u32,
    /// Print exactly one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct InterpolateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// x_T of the first endpoint (.npy; the first row is used).
    #[arg(long)]
    pub a: PathBuf,
    #[arg(long)]
    pub b: PathBuf,
    #[arg(long, default_value = "8")]
    pub frames: usize,
    #[arg(long, default_value = "slerp")]
    pub method: Method,
    #[command(flatten)]
    pub sampler: SamplerArgs,
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long)]
    pub png: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct InitModelArgs {
    /// Where to write the pipeline folder.
    #[arg(long)]
    pub out: PathBuf,
    /// test, test-attn, tiny, medium, small or cifar10.
    #[arg(long, default_value = "test")]
    pub preset: String,
    #[arg(long, default_value = "1")]
    pub channels: i64,
    #[arg(long, default_value = "32")]
    pub size: i64,
    /// Seed of the random weights.
    #[arg(long, default_value = "0")]
    pub seed: i64,
}

/// A progress bar on stderr when it is a terminal.
pub fn progress(len: u64, what: &str) -> indicatif::ProgressBar {
    let pb = indicatif::ProgressBar::new(len);
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg:>12} [{bar:30}] {pos}/{len} {per_sec} ETA {eta}",
        )
        .expect("template")
        .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        pb.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    pb
}

fn load_x0(model: &Model, x0: &Option<PathBuf>, images: &[PathBuf]) -> Result<Tensor, EngineError> {
    match x0 {
        Some(p) => {
            let t = npy::read(p)?;
            sampler::check_input(model, &t, &p.display().to_string())?;
            Ok(t)
        }
        None => {
            if images.is_empty() {
                return Err(EngineError::InvalidInput(
                    "give --x0 FILE.npy or --image FILE...".into(),
                ));
            }
            let ts = images
                .iter()
                .map(|p| imageio::load_file(p, model.sample_shape()))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Tensor::cat(&ts, 0))
        }
    }
}

/// Runs `f` over row chunks of at most `batch` and concatenates.
fn chunked(
    x: &Tensor,
    batch: usize,
    mut f: impl FnMut(&Tensor, i64) -> Result<Tensor, EngineError>,
) -> Result<Tensor, EngineError> {
    let n = x.size()[0];
    let b = batch.max(1) as i64;
    let mut outs = vec![];
    let mut start = 0;
    while start < n {
        let len = b.min(n - start);
        outs.push(f(&x.narrow(0, start, len), start)?.to_device(Device::Cpu));
        start += len;
    }
    Ok(Tensor::cat(&outs, 0))
}

fn sample_rows(
    model: &Model,
    xt: &Tensor,
    opts: &SamplerOptions,
    seed: u64,
    batch: usize,
) -> Result<Tensor, EngineError> {
    opts.validate(model.num_train_timesteps())?;
    sampler::check_input(model, xt, "x_T")?;
    let n = xt.size()[0] as u64;
    let pb = progress(n * opts.steps as u64, "sampling");
    let out = chunked(xt, batch, |x, start| {
        let seeds: Vec<SampleSeed> = (0..x.size()[0] as u64)
            .map(|i| SampleSeed::new(seed, start as u64 + i))
            .collect();
        sampler::sample(model, x, opts, &seeds, &mut |_e: &StepEvent| {
            pb.inc(x.size()[0] as u64);
            true
        })
    })?;
    pb.finish_and_clear();
    Ok(out)
}

pub fn sample(a: &SampleArgs) -> Result<(), EngineError> {
    let model = a.model.load()?;
    let opts = a.sampler.options();
    opts.validate(model.num_train_timesteps())?;
    let xt = match &a.xt {
        Some(p) => npy::read(p)?,
        None => {
            if a.count == 0 {
                return Err(EngineError::InvalidInput("--count must be ≥ 1".into()));
            }
            noise::initial_noise(
                &noise::seeds(a.seed, a.count),
                model.sample_shape(),
                Device::Cpu,
            )
        }
    };
    // One warm-up call so that lazy CUDA/cuDNN set-up is not timed.
    let _ = tch::no_grad(|| model.forward(&xt.narrow(0, 0, 1).to_device(model.device), 0));
    let started = std::time::Instant::now();
    let x0 = sample_rows(&model, &xt, &opts, a.seed, a.batch)?;
    let secs = started.elapsed().as_secs_f64();
    npy::write(&a.out, &x0)?;
    if let Some(p) = &a.png {
        imageio::save_png(&imageio::grid(&x0, 0, 2), p)?;
    }
    let n = x0.size()[0];
    eprintln!(
        "wrote {n} samples to {} ({} steps in {secs:.2} s: {:.2} images/s on {})",
        a.out.display(),
        opts.steps,
        n as f64 / secs,
        model.device_name()
    );
    Ok(())
}

pub fn encode(a: &EncodeArgs) -> Result<(), EngineError> {
    let model = a.model.load()?;
    crate::engine::spacing::validate_steps(a.steps, model.num_train_timesteps())
        .map_err(EngineError::InvalidInput)?;
    let x0 = load_x0(&model, &a.x0, &a.image)?;
    let n = x0.size()[0] as u64;
    let pb = progress(n * a.steps as u64, "encoding");
    let xt = chunked(&x0, a.batch, |x, _| {
        sampler::invert_with(&model, x, a.steps, a.spacing, a.solver, &mut |_| {
            pb.inc(x.size()[0] as u64);
            true
        })
    })?;
    pb.finish_and_clear();
    npy::write(&a.out, &xt)?;
    eprintln!("wrote {} latents to {}", n, a.out.display());
    Ok(())
}

pub fn decode(a: &DecodeArgs) -> Result<(), EngineError> {
    let model = a.model.load()?;
    let xt = npy::read(&a.xt)?;
    let x0 = sample_rows(&model, &xt, &a.sampler.options(), a.seed, a.batch)?;
    npy::write(&a.out, &x0)?;
    if let Some(p) = &a.png {
        imageio::save_png(&imageio::grid(&x0, 0, 2), p)?;
    }
    eprintln!("wrote {} images to {}", x0.size()[0], a.out.display());
    Ok(())
}

/// One row of the reconstruction table: S and the per-image MSEs on [0, 1].
#[derive(Debug, Clone)]
pub struct ReconstructionRow {
    pub steps: usize,
    pub mse: Vec<f64>,
}

impl ReconstructionRow {
    pub fn stats(&self) -> ddim_proto::stats::ErrorStats {
        ddim_proto::stats::error_stats(&self.mse)
    }
}

/// Per-S reconstruction error of `x0` (Table 2), per image.
pub fn reconstruction_table(
    model: &Model,
    x0: &Tensor,
    steps: &[usize],
    spacing: Spacing,
    solver: Solver,
    batch: usize,
) -> Result<Vec<ReconstructionRow>, EngineError> {
    let n = x0.size()[0] as u64;
    let total: u64 = steps.iter().map(|s| 2 * *s as u64 * n).sum();
    let pb = progress(total, "reconstruct");
    let mut rows = vec![];
    for &s in steps {
        let mut errs = vec![];
        let mut start = 0;
        while start < n as i64 {
            let len = (batch.max(1) as i64).min(n as i64 - start);
            let x = x0.narrow(0, start, len);
            let (mse, _) = sampler::reconstruct_with(model, &x, s, spacing, solver, &mut |_| {
                pb.inc(len as u64);
                true
            })?;
            errs.extend(mse);
            start += len;
        }
        rows.push(ReconstructionRow {
            steps: s,
            mse: errs,
        });
    }
    pb.finish_and_clear();
    Ok(rows)
}

/// Test images `skip..skip + n` of Fashion-MNIST, checked against the split's size.
fn fashion_mnist_test(model: &Model, n: usize, skip: usize) -> Result<Tensor, EngineError> {
    let all =
        crate::train::data::fashion_mnist(crate::train::data::Split::Test, model.sample_shape())
            .map_err(|e| EngineError::InvalidInput(e.to_string()))?;
    let len = all.size()[0] as usize;
    if n == 0 || skip.saturating_add(n) > len {
        return Err(EngineError::InvalidInput(format!(
            "--fashion-mnist-test {n} --skip {skip}: the test split has {len} images \
             (need 1 ≤ N and skip + N ≤ {len})"
        )));
    }
    Ok(all.narrow(0, skip as i64, n as i64))
}

pub fn reconstruct(a: &ReconstructArgs) -> Result<(), EngineError> {
    // clap drops `requires` once another input of the group is given.
    if a.skip != 0 && a.fashion_mnist_test.is_none() {
        return Err(EngineError::InvalidInput(format!(
            "--skip {} needs --fashion-mnist-test N (it skips test images)",
            a.skip
        )));
    }
    for (i, s) in a.steps.iter().enumerate() {
        if a.steps[..i].contains(s) {
            return Err(EngineError::InvalidInput(format!(
                "--steps: S = {s} is listed twice"
            )));
        }
    }
    let model = a.model.load()?;
    for &s in &a.steps {
        crate::engine::spacing::validate_steps(s, model.num_train_timesteps())
            .map_err(EngineError::InvalidInput)?;
    }
    let x0 = match a.fashion_mnist_test {
        Some(n) => fashion_mnist_test(&model, n, a.skip)?,
        None => load_x0(&model, &a.x0, &a.image)?,
    };
    let rows = reconstruction_table(&model, &x0, &a.steps, a.spacing, a.solver, a.batch as usize)?;
    if a.json {
        let results: Vec<_> = rows
            .iter()
            .map(|r| {
                let e = r.stats();
                serde_json::json!({
                    "steps": r.steps,
                    "mse": e.mean,
                    "mse_std": e.std,
                    "mse_sem": e.sem,
                    "images": r.mse.len(),
                })
            })
            .collect();
        let source = match a.fashion_mnist_test {
            Some(n) => serde_json::json!({"fashion_mnist_test": {"first": a.skip, "count": n}}),
            None => serde_json::json!("files"),
        };
        println!(
            "{}",
            serde_json::json!({
                "model": a.model.model.display().to_string(),
                "spacing": a.spacing.as_str(),
                "solver": a.solver.as_str(),
                "source": source,
                "results": results,
            })
        );
    } else {
        println!(
            "{:>6}  {:>12}  {:>10}  images",
            "S", "MSE [0,1]", "± s.e.m."
        );
        for r in rows {
            let e = r.stats();
            println!(
                "{:>6}  {:>12.7}  {:>10.7}  {}",
                r.steps,
                e.mean,
                e.sem,
                r.mse.len()
            );
        }
    }
    Ok(())
}

pub fn interpolate(a: &InterpolateArgs) -> Result<(), EngineError> {
    let model = a.model.load()?;
    if a.frames < 2 || a.frames > 256 {
        return Err(EngineError::InvalidInput(format!(
            "--frames must be in 2..=256, got {}",
            a.frames
        )));
    }
    let xa = npy::read(&a.a)?;
    let xb = npy::read(&a.b)?;
    sampler::check_input(&model, &xa, &a.a.display().to_string())?;
    sampler::check_input(&model, &xb, &a.b.display().to_string())?;
    let (xa, xb) = (xa.narrow(0, 0, 1), xb.narrow(0, 0, 1));
    let zs: Vec<Tensor> = interp::alphas(a.frames)
        .into_iter()
        .map(|al| interp::interpolate(&xa, &xb, al, a.method))
        .collect();
    let z = Tensor::cat(&zs, 0);
    let x0 = sample_rows(&model, &z, &a.sampler.options(), 0, 64)?;
    npy::write(&a.out, &x0)?;
    if let Some(p) = &a.png {
        imageio::save_png(&imageio::grid(&x0, a.frames, 2), p)?;
    }
    eprintln!("wrote {} frames to {}", a.frames, a.out.display());
    Ok(())
}

pub fn init_model(a: &InitModelArgs) -> Result<(), EngineError> {
    let cfg = UNetConfig::preset(&a.preset, a.channels, a.size).ok_or_else(|| {
        EngineError::InvalidInput(format!(
            "unknown preset {:?} (test, test-attn, tiny, medium, small, cifar10)",
            a.preset
        ))
    })?;
    tch::manual_seed(a.seed);
    let model = Model::from_config(cfg, SchedulerConfig::default(), Device::Cpu)?;
    model.save_pipeline(&a.out)?;
    eprintln!(
        "wrote a random {} model ({} parameters) to {}",
        a.preset,
        model.parameter_count(),
        a.out.display()
    );
    Ok(())
}

/// `ddimd info`.
pub fn info() -> String {
    let lib = crate::engine::model::device_name(Device::cuda_if_available());
    format!(
        "tch 0.24.0, libtorch {}\nlibtorch built with cuda: {}\ncuda available: {}\ncudnn available: {}\ncuda devices: {}\nthreads: {}\ndefault device: {lib}\nmkl: {}",
        env!("DDIMD_LIBTORCH_VERSION"),
        tch::utils::has_cuda(),
        tch::Cuda::is_available(),
        tch::Cuda::cudnn_is_available(),
        tch::Cuda::device_count(),
        tch::get_num_threads(),
        tch::utils::has_mkl(),
    )
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Batch sizes.
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    pub batch: Vec<usize>,
    /// Step counts S for the images/s measurements.
    #[arg(long, value_delimiter = ',', default_value = "10,20,50,100", value_parser = parse_steps)]
    pub steps: Vec<usize>,
    /// Timed UNet evaluations per batch size (the median is reported).
    #[arg(long, default_value = "5")]
    pub repeat: usize,
    /// Skip a sampling measurement predicted to take longer than this.
    #[arg(long, default_value = "120")]
    pub max_seconds: f64,
    /// Solvers of the sampling runs, comma-separated (ddim, dpmpp-2m): one run each per
    /// batch size and S.
    #[arg(long, value_delimiter = ',', default_value = "ddim")]
    pub solver: Vec<Solver>,
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// `ddimd bench`: ms per UNet evaluation and images/s of η = 0 sampling, one
/// JSON object per line (bench/run.sh sets them beside diffusers').
pub fn bench(a: &BenchArgs) -> Result<(), EngineError> {
    let model = a.model.load()?;
    let _g = tch::no_grad_guard();
    list_once("--solver", &a.solver)?;
    let implementation = match (model.compiled.is_some(), model.dtype) {
        (true, _) => "ddimd-compiled".to_string(),
        (false, crate::engine::model::UNetDtype::Fp32) => "ddimd".to_string(),
        (false, d) => format!("ddimd-{d}"),
    };
    for &b in &a.batch {
        let seeds = noise::seeds(0, b.max(1));
        let x = noise::initial_noise(&seeds, model.sample_shape(), model.device);
        let _ = model.forward(&x, 500);
        sync(model.device);
        let mut times = vec![];
        for _ in 0..a.repeat.max(1) {
            let t0 = std::time::Instant::now();
            let y = model.forward(&x, 500);
            sync(model.device);
            times.push(t0.elapsed().as_secs_f64() * 1e3);
            drop(y);
        }
        times.sort_by(f64::total_cmp);
        let ms = times[times.len() / 2];
        println!(
            "{}",
            serde_json::json!({"impl": implementation, "batch": b, "ms_per_eval": ms})
        );
        for &s in &a.steps {
            for &solver in &a.solver {
                let opts = SamplerOptions {
                    steps: s,
                    solver,
                    ..Default::default()
                };
                let ips = if s as f64 * ms / 1e3 > a.max_seconds {
                    None
                } else {
                    let t0 = std::time::Instant::now();
                    let _ = sampler::sample(&model, &x, &opts, &seeds, &mut |_| true)?;
                    sync(model.device);
                    Some(b as f64 / t0.elapsed().as_secs_f64())
                };
                println!(
                    "{}",
                    serde_json::json!({"impl": implementation, "batch": b, "steps": s,
                        "solver": solver.as_str(), "images_per_s": ips})
                );
            }
        }
    }
    Ok(())
}

/// `ddimd eval`: the paper's Table 1 on this model.
#[derive(Debug, Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The judge folder [default: <model>/judge].
    #[arg(long)]
    pub judge: Option<PathBuf>,
    /// N, samples per cell.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub samples: u32,
    /// Step counts S, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "10,20,50", value_parser = parse_steps)]
    pub steps: Vec<usize>,
    /// η values, comma-separated (each ≥ 0).
    #[arg(long, value_delimiter = ',', default_value = "0", value_parser = parse_eta, allow_negative_numbers = true)]
    pub eta: Vec<f64>,
    /// Add a σ̂ row (the paper's last row of Table 1).
    #[arg(long)]
    pub sigma_hat: bool,
    /// uniform, quad, leading, trailing or linspace.
    #[arg(long, default_value = "uniform")]
    pub spacing: Spacing,
    /// ddim or dpmpp-2m (deterministic: with it, η must be 0 and no --sigma-hat).
    #[arg(long, default_value = "ddim")]
    pub solver: Solver,
    /// Sample i of every cell starts from the x_T of (seed, i).
    #[arg(long, default_value = "0")]
    pub seed: u64,
    /// Samples per model call.
    #[arg(long, default_value = "64", value_parser = clap::value_parser!(u32).range(1..))]
    pub batch: u32,
    /// Bootstrap resamples of each interval.
    #[arg(long, default_value = "200")]
    pub bootstrap: usize,
    /// Append each finished cell to this JSON-lines file and reuse the cells it
    /// already holds (same model, judge, seed, N and bootstrap): a long run resumes.
    #[arg(long)]
    pub progress_file: Option<PathBuf>,
    /// Write a grid of each cell's first 64 samples into this folder.
    #[arg(long)]
    pub png_dir: Option<PathBuf>,
    /// Print exactly one JSON object.
    #[arg(long, conflicts_with = "markdown")]
    pub json: bool,
    /// Print the table in Markdown (FD [percentile] (basic) per cell, the paired
    /// differences against η = 0, the floor, the class histograms): a report's table
    /// made by the command.
    #[arg(long)]
    pub markdown: bool,
}

fn list_once<T: PartialEq + std::fmt::Display>(flag: &str, v: &[T]) -> Result<(), EngineError> {
    for (i, x) in v.iter().enumerate() {
        if v[..i].contains(x) {
            return Err(EngineError::InvalidInput(format!(
                "{flag}: {x} is listed twice"
            )));
        }
    }
    Ok(())
}

/// The judge of a model: `--judge`, else `<model>/judge`; a missing one names the flag.
pub fn load_judge(
    model_dir: &std::path::Path,
    judge: &Option<PathBuf>,
    device: Device,
) -> Result<crate::judge::Judge, EngineError> {
    let (dir, flag) = match judge {
        Some(d) => (d.clone(), "--judge"),
        None => (model_dir.join("judge"), "--judge (default <model>/judge)"),
    };
    if !dir.join(crate::judge::CONFIG).is_file() {
        return Err(EngineError::InvalidInput(format!(
            "{flag}: no judge at {} (train one with `ddimd train-judge --out {}`)",
            dir.display(),
            dir.display()
        )));
    }
    crate::judge::Judge::load(&dir, device)
}

pub fn eval(a: &EvalArgs) -> Result<(), EngineError> {
    use crate::eval::{self as ev, CellKey, EvalSettings};
    list_once("--steps", &a.steps)?;
    list_once("--eta", &a.eta)?;
    let model = a.model.load()?;
    let t = model.num_train_timesteps();
    for &s in &a.steps {
        crate::engine::spacing::validate_steps(s, t)
            .map_err(|e| EngineError::InvalidInput(format!("--steps: {e}")))?;
    }
    if a.solver == Solver::DpmPP2M {
        if let Some(e) = a.eta.iter().find(|e| **e != 0.0) {
            return Err(EngineError::InvalidInput(format!(
                "--eta: dpmpp-2m is deterministic, η must be 0 (got {e})"
            )));
        }
        if a.sigma_hat {
            return Err(EngineError::InvalidInput(
                "--sigma-hat: dpmpp-2m is deterministic, σ̂ needs --solver ddim".into(),
            ));
        }
    }
    let judge = load_judge(&a.model.model, &a.judge, model.device)?;
    let started = std::time::Instant::now();
    let reference = ev::Reference::new(ev::test_split_features(&judge)?);
    let settings = EvalSettings {
        samples: a.samples as usize,
        seed: a.seed,
        batch: a.batch as usize,
        bootstrap: a.bootstrap,
    };
    let specs = ev::cells(&a.steps, &a.eta, a.sigma_hat, a.spacing, a.solver);
    let done = a
        .progress_file
        .as_deref()
        .map(ev::read_progress)
        .unwrap_or_default();
    if let Some(d) = &a.png_dir {
        std::fs::create_dir_all(d)
            .map_err(|e| EngineError::Io(format!("--png-dir {}: {e}", d.display())))?;
    }
    let total: u64 = specs
        .iter()
        .map(|c| (c.steps * settings.samples) as u64)
        .sum();
    let pb = progress(total, "eval");
    let mut results = vec![];
    for spec in &specs {
        let key = CellKey {
            model: model.fingerprint.clone(),
            judge: judge.fingerprint.clone(),
            seed: a.seed,
            samples: settings.samples,
            bootstrap: settings.bootstrap,
            spec: *spec,
        };
        if let Some((_, r)) = done.iter().find(|(k, _)| *k == key) {
            pb.inc((spec.steps * settings.samples) as u64);
            results.push(r.clone());
            continue;
        }
        pb.set_message(spec.label());
        let (r, kept) = ev::evaluate_cell(
            &model,
            &judge,
            &reference.all,
            spec,
            &settings,
            &mut |_, k| {
                pb.inc(k as u64);
                true
            },
        )?;
        if let Some(d) = &a.png_dir {
            let name = spec.file_stem() + ".png";
            imageio::save_png(&imageio::grid(&kept, 0, 2), &d.join(name))?;
        }
        pb.suspend(|| {
            eprintln!(
                "{}: FD {:.2} [{:.2}, {:.2}] in {:.0} s",
                spec.label(),
                r.fd.fd,
                r.fd.fd_low,
                r.fd.fd_high,
                r.seconds
            )
        });
        if let Some(p) = &a.progress_file {
            ev::append_progress(p, &key, &r)?;
        }
        results.push(r);
    }
    pb.finish_and_clear();
    let (floor, floor_n) = reference.floor(settings.samples, settings.bootstrap, a.seed);
    let cfg = &judge.config;
    if a.json {
        let out = serde_json::json!({
            "cells": results.iter().zip(ev::vs_eta0(&results)).map(|(r, p)| r.json_with(p)).collect::<Vec<_>>(),
            "floor": {
                "fd": floor.fd, "fd_low": floor.fd_low, "fd_high": floor.fd_high,
                "fd_basic_low": floor.basic().0, "fd_basic_high": floor.basic().1,
            },
            "judge": {
                "path": judge.path.display().to_string(),
                "fingerprint": judge.fingerprint,
                "arch": cfg.arch,
                "feature_dim": cfg.feature_dim,
                "classes": cfg.classes,
                "test_accuracy": cfg.test_accuracy,
                "reference_images": reference.images(),
                "floor_images": floor_n,
                "bootstrap": settings.bootstrap,
                "seed": a.seed,
                "model": model.path.display().to_string(),
                "model_fingerprint": model.fingerprint,
                "seconds": started.elapsed().as_secs_f64(),
            },
        });
        println!("{out}");
        return Ok(());
    }
    let against = reference.images() - reference.images() / 2;
    let caption = format!(
        "N = {} per cell, {} spacing, {} solver, seed {}, {} bootstrap resamples; model {}, judge {}",
        settings.samples,
        a.spacing.as_str(),
        a.solver.as_str(),
        a.seed,
        settings.bootstrap,
        model.fingerprint,
        judge.fingerprint,
    );
    if a.markdown {
        let floor = ev::table::Floor {
            fd: floor,
            n: floor_n,
            against,
        };
        print!(
            "{}",
            ev::table::markdown(&results, &a.steps, &floor, &caption)
        );
        return Ok(());
    }
    print!("{}", ev::table::text(&results, &a.steps));
    println!(
        "floor (real vs real, {floor_n} vs {against} test images): FD {:.2} [{:.2}, {:.2}]",
        floor.fd, floor.fd_low, floor.fd_high
    );
    println!(
        "{caption}, judge at {}, {:.0} s",
        judge.path.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
