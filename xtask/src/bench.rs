//! `cargo xtask bench`: every workload next to its baseline, in one run.
//!
//! The measurements are made by the `velo-bench` harness (built in release),
//! with the Kafka-protocol broker, PostgreSQL, the S3 server and ClickHouse started as for `itest`;
//! this module runs it, keeps its JSON, and renders the Markdown table to
//! stdout and `target/bench/report.md`.

use std::process::{Command, ExitCode};
use std::sync::atomic::Ordering;

use crate::services::ServiceKind;
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
    // The services the chosen workloads need, started like `itest` starts them.
    let interrupted = crate::on_interrupt()?;
    let running = crate::services::up(crate::services::Mode::Native, services_for(only)?)?;
    for (k, v) in running.env() {
        cmd.env(k, v);
    }
    let status = if interrupted.load(Ordering::SeqCst) {
        Ok(None)
    } else {
        crate::run_until_interrupted(&mut cmd, &interrupted).map_err(|e| format!("velo-bench: {e}"))
    };
    let left = running.stop();
    if !left.is_empty() {
        return Err(format!(
            "left behind after the benchmark: {}",
            left.join("; ")
        ));
    }
    match status? {
        None => return Ok(ExitCode::from(130)),
        Some(status) if !status.success() => return Err("the benchmark run failed".into()),
        Some(_) => {}
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

/// The services the workloads of `only` (all of them when `None`) need.
fn services_for(only: Option<&str>) -> Result<&'static [ServiceKind]> {
    Ok(match only {
        None => &[
            ServiceKind::Kafka,
            ServiceKind::Postgres,
            ServiceKind::S3,
            ServiceKind::ClickHouse,
        ],
        Some("file") => &[],
        Some("kafka") => &[ServiceKind::Kafka],
        Some("postgres") => &[ServiceKind::Postgres],
        Some("s3") => &[ServiceKind::S3],
        Some("clickhouse") => &[ServiceKind::ClickHouse],
        Some(other) => {
            return Err(format!(
                "--only {other}: the groups are file, kafka, postgres, s3 and clickhouse"
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_starts_only_its_service() {
        assert!(services_for(Some("file")).unwrap().is_empty());
        assert_eq!(services_for(Some("s3")).unwrap(), &[ServiceKind::S3]);
        assert_eq!(services_for(None).unwrap().len(), 4);
        assert!(
            services_for(Some("files"))
                .unwrap_err()
                .contains("file, kafka")
        );
    }
}
