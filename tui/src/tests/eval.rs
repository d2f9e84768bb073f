//! The Eval screen: the heat map from a recorded `EvalResult` (order and colour scale),
//! the cell cursor, the detail pane, the form's `EvalJob`, the job list and its fetches.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ddim_proto::v1::{self as pb, job_spec::Kind};
use ratatui::style::Color;

use super::fixtures::*;
use crate::app::{App, Event, Screen};
use crate::screens::eval::{cursor_cell, grid_key, heat, heat_colour, Col, HeatMap};
use crate::worker::{Purpose, Request, Update};

fn key(c: KeyCode) -> Event {
    Event::Key(KeyEvent::new(c, KeyModifiers::NONE))
}

fn press(app: &mut App, c: char, times: usize) -> Vec<Request> {
    (0..times)
        .flat_map(|_| app.handle_event(key(KeyCode::Char(c))))
        .collect()
}

/// Clears the open prompt (Ctrl-U), types `text` and presses Enter.
fn answer_prompt(app: &mut App, text: &str) {
    app.handle_event(Event::Key(KeyEvent::new(
        KeyCode::Char('u'),
        KeyModifiers::CONTROL,
    )));
    for c in text.chars() {
        app.handle_event(key(KeyCode::Char(c)));
    }
    app.handle_event(key(KeyCode::Enter));
}

const CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// S = 10, 50 × η = 0, 1 and σ̂, as the daemon orders them (for each S: η, then σ̂).
/// Best FD 8 at S = 50 η = 0, worst 140 at S = 10 σ̂.
fn eval_result() -> pb::EvalResult {
    let base = |steps| if steps == 10 { 20.0 } else { 8.0 };
    let fds = [
        (10, 0.0, false, 20.0),
        (10, 1.0, false, 60.0),
        (10, 0.0, true, 140.0),
        (50, 0.0, false, 8.0),
        (50, 1.0, false, 25.0),
        (50, 0.0, true, 40.0),
    ];
    pb::EvalResult {
        cells: fds
            .iter()
            .map(|&(steps, eta, sigma_hat, fd)| pb::EvalCell {
                steps,
                eta,
                sigma_hat,
                spacing: pb::Spacing::Uniform as i32,
                n: 100,
                fd,
                fd_low: fd * 0.884,
                fd_high: fd * 1.136,
                confidence: 0.87,
                class_histogram: vec![10, 14, 9, 11, 8, 12, 7, 13, 10, 6],
                seconds: 12.5,
                grid: Some(pb_image()),
                // Against the η = 0 cell of the S: S=50 η=1 resolved (worse), S=10 η=1
                // not resolved, the σ̂ cells resolved.
                vs_eta0: match (steps, eta, sigma_hat) {
                    (_, 0.0, false) => None,
                    (10, _, false) => Some((40.0, -3.0, 83.0)),
                    _ => Some((
                        fd - base(steps),
                        fd - base(steps) - 5.0,
                        fd - base(steps) + 5.0,
                    )),
                }
                .map(|(diff, low, high)| pb::EvalPaired { diff, low, high }),
                ..Default::default()
            })
            .collect(),
        floor: Some(pb::EvalFloor {
            fd: 1.25,
            fd_low: 1.1,
            fd_high: 1.42,
            n: 5000,
        }),
        judge_fingerprint: "j0d9e".into(),
        judge_accuracy: 0.931,
        classes: CLASSES.iter().map(|c| c.to_string()).collect(),
        reference_images: 10_000,
        bootstrap: 200,
    }
}

fn eval_spec() -> pb::JobSpec {
    pb::JobSpec {
        kind: Some(Kind::Eval(pb::EvalJob {
            steps: vec![10, 50],
            etas: vec![0.0, 1.0],
            sigma_hat: true,
            spacing: pb::Spacing::Uniform as i32,
            samples: 100,
            seed: 0,
            ..Default::default()
        })),
    }
}

/// A finished eval job, without its result (as the job list has it).
fn eval_done() -> pb::Job {
    let mut j = job("e0000000-done", "eval", pb::JobState::Done, 6000, 6000);
    j.spec = Some(eval_spec());
    j
}

fn eval_running() -> pb::Job {
    let mut j = job("e1111111-run", "eval", pb::JobState::Running, 12, 50);
    j.spec = Some(eval_spec());
    j
}

