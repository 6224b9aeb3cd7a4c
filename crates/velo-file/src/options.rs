//! Typed settings of the file source and sink, read from a `SourceConfig`.

use std::path::PathBuf;
use std::time::Duration;

use velo_datasource_core::format::FormatOptions;
use velo_datasource_core::format::compression::Compression;
use velo_datasource_core::{
    BadRecordPolicy, BatchConfig, ConnectorConfig, Error, EventTimeConfig, FileFormat, Properties,
    Result,
};

use crate::fingerprint::DEFAULT_BYTES;

/// How the source finds and follows files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Read what is there, then end.
    Bounded,
    /// Follow one file as it grows and rotates, like `tail -F`.
    Tail,
    /// Follow every file matching a glob or in a directory, woken by file-system events.
    DirectoryWatch,
    /// Like `DirectoryWatch`, but only rescanning every `poll_interval`.
    PeriodicScan,
}

impl Mode {
    /// Whether the source keeps running after reaching the end of what exists.
    pub fn is_streaming(self) -> bool {
        self != Mode::Bounded
    }
}

/// Keys only a sink understands.
const SINK_ONLY: &[&str] = &[
    "roll.size",
    "roll.records",
    "roll.interval",
    "roll.on_commit",
    "append",
];
/// Keys only a source understands.
const SOURCE_ONLY: &[&str] = &[
    "mode",
    "watch",
    "poll_interval",
    "read_timeout",
    "position_tracking",
    "checkpoint_dir",
    "checkpoint_interval",
    "checkpoint_interval_time",
    "detect_rotation",
    "rotation_pattern",
    "finish_rotated",
    "fingerprint_bytes",
    "sample_rows",
    "schema",
    "null_values",
    "errors",
    "errors.dead_letter",
    "errors.log_every",
    "event.time.field",
    "event.time.format",
];

fn reject(props: &Properties, keys: &[&str], role: &str) -> Result<()> {
    for key in keys {
        if props.contains(key) {
            return Err(Error::UnknownConfigKey {
                key: (*key).to_owned(),
                context: format!(
                    "file {role} (it is a file {} key)",
                    if role == "source" { "sink" } else { "source" }
                ),
                hint: None,
            });
        }
    }
    Ok(())
}

/// Settings of a file source.
#[derive(Debug, Clone)]
pub struct FileSourceOptions {
    /// File, directory or glob.
    pub path: String,
    /// Record format settings.
    pub format: FormatOptions,
    /// Compression override (`None`: by each file's extension).
    pub compression: Option<Compression>,
    /// How files are found and followed.
    pub mode: Mode,
    /// How often to look again when idle (and the fallback when events are unavailable).
    pub poll_interval: Duration,
    /// Longest a read waits for data before returning an empty batch.
    pub read_timeout: Duration,
    /// Follow rename+create and copytruncate rotation.
    pub detect_rotation: bool,
    /// Glob (file name, in the file's directory) of rotated files: `app.log.*`.
    pub rotation_pattern: Option<glob::Pattern>,
    /// Read a rotated file to its end before the new one.
    pub finish_rotated: bool,
    /// Bytes checksummed to identify a file.
    pub fingerprint_bytes: u64,
    /// Where the reader saves its own checkpoints (`None`: the runner does).
    pub checkpoint_dir: Option<PathBuf>,
    /// Records between saved checkpoints.
    pub checkpoint_interval: u64,
    /// Time between saved checkpoints.
    pub checkpoint_interval_time: Duration,
    /// What to do with a record that cannot be decoded.
    pub errors: BadRecordPolicy,
    /// Where dead letters go (with `errors=dead_letter`).
    pub dead_letter: Option<PathBuf>,
    /// Log one bad record in this many.
    pub log_every: u64,
    /// Batching.
    pub batch: BatchConfig,
    /// Event-time extraction.
    pub event_time: Option<EventTimeConfig>,
}

