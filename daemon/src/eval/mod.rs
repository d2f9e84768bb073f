//! Sample quality per sampler setting (the paper's Table 1 on this model): the
//! Fréchet distance between the judge's features ([`crate::judge`]) of N samples and
//! of Fashion-MNIST's test split, with a bootstrap interval; the real-vs-real floor;
//! the judge's class histogram of the samples and its mean confidence.
//!
//! ```text
//! FD = |μ1 − μ2|² + tr Σ1 + tr Σ2 − 2 · tr (Σ1^{1/2} Σ2 Σ1^{1/2})^{1/2}
//! ```
//! in float64, every square root through a symmetric eigendecomposition (`eigh`, negative
//! round-off eigenvalues clamped to 0), covariances with the 1/(n − 1) normalisation.
//! `tr (Σ1^{1/2} Σ2 Σ1^{1/2})^{1/2}` is symmetric in 1 ↔ 2 (the two products are
//! similar), so the reference's square root is computed once and every bootstrap
//! resample costs one covariance and one `eigvalsh`.
//!
//! - **Interval**: the sample set is resampled with replacement `B` times (seeded
//!   ChaCha8), the reference kept fixed; the interval is the 2.5 / 97.5 percentiles.
//! - **Floor**: the first `min(N, 5000)` test images against the statistics of the
//!   other 5,000 (the two halves of the test split), with the same bootstrap. It is
//!   taken at the cells' N because FD is biased upwards at small N: a cell can only be
//!   compared with real images at the same N.
pub mod table;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

use crate::engine::noise::{self, SampleSeed};
use crate::engine::sampler::{self, SamplerOptions, StepEvent};
use crate::engine::{EngineError, Model, Solver, Spacing};
use crate::judge::{Embedding, Judge};

/// Mean and covariance of a feature set (float64, CPU), with the covariance's
/// square root when asked for.
#[derive(Debug)]
pub struct Stats {
    pub n: usize,
    pub mu: Tensor,
    pub cov: Tensor,
    sqrt: Option<Tensor>,
}

impl Stats {
    /// Of the rows of `features` [N, D] (N ≥ 2).
    pub fn of(features: &Tensor) -> Self {
        let f = features.to_kind(Kind::Double).to_device(Device::Cpu);
        let n = f.size()[0];
        let mu = f.mean_dim(0, false, Kind::Double);
        let c = &f - mu.unsqueeze(0);
        let cov = c.tr().matmul(&c) / ((n - 1).max(1) as f64);
        Stats {
            n: n as usize,
            mu,
            cov,
            sqrt: None,
        }
    }

    /// Computes Σ^{1/2} once (for a reference used many times).
    pub fn with_sqrt(mut self) -> Self {
        self.sqrt = Some(sqrt_psd(&self.cov));
        self
    }
}

fn symmetric(a: &Tensor) -> Tensor {
    (a + a.tr()) * 0.5
}

/// The square root of a symmetric positive semi-definite matrix via `eigh`.
pub fn sqrt_psd(a: &Tensor) -> Tensor {
    let (w, v) = symmetric(a).linalg_eigh("L");
    let s = w.clamp_min(0.0).sqrt();
    (&v * s.unsqueeze(0)).matmul(&v.tr())
}

/// The Fréchet distance between two Gaussians.
pub fn frechet(a: &Stats, b: &Stats) -> f64 {
    let d2 = (&a.mu - &b.mu).square().sum(Kind::Double).double_value(&[]);
    let tr_a = a.cov.trace().double_value(&[]);
    let tr_b = b.cov.trace().double_value(&[]);
    let owned;
    let (s, other) = match (&a.sqrt, &b.sqrt) {
        (Some(s), _) => (s, &b.cov),
        (None, Some(s)) => (s, &a.cov),
        (None, None) => {
            owned = sqrt_psd(&a.cov);
            (&owned, &b.cov)
        }
    };
    let m = symmetric(&s.matmul(other).matmul(s));
    let tr_sqrt = m
        .linalg_eigvalsh("L")
        .clamp_min(0.0)
        .sqrt()
        .sum(Kind::Double)
        .double_value(&[]);
    (d2 + tr_a + tr_b - 2.0 * tr_sqrt).max(0.0)
}

/// The Fréchet distance between two feature sets [N, D] and [M, D].
pub fn fd(a: &Tensor, b: &Tensor) -> f64 {
    frechet(&Stats::of(a), &Stats::of(b))
}

