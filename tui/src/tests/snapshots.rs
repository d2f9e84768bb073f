//! One snapshot per screen, from recorded answers (half-block images, fixed clock).

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ddim_proto::v1 as pb;

use super::fixtures::*;
use crate::app::{Event, Screen};
use crate::worker::{Link, Request, Update};

fn key(c: KeyCode) -> Event {
    Event::Key(KeyEvent::new(c, KeyModifiers::NONE))
}

#[test]
fn library_with_preview_metadata_and_jobs() {
    let (mut app, _) = app_with_library(40);
    app.handle_event(key(KeyCode::Down));
    app.handle_event(key(KeyCode::Char(' ')));
    tick(&mut app, 500);
    let id = latent(2).id;
    app.handle_event(Event::Update(Update::Preview {
        id: id.clone(),
        image: pb_image(),
    }));
    app.handle_event(Event::Update(Update::LatentJobs {
        id,
        jobs: vec![
            job("j-a", "sample", pb::JobState::Done, 50, 50),
            job("j-b", "decode", pb::JobState::Running, 20, 100),
        ],
    }));
    insta::assert_snapshot!(draw(&app).backend());
}

#[test]
fn library_empty_and_filtered() {
    let (mut app, _) = app_with_library(0);
    app.library.filter = "zebra".into();
    insta::assert_snapshot!(draw(&app).backend());
}

#[test]
fn daemon_down_banner() {
    let (mut app, _) = app_with_library(3);
    app.handle_event(Event::Update(Update::Link(Link::Down {
        message: "tcp connect error: Connection refused (os error 111)".into(),
        retry_in: std::time::Duration::from_secs(2),
    })));
    insta::assert_snapshot!(draw(&app).backend());
}

#[test]
fn jobs_screen_with_live_progress() {
    let (mut app, _) = app_with_library(3);
    app.handle_event(key(KeyCode::Char('2')));
    assert_eq!(app.screen, Screen::Jobs);
    let mut failed = job("f0000000-fail", "encode", pb::JobState::Failed, 3, 100);
    failed.error = "image is not 32×32".into();
    app.handle_event(Event::Update(Update::Jobs(vec![
        job("a0000000-run", "sample", pb::JobState::Running, 10, 50),
        job("b0000000-que", "reconstruct", pb::JobState::Queued, 0, 1760),
        job("c0000000-done", "decode", pb::JobState::Done, 180, 180),
        failed,
    ])));
    app.handle_event(Event::Update(Update::JobEvent(pb::JobEvent {
        job_id: "a0000000-run".into(),
        event: Some(pb::job_event::Event::Progress(pb::Progress {
            step: 25,
            total: 50,
            eta_seconds: 4.5,
            preview: Some(pb_image()),
        })),
    })));
    app.handle_event(Event::Update(Update::JobEvent(pb::JobEvent {
        job_id: "b0000000-que".into(),
        event: Some(pb::job_event::Event::QueuedPosition(0)),
    })));
    insta::assert_snapshot!(draw(&app).backend());
}

/// The daemon's PostgreSQL store out of reach: the status line says so, with how
/// long, in place of the fleet, and says when it is back.
#[test]
fn status_line_says_when_the_store_is_unreachable() {
    let (mut app, _) = app_with_library(3);
    let stats = |down: bool| pb::Stats {
        daemons: vec![pb::StoreDaemon {
            id: "gpu1:41".into(),
            ..Default::default()
        }],
        store_unreachable: down,
        store_error: if down {
            "connection refused".into()
        } else {
            String::new()
        },
        store_unreachable_since_unix_ms: if down { NOW - 42_000 } else { 0 },
        ..Default::default()
    };
    app.handle_event(Event::Update(Update::Stats(stats(true))));
    let s = screen_text(&draw(&app));
    let last = s.lines().last().unwrap().trim_end().to_string();
    assert!(last.ends_with("store unreachable 42s"), "{s}");
    assert!(last.contains("connection refused"), "{last}");
    assert!(!s.contains("fleet 1"), "{s}");
    app.handle_event(Event::Update(Update::Stats(stats(false))));
    let s = screen_text(&draw(&app));
    let last = s.lines().last().unwrap().trim_end().to_string();
    assert!(
        last.ends_with("fleet 1") && last.contains("store is back"),
        "{last}"
    );
}

