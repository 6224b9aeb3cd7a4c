//! Dead letters: bad records kept with their raw bytes, error and position.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use velo_datasource_core::{Error, Result};

/// One dead letter, as a JSON line.
#[derive(Debug, Serialize)]
pub(crate) struct DeadLetter<'a> {
    /// The file the record came from.
    pub(crate) source: &'a str,
    /// Byte offset of the record's start.
    pub(crate) byte_offset: u64,
    /// Line number of the record's start (1-based).
    pub(crate) line: u64,
    /// Why it was rejected.
    pub(crate) error: &'a str,
    /// The record as text (invalid UTF-8 replaced).
    pub(crate) raw: String,
}

/// Appends dead letters to a JSON Lines file; durable after [`sync`](Self::sync).
#[derive(Debug)]
pub(crate) struct DeadLetterFile {
    path: PathBuf,
    out: BufWriter<File>,
}

impl DeadLetterFile {
    pub(crate) fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        Ok(DeadLetterFile {
            path: path.to_owned(),
            out: BufWriter::new(file),
        })
    }

    pub(crate) fn write(&mut self, letter: &DeadLetter<'_>) -> Result<()> {
        serde_json::to_writer(&mut self.out, letter)
            .map_err(|e| Error::io(&self.path, e.into()))?;
        self.out
            .write_all(b"\n")
            .map_err(|e| Error::io(&self.path, e))?;
        Ok(())
    }

    /// Flushes and fsyncs, so that a committed position never skips a letter not on disk.
    pub(crate) fn sync(&mut self) -> Result<()> {
        self.out.flush().map_err(|e| Error::io(&self.path, e))?;
        self.out
            .get_ref()
            .sync_data()
            .map_err(|e| Error::io(&self.path, e))
    }
}
