#![doc = include_str!("../README.md")]

mod client;
mod encode;
mod native;
mod row_binary;
mod sink;

use velo_datasource_core::{SinkPlugin, inventory};

pub use client::{ClickHouseOptions, Client, InsertFormat, quote};
pub use encode::{Column, Kind, clickhouse_type};
pub use sink::{ClickHouseSink, ClickHouseWriter};

inventory::submit! {
    SinkPlugin {
        name: "clickhouse",
        description: "ClickHouse tables over HTTP: batched Native, RowBinary or JSONEachRow inserts, gzip, retries, schema checks",
        schemes: &["clickhouse"],
        create: || Box::new(ClickHouseSink::new()),
    }
}
