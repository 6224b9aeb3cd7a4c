//! ClickHouse from Debian's packages (`clickhouse-server`), as the
//! `clickhouse` user with a private config on loopback ports.

use std::process::{Command, Stdio};
use std::time::Duration;

use super::{Service, ServiceKind, free_port, services_dir, wait_port};
use crate::Result;

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn server_binary() -> Option<&'static str> {
    ["/usr/bin/clickhouse-server", "/usr/sbin/clickhouse-server"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
}

pub(super) fn start() -> Result<Service> {
    let server = match server_binary() {
        Some(s) => s,
        None if is_root() => {
            eprintln!("xtask: installing ClickHouse with apt-get");
            let ok = Command::new("apt-get")
                .args([
                    "install",
                    "-y",
                    "-q",
                    "clickhouse-server",
                    "clickhouse-client",
                ])
                .status()
                .is_ok_and(|s| s.success());
            server_binary()
                .filter(|_| ok)
                .ok_or("clickhouse-server is missing and apt-get could not install it")?
        }
        None => {
            return Err(
                "clickhouse-server is missing: install `clickhouse-server clickhouse-client` (or run as root so that xtask can)"
                    .into(),
            );
        }
    };
    let http = free_port()?;
    let tcp = free_port()?;
    let dir = services_dir().join(format!("clickhouse-{http}"));
    let _ = std::fs::remove_dir_all(&dir);
    for sub in ["data", "tmp", "user_files", "log"] {
        std::fs::create_dir_all(dir.join(sub)).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let d = dir.display();
    let config = format!(
        "<yandex>\n  <logger><level>warning</level><log>{d}/log/server.log</log><errorlog>{d}/log/error.log</errorlog></logger>\n  \
         <http_port>{http}</http_port>\n  <tcp_port>{tcp}</tcp_port>\n  <listen_host>127.0.0.1</listen_host>\n  \
         <path>{d}/data/</path>\n  <tmp_path>{d}/tmp/</tmp_path>\n  <user_files_path>{d}/user_files/</user_files_path>\n  \
         <users_config>{d}/users.xml</users_config>\n  <default_profile>default</default_profile>\n  \
         <default_database>default</default_database>\n  <timezone>UTC</timezone>\n  \
         <mark_cache_size>268435456</mark_cache_size>\n  <max_concurrent_queries>100</max_concurrent_queries>\n</yandex>\n"
    );
    let users = "<yandex>\n  <profiles><default></default></profiles>\n  <users><default><password></password>\
                 <networks><ip>127.0.0.1</ip><ip>::1</ip></networks><profile>default</profile><quota>default</quota>\
                 </default></users>\n  <quotas><default></default></quotas>\n</yandex>\n";
    std::fs::write(dir.join("config.xml"), config).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("users.xml"), users).map_err(|e| e.to_string())?;
    let mut cmd = super::detached(server);
    if is_root() {
        use std::os::unix::process::CommandExt;
        let ok = Command::new("chown")
            .args(["-R", "clickhouse:clickhouse"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Err(format!(
                "cannot hand {} to the clickhouse user",
                dir.display()
            ));
        }
        let mut p = dir.parent();
        while let Some(parent) = p {
            let _ = Command::new("chmod").arg("o+x").arg(parent).status();
            p = parent.parent();
        }
        let id = |flag: &str| -> Result<u32> {
            let out = Command::new("id")
                .args([flag, "clickhouse"])
                .output()
                .map_err(|e| e.to_string())?;
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .map_err(|_| "there is no clickhouse user (install clickhouse-server)".to_string())
        };
        cmd.uid(id("-u")?).gid(id("-g")?);
    }
    let out =
        std::fs::File::create(dir.join("log").join("stdout.log")).map_err(|e| e.to_string())?;
    let child = cmd
        .arg(format!(
            "--config-file={}",
            dir.join("config.xml").display()
        ))
        .current_dir(&dir)
        .stdout(Stdio::from(out.try_clone().map_err(|e| e.to_string())?))
        .stderr(Stdio::from(out))
        .spawn()
        .map_err(|e| format!("{server}: {e}"))?;
    if let Err(e) = wait_port(http, Duration::from_secs(30)) {
        super::terminate(child.id());
        return Err(format!("{e}; see {}/log", dir.display()));
    }
    Ok(Service {
        kind: ServiceKind::ClickHouse,
        env: vec![
            (
                "VELO_TEST_CLICKHOUSE_URL".into(),
                format!("http://127.0.0.1:{http}"),
            ),
            ("VELO_TEST_CLICKHOUSE_TCP_PORT".into(), tcp.to_string()),
            // For the test that stops and starts the server mid-run.
            (
                "VELO_TEST_CLICKHOUSE_CONFIG".into(),
                dir.join("config.xml").display().to_string(),
            ),
            ("VELO_TEST_CLICKHOUSE_PID".into(), child.id().to_string()),
        ],
        pids: vec![child.id()],
        ports: vec![http, tcp],
        data_dir: Some(dir),
        pg_bin: None,
    })
}

/// Stops the server, including one a test restarted with the same config.
pub(super) fn stop(s: &Service) {
    for pid in &s.pids {
        super::terminate(*pid);
    }
    if let Some(dir) = &s.data_dir {
        let _ = Command::new("pkill")
            .args(["-TERM", "-f"])
            .arg(format!("config-file={}", dir.join("config.xml").display()))
            .status();
    }
}
