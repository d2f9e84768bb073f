//! A wrapper around the generated gRPC client: bearer-token interceptor, raised message
//! limits, optional TLS, and errors turned into sentences a person can act on.

use std::time::Duration;

use ddim_proto::v1::{self as pb, ddim_client::DdimClient};
use tonic::{
    metadata::MetadataValue,
    service::{interceptor::InterceptedService, Interceptor},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint},
    Code, Status, Streaming,
};

use crate::config::Settings;

/// Largest message the client sends or accepts (images and results can be big).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct Auth {
    header: Option<MetadataValue<tonic::metadata::Ascii>>,
}

impl Interceptor for Auth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(h) = &self.header {
            req.metadata_mut().insert("authorization", h.clone());
        }
        Ok(req)
    }
}

/// What went wrong, coarse enough to pick an exit code and a hint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The daemon could not be reached.
    Unreachable,
    NotFound,
    /// The request was refused as invalid (bad flags, a latent without source …).
    Invalid,
    Unauthenticated,
    /// Anything else (internal errors, a full queue …).
    Other,
}

/// An error from a daemon call, with a message that says what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientError {
    pub kind: ErrorKind,
    pub message: String,
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ClientError {}

impl ClientError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// Turns a gRPC status into an actionable message about the daemon at `addr`.
    pub fn from_status(status: &Status, addr: &str) -> Self {
        let msg = status.message();
        let chain = error_chain(status);
        let (kind, message) = match status.code() {
            // hyper/h2 report a TLS server's bytes read as HTTP/2 either as a
            // transport error or, once the lazy connection is up, as an
            // INTERNAL "h2 protocol error" on the call.
            Code::Unavailable | Code::Unknown | Code::Internal
                if (is_transport_error(status) || msg.starts_with("h2 protocol error"))
                    && tls_mismatch(addr, &chain).is_some() =>
            {
                (
                    ErrorKind::Unreachable,
                    tls_mismatch(addr, &chain).unwrap_or_default(),
                )
            }
            Code::Unavailable | Code::Unknown
                if is_transport_error(status) && msg.contains("certificate") =>
            {
                (
                    ErrorKind::Unreachable,
                    format!(
                        "TLS: the daemon's certificate at {addr} is not trusted ({}): pass the CA \
                         that signed it with --tls-ca / DDIM_TLS_CA",
                        short(msg)
                    ),
                )
            }
            Code::Unavailable | Code::Unknown if is_transport_error(status) => (
                ErrorKind::Unreachable,
                format!(
                    "daemon not reachable at {addr}: is `ddimd serve` running there? \
                     check --addr / DDIM_ADDR ({})",
                    short(msg)
                ),
            ),
            Code::Unavailable => (
                ErrorKind::Unreachable,
                format!(
                    "daemon at {addr} is unavailable: {}; retry shortly",
                    short(msg)
                ),
            ),
            Code::NotFound => (ErrorKind::NotFound, format!("not found: {msg}")),
            Code::InvalidArgument | Code::OutOfRange => {
                (ErrorKind::Invalid, format!("rejected by the daemon: {msg}"))
            }
            Code::FailedPrecondition => (ErrorKind::Invalid, format!("cannot do that: {msg}")),
            Code::AlreadyExists => (ErrorKind::Invalid, format!("already exists: {msg}")),
            Code::Unauthenticated => (
                ErrorKind::Unauthenticated,
                format!("the daemon rejected the token: set --token or DDIM_TOKEN ({msg})"),
            ),
            Code::PermissionDenied => (
                ErrorKind::Unauthenticated,
                format!("permission denied: {msg}; check the token"),
            ),
            Code::ResourceExhausted => (
                ErrorKind::Other,
                format!("the daemon is busy ({msg}): wait for queued jobs or cancel some"),
            ),
            Code::DeadlineExceeded => (
                ErrorKind::Other,
                format!("the daemon took too long to answer ({msg}); try again"),
            ),
            Code::Cancelled => (ErrorKind::Other, format!("call cancelled: {msg}")),
            Code::Unimplemented => (
                ErrorKind::Other,
                format!("the daemon at {addr} does not implement this call: upgrade ddimd ({msg})"),
            ),
            _ => (
                ErrorKind::Other,
                format!(
                    "daemon error ({:?}): {msg}; see the daemon's log",
                    status.code()
                ),
            ),
        };
        Self { kind, message }
    }

    /// Process exit code for the scripting commands: 3 not found, 4 unreachable, 1 other.
    pub fn exit_code(&self) -> i32 {
        match self.kind {
            ErrorKind::NotFound => 3,
            ErrorKind::Unreachable => 4,
            _ => 1,
        }
    }
}

