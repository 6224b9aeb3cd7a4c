//! ClickHouse stopped in the middle of a `velo pipe` and started again: the
//! sink retries, and every row ends up in the table. A test binary of its
//! own, as it restarts the server the other tests share.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::cargo::CommandCargoExt;

mod common;
use common::{env, is_root, try_clickhouse as client};

#[test]
#[allow(
    clippy::zombie_processes,
    reason = "the restarted server outlives the test: xtask stops it by its config path"
)]
fn clickhouse_stopped_mid_run_then_started_gets_every_row() {
    let config = env("VELO_TEST_CLICKHOUSE_CONFIG");
    let table = format!("restart_{}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("rows.jsonl");
    let n = 200_000;
    let body: String = (0..n)
        .map(|i| format!("{{\"id\":{i},\"v\":\"row {i}\"}}\n"))
        .collect();
    std::fs::write(&input, body).unwrap();
    client(&format!(
        "CREATE TABLE {table} (id Int64, v String) ENGINE = MergeTree ORDER BY id"
    ))
    .unwrap();
    let sink = format!(
        "{}/default?table={table}&batch.size=2000",
        env("VELO_TEST_CLICKHOUSE_URL").replace("http://", "clickhouse://")
    );
    let child = Command::cargo_bin("velo")
        .unwrap()
        .args([
            "pipe",
            &format!("file://{}", input.display()),
            &sink,
            "--no-progress",
            "--batch-size",
            "2000",
        ])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Stop the server once some rows are in.
    let started = Instant::now();
    while client(&format!("SELECT count() FROM {table}")).is_none_or(|c| c == "0") {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no rows arrived"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let ok = Command::new("pkill")
        .args(["-KILL", "-f"])
        .arg(format!("config-file={config}"))
        .status()
        .unwrap()
        .success();
    assert!(ok, "the server was running");
    std::thread::sleep(Duration::from_millis(300));
    assert!(client("SELECT 1").is_none(), "the server is down");
    std::thread::sleep(Duration::from_secs(2));
    let mut start = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "clickhouse", "--", "clickhouse-server"]);
        c
    } else {
        Command::new("clickhouse-server")
    };
    let dir_of_config = std::path::Path::new(&config)
        .parent()
        .unwrap()
        .to_path_buf();
    start
        .arg(format!("--config-file={config}"))
        .current_dir(dir_of_config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let result = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(
        result.status.success(),
        "the pipe must ride out the restart: {stderr}"
    );
    assert!(
        stderr.contains("retrying"),
        "the sink said it retried: {stderr}"
    );
    let counts = client(&format!("SELECT count(), uniqExact(id) FROM {table}")).unwrap();
    let (total, distinct) = counts.split_once('\t').unwrap();
    let (total, distinct): (u64, u64) = (total.parse().unwrap(), distinct.parse().unwrap());
    eprintln!(
        "after the restart: {total} rows, {distinct} distinct, {} duplicates",
        total - distinct
    );
    assert_eq!(distinct, n, "every row is present");
    assert!(
        total - distinct <= 2000,
        "at most the batch in flight repeats"
    );
}
