//! `DataSourceUri`: `scheme://target?key=value&...` parsed with the `url` crate.

use std::fmt;

use percent_encoding::percent_decode_str;
use url::Url;

use super::{ConnectorConfig, Target, canonical_properties};
use crate::error::{Error, Result};
use crate::secret::{ConnectionString, redact_uri};

/// A parsed data source or sink URI.
///
/// | scheme | form |
/// |---|---|
/// | `file` | `file:///abs/path.csv`, `file://relative/dir/*.jsonl` |
/// | `kafka` | `kafka://host:9092[,host2:9092]/topic` |
/// | `s3`, `gs`, `az` | `s3://bucket/prefix/` |
/// | `postgresql`, `postgres` | `postgresql://user:pass@host:5432/db?table=orders` |
/// | `clickhouse` | `clickhouse://user:pass@host:8123/db?table=events` |
/// | anything else | passed to the plugin registered for the scheme |
///
/// Query parameters are the connector's keys (see [`super::keys`]); for
/// PostgreSQL and ClickHouse, parameters that are not Velostream keys (such as
/// `sslmode`) stay in the connection string.
///
/// ```
/// use velo_datasource_core::{DataSourceUri, SourceConfig};
/// let config = DataSourceUri::parse(
///     "kafka://localhost:9092/trades?event.time.field=timestamp&event.time.format=iso8601",
/// )?
/// .to_source_config()?;
/// let SourceConfig::Kafka { brokers, topic, .. } = &config else { unreachable!() };
/// assert_eq!((brokers.as_str(), topic.as_str()), ("localhost:9092", "trades"));
/// assert_eq!(config.event_time_config().unwrap().field_name, "timestamp");
/// # Ok::<(), velo_datasource_core::Error>(())
/// ```
#[derive(Clone)]
pub struct DataSourceUri {
    scheme: String,
    raw: String,
    hosts: Vec<String>,
    path: String,
    params: Vec<(String, String)>,
    /// For connection-string schemes: the URL without Velostream keys.
    connection: Option<Url>,
}

impl DataSourceUri {
    /// Parses `uri`; errors show it with secrets redacted.
    pub fn parse(uri: &str) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidUri {
            uri: redact_uri(uri),
            reason,
        };
        let (scheme, rest) = uri.split_once("://").ok_or_else(|| {
            invalid(
                "expected scheme://..., e.g. file:///data/in.csv or kafka://localhost:9092/topic"
                    .into(),
            )
        })?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme.is_empty()
            || !scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        {
            return Err(invalid(format!("`{scheme}` is not a valid scheme")));
        }
        let (target, query) = rest.split_once('?').unwrap_or((rest, ""));
        let params: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let mut parsed = DataSourceUri {
            scheme: scheme.clone(),
            raw: uri.to_owned(),
            hosts: Vec::new(),
            path: String::new(),
            params,
            connection: None,
        };
        match scheme.as_str() {
            // `file://data/x.csv` is relative: the `url` crate would take
            // `data` for a host, so the target is a path as written.
            "file" => {
                let target = target
                    .strip_prefix("localhost/")
                    .map_or(target.to_owned(), |p| format!("/{p}"));
                parsed.path = percent_decode_str(&target)
                    .decode_utf8()
                    .map_err(|_| {
                        invalid("the path is not valid UTF-8 after percent-decoding".into())
                    })?
                    .into_owned();
            }
            // Several brokers (`a:9092,b:9092`) are not one URL authority.
            "kafka" => {
                let (authority, topic) = target.split_once('/').unwrap_or((target, ""));
                for host in authority.split(',').filter(|h| !h.is_empty()) {
                    let url = Url::parse(&format!("kafka://{host}"))
                        .map_err(|e| invalid(format!("broker `{host}`: {e}")))?;
                    if url.host_str().is_none() {
                        return Err(invalid(format!("broker `{host}` has no host")));
                    }
                    parsed.hosts.push(host.to_owned());
                }
                if parsed.hosts.is_empty() {
                    return Err(invalid(
                        "no broker: expected kafka://host:9092/topic".into(),
                    ));
                }
                parsed.path = percent_decode_str(topic.trim_end_matches('/'))
                    .decode_utf8_lossy()
                    .into_owned();
            }
            _ => {
                let url = Url::parse(uri).map_err(|e| invalid(e.to_string()))?;
                if let Some(host) = url.host_str() {
                    parsed.hosts.push(match url.port() {
                        Some(p) => format!("{host}:{p}"),
                        None => host.to_owned(),
                    });
                }
                parsed.path = percent_decode_str(url.path().trim_start_matches('/'))
                    .decode_utf8_lossy()
                    .into_owned();
                parsed.connection = Some(url);
            }
        }
        Ok(parsed)
    }

    /// The scheme, lower-cased.
    pub fn scheme(&self) -> &str {
        &self.scheme
    }

    /// `host[:port]` entries (several for Kafka).
    pub fn hosts(&self) -> &[String] {
        &self.hosts
    }

    /// The decoded path (file path, topic, object prefix, database).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Query parameters as written.
    pub fn params(&self) -> &[(String, String)] {
        &self.params
    }

    /// The config for reading from this URI.
    pub fn to_source_config(&self) -> Result<ConnectorConfig> {
        self.to_config("source")
    }

    /// The config for writing to this URI.
    pub fn to_sink_config(&self) -> Result<ConnectorConfig> {
        self.to_config("sink")
    }

    fn to_config(&self, role: &str) -> Result<ConnectorConfig> {
        self.to_config_with(role, Vec::new())
    }

    /// The config with `extra` keys (from YAML) added to the URI's parameters.
    pub(crate) fn to_config_with(
        &self,
        role: &str,
        extra: Vec<(String, String)>,
    ) -> Result<ConnectorConfig> {
        let context = format!("{} {role}", self.scheme);
        let target = match self.scheme.as_str() {
            "file" => Target::Path(self.path.clone()),
            "kafka" => Target::Kafka {
                brokers: self.hosts.join(","),
                topic: self.path.clone(),
            },
            "s3" | "gs" | "az" => Target::Object {
                bucket: self
                    .hosts
                    .first()
                    .cloned()
                    .ok_or_else(|| Error::InvalidUri {
                        uri: redact_uri(&self.raw),
                        reason: format!("no bucket: expected {}://bucket/prefix", self.scheme),
                    })?,
                prefix: self.path.clone(),
            },
            _ => Target::Connection(self.connection_string()),
        };
        let own_keys: Vec<(String, String)> = match self.scheme.as_str() {
            // Database URIs keep the driver's parameters in the connection string.
            "postgresql" | "postgres" | "clickhouse" => self
                .params
                .iter()
                .filter(|(k, _)| is_velo_key(&self.scheme, k))
                .cloned()
                .collect(),
            _ => self.params.clone(),
        };
        let own_keys = own_keys.into_iter().chain(extra);
        let properties = canonical_properties(&self.scheme, &context, own_keys)?;
        ConnectorConfig::build(&self.scheme, target, properties)
    }

    /// The URI without Velostream's own parameters, for client libraries.
    fn connection_string(&self) -> ConnectionString {
        let Some(url) = &self.connection else {
            return ConnectionString::new(self.raw.clone());
        };
        let mut url = url.clone();
        let driver: Vec<(String, String)> = self
            .params
            .iter()
            .filter(|(k, _)| !is_velo_key(&self.scheme, k))
            .cloned()
            .collect();
        if driver.is_empty() {
            url.set_query(None);
        } else {
            url.query_pairs_mut().clear().extend_pairs(driver);
        }
        ConnectionString::new(url.to_string())
    }
}

