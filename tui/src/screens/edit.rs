//! Editing: choose an operation (variation, mix, direction, renoise, inpaint, grid),
//! change its parameters and watch a live preview (`PreviewEdit` at S = 10) beside the
//! original; Enter commits the edit as a job at the chosen S, and the new latent shows up
//! in the library (with its lineage).
//!
//! The state and its rules (`EditState`: parameters, specs, the rectangle) do not need
//! the `App`; the functions at the bottom wire them to keys, prompts and the screen.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers, MouseButton, MouseEvent, MouseEventKind};
use ddim_proto::mix::{format_mix, parse_mix};
use ddim_proto::v1::{self as pb, job_spec::Kind};
use image::DynamicImage;
use ratatui::{
    layout::{Constraint, Layout, Rect},
    style::Style,
    text::{Line, Span},
    widgets::{Block, Paragraph, Wrap},
    Frame,
};

use super::PromptFor;
use crate::app::App;
use crate::format::short_id;
use crate::prompt::Prompt;
use crate::theme::{ACCENT, DIM, ERROR, SELECTED};
use crate::worker::{Purpose, Request};

/// S of the live preview.
pub const PREVIEW_STEPS: u32 = 10;
/// S of a committed edit, by default.
pub const COMMIT_STEPS: u32 = 50;
/// The S a `←→` on the steps parameter steps through.
const STEP_LADDER: [u32; 8] = [10, 20, 50, 100, 200, 500, 1000, 2000];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Op {
    #[default]
    Variation,
    Mix,
    Direction,
    Renoise,
    Inpaint,
    Grid,
}

impl Op {
    pub const ALL: [Op; 6] = [
        Op::Variation,
        Op::Mix,
        Op::Direction,
        Op::Renoise,
        Op::Inpaint,
        Op::Grid,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Op::Variation => "variation",
            Op::Mix => "mix",
            Op::Direction => "direction",
            Op::Renoise => "renoise",
            Op::Inpaint => "inpaint",
            Op::Grid => "grid",
        }
    }

    fn shift(self, by: isize) -> Op {
        let i = Op::ALL.iter().position(|o| *o == self).unwrap_or(0) as isize;
        Op::ALL[(i + by).rem_euclid(Op::ALL.len() as isize) as usize]
    }

    /// The parameters the operation shows, in order.
    pub fn params(self) -> &'static [Param] {
        match self {
            Op::Variation => &[Param::Strength, Param::Seed, Param::Steps],
            Op::Mix => &[
                Param::Weight,
                Param::Expression,
                Param::Radius,
                Param::Steps,
            ],
            Op::Direction => &[
                Param::FromTag,
                Param::ToTag,
                Param::Weight,
                Param::Radius,
                Param::Steps,
            ],
            Op::Renoise => &[Param::Strength, Param::Eta, Param::Seed, Param::Steps],
            Op::Inpaint => &[Param::Eta, Param::Seed, Param::Steps],
            Op::Grid => &[Param::Size, Param::Cell, Param::Steps],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Param {
    Strength,
    Seed,
    Eta,
    Weight,
    Expression,
    FromTag,
    ToTag,
    Size,
    Cell,
    /// The radius a mix or direction is rescaled to (parents' or √d).
    Radius,
    Steps,
}

impl Param {
    fn label(self) -> &'static str {
        match self {
            Param::Strength => "strength",
            Param::Seed => "seed",
            Param::Eta => "η",
            Param::Weight => "weight",
            Param::Expression => "expression",
            Param::FromTag => "from tag",
            Param::ToTag => "to tag",
            Param::Size => "grid N",
            Param::Cell => "save cell",
            Param::Radius => "radius",
            Param::Steps => "commit S",
        }
    }

    /// Whether `←→` changes it (the others are typed).
    fn steps_by_keys(self) -> bool {
        !matches!(self, Param::Expression | Param::FromTag | Param::ToTag)
    }
}

/// An inpainting rectangle in image pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PxRect {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EditState {
    pub op: Op,
    /// The latent being edited (id, name) and its tags.
    pub latent: Option<(String, String)>,
    pub tags: Vec<String>,
    /// The other marked latents (id, name), in marking order: mix terms, grid corners.
    pub others: Vec<(String, String)>,
    pub variation_strength: f32,
    pub renoise_strength: f32,
    pub eta: f32,
    pub seed: u64,
    pub mix_weight: f64,
    /// A typed mix expression (over latent ids); None: built from the marks and weight.
    pub expression: Option<String>,
    pub from_tag: String,
    pub to_tag: String,
    pub dir_weight: f32,
    /// Mix and direction rescale to √d instead of the parents' norm.
    pub sqrt_d: bool,
    pub size: u32,
    pub cell: u32,
    pub rect: PxRect,
    /// The model's image size (W, H) from the latent's shape.
    pub image: (u32, u32),
    pub steps: u32,
    /// Index into `op.params()`.
    pub param: usize,
    /// Identifies this session's previews to the daemon (a newer one supersedes).
    pub client_id: String,
    /// The newest preview asked for; answers to older ones are dropped.
    pub preview_seq: u64,
    /// The preview shown: its request number, image count and time.
    pub shown: Option<(u64, usize, f64)>,
    pub preview_error: Option<String>,
    pub job: Option<pb::Job>,
    /// A mouse drag in progress: its first pixel.
    pub drag: Option<(u32, u32)>,
}

