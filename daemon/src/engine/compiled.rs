//! Compiled UNets: AOTInductor packages (`ddimd compile`) run from Rust through
//! libtorch's `AOTIModelPackageLoader` (the `ddim-aoti` crate).
//!
//! A package is the model's UNet exported by `torch.export` with a static batch size
//! and compiled by `torch._inductor.aoti_compile_and_package`; its signature is the
//! engine's forward: `(x f32 [B, C, H, W], t int64 [B]) → network output`. Packages
//! live in a cache outside the model folder (so a read-only model works):
//!
//! ```text
//! <cache>/<model fingerprint>/torch-<libtorch version>/<cpu-t<N>|cuda>/b<B>.pt2 (+ b<B>.json)
//! ```
//!
//! N is the libtorch CPU thread count ([`cpu_threads`]) the packages were compiled for:
//! Inductor writes it into every parallel loop of a CPU package
//! (`#pragma omp parallel num_threads(N)`), whatever thread count the loading process
//! runs with. A package compiled on 2 threads and run beside a one-thread libtorch on a
//! busy 2-core machine spin-waited in OpenMP barriers and ran 10–100× slower than eager
//! (docs/benchmarks.md), so the thread count is part of the key: a process loads only
//! packages made for its own `--torch-threads`.
//!
//! `<cache>` is `--cache`/`--compiled-cache`, else `$XDG_CACHE_HOME/ddimd/compiled`
//! (`~/.cache/ddimd/compiled`). A batch of n runs on the smallest package with B ≥ n,
//! zero-padded to B (the padding rows are dropped from the output); a batch larger than
//! every package, or one that would pad to more than twice its size, is split into
//! chunks ([`plan`]). If a package fails to run, that batch size runs eagerly, with one
//! log line.
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tch::{Device, Kind, Tensor};

use super::EngineError;

/// How a batch of `n` runs on packages of static batch sizes `batches` (ascending,
/// non-empty): a list of (package batch B, rows taken), in order, with rows ≤ B (the
/// rest of the package's batch is zero padding). The rows left are padded up to the
/// smallest package that holds them unless that would more than double the work and a
/// smaller package exists, which then takes a full chunk: with packages 1, 8, 64, a
/// batch of 5 runs as 8 (padded), 16 as 8 + 8, 9 as 8 + 1, 100 as 64 + 64 (36 rows).
pub fn plan(batches: &[i64], n: i64) -> Vec<(i64, i64)> {
    let mut out = vec![];
    let mut left = n;
    while left > 0 && !batches.is_empty() {
        let up = batches.iter().copied().find(|&b| b >= left);
        let down = batches.iter().copied().rev().find(|&b| b <= left);
        let (b, rows) = match (up, down) {
            (Some(u), Some(d)) if u > 2 * left => (d, d),
            (Some(u), _) => (u, left),
            (None, Some(d)) => (d, d),
            (None, None) => unreachable!("a package either holds the rest or fits in it"),
        };
        out.push((b, rows));
        left -= rows;
    }
    out
}

/// Python script that exports and compiles the packages (run with the venv's Python).
pub const COMPILE_SCRIPT: &str = include_str!("../../python/aoti_compile.py");

/// The libtorch version ddimd links (from the build), part of the cache key.
pub fn torch_version() -> &'static str {
    env!("DDIMD_LIBTORCH_VERSION")
}

/// `--compiled`: whether the engine runs compiled packages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum CompiledMode {
    /// Use the packages for this model, libtorch and device when there are any.
    #[default]
    Auto,
    /// Always the eager UNet.
    Off,
    /// Fail unless packages exist and load.
    Require,
}

/// The default cache: `$XDG_CACHE_HOME/ddimd/compiled` (`~/.cache/ddimd/compiled`).
pub fn default_cache() -> PathBuf {
    dirs::cache_dir()
        .unwrap_or_else(|| PathBuf::from(".cache"))
        .join("ddimd")
        .join("compiled")
}

