//! The library: latents as a paged table (each page fetched by its offset as you scroll or
//! jump, far pages dropped), filter, sort (done by the daemon), marks; a side pane with the
//! preview, metadata and jobs.

use std::collections::{HashMap, HashSet};

use crossterm::event::{KeyCode, KeyEvent};
use ddim_proto::v1::{self as pb, library_event::Kind as LibKind};
use ratatui::{
    layout::{Constraint, Layout, Rect},
    style::Style,
    text::{Line, Span},
    widgets::{Block, Cell, Paragraph, Row, Table},
    Frame,
};

use super::{Loading, PromptFor};
use crate::app::{App, Screen};
use crate::format::{self, short_id};
use crate::prompt::Prompt;
use crate::theme::{ACCENT, DIM, SELECTED, WARN};
use crate::worker::Request;

/// Rows per ListLatents call.
pub const PAGE: usize = 500;
/// Pages kept on each side of the view; farther ones are dropped (and fetched again by
/// offset when needed).
const KEEP_PAGES: usize = 3;
/// Wait this long after the selection settles before fetching its details.
const DETAIL_DELAY_MS: i64 = 120;
/// Coalesce bursts of library events into one reload.
const RELOAD_DELAY_MS: i64 = 300;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sort {
    /// The daemon's default order.
    #[default]
    Newest,
    Oldest,
    Name,
    EncodeSteps,
}

impl Sort {
    fn next(self) -> Self {
        match self {
            Sort::Newest => Sort::Oldest,
            Sort::Oldest => Sort::Name,
            Sort::Name => Sort::EncodeSteps,
            Sort::EncodeSteps => Sort::Newest,
        }
    }
    /// The daemon's name for the order.
    pub fn order_by(self) -> pb::SortOrder {
        match self {
            Sort::Newest => pb::SortOrder::Newest,
            Sort::Oldest => pb::SortOrder::Oldest,
            Sort::Name => pb::SortOrder::Name,
            Sort::EncodeSteps => pb::SortOrder::EncodeSteps,
        }
    }
    fn label(self) -> &'static str {
        match self {
            Sort::Newest => "newest first",
            Sort::Oldest => "oldest first",
            Sort::Name => "by name",
            Sort::EncodeSteps => "by encode S",
        }
    }
}

/// The `/` filter: `tag:T` (or `#T`) and `origin:O` words select by tag and origin, the
/// other words are a name substring (all of them must match; the daemon filters).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub name: String,
    pub tag: String,
    pub origin: String,
}

impl Filter {
    pub fn parse(text: &str) -> Self {
        let mut f = Filter::default();
        let mut name = vec![];
        for w in text.split_whitespace() {
            if let Some(t) = w.strip_prefix("tag:").or_else(|| w.strip_prefix('#')) {
                f.tag = t.to_string();
            } else if let Some(o) = w.strip_prefix("origin:") {
                // A prefix is enough: `origin:enc` (the same as `ddim ls --origin enc`).
                f.origin = format::resolve_origin(o);
            } else {
                name.push(w);
            }
        }
        f.name = name.join(" ");
        f
    }
}

#[derive(Debug, Default)]
pub struct LibraryState {
    pub filter: String,
    /// Bumped on every reload; answers for older generations are dropped.
    pub generation: u64,
    pub total: Option<u64>,
    /// Page k holds rows `k * PAGE ..`, in `sort` order.
    pub pages: HashMap<usize, Vec<pb::Latent>>,
    pub pending: HashSet<usize>,
    pub selected: usize,
    pub offset: usize,
    /// Marked latent ids, in marking order (the first two are A and B).
    pub marked: Vec<String>,
    pub sort: Sort,
    pub loading: Loading,
    pub selection_at: i64,
    pub detail_for: Option<String>,
    pub latent_jobs: HashMap<String, Vec<pb::Job>>,
    pub reload_at: Option<i64>,
    pub filter_at: Option<(i64, String)>,
}

impl LibraryState {
    /// Forgets pages and starts over (same selection index).
    pub fn reload(&mut self) -> Vec<Request> {
        self.generation += 1;
        self.pages.clear();
        self.pending.clear();
        self.loading = Loading::Fetching;
        vec![]
    }

