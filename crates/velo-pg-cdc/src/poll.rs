//! The polling source: for tables without CDC, repeated keyset queries over
//! a cursor (a timestamp column with the primary key as tie-breaker, or the
//! primary key alone).
//!
//! Each query is `WHERE (cursor columns) > (last values) ORDER BY them LIMIT
//! n`, so a batch boundary inside rows of equal timestamps loses nothing.
//! Cursor values travel as text and are cast by the column's own type, so
//! they compare exactly as the server stored them. What polling cannot see:
//! deletes, and rows committed later with a cursor value below one already
//! read (use CDC for those).

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use chrono::Utc;
use sqlx::Row;
use sqlx::postgres::PgConnection;
use velo_datasource_core::{
    DataReader, DatabaseCursor, Error, EventTimeExtractor, FieldValue, Result, SourceMetrics,
    SourceOffset, SourcePosition, StreamRecord,
};

use crate::catalog::{self, ColumnInfo, TableInfo, sql_error};
use crate::db::{self, Bind};
use crate::ident::quote;
use crate::options::{CursorKind, PgOptions};
use crate::types;

/// Reads new rows of one table by a cursor.
pub struct PollingReader {
    opts: Arc<PgOptions>,
    conn: Option<PgConnection>,
    table: Option<TableInfo>,
    cursor_columns: Vec<ColumnInfo>,
    /// Text of the cursor columns of the last row delivered.
    cursor: Option<Vec<String>>,
    /// Caught up at the last query: wait `poll_interval` before the next.
    idle_since: Option<Instant>,
    bounded: bool,
    ended: bool,
    schema: Option<Arc<velo_datasource_core::Schema>>,
    event_time: Option<EventTimeExtractor>,
    metrics: SourceMetrics,
}

impl std::fmt::Debug for PollingReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PollingReader")
            .field("table", &self.opts.tables)
            .field("cursor", &self.cursor)
            .finish_non_exhaustive()
    }
}

impl PollingReader {
    pub(crate) fn new(opts: Arc<PgOptions>, bounded: bool) -> Self {
        PollingReader {
            event_time: opts
                .event_time
                .clone()
                .map(|c| EventTimeExtractor::new(c, 1000)),
            metrics: SourceMetrics::new(&format!("postgresql-poll:{}", opts.tables[0])),
            opts,
            conn: None,
            table: None,
            cursor_columns: Vec::new(),
            cursor: None,
            idle_since: None,
            bounded,
            ended: false,
            schema: None,
        }
    }

    async fn start(&mut self) -> Result<()> {
        let table_name = self.opts.single_table("polling source")?.clone();
        let mut conn = catalog::connect(&self.opts, self.opts.query_timeout).await?;
        let table = catalog::table_info(&mut conn, &self.opts.endpoint, &table_name).await?;
        let key: Vec<ColumnInfo> = table.primary_key().into_iter().cloned().collect();
        let named = |name: &str| {
            table.column(name).cloned().ok_or_else(|| {
                Error::invalid_value(
                    "cursor.column",
                    name,
                    format!("table {table_name} has no such column"),
                )
            })
        };
        self.cursor_columns = match (self.opts.cursor_kind, self.opts.cursor_column.as_deref()) {
            (CursorKind::Timestamp, Some(col)) => {
                let mut cols = vec![named(col)?];
                if key.is_empty() {
                    tracing::warn!(table = %table_name, "no primary key: rows sharing a cursor value across a batch boundary may be skipped");
                }
                cols.extend(key.into_iter().filter(|k| k.name != col));
                cols
            }
            (CursorKind::Timestamp, None) => {
                return Err(Error::MissingConfigKey {
                    key: "cursor.column".into(),
                    reason: "a timestamp cursor needs the column it follows".into(),
                });
            }
            (CursorKind::PrimaryKey, Some(col)) => vec![named(col)?],
            (CursorKind::PrimaryKey, None) if key.is_empty() => {
                return Err(Error::Schema(format!(
                    "table {table_name} has no primary key: set cursor.column (and cursor.kind=timestamp for a time column)"
                )));
            }
            (CursorKind::PrimaryKey, None) => key,
        };
        self.schema = Some(Arc::new(table.schema()));
        self.table = Some(table);
        self.conn = Some(conn);
        Ok(())
    }

    fn query_text(&self, table: &TableInfo) -> String {
        let cols = self
            .cursor_columns
            .iter()
            .map(|c| quote(&c.name))
            .collect::<Vec<_>>()
            .join(", ");
        let select = catalog::select_as_text(table, &self.cursor_columns);
        let n = self.cursor_columns.len();
        let filter = if self.cursor.is_some() {
            let params = self
                .cursor_columns
                .iter()
                .enumerate()
                .map(|(i, c)| format!("${}::text::{}", i + 1, c.type_sql))
                .collect::<Vec<_>>()
                .join(", ");
            format!(" WHERE ({cols}) > ({params})")
        } else {
            String::new()
        };
        let limit = if self.cursor.is_some() { n + 1 } else { 1 };
        format!("{select}{filter} ORDER BY {cols} LIMIT ${limit}")
    }
}

