//! Reconstruction: pick step counts, queue a ReconstructJob, and see MSE per S as a chart
//! (log10 of the MSE) and a table, with the reconstruction at each S beside the original.

use std::path::PathBuf;

use crossterm::event::{KeyCode, KeyEvent};
use ddim_proto::v1::{self as pb, job_spec::Kind};
use ratatui::{
    layout::{Constraint, Layout, Rect},
    style::{Color, Style},
    symbols::Marker,
    text::{Line, Span},
    widgets::{Axis, Block, Chart, Dataset, GraphType, Paragraph, Row, Table},
    Frame,
};

use super::PromptFor;
use crate::app::App;
use crate::format::steps_list;
use crate::prompt::Prompt;
use crate::theme::{ACCENT, DIM, SELECTED};
use crate::worker::{Purpose, Request};

pub const DEFAULT_STEPS: [u32; 7] = [10, 20, 50, 100, 200, 500, 1000];

#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// A latent (id, name); it must have its source image.
    Latent(String, String),
    /// Several latents (id, name), reconstructed as one batch: the chart and table
    /// show the mean MSE and its standard error.
    Latents(Vec<(String, String)>),
    /// An image file, uploaded with the job.
    File(PathBuf),
    /// Opened from the jobs list: the image was uploaded.
    Uploaded,
}

#[derive(Debug)]
pub struct ReconState {
    pub source: Option<Source>,
    pub steps: Vec<u32>,
    pub job: Option<pb::Job>,
    /// Index into the result points.
    pub selected: usize,
}

impl Default for ReconState {
    fn default() -> Self {
        Self {
            source: None,
            steps: DEFAULT_STEPS.to_vec(),
            job: None,
            selected: 0,
        }
    }
}

impl ReconState {
    pub fn track(&mut self, job: pb::Job) {
        self.job = Some(job);
        self.selected = 0;
    }

    pub fn points(&self) -> &[pb::ReconstructionPoint] {
        self.job
            .as_ref()
            .and_then(|j| j.result.as_ref())
            .map_or(&[], |r| &r.reconstruction)
    }
}

pub fn handle_key(app: &mut App, key: KeyEvent) -> Vec<Request> {
    let n = app.recon.points().len();
    match key.code {
        KeyCode::Enter => {
            let steps = app.recon.steps.clone();
            match app.recon.source.clone() {
                Some(Source::Latent(id, _)) => vec![Request::Submit {
                    spec: Kind::Reconstruct(pb::ReconstructJob {
                        input: Some(pb::reconstruct_job::Input::LatentId(id)),
                        steps,
                        spacing: 0,
                        solver: 0,
                    }),
                    purpose: Purpose::Reconstruct,
                }],
                Some(Source::Latents(list)) => vec![Request::Submit {
                    spec: Kind::Reconstruct(pb::ReconstructJob {
                        input: Some(pb::reconstruct_job::Input::Latents(pb::LatentIdList {
                            ids: list.into_iter().map(|(id, _)| id).collect(),
                        })),
                        steps,
                        spacing: 0,
                        solver: 0,
                    }),
                    purpose: Purpose::Reconstruct,
                }],
                Some(Source::File(path)) => vec![Request::ReconstructFile { path, steps }],
                _ => {
                    app.error("choose a latent in the library (r) or a file (f) first");
                    vec![]
                }
            }
        }
        KeyCode::Char('s') => {
            app.prompt(
                Prompt::new("step counts S", steps_list(&app.recon.steps)),
                PromptFor::ReconSteps,
            );
            vec![]
        }
        KeyCode::Char('f') => {
            app.prompt(
                Prompt::new("image file to reconstruct", "").with_paths(),
                PromptFor::ReconFile,
            );
            vec![]
        }
        KeyCode::Right | KeyCode::Char('l') if n > 0 => {
            app.recon.selected = (app.recon.selected + 1).min(n - 1);
            vec![]
        }
        KeyCode::Left | KeyCode::Char('h') => {
            app.recon.selected = app.recon.selected.saturating_sub(1);
            vec![]
        }
        KeyCode::Char('o') => {
            let (Some(job), Some(p)) = (&app.recon.job, app.recon.points().get(app.recon.selected))
            else {
                return vec![];
            };
            let png = p.image.as_ref().map(|i| i.png.clone()).unwrap_or_default();
            let name = format!(
                "reconstruction_{}_S{}.png",
                crate::format::short_id(&job.id),
                p.steps
            );
            app.prompt(
                super::save_prompt("save image as PNG", &name),
                PromptFor::SavePng(png),
            );
            vec![]
        }
        _ => vec![],
    }
}