impl Default for EditState {
    fn default() -> Self {
        Self {
            op: Op::Variation,
            latent: None,
            tags: vec![],
            others: vec![],
            variation_strength: 0.3,
            renoise_strength: 0.5,
            eta: 1.0,
            seed: 0,
            mix_weight: 0.8,
            sqrt_d: false,
            expression: None,
            from_tag: String::new(),
            to_tag: String::new(),
            dir_weight: 1.0,
            size: 3,
            cell: 4,
            rect: PxRect {
                x: 8,
                y: 8,
                w: 16,
                h: 16,
            },
            image: (32, 32),
            steps: COMMIT_STEPS,
            param: 0,
            client_id: format!(
                "ddim-tui-{}-{}",
                std::process::id(),
                crate::format::now_ms()
            ),
            preview_seq: 0,
            shown: None,
            preview_error: None,
            job: None,
            drag: None,
        }
    }
}

fn round2(v: f32) -> f32 {
    (v * 100.0).round() / 100.0
}

impl EditState {
    /// Opens on `l` with the other marked latents (id, name, tags); keeps the session's
    /// client id and the parameters chosen so far.
    pub fn open(&mut self, l: &pb::Latent, others: Vec<(String, String, Vec<String>)>) {
        self.latent = Some((l.id.clone(), l.name.clone()));
        self.tags = l.tags.clone();
        if let [_, h, w] = l.shape[..] {
            self.image = (w.max(1), h.max(1));
        }
        self.from_tag = l.tags.first().cloned().unwrap_or_default();
        self.to_tag = others
            .iter()
            .flat_map(|o| o.2.iter())
            .find(|t| **t != self.from_tag)
            .cloned()
            .unwrap_or_default();
        self.mix_weight = if others.len() == 1 { 0.5 } else { 0.8 };
        self.others = others.into_iter().map(|(i, n, _)| (i, n)).collect();
        self.expression = None;
        self.job = None;
        self.shown = None;
        self.preview_error = None;
        self.clamp_rect();
    }

    pub fn current_param(&self) -> Param {
        let ps = self.op.params();
        ps[self.param.min(ps.len() - 1)]
    }

    pub fn set_op(&mut self, op: Op) {
        self.op = op;
        self.param = 0;
        self.shown = None;
        self.preview_error = None;
    }

    /// The parameter's value as shown (and as the prompt starts).
    pub fn value(&self, p: Param) -> String {
        match p {
            Param::Strength => format!("{:.2}", self.strength()),
            Param::Seed => self.seed.to_string(),
            Param::Eta => format!("{:.2}", self.eta),
            Param::Weight if self.op == Op::Mix => format!("{:.2}", self.mix_weight),
            Param::Weight => format!("{:.2}", self.dir_weight),
            Param::Expression => self.mix_expression().unwrap_or_else(|e| e),
            Param::FromTag => self.from_tag.clone(),
            Param::ToTag => self.to_tag.clone(),
            Param::Size => self.size.to_string(),
            Param::Cell => {
                format!(
                    "{} (row {}, col {})",
                    self.cell,
                    self.cell / self.size,
                    self.cell % self.size
                )
            }
            Param::Radius => self.radius().name().to_string(),
            Param::Steps => self.steps.to_string(),
        }
    }

    fn radius(&self) -> crate::cli::RadiusArg {
        if self.sqrt_d {
            crate::cli::RadiusArg::SqrtD
        } else {
            crate::cli::RadiusArg::Parents
        }
    }

    fn strength(&self) -> f32 {
        if self.op == Op::Renoise {
            self.renoise_strength
        } else {
            self.variation_strength
        }
    }