    pub fn len(&self) -> usize {
        self.total.unwrap_or(0) as usize
    }

    pub fn row(&self, i: usize) -> Option<&pb::Latent> {
        self.pages.get(&(i / PAGE)).and_then(|p| p.get(i % PAGE))
    }

    pub fn selected_latent(&self) -> Option<&pb::Latent> {
        self.row(self.selected)
    }

    fn find(&self, id: &str) -> Option<&pb::Latent> {
        self.pages.values().flatten().find(|l| l.id == id)
    }

    /// A loaded latent by id.
    pub fn latent(&self, id: &str) -> Option<&pb::Latent> {
        self.find(id)
    }

    /// Where a loaded latent is in the list.
    fn index_of(&self, id: &str) -> Option<usize> {
        self.pages
            .iter()
            .find_map(|(p, rows)| rows.iter().position(|l| l.id == id).map(|i| p * PAGE + i))
    }

    /// Whether the library has the latent loaded.
    pub fn has(&self, id: &str) -> bool {
        self.find(id).is_some()
    }

    /// A latent's name if the library has it loaded, else its short id.
    pub fn name_of(&self, id: &str) -> String {
        self.find(id)
            .map_or_else(|| short_id(id).to_string(), |l| l.name.clone())
    }
}

/// Rows of the table that fit on screen.
pub fn visible_rows(app: &App) -> usize {
    let (table, _) = split(app.body());
    table.height.saturating_sub(3) as usize
}

fn split(body: Rect) -> (Rect, Rect) {
    let [t, s] =
        Layout::horizontal([Constraint::Percentage(62), Constraint::Percentage(38)]).areas(body);
    (t, s)
}

pub fn scroll_into_view(app: &mut App) {
    let vh = visible_rows(app).max(1);
    let lib = &mut app.library;
    if lib.selected < lib.offset {
        lib.offset = lib.selected;
    } else if lib.selected >= lib.offset + vh {
        lib.offset = lib.selected + 1 - vh;
    }
}

/// Requests the pages the view needs, each by its offset: a jump anywhere costs the one
/// or two pages under the view.
pub fn ensure_pages(app: &mut App) -> Vec<Request> {
    let vh = visible_rows(app);
    let lib = &mut app.library;
    if lib.generation == 0 {
        return vec![]; // not started
    }
    let last_page = lib.total.map(|t| (t as usize).saturating_sub(1) / PAGE);
    let p0 = lib.offset / PAGE;
    let p1 = (lib.offset + vh + 50) / PAGE;
    let (p0, p1) = match last_page {
        Some(l) => (p0.min(l), p1.min(l)),
        None => (p0, p1),
    };
    let mut out = vec![];
    for p in p0..=p1 {
        if lib.pages.contains_key(&p) || !lib.pending.insert(p) {
            continue;
        }
        out.push(Request::ListLatents {
            generation: lib.generation,
            page: p,
            offset: (p * PAGE) as u64,
            page_size: PAGE as u32,
            filter: Filter::parse(&lib.filter),
            order_by: lib.sort.order_by(),
        });
    }
    out
}

pub fn page_arrived(
    app: &mut App,
    generation: u64,
    page: usize,
    resp: pb::ListLatentsResponse,
) -> Vec<Request> {
    let lib = &mut app.library;
    if generation != lib.generation {
        return vec![];
    }
    lib.pending.remove(&page);
    lib.total = Some(resp.total);
    lib.loading = Loading::Loaded;
    lib.pages.insert(page, resp.latents);
    let here = lib.offset / PAGE;
    lib.pages
        .retain(|k, _| k.abs_diff(here) <= KEEP_PAGES || *k == page);
    if lib.selected >= lib.len() {
        lib.selected = lib.len().saturating_sub(1);
    }
    scroll_into_view(app);
    ensure_pages(app)
}