/// FD with its bootstrap interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub fd: f64,
    pub fd_low: f64,
    pub fd_high: f64,
}

impl Interval {
    /// The basic (pivotal) bootstrap interval [2·fd − high, 2·fd − low]: the
    /// percentile interval reflected about the estimate. A resample has fewer
    /// distinct points than the sample, so resampled FDs sit above the FD by about
    /// the estimator's own small-N bias; reflecting removes that shift once, so this
    /// interval is centred near the bias-corrected FD (it may reach below 0, where
    /// the true FD is 0). It is the interval to read as "where the FD of the
    /// sampler's distribution lies"; the percentile one shows the resampling spread.
    pub fn basic(&self) -> (f64, f64) {
        (2.0 * self.fd - self.fd_high, 2.0 * self.fd - self.fd_low)
    }
}

/// The `q`-quantile (0..=1) of sorted values, linearly interpolated (numpy's default).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// FD of `samples` [N, D] to `reference`, and the 2.5 / 97.5 percentiles of `b`
/// bootstrap resamples of the samples (seeded; `b = 0` gives a zero-width interval).
pub fn bootstrap(samples: &Tensor, reference: &Stats, b: usize, seed: u64) -> Interval {
    bootstrap_resampled(samples, reference, b, seed).0
}

/// [`bootstrap`], also returning the resampled FDs in draw order. Resample k draws
/// the same indices for every sample set of the same N and seed, so two cells whose
/// sample i shares its x_T can be compared resample by resample ([`paired`]).
pub fn bootstrap_resampled(
    samples: &Tensor,
    reference: &Stats,
    b: usize,
    seed: u64,
) -> (Interval, Vec<f64>) {
    let f = samples.to_kind(Kind::Double).to_device(Device::Cpu);
    let n = f.size()[0];
    let fd0 = frechet(reference, &Stats::of(&f));
    if b == 0 || n < 2 {
        let i = Interval {
            fd: fd0,
            fd_low: fd0,
            fd_high: fd0,
        };
        return (i, vec![]);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xB007_5EED_0000_0000);
    let vals: Vec<f64> = (0..b)
        .map(|_| {
            let idx: Vec<i64> = (0..n).map(|_| rng.random_range(0..n)).collect();
            let r = f.index_select(0, &Tensor::from_slice(&idx));
            frechet(reference, &Stats::of(&r))
        })
        .collect();
    let mut sorted = vals.clone();
    sorted.sort_by(f64::total_cmp);
    let i = Interval {
        fd: fd0,
        fd_low: quantile(&sorted, 0.025),
        fd_high: quantile(&sorted, 0.975),
    };
    (i, vals)
}

/// A paired comparison of two cells: FD(a) − FD(b) and the basic bootstrap interval
/// of that difference, from the differences of their resampled FDs resample by
/// resample (the cells share x_T and resample indices, so the noise they have in
/// common cancels; the interval is narrower than the two cells' own intervals
/// suggest).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Paired {
    pub diff: f64,
    pub low: f64,
    pub high: f64,
}

/// The paired comparison of `a` against `b`, when both kept their resampled FDs from
/// the same bootstrap (same N and count); `None` otherwise (e.g. cells from progress
/// files written before the resampled FDs were kept).
pub fn paired(a: &CellResult, b: &CellResult) -> Option<Paired> {
    if a.n != b.n || a.resampled.is_empty() || a.resampled.len() != b.resampled.len() {
        return None;
    }
    let diff = a.fd.fd - b.fd.fd;
    let mut d: Vec<f64> = a
        .resampled
        .iter()
        .zip(&b.resampled)
        .map(|(x, y)| x - y)
        .collect();
    d.sort_by(f64::total_cmp);
    let (lo, hi) = (quantile(&d, 0.025), quantile(&d, 0.975));
    Some(Paired {
        diff,
        low: 2.0 * diff - hi,
        high: 2.0 * diff - lo,
    })
}

/// For each result, its paired comparison with the η = 0 cell of the same S, spacing
/// and solver (the paper's reference row), when there is one and it is not itself.
pub fn vs_eta0(results: &[CellResult]) -> Vec<Option<Paired>> {
    results
        .iter()
        .map(|r| {
            let base = results.iter().find(|o| {
                !o.spec.sigma_hat
                    && o.spec.eta == 0.0
                    && o.spec.steps == r.spec.steps
                    && o.spec.spacing == r.spec.spacing
                    && o.spec.solver == r.spec.solver
            })?;
            if std::ptr::eq(base, r) {
                return None;
            }
            paired(r, base)
        })
        .collect()
}