    /// `←→` / `+ -` on a parameter: one step up or down (clamped); says whether it changed.
    pub fn nudge(&mut self, p: Param, up: bool) -> bool {
        let d = if up { 1.0 } else { -1.0 };
        let before = self.clone();
        match p {
            Param::Strength => {
                let s = if self.op == Op::Renoise {
                    &mut self.renoise_strength
                } else {
                    &mut self.variation_strength
                };
                *s = round2((*s + 0.05 * d).clamp(0.0, 1.0));
            }
            Param::Seed => {
                self.seed = if up {
                    self.seed + 1
                } else {
                    self.seed.saturating_sub(1)
                }
            }
            Param::Eta => self.eta = round2((self.eta + 0.1 * d).clamp(0.0, 1.0)),
            Param::Weight if self.op == Op::Mix => {
                self.mix_weight = ((self.mix_weight + 0.1 * f64::from(d)) * 100.0).round() / 100.0;
                self.expression = None;
            }
            Param::Weight => self.dir_weight = round2(self.dir_weight + 0.1 * d),
            Param::Size => {
                self.size = if up { self.size + 1 } else { self.size - 1 }.clamp(2, 9);
                self.cell = self.cell.min(self.size * self.size - 1);
            }
            Param::Cell => {
                let n = self.size * self.size;
                self.cell = if up {
                    (self.cell + 1) % n
                } else {
                    (self.cell + n - 1) % n
                };
            }
            Param::Radius => self.sqrt_d = !self.sqrt_d,
            Param::Steps => {
                let i = STEP_LADDER
                    .iter()
                    .position(|s| *s >= self.steps)
                    .unwrap_or(0);
                self.steps = if up {
                    STEP_LADDER
                        [(i + usize::from(STEP_LADDER[i] == self.steps)).min(STEP_LADDER.len() - 1)]
                } else {
                    STEP_LADDER[i.saturating_sub(1)]
                };
            }
            Param::Expression | Param::FromTag | Param::ToTag => {}
        }
        *self != before
    }

    /// A typed value; the error names the parameter and what it takes.
    pub fn set(&mut self, p: Param, text: &str) -> Result<(), String> {
        let text = text.trim();
        let unit = |what: &str| -> Result<f32, String> {
            match text.parse::<f32>() {
                Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
                _ => Err(format!("{what} is a number from 0 to 1, got `{text}`")),
            }
        };
        match p {
            Param::Strength if self.op == Op::Renoise => self.renoise_strength = unit("strength")?,
            Param::Strength => self.variation_strength = unit("strength")?,
            Param::Eta => self.eta = unit("η")?,
            Param::Seed => {
                self.seed = text
                    .parse()
                    .map_err(|_| format!("seed is a whole number ≥ 0, got `{text}`"))?
            }
            Param::Weight => {
                let w: f64 = text
                    .parse()
                    .ok()
                    .filter(|w: &f64| w.is_finite())
                    .ok_or_else(|| format!("weight is a number, got `{text}`"))?;
                if self.op == Op::Mix {
                    self.mix_weight = w;
                    self.expression = None;
                } else {
                    self.dir_weight = w as f32;
                }
            }
            Param::Expression => {
                parse_mix(text).map_err(|e| format!("mix: {e}"))?;
                self.expression = Some(text.to_string());
            }
            Param::FromTag => self.from_tag = text.trim_start_matches('#').to_string(),
            Param::ToTag => self.to_tag = text.trim_start_matches('#').to_string(),
            Param::Size => match text.parse::<u32>() {
                Ok(n) if (2..=9).contains(&n) => {
                    self.size = n;
                    self.cell = self.cell.min(n * n - 1);
                }
                _ => {
                    return Err(format!(
                        "grid N is a whole number from 2 to 9, got `{text}`"
                    ))
                }
            },
            Param::Cell => match text.split_whitespace().next().unwrap_or("").parse::<u32>() {
                Ok(c) if c < self.size * self.size => self.cell = c,
                _ => {
                    return Err(format!(
                        "the cell is a number from 0 to {} (row·N + column), got `{text}`",
                        self.size * self.size - 1
                    ))
                }
            },
            Param::Radius => match text {
                "parents" => self.sqrt_d = false,
                "sqrt-d" | "√d" => self.sqrt_d = true,
                _ => return Err(format!("radius is parents or sqrt-d, got `{text}`")),
            },
            Param::Steps => match text.parse::<u32>() {
                Ok(s) if s > 0 => self.steps = s,
                _ => return Err(format!("S is a whole number ≥ 1, got `{text}`")),
            },
        }
        Ok(())
    }

    /// The mix as terms and the expression they read as: typed (over latent ids), or
    /// built from the marks — one other: `(1−w)·a + w·b`; two or more: `a + w·(b − c)`.
    pub fn mix_terms(&self) -> Result<(Vec<(String, f64)>, String), String> {
        if let Some(e) = &self.expression {
            return Ok((parse_mix(e).map_err(|e| format!("mix: {e}"))?, e.clone()));
        }
        let (a, _) = self.latent.as_ref().ok_or("no latent")?;
        let w = self.mix_weight;
        match &self.others[..] {
            [] => Err("mark more latents (space) in the library, or type an expression".into()),
            [(b, _)] => {
                let terms = vec![(a.clone(), 1.0 - w), (b.clone(), w)];
                let expr = format_mix(&terms);
                Ok((terms, expr))
            }
            [(b, _), (c, _), ..] => Ok((
                vec![(a.clone(), 1.0), (b.clone(), w), (c.clone(), -w)],
                format!("{a} + {w}*({b} - {c})"),
            )),
        }
    }

    pub fn mix_expression(&self) -> Result<String, String> {
        self.mix_terms().map(|t| t.1)
    }