#[async_trait]
impl DataReader for PollingReader {
    async fn read(&mut self) -> Result<Option<StreamRecord>> {
        Ok(self.read_batch(1).await?.pop())
    }

    async fn read_batch(&mut self, max_size: usize) -> Result<Vec<StreamRecord>> {
        if self.table.is_none() {
            self.start().await?;
        }
        if self.ended {
            return Ok(Vec::new());
        }
        if let Some(since) = self.idle_since {
            let wait = self.opts.poll_interval.saturating_sub(since.elapsed());
            if !wait.is_zero() {
                tokio::time::sleep(wait.min(self.opts.batch.batch_timeout)).await;
                if since.elapsed() < self.opts.poll_interval {
                    return Ok(Vec::new());
                }
            }
        }
        let began = Instant::now();
        let (Some(table), Some(schema)) = (self.table.clone(), self.schema.clone()) else {
            return Ok(Vec::new());
        };
        let sql = self.query_text(&table);
        let mut binds: Vec<Bind> = self
            .cursor
            .iter()
            .flatten()
            .map(|v| Bind::Text(v.clone()))
            .collect();
        binds.push(Bind::Int(max_size as i64));
        let conn = self
            .conn
            .as_mut()
            .ok_or_else(|| Error::State("polling reader is closed".into()))?;
        let rows = tokio::time::timeout(self.opts.query_timeout, db::fetch_all(conn, &sql, binds))
            .await
            .map_err(|_| Error::Timeout {
                operation: format!("polling {}", table.name),
                elapsed: self.opts.query_timeout,
            })?
            .map_err(|e| sql_error(&self.opts.endpoint, &format!("polling {}", table.name), e))?;
        let n = table.columns.len();
        let now = Utc::now();
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut values = Vec::with_capacity(n);
            for (i, column) in table.columns.iter().enumerate() {
                let text: Option<String> = row
                    .try_get(i)
                    .map_err(|e| sql_error(&self.opts.endpoint, "reading a polled row", e))?;
                values.push(match text {
                    None => FieldValue::Null,
                    Some(t) => types::decode_text(column.type_oid, t.as_bytes()).map_err(|e| {
                        Error::decode(format!("{} column {}", table.name, column.name), e)
                    })?,
                });
            }
            let cursor = (0..self.cursor_columns.len())
                .map(|i| row.try_get::<Option<String>, _>(n + i))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| sql_error(&self.opts.endpoint, "reading a polled row", e))?;
            let Some(cursor) = cursor.into_iter().collect::<Option<Vec<String>>>() else {
                return Err(Error::decode(
                    format!("{}", table.name),
                    "a cursor column is NULL: rows with a NULL cursor cannot be polled",
                ));
            };
            self.cursor = Some(cursor);
            let mut record = StreamRecord::from_parts_at(schema.clone(), values, now);
            if let Some(extractor) = self.event_time.as_mut() {
                extractor.apply(&mut record);
            }
            out.push(record);
        }
        if rows.len() < max_size {
            self.idle_since = Some(Instant::now());
            if self.bounded {
                self.ended = true;
            }
        } else {
            self.idle_since = None;
        }
        self.metrics.record_batch(out.len(), 0, began.elapsed());
        Ok(out)
    }

    async fn commit(&mut self) -> Result<()> {
        // The position lives in the pipeline's checkpoint; the server keeps no state.
        Ok(())
    }

    fn supports_commit_up_to(&self) -> bool {
        true
    }

    async fn commit_up_to(&mut self, _position: &SourcePosition) -> Result<()> {
        Ok(())
    }

    async fn seek(&mut self, offset: SourceOffset) -> Result<()> {
        let table = self.opts.tables[0].to_string();
        match offset {
            SourceOffset::Database {
                table: t,
                cursor: DatabaseCursor::PrimaryKey(values),
            } if t == table => {
                let texts = values
                    .into_iter()
                    .map(|v| match v {
                        FieldValue::String(s) => Ok(s.into_string()),
                        other => Ok(other.to_string()),
                    })
                    .collect::<Result<Vec<_>>>()?;
                self.cursor = Some(texts);
                self.idle_since = None;
                self.ended = false;
                Ok(())
            }
            other => Err(Error::Offset(format!(
                "a polling source of {table} takes a cursor offset of that table, not {}",
                other.describe()
            ))),
        }
    }

    async fn has_more(&self) -> Result<bool> {
        Ok(!self.ended)
    }

    fn position(&self) -> Result<SourcePosition> {
        let offsets = match &self.cursor {
            Some(cursor) => vec![SourceOffset::Database {
                table: self.opts.tables[0].to_string(),
                cursor: DatabaseCursor::PrimaryKey(
                    cursor
                        .iter()
                        .map(|c| FieldValue::String(c.into()))
                        .collect(),
                ),
            }],
            None => Vec::new(),
        };
        Ok(SourcePosition::new(offsets))
    }

    async fn close(&mut self) -> Result<()> {
        if let Some(conn) = self.conn.take() {
            use sqlx::Connection;
            let _ = conn.close().await;
        }
        Ok(())
    }
}
