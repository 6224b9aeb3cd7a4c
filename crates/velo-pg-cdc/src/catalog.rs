//! What the server knows: connections, tables and their columns, the
//! replication prerequisites, slots and publications.
//!
//! Every value goes in as a bind parameter; identifiers only through
//! [`quote`](crate::ident::quote).

use std::time::Duration;

use sqlx::postgres::PgConnection;
use sqlx::{Connection, Row};
use velo_datasource_core::{Error, FieldDefinition, Result, Schema};

use crate::db::{self, Bind};
use crate::ident::{TableName, quote};
use crate::options::PgOptions;
use crate::types;

/// One column of a table, from `pg_attribute`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ColumnInfo {
    /// Column name.
    pub(crate) name: String,
    /// Type OID.
    pub(crate) type_oid: u32,
    /// `"schema"."type"`, quoted, for casts.
    pub(crate) type_sql: String,
    /// Whether NULL is allowed.
    pub(crate) nullable: bool,
    /// Part of the primary key.
    pub(crate) primary_key: bool,
}

/// A table as the catalog describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TableInfo {
    /// The table.
    pub(crate) name: TableName,
    /// Columns in table order (dropped and system columns left out).
    pub(crate) columns: Vec<ColumnInfo>,
    /// `d`, `n`, `f` or `i`.
    pub(crate) replica_identity: u8,
}

impl TableInfo {
    /// The column named `name`.
    pub(crate) fn column(&self, name: &str) -> Option<&ColumnInfo> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// Primary key columns, in key order as declared.
    pub(crate) fn primary_key(&self) -> Vec<&ColumnInfo> {
        self.columns.iter().filter(|c| c.primary_key).collect()
    }

    /// The Velostream schema of the table's rows.
    pub(crate) fn schema(&self) -> Schema {
        Schema::new(
            self.columns
                .iter()
                .map(|c| {
                    FieldDefinition::new(c.name.clone(), types::data_type(c.type_oid), c.nullable)
                })
                .collect(),
        )
    }
}

/// Opens an ordinary session, giving up after `timeout`.
pub(crate) async fn connect(opts: &PgOptions, timeout: Duration) -> Result<PgConnection> {
    let attempt = PgConnection::connect_with(&opts.connect);
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(sql_error(&opts.endpoint, "connecting", e)),
        Err(_) => Err(Error::Timeout {
            operation: format!("connecting to {}", opts.endpoint),
            elapsed: timeout,
        }),
    }
}

/// A database error as a core error: connection trouble is retryable,
/// everything the server refused is not.
pub(crate) fn sql_error(endpoint: &str, doing: &str, e: sqlx::Error) -> Error {
    let retryable = match &e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("08") || c.starts_with("57P") || c == "53300"),
        _ => false,
    };
    let message = match &e {
        sqlx::Error::Database(db) => match db.code() {
            Some(code) => format!("{doing}: {} (SQLSTATE {code})", db.message()),
            None => format!("{doing}: {}", db.message()),
        },
        other => format!("{doing}: {other}"),
    };
    Error::Connection {
        endpoint: endpoint.to_owned(),
        message,
        retryable,
        source: Some(Box::new(e)),
    }
}

