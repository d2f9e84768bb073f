//! The `ddim` and `ddimd` commands of README.md, docs/*.md and models/*/MODEL.md, so the docs cannot drift
//! from the software.
//!
//! Every command is taken from the fenced `sh` blocks (a trailing `\` joins lines,
//! `# …` comments go, `;` and `&&` separate steps) and from the synopsis lines of plain
//! fenced blocks (a line starting `ddim `/`ddimd `, indented lines continuing it). A
//! step holds one or more invocations: `ddim …` or `ddimd …` at its start, after a `|`
//! or inside `$(…)`. Each invocation lands in exactly one class:
//!
//! - **run**: a subcommand of [`QUICK`] in an `sh` block, with no `[…]` or `a|b`
//!   placeholders. Its whole step runs under `bash -euo pipefail` (pipes, `jq`, `$(…)`
//!   and `id=…` carried to later steps of the file, as a reader would type them) in one
//!   work folder, against a real `ddimd serve` of the shared fixture (a tiny random
//!   model) and offline `ddimd` on the same model, after [`small`] shrinks counts and
//!   steps and [`PLACEHOLDERS`] names real latents. It must exit 0, and a step that is
//!   one `--json` invocation must print one JSON document.
//! - **parse**: everything else (the TUI, `serve`, `train`, `--device cuda`, synopsis lines). `BIN [SUB]
//!   --help` must succeed and list every `--flag` the command uses (neither binary has a
//!   parse-only mode).
//! - **skip**: the few commands of [`SKIP`], each with its reason.
//!
//! Also: every relative link of those docs leads to a file of the repository.
//!
//! Needs the binaries built (`cargo build --workspace --bins`) and `jq`
//! (scripts/setup.sh installs it).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use ddim_tests::ddim_proto::v1 as pb;
use ddim_tests::{bin, png, run_job, Daemon};

/// Subcommands whose documented commands run in seconds on the tiny model once [`small`]
/// has shrunk them. Any other (the TUI, `serve`, `train`, `bench`) is parse-checked.
const QUICK: &[(&str, &[&str])] = &[
    (
        "ddim",
        &[
            "ls",
            "show",
            "encode",
            "import",
            "sample",
            "reconstruct",
            "decode",
            "interpolate",
            "jobs",
            "watch",
            "cancel",
            "export",
            "rm",
            "completions",
            "reencode",
        ],
    ),
    (
        "ddimd",
        &[
            "info",
            "sample",
            "encode",
            "decode",
            "reconstruct",
            "interpolate",
            "init-model",
            "completions",
        ],
    ),
];

/// Steps that are neither run nor parsed: (a substring of the step, why).
const SKIP: &[(&str, &str)] = &[];

/// Placeholder ids of the docs → the fixture's encoded latents (0, 1, 2), all with a
/// source image and the tag `shirts`.
const PLACEHOLDERS: &[(&str, usize)] = &[
    ("ID", 0),
    ("ID1", 0),
    ("ID2", 1),
    ("ID3", 2),
    ("lat-12", 0),
    ("lat-13", 1),
];

/// Files the recipes read, made in the work folder before the first step.
const SHIRTS: &[&str] = &["shirt.png", "shirts/a.png", "shirts/b.png", "shirts/c.png"];

/// The value a flag gets so the command runs in seconds: step lists keep at most two
/// small S, counts become 2. `None`: keep the value.
fn small(flag: &str, value: &str) -> Option<String> {
    match flag {
        "--steps" if value.contains(',') => Some("2,3".into()),
        "--steps" => Some("2".into()),
        "--count" | "--fashion-mnist-test" => Some("2".into()),
        _ => None,
    }
}

// ------------------------------------------------------------ extraction --

/// A step of a doc: one shell command with its `ddim`/`ddimd` invocations.
#[derive(Debug, Clone)]
struct Step {
    /// `docs/tui.md:231`
    at: String,
    text: String,
    invocations: Vec<Invocation>,
    /// From a plain fenced block (a synopsis, not a command).
    synopsis: bool,
}

#[derive(Debug, Clone)]
struct Invocation {
    bin: &'static str,
    /// Words after the binary (quotes kept, `$(…)` as one word).
    args: Vec<String>,
}

