//! Jobs: kind, state, progress, step i/n, ETA and queue wait, live from WatchJob streams;
//! `c` cancels, Enter opens the job's results.

use std::collections::HashMap;

use crossterm::event::{KeyCode, KeyEvent};
use ddim_proto::v1 as pb;
use ratatui::{
    layout::{Constraint, Rect},
    style::{Color, Style},
    widgets::{Block, Cell, Row, Table},
    Frame,
};

use crate::app::{bar, App, Loading, Screen, ACCENT, DIM, ERROR, OK, SELECTED};
use crate::format::{self, short_id};
use crate::worker::Request;

/// Refresh the list this often while the screen is shown.
const REFRESH_MS: i64 = 3_000;

#[derive(Debug, Default)]
pub struct JobsState {
    /// Newest first.
    pub jobs: Vec<pb::Job>,
    pub selected: usize,
    pub eta: HashMap<String, f64>,
    pub queue_pos: HashMap<String, u32>,
    pub loading: Loading,
    pub last_refresh_ms: i64,
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
        .map(|j| Request::WatchJob { id: j.id.clone() })
        .collect();
    app.jobs.jobs = jobs;
    app.jobs.loading = Loading::Loaded;
    app.jobs.selected = app.jobs.selected.min(app.jobs.jobs.len().saturating_sub(1));
    out
}

/// Inserts or replaces one job (results are not kept in the list).
pub fn upsert(app: &mut App, mut job: pb::Job) {
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
            app.jobs.selected = (sel + 1).min(n.saturating_sub(1))
        }
        KeyCode::Up | KeyCode::Char('k') => app.jobs.selected = sel.saturating_sub(1),
        KeyCode::Home | KeyCode::Char('g') => app.jobs.selected = 0,
        KeyCode::End | KeyCode::Char('G') => app.jobs.selected = n.saturating_sub(1),
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

/// Shows a finished job's results on its screen.
pub fn open_results(app: &mut App, job: pb::Job) {
    use pb::job_spec::Kind;
    let spec = job.spec.as_ref().and_then(|s| s.kind.clone());
    match spec {
        Some(Kind::Reconstruct(r)) => {
            app.recon.source = Some(match r.input {
                Some(pb::reconstruct_job::Input::LatentId(id)) => {
                    super::reconstruct::Source::Latent(id.clone(), short_id(&id).to_string())
                }
                _ => super::reconstruct::Source::Uploaded,
            });
            app.recon.steps = r.steps.clone();
            app.recon.track(job);
            app.go(Screen::Reconstruct);
        }
        Some(Kind::Interpolate(i)) => {
            app.interp.a = Some((i.a.clone(), short_id(&i.a).to_string()));
            app.interp.b = Some((i.b.clone(), short_id(&i.b).to_string()));
            app.interp.frames = i.frames;
            app.interp.method = i.method;
            app.interp.steps = i.sampler.map_or(app.interp.steps, |s| s.steps);
            app.interp.track(job);
            app.go(Screen::Interpolate);
        }
        Some(Kind::Decode(d)) => {
            app.decode.latent = Some((d.latent_id.clone(), short_id(&d.latent_id).to_string()));
            app.decode.steps = d.steps.clone();
            app.decode.track(job);
            app.go(Screen::Decode);
        }
        _ => {
            let n = job.result.map_or(0, |r| r.latent_ids.len());
            app.info(format!(
                "{} job made {n} latent(s): they are in the library",
                job.kind
            ));
            app.go(Screen::Library);
        }
    }
}

pub fn render(app: &App, frame: &mut Frame, area: Rect) {
    let js = &app.jobs;
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
            let queued = j.state == pb::JobState::Queued as i32;
            let eta = match js.eta.get(&j.id) {
                Some(e) if running => format::duration(*e),
                _ => "".into(),
            };
            let state = match js.queue_pos.get(&j.id) {
                Some(p) if queued => format!("queued #{p}"),
                _ => format::state_name(j.state).to_string(),
            };
            let progress = if j.state == pb::JobState::Done as i32 {
                bar(1, 1, 16)
            } else {
                bar(j.step, j.total_steps, 16)
            };
            let row = Row::new(vec![
                Cell::from(short_id(&j.id).to_string()),
                Cell::from(j.kind.clone()),
                Cell::from(state).style(state_style(j.state)),
                Cell::from(progress).style(state_style(j.state)),
                Cell::from(format!("{}/{}", j.step, j.total_steps)),
                Cell::from(eta),
                Cell::from(format::duration(format::wait_secs(j, app.now_ms))),
                Cell::from(format::timestamp(j.created_unix_ms)),
                Cell::from(j.error.clone()).style(Style::new().fg(ERROR)),
            ]);
            if i == js.selected {
                row.style(SELECTED)
            } else {
                row
            }
        })
        .collect();
    let header = Row::new([
        "id", "kind", "state", "progress", "step", "eta", "wait", "created", "error",
    ])
    .style(Style::new().bold().fg(ACCENT));
    let title = match js.loading {
        Loading::Loaded => format!(" jobs ({}) ", js.jobs.len()),
        _ => " jobs — loading… ".into(),
    };
    let table = Table::new(
        rows,
        [
            Constraint::Length(8),
            Constraint::Length(11),
            Constraint::Length(10),
            Constraint::Length(16),
            Constraint::Length(9),
            Constraint::Length(6),
            Constraint::Length(6),
            Constraint::Length(16),
            Constraint::Fill(1),
        ],
    )
    .header(header)
    .block(Block::bordered().title(title));
    frame.render_widget(table, area);
}
