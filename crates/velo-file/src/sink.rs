//! The file sink: output becomes visible only when a part is finished.
//!
//! Records go to a hidden in-progress file next to the target. `commit`
//! fsyncs it and records its committed length in a small state file (written
//! atomically); a part is renamed into place when it rolls (by size, records
//! or time) and on `close`. After a crash the in-progress file is cut back to
//! its committed length and writing continues, so a committed record is never
//! lost and an uncommitted one never appears. Compressed output is written as
//! one gzip member or zstd frame per flush, so every committed length is a
//! valid end of stream.
//!
//! `append=true` (set by runners for a resumed pipeline) continues the
//! existing output; `append=false` (a fresh run) discards an interrupted
//! part; unset, an interrupted part is recovered and finished output replaced.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use velo_datasource_core::format::compression::Compression;
use velo_datasource_core::format::{self, Encoder};
use velo_datasource_core::{
    DataSink, DataWriter, Error, FileFormat, Result, SinkConfig, SinkMetadata, SinkMetrics,
    StreamRecord, async_trait,
};

use crate::options::FileSinkOptions;

/// The sink's memory of its output, in `.{name}.velo-sink.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SinkState {
    /// Sequence number of the next part (rolling output).
    next_seq: u64,
    /// The part being written, if any.
    part: Option<PartState>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct PartState {
    final_path: PathBuf,
    committed_len: u64,
    committed_records: u64,
}

struct Part {
    final_path: PathBuf,
    tmp_path: PathBuf,
    file: File,
    len: u64,
    records: u64,
    committed_len: u64,
    committed_records: u64,
    started: Instant,
}

/// Writes records to files.
#[derive(Debug, Default)]
pub struct FileSink {
    opts: Option<Arc<FileSinkOptions>>,
}

impl FileSink {
    /// An uninitialized sink.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl DataSink for FileSink {
    async fn initialize(&mut self, config: SinkConfig) -> Result<()> {
        let opts = FileSinkOptions::from_config(&config)?;
        if let Some(dir) = opts.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        if opts.path.is_dir() {
            return Err(Error::invalid_value(
                "path",
                opts.path.display().to_string(),
                "is a directory: name the output file",
            ));
        }
        self.opts = Some(Arc::new(opts));
        Ok(())
    }

    async fn create_writer(&self) -> Result<Box<dyn velo_datasource_core::DataWriter>> {
        let opts = self
            .opts
            .clone()
            .ok_or_else(|| Error::State("file sink used before initialize".into()))?;
        let writer = tokio::task::spawn_blocking(move || FileWriter::open(opts))
            .await
            .map_err(|e| Error::State(format!("file sink task failed: {e}")))??;
        Ok(Box::new(writer))
    }

    fn supports_transactions(&self) -> bool {
        true
    }