impl Invocation {
    /// The subcommand: the first word when it is not a flag, else the first known one.
    fn sub(&self, subs: &[String]) -> Option<String> {
        let first = self.args.first()?;
        if !first.starts_with('-') && !first.starts_with('[') {
            return Some(first.clone());
        }
        self.args.iter().find(|a| subs.contains(a)).cloned()
    }

    /// `--flag` words (`--a=b` → `--a`, brackets dropped).
    fn flags(&self) -> Vec<String> {
        self.args
            .iter()
            .map(|a| a.trim_start_matches('['))
            .filter(|a| a.starts_with("--") && a.len() > 2)
            .map(|a| {
                a.split(['=', ']', '|'])
                    .next()
                    .unwrap_or(a)
                    .trim_end_matches(['.', ','])
                    .to_string()
            })
            .collect()
    }

    /// Asks for a GPU (`--device cuda…`).
    fn needs_gpu(&self) -> bool {
        self.args
            .windows(2)
            .any(|w| w[0] == "--device" && w[1].starts_with("cuda"))
            || self.args.iter().any(|a| a.starts_with("--device=cuda"))
    }

    /// Written with placeholders (`[--flag]`, `slerp|lerp`, `FILE...`) rather than values.
    fn is_synopsis(&self) -> bool {
        self.args
            .iter()
            .any(|a| a.starts_with('[') || (a.contains('|') && !a.starts_with(['\'', '$'])))
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

/// README.md, then docs/*.md by name, then each shipped model's MODEL.md.
fn doc_files() -> Vec<PathBuf> {
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .expect("docs/")
        .map(|e| e.expect("docs entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    docs.insert(0, repo().join("README.md"));
    let mut models: Vec<PathBuf> = std::fs::read_dir(repo().join("models"))
        .expect("models/")
        .map(|e| e.expect("models entry").path().join("MODEL.md"))
        .filter(|p| p.exists())
        .collect();
    models.sort();
    docs.extend(models);
    docs
}

/// Every step of every doc that has an invocation, or that a recipe needs beside them
/// (`python3 -c …` making a file), in document order.
fn steps() -> Vec<Step> {
    let mut out = vec![];
    for path in doc_files() {
        let rel = path.strip_prefix(repo()).unwrap().display().to_string();
        let text = std::fs::read_to_string(&path).expect("read doc");
        for (lineno, line, synopsis) in logical_lines(&text) {
            for cmd in split_top(&line, &[";", "&&"]) {
                let cmd = cmd.trim();
                let invocations = invocations(cmd);
                if invocations.is_empty() && !cmd.starts_with("python3 -c") {
                    continue;
                }
                out.push(Step {
                    at: format!("{rel}:{lineno}"),
                    text: cmd.to_string(),
                    invocations,
                    synopsis,
                });
            }
        }
    }
    out
}

/// (first line number, joined text, from a plain block) of each command line of the
/// fenced `sh` blocks and each `ddim`/`ddimd` synopsis of the plain ones.
fn logical_lines(doc: &str) -> Vec<(usize, String, bool)> {
    let mut out: Vec<(usize, String, bool)> = vec![];
    let mut fence: Option<String> = None;
    let mut continued = false;
    for (i, raw) in doc.lines().enumerate() {
        let trimmed = raw.trim_start();
        if let Some(info) = trimmed.strip_prefix("```") {
            fence = match fence {
                None => Some(info.trim().to_string()),
                Some(_) => None,
            };
            continued = false;
            continue;
        }
        match fence.as_deref() {
            Some("sh" | "bash" | "shell") => {
                let line = strip_comment(raw);
                let (body, more) = match line.trim_end().strip_suffix('\\') {
                    Some(b) => (b.to_string(), true),
                    None => (line.trim_end().to_string(), false),
                };
                if continued {
                    let last = out.last_mut().expect("a line to continue");
                    last.1.push(' ');
                    last.1.push_str(body.trim());
                } else if !body.trim().is_empty() {
                    out.push((i + 1, body.trim().to_string(), false));
                }
                continued = more;
            }
            Some("") => {
                let line = strip_comment(raw);
                if line.starts_with("ddim ") || line.starts_with("ddimd ") {
                    out.push((i + 1, line.trim().to_string(), true));
                    continued = true;
                } else if continued
                    && line.starts_with(char::is_whitespace)
                    && !line.trim().is_empty()
                {
                    let last = out.last_mut().expect("a line to continue");
                    last.1.push(' ');
                    last.1.push_str(line.trim());
                } else {
                    continued = false;
                }
            }
            _ => {}
        }
    }
    out
}

/// The line without a `# comment` (a `#` at the start or after a space, outside quotes).
fn strip_comment(line: &str) -> String {
    let mut quote = None;
    let mut prev = ' ';
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), _) if c == q => quote = None,
            (None, '#') if prev.is_whitespace() => return line[..i].to_string(),
            _ => {}
        }
        prev = c;
    }
    line.to_string()
}

