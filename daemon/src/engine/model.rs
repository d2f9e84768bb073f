//! Loading a model: a diffusers pipeline folder (`model_index.json`, `unet/`,
//! `scheduler/`) or a bare UNet folder (`config.json` +
//! `diffusion_pytorch_model.safetensors`, default linear schedule).
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use tch::{nn, Device, Kind, Tensor};

use super::compiled::{self, CompiledMode, CompiledUNet};
use super::config::UNetConfig;
use super::schedule::{NoiseSchedule, PredictionType, SchedulerConfig};
use super::unet::UNet2DModel;
use super::{first_line, EngineError};

pub const WEIGHTS: &str = "diffusion_pytorch_model.safetensors";

/// An ε-model on a device with its noise schedule.
pub struct Model {
    pub unet: UNet2DModel,
    pub vs: nn::VarStore,
    pub config: UNetConfig,
    pub scheduler_config: SchedulerConfig,
    pub schedule: NoiseSchedule,
    pub device: Device,
    /// First 16 hex digits of SHA-256 over the UNet config, the scheduler
    /// config and the weights file.
    pub fingerprint: String,
    pub path: PathBuf,
    /// AOTInductor packages of this UNet ([`Model::use_compiled`]); `None`: eager only.
    pub compiled: Option<CompiledUNet>,
    /// The UNet's floating-point type ([`Model::set_dtype`]); the sampler's arithmetic
    /// stays fp32 whatever this is.
    pub dtype: UNetDtype,
}

/// `--dtype`: the type the UNet computes in. The network's input is cast to it and its
/// output back to fp32, so the DDIM / DPM-Solver updates, the noise and every stored
/// tensor stay fp32; only the model calls are half precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum UNetDtype {
    /// fp32, the weights as stored (the default; the eager path unchanged).
    #[default]
    Fp32,
    /// bfloat16: fp32's range, 8 bits of mantissa (GPUs; CPUs with AMX or AVX512-BF16,
    /// elsewhere slower than fp32).
    Bf16,
    /// float16: 11 bits of mantissa, a narrow range (GPUs).
    Fp16,
}

impl UNetDtype {
    pub fn kind(self) -> Kind {
        match self {
            UNetDtype::Fp32 => Kind::Float,
            UNetDtype::Bf16 => Kind::BFloat16,
            UNetDtype::Fp16 => Kind::Half,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            UNetDtype::Fp32 => "fp32",
            UNetDtype::Bf16 => "bf16",
            UNetDtype::Fp16 => "fp16",
        }
    }
}

impl std::fmt::Display for UNetDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether libtorch runs the UNet's kinds of op (convolution, group norm, matmul,
/// attention, upsampling) in `kind` on `device`: the first error's first line if not.
fn probe_kind(kind: Kind, device: Device) -> Result<(), String> {
    let _g = tch::no_grad_guard();
    let x = Tensor::f_ones([1, 4, 4, 4], (kind, device)).map_err(|e| e.to_string())?;
    let w = Tensor::f_ones([4, 4, 3, 3], (kind, device)).map_err(|e| e.to_string())?;
    let run = || -> Result<Tensor, tch::TchError> {
        let h = x.f_conv2d(&w, None::<Tensor>, [1, 1], [1, 1], [1, 1], 1)?;
        let h = h.f_group_norm(2, None::<Tensor>, None::<Tensor>, 1e-5, false)?;
        let h = h.f_silu()?.f_upsample_nearest2d([8, 8], None, None)?;
        let q = h.f_reshape([1, 1, 4, 64])?.f_transpose(2, 3)?;
        let a = Tensor::f_scaled_dot_product_attention(
            &q,
            &q,
            &q,
            None::<Tensor>,
            0.0,
            false,
            None,
            false,
        )?;
        a.f_matmul(&a.f_transpose(2, 3)?)?.f_to_kind(Kind::Float)
    };
    let out = run().map_err(|e| first_line(&e.to_string()))?;
    let finite = out
        .f_isfinite()
        .and_then(|f| f.f_all())
        .map(|t| t.int64_value(&[]) == 1)
        .unwrap_or(false);
    if !finite {
        return Err("a probe gave non-finite values".into());
    }
    Ok(())
}