    fn metadata(&self) -> SinkMetadata {
        SinkMetadata {
            sink_type: "file".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            supports_transactions: true,
            supports_upsert: false,
            supports_schema_evolution: false,
            capabilities: [
                "csv",
                "jsonl",
                "json_array",
                "rolling",
                "gzip",
                "zstd",
                "atomic_rename",
                "rollback",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

/// Writes one output (a file, or its rolling parts).
pub struct FileWriter {
    opts: Arc<FileSinkOptions>,
    encoder: Box<dyn Encoder>,
    pending: Vec<u8>,
    part: Option<Part>,
    state: SinkState,
    state_path: PathBuf,
    metrics: SinkMetrics,
}

impl std::fmt::Debug for FileWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileWriter")
            .field("path", &self.opts.path)
            .finish()
    }
}

fn hidden_sibling(path: &Path, suffix: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{suffix}"))
}

fn sync_dir(path: &Path) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

impl FileWriter {
    fn open(opts: Arc<FileSinkOptions>) -> Result<Self> {
        let encoder = format::encoder(&opts.format)?;
        let state_path = hidden_sibling(&opts.path, "velo-sink.json");
        let state: SinkState = match std::fs::read(&state_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::Checkpoint {
                path: state_path.clone(),
                message: format!("is corrupt ({e}); move it away to write the output afresh"),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => SinkState {
                next_seq: next_free_seq(&opts),
                part: None,
            },
            Err(e) => return Err(Error::io(&state_path, e)),
        };
        let mut writer = FileWriter {
            opts,
            encoder,
            pending: Vec::new(),
            part: None,
            state,
            state_path,
            metrics: SinkMetrics::new("file"),
        };
        writer.recover()?;
        Ok(writer)
    }

    /// Picks up an interrupted part, or an earlier run's output (see `append`).
    fn recover(&mut self) -> Result<()> {
        if self.opts.append == Some(false) {
            if let Some(ps) = self.state.part.take() {
                let tmp = hidden_sibling(&ps.final_path, "inprogress");
                if tmp.exists() {
                    tracing::info!(part = %tmp.display(), "discarding an interrupted output part: this run starts afresh");
                    std::fs::remove_file(&tmp).map_err(|e| Error::io(&tmp, e))?;
                }
            }
            return Ok(());
        }
        if let Some(ps) = self.state.part.clone() {
            let tmp = hidden_sibling(&ps.final_path, "inprogress");
            if tmp.exists() {
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&tmp)
                    .map_err(|e| Error::io(&tmp, e))?;
                file.set_len(ps.committed_len)
                    .map_err(|e| Error::io(&tmp, e))?;
                tracing::info!(part = %tmp.display(), committed = ps.committed_len, "continuing an interrupted output part");
                self.adopt(
                    ps.final_path,
                    tmp,
                    file,
                    ps.committed_len,
                    ps.committed_records,
                )?;
                return Ok(());
            }
            self.state.part = None;
        }
        let target = &self.opts.path;
        if !self.opts.rolls() && target.exists() && self.opts.append == Some(true) {
            let tmp = hidden_sibling(target, "inprogress");
            std::fs::rename(target, &tmp).map_err(|e| Error::io(target, e))?;
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&tmp)
                .map_err(|e| Error::io(&tmp, e))?;
            let mut len = file.metadata().map_err(|e| Error::io(&tmp, e))?.len();
            if self.opts.format.format == FileFormat::JsonArray
                && self.opts.compression == Compression::None
            {
                len = strip_array_close(&mut file, len).map_err(|e| Error::io(&tmp, e))?;
            }
            tracing::info!(output = %target.display(), "continuing the output of an earlier run");
            let records = u64::from(len > 0);
            self.adopt(target.clone(), tmp, file, len, records)?;
        }
        Ok(())
    }

    fn adopt(
        &mut self,
        final_path: PathBuf,
        tmp_path: PathBuf,
        mut file: File,
        len: u64,
        records: u64,
    ) -> Result<()> {
        file.seek(SeekFrom::Start(len))
            .map_err(|e| Error::io(&tmp_path, e))?;
        self.encoder.continue_after(records);
        self.part = Some(Part {
            final_path,
            tmp_path,
            file,
            len,
            records,
            committed_len: len,
            committed_records: records,
            started: Instant::now(),
        });
        self.save_state()
    }

    fn part_path(&self, seq: u64) -> PathBuf {
        if !self.opts.rolls() {
            return self.opts.path.clone();
        }
        let p = &self.opts.path;
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (stem, ext) = match name.find('.') {
            Some(i) => (&name[..i], &name[i..]),
            None => (name.as_str(), ""),
        };
        p.with_file_name(format!("{stem}-{seq:05}{ext}"))
    }

    fn start_part(&mut self, schema: &velo_datasource_core::Schema) -> Result<()> {
        let final_path = self.part_path(self.state.next_seq);
        let tmp_path = hidden_sibling(&final_path, "inprogress");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp_path)
            .map_err(|e| Error::io(&tmp_path, e))?;
        self.encoder = format::encoder(&self.opts.format)?;
        self.encoder.begin(schema, &mut self.pending)?;
        self.part = Some(Part {
            final_path,
            tmp_path,
            file,
            len: 0,
            records: 0,
            committed_len: 0,
            committed_records: 0,
            started: Instant::now(),
        });
        Ok(())
    }

