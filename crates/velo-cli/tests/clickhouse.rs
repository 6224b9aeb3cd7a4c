//! `velo pipe` into the ClickHouse that `cargo xtask itest` starts, checked
//! with `clickhouse-client` (which shares no code with the sink). The test
//! that stops the server lives in `clickhouse_restart.rs`.

use std::path::Path;
use std::process::{Command, Stdio};

use assert_cmd::cargo::CommandCargoExt;

mod common;
use common::env;

fn client(query: &str) -> String {
    common::try_clickhouse(query).unwrap_or_else(|| panic!("clickhouse-client failed: {query}"))
}

fn sink(table: &str, params: &str) -> String {
    let base = env("VELO_TEST_CLICKHOUSE_URL").replace("http://", "clickhouse://");
    format!("{base}/default?table={table}{params}")
}

fn trades_csv(dir: &Path, n: usize) -> std::path::PathBuf {
    let path = dir.join("trades.csv");
    let mut body = String::from("id,symbol,price,qty,ts\n");
    for i in 0..n {
        body.push_str(&format!(
            "{i},S{},{}.{:02},{},2024-01-{:02}T{:02}:{:02}:{:02}Z\n",
            i % 7,
            100 + i % 50,
            i % 100,
            i % 13 + 1,
            i % 28 + 1,
            i % 24,
            i % 60,
            (i * 7) % 60
        ));
    }
    std::fs::write(&path, body).unwrap();
    path
}

/// `velo pipe` that must succeed; its stderr.
fn pipe_ok(input: &Path, sink: &str) -> String {
    let out = pipe(input, sink);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{sink}: {stderr}");
    stderr
}

/// `velo pipe` that must succeed sending its rows as `format`.
fn pipe_as(input: &Path, sink: &str, format: &str) {
    let stderr = pipe_ok(input, sink);
    assert!(
        stderr.contains(&format!("rows of a new schema go as {format}")),
        "{format} not used: {stderr}"
    );
}

/// `velo pipe` that must fail with exit code 1; its stderr.
fn pipe_fails(input: &Path, sink: &str) -> String {
    let out = pipe(input, sink);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    stderr
}

