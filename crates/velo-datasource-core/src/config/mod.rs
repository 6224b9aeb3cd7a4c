//! Source and sink configuration, from URIs or YAML.
//!
//! Both routes produce the same [`SourceConfig`] / [`SinkConfig`]: URI
//! parameters and the guide's YAML keys map onto one table of canonical keys
//! ([`keys`]), unknown keys are errors that name the key, and durations read
//! like `100ms`, `5s`, `5m`.

pub mod keys;
mod properties;
mod uri;
mod yaml;

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use properties::{Properties, parse_duration};
pub use uri::DataSourceUri;

use crate::error::{Error, Result};
use crate::event_time::EventTimeConfig;
use crate::secret::ConnectionString;

/// Record format of files and objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FileFormat {
    /// Comma (or other delimiter) separated values.
    Csv,
    /// One JSON object per line (`json`, `jsonl`, `ndjson`).
    JsonLines,
    /// One JSON array of objects.
    JsonArray,
    /// Apache Parquet.
    Parquet,
    /// Apache Avro object container files.
    Avro,
}

impl FileFormat {
    /// The format implied by a file name's extension, looking past `.gz`/`.zst`.
    ///
    /// ```
    /// use velo_datasource_core::FileFormat;
    /// assert_eq!(FileFormat::from_path("logs/app.jsonl.gz"), Some(FileFormat::JsonLines));
    /// assert_eq!(FileFormat::from_path("trades.csv"), Some(FileFormat::Csv));
    /// assert_eq!(FileFormat::from_path("data/"), None);
    /// ```
    pub fn from_path(path: impl AsRef<Path>) -> Option<Self> {
        let path = path.as_ref();
        let mut ext = path.extension()?.to_str()?.to_ascii_lowercase();
        if matches!(ext.as_str(), "gz" | "gzip" | "zst" | "zstd") {
            let stem = Path::new(path.file_stem()?);
            ext = stem.extension()?.to_str()?.to_ascii_lowercase();
        }
        Some(match ext.as_str() {
            "csv" | "tsv" => FileFormat::Csv,
            "json" | "jsonl" | "ndjson" | "log" => FileFormat::JsonLines,
            "parquet" | "pq" => FileFormat::Parquet,
            "avro" => FileFormat::Avro,
            _ => return None,
        })
    }

    /// The usual file extension.
    pub fn extension(self) -> &'static str {
        match self {
            FileFormat::Csv => "csv",
            FileFormat::JsonLines => "jsonl",
            FileFormat::JsonArray => "json",
            FileFormat::Parquet => "parquet",
            FileFormat::Avro => "avro",
        }
    }
}

impl FromStr for FileFormat {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "csv" => FileFormat::Csv,
            "json" | "jsonl" | "json_lines" | "jsonlines" | "ndjson" => FileFormat::JsonLines,
            "json_array" | "jsonarray" => FileFormat::JsonArray,
            "parquet" => FileFormat::Parquet,
            "avro" => FileFormat::Avro,
            _ => {
                return Err(Error::invalid_value(
                    "format",
                    s,
                    "expected csv, json, jsonl, json_array, parquet or avro",
                ));
            }
        })
    }
}

impl fmt::Display for FileFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileFormat::Csv => "csv",
            FileFormat::JsonLines => "jsonl",
            FileFormat::JsonArray => "json_array",
            FileFormat::Parquet => "parquet",
            FileFormat::Avro => "avro",
        })
    }
}

/// How records are grouped into batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchConfig {
    /// Most records per batch (`batch.size`, default 1000).
    pub max_batch_size: usize,
    /// Longest wait to fill a batch (`batch.timeout`, default 1s).
    pub batch_timeout: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_batch_size: 1000,
            batch_timeout: Duration::from_secs(1),
        }
    }
}

impl BatchConfig {
    /// Reads `batch.size` and `batch.timeout`.
    pub fn from_properties(props: &Properties) -> Result<Self> {
        let default = Self::default();
        let max_batch_size = props
            .get_parsed::<usize>("batch.size")?
            .unwrap_or(default.max_batch_size);
        if max_batch_size == 0 {
            return Err(Error::invalid_value(
                "batch.size",
                "0",
                "must be at least 1",
            ));
        }
        Ok(BatchConfig {
            max_batch_size,
            batch_timeout: props
                .get_duration("batch.timeout")?
                .unwrap_or(default.batch_timeout),
        })
    }
}

