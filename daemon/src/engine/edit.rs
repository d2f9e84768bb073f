//! Editing on the DDIM latent: the math of `ddim edit …`.
//!
//! Every latent here is an x_T of shape [N, C, H, W] (float32, model space, N rows
//! edited independently); d = C·H·W. Gaussian noise lies near the sphere ‖x‖ = √d, and
//! a DDIM decode of a latent far off its parents' radius washes out (too short) or
//! saturates (too long), so every operation that builds a latent linearly rescales it
//! back onto a sphere: by default the parents' radius ([`Radius::Parents`]), because the
//! η = 0 codes of real images of a trained model sit inside √d (0.7–0.9·√d for the
//! shipped model; docs/editing.md), and pushed out to √d their decodes saturate;
//! [`Radius::SqrtD`] is the noise sphere.
//!
//! | operation | formula |
//! |---|---|
//! | [`variation`] | x'_i = slerp(x, z_i, s), z_i = seed i's initial noise (stream 0, exactly as sampling draws x_T) |
//! | [`rescale_to_sphere`] | R(x) = x · √d / ‖x‖ per row; R_ρ(x) = x · ρ / ‖x‖ |
//! | [`combine`] | x' = R_ρ(Σ_j w_j·x_j), 1 ≤ J ≤ 16, ρ = Σ_j \|w_j\|·‖x_j‖ / Σ_j \|w_j\| (parents) or √d |
//! | [`direction`] | dir = mean_p(pos_p) − mean_q(neg_q) |
//! | [`apply_direction`] | x' = R_ρ(x + w·dir), ρ = ‖x‖ (parents) or √d |
//! | [`grid`] | cell(i, j) = slerp(slerp(a, b, u_j), slerp(c, d, u_j), v_i), u_j = j/(n−1), v_i = i/(n−1) |
//! | [`renoise`] | x̂0 = D_{k→0}(P(I_{0→k}(x0))), k = ⌈s·S⌉ |
//! | [`inpaint`] | reverse run with x_{τ_{i−1}} ← m ⊙ known_{i−1} + (1 − m) ⊙ step(x_{τ_i}) |
//!
//! slerp is [`interp::slerp`](super::interp::slerp) (θ per row, lerp when |cos θ| >
//! 0.9995); here its endpoints are special-cased so that α = 0 and α = 1 return the
//! endpoint bit for bit (variation at s = 0 / s = 1, the grid's corners).
//!
//! # Plans, levels and noise streams
//! τ_1 < … < τ_S are the S timesteps of the plan (`spacing.timesteps(S, T)`, 1-based
//! here), τ_0 := −1 with ᾱ = 1, so x_{τ_0} = x0. [`sampler::invert_partial`] runs the
//! first k η = 0 inversion steps, I_{0→k}: x0 ↦ x_{τ_k};
//! [`sampler::sample_from`] runs the last k reverse steps of the S-step plan,
//! D_{k→0}: x_{τ_k} ↦ x0, the step τ_i → τ_{i−1} drawing the η-noise stream of its
//! plan index S − i (stream S − i + 1 of the sample's seed), as a full [`sampler::sample`]
//! does. So k = S is a full encode followed by a full decode, bit for bit, and the noise
//! of a level does not depend on the strength.
//!
//! # Re-noise (DDIM's SDEdit)
//! k = ⌈s·S⌉ (computed as ⌈s·S − 10⁻⁹⌉ so 0.3·10 is 3, see [`renoise_steps`]). x_{τ_k} =
//! I_{0→k}(x0) is the η = 0 partial inversion; with `perturb` p > 0 it is moved towards
//! the seed's noise, P(x) = slerp(x, z_i, p) (for the η = 0 variant; p = 0 leaves it
//! alone); then D_{k→0} samples back with the options' η (σ̂ too) and per-sample seeds.
//! Structure above the noise level of τ_k survives; η > 0 redraws detail. s = 0 returns
//! x0; s = 1 is `sample(invert(x0, S), S, η)`.
//!
//! # Inpainting (region edit)
//! m is the keep mask (1 = keep, 0 = redraw; values in [0, 1] blend). With
//! blend(k, x) = m ⊙ k + (1 − m) ⊙ x, the reverse run is
//! ```text
//! x_{τ_S}     = blend(known_S, z_i)                   z_i: the seed's initial noise
//! x_{τ_{i−1}} = blend(known_{i−1}, step(x_{τ_i}))    i = S … 1, η and seeds of the options
//! ```
//! - η = 0 (deterministic options): known_i = r_i, the original's own η = 0 path: x_T =
//!   invert(x0, S) and r_i its η = 0 decode at τ_i (r_S = x_T, r_0 = the plain S-step
//!   reconstruction). So the kept region is exactly the original's reconstruction (the
//!   usual Table 2 error), keep = 1 gives that reconstruction bit for bit, keep = 0 gives
//!   `sample(z)`. (The decode path rather than the inversion path: the inversion's points
//!   are off the decoder's path by the encoder's discretisation error, which would leave
//!   the kept region short of the reconstruction by one step.) Cost: 3S model calls
//!   (S on one row for each path, S on N rows).
//! - η > 0 or σ̂: known_i is a q(x_{τ_i} | x0) sample, √ᾱ_{τ_i}·x0 + √(1 − ᾱ_{τ_i})·ζ_i,
//!   ζ_i = the seed's noise stream [`KNOWN_STREAM`] + i (fresh at each level, as RePaint);
//!   known_0 = x0, so the kept region is the original itself. Cost: S model calls.
//!
//! [`inpaint_latent`] does the same starting from a latent x_T instead of an image (a
//! library latent: no inversion; its decode is the original). The result is an image;
//! encoding it (η = 0, S steps) makes it a latent like any other.
use std::ops::RangeInclusive;

use tch::{Kind, Tensor};