pub fn render(app: &App, frame: &mut Frame, area: Rect) {
    let r = &app.recon;
    let [form, rest] = Layout::vertical([Constraint::Length(5), Constraint::Min(0)]).areas(area);
    let source = match &r.source {
        Some(Source::Latent(id, name)) => {
            format!("latent {name} ({})", crate::format::short_id(id))
        }
        Some(Source::Latents(list)) => {
            let names: Vec<&str> = list.iter().map(|(_, n)| n.as_str()).collect();
            format!("{} latents, one batch: {}", list.len(), names.join(", "))
        }
        Some(Source::File(p)) => format!("file {}", p.display()),
        Some(Source::Uploaded) => "uploaded image".into(),
        None => "none — press r on a latent in the library, or f for a file".into(),
    };
    let mut lines = vec![
        Line::from(vec![Span::styled("source  ", DIM), Span::raw(source)]),
        Line::from(vec![
            Span::styled("steps   ", DIM),
            Span::raw(steps_list(&r.steps)),
            Span::styled("   (s to change, Enter to queue)", DIM),
        ]),
    ];
    if let Some(j) = &r.job {
        lines.push(super::job_line(app, j));
    }
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" reconstruction ")),
        form,
    );

    let points = r.points();
    let [left, right] =
        Layout::horizontal([Constraint::Percentage(45), Constraint::Percentage(55)]).areas(rest);
    // Over several images: the mean and its standard error, and the worst images.
    let images = points.iter().map(|p| p.images).max().unwrap_or(0);
    // The chart and the MSE table come first; the worst images get what is left (at
    // least one row of them, else nothing).
    let table_rows = points.len() as u16 + 3;
    let spare = left.height.saturating_sub(CHART_MIN_ROWS + table_rows);
    let worst_rows = if images > 1 && spare >= 4 {
        ((images as u16).min(WORST_SHOWN) + 3).min(spare)
    } else {
        0
    };
    let [chart_area, table_area, worst_area] = Layout::vertical([
        Constraint::Min(CHART_MIN_ROWS),
        Constraint::Length(table_rows),
        Constraint::Length(worst_rows),
    ])
    .areas(left);
    render_chart(points, r.selected, frame, chart_area);
    if let Some(p) = points.get(r.selected).filter(|_| worst_rows > 0) {
        render_worst(r, p, frame, worst_area);
    }
    let rows: Vec<Row> = points
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut cells = vec![
                p.steps.to_string(),
                format!("{:.6}", p.mse),
                format!("{:.2}", p.mse.log10()),
            ];
            if images > 1 {
                cells.push(format!("{:.6}", p.mse_sem));
            }
            let row = Row::new(cells);
            if i == r.selected {
                row.style(SELECTED)
            } else {
                row
            }
        })
        .collect();
    frame.render_widget(
        Table::new(
            rows,
            [
                Constraint::Length(6),
                Constraint::Length(12),
                Constraint::Length(8),
                Constraint::Length(10),
            ],
        )
        .header(
            Row::new(if images > 1 {
                vec!["S", "mean MSE", "log10", "± s.e.m."]
            } else {
                vec!["S", "MSE", "log10"]
            })
            .style(Style::new().bold().fg(ACCENT)),
        )
        .block(Block::bordered().title(if images > 1 {
            format!(" MSE per S, {images} images ")
        } else {
            " MSE per S ".into()
        })),
        table_area,
    );

    let Some(job) = &r.job else {
        frame.render_widget(Block::bordered().title(" images "), right);
        return;
    };
    let [big, strip] =
        Layout::vertical([Constraint::Percentage(60), Constraint::Percentage(40)]).areas(right);
    let [orig, sel] = super::two_tiles(big);
    super::image_tile(
        app,
        frame,
        orig,
        &format!("job:{}:orig", job.id),
        if images > 1 {
            "first original"
        } else {
            "original"
        },
        false,
    );
    if let Some(p) = points.get(r.selected) {
        super::image_tile(
            app,
            frame,
            sel,
            &format!("job:{}:s{}", job.id, p.steps),
            &format!("S={}", p.steps),
            true,
        );
    }
    for (i, (tile, p)) in super::tile_row(strip, points.len(), 24)
        .into_iter()
        .zip(points)
        .enumerate()
    {
        super::image_tile(
            app,
            frame,
            tile,
            &format!("job:{}:s{}", job.id, p.steps),
            &format!("S={}", p.steps),
            i == r.selected,
        );
    }
}

/// The chart gives way to the MSE table down to this height (80×24 keeps all 7 rows).
const CHART_MIN_ROWS: u16 = 6;

/// How many of the worst-reconstructed images the per-image table lists.
const WORST_SHOWN: u16 = 5;

