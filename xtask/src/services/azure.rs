//! Azure Blob Storage: Azurite (npm) on a loopback port, with a container
//! created through the Azure SDK for Python (moto's virtualenv has it).

use std::process::{Command, Stdio};
use std::time::Duration;

use super::{Service, ServiceKind, free_port, services_dir, wait_port};
use crate::{Result, tools};

/// Azurite's well-known development account and key.
const ACCOUNT: &str = "devstoreaccount1";
const KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
pub(crate) const CONTAINER: &str = "velo-test";

pub(super) fn start() -> Result<Service> {
    let azurite = tools::azurite_blob()?;
    let port = free_port()?;
    let dir = services_dir().join(format!("azurite-{port}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let log = std::fs::File::create(dir.join("azurite.log")).map_err(|e| e.to_string())?;
    let child = super::detached(&azurite)
        .args([
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            &port.to_string(),
            "--location",
        ])
        .arg(&dir)
        .args(["--disableTelemetry", "--skipApiVersionCheck", "--silent"])
        .stdout(Stdio::from(log.try_clone().map_err(|e| e.to_string())?))
        .stderr(Stdio::from(log))
        .spawn()
        .map_err(|e| format!("{}: {e}", azurite.display()))?;
    if let Err(e) = wait_port(port, Duration::from_secs(30)) {
        super::terminate(child.id());
        return Err(format!("{e}; see {}/azurite.log", dir.display()));
    }
    let endpoint = format!("http://127.0.0.1:{port}/{ACCOUNT}");
    if let Err(e) = create_container(&endpoint) {
        super::terminate(child.id());
        return Err(e);
    }
    Ok(Service {
        kind: ServiceKind::Azure,
        env: vec![
            ("VELO_TEST_AZURE_ENDPOINT".into(), endpoint),
            ("VELO_TEST_AZURE_ACCOUNT".into(), ACCOUNT.into()),
            ("VELO_TEST_AZURE_KEY".into(), KEY.into()),
            ("VELO_TEST_AZURE_CONTAINER".into(), CONTAINER.into()),
        ],
        pids: vec![child.id()],
        ports: vec![port],
        data_dir: Some(dir),
        pg_bin: None,
    })
}

/// Creates the test container through the Azure SDK for Python.
pub(super) fn create_container(endpoint: &str) -> Result<()> {
    let python = tools::moto_server()?.with_file_name("python3");
    let connection = format!(
        "DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};BlobEndpoint={endpoint};"
    );
    let out = Command::new(&python)
        .args([
            "-c",
            "import sys\nfrom azure.storage.blob import BlobServiceClient\n\
             BlobServiceClient.from_connection_string(sys.argv[1]).create_container(sys.argv[2])",
            &connection,
            CONTAINER,
        ])
        .output()
        .map_err(|e| format!("{}: {e}", python.display()))?;
    if !out.status.success() {
        return Err(format!(
            "creating the Azurite container failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}
