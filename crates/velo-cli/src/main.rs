//! `velo`: run any source into any sink with checkpoints, progress and metrics.

mod cli;
mod pipeline;
mod pipeline_file;
mod progress;
mod report;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::Parser;
use velo_datasource_core::{
    CheckpointStore, ConnectorConfig, DataSourceRegistry, Error, FileCheckpointStore, Result,
    secret::redact_uri,
};

use cli::{Cli, Command, ErrorsArg, RunOptions};
use pipeline::PipelineOptions;
use progress::Progress;

// Name each linked connector once, so that the linker keeps its registration.
#[cfg(feature = "clickhouse")]
use velo_clickhouse as _;
#[cfg(feature = "file")]
use velo_file as _;
#[cfg(feature = "kafka")]
use velo_kafka as _;
#[cfg(feature = "postgres")]
use velo_pg_cdc as _;
#[cfg(feature = "s3")]
use velo_s3 as _;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs(&cli.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            if let Some(hint) = hint(&e) {
                eprintln!("\n{hint}");
            }
            ExitCode::FAILURE
        }
    }
}

fn init_logs(filter: &str) {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| filter.to_owned());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .try_init();
}

/// What to do about an error, in one sentence.
fn hint(e: &Error) -> Option<String> {
    Some(match e {
        Error::UnknownScheme { .. } => {
            "This velo binary does not have that connector. `velo connectors` lists what it has; build velo with the connector's cargo feature to add it.".into()
        }
        Error::InvalidUri { .. } => {
            "URIs look like file:///data/in.csv?format=csv, kafka://host:9092/topic or s3://bucket/prefix/.".into()
        }
        Error::UnknownConfigKey { .. } | Error::InvalidConfigValue { .. } | Error::MissingConfigKey { .. } => {
            "The keys of each connector are listed in docs/connectors/<connector>.md.".into()
        }
        Error::Connection { .. } => "Check that the service is running and reachable from here, and that the credentials are right.".into(),
        Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => "Check the path: it is relative to the directory velo runs in.".into(),
        Error::Io { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied => "Check the file's permissions for the user running velo.".into(),
        Error::Decode { .. } => "Fix the record, or run with --errors skip or --errors dead-letter --dead-letter FILE to go past bad records.".into(),
        _ => return None,
    })
}

async fn dispatch(command: Command) -> Result<ExitCode> {
    let registry = DataSourceRegistry::with_plugins();
    match command {
        Command::Pipe(args) => {
            let mut source =
                velo_datasource_core::DataSourceUri::parse(&args.source)?.to_source_config()?;
            let sink = velo_datasource_core::DataSourceUri::parse(&args.sink)?.to_sink_config()?;
            let key = pipeline::checkpoint_key(&redact_uri(&args.source), &redact_uri(&args.sink));
            apply_source_flags(&mut source, &args.options, None, None)?;
            run_pipeline(
                &registry,
                source,
                sink,
                redact_uri(&args.source),
                key,
                &args.options,
                None,
                None,
            )
            .await
        }
        Command::Run(args) => {
            let file = pipeline_file::load(&args.file)?;
            let mut source = file.source;
            apply_source_flags(
                &mut source,
                &args.options,
                file.errors.as_deref(),
                file.dead_letter.as_deref(),
            )?;
            let key = pipeline::checkpoint_key(&file.identity.0, &file.identity.1);
            let name = format!("{} ({})", args.file.display(), source.scheme());
            let mut options = args.options;
            if options.checkpoint_dir.is_none() {
                options.checkpoint_dir = file.checkpoint_dir;
            }
            run_pipeline(
                &registry,
                source,
                file.sink,
                name,
                key,
                &options,
                file.batch_size,
                file.limit,
            )
            .await
        }
        Command::Schema { source, json } => {
            let src = registry.create_source(&source).await?;
            let schema = src.fetch_schema().await?;
            let text = if json {
                serde_json::to_string_pretty(&schema).map_err(|e| Error::State(e.to_string()))?
                    + "\n"
            } else {
                report::schema_table(&schema)
            };
            print(&text);
            Ok(ExitCode::SUCCESS)
        }
        Command::Connectors { json } => {
            let connectors = registry.connectors();
            let text = if json {
                serde_json::to_string_pretty(&connectors)
                    .map_err(|e| Error::State(e.to_string()))?
                    + "\n"
            } else {
                report::connectors_table(&connectors)
            };
            print(&text);
            Ok(ExitCode::SUCCESS)
        }
        Command::Offsets { dir, json } => {
            if !dir.is_dir() {
                return Err(Error::io(
                    &dir,
                    std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "no such checkpoint directory",
                    ),
                ));
            }
            let store = FileCheckpointStore::new(&dir);
            let mut entries = Vec::new();
            for key in store.keys().await? {
                if let Some(cp) = store.load(&key).await? {
                    entries.push((key, cp));
                }
            }
            let text = if json {
                let map: serde_json::Map<String, serde_json::Value> = entries
                    .iter()
                    .map(|(k, cp)| (k.clone(), serde_json::to_value(cp).unwrap_or_default()))
                    .collect();
                serde_json::to_string_pretty(&map).map_err(|e| Error::State(e.to_string()))? + "\n"
            } else {
                report::offsets_text(&entries)
            };
            print(&text);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Writes to stdout; a closed pipe (`velo connectors | head`) is not an error.
fn print(text: &str) {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

/// `--errors`, `--dead-letter` and `--batch-size` (or the pipeline file's) on the source config.
fn apply_source_flags(
    source: &mut ConnectorConfig,
    o: &RunOptions,
    file_errors: Option<&str>,
    file_dead_letter: Option<&std::path::Path>,
) -> Result<()> {
    let policy = match o.errors {
        Some(ErrorsArg::Fail) => Some("fail".to_owned()),
        Some(ErrorsArg::Skip) => Some("skip".to_owned()),
        Some(ErrorsArg::DeadLetter) => Some("dead_letter".to_owned()),
        None => file_errors.map(str::to_owned),
    };
    if let Some(p) = policy {
        source.properties_mut().insert("errors", p);
    }
    if let Some(d) = o.dead_letter.as_deref().or(file_dead_letter) {
        source
            .properties_mut()
            .insert("errors.dead_letter", d.display().to_string());
    }
    if let Some(n) = o.batch_size {
        if n == 0 {
            return Err(Error::invalid_value(
                "--batch-size",
                "0",
                "must be at least 1",
            ));
        }
        source.batch_config_mut().max_batch_size = n;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn run_pipeline(
    registry: &DataSourceRegistry,
    source: ConnectorConfig,
    mut sink: ConnectorConfig,
    source_name: String,
    key: String,
    o: &RunOptions,
    file_batch_size: Option<usize>,
    file_limit: Option<u64>,
) -> Result<ExitCode> {
    if let Some(addr) = o.metrics_addr {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .with_http_listener(addr)
            .install()
            .map_err(|e| Error::Connection {
                endpoint: addr.to_string(),
                message: format!("cannot serve metrics: {e}"),
                retryable: false,
                source: None,
            })?;
    }
    let batch_size = o
        .batch_size
        .or(file_batch_size)
        .unwrap_or(source.batch_config().max_batch_size);
    let stop = Arc::new(AtomicBool::new(false));
    let opts = PipelineOptions {
        batch_size,
        limit: o.limit.or(file_limit),
        checkpoint: o
            .checkpoint_dir
            .as_ref()
            .map(|d| (FileCheckpointStore::new(d), key)),
        source_name,
        stop: stop.clone(),
        progress: Progress::new(!o.no_progress),
    };
    let checkpoint = pipeline::load_checkpoint(&opts).await?;
    // A file sink continues its output only when the pipeline resumes; a
    // fresh run replaces it (and never doubles it).
    if sink.scheme() == "file" && !sink.properties().contains("append") {
        sink.properties_mut()
            .insert("append", checkpoint.is_some().to_string());
    }
    let src = registry.create_source_from_config(source).await?;
    let snk = registry.create_sink_from_config(sink).await?;
    spawn_signal_handler(stop);
    let summary = pipeline::run(src.as_ref(), snk.as_ref(), checkpoint, opts).await?;
    let rate = summary.records as f64 / summary.elapsed.as_secs_f64().max(0.001);
    let resumed = summary
        .resumed_from
        .map_or(String::new(), |n| format!(", resumed after {n}"));
    let why = if summary.stopped_by_signal {
        "stopped by signal"
    } else {
        "done"
    };
    eprintln!(
        "{why}: {} records in {:.2}s ({rate:.0} records/s){resumed}; {} in total",
        summary.records,
        summary.elapsed.as_secs_f64(),
        summary.total_records
    );
    Ok(ExitCode::SUCCESS)
}

/// The first SIGINT or SIGTERM asks for a clean stop; a second SIGINT exits at once.
fn spawn_signal_handler(stop: Arc<AtomicBool>) {
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                return;
            };
            loop {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {
                        if stop.load(Ordering::SeqCst) {
                            eprintln!("second interrupt: exiting without a clean stop");
                            std::process::exit(130);
                        }
                    }
                }
                eprintln!(
                    "stopping: finishing the batch in flight, then committing and checkpointing"
                );
                stop.store(true, Ordering::SeqCst);
            }
        }
        #[cfg(not(unix))]
        {
            if tokio::signal::ctrl_c().await.is_ok() {
                stop.store(true, Ordering::SeqCst);
            }
        }
    });
}