    fn out(&self, steps: u32, name: &str) -> Option<pb::EditOutput> {
        Some(pb::EditOutput {
            preview_steps: steps,
            spacing: 0,
            name: name.to_string(),
            tags: vec![],
        })
    }

    fn sampler(&self, steps: u32) -> Option<pb::SamplerOptions> {
        Some(pb::SamplerOptions {
            steps,
            eta: self.eta,
            spacing: 0,
            sigma_hat: false,
            solver: 0,
        })
    }

    /// The job for the current operation, at `steps` (the commit S); the error says what
    /// is missing.
    pub fn spec(&self, steps: u32) -> Result<Kind, String> {
        let (id, _) = self
            .latent
            .clone()
            .ok_or("choose a latent in the library and press E")?;
        Ok(match self.op {
            Op::Variation => Kind::Variation(pb::VariationJob {
                latent_id: id,
                strength: self.variation_strength,
                seed: self.seed,
                count: 1,
                out: self.out(steps, ""),
            }),
            Op::Mix => {
                let (terms, expr) = self.mix_terms()?;
                Kind::Mix(pb::MixJob {
                    terms: terms
                        .into_iter()
                        .map(|(latent_id, weight)| pb::MixTerm { latent_id, weight })
                        .collect(),
                    expression: expr,
                    out: self.out(steps, ""),
                    radius: self.radius().pb(),
                })
            }
            Op::Direction => {
                if self.from_tag.is_empty() || self.to_tag.is_empty() {
                    return Err("direction: choose the from and to tags (=)".into());
                }
                Kind::Direction(pb::DirectionJob {
                    latent_id: id,
                    from_tag: self.from_tag.clone(),
                    to_tag: self.to_tag.clone(),
                    weights: vec![self.dir_weight],
                    out: self.out(steps, ""),
                    radius: self.radius().pb(),
                })
            }
            Op::Renoise => Kind::Renoise(pb::RenoiseJob {
                input: Some(pb::renoise_job::Input::LatentId(id)),
                image_name: String::new(),
                strength: self.renoise_strength,
                sampler: self.sampler(steps),
                seed: self.seed,
                count: 1,
                perturb: 0.0,
                out: self.out(steps, ""),
            }),
            Op::Inpaint => Kind::Inpaint(pb::InpaintJob {
                input: Some(pb::inpaint_job::Input::LatentId(id)),
                image_name: String::new(),
                rects: vec![pb::Rect {
                    x: self.rect.x,
                    y: self.rect.y,
                    width: self.rect.w,
                    height: self.rect.h,
                }],
                sampler: self.sampler(steps),
                seed: self.seed,
                count: 1,
                out: self.out(steps, ""),
            }),
            Op::Grid => {
                if self.others.len() < 3 {
                    return Err(format!(
                        "grid: mark three more latents (space) for the corners ({} marked)",
                        self.others.len()
                    ));
                }
                let mut corners = vec![id];
                corners.extend(self.others.iter().take(3).map(|o| o.0.clone()));
                Kind::Grid(pb::GridJob {
                    corners,
                    size: self.size,
                    save: vec![self.cell],
                    preview_steps: steps,
                    out: self.out(steps, ""),
                })
            }
        })
    }

    fn clamp_rect(&mut self) {
        let (iw, ih) = self.image;
        let r = &mut self.rect;
        r.w = r.w.clamp(1, iw);
        r.h = r.h.clamp(1, ih);
        r.x = r.x.min(iw - r.w);
        r.y = r.y.min(ih - r.h);
    }

    /// Moves the rectangle by (dx, dy) pixels (kept inside the image).
    pub fn move_rect(&mut self, dx: i32, dy: i32) {
        self.rect.x = self.rect.x.saturating_add_signed(dx);
        self.rect.y = self.rect.y.saturating_add_signed(dy);
        self.clamp_rect();
    }

    /// Grows or shrinks the rectangle by (dw, dh) pixels (at least 1×1, inside the image).
    pub fn resize_rect(&mut self, dw: i32, dh: i32) {
        self.rect.w = self.rect.w.saturating_add_signed(dw).max(1);
        self.rect.h = self.rect.h.saturating_add_signed(dh).max(1);
        self.clamp_rect();
    }

    /// The rectangle spanned by two pixels (both inside it).
    pub fn span_rect(&mut self, a: (u32, u32), b: (u32, u32)) {
        self.rect = PxRect {
            x: a.0.min(b.0),
            y: a.1.min(b.1),
            w: a.0.abs_diff(b.0) + 1,
            h: a.1.abs_diff(b.1) + 1,
        };
        self.clamp_rect();
    }
}

