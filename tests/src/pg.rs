//! A real, throwaway PostgreSQL server for tests: its own cluster (`initdb`) in a
//! temporary folder, started with `pg_ctl` on a free loopback port, trust
//! authentication, one database; stopped and removed on drop. A test that restarts
//! or stops the server starts its own; one that only needs a database of its own
//! takes one from [`shared_database`]: a fresh database on one server per test
//! process (started at the first call, stopped when the process exits).
//!
//! The server binaries are found on `PATH` or in Debian's
//! `/usr/lib/postgresql/*/bin`; when there are none and we are root, the Debian
//! package `postgresql` is installed (`apt-get install -y postgresql`), once per
//! test process. `initdb` refuses to run as root: as root (this machine, CI) the
//! cluster is made and run by the `postgres` system user (the package creates it;
//! `nobody` otherwise) through `runuser` (or `su`), in a folder owned by that user.
//!
//! ```no_run
//! let pg = ddim_tests::pg::PgServer::start();
//! let url = pg.url(); // postgres://ddim@127.0.0.1:PORT/ddim
//! ```
use std::ffi::OsString;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The role `initdb` makes the superuser, and the database created for the test.
pub const USER: &str = "ddim";
pub const DB: &str = "ddim";

/// A running PostgreSQL cluster of one test; stopped (`pg_ctl stop -m immediate`)
/// and its folder removed on drop.
pub struct PgServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// The unprivileged user that runs the server (`None`: ourselves).
    runas: Option<String>,
    port: u16,
    running: bool,
    /// Started with [`PgServer::start_tls`]: TLS on, TCP connections without it refused.
    tls: Option<ServerTls>,
    /// How long [`PgServer::start`] took (initdb, start, createdb).
    pub startup: Duration,
}

/// The TLS side of a test server ([`PgServer::start_tls`]).
#[derive(Clone)]
pub struct ServerTls {
    /// The server's certificate and key.
    pub server: crate::tls::Issued,
    /// A CA (PEM) whose client certificates the server accepts as the login
    /// (`cert` authentication: the certificate's common name is the user); `None`:
    /// any TLS connection is trusted, as the plain server trusts any connection.
    pub client_ca: Option<String>,
}

impl PgServer {
    /// Makes a cluster and starts it on a free loopback port. Panics with what to do
    /// when PostgreSQL is not installed and cannot be.
    pub fn start() -> PgServer {
        Self::start_with(None)
    }

    /// As [`PgServer::start`], with TLS: `ssl = on` with `tls.server`'s certificate,
    /// and `pg_hba.conf` accepting TCP connections over TLS only (`hostssl`), so a
    /// client that connects at all used TLS. With `tls.client_ca`, a client must
    /// also show a certificate of that CA whose common name is the user.
    pub fn start_tls(tls: ServerTls) -> PgServer {
        Self::start_with(Some(tls))
    }