fn pipe(input: &Path, sink: &str) -> std::process::Output {
    Command::cargo_bin("velo")
        .unwrap()
        .args([
            "pipe",
            &format!("file://{}", input.display()),
            sink,
            "--no-progress",
            "--batch-size",
            "10000",
            // The sink says which insert format it picked.
            "--log",
            "velo_clickhouse=info",
        ])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn a_hundred_thousand_csv_rows_land_in_clickhouse() {
    let table = format!("trades_{}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let input = trades_csv(dir.path(), 100_000);
    pipe_as(
        &input,
        &sink(&table, "&create_table=true&order_by=id"),
        "Native",
    );
    assert_eq!(
        client(&format!(
            "SELECT count(), uniqExact(id), sum(id), sum(qty) FROM {table}"
        )),
        {
            let qty: u64 = (0..100_000u64).map(|i| i % 13 + 1).sum();
            format!("100000\t100000\t4999950000\t{qty}")
        }
    );
    assert_eq!(
        client(&format!(
            "SELECT id, symbol, price, qty, ts FROM {table} WHERE id IN (0, 12345) ORDER BY id FORMAT TSV"
        )),
        "0\tS0\t100\t1\t2024-01-01 00:00:00\n12345\tS4\t145.45\t9\t2024-01-26 09:45:15"
    );
}

#[test]
fn a_wrong_column_type_or_a_missing_table_is_a_clear_error() {
    let table = format!("typed_{}", std::process::id());
    client(&format!(
        "CREATE TABLE {table} (id Int64, symbol Int32, price Float64, qty Int64, ts DateTime) ENGINE = MergeTree ORDER BY id"
    ));
    let dir = tempfile::tempdir().unwrap();
    let input = trades_csv(dir.path(), 100);
    let stderr = pipe_fails(&input, &sink(&table, ""));
    assert!(
        stderr.contains("field `symbol`") && stderr.contains("Int32"),
        "{stderr}"
    );
    assert_eq!(
        client(&format!("SELECT count() FROM {table}")),
        "0",
        "nothing written"
    );

    let stderr = pipe_fails(&input, &sink("no_such_table_here", ""));
    assert!(
        stderr.contains("no_such_table_here does not exist"),
        "{stderr}"
    );
}

#[test]
fn native_row_binary_and_json_each_row_store_the_same_rows() {
    let dir = tempfile::tempdir().unwrap();
    let input = trades_csv(dir.path(), 1000);
    let ddl = "(id UInt32, symbol FixedString(3), price Float32, qty Nullable(Int16), ts DateTime, note String DEFAULT 'none') ENGINE = MergeTree ORDER BY id";
    let mut tables = Vec::new();
    for (format, name) in [
        ("native", "Native"),
        ("row_binary", "RowBinary"),
        ("json_each_row", "JSONEachRow"),
    ] {
        let table = format!("formats_{format}_{}", std::process::id());
        client(&format!("CREATE TABLE {table} {ddl}"));
        pipe_as(
            &input,
            &sink(&table, &format!("&insert_format={format}")),
            name,
        );
        tables.push(table);
    }
    let rows = |table: &str| {
        client(&format!(
            "SELECT id, toString(symbol), price, qty, ts FROM {table} ORDER BY id FORMAT TSV"
        ))
    };
    let binary = rows(&tables[0]);
    assert_eq!(binary.lines().count(), 1000);
    for other in &tables[1..] {
        assert!(
            binary == rows(other),
            "{other} and {} stored different rows",
            tables[0]
        );
    }
    assert_eq!(
        binary.lines().nth(345).unwrap(),
        "345\tS2\t145.45\t8\t2024-01-10 09:45:15"
    );
    // The binary formats name their columns: the others get their DEFAULT expression.
    for table in &tables[..2] {
        assert_eq!(
            client(&format!("SELECT DISTINCT note FROM {table}")),
            "none"
        );
    }
    // What the binary formats cannot carry goes as JSONEachRow under `auto`, and is
    // a clear error when Native is asked for.
    let table = format!("decimal_{}", std::process::id());
    client(&format!(
        "CREATE TABLE {table} (id Int64, symbol String, price Decimal(10, 2), qty Int64, ts DateTime) ENGINE = MergeTree ORDER BY id"
    ));
    pipe_as(&input, &sink(&table, ""), "JSONEachRow");
    assert_eq!(
        client(&format!("SELECT count(), sum(price) FROM {table}")),
        {
            let cents: u64 = (0..1000u64).map(|i| (100 + i % 50) * 100 + i % 100).sum();
            format!("1000\t{}.{:02}", cents / 100, cents % 100)
        }
    );
    let stderr = pipe_fails(&input, &sink(&table, "&insert_format=native"));
    assert!(
        stderr.contains("column `price`") && stderr.contains("no Native encoding"),
        "{stderr}"
    );
}

#[test]
fn native_blocks_carry_nulls_and_arrays_like_json() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("nested.jsonl");
    let mut body = String::new();
    for i in 0..300 {
        let tags = match i % 3 {
            0 => "[]".to_owned(),
            1 => format!("[\"t{i}\"]"),
            _ => format!("[\"a{i}\",\"b\",\"c\"]"),
        };
        let score = if i % 4 == 0 {
            "null".to_owned()
        } else {
            format!("{i}.5")
        };
        let names = match i % 5 {
            0 => "null".to_owned(),
            1 => "[null]".to_owned(),
            _ => format!("[\"n{i}\",null,\"m\"]"),
        };
        body.push_str(&format!(
            "{{\"id\":{i},\"tags\":{tags},\"score\":{score},\"names\":{names}}}\n"
        ));
    }
    std::fs::write(&input, body).unwrap();
    let ddl = "(id UInt64, tags Array(String), score Nullable(Float64), names Array(Nullable(String))) ENGINE = MergeTree ORDER BY id";
    let mut dumps = Vec::new();
    for (format, name) in [("native", "Native"), ("json_each_row", "JSONEachRow")] {
        let table = format!("nested_{format}_{}", std::process::id());
        client(&format!("CREATE TABLE {table} {ddl}"));
        pipe_as(
            &input,
            &sink(&table, &format!("&insert_format={format}")),
            name,
        );
        dumps.push(client(&format!(
            "SELECT id, tags, score, names FROM {table} ORDER BY id FORMAT TSV"
        )));
    }
    assert_eq!(dumps[0].lines().count(), 300);
    assert!(
        dumps[0] == dumps[1],
        "Native and JSONEachRow stored different rows"
    );
    assert_eq!(
        dumps[0].lines().nth(2).unwrap(),
        "2\t['a2','b','c']\t2.5\t['n2',NULL,'m']"
    );
    assert_eq!(
        dumps[0].lines().nth(20).unwrap(),
        "20\t['a20','b','c']\t\\N\t[]"
    );
}

#[test]
fn a_value_out_of_its_columns_range_is_a_clear_error() {
    let table = format!("narrow_{}", std::process::id());
    client(&format!(
        "CREATE TABLE {table} (id UInt8, symbol String, price Float64, qty Int64, ts DateTime) ENGINE = MergeTree ORDER BY id"
    ));
    let dir = tempfile::tempdir().unwrap();
    let input = trades_csv(dir.path(), 1000);
    let stderr = pipe_fails(&input, &sink(&table, ""));
    assert!(
        stderr.contains("field `id`")
            && stderr.contains("256, out of the range of column type UInt8"),
        "{stderr}"
    );
    assert_eq!(
        client(&format!("SELECT count() FROM {table}")),
        "0",
        "the batch with the bad row is not sent"
    );
}

/// Records `(id, name)` numbered from `from`.
fn id_name_records(from: i64, n: i64) -> Vec<velo_datasource_core::StreamRecord> {
    use velo_datasource_core::{DataType, FieldDefinition, FieldValue, Schema, StreamRecord};
    let schema = std::sync::Arc::new(Schema::new(vec![
        FieldDefinition::required("id", DataType::Integer),
        FieldDefinition::required("name", DataType::String),
    ]));
    (from..from + n)
        .map(|i| {
            StreamRecord::new(
                schema.clone(),
                vec![FieldValue::Integer(i), format!("name {i}").into()],
            )
            .unwrap()
        })
        .collect()
}

#[tokio::test]
async fn batches_go_out_by_bytes_and_by_age_before_a_commit() {
    use velo_clickhouse as _;
    use velo_datasource_core::DataSourceRegistry;
    let count = |table: &str| client(&format!("SELECT count() FROM {table}"));
    let registry = DataSourceRegistry::with_plugins();

    // 1,000 rows of about 17 bytes with a 10,000-byte limit and no row limit
    // in reach: rows go out as they are written, before any flush.
    let table = format!("by_bytes_{}", std::process::id());
    client(&format!(
        "CREATE TABLE {table} (id Int64, name String) ENGINE = MergeTree ORDER BY id"
    ));
    let by_bytes = registry
        .create_sink(&sink(&table, "&batch.size=100000&batch.max_bytes=10000"))
        .await
        .unwrap();
    let mut writer = by_bytes.create_writer().await.unwrap();
    writer.write_batch(&id_name_records(0, 1000)).await.unwrap();
    let sent: u64 = count(&table).parse().unwrap();
    assert!(
        (256..1000).contains(&sent),
        "{sent} rows sent before the commit"
    );
    writer.commit().await.unwrap();
    assert_eq!(count(&table), "1000");

    // Rows older than batch.timeout go out with the next write.
    let table = format!("by_age_{}", std::process::id());
    client(&format!(
        "CREATE TABLE {table} (id Int64, name String) ENGINE = MergeTree ORDER BY id"
    ));
    let by_age = registry
        .create_sink(&sink(&table, "&batch.size=100000&batch.timeout=200ms"))
        .await
        .unwrap();
    let mut writer = by_age.create_writer().await.unwrap();
    writer.write_batch(&id_name_records(0, 10)).await.unwrap();
    assert_eq!(count(&table), "0", "young rows wait for more");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    writer.write_batch(&id_name_records(10, 1)).await.unwrap();
    assert_eq!(
        count(&table),
        "11",
        "the old rows went out with the next write"
    );
    writer.commit().await.unwrap();
    assert_eq!(count(&table), "11");
}
