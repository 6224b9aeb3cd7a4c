#![doc = include_str!("../README.md")]

mod dead_letter;
pub mod fingerprint;
mod options;
mod output;
mod position;
mod read_ahead;
mod reader;
mod sink;
mod tracked;
mod watch;

use std::sync::Arc;

use velo_datasource_core::format::compression::Compression;
use velo_datasource_core::{
    DataReader, DataSource, Error, Result, Schema, SinkPlugin, SourceConfig, SourceMetadata,
    SourcePlugin, async_trait, inventory,
};

pub use options::{FileSinkOptions, FileSourceOptions, Mode};
pub use reader::FileReader;
pub use sink::{FileSink, FileWriter};

/// Reads records from local files. Registered for `file://`.
#[derive(Debug, Default)]
pub struct FileDataSource {
    opts: Option<Arc<FileSourceOptions>>,
}

impl FileDataSource {
    /// An uninitialized source.
    pub fn new() -> Self {
        Self::default()
    }

    fn opts(&self) -> Result<&Arc<FileSourceOptions>> {
        self.opts
            .as_ref()
            .ok_or_else(|| Error::State("file source used before initialize".into()))
    }
}

#[async_trait]
impl DataSource for FileDataSource {
    async fn initialize(&mut self, config: SourceConfig) -> Result<()> {
        let opts = FileSourceOptions::from_config(&config)?;
        // A single named file must exist and be readable now, not at the first read.
        let single =
            !opts.path.contains(['*', '?', '[']) && !std::path::Path::new(&opts.path).is_dir();
        if single {
            let path = std::path::PathBuf::from(&opts.path);
            tokio::task::spawn_blocking(move || tracked::open_file(&path).map(drop))
                .await
                .map_err(|e| Error::State(format!("file check failed: {e}")))??;
        }
        self.opts = Some(Arc::new(opts));
        Ok(())
    }

    async fn fetch_schema(&self) -> Result<Schema> {
        let opts = self.opts()?.clone();
        tokio::task::spawn_blocking(move || {
            let first = reader::first_file(&opts)?;
            Ok(first.schema().as_ref().clone())
        })
        .await
        .map_err(|e| Error::State(format!("schema task failed: {e}")))?
    }

    async fn create_reader(&self) -> Result<Box<dyn DataReader>> {
        let mut reader = FileReader::new(self.opts()?.clone())?;
        reader.load_checkpoint().await?;
        Ok(Box::new(reader))
    }

    fn supports_streaming(&self) -> bool {
        true
    }

    fn supports_batch(&self) -> bool {
        true
    }

    fn metadata(&self) -> SourceMetadata {
        let mut capabilities: Vec<String> = [
            "csv",
            "jsonl",
            "json_array",
            "schema_inference",
            "tail",
            "directory_watch",
            "periodic_scan",
            "rotation",
            "seek",
            "checkpoint",
            "dead_letter",
        ]
        .map(String::from)
        .to_vec();
        for c in [Compression::Gzip, Compression::Zstd] {
            if c.is_compiled() {
                capabilities.push(c.to_string());
            }
        }
        SourceMetadata {
            source_type: "file".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            supports_streaming: true,
            supports_batch: true,
            supports_schema_evolution: true,
            capabilities,
        }
    }
}

inventory::submit! {
    SourcePlugin {
        name: "file",
        description: "Local files: CSV, JSON Lines, JSON arrays; tail, directory watch, rotation",
        schemes: &["file"],
        create: || Box::new(FileDataSource::new()),
    }
}

inventory::submit! {
    SinkPlugin {
        name: "file",
        description: "Local files: CSV, JSON Lines, JSON arrays; rolling, gzip/zstd, atomic rename",
        schemes: &["file"],
        create: || Box::new(FileSink::new()),
    }
}
