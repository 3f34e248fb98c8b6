//! The command line (interface.md): `esmd run`, `esmd validate` and `esmd filter`.

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
    /// Re-drive records into a mapping's function, then exit (here: --failures only).
    Replay {
        #[command(flatten)]
        config: ConfigArg,
        /// The mapping (its uuid or derived id).
        #[arg(long, value_name = "ID")]
        mapping: String,
        /// The mapping's failure records (file:///...jsonl, an SQS queue ARN,
        /// s3://bucket/prefix), or an SQS mapping's dead-letter queue ARN.
        #[arg(long, value_name = "SRC")]
        failures: String,
        /// Send to this [functions] entry instead of the mapping's function.
        #[arg(long, value_name = "NAME")]
        function: Option<String>,
        /// Print the batches it would send; invoke nothing.
        #[arg(long)]
        dry_run: bool,
    },
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
