//! Where a reader is: per-partition offsets and the whole-reader position that
//! checkpoints store.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::value::FieldValue;

/// A position within one partition, file, object or table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum SourceOffset {
    /// A Kafka partition: `offset` is the next offset to read.
    Kafka {
        /// Topic name.
        topic: String,
        /// Partition number.
        partition: i32,
        /// Next offset to read.
        offset: i64,
    },
    /// A file: the next byte and line to read.
    File {
        /// File path.
        path: String,
        /// Byte offset of the next record.
        byte_offset: u64,
        /// Number of lines (or records) before `byte_offset`.
        line_number: u64,
        /// Identity of the file's content, to tell a renamed file from a
        /// replaced one (the file connector defines its form).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fingerprint: Option<String>,
    },
    /// An object in an object store: the next byte to read.
    S3 {
        /// Bucket or container.
        bucket: String,
        /// Object key.
        key: String,
        /// Byte offset of the next record.
        byte_offset: u64,
    },
    /// A database table or replication stream.
    Database {
        /// Table (or slot) the cursor belongs to.
        table: String,
        /// The cursor.
        cursor: DatabaseCursor,
    },
    /// Anything else, for third-party connectors.
    Generic {
        /// The connector's name.
        source_type: String,
        /// Its own serialized position.
        value: serde_json::Value,
    },
}

/// How a database source remembers its place.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
#[non_exhaustive]
pub enum DatabaseCursor {
    /// Last primary key read (incremental reads).
    PrimaryKey(Vec<FieldValue>),
    /// Last timestamp read (timestamp-based polling).
    Timestamp(DateTime<Utc>),
    /// Log sequence number for CDC, e.g. PostgreSQL's `0/16B3748`.
    LogSequenceNumber(String),
    /// Server-side cursor name (pagination).
    ServerCursor(String),
}

impl SourceOffset {
    /// A short human form: `orders/3@42`, `app.log@1024 (line 17)`, `LSN 0/16B3748`.
    ///
    /// For files the line is 1-based: the line the next record starts on, as
    /// editors and error messages count.
    pub fn describe(&self) -> String {
        match self {
            SourceOffset::Kafka {
                topic,
                partition,
                offset,
            } => format!("{topic}/{partition}@{offset}"),
            SourceOffset::File {
                path,
                byte_offset,
                line_number,
                ..
            } => format!("{path}@{byte_offset} (line {})", line_number + 1),
            SourceOffset::S3 {
                bucket,
                key,
                byte_offset,
            } => format!("{bucket}/{key}@{byte_offset}"),
            SourceOffset::Database { table, cursor } => match cursor {
                DatabaseCursor::LogSequenceNumber(lsn) => format!("{table} LSN {lsn}"),
                DatabaseCursor::Timestamp(t) => format!("{table} at {t}"),
                DatabaseCursor::PrimaryKey(k) => format!(
                    "{table} key ({})",
                    k.iter()
                        .map(|v| v.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                DatabaseCursor::ServerCursor(c) => format!("{table} cursor {c}"),
            },
            SourceOffset::Generic { source_type, value } => format!("{source_type} {value}"),
        }
    }
}

/// Everything a reader needs to resume: one offset per partition, file or table.
///
/// A reader's [`position`](crate::DataReader::position) covers exactly the
/// records it has handed out, never records it has only buffered.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SourcePosition {
    /// The offsets, one per partition, file, object or table.
    pub offsets: Vec<SourceOffset>,
}

impl SourcePosition {
    /// A position of `offsets`.
    pub fn new(offsets: Vec<SourceOffset>) -> Self {
        SourcePosition { offsets }
    }

    /// The offsets' [`SourceOffset::describe`] forms, comma-separated.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = self.offsets.iter().map(SourceOffset::describe).collect();
        if parts.is_empty() {
            "the start".to_owned()
        } else {
            parts.join(", ")
        }
    }

    /// Whether there is nothing to resume from.
    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_round_trip_through_json() {
        let pos = SourcePosition::new(vec![
            SourceOffset::Kafka {
                topic: "orders".into(),
                partition: 3,
                offset: 42,
            },
            SourceOffset::File {
                path: "/data/app.log".into(),
                byte_offset: 1024,
                line_number: 17,
                fingerprint: Some("803:1234:9f2c".into()),
            },
            SourceOffset::Database {
                table: "orders".into(),
                cursor: DatabaseCursor::PrimaryKey(vec![FieldValue::Integer(7), "x".into()]),
            },
            SourceOffset::Database {
                table: "orders".into(),
                cursor: DatabaseCursor::LogSequenceNumber("0/16B3748".into()),
            },
            SourceOffset::Generic {
                source_type: "mine".into(),
                value: serde_json::json!({"page": 3}),
            },
        ]);
        let json = serde_json::to_string(&pos).unwrap();
        let back: SourcePosition = serde_json::from_str(&json).unwrap();
        assert_eq!(back, pos);
        assert_eq!(pos.offsets[0].describe(), "orders/3@42");
        assert_eq!(pos.offsets[3].describe(), "orders LSN 0/16B3748");
    }
}
