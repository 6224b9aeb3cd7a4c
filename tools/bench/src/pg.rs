//! PostgreSQL CDC: velo's CDC reader next to `pg_recvlogical` writing the
//! same `pgoutput` stream to /dev/null. Each run gets a slot of its own,
//! created before the rows were written, so every run decodes the same WAL.

use std::process::Command;
use std::time::Instant;

use velo_datasource_core::{DataSource, DataSourceUri};
use velo_pg_cdc::PostgresSource;

use crate::{Measure, added_peak_rss, measure_proc, measure_rss, run_sampled};

fn psql(url: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            url,
            "-c",
            sql,
        ])
        .output()
        .expect("psql");
    assert!(
        out.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn pg_recvlogical() -> String {
    std::env::var("VELO_TEST_PG_BIN").map_or_else(
        |_| "pg_recvlogical".into(),
        |b| format!("{b}/pg_recvlogical"),
    )
}

/// Returns (velo CDC, pg_recvlogical) over `rows` inserted rows, `reps` runs each.
pub(crate) fn run(
    rt: &tokio::runtime::Runtime,
    url: &str,
    rows: usize,
    reps: usize,
) -> (Measure, Measure) {
    let table = format!("bench_cdc_{}", std::process::id());
    psql(
        url,
        &format!(
            "CREATE TABLE {table} (id int PRIMARY KEY, name text, amount numeric(12,2), at timestamptz); \
             CREATE PUBLICATION {table} FOR TABLE {table};"
        ),
    );
    let slots: Vec<String> = (0..reps * 2).map(|i| format!("{table}_{i}")).collect();
    for slot in &slots {
        psql(
            url,
            &format!("SELECT 1 FROM pg_create_logical_replication_slot('{slot}', 'pgoutput')"),
        );
    }
    // Transactions of 10,000 rows, as a busy application would commit them.
    for start in (0..rows).step_by(10_000) {
        psql(
            url,
            &format!(
                "INSERT INTO {table} SELECT i, 'name-' || i, i * 0.25, now() FROM generate_series({}, {}) i",
                start + 1,
                (start + 10_000).min(rows)
            ),
        );
    }
    let end = psql(url, "SELECT pg_current_wal_lsn()");
    let mut ours = Vec::new();
    let mut bare = Vec::new();
    let (mut ours_rss, mut bare_rss) = (0f64, 0f64);
    for rep in 0..reps {
        let slot = &slots[rep * 2];
        let t = Instant::now();
        let (n, rss) = added_peak_rss(|| {
            rt.block_on(async {
            let mut source = PostgresSource::new();
            let uri = format!(
                "{url}?table={table}&slot={slot}&publication={table}&until={end}&heartbeat_interval=0s&batch.timeout=200ms"
            );
            source
                .initialize(DataSourceUri::parse(&uri).unwrap().to_source_config().unwrap())
                .await
                .unwrap();
            let mut reader = source.create_reader().await.unwrap();
            let mut n = 0;
            while reader.has_more().await.unwrap() {
                n += reader.read_batch(10_000).await.unwrap().len();
                reader.commit().await.unwrap();
            }
            reader.close().await.unwrap();
            n
        })
        });
        ours.push(t.elapsed().as_secs_f64());
        ours_rss = ours_rss.max(rss);
        assert_eq!(n, rows, "velo read every change");

        let slot = &slots[rep * 2 + 1];
        let (status, secs, rss) = run_sampled(
            Command::new(pg_recvlogical())
                .args([
                    "-d",
                    url,
                    "--slot",
                    slot,
                    "--start",
                    "--no-loop",
                    "-f",
                    "/dev/null",
                ])
                .args(["--endpos", &end, "-o", "proto_version=1", "-o"])
                .arg(format!("publication_names={table}")),
        );
        bare.push(secs);
        bare_rss = bare_rss.max(rss);
        assert!(status.success(), "pg_recvlogical failed");
    }
    for slot in &slots {
        psql(url, &format!("SELECT pg_drop_replication_slot('{slot}')"));
    }
    psql(
        url,
        &format!("DROP PUBLICATION {table}; DROP TABLE {table}"),
    );
    (
        measure_rss(
            "velo CDC reader",
            "changes",
            ((ours, rows as f64), ours_rss),
        ),
        measure_proc("pg_recvlogical", "changes", (bare, rows as f64), bare_rss),
    )
}
