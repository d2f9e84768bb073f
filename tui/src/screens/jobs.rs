//! Jobs: kind, state, progress, step i/n, ETA and queue wait, live from WatchJob streams;
//! `c` cancels, Enter opens the job's results. A side panel shows the selected job: the
//! latest x̂0 preview while it runs (only the latest per job is kept, and dropped when the
//! job ends or leaves the list), its first result image once done, else what it waits for.

use std::collections::HashMap;

use crossterm::event::{KeyCode, KeyEvent};
use ddim_proto::v1 as pb;
use ratatui::{
    layout::{Constraint, Layout, Rect},
    style::{Color, Style},
    text::Line,
    widgets::{Block, Cell, Paragraph, Row, Table, Wrap},
    Frame,
};

use super::Loading;
use crate::app::{App, Screen};
use crate::format::{self, short_id};
use crate::theme::{bar, ACCENT, DIM, ERROR, OK, SELECTED};
use crate::worker::Request;

/// Refresh the list this often while the screen is shown.
const REFRESH_MS: i64 = 3_000;
/// x̂0 previews asked for over one job: one per step up to this many steps, then every
/// `total / PREVIEWS_PER_JOB` steps (a preview is a ≤64 px PNG, but each costs the daemon's
/// model thread a device copy and an encode, and the terminal a redraw).
const PREVIEWS_PER_JOB: u32 = 100;
/// Narrower than this, the side panel collapses to a line under the table.
const PANEL_MIN_SCREEN: u16 = 100;
/// The error column gets at least this many cells before other columns are dropped.
const MIN_ERROR_W: u16 = 12;

/// The latest x̂0 preview of a running job; its image is `app.images[key]`.
#[derive(Debug, Clone, PartialEq)]
pub struct LivePreview {
    /// `live:<job>:<step>`: names the content, so the graphics cache never shows a stale one.
    pub key: String,
    pub step: u32,
    pub total: u32,
}

#[derive(Debug, Default)]
pub struct JobsState {
    /// Newest first.
    pub jobs: Vec<pb::Job>,
    pub selected: usize,
    pub eta: HashMap<String, f64>,
    pub queue_pos: HashMap<String, u32>,
    pub loading: Loading,
    pub last_refresh_ms: i64,
    /// The latest x̂0 preview per running job (one each; dropped when the job ends).
    pub live: HashMap<String, LivePreview>,
    /// A done job's first result image, `(image key, caption)`, once its result came.
    pub result_image: HashMap<String, (String, String)>,
    /// Done jobs whose result was asked for to show in the panel (once each).
    pub fetched: std::collections::HashSet<String>,
}

/// The selected job's result, when it is done and its image is not at hand yet (asked
/// once per job): what the side panel shows.
pub fn fetch_selected(app: &mut App) -> Vec<Request> {
    let Some(j) = app.jobs.jobs.get(app.jobs.selected) else {
        return vec![];
    };
    let id = j.id.clone();
    if j.state != pb::JobState::Done as i32
        || app.jobs.result_image.contains_key(&id)
        || !app.jobs.fetched.insert(id.clone())
    {
        return vec![];
    }
    vec![Request::GetJob { id }]
}

/// The `preview_every` to watch a job of `total_steps` model calls with.
pub fn preview_every(total_steps: u32) -> u32 {
    total_steps.div_ceil(PREVIEWS_PER_JOB).max(1)
}

/// The request that follows `job`'s events, with x̂0 previews.
pub fn watch(job: &pb::Job) -> Request {
    Request::WatchJob {
        id: job.id.clone(),
        preview_every: preview_every(job.total_steps),
    }
}

/// A new x̂0 preview of a running job replaces its previous one (a late one for a job
/// the list already shows as ended is ignored).
pub fn preview_arrived(app: &mut App, id: &str, step: u32, total: u32, image: &pb::Image) {
    let ended = |j: &pb::Job| j.id == id && format::is_terminal(j.state);
    if app.jobs.jobs.iter().any(ended) {
        return;
    }
    let key = format!("live:{id}:{step}");
    if !app.store_image(key.clone(), &image.png) {
        return;
    }
    let live = LivePreview {
        key: key.clone(),
        step,
        total,
    };
    if let Some(old) = app.jobs.live.insert(id.to_string(), live) {
        if old.key != key {
            forget_image(app, &old.key);
        }
    }
}