/// A latent's new metadata, applied in place; a rename while sorted by name moves it, so
/// the shown pages are fetched again (debounced).
pub fn latent_changed(app: &mut App, l: pb::Latent) {
    let mut moved = false;
    for page in app.library.pages.values_mut() {
        for row in page.iter_mut().filter(|r| r.id == l.id) {
            moved |= row.name.to_lowercase() != l.name.to_lowercase();
            *row = l.clone();
        }
    }
    if moved && app.library.sort == Sort::Name {
        app.library
            .reload_at
            .get_or_insert(app.now_ms + RELOAD_DELAY_MS);
    }
}

pub fn library_event(app: &mut App, ev: pb::LibraryEvent) -> Vec<Request> {
    match LibKind::try_from(ev.kind) {
        Ok(LibKind::Changed) => {
            if let Some(l) = ev.latent {
                latent_changed(app, l);
            }
        }
        Ok(LibKind::Deleted) => {
            app.library.marked.retain(|m| *m != ev.id);
            app.images.remove(&format!("preview:{}", ev.id));
            app.library
                .reload_at
                .get_or_insert(app.now_ms + RELOAD_DELAY_MS);
        }
        _ => {
            app.library
                .reload_at
                .get_or_insert(app.now_ms + RELOAD_DELAY_MS);
        }
    }
    vec![]
}

/// Debounced work: reloads after library events, filter changes, details of the selection.
pub fn tick(app: &mut App) -> Vec<Request> {
    let now = app.now_ms;
    let mut out = vec![];
    if let Some((at, f)) = app.library.filter_at.clone() {
        if now >= at {
            app.library.filter_at = None;
            if f != app.library.filter {
                app.library.filter = f;
                app.library.selected = 0;
                app.library.offset = 0;
                app.library.reload_at = Some(now);
            }
        }
    }
    if app.library.reload_at.is_some_and(|t| now >= t) {
        app.library.reload_at = None;
        out.extend(app.library.reload());
        out.extend(ensure_pages(app));
    }
    if now - app.library.selection_at >= DETAIL_DELAY_MS {
        if let Some(l) = app.library.selected_latent().cloned() {
            if app.library.detail_for.as_deref() != Some(l.id.as_str()) {
                let id = l.id.clone();
                app.library.detail_for = Some(id.clone());
                if !app.images.contains_key(&format!("preview:{id}")) {
                    out.push(Request::Preview { id: id.clone() });
                }
                if has_source(&l) && !app.images.contains_key(&format!("source:{id}")) {
                    out.push(Request::Source { id: id.clone() });
                }
                out.push(Request::LatentJobs { id });
            }
        }
    }
    out
}

/// The lineage of a latent made by an edit.
fn edited(l: &pb::Latent) -> Option<&pb::EditedOrigin> {
    match l.origin.as_ref().and_then(|o| o.kind.as_ref()) {
        Some(pb::origin::Kind::Edited(e)) => Some(e),
        _ => None,
    }
}

/// Whether `l` was made by another model than the daemon's (once the daemon's is known):
/// the daemon refuses to decode or edit it until it is re-encoded (`R`).
pub fn other_model(app: &App, l: &pb::Latent) -> bool {
    app.model_fingerprint
        .as_ref()
        .is_some_and(|fp| *fp != l.model_fingerprint)
}

/// Encoded latents that kept their source image.
fn has_source(l: &pb::Latent) -> bool {
    matches!(
        l.origin.as_ref().and_then(|o| o.kind.as_ref()),
        Some(pb::origin::Kind::Encoded(e)) if e.has_source
    )
}

/// Typing in the filter prompt: applied after a short pause.
pub fn filter_typed(app: &mut App, text: &str) -> Vec<Request> {
    app.library.filter_at = Some((app.now_ms + 150, text.to_string()));
    vec![]
}

/// Esc on the library clears marks, then the filter; returns false when nothing was cleared.
pub fn escape(app: &mut App) -> bool {
    if !app.library.marked.is_empty() {
        app.library.marked.clear();
        return true;
    }
    if !app.library.filter.is_empty() {
        filter_typed(app, "");
        app.library.filter_at = Some((app.now_ms, String::new()));
        return true;
    }
    false
}