/// Opens the Edit screen on the library's selected latent (marked ones feed mix, grid
/// and the direction's tags).
pub fn open(app: &mut App) -> Vec<Request> {
    let Some(l) = app.library.selected_latent().cloned() else {
        app.error("no latent selected");
        return vec![];
    };
    let others = app
        .library
        .marked
        .iter()
        .filter(|m| **m != l.id)
        .map(|m| {
            let tags = app
                .library
                .latent(m)
                .map(|x| x.tags.clone())
                .unwrap_or_default();
            (m.clone(), app.library.name_of(m), tags)
        })
        .collect();
    app.edit.open(&l, others);
    app.go(crate::app::Screen::Edit);
    let mut out = vec![];
    if !app.images.contains_key(&format!("preview:{}", l.id)) {
        out.push(Request::Preview { id: l.id.clone() });
    }
    out.extend(preview(app));
    out
}

/// Asks for a preview of the current parameters (a newer one supersedes it).
pub fn preview(app: &mut App) -> Vec<Request> {
    match app.edit.spec(PREVIEW_STEPS) {
        Ok(spec) => {
            app.edit.preview_seq += 1;
            app.edit.preview_error = None;
            vec![Request::PreviewEdit {
                seq: app.edit.preview_seq,
                spec,
                steps: PREVIEW_STEPS,
                client_id: app.edit.client_id.clone(),
            }]
        }
        Err(e) => {
            app.edit.preview_error = Some(e);
            vec![]
        }
    }
}

fn image_key(seq: u64, i: usize) -> String {
    format!("edit:{seq}:{i}")
}

/// A preview's answer: shown if it is the newest asked for; older ones (superseded, or
/// overtaken) are dropped silently.
pub fn preview_arrived(app: &mut App, seq: u64, result: Result<pb::PreviewEditResponse, String>) {
    if seq != app.edit.preview_seq {
        return;
    }
    match result {
        Ok(r) => {
            if let Some((old, n, _)) = app.edit.shown {
                for i in 0..n {
                    app.images.remove(&image_key(old, i));
                    app.graphics.forget(&image_key(old, i));
                }
            }
            let mut n = 0;
            for img in &r.images {
                if app.store_image(image_key(seq, n), &img.png) {
                    n += 1;
                }
            }
            app.edit.shown = Some((seq, n, r.seconds));
            app.edit.preview_error = None;
        }
        Err(e) => app.edit.preview_error = Some(e),
    }
}

/// A typed parameter value.
pub fn param_typed(app: &mut App, p: Param, text: &str) -> Vec<Request> {
    match app.edit.set(p, text) {
        Ok(()) if p == Param::Steps => vec![],
        Ok(()) => preview(app),
        Err(e) => {
            app.error(e);
            vec![]
        }
    }
}

fn prompt_param(app: &mut App) {
    let p = app.edit.current_param();
    let title = match p {
        Param::Expression => "mix: an expression over latent ids, e.g. lat-1 + 0.8*(lat-2 - lat-3)",
        Param::FromTag | Param::ToTag => "a tag (the direction is mean(to) − mean(from))",
        _ => p.label(),
    };
    let value = match p {
        Param::Cell => app.edit.cell.to_string(),
        _ => app.edit.value(p),
    };
    app.prompt(Prompt::new(title, value), PromptFor::EditParam(p));
}

pub fn handle_key(app: &mut App, key: KeyEvent) -> Vec<Request> {
    let e = &mut app.edit;
    let n = e.op.params().len();
    let shift = key.modifiers.contains(KeyModifiers::SHIFT);
    if e.op == Op::Inpaint {
        let moved = match key.code {
            KeyCode::Left if shift => Some((0, 0, -1, 0)),
            KeyCode::Right if shift => Some((0, 0, 1, 0)),
            KeyCode::Up if shift => Some((0, 0, 0, -1)),
            KeyCode::Down if shift => Some((0, 0, 0, 1)),
            KeyCode::Left | KeyCode::Char('h') => Some((-1, 0, 0, 0)),
            KeyCode::Right | KeyCode::Char('l') => Some((1, 0, 0, 0)),
            KeyCode::Up | KeyCode::Char('k') => Some((0, -1, 0, 0)),
            KeyCode::Down | KeyCode::Char('j') => Some((0, 1, 0, 0)),
            KeyCode::Char('H') => Some((0, 0, -1, 0)),
            KeyCode::Char('L') => Some((0, 0, 1, 0)),
            KeyCode::Char('K') => Some((0, 0, 0, -1)),
            KeyCode::Char('J') => Some((0, 0, 0, 1)),
            _ => None,
        };
        if let Some((dx, dy, dw, dh)) = moved {
            let before = e.rect;
            e.move_rect(dx, dy);
            e.resize_rect(dw, dh);
            return if e.rect != before {
                preview(app)
            } else {
                vec![]
            };
        }
    }
    match key.code {
        KeyCode::Char('m') => {
            e.set_op(e.op.shift(1));
            preview(app)
        }
        KeyCode::Char('M') => {
            e.set_op(e.op.shift(-1));
            preview(app)
        }
        KeyCode::Down | KeyCode::Char('j') | KeyCode::Char(']') => {
            e.param = (e.param + 1) % n;
            vec![]
        }
        KeyCode::Up | KeyCode::Char('k') | KeyCode::Char('[') => {
            e.param = (e.param + n - 1) % n;
            vec![]
        }
        KeyCode::Right | KeyCode::Left | KeyCode::Char('l' | 'h' | '+' | '-') => {
            let up = matches!(key.code, KeyCode::Right | KeyCode::Char('l' | '+'));
            let p = e.current_param();
            if !p.steps_by_keys() {
                prompt_param(app);
                return vec![];
            }
            if e.nudge(p, up) && p != Param::Steps {
                preview(app)
            } else {
                vec![]
            }
        }
        KeyCode::Char('=') => {
            prompt_param(app);
            vec![]
        }
        KeyCode::Char('p') | KeyCode::F(5) => preview(app),
        KeyCode::Enter => commit(app),
        _ => vec![],
    }
}