/// Forgets a job's live preview (it ended, or the list no longer shows it).
pub fn drop_preview(app: &mut App, id: &str) {
    if let Some(old) = app.jobs.live.remove(id) {
        forget_image(app, &old.key);
    }
}

fn forget_image(app: &mut App, key: &str) {
    app.images.remove(key);
    app.graphics.forget(key);
}

pub fn state_style(state: i32) -> Style {
    match pb::JobState::try_from(state) {
        Ok(pb::JobState::Running) => Style::new().fg(ACCENT),
        Ok(pb::JobState::Done) => Style::new().fg(OK),
        Ok(pb::JobState::Failed) => Style::new().fg(ERROR),
        Ok(pb::JobState::Cancelled) => DIM,
        _ => Style::new().fg(Color::Yellow),
    }
}

/// A new list: keep it, and watch every job that is still going.
pub fn jobs_arrived(app: &mut App, jobs: Vec<pb::Job>) -> Vec<Request> {
    let out = jobs
        .iter()
        .filter(|j| !format::is_terminal(j.state))
        .map(watch)
        .collect();
    let going: HashMap<&str, bool> = jobs
        .iter()
        .map(|j| (j.id.as_str(), !format::is_terminal(j.state)))
        .collect();
    let stale: Vec<String> = app
        .jobs
        .live
        .keys()
        .filter(|id| going.get(id.as_str()) != Some(&true))
        .cloned()
        .collect();
    for id in stale {
        drop_preview(app, &id);
    }
    app.jobs
        .result_image
        .retain(|id, _| going.contains_key(id.as_str()));
    app.jobs
        .fetched
        .retain(|id| going.contains_key(id.as_str()));
    app.jobs.jobs = jobs;
    app.jobs.loading = Loading::Loaded;
    app.jobs.selected = app.jobs.selected.min(app.jobs.jobs.len().saturating_sub(1));
    let mut out: Vec<Request> = out;
    if app.screen == Screen::Jobs {
        out.extend(fetch_selected(app));
    }
    out
}

/// Inserts or replaces one job (results are not kept in the list); a job that ended loses
/// its live preview.
pub fn upsert(app: &mut App, mut job: pb::Job) {
    if format::is_terminal(job.state) {
        drop_preview(app, &job.id);
    }
    job.result = None;
    match app.jobs.jobs.iter_mut().find(|j| j.id == job.id) {
        Some(j) => *j = job,
        None => app.jobs.jobs.insert(0, job),
    }
}

pub fn tick(app: &mut App) -> Vec<Request> {
    if app.screen == Screen::Jobs && app.now_ms - app.jobs.last_refresh_ms >= REFRESH_MS {
        app.jobs.last_refresh_ms = app.now_ms;
        return vec![Request::ListJobs];
    }
    vec![]
}

pub fn handle_key(app: &mut App, key: KeyEvent) -> Vec<Request> {
    let n = app.jobs.jobs.len();
    let sel = app.jobs.selected;
    match key.code {
        KeyCode::Down | KeyCode::Char('j') => {
            app.jobs.selected = (sel + 1).min(n.saturating_sub(1));
            return fetch_selected(app);
        }
        KeyCode::Up | KeyCode::Char('k') => {
            app.jobs.selected = sel.saturating_sub(1);
            return fetch_selected(app);
        }
        KeyCode::Home | KeyCode::Char('g') => {
            app.jobs.selected = 0;
            return fetch_selected(app);
        }
        KeyCode::End | KeyCode::Char('G') => {
            app.jobs.selected = n.saturating_sub(1);
            return fetch_selected(app);
        }
        KeyCode::F(5) => return vec![Request::ListJobs],
        KeyCode::Char('c') => {
            if let Some(j) = app.jobs.jobs.get(sel) {
                if format::is_terminal(j.state) {
                    app.error(format!(
                        "job {} is already {}",
                        short_id(&j.id),
                        format::state_name(j.state)
                    ));
                } else {
                    return vec![Request::Cancel { id: j.id.clone() }];
                }
            }
        }
        KeyCode::Enter => {
            if let Some(j) = app.jobs.jobs.get(sel) {
                if j.state != pb::JobState::Done as i32 {
                    app.error(format!(
                        "job {} is {}: results come when it is done",
                        short_id(&j.id),
                        format::state_name(j.state)
                    ));
                    return vec![];
                }
                app.open_job = Some(j.id.clone());
                return vec![Request::GetJob { id: j.id.clone() }];
            }
        }
        _ => {}
    }
    vec![]
}