#[test]
fn eval_jobs_older_than_the_jobs_list_come_from_the_list_by_kind() {
    let (mut app, _) = app_with_library(3);
    let reqs = app.handle_event(key(KeyCode::Char('7')));
    assert!(reqs.contains(&Request::ListEvalJobs), "{reqs:?}");
    // The newest jobs hold no eval job (200 sample jobs came after it) …
    app.handle_event(Event::Update(Update::Jobs(vec![job(
        "a0000000-sample",
        "sample",
        pb::JobState::Done,
        50,
        50,
    )])));
    assert!(screen_text(&draw(&app)).contains("no eval jobs"));
    // … the list by kind does: it is shown, and its result asked for.
    let reqs = app.handle_event(Event::Update(Update::EvalJobs(vec![eval_done()])));
    assert!(
        reqs.contains(&Request::GetJob { id: eval_done().id }),
        "{reqs:?}"
    );
    let screen = screen_text(&draw(&app));
    assert!(screen.contains("eval jobs (1)"), "{screen}");
    // A job in both lists is listed once; the refresh asks for both lists.
    app.handle_event(Event::Update(Update::Jobs(vec![
        eval_running(),
        eval_done(),
    ])));
    assert!(screen_text(&draw(&app)).contains("eval jobs (2)"));
    let reqs = tick(&mut app, 3_000);
    assert!(reqs.contains(&Request::ListJobs) && reqs.contains(&Request::ListEvalJobs));
}

/// The Eval screen with the finished job shown and its result at hand.
fn app_on_eval() -> App {
    let (mut app, _) = app_with_library(3);
    app.handle_event(key(KeyCode::Char('7')));
    assert_eq!(app.screen, Screen::Eval);
    let reqs = app.handle_event(Event::Update(Update::Jobs(vec![
        eval_done(),
        job("a0000000-sample", "sample", pb::JobState::Done, 50, 50),
    ])));
    assert!(
        reqs.contains(&Request::GetJob { id: eval_done().id }),
        "{reqs:?}"
    );
    let mut full = eval_done();
    full.result = Some(pb::JobResult {
        eval: Some(eval_result()),
        ..Default::default()
    });
    app.handle_event(Event::Update(Update::Job(full)));
    app
}

/// The buffer position where `text` starts on screen.
fn find(t: &ratatui::Terminal<ratatui::backend::TestBackend>, text: &str) -> (u16, u16) {
    let screen = screen_text(t);
    for (y, line) in screen.lines().enumerate() {
        if let Some(byte) = line.find(text) {
            let x = line[..byte].chars().count();
            return (x as u16, y as u16);
        }
    }
    panic!("`{text}` not on screen:\n{screen}");
}

#[test]
fn eval_heat_map_orders_rows_columns_and_colours_best_to_worst() {
    let r = eval_result();
    let map = HeatMap::of(&r);
    assert_eq!(map.steps, vec![10, 50]);
    assert_eq!(map.cols, vec![Col::Eta(0.0), Col::Eta(1.0), Col::SigmaHat]);
    let at = |row, col| r.cells[map.cell(row, col).unwrap()].fd;
    assert_eq!([at(0, 0), at(0, 1), at(0, 2)], [20.0, 60.0, 140.0]);
    assert_eq!([at(1, 0), at(1, 1), at(1, 2)], [8.0, 25.0, 40.0]);
    assert_eq!(map.cell(2, 0), None);
    assert_eq!(map.range, Some((8.0, 140.0)));
    // The scale runs from the result's best (green) to its worst (red), in FD order.
    assert_eq!(map.colour(8.0), heat_colour(0.0));
    assert_eq!(map.colour(140.0), heat_colour(1.0));
    assert_eq!(heat_colour(0.0), Color::Rgb(46, 160, 67));
    assert_eq!(heat_colour(1.0), Color::Rgb(205, 55, 55));
    let mut by_fd: Vec<f64> = r.cells.iter().map(|c| c.fd).collect();
    by_fd.sort_by(f64::total_cmp);
    let t: Vec<f64> = by_fd.iter().map(|f| heat(*f, 8.0, 140.0)).collect();
    assert!(t.windows(2).all(|w| w[0] < w[1]), "{t:?}");
    assert_eq!(heat(5.0, 5.0, 5.0), 0.0, "one cell: all best");

    // On screen: S rows in order, η columns then σ̂, every FD printed on its colour,
    // the floor in the title.
    let app = app_on_eval();
    let t = draw(&app);
    let screen = screen_text(&t);
    let header = screen.lines().find(|l| l.contains("η=0")).unwrap();
    let (e0, e1, sh) = (
        header.find("η=0").unwrap(),
        header.find("η=1").unwrap(),
        header.find("σ̂").unwrap(),
    );
    assert!(e0 < e1 && e1 < sh, "{header}");
    assert!(find(&t, "S=10").1 < find(&t, "S=50").1);
    assert!(
        screen.contains("floor (real vs real, 5000) 1.25 [1.10, 1.42]"),
        "{screen}"
    );
    let buf = t.backend().buffer();
    for (text, fd) in [("140.00", 140.0), ("8.00", 8.0), ("25.00", 25.0)] {
        let (x, y) = find(&t, text);
        assert_eq!(buf[(x, y)].bg, map.colour(fd), "{text}");
    }
}

