//! Bad input is refused with the right code and a message naming the field,
//! and changes nothing.
//!
//! Backends: every test here runs on sled and on PostgreSQL (`on_backends!` at the
//! end: `NAME::sled`, `NAME::postgres`; the PostgreSQL ones each on a database of
//! their own on one server per test binary). Left sled-only: none
//! (`latents_of_another_model_are_refused` starts the daemons of the other models
//! on the same store: `Builder::store_of`).
//!
//! Needs the binaries: `cargo build --workspace --bins`.
use ddim_proto::v1 as pb;
use ddim_tests::*;
use tonic::Code;
use tonic_types::StatusExt;

fn expect(
    r: Result<tonic::Response<impl std::fmt::Debug>, tonic::Status>,
    code: Code,
    field: &str,
) {
    let e = r.expect_err("expected an error");
    assert_eq!(e.code(), code, "{field}: {}", e.message());
    assert!(
        e.message().contains(field),
        "message {:?} does not name {field:?}",
        e.message()
    );
    // The standard google.rpc details name the same field, for clients that
    // read them rather than the message.
    if matches!(code, Code::InvalidArgument | Code::NotFound) {
        let v = e
            .get_details_bad_request()
            .unwrap_or_else(|| panic!("no BadRequest details on {:?}", e.message()));
        let f = &v.field_violations[0].field;
        assert!(
            !f.is_empty() && e.message().starts_with(&format!("{f}: ")),
            "violation field {f:?} vs message {:?}",
            e.message()
        );
    }
    if code == Code::NotFound {
        let r = e.get_details_resource_info().expect("ResourceInfo details");
        assert!(
            e.message().contains(&r.resource_name),
            "{r:?} vs {:?}",
            e.message()
        );
    }
}

fn with_sampler(steps: u32, eta: f32) -> pb::JobSpec {
    let mut s = sample_spec(1, 0, steps);
    if let Some(pb::job_spec::Kind::Sample(x)) = &mut s.kind {
        x.sampler.as_mut().unwrap().eta = eta;
    }
    s
}

