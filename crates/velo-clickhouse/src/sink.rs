//! The sink: batches of `Native` blocks (`RowBinary` rows, `JSONEachRow`
//! lines where a column type asks for them), one `INSERT` per batch,
//! retried with backoff while the server is unreachable or busy.
//!
//! Delivery is at-least-once: `flush()` and `commit()` return only once
//! ClickHouse acknowledged every batch, and a batch whose answer was lost (a
//! timeout, a server stopped mid-insert) is sent again. `MergeTree` tables on
//! servers before 22.x do not deduplicate such a repeat; replicated tables
//! do (ClickHouse hashes each inserted block).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use velo_datasource_core::retry::{RetryPolicy, retry};
use velo_datasource_core::{
    DataSink, DataWriter, Error, Result, Schema, SinkConfig, SinkMetadata, SinkMetrics,
    StreamRecord,
};

use crate::client::{ClickHouseOptions, Client, InsertFormat, quote};
use crate::encode::{Column, MappedColumn, clickhouse_type, write_row};
use crate::native::Block;
use crate::row_binary;

/// A ClickHouse table as a sink.
#[derive(Debug, Default)]
pub struct ClickHouseSink {
    client: Option<Client>,
    version: String,
}

impl ClickHouseSink {
    /// A sink to be initialized with a `clickhouse://` config.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl DataSink for ClickHouseSink {
    async fn initialize(&mut self, config: SinkConfig) -> Result<()> {
        let client = Client::new(ClickHouseOptions::from_config(&config)?)?;
        self.version = client
            .execute("SELECT version()", Bytes::new())
            .await?
            .trim()
            .to_owned();
        tracing::debug!(version = %self.version, "connected to ClickHouse");
        self.client = Some(client);
        Ok(())
    }

    async fn create_writer(&self) -> Result<Box<dyn DataWriter>> {
        let client = self
            .client
            .clone()
            .ok_or_else(|| Error::State("ClickHouse sink used before initialize".into()))?;
        let major: u32 = self
            .version
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        let opts = client.options().clone();
        let max_delay = Duration::from_secs(5);
        Ok(Box::new(ClickHouseWriter {
            metrics: SinkMetrics::new(&format!("clickhouse:{}", opts.target())),
            policy: RetryPolicy {
                min_delay: Duration::from_millis(100),
                max_delay,
                max_retries: (opts.retry_for.as_secs() / max_delay.as_secs()).max(1) as usize + 6,
            },
            client,
            datetime64: major >= 20,
            columns: None,
            mappings: HashMap::new(),
            buffered: None,
            block: None,
            buffer: Vec::new(),
            rows: 0,
            oldest: Instant::now(),
            sent_rows: 0,
        }))
    }

    fn supports_transactions(&self) -> bool {
        false
    }

    fn metadata(&self) -> SinkMetadata {
        SinkMetadata {
            sink_type: "clickhouse".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            supports_transactions: false,
            supports_upsert: false,
            supports_schema_evolution: false,
            capabilities: vec![
                "batched_inserts".into(),
                "gzip".into(),
                "retries".into(),
                "create_table".into(),
            ],
        }
    }
}

/// Rows between looks at a batch's bytes and age.
const CHECK_EVERY: usize = 256;

/// How records of one schema become rows: the columns their fields go to,
/// and the insert that takes those rows.
#[derive(Debug)]
struct Mapping {
    columns: Vec<MappedColumn>,
    wire: Wire,
    /// `INSERT INTO t (a, b) FORMAT RowBinary` or `INSERT INTO t FORMAT JSONEachRow`.
    insert: String,
}

impl Mapping {
    fn new(columns: Vec<MappedColumn>, opts: &ClickHouseOptions) -> Result<Mapping> {
        let without_binary = columns.iter().find(|c| c.binary.is_none());
        // LowCardinality travels as its inner type in RowBinary but has a
        // dictionary layout of its own in Native, which is not written here.
        let low_cardinality = columns
            .iter()
            .find(|c| c.column.type_name.contains("LowCardinality("));
        let unsupported = |c: &MappedColumn, format: &str| {
            Error::Schema(format!(
                "column `{}` of {} has type {}, which has no {format} encoding here; \
                 use insert_format=auto",
                c.name,
                opts.target(),
                c.column.type_name
            ))
        };
        let wire = match (opts.insert_format, without_binary, low_cardinality) {
            (InsertFormat::JsonEachRow, _, _) | (InsertFormat::Auto, Some(_), _) => {
                Wire::JsonEachRow
            }
            (InsertFormat::Auto, None, None) => Wire::Native,
            (InsertFormat::Auto, None, Some(_)) => Wire::RowBinary,
            (InsertFormat::Native, None, None) => Wire::Native,
            (InsertFormat::Native, Some(c), _) | (InsertFormat::Native, None, Some(c)) => {
                return Err(unsupported(c, "Native"));
            }
            (InsertFormat::RowBinary, None, _) => Wire::RowBinary,
            (InsertFormat::RowBinary, Some(c), _) => return Err(unsupported(c, "RowBinary")),
        };
        let table = quote(&opts.table);
        // The binary formats name their columns; the others take their defaults.
        let names: Vec<String> = columns.iter().map(|c| quote(&c.name)).collect();
        let insert = match wire {
            Wire::Native | Wire::RowBinary => format!(
                "INSERT INTO {table} ({}) FORMAT {}",
                names.join(", "),
                wire.name()
            ),
            Wire::JsonEachRow => format!("INSERT INTO {table} FORMAT JSONEachRow"),
        };
        tracing::info!(table = %opts.target(), "rows of a new schema go as {}", wire.name());
        Ok(Mapping {
            columns,
            wire,
            insert,
        })
    }

