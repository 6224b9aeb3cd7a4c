//! PostgreSQL from the system's binaries, in a temporary data directory,
//! with logical replication enabled.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::{Service, ServiceKind, free_port, services_dir, wait_port};
use crate::Result;

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// The newest `/usr/lib/postgresql/*/bin`, or `pg_config --bindir`.
fn bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v: u32 = e.file_name().to_string_lossy().parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    dirs.sort();
    dirs.pop().map(|(_, b)| b).or_else(|| {
        let out = Command::new("pg_config").arg("--bindir").output().ok()?;
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        dir.join("initdb").exists().then_some(dir)
    })
}

/// Runs `program` as the `postgres` user when we are root (PostgreSQL refuses to run as root).
fn as_pg_user(bin: &Path, program: &str) -> Command {
    if is_root() {
        let mut c = super::detached("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(program));
        c
    } else {
        super::detached(bin.join(program))
    }
}

pub(super) fn start() -> Result<Service> {
    let bin = match bin_dir() {
        Some(b) => b,
        None if is_root() => {
            eprintln!("xtask: installing PostgreSQL with apt-get");
            let ok = Command::new("apt-get").args(["install", "-y", "-q", "postgresql"]).status().is_ok_and(|s| s.success());
            bin_dir().filter(|_| ok).ok_or("PostgreSQL server binaries are missing and apt-get could not install them")?
        }
        None => return Err("PostgreSQL server binaries are missing: install the `postgresql` package (or run as root so that xtask can)".into()),
    };
    let dir = services_dir().join(format!("postgres-{}", std::process::id()));
    let data = dir.join("data");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if is_root() {
        let ok = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Err(format!(
                "cannot hand {} to the postgres user",
                dir.display()
            ));
        }
        // The postgres user must be able to reach the directory.
        let mut p = dir.parent();
        while let Some(d) = p {
            let _ = Command::new("chmod").arg("o+x").arg(d).status();
            p = d.parent();
        }
    }
    let out = as_pg_user(&bin, "initdb")
        .args(["-D"])
        .arg(&data)
        .args(["-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"])
        .output()
        .map_err(|e| format!("initdb: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let port = free_port()?;
    let conf = format!(
        "\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\nwal_level = logical\nmax_replication_slots = 32\nmax_wal_senders = 32\nfsync = off\nfull_page_writes = off\nmax_connections = 200\n",
        dir.display()
    );
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(data.join("postgresql.conf"))
        .and_then(|mut f| f.write_all(conf.as_bytes()))
        .map_err(|e| format!("postgresql.conf: {e}"))?;
    let out = as_pg_user(&bin, "pg_ctl")
        .arg("-D")
        .arg(&data)
        .arg("-l")
        .arg(dir.join("postgres.log"))
        .args(["-w", "-t", "30", "start"])
        .output()
        .map_err(|e| format!("pg_ctl: {e}"))?;
    if !out.status.success() {
        let log = std::fs::read_to_string(dir.join("postgres.log")).unwrap_or_default();
        return Err(format!(
            "pg_ctl start failed: {}{log}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    wait_port(port, Duration::from_secs(20))?;
    let pid = std::fs::read_to_string(data.join("postmaster.pid"))
        .ok()
        .and_then(|s| s.lines().next().and_then(|l| l.trim().parse().ok()))
        .ok_or("postmaster.pid is missing after start")?;
    Ok(Service {
        kind: ServiceKind::Postgres,
        env: vec![
            (
                "VELO_TEST_PG_URL".into(),
                format!("postgresql://postgres@127.0.0.1:{port}/postgres"),
            ),
            // For tests that restart the server (pg_ctl -D DATA restart).
            ("VELO_TEST_PG_DATA".into(), data.display().to_string()),
            ("VELO_TEST_PG_BIN".into(), bin.display().to_string()),
        ],
        pids: vec![pid],
        ports: vec![port],
        data_dir: Some(dir),
        pg_bin: Some(bin),
    })
}

pub(super) fn stop(s: &Service) {
    if let (Some(bin), Some(dir)) = (&s.pg_bin, &s.data_dir) {
        let _ = as_pg_user(bin, "pg_ctl")
            .arg("-D")
            .arg(dir.join("data"))
            .args(["-m", "fast", "-w", "stop"])
            .output();
    }
}
