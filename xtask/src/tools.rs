//! Tools installed on first use into a per-user cache that outlives a clone:
//! `$VELO_TOOLS_DIR`, or `~/.cache/velo-tools`.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use crate::Result;

/// moto's version, pinned so that every machine runs the same server; the
/// Azure SDK creates Azurite's containers (object_store cannot).
const MOTO: &str = "moto[server]==5.2.5";
const AZURE_BLOB: &str = "azure-storage-blob==12.31.1";
/// Azurite, the Azure Storage emulator, from npm.
const AZURITE: &str = "azurite@3.37.0";

pub(crate) fn tools_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("VELO_TOOLS_DIR") {
        return dir.into();
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
    home.join(".cache").join("velo-tools")
}

/// `moto_server` from a virtualenv in the tools cache, installed if missing.
pub(crate) fn moto_server() -> Result<PathBuf> {
    let venv = tools_dir().join("moto-venv");
    let bin = venv.join("bin").join("moto_server");
    let stamp = venv.join(".velo-installed");
    let wanted = format!("{MOTO} {AZURE_BLOB}");
    if bin.exists() && std::fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == wanted) {
        return Ok(bin);
    }
    let started = Instant::now();
    eprintln!(
        "xtask: installing {MOTO} into {} (once per machine)",
        venv.display()
    );
    let python = ["python3", "python"]
        .into_iter()
        .find(|p| {
            Command::new(p)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .ok_or("python3 is needed for the S3 test server (moto)")?;
    let _ = std::fs::remove_dir_all(&venv);
    std::fs::create_dir_all(tools_dir()).map_err(|e| e.to_string())?;
    run(Command::new(python).args(["-m", "venv"]).arg(&venv))?;
    run(Command::new(venv.join("bin").join("pip")).args([
        "install",
        "--quiet",
        "--disable-pip-version-check",
        MOTO,
        AZURE_BLOB,
    ]))?;
    std::fs::write(&stamp, &wanted).map_err(|e| e.to_string())?;
    eprintln!(
        "xtask: installed moto in {:.0}s",
        started.elapsed().as_secs_f64()
    );
    Ok(bin)
}

/// `azurite-blob` from npm in the tools cache, installed if missing.
pub(crate) fn azurite_blob() -> Result<PathBuf> {
    let dir = tools_dir().join("azurite");
    let bin = dir.join("node_modules").join(".bin").join("azurite-blob");
    let stamp = dir.join(".velo-installed");
    if bin.exists() && std::fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == AZURITE) {
        return Ok(bin);
    }
    let started = Instant::now();
    eprintln!(
        "xtask: installing {AZURITE} into {} (once per machine)",
        dir.display()
    );
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    run(Command::new("npm")
        .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
        .arg(&dir)
        .arg(AZURITE))
    .map_err(|e| format!("{e} (Azurite needs Node.js and npm: apt-get install nodejs npm)"))?;
    std::fs::write(&stamp, AZURITE).map_err(|e| e.to_string())?;
    eprintln!(
        "xtask: installed Azurite in {:.0}s",
        started.elapsed().as_secs_f64()
    );
    Ok(bin)
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
