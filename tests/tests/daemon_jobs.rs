//! Every job kind end to end through a real `ddimd serve`, the library RPCs,
//! the watch streams and dynamic batching.
//!
//! Backends: every test here runs on sled and on PostgreSQL (`on_backends!` at the
//! end: `NAME::sled`, `NAME::postgres`; the PostgreSQL ones each on a database of
//! their own on one server per test binary). Left sled-only: none.
//! `seed_images_on_first_start_only` restarts the daemon on the same store (a
//! database keeps its library as a folder does); the watch test's `queued`
//! position is sled's alone: a job waiting in the database has no position until
//! a daemon claims it (docs/scale-out.md, Limits).
//!
//! Needs the binaries: `cargo build --workspace --bins`.
use ddim_proto::v1 as pb;
use ddim_tests::*;

fn garment(seed: u8) -> Vec<u8> {
    png(28, 28, move |x, y| {
        if (6..22).contains(&x) && (4..24).contains(&y) {
            120 + seed
        } else {
            0
        }
    })
}

async fn encode_two(c: &mut Client) -> (pb::Job, Vec<String>) {
    let done = run_job(
        c,
        encode_spec(
            vec![("shirt".into(), garment(1)), ("boot".into(), garment(60))],
            4,
        ),
    )
    .await;
    let ids = done.result.as_ref().unwrap().latent_ids.clone();
    (done, ids)
}

