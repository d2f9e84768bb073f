//! One module per screen: each has `handle_key(&mut App, key) -> Vec<Request>` and
//! `render(&App, frame, area)`. Shared here: key tables (for `?` and the docs), prompt
//! answers, and the image tile.

pub mod decode;
pub mod edit;
pub mod eval;
pub mod interpolate;
pub mod jobs;
pub mod library;
pub mod reconstruct;

use std::path::PathBuf;

use ddim_proto::v1::{self as pb, job_spec::Kind};
use ratatui::{
    layout::{Constraint, Layout, Rect},
    style::Style,
    text::Line,
    widgets::{Block, Paragraph},
    Frame,
};

use crate::app::{App, Screen};
use crate::cli::parse_steps;
use crate::prompt::Prompt;
use crate::theme::{ACCENT, DIM};
use crate::worker::{Purpose, Request};

/// Keys that work everywhere.
pub const GLOBAL_KEYS: &[(&str, &str)] = &[
    ("1-7 / Tab", "switch screen"),
    ("?", "keys of this screen"),
    ("q / Esc", "back (quit from the library)"),
    ("Ctrl-c", "quit"),
];

/// The keys of a screen, as `?` shows them.
pub fn keys(screen: Screen) -> &'static [(&'static str, &'static str)] {
    match screen {
        Screen::Library => &[
            ("↑↓ / j k", "move"),
            ("PgUp PgDn g G", "page, first, last"),
            ("/", "filter: name, tag:T #T, origin:O"),
            ("s", "sort"),
            ("space", "mark"),
            ("r", "reconstruct"),
            ("d", "decode at several S"),
            ("i", "interpolate two marked"),
            ("E", "edit (marked: mix, grid, tags)"),
            ("p / P", "go to the first / last parent"),
            ("R", "re-encode for the daemon's model (asks)"),
            ("r (marked)", "reconstruct all marked, one batch"),
            ("e", "encode images / import .npy"),
            ("n", "sample new latents"),
            ("c", "rename"),
            ("t", "tag (+add -remove)"),
            ("o", "export preview PNG / x_T .npy"),
            ("X / Del", "delete (asks)"),
            ("F5", "reload"),
        ],
        Screen::Jobs => &[
            ("↑↓ / j k", "move"),
            ("Enter", "open results"),
            ("c", "cancel job"),
            ("F5", "reload"),
        ],
        Screen::Reconstruct => &[
            ("Enter", "queue reconstruction"),
            ("s", "step counts"),
            ("f", "reconstruct a file"),
            ("←→ / h l", "choose S"),
            ("o", "save image at S as PNG"),
        ],
        Screen::Interpolate => &[
            ("Enter", "queue interpolation"),
            ("←→ / h l", "step through frames"),
            ("+ -", "more, fewer frames"),
            ("f", "number of frames"),
            ("m", "slerp / lerp"),
            ("s", "steps S"),
            ("w", "save frame as latent"),
            ("o", "save frame as PNG"),
        ],
        Screen::Edit => &[
            ("m / M", "next / previous operation"),
            ("↑↓ / j k", "choose a parameter"),
            ("←→ / + -", "change it"),
            ("=", "type its value"),
            ("hjkl / arrows", "inpaint: move the rectangle"),
            ("HJKL / S-arrows", "inpaint: resize it"),
            ("mouse drag", "inpaint: draw it"),
            ("p", "preview again"),
            ("Enter", "commit at S (a job)"),
        ],
        Screen::Decode => &[
            ("Enter", "queue decodes"),
            ("s", "step counts"),
            ("e", "η values (several: an S × η grid)"),
            ("←→ / h l", "choose S"),
            ("↑↓ / k j", "choose η"),
            ("o", "save image as PNG"),
        ],
        Screen::Eval => &[
            ("←→↑↓ / hjkl", "move the cell cursor"),
            ("J K / PgDn PgUp", "next / previous eval job"),
            ("Enter", "queue an eval job (the form)"),
            ("s", "step counts S (rows)"),
            ("e", "η values (columns)"),
            ("t", "σ̂ column on / off"),
            ("n", "samples N per cell"),
            ("p", "spacing"),
            ("v", "solver (ddim / dpmpp-2m)"),
            ("r", "seed"),
            ("o", "save the cell's samples as PNG"),
            ("F5", "reload"),
        ],
    }
}

