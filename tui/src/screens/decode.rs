//! Decode one latent at several step counts side by side (DecodeJob).

use crossterm::event::{KeyCode, KeyEvent};
use ddim_proto::v1::{self as pb, job_spec::Kind};
use ratatui::{
    layout::{Constraint, Layout, Rect},
    text::{Line, Span},
    widgets::{Block, Paragraph},
    Frame,
};

use crate::app::{App, PromptFor, DIM};
use crate::format::{short_id, steps_list};
use crate::prompt::Prompt;
use crate::worker::{Purpose, Request};

#[derive(Debug)]
pub struct DecodeState {
    pub latent: Option<(String, String)>,
    pub steps: Vec<u32>,
    pub job: Option<pb::Job>,
    pub selected: usize,
}

impl Default for DecodeState {
    fn default() -> Self {
        Self {
            latent: None,
            steps: vec![10, 20, 50, 100],
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
                        eta: 0.0,
                        spacing: 0,
                        seed: 0,
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
        KeyCode::Right | KeyCode::Char('l') if n > 0 => {
            app.decode.selected = (app.decode.selected + 1).min(n - 1)
        }
        KeyCode::Left | KeyCode::Char('h') => {
            app.decode.selected = app.decode.selected.saturating_sub(1)
        }
        KeyCode::Char('o') => {
            if let (Some(job), Some(d)) = (
                &app.decode.job,
                app.decode.decodes().get(app.decode.selected),
            ) {
                let png = d.image.as_ref().map(|i| i.png.clone()).unwrap_or_default();
                let name = format!("decode_{}_S{}.png", short_id(&job.id), d.steps);
                app.prompt(
                    Prompt::new("save image as PNG", name).with_paths(),
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
    let [form, tiles] = Layout::vertical([Constraint::Length(5), Constraint::Min(0)]).areas(area);
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
    ];
    if let Some(j) = &d.job {
        lines.push(super::job_line(app, j));
    }
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" decode ")),
        form,
    );
    let Some(job) = &d.job else { return };
    let decodes = d.decodes();
    let h = tiles
        .height
        .min(tiles.width / decodes.len().max(1) as u16 / 2 + 2);
    let row = Rect {
        height: h.max(6).min(tiles.height),
        ..tiles
    };
    for (i, (tile, r)) in super::tile_row(row, decodes.len(), 40)
        .into_iter()
        .zip(decodes)
        .enumerate()
    {
        super::image_tile(
            app,
            frame,
            tile,
            &format!("job:{}:s{}", job.id, r.steps),
            &format!("S={}", r.steps),
            i == d.selected,
        );
    }
}