fn commit(app: &mut App) -> Vec<Request> {
    match app.edit.spec(app.edit.steps) {
        Ok(spec) => {
            app.info(format!(
                "committing the {} at S={}…",
                app.edit.op.name(),
                app.edit.steps
            ));
            vec![Request::Submit {
                spec,
                purpose: Purpose::Edit,
            }]
        }
        Err(e) => {
            app.error(e);
            vec![]
        }
    }
}

/// A finished commit: names the new latents.
pub fn job_done(app: &mut App, job: &pb::Job) {
    let ids = job.result.as_ref().map_or(&[][..], |r| &r.latent_ids[..]);
    if job.state == pb::JobState::Done as i32 {
        let names: Vec<&str> = ids.iter().map(|i| short_id(i)).collect();
        app.info(format!(
            "made {} — q back to the library to see it",
            if names.is_empty() {
                "nothing".to_string()
            } else {
                names.join(", ")
            }
        ));
    }
}

/// The screen's parts: operations line, parameters, and the two image tiles.
struct Areas {
    tabs: Rect,
    params: Rect,
    original: Rect,
    preview: Rect,
}

fn areas(area: Rect) -> Areas {
    let [tabs, rest] = Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(area);
    let [params, images] =
        Layout::horizontal([Constraint::Length(38), Constraint::Min(0)]).areas(rest);
    let [original, preview] = super::two_tiles(images);
    Areas {
        tabs,
        params,
        original,
        preview,
    }
}

/// Where the image of a tile is drawn: inside the border, above the caption.
fn tile_image_area(tile: Rect) -> Rect {
    let inner = Block::bordered().inner(tile);
    Rect::new(
        inner.x,
        inner.y,
        inner.width,
        inner.height.saturating_sub(1),
    )
}

/// The original's pixel under a terminal cell, if the cell is on the image: the image is
/// drawn scaled by a whole factor, centred in its area (as `Graphics` draws it).
fn pixel_at(app: &App, col: u16, row: u16) -> Option<(u32, u32)> {
    let area = tile_image_area(areas(app.body()).original);
    let (fw, fh) = app.graphics.cell_px();
    let (iw, ih) = app.edit.image;
    let (pw, ph) = (u32::from(area.width) * fw, u32::from(area.height) * fh);
    let scale = (pw as f64 / iw as f64).min(ph as f64 / ih as f64);
    let scale = if scale >= 1.0 { scale.floor() } else { scale };
    if scale <= 0.0 {
        return None;
    }
    let (dw, dh) = (iw as f64 * scale, ih as f64 * scale);
    let cells_w = (dw / fw as f64).ceil();
    let cells_h = (dh / fh as f64).ceil();
    let x0 = f64::from(area.x) + ((f64::from(area.width) - cells_w) / 2.0).floor().max(0.0);
    let y0 = f64::from(area.y) + ((f64::from(area.height) - cells_h) / 2.0).floor().max(0.0);
    let px = ((f64::from(col) - x0 + 0.5) * fw as f64 / scale).floor();
    let py = ((f64::from(row) - y0 + 0.5) * fh as f64 / scale).floor();
    (px >= 0.0 && py >= 0.0 && px < iw as f64 && py < ih as f64).then_some((px as u32, py as u32))
}

/// Mouse on the inpaint screen: press and drag on the original draws the rectangle.
pub fn handle_mouse(app: &mut App, m: MouseEvent) -> Vec<Request> {
    if app.edit.op != Op::Inpaint || app.modal.is_some() {
        return vec![];
    }
    let at = pixel_at(app, m.column, m.row);
    match m.kind {
        MouseEventKind::Down(MouseButton::Left) => {
            if let Some(p) = at {
                app.edit.drag = Some(p);
                app.edit.span_rect(p, p);
            }
            vec![]
        }
        MouseEventKind::Drag(MouseButton::Left) => {
            if let (Some(a), Some(b)) = (app.edit.drag, at) {
                app.edit.span_rect(a, b);
            }
            vec![]
        }
        MouseEventKind::Up(MouseButton::Left) => {
            if let Some(a) = app.edit.drag.take() {
                if let Some(b) = at {
                    app.edit.span_rect(a, b);
                }
                return preview(app);
            }
            vec![]
        }
        _ => vec![],
    }
}