/// What a reader does with a record it cannot decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BadRecordPolicy {
    /// Stop with an error naming the record's position (the default).
    #[default]
    Fail,
    /// Count it, log it, and go on.
    Skip,
    /// Write the raw bytes, the error and the position to the dead-letter target, and go on.
    DeadLetter,
}

impl FromStr for BadRecordPolicy {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "fail" => Ok(BadRecordPolicy::Fail),
            "skip" => Ok(BadRecordPolicy::Skip),
            "dead_letter" | "dead-letter" | "dlq" => Ok(BadRecordPolicy::DeadLetter),
            _ => Err(Error::invalid_value(
                "errors",
                s,
                "expected fail, skip or dead_letter",
            )),
        }
    }
}

impl fmt::Display for BadRecordPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BadRecordPolicy::Fail => "fail",
            BadRecordPolicy::Skip => "skip",
            BadRecordPolicy::DeadLetter => "dead_letter",
        })
    }
}

/// Where records come from or go to, with the connector's own properties.
///
/// Built by [`DataSourceUri::to_source_config`], [`DataSourceUri::to_sink_config`]
/// or [`ConnectorConfig::from_yaml_str`]. `properties` hold every key under
/// its canonical name (see [`keys`]), including the ones also parsed into
/// typed fields here.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ConnectorConfig {
    /// A Kafka topic.
    Kafka {
        /// Comma-separated `host:port` list.
        brokers: String,
        /// Topic name.
        topic: String,
        /// Consumer group (sources).
        group_id: Option<String>,
        /// Other keys.
        properties: Properties,
        /// Batching.
        batch_config: BatchConfig,
        /// Event-time extraction.
        event_time_config: Option<EventTimeConfig>,
    },
    /// A file, directory or glob on the local file system.
    File {
        /// Path, directory or glob.
        path: String,
        /// Record format.
        format: FileFormat,
        /// Other keys.
        properties: Properties,
        /// Batching.
        batch_config: BatchConfig,
        /// Event-time extraction.
        event_time_config: Option<EventTimeConfig>,
    },
    /// Objects under a prefix of an object store (`s3`, `gs`, `az`).
    S3 {
        /// `s3`, `gs` or `az`.
        scheme: String,
        /// Bucket or container.
        bucket: String,
        /// Key prefix (may be empty).
        prefix: String,
        /// Region, where the store has regions.
        region: Option<String>,
        /// Record format.
        format: FileFormat,
        /// Other keys.
        properties: Properties,
        /// Batching.
        batch_config: BatchConfig,
        /// Event-time extraction.
        event_time_config: Option<EventTimeConfig>,
    },
    /// A database table (PostgreSQL).
    Database {
        /// `postgresql`.
        db_type: String,
        /// Connection URL without Velostream's own parameters.
        connection_string: ConnectionString,
        /// Table, optionally schema-qualified.
        table: String,
        /// Other keys.
        properties: Properties,
        /// Batching.
        batch_config: BatchConfig,
        /// Event-time extraction.
        event_time_config: Option<EventTimeConfig>,
    },
    /// A ClickHouse table.
    ClickHouse {
        /// Connection URL without Velostream's own parameters.
        connection_string: ConnectionString,
        /// Table.
        table: String,
        /// Other keys.
        properties: Properties,
        /// Batching.
        batch_config: BatchConfig,
        /// Event-time extraction.
        event_time_config: Option<EventTimeConfig>,
    },
    /// Any other scheme, handled by a third-party plugin.
    Generic {
        /// The scheme or YAML `type`.
        source_type: String,
        /// The URI it came from, if any.
        uri: Option<ConnectionString>,
        /// All keys, unvalidated: the plugin checks them.
        properties: Properties,
        /// Batching.
        batch_config: BatchConfig,
        /// Event-time extraction.
        event_time_config: Option<EventTimeConfig>,
    },
}

/// Configuration of a source.
pub type SourceConfig = ConnectorConfig;
/// Configuration of a sink.
pub type SinkConfig = ConnectorConfig;

