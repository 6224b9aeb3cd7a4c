//! `cargo xtask`: the project's tasks.
//!
//! - `itest`: start the test services, run every test of the workspace with
//!   their endpoints in the environment, stop them (also on failure and Ctrl-C),
//!   check that nothing is left behind, exit with the tests' status.
//! - `services up|down|status|env`: the same services for working by hand.
//! - `bench`: the benchmark suite with its baselines, one table.
//! - `tidy`: repository hygiene checks.

// A command-line tool: printing to stdout is its job (`services env` output is eval-ed).
#![allow(clippy::print_stdout)]

mod bench;
mod services;
mod tidy;
mod tools;

use std::path::PathBuf;
use std::process::{Command, ExitCode, ExitStatus};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};

use services::{Mode, Running, ServiceKind};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "Velostream project tasks")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Only {
    /// Core, file and CLI tests: no services.
    File,
    /// Kafka tests, with the Kafka-protocol broker.
    Kafka,
    /// PostgreSQL tests, with PostgreSQL.
    Postgres,
    /// Object-store tests, with the S3 server and Azurite.
    S3,
    /// ClickHouse tests, with ClickHouse.
    Clickhouse,
}

#[derive(Debug, clap::Args)]
struct ServiceChoice {
    /// Use Docker (docker compose with docker-compose.yml).
    #[arg(long, conflicts_with = "native")]
    docker: bool,
    /// Use local processes (the default when no Docker engine answers).
    #[arg(long)]
    native: bool,
}

impl ServiceChoice {
    fn mode(&self) -> Mode {
        if self.docker {
            Mode::Docker
        } else if self.native {
            Mode::Native
        } else {
            Mode::detect()
        }
    }
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Start the services, run every test, stop the services.
    Itest {
        /// Run only one group of tests (and start only its service). Repeatable.
        #[arg(long, value_enum)]
        only: Vec<Only>,
        /// Leave the services running afterwards (stop them with `cargo xtask services down`).
        #[arg(long)]
        keep: bool,
        #[command(flatten)]
        choice: ServiceChoice,
        /// Extra arguments for `cargo test`, after `--`.
        #[arg(last = true)]
        cargo_args: Vec<String>,
    },
    /// Manage the test services by hand.
    Services {
        #[command(subcommand)]
        action: ServicesAction,
    },
    /// Run the benchmarks against their baselines and write target/bench/report.md.
    Bench {
        /// Fewer repetitions and smaller inputs.
        #[arg(long)]
        quick: bool,
        /// Only this group of workloads: file, kafka, postgres, s3 or clickhouse.
        #[arg(long)]
        only: Option<String>,
    },
    /// Repository hygiene checks.
    Tidy,
}

#[derive(Debug, Subcommand)]
enum ServicesAction {
    /// Start the services and print their environment.
    Up {
        #[command(flatten)]
        choice: ServiceChoice,
    },
    /// Stop the services started with `up` (or left by `itest --keep`).
    Down,
    /// Say which services run and where.
    Status,
    /// Print `export` lines for the running services.
    Env,
}

/// The workspace root.
pub(crate) fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is inside the workspace")
        .to_owned()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Itest {
            only,
            keep,
            choice,
            cargo_args,
        } => itest(&only, keep, choice.mode(), &cargo_args),
        Cmd::Services { action } => match action {
            ServicesAction::Up { choice } => {
                services::up(choice.mode(), &ServiceKind::ALL).map(|r| {
                    print!("{}", r.exports());
                    eprintln!("services are up; stop them with `cargo xtask services down`");
                    ExitCode::SUCCESS
                })
            }
            ServicesAction::Down => services::down_saved().map(|()| ExitCode::SUCCESS),
            ServicesAction::Status => services::status().map(|()| ExitCode::SUCCESS),
            ServicesAction::Env => services::load_saved().map(|r| match r {
                Some(r) => {
                    print!("{}", r.exports());
                    ExitCode::SUCCESS
                }
                None => {
                    eprintln!("no services are running: start them with `cargo xtask services up`");
                    ExitCode::FAILURE
                }
            }),
        },
        Cmd::Bench { quick, only } => bench::run(quick, only.as_deref()),
        Cmd::Tidy => tidy::run(),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Errors of xtask: a message for a person.