use super::interp::slerp;
use super::model::Model;
use super::noise::{batch_normal, initial_noise, SampleSeed};
use super::sampler::{self, check_finite, check_input, SamplerOptions, StepEvent};
use super::EngineError;

/// The most latents [`combine`] takes.
pub const MAX_COMBINE: usize = 16;
/// The grid sizes [`grid`] takes (n×n cells).
pub const GRID_SIZES: RangeInclusive<usize> = 2..=9;
/// The first noise stream of [`inpaint`]'s q(x_t | x0) samples (level i uses this + i);
/// far above the sampler's streams 0..=S.
pub const KNOWN_STREAM: u64 = 1 << 32;

/// A rectangle in the model's pixel grid (the H×W of x_T): columns x..x+w, rows y..y+h.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    pub x: i64,
    pub y: i64,
    pub w: i64,
    pub h: i64,
}

impl From<(i64, i64, i64, i64)> for Rect {
    fn from((x, y, w, h): (i64, i64, i64, i64)) -> Self {
        Self { x, y, w, h }
    }
}

fn invalid(msg: impl Into<String>) -> EngineError {
    EngineError::InvalidInput(msg.into())
}

/// `x` is a non-empty [N, C, H, W] float32 batch of finite values.
fn check_latents(x: &Tensor, what: &str) -> Result<(), EngineError> {
    let size = x.size();
    if size.len() != 4 || size[0] < 1 {
        return Err(invalid(format!(
            "{what}: expected shape [N, C, H, W] with N ≥ 1, got {size:?}"
        )));
    }
    if x.kind() != Kind::Float {
        return Err(invalid(format!(
            "{what}: expected float32, got {:?}",
            x.kind()
        )));
    }
    check_finite(x, what)
}

fn check_same_sample_shape(a: &Tensor, b: &Tensor, what: &str) -> Result<(), EngineError> {
    let (sa, sb) = (a.size(), b.size());
    if sa[1..] != sb[1..] {
        return Err(invalid(format!(
            "{what}: latents of shape {:?} and {:?} do not match",
            &sb[1..],
            &sa[1..]
        )));
    }
    Ok(())
}

/// `v` is a finite number in [0, 1].
fn check_unit(v: f64, what: &str) -> Result<(), EngineError> {
    if v.is_finite() && (0.0..=1.0).contains(&v) {
        Ok(())
    } else {
        Err(invalid(format!("{what} must be in [0, 1], got {v}")))
    }
}

fn check_seeds(seeds: &[SampleSeed]) -> Result<(), EngineError> {
    if seeds.is_empty() {
        Err(invalid("at least one seed (output sample) is needed"))
    } else {
        Ok(())
    }
}

fn sample_shape(x: &Tensor) -> [i64; 3] {
    let s = x.size();
    [s[1], s[2], s[3]]
}

/// `x` ([1, …] or [n, …]) as n contiguous rows.
fn rows(x: &Tensor, n: usize) -> Tensor {
    let [c, h, w] = sample_shape(x);
    x.expand([n as i64, c, h, w], false).contiguous()
}

/// slerp whose endpoints are exact: α = 0 → a, α = 1 → b (copies).
fn slerp_exact(a: &Tensor, b: &Tensor, alpha: f64) -> Tensor {
    if alpha == 0.0 {
        a.copy()
    } else if alpha == 1.0 {
        b.copy()
    } else {
        slerp(a, b, alpha)
    }
}

/// Progress of a sub-run reported as steps `done + 1 ..` of `total`.
fn offset<'a>(
    on_step: &'a mut dyn FnMut(&StepEvent) -> bool,
    done: usize,
    total: usize,
) -> impl FnMut(&StepEvent) -> bool + 'a {
    move |e| {
        on_step(&StepEvent {
            step: done + e.step,
            total,
            t: e.t,
            x0_hat: e.x0_hat,
        })
    }
}

// ------------------------------------------------------------ variation --

/// Variations of one latent `x` ([1, C, H, W]): row i is slerp(x, z_i, strength) with
/// z_i = `seeds[i]`'s initial noise, exactly as [`sampler::sample`]'s x_T for that seed
/// ([`initial_noise`]). strength 0 returns x, 1 returns z_i, both bit for bit.
/// Returns [seeds.len(), C, H, W].
pub fn variation(x: &Tensor, strength: f64, seeds: &[SampleSeed]) -> Result<Tensor, EngineError> {
    check_latents(x, "x")?;
    if x.size()[0] != 1 {
        return Err(invalid(format!(
            "variation takes one latent, got {}",
            x.size()[0]
        )));
    }
    check_unit(strength, "strength")?;
    check_seeds(seeds)?;
    let z = initial_noise(seeds, sample_shape(x), x.device());
    Ok(slerp_exact(&rows(x, seeds.len()), &z, strength))
}

// -------------------------------------------------------- linear algebra --

/// The radius a linear edit ([`combine`], [`apply_direction`]) is rescaled to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Radius {
    /// The parents' radius: ‖x‖ of the latent a direction moves; for a combination the
    /// |w|-weighted mean of the terms' norms, Σ_j |w_j|·‖x_j‖ / Σ_j |w_j| (so the mean
    /// of two latents keeps their mean norm). Per row. The default.
    #[default]
    Parents,
    /// √d, the radius of N(0, I) noise (what sampling starts from).
    SqrtD,
}

impl Radius {
    /// The name used in lineage, JSON and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Radius::Parents => "parents",
            Radius::SqrtD => "sqrt-d",
        }
    }
}

/// Per-row norms ([n, 1], f64) of a [n, d] double tensor.
fn row_norms(flat: &Tensor) -> Tensor {
    flat.square()
        .sum_dim_intlist([1i64].as_slice(), true, Kind::Double)
        .sqrt()
}

/// Per-row norms ([n, 1], f64) of [N, C, H, W] latents.
fn latent_norms(x: &Tensor) -> Tensor {
    row_norms(&x.to_kind(Kind::Double).reshape([x.size()[0], -1]))
}

