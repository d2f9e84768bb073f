//! The Edit screen and the lineage pane: parameters, live previews (only the newest
//! answer shown), commits, the inpaint rectangle by keys and mouse, parents.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers, MouseButton, MouseEvent, MouseEventKind};
use ddim_proto::v1::{self as pb, job_spec::Kind};

use super::fixtures::*;
use crate::app::{App, Event, Screen};
use crate::screens::edit::{Op, PxRect};
use crate::worker::{Purpose, Request, Update};

fn key(c: KeyCode) -> Event {
    Event::Key(KeyEvent::new(c, KeyModifiers::NONE))
}

fn shift(c: KeyCode) -> Event {
    Event::Key(KeyEvent::new(c, KeyModifiers::SHIFT))
}

fn mouse(kind: MouseEventKind, column: u16, row: u16) -> Event {
    Event::Mouse(MouseEvent {
        kind,
        column,
        row,
        modifiers: KeyModifiers::NONE,
    })
}

/// The previews asked for: (seq, spec).
fn previews(reqs: &[Request]) -> Vec<(u64, Kind)> {
    reqs.iter()
        .filter_map(|r| match r {
            Request::PreviewEdit {
                seq, spec, steps, ..
            } => {
                assert_eq!(*steps, 10, "previews run at S = 10");
                Some((*seq, spec.clone()))
            }
            _ => None,
        })
        .collect()
}

fn preview_answer(seq: u64) -> Event {
    Event::Update(Update::EditPreview {
        seq,
        result: Ok(pb::PreviewEditResponse {
            images: vec![pb_image()],
            seconds: 0.21,
        }),
    })
}

/// A library whose first row was made by a variation of row 3 (and a deleted latent).
fn app_with_edited() -> App {
    let (mut app, _) = app_with_library(0);
    let mut resp = page(0..8, 8, "");
    resp.latents[0].name = "variation-lat-3-0".into();
    resp.latents[0].origin = Some(pb::Origin {
        kind: Some(pb::origin::Kind::Edited(pb::EditedOrigin {
            op: "variation".into(),
            params_json: r#"{"strength":0.35,"seed":0}"#.into(),
            parent_ids: vec![latent(3).id, "lat-99".into()],
            deleted_parent_ids: vec!["lat-99".into()],
            summary: "variation of lat-3, strength 0.35, seed 0 #0".into(),
        })),
    });
    app.handle_event(Event::Update(Update::LatentPage {
        generation: app.library.generation,
        page: 0,
        resp,
    }));
    app
}

/// E opens the selected latent; a change asks for a new preview; an answer to an older
/// request (superseded: ABORTED) is dropped without a word; Enter commits at S = 50 and
/// the finished job names the new latent.
#[test]
fn edit_previews_the_newest_change_and_commits() {
    let (mut app, _) = app_with_library(10);
    let reqs = app.handle_event(key(KeyCode::Char('E')));
    assert_eq!(app.screen, Screen::Edit);
    assert!(reqs.contains(&Request::Preview { id: latent(0).id }));
    let p = previews(&reqs);
    let [(1, Kind::Variation(v))] = &p[..] else {
        panic!("{p:?}")
    };
    assert_eq!(
        (v.latent_id.as_str(), v.strength, v.count),
        (latent(0).id.as_str(), 0.3, 1)
    );

    let p = previews(&app.handle_event(key(KeyCode::Right)));
    let [(2, Kind::Variation(v))] = &p[..] else {
        panic!("{p:?}")
    };
    assert_eq!(v.strength, 0.35);
    // The first preview was superseded by the second.
    app.handle_event(Event::Update(Update::EditPreview {
        seq: 1,
        result: Err("aborted: superseded by a newer preview".into()),
    }));
    assert!(app.status.is_none() && app.edit.preview_error.is_none());
    app.handle_event(preview_answer(1));
    assert_eq!(app.edit.shown, None);
    app.handle_event(preview_answer(2));
    assert_eq!(app.edit.shown.map(|s| s.0), Some(2));
    assert!(app.images.contains_key("edit:2:0"));

    let reqs = app.handle_event(key(KeyCode::Enter));
    let [Request::Submit {
        spec: Kind::Variation(v),
        purpose: Purpose::Edit,
    }] = &reqs[..]
    else {
        panic!("{reqs:?}")
    };
    assert_eq!(
        (v.strength, v.out.as_ref().unwrap().preview_steps),
        (0.35, 50)
    );
    let mut j = job("e0000000-edit", "variation", pb::JobState::Queued, 0, 50);
    app.handle_event(Event::Update(Update::Submitted {
        purpose: Purpose::Edit,
        job: j.clone(),
    }));
    assert_eq!(
        app.edit.job.as_ref().map(|j| j.id.as_str()),
        Some("e0000000-edit")
    );
    j.state = pb::JobState::Done as i32;
    j.result = Some(pb::JobResult {
        latent_ids: vec!["lat-42".into()],
        ..Default::default()
    });
    app.handle_event(Event::Update(Update::JobEvent(pb::JobEvent {
        job_id: j.id.clone(),
        event: Some(pb::job_event::Event::Finished(j)),
    })));
    let s = app.status.clone().unwrap();
    assert!(!s.error && s.text.contains("made lat-42"), "{s:?}");
}