    /// Appends `record` to `out`, or to `block` for `Native`; a record that
    /// fails leaves both as they were.
    fn write_row(
        &self,
        out: &mut Vec<u8>,
        block: Option<&mut Block>,
        record: &StreamRecord,
        target: &str,
    ) -> Result<()> {
        let start = out.len();
        let result = match (self.wire, block) {
            (Wire::Native, Some(block)) => block.push(record, &self.columns, target),
            (Wire::Native, None) => Err(Error::State("a Native insert without its block".into())),
            (Wire::RowBinary, _) => row_binary::write_row(out, record, &self.columns, target),
            (Wire::JsonEachRow, _) => write_row(out, record, &self.columns, target),
        };
        if result.is_err() {
            out.truncate(start);
        }
        result
    }
}

/// The format rows travel in, chosen per mapping from `insert_format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    Native,
    RowBinary,
    JsonEachRow,
}

impl Wire {
    /// The format's name in ClickHouse's SQL.
    fn name(self) -> &'static str {
        match self {
            Wire::Native => "Native",
            Wire::RowBinary => "RowBinary",
            Wire::JsonEachRow => "JSONEachRow",
        }
    }
}

/// Writes batches into one table.
pub struct ClickHouseWriter {
    client: Client,
    policy: RetryPolicy,
    datetime64: bool,
    /// The table's columns, read on first use.
    columns: Option<Vec<(String, Column)>>,
    /// Record field positions → columns, per schema.
    mappings: HashMap<usize, Arc<Mapping>>,
    /// The mapping the rows in `buffer` (and `block`) were encoded with.
    buffered: Option<Arc<Mapping>>,
    /// Rows of a `Native` insert not yet laid out in `buffer`.
    block: Option<Block>,
    buffer: Vec<u8>,
    rows: usize,
    /// When the first of the buffered rows was written.
    oldest: Instant,
    sent_rows: u64,
    metrics: SinkMetrics,
}

impl std::fmt::Debug for ClickHouseWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClickHouseWriter")
            .field("target", &self.client.options().target())
            .field("pending_rows", &self.rows)
            .finish_non_exhaustive()
    }
}

impl ClickHouseWriter {
    async fn load_columns(&self) -> Result<Vec<(String, Column)>> {
        // The database is an HTTP parameter and the table is matched here:
        // no user text goes into the SQL.
        let text = self
            .client
            .execute(
                "SELECT table, name, type FROM system.columns WHERE database = currentDatabase() FORMAT TabSeparated",
                Bytes::new(),
            )
            .await?;
        let table = &self.client.options().table;
        Ok(text
            .lines()
            .filter_map(|line| {
                let mut parts = line.splitn(3, '\t');
                let (t, name, ty) = (parts.next()?, parts.next()?, parts.next()?);
                (t == table).then(|| (unescape(name), Column::parse(&unescape(ty))))
            })
            .collect())
    }

