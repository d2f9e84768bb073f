//! The edit job kinds over a real daemon: each operation's closed form on
//! the stored x_T, lineage (GetLatent, the parent filter, deleted parents,
//! across a restart), validation naming the field, and PreviewEdit (stores
//! nothing; a newer preview of the same client supersedes a waiting one).
//!
//! Backends: every test here runs on sled and on PostgreSQL (`on_backends!` at the
//! end: `NAME::sled`, `NAME::postgres`; the PostgreSQL ones each on a database of
//! their own on one server per test binary). Left sled-only: none (the lineage
//! test's restart comes back to the same database).
//!
//! Needs the binaries: `cargo build --workspace --bins`.
use ddim_proto::v1 as pb;
use ddim_tests::*;
use tonic::Code;

/// d = C·H·W of the test model (1×32×32): x_T lies near the sphere of radius √d.
const D: usize = 1024;

fn spec(k: pb::job_spec::Kind) -> pb::JobSpec {
    pb::JobSpec { kind: Some(k) }
}

fn out(preview_steps: u32) -> Option<pb::EditOutput> {
    Some(pb::EditOutput {
        preview_steps,
        ..Default::default()
    })
}

async fn xt(c: &mut Client, id: &str) -> Vec<f32> {
    let npy = c
        .export_latent(pb::ExportLatentRequest { id: id.into() })
        .await
        .unwrap()
        .into_inner()
        .npy;
    npy_values(&npy).1
}

async fn latent(c: &mut Client, id: &str) -> pb::Latent {
    c.get_latent(pb::GetLatentRequest { id: id.into() })
        .await
        .unwrap()
        .into_inner()
}

/// The pixels of a latent's source image.
async fn source(c: &mut Client, id: &str) -> Vec<u8> {
    let png = c
        .get_latent_image(pb::GetLatentImageRequest {
            id: id.into(),
            kind: pb::LatentImageKind::Source as i32,
            steps: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .png;
    pixels(&png).2
}

fn edited(l: &pb::Latent) -> pb::EditedOrigin {
    match l.origin.clone().and_then(|o| o.kind) {
        Some(pb::origin::Kind::Edited(e)) => e,
        o => panic!("{} is not edited: {o:?}", l.id),
    }
}

fn norm(v: &[f32]) -> f64 {
    v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt()
}

/// v rescaled to norm √d, in f64.
/// `v` rescaled to norm `rho`.
fn to_norm(v: &[f64], rho: f64) -> Vec<f64> {
    let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    v.iter().map(|x| x * rho / n).collect()
}

fn max_diff(a: &[f32], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - y).abs())
        .fold(0.0, f64::max)
}