impl ConnectorConfig {
    /// The scheme this config is for: `file`, `kafka`, `s3`, `postgresql`, ...
    pub fn scheme(&self) -> &str {
        match self {
            ConnectorConfig::Kafka { .. } => "kafka",
            ConnectorConfig::File { .. } => "file",
            ConnectorConfig::S3 { scheme, .. } => scheme,
            ConnectorConfig::Database { db_type, .. } => db_type,
            ConnectorConfig::ClickHouse { .. } => "clickhouse",
            ConnectorConfig::Generic { source_type, .. } => source_type,
        }
    }

    /// The fields every variant has.
    fn shared(&self) -> (&Properties, &BatchConfig, &Option<EventTimeConfig>) {
        match self {
            ConnectorConfig::Kafka {
                properties,
                batch_config,
                event_time_config,
                ..
            }
            | ConnectorConfig::File {
                properties,
                batch_config,
                event_time_config,
                ..
            }
            | ConnectorConfig::S3 {
                properties,
                batch_config,
                event_time_config,
                ..
            }
            | ConnectorConfig::Database {
                properties,
                batch_config,
                event_time_config,
                ..
            }
            | ConnectorConfig::ClickHouse {
                properties,
                batch_config,
                event_time_config,
                ..
            }
            | ConnectorConfig::Generic {
                properties,
                batch_config,
                event_time_config,
                ..
            } => (properties, batch_config, event_time_config),
        }
    }

    /// The fields every variant has, mutable.
    fn shared_mut(&mut self) -> (&mut Properties, &mut BatchConfig) {
        match self {
            ConnectorConfig::Kafka {
                properties,
                batch_config,
                ..
            }
            | ConnectorConfig::File {
                properties,
                batch_config,
                ..
            }
            | ConnectorConfig::S3 {
                properties,
                batch_config,
                ..
            }
            | ConnectorConfig::Database {
                properties,
                batch_config,
                ..
            }
            | ConnectorConfig::ClickHouse {
                properties,
                batch_config,
                ..
            }
            | ConnectorConfig::Generic {
                properties,
                batch_config,
                ..
            } => (properties, batch_config),
        }
    }

    /// The connector's properties.
    pub fn properties(&self) -> &Properties {
        self.shared().0
    }

    /// The connector's properties, to override keys (a runner's `--errors` flag).
    pub fn properties_mut(&mut self) -> &mut Properties {
        self.shared_mut().0
    }

    /// Batching.
    pub fn batch_config(&self) -> &BatchConfig {
        self.shared().1
    }

    /// Batching, to override it (a runner's `--batch-size` flag).
    pub fn batch_config_mut(&mut self) -> &mut BatchConfig {
        self.shared_mut().1
    }

    /// Event-time extraction, if configured.
    pub fn event_time_config(&self) -> Option<&EventTimeConfig> {
        self.shared().2.as_ref()
    }

    /// The bad-record policy (`errors`, default `fail`).
    pub fn bad_record_policy(&self) -> Result<BadRecordPolicy> {
        Ok(self
            .properties()
            .get_parsed::<BadRecordPolicy>("errors")?
            .unwrap_or_default())
    }

    /// A config from the guide's YAML form (`type: file`, `path: ...`, nested sections).
    pub fn from_yaml_str(yaml: &str) -> Result<Self> {
        yaml::from_yaml_str(yaml)
    }

    /// A config from an already-parsed YAML mapping, such as a pipeline's `source:` block.
    pub fn from_yaml_value(value: &serde_norway::Value, context: &str) -> Result<Self> {
        yaml::from_yaml_value(value, context)
    }