/// Shows a finished job's results on its screen, the screen's state built from the job;
/// asks the daemon for the names of latents the library has not loaded.
pub fn open_results(app: &mut App, job: pb::Job) -> Vec<Request> {
    use pb::job_spec::Kind;
    let spec = job.spec.as_ref().and_then(|s| s.kind.clone());
    let ids: Vec<String> = match &spec {
        Some(Kind::Reconstruct(r)) => match &r.input {
            Some(pb::reconstruct_job::Input::LatentId(id)) => vec![id.clone()],
            Some(pb::reconstruct_job::Input::Latents(list)) => list.ids.clone(),
            _ => vec![],
        },
        Some(Kind::Interpolate(i)) => vec![i.a.clone(), i.b.clone()],
        Some(Kind::Decode(d)) => vec![d.latent_id.clone()],
        _ => vec![],
    };
    let names = ids
        .into_iter()
        .filter(|id| !app.library.has(id))
        .map(|id| Request::LatentName { id })
        .collect();
    match spec {
        Some(Kind::Reconstruct(r)) => {
            app.recon.source = Some(match r.input {
                Some(pb::reconstruct_job::Input::LatentId(id)) => {
                    super::reconstruct::Source::Latent(id.clone(), app.library.name_of(&id))
                }
                Some(pb::reconstruct_job::Input::Latents(list)) => {
                    super::reconstruct::Source::Latents(
                        list.ids
                            .iter()
                            .map(|id| (id.clone(), app.library.name_of(id)))
                            .collect(),
                    )
                }
                _ => super::reconstruct::Source::Uploaded,
            });
            app.recon.steps = r.steps.clone();
            app.recon.track(job);
            app.go(Screen::Reconstruct);
        }
        Some(Kind::Interpolate(i)) => {
            let lib = &app.library;
            app.interp = super::interpolate::InterpState::from_job(&i, job, |id| lib.name_of(id));
            app.go(Screen::Interpolate);
        }
        Some(Kind::Decode(d)) => {
            app.decode.latent = Some((d.latent_id.clone(), app.library.name_of(&d.latent_id)));
            app.decode.steps = d.steps.clone();
            app.decode.etas = d.eta_values();
            app.decode.track(job);
            app.go(Screen::Decode);
        }
        Some(Kind::Eval(_)) => super::eval::open(app, &job),
        _ => {
            let n = job.result.map_or(0, |r| r.latent_ids.len());
            app.info(format!(
                "{} job made {n} latent(s): they are in the library",
                job.kind
            ));
            app.go(Screen::Library);
        }
    }
    names
}

/// A latent's name came from the daemon: every screen showing it by id takes it.
pub fn name_arrived(app: &mut App, id: &str, name: &str) {
    use super::reconstruct::Source;
    let set = |end: &mut Option<(String, String)>| {
        if let Some((_, n)) = end.as_mut().filter(|(i, _)| i == id) {
            *n = name.to_string();
        }
    };
    set(&mut app.interp.a);
    set(&mut app.interp.b);
    set(&mut app.decode.latent);
    match &mut app.recon.source {
        Some(Source::Latent(i, n)) if i == id => *n = name.to_string(),
        Some(Source::Latents(list)) => {
            for (_, n) in list.iter_mut().filter(|(i, _)| i == id) {
                *n = name.to_string();
            }
        }
        _ => {}
    }
}

pub fn render(app: &App, frame: &mut Frame, area: Rect) {
    let selected = app.jobs.jobs.get(app.jobs.selected);
    if area.width < PANEL_MIN_SCREEN {
        render_table(
            app,
            frame,
            area,
            selected.and_then(|j| live_caption(app, j)),
        );
        return;
    }
    let panel_w = (area.width / 3).clamp(30, 44);
    let [table, panel] =
        Layout::horizontal([Constraint::Min(0), Constraint::Length(panel_w)]).areas(area);
    render_table(app, frame, table, None);
    match selected {
        Some(j) => render_panel(app, frame, panel, j),
        None => frame.render_widget(Block::bordered().title(" job "), panel),
    }
}

