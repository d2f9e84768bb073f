//! Running the binaries as a user would: `ddim` pointed at a test daemon, `ddimd`'s
//! offline commands, and what their output says.
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{bin, Daemon};

/// `ddim` pointed at a daemon, with no token and no user config file.
pub struct Ddim<'a> {
    pub d: &'a Daemon,
}

impl Ddim<'_> {
    pub fn cmd(&self, args: &[&str]) -> Command {
        let cfg = self.d.dir.path().join("empty.toml");
        std::fs::write(&cfg, "").unwrap();
        let mut c = Command::new(bin("ddim"));
        c.arg("--addr")
            .arg(&self.d.addr)
            .args(args)
            .env_remove("DDIM_TOKEN")
            .env("DDIM_CONFIG", cfg);
        c
    }

    /// Runs `ddim ARGS --json`, asserts success, parses stdout.
    pub fn json(&self, args: &[&str]) -> Value {
        let out = self.cmd(args).arg("--json").output().unwrap();
        assert!(out.status.success(), "ddim {args:?}: {}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "ddim {args:?}: not JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// Runs `ddim ARGS`, expecting exit `code` with one line on stderr; returns it.
    pub fn fails(&self, args: &[&str], code: i32) -> String {
        let out = self.cmd(args).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(code),
            "ddim {args:?}: {}",
            stderr(&out)
        );
        let err = stderr(&out);
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        err
    }

    /// Runs `ddim ARGS` (human output), asserting success.
    pub fn text(&self, args: &[&str]) -> String {
        let out = self.cmd(args).output().unwrap();
        assert!(out.status.success(), "ddim {args:?}: {}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The daemon may still be loading its model: poll `ddim ls` (with `token`, if any).
    pub fn wait_ready(&self, token: Option<&str>) {
        let until = Instant::now() + Duration::from_secs(120);
        loop {
            let mut c = self.cmd(&["ls"]);
            if let Some(t) = token {
                c.env("DDIM_TOKEN", t);
            }
            let out = c.output().unwrap();
            if out.status.success() {
                return;
            }
            assert!(
                Instant::now() < until,
                "ddim never got an answer: {}",
                stderr(&out)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Runs `ddimd ARGS` (offline commands) and returns what it did.
pub fn ddimd(args: &[&str]) -> Output {
    Command::new(bin("ddimd"))
        .args(args)
        .output()
        .expect("run ddimd")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The exit status, -1 when killed by a signal.
pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// No panic, at most one line, and that line is `error: …`; returns it.
pub fn one_line_error(o: &Output) -> String {
    let e = stderr(o);
    assert!(!e.contains("panicked at"), "a panic: {e}");
    let lines: Vec<&str> = e.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {e}");
    assert!(lines[0].starts_with("error: "), "{e}");
    lines[0].to_string()
}

/// A JSON string's text (panics naming the value when it is not a string).
pub fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))
}