/// Rows of a [n, d] double tensor scaled to norm `target` ([n, 1]; `None`: √d); a zero
/// (or non-finite) row is an error naming it.
fn to_sphere(flat: &Tensor, target: Option<&Tensor>, what: &str) -> Result<Tensor, EngineError> {
    let d = flat.size()[1] as f64;
    let norms = row_norms(flat);
    let v = Vec::<f64>::try_from(norms.reshape([-1]).to_device(tch::Device::Cpu))?;
    if let Some(i) = v.iter().position(|n| !(n.is_finite() && *n > 0.0)) {
        return Err(invalid(format!(
            "{what}: row {i} has norm {}; a zero latent has no direction to rescale",
            v[i]
        )));
    }
    Ok(match target {
        None => flat * (norms.reciprocal() * d.sqrt()),
        Some(t) => flat * (norms.reciprocal() * t),
    })
}

fn rescale_double(
    x: &Tensor,
    size: &[i64],
    target: Option<&Tensor>,
    what: &str,
) -> Result<Tensor, EngineError> {
    let n = size[0];
    let out = to_sphere(&x.reshape([n, -1]), target, what)?;
    Ok(out.reshape(size).to_kind(Kind::Float))
}

/// Each row of `x` ([N, C, H, W]) scaled to norm √d, d = C·H·W (computed in f64).
/// An all-zero row is an error.
pub fn rescale_to_sphere(x: &Tensor) -> Result<Tensor, EngineError> {
    check_latents(x, "x")?;
    rescale_double(&x.to_kind(Kind::Double), &x.size(), None, "rescale")
}

/// Σ_j `weights[j]`·`latents[j]`, rescaled to `radius` (per row: the |w|-weighted mean
/// norm of the terms' rows, or √d). 1..=[`MAX_COMBINE`] latents of one shape
/// [N, C, H, W] (row r of the result combines the rows r), one finite weight each.
/// Errors name the offending latent or weight (0-based), or say that the terms cancel.
pub fn combine(latents: &[Tensor], weights: &[f64], radius: Radius) -> Result<Tensor, EngineError> {
    if latents.is_empty() || latents.len() > MAX_COMBINE {
        return Err(invalid(format!(
            "a combination takes 1 to {MAX_COMBINE} latents, got {}",
            latents.len()
        )));
    }
    if weights.len() != latents.len() {
        return Err(invalid(format!(
            "{} latents but {} weights",
            latents.len(),
            weights.len()
        )));
    }
    if let Some(j) = weights.iter().position(|w| !w.is_finite()) {
        return Err(invalid(format!(
            "weights[{j}] is {}; weights must be finite numbers",
            weights[j]
        )));
    }
    for (j, x) in latents.iter().enumerate() {
        check_latents(x, &format!("latents[{j}]"))?;
        if x.size() != latents[0].size() {
            return Err(invalid(format!(
                "latents[{j}] has shape {:?}, latents[0] has {:?}",
                x.size(),
                latents[0].size()
            )));
        }
    }
    let mut sum = latents[0].to_kind(Kind::Double) * weights[0];
    for (x, w) in latents.iter().zip(weights).skip(1) {
        sum += x.to_kind(Kind::Double) * *w;
    }
    let target = match radius {
        Radius::SqrtD => None,
        Radius::Parents => {
            let total: f64 = weights.iter().map(|w| w.abs()).sum();
            let mut t = latent_norms(&latents[0]) * (weights[0].abs() / total);
            for (x, w) in latents.iter().zip(weights).skip(1) {
                t += latent_norms(x) * (w.abs() / total);
            }
            Some(t)
        }
    };
    rescale_double(
        &sum,
        &latents[0].size(),
        target.as_ref(),
        "the combination (do the terms cancel?)",
    )
}

/// An attribute direction: mean(pos) − mean(neg) over the rows ([P, C, H, W] and
/// [Q, C, H, W], P, Q ≥ 1), as [1, C, H, W]; e.g. pos = the latents tagged `ankle-boot`,
/// neg = those tagged `sneaker`.
pub fn direction(pos: &Tensor, neg: &Tensor) -> Result<Tensor, EngineError> {
    check_latents(pos, "pos")?;
    check_latents(neg, "neg")?;
    check_same_sample_shape(pos, neg, "direction")?;
    let mean = |x: &Tensor| x.mean_dim([0i64].as_slice(), true, Kind::Double);
    Ok((mean(pos) - mean(neg)).to_kind(Kind::Float))
}

/// x + weight·dir rescaled to `radius` (‖x‖ or √d), per row of `x` ([N, C, H, W]; `dir`
/// is [1, C, H, W] from [`direction`]). weight = 0 gives x itself (parents' radius) or
/// R(x), x projected onto the √d sphere.
pub fn apply_direction(
    x: &Tensor,
    dir: &Tensor,
    weight: f64,
    radius: Radius,
) -> Result<Tensor, EngineError> {
    check_latents(x, "x")?;
    check_latents(dir, "dir")?;
    check_same_sample_shape(x, dir, "apply_direction")?;
    if dir.size()[0] != 1 {
        return Err(invalid(format!(
            "dir: expected one direction [1, C, H, W], got {:?}",
            dir.size()
        )));
    }
    if !weight.is_finite() {
        return Err(invalid(format!(
            "weight must be a finite number, got {weight}"
        )));
    }
    let moved = x.to_kind(Kind::Double) + dir.to_kind(Kind::Double) * weight;
    let target = match radius {
        Radius::SqrtD => None,
        Radius::Parents => Some(latent_norms(x)),
    };
    rescale_double(&moved, &x.size(), target.as_ref(), "x + weight·dir")
}

// ----------------------------------------------------------------- grid --

