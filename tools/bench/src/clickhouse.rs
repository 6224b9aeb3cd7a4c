//! ClickHouse: `velo pipe` of a JSON Lines file into a table next to
//! `clickhouse-client --query "INSERT ... FORMAT JSONEachRow"` fed the same
//! file, into tables of the same shape on the same server.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::{Measure, measure_proc, run_sampled};

fn client(port: &str, query: &str, input: Option<&Path>) -> String {
    let mut cmd = Command::new("clickhouse-client");
    cmd.args(["--host", "127.0.0.1", "--port", port, "--query", query]);
    if let Some(path) = input {
        cmd.stdin(Stdio::from(std::fs::File::open(path).expect("input")));
    }
    let out = cmd.output().expect("clickhouse-client");
    assert!(
        out.status.success(),
        "clickhouse-client: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Returns (velo pipe, clickhouse-client, velo pipe of the same file into a
/// file: the decoding floor of our path) over `rows` rows, `reps` runs each.
pub(crate) fn run(
    velo: &Path,
    dir: &Path,
    url: &str,
    port: &str,
    rows: usize,
    reps: usize,
) -> (Measure, Measure, Measure) {
    let input = dir.join("clickhouse-rows.jsonl");
    let mut body = String::with_capacity(rows * 90);
    for i in 0..rows {
        body.push_str(&format!(
            "{{\"id\":{i},\"symbol\":\"S{}\",\"price\":{}.{:02},\"qty\":{},\"venue\":\"XNAS\"}}\n",
            i % 50,
            100 + i % 900,
            i % 100,
            i % 1000
        ));
    }
    std::fs::write(&input, body).expect("input file");
    let ddl = "(id Int64, symbol String, price Float64, qty Int64, venue String) ENGINE = MergeTree ORDER BY id";
    let mut ours = Vec::new();
    let mut bare = Vec::new();
    let mut floor = Vec::new();
    let [mut ours_rss, mut bare_rss, mut floor_rss] = [0f64; 3];
    for rep in 0..reps {
        let copy = dir.join("clickhouse-copy.jsonl");
        let (status, secs, rss) = run_sampled(
            Command::new(velo)
                .args([
                    "pipe",
                    &format!("file://{}", input.display()),
                    &format!("file://{}", copy.display()),
                ])
                .args(["--no-progress", "--batch-size", "100000"])
                .stderr(Stdio::null()),
        );
        floor.push(secs);
        floor_rss = floor_rss.max(rss);
        assert!(status.success(), "velo pipe file → file failed");
        let _ = std::fs::remove_file(&copy);
        let table = format!("bench_velo_{}_{rep}", std::process::id());
        client(port, &format!("CREATE TABLE {table} {ddl}"), None);
        let sink = format!(
            "{}/default?table={table}&batch.size=100000",
            url.replace("http://", "clickhouse://")
        );
        let (status, secs, rss) = run_sampled(
            Command::new(velo)
                .args([
                    "pipe",
                    &format!("file://{}", input.display()),
                    &sink,
                    "--no-progress",
                    "--batch-size",
                    "100000",
                ])
                .stderr(Stdio::null()),
        );
        ours.push(secs);
        ours_rss = ours_rss.max(rss);
        assert!(status.success(), "velo pipe into ClickHouse failed");
        assert_eq!(
            client(port, &format!("SELECT count() FROM {table}"), None),
            rows.to_string()
        );
        client(port, &format!("DROP TABLE {table}"), None);

        let table = format!("bench_client_{}_{rep}", std::process::id());
        client(port, &format!("CREATE TABLE {table} {ddl}"), None);
        let (status, secs, rss) = run_sampled(
            Command::new("clickhouse-client")
                .args(["--host", "127.0.0.1", "--port", port, "--query"])
                .arg(format!("INSERT INTO {table} FORMAT JSONEachRow"))
                .stdin(Stdio::from(std::fs::File::open(&input).expect("input"))),
        );
        assert!(status.success(), "clickhouse-client INSERT failed");
        bare.push(secs);
        bare_rss = bare_rss.max(rss);
        assert_eq!(
            client(port, &format!("SELECT count() FROM {table}"), None),
            rows.to_string()
        );
        client(port, &format!("DROP TABLE {table}"), None);
    }
    let _ = std::fs::remove_file(&input);
    (
        measure_proc(
            "velo pipe → ClickHouse",
            "rows",
            (ours, rows as f64),
            ours_rss,
        ),
        measure_proc(
            "clickhouse-client INSERT",
            "rows",
            (bare, rows as f64),
            bare_rss,
        ),
        measure_proc("velo pipe → file", "rows", (floor, rows as f64), floor_rss),
    )
}