    fn start_with(tls: Option<ServerTls>) -> PgServer {
        let t0 = Instant::now();
        let bin = server_bin().clone();
        let runas = if is_root() {
            Some(unprivileged_user())
        } else {
            None
        };
        // A folder the server's user owns, under /tmp (every user can traverse it).
        let dir = match &runas {
            Some(_) => tempfile::Builder::new()
                .prefix("ddim-pg-")
                .tempdir_in("/tmp"),
            None => tempfile::Builder::new().prefix("ddim-pg-").tempdir(),
        }
        .expect("temp dir for PostgreSQL");
        if let Some(u) = &runas {
            let o = Command::new("chown")
                .arg(format!("{u}:"))
                .arg(dir.path())
                .output()
                .expect("run chown");
            assert!(
                o.status.success(),
                "chown {u} {}: {}",
                dir.path().display(),
                text(&o)
            );
        }
        let mut pg = PgServer {
            dir,
            bin,
            runas,
            port: 0,
            running: false,
            tls,
            startup: Duration::ZERO,
        };
        // --no-sync: the cluster is thrown away, so nothing needs to reach the disk.
        let o = pg.run(
            "initdb",
            &[
                "-D",
                &pg.data().display().to_string(),
                "--auth=trust",
                "--username",
                USER,
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
        );
        assert!(o.status.success(), "initdb failed: {}", text(&o));
        if let Some(tls) = pg.tls.clone() {
            pg.configure_tls(&tls);
        }
        // A port picked by the kernel can be taken by another test between our probe
        // and the server's bind: try a few.
        let mut last = String::new();
        for _ in 0..5 {
            pg.port = free_port();
            match pg.try_start() {
                Ok(()) => {
                    // Through the Unix socket (trusted): on a TLS server, TCP wants TLS
                    // and maybe a client certificate.
                    let socket = pg.dir.path().display().to_string();
                    let o = pg.run(
                        "createdb",
                        &["-h", &socket, "-p", &pg.port.to_string(), "-U", USER, DB],
                    );
                    assert!(o.status.success(), "createdb failed: {}", text(&o));
                    pg.startup = t0.elapsed();
                    return pg;
                }
                Err(e) => last = e,
            }
        }
        panic!("PostgreSQL did not start: {last}")
    }

    /// `postgres://ddim@127.0.0.1:PORT/ddim`
    pub fn url(&self) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{DB}", self.port)
    }