impl FileSourceOptions {
    /// Reads a `file` source config; every bad value is an error naming its key.
    pub fn from_config(config: &ConnectorConfig) -> Result<Self> {
        let ConnectorConfig::File {
            path,
            format,
            properties: p,
            batch_config,
            event_time_config,
        } = config
        else {
            return Err(Error::State(format!(
                "the file source got a {} config",
                config.scheme()
            )));
        };
        reject(p, SINK_ONLY, "source")?;
        let glob_like = path.contains(['*', '?', '[']) || std::path::Path::new(path).is_dir();
        let mode = match p.get("mode") {
            Some(m) => match m.to_ascii_lowercase().as_str() {
                "bounded" | "batch" | "once" => Mode::Bounded,
                "tail" | "follow" => Mode::Tail,
                "directory_watch" | "watch" => Mode::DirectoryWatch,
                "periodic_scan" | "scan" => Mode::PeriodicScan,
                _ => {
                    return Err(Error::invalid_value(
                        "mode",
                        m,
                        "expected bounded, tail, directory_watch or periodic_scan",
                    ));
                }
            },
            None if p.get_bool("watch")?.unwrap_or(false) => {
                if glob_like {
                    Mode::DirectoryWatch
                } else {
                    Mode::Tail
                }
            }
            None => Mode::Bounded,
        };
        if mode == Mode::Tail && glob_like {
            return Err(Error::invalid_value(
                "mode",
                "tail",
                format!(
                    "tail follows one file, but `{path}` is a directory or glob: use mode=directory_watch"
                ),
            ));
        }
        let rotation_pattern = p
            .get("rotation_pattern")
            .map(|g| {
                glob::Pattern::new(g)
                    .map_err(|e| Error::invalid_value("rotation_pattern", g, e.to_string()))
            })
            .transpose()?;
        let errors = p
            .get_parsed::<BadRecordPolicy>("errors")?
            .unwrap_or_default();
        let dead_letter = p
            .get("errors.dead_letter")
            .map(dead_letter_path)
            .transpose()?;
        if errors == BadRecordPolicy::DeadLetter && dead_letter.is_none() {
            return Err(Error::MissingConfigKey {
                key: "errors.dead_letter".into(),
                reason: "errors=dead_letter needs a file to write dead letters to".into(),
            });
        }
        let position_tracking = p.get_bool("position_tracking")?.unwrap_or(true);
        let compression = p.get_parsed::<Compression>("compression")?;
        if mode.is_streaming()
            && compression.is_some_and(|c| c != Compression::None)
            && mode == Mode::Tail
        {
            return Err(Error::invalid_value(
                "compression",
                p.get("compression").unwrap_or(""),
                "a compressed file cannot be tailed",
            ));
        }
        Ok(FileSourceOptions {
            path: path.clone(),
            format: FormatOptions::from_properties(*format, p)?,
            compression,
            mode,
            poll_interval: p
                .get_duration("poll_interval")?
                .unwrap_or(Duration::from_millis(100)),
            read_timeout: p
                .get_duration("read_timeout")?
                .unwrap_or(Duration::from_secs(1)),
            detect_rotation: p.get_bool("detect_rotation")?.unwrap_or(true),
            rotation_pattern,
            finish_rotated: p.get_bool("finish_rotated")?.unwrap_or(true),
            fingerprint_bytes: p
                .get_parsed::<u64>("fingerprint_bytes")?
                .unwrap_or(DEFAULT_BYTES)
                .max(1),
            checkpoint_dir: if position_tracking {
                p.get("checkpoint_dir").map(PathBuf::from)
            } else {
                None
            },
            checkpoint_interval: p
                .get_parsed::<u64>("checkpoint_interval")?
                .unwrap_or(1000)
                .max(1),
            checkpoint_interval_time: p
                .get_duration("checkpoint_interval_time")?
                .unwrap_or(Duration::from_secs(10)),
            errors,
            dead_letter,
            log_every: p
                .get_parsed::<u64>("errors.log_every")?
                .unwrap_or(1000)
                .max(1),
            batch: *batch_config,
            event_time: event_time_config.clone(),
        })
    }
}

fn dead_letter_path(v: &str) -> Result<PathBuf> {
    match v.strip_prefix("file://") {
        Some(p) => Ok(PathBuf::from(p)),
        None if v.contains("://") => Err(Error::invalid_value(
            "errors.dead_letter",
            v,
            "the file source writes dead letters to a local file: give a path",
        )),
        None => Ok(PathBuf::from(v)),
    }
}

/// Settings of a file sink.
#[derive(Debug, Clone)]
pub struct FileSinkOptions {
    /// The output file (with rolling: the name parts are derived from).
    pub path: PathBuf,
    /// Record format settings.
    pub format: FormatOptions,
    /// Output compression.
    pub compression: Compression,
    /// Start a new part after this many bytes.
    pub roll_size: Option<u64>,
    /// Start a new part after this many records.
    pub roll_records: Option<u64>,
    /// Start a new part after this long.
    pub roll_interval: Option<Duration>,
    /// Finish the part at every commit, so each commit is visible at once.
    pub roll_on_commit: bool,
    /// `Some(true)`: continue the existing output (a resumed pipeline).
    /// `Some(false)`: start afresh, discarding an interrupted part.
    /// `None`: recover an interrupted part, otherwise start afresh.
    pub append: Option<bool>,
}