fn select(app: &mut App, i: usize) -> Vec<Request> {
    let n = app.library.len();
    app.library.selected = i.min(n.saturating_sub(1));
    app.library.selection_at = app.now_ms;
    scroll_into_view(app);
    ensure_pages(app)
}

pub fn handle_key(app: &mut App, key: KeyEvent) -> Vec<Request> {
    let sel = app.library.selected;
    let page = visible_rows(app).max(1);
    let current = app.library.selected_latent().cloned();
    match key.code {
        KeyCode::Down | KeyCode::Char('j') => select(app, sel + 1),
        KeyCode::Up | KeyCode::Char('k') => select(app, sel.saturating_sub(1)),
        KeyCode::PageDown => select(app, sel + page),
        KeyCode::PageUp => select(app, sel.saturating_sub(page)),
        KeyCode::Home | KeyCode::Char('g') => select(app, 0),
        KeyCode::End | KeyCode::Char('G') => select(app, usize::MAX),
        KeyCode::F(5) => {
            let mut out = app.library.reload();
            out.extend(ensure_pages(app));
            out
        }
        KeyCode::Char('/') => {
            let previous = app.library.filter.clone();
            app.prompt(
                Prompt::new(
                    "filter: name words, tag:T (or #T), origin:encoded|sampled|interpolated|imported",
                    previous.clone(),
                ),
                PromptFor::Filter { previous },
            );
            vec![]
        }
        KeyCode::Char('s') => {
            // The daemon sorts: start over at the top in the next order.
            let next = app.library.sort.next();
            app.library.sort = next;
            app.library.selected = 0;
            app.library.offset = 0;
            app.library.selection_at = app.now_ms;
            app.info(format!("sorted {}", next.label()));
            let mut out = app.library.reload();
            out.extend(ensure_pages(app));
            out
        }
        KeyCode::Char(' ') => {
            if let Some(l) = current {
                let m = &mut app.library.marked;
                match m.iter().position(|x| *x == l.id) {
                    Some(i) => {
                        m.remove(i);
                    }
                    None => m.push(l.id),
                }
            }
            select(app, sel + 1)
        }
        KeyCode::Char('e') => {
            app.prompt(
                Prompt::new(
                    "encode image files or a folder (S next), or import x_T .npy files",
                    "",
                )
                .with_paths(),
                PromptFor::Encode,
            );
            vec![]
        }
        KeyCode::Char('n') => {
            app.prompt(
                Prompt::new("sample: count seed steps eta", "4 0 50 0"),
                PromptFor::Sample,
            );
            vec![]
        }
        KeyCode::Char('i') => {
            let m = app.library.marked.clone();
            if m.len() != 2 {
                app.error(format!(
                    "mark exactly two latents with space to interpolate ({} marked)",
                    m.len()
                ));
                return vec![];
            }
            let name = |id: &str| {
                app.library
                    .find(id)
                    .map_or_else(|| short_id(id).to_string(), |l| l.name.clone())
            };
            app.interp.a = Some((m[0].clone(), name(&m[0])));
            app.interp.b = Some((m[1].clone(), name(&m[1])));
            app.interp.job = None;
            app.go(Screen::Interpolate);
            vec![]
        }
        _ => match current {
            Some(l) => latent_key(app, key, l),
            None => vec![],
        },
    }
}

