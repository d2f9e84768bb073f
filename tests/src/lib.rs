//! Shared fixture for the cross-crate tests: a real `ddimd serve` process on
//! `127.0.0.1:0` with a temporary store and a tiny random model, and a gRPC
//! client with helpers. [`pg`]: a throwaway PostgreSQL server (initdb + pg_ctl on a
//! free loopback port) for the tests of the PostgreSQL store.
//!
//! The binaries are not built by `cargo test`: run
//! `cargo build --workspace --bins` first (the fixture says so when they are
//! missing). Typical use:
//!
//! ```no_run
//! # async fn f() {
//! let d = ddim_tests::Daemon::builder().start().await;
//! let mut c = d.client().await;
//! let job = c.submit_job(ddim_tests::submit(ddim_tests::sample_spec(2, 7, 5))).await.unwrap().into_inner();
//! let done = ddim_tests::wait_job(&mut c, &job.id).await;
//! # }
//! ```
pub mod cli;
pub mod pg;
pub mod tls;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ddim_proto::v1 as pb;
use ddim_proto::v1::ddim_client::DdimClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Channel, Endpoint};

pub use ddim_proto;

/// How long the fixture waits for anything (start, a job) before failing.
pub const TIMEOUT: Duration = Duration::from_secs(180);
/// Message limit of the test clients.
pub const CLIENT_MAX_MESSAGE: usize = 256 * 1024 * 1024;

/// `target/<profile>/<name>`, next to the test executable's `deps/`.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace --bins` before `cargo test`",
        p.display()
    );
    p
}

/// Writes a random model with `ddimd init-model` (preset "test": a few
/// thousand parameters; `seed` picks the weights, hence the fingerprint).
pub fn init_model(dir: &Path, preset: &str, channels: u32, size: u32, seed: u64) -> PathBuf {
    let out = Command::new(bin("ddimd"))
        .args([
            "init-model",
            "--preset",
            preset,
            "--channels",
            &channels.to_string(),
            "--size",
            &size.to_string(),
        ])
        .args(["--seed", &seed.to_string(), "--out"])
        .arg(dir)
        .output()
        .expect("run ddimd init-model");
    assert!(
        out.status.success(),
        "ddimd init-model: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir.to_path_buf()
}

/// Adds `authorization: Bearer <token>` when a token is set.
#[derive(Clone, Default)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Bearer {
    pub fn new(token: Option<&str>) -> Self {
        Bearer(token.map(|t| format!("Bearer {t}").parse().expect("ASCII token")))
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

pub type Client = DdimClient<InterceptedService<Channel, Bearer>>;

/// Connects to `addr` ("127.0.0.1:PORT") with raised message limits.
pub async fn connect(addr: &str, token: Option<&str>) -> Client {
    let ch = channel(addr).await;
    DdimClient::with_interceptor(ch, Bearer::new(token))
        .max_decoding_message_size(CLIENT_MAX_MESSAGE)
        .max_encoding_message_size(CLIENT_MAX_MESSAGE)
}

pub async fn channel(addr: &str) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connect to ddimd at {addr}: {e}"))
}

/// Options of a daemon under test.
#[derive(Clone)]
pub struct Builder {
    model: Option<PathBuf>,
    data: Option<PathBuf>,
    token: Option<String>,
    args: Vec<String>,
    wait_serving: bool,
    /// `--store URL`: serve from this PostgreSQL database.
    store: Option<String>,
    /// Serve from a new database on the shared PostgreSQL (see [`Builder::backend`]).
    own_pg: bool,
}

/// Where a test daemon keeps its library and queue: the backend matrix. Tests
/// written as `async fn t(b: Backend)` run on both through [`on_backends!`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A sled folder (the default).
    Sled,
    /// A database of its own on the test process's PostgreSQL server
    /// ([`pg::shared_database`]).
    Postgres,
}

/// Runs an `async fn NAME(b: Backend)` on each backend: makes a module `NAME`
/// with the tests `NAME::sled` and `NAME::postgres`.
#[macro_export]
macro_rules! on_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sled() {
                super::$name($crate::Backend::Sled).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::Backend::Postgres).await
            }
        }
    )*};
}

impl Builder {
    /// Use this model folder instead of a fresh random "test" model.
    pub fn model(mut self, dir: &Path) -> Self {
        self.model = Some(dir.to_path_buf());
        self
    }