/// The judge's features of Fashion-MNIST's test split, cached per judge fingerprint
/// under `$XDG_CACHE_HOME/ddimd/` (recomputed when the cache is missing or unreadable).
pub fn test_split_features(judge: &Judge) -> Result<Tensor, EngineError> {
    let cache = cache_path(judge);
    if let Some(p) = &cache {
        if let Ok(named) = Tensor::read_safetensors(p) {
            if let Some((_, t)) = named.into_iter().find(|(k, _)| k == "features") {
                if t.size().len() == 2 && t.size()[1] == judge.config.feature_dim {
                    return Ok(t.to_kind(Kind::Double));
                }
            }
        }
    }
    let x = crate::train::data::fashion_mnist(crate::train::data::Split::Test, [1, 32, 32])
        .map_err(|e| EngineError::InvalidInput(format!("the test split: {e:#}")))?;
    let f = judge.embed(&x, 500)?.features;
    if let Some(p) = &cache {
        let _ = std::fs::create_dir_all(p.parent().expect("parent"));
        let tmp = p.with_extension("tmp");
        if Tensor::write_safetensors(&[("features", &f)], &tmp).is_ok() {
            let _ = std::fs::rename(&tmp, p);
        }
    }
    Ok(f)
}

fn cache_path(judge: &Judge) -> Option<PathBuf> {
    if judge.fingerprint == "random" {
        return None;
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(dirs::cache_dir)?;
    let data = crate::train::data::fashion_mnist_path(crate::train::data::Split::Test);
    let size = std::fs::metadata(&data).map(|m| m.len()).unwrap_or(0);
    Some(base.join("ddimd").join(format!(
        "judge-{}-test-{size}.safetensors",
        judge.fingerprint
    )))
}

/// The test split's features: all of them as the reference of the cells, the two
/// halves for the floor.
#[derive(Debug)]
pub struct Reference {
    pub features: Tensor,
    pub all: Stats,
    pub second_half: Stats,
}

impl Reference {
    pub fn new(features: Tensor) -> Self {
        let n = features.size()[0];
        let h = n / 2;
        Self {
            all: Stats::of(&features).with_sqrt(),
            second_half: Stats::of(&features.narrow(0, h, n - h)).with_sqrt(),
            features,
        }
    }

    pub fn images(&self) -> usize {
        self.features.size()[0] as usize
    }

    /// The real-vs-real floor at `n`: the first `min(n, half)` test images against
    /// the other half's statistics, with the same bootstrap as the cells.
    pub fn floor(&self, n: usize, b: usize, seed: u64) -> (Interval, usize) {
        let h = self.features.size()[0] / 2;
        let m = (n as i64).clamp(2, h.max(2));
        let first = self.features.narrow(0, 0, m);
        (bootstrap(&first, &self.second_half, b, seed), m as usize)
    }
}

/// One sampler setting of the table.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CellSpec {
    pub steps: usize,
    /// η (ignored by σ̂).
    pub eta: f64,
    pub sigma_hat: bool,
    #[serde(with = "by_name")]
    pub spacing: Spacing,
    /// The ODE solver (DPM-Solver++(2M) cells have η = 0 and no σ̂). Absent in
    /// progress files written before solvers: DDIM.
    #[serde(default, with = "by_name")]
    pub solver: Solver,
}

/// Serde by name (`Display` / `FromStr`): "uniform", "dpmpp-2m", … in progress files.
mod by_name {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::fmt::Display;
    use std::str::FromStr;

    pub fn serialize<T: Display, S: Serializer>(v: &T, ser: S) -> Result<S::Ok, S::Error> {
        ser.collect_str(v)
    }