/// `cpu`, `cuda`, `cuda:N` or `auto` (CUDA when available).
pub fn parse_device(s: &str) -> Result<Device, EngineError> {
    match s {
        "auto" => Ok(Device::cuda_if_available()),
        "cpu" => Ok(Device::Cpu),
        "cuda" => {
            if tch::Cuda::is_available() {
                Ok(Device::Cuda(0))
            } else {
                Err(EngineError::InvalidInput(
                    "--device cuda: CUDA is not available on this machine (see `ddimd info`)"
                        .into(),
                ))
            }
        }
        s => match s
            .strip_prefix("cuda:")
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(n) if (n as i64) < tch::Cuda::device_count() => Ok(Device::Cuda(n)),
            Some(n) => Err(EngineError::InvalidInput(format!(
                "--device cuda:{n}: no such CUDA device"
            ))),
            None => Err(EngineError::InvalidInput(format!(
                "unknown device {s:?} (expected cpu, cuda, cuda:N or auto)"
            ))),
        },
    }
}

pub fn device_name(d: Device) -> String {
    match d {
        Device::Cpu => "cpu".into(),
        Device::Cuda(n) => format!("cuda:{n}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

impl Model {
    /// Loads a pipeline folder or a bare UNet folder.
    pub fn load(dir: &Path, device: Device) -> Result<Self, EngineError> {
        if !dir.is_dir() {
            return Err(EngineError::Config(format!(
                "model folder {} does not exist",
                dir.display()
            )));
        }
        let (unet_dir, sched_cfg) = if dir.join("unet").join("config.json").is_file() {
            let sp = dir.join("scheduler").join("scheduler_config.json");
            let sc = if sp.is_file() {
                SchedulerConfig::from_file(&sp)?
            } else {
                SchedulerConfig::default()
            };
            (dir.join("unet"), sc)
        } else if dir.join("config.json").is_file() {
            (dir.to_path_buf(), SchedulerConfig::default())
        } else {
            return Err(EngineError::Config(format!(
                "{} is not a model folder: expected unet/config.json (a diffusers pipeline) or config.json (a UNet2DModel)",
                dir.display()
            )));
        };
        let config = UNetConfig::from_file(&unet_dir.join("config.json"))?;
        let weights = unet_dir.join(WEIGHTS);
        if !weights.is_file() {
            return Err(EngineError::Config(format!(
                "{} is missing",
                weights.display()
            )));
        }
        let mut m = Self::from_config(config, sched_cfg, device)?;
        m.vs.load(&weights).map_err(|e| {
            EngineError::Config(format!(
                "{}: {}",
                weights.display(),
                first_line(&e.to_string())
            ))
        })?;
        m.fingerprint = fingerprint(&unet_dir.join("config.json"), &weights, &m.scheduler_config)?;
        m.path = dir.to_path_buf();
        Ok(m)
    }

    /// A model with freshly initialised (random) weights.
    pub fn from_config(
        config: UNetConfig,
        scheduler_config: SchedulerConfig,
        device: Device,
    ) -> Result<Self, EngineError> {
        let schedule = NoiseSchedule::new(&scheduler_config)?;
        let vs = nn::VarStore::new(device);
        let unet = UNet2DModel::new(&vs.root(), &config)?;
        Ok(Self {
            unet,
            vs,
            config,
            scheduler_config,
            schedule,
            device,
            fingerprint: "random".into(),
            path: PathBuf::new(),
            compiled: None,
            dtype: UNetDtype::Fp32,
        })
    }

    /// Runs the UNet in `dtype` from now on (its weights are converted in place; from
    /// fp32 only, once). Compiled packages loaded before are dropped: load the ones for
    /// this dtype after ([`Model::use_compiled`]). fp16/bf16 that libtorch cannot run on
    /// this device is refused with one line naming `--dtype`.
    pub fn set_dtype(&mut self, dtype: UNetDtype) -> Result<(), EngineError> {
        if dtype == self.dtype {
            return Ok(());
        }
        if self.dtype != UNetDtype::Fp32 {
            return Err(EngineError::InvalidInput(format!(
                "--dtype {dtype}: the model already runs in {}; load it again for another dtype",
                self.dtype
            )));
        }
        probe_kind(dtype.kind(), self.device).map_err(|e| {
            EngineError::InvalidInput(format!(
                "--dtype {dtype}: libtorch cannot run the UNet in {dtype} on {}: {e}",
                device_name(self.device)
            ))
        })?;
        self.vs.set_kind(dtype.kind());
        self.dtype = dtype;
        self.compiled = None;
        Ok(())
    }

    /// The eager UNet in [`Model::dtype`], its output as fp32.
    fn unet_forward(&self, x: &Tensor, ts: &Tensor) -> Tensor {
        if self.dtype == UNetDtype::Fp32 {
            return self.unet.forward_t(x, ts, false);
        }
        self.unet
            .forward_t(&x.to_kind(self.dtype.kind()), ts, false)
            .to_kind(Kind::Float)
    }

    /// Writes a diffusers pipeline folder that `DDIMPipeline.from_pretrained`
    /// loads unchanged.
    pub fn save_pipeline(&self, dir: &Path) -> Result<(), EngineError> {
        save_pipeline(&self.vs, &self.config, &self.scheduler_config, dir)
    }

    /// [C, H, W].
    pub fn sample_shape(&self) -> [i64; 3] {
        let (h, w) = self.config.sample_hw().expect("validated");
        [self.config.in_channels, h, w]
    }

    /// T.
    pub fn num_train_timesteps(&self) -> usize {
        self.schedule.len()
    }

    pub fn parameter_count(&self) -> u64 {
        self.vs
            .trainable_variables()
            .iter()
            .map(|t| t.numel() as u64)
            .sum()
    }

    /// The raw network output at timestep t for the whole batch: the compiled UNet when
    /// one is loaded and a package fits the batch, else the eager UNet.
    pub fn forward(&self, x: &Tensor, t: i64) -> Tensor {
        let b = x.size()[0];
        let ts = Tensor::full([b], t, (Kind::Int64, x.device()));
        if let Some(out) = self.compiled.as_ref().and_then(|c| c.forward(x, &ts)) {
            return out;
        }
        self.unet_forward(x, &ts)
    }

    /// The eager UNet's output, whatever is compiled (parity tests, benchmarks).
    pub fn forward_eager(&self, x: &Tensor, t: i64) -> Tensor {
        let b = x.size()[0];
        let ts = Tensor::full([b], t, (Kind::Int64, x.device()));
        self.unet_forward(x, &ts)
    }

    /// Loads this model's compiled packages from `cache` (default
    /// [`compiled::default_cache`]) according to `mode`. Auto: use them when there are
    /// any (a package that fails to load is reported and the model stays eager);
    /// Require: an error unless they load; Off: drop them.
    pub fn use_compiled(
        &mut self,
        mode: CompiledMode,
        cache: Option<&Path>,
    ) -> Result<(), EngineError> {
        self.compiled = None;
        if mode == CompiledMode::Off {
            return Ok(());
        }
        if self.dtype != UNetDtype::Fp32 {
            // Packages are fp32 graphs; half precision runs the eager UNet.
            if mode == CompiledMode::Require {
                return Err(EngineError::InvalidInput(format!(
                    "--compiled require: compiled packages are fp32; --dtype {} runs the eager UNet (use --compiled auto or off)",
                    self.dtype
                )));
            }
            return Ok(());
        }
        let cache = cache
            .map(Path::to_path_buf)
            .unwrap_or_else(compiled::default_cache);
        let dir = compiled::package_dir(&cache, &self.fingerprint, self.device);
        let loaded = if self.fingerprint == "random" {
            Err(EngineError::Config(
                "compiled UNet: an unsaved model has no fingerprint to key packages by".into(),
            ))
        } else {
            CompiledUNet::load(&dir, self.device)
        };
        match (loaded, mode) {
            (Ok(Some(c)), _) => {
                compiled::note(&format!(
                    "compiled UNet: batch sizes {:?} from {}",
                    c.batches(),
                    dir.display()
                ));
                self.compiled = Some(c);
                Ok(())
            }
            (Ok(None), mode) => {
                let others = compiled::other_thread_counts(&dir);
                let threads = match self.device {
                    Device::Cuda(_) => String::new(),
                    _ => format!(" --torch-threads {}", compiled::cpu_threads()),
                };
                let why = if others.is_empty() {
                    format!("no compiled package in {}", dir.display())
                } else {
                    format!(
                        "the compiled packages in {} are for {:?} libtorch threads, this process runs {} (--torch-threads)",
                        dir.parent().unwrap_or(&dir).display(),
                        others,
                        compiled::cpu_threads()
                    )
                };
                let fix = format!(
                    "ddimd compile --model {} --device {}{threads}",
                    self.path.display(),
                    compiled::device_key(self.device)
                );
                if mode == CompiledMode::Require {
                    return Err(EngineError::Config(format!(
                        "--compiled require: {why} (run `{fix}`)"
                    )));
                }
                if !others.is_empty() {
                    compiled::note(&format!(
                        "compiled UNet: {why}; running the eager UNet (`{fix}` compiles for it)"
                    ));
                }
                Ok(())
            }
            (Err(e), CompiledMode::Require) => Err(e),
            (Err(e), _) => {
                compiled::note(&format!("{e}; running the eager UNet"));
                Ok(())
            }
        }
    }

    /// (ε̂, x̂0) at timestep t, whatever the model predicts.
    pub fn eps_and_x0(&self, x: &Tensor, t: i64) -> (Tensor, Tensor) {
        let out = self.forward(x, t);
        let a = self.schedule.alpha_bar(t);
        let (sa, sb) = (a.sqrt(), (1.0 - a).sqrt());
        match self.schedule.prediction {
            PredictionType::Epsilon => {
                let x0 = (x - &out * sb) / sa;
                (out, x0)
            }
            PredictionType::Sample => {
                let eps = (x - &out * sa) / sb;
                (eps, out)
            }
            PredictionType::VPrediction => {
                let x0 = x * sa - &out * sb;
                let eps = &out * sa + x * sb;
                (eps, x0)
            }
        }
    }

    pub fn device_name(&self) -> String {
        device_name(self.device)
    }
}

pub fn save_pipeline(
    vs: &nn::VarStore,
    config: &UNetConfig,
    sched: &SchedulerConfig,
    dir: &Path,
) -> Result<(), EngineError> {
    let io = |e: std::io::Error| EngineError::Io(format!("{}: {e}", dir.display()));
    std::fs::create_dir_all(dir.join("unet")).map_err(io)?;
    std::fs::create_dir_all(dir.join("scheduler")).map_err(io)?;
    let index = serde_json::json!({
        "_class_name": "DDIMPipeline",
        "_diffusers_version": "0.42.1",
        "scheduler": ["diffusers", "DDIMScheduler"],
        "unet": ["diffusers", "UNet2DModel"],
    });
    let pretty = |v: &serde_json::Value| serde_json::to_string_pretty(v).expect("json") + "\n";
    std::fs::write(dir.join("model_index.json"), pretty(&index)).map_err(io)?;
    std::fs::write(
        dir.join("unet/config.json"),
        pretty(&config.to_diffusers_json()),
    )
    .map_err(io)?;
    std::fs::write(
        dir.join("scheduler/scheduler_config.json"),
        pretty(&sched.to_diffusers_json()),
    )
    .map_err(io)?;
    // Save on CPU, contiguous, via a temp file so a crash never leaves a torn file.
    let named: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .map(|(k, v)| (k, v.to_device(Device::Cpu).contiguous()))
        .collect();
    let tmp = dir.join("unet").join(format!("{WEIGHTS}.tmp"));
    Tensor::write_safetensors(&named, &tmp).map_err(|e| EngineError::Io(e.to_string()))?;
    std::fs::rename(&tmp, dir.join("unet").join(WEIGHTS)).map_err(io)?;
    Ok(())
}

fn fingerprint(
    config: &Path,
    weights: &Path,
    sched: &SchedulerConfig,
) -> Result<String, EngineError> {
    let mut h = Sha256::new();
    let read =
        |p: &Path| std::fs::read(p).map_err(|e| EngineError::Io(format!("{}: {e}", p.display())));
    h.update(read(config)?);
    h.update(serde_json::to_vec(&sched.to_diffusers_json()).expect("json"));
    h.update(read(weights)?);
    Ok(hex::encode(&h.finalize()[..8]))
}
