//! Bearer tokens, server reflection (v1 and v1alpha), message limits and TLS.
//!
//! Needs the binaries: `cargo build --workspace --bins`.
use ddim_proto::v1 as pb;
use ddim_tests::*;
use std::process::Command;
use tonic::Code;

#[tokio::test(flavor = "multi_thread")]
async fn a_token_is_required_on_everything_but_health() {
    let d = Daemon::builder().token("s3cret").start().await;
    for token in [None, Some("wrong")] {
        let mut c = d.client_with(token).await;
        let e = c.get_stats(pb::GetStatsRequest {}).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{token:?}");
        assert!(e.message().contains("authorization"), "{}", e.message());
        let e = c
            .submit_job(submit(sample_spec(1, 0, 2)))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
        let e = c
            .watch_library(pb::WatchLibraryRequest {})
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
    }
    let mut c = d.client().await;
    run_job(&mut c, sample_spec(1, 0, 2)).await;
    assert_eq!(
        c.list_jobs(pb::ListJobsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .jobs
            .len(),
        1
    );
    // Reflection needs the token too; health does not (the fixture's readiness check uses none).
    let ch = channel(&d.addr).await;
    let mut r = tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient::new(ch);
    let e = r
        .server_reflection_info(tokio_stream::iter(vec![list_services_v1()]))
        .await;
    let code = match e {
        Err(e) => e.code(),
        Ok(s) => s.into_inner().message().await.unwrap_err().code(),
    };
    assert_eq!(code, Code::Unauthenticated);
}

fn list_services_v1() -> tonic_reflection::pb::v1::ServerReflectionRequest {
    tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            tonic_reflection::pb::v1::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            ),
        ),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn reflection_v1_and_v1alpha_list_the_service() {
    use tonic_reflection::pb::{v1, v1alpha};
    let d = Daemon::builder().start().await;
    let mut r = v1::server_reflection_client::ServerReflectionClient::new(channel(&d.addr).await);
    let mut s = r
        .server_reflection_info(tokio_stream::iter(vec![list_services_v1()]))
        .await
        .unwrap()
        .into_inner();
    let names: Vec<String> = match s
        .message()
        .await
        .unwrap()
        .unwrap()
        .message_response
        .unwrap()
    {
        v1::server_reflection_response::MessageResponse::ListServicesResponse(l) => {
            l.service.into_iter().map(|x| x.name).collect()
        }
        other => panic!("{other:?}"),
    };
    assert!(names.contains(&"ddim.v1.Ddim".to_string()), "{names:?}");
    assert!(
        names.contains(&"grpc.health.v1.Health".to_string()),
        "{names:?}"
    );
    // The descriptor of the service is served.
    let req = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1::server_reflection_request::MessageRequest::FileContainingSymbol(
                "ddim.v1.Ddim".into(),
            ),
        ),
    };
    let mut s = r
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    match s
        .message()
        .await
        .unwrap()
        .unwrap()
        .message_response
        .unwrap()
    {
        v1::server_reflection_response::MessageResponse::FileDescriptorResponse(f) => {
            assert!(!f.file_descriptor_proto.is_empty());
            assert!(f
                .file_descriptor_proto
                .iter()
                .any(|b| b.windows(12).any(|w| w == b"SubmitJobReq")));
        }
        other => panic!("{other:?}"),
    }
    let mut ra =
        v1alpha::server_reflection_client::ServerReflectionClient::new(channel(&d.addr).await);
    let req = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut s = ra
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    match s
        .message()
        .await
        .unwrap()
        .unwrap()
        .message_response
        .unwrap()
    {
        v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(l) => {
            assert!(l.service.iter().any(|x| x.name == "ddim.v1.Ddim"));
        }
        other => panic!("{other:?}"),
    }
}