/// An n×n grid (n in [`GRID_SIZES`]) spanned by four corner latents [1, C, H, W]:
/// a top-left, b top-right, c bottom-left, d bottom-right. Cell (i, j) (row i, column
/// j; index i·n + j of the result, row-major) is slerp(slerp(a, b, u), slerp(c, d, u), v)
/// with u = j/(n−1), v = i/(n−1): along the top and bottom edges by u, then between them
/// by v. The corner cells are the corners bit for bit. Each cell is [1, C, H, W].
pub fn grid(corners: [&Tensor; 4], n: usize) -> Result<Vec<Tensor>, EngineError> {
    if !GRID_SIZES.contains(&n) {
        return Err(invalid(format!(
            "grid size must be in {}..={}, got {n}",
            GRID_SIZES.start(),
            GRID_SIZES.end()
        )));
    }
    for (name, x) in ["a", "b", "c", "d"].into_iter().zip(corners) {
        let what = format!("corner {name}");
        check_latents(x, &what)?;
        if x.size()[0] != 1 {
            return Err(invalid(format!(
                "{what}: expected one latent [1, C, H, W], got {:?}",
                x.size()
            )));
        }
        check_same_sample_shape(corners[0], x, &what)?;
    }
    let [a, b, c, d] = corners;
    let frac = |k: usize| k as f64 / (n - 1) as f64;
    let top: Vec<Tensor> = (0..n).map(|j| slerp_exact(a, b, frac(j))).collect();
    let bottom: Vec<Tensor> = (0..n).map(|j| slerp_exact(c, d, frac(j))).collect();
    let mut cells = Vec::with_capacity(n * n);
    for i in 0..n {
        for j in 0..n {
            cells.push(slerp_exact(&top[j], &bottom[j], frac(i)));
        }
    }
    Ok(cells)
}

// -------------------------------------------------------------- renoise --

/// k = ⌈strength·S⌉ (less 10⁻⁹ so that 0.3·10 is 3, not 4): the number of plan steps
/// [`renoise`] inverts and re-samples.
pub fn renoise_steps(strength: f64, steps: usize) -> usize {
    let k = (strength * steps as f64 - 1e-9).ceil();
    (k.max(0.0) as usize).min(steps)
}

/// DDIM's SDEdit: invert `x0` with η = 0 over the first k = [`renoise_steps`]`(strength,
/// S)` steps of the S-step plan of `opts` ([`sampler::invert_partial`]), optionally move
/// x_{τ_k} towards the seed's noise (`perturb` ∈ [0, 1]: slerp(x_{τ_k}, z_i, perturb)),
/// then sample back to 0 over the remaining plan ([`sampler::sample_from`]) with the
/// options' η and `seeds` (one output row per seed). `x0` is [1, C, H, W] (shared by
/// all rows) or [seeds.len(), C, H, W]. strength 0 returns x0 (one row per seed);
/// strength 1 (perturb 0) equals `sample(invert(x0, S), opts, seeds)` bit for bit.
/// Events count the 2k model calls.
pub fn renoise(
    model: &Model,
    x0: &Tensor,
    strength: f64,
    opts: &SamplerOptions,
    seeds: &[SampleSeed],
    perturb: f64,
    on_step: &mut dyn FnMut(&StepEvent) -> bool,
) -> Result<Tensor, EngineError> {
    opts.validate(model.num_train_timesteps())?;
    check_input(model, x0, "x0")?;
    check_unit(strength, "strength")?;
    check_unit(perturb, "perturb")?;
    check_seeds(seeds)?;
    let n = seeds.len();
    let rows_in = x0.size()[0] as usize;
    if rows_in != 1 && rows_in != n {
        return Err(invalid(format!(
            "x0 has {rows_in} rows for {n} seeds (expected 1 or {n})"
        )));
    }
    let k = renoise_steps(strength, opts.steps);
    if k == 0 {
        return Ok(rows(x0, n));
    }
    let total = 2 * k;
    let xk = sampler::invert_partial(
        model,
        x0,
        opts.steps,
        opts.spacing,
        k,
        &mut offset(on_step, 0, total),
    )?;
    let mut xk = rows(&xk, n);
    if perturb > 0.0 {
        let z = initial_noise(seeds, model.sample_shape(), xk.device());
        xk = slerp_exact(&xk, &z, perturb);
    }
    sampler::sample_from(model, &xk, opts, k, seeds, &mut offset(on_step, k, total))
}

// -------------------------------------------------------------- inpaint --

/// A keep mask [1, 1, H, W] for the model's sample shape [C, H, W]: 1 everywhere except
/// 0 inside each rectangle (the region to redraw). At least one rectangle, each of
/// non-zero area and inside the image; errors name it as `rects[i]`.
pub fn rect_mask(shape: [i64; 3], rects: &[Rect]) -> Result<Tensor, EngineError> {
    let [_, h, w] = shape;
    if rects.is_empty() {
        return Err(invalid("rects: at least one rectangle to redraw is needed"));
    }
    let mask = Tensor::ones([1, 1, h, w], (Kind::Float, tch::Device::Cpu));
    for (i, r) in rects.iter().enumerate() {
        let desc = format!("rects[{i}] (x={}, y={}, w={}, h={})", r.x, r.y, r.w, r.h);
        if r.w <= 0 || r.h <= 0 {
            return Err(invalid(format!(
                "{desc} has zero area; width and height must be ≥ 1"
            )));
        }
        if r.x < 0 || r.y < 0 || r.x + r.w > w || r.y + r.h > h {
            return Err(invalid(format!("{desc} is not inside the {w}×{h} image")));
        }
        let _ = mask.narrow(2, r.y, r.h).narrow(3, r.x, r.w).fill_(0.0);
    }
    Ok(mask)
}

