//! Eval: the paper's Table 1 on the daemon's model. The eval jobs (running ones with their
//! progress), a finished one's S × η table as a heat map of the Fréchet distance (rows S,
//! columns η then σ̂; green the best FD of that result, red its worst, linear between),
//! and for the cell under the cursor its bootstrap interval, n, the judge's mean
//! confidence, class histogram and sample grid. A small form queues a new `EvalJob`.
//! Results come from the daemon's job list, so they are there again after a restart.

use std::collections::{HashMap, HashSet};

use crossterm::event::{KeyCode, KeyEvent};
use ddim_proto::v1::{self as pb, job_spec::Kind};
use ratatui::{
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::{Block, Cell, Paragraph, Row, Table},
    Frame,
};

use super::{jobs::state_style, PromptFor};
use crate::app::{App, Screen};
use crate::format::{self, eta_list, short_id, steps_list};
use crate::prompt::Prompt;
use crate::theme::{bar, ACCENT, DIM, ERROR, OK, SELECTED};
use crate::worker::{Purpose, Request};

/// The form's defaults: 3 × (3 η + σ̂) cells of 100 samples.
pub const DEFAULT_STEPS: [u32; 3] = [10, 20, 50];
pub const DEFAULT_ETAS: [f32; 3] = [0.0, 0.5, 1.0];
pub const DEFAULT_SAMPLES: u32 = 100;
/// The daemon's limit on η values per eval job (EvalJob.etas).
const MAX_ETAS: usize = 16;

/// The daemon's limit on N per cell.
pub const MAX_SAMPLES: u32 = 10_000;
/// Refresh the job list this often while the screen is shown.
const REFRESH_MS: i64 = 3_000;
/// The spacings `p` steps through, in this order.
const SPACINGS: [pb::Spacing; 5] = [
    pb::Spacing::Uniform,
    pb::Spacing::Quad,
    pb::Spacing::Leading,
    pb::Spacing::Trailing,
    pb::Spacing::Linspace,
];
/// The heat map's colours: best, middle, worst FD of the result.
const HEAT_STOPS: [(u8, u8, u8); 3] = [(46, 160, 67), (214, 180, 40), (205, 55, 55)];
/// Width of the job list on the left.
const LIST_W: u16 = 34;

/// A form field typed at a prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Steps,
    Etas,
    Samples,
    Seed,
}

#[derive(Debug)]
pub struct EvalState {
    pub steps: Vec<u32>,
    pub etas: Vec<f32>,
    pub sigma_hat: bool,
    pub spacing: i32,
    /// pb::Solver: DDIM, or DPM-Solver++(2M) (the daemon refuses it with η ≠ 0 or σ̂).
    pub solver: i32,
    pub samples: u32,
    pub seed: u64,
    /// The eval job shown, by id (a refreshed list keeps it); None: the newest.
    pub selected: Option<String>,
    /// The heat map's cursor: (row = S, column = η or σ̂).
    pub cursor: (usize, usize),
    /// Finished eval jobs' results by job id; their grids are images `grid_key(job, i)`.
    pub results: HashMap<String, pb::EvalResult>,
    /// Done jobs whose result was asked for (once each).
    pub fetched: HashSet<String>,
    /// The newest eval jobs by kind (`ListJobs` with `kinds: ["eval"]`): an eval job
    /// stays listed however many other jobs ran after it.
    pub jobs: Vec<pb::Job>,
}

impl Default for EvalState {
    fn default() -> Self {
        Self {
            steps: DEFAULT_STEPS.to_vec(),
            etas: DEFAULT_ETAS.to_vec(),
            sigma_hat: true,
            spacing: pb::Spacing::Uniform as i32,
            solver: pb::Solver::Ddim as i32,
            samples: DEFAULT_SAMPLES,
            seed: 0,
            selected: None,
            cursor: (0, 0),
            results: HashMap::new(),
            fetched: HashSet::new(),
            jobs: vec![],
        }
    }
}