async fn bad_requests_are_refused_and_change_nothing(b: Backend) {
    let d = Daemon::builder().backend(b).start().await;
    let mut c = d.client().await;
    let sampled = run_job(&mut c, sample_spec(2, 1, 2))
        .await
        .result
        .unwrap()
        .latent_ids;
    let (a, b) = (sampled[0].clone(), sampled[1].clone());
    let before_jobs = c
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .jobs
        .len();

    // Unknown ids.
    expect(
        c.get_latent(pb::GetLatentRequest {
            id: "lat-99999".into(),
        })
        .await,
        Code::NotFound,
        "lat-99999",
    );
    expect(
        c.get_latent(pb::GetLatentRequest {
            id: "banana".into(),
        })
        .await,
        Code::NotFound,
        "id",
    );
    expect(
        c.get_latent(pb::GetLatentRequest { id: String::new() })
            .await,
        Code::InvalidArgument,
        "id",
    );
    expect(
        c.get_job(pb::GetJobRequest {
            id: "job-424242".into(),
        })
        .await,
        Code::NotFound,
        "job-424242",
    );
    expect(
        c.cancel_job(pb::CancelJobRequest {
            id: "job-424242".into(),
        })
        .await,
        Code::NotFound,
        "id",
    );
    expect(
        c.export_latent(pb::ExportLatentRequest {
            id: "lat-77777".into(),
        })
        .await,
        Code::NotFound,
        "id",
    );
    expect(
        c.delete_latent(pb::DeleteLatentRequest {
            id: "lat-77777".into(),
        })
        .await,
        Code::NotFound,
        "id",
    );
    expect(
        c.submit_job(submit(decode_spec("lat-12345", &[2]))).await,
        Code::NotFound,
        "decode.latent_id",
    );
    expect(
        c.submit_job(submit(interpolate_spec(&a, "lat-12345", 3, 2, &[])))
            .await,
        Code::NotFound,
        "interpolate.b",
    );
    // S out of range, η < 0.
    expect(
        c.submit_job(submit(sample_spec(1, 0, 0))).await,
        Code::InvalidArgument,
        "sample.sampler.steps",
    );
    expect(
        c.submit_job(submit(sample_spec(1, 0, 1001))).await,
        Code::InvalidArgument,
        "sample.sampler.steps",
    );
    expect(
        c.submit_job(submit(with_sampler(5, -0.5))).await,
        Code::InvalidArgument,
        "sample.sampler.eta",
    );
    expect(
        c.submit_job(submit(with_sampler(5, f32::NAN))).await,
        Code::InvalidArgument,
        "sample.sampler.eta",
    );
    expect(
        c.submit_job(submit(decode_spec(&a, &[2, 5000]))).await,
        Code::InvalidArgument,
        "decode.steps[1]",
    );
    expect(
        c.submit_job(submit(decode_spec(&a, &[]))).await,
        Code::InvalidArgument,
        "decode.steps",
    );
    let mut neg = decode_spec(&a, &[2]);
    if let Some(pb::job_spec::Kind::Decode(x)) = &mut neg.kind {
        x.eta = -1.0;
    }
    expect(
        c.submit_job(submit(neg)).await,
        Code::InvalidArgument,
        "decode.eta",
    );
    let with_etas = |etas: &[f32]| {
        let mut s = decode_spec(&a, &[2]);
        if let Some(pb::job_spec::Kind::Decode(x)) = &mut s.kind {
            x.etas = etas.to_vec();
        }
        submit(s)
    };
    expect(
        c.submit_job(with_etas(&[0.0, f32::NAN])).await,
        Code::InvalidArgument,
        "decode.etas[1]",
    );
    expect(
        c.submit_job(with_etas(&[0.5, 0.0, 0.5])).await,
        Code::InvalidArgument,
        "decode.etas[2]",
    );
    expect(
        c.submit_job(with_etas(&[0.0; 9].map(|_| 0.1))).await,
        Code::InvalidArgument,
        "decode.etas",
    );
    expect(
        c.submit_job(submit(encode_spec(
            vec![("x".into(), png(8, 8, |_, _| 0))],
            0,
        )))
        .await,
        Code::InvalidArgument,
        "encode.steps",
    );
    expect(
        c.get_latent_image(pb::GetLatentImageRequest {
            id: a.clone(),
            kind: pb::LatentImageKind::Decode as i32,
            steps: 0,
        })
        .await,
        Code::InvalidArgument,
        "steps",
    );
    // Undecodable images.
    expect(
        c.submit_job(submit(encode_spec(
            vec![("x".into(), b"not an image".to_vec())],
            3,
        )))
        .await,
        Code::InvalidArgument,
        "encode.images[0].data",
    );
    expect(
        c.submit_job(submit(encode_spec(vec![], 3))).await,
        Code::InvalidArgument,
        "encode.images",
    );
    expect(
        c.submit_job(submit(reconstruct_spec(
            pb::reconstruct_job::Input::Image(vec![0x89, b'P', b'N', b'G']),
            &[2],
        )))
        .await,
        Code::InvalidArgument,
        "reconstruct.image",
    );
    let several = |ids: &[&str]| {
        submit(reconstruct_spec(
            pb::reconstruct_job::Input::Latents(pb::LatentIdList {
                ids: ids.iter().map(|s| s.to_string()).collect(),
            }),
            &[2],
        ))
    };
    expect(
        c.submit_job(several(&[])).await,
        Code::InvalidArgument,
        "reconstruct.latents.ids",
    );
    expect(
        c.submit_job(several(&["lat-1", "lat-1"])).await,
        Code::InvalidArgument,
        "reconstruct.latents.ids[1]",
    );
    expect(
        c.submit_job(several(&["lat-777"])).await,
        Code::NotFound,
        "reconstruct.latents.ids[0]",
    );
    // A sampled latent has no source image to reconstruct.
    expect(
        c.submit_job(several(&[&a])).await,
        Code::FailedPrecondition,
        "reconstruct.latents.ids[0]",
    );
    expect(
        c.submit_job(submit(reconstruct_spec(
            pb::reconstruct_job::Input::LatentId(a.clone()),
            &[2],
        )))
        .await,
        Code::FailedPrecondition,
        "reconstruct.latent_id",
    );
    expect(
        c.get_latent_image(pb::GetLatentImageRequest {
            id: a.clone(),
            kind: pb::LatentImageKind::Source as i32,
            steps: 0,
        })
        .await,
        Code::FailedPrecondition,
        "source",
    );
    // Frames.
    expect(
        c.submit_job(submit(interpolate_spec(&a, &b, 65, 2, &[])))
            .await,
        Code::InvalidArgument,
        "interpolate.frames",
    );
    expect(
        c.submit_job(submit(interpolate_spec(&a, &b, 1, 2, &[])))
            .await,
        Code::InvalidArgument,
        "interpolate.frames",
    );
    expect(
        c.submit_job(submit(interpolate_spec(&a, &b, 4, 2, &[4])))
            .await,
        Code::InvalidArgument,
        "interpolate.save_frames[0]",
    );
    expect(
        c.submit_job(submit(interpolate_spec(&a, &b, 4, 2, &[1, 1])))
            .await,
        Code::InvalidArgument,
        "interpolate.save_frames[1]",
    );
    let mut only = interpolate_spec(&a, &b, 4, 2, &[]);
    if let Some(pb::job_spec::Kind::Interpolate(ip)) = &mut only.kind {
        ip.only_saved_frames = true;
    }
    expect(
        c.submit_job(submit(only)).await,
        Code::InvalidArgument,
        "interpolate.save_frames",
    );
    // Structure.
    expect(
        c.submit_job(pb::SubmitJobRequest::default()).await,
        Code::InvalidArgument,
        "spec",
    );
    expect(
        c.submit_job(submit(sample_spec(0, 0, 2))).await,
        Code::InvalidArgument,
        "sample.count",
    );
    let mut p = submit(sample_spec(1, 0, 2));
    p.priority = 17;
    expect(c.submit_job(p).await, Code::InvalidArgument, "priority");
    expect(
        c.list_latents(pb::ListLatentsRequest {
            page_size: 5000,
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "page_size",
    );
    expect(
        c.list_latents(pb::ListLatentsRequest {
            page_token: "zz".into(),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "page_token",
    );
    expect(
        c.list_latents(pb::ListLatentsRequest {
            origin: "painted".into(),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "origin",
    );
    expect(
        c.list_jobs(pb::ListJobsRequest {
            states: vec![42],
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "states[0]",
    );
    expect(
        c.rename_latent(pb::RenameLatentRequest {
            id: a.clone(),
            name: "  ".into(),
        })
        .await,
        Code::InvalidArgument,
        "name",
    );
    expect(
        c.tag_latent(pb::TagLatentRequest {
            id: a.clone(),
            add: vec![String::new()],
            remove: vec![],
        })
        .await,
        Code::InvalidArgument,
        "add[0]",
    );
    expect(
        c.get_latent_image(pb::GetLatentImageRequest {
            id: a.clone(),
            kind: 9,
            steps: 0,
        })
        .await,
        Code::InvalidArgument,
        "kind",
    );

    // Nothing changed.
    let jobs = c
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert_eq!(jobs.len(), before_jobs);
    let lib = c
        .list_latents(pb::ListLatentsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(lib.total, 2);
    let l = c
        .get_latent(pb::GetLatentRequest { id: a.clone() })
        .await
        .unwrap()
        .into_inner();
    assert!(l.tags.is_empty() && l.name.starts_with("sample-1-0-job-"));
    let st = c
        .get_stats(pb::GetStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!((st.queued, st.running, st.failed), (0, 0, 0));
}

async fn a_latent_in_use_cannot_be_deleted(b: Backend) {
    let d = Daemon::builder().backend(b).start().await;
    let mut c = d.client().await;
    let ids = run_job(&mut c, sample_spec(1, 1, 2))
        .await
        .result
        .unwrap()
        .latent_ids;
    let blocker = c
        .submit_job(submit(sample_spec(4, 0, 1000)))
        .await
        .unwrap()
        .into_inner();
    wait_running(&mut c, &blocker.id).await;
    let dec = c
        .submit_job(submit(decode_spec(&ids[0], &[2])))
        .await
        .unwrap()
        .into_inner();
    expect(
        c.delete_latent(pb::DeleteLatentRequest { id: ids[0].clone() })
            .await,
        Code::FailedPrecondition,
        &dec.id,
    );
    c.cancel_job(pb::CancelJobRequest { id: dec.id })
        .await
        .unwrap();
    c.cancel_job(pb::CancelJobRequest { id: blocker.id })
        .await
        .unwrap();
    let r = c
        .delete_latent(pb::DeleteLatentRequest { id: ids[0].clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.jobs_deleted, 2); // the sample job that made it and the cancelled decode
}

/// Latents made by another model (other weights, or another shape) are
/// refused with FAILED_PRECONDITION.
async fn latents_of_another_model_are_refused(b: Backend) {
    let mut d = Daemon::builder().backend(b).start().await;
    let mut c = d.client().await;
    let ids = run_job(&mut c, sample_spec(2, 1, 2))
        .await
        .result
        .unwrap()
        .latent_ids;
    let fp = c
        .get_model_info(pb::GetModelInfoRequest {})
        .await
        .unwrap()
        .into_inner()
        .fingerprint;
    d.kill9();
    // Same shape, other weights.
    let other = init_model(&d.dir.path().join("other"), "test", 1, 32, 1);
    let d2 = Daemon::builder().model(&other).store_of(&d).start().await;
    let mut c2 = d2.client().await;
    let fp2 = c2
        .get_model_info(pb::GetModelInfoRequest {})
        .await
        .unwrap()
        .into_inner()
        .fingerprint;
    assert_ne!(fp, fp2);
    expect(
        c2.submit_job(submit(decode_spec(&ids[0], &[2]))).await,
        Code::FailedPrecondition,
        "made by model",
    );
    expect(
        c2.submit_job(submit(interpolate_spec(&ids[0], &ids[1], 3, 2, &[])))
            .await,
        Code::FailedPrecondition,
        "interpolate.a",
    );
    expect(
        c2.get_latent_image(pb::GetLatentImageRequest {
            id: ids[0].clone(),
            kind: pb::LatentImageKind::Decode as i32,
            steps: 2,
        })
        .await,
        Code::FailedPrecondition,
        "made by model",
    );
    // The library itself still works.
    assert_eq!(
        c2.list_latents(pb::ListLatentsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .total,
        2
    );
    drop(d2);
    // Another shape.
    let small = init_model(&d.dir.path().join("small"), "test", 1, 16, 0);
    let d3 = Daemon::builder().model(&small).store_of(&d).start().await;
    let mut c3 = d3.client().await;
    expect(
        c3.submit_job(submit(decode_spec(&ids[0], &[2]))).await,
        Code::FailedPrecondition,
        "shape",
    );
    assert_eq!(
        c3.list_jobs(pb::ListJobsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .jobs
            .len(),
        1
    );
}

/// A repeated S (or η) in a job's list is INVALID_ARGUMENT naming the repeated item,
/// in every job that takes a list; nothing is queued.
async fn repeated_list_items_are_refused(b: Backend) {
    let d = Daemon::builder().backend(b).start().await;
    let mut c = d.client().await;
    let a = run_job(&mut c, sample_spec(1, 0, 2))
        .await
        .result
        .unwrap()
        .latent_ids[0]
        .clone();
    let jobs_before = c
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .jobs
        .len();
    expect(
        c.submit_job(submit(decode_spec(&a, &[2, 3, 2]))).await,
        Code::InvalidArgument,
        "decode.steps[2]",
    );
    let mut etas = decode_spec(&a, &[2]);
    if let Some(pb::job_spec::Kind::Decode(x)) = &mut etas.kind {
        x.etas = vec![0.0, 0.0];
    }
    expect(
        c.submit_job(submit(etas)).await,
        Code::InvalidArgument,
        "decode.etas[1]",
    );
    let image = pb::reconstruct_job::Input::Image(png(32, 32, |x, _| x as u8 * 8));
    expect(
        c.submit_job(submit(reconstruct_spec(image.clone(), &[4, 4])))
            .await,
        Code::InvalidArgument,
        "reconstruct.steps[1]",
    );
    // Distinct values are accepted.
    c.submit_job(submit(reconstruct_spec(image, &[2, 4])))
        .await
        .expect("distinct S are accepted");
    let jobs_after = c
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .jobs
        .len();
    assert_eq!(jobs_after, jobs_before + 1);
}

// The tests above on both stores: sled and PostgreSQL (`NAME::sled`, `NAME::postgres`).
on_backends!(
    bad_requests_are_refused_and_change_nothing,
    a_latent_in_use_cannot_be_deleted,
    latents_of_another_model_are_refused,
    repeated_list_items_are_refused,
);
