//! PostgreSQL restarted under a running CDC reader: it reconnects and
//! resumes without loss or repeats. A test binary of its own, as it restarts
//! the server that other tests share (cargo runs test binaries one by one).

use std::process::Command;
use std::time::{Duration, Instant};

use tests_integration::{endpoint, pg_url, psql, unique};
use velo_datasource_core::{DataSource, DataSourceUri, FieldValue};
use velo_pg_cdc::PostgresSource;

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// `pg_ctl restart -m fast` on the server xtask started (native services only).
fn restart_postgres() {
    let data = endpoint("VELO_TEST_PG_DATA");
    let bin = endpoint("VELO_TEST_PG_BIN");
    let pg_ctl = format!("{bin}/pg_ctl");
    let log = format!("{data}/../postgres.log");
    let args = [
        "-D", &data, "-l", &log, "-m", "fast", "-w", "-t", "60", "restart",
    ];
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", &pg_ctl]);
        c
    } else {
        Command::new(&pg_ctl)
    };
    let out = cmd
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("pg_ctl runs");
    assert!(
        out.status.success(),
        "pg_ctl restart: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_reconnects_after_a_server_restart_without_loss() {
    let t = unique("cdc_restart").replace('-', "_");
    psql(&format!("CREATE TABLE {t} (id int PRIMARY KEY)"));
    let mut source = PostgresSource::new();
    let uri = format!(
        "{}?table={t}&batch.timeout=200ms&status_interval=200ms",
        pg_url()
    );
    source
        .initialize(
            DataSourceUri::parse(&uri)
                .unwrap()
                .to_source_config()
                .unwrap(),
        )
        .await
        .unwrap();
    let mut reader = source.create_reader().await.unwrap();
    assert!(reader.read_batch(10).await.unwrap().is_empty());
    for k in 0..10 {
        psql(&format!(
            "INSERT INTO {t} SELECT generate_series({}, {})",
            k * 1000 + 1,
            (k + 1) * 1000
        ));
    }
    // Read part of it, commit that, restart the server mid-stream.
    let mut ids = Vec::new();
    while ids.len() < 3500 {
        for r in reader.read_batch(500).await.unwrap() {
            ids.push(r.get("id").and_then(FieldValue::as_i64).unwrap());
        }
    }
    reader.commit().await.unwrap();
    // The server waits for its logical walsenders to be confirmed before it
    // stops: keep reading and committing, as a pipeline does, meanwhile.
    let restart = std::thread::spawn(restart_postgres);
    while !restart.is_finished() {
        for r in reader.read_batch(500).await.unwrap() {
            ids.push(r.get("id").and_then(FieldValue::as_i64).unwrap());
        }
        reader.commit().await.unwrap();
    }
    restart.join().unwrap();
    for k in 10..20 {
        psql(&format!(
            "INSERT INTO {t} SELECT generate_series({}, {})",
            k * 1000 + 1,
            (k + 1) * 1000
        ));
    }
    let started = Instant::now();
    while ids.len() < 20_000 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "only {} of 20000 rows after the restart",
            ids.len()
        );
        for r in reader.read_batch(1000).await.unwrap() {
            ids.push(r.get("id").and_then(FieldValue::as_i64).unwrap());
        }
        reader.commit().await.unwrap();
    }
    assert_eq!(
        ids,
        (1..=20_000).collect::<Vec<i64>>(),
        "every row once, in order, across the restart"
    );
    reader.close().await.unwrap();
    psql(&format!("SELECT pg_drop_replication_slot('velo_cdc_{t}')"));
}