/// Keys that act on the selected latent.
fn latent_key(app: &mut App, key: KeyEvent, l: pb::Latent) -> Vec<Request> {
    match key.code {
        KeyCode::Char('r') | KeyCode::Enter => {
            use super::reconstruct::Source;
            let marked = &app.library.marked;
            app.recon.source = Some(if marked.len() > 1 {
                // All marked latents, as one batch (names as the list shows them).
                Source::Latents(
                    marked
                        .iter()
                        .map(|id| (id.clone(), app.library.name_of(id)))
                        .collect(),
                )
            } else {
                Source::Latent(l.id.clone(), l.name.clone())
            });
            app.recon.job = None;
            app.go(Screen::Reconstruct);
            vec![]
        }
        KeyCode::Char('E') => super::edit::open(app),
        KeyCode::Char('R') => reencode(app, l),
        KeyCode::Char('p') | KeyCode::Char('P') => {
            let Some(e) = edited(&l) else {
                app.error(format!(
                    "{} was not made by an edit: it has no parents",
                    l.name
                ));
                return vec![];
            };
            let alive: Vec<&String> = e
                .parent_ids
                .iter()
                .filter(|p| !e.deleted_parent_ids.contains(p))
                .collect();
            let parent = if key.code == KeyCode::Char('p') {
                alive.first()
            } else {
                alive.last()
            };
            let Some(parent) = parent.map(|p| p.to_string()) else {
                app.error(format!("the parents of {} are deleted", l.name));
                return vec![];
            };
            match app.library.index_of(&parent) {
                Some(i) => {
                    let out = select(app, i);
                    app.info(format!("parent {}", app.library.name_of(&parent)));
                    out
                }
                None => {
                    app.error(format!(
                        "parent {} is not in the list as filtered and loaded: clear the filter (Esc) or scroll",
                        short_id(&parent)
                    ));
                    vec![]
                }
            }
        }
        KeyCode::Char('d') => {
            app.decode.latent = Some((l.id.clone(), l.name.clone()));
            app.decode.job = None;
            app.go(Screen::Decode);
            vec![]
        }
        KeyCode::Char('c') => {
            app.prompt(
                Prompt::new(format!("rename {}", l.name), l.name.clone()),
                PromptFor::Rename(l.id),
            );
            vec![]
        }
        KeyCode::Char('t') => {
            app.prompt(
                Prompt::new(format!("tags of {} (+add -remove)", l.name), ""),
                PromptFor::Tag(l.id),
            );
            vec![]
        }
        KeyCode::Char('o') => {
            let file = format!(
                "{}.png",
                if l.name.is_empty() {
                    short_id(&l.id)
                } else {
                    &l.name
                }
            );
            app.prompt(
                super::save_prompt("save preview as PNG (or x_T as .npy)", &file),
                PromptFor::ExportPreview(l.id),
            );
            vec![]
        }
        KeyCode::Char('X') | KeyCode::Delete => {
            let ids = if app.library.marked.is_empty() {
                vec![l.id.clone()]
            } else {
                app.library.marked.clone()
            };
            let what = if ids.len() == 1 {
                format!("latent {}", l.name)
            } else {
                format!("{} marked latents", ids.len())
            };
            app.confirm(
                format!("Delete {what} and the jobs that only it used?"),
                vec![Request::Delete { ids }],
            );
            vec![]
        }
        _ => vec![],
    }
}

/// `R`: the marked latents, or the selected one, encoded again by the daemon's model
/// (their source image, else their preview) into new latents; asks first.
fn reencode(app: &mut App, l: pb::Latent) -> Vec<Request> {
    let ids = if app.library.marked.is_empty() {
        vec![l.id.clone()]
    } else {
        app.library.marked.clone()
    };
    let others = ids
        .iter()
        .filter(|id| app.library.find(id).is_some_and(|l| other_model(app, l)))
        .count();
    let what = if ids.len() == 1 {
        format!("latent {}", l.name)
    } else {
        format!("{} marked latents", ids.len())
    };
    let model = app.model_fingerprint.as_deref().map_or("?", short_id);
    app.confirm(
        format!(
            "Re-encode {what} with the daemon's model {model} ({others} of another model)? The old ones stay."
        ),
        vec![Request::Submit {
            spec: pb::job_spec::Kind::Reencode(pb::ReencodeJob {
                latent_ids: ids,
                steps: 0,
                out: None,
            }),
            purpose: crate::worker::Purpose::Library,
        }],
    );
    vec![]
}

pub fn render(app: &App, frame: &mut Frame, area: Rect) {
    let (table_area, side) = split(area);
    render_table(app, frame, table_area);
    render_side(app, frame, side);
}

/// The library table's columns: mark, name, tags, origin, model, S, created.
const COLUMNS: [Constraint; 7] = [
    Constraint::Length(1),
    Constraint::Fill(2),
    Constraint::Fill(1),
    Constraint::Length(12),
    Constraint::Length(8),
    Constraint::Length(4),
    Constraint::Length(16),
];

