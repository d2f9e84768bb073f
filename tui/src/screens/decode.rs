//! Decode one latent at several step counts side by side (DecodeJob), and with several η
//! as a grid: one row per η, one column per S (the same noise seed in every cell).

use crossterm::event::{KeyCode, KeyEvent};
use ddim_proto::v1::{self as pb, job_spec::Kind};
use ratatui::{
    layout::{Constraint, Layout, Rect},
    text::{Line, Span},
    widgets::{Block, Paragraph},
    Frame,
};

use super::PromptFor;
use crate::app::App;
use crate::format::{eta_list, short_id, steps_list};
use crate::prompt::Prompt;
use crate::theme::DIM;
use crate::worker::{Purpose, Request};

#[derive(Debug)]
pub struct DecodeState {
    pub latent: Option<(String, String)>,
    pub steps: Vec<u32>,
    /// One decode per (η, S); a single 0 is the deterministic DDIM.
    pub etas: Vec<f32>,
    pub job: Option<pb::Job>,
    /// Index into the result's decodes (η-major).
    pub selected: usize,
}

impl Default for DecodeState {
    fn default() -> Self {
        Self {
            latent: None,
            steps: vec![10, 20, 50, 100],
            etas: vec![0.0],
            job: None,
            selected: 0,
        }
    }
}

impl DecodeState {
    pub fn track(&mut self, job: pb::Job) {
        self.job = Some(job);
        self.selected = 0;
    }

    pub fn decodes(&self) -> &[pb::DecodeResult] {
        self.job
            .as_ref()
            .and_then(|j| j.result.as_ref())
            .map_or(&[], |r| &r.decodes)
    }

    /// The decodes as rows of one η each, in the order they came.
    pub fn grid(&self) -> Vec<(f32, Vec<(usize, &pb::DecodeResult)>)> {
        let mut rows: Vec<(f32, Vec<(usize, &pb::DecodeResult)>)> = vec![];
        for (i, d) in self.decodes().iter().enumerate() {
            match rows.iter_mut().find(|(e, _)| *e == d.eta) {
                Some((_, r)) => r.push((i, d)),
                None => rows.push((d.eta, vec![(i, d)])),
            }
        }
        rows
    }
}

fn caption(d: &pb::DecodeResult, etas: usize) -> String {
    if etas > 1 || d.eta != 0.0 {
        format!("S={} η={}", d.steps, d.eta)
    } else {
        format!("S={}", d.steps)
    }
}

pub fn handle_key(app: &mut App, key: KeyEvent) -> Vec<Request> {
    let n = app.decode.decodes().len();
    match key.code {
        KeyCode::Enter => match &app.decode.latent {
            Some((id, _)) => {
                return vec![Request::Submit {
                    spec: Kind::Decode(pb::DecodeJob {
                        latent_id: id.clone(),
                        steps: app.decode.steps.clone(),
                        eta: app.decode.etas.first().copied().unwrap_or(0.0),
                        spacing: 0,
                        seed: 0,
                        etas: if app.decode.etas.len() > 1 {
                            app.decode.etas.clone()
                        } else {
                            vec![]
                        },
                        solver: 0,
                    }),
                    purpose: Purpose::Decode,
                }];
            }
            None => app.error("choose a latent in the library and press d"),
        },
        KeyCode::Char('s') => {
            app.prompt(
                Prompt::new("step counts S", steps_list(&app.decode.steps)),
                PromptFor::DecodeSteps,
            );
        }
        KeyCode::Char('e') => {
            app.prompt(
                Prompt::new("η values (e.g. 0,0.5,1)", eta_list(&app.decode.etas)),
                PromptFor::DecodeEtas,
            );
        }
        KeyCode::Right | KeyCode::Char('l') if n > 0 => {
            app.decode.selected = (app.decode.selected + 1).min(n - 1)
        }
        KeyCode::Left | KeyCode::Char('h') => {
            app.decode.selected = app.decode.selected.saturating_sub(1)
        }
        // One row up or down: as many decodes as the row has.
        KeyCode::Down | KeyCode::Char('j') if n > 0 => {
            let w = app.decode.grid().first().map_or(1, |(_, r)| r.len());
            if app.decode.selected + w < n {
                app.decode.selected += w;
            }
        }
        KeyCode::Up | KeyCode::Char('k') => {
            let w = app.decode.grid().first().map_or(1, |(_, r)| r.len());
            app.decode.selected = app.decode.selected.saturating_sub(w);
        }
        KeyCode::Char('o') => {
            if let (Some(job), Some(d)) = (
                &app.decode.job,
                app.decode.decodes().get(app.decode.selected),
            ) {
                let png = d.image.as_ref().map(|i| i.png.clone()).unwrap_or_default();
                let name = format!("decode_{}_S{}_eta{}.png", short_id(&job.id), d.steps, d.eta);
                app.prompt(
                    super::save_prompt("save image as PNG", &name),
                    PromptFor::SavePng(png),
                );
            }
        }
        _ => {}
    }
    vec![]
}

pub fn render(app: &App, frame: &mut Frame, area: Rect) {
    let d = &app.decode;
    let [form, tiles] = Layout::vertical([Constraint::Length(6), Constraint::Min(0)]).areas(area);
    let latent = d.latent.as_ref().map_or(
        "none — press d on a latent in the library".to_string(),
        |(id, name)| format!("{name} ({})", short_id(id)),
    );
    let mut lines = vec![
        Line::from(vec![Span::styled("latent  ", DIM), Span::raw(latent)]),
        Line::from(vec![
            Span::styled("steps   ", DIM),
            Span::raw(steps_list(&d.steps)),
            Span::styled("   (s to change, Enter to queue)", DIM),
        ]),
        Line::from(vec![
            Span::styled("η       ", DIM),
            Span::raw(eta_list(&d.etas)),
            Span::styled("   (e to change; several make an S × η grid)", DIM),
        ]),
    ];
    if let Some(j) = &d.job {
        lines.push(super::job_line(app, j));
    }
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" decode ")),
        form,
    );
    let Some(job) = &d.job else { return };
    let grid = d.grid();
    let rows = grid.len().max(1) as u16;
    let cols = grid.iter().map(|(_, r)| r.len()).max().unwrap_or(1);
    // Square-ish tiles: as tall as half their width (cells are about 1:2), rows share
    // the height.
    let h = (tiles.height / rows).min(tiles.width / cols as u16 / 2 + 2);
    for (k, (_, row)) in grid.iter().enumerate() {
        let area = Rect {
            y: tiles.y + k as u16 * h,
            height: h.max(6).min(tiles.height.saturating_sub(k as u16 * h)),
            ..tiles
        };
        if area.height < 3 {
            break;
        }
        for (tile, (i, r)) in super::tile_row(area, row.len(), 40).into_iter().zip(row) {
            super::image_tile(
                app,
                frame,
                tile,
                &format!("job:{}:d{i}", job.id),
                &caption(r, grid.len()),
                *i == d.selected,
            );
        }
    }
}