/// On a PostgreSQL store: the status line counts the daemons sharing it, and the
/// selected job says which of them ran it (with its address from the fleet).
#[test]
fn jobs_screen_on_a_fleet_says_who_ran_each_job() {
    let (mut app, reqs) = app_with_library(3);
    assert!(
        reqs.contains(&Request::Stats),
        "the fleet is asked at start"
    );
    app.handle_event(key(KeyCode::Char('2')));
    let daemon = |id: &str, addr: &str, running: &str| pb::StoreDaemon {
        id: id.into(),
        address: addr.into(),
        device: "cuda:0".into(),
        fingerprint: "cc4546dcfac296d4".into(),
        running_job_id: running.into(),
        heartbeat_unix_ms: NOW - 1_000,
        started_unix_ms: NOW - 600_000,
    };
    app.handle_event(Event::Update(Update::Stats(pb::Stats {
        daemons: vec![
            daemon("gpu1:41", "10.0.0.1:7860", ""),
            daemon("gpu2:42", "10.0.0.2:7860", "a0000000-run"),
        ],
        ..Default::default()
    })));
    let mut run = job("a0000000-run", "sample", pb::JobState::Running, 10, 50);
    run.ran_by = "gpu2:42".into();
    let mut done = job("c0000000-done", "decode", pb::JobState::Done, 180, 180);
    done.ran_by = "gpu1:41".into();
    app.handle_event(Event::Update(Update::Jobs(vec![run, done])));
    let s = screen_text(&draw(&app));
    assert!(
        s.lines().last().unwrap().trim_end().ends_with("fleet 2"),
        "{s}"
    );
    assert!(s.contains("ran by gpu2:42 (10.0.0.2:7860)"), "{s}");
    // The other job, by a daemon that left the fleet since: its name alone.
    app.handle_event(key(KeyCode::Down));
    app.handle_event(Event::Update(Update::Stats(pb::Stats {
        daemons: vec![daemon("gpu2:42", "10.0.0.2:7860", "")],
        ..Default::default()
    })));
    let s = screen_text(&draw(&app));
    assert!(s.contains("ran by gpu1:41"), "{s}");
    assert!(!s.contains("(10.0.0.1:7860)"), "{s}");
    assert!(
        s.lines().last().unwrap().trim_end().ends_with("fleet 1"),
        "{s}"
    );
    app.handle_event(key(KeyCode::Up));
    app.handle_event(Event::Update(Update::Stats(pb::Stats {
        daemons: vec![
            daemon("gpu1:41", "10.0.0.1:7860", ""),
            daemon("gpu2:42", "10.0.0.2:7860", "a0000000-run"),
        ],
        ..Default::default()
    })));
    // Its x̂0 preview, relayed by the daemon this TUI talks to from the one running it.
    app.handle_event(Event::Update(Update::JobEvent(pb::JobEvent {
        job_id: "a0000000-run".into(),
        event: Some(pb::job_event::Event::Progress(pb::Progress {
            step: 25,
            total: 50,
            eta_seconds: 4.5,
            preview: Some(pb_image()),
        })),
    })));
    insta::assert_snapshot!(draw(&app).backend());
    // Asked again every ten seconds, not at every tick.
    assert!(tick(&mut app, 10_000).contains(&Request::Stats));
    assert!(!tick(&mut app, 1_000).contains(&Request::Stats));
    // On sled (no daemons listed): no fleet in the status line.
    app.handle_event(Event::Update(Update::Stats(pb::Stats::default())));
    let s = screen_text(&draw(&app));
    assert!(!s.contains("fleet"), "{s}");
}

#[test]
fn reconstruction_chart_table_and_images() {
    let (mut app, _) = app_with_library(3);
    app.handle_event(key(KeyCode::Char('r')));
    assert_eq!(app.screen, Screen::Reconstruct);
    app.handle_event(Event::Update(Update::Job(recon_job())));
    app.recon.track(recon_job());
    app.handle_event(Event::Update(Update::Job(recon_job())));
    app.handle_event(key(KeyCode::Right));
    app.handle_event(key(KeyCode::Right));
    insta::assert_snapshot!(draw(&app).backend());
}

/// Means over several latents: the table gains a s.e.m. column, the chart error bars.
#[test]
fn reconstruction_of_several_latents() {
    let (mut app, _) = app_with_library(3);
    for _ in 0..3 {
        app.handle_event(key(KeyCode::Char(' ')));
    }
    app.handle_event(key(KeyCode::Char('r')));
    app.handle_event(Event::Update(Update::Job(recon_batch_job())));
    app.recon.track(recon_batch_job());
    app.handle_event(Event::Update(Update::Job(recon_batch_job())));
    insta::assert_snapshot!(draw(&app).backend());
}

#[test]
fn interpolation_strip() {
    let (mut app, _) = app_with_library(3);
    app.open_job = Some(interp_job().id);
    app.handle_event(Event::Update(Update::Job(interp_job())));
    assert_eq!(app.screen, Screen::Interpolate);
    app.handle_event(key(KeyCode::Right));
    app.handle_event(key(KeyCode::Right));
    app.handle_event(key(KeyCode::Right));
    insta::assert_snapshot!(draw(&app).backend());
}

#[test]
fn decode_side_by_side() {
    let (mut app, _) = app_with_library(3);
    app.open_job = Some(decode_job().id);
    app.handle_event(Event::Update(Update::Job(decode_job())));
    assert_eq!(app.screen, Screen::Decode);
    insta::assert_snapshot!(draw(&app).backend());
}

/// Several η: one row per η, one column per S.
#[test]
fn decode_grid_of_steps_and_etas() {
    let (mut app, _) = app_with_library(3);
    app.open_job = Some(decode_grid_job().id);
    app.handle_event(Event::Update(Update::Job(decode_grid_job())));
    assert_eq!(app.screen, Screen::Decode);
    app.handle_event(key(KeyCode::Down));
    insta::assert_snapshot!(draw(&app).backend());
}

#[test]
fn help_overlay_lists_library_keys() {
    let (mut app, _) = app_with_library(3);
    app.handle_event(key(KeyCode::Char('?')));
    insta::assert_snapshot!(draw(&app).backend());
}

#[test]
fn delete_asks_first() {
    let (mut app, _) = app_with_library(3);
    app.handle_event(key(KeyCode::Char('X')));
    insta::assert_snapshot!(draw(&app).backend());
}

/// On 80×24 the strip's tiles are narrow: captions drop `S=` rather than cut `S=1000`
/// to a wrong `S=10`.
#[test]
fn narrow_strip_captions_name_the_right_s() {
    let (mut app, _) = app_with_library(3);
    app.size = (80, 24);
    app.handle_event(key(KeyCode::Char('r')));
    app.recon.track(recon_job());
    app.handle_event(Event::Update(Update::Job(recon_job())));
    let text = screen_text(&draw(&app));
    assert!(text.contains("│1000│") && text.contains("│100 │"), "{text}");
    assert!(!text.contains("=100│"), "{text}");
    // All seven S rows of the table fit too.
    assert!(text.contains("│1000   0.000100"), "{text}");
}
