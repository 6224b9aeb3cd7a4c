//! The guide's YAML form of a source or sink.
//!
//! ```yaml
//! type: file
//! path: /data/logs/app.log
//! format: json
//! position_tracking:
//!   checkpoint_dir: /var/lib/velo/checkpoints
//! ```
//!
//! `type` picks the scheme, the target keys (`path`, `brokers` + `topic`,
//! `bucket` + `prefix`, `connection_string`) say where, and every other key,
//! nested sections joined with dots, goes through the scheme's key table.
//! A block may also give `uri:` and add keys to it. `${VAR}` in a value is
//! replaced by the environment variable.

use serde_norway::Value;

use super::{ConnectorConfig, DataSourceUri, Target, canonical_properties};
use crate::error::{Error, Result};
use crate::secret::ConnectionString;

pub(super) fn from_yaml_str(yaml: &str) -> Result<ConnectorConfig> {
    let value: Value = serde_norway::from_str(yaml).map_err(|e| Error::Syntax {
        what: "YAML config".into(),
        message: e.to_string(),
    })?;
    from_yaml_value(&value, "config")
}

pub(super) fn from_yaml_value(value: &Value, context: &str) -> Result<ConnectorConfig> {
    from_yaml_value_with_env(value, context, &|name| std::env::var(name).ok())
}

