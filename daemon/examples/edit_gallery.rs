//! The pictures of docs/editing.md, made by the shipped model (not a test).
//!
//! ```text
//! cargo run --release -p ddimd --example edit_gallery -- --out docs/img
//! cargo run --release -p ddimd --example edit_gallery -- --out /tmp/g --model models/fashion-mnist --threads 2
//! ```
//!
//! Loads `models/fashion-mnist` on the CPU, takes fixed Fashion-MNIST **test** images
//! (Debian's `dataset-fashion-mnist`: the first images of a class, by label), encodes them
//! with the η = 0 inversion at S = 50 ([`sampler::invert`]) and writes one PNG per
//! operation of `engine::edit` (every tile is 32×32 upscaled ×3, nearest):
//!
//! | file | rows × columns |
//! |---|---|
//! | editing-variation.png | 2 images × (source, s = 0, 0.1, 0.2, 0.35, 0.5, 0.75, 1), seed 1 |
//! | editing-mix.png | a, b, c, Σ without rescale, Σ rescaled to √d (the engine), Σ rescaled to the parents' mean norm: a + 0.8·(b − c), then (a + b)/2 |
//! | editing-direction.png | 3 sneakers × (source, w = 0, 0.5, 1, 1.5) along mean(ankle boot) − mean(sneaker) |
//! | editing-renoise.png | 2 images × (η = 1; η = 0 + perturb 0.3) × strength 0, 0.25, 0.5, 0.75, 1 |
//! | editing-inpaint.png | 2 images × (original, what is redrawn (grey), seeds 0, 1, 2) |
//! | editing-grid.png | 5×5 slerp grid between four encoded test images (the corners) |
//!
//! Decodes are η = 0 at S = 50 except the grid and the 2 × 48 class-mean encodings (S = 20:
//! this 2-core CPU). Prints the norms ‖x‖/√d of the mix, and the time of each part.
//! Every seed is fixed: a rerun writes the same files.
use std::path::PathBuf;
use std::time::Instant;

use ddimd::engine::edit::{self, Radius, Rect};
use ddimd::engine::imageio;
use ddimd::engine::noise::seeds;
use ddimd::engine::{sampler, Model, SamplerOptions, Spacing};
use ddimd::train::data::{self, Split};
use tch::{Device, Kind, Tensor};

/// Fashion-MNIST's label numbers.
const T_SHIRT: u8 = 0;
const TROUSER: u8 = 1;
const PULLOVER: u8 = 2;
const DRESS: u8 = 3;
const SANDAL: u8 = 5;
const SHIRT: u8 = 6;
const SNEAKER: u8 = 7;
const BAG: u8 = 8;
const ANKLE_BOOT: u8 = 9;

/// S of the encodings and of every decode unless said otherwise.
const S: usize = 50;
/// S of the class-mean encodings and of the grid's 25 decodes.
const S_FAST: usize = 20;
/// Latents per class for the sneaker → ankle-boot direction.
const PER_CLASS: usize = 48;
/// Tile upscale.
const SCALE: u32 = 3;

struct Args {
    out: PathBuf,
    model: PathBuf,
    threads: i32,
    /// The parts to make (`--only mix,direction`); empty: all.
    only: Vec<String>,
}