/// The original with the rectangle tinted (so it shows on every image protocol).
fn with_rect(img: &DynamicImage, r: PxRect) -> DynamicImage {
    let mut rgb = img.to_rgb8();
    let (w, h) = rgb.dimensions();
    for y in r.y..(r.y + r.h).min(h) {
        for x in r.x..(r.x + r.w).min(w) {
            let p = rgb.get_pixel_mut(x, y);
            let edge = x == r.x || y == r.y || x + 1 == r.x + r.w || y + 1 == r.y + r.h;
            let tint: [u8; 3] = if edge { [0, 255, 255] } else { [0, 160, 200] };
            let a = if edge { 0.85 } else { 0.35 };
            for (v, t) in p.0.iter_mut().zip(tint) {
                *v = (f32::from(*v) * (1.0 - a) + f32::from(t) * a) as u8;
            }
        }
    }
    DynamicImage::ImageRgb8(rgb)
}

pub fn render(app: &App, frame: &mut Frame, area: Rect) {
    let e = &app.edit;
    let a = areas(area);
    let mut tabs = vec![Span::styled(" op ", DIM)];
    for op in Op::ALL {
        let style = if op == e.op { SELECTED } else { Style::new() };
        tabs.push(Span::styled(format!(" {} ", op.name()), style));
        tabs.push(Span::raw(" "));
    }
    tabs.push(Span::styled("m/M switch", DIM));
    frame.render_widget(Line::from(tabs), a.tabs);

    let Some((id, name)) = &e.latent else {
        frame.render_widget(
            Paragraph::new("Select a latent in the library and press E to edit it.")
                .style(DIM)
                .block(Block::bordered().title(" edit ")),
            a.params,
        );
        return;
    };
    let mut lines = vec![Line::from(vec![
        Span::styled("latent   ", DIM),
        Span::raw(format!("{name} ({})", short_id(id))),
    ])];
    if !e.others.is_empty() {
        let names: Vec<&str> = e.others.iter().map(|o| o.1.as_str()).collect();
        lines.push(Line::from(vec![
            Span::styled("marked   ", DIM),
            Span::raw(crate::format::fit(&names.join(", "), 26)),
        ]));
    }
    lines.push(Line::from(""));
    for (i, p) in e.op.params().iter().enumerate() {
        let style = if i == e.param.min(e.op.params().len() - 1) {
            SELECTED
        } else {
            Style::new()
        };
        let value = e.value(*p);
        let value = if value.is_empty() {
            "—".into()
        } else {
            value
        };
        lines.push(Line::styled(
            format!(" {:<10} {}", p.label(), crate::format::fit(&value, 24)),
            style,
        ));
    }
    if e.op == Op::Inpaint {
        let r = e.rect;
        lines.push(Line::from(vec![
            Span::styled(" rect       ", Style::new()),
            Span::raw(format!("{},{} {}×{}", r.x, r.y, r.w, r.h)),
        ]));
        lines.push(Line::styled(" hjkl move · HJKL resize · mouse drag", DIM));
    }
    lines.push(Line::from(""));
    match (&e.preview_error, e.shown) {
        (Some(err), _) => lines.push(Line::styled(err.clone(), Style::new().fg(ERROR))),
        (None, Some((seq, _, secs))) if seq == e.preview_seq => lines.push(Line::styled(
            format!("preview S={PREVIEW_STEPS} · {secs:.2}s"),
            DIM,
        )),
        (None, _) => lines.push(Line::styled(format!("preview S={PREVIEW_STEPS} …"), DIM)),
    }
    if let Some(j) = &e.job {
        lines.push(super::job_line(app, j));
    }
    lines.push(Line::styled(
        format!("Enter: commit at S={}", e.steps),
        Style::new().fg(ACCENT),
    ));
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(Block::bordered().title(format!(" edit · {} ", e.op.name()))),
        a.params,
    );

    let key = format!("preview:{id}");
    if e.op == Op::Inpaint {
        // The original with the rectangle on it, drawn under its own key.
        let tile = a.original;
        let block = Block::bordered().border_style(Style::new().fg(ACCENT));
        frame.render_widget(block, tile);
        let img_area = tile_image_area(tile);
        let r = e.rect;
        match app.images.get(&key) {
            Some(img) => {
                let k = format!("{key}:rect:{},{},{},{}", r.x, r.y, r.w, r.h);
                app.graphics.render(frame, img_area, &k, &with_rect(img, r));
            }
            None => frame.render_widget(Paragraph::new("…").style(DIM).centered(), img_area),
        }
        let cap = Rect::new(img_area.x, img_area.bottom(), img_area.width, 1);
        frame.render_widget(
            Line::styled("original · region", Style::new().fg(ACCENT)).centered(),
            cap,
        );
    } else {
        super::image_tile(app, frame, a.original, &key, "original", false);
    }
    match e.shown {
        Some((seq, n, _)) if e.op == Op::Grid && n > 1 => {
            render_grid(app, frame, a.preview, seq, n)
        }
        Some((seq, n, _)) if n > 0 => {
            super::image_tile(app, frame, a.preview, &image_key(seq, 0), "preview", true)
        }
        _ => super::image_tile(app, frame, a.preview, "edit:none", "preview", true),
    }
}