    async fn ensure_table(&mut self, schema: &Schema) -> Result<()> {
        if self.columns.is_some() {
            return Ok(());
        }
        let mut columns = retry(&self.policy, "reading the table's columns", || {
            self.load_columns()
        })
        .await?;
        let opts = self.client.options().clone();
        if columns.is_empty() {
            if !opts.create_table {
                return Err(Error::Schema(format!(
                    "table {} does not exist; create it, or set create_table=true to create it from the records",
                    opts.target()
                )));
            }
            let defs = schema
                .fields()
                .iter()
                .map(|f| {
                    let nullable = f.nullable && !opts.order_by.contains(&f.name);
                    format!(
                        "{} {}",
                        quote(&f.name),
                        clickhouse_type(&f.data_type, nullable, self.datetime64)
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            let order = if opts.order_by.is_empty() {
                "tuple()".to_owned()
            } else {
                format!(
                    "({})",
                    opts.order_by
                        .iter()
                        .map(|c| quote(c))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            let sql = format!(
                "CREATE TABLE IF NOT EXISTS {} ({defs}) ENGINE = MergeTree ORDER BY {order}",
                quote(&opts.table)
            );
            retry(&self.policy, "creating the table", || {
                self.client.execute(&sql, Bytes::new())
            })
            .await?;
            tracing::info!(table = %opts.target(), "created the table");
            columns = self.load_columns().await?;
        }
        self.columns = Some(columns);
        Ok(())
    }

    fn mapping(&mut self, schema: &Arc<Schema>) -> Result<Arc<Mapping>> {
        let key = Arc::as_ptr(schema) as *const () as usize;
        if let Some(m) = self.mappings.get(&key) {
            return Ok(m.clone());
        }
        let columns = self
            .columns
            .as_ref()
            .ok_or_else(|| Error::State("columns not loaded".into()))?;
        let target = self.client.options().target();
        let mut mapping = Vec::with_capacity(schema.len());
        for (index, field) in schema.fields().iter().enumerate() {
            let Some((_, column)) = columns.iter().find(|(name, _)| *name == field.name) else {
                return Err(Error::Schema(format!(
                    "field `{}` has no column in {target} (its columns: {})",
                    field.name,
                    columns
                        .iter()
                        .map(|(n, _)| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            };
            mapping.push(MappedColumn::new(index, field.name.clone(), column.clone()));
        }
        let mapping = Arc::new(Mapping::new(mapping, self.client.options())?);
        // Schemas are shared by all records of a source: the cache stays small.
        if self.mappings.len() > 64 {
            self.mappings.clear();
        }
        self.mappings.insert(key, mapping.clone());
        Ok(mapping)
    }

    /// Whether the buffered rows reached `batch.max_bytes` or are older
    /// than `batch.timeout` (the row count is checked by the caller).
    fn batch_is_due(&self) -> bool {
        let opts = self.client.options();
        let bytes = self.buffer.len() + self.block.as_ref().map_or(0, Block::bytes);
        self.rows > 0 && (bytes >= opts.batch_bytes || self.oldest.elapsed() >= opts.batch_timeout)
    }

    /// Sends the buffered rows; returns once ClickHouse acknowledged them.
    async fn send(&mut self) -> Result<()> {
        if self.rows == 0 {
            return Ok(());
        }
        let started = Instant::now();
        // Native rows are columns until sent; a body may hold several blocks
        // (rows kept from a failed send, then newer ones).
        if let Some(block) = &mut self.block {
            block.write_to(&mut self.buffer);
        }
        let sql = &self
            .buffered
            .as_ref()
            .ok_or_else(|| Error::State("rows buffered without their mapping".into()))?
            .insert;
        // The next batch is about as large: its buffer starts at this size
        // rather than regrowing from nothing. A retry shares the body.
        let next = Vec::with_capacity(self.buffer.len());
        let body = Bytes::from(std::mem::replace(&mut self.buffer, next));
        let client = &self.client;
        let result = retry(&self.policy, "inserting a batch", || {
            client.execute(sql, body.clone())
        })
        .await;
        if let Err(e) = result {
            // Keep the rows: nothing is acknowledged that was not written.
            self.buffer = Vec::from(body);
            return Err(e);
        }
        self.sent_rows += self.rows as u64;
        self.metrics.record_write(self.rows, 0, started.elapsed());
        self.rows = 0;
        Ok(())
    }
}

/// Undoes `TabSeparated` escaping.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('t') => out.push('\t'),
                Some('n') => out.push('\n'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[async_trait]
impl DataWriter for ClickHouseWriter {
    async fn write_batch(&mut self, records: &[StreamRecord]) -> Result<()> {
        let Some(first) = records.first() else {
            return Ok(());
        };
        self.ensure_table(first.schema()).await?;
        let target = self.client.options().target();
        let batch_rows = self.client.options().batch_rows;
        let mut current: Option<(Arc<Schema>, Arc<Mapping>)> = None;
        for record in records {
            // Records of one source share their schema: look the mapping up once per run of them.
            let mapping = match &current {
                Some((schema, mapping)) if Arc::ptr_eq(schema, record.schema()) => mapping.clone(),
                _ => {
                    let mapping = self.mapping(record.schema())?;
                    current = Some((record.schema().clone(), mapping.clone()));
                    mapping
                }
            };
            // One insert has one column list and format: a new mapping starts a new insert.
            if !self
                .buffered
                .as_ref()
                .is_some_and(|b| Arc::ptr_eq(b, &mapping))
            {
                self.send().await?;
                self.block = match mapping.wire {
                    Wire::Native => Some(Block::new(&mapping.columns)?),
                    _ => None,
                };
                self.buffered = Some(mapping.clone());
            }
            // A bad record fails the batch before anything of it is sent, and leaves no half row.
            mapping.write_row(&mut self.buffer, self.block.as_mut(), record, &target)?;
            if self.rows == 0 {
                self.oldest = Instant::now();
            }
            self.rows += 1;
            // Bytes and age are looked at every so many rows: counting a
            // Native block's bytes walks its columns.
            if self.rows >= batch_rows
                || (self.rows.is_multiple_of(CHECK_EVERY) && self.batch_is_due())
            {
                self.send().await?;
            }
        }
        if self.batch_is_due() {
            self.send().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        self.send().await
    }

    async fn commit(&mut self) -> Result<()> {
        let started = Instant::now();
        self.send().await?;
        self.metrics.record_commit(started.elapsed());
        Ok(())
    }

    async fn rollback(&mut self) -> Result<()> {
        // Rows already acknowledged stay; the unsent ones are dropped.
        self.buffer.clear();
        self.block = None;
        self.buffered = None;
        self.rows = 0;
        Ok(())
    }

    async fn close(&mut self) -> Result<()> {
        self.send().await
    }
}