/// The state a screen shows while it waits.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Loading {
    #[default]
    Idle,
    Fetching,
    Loaded,
    Error(String),
}

/// What a prompt's answer is for.
#[derive(Debug, Clone, PartialEq)]
pub enum PromptFor {
    Filter {
        previous: String,
    },
    Encode,
    /// The steps S for encoding these files (asked after the paths).
    EncodeSteps(Vec<std::path::PathBuf>),
    Sample,
    Rename(String),
    Tag(String),
    ExportPreview(String),
    SavePng(Vec<u8>),
    ReconFile,
    ReconSteps,
    DecodeSteps,
    DecodeEtas,
    InterpFrames,
    InterpSteps,
    /// A value for one of the Edit screen's parameters.
    EditParam(edit::Param),
    /// A field of the Eval screen's form.
    Eval(eval::Field),
}

/// The encode prompt's default S (as `ddim encode`'s).
pub const ENCODE_STEPS: u32 = 100;

/// Acts on a prompt's answer.
pub fn submit_prompt(app: &mut App, purpose: PromptFor, text: String) -> Vec<Request> {
    let text = text.trim().to_string();
    match purpose {
        PromptFor::Filter { .. } => library::filter_typed(app, &text),
        PromptFor::Encode => {
            let paths: Vec<PathBuf> = text.split_whitespace().map(expand_tilde).collect();
            if paths.is_empty() {
                return vec![];
            }
            if paths.iter().all(|p| crate::worker::is_npy(p)) {
                // x_T already: imported, nothing to choose.
                return vec![Request::Encode {
                    paths,
                    steps: ENCODE_STEPS,
                }];
            }
            app.prompt(
                Prompt::new(
                    "encode: steps S of the inversion (more is closer, slower)",
                    ENCODE_STEPS.to_string(),
                ),
                PromptFor::EncodeSteps(paths),
            );
            vec![]
        }
        PromptFor::EncodeSteps(paths) => match text.parse::<u32>() {
            Ok(steps) if steps > 0 => vec![Request::Encode { paths, steps }],
            _ => {
                app.error(format!("encode S must be a whole number ≥ 1, got `{text}`"));
                vec![]
            }
        },
        PromptFor::Sample => match parse_sample(&text) {
            Ok(spec) => vec![Request::Submit {
                spec,
                purpose: Purpose::Library,
            }],
            Err(e) => {
                app.error(e);
                vec![]
            }
        },
        PromptFor::Rename(id) if !text.is_empty() => vec![Request::Rename { id, name: text }],
        PromptFor::Tag(id) => {
            let (mut add, mut remove) = (vec![], vec![]);
            for w in text.split_whitespace() {
                match w.strip_prefix('-') {
                    Some(t) => remove.push(t.to_string()),
                    None => add.push(w.trim_start_matches('+').to_string()),
                }
            }
            vec![Request::Tag { id, add, remove }]
        }
        PromptFor::ExportPreview(id) if !text.is_empty() => vec![Request::ExportPreview {
            id,
            path: expand_tilde(&text),
        }],
        PromptFor::SavePng(png) if !text.is_empty() => vec![Request::SavePng {
            png,
            path: expand_tilde(&text),
        }],
        PromptFor::ReconFile if !text.is_empty() => {
            app.recon.source = Some(reconstruct::Source::File(expand_tilde(&text)));
            app.recon.job = None;
            vec![]
        }
        PromptFor::ReconSteps => steps_into(app, &text, |a, s| a.recon.steps = s),
        PromptFor::DecodeSteps => steps_into(app, &text, |a, s| a.decode.steps = s),
        PromptFor::DecodeEtas => {
            match crate::format::parse_etas(&text) {
                Ok(e) => app.decode.etas = e,
                Err(e) => app.error(e),
            }
            vec![]
        }
        PromptFor::InterpSteps => steps_into(app, &text, |a, s| a.interp.steps = s[0]),
        PromptFor::InterpFrames => {
            match text.parse::<u32>() {
                Ok(n) if (2..=64).contains(&n) => app.interp.frames = n,
                _ => app.error("frames must be a whole number from 2 to 64"),
            }
            vec![]
        }
        PromptFor::EditParam(p) => edit::param_typed(app, p, &text),
        PromptFor::Eval(f) => eval::field_typed(app, f, &text),
        _ => vec![],
    }
}

