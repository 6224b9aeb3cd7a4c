//! A small but complete connector, the one `docs/writing-a-connector.md` walks through.
//!
//! - `counter://NAME?count=N&start=S` is a bounded source of records
//!   `{n: INTEGER, at: TIMESTAMP}` with `n` from `start` up to `start + count`.
//!   Its position is the next `n`, so it resumes exactly.
//! - `collect://NAME` is a sink that keeps committed records in memory under
//!   `NAME`, where [`collected`] finds them; `rollback` drops uncommitted ones.
//!
//! Both register themselves with `inventory`: linking this crate is all it
//! takes for `DataSourceRegistry::with_plugins()` to find them.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! use velo_datasource_core::DataSourceRegistry;
//! use velo_example_connector as _; // link it, so that its plugins are registered
//!
//! let registry = DataSourceRegistry::with_plugins();
//! let source = registry.create_source("counter://doc?count=3").await?;
//! let mut reader = source.create_reader().await?;
//! assert_eq!(reader.read_batch(10).await?.len(), 3);
//! # Ok::<(), velo_datasource_core::Error>(())
//! # }).unwrap();
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use velo_datasource_core::{
    DataReader, DataSink, DataSource, DataType, DataWriter, Error, FieldDefinition, FieldValue,
    Result, Schema, SinkConfig, SinkMetadata, SinkPlugin, SourceConfig, SourceMetadata,
    SourceOffset, SourcePlugin, SourcePosition, StreamRecord, async_trait, inventory,
};

const SOURCE_TYPE: &str = "counter";

/// The counting source.
#[derive(Debug, Default)]
pub struct CounterSource {
    start: i64,
    count: i64,
}

fn counter_schema() -> Schema {
    Schema::new(vec![
        FieldDefinition::required("n", DataType::Integer),
        FieldDefinition::required("at", DataType::Timestamp),
    ])
}

#[async_trait]
impl DataSource for CounterSource {
    async fn initialize(&mut self, config: SourceConfig) -> Result<()> {
        let props = config.properties();
        // A plugin for a scheme core does not know checks its own keys.
        for (key, _) in props.iter() {
            if !matches!(key.as_str(), "count" | "start")
                && !key.starts_with("batch.")
                && !key.starts_with("event.time.")
            {
                return Err(Error::UnknownConfigKey {
                    key: key.clone(),
                    context: "counter source".into(),
                    hint: None,
                });
            }
        }
        self.count = props.get_parsed("count")?.unwrap_or(10);
        self.start = props.get_parsed("start")?.unwrap_or(0);
        if self.count < 0 {
            return Err(Error::invalid_value(
                "count",
                self.count.to_string(),
                "must not be negative",
            ));
        }
        Ok(())
    }

    async fn fetch_schema(&self) -> Result<Schema> {
        Ok(counter_schema())
    }

    async fn create_reader(&self) -> Result<Box<dyn DataReader>> {
        Ok(Box::new(CounterReader {
            next: self.start,
            end: self.start + self.count,
            start: self.start,
            schema: Arc::new(counter_schema()),
        }))
    }

    fn supports_streaming(&self) -> bool {
        false
    }

    fn supports_batch(&self) -> bool {
        true
    }

    fn metadata(&self) -> SourceMetadata {
        SourceMetadata {
            source_type: SOURCE_TYPE.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            supports_streaming: false,
            supports_batch: true,
            supports_schema_evolution: false,
            capabilities: vec!["seek".into(), "checkpoint".into()],
        }
    }
}

#[derive(Debug)]
struct CounterReader {
    start: i64,
    next: i64,
    end: i64,
    schema: Arc<Schema>,
}

#[async_trait]
impl DataReader for CounterReader {
    async fn read(&mut self) -> Result<Option<StreamRecord>> {
        if self.next >= self.end {
            return Ok(None);
        }
        let at = chrono_from_n(self.next);
        let mut record = StreamRecord::from_parts(
            self.schema.clone(),
            vec![FieldValue::Integer(self.next), at],
        );
        record.offset = self.next;
        self.next += 1;
        Ok(Some(record))
    }

    async fn commit(&mut self) -> Result<()> {
        Ok(())
    }