    pub fn deserialize<'de, T, D>(de: D) -> Result<T, D::Error>
    where
        T: FromStr<Err: Display>,
        D: Deserializer<'de>,
    {
        String::deserialize(de)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl CellSpec {
    pub fn options(&self) -> SamplerOptions {
        SamplerOptions {
            steps: self.steps,
            eta: if self.sigma_hat { 0.0 } else { self.eta },
            spacing: self.spacing,
            sigma_hat: self.sigma_hat,
            solver: self.solver,
        }
    }

    /// "S=10 η=0.5" or "S=10 σ̂", then the solver unless it is DDIM ("S=10 η=0 dpmpp-2m").
    pub fn label(&self) -> String {
        let base = if self.sigma_hat {
            format!("S={} σ̂", self.steps)
        } else {
            format!("S={} η={}", self.steps, self.eta)
        };
        let base = match self.spacing {
            Spacing::Uniform => base,
            sp => format!("{base} {sp}"),
        };
        match self.solver {
            Solver::Ddim => base,
            s => format!("{base} {s}"),
        }
    }

    /// The file name stem of the cell's sample grid (`ddimd eval --png-dir`):
    /// `s50_eta0`, `s10_sigmahat`, `s10_eta0_quad`, `s10_eta0_dpmpp-2m`; distinct for
    /// distinct cells, so cells of one folder never overwrite each other.
    pub fn file_stem(&self) -> String {
        let mut name = if self.sigma_hat {
            format!("s{}_sigmahat", self.steps)
        } else {
            format!("s{}_eta{}", self.steps, self.eta)
        };
        if self.spacing != Spacing::Uniform {
            name += &format!("_{}", self.spacing);
        }
        if self.solver != Solver::Ddim {
            name += &format!("_{}", self.solver);
        }
        name
    }
}

/// The cells of a table: for each S, each η, then σ̂ when asked.
pub fn cells(
    steps: &[usize],
    etas: &[f64],
    sigma_hat: bool,
    spacing: Spacing,
    solver: Solver,
) -> Vec<CellSpec> {
    let mut out = vec![];
    for &s in steps {
        for &eta in etas {
            out.push(CellSpec {
                steps: s,
                eta,
                sigma_hat: false,
                spacing,
                solver,
            });
        }
        if sigma_hat {
            out.push(CellSpec {
                steps: s,
                eta: 0.0,
                sigma_hat: true,
                spacing,
                solver,
            });
        }
    }
    out
}

/// The result of one cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellResult {
    pub spec: CellSpec,
    pub n: usize,
    pub fd: Interval,
    pub confidence: f64,
    pub class_histogram: Vec<u64>,
    /// Wall time of sampling and embedding.
    pub seconds: f64,
    /// The bootstrap's resampled FDs in draw order, for [`paired`] comparisons
    /// (absent in progress lines written before they were kept).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resampled: Vec<f64>,
}

impl CellResult {
    /// The cell as `ddimd eval --json` prints it (σ̂ cells have `"eta": null`), with
    /// `"vs_eta0": {"diff", "low", "high"}` when a paired comparison is given.
    pub fn json_with(&self, vs_eta0: Option<Paired>) -> serde_json::Value {
        let mut v = self.json();
        if let Some(p) = vs_eta0 {
            v["vs_eta0"] = serde_json::json!(p);
        }
        v
    }

    /// The cell as `ddimd eval --json` prints it (σ̂ cells have `"eta": null`).
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "steps": self.spec.steps,
            "eta": if self.spec.sigma_hat { serde_json::Value::Null } else { self.spec.eta.into() },
            "sigma_hat": self.spec.sigma_hat,
            "spacing": self.spec.spacing.as_str(),
            "solver": self.spec.solver.as_str(),
            "n": self.n,
            "fd": self.fd.fd,
            "fd_low": self.fd.fd_low,
            "fd_high": self.fd.fd_high,
            "fd_basic_low": self.fd.basic().0,
            "fd_basic_high": self.fd.basic().1,
            "confidence": self.confidence,
            "class_histogram": self.class_histogram,
        })
    }
}

/// Settings shared by the cells of one evaluation.
#[derive(Debug, Clone, Copy)]
pub struct EvalSettings {
    /// N, samples per cell.
    pub samples: usize,
    /// Sample i of every cell starts from the x_T of (seed, i) and draws its η-noise
    /// from the same per-sample stream.
    pub seed: u64,
    /// Samples per model call.
    pub batch: usize,
    /// Bootstrap resamples.
    pub bootstrap: usize,
}

/// Samples of one cell that a caller may keep (e.g. a grid): at most this many.
pub const KEEP_SAMPLES: usize = 64;

