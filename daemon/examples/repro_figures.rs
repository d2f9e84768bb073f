//! The figures of docs/reproduction.md (the DDIM paper's Figures 4, 5 and 6 on the
//! shipped model, and the trainer check's loss curves), as PNGs drawn with plotters.
//!
//! ```text
//! cargo run --release -p ddimd --example repro_figures -- --out docs/img/repro
//! cargo run --release -p ddimd --example repro_figures -- --out docs/img/repro --only slerp --threads 2
//! cargo run --release -p ddimd --example repro_figures -- --out docs/img/repro --only loss \
//!     --loss "ddimd train=/tmp/tiny-ddimd/loss.csv" --loss "diffusers=/tmp/tiny-diffusers/loss.csv"
//! ```
//!
//! | part | file | what |
//! |---|---|---|
//! | `timing` | fig4-time-per-image.png | seconds per image against S (10 … 1000) for a batch of `--batch` x_T (η = 0, uniform spacing, the eager engine on the CPU), each S timed once, a least-squares line and its R² |
//! | `timing` | fig5-consistency.png | the first `--rows` x_T of that batch decoded at every S (rows: x_T, columns: S): the same image at every S |
//! | `slerp` | fig6-slerp.png | 4 rows × 9 frames: decodes (S = 50, η = 0) of slerp(x_T^a, x_T^b, α), α = 0, 1/8, …, 1 |
//! | `loss` | trainer-loss.png | loss.csv files (`step,loss,…`, as `ddimd train` writes them) on one log-scale chart: every logged loss faint, a 100-step running mean bold |
//!
//! `timing` and `slerp` also write `repro-figures.json` (or merge into it): the
//! measurements, the fit, the wall time and the load average before and after. Every
//! seed is fixed (x_T of seed 0 for Figures 4 and 5, seed 1 for Figure 6), so a rerun
//! draws the same images; the times are this machine's.
//!
//! Text needs a TrueType font: DejaVu Sans from Debian's `fonts-dejavu-core` by
//! default, or `--font FILE.ttf`.
use std::path::{Path, PathBuf};
use std::time::Instant;

use ddimd::engine::noise::{initial_noise, seeds, SampleSeed};
use ddimd::engine::{imageio, interp, sampler, Model, SamplerOptions, Spacing};
use image::{imageops, Rgb, RgbImage};
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};
use tch::{Device, Tensor};

const STEPS: [usize; 7] = [10, 20, 50, 100, 200, 500, 1000];
/// Tile upscale of the image grids.
const SCALE: u32 = 3;
const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

struct Args {
    out: PathBuf,
    model: PathBuf,
    threads: i32,
    batch: usize,
    rows: usize,
    only: Vec<String>,
    loss: Vec<(String, PathBuf)>,
    font: PathBuf,
}

