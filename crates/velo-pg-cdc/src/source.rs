//! The `postgresql://` source: CDC or polling, by the `mode` parameter.

use std::sync::Arc;

use async_trait::async_trait;
use sqlx::Connection;
use velo_datasource_core::{
    DataReader, DataSource, Error, Result, Schema, SourceConfig, SourceMetadata,
};

use crate::catalog;
use crate::cdc::CdcReader;
use crate::change;
use crate::options::{Mode, PgOptions};
use crate::poll::PollingReader;
use crate::position::Lsn;

/// A PostgreSQL source.
#[derive(Debug, Default)]
pub struct PostgresSource {
    opts: Option<Arc<PgOptions>>,
    until: Option<String>,
}

impl PostgresSource {
    /// A source to be initialized with a `postgresql://` config.
    pub fn new() -> Self {
        Self::default()
    }

    fn opts(&self) -> Result<&Arc<PgOptions>> {
        self.opts
            .as_ref()
            .ok_or_else(|| Error::State("PostgreSQL source used before initialize".into()))
    }
}

#[async_trait]
impl DataSource for PostgresSource {
    async fn initialize(&mut self, config: SourceConfig) -> Result<()> {
        let opts = PgOptions::from_config(&config)?;
        if opts.mode == Mode::Poll {
            opts.single_table("polling source")?;
        }
        self.until = config.properties().get("until").map(str::to_owned);
        if let Some(until) = &self.until {
            let ok = match opts.mode {
                Mode::Cdc => until == "current" || until.parse::<Lsn>().is_ok(),
                Mode::Poll => until == "end",
            };
            if !ok {
                return Err(Error::invalid_value(
                    "until",
                    until,
                    "CDC stops at `current` (the WAL position at start) or an LSN such as 0/16B3748; polling at `end`",
                ));
            }
        }
        // Fail now, not at the first read, when the server or a table is not there.
        let mut conn = catalog::connect(&opts, opts.query_timeout).await?;
        for table in &opts.tables {
            catalog::table_info(&mut conn, &opts.endpoint, table).await?;
        }
        if opts.mode == Mode::Cdc {
            catalog::check_wal_level(&mut conn, &opts.endpoint).await?;
        }
        let _ = conn.close().await;
        self.opts = Some(Arc::new(opts));
        Ok(())
    }

    /// Columns from the catalog (for several CDC tables, those of the
    /// first), then the CDC metadata fields in CDC mode.
    async fn fetch_schema(&self) -> Result<Schema> {
        let opts = self.opts()?;
        let mut conn = catalog::connect(opts, opts.query_timeout).await?;
        let info = catalog::table_info(&mut conn, &opts.endpoint, &opts.tables[0]).await?;
        let _ = conn.close().await;
        match opts.mode {
            Mode::Poll => Ok(info.schema()),
            Mode::Cdc => {
                let shape = change::TableShape::new(
                    info.name.to_string(),
                    info.columns
                        .iter()
                        .map(|c| (c.name.clone(), c.type_oid, c.nullable))
                        .collect(),
                )?;
                Ok(Schema::new(shape.schema.fields().to_vec()))
            }
        }
    }

    async fn create_reader(&self) -> Result<Box<dyn DataReader>> {
        let opts = self.opts()?.clone();
        Ok(match opts.mode {
            Mode::Poll => Box::new(PollingReader::new(opts, self.until.is_some())),
            Mode::Cdc => {
                let stop_at = match self.until.as_deref() {
                    None => None,
                    Some("current") => {
                        let mut conn = catalog::connect(&opts, opts.query_timeout).await?;
                        let lsn: String = crate::db::fetch_optional(
                            &mut conn,
                            "SELECT pg_catalog.pg_current_wal_lsn()::text",
                            vec![],
                        )
                        .await
                        .map_err(|e| {
                            catalog::sql_error(&opts.endpoint, "reading the WAL position", e)
                        })?
                        .map(|row| sqlx::Row::get(&row, 0))
                        .unwrap_or_default();
                        let _ = conn.close().await;
                        Some(
                            lsn.parse::<Lsn>()
                                .map_err(|e| Error::decode("pg_current_wal_lsn", e))?,
                        )
                    }
                    Some(lsn) => Some(
                        lsn.parse::<Lsn>()
                            .map_err(|e| Error::invalid_value("until", lsn, e))?,
                    ),
                };
                Box::new(CdcReader::new(opts, stop_at))
            }
        })
    }

    fn supports_streaming(&self) -> bool {
        true
    }

    fn supports_batch(&self) -> bool {
        // Polling reads a table to its end with until=end; CDC with until=current.
        true
    }

    fn metadata(&self) -> SourceMetadata {
        SourceMetadata {
            source_type: "postgresql".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            supports_streaming: true,
            supports_batch: true,
            supports_schema_evolution: true,
            capabilities: vec![
                "cdc".into(),
                "initial_snapshot".into(),
                "polling".into(),
                "lsn_positions".into(),
                "bounded".into(),
            ],
        }
    }
}