fn is_transport_error(status: &Status) -> bool {
    use std::error::Error;
    let m = status.message().to_ascii_lowercase();
    status.source().is_some()
        || m.contains("transport")
        || m.contains("connect")
        || m.contains("dns")
        || m.contains("refused")
}

/// The status message and the errors under it (hyper, rustls, io), joined with `: `.
fn error_chain(status: &Status) -> String {
    use std::error::Error;
    let mut out = status.message().to_string();
    let mut next = status.source();
    while let Some(e) = next {
        let s = e.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        next = e.source();
    }
    out
}

/// When the connection was made but the two ends spoke different protocols: an
/// `https://` client got plain HTTP/2 bytes where a TLS answer was due (rustls calls
/// them a corrupt message of an invalid content type), or an `http://` client got a TLS
/// record where HTTP/2 frames were due (an oversized or malformed frame, or the TLS
/// server hanging up on the HTTP/2 preface). A sentence saying so, or None.
pub fn tls_mismatch(addr: &str, chain: &str) -> Option<String> {
    let c = chain.to_ascii_lowercase();
    let has = |ws: &[&str]| ws.iter().any(|w| c.contains(w));
    if has(&[
        "refused",
        "dns",
        "timed out",
        "no route",
        "unreachable",
        "certificate",
    ]) {
        return None;
    }
    let rest = addr.split_once("://").map_or(addr, |(_, r)| r);
    if addr.starts_with("https://") {
        has(&[
            "invalidcontenttype",
            "corrupt message",
            "wrong version number",
            "tls handshake eof",
            "invalidmessage",
            "record overflow",
            "peer sent no certificates",
        ])
        .then(|| {
            format!(
                "TLS handshake with {addr} failed: the daemon there seems to speak plain \
                 HTTP/2, not TLS; use --addr http://{rest} (or start ddimd serve with \
                 --tls-cert/--tls-key) ({})",
                short(chain)
            )
        })
    } else {
        has(&[
            "frame with invalid size",
            "frame_size_error",
            "frame size",
            "protocol error",
            "invalid http",
            "connection closed before",
            "connection reset",
            "broken pipe",
            "unexpected eof",
            "incomplete message",
        ])
        .then(|| {
            format!(
                "{addr} answered, but not in plain HTTP/2: the daemon there seems to speak TLS; \
                 use --addr https://{rest} (with --tls-ca for its own certificate) ({})",
                short(chain)
            )
        })
    }
}

/// For an `http://` address: whether the port answers the HTTP/2 preface with a TLS
/// record (an alert or a handshake), said as a sentence. A short blocking probe (at most
/// about a second), only on an error path.
pub fn speaks_tls(addr: &str) -> Option<String> {
    use std::io::{Read, Write};
    use std::net::{TcpStream, ToSocketAddrs};
    use std::time::Duration;
    let rest = addr.strip_prefix("http://")?;
    let hostport = rest.split('/').next()?;
    let sock = hostport.to_socket_addrs().ok()?.next()?;
    let mut tcp = TcpStream::connect_timeout(&sock, Duration::from_millis(500)).ok()?;
    tcp.set_read_timeout(Some(Duration::from_millis(500)))
        .ok()?;
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").ok()?;
    let mut head = [0u8; 2];
    tcp.read_exact(&mut head).ok()?;
    // A TLS record: content type alert (21) or handshake (22), then major version 3.
    (matches!(head[0], 0x15 | 0x16) && head[1] == 0x03).then(|| {
        format!(
            "{addr} answered, but not in plain HTTP/2: the daemon there speaks TLS; use \
             --addr https://{rest} (with --tls-ca for its own certificate)"
        )
    })
}

fn short(msg: &str) -> &str {
    msg.lines().next().unwrap_or(msg)
}

type Inner = DdimClient<InterceptedService<Channel, Auth>>;

/// A cheap-to-clone handle to the daemon. Connecting is lazy: the first call dials.
#[derive(Clone)]
pub struct Client {
    inner: Inner,
    addr: String,
}

