//! Recorded daemon answers, built as proto messages.

use ddim_proto::v1::{self as pb, origin::Kind as O};
use ratatui::{backend::TestBackend, Terminal};

use crate::app::{App, Event};
use crate::graphics::Graphics;
use crate::worker::{Link, Request, Update};

/// 2025-11-25 12:00 UTC.
pub const NOW: i64 = 1_764_072_000_000;

/// A 32×32 grey image: a diagonal gradient with a bright square (like the model's output).
pub fn image32() -> image::RgbImage {
    image::RgbImage::from_fn(32, 32, |x, y| {
        let v = if (8..16).contains(&x) && (8..16).contains(&y) {
            250
        } else {
            ((x + y) * 4) as u8
        };
        image::Rgb([v, v, v])
    })
}

pub fn png32() -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    image32()
        .write_to(&mut out, image::ImageFormat::Png)
        .unwrap();
    out.into_inner()
}

pub fn pb_image() -> pb::Image {
    pb::Image {
        png: png32(),
        width: 32,
        height: 32,
    }
}

pub fn latent(i: usize) -> pb::Latent {
    let origin = match i % 3 {
        0 => O::Encoded(pb::EncodedOrigin {
            filename: format!("shirt_{i:02}.png"),
            has_source: true,
        }),
        1 => O::Sampled(pb::SampledOrigin {
            seed: 7,
            index: i as u32,
        }),
        _ => O::Interpolated(pb::InterpolatedOrigin {
            a: "aaaaaaaa-1111".into(),
            b: "bbbbbbbb-2222".into(),
            alpha: 0.5,
            method: pb::InterpolationMethod::Slerp as i32,
        }),
    };
    pb::Latent {
        id: format!("{i:08x}-0000-4000-8000-000000000000"),
        name: format!("latent-{i:03}"),
        tags: if i.is_multiple_of(2) {
            vec!["fashion".into()]
        } else {
            vec![]
        },
        created_unix_ms: NOW - (i as i64) * 60_000,
        shape: vec![1, 32, 32],
        model_fingerprint: "5e1f0c2ab9d7e6f4".into(),
        encode_steps: if i.is_multiple_of(3) { 100 } else { 0 },
        encode_spacing: 0,
        encode_solver: if i.is_multiple_of(3) {
            pb::Solver::Ddim as i32
        } else {
            0
        },
        origin: Some(pb::Origin { kind: Some(origin) }),
        preview_steps: 50,
        job_id: format!("job-{i}"),
    }
}

pub fn page(range: std::ops::Range<usize>, total: u64, next: &str) -> pb::ListLatentsResponse {
    pb::ListLatentsResponse {
        latents: range.map(latent).collect(),
        next_page_token: next.into(),
        total,
    }
}

pub fn job(id: &str, kind: &str, state: pb::JobState, step: u32, total: u32) -> pb::Job {
    pb::Job {
        id: id.into(),
        kind: kind.into(),
        state: state as i32,
        created_unix_ms: NOW - 90_000,
        started_unix_ms: if state == pb::JobState::Queued {
            0
        } else {
            NOW - 60_000
        },
        finished_unix_ms: if state == pb::JobState::Done {
            NOW - 10_000
        } else {
            0
        },
        attempts: 1,
        step,
        total_steps: total,
        ..Default::default()
    }
}

