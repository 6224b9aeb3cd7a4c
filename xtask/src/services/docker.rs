//! The same services from docker-compose.yml, for machines with a Docker engine.

use std::process::Command;

use super::{Mode, Running, Service, ServiceKind};
use crate::{Result, project_root};

fn compose() -> Command {
    let mut c = Command::new("docker");
    c.current_dir(project_root())
        .args(["compose", "-f", "docker-compose.yml", "-p", "velo-test"]);
    c
}

pub(super) fn up(kinds: &[ServiceKind]) -> Result<Running> {
    let names: Vec<&str> = kinds
        .iter()
        .map(|k| match k {
            ServiceKind::Kafka => "kafka",
            ServiceKind::Postgres => "postgres",
            ServiceKind::S3 => "s3",
            ServiceKind::Azure => "azurite",
            ServiceKind::ClickHouse => "clickhouse",
        })
        .collect();
    let ok = compose()
        .args(["up", "-d", "--wait"])
        .args(&names)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        return Err("docker compose up failed".into());
    }
    if kinds.contains(&ServiceKind::S3) {
        super::s3::create_bucket(19000, super::s3::BUCKET)?;
    }
    if kinds.contains(&ServiceKind::Azure) {
        super::azure::create_container("http://127.0.0.1:10000/devstoreaccount1")?;
    }
    let services = kinds
        .iter()
        .map(|k| {
            let env: Vec<(&str, &str)> = match k {
                ServiceKind::Kafka => vec![
                    ("VELO_TEST_KAFKA_BROKERS", "127.0.0.1:19092"),
                    ("VELO_TEST_KAFKA_KIND", "apache"),
                ],
                ServiceKind::Postgres => vec![(
                    "VELO_TEST_PG_URL",
                    "postgresql://postgres:postgres@127.0.0.1:15432/postgres",
                )],
                ServiceKind::S3 => vec![
                    ("VELO_TEST_S3_ENDPOINT", "http://127.0.0.1:19000"),
                    ("VELO_TEST_S3_BUCKET", super::s3::BUCKET),
                    ("VELO_TEST_S3_REGION", "us-east-1"),
                    ("VELO_TEST_S3_ACCESS_KEY_ID", "velo-test-key"),
                    ("VELO_TEST_S3_SECRET_ACCESS_KEY", "velo-test-secret"),
                ],
                ServiceKind::Azure => vec![
                    ("VELO_TEST_AZURE_ENDPOINT", "http://127.0.0.1:10000/devstoreaccount1"),
                    ("VELO_TEST_AZURE_ACCOUNT", "devstoreaccount1"),
                    (
                        "VELO_TEST_AZURE_KEY",
                        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==",
                    ),
                    ("VELO_TEST_AZURE_CONTAINER", super::azure::CONTAINER),
                ],
                ServiceKind::ClickHouse => vec![
                    ("VELO_TEST_CLICKHOUSE_URL", "http://127.0.0.1:18123"),
                    ("VELO_TEST_CLICKHOUSE_TCP_PORT", "19001"),
                ],
            };
            Service {
                kind: *k,
                env: env
                    .into_iter()
                    .map(|(a, b)| (a.to_owned(), b.to_owned()))
                    .collect(),
                pids: Vec::new(),
                ports: Vec::new(),
                data_dir: None,
                pg_bin: None,
            }
        })
        .collect();
    let running = Running {
        mode: Mode::Docker,
        services,
    };
    super::save(&running)?;
    Ok(running)
}

pub(super) fn down() -> Vec<String> {
    let ok = compose()
        .args(["down", "-v", "--remove-orphans"])
        .status()
        .is_ok_and(|s| s.success());
    let _ = std::fs::remove_file(super::services_dir().join("state.json"));
    if ok {
        Vec::new()
    } else {
        vec!["docker compose down failed".into()]
    }
}
