//! The Kafka-protocol broker: librdkafka's mock cluster in its own process
//! (`tools/kafka-mock`), built once and reused from `target/`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{Service, ServiceKind, wait_port};
use crate::{Result, project_root};

pub(super) fn start() -> Result<Service> {
    let root = project_root();
    let status = Command::new(env!("CARGO"))
        .current_dir(&root)
        .args(["build", "--quiet", "-p", "velo-kafka-mock"])
        .status()
        .map_err(|e| format!("cannot build the mock broker: {e}"))?;
    if !status.success() {
        return Err(
            "building tools/kafka-mock failed (it needs gcc, g++, make, perl and zlib)".into(),
        );
    }
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), Into::into);
    let bin = target.join("debug").join("velo-kafka-mock");
    let mut child = super::detached(&bin)
        .args(["--brokers", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    let stdout = child
        .stdout
        .take()
        .ok_or("no stdout from the mock broker")?;
    let mut lines = BufReader::new(stdout);
    let mut read = |prefix: &str| -> Result<String> {
        let mut line = String::new();
        lines.read_line(&mut line).map_err(|e| e.to_string())?;
        line.trim()
            .strip_prefix(prefix)
            .map(str::to_owned)
            .ok_or_else(|| {
                format!(
                    "the mock broker said `{}` instead of `{prefix}...`",
                    line.trim()
                )
            })
    };
    let (bootstrap, control) = match (read("bootstrap="), read("control=")) {
        (Ok(b), Ok(c)) => (b, c),
        (Err(e), _) | (_, Err(e)) => {
            super::terminate(child.id());
            return Err(e);
        }
    };
    let mut ports: Vec<u16> = bootstrap
        .split(',')
        .filter_map(|b| b.rsplit(':').next()?.parse().ok())
        .collect();
    ports.extend(
        control
            .rsplit(':')
            .next()
            .and_then(|p| p.parse::<u16>().ok()),
    );
    for p in &ports {
        wait_port(*p, Duration::from_secs(10))?;
    }
    Ok(Service {
        kind: ServiceKind::Kafka,
        env: vec![
            ("VELO_TEST_KAFKA_BROKERS".into(), bootstrap),
            ("VELO_TEST_KAFKA_CONTROL".into(), control),
            ("VELO_TEST_KAFKA_KIND".into(), "mock".into()),
        ],
        pids: vec![child.id()],
        ports,
        data_dir: None,
        pg_bin: None,
    })
}