    /// Builds the config for `scheme` from a target and canonical properties.
    pub(crate) fn build(scheme: &str, target: Target, properties: Properties) -> Result<Self> {
        let batch_config = BatchConfig::from_properties(&properties)?;
        let event_time_config = EventTimeConfig::from_properties(properties.iter())?;
        let format_of = |path: &str, what: &str| -> Result<FileFormat> {
            match properties.get("format") {
                Some(f) => f.parse(),
                None => FileFormat::from_path(path.trim_end_matches('*')).ok_or_else(|| Error::MissingConfigKey {
                    key: "format".into(),
                    reason: format!("the format of {what} `{path}` cannot be told from its name: add format=csv, json, jsonl, json_array, parquet or avro"),
                }),
            }
        };
        Ok(match (scheme, target) {
            ("file", Target::Path(path)) => {
                if path.is_empty() {
                    return Err(Error::MissingConfigKey {
                        key: "path".into(),
                        reason: "a file source or sink needs a path".into(),
                    });
                }
                ConnectorConfig::File {
                    format: format_of(&path, "file")?,
                    path,
                    properties,
                    batch_config,
                    event_time_config,
                }
            }
            ("kafka", Target::Kafka { brokers, topic }) => {
                if topic.is_empty() {
                    return Err(Error::MissingConfigKey {
                        key: "topic".into(),
                        reason: "a Kafka source or sink needs a topic: kafka://host:9092/TOPIC"
                            .into(),
                    });
                }
                ConnectorConfig::Kafka {
                    group_id: properties.get("group_id").map(str::to_owned),
                    brokers,
                    topic,
                    properties,
                    batch_config,
                    event_time_config,
                }
            }
            ("s3" | "gs" | "az", Target::Object { bucket, prefix }) => ConnectorConfig::S3 {
                scheme: scheme.to_owned(),
                format: format_of(&prefix, "prefix")?,
                region: properties.get("region").map(str::to_owned),
                bucket,
                prefix,
                properties,
                batch_config,
                event_time_config,
            },
            ("postgresql" | "postgres", Target::Connection(connection_string)) => {
                let table =
                    properties.require("table", "a PostgreSQL source or sink needs ?table=NAME")?;
                ConnectorConfig::Database {
                    db_type: "postgresql".into(),
                    connection_string,
                    table,
                    properties,
                    batch_config,
                    event_time_config,
                }
            }
            ("clickhouse", Target::Connection(connection_string)) => {
                let table = properties.require("table", "a ClickHouse sink needs ?table=NAME")?;
                ConnectorConfig::ClickHouse {
                    connection_string,
                    table,
                    properties,
                    batch_config,
                    event_time_config,
                }
            }
            (_, Target::Connection(uri)) => ConnectorConfig::Generic {
                source_type: scheme.to_owned(),
                uri: Some(uri),
                properties,
                batch_config,
                event_time_config,
            },
            (_, Target::None) => ConnectorConfig::Generic {
                source_type: scheme.to_owned(),
                uri: None,
                properties,
                batch_config,
                event_time_config,
            },
            (scheme, _) => {
                return Err(Error::State(format!(
                    "internal: target does not fit scheme `{scheme}`"
                )));
            }
        })
    }
}

/// What a URI or YAML block points at, before it becomes a [`ConnectorConfig`].
#[derive(Debug)]
pub(crate) enum Target {
    Path(String),
    Kafka { brokers: String, topic: String },
    Object { bucket: String, prefix: String },
    Connection(ConnectionString),
    None,
}

/// Canonicalizes `(key, value)` pairs for `scheme`, rejecting unknown and repeated keys.
pub(crate) fn canonical_properties<I>(scheme: &str, context: &str, pairs: I) -> Result<Properties>
where
    I: IntoIterator<Item = (String, String)>,
{
    let mut props = Properties::new();
    for (key, value) in pairs {
        let canonical = keys::canonical_key(scheme, &key, context)?;
        if props.get(&canonical).is_some() {
            return Err(Error::invalid_value(
                canonical.clone(),
                value,
                format!("`{canonical}` is given twice (as `{key}` and another spelling)"),
            ));
        }
        props.insert(canonical, value);
    }
    Ok(props)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_config_parses_durations() {
        let mut p = Properties::new();
        p.insert("batch.size", "500");
        p.insert("batch.timeout", "100ms");
        let b = BatchConfig::from_properties(&p).unwrap();
        assert_eq!(b.max_batch_size, 500);
        assert_eq!(b.batch_timeout, Duration::from_millis(100));
        p.insert("batch.timeout", "soon");
        let e = BatchConfig::from_properties(&p).unwrap_err().to_string();
        assert!(e.contains("batch.timeout") && e.contains("soon"), "{e}");
    }

    #[test]
    fn formats() {
        assert_eq!("json".parse::<FileFormat>().unwrap(), FileFormat::JsonLines);
        assert!(
            "xml"
                .parse::<FileFormat>()
                .unwrap_err()
                .to_string()
                .contains("`format`")
        );
        assert_eq!(
            "dlq".parse::<BadRecordPolicy>().unwrap(),
            BadRecordPolicy::DeadLetter
        );
    }
}