fn args() -> Args {
    let mut a = Args {
        out: PathBuf::from("docs/img/repro"),
        model: PathBuf::from("models/fashion-mnist"),
        threads: 1,
        batch: 8,
        rows: 4,
        only: vec![],
        loss: vec![],
        font: PathBuf::from(FONT),
    };
    let usage =
        "--out DIR, --model DIR, --threads N, --batch N, --rows N, --only timing,slerp,loss, \
                 --loss LABEL=loss.csv (repeat), --font FILE.ttf";
    let v: Vec<String> = std::env::args().skip(1).collect();
    for w in v.chunks(2) {
        let val = w
            .get(1)
            .cloned()
            .unwrap_or_else(|| panic!("{} needs a value ({usage})", w[0]));
        match w[0].as_str() {
            "--out" => a.out = PathBuf::from(val),
            "--model" => a.model = PathBuf::from(val),
            "--threads" => a.threads = val.parse().expect("--threads N"),
            "--batch" => a.batch = val.parse().expect("--batch N"),
            "--rows" => a.rows = val.parse().expect("--rows N"),
            "--only" => a.only = val.split(',').map(str::to_string).collect(),
            "--loss" => {
                let (label, path) = val.split_once('=').expect("--loss LABEL=PATH");
                a.loss.push((label.to_string(), PathBuf::from(path)));
            }
            "--font" => a.font = PathBuf::from(val),
            f => panic!("unknown flag {f} ({usage})"),
        }
    }
    if a.only.is_empty() {
        a.only = vec!["timing".into(), "slerp".into()];
        if !a.loss.is_empty() {
            a.only.push("loss".into());
        }
    }
    a
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn opts(steps: usize) -> SamplerOptions {
    SamplerOptions {
        steps,
        eta: 0.0,
        spacing: Spacing::Uniform,
        sigma_hat: false,
        solver: Default::default(),
    }
}

fn decode(model: &Model, xt: &Tensor, steps: usize, sd: &[SampleSeed]) -> Tensor {
    sampler::sample(model, xt, &opts(steps), sd, &mut |_| true).expect("sample")
}

/// Least squares y = a + b·x: (a, b, R²).
fn fit(x: &[f64], y: &[f64]) -> (f64, f64, f64) {
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let sxy: f64 = x.iter().zip(y).map(|(a, b)| (a - mx) * (b - my)).sum();
    let sxx: f64 = x.iter().map(|a| (a - mx).powi(2)).sum();
    let b = sxy / sxx;
    let a = my - b * mx;
    let ss_res: f64 = x.iter().zip(y).map(|(u, v)| (v - a - b * u).powi(2)).sum();
    let ss_tot: f64 = y.iter().map(|v| (v - my).powi(2)).sum();
    (a, b, 1.0 - ss_res / ss_tot)
}

/// An RGB image with room above and to the left of `img` for labels.
fn with_margins(img: &RgbImage, left: u32, top: u32) -> RgbImage {
    let mut out = RgbImage::from_pixel(img.width() + left, img.height() + top, Rgb([255; 3]));
    imageops::replace(&mut out, img, left as i64, top as i64);
    out
}

/// Draws `labels` (text, x, y) onto `img` with plotters' bitmap backend.
fn label(img: &mut RgbImage, labels: &[(String, i32, i32)], size: f64) {
    let (w, h) = img.dimensions();
    {
        let root = BitMapBackend::with_buffer(img.as_mut(), (w, h)).into_drawing_area();
        let style = ("sans-serif", size).into_font().color(&BLACK);
        for (t, x, y) in labels {
            root.draw(&Text::new(t.clone(), (*x, *y), style.clone()))
                .expect("draw text");
        }
        root.present().expect("present");
    }
}

fn save(img: &RgbImage, path: &Path) {
    img.save_with_format(path, image::ImageFormat::Png)
        .expect("save png");
    println!("wrote {}", path.display());
}

/// The tile grid of a batch (`cols` columns) as RGB, `imageio::grid`'s layout.
fn grid(batch: &Tensor, cols: usize) -> RgbImage {
    imageio::grid(batch, cols, SCALE).to_rgb8()
}

fn timing(a: &Args, model: &Model, json: &mut serde_json::Map<String, serde_json::Value>) {
    println!("## timing (Figures 4 and 5)");
    let load_before = load_average();
    let started = Instant::now();
    let sd = seeds(0, a.batch);
    let xt = initial_noise(&sd, model.sample_shape(), Device::Cpu);
    // Warm-up (allocator, first-call costs), not counted.
    let _ = decode(model, &xt, 2, &sd);
    let mut secs = vec![];
    let mut cols = vec![];
    for &s in &STEPS {
        let t0 = Instant::now();
        let x0 = decode(model, &xt, s, &sd);
        let per_image = t0.elapsed().as_secs_f64() / a.batch as f64;
        println!(
            "  S = {s:4}: {per_image:.3} s per image (load {})",
            load_average()
        );
        secs.push(per_image);
        cols.push(x0.narrow(0, 0, a.rows.min(a.batch) as i64));
    }
    let wall = started.elapsed().as_secs_f64();
    let load_after = load_average();
    let xs: Vec<f64> = STEPS.iter().map(|&s| s as f64).collect();
    let (icpt, slope, r2) = fit(&xs, &secs);
    println!(
        "  fit: {icpt:.4} s + {:.3} ms × S, R² = {r2:.5}; {wall:.0} s",
        slope * 1e3
    );

    // Figure 4.
    let path = a.out.join("fig4-time-per-image.png");
    let mut buf = RgbImage::new(640, 420);
    {
        let root = BitMapBackend::with_buffer(buf.as_mut(), (640, 420)).into_drawing_area();
        root.fill(&WHITE).expect("fill");
        let ymax = secs.iter().cloned().fold(0.0, f64::max) * 1.1;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("DDIM sampling time, batch {} (R² = {r2:.4})", a.batch),
                ("sans-serif", 20),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..1050f64, 0f64..ymax)
            .expect("chart");
        chart
            .configure_mesh()
            .x_desc("S (model calls)")
            .y_desc("seconds per image")
            .label_style(("sans-serif", 14))
            .draw()
            .expect("mesh");
        chart
            .draw_series(LineSeries::new(
                [0.0, 1050.0].map(|x| (x, icpt + slope * x)),
                BLUE.stroke_width(2),
            ))
            .expect("line")
            .label(format!("{icpt:.3} s + {:.2} ms × S", slope * 1e3))
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLUE.stroke_width(2)));
        chart
            .draw_series(
                xs.iter()
                    .zip(&secs)
                    .map(|(&x, &y)| Circle::new((x, y), 4, RED.filled())),
            )
            .expect("points")
            .label("measured (ddimd engine, CPU)")
            .legend(|(x, y)| Circle::new((x + 10, y), 4, RED.filled()));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()
            .expect("legend");
        root.present().expect("present");
    }
    save(&buf, &path);

    // Figure 5: rows x_T, columns S.
    let n = cols.len();
    let rows = cols[0].size()[0];
    let mut tiles = vec![];
    for r in 0..rows {
        for c in &cols {
            tiles.push(c.narrow(0, r, 1));
        }
    }
    let g = grid(&Tensor::cat(&tiles, 0), n);
    let mut img = with_margins(&g, 0, 22);
    let tile = 32 * SCALE + 2;
    let labels: Vec<(String, i32, i32)> = STEPS
        .iter()
        .enumerate()
        .map(|(i, s)| (format!("S = {s}"), (i as u32 * tile + 14) as i32, 4))
        .collect();
    label(&mut img, &labels, 14.0);
    save(&img, &a.out.join("fig5-consistency.png"));

    json.insert(
        "timing".into(),
        serde_json::json!({
            "batch": a.batch,
            "threads": a.threads,
            "eta": 0.0,
            "spacing": "uniform",
            "steps": STEPS,
            "seconds_per_image": secs,
            "fit": {"intercept_s": icpt, "slope_s_per_step": slope, "r2": r2},
            "wall_s": wall,
            "load_before": load_before,
            "load_after": load_after,
            "seed": 0,
            "consistency_rows": rows,
        }),
    );
}

