//! Connection settings: flags and environment (via clap) over the config file
//! (`<config dir>/ddim/config.toml` or `config.json`) over built-in defaults.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::cli::{ConnectArgs, GraphicsArg};

/// The daemon's address when nothing else says otherwise.
pub const DEFAULT_ADDR: &str = "http://127.0.0.1:7860";

/// What the config file may hold; every field optional.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub addr: Option<String>,
    pub token: Option<String>,
    pub tls_ca: Option<PathBuf>,
    pub graphics: Option<GraphicsArg>,
}

/// Resolved settings used to connect.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub addr: String,
    pub token: Option<String>,
    pub tls_ca: Option<PathBuf>,
    pub graphics: Option<GraphicsArg>,
}

impl FileConfig {
    /// Parses TOML or JSON, chosen by the file extension (`.json` is JSON, else TOML).
    pub fn parse(path: &Path, text: &str) -> Result<Self> {
        if path.extension().is_some_and(|e| e == "json") {
            serde_json::from_str(text)
                .with_context(|| format!("invalid JSON in {}", path.display()))
        } else {
            toml::from_str(text).with_context(|| format!("invalid TOML in {}", path.display()))
        }
    }

    /// Reads `path`; a missing default file is no error, a missing explicit one is.
    pub fn load(explicit: Option<&Path>) -> Result<Self> {
        let candidates: Vec<PathBuf> = match explicit {
            Some(p) => vec![p.to_path_buf()],
            None => default_paths(),
        };
        for path in candidates {
            match std::fs::read_to_string(&path) {
                Ok(text) => return Self::parse(&path, &text),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && explicit.is_none() => {}
                Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
            }
        }
        Ok(Self::default())
    }
}

/// `<config dir>/ddim/config.toml`, then `config.json`.
pub fn default_paths() -> Vec<PathBuf> {
    dirs::config_dir()
        .map(|d| {
            let d = d.join("ddim");
            vec![d.join("config.toml"), d.join("config.json")]
        })
        .unwrap_or_default()
}

impl Settings {
    /// Flags/environment (already merged by clap) win over the file, the file over defaults.
    pub fn resolve(args: &ConnectArgs, graphics: Option<GraphicsArg>, file: FileConfig) -> Self {
        Self {
            addr: args
                .addr
                .clone()
                .or(file.addr)
                .unwrap_or_else(|| DEFAULT_ADDR.to_string()),
            token: args.token.clone().or(file.token).filter(|t| !t.is_empty()),
            tls_ca: args.tls_ca.clone().or(file.tls_ca),
            graphics: graphics.or(file.graphics),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_and_json_files_parse() {
        let t = FileConfig::parse(
            Path::new("c.toml"),
            "addr = \"http://h:1\"\ntoken = \"s\"\ngraphics = \"sixel\"\n",
        )
        .unwrap();
        assert_eq!(t.addr.as_deref(), Some("http://h:1"));
        assert_eq!(t.graphics, Some(GraphicsArg::Sixel));
        let j =
            FileConfig::parse(Path::new("c.json"), r#"{"token":"s","tls_ca":"/ca.pem"}"#).unwrap();
        assert_eq!(j.token.as_deref(), Some("s"));
        assert_eq!(j.tls_ca, Some(PathBuf::from("/ca.pem")));
        assert!(FileConfig::parse(Path::new("c.toml"), "adr = 1").is_err());
    }

    #[test]
    fn flags_win_over_file_and_file_over_default() {
        let file = FileConfig {
            addr: Some("http://file:1".into()),
            token: Some("filetoken".into()),
            ..Default::default()
        };
        let none = ConnectArgs::default();
        let s = Settings::resolve(&none, None, file.clone());
        assert_eq!(s.addr, "http://file:1");
        assert_eq!(s.token.as_deref(), Some("filetoken"));
        let flags = ConnectArgs {
            addr: Some("http://flag:2".into()),
            ..Default::default()
        };
        let s = Settings::resolve(&flags, Some(GraphicsArg::Kitty), file);
        assert_eq!(s.addr, "http://flag:2");
        assert_eq!(s.graphics, Some(GraphicsArg::Kitty));
        let s = Settings::resolve(&none, None, FileConfig::default());
        assert_eq!(s.addr, DEFAULT_ADDR);
        assert_eq!(s.token, None);
    }

    #[test]
    fn explicit_missing_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(FileConfig::load(Some(&dir.path().join("nope.toml"))).is_err());
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "addr = \"http://x:9\"").unwrap();
        assert_eq!(
            FileConfig::load(Some(&p)).unwrap().addr.as_deref(),
            Some("http://x:9")
        );
    }
}
