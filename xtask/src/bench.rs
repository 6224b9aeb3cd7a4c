//! `cargo xtask bench`: every workload next to its baseline, in one run.
//!
//! The measurements are made by the `velo-bench` harness (built in release),
//! with the Kafka-protocol broker, PostgreSQL, the S3 server and ClickHouse started as for `itest`;
//! this module runs it, keeps its JSON, and renders the Markdown table to
//! stdout and `target/bench/report.md`.

use std::process::{Command, ExitCode};

use crate::{Result, project_root};

pub(crate) fn run(quick: bool, only: Option<&str>) -> Result<ExitCode> {
    let root = project_root();
    let out_dir = root.join("target").join("bench");
    std::fs::create_dir_all(&out_dir).map_err(|e| e.to_string())?;
    let build = Command::new(env!("CARGO"))
        .current_dir(&root)
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "velo-bench",
            "-p",
            "velo-cli",
        ])
        .status()
        .map_err(|e| format!("cargo build: {e}"))?;
    if !build.success() {
        return Err("building the benchmark harness failed".into());
    }
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), Into::into);
    let release = target.join("release");
    let json_path = out_dir.join("report.json");
    let mut cmd = Command::new(release.join("velo-bench"));
    cmd.arg("--json")
        .arg(&json_path)
        .arg("--markdown")
        .arg(out_dir.join("report.md"))
        .arg("--velo")
        .arg(release.join("velo"));
    if quick {
        cmd.arg("--quick");
    }
    if let Some(group) = only {
        cmd.args(["--only", group]);
    }
    // The Kafka and PostgreSQL workloads need their services, started like `itest` starts them.
    let running = crate::services::up(
        crate::services::Mode::Native,
        &[
            crate::services::ServiceKind::Kafka,
            crate::services::ServiceKind::Postgres,
            crate::services::ServiceKind::S3,
            crate::services::ServiceKind::ClickHouse,
        ],
    )?;
    for (k, v) in running.env() {
        cmd.env(k, v);
    }
    let status = cmd.status().map_err(|e| format!("velo-bench: {e}"));
    let left = running.stop();
    if !left.is_empty() {
        return Err(format!(
            "left behind after the benchmark: {}",
            left.join("; ")
        ));
    }
    if !status?.success() {
        return Err("the benchmark run failed".into());
    }
    let md = std::fs::read_to_string(out_dir.join("report.md")).map_err(|e| e.to_string())?;
    print!("{md}");
    eprintln!(
        "wrote {} and {}",
        out_dir.join("report.md").display(),
        json_path.display()
    );
    Ok(ExitCode::SUCCESS)
}