impl EvalState {
    /// The job the form describes.
    pub fn spec(&self) -> Kind {
        Kind::Eval(pb::EvalJob {
            steps: self.steps.clone(),
            etas: self.etas.clone(),
            sigma_hat: self.sigma_hat,
            spacing: self.spacing,
            samples: self.samples,
            seed: self.seed,
            solver: self.solver,
        })
    }

    /// How many cells the form's job has.
    pub fn cell_count(&self) -> usize {
        cells(self.steps.len(), self.etas.len(), self.sigma_hat)
    }
}

/// How many cells an eval job has: one per S and η (η = 0 alone when no η is given,
/// as the daemon reads an empty EvalJob.etas), plus a σ̂ cell per S.
fn cells(steps: usize, etas: usize, sigma_hat: bool) -> usize {
    steps * (etas.max(1) + usize::from(sigma_hat))
}

/// A column of the table: one η, or σ̂.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Col {
    Eta(f32),
    SigmaHat,
}

impl Col {
    pub fn label(self) -> String {
        match self {
            Col::Eta(e) => format!("η={e}"),
            Col::SigmaHat => "σ̂".into(),
        }
    }
}

/// A result's cells laid out as the S × η table: rows S in the order the daemon gave them,
/// columns η in that order, then σ̂.
#[derive(Debug, Clone, PartialEq)]
pub struct HeatMap {
    pub steps: Vec<u32>,
    pub cols: Vec<Col>,
    /// Index into `EvalResult.cells` per (row, column); None where the result has none.
    index: Vec<Vec<Option<usize>>>,
    /// The best (lowest) and worst finite FD of the result.
    pub range: Option<(f64, f64)>,
}

impl HeatMap {
    pub fn of(r: &pb::EvalResult) -> Self {
        let mut steps: Vec<u32> = vec![];
        let mut etas: Vec<f32> = vec![];
        let mut sigma_hat = false;
        for c in &r.cells {
            if !steps.contains(&c.steps) {
                steps.push(c.steps);
            }
            if c.sigma_hat {
                sigma_hat = true;
            } else if !etas.contains(&c.eta) {
                etas.push(c.eta);
            }
        }
        let mut cols: Vec<Col> = etas.into_iter().map(Col::Eta).collect();
        if sigma_hat {
            cols.push(Col::SigmaHat);
        }
        let index = steps
            .iter()
            .map(|s| {
                cols.iter()
                    .map(|col| {
                        r.cells.iter().position(|c| {
                            c.steps == *s
                                && match col {
                                    Col::Eta(e) => !c.sigma_hat && c.eta == *e,
                                    Col::SigmaHat => c.sigma_hat,
                                }
                        })
                    })
                    .collect()
            })
            .collect();
        let range = r.cells.iter().map(|c| c.fd).filter(|f| f.is_finite()).fold(
            None,
            |acc: Option<(f64, f64)>, f| match acc {
                None => Some((f, f)),
                Some((lo, hi)) => Some((lo.min(f), hi.max(f))),
            },
        );
        Self {
            steps,
            cols,
            index,
            range,
        }
    }

    pub fn rows(&self) -> usize {
        self.steps.len()
    }

    /// The cell at (row, column), as an index into the result's cells.
    pub fn cell(&self, row: usize, col: usize) -> Option<usize> {
        self.index.get(row)?.get(col).copied().flatten()
    }

    /// The heat colour of an FD in this result.
    pub fn colour(&self, fd: f64) -> Color {
        let (best, worst) = self.range.unwrap_or((fd, fd));
        heat_colour(heat(fd, best, worst))
    }
}

/// Where `fd` lies from the best (0) to the worst (1) FD; 0 when they are equal.
pub fn heat(fd: f64, best: f64, worst: f64) -> f64 {
    if worst > best && fd.is_finite() {
        ((fd - best) / (worst - best)).clamp(0.0, 1.0)
    } else if fd.is_finite() {
        0.0
    } else {
        1.0
    }
}