async fn children(c: &mut Client, parent: &str) -> Vec<String> {
    let mut ids: Vec<String> = c
        .list_latents(pb::ListLatentsRequest {
            parent: parent.into(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .latents
        .into_iter()
        .map(|l| l.id)
        .collect();
    ids.sort();
    ids
}

async fn variation_mix_and_grid_follow_their_closed_forms_with_lineage(b: Backend) {
    let mut d = Daemon::builder().backend(b).start().await;
    let mut c = d.client().await;
    let ids = run_job(&mut c, sample_spec(4, 1, 3))
        .await
        .result
        .unwrap()
        .latent_ids;
    let (a, b, cc, dd) = (&ids[0], &ids[1], &ids[2], &ids[3]);
    let xa = xt(&mut c, a).await;

    // Variation: strength 0 gives x_T back bit for bit, strength 1 the seed's
    // noise exactly (what a sample job with that seed starts from).
    let v0 = run_job(
        &mut c,
        spec(pb::job_spec::Kind::Variation(pb::VariationJob {
            latent_id: a.clone(),
            strength: 0.0,
            seed: 9,
            count: 2,
            out: out(3),
        })),
    )
    .await;
    let v0 = v0.result.unwrap().latent_ids;
    assert_eq!(v0.len(), 2);
    for id in &v0 {
        assert_eq!(xt(&mut c, id).await, xa);
    }
    let v1 = run_job(
        &mut c,
        spec(pb::job_spec::Kind::Variation(pb::VariationJob {
            latent_id: a.clone(),
            strength: 1.0,
            seed: 9,
            count: 1,
            out: out(3),
        })),
    )
    .await
    .result
    .unwrap()
    .latent_ids;
    let s9 = run_job(&mut c, sample_spec(1, 9, 3))
        .await
        .result
        .unwrap()
        .latent_ids;
    assert_eq!(xt(&mut c, &v1[0]).await, xt(&mut c, &s9[0]).await);
    let half = run_job(
        &mut c,
        spec(pb::job_spec::Kind::Variation(pb::VariationJob {
            latent_id: a.clone(),
            strength: 0.5,
            seed: 9,
            count: 1,
            out: out(3),
        })),
    )
    .await
    .result
    .unwrap()
    .latent_ids;
    let xh = xt(&mut c, &half[0]).await;
    assert!(xh != xa && (norm(&xh) - norm(&xa)).abs() / norm(&xa) < 0.05);
    let l = latent(&mut c, &v0[1]).await;
    let e = edited(&l);
    assert_eq!(
        (e.op.as_str(), e.parent_ids.clone()),
        ("variation", vec![a.clone()])
    );
    assert!(e.summary.contains(a.as_str()), "{}", e.summary);
    let p: serde_json::Value = serde_json::from_str(&e.params_json).unwrap();
    assert_eq!(
        (p["strength"].as_f64(), p["seed"].as_u64()),
        (Some(0.0), Some(9))
    );
    assert_eq!(l.preview_steps, 3);

    // Mix: a + 0.8·(b − c), rescaled to the parents' |w|-weighted mean norm (the
    // default) or to √d.
    let (xb, xc) = (xt(&mut c, b).await, xt(&mut c, cc).await);
    let want: Vec<f64> = (0..D)
        .map(|i| xa[i] as f64 + 0.8 * (xb[i] as f64 - xc[i] as f64))
        .collect();
    let rho = (norm(&xa) + 0.8 * norm(&xb) + 0.8 * norm(&xc)) / 2.6;
    let mut mixes = vec![];
    for (radius, rho, name) in [
        (pb::Radius::Unspecified, rho, "parents"),
        (pb::Radius::SqrtD, (D as f64).sqrt(), "sqrt-d"),
    ] {
        let m = run_job(
            &mut c,
            spec(pb::job_spec::Kind::Mix(pb::MixJob {
                terms: vec![
                    pb::MixTerm {
                        latent_id: a.clone(),
                        weight: 1.0,
                    },
                    pb::MixTerm {
                        latent_id: b.clone(),
                        weight: 0.8,
                    },
                    pb::MixTerm {
                        latent_id: cc.clone(),
                        weight: -0.8,
                    },
                ],
                expression: format!("{a} + 0.8*({b} - {cc})"),
                out: out(3),
                radius: radius as i32,
            })),
        )
        .await
        .result
        .unwrap()
        .latent_ids;
        let xm = xt(&mut c, &m[0]).await;
        assert!(
            (norm(&xm) - rho).abs() < 1e-3,
            "{name}: {} vs {rho}",
            norm(&xm)
        );
        assert!(max_diff(&xm, &to_norm(&want, rho)) < 1e-4, "{name}");
        let e = edited(&latent(&mut c, &m[0]).await);
        assert_eq!(e.parent_ids, vec![a.clone(), b.clone(), cc.clone()]);
        let p: serde_json::Value = serde_json::from_str(&e.params_json).unwrap();
        assert_eq!(p["radius"], name);
        mixes.push((m, xm));
    }
    let (m, xm) = mixes[0].clone();

    // Grid: the four corner cells are the corners exactly.
    let g = run_job(
        &mut c,
        spec(pb::job_spec::Kind::Grid(pb::GridJob {
            corners: vec![a.clone(), b.clone(), cc.clone(), dd.clone()],
            size: 3,
            save: vec![0, 2, 6, 8, 4],
            preview_steps: 3,
            out: None,
        })),
    )
    .await
    .result
    .unwrap();
    assert_eq!(g.frames.len(), 9);
    let saved: Vec<String> = [0, 2, 6, 8, 4]
        .iter()
        .map(|i| g.frames[*i].latent_id.clone())
        .collect();
    assert!(g.frames[1].latent_id.is_empty());
    for (id, corner) in saved.iter().zip([a, b, cc, dd]) {
        assert_eq!(xt(&mut c, id).await, xt(&mut c, corner).await);
    }
    let centre = xt(&mut c, &saved[4]).await;
    assert!((norm(&centre) - norm(&xa)).abs() / norm(&xa) < 0.05);

    // The parent filter lists a's direct children.
    let mut want_children: Vec<String> = v0
        .iter()
        .chain(&v1)
        .chain(&half)
        .chain(mixes.iter().flat_map(|(m, _)| m))
        .chain(&saved)
        .cloned()
        .collect();
    want_children.sort();
    assert_eq!(children(&mut c, a).await, want_children);
    assert_eq!(children(&mut c, cc).await.len(), 2 + 5);

    // Deleting a parent keeps the child and marks the parent deleted.
    c.delete_latent(pb::DeleteLatentRequest { id: cc.clone() })
        .await
        .unwrap();
    let e = edited(&latent(&mut c, &m[0]).await);
    assert_eq!(e.deleted_parent_ids, vec![cc.clone()]);
    assert_eq!(xt(&mut c, &m[0]).await, xm);

    // Lineage survives a restart.
    d.restart().await;
    let mut c = d.client().await;
    let e = edited(&latent(&mut c, &m[0]).await);
    assert_eq!(e.parent_ids, vec![a.clone(), b.clone(), cc.clone()]);
    assert_eq!(e.deleted_parent_ids, vec![cc.clone()]);
    assert_eq!(edited(&latent(&mut c, &v0[0]).await).op, "variation");
}

async fn direction_moves_along_the_tag_means(b: Backend) {
    let d = Daemon::builder().backend(b).start().await;
    let mut c = d.client().await;
    let ids = run_job(&mut c, sample_spec(5, 3, 3))
        .await
        .result
        .unwrap()
        .latent_ids;
    for (i, id) in ids.iter().enumerate() {
        let tag = if i < 2 { "sneaker" } else { "ankle-boot" };
        c.tag_latent(pb::TagLatentRequest {
            id: id.clone(),
            add: vec![tag.into()],
            remove: vec![],
        })
        .await
        .unwrap();
    }
    let mut xs = vec![];
    for id in &ids {
        xs.push(xt(&mut c, id).await);
    }
    let mean = |rows: &[Vec<f32>]| -> Vec<f64> {
        (0..D)
            .map(|i| rows.iter().map(|r| r[i] as f64).sum::<f64>() / rows.len() as f64)
            .collect()
    };
    let (from, to) = (mean(&xs[..2]), mean(&xs[2..]));
    // √d, and the default radius, the latent's own (weight 0 gives it back).
    let mut made = vec![];
    for (radius, rho) in [
        (pb::Radius::SqrtD, (D as f64).sqrt()),
        (pb::Radius::Unspecified, norm(&xs[0])),
    ] {
        let r = run_job(
            &mut c,
            spec(pb::job_spec::Kind::Direction(pb::DirectionJob {
                latent_id: ids[0].clone(),
                from_tag: "sneaker".into(),
                to_tag: "ankle-boot".into(),
                weights: vec![0.0, 1.5],
                out: out(3),
                radius: radius as i32,
            })),
        )
        .await
        .result
        .unwrap()
        .latent_ids;
        assert_eq!(r.len(), 2);
        for (id, w) in r.iter().zip([0.0, 1.5]) {
            let want: Vec<f64> = (0..D)
                .map(|i| xs[0][i] as f64 + w * (to[i] - from[i]))
                .collect();
            let got = xt(&mut c, id).await;
            assert!(
                max_diff(&got, &to_norm(&want, rho)) < 1e-4,
                "{radius:?}, weight {w}"
            );
        }
        made.push(r);
    }
    let r = &made[0];
    let e = edited(&latent(&mut c, &r[1]).await);
    assert_eq!(
        (e.op.as_str(), e.parent_ids.clone()),
        ("direction", vec![ids[0].clone()])
    );
    let p: serde_json::Value = serde_json::from_str(&e.params_json).unwrap();
    assert_eq!(
        (p["from_count"].as_u64(), p["to_count"].as_u64()),
        (Some(2), Some(3))
    );
}

async fn renoise_and_inpaint_edit_images_and_reencode_them(b: Backend) {
    let d = Daemon::builder().backend(b).start().await;
    let mut c = d.client().await;
    let img = png(32, 32, |x, y| ((x * 7 + y * 3) % 256) as u8);
    let e = run_job(
        &mut c,
        encode_spec(vec![("stripes.png".into(), img.clone())], 4),
    )
    .await
    .result
    .unwrap()
    .latent_ids[0]
        .clone();

    // Strength 0 returns the image itself; the result is a latent with that
    // image as its source, encoded at the plan's S.
    let r = run_job(
        &mut c,
        spec(pb::job_spec::Kind::Renoise(pb::RenoiseJob {
            input: Some(pb::renoise_job::Input::LatentId(e.clone())),
            strength: 0.0,
            sampler: Some(sampler(4)),
            seed: 1,
            count: 1,
            out: out(4),
            ..Default::default()
        })),
    )
    .await;
    assert_eq!(r.total_steps, 4 + 4);
    let r0 = r.result.unwrap().latent_ids[0].clone();
    assert_eq!(source(&mut c, &r0).await, source(&mut c, &e).await);
    let l = latent(&mut c, &r0).await;
    assert_eq!(l.encode_steps, 4);
    assert_eq!(edited(&l).parent_ids, vec![e.clone()]);

    // Strength 1 with η = 1 redraws: two seeds, two different images.
    let mut s = sampler(4);
    s.eta = 1.0;
    let r = run_job(
        &mut c,
        spec(pb::job_spec::Kind::Renoise(pb::RenoiseJob {
            input: Some(pb::renoise_job::Input::Image(img.clone())),
            image_name: "stripes.png".into(),
            strength: 1.0,
            sampler: Some(s),
            seed: 1,
            count: 2,
            out: out(4),
            ..Default::default()
        })),
    )
    .await
    .result
    .unwrap()
    .latent_ids;
    assert_ne!(source(&mut c, &r[0]).await, source(&mut c, &r[1]).await);
    let l = latent(&mut c, &r[0]).await;
    assert!(l.name.starts_with("renoise-stripes-"), "{}", l.name);
    let eo = edited(&l);
    assert!(eo.parent_ids.is_empty() && eo.summary.contains("stripes.png"));

    // Inpaint a latent: outside the rectangle the result is the latent's own
    // η = 0 decode at S; inside it is redrawn.
    let decode = pixels(
        &c.get_latent_image(pb::GetLatentImageRequest {
            id: e.clone(),
            kind: pb::LatentImageKind::Decode as i32,
            steps: 4,
        })
        .await
        .unwrap()
        .into_inner()
        .png,
    )
    .2;
    let r = run_job(
        &mut c,
        spec(pb::job_spec::Kind::Inpaint(pb::InpaintJob {
            input: Some(pb::inpaint_job::Input::LatentId(e.clone())),
            rects: vec![pb::Rect {
                x: 8,
                y: 8,
                width: 16,
                height: 12,
            }],
            sampler: Some(sampler(4)),
            seed: 5,
            count: 1,
            out: out(4),
            ..Default::default()
        })),
    )
    .await
    .result
    .unwrap()
    .latent_ids;
    let got = source(&mut c, &r[0]).await;
    let inside = |i: usize| {
        let (x, y) = (i % 32, i / 32);
        (8..24).contains(&x) && (8..20).contains(&y)
    };
    let out_diff = (0..1024)
        .filter(|i| !inside(*i))
        .map(|i| (got[i] as i32 - decode[i] as i32).abs())
        .max()
        .unwrap();
    assert!(out_diff <= 1, "kept region moved by {out_diff}");
    assert!((0..1024).any(|i| inside(i) && got[i] != decode[i]));
    let eo = edited(&latent(&mut c, &r[0]).await);
    let p: serde_json::Value = serde_json::from_str(&eo.params_json).unwrap();
    assert_eq!(p["rects"], serde_json::json!([[8, 8, 16, 12]]));
}

async fn bad_edits_name_the_field_and_store_nothing(b: Backend) {
    let d = Daemon::builder().backend(b).start().await;
    let mut c = d.client().await;
    let ids = run_job(&mut c, sample_spec(2, 1, 2))
        .await
        .result
        .unwrap()
        .latent_ids;
    let a = ids[0].clone();
    let before = c
        .list_latents(pb::ListLatentsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .total;
    use pb::job_spec::Kind as K;
    let variation = |id: &str, strength: f32| {
        K::Variation(pb::VariationJob {
            latent_id: id.into(),
            strength,
            seed: 0,
            count: 1,
            out: None,
        })
    };
    let inpaint = |r: pb::Rect| {
        K::Inpaint(pb::InpaintJob {
            input: Some(pb::inpaint_job::Input::LatentId(ids[0].clone())),
            rects: vec![r],
            sampler: Some(sampler(2)),
            ..Default::default()
        })
    };
    let cases: Vec<(K, Code, &str)> = vec![
        (
            variation("lat-999", 0.5),
            Code::NotFound,
            "variation.latent_id",
        ),
        (
            variation(&a, 1.5),
            Code::InvalidArgument,
            "variation.strength",
        ),
        (
            variation(&a, f32::NAN),
            Code::InvalidArgument,
            "variation.strength",
        ),
        (
            K::Mix(pb::MixJob {
                terms: vec![
                    pb::MixTerm {
                        latent_id: a.clone(),
                        weight: 1.0,
                    },
                    pb::MixTerm {
                        latent_id: ids[1].clone(),
                        weight: f64::NAN,
                    },
                ],
                ..Default::default()
            }),
            Code::InvalidArgument,
            "mix.terms[1].weight",
        ),
        (
            K::Mix(pb::MixJob::default()),
            Code::InvalidArgument,
            "mix.terms",
        ),
        (
            K::Mix(pb::MixJob {
                terms: vec![pb::MixTerm {
                    latent_id: a.clone(),
                    weight: 1.0,
                }],
                radius: 9,
                ..Default::default()
            }),
            Code::InvalidArgument,
            "mix.radius",
        ),
        (
            K::Direction(pb::DirectionJob {
                latent_id: a.clone(),
                from_tag: "sneaker".into(),
                to_tag: "ankle-boot".into(),
                ..Default::default()
            }),
            Code::InvalidArgument,
            "direction.from_tag",
        ),
        (
            inpaint(pb::Rect {
                x: 30,
                y: 0,
                width: 8,
                height: 8,
            }),
            Code::InvalidArgument,
            "inpaint.rects[0]",
        ),
        (
            inpaint(pb::Rect {
                x: 0,
                y: 0,
                width: 0,
                height: 8,
            }),
            Code::InvalidArgument,
            "inpaint.rects[0]",
        ),
        (
            K::Renoise(pb::RenoiseJob {
                input: Some(pb::renoise_job::Input::Image(b"not a png".to_vec())),
                image_name: "notes.txt".into(),
                strength: 0.5,
                sampler: Some(sampler(2)),
                ..Default::default()
            }),
            Code::InvalidArgument,
            "renoise.image (notes.txt)",
        ),
        (
            K::Renoise(pb::RenoiseJob {
                input: None,
                strength: 0.5,
                sampler: Some(sampler(2)),
                ..Default::default()
            }),
            Code::InvalidArgument,
            "renoise.input",
        ),
        (
            K::Grid(pb::GridJob {
                corners: vec![a.clone(), a.clone(), a.clone()],
                size: 3,
                ..Default::default()
            }),
            Code::InvalidArgument,
            "grid.corners",
        ),
        (
            K::Grid(pb::GridJob {
                corners: vec![a.clone(); 4],
                size: 10,
                ..Default::default()
            }),
            Code::InvalidArgument,
            "grid.size",
        ),
    ];
    for (k, code, field) in cases {
        let e = c
            .submit_job(submit(spec(k.clone())))
            .await
            .expect_err(field);
        assert_eq!(e.code(), code, "{field}: {}", e.message());
        assert!(e.message().starts_with(field), "{field}: {}", e.message());
        // The same check answers PreviewEdit.
        let e = c
            .preview_edit(pb::PreviewEditRequest {
                spec: Some(spec(k)),
                steps: 2,
                client_id: String::new(),
            })
            .await
            .expect_err(field);
        assert_eq!(e.code(), code, "{field}: {}", e.message());
    }
    let after = c
        .list_latents(pb::ListLatentsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .total;
    assert_eq!(before, after);
}

async fn previews_store_nothing_and_a_newer_one_supersedes_a_waiting_one(b: Backend) {
    let d = Daemon::builder().backend(b).start().await;
    let mut c = d.client().await;
    let a = run_job(&mut c, sample_spec(1, 1, 2))
        .await
        .result
        .unwrap()
        .latent_ids[0]
        .clone();
    let variation = |strength: f32, count: u32| {
        Some(spec(pb::job_spec::Kind::Variation(pb::VariationJob {
            latent_id: a.clone(),
            strength,
            seed: 3,
            count,
            out: None,
        })))
    };
    let jobs_before = c
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .jobs
        .len();
    let p = c
        .preview_edit(pb::PreviewEditRequest {
            spec: variation(0.4, 2),
            steps: 3,
            client_id: "solo".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p.images.len(), 2);
    assert_eq!(pixels(&p.images[0].png).0, 32);
    assert_ne!(p.images[0].png, p.images[1].png);
    let lib = c
        .list_latents(pb::ListLatentsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(lib.total, 1);
    let jobs = c
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert_eq!(jobs.len(), jobs_before);
    // Not an edit.
    let e = c
        .preview_edit(pb::PreviewEditRequest {
            spec: Some(sample_spec(1, 0, 2)),
            steps: 2,
            client_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("spec:"), "{}", e.message());

    // Keep the worker busy so previews wait; then two previews of client x
    // and one of client y: the older x is superseded, the others run.
    let blocker = c
        .submit_job(submit(sample_spec(64, 0, 1000)))
        .await
        .unwrap()
        .into_inner();
    wait_running(&mut c, &blocker.id).await;
    let send = |client: &str, strength: f32| {
        let mut c = c.clone();
        let req = pb::PreviewEditRequest {
            spec: variation(strength, 1),
            steps: 2,
            client_id: client.into(),
        };
        tokio::spawn(async move { c.preview_edit(req).await })
    };
    let x1 = send("x", 0.1);
    // The first must be queued before the second arrives; the worker is busy
    // for the whole of the blocker, so waiting here only orders the requests.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let y1 = send("y", 0.2);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let x2 = send("x", 0.3);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    c.cancel_job(pb::CancelJobRequest {
        id: blocker.id.clone(),
    })
    .await
    .unwrap();
    let e = x1.await.unwrap().unwrap_err();
    assert_eq!(e.code(), Code::Aborted, "{}", e.message());
    assert!(e.message().contains("superseded"), "{}", e.message());
    assert_eq!(y1.await.unwrap().unwrap().into_inner().images.len(), 1);
    assert_eq!(x2.await.unwrap().unwrap().into_inner().images.len(), 1);
}

// The tests above on both stores: sled and PostgreSQL (`NAME::sled`, `NAME::postgres`).
fn reencode(ids: &[&str], steps: u32, tags: &[&str]) -> pb::JobSpec {
    spec(pb::job_spec::Kind::Reencode(pb::ReencodeJob {
        latent_ids: ids.iter().map(|s| s.to_string()).collect(),
        steps,
        out: Some(pb::EditOutput {
            preview_steps: 2,
            tags: tags.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }),
    }))
}

async fn fingerprint(c: &mut Client) -> String {
    c.get_model_info(pb::GetModelInfoRequest {})
        .await
        .unwrap()
        .into_inner()
        .fingerprint
}

/// After a model change the library's latents are refused (with the way out named);
/// a reencode job carries them over: each new latent is of the loaded model, keeps
/// its parent's name and tags (plus the job's), records it as its parent, and works
/// where the old one is refused. An encoded latent is encoded again from its source
/// image (kept, so it can be reconstructed), a sampled one from its preview. The old
/// latents stay. `ddim reencode --other-models` takes the rest and skips the carried.
async fn reencode_carries_latents_of_another_model_over(b: Backend) {
    let mut d = Daemon::builder().backend(b).start().await;
    let mut c = d.client().await;
    let img = png(32, 32, |x, y| ((x * 8) ^ (y * 8)) as u8);
    let enc = run_job(&mut c, encode_spec(vec![("shirt.png".into(), img)], 4))
        .await
        .result
        .unwrap()
        .latent_ids;
    c.tag_latent(pb::TagLatentRequest {
        id: enc[0].clone(),
        add: vec!["keep".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let smp = run_job(&mut c, sample_spec(1, 3, 2))
        .await
        .result
        .unwrap()
        .latent_ids;
    let old_fp = fingerprint(&mut c).await;
    let (enc_old, smp_old) = (latent(&mut c, &enc[0]).await, latent(&mut c, &smp[0]).await);
    let enc_source = source(&mut c, &enc[0]).await;
    d.kill9();
    let other = init_model(&d.dir.path().join("other"), "test", 1, 32, 1);
    let d2 = Daemon::builder().model(&other).store_of(&d).start().await;
    let mut c = d2.client().await;
    let new_fp = fingerprint(&mut c).await;
    assert_ne!(old_fp, new_fp);
    let e = c
        .submit_job(submit(decode_spec(&enc[0], &[2])))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(
        e.message().contains(&format!("ddim reencode {}", enc[0])),
        "{}",
        e.message()
    );

    // Bad input names the field and queues nothing.
    let bad = [
        (
            reencode(&[], 4, &[]),
            Code::InvalidArgument,
            "reencode.latent_ids",
        ),
        (
            reencode(&[&enc[0], &enc[0]], 4, &[]),
            Code::InvalidArgument,
            "reencode.latent_ids[1]",
        ),
        (
            reencode(&["lat-99999"], 4, &[]),
            Code::NotFound,
            "reencode.latent_ids[0]",
        ),
        (
            reencode(&[&enc[0]], 5000, &[]),
            Code::InvalidArgument,
            "reencode.steps",
        ),
    ];
    for (spec, code, field) in bad {
        let e = c.submit_job(submit(spec)).await.unwrap_err();
        assert_eq!(e.code(), code, "{field}: {e:?}");
        assert!(e.message().contains(field), "{field}: {}", e.message());
    }

    let job = run_job(&mut c, reencode(&[&enc[0]], 4, &["v2", "keep"])).await;
    assert_eq!(job.state, pb::JobState::Done as i32, "{}", job.error);
    assert_eq!(job.kind, "reencode");
    let new = job.result.unwrap().latent_ids;
    assert_eq!(new.len(), 1);
    let l = latent(&mut c, &new[0]).await;
    assert_eq!(l.model_fingerprint, new_fp);
    assert_eq!(l.name, enc_old.name);
    assert_eq!(l.tags, vec!["keep".to_string(), "v2".to_string()]);
    assert_eq!(l.encode_steps, 4);
    let e = edited(&l);
    assert_eq!(
        (e.op.as_str(), e.parent_ids.clone()),
        ("reencode", vec![enc[0].clone()])
    );
    let params: serde_json::Value = serde_json::from_str(&e.params_json).unwrap();
    assert_eq!(params["model"], old_fp.as_str());
    assert_eq!(params["image"], "source");
    assert_eq!(source(&mut c, &new[0]).await, enc_source);
    // The new latent works where the old one is refused.
    let dec = run_job(&mut c, decode_spec(&new[0], &[2])).await;
    assert_eq!(dec.state, pb::JobState::Done as i32, "{}", dec.error);
    assert_eq!(children(&mut c, &enc[0]).await, new);

    // The CLI takes the latents of other models not carried over yet: the sampled one.
    let cli = ddim_tests::cli::Ddim { d: &d2 };
    let args = ["reencode", "--other-models", "--steps", "2", "--wait"];
    let out = cli.json(&args);
    assert_eq!(out["jobs"].as_array().map(Vec::len), Some(1), "{out}");
    let job = &out["jobs"][0];
    assert_eq!(job["state"], "done", "{out}");
    let ids = job["result"]["latent_ids"].as_array().unwrap().clone();
    assert_eq!(ids.len(), 1, "{out}");
    let l = latent(&mut c, ids[0].as_str().unwrap()).await;
    assert_eq!(edited(&l).parent_ids, smp);
    assert_eq!(l.name, smp_old.name);
    let params: serde_json::Value = serde_json::from_str(&edited(&l).params_json).unwrap();
    assert_eq!(params["image"], "preview");
    // Nothing is left; the old latents stay.
    assert_eq!(cli.json(&args)["jobs"], serde_json::json!([]));
    let total = c
        .list_latents(pb::ListLatentsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .total;
    assert_eq!(total, 4);
}

on_backends!(
    variation_mix_and_grid_follow_their_closed_forms_with_lineage,
    direction_moves_along_the_tag_means,
    renoise_and_inpaint_edit_images_and_reencode_them,
    bad_edits_name_the_field_and_store_nothing,
    previews_store_nothing_and_a_newer_one_supersedes_a_waiting_one,
    reencode_carries_latents_of_another_model_over,
);
