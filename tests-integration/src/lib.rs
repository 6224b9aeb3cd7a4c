//! Helpers for tests that need real services.
//!
//! `cargo xtask itest` starts PostgreSQL, a Kafka-protocol broker and an S3
//! server and sets the variables below. Run without them, a test fails with
//! a message that says how to run it: it never passes silently.

use std::sync::atomic::{AtomicU32, Ordering};

/// The value of `var`, or a panic that names `cargo xtask itest`.
pub fn endpoint(var: &str) -> String {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{var} is not set: this test needs a real service. Run it through `cargo xtask itest` \
             (or start the services with `cargo xtask services up` and `eval \"$(cargo xtask services env)\"`)"
        ),
    }
}

/// Kafka bootstrap servers (`VELO_TEST_KAFKA_BROKERS`).
pub fn kafka_brokers() -> String {
    endpoint("VELO_TEST_KAFKA_BROKERS")
}

/// PostgreSQL URL (`VELO_TEST_PG_URL`).
pub fn pg_url() -> String {
    endpoint("VELO_TEST_PG_URL")
}

/// Runs `sql` with `psql` (an independent client) against the test
/// PostgreSQL and returns its unaligned, tuples-only output. Panics with
/// psql's message when a statement fails.
pub fn psql(sql: &str) -> String {
    let out = std::process::Command::new("psql")
        .args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            &pg_url(),
            "-c",
            sql,
        ])
        .output()
        .expect("psql runs (install postgresql-client)");
    assert!(
        out.status.success(),
        "psql failed: {}\nSQL: {}",
        String::from_utf8_lossy(&out.stderr),
        &sql[..sql.len().min(500)]
    );
    String::from_utf8(out.stdout).expect("psql prints UTF-8")
}

/// Runs a file of SQL with `psql -f` (for large scripts).
pub fn psql_file(path: &std::path::Path) -> String {
    let out = std::process::Command::new("psql")
        .args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            &pg_url(),
            "-f",
        ])
        .arg(path)
        .output()
        .expect("psql runs (install postgresql-client)");
    assert!(
        out.status.success(),
        "psql -f {} failed: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("psql prints UTF-8")
}

/// The S3 test server.
#[derive(Debug, Clone)]
pub struct S3 {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// A bucket that exists.
    pub bucket: String,
    /// Region.
    pub region: String,
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
}

/// Runs a Python script with boto3 (`VELO_TEST_S3_PYTHON`) against the
/// test S3 server; the script gets `s3` (a boto3 client) and `bucket`.
/// Returns its standard output.
pub fn boto3(script: &str) -> String {
    let cfg = s3();
    let prelude = format!(
        "import boto3\ns3 = boto3.client('s3', endpoint_url='{}', region_name='{}', \
         aws_access_key_id='{}', aws_secret_access_key='{}')\nbucket = '{}'\n",
        cfg.endpoint, cfg.region, cfg.access_key_id, cfg.secret_access_key, cfg.bucket
    );
    let out = std::process::Command::new(endpoint("VELO_TEST_S3_PYTHON"))
        .args(["-c", &format!("{prelude}{script}")])
        .output()
        .expect("python with boto3 runs");
    assert!(
        out.status.success(),
        "boto3 script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

/// The S3 test server (`VELO_TEST_S3_*`).
pub fn s3() -> S3 {
    S3 {
        endpoint: endpoint("VELO_TEST_S3_ENDPOINT"),
        bucket: endpoint("VELO_TEST_S3_BUCKET"),
        region: endpoint("VELO_TEST_S3_REGION"),
        access_key_id: endpoint("VELO_TEST_S3_ACCESS_KEY_ID"),
        secret_access_key: endpoint("VELO_TEST_S3_SECRET_ACCESS_KEY"),
    }
}

/// A name no other test of this run uses: `prefix-PID-N`, so that tests can
/// share one service and run in parallel.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

#[cfg(test)]
mod tests {
    #[test]
    #[should_panic(expected = "cargo xtask itest")]
    fn a_missing_endpoint_fails_loudly() {
        super::endpoint("VELO_TEST_SURELY_NOT_SET");
    }
}