fn check_mask(model: &Model, keep: &Tensor) -> Result<(), EngineError> {
    let [c, h, w] = model.sample_shape();
    let s = keep.size();
    if s.len() != 4 || s[0] != 1 || (s[1] != 1 && s[1] != c) || s[2] != h || s[3] != w {
        return Err(invalid(format!(
            "keep: expected a mask of shape [1, 1, {h}, {w}] or [1, {c}, {h}, {w}], got {s:?}"
        )));
    }
    if keep.kind() != Kind::Float {
        return Err(invalid(format!(
            "keep: expected float32, got {:?}",
            keep.kind()
        )));
    }
    check_finite(keep, "keep")?;
    let lo = keep.min().double_value(&[]);
    let hi = keep.max().double_value(&[]);
    if lo < 0.0 || hi > 1.0 {
        return Err(invalid(format!(
            "keep: mask values must be in [0, 1] (1 = keep, 0 = redraw), found {lo}..{hi}"
        )));
    }
    Ok(())
}

/// What the kept region holds at each level.
enum Known {
    /// η = 0: the original's decode path, `path[i]` at τ_i ([1, C, H, W]).
    Path(Vec<Tensor>),
    /// η > 0: q(x_{τ_i} | x0) samples of this image ([1, C, H, W]).
    Image(Tensor),
}

impl Known {
    fn at(&self, model: &Model, level: usize, t: i64, seeds: &[SampleSeed]) -> Tensor {
        match self {
            Known::Path(p) => p[level].shallow_clone(),
            Known::Image(x0) if level == 0 => x0.shallow_clone(),
            Known::Image(x0) => {
                let a = model.schedule.alpha_bar(t);
                let z = batch_normal(
                    seeds,
                    KNOWN_STREAM + level as u64,
                    model.sample_shape(),
                    x0.device(),
                );
                x0 * a.sqrt() + z * (1.0 - a).sqrt()
            }
        }
    }
}

fn blend(keep: &Tensor, known: &Tensor, x: &Tensor) -> Tensor {
    known * keep + x * (1.0 - keep)
}

/// The η = 0 decode of `xt` ([1, …]) keeping every level: `path[i]` = x at τ_i,
/// `path[S]` = xt, `path[0]` = `sample(xt)` bit for bit.
fn decode_path(
    model: &Model,
    xt: &Tensor,
    opts: &SamplerOptions,
    on_step: &mut dyn FnMut(&StepEvent) -> bool,
) -> Result<Vec<Tensor>, EngineError> {
    let det = SamplerOptions {
        eta: 0.0,
        sigma_hat: false,
        solver: Default::default(),
        ..*opts
    };
    let steps = sampler::plan(&det, model.num_train_timesteps());
    let s = steps.len();
    let seeds = [SampleSeed::new(0, 0)];
    let _guard = tch::no_grad_guard();
    let mut path: Vec<Tensor> = (0..=s).map(|_| Tensor::new()).collect();
    let mut x = xt.to_device(model.device);
    path[s] = x.shallow_clone();
    for (j, (t, prev)) in steps.into_iter().enumerate() {
        let (xp, x0) = sampler::step(model, &x, t, prev, j, &det, &seeds)?;
        x = xp;
        path[s - j - 1] = x.shallow_clone();
        if !on_step(&StepEvent {
            step: j + 1,
            total: s,
            t,
            x0_hat: &x0,
        }) {
            return Err(EngineError::Cancelled);
        }
    }
    check_finite(&x, "reconstruction")?;
    Ok(path)
}

/// The masked reverse run (module docs): starts from blend(known_S, z_i) and pastes
/// known_{i−1} into the kept region after every step.
fn inpaint_run(
    model: &Model,
    known: &Known,
    keep: &Tensor,
    opts: &SamplerOptions,
    seeds: &[SampleSeed],
    on_step: &mut dyn FnMut(&StepEvent) -> bool,
) -> Result<Tensor, EngineError> {
    let _guard = tch::no_grad_guard();
    let t_train = model.num_train_timesteps();
    let ts = opts.spacing.timesteps(opts.steps, t_train);
    let s = ts.len();
    // ᾱ's timestep of level i (τ_0 = −1).
    let level_t = |i: usize| if i == 0 { -1 } else { ts[i - 1] };
    let keep = keep.to_device(model.device);
    let z = initial_noise(seeds, model.sample_shape(), model.device);
    let mut x = blend(&keep, &known.at(model, s, level_t(s), seeds), &z);
    for (j, (t, prev)) in sampler::plan(opts, t_train).into_iter().enumerate() {
        let level = s - j - 1;
        let (xp, x0) = sampler::step(model, &x, t, prev, j, opts, seeds)?;
        x = blend(&keep, &known.at(model, level, level_t(level), seeds), &xp);
        if !on_step(&StepEvent {
            step: j + 1,
            total: s,
            t,
            x0_hat: &x0,
        }) {
            return Err(EngineError::Cancelled);
        }
    }
    check_finite(&x, "inpainting")?;
    Ok(x)
}

fn check_inpaint_args(
    model: &Model,
    x: &Tensor,
    what: &str,
    keep: &Tensor,
    opts: &SamplerOptions,
    seeds: &[SampleSeed],
) -> Result<(), EngineError> {
    opts.validate(model.num_train_timesteps())?;
    check_input(model, x, what)?;
    if x.size()[0] != 1 {
        return Err(invalid(format!(
            "{what}: inpainting edits one image, got {} rows",
            x.size()[0]
        )));
    }
    check_mask(model, keep)?;
    check_seeds(seeds)
}