fn steps_into(app: &mut App, text: &str, set: impl FnOnce(&mut App, Vec<u32>)) -> Vec<Request> {
    match parse_steps(text) {
        Ok(s) => set(app, s.0),
        Err(e) => app.error(format!("step counts: {e}")),
    }
    vec![]
}

/// A save dialog offering `file` in the directory `ddim` was started in, as an absolute
/// path (so it is clear where the file goes).
pub fn save_prompt(title: &str, file: &str) -> Prompt {
    Prompt::new(title, absolute(file).display().to_string()).with_paths()
}

/// `file` under the current directory (its real path when it can be resolved).
pub fn absolute(file: &str) -> PathBuf {
    let dir = std::env::current_dir().unwrap_or_default();
    dir.canonicalize().unwrap_or(dir).join(file)
}

fn expand_tilde(s: &str) -> PathBuf {
    match (s.strip_prefix("~/"), dirs::home_dir()) {
        (Some(rest), Some(home)) => home.join(rest),
        _ => PathBuf::from(s),
    }
}

/// `count [seed [steps [eta]]]` into a sample job.
pub fn parse_sample(text: &str) -> Result<Kind, String> {
    let w: Vec<&str> = text.split_whitespace().collect();
    let num = |i: usize, def: &str| -> Result<String, String> {
        Ok(w.get(i).copied().unwrap_or(def).to_string())
    };
    let bad = |what: &str| format!("sample: {what} (expected: count [seed [steps [eta]]])");
    let count: u32 = num(0, "4")?
        .parse()
        .map_err(|_| bad("count is not a number"))?;
    let seed: u64 = num(1, "0")?
        .parse()
        .map_err(|_| bad("seed is not a number"))?;
    let steps: u32 = num(2, "50")?
        .parse()
        .map_err(|_| bad("steps is not a number"))?;
    let eta: f32 = num(3, "0")?
        .parse()
        .map_err(|_| bad("eta is not a number"))?;
    if count == 0 || steps == 0 {
        return Err(bad("count and steps must be at least 1"));
    }
    Ok(Kind::Sample(pb::SampleJob {
        count,
        seed,
        sampler: Some(pb::SamplerOptions {
            steps,
            eta,
            spacing: 0,
            sigma_hat: false,
            solver: 0,
        }),
        name_prefix: String::new(),
        tags: vec![],
    }))
}

/// An image with a caption under it; a placeholder when the image is not there yet.
pub fn image_tile(
    app: &App,
    frame: &mut Frame,
    area: Rect,
    key: &str,
    caption: &str,
    selected: bool,
) {
    let style = if selected {
        Style::new().fg(ACCENT)
    } else {
        DIM
    };
    let block = Block::bordered().border_style(style);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if inner.height < 2 {
        return;
    }
    let [img, cap] = Layout::vertical([Constraint::Min(0), Constraint::Length(1)]).areas(inner);
    match app.images.get(key) {
        Some(i) => app.graphics.render(frame, img, key, i),
        None => frame.render_widget(Paragraph::new("…").style(DIM).centered(), img),
    }
    let cap_style = if selected {
        Style::new().fg(ACCENT).bold()
    } else {
        Style::new()
    };
    frame.render_widget(
        Line::styled(fit_caption(caption, cap.width as usize), cap_style).centered(),
        cap,
    );
}

/// A caption that fits `width` cells: as is, else without its `S=` labels (`S=1000` cut
/// to `S=10` would name the wrong S), else cut with an ellipsis.
pub fn fit_caption(caption: &str, width: usize) -> String {
    let w = |s: &str| ratatui::text::Span::raw(s).width();
    if w(caption) <= width {
        return caption.to_string();
    }
    let short = caption.replace("S=", "");
    if w(&short) <= width {
        return short;
    }
    let mut out = String::new();
    for c in short.chars() {
        if w(&out) + 2 > width {
            break;
        }
        out.push(c);
    }
    out.push('…');
    out
}

