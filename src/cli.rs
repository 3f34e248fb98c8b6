//! The command line (interface.md): `esmd run`, `esmd validate`, `esmd filter` and
//! `esmd replay`.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "esmd",
    version,
    about = "AWS Lambda event source mappings outside AWS"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// More log output (repeat for more); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Less log output (repeat for less); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub quiet: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run every enabled mapping until SIGINT or SIGTERM (or a CI run mode's end).
    Run {
        #[command(flatten)]
        config: ConfigArg,
        /// How long in-flight invocations may take to finish after SIGINT/SIGTERM.
        #[arg(long, default_value_t = 30, value_name = "N")]
        graceful_shutdown_limit_secs: u64,
        /// Stop once every mapping has caught up (queues empty, streams at their tip,
        /// nothing in flight); exit 2 if stream records were discarded on the way.
        #[arg(long)]
        until_drained: bool,
        /// Stop after N invocations, across all mappings.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        max_batches: Option<u64>,
        /// Stop after SECS seconds and exit 124, unless the run ended before.
        #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
        timeout: Option<u64>,
    },
    /// Validate the config file without touching the network.
    Validate {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Re-drive records into a mapping's function through the pipeline of `run`, without
    /// touching its checkpoints, then exit (exit codes as `run --until-drained`).
    Replay(ReplayArgs),
    /// Read records from stdin (an event, a JSON array or JSON lines) and tell which
    /// filter of a mapping keeps each one, or why each filter misses it.
    Filter {
        #[command(flatten)]
        config: ConfigArg,
        /// The mapping whose filter_criteria to apply (its uuid or derived id).
        #[arg(long, value_name = "ID")]
        mapping: String,
    },
}

/// `esmd replay`: a mapping, one source of records, and where they go.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("records").required(true).args(["from", "failures", "capture"])))]
pub struct ReplayArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The mapping to replay (its uuid or derived id).
    #[arg(long, value_name = "ID")]
    pub mapping: String,
    /// A stream range from POS, included: TRIM_HORIZON, an RFC 3339 time, Unix seconds,
    /// or with --shard a sequence number (digits only).
    #[arg(long, value_name = "POS")]
    pub from: Option<String>,
    /// The range ends before POS (a time, or with --shard a sequence number); default:
    /// the tip of each shard when the replay starts.
    #[arg(long, value_name = "POS", requires = "from")]
    pub to: Option<String>,
    /// Replay only this shard.
    #[arg(long, value_name = "ID", requires = "from")]
    pub shard: Option<String>,
    /// Re-drive the records named by failure records (file:///...jsonl, arn:aws:sqs:...,
    /// s3://bucket/prefix), or an SQS mapping's dead-letter queue (its ARN).
    #[arg(long, value_name = "SRC")]
    pub failures: Option<String>,
    /// A capture file: send each captured event of the mapping, byte for byte.
    #[arg(long, value_name = "FILE")]
    pub capture: Option<PathBuf>,
    /// Send to this [functions] entry instead of the mapping's function.
    #[arg(long, value_name = "NAME")]
    pub function: Option<String>,
    /// Print the batches that would be sent, one JSON line each; invoke nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, clap::Args)]
pub struct ConfigArg {
    /// The config file (default: $ESMD_CONFIG, else esmd.toml).
    #[arg(
        long,
        env = "ESMD_CONFIG",
        default_value = "esmd.toml",
        value_name = "PATH"
    )]
    pub config: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}