impl Client {
    /// Builds the channel without dialing, so a UI can start while the daemon is down.
    pub fn new(settings: &Settings) -> Result<Self, ClientError> {
        let addr = normalize_addr(&settings.addr);
        let bad = |e: &dyn std::fmt::Display| {
            ClientError::new(
                ErrorKind::Invalid,
                format!("bad daemon address `{addr}`: {e}"),
            )
        };
        let mut endpoint = Endpoint::from_shared(addr.clone())
            .map_err(|e| bad(&e))?
            .connect_timeout(Duration::from_secs(3))
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_while_idle(true);
        // TLS for https:// addresses (trusting the system's CAs, e.g. behind a reverse
        // proxy with a public certificate) and whenever a CA is given (--tls-ca, for the
        // daemon's own --tls-cert).
        if settings.tls_ca.is_some() || addr.starts_with("https://") {
            let mut tls = ClientTlsConfig::new().with_native_roots();
            if let Some(ca) = &settings.tls_ca {
                let pem = std::fs::read(ca).map_err(|e| {
                    ClientError::new(
                        ErrorKind::Invalid,
                        format!(
                            "cannot read TLS CA {}: {e}; check --tls-ca / DDIM_TLS_CA",
                            ca.display()
                        ),
                    )
                })?;
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            endpoint = endpoint.tls_config(tls).map_err(|e| bad(&e))?;
        }
        let header = match &settings.token {
            Some(t) => Some(format!("Bearer {t}").parse().map_err(|_| {
                ClientError::new(
                    ErrorKind::Invalid,
                    "the token has characters a header cannot carry",
                )
            })?),
            None => None,
        };
        let inner = DdimClient::with_interceptor(endpoint.connect_lazy(), Auth { header })
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        Ok(Self { inner, addr })
    }

    /// The address as dialed.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    fn err(&self, s: Status) -> ClientError {
        let e = ClientError::from_status(&s, &self.addr);
        // h2 reports a TLS daemon's answer to plain HTTP/2 in several shapes (a transport
        // error, INTERNAL "h2 protocol error", CANCELLED), depending on timing. When the
        // status is one of those and not yet named, ask the port itself.
        let transportish = matches!(
            s.code(),
            Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled
        );
        if transportish && !e.message.contains("TLS") {
            if let Some(m) = speaks_tls(&self.addr) {
                return ClientError::new(ErrorKind::Unreachable, m);
            }
        }
        e
    }

    pub async fn list_latents(
        &self,
        req: pb::ListLatentsRequest,
    ) -> Result<pb::ListLatentsResponse, ClientError> {
        let r = self.inner.clone().list_latents(req).await;
        r.map(|r| r.into_inner()).map_err(|s| self.err(s))
    }

    /// The daemon's model: its fingerprint and sample shape among others.
    pub async fn model_info(&self) -> Result<pb::ModelInfo, ClientError> {
        let r = self
            .inner
            .clone()
            .get_model_info(pb::GetModelInfoRequest {})
            .await;
        r.map(|r| r.into_inner()).map_err(|s| self.err(s))
    }

    pub async fn get_latent(&self, id: &str) -> Result<pb::Latent, ClientError> {
        let req = pb::GetLatentRequest { id: id.into() };
        let r = self.inner.clone().get_latent(req).await;
        r.map(|r| r.into_inner()).map_err(|s| self.err(s))
    }

    pub async fn rename(&self, id: &str, name: &str) -> Result<pb::Latent, ClientError> {
        let req = pb::RenameLatentRequest {
            id: id.into(),
            name: name.into(),
        };
        let r = self.inner.clone().rename_latent(req).await;
        r.map(|r| r.into_inner()).map_err(|s| self.err(s))
    }

    pub async fn tag(
        &self,
        id: &str,
        add: Vec<String>,
        remove: Vec<String>,
    ) -> Result<pb::Latent, ClientError> {
        let req = pb::TagLatentRequest {
            id: id.into(),
            add,
            remove,
        };
        let r = self.inner.clone().tag_latent(req).await;
        r.map(|r| r.into_inner()).map_err(|s| self.err(s))
    }

    pub async fn delete(&self, id: &str) -> Result<pb::DeleteLatentResponse, ClientError> {
        let req = pb::DeleteLatentRequest { id: id.into() };
        let r = self.inner.clone().delete_latent(req).await;
        r.map(|r| r.into_inner()).map_err(|s| self.err(s))
    }

    /// The latent's x_T as a `.npy` (float32 [1, C, H, W], model space) and its record.
    pub async fn export_latent(&self, id: &str) -> Result<pb::ExportLatentResponse, ClientError> {
        let req = pb::ExportLatentRequest { id: id.into() };
        let r = self.inner.clone().export_latent(req).await;
        r.map(|r| r.into_inner()).map_err(|s| self.err(s))
    }

    pub async fn latent_image(
        &self,
        id: &str,
        kind: pb::LatentImageKind,
        steps: u32,
    ) -> Result<pb::Image, ClientError> {
        let req = pb::GetLatentImageRequest {
            id: id.into(),
            kind: kind as i32,
            steps,
        };
        let r = self.inner.clone().get_latent_image(req).await;
        r.map(|r| r.into_inner()).map_err(|s| self.err(s))
    }

