//! The sink: records encoded by core's `format` codecs into multipart
//! uploads that roll by size, count or time and complete only in
//! `commit()`, so readers never see a partial object and `rollback()`
//! leaves none behind.
//!
//! Names are `<prefix>/<file_prefix>-<sequence>.<ext>[.gz|.zst]`, the
//! sequence continuing after the highest one already there: deterministic,
//! never overwriting a committed object. A commit that fails leaves no
//! partial object (an upload is visible only once completed); the batch the
//! runner then writes again gets new names, so across a crash between
//! completion and checkpoint delivery is at-least-once.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{ObjectStoreExt, WriteMultipart};
use velo_datasource_core::format::{self, Encoder};
use velo_datasource_core::{
    DataSink, DataWriter, Error, Result, SinkConfig, SinkMetadata, SinkMetrics, StreamRecord,
};

use crate::options::{S3Options, store_error};

/// Smallest part S3 accepts (except the last).
const PART_SIZE: usize = 5 << 20;

/// An object-store sink (`s3://`, `gs://`, `az://`).
#[derive(Debug, Default)]
pub struct S3Sink {
    opts: Option<Arc<S3Options>>,
}

impl S3Sink {
    /// A sink to be initialized with a config.
    pub fn new() -> Self {
        Self::default()
    }

    /// A sink over a store built by the caller.
    pub fn with_options(options: S3Options) -> Self {
        S3Sink {
            opts: Some(Arc::new(options)),
        }
    }
}

#[async_trait]
impl DataSink for S3Sink {
    async fn initialize(&mut self, config: SinkConfig) -> Result<()> {
        self.opts = Some(Arc::new(S3Options::from_config(&config)?));
        Ok(())
    }

    async fn create_writer(&self) -> Result<Box<dyn DataWriter>> {
        let opts = self
            .opts
            .clone()
            .ok_or_else(|| Error::State("object-store sink used before initialize".into()))?;
        // Continue after the highest sequence number of this writer's names.
        let stem = format!("{}-", opts.file_prefix);
        let mut listing = opts.store.list(Some(&opts.prefix));
        let mut next = 0u64;
        while let Some(meta) = listing.next().await {
            let meta =
                meta.map_err(|e| store_error(&opts, &format!("listing {}", opts.prefix), e))?;
            if let Some(seq) = meta
                .location
                .filename()
                .and_then(|n| n.strip_prefix(&stem))
                .and_then(|n| n.split('.').next())
                .and_then(|n| n.parse::<u64>().ok())
            {
                next = next.max(seq + 1);
            }
        }
        Ok(Box::new(S3Writer {
            metrics: SinkMetrics::new(&format!("{}/{}", opts.bucket, opts.prefix)),
            encoder: format::encoder(&opts.format)?,
            opts,
            next,
            current: None,
            pending: Vec::new(),
            completed: Vec::new(),
        }))
    }

    fn supports_transactions(&self) -> bool {
        true
    }

    fn metadata(&self) -> SinkMetadata {
        SinkMetadata {
            sink_type: "s3".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            supports_transactions: true,
            supports_upsert: false,
            supports_schema_evolution: false,
            capabilities: vec![
                "multipart".into(),
                "rolling".into(),
                "visible_on_commit".into(),
            ],
        }
    }
}

/// The object being written.
struct Part {
    path: Path,
    upload: WriteMultipart,
    encoded: Vec<u8>,
    compress: Option<velo_datasource_core::format::compression::CompressWriter<Vec<u8>>>,
    bytes: u64,
    records: u64,
    opened: Instant,
}

/// Writes rolling objects.
pub struct S3Writer {
    opts: Arc<S3Options>,
    encoder: Box<dyn Encoder>,
    next: u64,
    current: Option<Part>,
    /// Rolled, waiting for `commit()` to complete them.
    pending: Vec<(Path, WriteMultipart)>,
    /// Completed by the last commit (for tests and logs).
    completed: Vec<Path>,
    metrics: SinkMetrics,
}