/// [`from_yaml_value`] with the environment given as a function.
pub(crate) fn from_yaml_value_with_env(
    value: &Value,
    context: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ConnectorConfig> {
    let Value::Mapping(map) = value else {
        return Err(Error::Syntax {
            what: context.into(),
            message: "expected a mapping with `type:` (or `uri:`) and the connector's keys".into(),
        });
    };
    let mut pairs = Vec::new();
    for (k, v) in map {
        let key = scalar_key(k, context)?;
        flatten(&key, v, &mut pairs, env)?;
    }
    let take = |pairs: &mut Vec<(String, String)>, names: &[&str]| -> Option<String> {
        let i = pairs
            .iter()
            .position(|(k, _)| names.contains(&k.as_str()))?;
        Some(pairs.remove(i).1)
    };

    if let Some(uri) =
        take(&mut pairs, &["uri", "url"]).filter(|_| !pairs.iter().any(|(k, _)| k == "type"))
    {
        let uri = DataSourceUri::parse(&uri)?;
        return uri.to_config_with(context, pairs);
    }
    let kind = take(&mut pairs, &["type"]).ok_or_else(|| Error::MissingConfigKey {
        key: "type".into(),
        reason: format!(
            "{context} needs `type:` (file, kafka, s3, gs, az, postgresql, clickhouse) or `uri:`"
        ),
    })?;
    let scheme = match kind.to_ascii_lowercase().as_str() {
        "azure" => "az".to_owned(),
        "gcs" => "gs".to_owned(),
        "postgres" | "postgresql" | "database" => "postgresql".to_owned(),
        other => other.to_owned(),
    };
    let missing = |key: &str, example: &str| Error::MissingConfigKey {
        key: key.into(),
        reason: format!("a {scheme} {context} needs `{key}: {example}`"),
    };
    let target = match scheme.as_str() {
        "file" => Target::Path(
            take(&mut pairs, &["path"]).ok_or_else(|| missing("path", "/data/in.csv"))?,
        ),
        "kafka" => Target::Kafka {
            brokers: take(
                &mut pairs,
                &["brokers", "bootstrap.servers", "bootstrap_servers"],
            )
            .ok_or_else(|| missing("brokers", "[\"localhost:9092\"]"))?,
            topic: take(&mut pairs, &["topic"]).ok_or_else(|| missing("topic", "orders"))?,
        },
        "s3" | "gs" | "az" => Target::Object {
            bucket: take(&mut pairs, &["bucket", "container"])
                .ok_or_else(|| missing("bucket", "data-lake"))?,
            prefix: take(&mut pairs, &["prefix"]).unwrap_or_default(),
        },
        "postgresql" | "clickhouse" => Target::Connection(ConnectionString::new(
            take(&mut pairs, &["connection_string"])
                .ok_or_else(|| missing("connection_string", "postgresql://user@host/db"))?,
        )),
        _ => Target::None,
    };
    let properties = canonical_properties(&scheme, &format!("{scheme} {context}"), pairs)?;
    ConnectorConfig::build(&scheme, target, properties)
}

fn scalar_key(k: &Value, context: &str) -> Result<String> {
    match k {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(Error::Syntax {
            what: context.into(),
            message: format!("keys must be plain names, found {other:?}"),
        }),
    }
}

/// Nested mappings become dotted keys; lists of scalars become comma-separated values.
fn flatten(
    key: &str,
    value: &Value,
    out: &mut Vec<(String, String)>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<()> {
    match value {
        Value::Null => Ok(()),
        Value::Mapping(map) => {
            for (k, v) in map {
                let sub = scalar_key(k, key)?;
                flatten(&format!("{key}.{sub}"), v, out, env)?;
            }
            Ok(())
        }
        Value::Sequence(items) => {
            let mut parts = Vec::with_capacity(items.len());
            for item in items {
                parts.push(scalar(key, item, env)?);
            }
            out.push((key.to_owned(), parts.join(",")));
            Ok(())
        }
        other => {
            out.push((key.to_owned(), scalar(key, other, env)?));
            Ok(())
        }
    }
}

fn scalar(key: &str, value: &Value, env: &dyn Fn(&str) -> Option<String>) -> Result<String> {
    match value {
        Value::String(s) => expand_env(key, s, env),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Tagged(t) => scalar(key, &t.value, env),
        _ => Err(Error::invalid_value(
            key,
            format!("{value:?}"),
            "expected a plain value or a list of plain values",
        )),
    }
}

/// Replaces `${NAME}` and `${NAME:-default}`; an unset variable without a default is an error.
fn expand_env(key: &str, s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| Error::invalid_value(key, s, "`${` without a closing `}`"))?;
        let expr = &after[..end];
        let (name, default) = match expr.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (expr, None),
        };
        match (env(name), default) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => {
                return Err(Error::invalid_value(
                    key,
                    s,
                    format!(
                        "environment variable {name} is not set (use ${{{name}:-default}} for a fallback)"
                    ),
                ));
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FileFormat;
    use std::time::Duration;

    fn parse_with(yaml: &str, env: &[(&str, &str)]) -> Result<ConnectorConfig> {
        let value: Value = serde_norway::from_str(yaml).unwrap();
        let lookup = |n: &str| {
            env.iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| (*v).to_owned())
        };
        from_yaml_value_with_env(&value, "source", &lookup)
    }

    const GUIDE_FILE: &str = r#"
# file_source_config.yaml
type: file
path: /data/logs/app.log
format: json
position_tracking:
  enabled: true
  checkpoint_dir: /var/lib/velo/checkpoints
  checkpoint_interval: 1000  # Save every 1000 records
watching:
  enabled: true
  mode: tail  # Options: tail, directory_watch, periodic_scan
  poll_interval: 100ms
rotation:
  detect_rotation: true
  rotation_pattern: "app.log.*"  # Handle app.log.1, app.log.2, etc.
  finish_rotated: true  # Complete reading rotated files
"#;

    const GUIDE_KAFKA: &str = r#"
# kafka_source_config.yaml
type: kafka
brokers: ["localhost:9092"]
topic: orders
group_id: order_processor
offset_management:
  auto_commit: false  # Manual commit for exactly-once
  commit_interval: 5000ms
  reset_policy: latest  # earliest, latest, none
recovery:
  save_offsets_externally: true
  external_store: redis://localhost:6379
"#;

    const GUIDE_S3: &str = r#"
# s3_source_config.yaml
type: s3
bucket: data-lake
prefix: events/2024/
format: parquet
position_tracking:
  state_file: /var/lib/velo/s3_state.json
  track_processed: true
scanning:
  mode: incremental  # incremental, full
  poll_interval: 30s
  max_keys_per_scan: 1000
filtering:
  modified_since: ${LAST_RUN_TIME}
  exclude_pattern: ".*\\.tmp$"
"#;

    #[test]
    fn guide_file_example() {
        let c = parse_with(GUIDE_FILE, &[]).unwrap();
        let ConnectorConfig::File {
            path,
            format,
            properties,
            ..
        } = &c
        else {
            panic!("{c:?}")
        };
        assert_eq!(path, "/data/logs/app.log");
        assert_eq!(*format, FileFormat::JsonLines);
        assert_eq!(
            properties.get("checkpoint_dir"),
            Some("/var/lib/velo/checkpoints")
        );
        assert_eq!(
            properties.get_parsed::<u64>("checkpoint_interval").unwrap(),
            Some(1000)
        );
        assert_eq!(properties.get("mode"), Some("tail"));
        assert_eq!(properties.get_bool("watch").unwrap(), Some(true));
        assert_eq!(
            properties.get_duration("poll_interval").unwrap(),
            Some(Duration::from_millis(100))
        );
        assert_eq!(properties.get("rotation_pattern"), Some("app.log.*"));
        assert_eq!(properties.get_bool("finish_rotated").unwrap(), Some(true));
    }

    #[test]
    fn guide_kafka_example() {
        let c = parse_with(GUIDE_KAFKA, &[]).unwrap();
        let ConnectorConfig::Kafka {
            brokers,
            topic,
            group_id,
            properties,
            ..
        } = &c
        else {
            panic!()
        };
        assert_eq!(
            (brokers.as_str(), topic.as_str()),
            ("localhost:9092", "orders")
        );
        assert_eq!(group_id.as_deref(), Some("order_processor"));
        assert_eq!(
            properties.get_duration("commit_interval").unwrap(),
            Some(Duration::from_secs(5))
        );
        assert_eq!(properties.get("reset_policy"), Some("latest"));
        assert_eq!(
            properties.get("external_store"),
            Some("redis://localhost:6379")
        );
    }

    #[test]
    fn guide_s3_example() {
        let c = parse_with(GUIDE_S3, &[("LAST_RUN_TIME", "2024-01-01T00:00:00Z")]).unwrap();
        let ConnectorConfig::S3 {
            bucket,
            prefix,
            format,
            properties,
            ..
        } = &c
        else {
            panic!()
        };
        assert_eq!(
            (bucket.as_str(), prefix.as_str()),
            ("data-lake", "events/2024/")
        );
        assert_eq!(*format, FileFormat::Parquet);
        assert_eq!(
            properties.get("modified_since"),
            Some("2024-01-01T00:00:00Z")
        );
        assert_eq!(properties.get("exclude_pattern"), Some(r".*\.tmp$"));
        assert_eq!(properties.get("scan_mode"), Some("incremental"));
        assert_eq!(
            properties.get_parsed::<usize>("max_keys_per_scan").unwrap(),
            Some(1000)
        );
        let err = parse_with(GUIDE_S3, &[]).unwrap_err().to_string();
        assert!(
            err.contains("modified_since") && err.contains("LAST_RUN_TIME"),
            "{err}"
        );
    }

    #[test]
    fn unknown_and_bad_keys_are_named() {
        let err =
            parse_with("type: file\npath: /a.csv\nwatching:\n  mdoe: tail\n", &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown configuration key `watching.mdoe` for file source (did you mean `watching.mode`?)"
        );
        let err = parse_with("type: kafka\ntopic: t\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("`brokers"), "{err}");
        let err = parse_with("type: file\npath: /a.csv\nbatch:\n  timeout: 5\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("batch.timeout") && err.contains("unit"),
            "{err}"
        );
    }

    #[test]
    fn uri_with_extra_keys() {
        let c = parse_with("uri: file:///data/in.csv?delimiter=;\nheader: false\n", &[]).unwrap();
        assert_eq!(c.properties().get("delimiter"), Some(";"));
        assert_eq!(c.properties().get("header"), Some("false"));
    }

    #[test]
    fn env_defaults() {
        assert_eq!(expand_env("k", "a${X:-b}c", &|_| None).unwrap(), "abc");
        assert_eq!(expand_env("k", "${X}", &|_| Some("v".into())).unwrap(), "v");
        assert!(expand_env("k", "${X", &|_| None).is_err());
    }
}