pub(crate) type Result<T> = std::result::Result<T, String>;

/// A flag set when xtask is interrupted (Ctrl-C, `SIGTERM`, `SIGHUP`).
///
/// Ctrl-C reaches the child it runs (`cargo test`, the benchmark harness:
/// same process group) but not the services (their own groups), and a
/// `SIGTERM` reaches xtask alone: either way xtask survives it, and its
/// caller stops the services and checks that none is left.
pub(crate) fn on_interrupt() -> Result<Arc<AtomicBool>> {
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = interrupted.clone();
    ctrlc::set_handler(move || {
        eprintln!("xtask: interrupted; stopping the services");
        flag.store(true, Ordering::SeqCst);
    })
    .map_err(|e| format!("cannot handle Ctrl-C: {e}"))?;
    Ok(interrupted)
}

/// Runs `cmd` to its end, or until `interrupted` is set: the child is then
/// killed (a `SIGTERM` to xtask alone does not reach it) and `None` returned.
pub(crate) fn run_until_interrupted(
    cmd: &mut Command,
    interrupted: &AtomicBool,
) -> std::io::Result<Option<ExitStatus>> {
    let mut child = cmd.spawn()?;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if interrupted.load(Ordering::SeqCst) {
            // Already gone if the signal was a Ctrl-C to the whole group.
            let _ = child.kill();
            child.wait()?;
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn itest(only: &[Only], keep: bool, mode: Mode, cargo_args: &[String]) -> Result<ExitCode> {
    let all = only.is_empty();
    let want = |o: Only| {
        all || only
            .iter()
            .any(|x| std::mem::discriminant(x) == std::mem::discriminant(&o))
    };
    let kinds: Vec<ServiceKind> = [
        (Only::Kafka, ServiceKind::Kafka),
        (Only::Postgres, ServiceKind::Postgres),
        (Only::S3, ServiceKind::S3),
        (Only::S3, ServiceKind::Azure),
        (Only::Clickhouse, ServiceKind::ClickHouse),
    ]
    .into_iter()
    .filter(|(o, _)| want(*o))
    .map(|(_, k)| k)
    .collect();

    let interrupted = on_interrupt()?;

    let phase = Instant::now();
    let running = services::up(mode, &kinds)?;
    eprintln!(
        "xtask: services ready in {:.1}s",
        phase.elapsed().as_secs_f64()
    );

    let status = if interrupted.load(Ordering::SeqCst) {
        None
    } else {
        let runs: Vec<&[&str]> = if all {
            vec![&["--workspace"]]
        } else {
            only.iter()
                .flat_map(|o| subset(*o).iter().copied())
                .collect()
        };
        let phase = Instant::now();
        let mut failed = None;
        for args in runs {
            if interrupted.load(Ordering::SeqCst) {
                break;
            }
            let mut cmd = Command::new(env!("CARGO"));
            // Every test binary runs even when one fails, so one run shows every failure.
            cmd.current_dir(project_root())
                .args(["test", "--no-fail-fast"])
                .args(args)
                .args(cargo_args);
            for (k, v) in running.env() {
                cmd.env(k, v);
            }
            eprintln!("xtask: running {:?}", cmd);
            let Some(status) = run_until_interrupted(&mut cmd, &interrupted)
                .map_err(|e| format!("cannot run cargo test: {e}"))?
            else {
                break;
            };
            if !status.success() && failed.is_none() {
                failed = Some(status);
            }
        }
        eprintln!(
            "xtask: tests finished in {:.1}s",
            phase.elapsed().as_secs_f64()
        );
        Some(failed.map_or(0, |s| s.code().unwrap_or(1).clamp(1, 255)))
    };

    if keep && !interrupted.load(Ordering::SeqCst) {
        services::save(&running)?;
        eprintln!("xtask: services left running (`cargo xtask services down` stops them):");
        eprint!("{}", running.exports());
    } else {
        stop_and_check(running)?;
    }
    Ok(match status {
        _ if interrupted.load(Ordering::SeqCst) => ExitCode::from(130),
        Some(0) => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(code as u8),
        None => ExitCode::from(130),
    })
}

/// The `cargo test` runs of one `--only` group: each package's own tests,
/// and the service tests of `tests-integration` and `velo-cli` that need
/// that group's services (and no others).
fn subset(o: Only) -> &'static [&'static [&'static str]] {
    match o {
        Only::File => &[
            &[
                "-p",
                "velo-datasource-core",
                "-p",
                "velo-file",
                "-p",
                "velo-example-connector",
                // The container formats' tests compile to nothing without them.
                "--features",
                "velo-file/parquet,velo-file/avro",
            ],
            &["-p", "velo-cli", "--bins", "--test", "cli"],
        ],
        Only::Kafka => &[
            &["-p", "velo-kafka"],
            &[
                "-p",
                "tests-integration",
                "--test",
                "kafka",
                "--test",
                "kafka_faults",
            ],
            &["-p", "velo-cli", "--test", "kafka"],
        ],
        Only::Postgres => &[
            &["-p", "velo-pg-cdc"],
            &[
                "-p",
                "tests-integration",
                "--test",
                "postgres",
                "--test",
                "pg_cdc",
                "--test",
                "pg_restart",
            ],
            &["-p", "velo-cli", "--test", "postgres"],
        ],
        Only::S3 => &[
            &["-p", "velo-s3", "--features", "velo-s3/parquet"],
            &[
                "-p",
                "tests-integration",
                "--test",
                "s3",
                "--test",
                "s3_connector",
            ],
            &["-p", "velo-cli", "--test", "s3"],
        ],
        Only::Clickhouse => &[
            &["-p", "velo-clickhouse"],
            &[
                "-p",
                "velo-cli",
                "--test",
                "clickhouse",
                "--test",
                "clickhouse_restart",
            ],
        ],
    }
}

fn stop_and_check(running: Running) -> Result<()> {
    let leftovers = running.stop();
    if leftovers.is_empty() {
        eprintln!("xtask: services stopped; no process or port left behind");
        Ok(())
    } else {
        Err(format!(
            "left behind after stopping the services: {}",
            leftovers.join("; ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new test file under `tests/` that no `--only` group names would
    /// silently never run in a subset run.
    #[test]
    fn every_test_file_of_the_service_crates_is_in_an_only_group() {
        let groups = [
            Only::File,
            Only::Kafka,
            Only::Postgres,
            Only::S3,
            Only::Clickhouse,
        ];
        let named: Vec<(&str, &str)> = groups
            .iter()
            .flat_map(|o| subset(*o).iter())
            .flat_map(|args| {
                let package = args[args.iter().position(|a| *a == "-p").unwrap() + 1];
                args.windows(2)
                    .filter(|w| w[0] == "--test")
                    .map(move |w| (package, w[1]))
            })
            .collect();
        for (package, dir) in [
            ("tests-integration", "tests-integration/tests"),
            ("velo-cli", "crates/velo-cli/tests"),
        ] {
            for entry in std::fs::read_dir(project_root().join(dir)).unwrap() {
                let path = entry.unwrap().path();
                // Test binaries are the `.rs` files; folders hold shared helpers.
                if path.extension().is_none_or(|e| e != "rs") {
                    continue;
                }
                let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
                assert!(
                    named.contains(&(package, name.as_str())),
                    "{dir}/{name}.rs is in no `cargo xtask itest --only` group"
                );
            }
        }
    }
}