fn slerp(a: &Args, model: &Model, json: &mut serde_json::Map<String, serde_json::Value>) {
    println!("## slerp (Figure 6)");
    const ROWS: usize = 4;
    const FRAMES: usize = 9;
    const S: usize = 50;
    let load_before = load_average();
    let started = Instant::now();
    let ends = initial_noise(&seeds(1, 2 * ROWS), model.sample_shape(), Device::Cpu);
    let mut lat = vec![];
    for r in 0..ROWS as i64 {
        let (xa, xb) = (ends.narrow(0, 2 * r, 1), ends.narrow(0, 2 * r + 1, 1));
        for al in interp::alphas(FRAMES) {
            lat.push(interp::slerp(&xa, &xb, al));
        }
    }
    let lat = Tensor::cat(&lat, 0);
    let x0 = decode(model, &lat, S, &seeds(1, ROWS * FRAMES));
    let wall = started.elapsed().as_secs_f64();
    let g = grid(&x0, FRAMES);
    let mut img = with_margins(&g, 0, 22);
    let tile = 32 * SCALE + 2;
    let labels: Vec<(String, i32, i32)> = interp::alphas(FRAMES)
        .iter()
        .enumerate()
        .map(|(i, al)| (format!("α = {al:.3}"), (i as u32 * tile + 14) as i32, 4))
        .collect();
    label(&mut img, &labels, 13.0);
    save(&img, &a.out.join("fig6-slerp.png"));
    println!("  [{ROWS} × {FRAMES} decodes at S = {S}: {wall:.0} s]");
    json.insert(
        "slerp".into(),
        serde_json::json!({
            "rows": ROWS, "frames": FRAMES, "steps": S, "eta": 0.0, "seed": 1,
            "threads": a.threads, "wall_s": wall,
            "load_before": load_before, "load_after": load_average(),
        }),
    );
}

/// `step,loss,…` rows of a loss.csv.
fn read_loss(path: &Path) -> Vec<(f64, f64)> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("--loss {}: {e}", path.display()));
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split(',');
            Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
        })
        .collect()
}