impl std::fmt::Debug for S3Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Writer")
            .field("prefix", &self.opts.prefix)
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl S3Writer {
    async fn open_part(&mut self, schema: &velo_datasource_core::Schema) -> Result<()> {
        let mut name = format!(
            "{}-{:08}.{}",
            self.opts.file_prefix,
            self.next,
            self.opts.format.format.extension()
        );
        if let Some(ext) = self.opts.compression.extension() {
            name.push('.');
            name.push_str(ext);
        }
        let path = self.opts.prefix.clone().join(name);
        self.next += 1;
        let upload = self
            .opts
            .store
            .put_multipart(&path)
            .await
            .map_err(|e| store_error(&self.opts, &format!("starting {path}"), e))?;
        let mut encoded = Vec::new();
        self.encoder.begin(schema, &mut encoded)?;
        let compress = match self.opts.compression {
            velo_datasource_core::format::compression::Compression::None => None,
            c => Some(c.writer(Vec::new())?),
        };
        self.current = Some(Part {
            path,
            upload: WriteMultipart::new_with_chunk_size(upload, PART_SIZE),
            encoded,
            compress,
            bytes: 0,
            records: 0,
            opened: Instant::now(),
        });
        Ok(())
    }

    /// Moves encoded bytes into the upload (through the compressor).
    fn push_bytes(part: &mut Part) -> Result<()> {
        if part.encoded.is_empty() {
            return Ok(());
        }
        part.bytes += part.encoded.len() as u64;
        match part.compress.as_mut() {
            None => part.upload.write(&part.encoded),
            Some(c) => {
                std::io::Write::write_all(c, &part.encoded).map_err(|e| Error::Encode {
                    target: part.path.to_string(),
                    message: format!("compressing: {e}"),
                })?;
                let out = std::mem::take(c.get_mut());
                part.upload.write(&out);
            }
        }
        part.encoded.clear();
        Ok(())
    }

    /// Ends the current object's content; it completes at the next commit.
    fn roll(&mut self) -> Result<()> {
        let Some(mut part) = self.current.take() else {
            return Ok(());
        };
        self.encoder.finish(&mut part.encoded)?;
        Self::push_bytes(&mut part)?;
        if let Some(c) = part.compress.take() {
            let tail = c.finish().map_err(|e| Error::Encode {
                target: part.path.to_string(),
                message: format!("compressing: {e}"),
            })?;
            part.upload.write(&tail);
        }
        self.pending.push((part.path, part.upload));
        Ok(())
    }

    fn due(opts: &S3Options, part: &Part) -> bool {
        part.bytes >= opts.roll_size
            || opts.roll_records.is_some_and(|n| part.records >= n)
            || opts
                .roll_interval
                .is_some_and(|t| part.opened.elapsed() >= t)
    }

    /// The objects the last `commit()` made visible.
    pub fn committed_objects(&self) -> &[Path] {
        &self.completed
    }
}

#[async_trait]
impl DataWriter for S3Writer {
    async fn write_batch(&mut self, records: &[StreamRecord]) -> Result<()> {
        let started = Instant::now();
        for record in records {
            if self.current.is_none() {
                self.open_part(record.schema()).await?;
            }
            let Some(part) = self.current.as_mut() else {
                continue;
            };
            self.encoder.encode(record, &mut part.encoded)?;
            part.records += 1;
            if part.encoded.len() >= 1 << 20 {
                Self::push_bytes(part)?;
            }
            if Self::due(&self.opts, part) {
                Self::push_bytes(part)?;
                self.roll()?;
            }
        }
        if let Some(part) = self.current.as_mut() {
            Self::push_bytes(part)?;
        }
        self.metrics
            .record_write(records.len(), 0, started.elapsed());
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        Ok(())
    }

    async fn commit(&mut self) -> Result<()> {
        let started = Instant::now();
        self.roll()?;
        self.completed.clear();
        while !self.pending.is_empty() {
            let (path, upload) = self.pending.remove(0);
            match upload.finish().await {
                Ok(_) => self.completed.push(path),
                Err(e) => return Err(store_error(&self.opts, &format!("completing {path}"), e)),
            }
        }
        if !self.completed.is_empty() {
            tracing::debug!(objects = self.completed.len(), "objects committed");
        }
        self.metrics.record_commit(started.elapsed());
        Ok(())
    }

    async fn rollback(&mut self) -> Result<()> {
        if let Some(part) = self.current.take() {
            self.pending.push((part.path, part.upload));
        }
        for (path, upload) in std::mem::take(&mut self.pending) {
            if let Err(e) = upload.abort().await {
                tracing::warn!(%path, error = %e, "aborting an upload failed; the bucket's lifecycle rules must clean it");
            }
        }
        Ok(())
    }

    async fn close(&mut self) -> Result<()> {
        // Anything not committed is not kept.
        self.rollback().await
    }
}