/// The width of each column in a table `width` cells wide inside its borders, as the
/// table lays them out (one cell between columns).
fn column_widths(width: u16) -> Vec<usize> {
    Layout::horizontal(COLUMNS)
        .spacing(1)
        .split(Rect::new(0, 0, width, 1))
        .iter()
        .map(|r| r.width as usize)
        .collect()
}

fn render_table(app: &App, frame: &mut Frame, area: Rect) {
    let lib = &app.library;
    let vh = area.height.saturating_sub(3) as usize;
    let widths = column_widths(area.width.saturating_sub(2));
    let rows: Vec<Row> = (lib.offset..(lib.offset + vh).min(lib.len()))
        .map(|i| {
            let style = if i == lib.selected {
                SELECTED
            } else {
                Style::new()
            };
            match lib.row(i) {
                Some(l) => {
                    let mark = if lib.marked.contains(&l.id) {
                        "●"
                    } else {
                        " "
                    };
                    Row::new(vec![
                        Cell::from(mark).style(Style::new().fg(ACCENT)),
                        Cell::from(format::fit(&l.name, widths[1])),
                        Cell::from(format::fit(&l.tags.join(","), widths[2])),
                        Cell::from(format::origin_kind(l)),
                        Cell::from(short_id(&l.model_fingerprint).to_string()).style(
                            if other_model(app, l) {
                                Style::new().fg(WARN)
                            } else {
                                Style::new()
                            },
                        ),
                        Cell::from(if l.encode_steps > 0 {
                            l.encode_steps.to_string()
                        } else {
                            "-".into()
                        }),
                        Cell::from(format::timestamp(l.created_unix_ms)),
                    ])
                    .style(style)
                }
                None => Row::new(vec![Cell::from(""), Cell::from("…").style(DIM)]).style(style),
            }
        })
        .collect();
    let header = Row::new(["", "name", "tags", "origin", "model", "S", "created"])
        .style(Style::new().bold().fg(ACCENT));
    let title = match (&lib.loading, lib.total) {
        (Loading::Error(e), _) => format!(" latents — {e} "),
        (_, Some(t)) if t > 0 => format!(" latents {}/{} ", lib.selected + 1, t),
        (_, Some(_)) => " latents — none ".into(),
        _ => " latents — loading… ".into(),
    };
    // The order is always in the title (`s` changes it).
    let title = Line::from(vec![
        Span::raw(title),
        Span::styled(format!("· {} ", lib.sort.label()), DIM),
    ]);
    let mut block = Block::bordered().title(title);
    let mut bottom = vec![];
    if !lib.filter.is_empty() {
        bottom.push(Span::styled(
            format!(" /{} ", lib.filter),
            Style::new().fg(ACCENT),
        ));
    }
    if !lib.marked.is_empty() {
        bottom.push(Span::styled(
            format!(" {} marked ", lib.marked.len()),
            Style::new().fg(ACCENT),
        ));
    }
    if !bottom.is_empty() {
        block = block.title_bottom(Line::from(bottom));
    }
    let table = Table::new(rows, COLUMNS)
        .column_spacing(1)
        .header(header)
        .block(block);
    frame.render_widget(table, area);
    if lib.len() == 0 && lib.total.is_some() {
        let msg = if lib.filter.is_empty() {
            "No latents yet: press e to encode images or n to sample."
        } else {
            "Nothing matches the filter: press Esc to clear it."
        };
        let inner = Rect::new(area.x + 2, area.y + 3, area.width.saturating_sub(4), 1);
        frame.render_widget(Line::styled(msg, DIM), inner);
    }
}

