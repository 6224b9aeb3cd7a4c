//! The record shape of a change: the table's columns, then metadata fields.
//!
//! A change is one flat record so that it reads naturally in any sink (a
//! JSON line, a CSV row, a Kafka message) and the PostgreSQL sink can apply
//! it: the columns hold the new row (for deletes, the old key or row), and
//! the `_`-prefixed fields say what happened.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use velo_datasource_core::{
    DataType, Error, FieldDefinition, FieldValue, Result, Schema, StreamRecord,
};

use crate::pgoutput::{PG_EPOCH_OFFSET_MICROS, TupleValue};
use crate::position::Lsn;
use crate::types;

/// `insert`, `update`, `delete`, `truncate`, or `read` for snapshot rows.
pub const OP: &str = "_op";
/// `schema.table`.
pub const TABLE: &str = "_table";
/// WAL position of the change (`X/Y`).
pub const LSN: &str = "_lsn";
/// Commit LSN of the transaction (`X/Y`): changes are delivered in this order.
pub const COMMIT_LSN: &str = "_commit_lsn";
/// Transaction id.
pub const XID: &str = "_xid";
/// Commit time of the transaction; also the record's event time.
pub const COMMIT_TS: &str = "_commit_ts";
/// Old row of an update, as a map (only when the key changed or the table
/// has REPLICA IDENTITY FULL); null otherwise.
pub const BEFORE: &str = "_before";
/// Columns whose value is an unchanged TOASTed value the server did not
/// resend: their field is null and must not be written as null.
pub const UNCHANGED_TOAST: &str = "_unchanged_toast";

/// The metadata fields, in order.
pub const METADATA: [&str; 8] = [
    OP,
    TABLE,
    LSN,
    COMMIT_LSN,
    XID,
    COMMIT_TS,
    BEFORE,
    UNCHANGED_TOAST,
];

/// What happened to a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Row inserted.
    Insert,
    /// Row updated.
    Update,
    /// Row deleted.
    Delete,
    /// Table truncated.
    Truncate,
    /// Row read by the initial snapshot.
    Read,
}

impl Op {
    /// The `_op` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Insert => "insert",
            Op::Update => "update",
            Op::Delete => "delete",
            Op::Truncate => "truncate",
            Op::Read => "read",
        }
    }

    /// Parses an `_op` value (also Debezium's one-letter codes).
    pub fn parse(text: &str) -> Option<Op> {
        Some(match text {
            "insert" | "c" | "i" => Op::Insert,
            "update" | "u" => Op::Update,
            "delete" | "d" => Op::Delete,
            "truncate" | "t" => Op::Truncate,
            "read" | "r" | "snapshot" => Op::Read,
            _ => return None,
        })
    }
}

/// A table's columns and the record schema built from them.
#[derive(Debug, Clone)]
pub struct TableShape {
    /// `schema.table`.
    pub table: String,
    /// Column names.
    pub names: Vec<String>,
    /// Column type OIDs.
    pub type_oids: Vec<u32>,
    /// Columns then [`METADATA`].
    pub schema: Arc<Schema>,
}

impl TableShape {
    /// The shape of `table` with `columns` (name, type OID, nullable).
    pub fn new(table: String, columns: Vec<(String, u32, bool)>) -> Result<Self> {
        let mut fields: Vec<FieldDefinition> = columns
            .iter()
            .map(|(name, oid, nullable)| {
                FieldDefinition::new(name.clone(), types::data_type(*oid), *nullable)
            })
            .collect();
        for (name, data_type, nullable) in [
            (OP, DataType::String, false),
            (TABLE, DataType::String, false),
            (LSN, DataType::String, true),
            (COMMIT_LSN, DataType::String, true),
            (XID, DataType::Integer, true),
            (COMMIT_TS, DataType::Timestamp, true),
            (BEFORE, DataType::Map(Box::new(DataType::Any)), true),
            (
                UNCHANGED_TOAST,
                DataType::Array(Box::new(DataType::String)),
                true,
            ),
        ] {
            fields.push(FieldDefinition::new(name, data_type, nullable));
        }
        let schema = Schema::try_new(fields).map_err(|e| {
            Error::Schema(format!(
                "table {table} has a column whose name clashes with a CDC metadata field ({}): {e}",
                METADATA.join(", ")
            ))
        })?;
        Ok(TableShape {
            table,
            names: columns.iter().map(|c| c.0.clone()).collect(),
            type_oids: columns.iter().map(|c| c.1).collect(),
            schema: Arc::new(schema),
        })
    }

