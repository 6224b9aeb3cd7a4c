//! The four traits every connector implements.
//!
//! A [`DataSource`] is configured once and makes [`DataReader`]s; a
//! [`DataSink`] is configured once and makes [`DataWriter`]s. New methods are
//! only ever added with default bodies, so connectors written against an
//! older core keep compiling.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::columns::ColumnBatch;
use crate::config::{SinkConfig, SourceConfig};
use crate::error::{Error, Result};
use crate::offset::{SourceOffset, SourcePosition};
use crate::record::StreamRecord;
use crate::schema::Schema;

/// What a reader hands to a writer so that the writer's transaction can
/// include the reader's position: for Kafka → Kafka, the consumer whose group
/// offsets go into the producer's transaction. Opaque to everyone but the
/// connector that made it, which recognises it by downcasting.
pub type SourceLink = Arc<dyn Any + Send + Sync>;

/// What a source can do, as shown by `velo connectors`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceMetadata {
    /// Short type name, e.g. `file`, `kafka`.
    pub source_type: String,
    /// Connector version.
    pub version: String,
    /// Reads unbounded streams.
    pub supports_streaming: bool,
    /// Reads bounded data to an end.
    pub supports_batch: bool,
    /// Follows schema changes while running.
    pub supports_schema_evolution: bool,
    /// Free-form capability names (`seek`, `checkpoint`, `tail`, ...).
    pub capabilities: Vec<String>,
}

/// What a sink can do, as shown by `velo connectors`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkMetadata {
    /// Short type name.
    pub sink_type: String,
    /// Connector version.
    pub version: String,
    /// Commits and rolls back atomically.
    pub supports_transactions: bool,
    /// Updates rows by key.
    pub supports_upsert: bool,
    /// Accepts records whose schema changes.
    pub supports_schema_evolution: bool,
    /// Free-form capability names.
    pub capabilities: Vec<String>,
}

/// A place records come from.
///
/// # Contract
/// - `initialize` is called once, before any other method.
/// - `create_reader` may be called several times; readers are independent.
#[async_trait]
pub trait DataSource: Send + Sync {
    /// Takes the configuration; validates it and fails with a config error
    /// naming the key when something is wrong.
    async fn initialize(&mut self, config: SourceConfig) -> Result<()>;

    /// The schema records will have (given, or inferred from a sample).
    async fn fetch_schema(&self) -> Result<Schema>;

    /// A reader positioned at the start (or at the configured start offset).
    async fn create_reader(&self) -> Result<Box<dyn DataReader>>;

    /// Whether the source can run unbounded.
    fn supports_streaming(&self) -> bool;

    /// Whether the source can be read to an end.
    fn supports_batch(&self) -> bool;

    /// Capabilities.
    fn metadata(&self) -> SourceMetadata;
}

/// Reads records from a source and tracks where it is.
///
/// # Contract
/// - `read_batch` returns up to `max_size` records. An empty batch means
///   nothing arrived within the reader's timeout; [`has_more`](Self::has_more)
///   then says whether to keep asking (`false` only once a bounded source is
///   exhausted). A read never blocks for longer than its configured timeout.
/// - [`position`](Self::position) covers exactly the records returned so far,
///   never records only buffered inside the reader.
/// - `commit` tells the source that everything returned so far is durably
///   handled (a Kafka commit, a replication-slot acknowledgement); runners
///   call it only after the sink has committed.
/// - `commit_up_to(p)`, where supported, does the same for the records up to
///   an earlier `position()` `p`, so that a runner can read ahead.
/// - `restore(position())` on a fresh reader continues with the next record.
#[async_trait]
pub trait DataReader: Send {
    /// The next record, or `None` (end of a bounded source, or timeout).
    async fn read(&mut self) -> Result<Option<StreamRecord>>;

    /// Up to `max_size` records.
    async fn read_batch(&mut self, max_size: usize) -> Result<Vec<StreamRecord>> {
        let mut batch = Vec::with_capacity(max_size.min(4096));
        while batch.len() < max_size {
            match self.read().await? {
                Some(record) => batch.push(record),
                None => break,
            }
        }
        Ok(batch)
    }

    /// Up to `max_size` records as columns: one [`ColumnBatch`] per run of
    /// records with the same schema (usually one). Positions, commits and
    /// checkpoints count these records exactly as if `read_batch` had
    /// returned them.
    ///
    /// Readers whose schema is fixed (CSV files) decode straight into
    /// columns, with no value or record allocated per row; the others
    /// convert what `read_batch` returns.
    async fn read_columns(&mut self, max_size: usize) -> Result<Vec<ColumnBatch>> {
        Ok(ColumnBatch::from_records(self.read_batch(max_size).await?))
    }

    /// Acknowledges everything returned so far to the source system.
    async fn commit(&mut self) -> Result<()>;

    /// Whether [`commit_up_to`](Self::commit_up_to) works. Runners read the
    /// next batch while the sink writes the last one only from readers that
    /// say so; the others are run one batch at a time.
    fn supports_commit_up_to(&self) -> bool {
        false
    }

