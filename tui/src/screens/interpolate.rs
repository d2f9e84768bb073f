//! Interpolation between two marked latents: frames, slerp/lerp and S; the result as a
//! strip of frames to step through; a frame can be saved as a new latent.

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
use crate::format::{method_name, short_id};
use crate::prompt::Prompt;
use crate::theme::DIM;
use crate::worker::{Purpose, Request};

#[derive(Debug)]
pub struct InterpState {
    /// (id, name) of the two ends.
    pub a: Option<(String, String)>,
    pub b: Option<(String, String)>,
    pub frames: u32,
    pub method: i32,
    pub steps: u32,
    /// η and spacing of the job opened from the jobs list (0 and uniform when set up
    /// here), so Enter queues that job again.
    pub eta: f32,
    pub spacing: i32,
    pub job: Option<pb::Job>,
    pub selected: usize,
    /// The job storing a frame as a latent, while it runs.
    pub save_job: Option<String>,
}

impl Default for InterpState {
    fn default() -> Self {
        Self {
            a: None,
            b: None,
            frames: 8,
            method: pb::InterpolationMethod::Slerp as i32,
            steps: 50,
            eta: 0.0,
            spacing: 0,
            job: None,
            selected: 0,
            save_job: None,
        }
    }
}

impl InterpState {
    /// The screen as `job` (a finished interpolation opened from the jobs list) left it:
    /// its ends (named by `name`), frames, method, sampler and result, nothing kept from
    /// whatever the screen showed before.
    pub fn from_job(
        spec: &pb::InterpolateJob,
        job: pb::Job,
        name: impl Fn(&str) -> String,
    ) -> Self {
        let defaults = Self::default();
        let sampler = spec.sampler.unwrap_or_default();
        Self {
            a: Some((spec.a.clone(), name(&spec.a))),
            b: Some((spec.b.clone(), name(&spec.b))),
            frames: spec.frames,
            method: spec.method,
            steps: if sampler.steps > 0 {
                sampler.steps
            } else {
                defaults.steps
            },
            eta: sampler.eta,
            spacing: sampler.spacing,
            job: Some(job),
            selected: 0,
            save_job: None,
        }
    }

    pub fn track(&mut self, job: pb::Job) {
        self.job = Some(job);
        self.selected = 0;
    }

    pub fn result_frames(&self) -> &[pb::Frame] {
        self.job
            .as_ref()
            .and_then(|j| j.result.as_ref())
            .map_or(&[], |r| &r.frames)
    }

    /// The job spec; `save` lists frames to store as latents.
    /// The job for the current settings; `save` frames are stored as latents, and with
    /// `only_saved` only they are decoded (what `w` sends: one decode, not `frames`).
    pub fn spec(&self, save: Vec<u32>, only_saved: bool) -> Option<Kind> {
        let (a, b) = (self.a.as_ref()?, self.b.as_ref()?);
        Some(Kind::Interpolate(pb::InterpolateJob {
            a: a.0.clone(),
            b: b.0.clone(),
            frames: self.frames,
            method: self.method,
            sampler: Some(pb::SamplerOptions {
                steps: self.steps,
                eta: self.eta,
                spacing: self.spacing,
                sigma_hat: false,
                solver: 0,
            }),
            save_frames: save,
            only_saved_frames: only_saved,
        }))
    }
}