/// Green (0, the best) through yellow to red (1, the worst).
pub fn heat_colour(t: f64) -> Color {
    let t = t.clamp(0.0, 1.0) * (HEAT_STOPS.len() - 1) as f64;
    let i = (t.floor() as usize).min(HEAT_STOPS.len() - 2);
    let f = t - i as f64;
    let (a, b) = (HEAT_STOPS[i], HEAT_STOPS[i + 1]);
    let mix = |x: u8, y: u8| (f64::from(x) + (f64::from(y) - f64::from(x)) * f).round() as u8;
    Color::Rgb(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// `S=10 η=0.5` or `S=10 σ̂`.
pub fn cell_name(c: &pb::EvalCell) -> String {
    if c.sigma_hat {
        format!("S={} σ̂", c.steps)
    } else {
        format!("S={} η={}", c.steps, c.eta)
    }
}

/// `FD 12.34 [11.02, 13.90]`: the FD and its bootstrap interval (as `ddim eval` prints it).
pub fn interval_text(fd: f64, low: f64, high: f64) -> String {
    format!("FD {fd:.2} [{low:.2}, {high:.2}]")
}

/// `S=50 η=1 − η=0, paired: -14.60 (-23.40, -4.30)`: the cell's paired comparison with
/// the η = 0 cell of its S (as `ddimd eval` prints it), when the job has one.
pub fn paired_text(c: &pb::EvalCell) -> Option<String> {
    let p = c.vs_eta0.as_ref()?;
    Some(format!(
        "{} − η=0, paired: {:+.2} ({:+.2}, {:+.2})",
        cell_name(c),
        p.diff,
        p.low,
        p.high
    ))
}

/// Whether a paired interval leaves out 0 (the two cells' order is resolved).
fn resolved(p: &pb::EvalPaired) -> bool {
    p.low > 0.0 || p.high < 0.0
}

/// The image key of cell `i`'s sample grid of job `job`.
pub fn grid_key(job: &str, i: usize) -> String {
    format!("job:{job}:e{i}")
}

/// The eval jobs, newest first: those of the Jobs list (refreshed by job events)
/// and those listed by kind (older ones the 200 newest jobs no longer hold), once each.
pub fn eval_jobs(app: &App) -> Vec<&pb::Job> {
    let mut out: Vec<&pb::Job> = app.jobs.jobs.iter().filter(|j| j.kind == "eval").collect();
    for j in &app.eval.jobs {
        if !out.iter().any(|o| o.id == j.id) {
            out.push(j);
        }
    }
    let num = |j: &pb::Job| j.id.trim_start_matches("job-").parse::<u64>().unwrap_or(0);
    out.sort_by_key(|j| std::cmp::Reverse((j.created_unix_ms, num(j))));
    out
}

/// How many cells a listed eval job has, from its spec (listings carry it), before its
/// result is fetched.
fn spec_cells(j: &pb::Job) -> Option<usize> {
    match j.spec.as_ref()?.kind.as_ref()? {
        pb::job_spec::Kind::Eval(e) => Some(cells(e.steps.len(), e.etas.len(), e.sigma_hat)),
        _ => None,
    }
}

/// The job shown: the chosen one while the list has it, else the newest.
pub fn selected_job(app: &App) -> Option<&pb::Job> {
    let jobs = eval_jobs(app);
    app.eval
        .selected
        .as_deref()
        .and_then(|id| jobs.iter().find(|j| j.id == id).copied())
        .or_else(|| jobs.first().copied())
}

/// The shown job's result with its layout, once it is at hand.
pub fn shown(app: &App) -> Option<(&pb::Job, &pb::EvalResult, HeatMap)> {
    let job = selected_job(app)?;
    let r = app.eval.results.get(&job.id)?;
    Some((job, r, HeatMap::of(r)))
}

/// The cell under the cursor, as an index into the shown result's cells.
pub fn cursor_cell(app: &App) -> Option<usize> {
    let (_, _, map) = shown(app)?;
    map.cell(app.eval.cursor.0, app.eval.cursor.1)
}

/// Asks for the shown job's result when it is done and not at hand (once per job).
pub fn fetch_selected(app: &mut App) -> Vec<Request> {
    let Some(j) = selected_job(app) else {
        return vec![];
    };
    let id = j.id.clone();
    if j.state != pb::JobState::Done as i32
        || app.eval.results.contains_key(&id)
        || !app.eval.fetched.insert(id.clone())
    {
        return vec![];
    }
    vec![Request::GetJob { id }]
}

/// What the screen needs when it is shown: a fresh job list, the shown result.
pub fn entered(app: &mut App) -> Vec<Request> {
    app.jobs.last_refresh_ms = app.now_ms;
    let mut out = vec![Request::ListJobs, Request::ListEvalJobs];
    out.extend(fetch_selected(app));
    out
}

/// While shown: the job list every few seconds, and the shown result once it is done.
pub fn tick(app: &mut App) -> Vec<Request> {
    if app.screen != Screen::Eval {
        return vec![];
    }
    let mut out = vec![];
    if app.now_ms - app.jobs.last_refresh_ms >= REFRESH_MS {
        app.jobs.last_refresh_ms = app.now_ms;
        out.push(Request::ListJobs);
        out.push(Request::ListEvalJobs);
    }
    out.extend(fetch_selected(app));
    out
}

/// An eval job's result came (its grids are already in `app.images`).
pub fn result_arrived(app: &mut App, id: &str, r: pb::EvalResult) {
    app.eval.results.insert(id.to_string(), r);
    clamp_cursor(app);
}

/// A job queued from the form: show it.
pub fn submitted(app: &mut App, job: &pb::Job) {
    app.eval.selected = Some(job.id.clone());
}

/// A finished eval job opened from the jobs screen.
pub fn open(app: &mut App, job: &pb::Job) {
    app.eval.selected = Some(job.id.clone());
    clamp_cursor(app);
    app.go(Screen::Eval);
}

/// Keeps the cursor inside the shown table.
fn clamp_cursor(app: &mut App) {
    let (rows, cols) = shown(app).map_or((0, 0), |(_, _, m)| (m.rows(), m.cols.len()));
    let (r, c) = app.eval.cursor;
    app.eval.cursor = (r.min(rows.saturating_sub(1)), c.min(cols.saturating_sub(1)));
}

/// Shows the next (+1) or previous (-1) eval job of the list.
fn choose_job(app: &mut App, delta: isize) -> Vec<Request> {
    let ids: Vec<String> = eval_jobs(app).iter().map(|j| j.id.clone()).collect();
    if ids.is_empty() {
        return vec![];
    }
    let at = selected_job(app)
        .and_then(|j| ids.iter().position(|i| *i == j.id))
        .unwrap_or(0);
    let next = (at as isize + delta).clamp(0, ids.len() as isize - 1) as usize;
    app.eval.selected = Some(ids[next].clone());
    clamp_cursor(app);
    fetch_selected(app)
}

pub fn handle_key(app: &mut App, key: KeyEvent) -> Vec<Request> {
    let (rows, cols) = shown(app).map_or((0, 0), |(_, _, m)| (m.rows(), m.cols.len()));
    let (r, c) = app.eval.cursor;
    match key.code {
        KeyCode::Left | KeyCode::Char('h') => app.eval.cursor.1 = c.saturating_sub(1),
        KeyCode::Right | KeyCode::Char('l') => {
            app.eval.cursor.1 = (c + 1).min(cols.saturating_sub(1))
        }
        KeyCode::Up | KeyCode::Char('k') => app.eval.cursor.0 = r.saturating_sub(1),
        KeyCode::Down | KeyCode::Char('j') => {
            app.eval.cursor.0 = (r + 1).min(rows.saturating_sub(1))
        }
        KeyCode::Char('J') | KeyCode::PageDown => return choose_job(app, 1),
        KeyCode::Char('K') | KeyCode::PageUp => return choose_job(app, -1),
        KeyCode::Enter => {
            return vec![Request::Submit {
                spec: app.eval.spec(),
                purpose: Purpose::Eval,
            }]
        }
        KeyCode::Char('s') => ask(app, Field::Steps),
        KeyCode::Char('e') => ask(app, Field::Etas),
        KeyCode::Char('n') => ask(app, Field::Samples),
        KeyCode::Char('r') => ask(app, Field::Seed),
        KeyCode::Char('t') => app.eval.sigma_hat = !app.eval.sigma_hat,
        KeyCode::Char('p') => {
            let at = SPACINGS
                .iter()
                .position(|s| *s as i32 == app.eval.spacing)
                .unwrap_or(0);
            app.eval.spacing = SPACINGS[(at + 1) % SPACINGS.len()] as i32;
        }
        KeyCode::Char('v') => {
            app.eval.solver = if app.eval.solver == pb::Solver::Dpmpp2m as i32 {
                pb::Solver::Ddim as i32
            } else {
                pb::Solver::Dpmpp2m as i32
            };
        }
        KeyCode::Char('o') => save_grid(app),
        KeyCode::F(5) => return vec![Request::ListJobs, Request::ListEvalJobs],
        _ => {}
    }
    vec![]
}

fn ask(app: &mut App, field: Field) {
    let e = &app.eval;
    let (title, now) = match field {
        Field::Steps => ("eval: step counts S (rows)", steps_list(&e.steps)),
        Field::Etas => ("eval: η values (columns, at most 16)", eta_list(&e.etas)),
        Field::Samples => ("eval: samples N per cell", e.samples.to_string()),
        Field::Seed => (
            "eval: seed (sample i starts from x_T of (seed, i))",
            e.seed.to_string(),
        ),
    };
    app.prompt(Prompt::new(title, now), PromptFor::Eval(field));
}

/// A typed form value; a bad one is an error in the status line and changes nothing.
pub fn field_typed(app: &mut App, field: Field, text: &str) -> Vec<Request> {
    match field {
        Field::Steps => match crate::cli::parse_steps(text) {
            Ok(s) => app.eval.steps = s.0,
            Err(e) => app.error(format!("eval step counts: {e}")),
        },
        Field::Etas => match format::parse_etas_up_to(text, MAX_ETAS) {
            Ok(e) => app.eval.etas = e,
            Err(e) => app.error(format!("eval η values: {e}")),
        },
        Field::Samples => match text.parse::<u32>() {
            Ok(n) if (1..=MAX_SAMPLES).contains(&n) => app.eval.samples = n,
            _ => app.error(format!(
                "samples N must be a whole number from 1 to {MAX_SAMPLES}, got `{text}`"
            )),
        },
        Field::Seed => match text.parse::<u64>() {
            Ok(s) => app.eval.seed = s,
            Err(_) => app.error(format!("seed must be a whole number ≥ 0, got `{text}`")),
        },
    }
    vec![]
}

/// `o`: the cell's sample grid as a PNG file.
fn save_grid(app: &mut App) {
    let Some((job, r, map)) = shown(app) else {
        return;
    };
    let Some(c) = map
        .cell(app.eval.cursor.0, app.eval.cursor.1)
        .and_then(|i| r.cells.get(i))
    else {
        return;
    };
    let Some(png) = c.grid.as_ref().map(|g| g.png.clone()) else {
        return;
    };
    let col = if c.sigma_hat {
        "sigmahat".to_string()
    } else {
        format!("eta{}", c.eta)
    };
    let name = format!("eval_{}_S{}_{col}.png", short_id(&job.id), c.steps);
    app.prompt(
        super::save_prompt("save the cell's samples as PNG", &name),
        PromptFor::SavePng(png),
    );
}

pub fn render(app: &App, frame: &mut Frame, area: Rect) {
    let form_h = if form_lines(app, area.width.saturating_sub(2)).len() > 2 {
        5
    } else {
        4
    };
    let [form, rest] =
        Layout::vertical([Constraint::Length(form_h), Constraint::Min(0)]).areas(area);
    render_form(app, frame, form);
    let list_w = LIST_W.min(rest.width / 3);
    let [list, right] =
        Layout::horizontal([Constraint::Length(list_w), Constraint::Min(0)]).areas(rest);
    render_list(app, frame, list);
    let Some(job) = selected_job(app) else {
        frame.render_widget(
            Paragraph::new(match &app.jobs.loading {
                super::Loading::Loaded => {
                    "no eval jobs yet: Enter queues one with the form above".to_string()
                }
                super::Loading::Error(e) => format!("the job list did not come: {e}"),
                _ => "loading the job list…".to_string(),
            })
            .style(DIM)
            .block(Block::bordered().title(" FD per S × η ")),
            right,
        );
        return;
    };
    let Some(r) = app.eval.results.get(&job.id) else {
        let what = match pb::JobState::try_from(job.state) {
            Ok(pb::JobState::Done) => "fetching the result…".to_string(),
            Ok(pb::JobState::Failed) => format!("failed: {}", job.error),
            Ok(pb::JobState::Cancelled) => "cancelled".to_string(),
            _ => "the table comes when the job is done".to_string(),
        };
        let lines = vec![super::job_line(app, job), Line::styled(what, DIM)];
        frame.render_widget(
            Paragraph::new(lines).block(Block::bordered().title(" FD per S × η ")),
            right,
        );
        return;
    };
    let map = HeatMap::of(r);
    let heat_h = (map.rows() as u16 + 3).min(right.height / 2).max(3);
    let [heat_area, bottom] =
        Layout::vertical([Constraint::Length(heat_h), Constraint::Min(0)]).areas(right);
    render_heat(app, r, &map, frame, heat_area);
    let [detail, image] =
        Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(bottom);
    match cursor_cell(app).and_then(|i| r.cells.get(i).map(|c| (i, c))) {
        Some((i, c)) => {
            render_detail(r, c, frame, detail);
            super::image_tile(
                app,
                frame,
                image,
                &grid_key(&job.id, i),
                &format!("samples {}", cell_name(c)),
                true,
            );
        }
        None => frame.render_widget(
            Paragraph::new("no cell here")
                .style(DIM)
                .block(Block::bordered()),
            detail,
        ),
    }
}

/// The form's fields on one line when `width` allows, else on two; then what they make.
fn form_lines(app: &App, width: u16) -> Vec<Line<'static>> {
    let e = &app.eval;
    let field = |name: &str, value: String, key: &str| -> Vec<Span<'static>> {
        vec![
            Span::styled(format!("{name} "), DIM),
            Span::raw(value),
            Span::styled(format!(" ({key})   "), DIM),
        ]
    };
    let mut first = vec![];
    first.extend(field("steps", steps_list(&e.steps), "s"));
    first.extend(field("η", eta_list(&e.etas), "e"));
    first.extend(field(
        "σ̂",
        if e.sigma_hat { "on" } else { "off" }.into(),
        "t",
    ));
    let mut second = vec![];
    second.extend(field("spacing", format::spacing_name(e.spacing), "p"));
    second.extend(field(
        "solver",
        format::solver_name(e.solver).unwrap_or("ddim").into(),
        "v",
    ));
    second.extend(field("N", e.samples.to_string(), "n"));
    second.extend(field("seed", e.seed.to_string(), "r"));
    let cells = e.cell_count();
    let total = Line::styled(
        format!(
            "{cells} cells × {} samples = {} samples · Enter queues the job",
            e.samples,
            cells as u64 * u64::from(e.samples)
        ),
        DIM,
    );
    let one: Line = first
        .iter()
        .chain(&second)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    if one.width() <= width as usize {
        vec![one, total]
    } else {
        vec![first.into(), second.into(), total]
    }
}