/// `=` types a value; `m` goes through the operations; an operation that lacks marks
/// says so instead of asking; S changes need no new preview.
#[test]
fn typed_values_operations_and_marks() {
    let (mut app, _) = app_with_library(10);
    app.handle_event(key(KeyCode::Char('E')));
    app.handle_event(key(KeyCode::Char('=')));
    app.handle_event(Event::Key(KeyEvent::new(
        KeyCode::Char('u'),
        KeyModifiers::CONTROL,
    )));
    for c in "0.7".chars() {
        app.handle_event(key(KeyCode::Char(c)));
    }
    let p = previews(&app.handle_event(key(KeyCode::Enter)));
    assert!(
        matches!(&p[..], [(_, Kind::Variation(v))] if v.strength == 0.7),
        "{p:?}"
    );

    let reqs = app.handle_event(key(KeyCode::Char('m')));
    assert_eq!(app.edit.op, Op::Mix);
    assert!(previews(&reqs).is_empty());
    assert!(app
        .edit
        .preview_error
        .as_deref()
        .unwrap()
        .contains("mark more latents"));

    app.handle_event(key(KeyCode::Char('m')));
    app.handle_event(key(KeyCode::Char('m')));
    assert_eq!(app.edit.op, Op::Renoise);
    let p = previews(&app.handle_event(key(KeyCode::Char('p'))));
    let [(_, Kind::Renoise(r))] = &p[..] else {
        panic!("{p:?}")
    };
    assert_eq!((r.strength, r.sampler.unwrap().eta), (0.5, 1.0));
    // The last parameter is the commit S: no preview for it.
    app.handle_event(key(KeyCode::Up));
    assert!(app.handle_event(key(KeyCode::Right)).is_empty());
    assert_eq!(app.edit.steps, 100);

    // Marked latents: the selected one plus two marks make a + w·(b − c).
    app.handle_event(key(KeyCode::Char('q')));
    assert_eq!(app.screen, Screen::Library);
    app.handle_event(key(KeyCode::Down));
    app.handle_event(key(KeyCode::Char(' ')));
    app.handle_event(key(KeyCode::Char(' ')));
    app.handle_event(key(KeyCode::Char('g')));
    app.edit.set_op(Op::Mix);
    let p = previews(&app.handle_event(key(KeyCode::Char('E'))));
    let [(_, Kind::Mix(m))] = &p[..] else {
        panic!("{p:?}")
    };
    let terms: Vec<(String, f64)> = m
        .terms
        .iter()
        .map(|t| (t.latent_id.clone(), t.weight))
        .collect();
    assert_eq!(
        terms,
        [
            (latent(0).id, 1.0),
            (latent(1).id, 0.8),
            (latent(2).id, -0.8)
        ]
    );
}

