//! Command-line interface: connection flags (also read from the environment and the
//! config file, see `config.rs`) and the scripting subcommands.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Terminal UI and scripting client for ddimd.
///
/// Without a subcommand `ddim` opens the terminal UI.
#[derive(Debug, Parser)]
#[command(name = "ddim", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub connect: ConnectArgs,

    /// Image protocol for previews; detected from the terminal when not given.
    #[arg(long, env = "DDIM_GRAPHICS", value_enum, global = true)]
    pub graphics: Option<GraphicsArg>,

    /// Print one JSON document on stdout instead of human output.
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Where the daemon is and how to authenticate. Flags win over environment variables,
/// which win over the config file.
#[derive(Debug, Clone, Default, Args)]
pub struct ConnectArgs {
    /// Daemon address [default: http://127.0.0.1:7860]
    #[arg(long, env = "DDIM_ADDR", global = true)]
    pub addr: Option<String>,
    /// Bearer token sent with every call.
    #[arg(long, env = "DDIM_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// PEM file with the CA that signed the daemon's certificate (enables TLS).
    #[arg(long, env = "DDIM_TLS_CA", global = true)]
    pub tls_ca: Option<PathBuf>,
    /// Config file to read instead of the default (`~/.config/ddim/config.toml`).
    #[arg(long, env = "DDIM_CONFIG", global = true)]
    pub config: Option<PathBuf>,
}

/// `--graphics` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GraphicsArg {
    Sixel,
    Kitty,
    Iterm2,
    Halfblocks,
}

/// `ddim ls --sort`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SortArg {
    Newest,
    Oldest,
    Name,
    Steps,
}

