//! velo-pg-cdc against the PostgreSQL that `cargo xtask itest` starts.
//! Changes are made with psql (an independent client); LSNs and
//! transaction ids are checked against the server's own decoding of a second
//! slot (`pg_logical_slot_peek_binary_changes`).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use tests_integration::{pg_url, psql, psql_file, unique};
use velo_datasource_core::{
    DataReader, DataSink, DataSource, DataSourceUri, FieldValue, StreamRecord,
};
use velo_pg_cdc::{PostgresSink, PostgresSource};

fn name(prefix: &str) -> String {
    unique(prefix).replace('-', "_")
}

fn uri(params: &str) -> String {
    format!("{}?{params}", pg_url())
}

async fn source(params: &str) -> PostgresSource {
    let mut source = PostgresSource::new();
    source
        .initialize(
            DataSourceUri::parse(&uri(params))
                .unwrap()
                .to_source_config()
                .unwrap(),
        )
        .await
        .unwrap();
    source
}

async fn sink(params: &str) -> PostgresSink {
    let mut sink = PostgresSink::new();
    sink.initialize(
        DataSourceUri::parse(&uri(params))
            .unwrap()
            .to_sink_config()
            .unwrap(),
    )
    .await
    .unwrap();
    sink
}

/// Reads until the reader says it is done (a bounded reader) or `limit` records.
async fn drain(reader: &mut Box<dyn DataReader>, limit: usize) -> Vec<StreamRecord> {
    let mut out = Vec::new();
    let started = Instant::now();
    while out.len() < limit && reader.has_more().await.unwrap() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "drain took too long ({} records)",
            out.len()
        );
        let batch = reader
            .read_batch(5000.min(limit - out.len()))
            .await
            .unwrap();
        out.extend(batch);
    }
    out
}