/// Splits at any of `seps` outside quotes and `$(…)`.
fn split_top(s: &str, seps: &[&str]) -> Vec<String> {
    let mut out = vec![];
    let (mut quote, mut depth, mut start) = (None, 0usize, 0);
    let mut i = 0;
    while i < s.len() {
        let c = s[i..].chars().next().unwrap();
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), _) if c == q => quote = None,
            (None, '(') => depth += 1,
            (None, ')') => depth = depth.saturating_sub(1),
            (None, _) if depth == 0 => {
                if let Some(sep) = seps.iter().find(|sep| s[i..].starts_with(**sep)) {
                    out.push(s[start..i].to_string());
                    i += sep.len();
                    start = i;
                    continue;
                }
            }
            _ => {}
        }
        i += c.len_utf8();
    }
    out.push(s[start..].to_string());
    out
}

/// The `ddim`/`ddimd` invocations of a command: at its start, after `|`, in `$(`, or
/// after `timeout …` (outside quotes).
fn invocations(cmd: &str) -> Vec<Invocation> {
    let mut out = vec![];
    let mut quote = None;
    // Where the current simple command starts.
    let mut start = 0;
    for (i, c) in cmd.char_indices() {
        let before = cmd[start..i].trim();
        let at_command = quote.is_none()
            && (before.is_empty() || (before.starts_with("timeout ") && cmd[..i].ends_with(' ')));
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), _) if c == q => quote = None,
            (None, '|' | '(') => start = i + 1,
            _ => {}
        }
        if !at_command {
            continue;
        }
        let bin = if cmd[i..].starts_with("ddimd ") || &cmd[i..] == "ddimd" {
            "ddimd"
        } else if cmd[i..].starts_with("ddim ") || &cmd[i..] == "ddim" {
            "ddim"
        } else {
            continue;
        };
        let rest = &cmd[i + bin.len()..];
        out.push(Invocation {
            bin,
            args: words(rest),
        });
    }
    out
}

/// Shell words up to the end of this invocation (`|`, `)` closing an outer `$(`), with
/// quotes kept and `$(…)` as one word.
fn words(s: &str) -> Vec<String> {
    let mut out = vec![];
    let mut cur = String::new();
    let (mut quote, mut depth) = (None, 0usize);
    for c in s.chars() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), _) if c == q => quote = None,
            (None, '(') => depth += 1,
            (None, ')') if depth == 0 => break,
            (None, ')') => depth -= 1,
            (None, '|') if depth == 0 && cur.is_empty() => break,
            (None, c) if c.is_whitespace() && depth == 0 => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

// -------------------------------------------------------- classification --

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    Run,
    Parse,
    Skip,
}