#[test]
fn eval_cursor_moves_and_stays_inside_the_table() {
    let mut app = app_on_eval();
    assert_eq!(app.eval.cursor, (0, 0));
    press(&mut app, 'l', 5);
    assert_eq!(app.eval.cursor, (0, 2));
    press(&mut app, 'j', 5);
    assert_eq!(app.eval.cursor, (1, 2));
    app.handle_event(key(KeyCode::Right));
    app.handle_event(key(KeyCode::Down));
    assert_eq!(app.eval.cursor, (1, 2));
    let c = &eval_result().cells[cursor_cell(&app).unwrap()];
    assert_eq!((c.steps, c.sigma_hat), (50, true));
    press(&mut app, 'h', 5);
    assert_eq!(app.eval.cursor, (1, 0));
    app.handle_event(key(KeyCode::Up));
    app.handle_event(key(KeyCode::Up));
    app.handle_event(key(KeyCode::Left));
    assert_eq!(app.eval.cursor, (0, 0));
}

#[test]
fn eval_detail_pane_shows_interval_n_confidence_classes_and_samples() {
    let mut app = app_on_eval();
    press(&mut app, 'j', 1);
    press(&mut app, 'l', 1);
    let screen = screen_text(&draw(&app));
    for want in [
        "S=50 η=1 · uniform",
        "FD 25.00 [22.10, 28.40]",
        "bias-corrected [21.60, 27.90]",
        "n 100 · confidence 0.870",
        "20.0× the floor · took 13s",
        "Trouser",
        "Ankle boot",
        "samples S=50 η=1",
        "judge 93.1%",
        "vs η=0 +17.00 [+12.00, +22.00]",
        "paired: worse than η=0",
    ] {
        assert!(screen.contains(want), "`{want}` missing:\n{screen}");
    }
    // The histogram's largest count gets the longest bar.
    let bar_len = |name: &str| {
        let line = screen.lines().find(|l| l.contains(name)).unwrap();
        line.matches('█').count()
    };
    assert!(bar_len("Trouser") > bar_len("Ankle boot"));
    // The cell's sample grid is an image like every other preview.
    let i = cursor_cell(&app).unwrap();
    assert!(app.images.contains_key(&grid_key("e0000000-done", i)));
    insta::assert_snapshot!(draw(&app).backend());
    // An interval that holds 0 is not a verdict.
    press(&mut app, 'k', 1);
    let screen = screen_text(&draw(&app));
    assert!(
        screen.contains("vs η=0 +40.00 [-3.00, +83.00]") && screen.contains("paired: not resolved"),
        "{screen}"
    );
    // The η = 0 cell has no pairing line.
    press(&mut app, 'h', 1);
    assert!(!screen_text(&draw(&app)).contains("vs η=0"));
}

#[test]
fn eval_form_submits_the_eval_job_it_shows() {
    let mut app = app_on_eval();
    press(&mut app, 's', 1);
    answer_prompt(&mut app, "10,100");
    press(&mut app, 'e', 1);
    answer_prompt(&mut app, "0,0.2");
    press(&mut app, 't', 1);
    press(&mut app, 'p', 1);
    press(&mut app, 'n', 1);
    answer_prompt(&mut app, "500");
    press(&mut app, 'r', 1);
    answer_prompt(&mut app, "7");
    // Bad values are one line each and change nothing.
    press(&mut app, 'n', 1);
    answer_prompt(&mut app, "0");
    assert!(app.status.as_ref().unwrap().text.contains("samples N"));
    press(&mut app, 'e', 1);
    answer_prompt(&mut app, "-1");
    assert!(app.status.as_ref().unwrap().error);
    let screen = screen_text(&draw(&app));
    assert!(screen.contains("spacing quad"), "{screen}");
    assert!(screen.contains("solver ddim"), "{screen}");
    press(&mut app, 'v', 1);
    assert!(screen_text(&draw(&app)).contains("solver dpmpp-2m"));
    press(&mut app, 'v', 1);
    let reqs = app.handle_event(key(KeyCode::Enter));
    assert_eq!(
        reqs,
        vec![Request::Submit {
            spec: Kind::Eval(pb::EvalJob {
                steps: vec![10, 100],
                etas: vec![0.0, 0.2],
                sigma_hat: false,
                spacing: pb::Spacing::Quad as i32,
                samples: 500,
                seed: 7,
                solver: pb::Solver::Ddim as i32,
            }),
            purpose: Purpose::Eval,
        }]
    );
    // The queued job is shown and followed.
    let queued = job("e2222222-new", "eval", pb::JobState::Queued, 0, 220);
    let reqs = app.handle_event(Event::Update(Update::Submitted {
        purpose: Purpose::Eval,
        job: queued.clone(),
    }));
    assert!(matches!(&reqs[..], [Request::WatchJob { id, .. }] if *id == queued.id));
    assert_eq!(app.eval.selected.as_deref(), Some("e2222222-new"));
    assert!(screen_text(&draw(&app)).contains("the table comes when the job is done"));
}