    /// Acknowledges the records up to `position`, a value
    /// [`position`](Self::position) returned after an earlier `read_batch`;
    /// records returned after it stay unacknowledged. Lets a runner read ahead
    /// of what the sink has committed without acknowledging records the sink
    /// has not seen.
    async fn commit_up_to(&mut self, position: &SourcePosition) -> Result<()> {
        let _ = position;
        Err(Error::unsupported("commit_up_to", "this reader"))
    }

    /// Moves to `offset` (one partition or file).
    async fn seek(&mut self, offset: SourceOffset) -> Result<()>;

    /// Whether more records may come.
    async fn has_more(&self) -> Result<bool>;

    /// Where the reader is, over all its partitions or files.
    fn position(&self) -> Result<SourcePosition> {
        Err(Error::unsupported("position", "this reader"))
    }

    /// Continues from a position returned by [`position`](Self::position).
    async fn restore(&mut self, position: SourcePosition) -> Result<()> {
        for offset in position.offsets {
            self.seek(offset).await?;
        }
        Ok(())
    }

    /// Bytes or records left to read, when the source can tell (for progress and lag).
    fn lag(&self) -> Option<crate::metrics::Lag> {
        None
    }

    /// A handle a writer of the same connector family can use to put this
    /// reader's position into its own transaction (see [`SourceLink`]).
    fn source_link(&self) -> Option<SourceLink> {
        None
    }

    /// Called once on a clean shutdown, after the last `commit`: a reader
    /// that keeps its own checkpoints saves one here.
    async fn close(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Convenience methods on every [`DataReader`].
#[async_trait]
pub trait DataReaderExt: DataReader {
    /// [`DataReader::read_batch`] bounded by `timeout`: an empty batch when it runs out.
    async fn read_batch_with_timeout(
        &mut self,
        max_size: usize,
        timeout: Duration,
    ) -> Result<Vec<StreamRecord>> {
        match tokio::time::timeout(timeout, self.read_batch(max_size)).await {
            Ok(result) => result,
            Err(_) => Ok(Vec::new()),
        }
    }

    /// [`DataReader::read`] bounded by `timeout`: `None` when it runs out.
    async fn read_with_timeout(&mut self, timeout: Duration) -> Result<Option<StreamRecord>> {
        match tokio::time::timeout(timeout, self.read()).await {
            Ok(result) => result,
            Err(_) => Ok(None),
        }
    }
}

impl<R: DataReader + ?Sized> DataReaderExt for R {}

/// A place records go to.
///
/// # Contract
/// - `initialize` is called once, before any other method.
#[async_trait]
pub trait DataSink: Send + Sync {
    /// Takes the configuration.
    async fn initialize(&mut self, config: SinkConfig) -> Result<()>;

    /// Fails when records of `schema` cannot be written.
    async fn validate_schema(&self, schema: &Schema) -> Result<()> {
        let _ = schema;
        Ok(())
    }

    /// A writer.
    async fn create_writer(&self) -> Result<Box<dyn DataWriter>>;

    /// Whether `commit`/`rollback` are atomic.
    fn supports_transactions(&self) -> bool;

    /// Whether the sink updates rows by key.
    fn supports_upsert(&self) -> bool {
        false
    }

    /// Capabilities.
    fn metadata(&self) -> SinkMetadata;
}

/// Writes records to a sink.
///
/// # Contract
/// - Records written are not visible to readers of the sink before `commit`
///   where the sink can arrange that (files under a temp name, transactions,
///   multipart uploads); `commit` makes them durable and visible.
/// - `rollback` discards everything written since the last `commit`.
/// - After `commit` returns, a crash loses nothing that was written.
#[async_trait]
pub trait DataWriter: Send {
    /// Writes one record.
    async fn write(&mut self, record: StreamRecord) -> Result<()> {
        self.write_batch(std::slice::from_ref(&record)).await
    }

    /// Writes records in order.
    async fn write_batch(&mut self, records: &[StreamRecord]) -> Result<()>;

    /// Pushes buffered records to the sink (not necessarily durable or visible).
    async fn flush(&mut self) -> Result<()>;

    /// Makes everything written so far durable and visible.
    async fn commit(&mut self) -> Result<()>;

    /// Discards everything written since the last commit.
    async fn rollback(&mut self) -> Result<()>;

    /// Commits and stores `position` atomically with the data, for exactly-once
    /// delivery. Sinks that cannot do so return [`Error::Unsupported`].
    async fn commit_with_position(&mut self, position: &SourcePosition) -> Result<()> {
        let _ = position;
        Err(Error::unsupported("commit_with_position", "this sink"))
    }

    /// Called once on a clean shutdown, after the last `commit`: finishes
    /// open output (renames the last file part into place, closes a JSON array).
    async fn close(&mut self) -> Result<()> {
        Ok(())
    }

    /// The position last stored by [`commit_with_position`](Self::commit_with_position), if any.
    async fn committed_position(&mut self) -> Result<Option<SourcePosition>> {
        Ok(None)
    }

    /// Offers the writer the reader it is fed from. A writer that can carry
    /// that reader's position inside its own transactions keeps the link and
    /// returns `true`; from then on [`commit_with_position`](Self::commit_with_position)
    /// is exactly-once for that pair. Others ignore it.
    fn link_source(&mut self, link: &SourceLink) -> bool {
        let _ = link;
        false
    }
}