    pub async fn watch_library(&self) -> Result<Streaming<pb::LibraryEvent>, ClientError> {
        let r = self
            .inner
            .clone()
            .watch_library(pb::WatchLibraryRequest {})
            .await;
        r.map(|r| r.into_inner()).map_err(|s| self.err(s))
    }

    pub async fn submit(&self, spec: pb::job_spec::Kind) -> Result<pb::Job, ClientError> {
        let req = pb::SubmitJobRequest {
            spec: Some(pb::JobSpec { kind: Some(spec) }),
            priority: pb::Priority::Interactive as i32,
            idempotency_key: String::new(),
        };
        let r = self.inner.clone().submit_job(req).await;
        r.map(|r| r.into_inner()).map_err(|s| self.err(s))
    }

    /// Runs an edit at a small S (`steps`, 0: the daemon's 10) without storing anything;
    /// a newer call with the same non-empty `client_id` supersedes a waiting one.
    pub async fn preview_edit(
        &self,
        spec: pb::job_spec::Kind,
        steps: u32,
        client_id: &str,
    ) -> Result<pb::PreviewEditResponse, ClientError> {
        let req = pb::PreviewEditRequest {
            spec: Some(pb::JobSpec { kind: Some(spec) }),
            steps,
            client_id: client_id.into(),
        };
        let r = self.inner.clone().preview_edit(req).await;
        r.map(|r| r.into_inner()).map_err(|s| self.err(s))
    }

    pub async fn get_job(&self, id: &str) -> Result<pb::Job, ClientError> {
        let req = pb::GetJobRequest { id: id.into() };
        let r = self.inner.clone().get_job(req).await;
        r.map(|r| r.into_inner()).map_err(|s| self.err(s))
    }

    pub async fn list_jobs(
        &self,
        limit: u32,
        latent_id: &str,
    ) -> Result<Vec<pb::Job>, ClientError> {
        self.list_jobs_of(limit, latent_id, &[]).await
    }

    /// Jobs newest first, only of `kinds` (Job.kind names; empty: all).
    pub async fn list_jobs_of(
        &self,
        limit: u32,
        latent_id: &str,
        kinds: &[String],
    ) -> Result<Vec<pb::Job>, ClientError> {
        let req = pb::ListJobsRequest {
            states: vec![],
            limit,
            latent_id: latent_id.into(),
            kinds: kinds.to_vec(),
        };
        let r = self.inner.clone().list_jobs(req).await;
        r.map(|r| r.into_inner().jobs).map_err(|s| self.err(s))
    }

    pub async fn stats(&self) -> Result<pb::Stats, ClientError> {
        let r = self.inner.clone().get_stats(pb::GetStatsRequest {}).await;
        r.map(|r| r.into_inner()).map_err(|s| self.err(s))
    }

    pub async fn cancel(&self, id: &str) -> Result<pb::Job, ClientError> {
        let req = pb::CancelJobRequest { id: id.into() };
        let r = self.inner.clone().cancel_job(req).await;
        r.map(|r| r.into_inner()).map_err(|s| self.err(s))
    }

    /// Follows a job; `preview_every` > 0 asks for an x̂0 preview every that many steps.
    pub async fn watch_job(
        &self,
        id: &str,
        preview_every: u32,
    ) -> Result<Streaming<pb::JobEvent>, ClientError> {
        let req = pb::WatchJobRequest {
            id: id.into(),
            preview_every,
        };
        let r = self.inner.clone().watch_job(req).await;
        r.map(|r| r.into_inner()).map_err(|s| self.err(s))
    }

    /// Maps a stream item error the same way as a call error.
    pub fn stream_error(&self, s: Status) -> ClientError {
        self.err(s)
    }
}