/// The images that reconstruct worst at the selected S (a batch over several latents).
fn render_worst(r: &ReconState, p: &pb::ReconstructionPoint, frame: &mut Frame, area: Rect) {
    let names: Vec<String> = match &r.source {
        Some(Source::Latents(list)) => list.iter().map(|(_, n)| n.clone()).collect(),
        _ => vec![],
    };
    let mut order: Vec<usize> = (0..p.image_mse.len()).collect();
    order.sort_by(|&a, &b| p.image_mse[b].total_cmp(&p.image_mse[a]));
    let rows: Vec<Row> = order
        .iter()
        .take(WORST_SHOWN as usize)
        .map(|&i| {
            let name = names
                .get(i)
                .cloned()
                .unwrap_or_else(|| format!("#{}", i + 1));
            let ratio = p.image_mse[i] / p.mse;
            Row::new(vec![
                name,
                format!("{:.6}", p.image_mse[i]),
                format!("{ratio:.1}× mean"),
            ])
        })
        .collect();
    frame.render_widget(
        Table::new(
            rows,
            [
                Constraint::Fill(1),
                Constraint::Length(10),
                Constraint::Length(11),
            ],
        )
        .header(Row::new(["latent", "MSE", ""]).style(Style::new().bold().fg(ACCENT)))
        .block(Block::bordered().title(format!(" worst at S={} ", p.steps))),
        area,
    );
}

/// log10(MSE) against S (x on a log scale too, so 10…1000 spread evenly): a line
/// through the measured points, each marked, the selected one highlighted, and
/// ± one standard error as a vertical bar when the points are means over images.
fn render_chart(
    points: &[pb::ReconstructionPoint],
    selected: usize,
    frame: &mut Frame,
    area: Rect,
) {
    let xy = |p: &pb::ReconstructionPoint| (f64::from(p.steps).log10(), p.mse.log10());
    let plottable = |p: &&pb::ReconstructionPoint| p.mse > 0.0 && p.steps > 0;
    let data: Vec<(f64, f64)> = points.iter().filter(plottable).map(xy).collect();
    // ± one standard error, as a vertical bar at each S (over several images).
    let bars: Vec<[(f64, f64); 2]> = points
        .iter()
        .filter(|p| plottable(p) && p.mse_sem > 0.0)
        .map(|p| {
            let x = f64::from(p.steps).log10();
            let lo = (p.mse - p.mse_sem).max(p.mse / 10.0).log10();
            [(x, lo), (x, (p.mse + p.mse_sem).log10())]
        })
        .collect();
    let chosen: Vec<(f64, f64)> = points
        .get(selected)
        .filter(plottable)
        .map(xy)
        .into_iter()
        .collect();
    let block = Block::bordered().title(" log10 MSE vs S ");
    if data.is_empty() {
        frame.render_widget(
            Paragraph::new("no results yet").style(DIM).block(block),
            area,
        );
        return;
    }
    let (xmin, xmax) = data.iter().fold((f64::MAX, f64::MIN), |(a, b), (x, _)| {
        (a.min(*x), b.max(*x))
    });
    let (ymin, ymax) = data
        .iter()
        .chain(bars.iter().flatten())
        .fold((f64::MAX, f64::MIN), |(a, b), (_, y)| {
            (a.min(*y), b.max(*y))
        });
    let (ylo, yhi) = (ymin.floor(), ymax.ceil().max(ymin.floor() + 1.0));
    // A margin on both sides so the first and last points (and their bars) stand
    // clear of the axis and of its title.
    let pad = 0.06 * (xmax - xmin).max(0.1);
    let (xlo, xhi) = (xmin - pad, xmax + pad);
    let ylabels: Vec<Line> = [ylo, (ylo + yhi) / 2.0, yhi]
        .iter()
        .map(|v| Line::from(format!("{:.0e}", 10f64.powf(*v))))
        .collect();
    let xlabels: Vec<Line> = [xlo, (xlo + xhi) / 2.0, xhi]
        .iter()
        .map(|v| Line::from(format!("{:.0}", 10f64.powf(*v))))
        .collect();
    // Later datasets draw over earlier ones: bars, then the line, then the points.
    let mut datasets: Vec<Dataset> = bars
        .iter()
        .map(|b| {
            Dataset::default()
                .marker(Marker::Braille)
                .graph_type(GraphType::Line)
                .style(DIM)
                .data(b)
        })
        .collect();
    datasets.extend([
        Dataset::default()
            .marker(Marker::Braille)
            .graph_type(GraphType::Line)
            .style(Style::new().fg(ACCENT))
            .data(&data),
        Dataset::default()
            .marker(Marker::Block)
            .graph_type(GraphType::Scatter)
            .style(Style::new().fg(ACCENT))
            .data(&data),
        Dataset::default()
            .marker(Marker::Block)
            .graph_type(GraphType::Scatter)
            .style(Style::new().fg(Color::Yellow))
            .data(&chosen),
    ]);
    let chart = Chart::new(datasets)
        .block(block)
        .x_axis(
            Axis::default()
                .title("S")
                .bounds([xlo, xhi])
                .labels(xlabels)
                .style(DIM),
        )
        .y_axis(
            Axis::default()
                .title("MSE")
                .bounds([ylo, yhi])
                .labels(ylabels)
                .style(DIM),
        );
    frame.render_widget(chart, area);
}