    /// Writes pending bytes to the part (one compressed member per call).
    fn flush_pending(&mut self) -> Result<()> {
        let Some(part) = &mut self.part else {
            return Ok(());
        };
        if self.pending.is_empty() {
            return Ok(());
        }
        // The pending buffer is kept (cleared) for the next batch: given
        // away, it grew again from nothing each time, by doubling copies.
        let compressed;
        let bytes: &[u8] = if self.opts.compression == Compression::None {
            &self.pending
        } else {
            let mut w = self
                .opts
                .compression
                .writer(Vec::with_capacity(self.pending.len() / 4))?;
            w.write_all(&self.pending)
                .map_err(|e| Error::io(&part.tmp_path, e))?;
            compressed = w.finish().map_err(|e| Error::io(&part.tmp_path, e))?;
            &compressed
        };
        part.file
            .write_all(bytes)
            .map_err(|e| Error::io(&part.tmp_path, e))?;
        part.len += bytes.len() as u64;
        self.metrics
            .record_write(0, bytes.len() as u64, std::time::Duration::ZERO);
        self.pending.clear();
        Ok(())
    }

    fn save_state(&mut self) -> Result<()> {
        self.state.part = self.part.as_ref().map(|p| PartState {
            final_path: p.final_path.clone(),
            committed_len: p.committed_len,
            committed_records: p.committed_records,
        });
        let tmp = hidden_sibling(&self.state_path, "tmp");
        let body = serde_json::to_vec(&self.state).map_err(|e| Error::io(&tmp, e.into()))?;
        let mut f = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        f.write_all(&body)
            .and_then(|()| f.sync_all())
            .map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, &self.state_path).map_err(|e| Error::io(&self.state_path, e))?;
        sync_dir(&self.state_path)
    }

    fn commit_blocking(&mut self) -> Result<()> {
        self.flush_pending()?;
        let Some(part) = &mut self.part else {
            return Ok(());
        };
        part.file
            .sync_data()
            .map_err(|e| Error::io(&part.tmp_path, e))?;
        part.committed_len = part.len;
        part.committed_records = part.records;
        let roll = self.opts.roll_on_commit
            || self.opts.roll_size.is_some_and(|s| part.len >= s)
            || self.opts.roll_records.is_some_and(|r| part.records >= r)
            || self
                .opts
                .roll_interval
                .is_some_and(|d| part.started.elapsed() >= d);
        if roll && part.records > 0 {
            self.finish_part()
        } else {
            self.save_state()
        }
    }

    /// Ends the part and renames it into place.
    fn finish_part(&mut self) -> Result<()> {
        self.encoder.finish(&mut self.pending)?;
        self.flush_pending()?;
        let Some(part) = self.part.take() else {
            return Ok(());
        };
        part.file
            .sync_all()
            .map_err(|e| Error::io(&part.tmp_path, e))?;
        drop(part.file);
        std::fs::rename(&part.tmp_path, &part.final_path)
            .map_err(|e| Error::io(&part.final_path, e))?;
        sync_dir(&part.final_path)?;
        tracing::debug!(file = %part.final_path.display(), records = part.records, "output file finished");
        if self.opts.rolls() {
            self.state.next_seq += 1;
        }
        self.save_state()
    }

    fn rollback_blocking(&mut self) -> Result<()> {
        self.pending.clear();
        if let Some(part) = &mut self.part {
            part.file
                .set_len(part.committed_len)
                .map_err(|e| Error::io(&part.tmp_path, e))?;
            part.file
                .seek(SeekFrom::Start(part.committed_len))
                .map_err(|e| Error::io(&part.tmp_path, e))?;
            part.len = part.committed_len;
            part.records = part.committed_records;
            self.encoder.continue_after(part.committed_records);
        }
        Ok(())
    }

    fn close_blocking(&mut self) -> Result<()> {
        self.commit_blocking()?;
        match &self.part {
            // Keep an earlier file rather than replacing it with an empty one.
            Some(p) if p.records == 0 && p.final_path.exists() => {
                let p = self.part.take().expect("checked above");
                std::fs::remove_file(&p.tmp_path).map_err(|e| Error::io(&p.tmp_path, e))?;
                self.save_state()
            }
            Some(_) => self.finish_part(),
            None => Ok(()),
        }
    }
}