fn text(record: &StreamRecord, field: &str) -> String {
    match record.get(field) {
        Some(FieldValue::String(s)) => s.to_string(),
        Some(FieldValue::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

fn drop_slot(slot: &str) {
    psql(&format!(
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '{slot}'"
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_in_commit_order_with_server_lsns_and_values() {
    let t = name("cdc_order");
    psql(&format!(
        "CREATE TABLE {t} (id int PRIMARY KEY, name text NOT NULL, amount numeric(12,2)); \
         CREATE PUBLICATION {t}_chk FOR TABLE {t};"
    ));
    psql(&format!(
        "SELECT 1 FROM pg_create_logical_replication_slot('{t}_chk', 'pgoutput')"
    ));
    let src = source(&format!(
        "table={t}&batch.timeout=200ms&heartbeat_interval=0s"
    ))
    .await;
    // The first read creates the slot and publication.
    let mut warmup = src.create_reader().await.unwrap();
    assert!(warmup.read_batch(10).await.unwrap().is_empty());
    warmup.close().await.unwrap();
    drop(warmup);

    // 101 transactions: 100,000 inserts, 10,000 updates, 10,000 deletes, mixed.
    let mut script = String::new();
    for k in 0..=100 {
        script.push_str("BEGIN;\n");
        if k < 100 {
            script.push_str(&format!(
                "INSERT INTO {t} SELECT i, 'n' || i, i * 1.25 FROM generate_series({}, {}) i;\n",
                k * 1000 + 1,
                (k + 1) * 1000
            ));
        }
        if k > 0 {
            let base = (k - 1) * 1000;
            script.push_str(&format!(
                "UPDATE {t} SET name = 'u' || id, amount = amount + 0.5 WHERE id BETWEEN {} AND {};\n\
                 DELETE FROM {t} WHERE id BETWEEN {} AND {};\n",
                base + 1,
                base + 100,
                base + 901,
                base + 1000
            ));
        }
        script.push_str("COMMIT;\n");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("workload.sql");
    std::fs::write(&path, script).unwrap();
    psql_file(&path);

    let src = source(&format!(
        "table={t}&until=current&batch.timeout=200ms&heartbeat_interval=0s"
    ))
    .await;
    let mut reader = src.create_reader().await.unwrap();
    let records = drain(&mut reader, usize::MAX).await;
    reader.close().await.unwrap();

    let count = |op: &str| records.iter().filter(|r| text(r, "_op") == op).count();
    assert_eq!(
        (count("insert"), count("update"), count("delete")),
        (100_000, 10_000, 10_000)
    );
    assert_eq!(records.len(), 120_000);

    // Order, LSNs and xids: exactly what the server decodes for its own slot.
    let expected = psql(&format!(
        "SELECT lsn, xid, chr(get_byte(data, 0)) FROM pg_logical_slot_peek_binary_changes('{t}_chk', NULL, NULL, \
         'proto_version', '1', 'publication_names', '{t}_chk') WHERE get_byte(data, 0) IN (73, 85, 68)"
    ));
    let expected: Vec<String> = expected.lines().map(str::to_owned).collect();
    let got: Vec<String> = records
        .iter()
        .map(|r| {
            let op = match text(r, "_op").as_str() {
                "insert" => "I",
                "update" => "U",
                _ => "D",
            };
            format!("{}|{}|{op}", text(r, "_lsn"), text(r, "_xid"))
        })
        .collect();
    assert_eq!(got.len(), expected.len());
    assert!(
        got == expected,
        "first difference at {:?}",
        got.iter().zip(&expected).position(|(a, b)| a != b)
    );
    let commit_lsns: Vec<velo_pg_cdc::Lsn> = records
        .iter()
        .map(|r| text(r, "_commit_lsn").parse().unwrap())
        .collect();
    assert!(commit_lsns.windows(2).all(|w| w[0] <= w[1]), "commit order");

    // Values: replaying the changes gives the table as psql sees it.
    let mut table: BTreeMap<i64, String> = BTreeMap::new();
    for r in &records {
        let id = r.get("id").and_then(FieldValue::as_i64).unwrap();
        match text(r, "_op").as_str() {
            "delete" => {
                assert!(
                    table.remove(&id).is_some(),
                    "delete of a row never inserted: {id}"
                );
            }
            _ => {
                let amount = match r.get("amount") {
                    Some(FieldValue::Decimal(d)) => d.to_string(),
                    other => panic!("amount is {other:?}"),
                };
                table.insert(id, format!("{id}|{}|{amount}", text(r, "name")));
            }
        }
        assert!(r.event_time.is_some(), "commit time is the event time");
    }
    let actual = psql(&format!("SELECT id, name, amount FROM {t} ORDER BY id"));
    let replayed: Vec<&String> = table.values().collect();
    let actual: Vec<&str> = actual.lines().collect();
    assert_eq!(replayed.len(), 90_000);
    assert!(
        replayed.iter().zip(&actual).all(|(a, b)| a.as_str() == *b),
        "replayed rows differ from the table"
    );
    drop_slot(&format!("{t}_chk"));
    drop_slot(&format!("velo_cdc_{t}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn types_toast_before_images_and_truncate() {
    let t = name("cdc_types");
    psql(&format!(
        "CREATE TABLE {t} (id bigint PRIMARY KEY, small smallint, f float8, n numeric, b bool, s varchar(10), \
         raw bytea, d date, ts timestamp, tz timestamptz, u uuid, j jsonb, ints int[], texts text[], doc text); \
         ALTER TABLE {t} REPLICA IDENTITY FULL;"
    ));
    let src = source(&format!("table={t}&batch.timeout=200ms")).await;
    let mut reader = src.create_reader().await.unwrap();
    assert!(reader.read_batch(10).await.unwrap().is_empty());
    psql(&format!(
        "INSERT INTO {t} VALUES (1, -3, 1.5, 12.3400, true, 'héllo', '\\x00ff', '2024-02-29', \
         '2024-01-02 03:04:05.123456', '2024-01-02 03:04:05+02', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', \
         '{{\"k\": [1, \"x\"]}}', '{{1,NULL,3}}', '{{\"a b\",\"c\\\"d\"}}', \
         (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 5000) i)); \
         UPDATE {t} SET small = 4 WHERE id = 1; \
         UPDATE {t} SET id = 2 WHERE id = 1; \
         DELETE FROM {t} WHERE id = 2; \
         TRUNCATE {t};"
    ));
    let mut records = Vec::new();
    let started = Instant::now();
    while records.len() < 5 && started.elapsed() < Duration::from_secs(30) {
        records.extend(reader.read_batch(10).await.unwrap());
    }
    let ops: Vec<String> = records.iter().map(|r| text(r, "_op")).collect();
    assert_eq!(ops, ["insert", "update", "update", "delete", "truncate"]);
    let first = &records[0];
    let get = |f: &str| first.get(f).cloned().unwrap();
    assert_eq!(get("small"), FieldValue::Integer(-3));
    assert_eq!(get("f"), FieldValue::Float(1.5));
    assert_eq!(get("n").to_string(), "12.3400");
    assert_eq!(get("b"), FieldValue::Boolean(true));
    assert_eq!(get("s"), FieldValue::String("héllo".into()));
    assert_eq!(get("raw"), FieldValue::Bytes(vec![0, 255]));
    assert_eq!(get("d").to_string(), "2024-02-29");
    assert_eq!(
        get("ts").to_json(),
        serde_json::json!("2024-01-02T03:04:05.123456Z")
    );
    assert_eq!(
        get("tz").to_json(),
        serde_json::json!("2024-01-02T01:04:05Z")
    );
    assert_eq!(
        get("u").as_str(),
        Some("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
    );
    assert_eq!(get("j").to_json(), serde_json::json!({"k": [1, "x"]}));
    assert_eq!(get("ints").to_json(), serde_json::json!([1, null, 3]));
    assert_eq!(get("texts").to_json(), serde_json::json!(["a b", "c\"d"]));
    assert_eq!(get("doc").as_str().map(str::len), Some(5000 * 32));

    // The TOASTed doc was not resent: marked, not silently null.
    let update = &records[1];
    assert_eq!(update.get("doc"), Some(&FieldValue::Null));
    assert_eq!(
        update.get("_unchanged_toast").unwrap().to_json(),
        serde_json::json!(["doc"])
    );
    // REPLICA IDENTITY FULL: the old row comes along.
    let before = update.get("_before").unwrap().to_json();
    assert_eq!(before["small"], serde_json::json!(-3));
    let moved = &records[2];
    assert_eq!(
        moved.get("_before").unwrap().to_json()["id"],
        serde_json::json!(1)
    );
    assert_eq!(moved.get("id"), Some(&FieldValue::Integer(2)));
    assert_eq!(records[3].get("id"), Some(&FieldValue::Integer(2)));
    assert_eq!(text(&records[4], "_table"), format!("public.{t}"));
    reader.commit().await.unwrap();
    reader.close().await.unwrap();
    drop_slot(&format!("velo_cdc_{t}"));
}

/// A restart inside a large transaction skips exactly what was delivered,
/// and the slot is never confirmed past what was committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_inside_a_transaction_repeats_and_loses_nothing() {
    let t = name("cdc_resume");
    psql(&format!("CREATE TABLE {t} (id int PRIMARY KEY, v text)"));
    let params = format!("table={t}&batch.timeout=300ms&status_interval=100ms");
    let src = source(&params).await;
    let mut reader = src.create_reader().await.unwrap();
    assert!(reader.read_batch(10).await.unwrap().is_empty());
    // Two transactions (psql -c runs one string as one transaction).
    psql(&format!(
        "INSERT INTO {t} SELECT i, 'a' FROM generate_series(1, 1000) i"
    ));
    psql(&format!(
        "INSERT INTO {t} SELECT i, 'b' FROM generate_series(1001, 3000) i"
    ));
    let slot = format!("velo_cdc_{t}");
    let confirmed = || {
        psql(&format!(
            "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '{slot}'"
        ))
    };
    let before = confirmed();

    // Deliver 1,500 (all of the first transaction, half of the second) and commit them.
    let mut seen = drain(&mut reader, 1500).await;
    reader.commit().await.unwrap();
    let position = reader.position().unwrap();
    let text_position = format!("{position:?}");
    assert!(text_position.contains("seen=500"), "{text_position}");
    // Deliver 300 more without committing, then "crash".
    let uncommitted = reader.read_batch(300).await.unwrap();
    assert_eq!(uncommitted.len(), 300);
    tokio::time::sleep(Duration::from_millis(600)).await;
    drop(reader);
    // Only the first transaction may be confirmed: it is all the pipeline committed whole.
    let after = confirmed();
    let first_end: velo_pg_cdc::Lsn = psql(&format!(
        "SELECT lsn FROM pg_logical_slot_peek_binary_changes('{slot}', NULL, NULL, 'proto_version', '1', \
         'publication_names', '{slot}') WHERE get_byte(data, 0) = 67 LIMIT 1"
    ))
    .trim()
    .parse()
    .unwrap();
    let after_lsn: velo_pg_cdc::Lsn = after.trim().parse().unwrap();
    assert!(
        after_lsn <= first_end || after.trim() == before.trim(),
        "confirmed {after} passed the committed transaction ending at {first_end}"
    );

    let src = source(&params).await;
    let mut reader = src.create_reader().await.unwrap();
    reader.restore(position).await.unwrap();
    let rest = drain(&mut reader, 1500).await;
    reader.commit().await.unwrap();
    reader.close().await.unwrap();
    seen.extend(rest);
    let ids: Vec<i64> = seen
        .iter()
        .map(|r| r.get("id").and_then(FieldValue::as_i64).unwrap())
        .collect();
    assert_eq!(
        ids,
        (1..=3000).collect::<Vec<i64>>(),
        "every row once, in order"
    );
    drop_slot(&slot);
}

/// An idle publication does not pin WAL: heartbeats move the slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_advance_an_idle_slot() {
    let t = name("cdc_idle");
    psql(&format!(
        "CREATE TABLE {t} (id int PRIMARY KEY); CREATE TABLE {t}_other (id int)"
    ));
    let src = source(&format!(
        "table={t}&batch.timeout=200ms&heartbeat_interval=200ms&status_interval=100ms"
    ))
    .await;
    let mut reader = src.create_reader().await.unwrap();
    assert!(reader.read_batch(10).await.unwrap().is_empty());
    let slot = format!("velo_cdc_{t}");
    let confirmed = || -> velo_pg_cdc::Lsn {
        psql(&format!(
            "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '{slot}'"
        ))
        .trim()
        .parse()
        .unwrap()
    };
    let start = confirmed();
    // WAL grows from another table only.
    psql(&format!(
        "INSERT INTO {t}_other SELECT generate_series(1, 10000)"
    ));
    let target: velo_pg_cdc::Lsn = psql("SELECT pg_current_wal_lsn()").trim().parse().unwrap();
    let started = Instant::now();
    while confirmed() < target {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "slot stuck at {} (start {start}, WAL at {target})",
            confirmed()
        );
        assert!(reader.read_batch(10).await.unwrap().is_empty());
        // What a runner does when the position moved without records.
        reader.commit().await.unwrap();
    }
    reader.close().await.unwrap();
    drop_slot(&slot);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_errors_for_missing_identity_and_tables() {
    let t = name("cdc_noid");
    psql(&format!("CREATE TABLE {t} (v text)"));
    let src = source(&format!("table={t}&batch.timeout=200ms")).await;
    let mut reader = src.create_reader().await.unwrap();
    let err = reader.read_batch(1).await.unwrap_err().to_string();
    assert!(
        err.contains("no primary key") && err.contains("REPLICA IDENTITY FULL"),
        "{err}"
    );

    let mut missing = PostgresSource::new();
    let err = missing
        .initialize(
            DataSourceUri::parse(&uri("table=no_such_table_here"))
                .unwrap()
                .to_source_config()
                .unwrap(),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("public.no_such_table_here does not exist"),
        "{err}"
    );
}

/// A table named `x"; DROP TABLE y; --` is read, polled and written like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_identifiers_are_quoted() {
    let victim = name("victim");
    let evil = format!("{victim}\"; DROP TABLE {victim}; --");
    let quoted = format!("\"{}\"", evil.replace('"', "\"\""));
    psql(&format!(
        "CREATE TABLE {victim} (id int); CREATE TABLE {quoted} (id int PRIMARY KEY, v text)"
    ));
    let table_param = quoted
        .replace('%', "%25")
        .replace('"', "%22")
        .replace(' ', "%20")
        .replace(';', "%3B");
    let slot = format!("evil_{}", victim.to_lowercase());
    let src = source(&format!(
        "table={table_param}&slot={slot}&publication={slot}&batch.timeout=200ms"
    ))
    .await;
    let mut reader = src.create_reader().await.unwrap();
    assert!(reader.read_batch(10).await.unwrap().is_empty());
    psql(&format!("INSERT INTO {quoted} VALUES (1, 'a'), (2, 'b')"));
    let got = drain_until(&mut reader, 2).await;
    assert_eq!(got.len(), 2);
    assert_eq!(text(&got[0], "_table"), format!("public.{evil}"));
    reader.close().await.unwrap();

    // Polling and the sink take the same name.
    let poll = source(&format!("table={table_param}&mode=poll&until=end")).await;
    let mut poller = poll.create_reader().await.unwrap();
    assert_eq!(drain(&mut poller, usize::MAX).await.len(), 2);
    let target = sink(&format!("table={table_param}")).await;
    let mut writer = target.create_writer().await.unwrap();
    let rows: Vec<StreamRecord> = got.clone();
    writer.write_batch(&rows).await.unwrap();
    writer.commit().await.unwrap();
    writer.close().await.unwrap();

    assert_eq!(
        psql(&format!("SELECT count(*) FROM {victim}")).trim(),
        "0",
        "the victim table still exists"
    );
    assert_eq!(
        psql(&format!(
            "SELECT string_agg(v, ',' ORDER BY id) FROM {quoted}"
        ))
        .trim(),
        "a,b"
    );
    drop_slot(&slot);
}

async fn drain_until(reader: &mut Box<dyn DataReader>, n: usize) -> Vec<StreamRecord> {
    let mut out = Vec::new();
    let started = Instant::now();
    while out.len() < n {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "only {} of {n} records arrived",
            out.len()
        );
        out.extend(reader.read_batch(n - out.len()).await.unwrap());
    }
    out
}

/// The polling source follows a timestamp with the key as tie-breaker:
/// rows sharing a timestamp across a batch boundary are all read once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_by_timestamp_reads_new_rows_once() {
    let t = name("poll_ts");
    psql(&format!(
        "CREATE TABLE {t} (id int PRIMARY KEY, updated_at timestamptz NOT NULL, v text); \
         INSERT INTO {t} SELECT i, '2024-01-01'::timestamptz + (i / 10) * interval '1 second', 'v' || i \
         FROM generate_series(1, 1005) i;"
    ));
    let src = source(&format!(
        "table={t}&mode=poll&cursor.column=updated_at&poll_interval=100ms&batch.timeout=200ms"
    ))
    .await;
    let mut reader = src.create_reader().await.unwrap();
    let mut got = Vec::new();
    for _ in 0..20 {
        got.extend(reader.read_batch(7).await.unwrap());
        if got.len() >= 1005 {
            break;
        }
        if got.len() > 1000 {
            continue;
        }
    }
    while got.len() < 1005 {
        got.extend(reader.read_batch(100).await.unwrap());
    }
    let position = reader.position().unwrap();
    psql(&format!(
        "INSERT INTO {t} VALUES (2000, '2030-01-01', 'late')"
    ));
    let more = drain_until(&mut reader, 1).await;
    assert_eq!(more[0].get("v"), Some(&FieldValue::String("late".into())));
    let mut ids: Vec<i64> = got
        .iter()
        .map(|r| r.get("id").and_then(FieldValue::as_i64).unwrap())
        .collect();
    let n = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), n, "no row twice");
    assert_eq!(n, 1005);

    // A new reader restored from the position sees only the new row.
    let mut again = src.create_reader().await.unwrap();
    again.restore(position).await.unwrap();
    let after = drain_until(&mut again, 1).await;
    assert_eq!(after[0].get("id"), Some(&FieldValue::Integer(2000)));
}

/// Sink: CDC records mirror a table (key changes, deletes, TOAST kept);
/// a wrong type names the column and leaves nothing written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_applies_changes_and_reports_mismatches() {
    let src_t = name("mirror_src");
    let dst_t = name("mirror_dst");
    let ddl = "(id int PRIMARY KEY, v text, doc text, n int)";
    psql(&format!(
        "CREATE TABLE {src_t} {ddl}; CREATE TABLE {dst_t} {ddl}"
    ));
    let src = source(&format!("table={src_t}&batch.timeout=200ms")).await;
    let mut reader = src.create_reader().await.unwrap();
    assert!(reader.read_batch(10).await.unwrap().is_empty());
    psql(&format!(
        "INSERT INTO {src_t} SELECT i, 'v' || i, CASE WHEN i = 1 THEN (SELECT string_agg(md5(g::text), '') FROM generate_series(1, 4000) g) END, i \
         FROM generate_series(1, 500) i; \
         UPDATE {src_t} SET v = 'changed' WHERE id <= 10; \
         UPDATE {src_t} SET id = id + 1000 WHERE id BETWEEN 11 AND 20; \
         DELETE FROM {src_t} WHERE id BETWEEN 21 AND 30; \
         INSERT INTO {src_t} VALUES (21, 'again', NULL, 0);"
    ));
    let changes = drain_until(&mut reader, 500 + 10 + 10 + 10 + 1).await;
    reader.close().await.unwrap();
    let target = sink(&format!("table={dst_t}")).await;
    let mut writer = target.create_writer().await.unwrap();
    // Two batches, split inside the updates, to fold across and within batches.
    writer.write_batch(&changes[..505]).await.unwrap();
    writer.write_batch(&changes[505..]).await.unwrap();
    writer.commit().await.unwrap();
    let diff = format!(
        "SELECT count(*) FROM ((TABLE {src_t} EXCEPT TABLE {dst_t}) UNION ALL (TABLE {dst_t} EXCEPT TABLE {src_t})) d"
    );
    assert_eq!(psql(&diff).trim(), "0");

    // A value the column cannot take: an error naming it, and a rollback leaves nothing.
    let bad_schema = std::sync::Arc::new(velo_datasource_core::Schema::new(vec![
        velo_datasource_core::FieldDefinition::required(
            "id",
            velo_datasource_core::DataType::Integer,
        ),
        velo_datasource_core::FieldDefinition::optional(
            "n",
            velo_datasource_core::DataType::String,
        ),
    ]));
    let bad = StreamRecord::new(
        bad_schema,
        vec![FieldValue::Integer(9999), FieldValue::String("lots".into())],
    )
    .unwrap();
    let err = writer.write_batch(&[bad]).await.unwrap_err().to_string();
    assert!(err.contains("field `n`") && err.contains("lots"), "{err}");
    writer.rollback().await.unwrap();
    assert_eq!(
        psql(&format!("SELECT count(*) FROM {dst_t} WHERE id = 9999")).trim(),
        "0"
    );
    writer.close().await.unwrap();
    drop_slot(&format!("velo_cdc_{src_t}"));
}

/// Positions stored in the sink's transaction come back after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_stores_positions_in_its_transaction() {
    let t = name("pos_dst");
    psql(&format!("CREATE TABLE {t} (id int PRIMARY KEY, v text)"));
    let target = sink(&format!("table={t}&positions_table={t}_positions")).await;
    let mut writer = target.create_writer().await.unwrap();
    assert!(writer.committed_position().await.unwrap().is_none());
    let schema = std::sync::Arc::new(velo_datasource_core::Schema::new(vec![
        velo_datasource_core::FieldDefinition::required(
            "id",
            velo_datasource_core::DataType::Integer,
        ),
        velo_datasource_core::FieldDefinition::optional(
            "v",
            velo_datasource_core::DataType::String,
        ),
    ]));
    let record = StreamRecord::new(schema, vec![FieldValue::Integer(1), "a".into()]).unwrap();
    writer.write_batch(&[record]).await.unwrap();
    let position = velo_datasource_core::SourcePosition::new(vec![
        velo_datasource_core::SourceOffset::Database {
            table: "slot".into(),
            cursor: velo_datasource_core::DatabaseCursor::LogSequenceNumber("0/16B3748".into()),
        },
    ]);
    writer.commit_with_position(&position).await.unwrap();
    writer.close().await.unwrap();
    let mut again = target.create_writer().await.unwrap();
    assert_eq!(again.committed_position().await.unwrap(), Some(position));
    let stored: HashMap<String, String> = psql(&format!(
        "SELECT pipeline, position::text FROM {t}_positions"
    ))
    .lines()
    .filter_map(|l| l.split_once('|').map(|(a, b)| (a.to_owned(), b.to_owned())))
    .collect();
    assert!(stored.contains_key(&format!("public.{t}")), "{stored:?}");
}

/// One source, several tables (some in another schema): one slot and one
/// publication, each record naming its table, in commit order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_tables_in_one_source() {
    let a = name("cdc_multi_a");
    let b = name("cdc_multi_b");
    let schema = name("cdc_schema");
    psql(&format!(
        "CREATE TABLE {a} (id int PRIMARY KEY, v text); CREATE SCHEMA {schema}; \
         CREATE TABLE {schema}.{b} (k text PRIMARY KEY, n numeric)"
    ));
    let slot = format!("multi_{}", std::process::id());
    let src = source(&format!(
        "table={a},{schema}.{b}&slot={slot}&publication={slot}&batch.timeout=200ms"
    ))
    .await;
    let mut reader = src.create_reader().await.unwrap();
    assert!(reader.read_batch(10).await.unwrap().is_empty());
    psql(&format!("INSERT INTO {a} VALUES (1, 'x')"));
    psql(&format!("INSERT INTO {schema}.{b} VALUES ('k1', 2.5)"));
    psql(&format!(
        "BEGIN; UPDATE {a} SET v = 'y'; DELETE FROM {schema}.{b}; COMMIT;"
    ));
    let got = drain_until(&mut reader, 4).await;
    let seen: Vec<(String, String)> = got
        .iter()
        .map(|r| (text(r, "_table"), text(r, "_op")))
        .collect();
    assert_eq!(
        seen,
        [
            (format!("public.{a}"), "insert".to_owned()),
            (format!("{schema}.{b}"), "insert".to_owned()),
            (format!("public.{a}"), "update".to_owned()),
            (format!("{schema}.{b}"), "delete".to_owned()),
        ]
    );
    assert_eq!(
        got[1].get("n").map(ToString::to_string).as_deref(),
        Some("2.5")
    );
    reader.commit().await.unwrap();
    reader.close().await.unwrap();
    drop_slot(&slot);
}
