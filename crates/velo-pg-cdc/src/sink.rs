//! The sink: batched insert, upsert and delete by key, and CDC records
//! applied as they come, so an insert/update/delete stream mirrors a table.
//!
//! A batch is sent as one JSON parameter and expanded by the server with
//! `json_populate_recordset(NULL::table, $1)`: one round trip per batch,
//! values parsed by the columns' own input functions, nothing but quoted
//! identifiers in the SQL text. Within a batch, changes are folded per key
//! (the last one wins; unchanged TOAST values keep what the row had), so
//! `ON CONFLICT` never meets the same row twice. Everything a writer does
//! between two commits is one transaction; with `positions_table` the
//! source position is stored in that same transaction.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use sqlx::Connection;
use sqlx::postgres::PgConnection;
use velo_datasource_core::{
    DataSink, DataType, DataWriter, Error, FieldValue, Result, SinkConfig, SinkMetadata,
    SinkMetrics, SourcePosition, StreamRecord,
};

use crate::catalog::{self, TableInfo, sql_error};
use crate::change::{self, Op};
use crate::db::{self, Bind};
use crate::ident::quote;
use crate::options::{PgOptions, WriteMode};
use crate::types;

/// Writes records into one PostgreSQL table.
#[derive(Debug, Default)]
pub struct PostgresSink {
    opts: Option<Arc<PgOptions>>,
    table: Option<TableInfo>,
}

impl PostgresSink {
    /// A sink to be initialized with a `postgresql://` config.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl DataSink for PostgresSink {
    async fn initialize(&mut self, config: SinkConfig) -> Result<()> {
        let opts = PgOptions::from_config(&config)?;
        let name = opts.single_table("sink")?.clone();
        let mut conn = catalog::connect(&opts, opts.query_timeout).await?;
        let table = catalog::table_info(&mut conn, &opts.endpoint, &name).await?;
        let _ = conn.close().await;
        if let Some(keys) = &opts.key_columns {
            for key in keys {
                if table.column(key).is_none() {
                    return Err(Error::invalid_value(
                        "key_columns",
                        key,
                        format!("table {name} has no such column"),
                    ));
                }
            }
        }
        self.table = Some(table);
        self.opts = Some(Arc::new(opts));
        Ok(())
    }

    async fn validate_schema(&self, schema: &velo_datasource_core::Schema) -> Result<()> {
        let table = self.table.as_ref().ok_or_else(not_initialized)?;
        for field in schema.fields() {
            if table.column(&field.name).is_none()
                && !change::METADATA.contains(&field.name.as_str())
            {
                return Err(unknown_column(table, &field.name));
            }
        }
        Ok(())
    }

    async fn create_writer(&self) -> Result<Box<dyn velo_datasource_core::DataWriter>> {
        let opts = self.opts.clone().ok_or_else(not_initialized)?;
        let table = self.table.clone().ok_or_else(not_initialized)?;
        let keys = match &opts.key_columns {
            Some(keys) => keys.clone(),
            None => table.primary_key().iter().map(|c| c.name.clone()).collect(),
        };
        let mut conn = catalog::connect(&opts, opts.query_timeout).await?;
        if let Some(positions) = &opts.positions_table {
            let sql = format!(
                "CREATE TABLE IF NOT EXISTS {} (pipeline text PRIMARY KEY, position jsonb NOT NULL, \
                 updated_at timestamptz NOT NULL DEFAULT now())",
                positions.quoted()
            );
            db::batch(&mut conn, &sql)
                .await
                .map_err(|e| sql_error(&opts.endpoint, &format!("creating {positions}"), e))?;
        }
        Ok(Box::new(PostgresWriter {
            metrics: SinkMetrics::new(&format!("postgresql:{}", table.name)),
            position_key: table.name.to_string(),
            opts,
            table,
            keys,
            conn: Some(conn),
            in_transaction: false,
        }))
    }

    fn supports_transactions(&self) -> bool {
        true
    }

    fn supports_upsert(&self) -> bool {
        true
    }

    fn metadata(&self) -> SinkMetadata {
        SinkMetadata {
            sink_type: "postgresql".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            supports_transactions: true,
            supports_upsert: true,
            supports_schema_evolution: false,
            capabilities: vec![
                "insert".into(),
                "upsert".into(),
                "delete".into(),
                "cdc_apply".into(),
                "positions_in_transaction".into(),
            ],
        }
    }
}

fn not_initialized() -> Error {
    Error::State("PostgreSQL sink used before initialize".into())
}

