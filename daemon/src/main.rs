//! `ddimd`: the DDIM daemon, trainer and offline engine.
use clap::{CommandFactory, Parser, Subcommand};
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
    /// Write a pipeline folder with random weights (for tests and benchmarks).
    InitModel(cli::InitModelArgs),
    /// Benchmark: ms per UNet evaluation and images/s at several S and batch sizes.
    Bench(cli::BenchArgs),
    /// Run the gRPC daemon (see docs/daemon.md).
    Serve(ddimd::server::ServeArgs),
    /// Print a shell completion script (e.g. `ddimd completions bash > /etc/bash_completion.d/ddimd`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

fn main() -> ExitCode {
    let args = Cli::parse();
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
        Command::InitModel(a) => cli::init_model(&a).map_err(|e| e.to_string()),
        Command::Bench(a) => cli::bench(&a).map_err(|e| e.to_string()),
        Command::Serve(a) => ddimd::server::run(a).map_err(|e| e.to_string()),
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
