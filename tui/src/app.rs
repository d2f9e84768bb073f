//! Application state and the two functions around it: `handle_event` (only changes state
//! and returns the daemon requests it implies) and `render` (only draws).

use std::collections::HashMap;

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseEvent};
use ddim_proto::v1::{self as pb, job_event::Event as JobEv};
use image::DynamicImage;
use ratatui::{
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style, Stylize},
    text::{Line, Span},
    widgets::{Block, Borders, Clear, Paragraph, Wrap},
    Frame,
};

use crate::client::{ClientError, ErrorKind};
use crate::format;
use crate::graphics::{protocol_name, Graphics};
use crate::prompt::{Prompt, PromptOutcome};
use crate::screens::eval::EvalState;
use crate::screens::{self, decode::DecodeState, interpolate::InterpState, jobs::JobsState};
use crate::screens::{edit::EditState, library::LibraryState, reconstruct::ReconState};
use crate::screens::{Loading, PromptFor};
use crate::theme::{centered, render_prompt, ACCENT, DIM, ERROR, OK};
use crate::worker::{Link, Purpose, Request, Update};

/// Everything the loop feeds into the app. (Updates are big, but they move once, by value.)
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Event {
    Key(KeyEvent),
    /// Where the terminal reports the mouse (drawing inpaint rectangles).
    Mouse(MouseEvent),
    Resize(u16, u16),
    /// A render tick with the wall clock (Unix ms), for debouncing and ETAs.
    Tick(i64),
    Update(Update),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Screen {
    Library,
    Jobs,
    Reconstruct,
    Interpolate,
    Decode,
    Edit,
    Eval,
}

impl Screen {
    pub const ALL: [Screen; 7] = [
        Screen::Library,
        Screen::Jobs,
        Screen::Reconstruct,
        Screen::Interpolate,
        Screen::Decode,
        Screen::Edit,
        Screen::Eval,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Screen::Library => "Library",
            Screen::Jobs => "Jobs",
            Screen::Reconstruct => "Reconstruct",
            Screen::Interpolate => "Interpolate",
            Screen::Decode => "Decode",
            Screen::Edit => "Edit",
            Screen::Eval => "Eval",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Modal {
    Prompt(Prompt, PromptFor),
    Confirm {
        question: String,
        then: Vec<Request>,
    },
    Help,
}

/// A message in the status line.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    pub text: String,
    pub error: bool,
    pub at_ms: i64,
}

pub struct App {
    pub screen: Screen,
    pub history: Vec<Screen>,
    pub library: LibraryState,
    pub jobs: JobsState,
    pub recon: ReconState,
    pub interp: InterpState,
    pub decode: DecodeState,
    pub edit: EditState,
    pub eval: EvalState,
    /// Decoded images by key (`preview:<latent>`, `job:<id>:…`).
    pub images: HashMap<String, DynamicImage>,
    /// None until the first answer of the library watch.
    pub link: Option<Link>,
    pub status: Option<Status>,
    pub modal: Option<Modal>,
    pub addr: String,
    pub graphics: Graphics,
    pub size: (u16, u16),
    pub now_ms: i64,
    /// A job whose details should open its screen when they arrive.
    pub open_job: Option<String>,
    /// The daemons sharing the daemon's PostgreSQL store (`GetStats.daemons`);
    /// empty on sled.
    pub fleet: Vec<pb::StoreDaemon>,
    /// When the fleet was last asked for.
    pub fleet_asked_ms: i64,
    /// The daemon's shared store is out of reach (`GetStats.store_unreachable`): its
    /// error and since when (unix ms); the status line says so until it is back.
    pub store_down: Option<(String, i64)>,
    /// The daemon's model fingerprint (`GetModelInfo`), once known: latents of other
    /// models are marked in the library and `R` re-encodes them.
    pub model_fingerprint: Option<String>,
    pub quit: bool,
}

/// How often the status line's fleet is asked for.
const FLEET_REFRESH_MS: i64 = 10_000;

impl App {
    pub fn new(addr: impl Into<String>, graphics: Graphics, size: (u16, u16), now_ms: i64) -> Self {
        Self {
            screen: Screen::Library,
            history: Vec::new(),
            library: LibraryState::default(),
            jobs: JobsState::default(),
            recon: ReconState::default(),
            interp: InterpState::default(),
            decode: DecodeState::default(),
            edit: EditState::default(),
            eval: EvalState::default(),
            images: HashMap::new(),
            link: None,
            status: None,
            modal: None,
            addr: addr.into(),
            graphics,
            size,
            now_ms,
            open_job: None,
            fleet: Vec::new(),
            fleet_asked_ms: now_ms,
            store_down: None,
            model_fingerprint: None,
            quit: false,
        }
    }

    /// Requests to send when the app starts.
    pub fn start(&mut self) -> Vec<Request> {
        let mut out = self.library.reload();
        out.extend(screens::library::ensure_pages(self));
        out.push(Request::ListJobs);
        out.push(Request::Stats);
        out.push(Request::ModelInfo);
        out
    }

    /// The area between the header line and the status line.
    pub fn body(&self) -> Rect {
        let (w, h) = self.size;
        Rect::new(0, 1, w, h.saturating_sub(2))
    }

    pub fn info(&mut self, text: impl Into<String>) {
        self.status = Some(Status {
            text: text.into(),
            error: false,
            at_ms: self.now_ms,
        });
    }

    pub fn error(&mut self, text: impl Into<String>) {
        self.status = Some(Status {
            text: text.into(),
            error: true,
            at_ms: self.now_ms,
        });
    }

    pub fn go(&mut self, screen: Screen) {
        if screen != self.screen {
            self.history.push(self.screen);
            self.screen = screen;
        }
    }

    /// Switching screens by number or Tab starts a new trail: q then leads to the library.
    fn switch(&mut self, screen: Screen) -> Vec<Request> {
        self.history.clear();
        self.screen = screen;
        self.entered()
    }

    fn back(&mut self) {
        match self.history.pop() {
            Some(s) => self.screen = s,
            None if self.screen == Screen::Library => self.quit = true,
            None => self.screen = Screen::Library,
        }
    }

    pub fn prompt(&mut self, prompt: Prompt, purpose: PromptFor) {
        self.modal = Some(Modal::Prompt(prompt, purpose));
    }

    pub fn confirm(&mut self, question: impl Into<String>, then: Vec<Request>) {
        self.modal = Some(Modal::Confirm {
            question: question.into(),
            then,
        });
    }

    /// Changes state for one event; returns what to ask of the daemon.
    pub fn handle_event(&mut self, event: Event) -> Vec<Request> {
        match event {
            Event::Key(k) if k.kind != KeyEventKind::Release => self.handle_key(k),
            Event::Key(_) => vec![],
            Event::Mouse(m) if self.screen == Screen::Edit => screens::edit::handle_mouse(self, m),
            Event::Mouse(_) => vec![],
            Event::Resize(w, h) => {
                self.size = (w, h);
                screens::library::scroll_into_view(self);
                screens::library::ensure_pages(self)
            }
            Event::Tick(now) => self.tick(now),
            Event::Update(u) => self.handle_update(u),
        }
    }

    fn tick(&mut self, now: i64) -> Vec<Request> {
        self.now_ms = now;
        if self
            .status
            .as_ref()
            .is_some_and(|s| !s.error && now - s.at_ms > 6_000)
        {
            self.status = None;
        }
        let mut out = screens::library::tick(self);
        if now - self.fleet_asked_ms >= FLEET_REFRESH_MS {
            self.fleet_asked_ms = now;
            out.push(Request::Stats);
        }
        out.extend(screens::jobs::tick(self));
        out.extend(screens::eval::tick(self));
        out
    }

    fn handle_key(&mut self, key: KeyEvent) -> Vec<Request> {
        if key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL) {
            self.quit = true;
            return vec![];
        }
        match self.modal.take() {
            Some(Modal::Help) => return vec![],
            Some(Modal::Confirm { question, then }) => {
                return match key.code {
                    KeyCode::Char('y') | KeyCode::Char('Y') => then,
                    KeyCode::Char('n') | KeyCode::Esc | KeyCode::Char('q') => {
                        self.info("cancelled");
                        vec![]
                    }
                    _ => {
                        self.modal = Some(Modal::Confirm { question, then });
                        vec![]
                    }
                };
            }
            Some(Modal::Prompt(mut p, purpose)) => {
                return match p.handle_key(key) {
                    PromptOutcome::Editing => {
                        let out = if let PromptFor::Filter { .. } = &purpose {
                            screens::library::filter_typed(self, &p.input)
                        } else {
                            vec![]
                        };
                        self.modal = Some(Modal::Prompt(p, purpose));
                        out
                    }
                    PromptOutcome::Submit(text) => screens::submit_prompt(self, purpose, text),
                    PromptOutcome::Cancel => match purpose {
                        PromptFor::Filter { previous } => {
                            screens::library::filter_typed(self, &previous)
                        }
                        _ => vec![],
                    },
                };
            }
            None => {}
        }
        match key.code {
            KeyCode::Char('?') => {
                self.modal = Some(Modal::Help);
                return vec![];
            }
            KeyCode::Char('q') | KeyCode::Esc => {
                if !(self.screen == Screen::Library && screens::library::escape(self)) {
                    self.back();
                }
                return vec![];
            }
            KeyCode::Char(c @ '1'..='7') => {
                return self.switch(Screen::ALL[(c as u8 - b'1') as usize]);
            }
            KeyCode::Tab => {
                let i = Screen::ALL
                    .iter()
                    .position(|s| *s == self.screen)
                    .unwrap_or(0);
                return self.switch(Screen::ALL[(i + 1) % Screen::ALL.len()]);
            }
            _ => {}
        }
        match self.screen {
            Screen::Library => screens::library::handle_key(self, key),
            Screen::Jobs => screens::jobs::handle_key(self, key),
            Screen::Reconstruct => screens::reconstruct::handle_key(self, key),
            Screen::Interpolate => screens::interpolate::handle_key(self, key),
            Screen::Decode => screens::decode::handle_key(self, key),
            Screen::Edit => screens::edit::handle_key(self, key),
            Screen::Eval => screens::eval::handle_key(self, key),
        }
    }

    /// Requests a screen needs when it is shown.
    pub fn entered(&mut self) -> Vec<Request> {
        match self.screen {
            Screen::Jobs => {
                self.jobs.last_refresh_ms = self.now_ms;
                vec![Request::ListJobs]
            }
            Screen::Eval => screens::eval::entered(self),
            _ => vec![],
        }
    }

    fn handle_update(&mut self, u: Update) -> Vec<Request> {
        match u {
            Update::Link(link) => {
                let was_down = !matches!(self.link, Some(Link::Up));
                let up = link == Link::Up;
                self.link = Some(link);
                if up && was_down && self.library.generation > 0 {
                    // Back (or first contact after a failed start): reload what is shown.
                    if self.status.as_ref().is_some_and(|s| s.error) {
                        self.status = None;
                    }
                    let mut out = self.library.reload();
                    out.extend(screens::library::ensure_pages(self));
                    out.push(Request::ListJobs);
                    out.push(Request::Stats);
                    // A restarted daemon may serve another model.
                    out.push(Request::ModelInfo);
                    return out;
                }
                vec![]
            }
            Update::LatentPage {
                generation,
                page,
                resp,
            } => screens::library::page_arrived(self, generation, page, resp),
            Update::PageFailed {
                generation,
                page,
                error,
            } => {
                if generation == self.library.generation {
                    self.library.pending.remove(&page);
                    self.library.loading = Loading::Error(error.message.clone());
                }
                self.client_error(error);
                vec![]
            }
            Update::Preview { id, image } => {
                self.store_image(format!("preview:{id}"), &image.png);
                vec![]
            }
            Update::Source { id, image } => {
                self.store_image(format!("source:{id}"), &image.png);
                vec![]
            }
            Update::LatentJobs { id, jobs } => {
                self.library.latent_jobs.insert(id, jobs);
                vec![]
            }
            Update::Jobs(jobs) => {
                let mut out = screens::jobs::jobs_arrived(self, jobs);
                if self.screen == Screen::Eval {
                    out.extend(screens::eval::fetch_selected(self));
                }
                out
            }
            Update::EvalJobs(jobs) => {
                self.eval.jobs = jobs;
                if self.screen == Screen::Eval {
                    screens::eval::fetch_selected(self)
                } else {
                    vec![]
                }
            }
            Update::ModelInfo(m) => {
                self.model_fingerprint = Some(m.fingerprint);
                vec![]
            }
            Update::Stats(st) => {
                let down = st
                    .store_unreachable
                    .then(|| (st.store_error.clone(), st.store_unreachable_since_unix_ms));
                match (&self.store_down, &down) {
                    (None, Some((e, _))) => self.error(format!(
                        "the daemon's store is unreachable ({e}): queued jobs wait, submits fail until it is back"
                    )),
                    (Some(_), None) => self.info("the daemon's store is back"),
                    _ => {}
                }
                self.store_down = down;
                self.fleet = st.daemons;
                vec![]
            }
            Update::JobEvent(ev) => self.job_event(ev),
            Update::Job(job) => self.job_arrived(job),
            Update::Submitted { purpose, job } => self.submitted(purpose, job),
            Update::LatentName { id, name } => {
                screens::jobs::name_arrived(self, &id, &name);
                vec![]
            }
            Update::Latent(l) => {
                self.info(format!("updated {}", l.name));
                screens::library::latent_changed(self, l);
                vec![]
            }
            Update::Library(ev) => screens::library::library_event(self, ev),
            Update::EditPreview { seq, result } => {
                screens::edit::preview_arrived(self, seq, result);
                vec![]
            }
            Update::Info(text) => {
                self.info(text);
                vec![]
            }
            Update::Error(e) => {
                self.client_error(e);
                vec![]
            }
        }
    }

    pub fn client_error(&mut self, e: ClientError) {
        tracing::warn!(error = %e.message, "daemon call failed");
        if e.kind == ErrorKind::Unreachable && !matches!(self.link, Some(Link::Down { .. })) {
            self.link = Some(Link::Down {
                message: e.message.clone(),
                retry_in: std::time::Duration::from_millis(500),
            });
        }
        self.error(e.message);
    }

    /// Decodes PNG bytes into the image store (a bad image is logged, not fatal); says
    /// whether it was stored.
    pub fn store_image(&mut self, key: String, png: &[u8]) -> bool {
        if png.is_empty() {
            return false;
        }
        match image::load_from_memory(png) {
            Ok(img) => {
                self.images.insert(key, img);
                true
            }
            Err(e) => {
                tracing::warn!(key, error = %e, "cannot decode image");
                false
            }
        }
    }

    fn submitted(&mut self, purpose: Purpose, job: pb::Job) -> Vec<Request> {
        let id = job.id.clone();
        match purpose {
            Purpose::Reconstruct => self.recon.track(job.clone()),
            Purpose::Interpolate => self.interp.track(job.clone()),
            Purpose::SaveFrame => self.interp.save_job = Some(id.clone()),
            Purpose::Decode => self.decode.track(job.clone()),
            Purpose::Edit => self.edit.job = Some(job.clone()),
            Purpose::Eval => screens::eval::submitted(self, &job),
            Purpose::Library => {}
        }
        if purpose != Purpose::Library {
            self.info(format!("queued {} job {}", job.kind, format::short_id(&id)));
        }
        let watch = screens::jobs::watch(&job);
        screens::jobs::upsert(self, job);
        vec![watch]
    }

    fn job_event(&mut self, ev: pb::JobEvent) -> Vec<Request> {
        let id = ev.job_id.clone();
        match ev.event {
            Some(JobEv::Finished(job)) => {
                let needs_result = job.state == pb::JobState::Done as i32 && job.result.is_none();
                if needs_result && job.kind == "eval" {
                    // Asked for here: the Eval screen need not ask again.
                    self.eval.fetched.insert(id.clone());
                }
                let mut out = self.job_arrived(job);
                if needs_result {
                    out.push(Request::GetJob { id });
                }
                out
            }
            Some(JobEv::Progress(p)) => {
                self.jobs.eta.insert(id.clone(), p.eta_seconds);
                if let Some(img) = &p.preview {
                    screens::jobs::preview_arrived(self, &id, p.step, p.total, img);
                }
                for j in self.tracked_jobs_mut(&id) {
                    j.step = p.step;
                    j.total_steps = p.total;
                    j.state = pb::JobState::Running as i32;
                }
                vec![]
            }
            Some(JobEv::Started(_)) => {
                let now = self.now_ms;
                for j in self.tracked_jobs_mut(&id) {
                    j.state = pb::JobState::Running as i32;
                    if j.started_unix_ms == 0 {
                        j.started_unix_ms = now;
                    }
                }
                vec![]
            }
            Some(JobEv::QueuedPosition(p)) => {
                self.jobs.queue_pos.insert(id, p);
                vec![]
            }
            None => vec![],
        }
    }

    fn tracked_jobs_mut(&mut self, id: &str) -> Vec<&mut pb::Job> {
        let mut v: Vec<&mut pb::Job> = self.jobs.jobs.iter_mut().filter(|j| j.id == id).collect();
        for j in [
            &mut self.recon.job,
            &mut self.interp.job,
            &mut self.decode.job,
            &mut self.edit.job,
        ] {
            if let Some(j) = j.as_mut().filter(|j| j.id == id) {
                v.push(j);
            }
        }
        v
    }

    /// A job's latest state (with its result when done): update every view of it.
    pub fn job_arrived(&mut self, job: pb::Job) -> Vec<Request> {
        let id = job.id.clone();
        let done = job.state == pb::JobState::Done as i32;
        if let Some(r) = job.result.clone() {
            self.store_result_images(&id, &r);
            if let Some(e) = r.eval {
                screens::eval::result_arrived(self, &id, e);
            }
        }
        if self.recon.job.as_ref().is_some_and(|j| j.id == id) {
            self.recon.job = Some(job.clone());
        }
        if self.interp.job.as_ref().is_some_and(|j| j.id == id) {
            self.interp.job = Some(job.clone());
        }
        if self.decode.job.as_ref().is_some_and(|j| j.id == id) {
            self.decode.job = Some(job.clone());
        }
        if self.edit.job.as_ref().is_some_and(|j| j.id == id) {
            if format::is_terminal(job.state) {
                screens::edit::job_done(self, &job);
            }
            self.edit.job = Some(job.clone());
        }
        if self.interp.save_job.as_deref() == Some(id.as_str()) && format::is_terminal(job.state) {
            self.interp.save_job = None;
            match job.result.as_ref().and_then(|r| r.latent_ids.first()) {
                Some(l) if done => {
                    self.info(format!("saved the frame as latent {}", format::short_id(l)));
                    // The strip shows the frame as saved (`w` again says so).
                    let saved = job.result.as_ref().map_or(&[][..], |r| &r.frames[..]);
                    if let Some(shown) = self.interp.job.as_mut().and_then(|j| j.result.as_mut()) {
                        for f in saved.iter().filter(|f| !f.latent_id.is_empty()) {
                            if let Some(g) = shown.frames.iter_mut().find(|g| g.index == f.index) {
                                g.latent_id = f.latent_id.clone();
                            }
                        }
                    }
                }
                _ => self.error(format!("saving the frame failed: {}", job.error)),
            }
        }
        if job.state == pb::JobState::Failed as i32 {
            self.error(format!(
                "{} job {} failed: {}",
                job.kind,
                format::short_id(&id),
                job.error
            ));
        }
        let mut out = vec![];
        if self.open_job.as_deref() == Some(id.as_str()) {
            self.open_job = None;
            out = screens::jobs::open_results(self, job.clone());
        }
        screens::jobs::upsert(self, job);
        out
    }

    /// Keeps a result's images; the first one (with its caption) is what the jobs screen
    /// shows for the job.
    fn store_result_images(&mut self, id: &str, r: &pb::JobResult) {
        let mut first: Option<(String, String)> = None;
        let mut keep = |app: &mut Self, key: String, png: &[u8], caption: String| {
            if app.store_image(key.clone(), png) && first.is_none() {
                first = Some((key, caption));
            }
        };
        for p in &r.reconstruction {
            if let Some(img) = &p.image {
                let caption = format!("reconstruction S={}", p.steps);
                keep(self, format!("job:{id}:s{}", p.steps), &img.png, caption);
            }
        }
        for (i, d) in r.decodes.iter().enumerate() {
            if let Some(img) = &d.image {
                let caption = format!("decode S={}", d.steps);
                keep(self, format!("job:{id}:d{i}"), &img.png, caption);
            }
        }
        for f in &r.frames {
            if let Some(img) = &f.image {
                let caption = format!("frame {}", f.index);
                keep(self, format!("job:{id}:f{}", f.index), &img.png, caption);
            }
        }
        // Sample and encode previews: the first one stands for the job.
        if let Some(img) = r.images.first() {
            let caption = format!("latent 1 of {}", r.images.len());
            keep(self, format!("job:{id}:i0"), &img.png, caption);
        }
        if let Some(e) = &r.eval {
            for (i, c) in e.cells.iter().enumerate() {
                if let Some(img) = &c.grid {
                    let caption = format!("samples {}", screens::eval::cell_name(c));
                    keep(self, screens::eval::grid_key(id, i), &img.png, caption);
                }
            }
        }
        if let Some(img) = &r.original {
            keep(self, format!("job:{id}:orig"), &img.png, "original".into());
        }
        if let Some(f) = first {
            self.jobs.result_image.insert(id.to_string(), f);
        }
    }

    /// Draws the whole UI.
    pub fn render(&self, frame: &mut Frame) {
        let area = frame.area();
        let [header, body, status] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Min(0),
            Constraint::Length(1),
        ])
        .areas(area);
        self.render_header(frame, header);
        let body = self.render_link_banner(frame, body);
        match self.screen {
            Screen::Library => screens::library::render(self, frame, body),
            Screen::Jobs => screens::jobs::render(self, frame, body),
            Screen::Reconstruct => screens::reconstruct::render(self, frame, body),
            Screen::Interpolate => screens::interpolate::render(self, frame, body),
            Screen::Decode => screens::decode::render(self, frame, body),
            Screen::Edit => screens::edit::render(self, frame, body),
            Screen::Eval => screens::eval::render(self, frame, body),
        }
        self.render_status(frame, status);
        match &self.modal {
            Some(Modal::Help) => self.render_help(frame, body),
            Some(Modal::Prompt(p, _)) => render_prompt(frame, body, p),
            Some(Modal::Confirm { question, .. }) => {
                let r = centered(body, 60, 5);
                frame.render_widget(Clear, r);
                let text = vec![
                    Line::from(question.as_str()),
                    Line::from(""),
                    Line::from("y: yes   n/Esc: no".fg(ACCENT)),
                ];
                frame.render_widget(
                    Paragraph::new(text).wrap(Wrap { trim: true }).block(
                        Block::bordered()
                            .title(" confirm ")
                            .border_style(Style::new().fg(ERROR)),
                    ),
                    r,
                );
            }
            None => {}
        }
    }

    fn render_header(&self, frame: &mut Frame, area: Rect) {
        let (dot, color, word) = match &self.link {
            Some(Link::Up) => ("●", OK, "connected"),
            Some(Link::Down { .. }) => ("●", ERROR, "unreachable"),
            None => ("○", Color::Yellow, "connecting"),
        };
        let protocol = format!(" │ {}", protocol_name(self.graphics.protocol()));
        // What gives way on a narrow terminal, in order: the image protocol,
        // the long screen titles, the address. Nothing is cut mid-word.
        let line = |short: bool, addr: bool, proto: bool| -> Line<'static> {
            let mut spans = vec![Span::styled(
                " ddim ",
                Style::new().bg(ACCENT).fg(Color::Black).bold(),
            )];
            for (i, s) in Screen::ALL.iter().enumerate() {
                let style = if *s == self.screen {
                    Style::new()
                        .fg(ACCENT)
                        .add_modifier(Modifier::BOLD | Modifier::UNDERLINED)
                } else {
                    Style::new()
                };
                let title = s.title();
                let title = if short && *s != self.screen {
                    title.chars().take(3).collect::<String>()
                } else {
                    title.to_string()
                };
                spans.push(Span::raw(" "));
                spans.push(Span::styled(format!("{} {title}", i + 1), style));
            }
            spans.push(Span::raw("  │ "));
            spans.push(Span::styled(
                format!("{dot} {word} "),
                Style::new().fg(color),
            ));
            if addr {
                spans.push(Span::styled(self.addr.clone(), DIM));
            }
            if proto {
                spans.push(Span::styled(protocol.clone(), DIM));
            }
            Line::from(spans)
        };
        let fits = |l: &Line| l.width() <= area.width as usize;
        let header = [
            (false, true, true),
            (false, true, false),
            (true, true, false),
            (true, false, false),
        ]
        .into_iter()
        .map(|(s, a, p)| line(s, a, p))
        .find(|l| fits(l))
        .unwrap_or_else(|| line(true, false, false));
        frame.render_widget(header, area);
    }

    /// When the daemon is down: a banner that says where and what to check.
    fn render_link_banner(&self, frame: &mut Frame, body: Rect) -> Rect {
        let Some(Link::Down { message, retry_in }) = &self.link else {
            return body;
        };
        let [banner, rest] =
            Layout::vertical([Constraint::Length(4), Constraint::Min(0)]).areas(body);
        let text = vec![
            Line::from(vec![
                "daemon not reachable at ".into(),
                Span::styled(self.addr.clone(), Style::new().bold()),
                format!(" — retrying every {:.1}s", retry_in.as_secs_f64()).into(),
            ]),
            Line::from(
                "check: is `ddimd serve` running? is --addr / DDIM_ADDR right? token (--token / DDIM_TOKEN)?"
                    .fg(Color::Yellow),
            ),
            Line::styled(message.clone(), DIM),
        ];
        frame.render_widget(
            Paragraph::new(text).block(
                Block::new()
                    .borders(Borders::LEFT)
                    .border_style(Style::new().fg(ERROR)),
            ),
            banner,
        );
        rest
    }

    /// The status line: a message, else the screen's keys; on the right, on a
    /// PostgreSQL store, how many daemons share it (`fleet 2`), or that the store is
    /// out of reach and for how long (`store unreachable 40s`: jobs wait, submits fail).
    fn render_status(&self, frame: &mut Frame, area: Rect) {
        let right = match &self.store_down {
            Some((_, since)) => Some((
                format!(
                    " store unreachable {} ",
                    format::duration(((self.now_ms - since).max(0) / 1000) as f64)
                ),
                Style::new().fg(ERROR).bold(),
            )),
            None if !self.fleet.is_empty() => Some((
                format!(" fleet {} ", self.fleet.len()),
                Style::new().fg(ACCENT),
            )),
            None => None,
        };
        let area = match right {
            None => area,
            Some((text, style)) => {
                let [rest, right] = Layout::horizontal([
                    Constraint::Min(0),
                    Constraint::Length(text.chars().count() as u16),
                ])
                .areas(area);
                frame.render_widget(Line::styled(text, style), right);
                rest
            }
        };
        let line = match &self.status {
            Some(s) if s.error => Line::from(vec![
                " ✗ ".fg(ERROR).bold(),
                Span::styled(s.text.clone(), Style::new().fg(ERROR)),
            ]),
            Some(s) => Line::from(vec![" ✓ ".fg(OK), Span::raw(s.text.clone())]),
            None => {
                let hints = screens::keys(self.screen)
                    .iter()
                    .take(7)
                    .map(|(k, d)| format!("{k} {d}"))
                    .collect::<Vec<_>>()
                    .join("  ");
                Line::styled(format!(" ? keys  {hints}"), DIM)
            }
        };
        frame.render_widget(line, area);
    }

    fn render_help(&self, frame: &mut Frame, body: Rect) {
        let keys = screens::keys(self.screen);
        let global = screens::GLOBAL_KEYS;
        let h = (keys.len() + global.len() + 4) as u16;
        let r = centered(body, 64, h);
        frame.render_widget(Clear, r);
        let mut lines: Vec<Line> = keys
            .iter()
            .map(|(k, d)| {
                Line::from(vec![
                    Span::styled(format!("{k:>12}  "), Style::new().fg(ACCENT)),
                    Span::raw(*d),
                ])
            })
            .collect();
        lines.push(Line::from(""));
        lines.extend(global.iter().map(|(k, d)| {
            Line::from(vec![
                Span::styled(format!("{k:>12}  "), DIM),
                Span::styled(*d, DIM),
            ])
        }));
        frame.render_widget(
            Paragraph::new(lines).block(
                Block::bordered().title(format!(" {} keys — any key closes ", self.screen.title())),
            ),
            r,
        );
    }
}