/// Two tiles of exactly the same size side by side (an odd column is left blank), so
/// two images shown together are scaled alike: `Percentage(50)` twice can differ by a
/// cell, which at integer pixel scaling can mean one image drawn a whole step larger.
pub fn two_tiles(area: Rect) -> [Rect; 2] {
    let w = area.width / 2;
    [
        Rect::new(area.x, area.y, w, area.height),
        Rect::new(area.x + w, area.y, w, area.height),
    ]
}

/// Lays out `n` equal tiles in one row, at most `max_w` cells wide each.
pub fn tile_row(area: Rect, n: usize, max_w: u16) -> Vec<Rect> {
    if n == 0 {
        return vec![];
    }
    let w = (area.width / n as u16).min(max_w).max(1);
    (0..n as u16)
        .filter(|i| (i + 1) * w <= area.width)
        .map(|i| Rect::new(area.x + i * w, area.y, w, area.height))
        .collect()
}

/// `progress 12/50 · eta 3.1s` for a tracked job, or its state.
pub fn job_line(app: &App, job: &pb::Job) -> Line<'static> {
    let state = crate::format::state_name(job.state);
    let mut s = format!("job {} {state}", crate::format::short_id(&job.id));
    if job.state == pb::JobState::Running as i32 || job.state == pb::JobState::Queued as i32 {
        s.push_str(&format!(
            "  {} {}/{}",
            crate::theme::bar(job.step, job.total_steps, 20),
            job.step,
            job.total_steps
        ));
        if let Some(eta) = app.jobs.eta.get(&job.id) {
            s.push_str(&format!("  eta {}", crate::format::duration(*eta)));
        }
    }
    if !job.error.is_empty() {
        s.push_str(&format!("  {}", job.error));
    }
    Line::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_prompt_parses_defaults_and_rejects_junk() {
        let Kind::Sample(s) = parse_sample("8 42").unwrap() else {
            panic!()
        };
        assert_eq!((s.count, s.seed, s.sampler.unwrap().steps), (8, 42, 50));
        assert!(parse_sample("x").is_err());
        assert!(parse_sample("0").is_err());
    }

    #[test]
    fn save_dialogs_offer_an_absolute_path() {
        let p = save_prompt("save", "x.png");
        let path = std::path::Path::new(&p.input);
        assert!(path.is_absolute(), "{}", p.input);
        assert_eq!(path.file_name().unwrap(), "x.png");
        assert_eq!(
            path.parent().unwrap(),
            std::env::current_dir().unwrap().canonicalize().unwrap()
        );
        assert!(p.paths);
    }

    #[test]
    fn tiles_fit_the_row() {
        let t = tile_row(Rect::new(0, 0, 100, 10), 3, 20);
        assert_eq!(t.len(), 3);
        assert_eq!(t[2], Rect::new(40, 0, 20, 10));
        assert_eq!(tile_row(Rect::new(0, 0, 10, 10), 20, 20).len(), 10);
    }

    #[test]
    fn captions_never_name_the_wrong_s() {
        assert_eq!(fit_caption("S=1000", 6), "S=1000");
        assert_eq!(fit_caption("S=1000", 4), "1000");
        assert_eq!(fit_caption("S=10 η=0.5", 8), "10 η=0.5");
        assert_eq!(fit_caption("S=1000 η=0.5", 6), "1000 …");
        assert_eq!(fit_caption("first original", 20), "first original");
    }

    #[test]
    fn two_tiles_are_the_same_size_for_odd_widths() {
        for w in [9, 10, 61, 64] {
            let [a, b] = two_tiles(Rect::new(3, 1, w, 12));
            assert_eq!((a.width, a.height), (b.width, b.height));
            assert_eq!((a.x, b.x), (3, 3 + w / 2));
            assert!(b.right() <= 3 + w);
        }
    }
}