/// `x̂0 at step i/n` for a running job with a preview at hand.
fn live_caption(app: &App, job: &pb::Job) -> Option<String> {
    let p = app.jobs.live.get(&job.id)?;
    (job.state == pb::JobState::Running as i32)
        .then(|| format!("x̂0 at step {}/{}", p.step, p.total))
}

/// Fixed columns with their widths; the error column after them fills the rest.
const COLUMNS: [(&str, u16); 8] = [
    ("id", 8),
    ("kind", 11),
    ("state", 10),
    ("progress", 16),
    ("step", 9),
    ("eta", 6),
    ("wait", 6),
    ("created", 16),
];

/// Which columns fit `inner` cells: `created`, then `wait` go first, so that the error
/// keeps [`MIN_ERROR_W`] cells where it can.
fn shown_columns(inner: u16) -> Vec<usize> {
    let mut shown: Vec<usize> = (0..=COLUMNS.len()).collect();
    let need = |shown: &[usize]| -> u16 {
        let fixed: u16 = shown
            .iter()
            .filter_map(|i| COLUMNS.get(*i).map(|c| c.1))
            .sum();
        fixed + shown.len() as u16 - 1 + MIN_ERROR_W
    };
    for drop in [7, 6] {
        if need(&shown) > inner {
            shown.retain(|i| *i != drop);
        }
    }
    shown
}

fn render_table(app: &App, frame: &mut Frame, area: Rect, footer: Option<String>) {
    let js = &app.jobs;
    let shown = shown_columns(area.width.saturating_sub(2));
    let pick = |cells: Vec<Cell<'static>>| -> Vec<Cell<'static>> {
        cells
            .into_iter()
            .enumerate()
            .filter(|(i, _)| shown.contains(i))
            .map(|(_, c)| c)
            .collect()
    };
    let vh = area.height.saturating_sub(3) as usize;
    let offset = js.selected.saturating_sub(vh.saturating_sub(1));
    let rows: Vec<Row> = js
        .jobs
        .iter()
        .enumerate()
        .skip(offset)
        .take(vh)
        .map(|(i, j)| {
            let running = j.state == pb::JobState::Running as i32;
            let eta = match js.eta.get(&j.id) {
                Some(e) if running => format::duration(*e),
                _ => "".into(),
            };
            let progress = if j.state == pb::JobState::Done as i32 {
                bar(1, 1, 16)
            } else {
                bar(j.step, j.total_steps, 16)
            };
            let row = Row::new(pick(vec![
                Cell::from(short_id(&j.id).to_string()),
                Cell::from(j.kind.clone()),
                Cell::from(state_text(app, j)).style(state_style(j.state)),
                Cell::from(progress).style(state_style(j.state)),
                Cell::from(format!("{}/{}", j.step, j.total_steps)),
                Cell::from(eta),
                Cell::from(format::duration(format::wait_secs(j, app.now_ms))),
                Cell::from(format::timestamp(j.created_unix_ms)),
                Cell::from(j.error.clone()).style(Style::new().fg(ERROR)),
            ]));
            if i == js.selected {
                row.style(SELECTED)
            } else {
                row
            }
        })
        .collect();
    let header = Row::new(pick(
        COLUMNS
            .iter()
            .map(|c| c.0)
            .chain(["error"])
            .map(Cell::from)
            .collect(),
    ))
    .style(Style::new().bold().fg(ACCENT));
    let widths: Vec<Constraint> = shown
        .iter()
        .map(|i| {
            COLUMNS
                .get(*i)
                .map_or(Constraint::Fill(1), |c| Constraint::Length(c.1))
        })
        .collect();
    let title = match js.loading {
        Loading::Loaded => format!(" jobs ({}) ", js.jobs.len()),
        _ => " jobs — loading… ".into(),
    };
    let mut block = Block::bordered().title(title);
    if let Some(f) = footer {
        block = block.title_bottom(Line::styled(
            format!(" {f} · {PANEL_MIN_SCREEN}+ columns show it "),
            Style::new().fg(ACCENT),
        ));
    }
    let table = Table::new(rows, widths).header(header).block(block);
    frame.render_widget(table, area);
}