    /// libpq key/value settings for the Unix socket (trusted, no TLS): how a test
    /// reads a TLS-only server's tables (`tokio_postgres::connect` takes it).
    pub fn socket_conninfo(&self) -> String {
        format!(
            "host={} port={} user={USER} dbname={DB}",
            self.dir.path().display(),
            self.port
        )
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's folder.
    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The server's log (appended by every start).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Stops the server (fast shutdown: open sessions are ended, what was committed
    /// stays). A stopped server keeps its port and data for [`PgServer::restart`].
    pub fn stop(&mut self) {
        if self.running {
            let o = self.pg_ctl(&["stop", "-m", "fast", "-w", "-t", "60"]);
            assert!(o.status.success(), "pg_ctl stop: {}", text(&o));
            self.running = false;
        }
    }

    /// Stops the server if it runs, and starts it again on the same port and data.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(e) = self.try_start() {
            panic!("PostgreSQL did not start again on port {}: {e}", self.port)
        }
    }

    /// Writes the certificates into the cluster's folder (owned by the server's
    /// user, the key readable by it alone, as PostgreSQL demands) and a
    /// `pg_hba.conf` that takes TCP connections over TLS only.
    fn configure_tls(&self, tls: &ServerTls) {
        let data = self.data();
        let mut files = vec![
            ("server.crt", tls.server.cert.as_str()),
            ("server.key", tls.server.key.as_str()),
        ];
        if let Some(ca) = &tls.client_ca {
            files.push(("root.crt", ca.as_str()));
        }
        let auth = if tls.client_ca.is_some() {
            "cert"
        } else {
            "trust"
        };
        let hba = format!("local all all trust\nhostssl all all 127.0.0.1/32 {auth}\n");
        files.push(("pg_hba.conf", &hba));
        for (name, body) in files {
            let p = data.join(name);
            std::fs::write(&p, body).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
            if let Some(u) = &self.runas {
                let o = Command::new("chown")
                    .arg(format!("{u}:"))
                    .arg(&p)
                    .output()
                    .expect("run chown");
                assert!(o.status.success(), "chown {}: {}", p.display(), text(&o));
            }
        }
    }

    fn try_start(&mut self) -> Result<(), String> {
        // fsync, synchronous_commit and full_page_writes off: a test server whose data
        // is thrown away needs no durability, and starts and commits faster without.
        let mut opts = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off -c max_connections=60",
            self.port,
            self.dir.path().display()
        );
        if let Some(tls) = &self.tls {
            opts.push_str(" -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key");
            if tls.client_ca.is_some() {
                opts.push_str(" -c ssl_ca_file=root.crt");
            }
        }
        let log = self.dir.path().join("server.log").display().to_string();
        let o = self.pg_ctl(&["start", "-w", "-t", "60", "-l", &log, "-o", &opts]);
        if o.status.success() {
            self.running = true;
            Ok(())
        } else {
            // A failed start can leave a postmaster behind that lost the race for the
            // port; make sure none runs before the next try.
            let _ = self.pg_ctl(&["stop", "-m", "immediate", "-w"]);
            Err(format!("{}\nserver log:\n{}", text(&o), self.log_text()))
        }
    }

    fn pg_ctl(&self, args: &[&str]) -> Output {
        let data = self.data().display().to_string();
        let mut all = vec!["-D", &data];
        all.extend_from_slice(args);
        self.run("pg_ctl", &all)
    }

    /// Runs a server binary as the server's user.
    fn run(&self, name: &str, args: &[&str]) -> Output {
        let exe = self.bin.join(name);
        self.command(name, args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", exe.display()))
    }

    /// A server binary's command line, run as the server's user.
    fn command(&self, name: &str, args: &[&str]) -> Command {
        let exe = self.bin.join(name);
        let mut cmd = match &self.runas {
            Some(u) if has_runuser() => {
                let mut c = Command::new("runuser");
                c.args(["-u", u, "--"]).arg(&exe);
                c
            }
            // util-linux's su passes the words after the user to `sh -c` (after
            // `--`, so that the program's flags are not taken for su's).
            Some(u) => {
                let mut c = Command::new("su");
                c.args(["-s", "/bin/sh", "-c", "exec \"$0\" \"$@\"", "--", u])
                    .arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        cmd.args(args)
            .current_dir(self.dir.path())
            .env("LC_ALL", "C");
        cmd
    }
}

/// The URL of a new, empty database on this test process's shared server, for a
/// test that needs a database of its own but never stops or restarts the server.
/// The server starts at the first call (about as long as [`PgServer::start`]); the
/// later ones only create a database, so a test binary pays for one `initdb`.
///
/// A static is never dropped, so the server is stopped by a watchdog: a shell that
/// reads its stdin, a pipe whose only writer is this process (not inherited by
/// children: Rust opens pipes close-on-exec); when the process exits, however it
/// ends, the shell reads the end of the pipe, stops the server (`-m immediate`)
/// and removes its folder.
pub fn shared_database() -> String {
    struct Shared {
        server: PgServer,
        next: std::sync::atomic::AtomicU32,
        /// Never waited for: it outlives this process (its stdin is the pipe).
        _watchdog: (std::process::Child, std::process::ChildStdin),
    }
    static SHARED: OnceLock<Shared> = OnceLock::new();
    let s = SHARED.get_or_init(|| {
        let server = PgServer::start();
        let data = server.data().display().to_string();
        let stop = server.command("pg_ctl", &["-D", &data, "stop", "-m", "immediate", "-w"]);
        let mut watchdog = Command::new("sh");
        watchdog
            .args([
                "-c",
                "cat >/dev/null; \"$@\"; rm -rf \"$DDIM_PG_DIR\"",
                "sh",
            ])
            .arg(stop.get_program())
            .args(stop.get_args())
            .env("DDIM_PG_DIR", server.dir.path())
            .env("LC_ALL", "C")
            .current_dir("/")
            // Its own process group: a Ctrl-C of the test run ends the tests, not
            // the watchdog, which then sees the end of the pipe and cleans up.
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = watchdog.spawn().expect("spawn the PostgreSQL watchdog");
        let stdin = child.stdin.take().expect("watchdog stdin");
        Shared {
            server,
            next: std::sync::atomic::AtomicU32::new(0),
            _watchdog: (child, stdin),
        }
    });
    let n = s.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let db = format!("t{n}");
    let port = s.server.port.to_string();
    let socket = s.server.dir.path().display().to_string();
    let o = s
        .server
        .run("createdb", &["-h", &socket, "-p", &port, "-U", USER, &db]);
    assert!(o.status.success(), "createdb {db} failed: {}", text(&o));
    format!("postgres://{USER}@127.0.0.1:{port}/{db}")
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if self.running {
            let _ = self.pg_ctl(&["stop", "-m", "immediate", "-w", "-t", "30"]);
        }
        // The TempDir removes the folder (we own it, or we are root).
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn has_runuser() -> bool {
    Command::new("runuser")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn user_exists(u: &str) -> bool {
    Command::new("id")
        .arg(u)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Who runs the server when we are root.
fn unprivileged_user() -> String {
    ["postgres", "nobody"]
        .into_iter()
        .find(|u| user_exists(u))
        .expect(
            "neither a `postgres` nor a `nobody` user to run PostgreSQL as (initdb refuses root)",
        )
        .to_string()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The folder holding `initdb`, `pg_ctl` and `createdb`; installs PostgreSQL when
/// there is none and we are root. Once per process.
fn server_bin() -> &'static PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(b) = find_bin() {
            return b;
        }
        if !is_root() {
            panic!(
                "PostgreSQL's server programs (initdb, pg_ctl) are not installed: install the \
                 `postgresql` package (apt-get install postgresql) or put its bin folder on PATH"
            );
        }
        let apt = |args: &[&str]| {
            Command::new("apt-get")
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .stdin(Stdio::null())
                .output()
        };
        let _ = apt(&["update"]);
        let o = apt(&["install", "-y", "--no-install-recommends", "postgresql"])
            .expect("run apt-get install postgresql");
        assert!(
            o.status.success(),
            "PostgreSQL is not installed and `apt-get install -y postgresql` failed: {}",
            text(&o)
        );
        find_bin().expect("initdb not found after installing postgresql")
    })
}

fn find_bin() -> Option<PathBuf> {
    let has_all = |d: &Path| {
        ["initdb", "pg_ctl", "createdb"]
            .iter()
            .all(|n| d.join(n).is_file())
    };
    // On PATH (a link, as /usr/local/bin/initdb → /usr/lib/postgresql/15/bin/initdb
    // here): the folder of the real file, where pg_ctl and createdb sit beside it.
    let path = std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/usr/bin"));
    for d in std::env::split_paths(&path) {
        let initdb = d.join("initdb");
        if let Ok(real) = std::fs::canonicalize(&initdb) {
            if let Some(dir) = real.parent().filter(|p| has_all(p)) {
                return Some(dir.to_path_buf());
            }
        }
    }
    // Debian: /usr/lib/postgresql/<major>/bin, the newest first.
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, b)| has_all(b))
        .collect();
    versions.sort();
    versions.pop().map(|(_, b)| b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_restarts_and_cleans_up() {
        let mut pg = PgServer::start();
        let url = pg.url();
        assert!(url.starts_with("postgres://ddim@127.0.0.1:"), "{url}");
        let reachable = |port: u16| std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
        assert!(reachable(pg.port()));
        pg.stop();
        assert!(!reachable(pg.port()));
        pg.restart();
        assert!(reachable(pg.port()));
        let data = pg.data();
        let port = pg.port();
        drop(pg);
        assert!(!data.exists());
        assert!(!reachable(port));
    }

    #[test]
    fn shared_databases_are_new_databases_on_one_server() {
        let (a, b) = (shared_database(), shared_database());
        assert_ne!(a, b);
        let port = |u: &str| {
            u.rsplit_once(':')
                .unwrap()
                .1
                .split('/')
                .next()
                .unwrap()
                .to_string()
        };
        assert_eq!(port(&a), port(&b));
        let p: u16 = port(&a).parse().unwrap();
        assert!(std::net::TcpStream::connect(("127.0.0.1", p)).is_ok());
    }
}