#[test]
fn eval_list_shows_progress_and_fetches_each_finished_result_once() {
    let (mut app, _) = app_with_library(3);
    let reqs = app.handle_event(key(KeyCode::Char('7')));
    assert!(reqs.contains(&Request::ListJobs));
    assert!(screen_text(&draw(&app)).contains("loading the job list"));
    // The newest (running) is shown first: nothing to fetch yet.
    let reqs = app.handle_event(Event::Update(Update::Jobs(vec![
        eval_running(),
        job("a0000000-sample", "sample", pb::JobState::Done, 50, 50),
        eval_done(),
    ])));
    assert!(!reqs.iter().any(|r| matches!(r, Request::GetJob { .. })));
    let screen = screen_text(&draw(&app));
    assert!(screen.contains("eval jobs (2)"), "{screen}");
    assert!(screen.contains("12/50"), "{screen}");
    // The finished one is not fetched yet; its cell count comes from its spec
    // (S = 10, 50 × η = 0, 1 and σ̂).
    assert!(screen.contains("6 cells"), "{screen}");
    assert!(!screen.contains("a0000000"), "only eval jobs: {screen}");
    let get = |reqs: &[Request]| {
        reqs.iter()
            .filter(|r| matches!(r, Request::GetJob { .. }))
            .count()
    };
    assert_eq!(get(&press(&mut app, 'J', 1)), 1);
    assert_eq!(app.eval.selected.as_deref(), Some("e0000000-done"));
    assert_eq!(get(&press(&mut app, 'J', 1)), 0, "the last stays");
    assert_eq!(get(&press(&mut app, 'K', 1)), 0);
    assert_eq!(get(&press(&mut app, 'J', 1)), 0, "asked once");
    assert_eq!(get(&tick(&mut app, 100)), 0);
    assert!(screen_text(&draw(&app)).contains("fetching the result"));
    // A list refresh every 3 s while shown.
    assert!(tick(&mut app, 3_000).contains(&Request::ListJobs));
    // The running one finishes while watched: its result is asked for once, by the watch.
    let mut finished = eval_running();
    finished.state = pb::JobState::Done as i32;
    let reqs = app.handle_event(Event::Update(Update::JobEvent(pb::JobEvent {
        job_id: finished.id.clone(),
        event: Some(pb::job_event::Event::Finished(finished)),
    })));
    assert_eq!(get(&reqs), 1);
    assert_eq!(get(&press(&mut app, 'K', 1)), 0);
    assert_eq!(app.eval.selected.as_deref(), Some("e1111111-run"));
    assert_eq!(get(&tick(&mut app, 100)), 0);
}

#[test]
fn eval_job_opens_from_the_jobs_screen() {
    let (mut app, _) = app_with_library(3);
    app.handle_event(key(KeyCode::Char('2')));
    app.handle_event(Event::Update(Update::Jobs(vec![eval_done()])));
    let reqs = app.handle_event(key(KeyCode::Enter));
    assert!(reqs.contains(&Request::GetJob { id: eval_done().id }));
    let mut full = eval_done();
    full.result = Some(pb::JobResult {
        eval: Some(eval_result()),
        ..Default::default()
    });
    app.handle_event(Event::Update(Update::Job(full)));
    assert_eq!(app.screen, Screen::Eval);
    assert_eq!(app.eval.selected.as_deref(), Some("e0000000-done"));
    assert!(screen_text(&draw(&app)).contains("FD 20.00 [17.68, 22.72]"));
    // The help overlay lists the screen's keys.
    app.handle_event(key(KeyCode::Char('?')));
    let screen = screen_text(&draw(&app));
    assert!(screen.contains("Eval keys"), "{screen}");
    assert!(screen.contains("move the cell cursor"), "{screen}");
}

#[test]
fn eval_screen_keeps_the_table_and_interval_at_80x24() {
    let mut app = app_on_eval();
    app.handle_event(Event::Resize(80, 24));
    press(&mut app, 'l', 2);
    let screen = screen_text(&draw(&app));
    for want in [
        "η=0",
        "σ̂",
        "140.00",
        "FD 140.00 [123.76, 159.04]",
        "n 100 · confidence 0.870",
        "seed 0 (r)",
    ] {
        assert!(screen.contains(want), "`{want}` missing:\n{screen}");
    }
}