fn render_grid(app: &App, frame: &mut Frame, area: Rect, seq: u64, n: usize) {
    let e = &app.edit;
    let side = (n as f64).sqrt().round().max(1.0) as u16;
    let (w, h) = (area.width / side, area.height / side);
    for i in 0..n as u16 {
        let (r, c) = (i / side, i % side);
        let tile = Rect::new(area.x + c * w, area.y + r * h, w, h);
        let chosen = u32::from(i) == e.cell;
        super::image_tile(
            app,
            frame,
            tile,
            &image_key(seq, i as usize),
            &if chosen {
                format!("[{i}]")
            } else {
                i.to_string()
            },
            chosen,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> EditState {
        let mut e = EditState::default();
        let l = pb::Latent {
            id: "lat-1".into(),
            name: "shoe".into(),
            tags: vec!["sneaker".into()],
            shape: vec![1, 32, 32],
            ..Default::default()
        };
        e.open(
            &l,
            vec![
                ("lat-2".into(), "b".into(), vec!["ankle-boot".into()]),
                ("lat-3".into(), "c".into(), vec![]),
            ],
        );
        e
    }

    #[test]
    fn defaults_and_nudges_stay_in_range() {
        let mut e = state();
        assert_eq!(e.value(Param::Strength), "0.30");
        for _ in 0..30 {
            e.nudge(Param::Strength, true);
        }
        assert_eq!(e.variation_strength, 1.0);
        assert!(!e.nudge(Param::Strength, true));
        e.set_op(Op::Renoise);
        assert_eq!((e.renoise_strength, e.eta), (0.5, 1.0));
        e.nudge(Param::Steps, true);
        assert_eq!(e.steps, 100);
        e.nudge(Param::Steps, false);
        e.nudge(Param::Steps, false);
        assert_eq!(e.steps, 20);
        assert!(e.set(Param::Eta, "2").is_err());
        assert!(e.set(Param::Strength, "0.25").is_ok());
        assert_eq!(e.renoise_strength, 0.25);
    }

    #[test]
    fn marks_feed_mix_direction_and_grid() {
        let mut e = state();
        e.set_op(Op::Mix);
        assert_eq!(e.mix_expression().unwrap(), "lat-1 + 0.8*(lat-2 - lat-3)");
        let Kind::Mix(m) = e.spec(10).unwrap() else {
            panic!()
        };
        let w: Vec<f64> = m.terms.iter().map(|t| t.weight).collect();
        assert_eq!(w, [1.0, 0.8, -0.8]);
        assert_eq!(m.radius, pb::Radius::Parents as i32);
        // The radius is a parameter of mix and direction: ←→ toggles it, typed by name.
        assert!(Op::Mix.params().contains(&Param::Radius));
        assert!(Op::Direction.params().contains(&Param::Radius));
        assert!(e.nudge(Param::Radius, true));
        assert_eq!(e.value(Param::Radius), "sqrt-d");
        let Kind::Mix(m) = e.spec(10).unwrap() else {
            panic!()
        };
        assert_eq!(m.radius, pb::Radius::SqrtD as i32);
        assert!(e.set(Param::Radius, "parents").is_ok());
        assert_eq!(e.value(Param::Radius), "parents");
        assert!(e.set(Param::Radius, "unit").unwrap_err().contains("radius"));
        assert_eq!(
            (e.from_tag.as_str(), e.to_tag.as_str()),
            ("sneaker", "ankle-boot")
        );
        e.set_op(Op::Grid);
        assert!(e.spec(10).unwrap_err().contains("three more"));
        e.others.push(("lat-4".into(), "d".into()));
        let Kind::Grid(g) = e.spec(50).unwrap() else {
            panic!()
        };
        assert_eq!((g.corners.len(), g.size, g.save.clone()), (4, 3, vec![4]));
    }

    #[test]
    fn the_rectangle_stays_inside_the_image() {
        let mut e = state();
        e.move_rect(100, -100);
        assert_eq!((e.rect.x, e.rect.y), (16, 0));
        e.resize_rect(40, -40);
        assert_eq!((e.rect.x, e.rect.w, e.rect.h), (0, 32, 1));
        e.span_rect((30, 5), (2, 9));
        assert_eq!(
            e.rect,
            PxRect {
                x: 2,
                y: 5,
                w: 29,
                h: 5
            }
        );
    }
}