    /// Use this store folder instead of a fresh temporary one.
    pub fn data(mut self, dir: &Path) -> Self {
        self.data = Some(dir.to_path_buf());
        self
    }

    pub fn token(mut self, t: &str) -> Self {
        self.token = Some(t.into());
        self
    }

    /// Extra `ddimd serve` flags.
    pub fn args(mut self, a: &[&str]) -> Self {
        self.args.extend(a.iter().map(|s| s.to_string()));
        self
    }

    /// Serve from the PostgreSQL database `url` (`--store`) instead of a folder.
    pub fn store(mut self, url: &str) -> Self {
        self.store = Some(url.to_string());
        self
    }

    /// Serve from `b`: a fresh temporary folder, or a new database on the test
    /// process's shared PostgreSQL server ([`pg::shared_database`]; a test that
    /// stops or restarts the server starts a [`pg::PgServer`] of its own and
    /// passes its URL to [`Builder::store`]).
    pub fn backend(mut self, b: Backend) -> Self {
        self.own_pg = b == Backend::Postgres;
        self
    }

    /// Serve the library and queue of `d`: its data folder and its `--store`, if
    /// any (a second daemon, or a restart on another model, on either backend).
    pub fn store_of(mut self, d: &Daemon) -> Self {
        self.data = Some(d.data.clone());
        self.store = d.opts.store.clone();
        self
    }

    /// Return as soon as the address is printed (health may be NOT_SERVING).
    pub fn no_wait(mut self) -> Self {
        self.wait_serving = false;
        self
    }

    pub async fn start(self) -> Daemon {
        let dir = tempfile::tempdir().expect("temp dir");
        let model = match &self.model {
            Some(m) => m.clone(),
            None => init_model(&dir.path().join("model"), "test", 1, 32, 0),
        };
        let data = self.data.clone().unwrap_or_else(|| dir.path().join("data"));
        let mut opts = self;
        if opts.own_pg && opts.store.is_none() {
            let url = tokio::task::spawn_blocking(pg::shared_database)
                .await
                .expect("a database on the shared PostgreSQL");
            opts.store = Some(url);
        }
        let mut d = Daemon {
            child: None,
            addr: String::new(),
            dir,
            model,
            data,
            opts,
            log: PathBuf::new(),
        };
        d.log = d.dir.path().join("ddimd.log");
        d.spawn().await;
        d
    }
}

/// A running `ddimd serve`; killed on drop.
pub struct Daemon {
    child: Option<Child>,
    /// "127.0.0.1:PORT"
    pub addr: String,
    /// Holds the model, the store and the log unless given.
    pub dir: tempfile::TempDir,
    pub model: PathBuf,
    pub data: PathBuf,
    opts: Builder,
    /// stderr of every start, appended.
    pub log: PathBuf,
}