/// A PNG of noise, about `side`² bytes (noise does not compress).
fn big_png(side: u32) -> Vec<u8> {
    png(side, side, |x, y| {
        ((x.wrapping_mul(2_654_435_761) ^ y.wrapping_mul(40503)).wrapping_mul(2_246_822_519) >> 13)
            as u8
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn message_limits_are_raised_and_enforced() {
    // Default limit (64 MiB): a 5 MB request, over gRPC's usual 4 MiB, goes through.
    let d = Daemon::builder().start().await;
    let mut c = d.client().await;
    let img = big_png(2300);
    assert!(img.len() > 5_000_000, "{}", img.len());
    let job = c
        .submit_job(submit(encode_spec(vec![("big".into(), img.clone())], 2)))
        .await
        .unwrap()
        .into_inner();
    wait_job(&mut c, &job.id).await;
    // --max-message-mb 1: refused with a clear message, nothing queued.
    let small = Daemon::builder()
        .args(&["--max-message-mb", "1"])
        .start()
        .await;
    let mut c = small.client().await;
    let e = c
        .submit_job(submit(encode_spec(vec![("big".into(), big_png(1200))], 2)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::OutOfRange, "{}", e.message());
    assert!(
        e.message().contains("too large") && e.message().contains("limit"),
        "{}",
        e.message()
    );
    assert!(c
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .jobs
        .is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_serves_with_the_given_certificate() {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
        ])
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ])
        .args(["-addext", "basicConstraints=critical,CA:FALSE", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output();
    let Ok(out) = ok else {
        eprintln!("openssl is not installed: skipping the TLS test");
        return;
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d = Daemon::builder()
        .args(&[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ])
        .no_wait()
        .start()
        .await;
    let port = d.addr.rsplit(':').next().unwrap().to_string();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(&cert).unwrap()))
        .domain_name("localhost");
    let ch = Endpoint::from_shared(format!("https://localhost:{port}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut h = tonic_health::pb::health_client::HealthClient::new(ch.clone());
    let until = std::time::Instant::now() + TIMEOUT;
    loop {
        let s = h
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        if s.status() == tonic_health::pb::health_check_response::ServingStatus::Serving {
            break;
        }
        assert!(std::time::Instant::now() < until);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let mut c = ddim_proto::v1::ddim_client::DdimClient::new(ch);
    let info = c
        .get_model_info(pb::GetModelInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.sample_shape, vec![1, 32, 32]);
    // The ddim client (the TUI's connection code) over TLS with the CA, and without it.
    let ddim = |extra: &[&str]| {
        let cfg = dir.path().join("empty.toml");
        std::fs::write(&cfg, "").unwrap();
        Command::new(bin("ddim"))
            .args(["--addr", &format!("https://localhost:{port}")])
            .args(extra)
            .args(["ls", "--json"])
            .env("DDIM_CONFIG", &cfg)
            .env_remove("DDIM_TOKEN")
            .env_remove("DDIM_TLS_CA")
            .output()
            .unwrap()
    };
    let out = ddim(&["--tls-ca", cert.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["total"], 0);
    let out = ddim(&[]);
    assert!(
        !out.status.success(),
        "a certificate nobody vouches for is refused"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("not trusted") && err.contains("--tls-ca"),
        "{err}"
    );
    // ddim with http:// against this TLS daemon says it looks like TLS, and what to use.
    let out = Command::new(bin("ddim"))
        .args(["--addr", &format!("http://127.0.0.1:{port}"), "ls"])
        .env("DDIM_CONFIG", dir.path().join("empty.toml"))
        .env_remove("DDIM_TOKEN")
        .env_remove("DDIM_TLS_CA")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("TLS") && err.contains(&format!("https://127.0.0.1:{port}")),
        "{err}"
    );
    // Plain text is not served.
    let plain = Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await;
    if let Ok(ch) = plain {
        let mut c = ddim_proto::v1::ddim_client::DdimClient::new(ch);
        assert!(c.get_model_info(pb::GetModelInfoRequest {}).await.is_err());
    }
}

/// `ddim --addr https://…` against a daemon serving plain HTTP/2: not "is it running?"
/// but that it looks like TLS against plain HTTP, with the http:// address to use.
#[tokio::test(flavor = "multi_thread")]
async fn https_against_a_plain_daemon_says_tls_versus_plain() {
    let d = Daemon::builder().start().await;
    let cfg = d.dir.path().join("empty.toml");
    std::fs::write(&cfg, "").unwrap();
    let out = Command::new(bin("ddim"))
        .args(["--addr", &format!("https://{}", d.addr), "ls"])
        .env("DDIM_CONFIG", &cfg)
        .env_remove("DDIM_TOKEN")
        .env_remove("DDIM_TLS_CA")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("plain HTTP/2") && err.contains(&format!("http://{}", d.addr)),
        "{err}"
    );
    assert!(!err.contains("is `ddimd serve` running"), "{err}");
}