    /// Decodes a row sent by the server; `at` names the position for errors.
    pub fn decode_row(
        &self,
        tuple: &[TupleValue<'_>],
        at: &dyn Fn() -> String,
    ) -> Result<(Vec<FieldValue>, Vec<String>)> {
        if tuple.len() != self.names.len() {
            return Err(Error::decode(
                at(),
                format!(
                    "row of {} has {} values, its relation message announced {} columns",
                    self.table,
                    tuple.len(),
                    self.names.len()
                ),
            ));
        }
        let mut values = Vec::with_capacity(self.names.len() + METADATA.len());
        let mut unchanged = Vec::new();
        for (i, value) in tuple.iter().enumerate() {
            values.push(match value {
                TupleValue::Null => FieldValue::Null,
                TupleValue::UnchangedToast => {
                    unchanged.push(self.names[i].clone());
                    FieldValue::Null
                }
                TupleValue::Text(text) => types::decode_text(self.type_oids[i], text).map_err(|e| {
                    Error::decode(at(), format!("column {} of {}: {e}", self.names[i], self.table))
                })?,
                TupleValue::Binary(_) => {
                    return Err(Error::decode(
                        at(),
                        format!("column {} of {} came in binary format, which this reader does not request", self.names[i], self.table),
                    ));
                }
            });
        }
        Ok((values, unchanged))
    }

    /// Decodes a row read as text by a query (snapshot, polling).
    pub fn decode_text_row(
        &self,
        row: Vec<Option<String>>,
        at: &dyn Fn() -> String,
    ) -> Result<Vec<FieldValue>> {
        let mut values = Vec::with_capacity(self.names.len() + METADATA.len());
        for (i, text) in row.into_iter().enumerate() {
            values.push(match text {
                None => FieldValue::Null,
                Some(text) => {
                    types::decode_text(self.type_oids[i], text.as_bytes()).map_err(|e| {
                        Error::decode(
                            at(),
                            format!("column {} of {}: {e}", self.names[i], self.table),
                        )
                    })?
                }
            });
        }
        Ok(values)
    }

    /// The old image as a map, for `_before`.
    pub fn before_map(&self, values: Vec<FieldValue>) -> FieldValue {
        FieldValue::Map(
            self.names
                .iter()
                .cloned()
                .zip(values)
                .collect::<BTreeMap<_, _>>(),
        )
    }

    /// Assembles the record.
    pub fn record(&self, mut values: Vec<FieldValue>, meta: Meta) -> StreamRecord {
        values.push(FieldValue::String(meta.op.as_str().into()));
        values.push(FieldValue::String(self.table.as_str().into()));
        values.push(opt_lsn(meta.lsn));
        values.push(opt_lsn(meta.commit_lsn));
        values.push(
            meta.xid
                .map_or(FieldValue::Null, |x| FieldValue::Integer(i64::from(x))),
        );
        values.push(
            meta.commit_time
                .map_or(FieldValue::Null, FieldValue::Timestamp),
        );
        values.push(meta.before.unwrap_or(FieldValue::Null));
        values.push(if meta.unchanged_toast.is_empty() {
            FieldValue::Null
        } else {
            FieldValue::Array(
                meta.unchanged_toast
                    .into_iter()
                    .map(|s| FieldValue::String(s.into()))
                    .collect(),
            )
        });
        let mut record = StreamRecord::from_parts_at(self.schema.clone(), values, meta.read_at);
        record.event_time = meta.commit_time;
        record.offset = meta.lsn.map_or(0, |l| l.0 as i64);
        record
    }

    /// A row of nulls (for truncate records).
    pub fn nulls(&self) -> Vec<FieldValue> {
        let mut v = Vec::with_capacity(self.names.len() + METADATA.len());
        v.resize(self.names.len(), FieldValue::Null);
        v
    }
}

fn opt_lsn(lsn: Option<Lsn>) -> FieldValue {
    lsn.map_or(FieldValue::Null, |l| {
        FieldValue::String(l.to_string().into())
    })
}

/// Metadata of one change.
#[derive(Debug, Clone)]
pub struct Meta {
    /// What happened.
    pub op: Op,
    /// WAL position of the change.
    pub lsn: Option<Lsn>,
    /// Commit LSN of the transaction.
    pub commit_lsn: Option<Lsn>,
    /// Transaction id.
    pub xid: Option<u32>,
    /// Commit time.
    pub commit_time: Option<DateTime<Utc>>,
    /// Old image.
    pub before: Option<FieldValue>,
    /// Unchanged TOAST columns.
    pub unchanged_toast: Vec<String>,
    /// Processing time.
    pub read_at: DateTime<Utc>,
}

/// A PostgreSQL timestamp (microseconds since 2000-01-01) as UTC.
pub fn pg_time(micros: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_micros(micros.saturating_add(PG_EPOCH_OFFSET_MICROS))
}