/// Draws the cell's N samples (batched, per-sample seeds), embeds them and measures
/// them against `reference`. `on_step(event, k)` is called after each model call of
/// a batch of `k` samples; it returns false to cancel. Returns the result and the
/// first [`KEEP_SAMPLES`] samples.
pub fn evaluate_cell(
    model: &Model,
    judge: &Judge,
    reference: &Stats,
    cell: &CellSpec,
    s: &EvalSettings,
    on_step: &mut dyn FnMut(&StepEvent, usize) -> bool,
) -> Result<(CellResult, Tensor), EngineError> {
    let opts = cell.options();
    opts.validate(model.num_train_timesteps())?;
    if s.samples == 0 {
        return Err(EngineError::InvalidInput("samples must be ≥ 1".into()));
    }
    let started = std::time::Instant::now();
    let seeds: Vec<SampleSeed> = noise::seeds(s.seed, s.samples);
    let (mut feats, mut probs, mut kept) = (vec![], vec![], vec![]);
    let mut n_kept = 0usize;
    for chunk in seeds.chunks(s.batch.max(1)) {
        let xt = noise::initial_noise(chunk, model.sample_shape(), Device::Cpu);
        let k = chunk.len();
        let x = sampler::sample(model, &xt, &opts, chunk, &mut |e: &StepEvent| on_step(e, k))?;
        let e = judge.embed(&x, 500)?;
        feats.push(e.features);
        probs.push(e.probs);
        if n_kept < KEEP_SAMPLES {
            let take = (KEEP_SAMPLES - n_kept).min(k);
            kept.push(x.narrow(0, 0, take as i64).to_device(Device::Cpu));
            n_kept += take;
        }
    }
    let e = Embedding {
        features: Tensor::cat(&feats, 0),
        probs: Tensor::cat(&probs, 0),
    };
    let (interval, resampled) = bootstrap_resampled(&e.features, reference, s.bootstrap, s.seed);
    Ok((
        CellResult {
            spec: *cell,
            n: s.samples,
            fd: interval,
            confidence: e.mean_confidence(),
            class_histogram: e.class_histogram(),
            seconds: started.elapsed().as_secs_f64(),
            resampled,
        },
        Tensor::cat(&kept, 0),
    ))
}

/// What identifies a finished cell in a progress file: a cell is reused only for
/// the same model, judge, seed, N and bootstrap.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellKey {
    pub model: String,
    pub judge: String,
    pub seed: u64,
    pub samples: usize,
    pub bootstrap: usize,
    pub spec: CellSpec,
}

#[derive(Debug, Serialize, Deserialize)]
struct ProgressLine {
    key: CellKey,
    cell: CellResult,
}

/// Finished cells of a progress file (JSON lines; unreadable lines are skipped).
pub fn read_progress(path: &Path) -> Vec<(CellKey, CellResult)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<ProgressLine>(l).ok())
        .map(|p| (p.key, p.cell))
        .collect()
}

/// Appends a finished cell to a progress file.
pub fn append_progress(path: &Path, key: &CellKey, cell: &CellResult) -> Result<(), EngineError> {
    use std::io::Write;
    let io = |e: std::io::Error| EngineError::Io(format!("{}: {e}", path.display()));
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io)?;
    let line = serde_json::to_string(&ProgressLine {
        key: key.clone(),
        cell: cell.clone(),
    })
    .expect("json");
    writeln!(f, "{line}").map_err(io)?;
    f.sync_all().map_err(io)
}

#[cfg(test)]
mod tests {

    #[test]
    fn cells_of_one_folder_get_distinct_file_names() {
        let spec = |steps, eta, sigma_hat, spacing, solver| CellSpec {
            steps,
            eta,
            sigma_hat,
            spacing,
            solver,
        };
        let specs = [
            spec(10, 0.0, false, Spacing::Uniform, Solver::Ddim),
            spec(10, 0.0, false, Spacing::Quad, Solver::Ddim),
            spec(10, 0.0, false, Spacing::Uniform, Solver::DpmPP2M),
            spec(10, 0.0, true, Spacing::Uniform, Solver::Ddim),
            spec(10, 0.5, false, Spacing::Uniform, Solver::Ddim),
            spec(20, 0.0, false, Spacing::Uniform, Solver::Ddim),
        ];
        let names: std::collections::HashSet<String> =
            specs.iter().map(CellSpec::file_stem).collect();
        assert_eq!(names.len(), specs.len(), "{names:?}");
        let labels: std::collections::HashSet<String> = specs.iter().map(CellSpec::label).collect();
        assert_eq!(labels.len(), specs.len(), "{labels:?}");
        // The uniform DDIM names stay what earlier runs wrote.
        assert_eq!(specs[0].file_stem(), "s10_eta0");
        assert_eq!(specs[1].file_stem(), "s10_eta0_quad");
        assert_eq!(specs[3].file_stem(), "s10_sigmahat");
    }
    use super::*;