/// Region edit of one image `x0` ([1, C, H, W], model space): redraws where `keep`
/// ([1, 1, H, W] or [1, C, H, W], 1 = keep, 0 = redraw, see [`rect_mask`]) is 0 and keeps
/// the rest, one output row per seed ([seeds.len(), C, H, W], an image, not a latent).
/// With η = 0 the kept region is the original's η = 0 S-step reconstruction exactly
/// (3S model calls: invert, decode, masked run); with η > 0 (or σ̂) it is x0 itself and
/// the levels use q(x_t | x0) samples (S calls). See the module docs.
pub fn inpaint(
    model: &Model,
    x0: &Tensor,
    keep: &Tensor,
    opts: &SamplerOptions,
    seeds: &[SampleSeed],
    on_step: &mut dyn FnMut(&StepEvent) -> bool,
) -> Result<Tensor, EngineError> {
    check_inpaint_args(model, x0, "x0", keep, opts, seeds)?;
    let s = opts.steps;
    if opts.stochastic() {
        let known = Known::Image(x0.to_device(model.device));
        return inpaint_run(model, &known, keep, opts, seeds, on_step);
    }
    let xt = sampler::invert(model, x0, s, opts.spacing, &mut offset(on_step, 0, 3 * s))?;
    let path = decode_path(model, &xt, opts, &mut offset(on_step, s, 3 * s))?;
    inpaint_run(
        model,
        &Known::Path(path),
        keep,
        opts,
        seeds,
        &mut offset(on_step, 2 * s, 3 * s),
    )
}

