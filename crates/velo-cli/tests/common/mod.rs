//! Helpers shared by `velo`'s service tests.
#![allow(dead_code, unreachable_pub)]

use std::process::Command;

/// A service endpoint `cargo xtask itest` exports; a clear panic without it.
pub fn env(var: &str) -> String {
    std::env::var(var)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| panic!("{var} is not set: run these tests through `cargo xtask itest`"))
}

/// `query` through ClickHouse's own client; `None` when it fails (the
/// server may be down on purpose).
pub fn try_clickhouse(query: &str) -> Option<String> {
    let out = Command::new("clickhouse-client")
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &env("VELO_TEST_CLICKHOUSE_TCP_PORT"),
            "--query",
            query,
        ])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Whether the tests run as root (who reads any file and must drop to
/// another user to see a permission error).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}
