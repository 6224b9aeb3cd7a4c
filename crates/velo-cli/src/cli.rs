//! Command-line arguments.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

const EXAMPLES: &str = "\
Examples:
  velo pipe 'file://examples/data/trades.csv?event.time.field=timestamp' 'file://target/out/trades.jsonl'
  velo run pipeline.yaml
  velo schema 'file://examples/data/trades.csv'
  velo connectors
  velo offsets target/checkpoints";

/// Move records from any source to any sink, with positions that survive a crash.
#[derive(Debug, Parser)]
#[command(name = "velo", version, about, after_help = EXAMPLES)]
pub(crate) struct Cli {
    /// Log filter, e.g. `info` or `velo_file=debug` (also RUST_LOG).
    #[arg(long, global = true, env = "VELO_LOG", default_value = "warn")]
    pub(crate) log: String,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run a source into a sink until the source ends or SIGINT/SIGTERM.
    #[command(after_help = "\
Examples:
  # CSV to JSON Lines, with event time
  velo pipe 'file://examples/data/trades.csv?event.time.field=timestamp&event.time.format=iso8601' \\
            'file://target/out/trades.jsonl'
  # Resumable: a second run with the same checkpoint dir goes on where the first stopped
  velo pipe 'file://in/*.jsonl?mode=directory_watch' 'file://out/all.csv' --checkpoint-dir state/
  # Skip bad rows, keep at most 1000 records, expose Prometheus metrics
  velo pipe file://in.csv file://out.jsonl --errors skip --limit 1000 --metrics-addr 127.0.0.1:9898")]
    Pipe(PipeArgs),

    /// Run a pipeline described in YAML (`source:`, `sink:`, `checkpoint:`, `errors:`).
    #[command(after_help = "\
Example pipeline.yaml:
  source:
    type: file
    path: examples/data/trades.csv
    format: csv
    event.time.field: timestamp
  sink:
    type: file
    path: target/out/trades.jsonl
  checkpoint:
    dir: target/checkpoints
  errors:
    policy: dead_letter
    dead_letter: target/out/bad.jsonl

Run it with: velo run pipeline.yaml")]
    Run(RunArgs),

    /// Print the schema a source infers.
    #[command(after_help = "\
Examples:
  velo schema 'file://examples/data/trades.csv'
  velo schema 'file://logs/app.jsonl' --json")]
    Schema {
        /// The source URI.
        source: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },

    /// List the connectors this binary was built with.
    #[command(after_help = "Example:\n  velo connectors --json")]
    Connectors {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },

    /// Print the positions saved in a checkpoint directory.
    #[command(after_help = "Example:\n  velo offsets target/checkpoints")]
    Offsets {
        /// The checkpoint directory.
        dir: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// What to do with records that cannot be decoded.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum ErrorsArg {
    /// Stop with an error naming the record's position.
    Fail,
    /// Count, log and skip.
    Skip,
    /// Keep in the file given by --dead-letter.
    DeadLetter,
}

/// Options shared by `pipe` and `run`.
#[derive(Debug, clap::Args)]
pub(crate) struct RunOptions {
    /// Where positions are saved; a later run with the same directory resumes.
    #[arg(long)]
    pub(crate) checkpoint_dir: Option<PathBuf>,
    /// Records per batch (each batch is committed and checkpointed).
    #[arg(long)]
    pub(crate) batch_size: Option<usize>,
    /// Stop after this many records.
    #[arg(long)]
    pub(crate) limit: Option<u64>,
    /// Bad-record policy of the source.
    #[arg(long, value_enum)]
    pub(crate) errors: Option<ErrorsArg>,
    /// Dead-letter file for --errors dead-letter.
    #[arg(long)]
    pub(crate) dead_letter: Option<PathBuf>,
    /// Serve Prometheus metrics at HOST:PORT (/metrics).
    #[arg(long)]
    pub(crate) metrics_addr: Option<SocketAddr>,
    /// No progress bar, even on a terminal.
    #[arg(long)]
    pub(crate) no_progress: bool,
}

#[derive(Debug, clap::Args)]
pub(crate) struct PipeArgs {
    /// The source URI, e.g. file://data/in.csv.
    pub(crate) source: String,
    /// The sink URI, e.g. file://out/out.jsonl.
    pub(crate) sink: String,
    #[command(flatten)]
    pub(crate) options: RunOptions,
}

#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// The pipeline file.
    pub(crate) file: PathBuf,
    #[command(flatten)]
    pub(crate) options: RunOptions,
}