impl SortArg {
    pub fn order_by(self) -> ddim_proto::v1::SortOrder {
        use ddim_proto::v1::SortOrder;
        match self {
            SortArg::Newest => SortOrder::Newest,
            SortArg::Oldest => SortOrder::Oldest,
            SortArg::Name => SortOrder::Name,
            SortArg::Steps => SortOrder::EncodeSteps,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List latents (newest first unless --sort).
    Ls {
        /// Only names containing this (case-insensitive).
        #[arg(long)]
        name: Option<String>,
        /// Only latents with this tag.
        #[arg(long)]
        tag: Option<String>,
        /// Only this origin: encoded, sampled, interpolated or imported (a unique prefix
        /// such as `enc` will do).
        #[arg(long)]
        origin: Option<String>,
        /// Order, sorted by the daemon: newest, oldest, name (case-insensitive) or steps
        /// (encode S, highest first).
        #[arg(long, value_enum, default_value_t = SortArg::Newest)]
        sort: SortArg,
        /// Skip this many matches first (in --sort order).
        #[arg(long, default_value_t = 0, allow_negative_numbers = true, value_parser = whole::<u64>)]
        offset: u64,
        /// At most this many latents.
        #[arg(long, default_value_t = 100, allow_negative_numbers = true, value_parser = whole::<usize>)]
        limit: usize,
    },
    /// Show one latent.
    Show { id: String },
    /// Encode images into latents.
    Encode {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Steps S of the inversion.
        #[arg(long, default_value_t = 100, allow_negative_numbers = true, value_parser = whole::<u32>)]
        steps: u32,
        /// Sub-sequence of the T training steps.
        #[arg(long, value_enum, default_value_t = SpacingArg::Uniform)]
        spacing: SpacingArg,
        /// Tags for the new latents (repeatable).
        #[arg(long = "tag")]
        tags: Vec<String>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Bring x_T .npy files (from `ddim export`, `ddimd encode`, numpy…) into the library:
    /// float32 [C, H, W] or [N, C, H, W] of the daemon's model, one latent per row.
    Import {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// S of the preview decode (η = 0).
        #[arg(long, default_value_t = 50, allow_negative_numbers = true, value_parser = whole::<u32>)]
        steps: u32,
        /// Tags for the new latents (repeatable).
        #[arg(long = "tag")]
        tags: Vec<String>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Sample new latents.
    Sample {
        #[arg(long, default_value_t = 1, allow_negative_numbers = true, value_parser = whole::<u32>)]
        count: u32,
        #[arg(long, default_value_t = 0, allow_negative_numbers = true, value_parser = whole::<u64>)]
        seed: u64,
        #[arg(long, default_value_t = 50, allow_negative_numbers = true, value_parser = whole::<u32>)]
        steps: u32,
        /// η: 0 is DDIM, 1 is DDPM-like (finite, ≥ 0; the daemon checks).
        #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
        eta: f32,
        /// Sub-sequence of the T training steps.
        #[arg(long, value_enum, default_value_t = SpacingArg::Uniform)]
        spacing: SpacingArg,
        /// σ̂ of DDPM (ermongroup's ddpm_noisy) instead of the η-scaled σ.
        #[arg(long)]
        sigma_hat: bool,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Reconstruct latents' source images at several step counts. With several ids
    /// they run as one batch and the table gives the mean MSE ± its standard error; more
    /// than 256 run as one job per 256, waited for and merged into one table.
    Reconstruct {
        #[arg(required = true, num_args = 1..)]
        ids: Vec<String>,
        /// Comma-separated step counts.
        #[arg(long, default_value = "10,20,50,100", value_parser = parse_steps, allow_hyphen_values = true)]
        steps: StepList,
        /// Sub-sequence of the T training steps.
        #[arg(long, value_enum, default_value_t = SpacingArg::Uniform)]
        spacing: SpacingArg,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Decode a latent at several S, and with several η as an S × η grid (the same noise
    /// seed in every cell).
    Decode {
        id: String,
        /// Comma-separated step counts.
        #[arg(long, default_value = "10,20,50,100", value_parser = parse_steps, allow_hyphen_values = true)]
        steps: StepList,
        /// Comma-separated η values (finite, ≥ 0, at most 8).
        #[arg(long, default_value = "0", value_parser = parse_eta_list, allow_hyphen_values = true)]
        eta: EtaList,
        /// Seed of the noise for η > 0.
        #[arg(long, default_value_t = 0, allow_negative_numbers = true, value_parser = whole::<u64>)]
        seed: u64,
        /// Sub-sequence of the T training steps.
        #[arg(long, value_enum, default_value_t = SpacingArg::Uniform)]
        spacing: SpacingArg,
        /// Write every decode as DIR/decode_S<S>_eta<η>.png (implies --wait).
        #[arg(long)]
        out_dir: Option<PathBuf>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Interpolate between two latents.
    Interpolate {
        a: String,
        b: String,
        #[arg(long, default_value_t = 8, allow_negative_numbers = true, value_parser = whole::<u32>)]
        frames: u32,
        #[arg(long, default_value_t = 50, allow_negative_numbers = true, value_parser = whole::<u32>)]
        steps: u32,
        /// slerp or lerp.
        #[arg(long, default_value = "slerp", value_parser = ["slerp", "lerp"])]
        method: String,
        /// Sub-sequence of the T training steps.
        #[arg(long, value_enum, default_value_t = SpacingArg::Uniform)]
        spacing: SpacingArg,
        /// Frame indices to store as new latents (comma-separated, from 0).
        #[arg(long, value_parser = parse_indices, allow_hyphen_values = true)]
        save: Option<StepList>,
        /// Decode only the --save frames (storing a frame costs one decode, not --frames).
        #[arg(long, requires = "save")]
        only_saved: bool,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// List jobs.
    Jobs {
        #[arg(long, default_value_t = 100, allow_negative_numbers = true, value_parser = whole::<u32>)]
        limit: u32,
    },
    /// Follow a job until it ends.
    Watch { job: String },
    /// Cancel a job.
    Cancel { job: String },
    /// Write a latent's preview (or a decode at --steps) as PNG, or its x_T as .npy.
    Export {
        id: String,
        /// OUT.png: an image; OUT.npy: the latent x_T itself (float32 [1, C, H, W]).
        out: PathBuf,
        /// Decode at this S instead of using the stored preview.
        #[arg(long, allow_negative_numbers = true, value_parser = whole::<u32>)]
        steps: Option<u32>,
    },
    /// Delete a latent.
    Rm { id: String },
    /// Print a shell completion script (e.g. `ddim completions bash > ~/.local/share/bash-completion/completions/ddim`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Clone, Copy, Args)]
pub struct WaitArgs {
    /// Wait for the job to finish (with a progress bar on a terminal).
    #[arg(long)]
    pub wait: bool,
}

/// `--spacing`: how the S steps are picked from the T training steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SpacingArg {
    Uniform,
    Quad,
    Leading,
    Trailing,
    Linspace,
}

impl SpacingArg {
    pub fn pb(self) -> i32 {
        use ddim_proto::v1::Spacing as S;
        (match self {
            SpacingArg::Uniform => S::Uniform,
            SpacingArg::Quad => S::Quad,
            SpacingArg::Leading => S::Leading,
            SpacingArg::Trailing => S::Trailing,
            SpacingArg::Linspace => S::Linspace,
        }) as i32
    }
}

/// A parsed comma-separated list of η values.
#[derive(Debug, Clone, PartialEq)]
pub struct EtaList(pub Vec<f32>);

pub fn parse_eta_list(s: &str) -> Result<EtaList, String> {
    crate::format::parse_etas(s).map(EtaList)
}

/// A parsed comma-separated list of positive integers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepList(pub Vec<u32>);

/// Parses "10,20,50" into a list; rejects empty, repeated, zero and non-numeric items.
pub fn parse_steps(s: &str) -> Result<StepList, String> {
    let list = parse_indices(s)?;
    if list.0.contains(&0) {
        return Err("step counts start at 1".into());
    }
    Ok(list)
}

/// Parses "0,3,7" (frame indices, 0 allowed); rejects empty, repeated and non-numeric
/// items.
pub fn parse_indices(s: &str) -> Result<StepList, String> {
    crate::format::list_items(s, "10,20,50", |part| {
        whole::<u32>(part).map_err(|e| format!("`{part}`: {e}"))
    })
    .map(StepList)
}

/// A whole number ≥ 0; a negative one is refused for what it is (clap would call `-1` an
/// unexpected argument).
pub fn whole<T: std::str::FromStr>(s: &str) -> Result<T, String> {
    let t = s.trim();
    if t.starts_with('-') && t[1..].parse::<f64>().is_ok() {
        return Err(format!("must be ≥ 0, got {t}"));
    }
    t.parse()
        .map_err(|_| format!("expected a whole number, got `{t}`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_parse_and_reject() {
        assert_eq!(parse_steps("10, 20,50").unwrap().0, vec![10, 20, 50]);
        assert!(parse_steps("10,x").is_err());
        assert!(parse_steps("0,10").is_err());
        assert_eq!(parse_indices("0, 3").unwrap().0, vec![0, 3]);
        assert!(parse_indices("").is_err() && parse_indices("-1").is_err());
        assert!(parse_steps("0,10").is_err());
        assert!(parse_steps(" , ").is_err());
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_after_subcommand() {
        let cli = Cli::try_parse_from(["ddim", "ls", "--json", "--addr", "http://x:1"]).unwrap();
        assert!(cli.json);
        assert_eq!(cli.connect.addr.as_deref(), Some("http://x:1"));
        assert!(matches!(
            cli.command,
            Some(Command::Ls {
                limit: 100,
                offset: 0,
                sort: SortArg::Newest,
                ..
            })
        ));
    }

    #[test]
    fn ls_sort_and_offset() {
        let cli = Cli::try_parse_from([
            "ddim", "ls", "--sort", "steps", "--offset", "40", "--limit", "5",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Ls {
                limit: 5,
                offset: 40,
                sort: SortArg::Steps,
                ..
            })
        ));
        assert_eq!(SortArg::Name.order_by(), ddim_proto::v1::SortOrder::Name);
        assert!(Cli::try_parse_from(["ddim", "ls", "--sort", "size"]).is_err());
    }
}