fn render_form(app: &App, frame: &mut Frame, area: Rect) {
    frame.render_widget(
        Paragraph::new(form_lines(app, area.width.saturating_sub(2)))
            .block(Block::bordered().title(" new eval (the paper's Table 1) ")),
        area,
    );
}

fn render_list(app: &App, frame: &mut Frame, area: Rect) {
    let jobs = eval_jobs(app);
    let shown_id = selected_job(app).map(|j| j.id.clone());
    let vh = area.height.saturating_sub(3) as usize;
    let at = jobs
        .iter()
        .position(|j| Some(&j.id) == shown_id.as_ref())
        .unwrap_or(0);
    let offset = at.saturating_sub(vh.saturating_sub(1));
    let rows: Vec<Row> = jobs
        .iter()
        .skip(offset)
        .take(vh)
        .map(|j| {
            let progress = match pb::JobState::try_from(j.state) {
                Ok(pb::JobState::Done) => match app.eval.results.get(&j.id) {
                    Some(r) => format!("{} cells", r.cells.len()),
                    None => spec_cells(j).map_or("done".into(), |n| format!("{n} cells")),
                },
                Ok(pb::JobState::Running | pb::JobState::Queued) => {
                    format!(
                        "{} {}/{}",
                        bar(j.step, j.total_steps, 6),
                        j.step,
                        j.total_steps
                    )
                }
                _ => j.error.clone(),
            };
            let row = Row::new(vec![
                Cell::from(short_id(&j.id).to_string()),
                Cell::from(format::state_name(j.state)).style(state_style(j.state)),
                Cell::from(progress),
            ]);
            if Some(&j.id) == shown_id.as_ref() {
                row.style(SELECTED)
            } else {
                row
            }
        })
        .collect();
    let table = Table::new(
        rows,
        [
            Constraint::Length(8),
            Constraint::Length(9),
            Constraint::Fill(1),
        ],
    )
    .header(Row::new(["id", "state", "progress"]).style(Style::new().bold().fg(ACCENT)))
    .block(Block::bordered().title(format!(" eval jobs ({}) · J K ", jobs.len())));
    frame.render_widget(table, area);
}

