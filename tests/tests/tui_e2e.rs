//! The `ddim` TUI in a real pseudo-terminal (tmux 3.3) against a real `ddimd serve`:
//! browse the library, queue a reconstruction and see it finish, see the jobs list and a
//! running job's live x̂0 preview, survive the daemon going away and coming back, and quit
//! with the terminal restored.
//!
//! Needs tmux and the binaries built first (`cargo build --workspace --bins`). The daemon
//! is started here rather than with `ddim_tests::Daemon` because the test restarts it on
//! the same address.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ddim_tests::{bin, init_model, listening_addr};

/// A daemon process killed when dropped, so a failing test leaves none behind.
struct Served(Child);

impl Served {
    fn kill(&mut self) -> std::io::Result<()> {
        self.0.kill()
    }

    fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.0.wait()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(model: &Path, data: &Path, addr: &str, log: &Path) -> (Served, String) {
    let mut child = Command::new(bin("ddimd"))
        .args([
            "serve",
            "--device",
            "cpu",
            "--torch-threads",
            "1",
            "--addr",
            addr,
            "--model",
        ])
        .arg(model)
        .arg("--data")
        .arg(data)
        .env("OMP_NUM_THREADS", "1")
        .env_remove("DDIMD_TOKEN")
        .stdout(Stdio::piped())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .unwrap(),
        )
        .spawn()
        .unwrap();
    let addr = listening_addr(child.stdout.take().unwrap())
        .recv_timeout(Duration::from_secs(60))
        .expect("ddimd printed no `listening on` line");
    (Served(child), addr)
}