impl FileSinkOptions {
    /// Reads a `file` sink config.
    pub fn from_config(config: &ConnectorConfig) -> Result<Self> {
        let ConnectorConfig::File {
            path,
            format,
            properties: p,
            ..
        } = config
        else {
            return Err(Error::State(format!(
                "the file sink got a {} config",
                config.scheme()
            )));
        };
        reject(p, SOURCE_ONLY, "sink")?;
        if path.contains(['*', '?', '[']) {
            return Err(Error::invalid_value(
                "path",
                path,
                "a sink writes one file (or rolling parts of it), not a glob",
            ));
        }
        if matches!(format, FileFormat::Parquet | FileFormat::Avro) {
            return Err(Error::unsupported(
                format!("writing {format}"),
                "the file sink",
            ));
        }
        let compression = match p.get_parsed::<Compression>("compression")? {
            Some(c) => c,
            None => Compression::from_path(path),
        };
        Ok(FileSinkOptions {
            path: PathBuf::from(path),
            format: FormatOptions::from_properties(*format, p)?,
            compression,
            roll_size: p
                .get("roll.size")
                .map(|v| parse_size("roll.size", v))
                .transpose()?,
            roll_records: p.get_parsed::<u64>("roll.records")?.map(|n| n.max(1)),
            roll_interval: p.get_duration("roll.interval")?,
            roll_on_commit: p.get_bool("roll.on_commit")?.unwrap_or(false),
            append: p.get_bool("append")?,
        })
    }

    /// Whether output is split into rolling parts.
    pub fn rolls(&self) -> bool {
        self.roll_size.is_some()
            || self.roll_records.is_some()
            || self.roll_interval.is_some()
            || self.roll_on_commit
    }
}

/// `1048576`, `64KB`, `64MB`, `1GiB` (KB = 1000, KiB = 1024).
pub(crate) fn parse_size(key: &str, v: &str) -> Result<u64> {
    let t = v.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| Error::invalid_value(key, v, "expected a size like 64MB"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" | "k" => 1_000,
        "kib" => 1 << 10,
        "mb" | "m" => 1_000_000,
        "mib" => 1 << 20,
        "gb" | "g" => 1_000_000_000,
        "gib" => 1 << 30,
        _ => {
            return Err(Error::invalid_value(
                key,
                v,
                "unknown unit: use B, KB, KiB, MB, MiB, GB or GiB",
            ));
        }
    };
    n.checked_mul(mult)
        .filter(|n| *n > 0)
        .ok_or_else(|| Error::invalid_value(key, v, "must be above 0 and fit 64 bits"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use velo_datasource_core::DataSourceUri;

    fn source(uri: &str) -> Result<FileSourceOptions> {
        FileSourceOptions::from_config(&DataSourceUri::parse(uri)?.to_source_config()?)
    }

    #[test]
    fn modes() {
        assert_eq!(source("file:///a.csv").unwrap().mode, Mode::Bounded);
        assert_eq!(source("file:///a.csv?watch=true").unwrap().mode, Mode::Tail);
        assert_eq!(
            source("file:///logs/*.jsonl?watch=true").unwrap().mode,
            Mode::DirectoryWatch
        );
        assert_eq!(
            source("file:///logs/*.jsonl?mode=periodic_scan")
                .unwrap()
                .mode,
            Mode::PeriodicScan
        );
        assert!(
            source("file:///logs/*.jsonl?mode=tail")
                .unwrap_err()
                .to_string()
                .contains("directory_watch")
        );
        assert!(
            source("file:///a.csv?mode=sideways")
                .unwrap_err()
                .to_string()
                .contains("`mode`")
        );
    }

    #[test]
    fn policies_and_roles() {
        let e = source("file:///a.csv?errors=dead_letter")
            .unwrap_err()
            .to_string();
        assert!(e.contains("errors.dead_letter"), "{e}");
        let o =
            source("file:///a.csv?errors=dead_letter&errors.dead_letter=/tmp/dlq.jsonl").unwrap();
        assert_eq!(o.dead_letter, Some(PathBuf::from("/tmp/dlq.jsonl")));
        let e = source("file:///a.csv?roll.size=1MB")
            .unwrap_err()
            .to_string();
        assert!(e.contains("roll.size") && e.contains("sink key"), "{e}");
        let sink = |u: &str| {
            FileSinkOptions::from_config(
                &DataSourceUri::parse(u).unwrap().to_sink_config().unwrap(),
            )
        };
        assert!(
            sink("file:///o.csv?mode=tail")
                .unwrap_err()
                .to_string()
                .contains("source key")
        );
        let o = sink("file:///o.jsonl.gz?roll.size=64MB&roll.records=10").unwrap();
        assert_eq!(o.roll_size, Some(64_000_000));
        assert_eq!(o.compression, Compression::Gzip);
        assert_eq!(o.format.format, FileFormat::JsonLines);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("k", "1KiB").unwrap(), 1024);
        assert_eq!(parse_size("k", "5 MB").unwrap(), 5_000_000);
        assert!(parse_size("k", "5XB").is_err());
        assert!(parse_size("k", "0").is_err());
    }
}