/// x_T exported as .npy comes back in through an import job: the same values, the same
/// preview as a decode at the same S, origin `imported`; bad .npy is refused up front.
async fn import_round_trips_an_exported_latent(b: Backend) {
    let d = Daemon::builder().backend(b).start().await;
    let mut c = d.client().await;
    let s = run_job(&mut c, sample_spec(2, 5, 4)).await.result.unwrap();
    let reader = c.clone();
    let export = |id: String| {
        let mut c = reader.clone();
        async move {
            c.export_latent(pb::ExportLatentRequest { id })
                .await
                .unwrap()
                .into_inner()
                .npy
        }
    };
    let (a, b) = (
        export(s.latent_ids[0].clone()).await,
        export(s.latent_ids[1].clone()).await,
    );
    // Two rows in one file (numpy-style stacking): [2, 1, 32, 32].
    let (_, va) = npy_values(&a);
    let (_, vb) = npy_values(&b);
    let both: Vec<f32> = va.iter().chain(&vb).copied().collect();
    let stacked = npy_bytes(&[2, 1, 32, 32], &both);
    let spec = pb::JobSpec {
        kind: Some(pb::job_spec::Kind::Import(pb::ImportJob {
            latents: vec![
                pb::ImportInput {
                    npy: a.clone(),
                    name: "again".into(),
                    tags: vec!["imp".into()],
                },
                pb::ImportInput {
                    npy: stacked,
                    name: "pair".into(),
                    tags: vec![],
                },
            ],
            preview_steps: 4,
            spacing: 0,
        })),
    };
    let j = run_job(&mut c, spec).await;
    assert_eq!((j.kind.as_str(), j.total_steps), ("import", 4));
    let ids = j.result.unwrap().latent_ids;
    assert_eq!(ids.len(), 3);
    let l = c
        .get_latent(pb::GetLatentRequest { id: ids[0].clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (l.name.as_str(), l.tags.as_slice(), l.preview_steps),
        ("again", &["imp".to_string()][..], 4)
    );
    assert_eq!(
        l.origin.unwrap().kind.unwrap(),
        pb::origin::Kind::Imported(pb::ImportedOrigin {
            filename: "again".into()
        })
    );
    assert_eq!(
        npy_values(&export(ids[0].clone()).await).1,
        va,
        "the same x_T"
    );
    assert_eq!(
        npy_values(&export(ids[2].clone()).await).1,
        vb,
        "row 1 of the stack"
    );
    let names: Vec<String> = futures::future::join_all(ids[1..].iter().map(|id| {
        let mut c = c.clone();
        let id = id.clone();
        async move {
            c.get_latent(pb::GetLatentRequest { id })
                .await
                .unwrap()
                .into_inner()
                .name
        }
    }))
    .await;
    assert_eq!(names, ["pair-0", "pair-1"]);
    // Its preview is the sample itself (η = 0, same S).
    let png = |id: &str| {
        let mut c = reader.clone();
        let id = id.to_string();
        async move {
            c.get_latent_image(pb::GetLatentImageRequest {
                id,
                kind: 0,
                steps: 0,
            })
            .await
            .unwrap()
            .into_inner()
            .png
        }
    };
    assert_eq!(
        pixels(&png(&ids[0]).await),
        pixels(&png(&s.latent_ids[0]).await)
    );
    // Refused, naming the input: wrong shape, NaN, not a .npy.
    let bad = |npy: Vec<u8>| pb::SubmitJobRequest {
        spec: Some(pb::JobSpec {
            kind: Some(pb::job_spec::Kind::Import(pb::ImportJob {
                latents: vec![pb::ImportInput {
                    npy,
                    ..Default::default()
                }],
                ..Default::default()
            })),
        }),
        ..Default::default()
    };
    let mut nan = va.clone();
    nan[7] = f32::NAN;
    for (npy, want) in [
        (
            npy_bytes(&[1, 16, 16], &vec![0.0; 256]),
            "shape [1, 16, 16]",
        ),
        (npy_bytes(&[1, 32, 32], &nan), "value 7 is NaN"),
        (b"not numpy".to_vec(), "not a .npy"),
    ] {
        let e = c.submit_job(bad(npy)).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{}", e.message());
        assert!(
            e.message().starts_with("import.latents[0].npy: ") && e.message().contains(want),
            "{}",
            e.message()
        );
    }
}

/// Several latents reconstruct as one batch: per-image errors equal the
/// one-at-a-time runs, and the point carries their mean and standard error.
async fn reconstruct_several_latents_in_one_batch(b: Backend) {
    let d = Daemon::builder().backend(b).start().await;
    let mut c = d.client().await;
    let (_, ids) = encode_two(&mut c).await;
    let steps = [2, 5];
    let both = run_job(
        &mut c,
        reconstruct_spec(
            pb::reconstruct_job::Input::Latents(pb::LatentIdList { ids: ids.clone() }),
            &steps,
        ),
    )
    .await;
    assert_eq!(both.total_steps, 2 * (2 + 5));
    let both = both.result.unwrap();
    let mut alone = vec![];
    for id in &ids {
        let r = run_job(
            &mut c,
            reconstruct_spec(pb::reconstruct_job::Input::LatentId(id.clone()), &steps),
        )
        .await;
        alone.push(r.result.unwrap());
    }
    // The original and the image shown are the first latent's.
    assert_eq!(both.original, alone[0].original);
    for (k, p) in both.reconstruction.iter().enumerate() {
        assert_eq!((p.steps, p.images, p.image_mse.len()), (steps[k], 2, 2));
        for (i, a) in alone.iter().enumerate() {
            let single = &a.reconstruction[k];
            assert_eq!((single.images, single.mse_sem), (1, 0.0));
            let (x, y) = (p.image_mse[i], single.mse);
            assert!(
                (x - y).abs() <= 1e-4 * y.max(1e-9),
                "S={}: {x} vs {y}",
                p.steps
            );
        }
        let mean = (p.image_mse[0] + p.image_mse[1]) / 2.0;
        assert!((p.mse - mean).abs() < 1e-12, "{p:?}");
        // Two images: sem = |a − b| / 2.
        let sem = (p.image_mse[0] - p.image_mse[1]).abs() / 2.0;
        assert!((p.mse_sem - sem).abs() < 1e-12 && sem > 0.0, "{p:?}");
        assert_eq!(
            pixels(&p.image.as_ref().unwrap().png),
            pixels(&alone[0].reconstruction[k].image.as_ref().unwrap().png)
        );
    }
}

async fn encode_keeps_source_preview_and_exports_npy(b: Backend) {
    let d = Daemon::builder().backend(b).start().await;
    let mut c = d.client().await;
    let (job, ids) = encode_two(&mut c).await;
    assert_eq!(job.kind, "encode");
    assert_eq!((job.step, job.total_steps, job.attempts), (8, 8, 1));
    let r = job.result.unwrap();
    assert_eq!((ids.len(), r.images.len()), (2, 2));
    let l = c
        .get_latent(pb::GetLatentRequest { id: ids[0].clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            l.name.as_str(),
            l.shape.as_slice(),
            l.encode_steps,
            l.preview_steps
        ),
        ("shirt", &[1, 32, 32][..], 4, 4)
    );
    assert_eq!(l.encode_spacing(), pb::Spacing::Uniform);
    assert_eq!(l.encode_solver(), pb::Solver::Ddim);
    assert_eq!(l.job_id, job.id);
    // The inversion's solver is recorded with the latent.
    let mut dpm = encode_spec(vec![("shirt".into(), garment(1))], 4);
    if let Some(pb::job_spec::Kind::Encode(e)) = dpm.kind.as_mut() {
        e.solver = pb::Solver::Dpmpp2m as i32;
    }
    let dpm = run_job(&mut c, dpm).await.result.unwrap().latent_ids;
    let by_dpm = c
        .get_latent(pb::GetLatentRequest { id: dpm[0].clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_dpm.encode_solver(), pb::Solver::Dpmpp2m);
    match l.origin.unwrap().kind.unwrap() {
        pb::origin::Kind::Encoded(e) => assert!(e.has_source && e.filename == "shirt"),
        o => panic!("origin {o:?}"),
    }
    // The source is the input padded to 32×32 with its background.
    let src = c
        .get_latent_image(pb::GetLatentImageRequest {
            id: ids[0].clone(),
            kind: pb::LatentImageKind::Source as i32,
            steps: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let (w, h, px) = pixels(&src.png);
    assert_eq!((w, h, src.width, src.height), (32, 32, 32, 32));
    assert_eq!((px[0], px[16 * 32 + 16]), (0, 121));
    // The preview equals the encode job's image; DECODE at the same S reproduces it.
    let prev = c
        .get_latent_image(pb::GetLatentImageRequest {
            id: ids[0].clone(),
            kind: 0,
            steps: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(prev.png, r.images[0].png);
    let dec = c
        .get_latent_image(pb::GetLatentImageRequest {
            id: ids[0].clone(),
            kind: pb::LatentImageKind::Decode as i32,
            steps: 4,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pixels(&dec.png), pixels(&prev.png));
    // Export: float32 [1, 1, 32, 32].
    let e = c
        .export_latent(pb::ExportLatentRequest { id: ids[1].clone() })
        .await
        .unwrap()
        .into_inner();
    let (header, values) = npy_values(&e.npy);
    assert!(
        header.contains("'<f4'") && header.contains("(1, 1, 32, 32)"),
        "{header}"
    );
    assert_eq!(values.len(), 1024);
    assert!(values.iter().all(|v| v.is_finite()));
    assert_eq!(e.latent.unwrap().name, "boot");
}

async fn sample_decode_interpolate_reconstruct(b: Backend) {
    let d = Daemon::builder().backend(b).start().await;
    let mut c = d.client().await;
    // sample
    let s = run_job(&mut c, sample_spec(3, 42, 5)).await;
    // The job names the daemon that ran it: on sled its address; on PostgreSQL
    // its id (HOST:PID) as GetStats lists it. GetJob and ListJobs say so too.
    let me = match b {
        Backend::Sled => d.addr.clone(),
        Backend::Postgres => {
            let st = c
                .get_stats(pb::GetStatsRequest {})
                .await
                .unwrap()
                .into_inner();
            assert_eq!(st.daemons.len(), 1, "{:?}", st.daemons);
            assert!(st.daemons[0].id.ends_with(&format!(":{}", d.pid())));
            st.daemons[0].id.clone()
        }
    };
    assert_eq!(s.ran_by, me);
    let listed = c
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let l = listed.jobs.iter().find(|j| j.id == s.id).expect("listed");
    assert_eq!(l.ran_by, me);
    let sr = s.result.unwrap();
    assert_eq!((sr.latent_ids.len(), sr.images.len()), (3, 3));
    let l = c
        .get_latent(pb::GetLatentRequest {
            id: sr.latent_ids[2].clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        l.origin.unwrap().kind.unwrap(),
        pb::origin::Kind::Sampled(pb::SampledOrigin { seed: 42, index: 2 })
    );
    // The default name carries the job, so two jobs with seed 42 do not
    // make two latents called sample-42-2.
    assert_eq!(
        (l.name.clone(), l.preview_steps, l.encode_steps),
        (format!("sample-42-2-{}", s.id), 5, 0)
    );
    let again = run_job(&mut c, sample_spec(3, 42, 5)).await;
    let l2 = c
        .get_latent(pb::GetLatentRequest {
            id: again.result.unwrap().latent_ids[2].clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(l2.name, l.name);
    // decode at several S: S = 5 reproduces the sample (η = 0).
    let dj = run_job(&mut c, decode_spec(&sr.latent_ids[0], &[2, 5])).await;
    assert_eq!(dj.latent_ids, vec![sr.latent_ids[0].clone()]);
    let dr = dj.result.unwrap();
    assert_eq!(
        dr.decodes.iter().map(|x| x.steps).collect::<Vec<_>>(),
        vec![2, 5]
    );
    assert_eq!(
        pixels(&dr.decodes[1].image.as_ref().unwrap().png),
        pixels(&sr.images[0].png)
    );
    assert_eq!(dj.total_steps, 7);
    // several η: one decode per (η, S), η-major, on the same noise; η = 0 is the above.
    let mut grid = decode_spec(&sr.latent_ids[0], &[2, 5]);
    if let Some(pb::job_spec::Kind::Decode(x)) = &mut grid.kind {
        x.etas = vec![0.0, 1.0];
        x.seed = 7;
    }
    let gj = run_job(&mut c, grid.clone()).await;
    assert_eq!(gj.total_steps, 14);
    let gr = gj.result.unwrap();
    assert_eq!(
        gr.decodes
            .iter()
            .map(|x| (x.eta, x.steps))
            .collect::<Vec<_>>(),
        vec![(0.0, 2), (0.0, 5), (1.0, 2), (1.0, 5)]
    );
    let px = |d: &pb::DecodeResult| pixels(&d.image.as_ref().unwrap().png);
    assert_eq!(px(&gr.decodes[1]), px(&dr.decodes[1]));
    assert_ne!(px(&gr.decodes[3]), px(&gr.decodes[1]), "η = 1 adds noise");
    // The same seed gives the same stochastic decodes.
    let again = run_job(&mut c, grid).await.result.unwrap();
    assert_eq!(px(&again.decodes[3]), px(&gr.decodes[3]));
    // interpolate: 5 frames, endpoints are the two samples, frames 1 and 3 saved.
    let ij = run_job(
        &mut c,
        interpolate_spec(&sr.latent_ids[0], &sr.latent_ids[1], 5, 5, &[1, 3]),
    )
    .await;
    let ir = ij.result.unwrap();
    assert_eq!(ir.frames.len(), 5);
    assert_eq!(
        ir.frames.iter().map(|f| f.alpha).collect::<Vec<_>>(),
        vec![0.0, 0.25, 0.5, 0.75, 1.0]
    );
    assert_eq!(
        pixels(&ir.frames[0].image.as_ref().unwrap().png),
        pixels(&sr.images[0].png)
    );
    assert_eq!(
        pixels(&ir.frames[4].image.as_ref().unwrap().png),
        pixels(&sr.images[1].png)
    );
    assert_eq!(ir.latent_ids.len(), 2);
    assert_eq!(ir.frames[1].latent_id, ir.latent_ids[0]);
    assert!(ir.frames[2].latent_id.is_empty());
    let saved = c
        .get_latent(pb::GetLatentRequest {
            id: ir.latent_ids[1].clone(),
        })
        .await
        .unwrap()
        .into_inner();
    match saved.origin.unwrap().kind.unwrap() {
        pb::origin::Kind::Interpolated(o) => {
            assert_eq!(
                (o.a, o.b, o.alpha),
                (sr.latent_ids[0].clone(), sr.latent_ids[1].clone(), 0.75)
            );
        }
        o => panic!("origin {o:?}"),
    }
    // The saved frame's preview is the frame.
    let p = c
        .get_latent_image(pb::GetLatentImageRequest {
            id: ir.latent_ids[1].clone(),
            kind: 0,
            steps: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p.png, ir.frames[3].image.as_ref().unwrap().png);
    // Saving one frame decodes only that frame: the same image, α and origin.
    let mut one = interpolate_spec(&sr.latent_ids[0], &sr.latent_ids[1], 5, 5, &[3]);
    if let Some(pb::job_spec::Kind::Interpolate(ip)) = &mut one.kind {
        ip.only_saved_frames = true;
    }
    let oj = run_job(&mut c, one).await;
    assert_eq!(oj.total_steps, 5);
    let or = oj.result.unwrap();
    assert_eq!((or.frames.len(), or.latent_ids.len()), (1, 1));
    let f = &or.frames[0];
    assert_eq!(
        (f.index, f.alpha, &f.latent_id),
        (3, 0.75, &or.latent_ids[0])
    );
    assert_eq!(
        pixels(&f.image.as_ref().unwrap().png),
        pixels(&ir.frames[3].image.as_ref().unwrap().png)
    );
    // reconstruct from an uploaded image and from an encoded latent.
    let rj = run_job(
        &mut c,
        reconstruct_spec(pb::reconstruct_job::Input::Image(garment(3)), &[2, 4]),
    )
    .await;
    let rr = rj.result.unwrap();
    assert_eq!(
        rr.reconstruction
            .iter()
            .map(|p| p.steps)
            .collect::<Vec<_>>(),
        vec![2, 4]
    );
    for p in &rr.reconstruction {
        assert!(p.mse.is_finite() && (0.0..=1.0).contains(&p.mse), "{p:?}");
        assert_eq!(pixels(&p.image.as_ref().unwrap().png).0, 32);
    }
    assert_eq!(pixels(&rr.original.unwrap().png).2[16 * 32 + 16], 123);
    assert_eq!(rj.total_steps, 12);
    let (_, enc) = encode_two(&mut c).await;
    let rj = run_job(
        &mut c,
        reconstruct_spec(pb::reconstruct_job::Input::LatentId(enc[0].clone()), &[3]),
    )
    .await;
    assert_eq!(rj.result.unwrap().reconstruction.len(), 1);
    // Stats saw all of it.
    let st = c
        .get_stats(pb::GetStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!((st.done, st.failed, st.queued, st.running), (10, 0, 0, 0));
    assert_eq!(st.latents, 3 + 3 + 2 + 1 + 2);
    assert!(
        st.images_per_second > 0.0 && st.mean_queue_wait_ms >= 0.0,
        "{st:?}"
    );
    assert_eq!((st.max_queue, st.max_batch), (1000, 16));
}

async fn library_list_rename_tag_delete_and_watch(b: Backend) {
    let d = Daemon::builder().backend(b).start().await;
    let mut c = d.client().await;
    let mut lib = c
        .watch_library(pb::WatchLibraryRequest {})
        .await
        .unwrap()
        .into_inner();
    let s = run_job(&mut c, sample_spec(5, 1, 2)).await;
    let ids = s.result.unwrap().latent_ids;
    for id in &ids {
        let ev = lib.message().await.unwrap().unwrap();
        assert_eq!((ev.kind(), &ev.id), (pb::library_event::Kind::Added, id));
    }
    let (_, enc) = encode_two(&mut c).await;
    for _ in 0..2 {
        lib.message().await.unwrap().unwrap();
    }
    // Newest first, paged.
    let p1 = c
        .list_latents(pb::ListLatentsRequest {
            page_size: 4,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p1.total, 7);
    assert_eq!(
        p1.latents.iter().map(|l| l.id.clone()).collect::<Vec<_>>(),
        vec![
            enc[1].clone(),
            enc[0].clone(),
            ids[4].clone(),
            ids[3].clone()
        ]
    );
    let p2 = c
        .list_latents(pb::ListLatentsRequest {
            page_size: 4,
            page_token: p1.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        p2.latents.iter().map(|l| l.id.clone()).collect::<Vec<_>>(),
        vec![ids[2].clone(), ids[1].clone(), ids[0].clone()]
    );
    assert!(p2.next_page_token.is_empty());
    // Filters.
    let f = |name: &str, tag: &str, origin: &str| pb::ListLatentsRequest {
        name_contains: name.into(),
        tag: tag.into(),
        origin: origin.into(),
        ..Default::default()
    };
    assert_eq!(
        c.list_latents(f("", "", "encoded"))
            .await
            .unwrap()
            .into_inner()
            .total,
        2
    );
    assert_eq!(
        c.list_latents(f("SAMPLE-1", "", ""))
            .await
            .unwrap()
            .into_inner()
            .total,
        5
    );
    // Rename and tag.
    let r = c
        .rename_latent(pb::RenameLatentRequest {
            id: ids[0].clone(),
            name: "Favourite Coat".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.name, "Favourite Coat");
    let ev = lib.message().await.unwrap().unwrap();
    assert_eq!(
        (ev.kind(), ev.latent.unwrap().name),
        (
            pb::library_event::Kind::Changed,
            "Favourite Coat".to_string()
        )
    );
    let t = c
        .tag_latent(pb::TagLatentRequest {
            id: ids[0].clone(),
            add: vec!["best".into(), "coat".into()],
            remove: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(t.tags, vec!["best", "coat"]);
    let t = c
        .tag_latent(pb::TagLatentRequest {
            id: ids[0].clone(),
            add: vec!["warm".into()],
            remove: vec!["best".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(t.tags, vec!["coat", "warm"]);
    lib.message().await.unwrap().unwrap();
    lib.message().await.unwrap().unwrap();
    let hit = c
        .list_latents(f("coat", "warm", "sampled"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((hit.total, hit.latents[0].id.clone()), (1, ids[0].clone()));
    // Delete: a decode job of ids[4] belongs only to it; the sample job made others too.
    let dj = run_job(&mut c, decode_spec(&ids[4], &[2])).await;
    let jobs = c
        .list_jobs(pb::ListJobsRequest {
            latent_id: ids[4].clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        jobs.jobs.iter().map(|j| j.id.clone()).collect::<Vec<_>>(),
        vec![dj.id.clone(), s.id.clone()]
    );
    let del = c
        .delete_latent(pb::DeleteLatentRequest { id: ids[4].clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(del.jobs_deleted, 1);
    let ev = lib.message().await.unwrap().unwrap();
    assert_eq!(
        (ev.kind(), ev.id.clone(), ev.latent.is_none()),
        (pb::library_event::Kind::Deleted, ids[4].clone(), true)
    );
    let e = c
        .get_job(pb::GetJobRequest { id: dj.id.clone() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    assert!(c
        .get_job(pb::GetJobRequest { id: s.id.clone() })
        .await
        .is_ok());
    assert_eq!(
        c.get_latent(pb::GetLatentRequest { id: ids[4].clone() })
            .await
            .unwrap_err()
            .code(),
        tonic::Code::NotFound
    );
    assert_eq!(
        c.list_latents(f("", "", ""))
            .await
            .unwrap()
            .into_inner()
            .total,
        6
    );
}

async fn watch_job_reports_position_start_progress_previews_and_result(b: Backend) {
    let d = Daemon::builder().backend(b).start().await;
    let mut c = d.client().await;
    // A long job keeps the worker busy so the next one waits in the queue.
    let blocker = c
        .submit_job(submit(sample_spec(4, 0, 400)))
        .await
        .unwrap()
        .into_inner();
    wait_running(&mut c, &blocker.id).await;
    let job = c
        .submit_job(submit(sample_spec(1, 5, 6)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(job.state(), pb::JobState::Queued);
    let mut s = c
        .watch_job(pb::WatchJobRequest {
            id: job.id.clone(),
            preview_every: 2,
        })
        .await
        .unwrap()
        .into_inner();
    let mut seen = vec![];
    let mut steps = vec![];
    let mut previews = vec![];
    let finished = loop {
        let ev = tokio::time::timeout(TIMEOUT, s.message())
            .await
            .unwrap()
            .unwrap()
            .expect("event");
        assert_eq!(ev.job_id, job.id);
        match ev.event.unwrap() {
            pb::job_event::Event::QueuedPosition(p) => {
                seen.push(format!("queued {p}"));
                // Cancel the blocker once we know we are waiting behind it.
                let _ = c
                    .cancel_job(pb::CancelJobRequest {
                        id: blocker.id.clone(),
                    })
                    .await;
            }
            pb::job_event::Event::Started(st) => seen.push(format!("started {}", st.attempt)),
            pb::job_event::Event::Progress(p) => {
                assert_eq!(p.total, 6);
                assert!(p.eta_seconds >= 0.0);
                steps.push(p.step);
                if let Some(img) = p.preview {
                    assert_eq!(pixels(&img.png).0, 32);
                    previews.push(p.step);
                }
            }
            pb::job_event::Event::Finished(j) => break j,
        }
    };
    // On PostgreSQL too: a job waiting in the database has its place there (the
    // blocker runs, so none is ahead), and once claimed the same place locally.
    assert_eq!(seen, ["queued 0", "started 1"]);
    assert_eq!(steps, vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(previews, vec![2, 4, 6]);
    assert_eq!(finished.state(), pb::JobState::Done);
    assert_eq!(finished.result.unwrap().latent_ids.len(), 1);
    // Watching a finished job gives its end at once.
    let mut s = c
        .watch_job(pb::WatchJobRequest {
            id: job.id.clone(),
            preview_every: 0,
        })
        .await
        .unwrap()
        .into_inner();
    match s.message().await.unwrap().unwrap().event.unwrap() {
        pb::job_event::Event::Finished(j) => assert_eq!(j.state(), pb::JobState::Done),
        e => panic!("{e:?}"),
    }
    assert!(s.message().await.unwrap().is_none());
    let b = c
        .get_job(pb::GetJobRequest { id: blocker.id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(b.state(), pb::JobState::Cancelled);
    // A cancelled job keeps the step it stopped at (it was running, so at
    // least one model call was made, and it did not finish).
    assert!(
        b.step >= 1 && b.step < b.total_steps,
        "stopped at {}/{}",
        b.step,
        b.total_steps
    );
}

/// Per-sample seeds: a job's latents and images do not depend on what it was
/// batched with.
async fn batching_does_not_change_results(b: Backend) {
    let d = Daemon::builder()
        .backend(b)
        .args(&["--max-wait-ms", "200", "--max-batch", "8"])
        .start()
        .await;
    let mut c = d.client().await;
    let alone = run_job(&mut c, sample_spec(2, 7, 8)).await;
    // Queue three compatible jobs behind a blocker of another S, so they run as one batch.
    let blocker = c
        .submit_job(submit(sample_spec(1, 0, 300)))
        .await
        .unwrap()
        .into_inner();
    wait_running(&mut c, &blocker.id).await;
    let mut ids = vec![];
    for (count, seed) in [(3, 9), (2, 7), (1, 11)] {
        ids.push(
            c.submit_job(submit(sample_spec(count, seed, 8)))
                .await
                .unwrap()
                .into_inner()
                .id,
        );
    }
    c.cancel_job(pb::CancelJobRequest { id: blocker.id })
        .await
        .unwrap();
    let mut done = vec![];
    for id in &ids {
        done.push(wait_job(&mut c, id).await);
    }
    let log = d.log_text();
    assert!(
        log.contains(&format!("jobs={}", ids.join(","))),
        "the three jobs did not run as one batch:\n{log}"
    );
    let batched = done[1].result.clone().unwrap();
    let alone = alone.result.unwrap();
    for i in 0..2 {
        let a = c
            .export_latent(pb::ExportLatentRequest {
                id: alone.latent_ids[i].clone(),
            })
            .await
            .unwrap()
            .into_inner();
        let b = c
            .export_latent(pb::ExportLatentRequest {
                id: batched.latent_ids[i].clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            npy_values(&a.npy).1,
            npy_values(&b.npy).1,
            "x_T of sample {i}"
        );
        assert_eq!(
            pixels(&alone.images[i].png),
            pixels(&batched.images[i].png),
            "image of sample {i}"
        );
    }
    // And the batch partners are different samples.
    assert_ne!(
        pixels(&done[0].result.as_ref().unwrap().images[0].png),
        pixels(&alone.images[0].png)
    );
}

async fn idempotency_key_model_info_and_priorities(b: Backend) {
    let d = Daemon::builder().backend(b).start().await;
    let mut c = d.client().await;
    let info = c
        .get_model_info(pb::GetModelInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            info.num_train_timesteps,
            info.sample_shape.as_slice(),
            info.device.as_str()
        ),
        (1000, &[1, 32, 32][..], "cpu")
    );
    assert_eq!(
        (info.beta_schedule.as_str(), info.prediction_type.as_str()),
        ("linear", "epsilon")
    );
    assert!(
        info.parameters > 1000
            && info.fingerprint.len() == 16
            && info.config_json.contains("UNet2DModel")
    );
    let mut req = submit(sample_spec(1, 3, 2));
    req.idempotency_key = "once".into();
    let a = c.submit_job(req.clone()).await.unwrap().into_inner();
    let b = c.submit_job(req.clone()).await.unwrap().into_inner();
    assert_eq!(a.id, b.id);
    wait_job(&mut c, &a.id).await;
    let again = c.submit_job(req).await.unwrap().into_inner();
    assert_eq!(
        (again.id.clone(), again.state()),
        (a.id.clone(), pb::JobState::Done)
    );
    assert_eq!(
        c.list_jobs(pb::ListJobsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .jobs
            .len(),
        1
    );
    // Interactive jobs overtake queued batch jobs.
    let blocker = c
        .submit_job(submit(sample_spec(2, 0, 300)))
        .await
        .unwrap()
        .into_inner();
    wait_running(&mut c, &blocker.id).await;
    let mut batch = submit(sample_spec(1, 1, 3));
    batch.priority = pb::Priority::Batch as i32;
    let slow = c.submit_job(batch).await.unwrap().into_inner();
    let fast = c
        .submit_job(submit(sample_spec(1, 2, 4)))
        .await
        .unwrap()
        .into_inner();
    let queued = c
        .list_jobs(pb::ListJobsRequest {
            states: vec![pb::JobState::Queued as i32],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(queued.jobs.len(), 2);
    c.cancel_job(pb::CancelJobRequest { id: blocker.id })
        .await
        .unwrap();
    let (f, s) = (
        wait_job(&mut c, &fast.id).await,
        wait_job(&mut c, &slow.id).await,
    );
    assert!(
        f.started_unix_ms <= s.started_unix_ms && f.finished_unix_ms <= s.started_unix_ms,
        "{f:?} {s:?}"
    );
}

/// Many clients submitting at once while the worker commits: every job
/// completes (sled 0.34 deadlocked here when flushes ran beside transactions).
async fn concurrent_submits_all_complete(b: Backend) {
    let d = Daemon::builder().backend(b).start().await;
    let tasks: Vec<_> = (0..24u64)
        .map(|i| {
            let addr = d.addr.clone();
            tokio::spawn(async move {
                let mut c = connect(&addr, None).await;
                run_job(&mut c, sample_spec(1, 100 + i, 3)).await
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let mut c = d.client().await;
    let st = c
        .get_stats(pb::GetStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!((st.done, st.latents), (24, 24));
}

/// `--seed-images` fills an empty library once; `--log-format json` logs JSON.
async fn seed_images_on_first_start_only(b: Backend) {
    let file = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz";
    if !std::path::Path::new(file).exists() {
        eprintln!("{file} is missing (apt-get install dataset-fashion-mnist): skipping");
        return;
    }
    let flags = [
        "--seed-images",
        "3",
        "--seed-steps",
        "2",
        "--log-format",
        "json",
    ];
    let mut d = Daemon::builder().args(&flags).backend(b).start().await;
    let mut c = d.client().await;
    // The seed job is submitted right after the model loads.
    let until = std::time::Instant::now() + TIMEOUT;
    let jobs = loop {
        let jobs = c
            .list_jobs(pb::ListJobsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .jobs;
        if !jobs.is_empty() || std::time::Instant::now() > until {
            break jobs;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(jobs.len(), 1);
    assert_eq!(
        (jobs[0].kind.as_str(), jobs[0].priority()),
        ("encode", pb::Priority::Batch)
    );
    let done = wait_job(&mut c, &jobs[0].id).await;
    assert_eq!(done.state(), pb::JobState::Done, "{}", done.error);
    let lib = c
        .list_latents(pb::ListLatentsRequest {
            tag: "fashion-mnist".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(lib.total, 3);
    assert_eq!(lib.latents[2].name, "fashion-mnist-test-0");
    // Each seeded image carries its class (t10k-labels: 9, 2, 1 → ankle-boot,
    // pullover, trouser), so a direction edit `sneaker → ankle-boot` works on
    // a fresh install.
    let has = |i: usize, t: &str| lib.latents[i].tags.iter().any(|x| x == t);
    assert!(has(2, "ankle-boot") && has(1, "pullover") && has(0, "trouser"));
    let src = c
        .get_latent_image(pb::GetLatentImageRequest {
            id: lib.latents[2].id.clone(),
            kind: pb::LatentImageKind::Source as i32,
            steps: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let (w, h, px) = pixels(&src.png);
    assert_eq!((w, h), (32, 32));
    assert!(
        px[..32].iter().all(|p| *p == 0),
        "padding rows are background"
    );
    assert!(px.iter().any(|p| *p > 100), "the garment is there");
    // Not seeded again on the next start.
    d.restart().await;
    let mut c = d.client().await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(
        c.list_jobs(pb::ListJobsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .jobs
            .len(),
        1
    );
    let log = d.log_text();
    let json_lines: Vec<&str> = log.lines().filter(|l| l.starts_with('{')).collect();
    assert!(json_lines.len() > 3, "{log}");
    assert!(json_lines.iter().all(|l| l.ends_with('}')));
    assert!(
        log.contains("\"message\":\"queued the seed images\""),
        "{log}"
    );
}

// The tests above on both stores: sled and PostgreSQL (`NAME::sled`, `NAME::postgres`).
on_backends!(
    reconstruct_several_latents_in_one_batch,
    encode_keeps_source_preview_and_exports_npy,
    watch_job_reports_position_start_progress_previews_and_result,
    batching_does_not_change_results,
    seed_images_on_first_start_only,
    import_round_trips_an_exported_latent,
    sample_decode_interpolate_reconstruct,
    library_list_rename_tag_delete_and_watch,
    idempotency_key_model_info_and_priorities,
    concurrent_submits_all_complete,
);