/// The screen as text, one line per row.
pub fn screen_text(t: &Terminal<TestBackend>) -> String {
    let buf = t.backend().buffer();
    (0..buf.area.height)
        .map(|y| {
            (0..buf.area.width)
                .map(|x| buf[(x, y)].symbol())
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A finished reconstruction of three latents as one batch: means and their
/// standard errors.
pub fn recon_batch_job() -> pb::Job {
    let mut j = recon_job();
    j.id = "77770001-batch".into();
    j.spec = Some(pb::JobSpec {
        kind: Some(pb::job_spec::Kind::Reconstruct(pb::ReconstructJob {
            input: Some(pb::reconstruct_job::Input::Latents(pb::LatentIdList {
                ids: (0..3).map(|i| latent(i).id).collect(),
            })),
            steps: vec![10, 100],
            spacing: 0,
            solver: 0,
        })),
    });
    let r = j.result.as_mut().unwrap();
    r.reconstruction = [(10, [0.010, 0.014, 0.018]), (100, [0.0007, 0.0009, 0.0011])]
        .iter()
        .map(|(s, per)| pb::ReconstructionPoint {
            steps: *s,
            mse: per.iter().sum::<f64>() / 3.0,
            image: Some(pb_image()),
            images: 3,
            mse_sem: (per[2] - per[0]) / 2.0 / 3f64.sqrt(),
            image_mse: per.to_vec(),
        })
        .collect();
    j
}

/// A finished reconstruction with the paper's Table 2 numbers.
pub fn recon_job() -> pb::Job {
    let mse = [
        (10, 0.014),
        (20, 0.0065),
        (50, 0.0023),
        (100, 0.0009),
        (200, 0.0004),
        (500, 0.0001),
        (1000, 0.0001),
    ];
    let mut j = job(
        "77770000-recon",
        "reconstruct",
        pb::JobState::Done,
        1760,
        1760,
    );
    j.spec = Some(pb::JobSpec {
        kind: Some(pb::job_spec::Kind::Reconstruct(pb::ReconstructJob {
            input: Some(pb::reconstruct_job::Input::LatentId(latent(0).id)),
            steps: mse.iter().map(|m| m.0).collect(),
            spacing: 0,
            solver: 0,
        })),
    });
    j.result = Some(pb::JobResult {
        original: Some(pb_image()),
        reconstruction: mse
            .iter()
            .map(|(s, m)| pb::ReconstructionPoint {
                steps: *s,
                mse: *m,
                image: Some(pb_image()),
                images: 1,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    });
    j
}

pub fn interp_job() -> pb::Job {
    let mut j = job(
        "88880000-interp",
        "interpolate",
        pb::JobState::Done,
        400,
        400,
    );
    j.spec = Some(pb::JobSpec {
        kind: Some(pb::job_spec::Kind::Interpolate(pb::InterpolateJob {
            a: latent(0).id,
            b: latent(1).id,
            frames: 8,
            method: pb::InterpolationMethod::Slerp as i32,
            sampler: Some(pb::SamplerOptions {
                steps: 50,
                ..Default::default()
            }),
            save_frames: vec![],
            only_saved_frames: false,
        })),
    });
    j.result = Some(pb::JobResult {
        frames: (0..8)
            .map(|i| pb::Frame {
                index: i,
                alpha: i as f32 / 7.0,
                image: Some(pb_image()),
                latent_id: String::new(),
            })
            .collect(),
        ..Default::default()
    });
    j
}

pub fn decode_job() -> pb::Job {
    let mut j = job("99990000-decode", "decode", pb::JobState::Done, 180, 180);
    j.spec = Some(pb::JobSpec {
        kind: Some(pb::job_spec::Kind::Decode(pb::DecodeJob {
            latent_id: latent(1).id,
            steps: vec![10, 20, 50, 100],
            ..Default::default()
        })),
    });
    j.result = Some(pb::JobResult {
        decodes: [10, 20, 50, 100]
            .iter()
            .map(|s| pb::DecodeResult {
                steps: *s,
                image: Some(pb_image()),
                eta: 0.0,
            })
            .collect(),
        ..Default::default()
    });
    j
}

/// A decode at S = 10, 50 for η = 0, 0.5, 1: a 3 × 2 grid.
pub fn decode_grid_job() -> pb::Job {
    let mut j = decode_job();
    j.id = "99990001-grid".into();
    j.spec = Some(pb::JobSpec {
        kind: Some(pb::job_spec::Kind::Decode(pb::DecodeJob {
            latent_id: latent(1).id,
            steps: vec![10, 50],
            etas: vec![0.0, 0.5, 1.0],
            ..Default::default()
        })),
    });
    j.result = Some(pb::JobResult {
        decodes: [0.0, 0.5, 1.0]
            .iter()
            .flat_map(|e| {
                [10, 50].iter().map(move |s| pb::DecodeResult {
                    steps: *s,
                    image: Some(pb_image()),
                    eta: *e,
                })
            })
            .collect(),
        ..Default::default()
    });
    j
}

pub const W: u16 = 110;
pub const H: u16 = 32;

/// An app on a W×H terminal, started, connected and fed the first library page.
pub fn app_with_library(n: usize) -> (App, Vec<Request>) {
    let mut app = App::new("http://127.0.0.1:7860", Graphics::halfblocks(), (W, H), NOW);
    let mut reqs = app.start();
    reqs.extend(app.handle_event(Event::Update(Update::Link(Link::Up))));
    let first = n.min(crate::screens::library::PAGE);
    let next = if n > first { "p1" } else { "" };
    reqs.extend(app.handle_event(Event::Update(Update::LatentPage {
        generation: app.library.generation,
        page: 0,
        resp: page(0..first, n as u64, next),
    })));
    (app, reqs)
}

pub fn draw(app: &App) -> Terminal<TestBackend> {
    let mut t = Terminal::new(TestBackend::new(app.size.0, app.size.1)).unwrap();
    t.draw(|f| app.render(f)).unwrap();
    t
}

pub fn tick(app: &mut App, ms: i64) -> Vec<Request> {
    let now = app.now_ms + ms;
    app.handle_event(Event::Tick(now))
}
