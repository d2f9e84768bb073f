//! `ddimd compile` and the `--compiled` flags of the engine commands and `serve`
//! (see [`crate::engine::compiled`] and docs/compiled.md).
use clap::Args;
use std::path::PathBuf;

use crate::engine::compiled::{self, CompiledMode};
use crate::engine::model::UNetDtype;
use crate::engine::{parse_device, EngineError, Model};

/// `--compiled auto|off|require` and where the packages are.
#[derive(Debug, Clone, Args)]
pub struct CompiledArgs {
    /// Run the UNet from AOTInductor packages made by `ddimd compile`: auto (when there
    /// are packages for this model, libtorch and device), off, or require.
    #[arg(long, env = "DDIMD_COMPILED", value_enum, default_value = "auto")]
    pub compiled: CompiledMode,
    /// The package cache [default: $XDG_CACHE_HOME/ddimd/compiled].
    #[arg(long, env = "DDIMD_COMPILED_CACHE")]
    pub compiled_cache: Option<PathBuf>,
    /// The UNet's floating-point type: fp32, bf16 or fp16 (half precision for the model
    /// calls only; the sampler's updates stay fp32). Half precision runs the eager UNet.
    #[arg(long, env = "DDIMD_DTYPE", value_enum, default_value = "fp32")]
    pub dtype: UNetDtype,
}

impl CompiledArgs {
    /// Sets the model's dtype and loads (or not) its packages as the flags say.
    pub fn apply(&self, model: &mut Model) -> Result<(), EngineError> {
        model.set_dtype(self.dtype)?;
        model.use_compiled(self.compiled, self.compiled_cache.as_deref())
    }
}

#[derive(Debug, Args)]
pub struct CompileArgs {
    /// A diffusers pipeline folder or a bare UNet folder (read only).
    #[arg(long, env = "DDIMD_MODEL", default_value_os_t = crate::cli::default_model_dir())]
    pub model: PathBuf,
    /// cpu, cuda or cuda:N: the device the packages run on.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Static batch sizes, one package each; a batch runs on the smallest package that
    /// holds it (zero-padded), larger batches run eagerly.
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    pub batch: Vec<u32>,
    /// The package cache [default: $XDG_CACHE_HOME/ddimd/compiled].
    #[arg(long, env = "DDIMD_COMPILED_CACHE")]
    pub cache: Option<PathBuf>,
    /// The Python with torch (the same version ddimd links) and diffusers
    /// [default: $DDIM_VENV/bin/python, else the venv ddimd was built against].
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// Recompile packages that exist.
    #[arg(long)]
    pub force: bool,
    /// The libtorch CPU threads the packages will run with (0: libtorch's default, one
    /// per core): a CPU package's kernels are built for one thread count, and the
    /// commands that load it look for the packages of their own `--torch-threads`.
    #[arg(long, env = "DDIMD_TORCH_THREADS", default_value_t = 0)]
    pub torch_threads: i32,
}

/// `ddimd compile`.
pub fn run(a: &CompileArgs) -> Result<(), EngineError> {
    if a.batch.is_empty() || a.batch.contains(&0) {
        return Err(EngineError::InvalidInput(
            "--batch: give batch sizes ≥ 1, e.g. 1,8,64".into(),
        ));
    }
    if a.torch_threads < 0 {
        return Err(EngineError::InvalidInput(
            "--torch-threads: give a thread count ≥ 1, or 0 for libtorch's default".into(),
        ));
    }
    if a.torch_threads > 0 {
        tch::set_num_threads(a.torch_threads);
    }
    let device = parse_device(&a.device)?;
    // Loading checks the folder and gives the fingerprint the packages are keyed by.
    let model = Model::load(&a.model, device)?;
    let cache = a.cache.clone().unwrap_or_else(compiled::default_cache);
    let python = a.python.clone().unwrap_or_else(compiled::default_python);
    let mut batches: Vec<i64> = a.batch.iter().map(|&b| b as i64).collect();
    batches.sort_unstable();
    batches.dedup();
    let dir = compiled::package_dir(&cache, &model.fingerprint, device);
    eprintln!(
        "compiling {} (fingerprint {}) for {} with torch {}, batch {:?} → {}",
        a.model.display(),
        model.fingerprint,
        match device {
            tch::Device::Cuda(_) => "cuda".to_string(),
            _ => format!("cpu, {} thread(s)", compiled::cpu_threads()),
        },
        compiled::torch_version(),
        batches,
        dir.display()
    );
    let req = compiled::CompileRequest {
        model_dir: &a.model,
        fingerprint: &model.fingerprint,
        device,
        batches: &batches,
        cache: &cache,
        python: &python,
        force: a.force,
    };
    let done = compiled::compile(&req, &mut |p| {
        eprintln!(
            "batch {}: {} ({:.0} s, max relative difference to eager {:.1e})",
            p.batch,
            p.path.display(),
            p.seconds,
            p.max_rel_diff
        )
    })?;
    if done.len() < batches.len() {
        eprintln!(
            "{} package(s) already there (--force recompiles)",
            batches.len() - done.len()
        );
    }
    // Check that the Rust loader takes every package.
    let c = compiled::CompiledUNet::load(&dir, device)?;
    println!(
        "{}",
        serde_json::json!({
            "dir": dir,
            "fingerprint": model.fingerprint,
            "torch": compiled::torch_version(),
            "device": compiled::device_key(device),
            "threads": compiled::cpu_threads(),
            "batches": c.map(|c| c.batches()).unwrap_or_default(),
        })
    );
    Ok(())
}