fn render_side(app: &App, frame: &mut Frame, area: Rect) {
    let Some(l) = app.library.selected_latent() else {
        frame.render_widget(Block::bordered().title(" details "), area);
        return;
    };
    let lineage = edited(l).map(|e| lineage_lines(app, e));
    let lineage_h = lineage.as_ref().map_or(0, |ls| ls.len() as u16 + 2);
    let img_h = (area.height / 2).max(6).min(area.height);
    let [img, meta, lineage_area, jobs] = Layout::vertical([
        Constraint::Length(img_h),
        Constraint::Length(8),
        Constraint::Length(lineage_h),
        Constraint::Min(0),
    ])
    .areas(area);
    let preview_caption = format!("preview S={}", l.preview_steps);
    if has_source(l) {
        // Source beside its decode: how well the latent holds the image.
        let [src, prev] = super::two_tiles(img);
        super::image_tile(
            app,
            frame,
            src,
            &format!("source:{}", l.id),
            "source",
            false,
        );
        super::image_tile(
            app,
            frame,
            prev,
            &format!("preview:{}", l.id),
            &preview_caption,
            false,
        );
    } else {
        super::image_tile(
            app,
            frame,
            img,
            &format!("preview:{}", l.id),
            &preview_caption,
            false,
        );
    }
    let shape = format::shape(&l.shape);
    let kv =
        |k: &str, v: String| Line::from(vec![Span::styled(format!("{k:<8}"), DIM), Span::raw(v)]);
    let mut lines = vec![
        kv("id", l.id.clone()),
        kv("origin", format::origin_detail(l)),
        kv("shape", shape),
    ];
    if other_model(app, l) {
        // The daemon refuses it until it is re-encoded.
        let warn = Style::new().fg(WARN);
        lines.push(Line::from(vec![
            Span::styled(format!("{:<8}", "model"), DIM),
            Span::styled(l.model_fingerprint.clone(), warn),
        ]));
        lines.push(Line::from(vec![
            Span::raw(" ".repeat(8)),
            Span::styled("another model: R re-encodes", warn),
        ]));
    } else {
        lines.push(kv("model", l.model_fingerprint.clone()));
    }
    lines.push(kv("encode", format::encoding(l)));
    lines.push(kv("created", format::timestamp(l.created_unix_ms)));
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(format!(" {} ", l.name))),
        meta,
    );
    if let Some(ls) = lineage {
        frame.render_widget(
            Paragraph::new(ls).block(
                Block::bordered()
                    .title(" lineage ")
                    .title_bottom(Line::styled(" p parent ", DIM)),
            ),
            lineage_area,
        );
    }
    let job_lines: Vec<Line> = match app.library.latent_jobs.get(&l.id) {
        None => vec![Line::styled("…", DIM)],
        Some(js) if js.is_empty() => vec![Line::styled("no jobs", DIM)],
        Some(js) => js
            .iter()
            .map(|j| {
                Line::from(vec![
                    Span::raw(format!("{:<12}", j.kind)),
                    Span::styled(
                        format!("{:<10}", format::state_name(j.state)),
                        super::jobs::state_style(j.state),
                    ),
                    Span::styled(format::timestamp(j.created_unix_ms), DIM),
                ])
            })
            .collect(),
    };
    frame.render_widget(
        Paragraph::new(job_lines).block(Block::bordered().title(" jobs ")),
        jobs,
    );
}

/// The lineage pane: the operation and its summary, then each parent by name (deleted
/// ones marked).
fn lineage_lines(app: &App, e: &pb::EditedOrigin) -> Vec<Line<'static>> {
    let mut lines = vec![Line::from(vec![
        Span::styled(format!("{:<8}", "op"), DIM),
        Span::styled(e.op.clone(), Style::new().fg(ACCENT)),
    ])];
    if !e.summary.is_empty() {
        lines.push(Line::from(e.summary.clone()));
    }
    for (i, p) in e.parent_ids.iter().enumerate() {
        let key = if i == 0 { "parents" } else { "" };
        let mut spans = vec![Span::styled(format!("{key:<8}"), DIM)];
        if e.deleted_parent_ids.contains(p) {
            spans.push(Span::styled(format!("{} (deleted)", short_id(p)), DIM));
        } else {
            let name = app.library.name_of(p);
            spans.push(Span::raw(if name == short_id(p) {
                name
            } else {
                format!("{name} ({})", short_id(p))
            }));
        }
        lines.push(Line::from(spans));
    }
    lines
}