/// Reads a table's columns; a missing table is an error that names it.
pub(crate) async fn table_info(
    conn: &mut PgConnection,
    endpoint: &str,
    table: &TableName,
) -> Result<TableInfo> {
    let rel = db::fetch_optional(
        &mut *conn,
        "SELECT c.oid::int8, c.relreplident::text FROM pg_catalog.pg_class c \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
        vec![
            Bind::Text(table.schema.clone()),
            Bind::Text(table.name.clone()),
        ],
    )
    .await
    .map_err(|e| sql_error(endpoint, "reading the catalog", e))?;
    let Some(rel) = rel else {
        return Err(Error::Schema(format!(
            "table {table} does not exist in {endpoint} (names are case-sensitive; write schema.table)"
        )));
    };
    let oid: i64 = rel.get(0);
    let identity: String = rel.get(1);
    let rows = db::fetch_all(
        conn,
        "SELECT a.attname::text, a.atttypid::int8, tn.nspname::text, t.typname::text, NOT a.attnotnull, \
                COALESCE(a.attnum = ANY (i.indkey), false) \
         FROM pg_catalog.pg_attribute a \
         JOIN pg_catalog.pg_type t ON t.oid = a.atttypid \
         JOIN pg_catalog.pg_namespace tn ON tn.oid = t.typnamespace \
         LEFT JOIN pg_catalog.pg_index i ON i.indrelid = a.attrelid AND i.indisprimary \
         WHERE a.attrelid = $1::int8::oid AND a.attnum > 0 AND NOT a.attisdropped \
         ORDER BY a.attnum",
        vec![Bind::Int(oid)],
    )
    .await
    .map_err(|e| sql_error(endpoint, "reading the catalog", e))?;
    let columns = rows
        .iter()
        .map(|r| {
            let type_oid: i64 = r.get(1);
            ColumnInfo {
                name: r.get(0),
                type_oid: type_oid as u32,
                type_sql: format!("{}.{}", quote(r.get(2)), quote(r.get(3))),
                nullable: r.get(4),
                primary_key: r.get(5),
            }
        })
        .collect();
    Ok(TableInfo {
        name: table.clone(),
        columns,
        replica_identity: identity.bytes().next().unwrap_or(b'd'),
    })
}

/// Fails unless the server runs with `wal_level = logical`.
pub(crate) async fn check_wal_level(conn: &mut PgConnection, endpoint: &str) -> Result<()> {
    let level: String = db::fetch_optional(conn, "SELECT current_setting('wal_level')", vec![])
        .await
        .map_err(|e| sql_error(endpoint, "reading wal_level", e))?
        .map(|row| row.get(0))
        .unwrap_or_default();
    if level != "logical" {
        return Err(Error::Connection {
            endpoint: endpoint.to_owned(),
            message: format!(
                "CDC needs wal_level = logical, the server runs with wal_level = {level}; \
                 set it in postgresql.conf (or ALTER SYSTEM SET wal_level = logical) and restart the server"
            ),
            retryable: false,
            source: None,
        });
    }
    Ok(())
}

/// Fails when updates or deletes of `table` could not be identified: the
/// server itself refuses such updates once the table is published.
pub(crate) fn check_replica_identity(table: &TableInfo) -> Result<()> {
    let problem = match table.replica_identity {
        b'n' => Some("REPLICA IDENTITY NOTHING"),
        b'd' if table.primary_key().is_empty() => {
            Some("no primary key and REPLICA IDENTITY DEFAULT")
        }
        _ => None,
    };
    match problem {
        Some(why) => Err(Error::Schema(format!(
            "table {} has {why}: updates and deletes cannot be captured; add a primary key or run \
             ALTER TABLE {} REPLICA IDENTITY FULL",
            table.name,
            table.name.quoted()
        ))),
        None => Ok(()),
    }
}

/// Creates the publication for `tables`, or adds the tables it lacks.
pub(crate) async fn ensure_publication(
    conn: &mut PgConnection,
    endpoint: &str,
    name: &str,
    tables: &[TableName],
) -> Result<()> {
    let exists = db::fetch_optional(
        conn,
        "SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = $1",
        vec![Bind::Text(name.to_owned())],
    )
    .await
    .map_err(|e| sql_error(endpoint, "reading publications", e))?
    .is_some();
    if !exists {
        let list = tables
            .iter()
            .map(TableName::quoted)
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!("CREATE PUBLICATION {} FOR TABLE {list}", quote(name));
        db::batch(conn, &sql)
            .await
            .map_err(|e| sql_error(endpoint, &format!("creating publication {name}"), e))?;
        tracing::info!(publication = name, "created publication");
        return Ok(());
    }
    for table in tables {
        let published = db::fetch_optional(
            &mut *conn,
            "SELECT 1 FROM pg_catalog.pg_publication_tables \
             WHERE pubname = $1 AND schemaname = $2 AND tablename = $3",
            vec![
                Bind::Text(name.to_owned()),
                Bind::Text(table.schema.clone()),
                Bind::Text(table.name.clone()),
            ],
        )
        .await
        .map_err(|e| sql_error(endpoint, "reading publications", e))?
        .is_some();
        if !published {
            let sql = format!(
                "ALTER PUBLICATION {} ADD TABLE {}",
                quote(name),
                table.quoted()
            );
            db::batch(&mut *conn, &sql).await.map_err(|e| {
                sql_error(
                    endpoint,
                    &format!("adding {table} to publication {name}"),
                    e,
                )
            })?;
            tracing::info!(publication = name, %table, "added table to publication");
        }
    }
    Ok(())
}