pub fn handle_key(app: &mut App, key: KeyEvent) -> Vec<Request> {
    let s = &mut app.interp;
    let n = s.result_frames().len();
    match key.code {
        KeyCode::Enter => match s.spec(vec![], false) {
            Some(spec) => {
                return vec![Request::Submit {
                    spec,
                    purpose: Purpose::Interpolate,
                }];
            }
            None => app.error("mark two latents in the library (space) and press i"),
        },
        KeyCode::Right | KeyCode::Char('l') if n > 0 => s.selected = (s.selected + 1).min(n - 1),
        KeyCode::Left | KeyCode::Char('h') => s.selected = s.selected.saturating_sub(1),
        KeyCode::Char('+') | KeyCode::Char('=') => s.frames = (s.frames + 1).min(64),
        KeyCode::Char('-') => s.frames = s.frames.saturating_sub(1).max(2),
        KeyCode::Char('m') => {
            s.method = if s.method == pb::InterpolationMethod::Lerp as i32 {
                pb::InterpolationMethod::Slerp as i32
            } else {
                pb::InterpolationMethod::Lerp as i32
            }
        }
        KeyCode::Char('f') => {
            let p = Prompt::new("frames (2–64)", s.frames.to_string());
            app.prompt(p, PromptFor::InterpFrames);
        }
        KeyCode::Char('s') => {
            let p = Prompt::new("steps S", s.steps.to_string());
            app.prompt(p, PromptFor::InterpSteps);
        }
        KeyCode::Char('w') => {
            let frame = s
                .result_frames()
                .get(s.selected)
                .map(|f| (f.index, f.latent_id.clone()));
            match frame {
                None => app.error("no frames yet: press Enter to interpolate first"),
                Some((index, saved)) if !saved.is_empty() => {
                    app.info(format!(
                        "frame {index} is already latent {}",
                        short_id(&saved)
                    ));
                }
                Some((index, _)) => {
                    // Frames are stored through a job: one that decodes just this frame.
                    if let Some(spec) = s.spec(vec![index], true) {
                        app.info(format!("saving frame {index} as a latent…"));
                        return vec![Request::Submit {
                            spec,
                            purpose: Purpose::SaveFrame,
                        }];
                    }
                }
            }
        }
        KeyCode::Char('o') => {
            if let (Some(job), Some(f)) = (&s.job, s.result_frames().get(s.selected)) {
                let png = f.image.as_ref().map(|i| i.png.clone()).unwrap_or_default();
                let name = format!("interpolation_{}_{:02}.png", short_id(&job.id), f.index);
                app.prompt(
                    super::save_prompt("save frame as PNG", &name),
                    PromptFor::SavePng(png),
                );
            }
        }
        _ => {}
    }
    vec![]
}

/// ` · η=0.5 · quad` when the sampler is not the default (η = 0, uniform).
fn sampler_extras(eta: f32, spacing: i32) -> String {
    let mut s = String::new();
    if eta != 0.0 {
        s.push_str(&format!(" · η={eta}"));
    }
    let spacing = crate::format::spacing_name(spacing);
    if spacing != "uniform" {
        s.push_str(&format!(" · {spacing}"));
    }
    s
}

pub fn render(app: &App, frame: &mut Frame, area: Rect) {
    let s = &app.interp;
    let [form, big, strip] = Layout::vertical([
        Constraint::Length(5),
        Constraint::Percentage(62),
        Constraint::Min(5),
    ])
    .areas(area);
    let end = |e: &Option<(String, String)>| {
        e.as_ref().map_or("—".to_string(), |(id, name)| {
            format!("{name} ({})", short_id(id))
        })
    };
    let mut lines = vec![
        Line::from(vec![
            Span::styled("A → B   ", DIM),
            Span::raw(format!("{}  →  {}", end(&s.a), end(&s.b))),
        ]),
        Line::from(vec![
            Span::styled("params  ", DIM),
            Span::raw(format!(
                "{} frames · {} · S={}{}",
                s.frames,
                method_name(s.method),
                s.steps,
                sampler_extras(s.eta, s.spacing)
            )),
            Span::styled("   (+/- f m s, Enter to queue)", DIM),
        ]),
    ];
    if let Some(j) = &s.job {
        lines.push(super::job_line(app, j));
    }
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" interpolation ")),
        form,
    );
    let frames = s.result_frames();
    let Some(job) = &s.job else {
        return;
    };
    if let Some(f) = frames.get(s.selected) {
        let saved = if f.latent_id.is_empty() {
            String::new()
        } else {
            format!(" · saved {}", short_id(&f.latent_id))
        };
        let caption = format!(
            "frame {}/{} · α={:.3}{saved}",
            f.index + 1,
            frames.len(),
            f.alpha
        );
        super::image_tile(
            app,
            frame,
            big,
            &format!("job:{}:f{}", job.id, f.index),
            &caption,
            true,
        );
    }
    // The strip scrolls so the selected frame stays visible.
    let tiles = super::tile_row(strip, frames.len(), 16);
    let first = s.selected.saturating_sub(tiles.len().saturating_sub(1));
    for (tile, (i, f)) in tiles.into_iter().zip(frames.iter().enumerate().skip(first)) {
        super::image_tile(
            app,
            frame,
            tile,
            &format!("job:{}:f{}", job.id, f.index),
            &format!("{:.2}", f.alpha),
            i == s.selected,
        );
    }
}