/// `cpu` or `cuda` (packages for CUDA are compiled for the machine's GPUs, not one index).
pub fn device_key(d: Device) -> &'static str {
    match d {
        Device::Cuda(_) => "cuda",
        _ => "cpu",
    }
}

/// The libtorch CPU threads of this process (`--torch-threads`, else libtorch's
/// default): what a CPU package is compiled for and looked up by.
pub fn cpu_threads() -> i32 {
    tch::get_num_threads().max(1)
}

/// The last component of the package folder: `cuda`, or `cpu-t<N>` for this process's
/// [`cpu_threads`].
pub fn device_folder(d: Device) -> String {
    match d {
        Device::Cuda(_) => "cuda".to_string(),
        _ => format!("cpu-t{}", cpu_threads()),
    }
}

/// The folder holding a model's packages for this libtorch, device and (CPU) thread count.
pub fn package_dir(cache: &Path, fingerprint: &str, device: Device) -> PathBuf {
    cache
        .join(fingerprint)
        .join(format!("torch-{}", torch_version()))
        .join(device_folder(device))
}

/// Thread counts with CPU packages beside `dir` (other `cpu-t<N>` folders holding a
/// package), ascending: to say why none loaded.
pub fn other_thread_counts(dir: &Path) -> Vec<i32> {
    let Some(parent) = dir.parent() else {
        return vec![];
    };
    let mut v: Vec<i32> = std::fs::read_dir(parent)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path() != dir && !available_batches(&e.path()).is_empty())
        .filter_map(|e| {
            e.file_name()
                .into_string()
                .ok()?
                .strip_prefix("cpu-t")?
                .parse()
                .ok()
        })
        .collect();
    v.sort_unstable();
    v
}

/// `b<B>.pt2` in a package folder.
pub fn package_path(dir: &Path, batch: i64) -> PathBuf {
    dir.join(format!("b{batch}.pt2"))
}

/// The batch sizes with a package in `dir`, ascending.
pub fn available_batches(dir: &Path) -> Vec<i64> {
    let mut v: Vec<i64> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_prefix('b')?.strip_suffix(".pt2")?.parse().ok()
        })
        .filter(|&b| b > 0)
        .collect();
    v.sort_unstable();
    v
}

/// A log line for the user: through tracing when the daemon set it up, else stderr.
pub(crate) fn note(msg: &str) {
    if tracing::dispatcher::has_been_set() {
        tracing::info!("{msg}");
    } else {
        eprintln!("{msg}");
    }
}

/// The loaded packages of one model, one per static batch size.
pub struct CompiledUNet {
    buckets: Vec<(i64, ddim_aoti::Package)>,
    device: Device,
    /// Batch sizes already reported as running eagerly (one line each).
    reported: Mutex<HashSet<i64>>,
}

impl CompiledUNet {
    /// Loads every package in `dir`; `None` when there is none.
    pub fn load(dir: &Path, device: Device) -> Result<Option<Self>, EngineError> {
        let mut buckets = vec![];
        for b in available_batches(dir) {
            let p = package_path(dir, b);
            let pkg = ddim_aoti::Package::load(&p, device)
                .map_err(|e| EngineError::Config(format!("compiled UNet: {e}")))?;
            buckets.push((b, pkg));
        }
        if buckets.is_empty() {
            return Ok(None);
        }
        Ok(Some(Self {
            buckets,
            device,
            reported: Mutex::new(HashSet::new()),
        }))
    }

    /// The batch sizes of the loaded packages, ascending.
    pub fn batches(&self) -> Vec<i64> {
        self.buckets.iter().map(|(b, _)| *b).collect()
    }

