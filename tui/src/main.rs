//! `ddim`: terminal UI and scripting client for the `ddimd` daemon.
//!
//! Module map:
//! - `cli`        flags and subcommands (clap, with env vars)
//! - `config`     config file + flags/env → `Settings`
//! - `client`     gRPC client wrapper: token interceptor, limits, actionable errors
//! - `script`     the scripting subcommands (`ls`, `show`, `encode`, …, `--json`)
//! - `json`, `format`  proto → JSON / human text
//! - `runner`     the TUI event loop (select over terminal, tick, daemon updates)
//! - `tui`        terminal set-up/restore and the panic hook
//! - `logging`    file logging
//! - `worker`     daemon requests → updates, library watch with reconnect backoff
//! - `app`        state, `handle_event`, `render` (header, status line, modals)
//! - `screens/`   library, jobs, reconstruct, interpolate, decode
//! - `graphics`   sixel/kitty/iTerm2/half-block images, detection, nearest scaling
//! - `prompt`     one-line input with path completion

mod app;
mod cli;
mod client;
mod config;
mod format;
mod graphics;
mod json;
mod logging;
mod prompt;
mod runner;
mod screens;
mod script;
mod theme;
mod tui;
mod worker;

#[cfg(test)]
mod tests;

use clap::Parser;

use crate::cli::Cli;
use crate::client::Client;
use crate::config::{FileConfig, Settings};

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => exit_usage(e),
    };
    let file = match FileConfig::load(cli.connect.config.as_deref()) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("ddim: {e:#}");
            std::process::exit(2);
        }
    };
    let settings = Settings::resolve(&cli.connect, cli.graphics, file);
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ddim: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    // The lazy channel spawns its connection task: build it inside the runtime.
    let client = {
        let _guard = rt.enter();
        match Client::new(&settings) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("ddim: {e}");
                std::process::exit(2);
            }
        }
    };
    let code = match cli.command {
        Some(cmd) => rt.block_on(script::run(client, cmd, cli.json)),
        None => match rt.block_on(runner::run(settings, client)) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("ddim: {e:#}");
                1
            }
        },
    };
    rt.shutdown_timeout(std::time::Duration::from_millis(200));
    std::process::exit(code);
}

/// A flag's value that does not parse (`--steps 10,,20`, `--count -1`) is one line naming
/// the flag and the reason, exit 2; other clap outcomes (help, version, unknown flags)
/// are clap's own.
fn exit_usage(e: clap::Error) -> ! {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::ValueValidation | ErrorKind::InvalidValue
    ) {
        let text = e.to_string();
        let line = text.lines().next().unwrap_or_default();
        eprintln!("ddim: {}", line.trim_start_matches("error: "));
        std::process::exit(2);
    }
    e.exit()
}