    async fn seek(&mut self, offset: SourceOffset) -> Result<()> {
        match offset {
            SourceOffset::Generic { source_type, value } if source_type == SOURCE_TYPE => {
                let next = value.as_i64().ok_or_else(|| {
                    Error::Offset(format!("counter offset must be an integer, got {value}"))
                })?;
                if next < self.start || next > self.end {
                    return Err(Error::Offset(format!(
                        "counter offset {next} is outside {}..={}",
                        self.start, self.end
                    )));
                }
                self.next = next;
                Ok(())
            }
            other => Err(Error::Offset(format!(
                "not a counter offset: {}",
                other.describe()
            ))),
        }
    }

    async fn has_more(&self) -> Result<bool> {
        Ok(self.next < self.end)
    }

    fn position(&self) -> Result<SourcePosition> {
        Ok(SourcePosition::new(vec![SourceOffset::Generic {
            source_type: SOURCE_TYPE.into(),
            value: self.next.into(),
        }]))
    }
}

/// Event times one second apart from 2024-01-01, so event-time code has something real to read.
fn chrono_from_n(n: i64) -> FieldValue {
    const BASE_MS: i64 = 1_704_067_200_000;
    let ms = BASE_MS.saturating_add(n.saturating_mul(1000));
    let json = serde_json::Value::from(ms);
    FieldValue::from_json_typed(&json, &DataType::Timestamp).unwrap_or(FieldValue::Null)
}

type Collected = Mutex<HashMap<String, Vec<StreamRecord>>>;

fn collected_map() -> &'static Collected {
    static MAP: OnceLock<Collected> = OnceLock::new();
    MAP.get_or_init(Default::default)
}

/// The records committed so far to `collect://name`.
pub fn collected(name: &str) -> Vec<StreamRecord> {
    collected_map()
        .lock()
        .map(|m| m.get(name).cloned().unwrap_or_default())
        .unwrap_or_default()
}

/// The collecting sink.
#[derive(Debug, Default)]
pub struct CollectSink {
    name: String,
}

#[async_trait]
impl DataSink for CollectSink {
    async fn initialize(&mut self, config: SinkConfig) -> Result<()> {
        let velo_datasource_core::ConnectorConfig::Generic { uri: Some(uri), .. } = &config else {
            return Err(Error::State(
                "collect sink needs a collect://NAME URI".into(),
            ));
        };
        let parsed = velo_datasource_core::DataSourceUri::parse(uri.expose())?;
        self.name = parsed.hosts().first().cloned().unwrap_or_default();
        Ok(())
    }

    async fn create_writer(&self) -> Result<Box<dyn DataWriter>> {
        Ok(Box::new(CollectWriter {
            name: self.name.clone(),
            pending: Vec::new(),
        }))
    }

    fn supports_transactions(&self) -> bool {
        true
    }

    fn metadata(&self) -> SinkMetadata {
        SinkMetadata {
            sink_type: "collect".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            supports_transactions: true,
            supports_upsert: false,
            supports_schema_evolution: true,
            capabilities: vec!["rollback".into()],
        }
    }
}

#[derive(Debug)]
struct CollectWriter {
    name: String,
    pending: Vec<StreamRecord>,
}

#[async_trait]
impl DataWriter for CollectWriter {
    async fn write_batch(&mut self, records: &[StreamRecord]) -> Result<()> {
        self.pending.extend_from_slice(records);
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        Ok(())
    }

    async fn commit(&mut self) -> Result<()> {
        let mut map = collected_map()
            .lock()
            .map_err(|_| Error::State("collect sink lock poisoned".into()))?;
        map.entry(self.name.clone())
            .or_default()
            .append(&mut self.pending);
        Ok(())
    }

    async fn rollback(&mut self) -> Result<()> {
        self.pending.clear();
        Ok(())
    }
}

inventory::submit! {
    SourcePlugin {
        name: "counter",
        description: "Example: counts from `start`, `count` records",
        schemes: &["counter"],
        create: || Box::new(CounterSource::default()),
    }
}

inventory::submit! {
    SinkPlugin {
        name: "collect",
        description: "Example: keeps committed records in memory",
        schemes: &["collect"],
        create: || Box::new(CollectSink::default()),
    }
}