    /// The network output for `x` [n, C, H, W] at timesteps `ts` (int64 [n]) from the
    /// packages, in the chunks [`plan`] gives; `None` when a package fails (reported once
    /// per batch size; the caller then runs the eager UNet).
    pub fn forward(&self, x: &Tensor, ts: &Tensor) -> Option<Tensor> {
        let n = x.size()[0];
        if n == 0 {
            return None;
        }
        let batches = self.batches();
        let on_device =
            |t: &Tensor, kind: Kind| t.to_device(self.device).to_kind(kind).contiguous();
        let (x, ts) = (on_device(x, Kind::Float), on_device(ts, Kind::Int64));
        let mut outs = vec![];
        let mut start = 0;
        for (b, rows) in plan(&batches, n) {
            let pkg = &self
                .buckets
                .iter()
                .find(|(bb, _)| *bb == b)
                .expect("planned")
                .1;
            let (mut xb, mut tb) = (x.narrow(0, start, rows), ts.narrow(0, start, rows));
            if b > rows {
                let mut shape = xb.size();
                shape[0] = b - rows;
                let zeros = Tensor::zeros(&shape, (Kind::Float, self.device));
                xb = Tensor::cat(&[xb, zeros], 0);
                let pad_t = tb.narrow(0, 0, 1).expand([b - rows], false);
                tb = Tensor::cat(&[tb, pad_t], 0);
            }
            let (xb, tb) = (xb.contiguous(), tb.contiguous());
            match pkg.run(&[&xb, &tb]) {
                Ok(mut out) if !out.is_empty() => {
                    let y = out.swap_remove(0);
                    outs.push(if b > rows { y.narrow(0, 0, rows) } else { y });
                }
                Ok(_) => {
                    self.report(
                        n,
                        &format!("compiled UNet: package b{b} returned nothing; running batch {n} eagerly"),
                    );
                    return None;
                }
                Err(e) => {
                    self.report(n, &format!("compiled UNet: {e}; running batch {n} eagerly"));
                    return None;
                }
            }
            start += rows;
        }
        Some(if outs.len() == 1 {
            outs.swap_remove(0)
        } else {
            Tensor::cat(&outs, 0)
        })
    }

    fn report(&self, n: i64, msg: &str) {
        let first = self
            .reported
            .lock()
            .map(|mut s| s.insert(n))
            .unwrap_or(true);
        if first {
            note(msg);
        }
    }
}

/// Where `ddimd compile` finds the Python that exports: `DDIM_VENV`'s, else the venv
/// whose `torch/lib` ddimd was built against, else `python3`.
pub fn default_python() -> PathBuf {
    if let Some(v) = std::env::var_os("DDIM_VENV") {
        let p = PathBuf::from(v).join("bin/python");
        if p.is_file() {
            return p;
        }
    }
    // <venv>/lib/pythonX.Y/site-packages/torch/lib → <venv>
    let lib = Path::new(ddim_aoti::libtorch_lib_dir());
    if let Some(venv) = lib.ancestors().nth(5) {
        let p = venv.join("bin/python");
        if p.is_file() {
            return p;
        }
    }
    PathBuf::from("python3")
}

/// The folder of the UNet inside a model folder (pipeline: `unet/`; bare: itself).
pub fn unet_dir(model_dir: &Path) -> PathBuf {
    if model_dir.join("unet").join("config.json").is_file() {
        model_dir.join("unet")
    } else {
        model_dir.to_path_buf()
    }
}

/// One package written by [`compile`].
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
pub struct CompiledPackage {
    pub batch: i64,
    pub path: PathBuf,
    pub seconds: f64,
    /// Max |compiled − eager| / max |eager| on random input, checked by the script.
    pub max_rel_diff: f64,
    pub torch: String,
}

/// What [`compile`] compiles, and where.
pub struct CompileRequest<'a> {
    /// The model folder (pipeline or bare UNet), read only.
    pub model_dir: &'a Path,
    /// The model's fingerprint ([`super::Model::fingerprint`]): the cache key.
    pub fingerprint: &'a str,
    pub device: Device,
    /// Static batch sizes, one package each.
    pub batches: &'a [i64],
    pub cache: &'a Path,
    /// The Python with torch (the version ddimd links) and diffusers.
    pub python: &'a Path,
    /// Recompile packages that exist.
    pub force: bool,
}

