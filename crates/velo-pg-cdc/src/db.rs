//! The few ways this crate talks SQL, as boxed `Send` futures.
//!
//! sqlx's `Executor` for `&mut PgConnection` trips rustc's higher-ranked
//! `Send` check inside `async_trait` methods (rust-lang/rust#100013);
//! boxing each call here, where lifetimes are concrete, avoids it.

use futures::future::BoxFuture;
use sqlx::postgres::{PgConnection, PgRow};

/// A bind parameter.
#[derive(Debug, Clone)]
pub(crate) enum Bind {
    /// Text (cast in SQL where another type is meant).
    Text(String),
    /// 64-bit integer.
    Int(i64),
}

fn query<'a>(
    sql: &'a str,
    binds: Vec<Bind>,
) -> sqlx::query::Query<'a, sqlx::Postgres, sqlx::postgres::PgArguments> {
    let mut q = sqlx::query(sql);
    for b in binds {
        q = match b {
            Bind::Text(t) => q.bind(t),
            Bind::Int(i) => q.bind(i),
        };
    }
    q
}

/// Runs a statement; the number of rows it touched.
pub(crate) fn execute<'a>(
    conn: &'a mut PgConnection,
    sql: &'a str,
    binds: Vec<Bind>,
) -> BoxFuture<'a, Result<u64, sqlx::Error>> {
    Box::pin(async move {
        query(sql, binds)
            .execute(conn)
            .await
            .map(|d| d.rows_affected())
    })
}

/// Runs one or more statements without parameters (simple protocol).
pub(crate) fn batch<'a>(
    conn: &'a mut PgConnection,
    sql: &'a str,
) -> BoxFuture<'a, Result<(), sqlx::Error>> {
    Box::pin(async move {
        sqlx::Executor::execute(conn, sql).await?;
        Ok(())
    })
}

/// All rows of a query.
pub(crate) fn fetch_all<'a>(
    conn: &'a mut PgConnection,
    sql: &'a str,
    binds: Vec<Bind>,
) -> BoxFuture<'a, Result<Vec<PgRow>, sqlx::Error>> {
    Box::pin(async move { query(sql, binds).fetch_all(conn).await })
}

/// The first row of a query, if any.
pub(crate) fn fetch_optional<'a>(
    conn: &'a mut PgConnection,
    sql: &'a str,
    binds: Vec<Bind>,
) -> BoxFuture<'a, Result<Option<PgRow>, sqlx::Error>> {
    Box::pin(async move { query(sql, binds).fetch_optional(conn).await })
}
