//! Typed settings of the Kafka source and sink.

use std::time::Duration;

use velo_datasource_core::{
    BadRecordPolicy, ConnectorConfig, Error, EventTimeConfig, Properties, Result,
};

/// How message payloads become record values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadFormat {
    /// A JSON object per message; the schema is inferred and grows with new keys.
    Json,
    /// The payload as UTF-8 text in a field `value`.
    String,
    /// The payload bytes in a field `value`.
    Raw,
}

impl PayloadFormat {
    fn parse(v: &str) -> Result<Self> {
        match v.to_ascii_lowercase().as_str() {
            "json" | "jsonl" => Ok(PayloadFormat::Json),
            "string" | "text" => Ok(PayloadFormat::String),
            "raw" | "bytes" => Ok(PayloadFormat::Raw),
            _ => Err(Error::invalid_value(
                "format",
                v,
                "expected json, string or raw",
            )),
        }
    }
}

/// Where a consumer without a committed offset starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetPolicy {
    /// The oldest message kept.
    Earliest,
    /// Only messages produced from now on.
    Latest,
    /// No start without a committed offset: an error.
    None,
}

/// Settings shared by the source and the sink.
#[derive(Debug, Clone)]
pub struct KafkaCommon {
    /// Bootstrap servers.
    pub brokers: String,
    /// Topics (the source may read several, comma-separated, or a `^regex`).
    pub topics: Vec<String>,
    /// librdkafka properties passed as they are (`kafka.` prefix removed).
    pub client: Vec<(String, String)>,
}

fn common(config: &ConnectorConfig) -> Result<(KafkaCommon, &Properties)> {
    let ConnectorConfig::Kafka {
        brokers,
        topic,
        properties,
        ..
    } = config
    else {
        return Err(Error::State(format!(
            "the Kafka connector got a {} config",
            config.scheme()
        )));
    };
    let mut client = Vec::new();
    for (k, v) in properties.iter() {
        if let Some(rest) = k.strip_prefix("kafka.") {
            client.push((rest.to_owned(), v.clone()));
        } else if ["security.", "sasl.", "ssl."]
            .iter()
            .any(|p| k.starts_with(p))
        {
            client.push((k.clone(), v.clone()));
        }
    }
    let topics = topic
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect();
    Ok((
        KafkaCommon {
            brokers: brokers.clone(),
            topics,
            client,
        },
        properties,
    ))
}

/// Settings of a Kafka source.
#[derive(Debug, Clone)]
pub struct KafkaSourceOptions {
    /// Brokers, topics, client properties.
    pub common: KafkaCommon,
    /// Consumer group.
    pub group_id: String,
    /// Where to start without a committed offset.
    pub reset: ResetPolicy,
    /// Let librdkafka commit stored offsets on its own interval too.
    pub auto_commit: bool,
    /// How often stored offsets are committed (zero: on every `commit()`).
    pub commit_interval: Duration,
    /// Longest a read waits for messages.
    pub poll_timeout: Duration,
    /// Stop at the high watermarks seen at start.
    pub bounded: bool,
    /// Payload format.
    pub format: PayloadFormat,
    /// Bad payloads: fail or skip.
    pub errors: BadRecordPolicy,
    /// Event time from a field; without one, the broker timestamp.
    pub event_time: Option<EventTimeConfig>,
}

impl KafkaSourceOptions {
    /// Reads a `kafka` source config.
    pub fn from_config(config: &ConnectorConfig) -> Result<Self> {
        let (common, p) = common(config)?;
        for key in ["key.field", "headers", "transactional.id", "acks"] {
            if p.contains(key) {
                return Err(Error::UnknownConfigKey {
                    key: key.into(),
                    context: "kafka source (it is a sink key)".into(),
                    hint: None,
                });
            }
        }
        let reset = match p
            .get("reset_policy")
            .unwrap_or("earliest")
            .to_ascii_lowercase()
            .as_str()
        {
            "earliest" | "smallest" | "beginning" => ResetPolicy::Earliest,
            "latest" | "largest" | "end" => ResetPolicy::Latest,
            "none" | "error" => ResetPolicy::None,
            other => {
                return Err(Error::invalid_value(
                    "reset_policy",
                    other,
                    "expected earliest, latest or none",
                ));
            }
        };
        let errors = p
            .get_parsed::<BadRecordPolicy>("errors")?
            .unwrap_or_default();
        if errors == BadRecordPolicy::DeadLetter {
            return Err(Error::unsupported(
                "errors=dead_letter",
                "the Kafka source (use fail or skip)",
            ));
        }
        let group_id = match p.get("group_id") {
            Some(g) => g.to_owned(),
            None => format!("velo-{}", common.topics.join("-")),
        };
        let bounded = match p.get("bounded") {
            Some(v) if v.eq_ignore_ascii_case("end") => true,
            _ => p.get_bool("bounded")?.unwrap_or(false),
        };
        Ok(KafkaSourceOptions {
            group_id,
            reset,
            auto_commit: p.get_bool("auto_commit")?.unwrap_or(false),
            commit_interval: p
                .get_duration("commit_interval")?
                .unwrap_or(Duration::from_secs(5)),
            poll_timeout: p
                .get_duration("poll_timeout")?
                .unwrap_or(Duration::from_secs(1)),
            bounded,
            format: p
                .get("format")
                .map(PayloadFormat::parse)
                .transpose()?
                .unwrap_or(PayloadFormat::Json),
            errors,
            event_time: config.event_time_config().cloned(),
            common,
        })
    }
}

/// Settings of a Kafka sink.
#[derive(Debug, Clone)]
pub struct KafkaSinkOptions {
    /// Brokers, topic, client properties.
    pub common: KafkaCommon,
    /// Field whose value is the message key (else the record's own key).
    pub key_field: Option<String>,
    /// Fields also sent as headers.
    pub header_fields: Vec<String>,
    /// Produce in transactions with this id.
    pub transactional_id: Option<String>,
    /// `acks`.
    pub acks: String,
    /// `compression.type`.
    pub compression: Option<String>,
}

impl KafkaSinkOptions {
    /// Reads a `kafka` sink config.
    pub fn from_config(config: &ConnectorConfig) -> Result<Self> {
        let (common, p) = common(config)?;
        if common.topics.len() != 1 || common.topics[0].starts_with('^') {
            return Err(Error::invalid_value(
                "topic",
                common.topics.join(","),
                "a sink writes to exactly one topic",
            ));
        }
        for key in [
            "group_id",
            "reset_policy",
            "bounded",
            "poll_timeout",
            "auto_commit",
            "commit_interval",
        ] {
            if p.contains(key) {
                return Err(Error::UnknownConfigKey {
                    key: key.into(),
                    context: "kafka sink (it is a source key)".into(),
                    hint: None,
                });
            }
        }
        Ok(KafkaSinkOptions {
            key_field: p.get("key.field").map(str::to_owned),
            header_fields: p
                .get("headers")
                .map(|h| {
                    h.split(',')
                        .map(|s| s.trim().to_owned())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
            transactional_id: p.get("transactional.id").map(str::to_owned),
            acks: p.get("acks").unwrap_or("all").to_owned(),
            compression: p.get("compression").map(str::to_owned),
            common,
        })
    }
}