/// The mean of the points within `window` steps before each point.
fn running_mean(pts: &[(f64, f64)], window: f64) -> Vec<(f64, f64)> {
    pts.iter()
        .map(|&(s, _)| {
            let w: Vec<f64> = pts
                .iter()
                .filter(|(t, _)| *t > s - window && *t <= s)
                .map(|p| p.1)
                .collect();
            (s, w.iter().sum::<f64>() / w.len() as f64)
        })
        .collect()
}

fn loss(a: &Args) {
    println!("## loss curves");
    assert!(!a.loss.is_empty(), "--only loss needs --loss LABEL=PATH");
    let curves: Vec<(String, Vec<(f64, f64)>)> = a
        .loss
        .iter()
        .map(|(l, p)| (l.clone(), read_loss(p)))
        .collect();
    let xmax = curves
        .iter()
        .flat_map(|(_, c)| c.iter().map(|p| p.0))
        .fold(1.0, f64::max);
    let ys = || curves.iter().flat_map(|(_, c)| c.iter().map(|p| p.1));
    let (ymin, ymax) = (
        ys().fold(f64::INFINITY, f64::min).max(1e-4) * 0.4,
        ys().fold(0.0, f64::max) * 1.1,
    );
    let path = a.out.join("trainer-loss.png");
    let mut buf = RgbImage::new(720, 440);
    let root = BitMapBackend::with_buffer(buf.as_mut(), (720, 440)).into_drawing_area();
    root.fill(&WHITE).expect("fill");
    let mut chart = ChartBuilder::on(&root)
        .caption("L_simple per step (tiny preset)", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..xmax, (ymin..ymax).log_scale())
        .expect("chart");
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc("loss (log scale)")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.3}"))
        .label_style(("sans-serif", 14))
        .draw()
        .expect("mesh");
    let colours = [RED, BLUE, GREEN, MAGENTA];
    for (i, (l, c)) in curves.iter().enumerate() {
        let col = colours[i % colours.len()];
        chart
            .draw_series(LineSeries::new(c.iter().cloned(), col.mix(0.25)))
            .expect("raw");
        let mean = running_mean(c, 100.0);
        let last = mean.last().map(|p| p.1).unwrap_or(f64::NAN);
        let tail = running_mean(c, 500.0)
            .last()
            .map(|p| p.1)
            .unwrap_or(f64::NAN);
        println!(
            "  {l}: {} points, last 100-step mean {last:.4}, last 500-step mean {tail:.4}",
            c.len()
        );
        chart
            .draw_series(LineSeries::new(mean, col.stroke_width(2)))
            .expect("mean")
            .label(format!("{l} (100-step running mean)"))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], col.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .expect("legend");
    root.present().expect("present");
    drop(chart);
    drop(root);
    save(&buf, &path);
}

fn main() {
    let a = args();
    let font = std::fs::read(&a.font).unwrap_or_else(|e| {
        panic!(
            "--font {}: {e} (install Debian's fonts-dejavu-core or pass --font FILE.ttf)",
            a.font.display()
        )
    });
    if register_font(
        "sans-serif",
        FontStyle::Normal,
        Box::leak(font.into_boxed_slice()),
    )
    .is_err()
    {
        panic!("--font {}: not a TrueType/OpenType font", a.font.display());
    }
    std::fs::create_dir_all(&a.out).expect("create --out");
    if a.only.iter().any(|p| p == "loss") {
        loss(&a);
    }
    let engine_parts: Vec<&String> = a.only.iter().filter(|p| *p != "loss").collect();
    if engine_parts.is_empty() {
        return;
    }
    tch::set_num_threads(a.threads);
    let model = Model::load(&a.model, Device::Cpu).expect("load model");
    let json_path = a.out.join("repro-figures.json");
    let mut json: serde_json::Map<String, serde_json::Value> = std::fs::read(&json_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    json.insert(
        "model".into(),
        serde_json::json!({"dir": a.model.display().to_string(), "parameters": model.parameter_count(),
            "device": "cpu", "torch_threads": a.threads}),
    );
    for p in engine_parts {
        match p.as_str() {
            "timing" => timing(&a, &model, &mut json),
            "slerp" => slerp(&a, &model, &mut json),
            o => panic!("--only {o}: not a part (timing, slerp, loss)"),
        }
        let mut bytes = serde_json::to_vec_pretty(&json).expect("json");
        bytes.push(b'\n');
        std::fs::write(&json_path, bytes).expect("write json");
    }
    println!("wrote {}", json_path.display());
}
