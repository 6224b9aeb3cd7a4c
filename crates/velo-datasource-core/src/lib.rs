#![doc = include_str!("../README.md")]

pub mod checkpoint;
pub mod columns;
pub mod config;
mod digits;
mod error;
pub mod event_time;
pub mod format;
pub mod infer;
pub mod metrics;
mod offset;
mod record;
mod registry;
pub mod retry;
pub mod rows;
mod schema;
pub mod secret;
mod traits;
mod value;

pub use async_trait::async_trait;
pub use compact_str::{self, CompactString};
pub use inventory;

pub use checkpoint::{Checkpoint, CheckpointStore, FileCheckpointStore, MemoryCheckpointStore};
pub use columns::ColumnBatch;
pub use config::{
    BadRecordPolicy, BatchConfig, ConnectorConfig, DataSourceUri, FileFormat, Properties,
    SinkConfig, SourceConfig,
};
pub use error::{BoxError, Error, Result};
pub use event_time::{EventTimeConfig, EventTimeExtractor, TimestampFormat, extract_event_time};
pub use metrics::{Lag, SinkMetrics, SourceMetrics};
pub use offset::{DatabaseCursor, SourceOffset, SourcePosition};
pub use record::{Headers, StreamRecord};
pub use registry::{ConnectorInfo, DataSourceRegistry, SinkPlugin, SourcePlugin};
pub use schema::{DataType, FieldDefinition, Schema};
pub use traits::{
    DataReader, DataReaderExt, DataSink, DataSource, DataWriter, SinkMetadata, SourceLink,
    SourceMetadata,
};
pub use value::{FieldValue, ValueError};