fn render_heat(app: &App, r: &pb::EvalResult, map: &HeatMap, frame: &mut Frame, area: Rect) {
    let (cr, cc) = app.eval.cursor;
    let rows: Vec<Row> = map
        .steps
        .iter()
        .enumerate()
        .map(|(ri, s)| {
            let mut cells = vec![Cell::from(format!("S={s}")).style(Style::new().fg(ACCENT))];
            for ci in 0..map.cols.len() {
                let cell = match map.cell(ri, ci).and_then(|i| r.cells.get(i)) {
                    Some(c) => {
                        let style = Style::new().bg(map.colour(c.fd)).fg(Color::Black);
                        let style = if (ri, ci) == (cr, cc) {
                            style.add_modifier(Modifier::REVERSED | Modifier::BOLD)
                        } else {
                            style
                        };
                        Cell::from(format!("{:>8.2} ", c.fd)).style(style)
                    }
                    None => Cell::from(format!("{:>8} ", "—")).style(DIM),
                };
                cells.push(cell);
            }
            Row::new(cells)
        })
        .collect();
    let mut widths = vec![Constraint::Length(7)];
    widths.extend(map.cols.iter().map(|_| Constraint::Length(9)));
    let header: Vec<Cell> = std::iter::once(Cell::from("FD"))
        .chain(
            map.cols
                .iter()
                .map(|c| Cell::from(format!("{:>8} ", c.label()))),
        )
        .collect();
    let title = match &r.floor {
        Some(f) => format!(
            " FD per S × η · floor (real vs real, {}) {:.2} [{:.2}, {:.2}] ",
            f.n, f.fd, f.fd_low, f.fd_high
        ),
        None => " FD per S × η ".to_string(),
    };
    let mut footer = vec![];
    if let Some((best, worst)) = map.range {
        footer.push(Span::styled(" best ", Style::new().fg(heat_colour(0.0))));
        footer.push(Span::raw(format!("{best:.2}")));
        footer.push(Span::styled(" → worst ", Style::new().fg(heat_colour(1.0))));
        footer.push(Span::raw(format!("{worst:.2} ")));
    }
    footer.push(Span::styled(
        format!(
            "· judge {:.1}% on the test split · {} resamples ",
            r.judge_accuracy * 100.0,
            r.bootstrap
        ),
        DIM,
    ));
    frame.render_widget(
        Table::new(rows, widths)
            .column_spacing(0)
            .header(Row::new(header).style(Style::new().bold().fg(ACCENT)))
            .block(
                Block::bordered()
                    .title(title)
                    .title_bottom(Line::from(footer)),
            ),
        area,
    );
}

