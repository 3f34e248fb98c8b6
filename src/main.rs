//! The `esmd` binary: parse the command line, set up logging, run or replay, map errors to
//! exit codes (0 clean stop, 64 usage error, 78 invalid config, 1 fatal runtime error: the
//! state directory is locked by another esmd, a mapping failed to start, a capture file
//! cannot be read; for the CI run modes and replay 2 drained with records discarded, 124
//! timeout).

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use esmd::cli::{Cli, Command, LogFormat, ReplayArgs};
use esmd::config::{Config, ConfigError};
use esmd::daemon::{Ended, RunReport, RunUntil};
use esmd::replay::ReplayError;
use esmd::state_lock::StateLock;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::info;
use tracing_subscriber::EnvFilter;

const EXIT_USAGE: u8 = 64;
const EXIT_CONFIG: u8 = 78;
const EXIT_DISCARDED: u8 = 2;
const EXIT_TIMEOUT: u8 = 124;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let usage_error = err.use_stderr();
            let _ = err.print();
            return if usage_error {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    init_logging(&cli);
    match cli.command {
        Command::Validate { config } => match Config::load(&config.config) {
            Ok(loaded) => {
                println!(
                    "{}: valid ({} mapping{}, {} function{})",
                    config.config.display(),
                    loaded.mappings.len(),
                    plural(loaded.mappings.len()),
                    loaded.functions.len(),
                    plural(loaded.functions.len()),
                );
                for note in &loaded.notes {
                    println!("  note: {note}");
                }
                ExitCode::SUCCESS
            }
            Err(err) => config_error(&err),
        },
        Command::Filter { config, mapping } => {
            let loaded = match Config::load(&config.config) {
                Ok(loaded) => loaded,
                Err(err) => return config_error(&err),
            };
            explain_filters(&loaded, &mapping)
        }
        Command::Replay(args) => {
            let loaded = match Config::load(&args.config.config) {
                Ok(loaded) => loaded,
                Err(err) => return config_error(&err),
            };
            replay_records(loaded, &args, cli.log_format)
        }
        Command::Run {
            config,
            graceful_shutdown_limit_secs,
            until_drained,
            max_batches,
            timeout,
        } => {
            let loaded = match Config::load(&config.config) {
                Ok(loaded) => loaded,
                Err(err) => return config_error(&err),
            };
            for note in &loaded.notes {
                tracing::info!(note = %note, "config note");
            }
            match StateLock::acquire(&loaded.state_dir) {
                // Never released by hand: the kernel releases it when the process exits,
                // past any work abandoned below that may still write checkpoints.
                Ok(lock) => std::mem::forget(lock),
                Err(err) => {
                    eprintln!("esmd: {err}");
                    return ExitCode::FAILURE;
                }
            }
            let runtime = match runtime() {
                Ok(runtime) => runtime,
                Err(code) => return code,
            };
            let limit = Duration::from_secs(graceful_shutdown_limit_secs);
            let until = RunUntil {
                drained: until_drained,
                batches: max_batches,
                timeout: timeout.map(Duration::from_secs),
            };
            let report = runtime.block_on(async {
                let (first, second) = stop_signals()?;
                let shutdown = first.cancelled_owned();
                let stop_now = second.cancelled_owned();
                Ok::<_, std::io::Error>(
                    esmd::daemon::run(loaded, limit, until, shutdown, stop_now).await,
                )
            });
            // In-flight work past the graceful limit is abandoned, not awaited.
            runtime.shutdown_background();
            match report {
                Ok(report) => {
                    print_summary(&report, cli.log_format);
                    run_exit_code(&report)
                }
                Err(err) => {
                    eprintln!("esmd: cannot listen for signals: {err}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// The async runtime of `run` and `replay`, or exit 1 when it cannot start.
fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Runtime::new().map_err(|err| {
        eprintln!("esmd: cannot start the async runtime: {err}");
        ExitCode::FAILURE
    })
}

/// `esmd replay`: no state lock, the exit codes of `run --until-drained`, 64 when the
/// request does not fit the config or the stream.
fn replay_records(config: Config, args: &ReplayArgs, format: LogFormat) -> ExitCode {
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let result = runtime.block_on(async {
        let (first, second) = stop_signals()?;
        let stop_now = second.cancelled_owned();
        Ok::<_, std::io::Error>(
            esmd::replay::run(config, args, format == LogFormat::Json, first, stop_now).await,
        )
    });
    // in-flight work past the graceful limit is abandoned, not awaited
    runtime.shutdown_background();
    match result {
        Ok(Ok(report)) => {
            print_summary(&report, format);
            run_exit_code(&report)
        }
        Ok(Err(ReplayError::Usage(err))) => {
            eprintln!("esmd: {err}");
            ExitCode::from(EXIT_USAGE)
        }
        Ok(Err(ReplayError::Fatal(err))) => {
            eprintln!("esmd: {err}");
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("esmd: cannot listen for signals: {err}");
            ExitCode::FAILURE
        }
    }
}

/// One line per mapping on stderr, a JSON object each in JSON log mode.
fn print_summary(report: &RunReport, format: LogFormat) {
    for mapping in &report.mappings {
        match format {
            LogFormat::Text => eprintln!("esmd: {}", mapping.summary()),
            LogFormat::Json => eprintln!("{}", mapping.summary_json()),
        }
    }
}

/// 1 when a mapping failed to start, else 124 after a timeout, 2 when a run that ended
/// by itself discarded stream records, else 0.
fn run_exit_code(report: &RunReport) -> ExitCode {
    if let Err(err) = report.result() {
        eprintln!("esmd: {err}");
        return ExitCode::FAILURE;
    }
    match report.ended {
        Ended::TimedOut => {
            eprintln!("esmd: --timeout passed before the work was done");
            ExitCode::from(EXIT_TIMEOUT)
        }
        Ended::Drained | Ended::BatchLimit if report.discarded() > 0 => {
            eprintln!(
                "esmd: {} records were discarded on the way",
                report.discarded()
            );
            ExitCode::from(EXIT_DISCARDED)
        }
        _ => ExitCode::SUCCESS,
    }
}

/// `esmd filter`: the verdict on each record read from stdin, a line each.
fn explain_filters(config: &Config, id: &str) -> ExitCode {
    let mapping = match config.mapping(id) {
        Ok(mapping) => mapping,
        Err(err) => {
            eprintln!("esmd: {err}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let mut input = String::new();
    if let Err(err) = std::io::Read::read_to_string(&mut std::io::stdin(), &mut input) {
        eprintln!("esmd: cannot read records from stdin: {err}");
        return ExitCode::FAILURE;
    }
    match esmd::filter::explain_input(
        mapping.filters.as_deref(),
        mapping.kind.filter_source(),
        &input,
    ) {
        Ok(lines) => {
            for line in lines {
                println!("{line}");
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("esmd: the records on stdin are not JSON: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Two stop requests: the first SIGINT or SIGTERM (stop gracefully), then the second
/// (stop at once).
fn stop_signals() -> std::io::Result<(CancellationToken, CancellationToken)> {
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let requests = [CancellationToken::new(), CancellationToken::new()];
    let signalled = requests.clone();
    tokio::spawn(async move {
        for request in signalled {
            let name = tokio::select! {
                _ = sigterm.recv() => "SIGTERM",
                _ = sigint.recv() => "SIGINT",
            };
            info!(signal = name, "signal received");
            request.cancel();
        }
    });
    let [first, second] = requests;
    Ok((first, second))
}

fn config_error(err: &ConfigError) -> ExitCode {
    eprintln!("esmd: {err}");
    ExitCode::from(EXIT_CONFIG)
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn init_logging(cli: &Cli) {
    let level = match i16::from(cli.verbose) - i16::from(cli.quiet) {
        i16::MIN..=-2 => "error",
        -1 => "warn",
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("warn,esmd={level}")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(esmd::replay::progress::log_writer);
    match cli.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
