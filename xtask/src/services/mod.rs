//! The test services: PostgreSQL, a Kafka-protocol broker, an S3 server, Azure
//! Blob Storage (Azurite) and ClickHouse,
//! as local processes on loopback ports or as Docker containers.

mod azure;
mod clickhouse;
mod docker;
mod kafka;
mod postgres;
mod s3;

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::{Result, project_root};

/// How the services run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Mode {
    /// Local processes.
    Native,
    /// Containers from docker-compose.yml.
    Docker,
}

impl Mode {
    /// Docker when an engine answers, local processes otherwise.
    pub(crate) fn detect() -> Mode {
        let engine = Command::new("docker")
            .args(["info", "--format", "{{.ServerVersion}}"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if engine { Mode::Docker } else { Mode::Native }
    }
}

/// A service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum ServiceKind {
    Kafka,
    Postgres,
    S3,
    Azure,
    ClickHouse,
}

impl ServiceKind {
    pub(crate) const ALL: [ServiceKind; 5] = [
        ServiceKind::Kafka,
        ServiceKind::Postgres,
        ServiceKind::S3,
        ServiceKind::Azure,
        ServiceKind::ClickHouse,
    ];
}

/// One running service: how to reach it and how to stop it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Service {
    pub(crate) kind: ServiceKind,
    /// Environment variables for the tests.
    pub(crate) env: Vec<(String, String)>,
    /// Processes to stop (native).
    pub(crate) pids: Vec<u32>,
    /// Ports that must be free after stopping.
    pub(crate) ports: Vec<u16>,
    /// A data directory (or log file) to remove after stopping.
    pub(crate) data_dir: Option<PathBuf>,
    /// PostgreSQL's bin directory, for `pg_ctl stop`.
    pub(crate) pg_bin: Option<PathBuf>,
}

/// The running services.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Running {
    pub(crate) mode: Mode,
    pub(crate) services: Vec<Service>,
}

impl Running {
    pub(crate) fn env(&self) -> Vec<(String, String)> {
        self.services.iter().flat_map(|s| s.env.clone()).collect()
    }

    /// `export` lines for a shell.
    pub(crate) fn exports(&self) -> String {
        self.env()
            .iter()
            .map(|(k, v)| format!("export {k}='{v}'\n"))
            .collect()
    }

    /// Stops every service; returns what is still alive afterwards.
    pub(crate) fn stop(self) -> Vec<String> {
        if self.mode == Mode::Docker {
            return docker::down();
        }
        let mut left = Vec::new();
        for s in &self.services {
            match s.kind {
                ServiceKind::Postgres => postgres::stop(s),
                ServiceKind::ClickHouse => clickhouse::stop(s),
                _ => {
                    for pid in &s.pids {
                        terminate(*pid);
                    }
                }
            }
        }
        for s in &self.services {
            for pid in &s.pids {
                if !wait_gone(*pid, Duration::from_secs(10)) {
                    left.push(format!("{:?} process {pid}", s.kind));
                }
            }
            for port in &s.ports {
                // A multi-threaded process's leader can look exited while its
                // other threads still hold sockets: give the port time to close.
                if !wait_port_closed(*port, Duration::from_secs(5)) {
                    left.push(format!("{:?} port {port} still answers", s.kind));
                }
            }
            if let Some(path) = &s.data_dir {
                let _ = if path.is_dir() {
                    std::fs::remove_dir_all(path)
                } else {
                    std::fs::remove_file(path)
                };
            }
        }
        let _ = std::fs::remove_file(state_file());
        left
    }
}

/// Starts `kinds`.
pub(crate) fn up(mode: Mode, kinds: &[ServiceKind]) -> Result<Running> {
    if let Some(stale) = load_saved()? {
        eprintln!("xtask: stopping services left from an earlier run");
        let left = stale.stop();
        if !left.is_empty() {
            return Err(format!(
                "services of an earlier run are still alive: {}",
                left.join("; ")
            ));
        }
    }
    if mode == Mode::Docker {
        return docker::up(kinds);
    }
    let mut running = Running {
        mode,
        services: Vec::new(),
    };
    for kind in kinds {
        let started = Instant::now();
        let service = match kind {
            ServiceKind::Postgres => postgres::start(),
            ServiceKind::Kafka => kafka::start(),
            ServiceKind::S3 => s3::start(),
            ServiceKind::Azure => azure::start(),
            ServiceKind::ClickHouse => clickhouse::start(),
        };
        match service {
            Ok(s) => {
                eprintln!(
                    "xtask: {kind:?} ready in {:.1}s",
                    started.elapsed().as_secs_f64()
                );
                running.services.push(s);
                // Saved as soon as each is up, so `services down` can clean up after a crash.
                save(&running)?;
            }
            Err(e) => {
                let _ = running.stop();
                return Err(format!("{kind:?}: {e}"));
            }
        }
    }
    Ok(running)
}

fn state_file() -> PathBuf {
    services_dir().join("state.json")
}

/// Where services keep their data: under `target/`.
pub(crate) fn services_dir() -> PathBuf {
    project_root().join("target").join("velo-services")
}

pub(crate) fn save(running: &Running) -> Result<()> {
    std::fs::create_dir_all(services_dir())
        .map_err(|e| format!("{}: {e}", services_dir().display()))?;
    let body = serde_json::to_vec_pretty(running).map_err(|e| e.to_string())?;
    std::fs::write(state_file(), body).map_err(|e| format!("{}: {e}", state_file().display()))
}

pub(crate) fn load_saved() -> Result<Option<Running>> {
    match std::fs::read(state_file()) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| format!("{}: {e}", state_file().display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", state_file().display())),
    }
}

pub(crate) fn down_saved() -> Result<()> {
    match load_saved()? {
        None => {
            eprintln!("no services are running");
            Ok(())
        }
        Some(r) => {
            let left = r.stop();
            if left.is_empty() {
                eprintln!("services stopped; no process or port left behind");
                Ok(())
            } else {
                Err(format!("left behind: {}", left.join("; ")))
            }
        }
    }
}

pub(crate) fn status() -> Result<()> {
    match load_saved()? {
        None => eprintln!("no services are running"),
        Some(r) => {
            for s in &r.services {
                let alive = s.pids.iter().all(|p| alive(*p));
                let env: Vec<String> = s.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
                println!(
                    "{:?} ({:?}): {} {}",
                    s.kind,
                    r.mode,
                    if alive { "running" } else { "NOT running" },
                    env.join(" ")
                );
            }
        }
    }
    Ok(())
}

/// A free loopback port.
pub(crate) fn free_port() -> Result<u16> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// Waits until something accepts connections on `port`.
pub(crate) fn wait_port(port: u16, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
            .is_ok()
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!(
        "nothing answered on 127.0.0.1:{port} within {timeout:?}"
    ))
}

/// Waits until nothing accepts connections on `port`; false if something still does.
fn wait_port_closed(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
            .is_err()
        {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) fn alive(pid: u32) -> bool {
    // A zombie still answers kill -0; /proc says whether it has exited.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

pub(crate) fn terminate(pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}

fn wait_gone(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if !alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status();
    std::thread::sleep(Duration::from_millis(200));
    !alive(pid)
}

/// A command whose child runs in its own process group, so the terminal's
/// Ctrl-C reaches xtask and not the service, which xtask then stops itself.
pub(crate) fn detached(program: impl AsRef<std::ffi::OsStr>) -> Command {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(program);
    cmd.process_group(0).stdin(std::process::Stdio::null());
    cmd
}
