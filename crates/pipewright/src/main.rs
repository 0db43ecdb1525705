//! The `pipewright` binary: one clap CLI over the workspace's crates. This file owns argument parsing and the
//! dispatch to each command; each command's behaviour lives in `commands/`.

mod commands;

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

/// Harness-style pipelines, run anywhere: validate, plan and run pipelines, or only the stages you select.
#[derive(Parser)]
#[command(name = "pipewright", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// How to print results.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Human-readable text.
    Text,
    /// Machine-readable JSON.
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Check pipeline and entity files (service, environment, infrastructureDefinition, inputSet) for errors.
    #[command(
        after_help = "Examples:\n  pipewright validate examples/build-test-deploy.yaml\n  pipewright validate examples/            # every .yaml/.yml file below, recursively\n  pipewright validate --output json pipeline.yaml\n\nExit status: 0 when every file is valid (warnings allowed), 1 otherwise."
    )]
    Validate {
        /// Files or directories to check.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Output format: one summary line per file, or one JSON object per file (JSON Lines).
        #[arg(long, short, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Print the JSON Schema of pipeline YAML, for editors.
    #[command(after_help = "Example:\n  pipewright schema > pipeline.schema.json")]
    Schema,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate { files, output } => commands::validate::run(&files, output),
        Command::Schema => commands::schema::run(),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