fn render_detail(r: &pb::EvalResult, c: &pb::EvalCell, frame: &mut Frame, area: Rect) {
    let mut lines = vec![
        Line::from(vec![
            Span::styled(
                interval_text(c.fd, c.fd_low, c.fd_high),
                Style::new().bold(),
            ),
            Span::styled("  95% bootstrap", DIM),
        ]),
        // The basic bootstrap interval: the percentile one reflected about the FD,
        // which removes the resamples' small-N upward shift (docs/reproduction.md).
        Line::styled(
            format!(
                "bias-corrected [{:.2}, {:.2}]",
                2.0 * c.fd - c.fd_high,
                2.0 * c.fd - c.fd_low
            ),
            DIM,
        ),
        Line::raw(format!("n {} · confidence {:.3}", c.n, c.confidence)),
    ];
    // Against the η = 0 cell of the same S: the difference with its paired interval,
    // much narrower than the two cells' own intervals suggest (shared x_T and resamples).
    if let Some(p) = &c.vs_eta0 {
        let (verdict, style) = match (resolved(p), p.diff < 0.0) {
            (true, true) => ("better than η=0", Style::new().fg(OK)),
            (true, false) => ("worse than η=0", Style::new().fg(ERROR)),
            (false, _) => ("not resolved", DIM),
        };
        lines.push(Line::raw(format!(
            "vs η=0 {:+.2} [{:+.2}, {:+.2}]",
            p.diff, p.low, p.high
        )));
        lines.push(Line::from(vec![
            Span::styled("paired: ", DIM),
            Span::styled(verdict, style),
        ]));
    }
    let took = format!("took {}", format::duration(c.seconds));
    lines.push(Line::styled(
        match r.floor.as_ref().filter(|f| f.fd > 0.0) {
            Some(f) => format!("{:.1}× the floor · {took}", c.fd / f.fd),
            None => took,
        },
        DIM,
    ));
    lines.push(Line::styled("classes (the judge's argmax)", DIM));
    let max = c.class_histogram.iter().copied().max().unwrap_or(0);
    let name_w = r
        .classes
        .iter()
        .map(|n| n.chars().count())
        .max()
        .unwrap_or(7);
    let name_w = name_w.clamp(7, 12);
    let bar_w = (area.width as usize)
        .saturating_sub(name_w + 10)
        .clamp(4, 20);
    for (i, count) in c.class_histogram.iter().enumerate() {
        let name = r
            .classes
            .get(i)
            .cloned()
            .unwrap_or_else(|| format!("class {i}"));
        let filled = if max == 0 {
            0
        } else {
            ((*count as f64 / max as f64) * bar_w as f64).round() as usize
        };
        lines.push(Line::from(vec![
            Span::raw(format!("{:<name_w$} ", format::fit(&name, name_w))),
            Span::styled("█".repeat(filled), Style::new().fg(ACCENT)),
            Span::raw(format!(" {count}")),
        ]));
    }
    let mut title = format!(" {} · {}", cell_name(c), format::spacing_name(c.spacing));
    if c.solver == pb::Solver::Dpmpp2m as i32 {
        title += " · dpmpp-2m";
    }
    title += " ";
    let style = if c.n == 0 {
        Style::new().fg(ERROR)
    } else {
        Style::new()
    };
    frame.render_widget(
        Paragraph::new(lines)
            .style(style)
            .block(Block::bordered().title(title)),
        area,
    );
}
