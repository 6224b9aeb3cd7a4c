#![doc = include_str!("../README.md")]

mod catalog;
mod cdc;
pub mod change;
mod db;
mod ident;
mod options;
pub mod pgoutput;
mod poll;
mod position;
mod sink;
mod source;
pub mod types;

use velo_datasource_core::{SinkPlugin, SourcePlugin, inventory};

pub use cdc::{CdcReader, HEARTBEAT_PREFIX};
pub use ident::{TableName, quote};
pub use options::{CursorKind, Mode, PgOptions, WriteMode};
pub use poll::PollingReader;
pub use position::{CdcPosition, Lsn};
pub use sink::{PostgresSink, PostgresWriter};
pub use source::PostgresSource;

inventory::submit! {
    SourcePlugin {
        name: "postgresql",
        description: "PostgreSQL: change data capture (logical replication, pgoutput) or polling by a cursor column",
        schemes: &["postgresql", "postgres"],
        create: || Box::new(PostgresSource::new()),
    }
}

inventory::submit! {
    SinkPlugin {
        name: "postgresql",
        description: "PostgreSQL tables: batched insert, upsert and delete; applies CDC records; positions in the same transaction",
        schemes: &["postgresql", "postgres"],
        create: || Box::new(PostgresSink::new()),
    }
}