fn unknown_column(table: &TableInfo, name: &str) -> Error {
    Error::Schema(format!(
        "field `{name}` has no column in table {} (its columns: {})",
        table.name,
        table
            .columns
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// One row to upsert or delete after folding.
#[derive(Debug, Clone)]
struct Row {
    delete: bool,
    values: HashMap<String, serde_json::Value>,
    unchanged: BTreeSet<String>,
}

/// Writes batches inside one transaction per commit.
pub struct PostgresWriter {
    opts: Arc<PgOptions>,
    table: TableInfo,
    keys: Vec<String>,
    conn: Option<PgConnection>,
    in_transaction: bool,
    position_key: String,
    metrics: SinkMetrics,
}

impl std::fmt::Debug for PostgresWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresWriter")
            .field("table", &self.table.name)
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl PostgresWriter {
    async fn conn(&mut self) -> Result<&mut PgConnection> {
        if self.conn.is_none() {
            self.conn = Some(catalog::connect(&self.opts, self.opts.query_timeout).await?);
        }
        let conn = self.conn.as_mut().ok_or_else(not_initialized)?;
        if !self.in_transaction {
            db::batch(&mut *conn, "BEGIN")
                .await
                .map_err(|e| sql_error(&self.opts.endpoint, "starting a transaction", e))?;
            self.in_transaction = true;
        }
        Ok(conn)
    }

    async fn execute(
        &mut self,
        sql: &str,
        rows: Option<serde_json::Value>,
        doing: &str,
    ) -> Result<u64> {
        let endpoint = self.opts.endpoint.clone();
        let conn = self.conn().await?;
        let binds = rows
            .map(|r| vec![Bind::Text(r.to_string())])
            .unwrap_or_default();
        match db::execute(conn, sql, binds).await {
            Ok(done) => Ok(done),
            Err(e) => {
                // The transaction is aborted; a broken connection is replaced on the next use.
                if matches!(e, sqlx::Error::Io(_)) {
                    self.conn = None;
                    self.in_transaction = false;
                }
                Err(sql_error(&endpoint, doing, e))
            }
        }
    }

    fn require_keys(&self, why: &str) -> Result<()> {
        if self.keys.is_empty() {
            return Err(Error::Schema(format!(
                "{why} needs key columns: table {} has no primary key; set key_columns",
                self.table.name
            )));
        }
        Ok(())
    }

    /// The JSON input value of field `name` of `record`, checked against the column type.
    fn column_value(
        &self,
        record: &StreamRecord,
        name: &str,
        value: &FieldValue,
    ) -> Result<serde_json::Value> {
        let Some(column) = self.table.column(name) else {
            return Err(unknown_column(&self.table, name));
        };
        let target = types::data_type(column.type_oid);
        let value = match (&target, value) {
            (_, FieldValue::Null) => return Ok(serde_json::Value::Null),
            (DataType::String | DataType::Any, v) => v.clone(),
            (t, v) => v.clone().coerce(t).map_err(|v| {
                Error::Schema(format!(
                    "record at offset {}: field `{name}` holds {} `{v}`, which column {}.{name} ({}) cannot take",
                    record.offset,
                    v.data_type().map_or("null".to_owned(), |t| t.to_string()),
                    self.table.name,
                    column.type_sql,
                ))
            })?,
        };
        Ok(types::to_input_json(&value))
    }

    fn row_of(&self, record: &StreamRecord, delete: bool) -> Result<Row> {
        let mut values = HashMap::new();
        let mut unchanged = BTreeSet::new();
        if let Some(FieldValue::Array(cols)) = record.get(change::UNCHANGED_TOAST) {
            unchanged.extend(cols.iter().filter_map(|c| c.as_str().map(str::to_owned)));
        }
        for (name, value) in record.fields() {
            if change::METADATA.contains(&name) {
                continue;
            }
            if unchanged.contains(name) {
                continue;
            }
            values.insert(name.to_owned(), self.column_value(record, name, value)?);
        }
        Ok(Row {
            delete,
            values,
            unchanged,
        })
    }

    fn key_of(
        &self,
        values: &HashMap<String, serde_json::Value>,
        record: &StreamRecord,
    ) -> Result<String> {
        let mut key = Vec::with_capacity(self.keys.len());
        for k in &self.keys {
            match values.get(k) {
                Some(v) if !v.is_null() => key.push(v.clone()),
                _ => {
                    return Err(Error::Schema(format!(
                        "record at offset {} has no value for key column `{k}` of {}",
                        record.offset, self.table.name
                    )));
                }
            }
        }
        Ok(serde_json::Value::Array(key).to_string())
    }

    /// Applies folded rows: deletes first, then upserts grouped by the
    /// columns they set.
    async fn apply(&mut self, rows: Vec<Row>, upsert: bool) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let (deletes, upserts): (Vec<Row>, Vec<Row>) = rows.into_iter().partition(|r| r.delete);
        if !deletes.is_empty() {
            let keys: Vec<serde_json::Value> = deletes
                .iter()
                .map(|r| {
                    serde_json::Value::Object(
                        self.keys
                            .iter()
                            .map(|k| (k.clone(), r.values.get(k).cloned().unwrap_or_default()))
                            .collect(),
                    )
                })
                .collect();
            let on = self
                .keys
                .iter()
                .map(|k| format!("tgt.{0} = src.{0}", quote(k)))
                .collect::<Vec<_>>()
                .join(" AND ");
            let sql = format!(
                "DELETE FROM {t} AS tgt USING json_populate_recordset(NULL::{t}, $1::json) AS src WHERE {on}",
                t = self.table.name.quoted()
            );
            self.execute(
                &sql,
                Some(serde_json::Value::Array(keys)),
                &format!("deleting from {}", self.table.name),
            )
            .await?;
        }
        let mut groups: Vec<(Vec<String>, Vec<serde_json::Value>)> = Vec::new();
        for row in upserts {
            let mut columns: Vec<String> = row.values.keys().cloned().collect();
            columns.sort();
            let object = serde_json::Value::Object(row.values.into_iter().collect());
            match groups.iter_mut().find(|(c, _)| *c == columns) {
                Some((_, objects)) => objects.push(object),
                None => groups.push((columns, vec![object])),
            }
        }
        for (columns, objects) in groups {
            let list = columns
                .iter()
                .map(|c| quote(c))
                .collect::<Vec<_>>()
                .join(", ");
            let t = self.table.name.quoted();
            let mut sql = format!(
                "INSERT INTO {t} ({list}) SELECT {list} FROM json_populate_recordset(NULL::{t}, $1::json)"
            );
            if upsert {
                let keys = self
                    .keys
                    .iter()
                    .map(|k| quote(k))
                    .collect::<Vec<_>>()
                    .join(", ");
                let set = columns
                    .iter()
                    .filter(|c| !self.keys.contains(c))
                    .map(|c| format!("{0} = EXCLUDED.{0}", quote(c)))
                    .collect::<Vec<_>>()
                    .join(", ");
                if set.is_empty() {
                    sql.push_str(&format!(" ON CONFLICT ({keys}) DO NOTHING"));
                } else {
                    sql.push_str(&format!(" ON CONFLICT ({keys}) DO UPDATE SET {set}"));
                }
            }
            self.execute(
                &sql,
                Some(serde_json::Value::Array(objects)),
                &format!("writing to {}", self.table.name),
            )
            .await?;
        }
        Ok(())
    }
}

/// Rows folded by key: the last change of a key wins.
#[derive(Default)]
struct Folded {
    rows: Vec<Row>,
    index: HashMap<String, usize>,
}

impl Folded {
    fn put(&mut self, key: String, mut row: Row) {
        match self.index.get(&key) {
            Some(&i) => {
                let earlier = &self.rows[i];
                if !row.delete && !earlier.delete {
                    // An unchanged TOAST value keeps what the earlier change set.
                    let known: Vec<String> = row
                        .unchanged
                        .iter()
                        .filter(|c| earlier.values.contains_key(*c))
                        .cloned()
                        .collect();
                    for column in known {
                        if let Some(v) = earlier.values.get(&column) {
                            row.values.insert(column.clone(), v.clone());
                        }
                        row.unchanged.remove(&column);
                    }
                }
                self.rows[i] = row;
            }
            None => {
                self.index.insert(key, self.rows.len());
                self.rows.push(row);
            }
        }
    }

    fn take(&mut self) -> Vec<Row> {
        self.index.clear();
        std::mem::take(&mut self.rows)
    }
}

#[async_trait]
impl DataWriter for PostgresWriter {
    async fn write_batch(&mut self, records: &[StreamRecord]) -> Result<()> {
        let started = std::time::Instant::now();
        let mut folded = Folded::default();
        let mut plain = Vec::new();
        for record in records {
            let op = match record.get(change::OP) {
                Some(FieldValue::String(text)) => Some(Op::parse(text).ok_or_else(|| {
                    Error::Schema(format!(
                        "record at offset {}: `{}` is `{text}`, expected insert, update, delete, truncate or read",
                        record.offset,
                        change::OP
                    ))
                })?),
                _ => None,
            };
            match (op, self.opts.write_mode) {
                (Some(Op::Truncate), _) => {
                    let rows = folded.take();
                    self.apply(rows, true).await?;
                    self.apply(std::mem::take(&mut plain), false).await?;
                    let sql = format!("TRUNCATE {}", self.table.name.quoted());
                    self.execute(&sql, None, &format!("truncating {}", self.table.name))
                        .await?;
                }
                (None, WriteMode::Insert) => plain.push(self.row_of(record, false)?),
                (Some(Op::Delete), _) | (None, WriteMode::Delete) => {
                    self.require_keys("deleting")?;
                    let row = self.row_of(record, true)?;
                    let key = self.key_of(&row.values, record)?;
                    folded.put(key, row);
                }
                (Some(_), _) | (None, WriteMode::Upsert) => {
                    self.require_keys("an upsert")?;
                    let row = self.row_of(record, false)?;
                    let key = self.key_of(&row.values, record)?;
                    // A changed key: the row under the old key goes away.
                    if let Some(FieldValue::Map(before)) = record.get(change::BEFORE) {
                        let old: HashMap<String, serde_json::Value> = self
                            .keys
                            .iter()
                            .filter_map(|k| {
                                before.get(k).map(|v| (k.clone(), types::to_input_json(v)))
                            })
                            .collect();
                        if old.len() == self.keys.len() {
                            let old_key = self.key_of(&old, record)?;
                            if old_key != key {
                                folded.put(
                                    old_key,
                                    Row {
                                        delete: true,
                                        values: old,
                                        unchanged: BTreeSet::new(),
                                    },
                                );
                            }
                        }
                    }
                    folded.put(key, row);
                }
            }
        }
        let rows = folded.take();
        self.apply(rows, true).await?;
        self.apply(plain, false).await?;
        self.metrics
            .record_write(records.len(), 0, started.elapsed());
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        // Statements ran in write_batch; the transaction ends in commit.
        Ok(())
    }

    async fn commit(&mut self) -> Result<()> {
        if !self.in_transaction {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let endpoint = self.opts.endpoint.clone();
        let conn = self.conn.as_mut().ok_or_else(not_initialized)?;
        self.in_transaction = false;
        db::batch(conn, "COMMIT")
            .await
            .map_err(|e| sql_error(&endpoint, "committing", e))?;
        self.metrics.record_commit(started.elapsed());
        Ok(())
    }

    async fn rollback(&mut self) -> Result<()> {
        if !self.in_transaction {
            return Ok(());
        }
        self.in_transaction = false;
        if let Some(conn) = self.conn.as_mut() {
            db::batch(conn, "ROLLBACK")
                .await
                .map_err(|e| sql_error(&self.opts.endpoint, "rolling back", e))?;
        }
        Ok(())
    }

    async fn commit_with_position(&mut self, position: &SourcePosition) -> Result<()> {
        let Some(table) = self.opts.positions_table.clone() else {
            return Err(Error::unsupported(
                "commit_with_position",
                "this PostgreSQL sink (set positions_table or store_positions=true)",
            ));
        };
        let json = serde_json::to_value(position).map_err(|e| Error::Encode {
            target: table.to_string(),
            message: e.to_string(),
        })?;
        let sql = format!(
            "INSERT INTO {} (pipeline, position) VALUES ($1, $2::jsonb) \
             ON CONFLICT (pipeline) DO UPDATE SET position = EXCLUDED.position, updated_at = now()",
            table.quoted()
        );
        let endpoint = self.opts.endpoint.clone();
        let key = self.position_key.clone();
        let conn = self.conn().await?;
        db::execute(
            conn,
            &sql,
            vec![Bind::Text(key), Bind::Text(json.to_string())],
        )
        .await
        .map_err(|e| sql_error(&endpoint, &format!("storing the position in {table}"), e))?;
        self.commit().await
    }

    async fn committed_position(&mut self) -> Result<Option<SourcePosition>> {
        let Some(table) = self.opts.positions_table.clone() else {
            return Ok(None);
        };
        let sql = format!(
            "SELECT position::text FROM {} WHERE pipeline = $1",
            table.quoted()
        );
        let endpoint = self.opts.endpoint.clone();
        let key = self.position_key.clone();
        let conn = self.conn.as_mut().ok_or_else(not_initialized)?;
        let text: Option<String> = db::fetch_optional(conn, &sql, vec![Bind::Text(key)])
            .await
            .map_err(|e| sql_error(&endpoint, &format!("reading the position from {table}"), e))?
            .map(|row| sqlx::Row::get(&row, 0));
        text.map(|t| {
            serde_json::from_str(&t).map_err(|e| {
                Error::Offset(format!("position stored in {table} is unreadable: {e}"))
            })
        })
        .transpose()
    }

    async fn close(&mut self) -> Result<()> {
        if self.in_transaction {
            self.rollback().await?;
        }
        if let Some(conn) = self.conn.take() {
            let _ = conn.close().await;
        }
        Ok(())
    }
}