/// Inpaint: hjkl move the rectangle, HJKL and shift-arrows resize it, a mouse drag on
/// the original draws it; each change asks for a preview with the rectangle.
#[test]
fn inpaint_rectangle_by_keys_and_mouse() {
    let (mut app, _) = app_with_library(10);
    app.handle_event(key(KeyCode::Char('E')));
    app.edit.set_op(Op::Inpaint);
    assert_eq!(
        app.edit.rect,
        PxRect {
            x: 8,
            y: 8,
            w: 16,
            h: 16
        }
    );
    app.handle_event(key(KeyCode::Char('l')));
    app.handle_event(key(KeyCode::Char('k')));
    app.handle_event(key(KeyCode::Char('H')));
    let p = previews(&app.handle_event(shift(KeyCode::Down)));
    assert_eq!(
        app.edit.rect,
        PxRect {
            x: 9,
            y: 7,
            w: 15,
            h: 17
        }
    );
    let [(_, Kind::Inpaint(i))] = &p[..] else {
        panic!("{p:?}")
    };
    assert_eq!(
        (
            i.rects[0].x,
            i.rects[0].y,
            i.rects[0].width,
            i.rects[0].height
        ),
        (9, 7, 15, 17)
    );

    // 110×32 with 10×20 px cells: the original's 32×32 image is drawn at 10× from
    // cell (40, 8), a cell being one pixel wide and two tall.
    app.handle_event(mouse(MouseEventKind::Down(MouseButton::Left), 44, 10));
    app.handle_event(mouse(MouseEventKind::Drag(MouseButton::Left), 60, 18));
    let p = previews(&app.handle_event(mouse(MouseEventKind::Up(MouseButton::Left), 60, 18)));
    assert_eq!(
        app.edit.rect,
        PxRect {
            x: 4,
            y: 5,
            w: 17,
            h: 17
        }
    );
    assert_eq!(p.len(), 1);
    // Off the image, nothing starts.
    app.handle_event(mouse(MouseEventKind::Down(MouseButton::Left), 2, 10));
    assert!(app
        .handle_event(mouse(MouseEventKind::Up(MouseButton::Left), 2, 10))
        .is_empty());
}

/// The details pane of an edited latent names the operation, its summary and parents
/// (deleted ones marked); `p` jumps to the first parent that still exists.
#[test]
fn lineage_pane_and_parent_jump() {
    let mut app = app_with_edited();
    let text = screen_text(&draw(&app));
    assert!(text.contains("lineage"), "{text}");
    assert!(text.contains("variation of lat-3"), "{text}");
    assert!(text.contains("latent-003"), "{text}");
    assert!(text.contains("lat-99 (deleted)"), "{text}");
    app.handle_event(key(KeyCode::Char('p')));
    assert_eq!(app.library.selected, 3);
    // A latent that was not edited has no parents.
    app.handle_event(key(KeyCode::Char('p')));
    assert!(app.status.as_ref().unwrap().error);
}

#[test]
fn snapshot_edit_variation_with_preview() {
    let (mut app, _) = app_with_library(10);
    app.handle_event(key(KeyCode::Char('E')));
    app.handle_event(Event::Update(Update::Preview {
        id: latent(0).id,
        image: pb_image(),
    }));
    app.handle_event(key(KeyCode::Right));
    app.handle_event(preview_answer(2));
    insta::assert_snapshot!(draw(&app).backend());
}

#[test]
fn snapshot_edit_inpaint_rectangle() {
    let (mut app, _) = app_with_library(10);
    app.handle_event(key(KeyCode::Char('E')));
    app.handle_event(Event::Update(Update::Preview {
        id: latent(0).id,
        image: pb_image(),
    }));
    for _ in 0..4 {
        app.handle_event(key(KeyCode::Char('m')));
    }
    insta::assert_snapshot!(draw(&app).backend());
}

#[test]
fn snapshot_library_lineage_pane() {
    let app = app_with_edited();
    insta::assert_snapshot!(draw(&app).backend());
}