/// Cuts a finished JSON array's closing `]` so that records can be appended.
fn strip_array_close(file: &mut File, len: u64) -> std::io::Result<u64> {
    let tail = len.min(64);
    file.seek(SeekFrom::Start(len - tail))?;
    let mut buf = vec![0; tail as usize];
    file.read_exact(&mut buf)?;
    match buf.iter().rposition(|b| *b == b']') {
        Some(i) => {
            let mut cut = len - tail + i as u64;
            // Also drop the line break before `]`.
            while cut > 0
                && buf
                    .get((cut - (len - tail)).wrapping_sub(1) as usize)
                    .is_some_and(|b| *b == b'\n')
            {
                cut -= 1;
            }
            file.set_len(cut)?;
            Ok(cut)
        }
        None => Ok(len),
    }
}

/// The first part number after the parts already in the target's directory.
fn next_free_seq(opts: &FileSinkOptions) -> u64 {
    if !opts.rolls() {
        return 0;
    }
    let p = &opts.path;
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name.split('.').next().unwrap_or_default().to_owned();
    let dir = p
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    let rest = n.strip_prefix(&stem)?.strip_prefix('-')?;
                    rest.get(..5)?.parse::<u64>().ok()
                })
                .max()
                .map_or(0, |m| m + 1)
        })
        .unwrap_or(0)
}

macro_rules! blocking {
    ($self:ident, $body:expr) => {{
        let mut this = std::mem::replace($self, FileWriter::placeholder(&$self.opts));
        let (this, result) = tokio::task::spawn_blocking(move || {
            let r = $body(&mut this);
            (this, r)
        })
        .await
        .map_err(|e| Error::State(format!("file sink task failed: {e}")))?;
        *$self = this;
        result
    }};
}

impl FileWriter {
    /// A stand-in while the real writer is on a blocking thread.
    fn placeholder(opts: &Arc<FileSinkOptions>) -> Self {
        FileWriter {
            opts: opts.clone(),
            encoder: Box::new(format::json::JsonEncoder::lines()),
            pending: Vec::new(),
            part: None,
            state: SinkState::default(),
            state_path: PathBuf::new(),
            metrics: SinkMetrics::new("file"),
        }
    }
}

#[async_trait]
impl DataWriter for FileWriter {
    async fn write_batch(&mut self, records: &[StreamRecord]) -> Result<()> {
        let Some(first) = records.first() else {
            return Ok(());
        };
        let started = Instant::now();
        if self.part.is_none() {
            let schema = first.schema().clone();
            blocking!(self, |w: &mut FileWriter| w.start_part(&schema))?;
        }
        // Encoding is CPU work on memory; only opening and flushing touch the disk.
        for r in records {
            self.encoder.encode(r, &mut self.pending)?;
        }
        if let Some(p) = &mut self.part {
            p.records += records.len() as u64;
        }
        if self.pending.len() >= 1 << 20 {
            blocking!(self, |w: &mut FileWriter| w.flush_pending())?;
        }
        self.metrics
            .record_write(records.len(), 0, started.elapsed());
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        blocking!(self, |w: &mut FileWriter| w.flush_pending())
    }

    async fn commit(&mut self) -> Result<()> {
        let started = Instant::now();
        blocking!(self, |w: &mut FileWriter| w.commit_blocking())?;
        self.metrics.record_commit(started.elapsed());
        Ok(())
    }

    async fn rollback(&mut self) -> Result<()> {
        blocking!(self, |w: &mut FileWriter| w.rollback_blocking())
    }

    async fn close(&mut self) -> Result<()> {
        blocking!(self, |w: &mut FileWriter| w.close_blocking())
    }
}
