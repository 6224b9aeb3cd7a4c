//! Helpers shared by the file connector's tests.
#![allow(dead_code, unreachable_pub)]

use std::path::Path;
use std::time::{Duration, Instant};

use velo_datasource_core::{
    DataReader, DataSink, DataSource, DataSourceRegistry, Result, StreamRecord,
};

/// Log lines go to the test output when `RUST_LOG` is set.
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

pub fn uri(path: &Path, params: &str) -> String {
    init_logs();
    if params.is_empty() {
        format!("file://{}", path.display())
    } else {
        format!("file://{}?{params}", path.display())
    }
}

/// The URI of CSV `path` read strictly as `schema`, bad records to the
/// dead-letter file `dead`.
pub fn dead_letter_uri(path: &Path, schema: &str, dead: &Path) -> String {
    uri(
        path,
        &format!(
            "schema={schema}&errors=dead_letter&errors.dead_letter={}",
            dead.display()
        ),
    )
}

/// The dead letters written to `dead`, one JSON object per line.
pub fn dead_letters(dead: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dead)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub async fn source(uri: &str) -> Result<Box<dyn DataSource>> {
    DataSourceRegistry::with_plugins().create_source(uri).await
}

pub async fn sink(uri: &str) -> Result<Box<dyn DataSink>> {
    DataSourceRegistry::with_plugins().create_sink(uri).await
}

/// Reads a bounded source to its end.
pub async fn read_all(reader: &mut dyn DataReader) -> Result<Vec<StreamRecord>> {
    let mut out = Vec::new();
    loop {
        let batch = reader.read_batch(1000).await?;
        out.extend(batch);
        if !reader.has_more().await? {
            return Ok(out);
        }
    }
}

/// Reads a streaming source until `pred` holds or `timeout` passes.
pub async fn read_until(
    reader: &mut dyn DataReader,
    out: &mut Vec<StreamRecord>,
    timeout: Duration,
    pred: impl Fn(&[StreamRecord]) -> bool,
) -> Result<bool> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if pred(out) {
            return Ok(true);
        }
        out.extend(reader.read_batch(1000).await?);
    }
    Ok(pred(out))
}

pub fn ints(records: &[StreamRecord], field: &str) -> Vec<i64> {
    records
        .iter()
        .map(|r| {
            r.get(field)
                .and_then(|v| v.as_i64())
                .expect("integer field")
        })
        .collect()
}

/// The URI of a CSV file in `dir` with one column `n` = 0..`rows`, read
/// with the source's own checkpoint after every commit.
pub fn numbered_csv_checkpointed(dir: &std::path::Path, rows: usize) -> String {
    let path = dir.join("n.csv");
    let body: String = std::iter::once("n\n".to_owned())
        .chain((0..rows).map(|i| format!("{i}\n")))
        .collect();
    std::fs::write(&path, body).unwrap();
    let cp = dir.join("cp");
    uri(
        &path,
        &format!("checkpoint_dir={}&checkpoint_interval=1", cp.display()),
    )
}

/// The URI of a CSV file in `dir` with columns `n` (0..3000) and `s`
/// (`s{n}`), read strictly as integer and string, whose row 1500 has `x`
/// for `n`: a bad record in its line 1502.
pub fn csv_with_a_bad_row(dir: &Path) -> String {
    let path = dir.join("b.csv");
    let body: String = std::iter::once("n,s\n".to_owned())
        .chain((0..3000).map(|i| {
            if i == 1500 {
                "x,bad\n".to_owned()
            } else {
                format!("{i},s{i}\n")
            }
        }))
        .collect();
    std::fs::write(&path, body).unwrap();
    uri(&path, "schema=n:integer,s:string")
}
