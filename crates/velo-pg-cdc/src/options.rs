//! The connector's settings, read once from a [`ConnectorConfig`].

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use velo_datasource_core::config::Properties;
use velo_datasource_core::{BatchConfig, ConnectorConfig, Error, EventTimeConfig, Result};

use crate::ident::{self, TableName};
use crate::types::SESSION_OPTIONS;

/// How the source reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Logical replication (`pgoutput`).
    Cdc,
    /// Repeated queries over a cursor column.
    Poll,
}

/// What the polling cursor follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CursorKind {
    /// A timestamp column, with the primary key as tie-breaker.
    Timestamp,
    /// The primary key (or the given column), for append-only tables.
    PrimaryKey,
}

/// How the sink applies records without a CDC `_op` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// `INSERT`.
    Insert,
    /// `INSERT ... ON CONFLICT (key) DO UPDATE`.
    Upsert,
    /// `DELETE ... WHERE key = ...`.
    Delete,
}

/// Connection, tables and settings of a PostgreSQL source or sink.
/// (`Debug` leaves out the connection options and the password.)
#[derive(Clone)]
pub struct PgOptions {
    /// Connection options for ordinary sessions (sqlx).
    pub connect: PgConnectOptions,
    /// The password from the URL, for the replication session.
    pub password: String,
    /// The connection URL with the password hidden, for messages.
    pub endpoint: String,
    /// Tables: one for the sink and the polling source, one or more for CDC.
    pub tables: Vec<TableName>,
    /// CDC or polling.
    pub mode: Mode,
    /// Replication slot.
    pub slot: String,
    /// Publication.
    pub publication: String,
    /// Take a consistent snapshot before streaming.
    pub snapshot: bool,
    /// Drop the slot and publication when the reader closes.
    pub drop_slot: bool,
    /// Interval of `pg_logical_emit_message` heartbeats.
    pub heartbeat_interval: Duration,
    /// Interval of standby status updates.
    pub status_interval: Duration,
    /// Polling: cursor column (default: the primary key).
    pub cursor_column: Option<String>,
    /// Polling: what the cursor follows.
    pub cursor_kind: CursorKind,
    /// Polling: time between queries that found nothing new.
    pub poll_interval: Duration,
    /// Longest a query may run.
    pub query_timeout: Duration,
    /// Sink: key columns (default: the table's primary key).
    pub key_columns: Option<Vec<String>>,
    /// Sink: how plain records are applied.
    pub write_mode: WriteMode,
    /// Sink: store source positions in this table, in the same transaction.
    pub positions_table: Option<TableName>,
    /// Batching.
    pub batch: BatchConfig,
    /// Event time; CDC defaults to the commit time.
    pub event_time: Option<EventTimeConfig>,
}

impl std::fmt::Debug for PgOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgOptions")
            .field("endpoint", &self.endpoint)
            .field("tables", &self.tables)
            .field("mode", &self.mode)
            .field("slot", &self.slot)
            .field("publication", &self.publication)
            .field("snapshot", &self.snapshot)
            .field("write_mode", &self.write_mode)
            .finish_non_exhaustive()
    }
}

