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
        /// Only latents edited from this latent id (its direct children).
        #[arg(long)]
        parent: Option<String>,
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
        /// ODE solver: ddim, or dpmpp-2m (DPM-Solver++(2M), second order; decode with the same one).
        #[arg(long, value_enum, default_value_t = SolverArg::Ddim)]
        solver: SolverArg,
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
        /// ODE solver: ddim, or dpmpp-2m (DPM-Solver++(2M), second order; η must be 0).
        #[arg(long, value_enum, default_value_t = SolverArg::Ddim)]
        solver: SolverArg,
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
        /// ODE solver: ddim, or dpmpp-2m (DPM-Solver++(2M), second order, encoding and decoding).
        #[arg(long, value_enum, default_value_t = SolverArg::Ddim)]
        solver: SolverArg,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Sample quality per S × η (the paper's Table 1) on the daemon's model: the Fréchet
    /// distance of N samples per cell to the test split in the judge's features, with
    /// bootstrap intervals, class histograms and the real-vs-real floor. Needs a judge
    /// beside the daemon's model (`ddimd train-judge`).
    Eval {
        /// N, samples per cell.
        #[arg(long, allow_negative_numbers = true, value_parser = whole::<u32>)]
        samples: u32,
        /// Comma-separated step counts.
        #[arg(long, default_value = "10,20,50", value_parser = parse_steps, allow_hyphen_values = true)]
        steps: StepList,
        /// Comma-separated η values (finite, ≥ 0).
        #[arg(long, default_value = "0", value_parser = parse_eta_list, allow_hyphen_values = true)]
        eta: EtaList,
        /// Add a σ̂ cell per S.
        #[arg(long)]
        sigma_hat: bool,
        /// Sub-sequence of the T training steps.
        #[arg(long, value_enum, default_value_t = SpacingArg::Uniform)]
        spacing: SpacingArg,
        /// The sampler's solver; dpmpp-2m is deterministic (η 0, no σ̂).
        #[arg(long, value_enum, default_value_t = SolverArg::Ddim)]
        solver: SolverArg,
        /// Sample i of every cell starts from the x_T of (seed, i).
        #[arg(long, default_value_t = 0, allow_negative_numbers = true, value_parser = whole::<u64>)]
        seed: u64,
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
        /// ODE solver: ddim, or dpmpp-2m (DPM-Solver++(2M), second order; η must be 0).
        #[arg(long, value_enum, default_value_t = SolverArg::Ddim)]
        solver: SolverArg,
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
        /// ODE solver: ddim, or dpmpp-2m (DPM-Solver++(2M), second order).
        #[arg(long, value_enum, default_value_t = SolverArg::Ddim)]
        solver: SolverArg,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Edit latents into new ones: variation, mix, direction, renoise, inpaint, grid.
    /// Every result records its lineage (`ddim lineage ID`).
    #[command(after_help = EDIT_SYNOPSIS)]
    Edit {
        #[command(subcommand)]
        op: EditOp,
    },
    /// Print a latent's lineage: the tree of latents it was edited from (deleted parents
    /// marked), and the latents edited from it.
    Lineage { id: String },
    /// Carry latents over to the daemon's model (after a model upgrade the old ones are
    /// refused): each latent's source image, else its preview, is encoded by the daemon's
    /// model into a new latent with the old one's name and tags, its parent in the
    /// lineage. The old latents stay.
    Reencode {
        /// Latent ids (of any model).
        #[arg(required_unless_present = "other_models")]
        ids: Vec<String>,
        /// Every latent of another model than the daemon's (and of its image shape),
        /// except those re-encoded for the daemon's model already.
        #[arg(long, conflicts_with = "ids")]
        other_models: bool,
        /// Steps S of the inversion (as `ddim encode`).
        #[arg(long, default_value_t = 100, allow_negative_numbers = true, value_parser = whole::<u32>)]
        steps: u32,
        /// Tags added to the new latents (repeatable).
        #[arg(long = "tag")]
        tags: Vec<String>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// List jobs.
    Jobs {
        #[arg(long, default_value_t = 100, allow_negative_numbers = true, value_parser = whole::<u32>)]
        limit: u32,
        /// Only jobs of these kinds, comma-separated (sample, encode, eval, …).
        #[arg(long, value_delimiter = ',')]
        kind: Vec<String>,
    },
    /// List the daemons sharing this daemon's store (`ddimd serve --store postgres://…`):
    /// id, address, device, model, the job each runs, last heartbeat.
    Daemons,
    /// Show one job: state, step, attempts, the daemon that ran it, its error or
    /// results (it does not wait; see `watch`).
    Job { job: String },
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

/// The operations of `ddim edit --help` at a glance (each has its own --help).
pub const EDIT_SYNOPSIS: &str = "\
Operations:
  ddim edit variation ID [--strength 0.3] [--count N] [--seed K]
  ddim edit mix \"lat-1 + 0.8*(lat-2 - lat-3)\"
  ddim edit direction ID --from-tag P --to-tag Q [--weight 0.5,1,1.5]
  ddim edit renoise ID|FILE [--strength 0.5] [--eta 1] [--seed K] [--count N] [--steps S] [--perturb P]
  ddim edit inpaint ID|FILE --rect X,Y,W,H [--rect ...] [--seed K] [--eta E] [--steps S] [--count N]
  ddim edit grid A B C D [--size N] [--save ROW,COL ...]
Every operation also takes:
  [--preview-steps S] [--spacing SP] [--name NAME] [--tag T ...] [--out-dir DIR] [--preview[=S]] [--wait]";

/// `ddim edit …`: one operation each; the flags every edit shares are in [`EditArgs`].
#[derive(Debug, Subcommand)]
pub enum EditOp {
    /// "More like this one": x' = slerp(x_T, z_seed, strength), one latent per sample seed.
    Variation {
        id: String,
        /// 0 gives x_T back exactly, 1 the seed's noise.
        #[arg(long, default_value_t = 0.3, allow_negative_numbers = true)]
        strength: f32,
        #[arg(long, default_value_t = 1, allow_negative_numbers = true, value_parser = whole::<u32>)]
        count: u32,
        #[arg(long, default_value_t = 0, allow_negative_numbers = true, value_parser = whole::<u64>)]
        seed: u64,
        #[command(flatten)]
        edit: EditArgs,
    },
    /// Latent arithmetic: an expression over latent ids such as
    /// "lat-1 + 0.8*(lat-2 - lat-3)", rescaled to the parents' norm (or √d).
    Mix {
        /// The expression (quote it); `*`, `/` by numbers, `+`, `-`, parentheses.
        #[arg(value_parser = parse_mix_expr, allow_hyphen_values = true)]
        expr: MixExpr,
        /// The result's norm: the parents' (|weight|-weighted mean) or √d.
        #[arg(long, value_enum, default_value_t = RadiusArg::Parents)]
        radius: RadiusArg,
        #[command(flatten)]
        edit: EditArgs,
    },
    /// Move along an attribute direction: mean(x_T tagged --to-tag) − mean(x_T tagged
    /// --from-tag), one latent per weight.
    Direction {
        id: String,
        /// Tag of the latents the direction starts from (e.g. sneaker).
        #[arg(long)]
        from_tag: String,
        /// Tag of the latents it points to (e.g. ankle-boot).
        #[arg(long)]
        to_tag: String,
        /// Comma-separated weights, one latent each (e.g. 0.5,1,1.5).
        #[arg(long, default_value = "1", value_parser = parse_weights, allow_hyphen_values = true)]
        weight: WeightList,
        /// The result's norm: the latent's own or √d.
        #[arg(long, value_enum, default_value_t = RadiusArg::Parents)]
        radius: RadiusArg,
        #[command(flatten)]
        edit: EditArgs,
    },
    /// Keep the shape, redraw the texture (DDIM's SDEdit): invert up to ⌈strength·S⌉ of S
    /// steps, sample back with η and the seed, encode the result.
    Renoise {
        /// A latent id, or a PNG/JPEG file.
        input: String,
        /// 0 returns the image, 1 is a full encode + stochastic decode.
        #[arg(long, default_value_t = 0.5, allow_negative_numbers = true)]
        strength: f32,
        /// η of the way back (> 0 redraws detail).
        #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
        eta: f32,
        #[arg(long, default_value_t = 0, allow_negative_numbers = true, value_parser = whole::<u64>)]
        seed: u64,
        #[arg(long, default_value_t = 1, allow_negative_numbers = true, value_parser = whole::<u32>)]
        count: u32,
        /// S of the plan.
        #[arg(long, default_value_t = 50, allow_negative_numbers = true, value_parser = whole::<u32>)]
        steps: u32,
        /// Slerp x_t toward seeded noise before sampling back, 0..=1 (the η = 0 variant).
        #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
        perturb: f32,
        #[command(flatten)]
        edit: EditArgs,
    },
    /// Redraw inside rectangles (image pixels), keep the rest; the result is encoded.
    Inpaint {
        /// A latent id, or a PNG/JPEG file.
        input: String,
        /// X,Y,W,H in image pixels (repeatable, at most 16).
        #[arg(long = "rect", required = true, value_parser = parse_rect, allow_hyphen_values = true)]
        rects: Vec<RectArg>,
        #[arg(long, default_value_t = 0, allow_negative_numbers = true, value_parser = whole::<u64>)]
        seed: u64,
        /// η of the reverse steps (0: the kept region follows the original's own trajectory).
        #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
        eta: f32,
        /// S of the plan.
        #[arg(long, default_value_t = 50, allow_negative_numbers = true, value_parser = whole::<u32>)]
        steps: u32,
        #[arg(long, default_value_t = 1, allow_negative_numbers = true, value_parser = whole::<u32>)]
        count: u32,
        #[command(flatten)]
        edit: EditArgs,
    },
    /// An N×N grid between four corner latents (top-left, top-right, bottom-left,
    /// bottom-right) by slerp along both axes; --save stores cells as latents.
    Grid {
        #[arg(num_args = 4, required = true, value_names = ["TOP_LEFT", "TOP_RIGHT", "BOTTOM_LEFT", "BOTTOM_RIGHT"])]
        corners: Vec<String>,
        /// N, 2..=9.
        #[arg(long, default_value_t = 5, allow_negative_numbers = true, value_parser = whole::<u32>)]
        size: u32,
        /// A cell to store as a latent: ROW,COLUMN from 0 (repeatable).
        #[arg(long, value_parser = parse_cell, allow_hyphen_values = true)]
        save: Vec<CellArg>,
        #[command(flatten)]
        edit: EditArgs,
    },
}

impl EditOp {
    pub fn args(&self) -> &EditArgs {
        match self {
            EditOp::Variation { edit, .. }
            | EditOp::Mix { edit, .. }
            | EditOp::Direction { edit, .. }
            | EditOp::Renoise { edit, .. }
            | EditOp::Inpaint { edit, .. }
            | EditOp::Grid { edit, .. } => edit,
        }
    }
}

/// The flags every `ddim edit` operation takes.
#[derive(Debug, Clone, Args)]
pub struct EditArgs {
    /// S of the new latents' stored preview decode (η = 0) [default: 50].
    #[arg(long, allow_negative_numbers = true, value_parser = whole::<u32>)]
    pub preview_steps: Option<u32>,
    /// Sub-sequence of the T training steps (preview decode; renoise/inpaint's plan too).
    #[arg(long, value_enum, default_value_t = SpacingArg::Uniform)]
    pub spacing: SpacingArg,
    /// Name of the new latent (a prefix, with -i, when there are several).
    #[arg(long)]
    pub name: Option<String>,
    /// Tags for the new latents (repeatable).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Write the result images as DIR/<latent id>.png (grid: DIR/grid_<row>_<col>.png;
    /// implies --wait).
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// Only preview: run the edit at a small S (--preview=S, default 10) and show its
    /// images without storing anything (with --out-dir: DIR/preview_<i>.png).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "10", value_parser = whole::<u32>)]
    pub preview: Option<u32>,
    #[command(flatten)]
    pub wait: WaitArgs,
}

/// A parsed `ddim edit mix` expression: the text and its (id, weight) terms.
#[derive(Debug, Clone, PartialEq)]
pub struct MixExpr {
    pub text: String,
    pub terms: Vec<(String, f64)>,
}

/// Parses a mix expression (`ddim_proto::mix`); the error names the column.
pub fn parse_mix_expr(s: &str) -> Result<MixExpr, String> {
    let terms = ddim_proto::mix::parse_mix(s).map_err(|e| format!("bad mix expression: {e}"))?;
    Ok(MixExpr {
        text: s.trim().to_string(),
        terms,
    })
}

/// `--weight 0.5,1,1.5`.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightList(pub Vec<f32>);

pub fn parse_weights(s: &str) -> Result<WeightList, String> {
    crate::format::list_items(s, "0.5,1,1.5", |part| {
        let w: f32 = part
            .parse()
            .map_err(|_| format!("weight `{part}` is not a number"))?;
        if !w.is_finite() {
            return Err(format!("weight `{part}` is not a finite number"));
        }
        Ok(w)
    })
    .map(WeightList)
}

/// `--rect X,Y,W,H` in image pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RectArg {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

pub fn parse_rect(s: &str) -> Result<RectArg, String> {
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    let [x, y, w, h] = parts[..] else {
        return Err(format!(
            "a rectangle is X,Y,W,H (four whole numbers, e.g. 8,8,16,16), got `{s}`"
        ));
    };
    let n = |what: &str, v: &str| whole::<u32>(v).map_err(|e| format!("{what} of `{s}`: {e}"));
    Ok(RectArg {
        x: n("X", x)?,
        y: n("Y", y)?,
        width: n("W", w)?,
        height: n("H", h)?,
    })
}

/// `--save ROW,COLUMN` of a grid cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CellArg {
    pub row: u32,
    pub col: u32,
}

pub fn parse_cell(s: &str) -> Result<CellArg, String> {
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    let [r, c] = parts[..] else {
        return Err(format!(
            "a grid cell is ROW,COLUMN (from 0, e.g. 1,2), got `{s}`"
        ));
    };
    let n = |what: &str, v: &str| whole::<u32>(v).map_err(|e| format!("{what} of `{s}`: {e}"));
    Ok(CellArg {
        row: n("ROW", r)?,
        col: n("COLUMN", c)?,
    })
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

/// `--solver`: the ODE solver of the η = 0 process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SolverArg {
    Ddim,
    /// DPM-Solver++(2M): second order, multistep, η = 0 only.
    #[value(name = "dpmpp-2m")]
    Dpmpp2m,
}

impl SolverArg {
    pub fn pb(self) -> i32 {
        use ddim_proto::v1::Solver as S;
        (match self {
            SolverArg::Ddim => S::Ddim,
            SolverArg::Dpmpp2m => S::Dpmpp2m,
        }) as i32
    }
}

/// The radius `mix` and `direction` rescale their result to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum RadiusArg {
    /// The parents' norm (a mix: the |weight|-weighted mean of its terms' norms; a
    /// direction: the latent's own). Keeps the grey levels of real images' codes.
    #[default]
    Parents,
    /// √d, the norm of N(0, I) noise (decodes of real images' codes come out harder).
    #[value(name = "sqrt-d")]
    SqrtD,
}

impl RadiusArg {
    /// The name on the command line (and in lineage).
    pub fn name(self) -> &'static str {
        match self {
            RadiusArg::Parents => "parents",
            RadiusArg::SqrtD => "sqrt-d",
        }
    }

    pub fn pb(self) -> i32 {
        use ddim_proto::v1::Radius as R;
        (match self {
            RadiusArg::Parents => R::Parents,
            RadiusArg::SqrtD => R::SqrtD,
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
    fn edit_flags_parse() {
        let cli = Cli::try_parse_from([
            "ddim",
            "edit",
            "mix",
            "lat-1 + 0.8*(lat-2 - lat-3)",
            "--name",
            "m",
            "--tag",
            "a",
            "--tag",
            "b",
            "--preview",
        ])
        .unwrap();
        let Some(Command::Edit {
            op: EditOp::Mix { expr, radius, edit },
        }) = cli.command
        else {
            panic!("not a mix");
        };
        assert_eq!(radius, RadiusArg::Parents);
        assert_eq!(
            expr.terms,
            vec![
                ("lat-1".to_string(), 1.0),
                ("lat-2".to_string(), 0.8),
                ("lat-3".to_string(), -0.8)
            ]
        );
        assert_eq!((edit.name.as_deref(), edit.tags.len()), (Some("m"), 2));
        assert_eq!(edit.preview, Some(10));
        let e = Cli::try_parse_from(["ddim", "edit", "mix", "lat-1 + * lat-2"]).unwrap_err();
        assert!(e.to_string().contains("column 9"), "{e}");
        // An expression starting with a minus is not a flag.
        assert!(Cli::try_parse_from(["ddim", "edit", "mix", "-lat-1"]).is_ok());
        let m = Cli::try_parse_from(["ddim", "edit", "mix", "lat-1", "--radius", "sqrt-d"]);
        assert!(matches!(
            m.unwrap().command,
            Some(Command::Edit {
                op: EditOp::Mix {
                    radius: RadiusArg::SqrtD,
                    ..
                }
            })
        ));
        let e = Cli::try_parse_from(["ddim", "edit", "mix", "lat-1", "--radius", "unit"]);
        assert!(e.unwrap_err().to_string().contains("--radius"));

        assert_eq!(
            parse_rect("1, 2,3,4").unwrap(),
            RectArg {
                x: 1,
                y: 2,
                width: 3,
                height: 4
            }
        );
        assert!(parse_rect("1,2,3").is_err());
        assert!(parse_rect("1,2,3,-4").unwrap_err().contains("≥ 0"));
        assert_eq!(parse_cell("2,3").unwrap(), CellArg { row: 2, col: 3 });
        assert!(parse_cell("2").is_err());
        assert_eq!(parse_weights("-1,0.5").unwrap().0, vec![-1.0, 0.5]);
        assert!(parse_weights("1,1").is_err() && parse_weights("x").is_err());

        let cli = Cli::try_parse_from([
            "ddim",
            "edit",
            "grid",
            "a",
            "b",
            "c",
            "d",
            "--size",
            "3",
            "--save",
            "0,1",
            "--save",
            "2,2",
            "--preview=4",
        ])
        .unwrap();
        let Some(Command::Edit {
            op:
                EditOp::Grid {
                    corners,
                    save,
                    edit,
                    ..
                },
        }) = cli.command
        else {
            panic!("not a grid");
        };
        assert_eq!((corners.len(), save.len(), edit.preview), (4, 2, Some(4)));
        assert!(Cli::try_parse_from(["ddim", "edit", "grid", "a", "b", "c"]).is_err());
        assert!(Cli::try_parse_from(["ddim", "edit", "inpaint", "lat-1"]).is_err());
        let cli = Cli::try_parse_from(["ddim", "edit", "variation", "lat-1", "--strength", "-0.5"])
            .unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Edit { op: EditOp::Variation { strength, .. } }) if strength == -0.5
        ));
    }

    #[test]
    fn the_edit_synopsis_names_real_flags() {
        use clap::CommandFactory;
        let cli = Cli::command();
        let edit = cli.find_subcommand("edit").unwrap();
        let flags = |line: &str| -> Vec<String> {
            line.split([' ', '[', ']', '='])
                .filter(|w| w.starts_with("--"))
                .map(|w| w.trim_start_matches("--").to_string())
                .collect()
        };
        let mut common = vec![];
        let mut ops = 0;
        for line in EDIT_SYNOPSIS.lines().map(str::trim) {
            if let Some(rest) = line.strip_prefix("ddim edit ") {
                let op = rest.split(' ').next().unwrap();
                let sub = edit.find_subcommand(op).unwrap_or_else(|| panic!("{op}"));
                for f in flags(rest) {
                    assert!(
                        sub.get_arguments()
                            .any(|a| a.get_long() == Some(f.as_str())),
                        "{op} --{f}"
                    );
                }
                ops += 1;
            } else if line.starts_with('[') {
                common = flags(line);
            }
        }
        assert_eq!(ops, edit.get_subcommands().count());
        for sub in edit.get_subcommands() {
            for f in &common {
                assert!(sub
                    .get_arguments()
                    .any(|a| a.get_long() == Some(f.as_str())));
            }
        }
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
