//! App behaviour through `handle_event`: paging, live updates, reconnects, job flows.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ddim_proto::v1::{self as pb, job_spec::Kind};

use super::fixtures::*;
use crate::app::{App, Event, Modal, Screen};
use crate::screens::library::PAGE;
use crate::worker::{Link, Purpose, Request, Update};

fn key(c: KeyCode) -> Event {
    Event::Key(KeyEvent::new(c, KeyModifiers::NONE))
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

/// The pages asked for, with their offsets.
fn list_pages(reqs: &[Request]) -> Vec<(usize, u64)> {
    reqs.iter()
        .filter_map(|r| match r {
            Request::ListLatents { page, offset, .. } => Some((*page, *offset)),
            _ => None,
        })
        .collect()
}

fn orders(reqs: &[Request]) -> Vec<pb::SortOrder> {
    reqs.iter()
        .filter_map(|r| match r {
            Request::ListLatents { order_by, .. } => Some(*order_by),
            _ => None,
        })
        .collect()
}

/// Answers page `p` of a `total`-row library.
fn serve(app: &mut crate::app::App, p: usize, total: usize) -> Vec<Request> {
    let start = (p * PAGE).min(total);
    let end = (start + PAGE).min(total);
    app.handle_event(Event::Update(Update::LatentPage {
        generation: app.library.generation,
        page: p,
        resp: page(start..end, total as u64, ""),
    }))
}

#[test]
fn start_asks_for_first_page_and_jobs() {
    let mut app = crate::app::App::new("a", crate::graphics::Graphics::halfblocks(), (W, H), NOW);
    let reqs = app.start();
    assert_eq!(list_pages(&reqs), vec![(0, 0)]);
    assert_eq!(orders(&reqs), vec![pb::SortOrder::Newest]);
    assert!(reqs.contains(&Request::ListJobs));
    assert!(reqs.contains(&Request::ModelInfo));
}

/// Jumping to the end of 100k latents asks for the last page alone (by offset), keeps
/// only a few pages in memory, and shows the last rows; so do far jumps back and PgDn.
#[test]
fn paging_through_100k_keeps_memory_bounded() {
    let total = 100_000usize;
    let last = (total - 1) / PAGE;
    let (mut app, _) = app_with_library(total);
    let reqs = app.handle_event(key(KeyCode::Char('G')));
    assert_eq!(app.library.selected, total - 1);
    assert_eq!(list_pages(&reqs), vec![(last, (last * PAGE) as u64)]);
    let more = serve(&mut app, last, total);
    assert!(list_pages(&more).is_empty(), "{more:?}");
    assert_eq!(
        app.library.selected_latent().unwrap().name,
        format!("latent-{:03}", total - 1)
    );
    assert_eq!(app.library.pages.len(), 1, "page 0 dropped: far away");
    // Back to the top: page 0 again, alone.
    assert_eq!(
        list_pages(&app.handle_event(key(KeyCode::Char('g')))),
        vec![(0, 0)]
    );
    serve(&mut app, 0, total);
    // Page down from the top, over and over: each new page is asked for once, and far
    // pages are dropped.
    let mut asked = vec![];
    for _ in 0..2_000 {
        let mut todo = list_pages(&app.handle_event(key(KeyCode::PageDown)));
        while let Some((p, offset)) = todo.pop() {
            assert_eq!(offset, (p * PAGE) as u64);
            assert!(!asked.contains(&p), "page {p} asked twice");
            asked.push(p);
            todo.extend(list_pages(&serve(&mut app, p, total)));
            assert!(
                app.library.pages.len() <= 2 * 3 + 2,
                "{} pages held",
                app.library.pages.len()
            );
        }
        let sel = app.library.selected;
        assert_eq!(
            app.library.selected_latent().map(|l| l.name.clone()),
            Some(format!("latent-{sel:03}"))
        );
    }
    let sel = app.library.selected;
    assert!(sel > 20 * PAGE, "{sel}");
    assert_eq!(
        app.library.selected_latent().unwrap().name,
        format!("latent-{sel:03}")
    );
    // A far jump back to the top asks for page 0 again, alone.
    assert_eq!(
        list_pages(&app.handle_event(key(KeyCode::Char('g')))),
        vec![(0, 0)]
    );
}

/// `s` asks the daemon for the next order from the top, whatever the library's size.
#[test]
fn sort_key_cycles_orders_on_the_daemon() {
    let total = 100_000usize;
    let (mut app, _) = app_with_library(total);
    app.handle_event(key(KeyCode::Char('G')));
    let mut seen = vec![];
    for _ in 0..4 {
        let gen_before = app.library.generation;
        let reqs = app.handle_event(key(KeyCode::Char('s')));
        assert_eq!(list_pages(&reqs), vec![(0, 0)], "from the top, one page");
        assert_eq!(app.library.generation, gen_before + 1);
        assert_eq!((app.library.selected, app.library.offset), (0, 0));
        seen.extend(orders(&reqs));
        serve(&mut app, 0, total);
        assert!(app.status.as_ref().is_some_and(|s| !s.error), "no refusal");
    }
    assert_eq!(
        seen,
        [
            pb::SortOrder::Oldest,
            pb::SortOrder::Name,
            pb::SortOrder::EncodeSteps,
            pb::SortOrder::Newest
        ]
    );
    // Sorted by name, a rename moves the latent: the pages are fetched again.
    app.handle_event(key(KeyCode::Char('s')));
    app.handle_event(key(KeyCode::Char('s')));
    serve(&mut app, 0, total);
    let mut l = latent(3);
    l.name = "aaa".into();
    app.handle_event(Event::Update(Update::Latent(l)));
    let reqs = tick(&mut app, 1000);
    assert_eq!(list_pages(&reqs), vec![(0, 0)]);
    assert_eq!(orders(&reqs), vec![pb::SortOrder::Name]);
}

#[test]
fn moving_down_requests_details_after_the_selection_settles() {
    let (mut app, _) = app_with_library(10);
    app.handle_event(key(KeyCode::Char('j')));
    app.handle_event(key(KeyCode::Char('j')));
    let reqs = tick(&mut app, 500);
    let id = latent(2).id;
    assert!(reqs.contains(&Request::Preview { id: id.clone() }));
    assert!(reqs.contains(&Request::LatentJobs { id: id.clone() }));
    assert!(
        !reqs.contains(&Request::Source { id }),
        "interpolated: no source"
    );
    assert!(tick(&mut app, 500).is_empty(), "asked once");
    // latent 3 was encoded and kept its source: fetch it too, to show beside the preview
    app.handle_event(key(KeyCode::Char('j')));
    let reqs = tick(&mut app, 500);
    assert!(reqs.contains(&Request::Source { id: latent(3).id }));
}

#[test]
fn filter_typing_reloads_with_name_contains() {
    let (mut app, _) = app_with_library(10);
    app.handle_event(key(KeyCode::Char('/')));
    for c in "shi".chars() {
        app.handle_event(key(KeyCode::Char(c)));
    }
    let reqs = tick(&mut app, 1000);
    let names: Vec<_> = reqs
        .iter()
        .filter_map(|r| match r {
            Request::ListLatents { filter, .. } => Some(filter.name.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(names, ["shi"]);
    app.handle_event(key(KeyCode::Enter));
    assert!(app.modal.is_none());
    assert_eq!(app.library.filter, "shi");
}

#[test]
fn filter_words_select_tag_and_origin() {
    use crate::screens::library::Filter;
    assert_eq!(
        Filter::parse(" long sleeve tag:shirts origin:enc "),
        Filter {
            name: "long sleeve".into(),
            tag: "shirts".into(),
            origin: "encoded".into(),
        }
    );
    assert_eq!(Filter::parse("#mine").tag, "mine");
    assert_eq!(Filter::parse("origin:imp").origin, "imported");
    // An unknown origin goes to the daemon as typed (it answers INVALID_ARGUMENT).
    assert_eq!(Filter::parse("origin:zzz").origin, "zzz");
    let (mut app, _) = app_with_library(10);
    app.handle_event(key(KeyCode::Char('/')));
    for c in "#shirts origin:samp".chars() {
        app.handle_event(key(KeyCode::Char(c)));
    }
    let reqs = tick(&mut app, 1000);
    let sent: Vec<Filter> = reqs
        .iter()
        .filter_map(|r| match r {
            Request::ListLatents { filter, .. } => Some(filter.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        sent,
        [Filter {
            name: String::new(),
            tag: "shirts".into(),
            origin: "sampled".into(),
        }]
    );
}

#[test]
fn library_events_reload_once_after_a_burst() {
    let (mut app, _) = app_with_library(10);
    for i in 0..5 {
        app.handle_event(Event::Update(Update::Library(pb::LibraryEvent {
            kind: pb::library_event::Kind::Added as i32,
            id: format!("new{i}"),
            latent: Some(latent(100 + i)),
        })));
    }
    let gen_before = app.library.generation;
    let reqs = tick(&mut app, 1000);
    assert_eq!(list_pages(&reqs).len(), 1);
    assert_eq!(app.library.generation, gen_before + 1);
    // Renames apply in place without a reload.
    let mut l = latent(3);
    l.name = "renamed".into();
    app.handle_event(Event::Update(Update::LatentPage {
        generation: app.library.generation,
        page: 0,
        resp: page(0..10, 10, ""),
    }));
    app.handle_event(Event::Update(Update::Library(pb::LibraryEvent {
        kind: pb::library_event::Kind::Changed as i32,
        id: l.id.clone(),
        latent: Some(l),
    })));
    assert_eq!(app.library.row(3).unwrap().name, "renamed");
    assert!(list_pages(&tick(&mut app, 2000)).is_empty());
}

#[test]
fn reconnect_reloads_the_library_and_jobs() {
    let (mut app, _) = app_with_library(10);
    app.handle_event(Event::Update(Update::Link(Link::Down {
        message: "refused".into(),
        retry_in: std::time::Duration::from_secs(1),
    })));
    let reqs = app.handle_event(Event::Update(Update::Link(Link::Up)));
    assert_eq!(list_pages(&reqs).len(), 1);
    assert!(reqs.contains(&Request::ListJobs));
    // The daemon may have come back with another model.
    assert!(reqs.contains(&Request::ModelInfo));
}

#[test]
fn reconstruct_submits_the_chosen_steps_and_tracks_the_job() {
    let (mut app, _) = app_with_library(3);
    app.handle_event(key(KeyCode::Char('r')));
    app.handle_event(key(KeyCode::Char('s')));
    answer_prompt(&mut app, "10,50");
    let reqs = app.handle_event(key(KeyCode::Enter));
    let [Request::Submit {
        spec: Kind::Reconstruct(r),
        purpose: Purpose::Reconstruct,
    }] = &reqs[..]
    else {
        panic!("{reqs:?}")
    };
    assert_eq!(r.steps, [10, 50]);
    assert_eq!(
        r.input,
        Some(pb::reconstruct_job::Input::LatentId(latent(0).id))
    );
    let queued = job("r1", "reconstruct", pb::JobState::Queued, 0, 120);
    let reqs = app.handle_event(Event::Update(Update::Submitted {
        purpose: Purpose::Reconstruct,
        job: queued,
    }));
    assert_eq!(
        reqs,
        [Request::WatchJob {
            id: "r1".into(),
            preview_every: 2
        }],
        "120 steps: a preview every 2"
    );
    let mut done = recon_job();
    done.id = "r1".into();
    app.handle_event(Event::Update(Update::JobEvent(pb::JobEvent {
        job_id: "r1".into(),
        event: Some(pb::job_event::Event::Finished(done)),
    })));
    assert_eq!(app.recon.points().len(), 7);
    assert!(app.images.contains_key("job:r1:s1000"));
    assert!(app.images.contains_key("job:r1:orig"));
}

/// Marked latents reconstruct as one batch; the screen shows the mean ± s.e.m.
#[test]
fn reconstruct_marked_latents_as_one_batch() {
    let (mut app, _) = app_with_library(5);
    for _ in 0..3 {
        app.handle_event(key(KeyCode::Char(' ')));
    }
    app.handle_event(key(KeyCode::Char('r')));
    assert_eq!(app.screen, Screen::Reconstruct);
    let reqs = app.handle_event(key(KeyCode::Enter));
    let [Request::Submit {
        spec: Kind::Reconstruct(r),
        purpose: Purpose::Reconstruct,
    }] = &reqs[..]
    else {
        panic!("{reqs:?}")
    };
    let ids: Vec<String> = (0..3).map(|i| latent(i).id).collect();
    assert_eq!(
        r.input,
        Some(pb::reconstruct_job::Input::Latents(pb::LatentIdList {
            ids
        }))
    );
    let text = screen_text(&draw(&app));
    assert!(
        text.contains(&format!("3 latents, one batch: {}", latent(0).name)),
        "{text}"
    );
    app.recon.track(recon_batch_job());
    let text = screen_text(&draw(&app));
    for want in [
        "MSE per S, 3 images",
        "± s.e.m.",
        "first original",
        "0.002309",
        "worst at S=10",
    ] {
        assert!(text.contains(want), "{want:?} missing:\n{text}");
    }
    // Worst first, named as the library names them.
    let at = |name: &str| text.find(&format!("{name}  ")).unwrap();
    assert!(at(&latent(2).name) < at(&latent(1).name) && at(&latent(1).name) < at(&latent(0).name));
    assert!(text.contains("1.3× mean"), "{text}");
    // One latent marked (or none): the selected one alone, as before.
    let (mut app, _) = app_with_library(5);
    app.handle_event(key(KeyCode::Char(' ')));
    app.handle_event(key(KeyCode::Char('r')));
    let reqs = app.handle_event(key(KeyCode::Enter));
    let [Request::Submit {
        spec: Kind::Reconstruct(r),
        ..
    }] = &reqs[..]
    else {
        panic!("{reqs:?}")
    };
    assert!(matches!(
        r.input,
        Some(pb::reconstruct_job::Input::LatentId(_))
    ));
}

/// Several η make an S × η grid: the job asks for them, arrows move by S and by η.
#[test]
fn decode_with_several_etas_is_a_grid() {
    let (mut app, _) = app_with_library(3);
    app.handle_event(key(KeyCode::Char('d')));
    assert_eq!(app.screen, Screen::Decode);
    app.handle_event(key(KeyCode::Char('e')));
    // A repeated η is refused (it is not quietly one η less).
    answer_prompt(&mut app, "0, 0.5,1,0.5");
    assert!(app.status.as_ref().unwrap().error);
    assert_eq!(app.decode.etas, [0.0]);
    app.handle_event(key(KeyCode::Char('e')));
    answer_prompt(&mut app, "0, 0.5,1");
    assert_eq!(app.decode.etas, [0.0, 0.5, 1.0]);
    let reqs = app.handle_event(key(KeyCode::Enter));
    let [Request::Submit {
        spec: Kind::Decode(d),
        purpose: Purpose::Decode,
    }] = &reqs[..]
    else {
        panic!("{reqs:?}")
    };
    assert_eq!((d.etas.as_slice(), d.eta), (&[0.0, 0.5, 1.0][..], 0.0));
    app.decode.track(decode_grid_job());
    app.handle_event(Event::Update(Update::Job(decode_grid_job())));
    for i in 0..6 {
        assert!(app.images.contains_key(&format!("job:99990001-grid:d{i}")));
    }
    // → moves along S, ↓ to the next η (same S), clamped at the last row.
    app.handle_event(key(KeyCode::Right));
    app.handle_event(key(KeyCode::Down));
    assert_eq!(app.decode.selected, 3);
    let sel = &app.decode.decodes()[app.decode.selected];
    assert_eq!((sel.steps, sel.eta), (50, 0.5));
    app.handle_event(key(KeyCode::Down));
    app.handle_event(key(KeyCode::Down));
    assert_eq!(app.decode.selected, 5);
    app.handle_event(key(KeyCode::Up));
    assert_eq!(app.decode.selected, 3);
    let text = screen_text(&draw(&app));
    for want in ["S=10 η=0", "S=50 η=0.5", "S=50 η=1", "0,0.5,1"] {
        assert!(text.contains(want), "{want:?} missing:\n{text}");
    }
    // Junk η is refused with a message and changes nothing.
    app.handle_event(key(KeyCode::Char('e')));
    answer_prompt(&mut app, "-1");
    assert!(app.status.as_ref().unwrap().error);
    assert_eq!(app.decode.etas, [0.0, 0.5, 1.0]);
}

#[test]
fn interpolate_needs_two_marks_and_saves_a_frame() {
    let (mut app, _) = app_with_library(5);
    app.handle_event(key(KeyCode::Char('i')));
    assert_eq!(app.screen, Screen::Library);
    assert!(app.status.as_ref().unwrap().error);
    app.handle_event(key(KeyCode::Char(' ')));
    app.handle_event(key(KeyCode::Char(' ')));
    app.handle_event(key(KeyCode::Char('i')));
    assert_eq!(app.screen, Screen::Interpolate);
    app.handle_event(key(KeyCode::Char('m')));
    let reqs = app.handle_event(key(KeyCode::Enter));
    let [Request::Submit {
        spec: Kind::Interpolate(j),
        ..
    }] = &reqs[..]
    else {
        panic!("{reqs:?}")
    };
    assert_eq!(
        (j.a.as_str(), j.b.as_str(), j.frames),
        (latent(0).id.as_str(), latent(1).id.as_str(), 8)
    );
    assert_eq!(j.method, pb::InterpolationMethod::Lerp as i32);
    app.interp.track(interp_job());
    app.handle_event(key(KeyCode::Right));
    let reqs = app.handle_event(key(KeyCode::Char('w')));
    let [Request::Submit {
        spec: Kind::Interpolate(j),
        purpose: Purpose::SaveFrame,
    }] = &reqs[..]
    else {
        panic!("{reqs:?}")
    };
    assert_eq!(j.save_frames, [1]);
    assert!(
        j.only_saved_frames,
        "saving a frame decodes that frame only"
    );
    // The save job ends: the strip knows frame 1 is now a latent.
    let mut saved = job("s1", "interpolate", pb::JobState::Queued, 0, 50);
    app.handle_event(Event::Update(Update::Submitted {
        purpose: Purpose::SaveFrame,
        job: saved.clone(),
    }));
    saved.state = pb::JobState::Done as i32;
    saved.result = Some(pb::JobResult {
        latent_ids: vec!["lat-99".into()],
        frames: vec![pb::Frame {
            index: 1,
            latent_id: "lat-99".into(),
            ..Default::default()
        }],
        ..Default::default()
    });
    app.handle_event(Event::Update(Update::Job(saved)));
    assert_eq!(app.interp.result_frames()[1].latent_id, "lat-99");
    assert!(app.interp.result_frames()[0].latent_id.is_empty());
    let reqs = app.handle_event(key(KeyCode::Char('w')));
    assert!(reqs.is_empty(), "{reqs:?}");
    assert!(app.status.as_ref().unwrap().text.contains("already latent"));
}

#[test]
fn cancel_only_running_jobs_and_open_done_ones() {
    let (mut app, _) = app_with_library(1);
    app.handle_event(key(KeyCode::Char('2')));
    app.handle_event(Event::Update(Update::Jobs(vec![
        job("run", "sample", pb::JobState::Running, 1, 10),
        job("done", "reconstruct", pb::JobState::Done, 10, 10),
    ])));
    assert_eq!(
        app.handle_event(key(KeyCode::Char('c'))),
        [Request::Cancel { id: "run".into() }]
    );
    app.handle_event(key(KeyCode::Down));
    assert!(app.handle_event(key(KeyCode::Char('c'))).is_empty());
    assert_eq!(
        app.handle_event(key(KeyCode::Enter)),
        [Request::GetJob { id: "done".into() }]
    );
    let mut j = recon_job();
    j.id = "done".into();
    app.handle_event(Event::Update(Update::Job(j)));
    assert_eq!(app.screen, Screen::Reconstruct);
}

#[test]
fn delete_needs_a_yes() {
    let (mut app, _) = app_with_library(3);
    app.handle_event(key(KeyCode::Char('X')));
    assert!(matches!(app.modal, Some(Modal::Confirm { .. })));
    assert!(app.handle_event(key(KeyCode::Char('n'))).is_empty());
    app.handle_event(key(KeyCode::Char('X')));
    let reqs = app.handle_event(key(KeyCode::Char('y')));
    assert_eq!(
        reqs,
        [Request::Delete {
            ids: vec![latent(0).id]
        }]
    );
}

#[test]
fn drill_down_backs_out_the_way_it_came() {
    let (mut app, _) = app_with_library(3);
    app.handle_event(key(KeyCode::Char('r')));
    app.handle_event(key(KeyCode::Char('2')));
    app.handle_event(key(KeyCode::Char('1')));
    app.handle_event(key(KeyCode::Char('r')));
    assert_eq!(app.screen, Screen::Reconstruct);
    app.handle_event(key(KeyCode::Char('q')));
    assert_eq!(app.screen, Screen::Library);
    app.handle_event(key(KeyCode::Char('q')));
    assert!(app.quit);
}

#[test]
fn q_backs_out_then_quits() {
    let (mut app, _) = app_with_library(3);
    app.handle_event(key(KeyCode::Char('2')));
    app.handle_event(key(KeyCode::Char('q')));
    assert_eq!(app.screen, Screen::Library);
    assert!(!app.quit);
    app.handle_event(key(KeyCode::Esc));
    assert!(app.quit);
}

#[test]
fn unreachable_errors_mark_the_link_down() {
    let (mut app, _) = app_with_library(3);
    app.handle_event(Event::Update(Update::Error(
        crate::client::ClientError::new(
            crate::client::ErrorKind::Unreachable,
            "daemon not reachable at a",
        ),
    )));
    assert!(matches!(app.link, Some(Link::Down { .. })));
    let text = format!("{}", draw(&app).backend());
    assert!(text.contains("daemon not reachable at"));
}

/// An interpolation opened from the jobs list is that job's: its ends' names (asked of
/// the daemon when the library has not loaded them), frames, method and sampler, nothing
/// left from the screen's previous job.
#[test]
fn opening_an_interpolation_builds_the_screen_from_the_job() {
    let (mut app, _) = app_with_library(3);
    // Another job first, with other settings (and one frame selected).
    let mut other = interp_job();
    other.id = "77770000-other".into();
    if let Some(pb::JobSpec {
        kind: Some(Kind::Interpolate(i)),
    }) = other.spec.as_mut()
    {
        i.frames = 5;
        i.method = pb::InterpolationMethod::Lerp as i32;
        i.sampler = Some(pb::SamplerOptions {
            steps: 20,
            eta: 0.5,
            spacing: pb::Spacing::Quad as i32,
            sigma_hat: false,
            solver: 0,
        });
    }
    app.open_job = Some(other.id.clone());
    app.handle_event(Event::Update(Update::Job(other)));
    assert_eq!(app.screen, Screen::Interpolate);
    assert_eq!((app.interp.frames, app.interp.steps), (5, 20));
    app.handle_event(key(KeyCode::Right));
    // Then a job between latents the library has not loaded, without a sampler.
    let mut job = interp_job();
    let (a, b) = (
        "aaaaaaaa-0000-4000-8000-00000000000a",
        "bbbbbbbb-0000-4000-8000-00000000000b",
    );
    if let Some(pb::JobSpec {
        kind: Some(Kind::Interpolate(i)),
    }) = job.spec.as_mut()
    {
        (i.a, i.b) = (a.into(), b.into());
    }
    app.open_job = Some(job.id.clone());
    let reqs = app.handle_event(Event::Update(Update::Job(job)));
    let names: Vec<&str> = reqs
        .iter()
        .filter_map(|r| match r {
            Request::LatentName { id } => Some(id.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(names, [a, b]);
    let s = &app.interp;
    assert_eq!((s.frames, s.steps, s.selected), (8, 50, 0));
    assert_eq!(s.method, pb::InterpolationMethod::Slerp as i32);
    assert_eq!((s.eta, s.spacing), (0.0, 0));
    for (id, name) in [(a, "boot"), (b, "sandal")] {
        app.handle_event(Event::Update(Update::LatentName {
            id: id.into(),
            name: name.into(),
        }));
    }
    let text = screen_text(&draw(&app));
    assert!(
        text.contains("boot (aaaaaaaa)  →  sandal (bbbbbbbb)"),
        "{text}"
    );
    assert!(text.contains("8 frames · slerp · S=50 "), "{text}");
    // Enter queues the opened job again, sampler and all.
    let reqs = app.handle_event(key(KeyCode::Enter));
    let [Request::Submit {
        spec: Kind::Interpolate(j),
        ..
    }] = &reqs[..]
    else {
        panic!("{reqs:?}")
    };
    assert_eq!((j.a.as_str(), j.b.as_str(), j.frames), (a, b, 8));
}

/// `e` asks for the files, then for S (default 100); .npy files are imported, no S.
#[test]
fn encode_asks_for_the_steps() {
    let (mut app, _) = app_with_library(3);
    app.handle_event(key(KeyCode::Char('e')));
    answer_prompt(&mut app, "a.png b.png");
    let Some(Modal::Prompt(p, _)) = &app.modal else {
        panic!("no S prompt: {:?}", app.modal)
    };
    assert_eq!(p.input, "100");
    let reqs = answer_prompt_reqs(&mut app, "250");
    assert_eq!(
        reqs,
        vec![Request::Encode {
            paths: vec!["a.png".into(), "b.png".into()],
            steps: 250
        }]
    );
    app.handle_event(key(KeyCode::Char('e')));
    answer_prompt_reqs(&mut app, "x.png");
    assert!(answer_prompt_reqs(&mut app, "0").is_empty());
    assert!(app.status.as_ref().unwrap().error);
    app.handle_event(key(KeyCode::Char('e')));
    let reqs = answer_prompt_reqs(&mut app, "xt.npy");
    assert!(app.modal.is_none());
    assert!(matches!(&reqs[..], [Request::Encode { paths, .. }] if paths.len() == 1));
}

/// Like `answer_prompt`, returning the requests of the Enter.
fn answer_prompt_reqs(app: &mut App, text: &str) -> Vec<Request> {
    app.handle_event(Event::Key(KeyEvent::new(
        KeyCode::Char('u'),
        KeyModifiers::CONTROL,
    )));
    for c in text.chars() {
        app.handle_event(key(KeyCode::Char(c)));
    }
    app.handle_event(key(KeyCode::Enter))
}

/// The library's title names the order; `?` says what the filter takes.
#[test]
fn library_title_shows_the_sort_and_help_the_filter_words() {
    let (mut app, _) = app_with_library(3);
    assert!(screen_text(&draw(&app)).contains("latents 1/3 · newest first"));
    app.handle_event(key(KeyCode::Char('s')));
    serve(&mut app, 0, 3);
    app.status = None;
    assert!(screen_text(&draw(&app)).contains("latents 1/3 · oldest first"));
    app.handle_event(key(KeyCode::Char('?')));
    let text = screen_text(&draw(&app));
    assert!(text.contains("filter: name, tag:T #T, origin:O"), "{text}");
}

/// A tag list wider than its column ends in … and leaves a space before the origin.
#[test]
fn long_tags_are_cut_with_an_ellipsis() {
    let (mut app, _) = app_with_library(0);
    let mut l = latent(0);
    l.tags = vec![
        "fashion-mnist".into(),
        "seed".into(),
        "more-tags-here".into(),
    ];
    app.handle_event(Event::Update(Update::LatentPage {
        generation: app.library.generation,
        page: 0,
        resp: pb::ListLatentsResponse {
            latents: vec![l],
            next_page_token: String::new(),
            total: 1,
        },
    }));
    let text = screen_text(&draw(&app));
    let row = text
        .lines()
        .find(|r| r.contains("latent-000"))
        .expect("the row");
    assert!(row.contains("… encoded"), "{row}");
    assert!(!row.contains("more-tags-here"), "{row}");
}

/// Once the daemon's model is known, latents of other models are marked (the model
/// column in the warning colour, a note in the side pane), and `R` re-encodes the
/// selected latent, or the marked ones, after a yes.
#[test]
fn latents_of_another_model_are_marked_and_r_reencodes_them() {
    let (mut app, _) = app_with_library(0);
    let theirs = latent(0);
    let mut ours = latent(1);
    ours.model_fingerprint = "0000aaaa11112222".into();
    app.handle_event(Event::Update(Update::LatentPage {
        generation: app.library.generation,
        page: 0,
        resp: pb::ListLatentsResponse {
            latents: vec![theirs.clone(), ours.clone()],
            next_page_token: String::new(),
            total: 2,
        },
    }));
    // The model column's colour on each latent's row.
    let model_colour = |app: &App, name: &str, fp: &str| {
        let t = draw(app);
        let text = screen_text(&t);
        let (y, row) = text
            .lines()
            .enumerate()
            .find(|(_, r)| r.contains(name))
            .unwrap_or_else(|| panic!("no row {name} in\n{text}"));
        let x = row[..row.find(&fp[..8]).expect("model column")]
            .chars()
            .count();
        t.backend().buffer()[(x as u16, y as u16)].fg
    };
    // Before the daemon's model is known nothing is marked.
    assert_ne!(
        model_colour(&app, &theirs.name, &theirs.model_fingerprint),
        crate::theme::WARN
    );
    app.handle_event(Event::Update(Update::ModelInfo(pb::ModelInfo {
        fingerprint: ours.model_fingerprint.clone(),
        ..Default::default()
    })));
    assert_eq!(
        model_colour(&app, &theirs.name, &theirs.model_fingerprint),
        crate::theme::WARN
    );
    assert_ne!(
        model_colour(&app, &ours.name, &ours.model_fingerprint),
        crate::theme::WARN
    );
    let text = screen_text(&draw(&app));
    assert!(text.contains("another model: R re-encodes"), "{text}");

    let reencode = |ids: Vec<String>| Request::Submit {
        spec: Kind::Reencode(pb::ReencodeJob {
            latent_ids: ids,
            steps: 0,
            out: None,
        }),
        purpose: Purpose::Library,
    };
    app.handle_event(key(KeyCode::Char('R')));
    match &app.modal {
        Some(Modal::Confirm { question, .. }) => {
            assert!(question.contains("(1 of another model)"), "{question}")
        }
        m => panic!("no confirm: {m:?}"),
    }
    assert!(app.handle_event(key(KeyCode::Char('n'))).is_empty());
    app.handle_event(key(KeyCode::Char('R')));
    let reqs = app.handle_event(key(KeyCode::Char('y')));
    assert_eq!(reqs, [reencode(vec![theirs.id.clone()])]);
    // Marked: all of them, ours too (the daemon re-encodes any latent).
    app.handle_event(key(KeyCode::Char(' ')));
    app.handle_event(key(KeyCode::Char(' ')));
    app.handle_event(key(KeyCode::Char('R')));
    match &app.modal {
        Some(Modal::Confirm { question, .. }) => {
            assert!(question.contains("2 marked latents"), "{question}")
        }
        m => panic!("no confirm: {m:?}"),
    }
    let reqs = app.handle_event(key(KeyCode::Char('y')));
    assert_eq!(reqs, [reencode(vec![theirs.id, ours.id])]);
}