/// Accepts `host:port` as well as a URL.
pub fn normalize_addr(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_become_actionable_messages_and_exit_codes() {
        let e = ClientError::from_status(&Status::not_found("latent abc"), "http://h:1");
        assert_eq!(e.kind, ErrorKind::NotFound);
        assert_eq!(e.exit_code(), 3);
        let e = ClientError::from_status(
            &Status::unavailable("tcp connect error: Connection refused"),
            "http://h:1",
        );
        assert_eq!(e.exit_code(), 4);
        assert!(e.message.contains("http://h:1") && e.message.contains("ddimd serve"));
        let e = ClientError::from_status(&Status::unauthenticated("bad token"), "a");
        assert!(e.message.contains("DDIM_TOKEN"));
        assert_eq!(e.exit_code(), 1);
        let e = ClientError::from_status(&Status::resource_exhausted("queue full"), "a");
        assert!(e.message.contains("cancel"));
    }

    #[test]
    fn interceptor_adds_bearer_token() {
        let mut auth = Auth {
            header: Some("Bearer s3cret".parse().unwrap()),
        };
        let req = auth.call(tonic::Request::new(())).unwrap();
        assert_eq!(
            req.metadata().get("authorization").unwrap(),
            "Bearer s3cret"
        );
        let mut none = Auth { header: None };
        assert!(none
            .call(tonic::Request::new(()))
            .unwrap()
            .metadata()
            .get("authorization")
            .is_none());
    }

    #[test]
    fn address_without_scheme_gets_http() {
        assert_eq!(normalize_addr("127.0.0.1:5"), "http://127.0.0.1:5");
        assert_eq!(normalize_addr("https://h"), "https://h");
    }

    /// A server on 127.0.0.1 that writes `answer` to whoever connects (after reading what
    /// they send first) and hangs up.
    async fn one_answer_server(answer: &'static [u8]) -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 512];
                    let _ = s.read(&mut buf).await;
                    let _ = s.write_all(answer).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        port
    }

    fn settings(addr: String) -> Settings {
        Settings {
            addr,
            token: None,
            tls_ca: None,
            graphics: None,
        }
    }

    #[tokio::test]
    async fn https_against_plain_http2_says_tls_versus_plain() {
        // What an HTTP/2 server sends first: an empty SETTINGS frame.
        let port = one_answer_server(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await;
        let c = Client::new(&settings(format!("https://127.0.0.1:{port}"))).unwrap();
        let e = c.get_latent("x").await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unreachable, "{e}");
        assert!(
            e.message.contains("plain") && e.message.contains(&format!("http://127.0.0.1:{port}")),
            "{e}"
        );
    }

    #[tokio::test]
    async fn http_against_tls_says_tls_versus_plain() {
        // What a TLS server answers to the HTTP/2 preface: a fatal alert record.
        let port = one_answer_server(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x32]).await;
        let c = Client::new(&settings(format!("http://127.0.0.1:{port}"))).unwrap();
        let e = c.get_latent("x").await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unreachable, "{e}");
        assert!(
            e.message.contains("TLS") && e.message.contains(&format!("https://127.0.0.1:{port}")),
            "{e}"
        );
    }

    #[test]
    fn an_h2_protocol_error_on_a_call_over_http_is_called_tls_versus_plain() {
        // Once the lazy connection is up, a TLS daemon's answer to plain HTTP/2 can come
        // back as INTERNAL on the call itself (seen against ddimd serve --tls-cert).
        let st = Status::internal("h2 protocol error: http2 error");
        let e = ClientError::from_status(&st, "http://127.0.0.1:7860");
        assert_eq!(e.kind, ErrorKind::Unreachable, "{e}");
        assert!(e.message.contains("https://127.0.0.1:7860"), "{e}");
        // A daemon's own INTERNAL error stays what it is.
        let st = Status::internal("store: disk on fire");
        let e = ClientError::from_status(&st, "http://127.0.0.1:7860");
        assert_ne!(e.kind, ErrorKind::Unreachable, "{e}");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_cancelled_call_against_a_tls_port_is_called_tls_versus_plain() {
        // However h2 words it, the port is asked: here it answers with a TLS alert.
        let port = one_answer_server(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x32]).await;
        let c = Client::new(&settings(format!("http://127.0.0.1:{port}"))).unwrap();
        let e = c.err(Status::cancelled("operation was canceled"));
        assert_eq!(e.kind, ErrorKind::Unreachable, "{e}");
        assert!(
            e.message.contains(&format!("https://127.0.0.1:{port}")),
            "{e}"
        );
    }

    #[test]
    fn refused_connections_are_not_called_a_protocol_mismatch() {
        let chain = "transport error: tcp connect error: Connection refused (os error 111)";
        assert_eq!(tls_mismatch("https://h:1", chain), None);
        assert_eq!(tls_mismatch("http://h:1", chain), None);
    }

    #[tokio::test]
    async fn unreachable_daemon_is_reported_with_address() {
        // Bind then drop a listener so the port is (almost surely) closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let settings = Settings {
            addr: format!("127.0.0.1:{port}"),
            token: Some("t".into()),
            tls_ca: None,
            graphics: None,
        };
        let c = Client::new(&settings).unwrap();
        let e = c.get_latent("x").await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unreachable, "{e}");
        assert!(e.message.contains(&format!("127.0.0.1:{port}")));
    }
}