fn args() -> Args {
    let mut a = Args {
        out: PathBuf::from("docs/img"),
        model: PathBuf::from("models/fashion-mnist"),
        threads: 1,
        only: vec![],
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    for w in v.chunks(2) {
        let val = w.get(1).cloned().unwrap_or_default();
        match w[0].as_str() {
            "--out" => a.out = PathBuf::from(val),
            "--model" => a.model = PathBuf::from(val),
            "--threads" => a.threads = val.parse().expect("--threads N"),
            "--only" => a.only = val.split(',').map(str::to_string).collect(),
            f => panic!(
                "unknown flag {f} (--out DIR, --model DIR, --threads N, --only mix,direction,…)"
            ),
        }
    }
    a
}

struct Ctx {
    model: Model,
    images: Tensor,
    labels: Vec<u8>,
    d: f64,
}

impl Ctx {
    fn opts(&self, steps: usize, eta: f64) -> SamplerOptions {
        SamplerOptions {
            steps,
            eta,
            spacing: Spacing::Uniform,
            sigma_hat: false,
            solver: Default::default(),
        }
    }

    /// Test-set indices of the images of `label`, skipping the first `skip`.
    fn of_class(&self, label: u8, skip: usize, n: usize) -> Vec<i64> {
        self.labels
            .iter()
            .enumerate()
            .filter(|(_, l)| **l == label)
            .skip(skip)
            .take(n)
            .map(|(i, _)| i as i64)
            .collect()
    }

    fn pick(&self, idx: &[i64]) -> Tensor {
        self.images
            .index_select(0, &Tensor::from_slice(idx))
            .contiguous()
    }

    /// η = 0 inversion of a batch of images.
    fn encode(&self, x0: &Tensor, steps: usize) -> Tensor {
        sampler::invert(&self.model, x0, steps, Spacing::Uniform, &mut |_| true).expect("invert")
    }

    /// η = 0 decode of a batch of latents.
    fn decode(&self, xt: &Tensor, steps: usize) -> Tensor {
        let n = xt.size()[0] as usize;
        sampler::sample(
            &self.model,
            xt,
            &self.opts(steps, 0.0),
            &seeds(0, n),
            &mut |_| true,
        )
        .expect("decode")
    }

    /// ‖x‖/√d per row.
    fn norms(&self, x: &Tensor) -> Vec<f64> {
        let n = x.size()[0];
        let v = x
            .to_kind(Kind::Double)
            .reshape([n, -1])
            .square()
            .sum_dim_intlist([1i64].as_slice(), false, Kind::Double)
            .sqrt()
            / self.d.sqrt();
        Vec::<f64>::try_from(v).expect("norms")
    }
}

/// A tile the colour of the grid's gaps: an empty cell.
fn blank() -> Tensor {
    Tensor::full(
        [1, 1, 32, 32],
        40.0 / 127.5 - 1.0,
        (Kind::Float, Device::Cpu),
    )
}

fn save(out: &std::path::Path, name: &str, tiles: &[Tensor], cols: usize) {
    let batch = Tensor::cat(tiles, 0);
    let path = out.join(name);
    imageio::save_png(&imageio::grid(&batch, cols, SCALE), &path).expect("save png");
    println!("wrote {}", path.display());
}

fn timed<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let t0 = Instant::now();
    let r = f();
    println!("  [{what}: {:.1} s]", t0.elapsed().as_secs_f64());
    r
}

fn variation(cx: &Ctx, out: &std::path::Path) {
    println!("## variation");
    let strengths = [0.0, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0];
    let idx = [cx.of_class(DRESS, 0, 1)[0], cx.of_class(SANDAL, 0, 1)[0]];
    println!("test images {idx:?} (dress, sandal), seed 1, S = {S}");
    let x0 = cx.pick(&idx);
    let xt = cx.encode(&x0, S);
    let mut lat = vec![];
    for r in 0..2 {
        for &s in &strengths {
            lat.push(edit::variation(&xt.narrow(0, r, 1), s, &seeds(1, 1)).expect("variation"));
        }
    }
    let dec = cx.decode(&Tensor::cat(&lat, 0), S);
    let n = strengths.len() as i64;
    let mut tiles = vec![];
    for r in 0..2 {
        tiles.push(x0.narrow(0, r, 1));
        tiles.push(dec.narrow(0, r * n, n));
    }
    save(out, "editing-variation.png", &tiles, strengths.len() + 1);
}

fn mix(cx: &Ctx, out: &std::path::Path) {
    println!("## mix");
    let idx = [
        cx.of_class(T_SHIRT, 0, 1)[0],
        cx.of_class(PULLOVER, 0, 1)[0],
        cx.of_class(SHIRT, 0, 1)[0],
    ];
    println!("a, b, c = test images {idx:?} (T-shirt, pullover, shirt), S = {S}");
    let xt = cx.encode(&cx.pick(&idx), S);
    let (a, b, c) = (xt.narrow(0, 0, 1), xt.narrow(0, 1, 1), xt.narrow(0, 2, 1));
    let raw1 = &a + (&b - &c) * 0.8;
    let mix = |xs: &[&Tensor], ws: &[f64], r: Radius| {
        let xs: Vec<Tensor> = xs.iter().map(|x| x.copy()).collect();
        edit::combine(&xs, ws, r).expect("combine")
    };
    let res1 = mix(&[&a, &b, &c], &[1.0, 0.8, -0.8], Radius::SqrtD);
    let own1 = mix(&[&a, &b, &c], &[1.0, 0.8, -0.8], Radius::Parents);
    let raw2 = (&a + &b) * 0.5;
    let res2 = mix(&[&a, &b], &[0.5, 0.5], Radius::SqrtD);
    let own2 = mix(&[&a, &b], &[0.5, 0.5], Radius::Parents);
    let all = Tensor::cat(&[&a, &b, &c, &raw1, &res1, &own1, &raw2, &res2, &own2], 0);
    let dec = cx.decode(&all, S);
    let names = [
        "a (T-shirt)",
        "b (pullover)",
        "c (shirt)",
        "a + 0.8(b - c), not rescaled",
        "a + 0.8(b - c), --radius sqrt-d",
        "a + 0.8(b - c), --radius parents (the default)",
        "(a + b)/2, not rescaled",
        "(a + b)/2, --radius sqrt-d",
        "(a + b)/2, --radius parents (the default)",
    ];
    println!("| latent | ‖x‖/√d |");
    println!("|---|---|");
    for (name, n) in names.iter().zip(cx.norms(&all)) {
        println!("| {name} | {n:.3} |");
    }
    let t = |i: i64| dec.narrow(0, i, 1);
    let tiles = [
        t(0),
        t(1),
        t(2),
        t(3),
        t(4),
        t(5),
        t(0),
        t(1),
        blank(),
        t(6),
        t(7),
        t(8),
    ];
    save(out, "editing-mix.png", &tiles, 6);
}