fn subcommands(bin_name: &str) -> Vec<String> {
    let help = help(bin_name, None).expect("BIN --help");
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

fn classify(step: &Step, subs: &Subcommands) -> Class {
    if SKIP.iter().any(|(s, _)| step.text.contains(s)) {
        return Class::Skip;
    }
    let quick = |inv: &Invocation| {
        let list = QUICK.iter().find(|(b, _)| *b == inv.bin).unwrap().1;
        inv.sub(&subs[inv.bin])
            .is_some_and(|s| list.contains(&s.as_str()))
            && !inv.is_synopsis()
            && !inv.needs_gpu()
    };
    if !step.synopsis && step.invocations.iter().all(quick) {
        Class::Run
    } else {
        Class::Parse
    }
}

/// Each binary's subcommands, from its `--help`.
type Subcommands = BTreeMap<&'static str, Vec<String>>;

fn classified() -> (Vec<(Step, Class)>, Subcommands) {
    let subs: Subcommands = ["ddim", "ddimd"]
        .into_iter()
        .map(|b| (b, subcommands(b)))
        .collect();
    let all = steps()
        .into_iter()
        .map(|s| {
            let c = classify(&s, &subs);
            (s, c)
        })
        .collect();
    (all, subs)
}

/// `SUB NESTED` when `BIN SUB --help` lists subcommands and the word after SUB is one.
fn nested(inv: &Invocation, sub: &str) -> String {
    let Ok(h) = help(inv.bin, Some(sub)) else {
        return sub.to_string();
    };
    let listed: Vec<&str> = h
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let after = inv.args.iter().skip_while(|a| *a != sub).nth(1);
    match after {
        Some(n) if listed.contains(&n.as_str()) => format!("{sub} {n}"),
        _ => sub.to_string(),
    }
}

/// `BIN [SUB [NESTED]] --help`, or the error.
fn help(bin_name: &str, sub: Option<&str>) -> Result<String, String> {
    let mut c = Command::new(bin(bin_name));
    c.args(sub.into_iter().flat_map(str::split_whitespace))
        .arg("--help");
    let out = c.output().expect("run --help");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Whether `help` lists `flag` as a whole word.
fn lists_flag(help: &str, flag: &str) -> bool {
    help.match_indices(flag).any(|(i, _)| {
        !help[i + flag.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '-')
    })
}

// ------------------------------------------------------------------ tests --

#[test]
fn every_documented_command_is_classified_and_its_flags_exist() {
    let (all, subs) = classified();
    let mut counts = BTreeMap::new();
    let mut errors = vec![];
    let mut helps: BTreeMap<(String, Option<String>), Result<String, String>> = BTreeMap::new();
    for (step, class) in &all {
        *counts.entry(*class).or_insert(0) += 1;
        eprintln!("{:<5} {:<22} {}", format!("{class:?}"), step.at, step.text);
        if *class == Class::Skip {
            continue;
        }
        // Run steps are checked too: a failing run then says which flag is unknown.
        for inv in &step.invocations {
            let sub = inv.sub(&subs[inv.bin]);
            if let Some(s) = &sub {
                if !subs[inv.bin].contains(s) {
                    errors.push(format!(
                        "{}: `{} {s}`: no such subcommand",
                        step.at, inv.bin
                    ));
                    continue;
                }
            }
            // A subcommand with its own subcommands (`ddimd store verify`): the nested help.
            let sub = sub.map(|s| nested(inv, &s));
            let h = helps
                .entry((inv.bin.to_string(), sub.clone()))
                .or_insert_with(|| help(inv.bin, sub.as_deref()));
            let h = match h {
                Ok(h) => h,
                Err(e) => {
                    errors.push(format!("{}: `{} {sub:?} --help`: {e}", step.at, inv.bin));
                    continue;
                }
            };
            for flag in inv.flags() {
                if !lists_flag(h, &flag) {
                    errors.push(format!(
                        "{}: `{}` uses {flag}, which `{} {} --help` does not list",
                        step.at,
                        step.text,
                        inv.bin,
                        sub.as_deref().unwrap_or("")
                    ));
                }
            }
        }
    }
    eprintln!("{counts:?}");
    for (s, why) in SKIP {
        assert!(
            all.iter().any(|(st, _)| st.text.contains(s)),
            "SKIP entry {s:?} ({why}) matches no documented command any more"
        );
    }
    // The extractor itself: the docs have dozens of commands of both kinds.
    assert!(
        counts.get(&Class::Run).copied().unwrap_or(0) >= 15,
        "{counts:?}"
    );
    assert!(
        counts.get(&Class::Parse).copied().unwrap_or(0) >= 10,
        "{counts:?}"
    );
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

/// Rewrites a step for the fixture: [`small`] values, [`PLACEHOLDERS`] ids.
fn substitute(text: &str, ids: &[String]) -> String {
    let mut words: Vec<String> = text.split(' ').map(str::to_string).collect();
    for i in 0..words.len() {
        if let Some(&(_, k)) = PLACEHOLDERS.iter().find(|(p, _)| words[i] == *p) {
            words[i] = ids[k].clone();
        }
        if i > 0 {
            if let Some(v) = small(&words[i - 1], &words[i]) {
                words[i] = v;
            }
        }
    }
    words.join(" ")
}

#[tokio::test]
async fn quick_recipes_run_against_a_real_daemon() {
    let (all, _) = classified();
    let daemon = Daemon::builder().start().await;
    let mut c = daemon.client().await;

    // Three encoded latents tagged shirts (the docs' ID1 ID2 ID3, lat-12, lat-13).
    let spec = pb::JobSpec {
        kind: Some(pb::job_spec::Kind::Encode(pb::EncodeJob {
            images: (0..3u32)
                .map(|k| pb::EncodeInput {
                    data: png(28, 28, |x, y| ((x * 7 + y * (k + 3) * 5) % 256) as u8),
                    name: format!("shirt-{k}"),
                    tags: vec!["shirts".into()],
                })
                .collect(),
            steps: 2,
            spacing: pb::Spacing::Uniform as i32,
            preview_steps: 0,
            solver: 0,
        })),
    };
    let done = run_job(&mut c, spec).await;
    let ids = done.result.expect("result").latent_ids;
    assert_eq!(ids.len(), 3);

    // The work folder: the files the recipes read, and ddim/ddimd on PATH.
    let work = daemon.dir.path().join("work");
    let bindir = daemon.dir.path().join("bin");
    std::fs::create_dir_all(work.join("shirts")).unwrap();
    std::fs::create_dir_all(&bindir).unwrap();
    for (k, f) in SHIRTS.iter().enumerate() {
        let k = k as u32;
        std::fs::write(
            work.join(f),
            png(28, 28, |x, y| ((x * 3 + y * 11 + k * 40) % 256) as u8),
        )
        .unwrap();
    }
    let noise: Vec<f32> = (0..1024)
        .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
        .collect();
    std::fs::write(
        work.join("other.npy"),
        ddim_tests::npy_bytes(&[1, 1, 32, 32], &noise),
    )
    .unwrap();
    for b in ["ddim", "ddimd"] {
        std::os::unix::fs::symlink(bin(b), bindir.join(b)).unwrap();
    }
    let cfg = daemon.dir.path().join("empty.toml");
    std::fs::write(&cfg, "").unwrap();
    let mut path = vec![bindir.clone()];
    // python3 with numpy for the arithmetic recipe: the project's venv (scripts/env.sh).
    let venv = std::env::var_os("DDIM_VENV")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/ddim/venv")));
    path.extend(venv.map(|v| v.join("bin")));
    path.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    let path = std::env::join_paths(path).unwrap();

    let mut failures = vec![];
    let mut ran = 0;
    let mut file = String::new();
    for (step, class) in &all {
        if *class != Class::Run {
            continue;
        }
        // A new doc starts with no shell variables from the last.
        let doc = step.at.split(':').next().unwrap().to_string();
        if doc != file {
            let _ = std::fs::remove_file(work.join(".vars"));
            file = doc;
        }
        let text = substitute(&step.text, &ids);
        let mut script = String::from("[ -f .vars ] && . ./.vars\n");
        script.push_str(&text);
        script.push('\n');
        if let Some((name, _)) = text.split_once("=$(") {
            if name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                script.push_str(&format!("declare -p {name} >> .vars\n"));
            }
        }
        let out = Command::new("timeout")
            .args(["300", "bash", "-euo", "pipefail", "-c", &script])
            .current_dir(&work)
            .env("PATH", &path)
            .env("DDIM_ADDR", format!("http://{}", daemon.addr))
            .env("DDIM_CONFIG", &cfg)
            .env_remove("DDIM_TOKEN")
            .env_remove("DDIMD_TOKEN")
            .env("DDIMD_MODEL", &daemon.model)
            .env("DDIMD_DEVICE", "cpu")
            .env("DDIMD_TORCH_THREADS", "1")
            .env("OMP_NUM_THREADS", "1")
            .output()
            .expect("run bash");
        ran += 1;
        eprintln!("ran   {:<22} {text}  → {}", step.at, out.status);
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            failures.push(format!(
                "{}: `{text}` exited {}:\n{}{}",
                step.at,
                out.status,
                stdout,
                String::from_utf8_lossy(&out.stderr)
            ));
            continue;
        }
        let single = step.invocations.len() == 1
            && step.text.starts_with(step.invocations[0].bin)
            && !step.text.contains('|');
        if single && step.invocations[0].args.iter().any(|a| a == "--json") {
            if let Err(e) = serde_json::from_str::<serde_json::Value>(&stdout) {
                failures.push(format!(
                    "{}: `{text}` printed no JSON ({e}):\n{stdout}",
                    step.at
                ));
            }
        }
    }
    assert!(ran >= 15, "only {ran} steps ran");
    assert!(
        failures.is_empty(),
        "{} of {ran} documented commands failed:\n\n{}\n\ndaemon log:\n{}",
        failures.len(),
        failures.join("\n\n"),
        daemon.log_text()
    );
}

/// The extractor on made-up lines (the docs change; these cases should not).
/// The relative link targets (`[text](target)`, anchors dropped) of a Markdown text,
/// with the line of each; web and mail links and in-page anchors are not files.
fn relative_links(doc: &str) -> Vec<(usize, String)> {
    let mut out = vec![];
    for (i, line) in doc.lines().enumerate() {
        for (at, _) in line.match_indices("](") {
            let rest = &line[at + 2..];
            let Some(end) = rest.find(')') else { continue };
            let target = rest[..end].split('#').next().unwrap_or("");
            let web = ["http://", "https://", "mailto:"]
                .iter()
                .any(|p| target.starts_with(p));
            if !target.is_empty() && !web && !target.contains(char::is_whitespace) {
                out.push((i + 1, target.to_string()));
            }
        }
    }
    out
}

/// Every relative link of README.md, docs/*.md and the models' MODEL.md leads to a file
/// or folder of the repository (files move; the report links its data and code).
#[test]
fn relative_links_in_the_docs_lead_to_files() {
    let mut broken = vec![];
    let mut seen = 0;
    for path in doc_files() {
        let text = std::fs::read_to_string(&path).expect("read doc");
        for (line, target) in relative_links(&text) {
            seen += 1;
            if !path.parent().unwrap().join(&target).exists() {
                let rel = path.strip_prefix(repo()).unwrap().display().to_string();
                broken.push(format!("{rel}:{line}: {target}"));
            }
        }
    }
    assert!(
        seen > 50,
        "only {seen} relative links found: the extractor is broken"
    );
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn link_extractor_keeps_relative_targets_only() {
    let doc = "see [a](docs/a.md#x) and [b](https://e.org/b) [c](#top)\n[d](../d/) `x`";
    assert_eq!(
        relative_links(doc),
        vec![(1, "docs/a.md".to_string()), (2, "../d/".to_string())]
    );
}

#[test]
fn extractor_finds_invocations_flags_and_placeholders() {
    let doc = "```sh\n# a comment\nid=$(ddim ls --tag '#x' --json | jq -r '.a') # c\n\
               ddim reconstruct $(ddim ls --json | jq -r '.x') \\\n  --steps 10,20 --wait; ddimd info\n\
               cargo build -p ddimd --bin ddimd\ntimeout 9 ddimd train --out m\n```\n\
               ```\nddim ls [--name S] [--origin a|b]   # synopsis\n        [--limit N]\n```\n";
    let lines = logical_lines(doc);
    let texts: Vec<&str> = lines.iter().map(|l| l.1.as_str()).collect();
    assert_eq!(
        texts,
        [
            "id=$(ddim ls --tag '#x' --json | jq -r '.a')",
            "ddim reconstruct $(ddim ls --json | jq -r '.x') --steps 10,20 --wait; ddimd info",
            "cargo build -p ddimd --bin ddimd",
            "timeout 9 ddimd train --out m",
            "ddim ls [--name S] [--origin a|b] [--limit N]",
        ]
    );
    assert!(lines[4].2);
    let inv = invocations(texts[0]);
    assert_eq!(inv.len(), 1);
    assert_eq!(inv[0].args, ["ls", "--tag", "'#x'", "--json"]);
    let steps = split_top(texts[1], &[";", "&&"]);
    assert_eq!(steps.len(), 2);
    let inv = invocations(&steps[0]);
    assert_eq!(inv.len(), 2);
    assert_eq!(inv[0].flags(), ["--steps", "--wait"]);
    assert!(!inv[0].is_synopsis());
    assert!(invocations(texts[2]).is_empty());
    assert_eq!(invocations(texts[3])[0].args[0], "train");
    let syn = &invocations(texts[4])[0];
    assert!(syn.is_synopsis());
    assert_eq!(syn.flags(), ["--name", "--origin", "--limit"]);
    assert!(lists_flag("  --steps <STEPS>  S", "--steps"));
    assert!(!lists_flag("  --steps-max <N>", "--steps"));
    let ids = ["lat-7".to_string(), "lat-8".into(), "lat-9".into()];
    assert_eq!(
        substitute("ddim decode lat-12 --steps 10,50 --count 16 ID3", &ids),
        "ddim decode lat-7 --steps 2,3 --count 2 lat-9"
    );
}