impl Daemon {
    pub fn builder() -> Builder {
        Builder {
            model: None,
            data: None,
            token: None,
            args: vec![],
            wait_serving: true,
            store: None,
            own_pg: false,
        }
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let mut cmd = Command::new(bin("ddimd"));
        cmd.args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--device",
            "cpu",
            "--torch-threads",
            "1",
            "--model",
        ])
        .arg(&self.model)
        .arg("--data")
        .arg(&self.data)
        .args(&self.opts.args)
        .env("OMP_NUM_THREADS", "1")
        .env_remove("DDIMD_TOKEN")
        .env_remove("DDIMD_STORE")
        .stdout(Stdio::piped())
        .stderr(log);
        if let Some(t) = &self.opts.token {
            cmd.args(["--token", t]);
        }
        if let Some(u) = &self.opts.store {
            cmd.args(["--store", u]);
        }
        let mut child = cmd.spawn().expect("spawn ddimd serve");
        let rx = listening_addr(child.stdout.take().expect("stdout"));
        self.child = Some(child);
        self.addr = tokio::task::spawn_blocking(move || rx.recv_timeout(TIMEOUT))
            .await
            .expect("join")
            .unwrap_or_else(|_| {
                panic!(
                    "ddimd printed no `listening on` line; log:\n{}",
                    self.log_text()
                )
            });
        if self.opts.wait_serving {
            self.wait_serving().await;
        }
    }

    /// Waits until health reports SERVING for the whole server.
    pub async fn wait_serving(&self) {
        let mut h = tonic_health::pb::health_client::HealthClient::new(channel(&self.addr).await);
        let until = Instant::now() + TIMEOUT;
        loop {
            let r = h
                .check(tonic_health::pb::HealthCheckRequest {
                    service: String::new(),
                })
                .await;
            if r.is_ok_and(|r| {
                r.into_inner().status
                    == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
            }) {
                return;
            }
            assert!(
                Instant::now() < until,
                "ddimd never became SERVING; log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn client(&self) -> Client {
        connect(&self.addr, self.opts.token.as_deref()).await
    }

    /// A client with another token (or none).
    pub async fn client_with(&self, token: Option<&str>) -> Client {
        connect(&self.addr, token).await
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait (at most `within`) for the exit status.
    pub fn terminate(&mut self, within: Duration) -> ExitStatus {
        let mut c = self.child.take().expect("running");
        let ok = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(ok.success());
        let until = Instant::now() + within;
        loop {
            if let Some(s) = c.try_wait().expect("wait") {
                return s;
            }
            if Instant::now() > until {
                let _ = c.kill();
                panic!(
                    "ddimd did not exit within {within:?} of SIGTERM; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let mut c = self.child.take().expect("running");
        let until = Instant::now() + within;
        loop {
            if let Some(s) = c.try_wait().expect("wait") {
                return s;
            }
            if Instant::now() > until {
                let _ = c.kill();
                panic!(
                    "ddimd did not exit within {within:?}; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts again on the same model, store and flags (a new port).
    pub async fn restart(&mut self) {
        self.kill9();
        self.spawn().await;
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

impl Daemon {
    /// Which backend this daemon serves from.
    pub fn backend(&self) -> Backend {
        if self.opts.store.is_some() {
            Backend::Postgres
        } else {
            Backend::Sled
        }
    }

    /// The `--store` URL, if any.
    pub fn store_url(&self) -> Option<&str> {
        self.opts.store.as_deref()
    }
}

// ------------------------------------------------------------- requests --

pub fn sampler(steps: u32) -> pb::SamplerOptions {
    pb::SamplerOptions {
        steps,
        eta: 0.0,
        spacing: pb::Spacing::Uniform as i32,
        sigma_hat: false,
        solver: 0,
    }
}

pub fn submit(spec: pb::JobSpec) -> pb::SubmitJobRequest {
    pb::SubmitJobRequest {
        spec: Some(spec),
        priority: pb::Priority::Interactive as i32,
        idempotency_key: String::new(),
    }
}

pub fn sample_spec(count: u32, seed: u64, steps: u32) -> pb::JobSpec {
    pb::JobSpec {
        kind: Some(pb::job_spec::Kind::Sample(pb::SampleJob {
            count,
            seed,
            sampler: Some(sampler(steps)),
            name_prefix: String::new(),
            tags: vec![],
        })),
    }
}

pub fn encode_spec(images: Vec<(String, Vec<u8>)>, steps: u32) -> pb::JobSpec {
    pb::JobSpec {
        kind: Some(pb::job_spec::Kind::Encode(pb::EncodeJob {
            images: images
                .into_iter()
                .map(|(name, data)| pb::EncodeInput {
                    data,
                    name,
                    tags: vec![],
                })
                .collect(),
            steps,
            spacing: pb::Spacing::Uniform as i32,
            preview_steps: 0,
            solver: 0,
        })),
    }
}

pub fn decode_spec(latent: &str, steps: &[u32]) -> pb::JobSpec {
    pb::JobSpec {
        kind: Some(pb::job_spec::Kind::Decode(pb::DecodeJob {
            latent_id: latent.into(),
            steps: steps.to_vec(),
            eta: 0.0,
            spacing: pb::Spacing::Uniform as i32,
            seed: 0,
            etas: vec![],
            solver: 0,
        })),
    }
}

pub fn interpolate_spec(a: &str, b: &str, frames: u32, steps: u32, save: &[u32]) -> pb::JobSpec {
    pb::JobSpec {
        kind: Some(pb::job_spec::Kind::Interpolate(pb::InterpolateJob {
            a: a.into(),
            b: b.into(),
            frames,
            method: pb::InterpolationMethod::Slerp as i32,
            sampler: Some(sampler(steps)),
            save_frames: save.to_vec(),
            only_saved_frames: false,
        })),
    }
}

pub fn reconstruct_spec(input: pb::reconstruct_job::Input, steps: &[u32]) -> pb::JobSpec {
    pb::JobSpec {
        kind: Some(pb::job_spec::Kind::Reconstruct(pb::ReconstructJob {
            input: Some(input),
            steps: steps.to_vec(),
            spacing: pb::Spacing::Uniform as i32,
            solver: 0,
        })),
    }
}

/// A grey PNG w×h with pixel (x, y) = f(x, y).
pub fn png(w: u32, h: u32, f: impl Fn(u32, u32) -> u8) -> Vec<u8> {
    let img = image::GrayImage::from_fn(w, h, |x, y| image::Luma([f(x, y)]));
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageLuma8(img)
        .write_to(&mut out, image::ImageFormat::Png)
        .expect("png");
    out.into_inner()
}

/// Decodes a PNG to grey pixels.
pub fn pixels(png: &[u8]) -> (u32, u32, Vec<u8>) {
    let img = image::load_from_memory(png).expect("a PNG").to_luma8();
    (img.width(), img.height(), img.into_raw())
}

// ------------------------------------------------------------- waiting --

/// Follows `WatchJob` until the job ends; returns the final job (with result).
pub async fn wait_job(c: &mut Client, id: &str) -> pb::Job {
    let watch = async {
        let mut s = c
            .watch_job(pb::WatchJobRequest {
                id: id.into(),
                preview_every: 0,
            })
            .await
            .unwrap_or_else(|e| panic!("watch {id}: {e}"))
            .into_inner();
        while let Some(ev) = s
            .message()
            .await
            .unwrap_or_else(|e| panic!("watch {id}: {e}"))
        {
            if let Some(pb::job_event::Event::Finished(j)) = ev.event {
                return j;
            }
        }
        panic!("watch {id}: stream ended without a finished event")
    };
    let j = tokio::time::timeout(TIMEOUT, watch)
        .await
        .unwrap_or_else(|_| panic!("{id} did not finish in {TIMEOUT:?}"));
    // The full job (results included) as GetJob returns it.
    c.get_job(pb::GetJobRequest { id: j.id })
        .await
        .expect("get_job")
        .into_inner()
}

/// The address `ddimd serve` prints (`listening on ADDR`) on `stdout`, read on a thread.
pub fn listening_addr(stdout: std::process::ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(a) = line.trim().strip_prefix("listening on ") {
                let _ = tx.send(a.to_string());
            }
        }
    });
    rx
}

/// Waits until a job reports its first progress step (it is running).
pub async fn wait_running(c: &mut Client, id: &str) {
    let f = async {
        let mut s = c
            .watch_job(pb::WatchJobRequest {
                id: id.into(),
                preview_every: 0,
            })
            .await
            .expect("watch")
            .into_inner();
        while let Some(ev) = s.message().await.expect("watch") {
            match ev.event {
                Some(pb::job_event::Event::Progress(_)) => return,
                Some(pb::job_event::Event::Finished(j)) => {
                    panic!("{id} finished ({:?}) before running was seen", j.state())
                }
                _ => {}
            }
        }
        panic!("watch {id} ended")
    };
    tokio::time::timeout(TIMEOUT, f)
        .await
        .unwrap_or_else(|_| panic!("{id} never ran"));
}

/// Submits and waits for DONE; panics with the job's error otherwise.
pub async fn run_job(c: &mut Client, spec: pb::JobSpec) -> pb::Job {
    let job = c
        .submit_job(submit(spec))
        .await
        .expect("submit")
        .into_inner();
    let done = wait_job(c, &job.id).await;
    assert_eq!(
        done.state(),
        pb::JobState::Done,
        "job {} ended {:?}: {}",
        done.id,
        done.state(),
        done.error
    );
    done
}

/// The float32 values of a `.npy` export (format 1.0, little-endian).
pub fn npy_values(npy: &[u8]) -> (String, Vec<f32>) {
    assert_eq!(&npy[..6], b"\x93NUMPY", "not a .npy file");
    let hlen = u16::from_le_bytes([npy[8], npy[9]]) as usize;
    let header = String::from_utf8_lossy(&npy[10..10 + hlen]).to_string();
    let data = npy[10 + hlen..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    (header, data)
}

/// A float32 .npy (format 1.0) of `shape`, written here independently of the daemon's
/// writer, as numpy would.
pub fn npy_bytes(shape: &[usize], values: &[f32]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let mut header = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({}), }}",
        dims.join(", ")
    );
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}