fn direction(cx: &Ctx, out: &std::path::Path) {
    println!("## direction");
    let weights = [0.0, 0.5, 1.0, 1.5];
    // Sources: the first three sneakers; the class means: the next PER_CLASS of each.
    let src = cx.of_class(SNEAKER, 0, 3);
    let neg = cx.of_class(SNEAKER, 3, PER_CLASS);
    let pos = cx.of_class(ANKLE_BOOT, 0, PER_CLASS);
    println!(
        "sources: test images {src:?} (sneakers); direction = mean of {} ankle boots − mean of {} sneakers (test images {}..={} and {}..={}), encoded at S = {S_FAST}",
        pos.len(),
        neg.len(),
        pos[0],
        pos[pos.len() - 1],
        neg[0],
        neg[neg.len() - 1]
    );
    let both = cx.encode(&Tensor::cat(&[cx.pick(&pos), cx.pick(&neg)], 0), S_FAST);
    let p = PER_CLASS as i64;
    let nb = cx.norms(&both);
    let mean = nb.iter().sum::<f64>() / nb.len() as f64;
    let (lo, hi) = nb
        .iter()
        .fold((f64::MAX, f64::MIN), |(l, h), v| (l.min(*v), h.max(*v)));
    println!(
        "‖x_T‖/√d of the {} encoded test images (S = {S_FAST}): mean {mean:.3}, min {lo:.3}, max {hi:.3}",
        nb.len()
    );
    let dir = edit::direction(&both.narrow(0, 0, p), &both.narrow(0, p, p)).expect("direction");
    println!(
        "‖dir‖/√d = {:.3}; ‖mean(ankle boot)‖/√d = {:.3}, ‖mean(sneaker)‖/√d = {:.3}",
        cx.norms(&dir)[0],
        cx.norms(&both.narrow(0, 0, p).mean_dim(0, true, Kind::Float))[0],
        cx.norms(&both.narrow(0, p, p).mean_dim(0, true, Kind::Float))[0],
    );
    let x0 = cx.pick(&src);
    let xt = cx.encode(&x0, S);
    println!("‖x_T‖/√d of the sources (S = {S}): {:.3?}", cx.norms(&xt));
    let mut lat = vec![];
    for r in 0..3 {
        for &w in &weights {
            lat.push(
                edit::apply_direction(&xt.narrow(0, r, 1), &dir, w, Radius::Parents)
                    .expect("apply"),
            );
        }
    }
    let dec = cx.decode(&Tensor::cat(&lat, 0), S);
    let n = weights.len() as i64;
    let mut tiles = vec![];
    for r in 0..3 {
        tiles.push(x0.narrow(0, r, 1));
        tiles.push(dec.narrow(0, r * n, n));
    }
    save(out, "editing-direction.png", &tiles, weights.len() + 1);
}

fn renoise(cx: &Ctx, out: &std::path::Path) {
    println!("## renoise");
    let strengths = [0.0, 0.25, 0.5, 0.75, 1.0];
    let perturb = 0.3;
    let idx = [
        cx.of_class(ANKLE_BOOT, 0, 1)[0],
        cx.of_class(SHIRT, 0, 1)[0],
    ];
    println!(
        "test images {idx:?} (ankle boot, shirt), S = {S}, seed 3; rows: η = 1, then η = 0 with perturb {perturb}"
    );
    let mut tiles = vec![];
    for &i in &idx {
        let x0 = cx.pick(&[i]);
        for (eta, p) in [(1.0, 0.0), (0.0, perturb)] {
            for &s in &strengths {
                let x = edit::renoise(
                    &cx.model,
                    &x0,
                    s,
                    &cx.opts(S, eta),
                    &seeds(3, 1),
                    p,
                    &mut |_| true,
                )
                .expect("renoise");
                tiles.push(x);
            }
        }
    }
    save(out, "editing-renoise.png", &tiles, strengths.len());
}