    /// Standard normal [n, d] + shift from its own seeded stream (Box–Muller on
    /// ChaCha8; not tch's generator, which the tests running in parallel share).
    fn gaussian(n: i64, d: i64, shift: f64, seed: i64) -> Tensor {
        let mut rng = ChaCha8Rng::seed_from_u64(seed as u64);
        let v: Vec<f64> = (0..n * d)
            .map(|_| {
                let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
                let u2: f64 = rng.random();
                (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos() + shift
            })
            .collect();
        Tensor::from_slice(&v).view([n, d])
    }

    #[test]
    fn fd_of_a_set_with_itself_is_zero() {
        let a = gaussian(500, 16, 0.0, 1);
        let v = fd(&a, &a);
        assert!(v.abs() < 1e-8, "{v}");
    }

    #[test]
    fn fd_closed_form_for_diagonal_gaussians() {
        // N(μ1, diag(a²)) vs N(μ2, diag(b²)): |μ1−μ2|² + Σ (a − b)².
        let d = 4;
        let a = Stats {
            n: 0,
            mu: Tensor::zeros([d], (Kind::Double, Device::Cpu)),
            cov: Tensor::from_slice(&[1.0f64, 4.0, 9.0, 1.0]).diag(0),
            sqrt: None,
        };
        let b = Stats {
            n: 0,
            mu: Tensor::from_slice(&[1.0f64, 0.0, 0.0, 2.0]),
            cov: Tensor::from_slice(&[4.0f64, 1.0, 1.0, 1.0]).diag(0),
            sqrt: None,
        };
        let want = (1.0 + 4.0) + (1.0 + 1.0 + 4.0 + 0.0);
        assert!((frechet(&a, &b) - want).abs() < 1e-9);
        assert!((frechet(&b, &a) - want).abs() < 1e-9);
    }

    #[test]
    fn fd_is_symmetric_and_separates_different_sets() {
        let a = gaussian(400, 8, 0.0, 2);
        let b = gaussian(300, 8, 0.0, 3) * 1.5 + 0.3;
        let (ab, ba) = (fd(&a, &b), fd(&b, &a));
        assert!((ab - ba).abs() < 1e-8 * ab.max(1.0), "{ab} {ba}");
        let same = fd(&a, &gaussian(400, 8, 0.0, 4));
        let far = fd(&a, &gaussian(400, 8, 3.0, 5));
        assert!(same < 0.5 && far > 50.0, "same {same}, far {far}");
        // The cached square root gives the same value from either side.
        let r = Stats::of(&a).with_sqrt();
        assert!((frechet(&r, &Stats::of(&b)) - ab).abs() < 1e-8 * ab.max(1.0));
    }

    #[test]
    fn bootstrap_interval_shrinks_with_n_and_is_deterministic() {
        let reference = Stats::of(&gaussian(4000, 8, 0.0, 6)).with_sqrt();
        let width = |n| {
            let s = gaussian(n, 8, 0.5, 7);
            let i = bootstrap(&s, &reference, 100, 11);
            assert!(i.fd_low <= i.fd_high);
            let j = bootstrap(&s, &reference, 100, 11);
            assert_eq!(i, j, "same seed, same interval");
            i.fd_high - i.fd_low
        };
        let (w100, w1600) = (width(100), width(1600));
        assert!(w1600 < w100 / 2.0, "{w100} → {w1600}");
        let s = gaussian(100, 8, 0.5, 7);
        assert_ne!(
            bootstrap(&s, &reference, 100, 11),
            bootstrap(&s, &reference, 100, 12)
        );
    }

    #[test]
    fn paired_comparison_is_tighter_than_the_cells_own_intervals() {
        // Two "cells" whose sample i shares most of its value (as two samplers from the
        // same x_T do): b = a shifted a little in the mean, plus a little noise.
        let reference = Stats::of(&gaussian(4000, 8, 0.0, 31)).with_sqrt();
        let a = gaussian(300, 8, 0.3, 32);
        let b = &a + 0.15 + gaussian(300, 8, 0.0, 33) * 0.1;
        let cell = |f: &Tensor, eta: f64| {
            let (fd, resampled) = bootstrap_resampled(f, &reference, 200, 7);
            CellResult {
                spec: CellSpec {
                    steps: 10,
                    eta,
                    sigma_hat: false,
                    spacing: Spacing::Uniform,
                    solver: Solver::Ddim,
                },
                n: 300,
                fd,
                confidence: 0.5,
                class_histogram: vec![],
                seconds: 0.0,
                resampled,
            }
        };
        let (ca, cb) = (cell(&a, 0.0), cell(&b, 1.0));
        let p = paired(&cb, &ca).expect("both kept their resamples");
        assert!((p.diff - (cb.fd.fd - ca.fd.fd)).abs() < 1e-12);
        assert!(p.low <= p.diff && p.diff <= p.high, "{p:?}");
        let own = (cb.fd.fd_high - cb.fd.fd_low).min(ca.fd.fd_high - ca.fd.fd_low);
        assert!(
            p.high - p.low < 0.5 * own,
            "paired width {} vs the cells' own {own}",
            p.high - p.low
        );
        // The shift is resolved by the paired interval: b is further from the reference.
        assert!(p.low > 0.0, "{p:?}");
        // vs_eta0 pairs the η = 1 cell with the η = 0 one, not the η = 0 cell with itself.
        let v = vs_eta0(&[ca.clone(), cb.clone()]);
        assert_eq!(v[0], None);
        assert_eq!(v[1], Some(p));
        // Cells without resamples (older progress lines) give no comparison.
        let old = CellResult {
            resampled: vec![],
            ..ca.clone()
        };
        assert_eq!(paired(&cb, &old), None);
        // Deterministic for a seed.
        assert_eq!(paired(&cell(&b, 1.0), &cell(&a, 0.0)), Some(p));
    }

    #[test]
    fn basic_interval_corrects_the_small_n_bias() {
        // Samples from the reference's own distribution: the true FD is 0, but FD of
        // 150 points in 16-d sits well above it, and resamples above that again.
        let reference = Stats::of(&gaussian(20_000, 16, 0.0, 21)).with_sqrt();
        let i = bootstrap(&gaussian(150, 16, 0.0, 22), &reference, 200, 5);
        let (lo, hi) = i.basic();
        assert!(i.fd_low > 0.0, "the percentile interval misses 0: {i:?}");
        assert!(
            lo < 0.0 && hi > 0.0,
            "the basic one holds it: [{lo}, {hi}] of {i:?}"
        );
        assert!(
            (hi - lo - (i.fd_high - i.fd_low)).abs() < 1e-9,
            "same width"
        );
        // A real difference (true FD 16 × 0.5² = 4) stays inside the basic interval.
        let i = bootstrap(&gaussian(150, 16, 0.5, 23), &reference, 200, 5);
        let (lo, hi) = i.basic();
        assert!(lo < 4.0 && 4.0 < hi, "[{lo}, {hi}] of {i:?}");
        assert!(i.fd > 4.0, "the plug-in FD is biased upwards: {i:?}");
    }

    #[test]
    fn progress_lines_written_before_solvers_read_as_ddim() {
        let old = r#"{"key":{"model":"m","judge":"j","seed":0,"samples":2,"bootstrap":2,"spec":{"steps":10,"eta":0.5,"sigma_hat":false,"spacing":"quad"}},"cell":{"spec":{"steps":10,"eta":0.5,"sigma_hat":false,"spacing":"quad"},"n":2,"fd":{"fd":1.0,"fd_low":0.5,"fd_high":2.0},"confidence":0.9,"class_histogram":[2],"seconds":1.0}}"#;
        let p: ProgressLine = serde_json::from_str(old).unwrap();
        assert_eq!(
            p.key.spec,
            cells(&[10], &[0.5], false, Spacing::Quad, Solver::Ddim)[0]
        );
        // Written now: the solver by name, read back the same.
        let mut key = p.key.clone();
        key.spec.solver = Solver::DpmPP2M;
        let line = serde_json::to_string(&key).unwrap();
        assert!(line.contains(r#""solver":"dpmpp-2m""#) && line.contains(r#""spacing":"quad""#));
        assert_eq!(serde_json::from_str::<CellKey>(&line).unwrap(), key);
        assert_eq!(p.cell.fd.basic(), (0.0, 1.5));
    }

    #[test]
    fn quantile_interpolates() {
        let v = [0.0, 1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile(&v, 0.5), 2.0);
        assert_eq!(quantile(&v, 0.025), 0.1);
        assert_eq!(quantile(&v, 1.0), 4.0);
    }

    /// On real data (when Debian's dataset is installed): two classes of
    /// Fashion-MNIST are far apart, two halves of one class are close, in a fixed
    /// feature space (8×8 average-pooled pixels, 64-d).
    #[test]
    fn fd_of_two_classes_is_large_on_fashion_mnist() {
        use crate::train::data::{fashion_mnist, fashion_mnist_path, Split};
        if !fashion_mnist_path(Split::Test).exists() {
            eprintln!("Fashion-MNIST is not installed: skipping");
            return;
        }
        let x = fashion_mnist(Split::Test, [1, 32, 32]).unwrap();
        let y = crate::judge::fashion_mnist_labels(Split::Test).unwrap();
        let pool = |c: i64| {
            let idx = y.eq(c).nonzero().squeeze_dim(1);
            x.index_select(0, &idx)
                .avg_pool2d([4, 4], [4, 4], [0, 0], false, true, None::<i64>)
                .flatten(1, -1)
                .to_kind(Kind::Double)
        };
        let (trousers, bags) = (pool(1), pool(8));
        let h = trousers.size()[0] / 2;
        let halves = fd(&trousers.narrow(0, 0, h), &trousers.narrow(0, h, h));
        let apart = fd(&trousers, &bags);
        assert!(
            apart > 20.0 * halves,
            "halves {halves}, trouser vs bag {apart}"
        );
    }

    #[test]
    fn cells_list_eta_rows_then_sigma_hat() {
        let c = cells(&[10, 20], &[0.0, 1.0], true, Spacing::Quad, Solver::Ddim);
        assert_eq!(c.len(), 6);
        assert_eq!(c[2].label(), "S=10 σ̂ quad");
        assert_eq!(c[3].label(), "S=20 η=0 quad");
        let d = cells(&[10], &[0.0], false, Spacing::Uniform, Solver::DpmPP2M);
        assert_eq!(d[0].label(), "S=10 η=0 dpmpp-2m");
        assert_eq!(d[0].options().solver, Solver::DpmPP2M);
        assert!(c.iter().all(|c| c.spacing == Spacing::Quad));
        assert!(c[2].options().sigma_hat && c[2].options().eta == 0.0);
    }

    #[test]
    fn evaluate_cell_is_deterministic_for_a_seed() {
        use crate::engine::config::UNetConfig;
        use crate::engine::schedule::SchedulerConfig;
        use crate::judge::JudgeConfig;
        let cfg = UNetConfig::preset("test", 1, 32).unwrap();
        tch::manual_seed(0);
        let model = Model::from_config(cfg, SchedulerConfig::default(), Device::Cpu).unwrap();
        let judge = Judge::random(JudgeConfig::new([4, 8, 8], 8), 1, Device::Cpu);
        let reference = Stats::of(&gaussian(200, 8, 0.0, 1).abs()).with_sqrt();
        let cell = CellSpec {
            steps: 3,
            eta: 0.5,
            sigma_hat: false,
            spacing: Spacing::Uniform,
            solver: Solver::Ddim,
        };
        let s = EvalSettings {
            samples: 6,
            seed: 4,
            batch: 4,
            bootstrap: 20,
        };
        // The same settings twice: bit for bit.
        let (r1, _) =
            evaluate_cell(&model, &judge, &reference, &cell, &s, &mut |_, _| true).unwrap();
        let (r2, _) =
            evaluate_cell(&model, &judge, &reference, &cell, &s, &mut |_, _| true).unwrap();
        assert_eq!((r1.fd, &r1.class_histogram), (r2.fd, &r2.class_histogram));
        let mut calls = 0;
        let (a, kept) = evaluate_cell(&model, &judge, &reference, &cell, &s, &mut |_, k| {
            calls += k;
            true
        })
        .unwrap();
        assert_eq!(calls, 6 * 3);
        assert_eq!(kept.size(), [6, 1, 32, 32]);
        let (b, _) = evaluate_cell(
            &model,
            &judge,
            &reference,
            &cell,
            &EvalSettings { batch: 6, ..s },
            &mut |_, _| true,
        )
        .unwrap();
        assert_eq!(a.class_histogram.iter().sum::<u64>(), 6);
        // Batching changes only float round-off (per-sample seeds fix the noise).
        assert!(
            (a.fd.fd - b.fd.fd).abs() <= 1e-4 * a.fd.fd.max(1.0),
            "batching changes nothing: {} vs {}",
            a.fd.fd,
            b.fd.fd
        );
        assert_eq!(a.class_histogram, b.class_histogram);
        let e = evaluate_cell(
            &model,
            &judge,
            &reference,
            &CellSpec {
                steps: 1001,
                ..cell
            },
            &s,
            &mut |_, _| true,
        )
        .unwrap_err();
        assert!(e.to_string().contains("1001"), "{e}");
    }
}