impl PgOptions {
    /// Reads the options from a `postgresql://` config.
    pub fn from_config(config: &ConnectorConfig) -> Result<Self> {
        let ConnectorConfig::Database {
            connection_string,
            table,
            properties,
            batch_config,
            event_time_config,
            ..
        } = config
        else {
            return Err(Error::State(format!(
                "velo-pg-cdc got a `{}` config, not a postgresql one",
                config.scheme()
            )));
        };
        let url = connection_string.expose();
        let endpoint = connection_string.redacted();
        let connect = PgConnectOptions::from_str(url)
            .map_err(|e| Error::InvalidUri {
                uri: endpoint.clone(),
                reason: e.to_string(),
            })?
            .application_name("velostream");
        let connect = apply_session_options(connect);
        let password = url::Url::parse(url)
            .ok()
            .and_then(|u| {
                u.password().map(|p| {
                    percent_encoding::percent_decode_str(p)
                        .decode_utf8_lossy()
                        .into_owned()
                })
            })
            .or_else(|| std::env::var("PGPASSWORD").ok())
            .unwrap_or_default();
        let tables = table
            .split(',')
            .map(|t| TableName::parse(t.trim()))
            .collect::<Result<Vec<_>>>()?;
        let mode = match properties.get("mode").unwrap_or("cdc") {
            "cdc" | "logical" | "replication" => Mode::Cdc,
            "poll" | "polling" => Mode::Poll,
            other => {
                return Err(Error::invalid_value("mode", other, "expected cdc or poll"));
            }
        };
        let default = ident::default_name(&tables);
        let slot = properties
            .get("slot")
            .map_or(default.clone(), str::to_owned);
        ident::validate_slot_name(&slot)?;
        let publication = properties.get("publication").map_or(default, str::to_owned);
        ident::validate_publication_name(&publication)?;
        let cursor_kind = match properties.get("cursor.kind") {
            None if properties.contains("cursor.column") => CursorKind::Timestamp,
            None | Some("primary_key" | "key" | "id") => CursorKind::PrimaryKey,
            Some("timestamp" | "time") => CursorKind::Timestamp,
            Some(other) => {
                return Err(Error::invalid_value(
                    "cursor.kind",
                    other,
                    "expected timestamp or primary_key",
                ));
            }
        };
        let write_mode = match properties.get("write_mode").unwrap_or("upsert") {
            "insert" | "append" => WriteMode::Insert,
            "upsert" | "merge" => WriteMode::Upsert,
            "delete" => WriteMode::Delete,
            other => {
                return Err(Error::invalid_value(
                    "write_mode",
                    other,
                    "expected insert, upsert or delete",
                ));
            }
        };
        let positions_table = match properties.get("positions_table") {
            Some(t) => Some(TableName::parse(t)?),
            None if properties.get_bool("store_positions")?.unwrap_or(false) => {
                Some(TableName::parse("velo_positions")?)
            }
            None => None,
        };
        Ok(PgOptions {
            connect,
            password,
            endpoint,
            tables,
            mode,
            slot,
            publication,
            snapshot: properties.get_bool("snapshot")?.unwrap_or(false),
            drop_slot: properties.get_bool("drop_slot")?.unwrap_or(false),
            heartbeat_interval: duration(properties, "heartbeat_interval", 10)?,
            status_interval: duration(properties, "status_interval", 1)?,
            cursor_column: properties.get("cursor.column").map(str::to_owned),
            cursor_kind,
            poll_interval: duration(properties, "poll_interval", 1)?,
            query_timeout: duration(properties, "query_timeout", 30)?,
            key_columns: properties
                .get("key_columns")
                .map(|k| k.split(',').map(|c| c.trim().to_owned()).collect()),
            write_mode,
            positions_table,
            batch: *batch_config,
            event_time: event_time_config.clone(),
        })
    }

    /// The one table of a sink or polling source.
    pub fn single_table(&self, what: &str) -> Result<&TableName> {
        match self.tables.as_slice() {
            [one] => Ok(one),
            _ => Err(Error::invalid_value(
                "table",
                self.tables
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
                format!("a {what} takes exactly one table"),
            )),
        }
    }
}

/// Adds the session settings the text decoder relies on after the user's
/// own `options` (sqlx appends).
fn apply_session_options(connect: PgConnectOptions) -> PgConnectOptions {
    let pairs = SESSION_OPTIONS
        .split("-c")
        .filter_map(|setting| setting.trim().split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect::<Vec<_>>();
    connect.options(pairs)
}

fn duration(properties: &Properties, key: &str, default_secs: u64) -> Result<Duration> {
    Ok(properties
        .get_duration(key)?
        .unwrap_or(Duration::from_secs(default_secs)))
}

#[cfg(test)]
mod tests {
    use velo_datasource_core::DataSourceUri;

    use super::*;

    fn opts(uri: &str) -> Result<PgOptions> {
        PgOptions::from_config(&DataSourceUri::parse(uri)?.to_source_config()?)
    }

    #[test]
    fn defaults_and_names() {
        let o = opts("postgresql://u:p%40ss@h:5433/db?table=orders").unwrap();
        assert_eq!(o.mode, Mode::Cdc);
        assert_eq!(o.slot, "velo_cdc_orders");
        assert_eq!(o.publication, "velo_cdc_orders");
        assert_eq!(o.password, "p@ss");
        assert!(!o.endpoint.contains("p%40ss"));
        let debug = format!("{o:?}");
        assert!(
            !debug.contains("p@ss") && !debug.contains("p%40ss"),
            "{debug}"
        );
        assert_eq!(o.connect.get_port(), 5433);
        assert_eq!(o.status_interval, Duration::from_secs(1));
        assert_eq!(o.write_mode, WriteMode::Upsert);
        let opts_text = o.connect.get_options().unwrap();
        assert!(opts_text.contains("TimeZone=UTC"), "{opts_text}");
    }

    #[test]
    fn several_tables_and_bad_values() {
        let o = opts("postgresql://h/db?table=a,s.b&slot=my_slot&mode=cdc").unwrap();
        assert_eq!(o.tables.len(), 2);
        assert_eq!(o.slot, "my_slot");
        assert!(o.single_table("sink").is_err());
        let err = opts("postgresql://h/db?table=a&slot=Bad-Slot").unwrap_err();
        assert!(err.to_string().contains("slot"), "{err}");
        let err = opts("postgresql://h/db?table=a&mode=stream").unwrap_err();
        assert!(err.to_string().contains("expected cdc or poll"), "{err}");
        let o = opts("postgresql://h/db?table=a&mode=poll&cursor.column=updated_at").unwrap();
        assert_eq!((o.mode, o.cursor_kind), (Mode::Poll, CursorKind::Timestamp));
    }
}