/// Exports and compiles the UNet for each batch size into `<cache>/…/b<B>.pt2`;
/// existing packages are kept unless `force`. Runs `python` on [`COMPILE_SCRIPT`];
/// `on_done` sees each package as it lands.
pub fn compile(
    req: &CompileRequest<'_>,
    on_done: &mut dyn FnMut(&CompiledPackage),
) -> Result<Vec<CompiledPackage>, EngineError> {
    let CompileRequest {
        model_dir,
        fingerprint,
        device,
        batches,
        cache,
        python,
        force,
    } = *req;
    let dir = package_dir(cache, fingerprint, device);
    std::fs::create_dir_all(&dir)
        .map_err(|e| EngineError::Io(format!("{}: {e}", dir.display())))?;
    let todo: Vec<i64> = batches
        .iter()
        .copied()
        .filter(|&b| force || !package_path(&dir, b).is_file())
        .collect();
    let mut done = vec![];
    if todo.is_empty() {
        return Ok(done);
    }
    let dev = match device {
        Device::Cuda(n) => format!("cuda:{n}"),
        _ => "cpu".to_string(),
    };
    let mut cmd = std::process::Command::new(python);
    cmd.arg("-c")
        .arg(COMPILE_SCRIPT)
        .arg(unet_dir(model_dir))
        .arg(&dev)
        .arg(torch_version())
        .arg(
            match device {
                Device::Cuda(_) => 0,
                _ => cpu_threads(),
            }
            .to_string(),
        );
    for b in &todo {
        cmd.arg(format!("{b}:{}", package_path(&dir, *b).display()));
    }
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| {
        EngineError::Config(format!(
            "cannot run {} (the Python of the venv with torch and diffusers; set DDIM_VENV or --python): {e}",
            python.display()
        ))
    })?;
    let stderr = child.stderr.take().expect("piped");
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut std::io::BufReader::new(stderr), &mut s);
        s
    });
    let stdout = child.stdout.take().expect("piped");
    for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok) {
        if let Ok(p) = serde_json::from_str::<CompiledPackage>(&line) {
            let meta = dir.join(format!("b{}.json", p.batch));
            let _ = std::fs::write(
                &meta,
                serde_json::to_string_pretty(&p).expect("json") + "\n",
            );
            on_done(&p);
            done.push(p);
        }
    }
    let status = child
        .wait()
        .map_err(|e| EngineError::Io(format!("{}: {e}", python.display())))?;
    let stderr = err_thread.join().unwrap_or_default();
    if !status.success() {
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim()
            .to_string();
        return Err(EngineError::Config(format!(
            "compiling failed ({}): {last}",
            status
        )));
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::plan;

    #[test]
    fn plans_cover_the_batch_with_little_padding() {
        let b = [1, 8, 64];
        assert_eq!(plan(&b, 1), vec![(1, 1)]);
        assert_eq!(plan(&b, 5), vec![(8, 5)]);
        assert_eq!(plan(&b, 8), vec![(8, 8)]);
        assert_eq!(plan(&b, 9), vec![(8, 8), (1, 1)]);
        assert_eq!(plan(&b, 16), vec![(8, 8), (8, 8)]);
        assert_eq!(plan(&b, 40), vec![(64, 40)]);
        assert_eq!(plan(&b, 64), vec![(64, 64)]);
        assert_eq!(plan(&b, 100), vec![(64, 64), (64, 36)]);
        assert_eq!(plan(&[4], 1), vec![(4, 1)]);
        assert_eq!(plan(&[4], 5), vec![(4, 4), (4, 1)]);
        for n in 1..300 {
            for set in [&[1, 8, 64][..], &[4], &[2, 16], &[64]] {
                let p = plan(set, n);
                assert_eq!(p.iter().map(|(_, r)| r).sum::<i64>(), n);
                assert!(p.iter().all(|&(b, r)| r >= 1 && r <= b && set.contains(&b)));
            }
        }
        assert!(plan(&[1, 8], 0).is_empty());
    }
}