/// [`inpaint`] of the image a latent `xt` ([1, C, H, W]) decodes to with η = 0 in S
/// steps (a library latent: no inversion needed). With η = 0 the kept region is that
/// decode exactly; with η > 0 the decode plays x0. 2S model calls.
pub fn inpaint_latent(
    model: &Model,
    xt: &Tensor,
    keep: &Tensor,
    opts: &SamplerOptions,
    seeds: &[SampleSeed],
    on_step: &mut dyn FnMut(&StepEvent) -> bool,
) -> Result<Tensor, EngineError> {
    check_inpaint_args(model, xt, "x_T", keep, opts, seeds)?;
    let s = opts.steps;
    let _guard = tch::no_grad_guard();
    let mut path = decode_path(model, xt, opts, &mut offset(on_step, 0, 2 * s))?;
    let known = if opts.stochastic() {
        Known::Image(path.swap_remove(0))
    } else {
        Known::Path(path)
    };
    inpaint_run(
        model,
        &known,
        keep,
        opts,
        seeds,
        &mut offset(on_step, s, 2 * s),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::noise::seeds as seed_range;
    use tch::Device;

    fn randn(shape: &[i64], seed: i64) -> Tensor {
        tch::manual_seed(seed);
        Tensor::randn(shape, (Kind::Float, Device::Cpu))
    }

    fn err_text<T>(r: Result<T, EngineError>) -> String {
        match r {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        }
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a.to_kind(Kind::Double) - b.to_kind(Kind::Double))
            .abs()
            .max()
            .double_value(&[])
    }

    fn row_norm(x: &Tensor, i: i64) -> f64 {
        x.get(i).to_kind(Kind::Double).norm().double_value(&[])
    }

    /// slerp of two flat f64 vectors from its closed form.
    fn slerp_ref(a: &[f64], b: &[f64], t: f64) -> Vec<f64> {
        let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        let na = a.iter().map(|x| x * x).sum::<f64>().sqrt();
        let nb = b.iter().map(|x| x * x).sum::<f64>().sqrt();
        let th = (dot / (na * nb)).acos();
        let (p, q) = (((1.0 - t) * th).sin() / th.sin(), (t * th).sin() / th.sin());
        a.iter().zip(b).map(|(x, y)| p * x + q * y).collect()
    }

    fn flat(x: &Tensor) -> Vec<f64> {
        Vec::<f64>::try_from(x.to_kind(Kind::Double).reshape([-1])).unwrap()
    }

    #[test]
    fn variation_endpoints_are_exact_and_the_middle_is_slerp() {
        let x = randn(&[1, 1, 8, 8], 1);
        let seeds = seed_range(5, 3);
        let z = initial_noise(&seeds, [1, 8, 8], Device::Cpu);
        let v0 = variation(&x, 0.0, &seeds).unwrap();
        assert_eq!(v0.size(), vec![3, 1, 8, 8]);
        for i in 0..3 {
            assert!(v0.get(i).equal(&x.get(0)), "s = 0 row {i}");
        }
        assert!(variation(&x, 1.0, &seeds).unwrap().equal(&z));
        let s = 0.3;
        let v = variation(&x, s, &seeds).unwrap();
        for i in 0..3 {
            let want = slerp_ref(&flat(&x), &flat(&z.get(i)), s);
            let got = flat(&v.get(i));
            let err = want
                .iter()
                .zip(&got)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            assert!(err < 1e-5, "row {i}: {err}");
        }
        // A row depends only on its own seed.
        let alone = variation(&x, s, &seeds[2..]).unwrap();
        assert!(alone.get(0).equal(&v.get(2)));
        // Two independent N(0, I) vectors: slerp keeps the norm near √d.
        let d = 64f64.sqrt();
        assert!((row_norm(&v, 0) - d).abs() / d < 0.3);
    }

    #[test]
    fn variation_validates() {
        let x = randn(&[1, 1, 4, 4], 0);
        let seeds = seed_range(0, 1);
        assert!(
            err_text(variation(&x, 1.5, &seeds)).contains("strength must be in [0, 1], got 1.5")
        );
        assert!(err_text(variation(&x, f64::NAN, &seeds)).contains("strength"));
        assert!(err_text(variation(&x, 0.5, &[])).contains("seed"));
        let two = randn(&[2, 1, 4, 4], 0);
        assert!(err_text(variation(&two, 0.5, &seeds)).contains("one latent"));
        let nan = Tensor::full([1, 1, 4, 4], f64::NAN, (Kind::Float, Device::Cpu));
        assert!(err_text(variation(&nan, 0.5, &seeds)).contains("NaN"));
    }

    #[test]
    fn rescale_puts_each_row_on_the_sphere_keeping_its_direction() {
        let x =
            randn(&[3, 2, 4, 4], 2) * Tensor::from_slice(&[0.1f32, 1.0, 7.0]).reshape([3, 1, 1, 1]);
        let r = rescale_to_sphere(&x).unwrap();
        assert_eq!((r.size(), r.kind()), (x.size(), Kind::Float));
        let d = 32f64.sqrt();
        for i in 0..3 {
            assert!((row_norm(&r, i) - d).abs() < 1e-4, "row {i}");
            let want = &x.get(i) * (d / row_norm(&x, i));
            assert!(max_diff(&r.get(i), &want) < 1e-5);
        }
        let z = Tensor::cat(
            &[
                x.narrow(0, 0, 1),
                Tensor::zeros([1, 2, 4, 4], (Kind::Float, Device::Cpu)),
            ],
            0,
        );
        assert!(err_text(rescale_to_sphere(&z)).contains("row 1"));
    }

    #[test]
    fn combine_is_the_weighted_sum_rescaled_to_the_chosen_radius() {
        // Terms of norm ≈ 3, 6, 6 (randn is seeded, but tch's generator is shared by
        // the tests running in parallel, so the values are not fixed): ρ ≈ 4.8 ≠ √d.
        let l: Vec<Tensor> = (0..3)
            .map(|i| randn(&[1, 1, 6, 6], 10 + i) * if i == 0 { 0.5 } else { 1.0 })
            .collect();
        let w = [1.0, 0.8, -0.8];
        let sum = &l[0] + &l[1] * 0.8 - &l[2] * 0.8;
        // √d: the noise sphere, d = 36.
        let got = combine(&l, &w, Radius::SqrtD).unwrap();
        let want = &sum * (6.0 / row_norm(&sum, 0));
        assert!(max_diff(&got, &want) < 1e-5);
        assert!((row_norm(&got, 0) - 6.0).abs() < 1e-4);
        // Parents: the |w|-weighted mean of the terms' norms, same direction.
        let rho = (row_norm(&l[0], 0) + 0.8 * row_norm(&l[1], 0) + 0.8 * row_norm(&l[2], 0)) / 2.6;
        let got = combine(&l, &w, Radius::Parents).unwrap();
        assert!(max_diff(&got, &(&sum * (rho / row_norm(&sum, 0)))) < 1e-5);
        assert!((row_norm(&got, 0) - rho).abs() < 1e-4);
        assert!((rho - 6.0).abs() > 0.3, "the test needs ρ ≠ √d: {rho}");
        // The mean of a latent with itself scaled down keeps the mean norm, not √d.
        let half = &l[0] * 0.5;
        let mid = combine(&[l[0].copy(), half.copy()], &[0.5, 0.5], Radius::Parents).unwrap();
        assert!((row_norm(&mid, 0) - 0.75 * row_norm(&l[0], 0)).abs() < 1e-4);
        // Per row: each row keeps its own parents' radius.
        let two: Vec<Tensor> = (0..2)
            .map(|i| {
                randn(&[2, 1, 6, 6], 30 + i)
                    * Tensor::from_slice(&[0.5f32, 2.0]).reshape([2, 1, 1, 1])
            })
            .collect();
        let g = combine(&two, &[1.0, 1.0], Radius::Parents).unwrap();
        for r in 0..2 {
            let want = (row_norm(&two[0], r) + row_norm(&two[1], r)) / 2.0;
            assert!((row_norm(&g, r) - want).abs() < 1e-4, "row {r}");
        }
        // One latent: its rescale (√d) or itself (parents). Scaling all weights changes nothing.
        assert!(
            max_diff(
                &combine(&l[..1], &[3.0], Radius::SqrtD).unwrap(),
                &rescale_to_sphere(&l[0]).unwrap()
            ) < 1e-6
        );
        assert!(max_diff(&combine(&l[..1], &[3.0], Radius::Parents).unwrap(), &l[0]) < 1e-5);
        assert!(
            max_diff(
                &combine(&l, &[2.0, 1.6, -1.6], Radius::Parents).unwrap(),
                &got
            ) < 1e-6
        );
    }

    #[test]
    fn combine_validates_naming_the_problem() {
        let a = randn(&[1, 1, 4, 4], 0);
        let b = randn(&[1, 1, 4, 8], 1);
        assert!(err_text(combine(&[], &[], Radius::Parents)).contains("1 to 16 latents, got 0"));
        let many: Vec<Tensor> = (0..17).map(|_| a.copy()).collect();
        assert!(err_text(combine(&many, &[1.0; 17], Radius::Parents)).contains("got 17"));
        assert!(
            err_text(combine(&[a.copy(), a.copy()], &[1.0], Radius::Parents))
                .contains("2 latents but 1 weights")
        );
        assert!(err_text(combine(
            &[a.copy(), a.copy()],
            &[1.0, f64::NAN],
            Radius::Parents
        ))
        .contains("weights[1] is NaN"));
        assert!(err_text(combine(
            &[a.copy(), a.copy()],
            &[f64::INFINITY, 1.0],
            Radius::Parents
        ))
        .contains("weights[0] is inf"));
        assert!(err_text(combine(
            &[a.copy(), a.copy(), b],
            &[1.0; 3],
            Radius::Parents
        ))
        .contains("latents[2] has shape"));
        assert!(err_text(combine(
            &[a.copy(), a.copy()],
            &[1.0, -1.0],
            Radius::Parents
        ))
        .contains("cancel"));
    }

    #[test]
    fn direction_is_a_difference_of_means_and_apply_rescales() {
        let pos = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 5.0]).reshape([2, 1, 1, 2]);
        let neg = Tensor::from_slice(&[0.0f32, 1.0, 2.0, 1.0, 1.0, 1.0]).reshape([3, 1, 1, 2]);
        // mean(pos) = (2, 3.5); mean(neg) = (1, 1).
        let dir = direction(&pos, &neg).unwrap();
        assert_eq!(flat(&dir), vec![1.0, 2.5]);
        assert_eq!(dir.size(), vec![1, 1, 1, 2]);
        let x = Tensor::from_slice(&[3.0f32, 0.0, 0.0, -1.0]).reshape([2, 1, 1, 2]);
        let got = flat(&apply_direction(&x, &dir, 2.0, Radius::SqrtD).unwrap());
        // x + 2·dir = (5, 5) and (2, 4); rescaled to norm √2.
        let want = [1.0, 1.0, 2.0 / 10f64.sqrt(), 4.0 / 10f64.sqrt()];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{got:?}");
        }
        // Parents: to ‖x‖ = 3 and 1.
        let got = flat(&apply_direction(&x, &dir, 2.0, Radius::Parents).unwrap());
        let s = 3.0 / 50f64.sqrt();
        let want = [5.0 * s, 5.0 * s, 2.0 / 20f64.sqrt(), 4.0 / 20f64.sqrt()];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{got:?}");
        }
        // Weight 0 with the parents' radius is x itself.
        assert!(
            max_diff(
                &apply_direction(&x, &dir, 0.0, Radius::Parents).unwrap(),
                &x
            ) < 1e-6
        );
        assert!(err_text(apply_direction(&x, &dir, f64::NAN, Radius::Parents)).contains("weight"));
        let other = Tensor::zeros([1, 1, 2, 2], (Kind::Float, Device::Cpu));
        assert!(err_text(direction(&pos, &other)).contains("do not match"));
        assert!(err_text(apply_direction(&x, &pos, 1.0, Radius::Parents)).contains("one direction"));
        let empty = Tensor::zeros([0, 1, 1, 2], (Kind::Float, Device::Cpu));
        assert!(err_text(direction(&empty, &neg)).contains("N ≥ 1"));
    }

    #[test]
    fn grid_corners_exact_edges_and_centre_are_slerps() {
        let c: Vec<Tensor> = (0..4).map(|i| randn(&[1, 1, 5, 5], 20 + i)).collect();
        let corners = [&c[0], &c[1], &c[2], &c[3]];
        for n in [2, 3, 9] {
            let g = grid(corners, n).unwrap();
            assert_eq!(g.len(), n * n);
            assert!(g[0].equal(&c[0]) && g[n - 1].equal(&c[1]));
            assert!(g[n * (n - 1)].equal(&c[2]) && g[n * n - 1].equal(&c[3]));
        }
        let g = grid(corners, 3).unwrap();
        let half = |a: &Tensor, b: &Tensor| slerp(a, b, 0.5);
        // Top edge, middle: slerp(a, b, ½); left edge, middle: slerp(a, c, ½).
        assert!(max_diff(&g[1], &half(&c[0], &c[1])) < 1e-6);
        assert!(max_diff(&g[3], &half(&c[0], &c[2])) < 1e-6);
        let centre = half(&half(&c[0], &c[1]), &half(&c[2], &c[3]));
        assert!(max_diff(&g[4], &centre) < 1e-6);
        let want = slerp_ref(
            &slerp_ref(&flat(&c[0]), &flat(&c[1]), 0.5),
            &slerp_ref(&flat(&c[2]), &flat(&c[3]), 0.5),
            0.5,
        );
        let err = want
            .iter()
            .zip(flat(&g[4]))
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(err < 1e-5, "{err}");
        assert!(err_text(grid(corners, 1)).contains("2..=9, got 1"));
        assert!(err_text(grid(corners, 10)).contains("got 10"));
        let odd = randn(&[1, 1, 5, 4], 0);
        assert!(err_text(grid([&c[0], &c[1], &odd, &c[3]], 3)).contains("corner c"));
        let two = randn(&[2, 1, 5, 5], 0);
        assert!(err_text(grid([&c[0], &two, &c[2], &c[3]], 3)).contains("corner b"));
    }

    #[test]
    fn rect_mask_zeroes_the_rectangles_and_validates_them() {
        let m = rect_mask(
            [1, 6, 8],
            &[Rect::from((1, 2, 3, 2)), Rect::from((2, 3, 1, 3))],
        )
        .unwrap();
        assert_eq!(m.size(), vec![1, 1, 6, 8]);
        let v = flat(&m);
        for y in 0..6 {
            for x in 0..8 {
                let inside =
                    (1..4).contains(&x) && (2..4).contains(&y) || x == 2 && (3..6).contains(&y);
                assert_eq!(v[y * 8 + x], if inside { 0.0 } else { 1.0 }, "({x}, {y})");
            }
        }
        assert!(
            rect_mask([1, 6, 8], &[Rect::from((0, 0, 8, 6))])
                .unwrap()
                .sum(Kind::Double)
                .double_value(&[])
                == 0.0
        );
        let e = |r: &[(i64, i64, i64, i64)]| {
            let rs: Vec<Rect> = r.iter().map(|&t| t.into()).collect();
            err_text(rect_mask([1, 6, 8], &rs))
        };
        assert!(e(&[]).contains("at least one"));
        assert!(e(&[(0, 0, 1, 1), (2, 2, 0, 3)])
            .starts_with("rects[1] (x=2, y=2, w=0, h=3) has zero area"));
        assert!(e(&[(0, 0, 1, -1)]).contains("rects[0]"));
        assert!(e(&[(6, 0, 3, 1)])
            .contains("rects[0] (x=6, y=0, w=3, h=1) is not inside the 8×6 image"));
        assert!(e(&[(0, 5, 1, 2)]).contains("not inside"));
        assert!(e(&[(-1, 0, 1, 1)]).contains("not inside"));
    }

    #[test]
    fn renoise_steps_is_the_ceiling_of_s_times_steps() {
        assert_eq!(renoise_steps(0.0, 50), 0);
        assert_eq!(renoise_steps(1.0, 50), 50);
        assert_eq!(renoise_steps(0.3, 10), 3);
        assert_eq!(renoise_steps(0.31, 10), 4);
        assert_eq!(renoise_steps(0.01, 50), 1);
        assert_eq!(renoise_steps(1e-6, 10), 1);
        assert_eq!(renoise_steps(0.999, 10), 10);
        assert_eq!(renoise_steps(0.7, 10), 7);
    }
}