fn inpaint(cx: &Ctx, out: &std::path::Path) {
    println!("## inpaint");
    // (test image, rectangle to redraw) in the 32×32 model grid (the 28×28 image is
    // padded by 2 on each side).
    let cases = [
        (
            cx.of_class(T_SHIRT, 1, 1)[0],
            Rect::from((2, 2, 28, 11)),
            "T-shirt, top third",
        ),
        (
            cx.of_class(ANKLE_BOOT, 1, 1)[0],
            Rect::from((2, 2, 14, 28)),
            "ankle boot, left half",
        ),
    ];
    let mut tiles = vec![];
    for (i, rect, what) in cases {
        println!(
            "test image {i} ({what}): rect x={}, y={}, w={}, h={}; η = 0, S = {S}, seeds 0, 1, 2",
            rect.x, rect.y, rect.w, rect.h
        );
        let x0 = cx.pick(&[i]);
        let keep = edit::rect_mask([1, 32, 32], &[rect]).expect("mask");
        let out_x = edit::inpaint(
            &cx.model,
            &x0,
            &keep,
            &cx.opts(S, 0.0),
            &seeds(0, 3),
            &mut |_| true,
        )
        .expect("inpaint");
        // The original with the redrawn region in mid grey.
        let shown = &x0 * &keep + (1.0 - &keep) * 0.0;
        tiles.extend([x0, shown, out_x]);
    }
    save(out, "editing-inpaint.png", &tiles, 5);
}

fn grid(cx: &Ctx, out: &std::path::Path) {
    println!("## grid");
    let idx = [
        cx.of_class(TROUSER, 0, 1)[0],
        cx.of_class(DRESS, 1, 1)[0],
        cx.of_class(BAG, 0, 1)[0],
        cx.of_class(SNEAKER, 1, 1)[0],
    ];
    println!("corners = test images {idx:?} (trouser, dress, bag, sneaker), encoded at S = {S}, cells decoded at S = {S_FAST}");
    let xt = cx.encode(&cx.pick(&idx), S);
    let c: Vec<Tensor> = (0..4).map(|i| xt.narrow(0, i, 1)).collect();
    let cells = edit::grid([&c[0], &c[1], &c[2], &c[3]], 5).expect("grid");
    let dec = cx.decode(&Tensor::cat(&cells, 0), S_FAST);
    save(out, "editing-grid.png", &[dec], 5);
}

/// One picture of the gallery.
type Part = fn(&Ctx, &std::path::Path);

fn main() {
    let a = args();
    tch::set_num_threads(a.threads);
    std::fs::create_dir_all(&a.out).expect("--out folder");
    let t0 = Instant::now();
    let model = Model::load(&a.model, Device::Cpu).expect("load the model");
    let shape = model.sample_shape();
    assert_eq!(
        shape,
        [1, 32, 32],
        "the gallery is made for the 1×32×32 Fashion-MNIST model"
    );
    let images = data::fashion_mnist(Split::Test, shape).expect("Fashion-MNIST test images");
    let dir = std::env::var_os("DDIM_FASHION_MNIST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(data::FASHION_MNIST_DIR));
    let labels =
        data::read_idx_labels(&dir.join("t10k-labels-idx1-ubyte.gz")).expect("test labels");
    let cx = Ctx {
        model,
        images,
        labels,
        d: (shape[0] * shape[1] * shape[2]) as f64,
    };
    println!(
        "model {} ({} parameters), cpu, {} torch thread(s)",
        a.model.display(),
        cx.model.parameter_count(),
        a.threads
    );
    let _guard = tch::no_grad_guard();
    let parts: [(&str, Part); 6] = [
        ("variation", variation),
        ("mix", mix),
        ("direction", direction),
        ("renoise", renoise),
        ("inpaint", inpaint),
        ("grid", grid),
    ];
    for (name, part) in parts {
        if a.only.is_empty() || a.only.iter().any(|o| o == name) {
            timed(name, || part(&cx, &a.out));
        }
    }
    println!("total {:.1} s", t0.elapsed().as_secs_f64());
}
