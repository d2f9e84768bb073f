//! `ddimd`: the DDIM daemon, trainer and offline engine.
use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use std::process::ExitCode;

use ddimd::cli;

#[derive(Parser)]
#[command(
    name = "ddimd",
    version,
    about = "DDIM latent-space daemon, trainer and offline engine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the libtorch version, CUDA availability, devices and threads.
    Info,
    /// Sample images from seeded noise or from given x_T.
    Sample(cli::SampleArgs),
    /// Encode images into x_T along the η = 0 ODE.
    Encode(cli::EncodeArgs),
    /// Decode x_T into images.
    Decode(cli::DecodeArgs),
    /// Encode then decode with S steps and report the MSE per S (Table 2).
    Reconstruct(cli::ReconstructArgs),
    /// Interpolate between two latents and decode the frames.
    Interpolate(cli::InterpolateArgs),
    /// Train an ε-model with the DDPM objective.
    Train(ddimd::train::TrainArgs),
    /// Train the judge: the Fashion-MNIST classifier whose features `eval` uses.
    TrainJudge(ddimd::judge::TrainJudgeArgs),
    /// Sample quality per S × η (the paper's Table 1): Fréchet distance on the judge's
    /// features with bootstrap intervals, class histogram and confidence.
    Eval(cli::EvalArgs),
    /// Write a pipeline folder with random weights (for tests and benchmarks).
    InitModel(cli::InitModelArgs),
    /// Benchmark: ms per UNet evaluation and images/s at several S and batch sizes.
    Bench(cli::BenchArgs),
    /// Export and compile the model's UNet into AOTInductor packages, one per batch
    /// size, for `--compiled` (see docs/compiled.md).
    Compile(ddimd::compile::CompileArgs),
    /// Run the gRPC daemon (see docs/daemon.md).
    Serve(ddimd::server::ServeArgs),
    /// Check, salvage, back up and restore the daemon's store (docs/daemon.md, Storage).
    Store(ddimd::server::admin::StoreArgs),
    /// Copy a whole library between stores (a sled folder, a postgres:// database)
    /// and check the copy record by record (docs/scale-out.md).
    Migrate(ddimd::server::migrate::MigrateArgs),
    /// Print a shell completion script (e.g. `ddimd completions bash > /etc/bash_completion.d/ddimd`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// A value clap could not accept (S = 0, η < 0, an unknown spacing, a number that is
/// not one) as one line: `invalid value "V" for --flag: reason`. Such errors exit 1
/// like every other bad input; usage errors clap cannot parse at all (an unknown flag,
/// a missing or conflicting one) keep clap's usage text and exit 2.
fn value_error(e: &clap::Error) -> Option<String> {
    if !matches!(
        e.kind(),
        ErrorKind::ValueValidation | ErrorKind::InvalidValue
    ) {
        return None;
    }
    let string = |k| match e.get(k) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        _ => None,
    };
    // "--steps <STEPS>" → "--steps".
    let arg = string(ContextKind::InvalidArg)?;
    let flag = arg.split_whitespace().next().unwrap_or(&arg).to_string();
    let value = string(ContextKind::InvalidValue).unwrap_or_default();
    let reason = match (e.kind(), e.get(ContextKind::ValidValue)) {
        (ErrorKind::InvalidValue, Some(ContextValue::Strings(valid))) => {
            format!("expected one of {}", valid.join(", "))
        }
        (ErrorKind::InvalidValue, _) => "a value is required".to_string(),
        _ => std::error::Error::source(e)
            .map(|s| s.to_string())
            .unwrap_or_else(|| "not accepted".into()),
    };
    Some(format!("invalid value {value:?} for {flag}: {reason}"))
}

fn parse_args() -> Result<Cli, clap::Error> {
    // Negative numbers reach the value parsers (`--eta -1` is refused as η < 0, not
    // as an unknown flag `-1`).
    let mut cmd = Cli::command().mut_subcommands(|s| s.allow_negative_numbers(true));
    let mut matches = cmd.try_get_matches_from_mut(std::env::args_os())?;
    Cli::from_arg_matches_mut(&mut matches).map_err(|e| e.format(&mut cmd))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => match value_error(&e) {
            Some(line) => {
                eprintln!("error: {line}");
                return ExitCode::FAILURE;
            }
            None => e.exit(),
        },
    };
    let result: Result<(), String> = match args.command {
        Command::Info => {
            println!("{}", cli::info());
            Ok(())
        }
        Command::Sample(a) => cli::sample(&a).map_err(|e| e.to_string()),
        Command::Encode(a) => cli::encode(&a).map_err(|e| e.to_string()),
        Command::Decode(a) => cli::decode(&a).map_err(|e| e.to_string()),
        Command::Reconstruct(a) => cli::reconstruct(&a).map_err(|e| e.to_string()),
        Command::Interpolate(a) => cli::interpolate(&a).map_err(|e| e.to_string()),
        Command::Train(a) => ddimd::train::run(&a).map_err(|e| format!("{e:#}")),
        Command::TrainJudge(a) => ddimd::judge::train(&a).map_err(|e| format!("{e:#}")),
        Command::Eval(a) => cli::eval(&a).map_err(|e| e.to_string()),
        Command::InitModel(a) => cli::init_model(&a).map_err(|e| e.to_string()),
        Command::Bench(a) => cli::bench(&a).map_err(|e| e.to_string()),
        Command::Compile(a) => ddimd::compile::run(&a).map_err(|e| e.to_string()),
        Command::Serve(a) => match ddimd::server::run(a) {
            // A store sled cannot open: its own status (3), distinct from bad flags.
            Err(e @ ddimd::server::ServerError::Unopenable(_)) => {
                eprintln!("error: {e}");
                return ExitCode::from(ddimd::server::admin::EXIT_UNOPENABLE);
            }
            r => r.map_err(|e| e.to_string()),
        },
        Command::Store(a) => return ddimd::server::admin::main(a),
        Command::Migrate(a) => return ddimd::server::migrate::main(a),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "ddimd", &mut std::io::stdout());
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
