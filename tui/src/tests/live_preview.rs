//! The jobs screen's side panel: live x̂0 previews of running jobs (asked for, kept one per
//! job, drawn with their step, dropped when the job ends or leaves the list), the first
//! result image of a done job, and what a queued or failed job waits for.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ddim_proto::v1::{self as pb, job_event::Event as JobEv};
use ratatui::{backend::TestBackend, layout::Rect, Terminal};

use super::fixtures::*;
use crate::app::{App, Event, Screen};
use crate::screens::jobs::preview_every;
use crate::worker::{Request, Update};

const RUN: &str = "a0000000-run";

fn key(c: KeyCode) -> Event {
    Event::Key(KeyEvent::new(c, KeyModifiers::NONE))
}

/// The cells of `area` with their colours (what an image is made of in half-blocks).
fn cells(t: &Terminal<TestBackend>, area: Rect) -> Vec<(String, ratatui::style::Color)> {
    let buf = t.backend().buffer();
    area.positions()
        .map(|p| (buf[p].symbol().to_string(), buf[p].fg))
        .collect()
}

/// A 32×32 PNG of one grey level.
fn flat_png(v: u8) -> pb::Image {
    let img = image::RgbImage::from_pixel(32, 32, image::Rgb([v, v, v]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    pb::Image {
        png: out.into_inner(),
        width: 32,
        height: 32,
    }
}

fn progress(app: &mut App, id: &str, step: u32, preview: Option<pb::Image>) -> Vec<Request> {
    app.handle_event(Event::Update(Update::JobEvent(pb::JobEvent {
        job_id: id.into(),
        event: Some(JobEv::Progress(pb::Progress {
            step,
            total: 50,
            eta_seconds: 2.0,
            preview,
        })),
    })))
}

fn live_keys(app: &App) -> Vec<String> {
    let mut k: Vec<String> = app
        .images
        .keys()
        .filter(|k| k.starts_with("live:"))
        .cloned()
        .collect();
    k.sort();
    k
}

/// The jobs screen with one running sample job (50 steps) and the requests that implied.
fn jobs_screen(jobs: Vec<pb::Job>) -> (App, Vec<Request>) {
    let (mut app, _) = app_with_library(3);
    app.handle_event(key(KeyCode::Char('2')));
    assert_eq!(app.screen, Screen::Jobs);
    let reqs = app.handle_event(Event::Update(Update::Jobs(jobs)));
    (app, reqs)
}

fn running() -> pb::Job {
    job(RUN, "sample", pb::JobState::Running, 10, 50)
}

#[test]
fn previews_are_asked_for_about_a_hundred_times_a_job() {
    assert_eq!(preview_every(0), 1);
    assert_eq!(preview_every(50), 1, "short jobs: every step");
    assert_eq!(preview_every(100), 1);
    assert_eq!(preview_every(101), 2);
    assert_eq!(preview_every(3520), 36, "S up to 1000 reconstructed");
    let (_, reqs) = jobs_screen(vec![
        running(),
        job("b0000000-big", "reconstruct", pb::JobState::Queued, 0, 1760),
        job("c0000000-done", "decode", pb::JobState::Done, 180, 180),
    ]);
    assert_eq!(
        reqs,
        [
            Request::WatchJob {
                id: RUN.into(),
                preview_every: 1
            },
            Request::WatchJob {
                id: "b0000000-big".into(),
                preview_every: 18
            },
        ],
        "every job still going is watched, with previews; done ones are not"
    );
}

/// Each preview replaces the last (one image per job), the panel captions it with the step
/// it was taken at, and the finished job loses it and points at its results.
#[test]
fn running_job_shows_its_latest_preview_until_it_finishes() {
    let (mut app, _) = jobs_screen(vec![running()]);
    let s = screen_text(&draw(&app));
    assert!(s.contains("x̂0: waiting for a preview"), "{s}");

    progress(&mut app, RUN, 10, Some(flat_png(250)));
    assert_eq!(live_keys(&app), [format!("live:{RUN}:10")]);
    let first = draw(&app);
    let s = screen_text(&first);
    assert!(s.contains("x̂0 at step 10/50"), "{s}");
    assert!(s.contains("eta 2.0s"), "{s}");

    // A darker x̂0 a step later: it replaces the first, and the panel redraws it (the
    // graphics cache must not serve the old picture).
    progress(&mut app, RUN, 11, Some(flat_png(10)));
    assert_eq!(live_keys(&app), [format!("live:{RUN}:11")]);
    let second = draw(&app);
    assert!(screen_text(&second).contains("x̂0 at step 11/50"));
    let image_area = Rect::new(W - 30, 3, 20, 8);
    assert!(
        cells(&first, image_area) != cells(&second, image_area),
        "the panel still draws the first preview"
    );

    // A step without a preview moves the table, not the caption.
    progress(&mut app, RUN, 12, None);
    let s = screen_text(&draw(&app));
    assert!(s.contains("12/50"), "{s}");
    assert!(s.contains("x̂0 at step 11/50"), "{s}");

    let mut done = running();
    done.state = pb::JobState::Done as i32;
    done.step = 50;
    let reqs = app.handle_event(Event::Update(Update::JobEvent(pb::JobEvent {
        job_id: RUN.into(),
        event: Some(JobEv::Finished(done.clone())),
    })));
    assert!(app.jobs.live.is_empty());
    assert!(live_keys(&app).is_empty(), "the preview image is dropped");
    let s = screen_text(&draw(&app));
    assert!(!s.contains("x̂0"), "{s}");
    assert!(s.contains("Enter opens results"), "{s}");

    // The result the finish asked for arrives: its first image stands for the job.
    assert_eq!(reqs, [Request::GetJob { id: RUN.into() }]);
    done.result = Some(pb::JobResult {
        images: vec![pb_image(), pb_image()],
        latent_ids: vec!["l1".into(), "l2".into()],
        ..Default::default()
    });
    app.handle_event(Event::Update(Update::Job(done)));
    let s = screen_text(&draw(&app));
    assert!(s.contains("latent 1 of 2"), "{s}");
}

/// Previews of jobs the list no longer shows as going are dropped with the refresh.
#[test]
fn previews_leave_with_the_list() {
    let other = "d0000000-run";
    let (mut app, _) = jobs_screen(vec![
        running(),
        job(other, "decode", pb::JobState::Running, 3, 50),
    ]);
    progress(&mut app, RUN, 10, Some(pb_image()));
    progress(&mut app, other, 3, Some(pb_image()));
    assert_eq!(live_keys(&app).len(), 2);

    let mut cancelled = running();
    cancelled.state = pb::JobState::Cancelled as i32;
    app.handle_event(Event::Update(Update::Jobs(vec![cancelled])));
    assert!(app.jobs.live.is_empty(), "{:?}", app.jobs.live);
    assert!(live_keys(&app).is_empty());
    let s = screen_text(&draw(&app));
    assert!(s.contains("stopped at step 10/50"), "{s}");
}

/// Queued and failed jobs get words, not pictures.
/// Selecting a done job whose result is not at hand asks for it once, and the panel then
/// shows its first image.
#[test]
fn done_jobs_fetch_their_result_for_the_panel_once() {
    let done = decode_job();
    let (mut app, reqs) = jobs_screen(vec![running(), done.clone()]);
    assert_eq!(
        reqs,
        [Request::WatchJob {
            id: RUN.into(),
            preview_every: 1
        }]
    );
    let reqs = app.handle_event(key(KeyCode::Char('j')));
    assert_eq!(
        reqs,
        [Request::GetJob {
            id: done.id.clone()
        }]
    );
    // Back and forth again: asked once only.
    app.handle_event(key(KeyCode::Char('k')));
    assert!(app.handle_event(key(KeyCode::Char('j'))).is_empty());
    let s = screen_text(&draw(&app));
    assert!(!s.contains("decode S=10"), "{s}");
    app.handle_event(Event::Update(Update::Job(done)));
    assert_eq!(
        app.screen,
        Screen::Jobs,
        "the answer does not open the results"
    );
    let s = screen_text(&draw(&app));
    assert!(s.contains("decode S=10"), "{s}");
}

#[test]
fn queued_and_failed_jobs_say_where_they_stand() {
    let mut failed = job("f0000000-fail", "encode", pb::JobState::Failed, 3, 100);
    failed.error = "image is not 32×32".into();
    let (mut app, _) = jobs_screen(vec![
        job("b0000000-que", "reconstruct", pb::JobState::Queued, 0, 1760),
        failed,
    ]);
    app.handle_event(Event::Update(Update::JobEvent(pb::JobEvent {
        job_id: "b0000000-que".into(),
        event: Some(JobEv::QueuedPosition(2)),
    })));
    let s = screen_text(&draw(&app));
    assert!(s.contains("2 job(s) ahead in the queue"), "{s}");
    app.handle_event(key(KeyCode::Char('j')));
    let s = screen_text(&draw(&app));
    assert!(s.contains("at step 3/100, attempt 1"), "{s}");
    assert!(s.contains("image is not 32×32"), "{s}");
}

/// On 80 columns the panel gives way to the table, which keeps its key columns and
/// says the caption under it.
#[test]
fn narrow_terminal_keeps_the_table_and_the_caption() {
    let (mut app, _) = jobs_screen(vec![running()]);
    app.handle_event(Event::Resize(80, 24));
    progress(&mut app, RUN, 10, Some(pb_image()));
    let t = draw(&app);
    let s = screen_text(&t);
    let header = s.lines().nth(2).unwrap();
    for col in ["id", "kind", "state", "progress", "step", "eta", "error"] {
        assert!(header.contains(col), "{col} missing: {header}");
    }
    assert!(s.contains("x̂0 at step 10/50"), "{s}");
    assert!(!s.contains(" a0000000 sample "), "no panel: {s}");
    insta::assert_snapshot!(t.backend());
}
