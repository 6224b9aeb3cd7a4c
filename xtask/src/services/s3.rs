//! An S3-compatible server: moto, from PyPI, in a virtualenv in the tools cache.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::Duration;

use super::{Service, ServiceKind, free_port, services_dir, wait_port};
use crate::{Result, tools};

pub(crate) const BUCKET: &str = "velo-test";

pub(super) fn start() -> Result<Service> {
    let moto = tools::moto_server()?;
    let port = free_port()?;
    let log_path = services_dir().join(format!("moto-{port}.log"));
    std::fs::create_dir_all(services_dir()).map_err(|e| e.to_string())?;
    let log =
        std::fs::File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
    let child = super::detached(&moto)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::from(log.try_clone().map_err(|e| e.to_string())?))
        .stderr(Stdio::from(log))
        .spawn()
        .map_err(|e| format!("{}: {e}", moto.display()))?;
    if let Err(e) = wait_port(port, Duration::from_secs(30)) {
        super::terminate(child.id());
        return Err(format!("{e}; see {}", log_path.display()));
    }
    create_bucket(port, BUCKET)?;
    let endpoint = format!("http://127.0.0.1:{port}");
    Ok(Service {
        kind: ServiceKind::S3,
        env: vec![
            ("VELO_TEST_S3_ENDPOINT".into(), endpoint),
            ("VELO_TEST_S3_BUCKET".into(), BUCKET.into()),
            ("VELO_TEST_S3_REGION".into(), "us-east-1".into()),
            ("VELO_TEST_S3_ACCESS_KEY_ID".into(), "velo-test-key".into()),
            (
                "VELO_TEST_S3_SECRET_ACCESS_KEY".into(),
                "velo-test-secret".into(),
            ),
            // moto's virtualenv has boto3: an independent S3 client for tests and benchmarks.
            (
                "VELO_TEST_S3_PYTHON".into(),
                moto.with_file_name("python3").display().to_string(),
            ),
        ],
        pids: vec![child.id()],
        ports: vec![port],
        data_dir: Some(log_path),
        pg_bin: None,
    })
}

/// `PUT /bucket` (moto does not check signatures).
pub(super) fn create_bucket(port: u16, bucket: &str) -> Result<()> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(s, "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").map_err(|e| e.to_string())?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).map_err(|e| e.to_string())?;
    if resp.starts_with("HTTP/1.1 200") || resp.starts_with("HTTP/1.0 200") {
        Ok(())
    } else {
        Err(format!(
            "creating bucket {bucket}: {}",
            resp.lines().next().unwrap_or_default()
        ))
    }
}
