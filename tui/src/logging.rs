//! Logs go to a file (`<state dir>/ddim/ddim.log`, or `DDIM_LOG_FILE`), never to the
//! screen. Level from `DDIM_LOG` (default `info`).

use std::path::PathBuf;
use std::sync::Mutex;

use tracing_subscriber::EnvFilter;

/// Where the TUI writes its log.
pub fn log_path() -> PathBuf {
    if let Some(p) = std::env::var_os("DDIM_LOG_FILE") {
        return PathBuf::from(p);
    }
    dirs::state_dir()
        .or_else(dirs::cache_dir)
        .unwrap_or_else(std::env::temp_dir)
        .join("ddim")
        .join("ddim.log")
}

/// Starts file logging; failures only mean no log.
pub fn init() -> Option<PathBuf> {
    let path = log_path();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).ok()?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .ok()?;
    let filter = EnvFilter::try_from_env("DDIM_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(Mutex::new(file))
        .try_init()
        .ok()?;
    Some(path)
}