/// `queued #2` when the daemon told the position, else the state's name.
fn state_text(app: &App, job: &pb::Job) -> String {
    match app.jobs.queue_pos.get(&job.id) {
        Some(p) if job.state == pb::JobState::Queued as i32 => format!("queued #{p}"),
        _ => format::state_name(job.state).to_string(),
    }
}

/// The daemon that ran `job` (its last attempt), with its address when it is one of
/// the fleet sharing a PostgreSQL store (there `ran_by` is its `HOST:PID`; on sled
/// it is the daemon's address).
pub fn ran_by(app: &App, job: &pb::Job) -> Option<String> {
    if job.ran_by.is_empty() {
        return None;
    }
    Some(
        match app
            .fleet
            .iter()
            .find(|d| d.id == job.ran_by && !d.address.is_empty())
        {
            Some(d) => format!("{} ({})", job.ran_by, d.address),
            None => job.ran_by.clone(),
        },
    )
}

/// The selected job: its latest x̂0 while it runs, its first result image once done,
/// otherwise where it stands (queue position, error).
fn render_panel(app: &App, frame: &mut Frame, area: Rect, job: &pb::Job) {
    let state = pb::JobState::try_from(job.state).unwrap_or(pb::JobState::Unspecified);
    let image = match state {
        pb::JobState::Running => Some(match app.jobs.live.get(&job.id) {
            Some(p) => (p.key.clone(), format!("x̂0 at step {}/{}", p.step, p.total)),
            None => (String::new(), "x̂0: waiting for a preview".into()),
        }),
        pb::JobState::Done => app
            .jobs
            .result_image
            .get(&job.id)
            .filter(|(k, _)| app.images.contains_key(k))
            .cloned(),
        _ => None,
    };
    let dim = |s: String| Line::styled(s, DIM);
    let mut lines = vec![Line::styled(state_text(app, job), state_style(job.state))];
    match state {
        pb::JobState::Running => {
            let mut l = format!("step {}/{}", job.step, job.total_steps);
            if let Some(e) = app.jobs.eta.get(&job.id) {
                l.push_str(&format!(" · eta {}", format::duration(*e)));
            }
            lines.push(Line::raw(l));
        }
        pb::JobState::Queued => {
            lines.push(Line::raw(match app.jobs.queue_pos.get(&job.id) {
                Some(0) => "next in line".to_string(),
                Some(p) => format!("{p} job(s) ahead in the queue"),
                None => "waiting in the queue".to_string(),
            }));
            lines.push(dim(format!(
                "waited {}",
                format::duration(format::wait_secs(job, app.now_ms))
            )));
        }
        pb::JobState::Done => {
            if job.finished_unix_ms > 0 && job.started_unix_ms > 0 {
                let secs = (job.finished_unix_ms - job.started_unix_ms) as f64 / 1000.0;
                lines.push(Line::raw(format!("took {}", format::duration(secs))));
            }
            lines.push(Line::styled("Enter opens results", Style::new().fg(ACCENT)));
        }
        pb::JobState::Failed => {
            lines.push(Line::raw(format!(
                "at step {}/{}, attempt {}",
                job.step, job.total_steps, job.attempts
            )));
            lines.push(Line::styled(job.error.clone(), Style::new().fg(ERROR)));
        }
        _ => lines.push(Line::raw(format!(
            "stopped at step {}/{}",
            job.step, job.total_steps
        ))),
    }
    lines.push(dim(format!(
        "created {}",
        format::timestamp(job.created_unix_ms)
    )));
    if let Some(by) = ran_by(app, job) {
        lines.push(dim(format!("ran by {by}")));
    }
    let info_h = lines.len() as u16 + 2;
    let info = Paragraph::new(lines)
        .wrap(Wrap { trim: true })
        .block(Block::bordered().title(format!(" {} {} ", short_id(&job.id), job.kind)));
    let Some((key, caption)) = image else {
        frame.render_widget(info, area);
        return;
    };
    // Roughly square in half-block cells (two pixel rows a cell), plus border and caption.
    let tile_h = (area.width.saturating_sub(2) / 2 + 3).min(area.height.saturating_sub(info_h));
    let [tile, rest] =
        Layout::vertical([Constraint::Length(tile_h), Constraint::Min(0)]).areas(area);
    super::image_tile(
        app,
        frame,
        tile,
        &key,
        &caption,
        state == pb::JobState::Running,
    );
    frame.render_widget(info, rest);
}