/// Whether the slot exists; an existing slot of another plugin or database is an error.
pub(crate) async fn slot_exists(
    conn: &mut PgConnection,
    endpoint: &str,
    slot: &str,
) -> Result<bool> {
    let row = db::fetch_optional(
        conn,
        "SELECT plugin::text, database::text, current_database()::text FROM pg_catalog.pg_replication_slots \
         WHERE slot_name = $1",
        vec![Bind::Text(slot.to_owned())],
    )
    .await
    .map_err(|e| sql_error(endpoint, "reading replication slots", e))?;
    let Some(row) = row else { return Ok(false) };
    let plugin: Option<String> = row.get(0);
    let database: Option<String> = row.get(1);
    let current: String = row.get(2);
    if plugin.as_deref() != Some("pgoutput") {
        return Err(Error::invalid_value(
            "slot",
            slot,
            format!(
                "the slot exists with plugin {}, not pgoutput; choose another slot name",
                plugin.as_deref().unwrap_or("none (physical slot)")
            ),
        ));
    }
    if database.as_deref() != Some(current.as_str()) {
        return Err(Error::invalid_value(
            "slot",
            slot,
            format!(
                "the slot belongs to database {}, not {current}",
                database.as_deref().unwrap_or("?")
            ),
        ));
    }
    Ok(true)
}

/// Creates a `pgoutput` slot (without a snapshot).
pub(crate) async fn create_slot(conn: &mut PgConnection, endpoint: &str, slot: &str) -> Result<()> {
    db::execute(
        conn,
        "SELECT 1 FROM pg_catalog.pg_create_logical_replication_slot($1, 'pgoutput')",
        vec![Bind::Text(slot.to_owned())],
    )
    .await
    .map_err(|e| sql_error(endpoint, &format!("creating replication slot {slot}"), e))?;
    tracing::info!(slot, "created replication slot");
    Ok(())
}

/// Drops the slot and the publication (only when the config asks for it).
pub(crate) async fn drop_slot_and_publication(
    conn: &mut PgConnection,
    endpoint: &str,
    slot: &str,
    publication: &str,
) -> Result<()> {
    db::execute(
        &mut *conn,
        "SELECT pg_catalog.pg_drop_replication_slot(slot_name) FROM pg_catalog.pg_replication_slots \
         WHERE slot_name = $1",
        vec![Bind::Text(slot.to_owned())],
    )
    .await
    .map_err(|e| sql_error(endpoint, &format!("dropping replication slot {slot}"), e))?;
    let sql = format!("DROP PUBLICATION IF EXISTS {}", quote(publication));
    db::batch(conn, &sql)
        .await
        .map_err(|e| sql_error(endpoint, &format!("dropping publication {publication}"), e))?;
    tracing::info!(
        slot,
        publication,
        "dropped replication slot and publication"
    );
    Ok(())
}

/// `SELECT "a"::text, "b"::text ... FROM "s"."t"`: every column in its text
/// form, which [`types::decode_text`] reads, then the `extra` columns again
/// (the polling cursor).
pub(crate) fn select_as_text(table: &TableInfo, extra: &[ColumnInfo]) -> String {
    let columns = table
        .columns
        .iter()
        .chain(extra)
        .map(|c| format!("{}::text", quote(&c.name)))
        .collect::<Vec<_>>()
        .join(", ");
    format!("SELECT {columns} FROM {}", table.name.quoted())
}