/// Runs `ddim` with `args` until it succeeds (the model may still be loading).
fn ddim_ok(addr: &str, args: &[&str]) -> String {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let out = Command::new(bin("ddim"))
            .arg("--addr")
            .arg(addr)
            .args(args)
            .output()
            .unwrap();
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).into_owned();
        }
        assert!(
            Instant::now() < until,
            "ddim {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A private tmux server holding one session; killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket, "-f", "/dev/null"]);
        c
    }

    fn start(cmd: &str) -> Self {
        // One tmux server per test: tests run in parallel threads of one process, and
        // a shared server would refuse the second session of the same name.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let t = Tmux {
            socket: format!("ddim-e2e-{}-{n}", std::process::id()),
        };
        let st = t
            .cmd()
            .args(["new-session", "-d", "-s", "e2e", "-x", "150", "-y", "45"])
            .arg(cmd)
            .status()
            .expect("tmux is installed");
        assert!(st.success());
        t.cmd()
            .args(["set-option", "-t", "e2e", "remain-on-exit", "on"])
            .status()
            .unwrap();
        t
    }

    fn screen(&self) -> String {
        let out = self
            .cmd()
            .args(["capture-pane", "-p", "-t", "e2e"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        for k in keys {
            self.cmd()
                .args(["send-keys", "-t", "e2e", k])
                .status()
                .unwrap();
            std::thread::sleep(Duration::from_millis(150));
        }
    }

    fn type_text(&self, text: &str) {
        self.cmd()
            .args(["send-keys", "-t", "e2e", "-l", text])
            .status()
            .unwrap();
        std::thread::sleep(Duration::from_millis(150));
    }

    /// Waits until the screen satisfies `ok`; panics with the screen after `secs`.
    fn wait_for(&self, what: &str, secs: u64, ok: impl Fn(&str) -> bool) -> String {
        let until = Instant::now() + Duration::from_secs(secs);
        loop {
            let s = self.screen();
            if ok(&s) {
                return s;
            }
            assert!(
                Instant::now() < until,
                "timed out waiting for {what}; screen:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn pane_dead(&self) -> bool {
        let out = self
            .cmd()
            .args(["display-message", "-p", "-t", "e2e", "#{pane_dead}"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim() == "1"
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").status();
    }
}

#[test]
fn browse_reconstruct_and_reconnect() {
    let dir = tempfile::tempdir().unwrap();
    let model = init_model(&dir.path().join("model"), "test", 1, 32, 0);
    let data = dir.path().join("data");
    let log = dir.path().join("ddimd.log");
    let (mut daemon, hostport) = serve(&model, &data, "127.0.0.1:0", &log);
    let addr = format!("http://{hostport}");

    // A library: two samples, and one encoded image (reconstruction needs a source).
    ddim_ok(
        &addr,
        &[
            "sample", "--count", "2", "--seed", "3", "--steps", "5", "--wait",
        ],
    );
    let ls = ddim_ok(&addr, &["ls", "--json"]);
    let ls: serde_json::Value = serde_json::from_str(&ls).unwrap();
    let first = ls["latents"][0]["id"].as_str().unwrap().to_string();
    let png = dir.path().join("tshirt.png");
    ddim_ok(&addr, &["export", &first, png.to_str().unwrap()]);
    ddim_ok(
        &addr,
        &["encode", png.to_str().unwrap(), "--steps", "5", "--wait"],
    );

    let ui_log = dir.path().join("ddim.log");
    let cmd = format!(
        "env DDIM_LOG_FILE={} {} --addr {addr} --graphics halfblocks",
        ui_log.display(),
        bin("ddim").display()
    );
    let tmux = Tmux::start(&cmd);

    // Browse: the encoded latent is newest, so first; its details show in the side pane.
    let s = tmux.wait_for("the library", 60, |s| {
        s.contains("● connected") && s.contains("tshirt") && s.contains("latents 1/3")
    });
    assert!(s.contains("encoded"), "{s}");
    tmux.wait_for("the details pane", 30, |s| {
        s.contains("origin  encoded tshirt")
    });
    tmux.keys(&["j"]);
    tmux.wait_for("the selection to move", 30, |s| s.contains("latents 2/3"));
    tmux.keys(&["k", "?"]);
    tmux.wait_for("the help overlay", 30, |s| {
        s.contains("Library keys") && s.contains("interpolate two marked")
    });
    tmux.keys(&["Escape"]);

    // Reconstruct at S = 5 and 10.
    tmux.keys(&["r"]);
    tmux.wait_for("the reconstruction screen", 30, |s| {
        s.contains("source  latent tshirt")
    });
    tmux.keys(&["s", "C-u"]);
    tmux.type_text("5,10");
    tmux.keys(&["Enter"]);
    tmux.wait_for("the new steps", 30, |s| s.contains("steps   5,10 "));
    tmux.keys(&["Enter"]);
    let s = tmux.wait_for("the reconstruction to finish", 180, |s| {
        s.contains(" done") && s.contains("MSE per S") && s.contains("S=10")
    });
    let rows: Vec<&str> = s
        .lines()
        .filter(|l| l.contains("│5 ") || l.contains("│10 "))
        .collect();
    assert_eq!(rows.len(), 2, "an MSE row per S:\n{s}");

    // The jobs screen lists it as done.
    tmux.keys(&["2"]);
    tmux.wait_for("the jobs list", 30, |s| {
        s.lines()
            .any(|l| l.contains("reconstruct") && l.contains("done"))
    });

    // Decode the encoded latent on an S × η grid: one row per η, one tile per S.
    tmux.keys(&["1"]);
    tmux.wait_for("the library", 30, |s| s.contains("latents 1/3"));
    tmux.keys(&["d"]);
    tmux.wait_for("the decode screen", 30, |s| s.contains("latent  tshirt"));
    tmux.keys(&["e", "C-u"]);
    tmux.type_text("0,1");
    tmux.keys(&["Enter", "s", "C-u"]);
    tmux.type_text("2,3");
    tmux.keys(&["Enter"]);
    tmux.wait_for("the new η and S", 30, |s| {
        s.contains("η       0,1 ") && s.contains("steps   2,3 ")
    });
    tmux.keys(&["Enter"]);
    tmux.wait_for("the S × η grid", 120, |s| {
        ["S=2 η=0", "S=3 η=0", "S=2 η=1", "S=3 η=1"]
            .iter()
            .all(|c| s.contains(c))
    });
    tmux.keys(&["2"]);

    // A long sample, newest so selected: while it runs the side panel shows its latest x̂0
    // with the step it was taken at; cancelled, the preview goes. (Matched without the
    // combining hat, which terminals may store apart.)
    ddim_ok(
        &addr,
        &["sample", "--count", "16", "--seed", "4", "--steps", "1000"],
    );
    tmux.wait_for("the live x̂0 preview", 60, |s| {
        s.contains("0 at step ")
            && s.lines()
                .any(|l| l.contains("sample") && l.contains("running"))
    });
    tmux.keys(&["c"]);
    tmux.wait_for("the preview to go with the cancel", 60, |s| {
        s.contains("stopped at step") && !s.contains("0 at step ")
    });

    // The daemon goes away: the UI says so and keeps running; it comes back: resumes.
    let _ = daemon.kill();
    let _ = daemon.wait();
    tmux.wait_for("the daemon-down banner", 30, |s| {
        s.contains("daemon not reachable at") && s.contains("unreachable")
    });
    let (mut daemon, _) = serve(&model, &data, &hostport, &log);
    tmux.wait_for("the reconnect", 60, |s| {
        s.contains("● connected") && !s.contains("daemon not reachable")
    });
    tmux.keys(&["1"]);
    tmux.wait_for("the library again", 60, |s| s.contains("latents 1/3"));

    // x_T out as .npy (o), and back in as a new, imported latent (e).
    let npy = dir.path().join("xt.npy");
    tmux.keys(&["o", "C-u"]);
    tmux.type_text(npy.to_str().unwrap());
    tmux.keys(&["Enter"]);
    tmux.wait_for("the .npy export", 30, |s| s.contains("wrote x_T to"));
    assert!(std::fs::read(&npy).unwrap().starts_with(b"\x93NUMPY"));
    tmux.keys(&["e", "C-u"]);
    tmux.type_text(npy.to_str().unwrap());
    tmux.keys(&["Enter"]);
    tmux.wait_for("the imported latent", 60, |s| {
        s.contains("latents 1/4") && s.contains("origin  imported xt")
    });
    // The filter selects by origin on the daemon; Esc clears it.
    tmux.keys(&["/"]);
    tmux.type_text("origin:enc");
    tmux.keys(&["Enter"]);
    tmux.wait_for("the filtered library", 30, |s| {
        s.contains("latents 1/1") && s.contains("tshirt")
    });
    tmux.keys(&["Escape"]);
    tmux.wait_for("the whole library", 30, |s| s.contains("latents 1/4"));

    // q backs out to the library, then quits; the shell gets its screen back.
    tmux.keys(&["q"]);
    tmux.wait_for("ddim to exit", 30, |_| tmux.pane_dead());
    let after = tmux.screen();
    assert!(
        !after.contains("latents 1/3"),
        "alternate screen left:\n{after}"
    );
    let log_text = std::fs::read_to_string(&ui_log).unwrap_or_default();
    assert!(
        log_text.contains("ddim starting"),
        "logs go to the file: {log_text}"
    );
    let _ = daemon.kill();
    let _ = daemon.wait();
}

/// The Edit screen on a real daemon: open it on a latent (E), see the live preview, raise
/// the strength, commit at a small S, and find the new latent in the library with its
/// lineage; `p` goes to its parent.
#[test]
fn edit_screen_commits_a_variation_with_lineage() {
    let dir = tempfile::tempdir().unwrap();
    let model = init_model(&dir.path().join("model"), "test", 1, 32, 0);
    let data = dir.path().join("data");
    let log = dir.path().join("ddimd.log");
    let (mut daemon, hostport) = serve(&model, &data, "127.0.0.1:0", &log);
    let addr = format!("http://{hostport}");
    ddim_ok(
        &addr,
        &[
            "sample", "--count", "1", "--seed", "3", "--steps", "5", "--wait",
        ],
    );
    let ls: serde_json::Value = serde_json::from_str(&ddim_ok(&addr, &["ls", "--json"])).unwrap();
    let parent = ls["latents"][0]["id"].as_str().unwrap().to_string();
    let parent_name = ls["latents"][0]["name"].as_str().unwrap().to_string();

    let cmd = format!(
        "env DDIM_LOG_FILE={} {} --addr {addr} --graphics halfblocks",
        dir.path().join("ddim.log").display(),
        bin("ddim").display()
    );
    let tmux = Tmux::start(&cmd);
    tmux.wait_for("the library", 60, |s| {
        s.contains("● connected") && s.contains("latents 1/1")
    });

    // E: the variation at strength 0.3, previewed at S = 10.
    tmux.keys(&["E"]);
    tmux.wait_for("the edit screen and its preview", 60, |s| {
        s.contains("edit · variation")
            && s.contains("strength   0.30")
            && s.contains("preview S=10 ·")
    });
    tmux.keys(&["Right"]);
    tmux.wait_for("the new strength previewed", 60, |s| {
        s.contains("strength   0.35") && s.contains("preview S=10 ·")
    });
    // The commit S (the last parameter) typed: 5, to keep it cheap.
    tmux.keys(&["Up", "=", "C-u"]);
    tmux.type_text("5");
    tmux.keys(&["Enter"]);
    tmux.wait_for("the commit S", 30, |s| s.contains("commit S   5"));
    tmux.keys(&["Enter"]);
    tmux.wait_for("the committed edit", 120, |s| s.contains("made lat-"));

    // Back in the library, the new latent is first, with its lineage.
    tmux.keys(&["q"]);
    let s = tmux.wait_for("the new latent's lineage", 60, |s| {
        s.contains("latents 1/2") && s.contains("lineage") && s.contains("op      variation")
    });
    assert!(
        s.contains(&format!("variation of {parent}, strength 0.35")),
        "{s}"
    );
    assert!(s.contains(&format!("parents {parent_name}")), "{s}");
    tmux.keys(&["p"]);
    tmux.wait_for("the parent selected", 30, |s| s.contains("latents 2/2"));

    tmux.keys(&["q"]);
    tmux.wait_for("ddim to exit", 30, |_| tmux.pane_dead());
    let _ = daemon.kill();
    let _ = daemon.wait();
}