/// Whether `key` is one of Velostream's keys for `scheme` (as opposed to a
/// driver parameter such as `sslmode` that belongs in the connection string).
fn is_velo_key(scheme: &str, key: &str) -> bool {
    super::keys::canonical_key(scheme, key, "").is_ok()
}

impl fmt::Debug for DataSourceUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("DataSourceUri")
            .field(&redact_uri(&self.raw))
            .finish()
    }
}

impl fmt::Display for DataSourceUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_uri(&self.raw))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FileFormat;
    use crate::event_time::TimestampFormat;

    fn source(uri: &str) -> ConnectorConfig {
        DataSourceUri::parse(uri)
            .unwrap()
            .to_source_config()
            .unwrap()
    }

    #[test]
    fn guide_kafka_example() {
        let c = source(
            "kafka://localhost:9092/trades?event.time.field=timestamp&event.time.format=iso8601",
        );
        let et = c.event_time_config().unwrap();
        assert_eq!(et.field_name, "timestamp");
        assert_eq!(et.format, Some(TimestampFormat::Iso8601));
        assert!(
            matches!(c, ConnectorConfig::Kafka { ref topic, ref brokers, group_id: None, .. } if topic == "trades" && brokers == "localhost:9092")
        );
    }

    #[test]
    fn guide_file_example_with_raw_pattern() {
        let c = source(
            "file:///data/trades.json?event.time.field=trade_time&event.time.format=%Y-%m-%d %H:%M:%S",
        );
        let ConnectorConfig::File { path, format, .. } = &c else {
            panic!("{c:?}")
        };
        assert_eq!(path, "/data/trades.json");
        assert_eq!(*format, FileFormat::JsonLines);
        assert_eq!(
            c.event_time_config().unwrap().format,
            Some(TimestampFormat::Pattern("%Y-%m-%d %H:%M:%S".into()))
        );
    }

    #[test]
    fn file_paths() {
        let path = |u: &str| match source(u) {
            ConnectorConfig::File { path, .. } => path,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            path("file://examples/data/trades.csv"),
            "examples/data/trades.csv"
        );
        assert_eq!(path("file://localhost/var/log/a.csv"), "/var/log/a.csv");
        assert_eq!(path("file:///tmp/my%20file.csv"), "/tmp/my file.csv");
        assert_eq!(path("file:///logs/*.jsonl"), "/logs/*.jsonl");
        let c = source("file:///in/data.txt?format=csv&delimiter=%7C&header=false");
        assert_eq!(c.properties().get("delimiter"), Some("|"));
        let err = DataSourceUri::parse("file:///logs/")
            .unwrap()
            .to_source_config()
            .unwrap_err();
        assert!(err.to_string().contains("`format`"), "{err}");
    }

    #[test]
    fn kafka_multi_broker_and_group() {
        let c = source(
            "kafka://b1:9092,b2:9093/orders?group.id=g1&auto.offset.reset=earliest&kafka.fetch.min.bytes=1",
        );
        let ConnectorConfig::Kafka {
            brokers,
            group_id,
            properties,
            ..
        } = &c
        else {
            panic!()
        };
        assert_eq!(brokers, "b1:9092,b2:9093");
        assert_eq!(group_id.as_deref(), Some("g1"));
        assert_eq!(properties.get("reset_policy"), Some("earliest"));
        assert_eq!(properties.get("kafka.fetch.min.bytes"), Some("1"));
        assert!(DataSourceUri::parse("kafka:///orders").is_err());
        assert!(
            DataSourceUri::parse("kafka://b1:9092")
                .unwrap()
                .to_source_config()
                .is_err()
        );
    }

    #[test]
    fn object_stores() {
        for scheme in ["s3", "gs", "az"] {
            let c = source(&format!(
                "{scheme}://data-lake/events/2024/?format=parquet&region=us-east-1"
            ));
            let ConnectorConfig::S3 {
                bucket,
                prefix,
                format,
                region,
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
            assert_eq!(region.as_deref(), Some("us-east-1"));
            assert_eq!(c.scheme(), scheme);
        }
        let c = source("s3://b/logs/app.jsonl.gz");
        assert!(matches!(
            c,
            ConnectorConfig::S3 {
                format: FileFormat::JsonLines,
                ..
            }
        ));
    }

    #[test]
    fn postgres_keeps_driver_params_and_hides_password() {
        for scheme in ["postgresql", "postgres"] {
            let c = source(&format!(
                "{scheme}://app:s3cret@db.local:5432/shop?table=public.orders&slot=s1&sslmode=disable"
            ));
            let ConnectorConfig::Database {
                connection_string,
                table,
                properties,
                db_type,
                ..
            } = &c
            else {
                panic!()
            };
            assert_eq!(db_type, "postgresql");
            assert_eq!(table, "public.orders");
            assert_eq!(properties.get("slot"), Some("s1"));
            assert_eq!(
                connection_string.expose(),
                format!("{scheme}://app:s3cret@db.local:5432/shop?sslmode=disable")
            );
            assert!(!format!("{c:?}").contains("s3cret"));
        }
        let err = DataSourceUri::parse("postgresql://h/db")
            .unwrap()
            .to_source_config()
            .unwrap_err();
        assert!(err.to_string().contains("`table`"));
    }

    #[test]
    fn clickhouse_and_generic() {
        let c = source("clickhouse://default@localhost:8123/analytics?table=events");
        assert!(matches!(c, ConnectorConfig::ClickHouse { ref table, .. } if table == "events"));
        let c = source("mqtt://broker:1883/sensors?qos=1");
        let ConnectorConfig::Generic {
            source_type,
            properties,
            ..
        } = &c
        else {
            panic!()
        };
        assert_eq!(source_type, "mqtt");
        assert_eq!(properties.get("qos"), Some("1"));
    }

    #[test]
    fn bad_uris() {
        let e = DataSourceUri::parse("trades.csv").unwrap_err().to_string();
        assert!(e.contains("scheme://"), "{e}");
        let e = DataSourceUri::parse("file:///a.csv?delimter=;")
            .unwrap()
            .to_source_config()
            .unwrap_err();
        assert!(e.to_string().contains("did you mean `delimiter`"), "{e}");
        let e = DataSourceUri::parse("file:///a.csv?batch.size=lots")
            .unwrap()
            .to_source_config()
            .unwrap_err();
        assert!(e.to_string().contains("batch.size"), "{e}");
        let e = DataSourceUri::parse("file:///a.csv?header=true&has_header=false")
            .unwrap()
            .to_source_config()
            .unwrap_err();
        assert!(e.to_string().contains("given twice"), "{e}");
    }

    #[test]
    fn display_redacts() {
        let u = DataSourceUri::parse("postgresql://u:pw@h/db?table=t").unwrap();
        assert!(!u.to_string().contains("pw@") && !format!("{u:?}").contains("pw@"));
    }
}
