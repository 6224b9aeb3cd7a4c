//! The source: list, download (a few objects ahead), decode with core's
//! `format` codecs, and keep a compact cursor.
//!
//! Objects are read one after another in key order; records of one object
//! come in file order. The position is the object in progress (key, ETag,
//! byte offset of the next record) plus the listing state: in incremental
//! mode the last key done and the ETags of the last `boundary_keys` keys
//! (constant size however many objects the prefix holds); in full mode the
//! ETag of every key done.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::Utc;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectMeta, ObjectStore, ObjectStoreExt};
use serde::{Deserialize, Serialize};
use velo_datasource_core::format::compression::Compression;
use velo_datasource_core::format::{self, Decoder, Frame};
use velo_datasource_core::{
    BadRecordPolicy, Checkpoint, CheckpointStore, DataReader, DataSource, Error,
    EventTimeExtractor, FileCheckpointStore, Lag, Result, Schema, SourceConfig, SourceMetadata,
    SourceMetrics, SourceOffset, SourcePosition, StreamRecord,
};

use crate::options::{OnRewrite, S3Options, ScanMode, store_error};

/// Bytes read from the start of an object to learn its schema (and header).
const SAMPLE: usize = 64 << 10;
/// Objects up to this size are downloaded ahead whole.
const PREFETCH_MAX: u64 = 16 << 20;
/// The `Generic` offset that carries the listing state.
const LISTING: &str = "s3_listing";

/// The listing cursor and the object in progress.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ListingState {
    /// Incremental mode: every key up to this one is done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// Key → ETag of keys done: the last `boundary_keys` (incremental) or all (full).
    #[serde(default)]
    pub done: BTreeMap<String, String>,
    /// The object being read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<InProgress>,
}

/// How far into an object the reader is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InProgress {
    /// Key.
    pub key: String,
    /// ETag when reading started (a different one means the object was rewritten).
    pub etag: String,
    /// Offset of the next record in the (decompressed) object.
    pub byte_offset: u64,
    /// Records before it.
    pub records: u64,
}

/// An object-store source (`s3://`, `gs://`, `az://`).
#[derive(Debug, Default)]
pub struct S3Source {
    opts: Option<Arc<S3Options>>,
    policy: BadRecordPolicy,
}

impl S3Source {
    /// A source to be initialized with a config.
    pub fn new() -> Self {
        Self::default()
    }

    /// A source over a store built by the caller (for `object_store`'s local
    /// and in-memory stores, and for embedding).
    pub fn with_options(options: S3Options) -> Self {
        S3Source {
            opts: Some(Arc::new(options)),
            policy: BadRecordPolicy::Fail,
        }
    }

    fn opts(&self) -> Result<&Arc<S3Options>> {
        self.opts
            .as_ref()
            .ok_or_else(|| Error::State("object-store source used before initialize".into()))
    }
}

#[async_trait]
impl DataSource for S3Source {
    async fn initialize(&mut self, config: SourceConfig) -> Result<()> {
        self.policy = config.bad_record_policy()?;
        if self.policy == BadRecordPolicy::DeadLetter {
            return Err(Error::invalid_value(
                "errors",
                "dead_letter",
                "object-store sources take fail or skip (dead letters are written by file sources)",
            ));
        }
        self.opts = Some(Arc::new(S3Options::from_config(&config)?));
        Ok(())
    }

    async fn fetch_schema(&self) -> Result<Schema> {
        let opts = self.opts()?;
        if let Some(schema) = &opts.format.schema {
            return Ok((**schema).clone());
        }
        let mut listing = opts.store.list(Some(&opts.prefix));
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(|e| store_error(opts, "listing", e))?;
            if !opts.wanted(meta.location.as_ref(), meta.last_modified) || meta.size == 0 {
                continue;
            }
            let sample = sample_of(opts, &meta).await?;
            return Ok(
                (*format::infer(&opts.format, &sample, sample.len() as u64 >= meta.size)?.schema)
                    .clone(),
            );
        }
        Err(Error::Schema(format!(
            "no object under {}/{} to infer a schema from",
            opts.bucket, opts.prefix
        )))
    }

    async fn create_reader(&self) -> Result<Box<dyn DataReader>> {
        let opts = self.opts()?.clone();
        let mut reader = S3Reader::new(opts, self.policy);
        reader.load_state_file().await?;
        Ok(Box::new(reader))
    }

    fn supports_streaming(&self) -> bool {
        true
    }

    fn supports_batch(&self) -> bool {
        true
    }

    fn metadata(&self) -> SourceMetadata {
        SourceMetadata {
            source_type: "s3".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            supports_streaming: true,
            supports_batch: true,
            supports_schema_evolution: false,
            capabilities: vec![
                "incremental_listing".into(),
                "byte_offset_resume".into(),
                "parallel_downloads".into(),
                "bounded".into(),
            ],
        }
    }
}

/// The first bytes of an object (decompressed), for inference.
/// A download started ahead of time (see `start_prefetch`).
type Prefetch = tokio::task::JoinHandle<object_store::Result<Bytes>>;

/// The whole object: from its download ahead when one was started, else
/// fetched now.
async fn whole_object(
    opts: &S3Options,
    meta: &ObjectMeta,
    prefetched: Option<Prefetch>,
    what: &str,
) -> Result<Bytes> {
    let get_err = |e: object_store::Error| store_error(opts, &format!("reading {what}"), e);
    match prefetched {
        Some(h) => h
            .await
            .map_err(|e| Error::State(e.to_string()))?
            .map_err(get_err),
        None => opts
            .store
            .get(&meta.location)
            .await
            .map_err(get_err)?
            .bytes()
            .await
            .map_err(get_err),
    }
}

async fn sample_of(opts: &S3Options, meta: &ObjectMeta) -> Result<Vec<u8>> {
    let compression = Compression::from_path(meta.location.as_ref());
    if compression == Compression::None {
        let end = meta.size.min(SAMPLE as u64);
        let bytes = opts
            .store
            .get_range(&meta.location, 0..end)
            .await
            .map_err(|e| store_error(opts, &format!("reading {}", meta.location), e))?;
        return Ok(bytes.to_vec());
    }
    let body = opts
        .store
        .get(&meta.location)
        .await
        .map_err(|e| store_error(opts, &format!("reading {}", meta.location), e))?
        .bytes()
        .await
        .map_err(|e| store_error(opts, &format!("reading {}", meta.location), e))?;
    let mut out = Vec::new();
    compression
        .reader(std::io::Cursor::new(body))?
        .take(SAMPLE as u64)
        .read_to_end(&mut out)
        .map_err(|e| Error::decode(meta.location.to_string(), format!("decompressing: {e}")))?;
    Ok(out)
}

/// Where an open object's bytes come from.
enum Body {
    /// Downloaded whole.
    Whole(Option<Bytes>),
    /// A ranged or full GET, streamed.
    Stream(BoxStream<'static, object_store::Result<Bytes>>),
    /// A compressed object, decompressed as it is read.
    Decompress(Box<dyn Read + Send>),
}

impl Body {
    async fn next(&mut self, what: &str) -> Result<Option<Bytes>> {
        match self {
            Body::Whole(b) => Ok(b.take()),
            Body::Stream(s) => match s.next().await {
                None => Ok(None),
                Some(Ok(b)) => Ok(Some(b)),
                Some(Err(e)) => Err(Error::Connection {
                    endpoint: what.to_owned(),
                    message: format!("reading: {e}"),
                    retryable: true,
                    source: Some(Box::new(e)),
                }),
            },
            Body::Decompress(r) => {
                let mut buf = vec![0; 256 << 10];
                let n = r
                    .read(&mut buf)
                    .map_err(|e| Error::decode(what.to_owned(), format!("decompressing: {e}")))?;
                buf.truncate(n);
                Ok((n > 0).then(|| Bytes::from(buf)))
            }
        }
    }
}

/// An object being decoded.
struct Open {
    meta: ObjectMeta,
    etag: String,
    kind: OpenKind,
    records: u64,
}

enum OpenKind {
    Bytes {
        decoder: Box<dyn Decoder>,
        body: Body,
        buf: Vec<u8>,
        /// Object offset of `buf[0]`.
        offset: u64,
        eof: bool,
    },
    Records {
        reader: Box<dyn format::records::RecordFileReader>,
        _file: tempfile::NamedTempFile,
        done: bool,
    },
}

/// Reads the objects under a prefix.
pub struct S3Reader {
    opts: Arc<S3Options>,
    policy: BadRecordPolicy,
    state: ListingState,
    queue: VecDeque<ObjectMeta>,
    prefetch: HashMap<Path, Prefetch>,
    /// In a mutex only to make the reader `Sync` (`has_more(&self)`); never contended.
    open: std::sync::Mutex<Option<Open>>,
    last_listing: Option<Instant>,
    listed_once: bool,
    ended: bool,
    skipped: u64,
    event_time: Option<EventTimeExtractor>,
    metrics: SourceMetrics,
}

impl std::fmt::Debug for S3Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Reader")
            .field("prefix", &self.opts.prefix)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl S3Reader {
    fn new(opts: Arc<S3Options>, policy: BadRecordPolicy) -> Self {
        S3Reader {
            event_time: opts
                .event_time
                .clone()
                .map(|c| EventTimeExtractor::new(c, 1000)),
            metrics: SourceMetrics::new(&format!("{}/{}", opts.bucket, opts.prefix)),
            opts,
            policy,
            state: ListingState::default(),
            queue: VecDeque::new(),
            prefetch: HashMap::new(),
            open: std::sync::Mutex::new(None),
            last_listing: None,
            listed_once: false,
            ended: false,
            skipped: 0,
        }
    }

    fn state_store(&self) -> Option<(FileCheckpointStore, String)> {
        let path = self.opts.state_file.as_ref()?;
        let dir = path
            .parent()
            .map_or_else(|| ".".into(), |d| d.to_path_buf());
        let key = path
            .file_name()
            .map(|n| {
                n.to_string_lossy()
                    .trim_end_matches(".checkpoint.json")
                    .to_owned()
            })
            .unwrap_or_else(|| "s3-source".into());
        Some((FileCheckpointStore::new(dir), key))
    }

    async fn load_state_file(&mut self) -> Result<()> {
        if let Some((store, key)) = self.state_store()
            && let Some(cp) = store.load(&key).await?
        {
            self.restore_position(&cp.position)?;
        }
        Ok(())
    }

    fn restore_position(&mut self, position: &SourcePosition) -> Result<()> {
        for offset in &position.offsets {
            if let SourceOffset::Generic { source_type, value } = offset
                && source_type == LISTING
            {
                self.state = serde_json::from_value(value.clone()).map_err(|e| {
                    Error::Offset(format!("unreadable object-store listing state: {e}"))
                })?;
            }
        }
        Ok(())
    }

    /// Lists the prefix from the cursor and queues what is new or rewritten.
    async fn list(&mut self) -> Result<()> {
        let opts = self.opts.clone();
        self.last_listing = Some(Instant::now());
        let from = match opts.scan_mode {
            ScanMode::Incremental => self
                .state
                .done
                .keys()
                .next()
                .cloned()
                .or_else(|| self.state.after.clone())
                .map(|k| {
                    // `list_with_offset` is exclusive: start just before the floor key.
                    Path::from(k)
                }),
            ScanMode::Full => None,
        };
        let stream = match &from {
            Some(offset) => opts.store.list_with_offset(Some(&opts.prefix), offset),
            None => opts.store.list(Some(&opts.prefix)),
        };
        let mut metas: Vec<ObjectMeta> = stream
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<object_store::Result<Vec<_>>>()
            .map_err(|e| store_error(&opts, &format!("listing {}", opts.prefix), e))?;
        // The floor key itself is excluded by the offset: check it directly.
        if let Some(floor) = &from
            && self.state.done.contains_key(floor.as_ref())
            && let Ok(meta) = opts.store.head(floor).await
        {
            metas.push(meta);
        }
        metas.sort_by(|a, b| a.location.cmp(&b.location));
        let mut taken = 0;
        for meta in metas {
            let key = meta.location.to_string();
            if meta.size == 0 || !opts.wanted(&key, meta.last_modified) {
                continue;
            }
            let etag = etag_of(&meta);
            match self.state.done.get(&key) {
                Some(seen) if *seen == etag => continue,
                Some(_) if opts.on_rewrite == OnRewrite::Skip => {
                    tracing::info!(%key, "object was rewritten; on_rewrite=skip leaves it");
                    self.state.done.insert(key, etag);
                    continue;
                }
                Some(_) => tracing::info!(%key, "object was rewritten: reading it again"),
                None if opts.scan_mode == ScanMode::Incremental
                    && self
                        .state
                        .after
                        .as_deref()
                        .is_some_and(|a| key.as_str() <= a)
                    && self.state.current.as_ref().is_none_or(|c| c.key != key) =>
                {
                    // Behind the cursor and not among the boundary keys: a late arrival.
                    tracing::info!(%key, "object arrived behind the cursor: reading it");
                }
                None => {}
            }
            self.queue.push_back(meta);
            taken += 1;
            if taken >= opts.max_keys_per_scan {
                break;
            }
        }
        self.listed_once = true;
        Ok(())
    }

    fn start_prefetch(&mut self) {
        let want = self.opts.parallel_downloads.saturating_sub(1);
        for meta in self.queue.iter().take(want) {
            let resuming = self
                .state
                .current
                .as_ref()
                .is_some_and(|c| c.key == meta.location.as_ref());
            if resuming || meta.size > PREFETCH_MAX || self.prefetch.contains_key(&meta.location) {
                continue;
            }
            let store = self.opts.store.clone();
            let location = meta.location.clone();
            self.prefetch.insert(
                meta.location.clone(),
                tokio::spawn(async move { store.get(&location).await?.bytes().await }),
            );
        }
    }

    async fn open_next(&mut self) -> Result<bool> {
        let Some(meta) = self.queue.pop_front() else {
            return Ok(false);
        };
        self.start_prefetch();
        let opts = self.opts.clone();
        let key = meta.location.to_string();
        let what = format!("{}/{key}", opts.bucket);
        let etag = etag_of(&meta);
        let (mut offset, mut records) = match &self.state.current {
            Some(c) if c.key == key && c.etag == etag => (c.byte_offset, c.records),
            Some(c) if c.key == key => {
                tracing::warn!(%key, "object changed since the saved position: reading it from the start");
                (0, 0)
            }
            _ => (0, 0),
        };
        if offset > 0 || records > 0 {
            tracing::info!(%key, byte_offset = offset, records, "resuming inside the object");
        }
        let get_err = |e: object_store::Error| store_error(&opts, &format!("reading {what}"), e);
        if format::is_record_file(opts.format.format) {
            let body =
                whole_object(&opts, &meta, self.prefetch.remove(&meta.location), &what).await?;
            let mut file =
                tempfile::NamedTempFile::new().map_err(|e| Error::io(std::env::temp_dir(), e))?;
            std::io::Write::write_all(&mut file, &body).map_err(|e| Error::io(file.path(), e))?;
            let handle = file.reopen().map_err(|e| Error::io(file.path(), e))?;
            let mut reader = format::open_records(opts.format.format, handle, &what)?;
            reader.skip(records)?;
            *self
                .open
                .get_mut()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Open {
                meta,
                etag,
                kind: OpenKind::Records {
                    reader,
                    _file: file,
                    done: false,
                },
                records,
            });
            return Ok(true);
        }
        let compression = Compression::from_path(&key);
        let prefetched = self.prefetch.remove(&meta.location);
        // The schema (and CSV header) come from the object's first bytes.
        let (sample, mut body) = if compression != Compression::None {
            let whole = whole_object(&opts, &meta, prefetched, &what).await?;
            let mut sample = Vec::new();
            compression
                .reader(std::io::Cursor::new(whole.clone()))?
                .take(SAMPLE as u64)
                .read_to_end(&mut sample)
                .map_err(|e| Error::decode(what.clone(), format!("decompressing: {e}")))?;
            // `Bytes` clones share the buffer: kept to start over if need be.
            let mut reader = compression.reader(std::io::Cursor::new(whole.clone()))?;
            // Compressed objects cannot be entered in the middle: decompress up to the offset.
            let skipped = std::io::copy(&mut (&mut reader).take(offset), &mut std::io::sink())
                .map_err(|e| Error::decode(what.clone(), format!("decompressing: {e}")))?;
            if skipped < offset {
                tracing::warn!(%key, "object is shorter than the saved offset: reading it from the start");
                offset = 0;
                records = 0;
                (
                    sample,
                    Body::Decompress(compression.reader(std::io::Cursor::new(whole))?),
                )
            } else {
                (sample, Body::Decompress(reader))
            }
        } else if let Some(handle) = prefetched {
            let whole = whole_object(&opts, &meta, Some(handle), &what).await?;
            let sample = whole[..whole.len().min(SAMPLE)].to_vec();
            (sample, Body::Whole(Some(whole.slice(offset as usize..))))
        } else {
            let sample = sample_of(&opts, &meta).await?;
            let range = GetOptions::new().with_range(Some(GetRange::Offset(offset)));
            let result = if offset >= meta.size {
                None
            } else {
                Some(
                    opts.store
                        .get_opts(&meta.location, range)
                        .await
                        .map_err(get_err)?,
                )
            };
            let body = match result {
                Some(r) => Body::Stream(r.into_stream()),
                None => Body::Whole(None),
            };
            (sample, body)
        };
        let eof = sample.len() < SAMPLE;
        let inferred = format::infer(&opts.format, &sample, eof)?;
        let decoder = format::decoder(&opts.format, &inferred, offset)?;
        let mut buf = Vec::new();
        if offset == 0 {
            // Skip the header: the first chunk starts with it.
            let mut skip = inferred.header_len;
            while skip > 0 {
                let Some(chunk) = body.next(&what).await? else {
                    break;
                };
                let n = skip.min(chunk.len());
                buf.extend_from_slice(&chunk[n..]);
                skip -= n;
            }
            offset = inferred.header_len as u64;
        }
        *self
            .open
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Open {
            meta,
            etag,
            kind: OpenKind::Bytes {
                decoder,
                body,
                buf,
                offset,
                eof: false,
            },
            records,
        });
        Ok(true)
    }

    /// Decodes up to `max` records of the open object; `Ok(true)` when it is finished.
    async fn decode_open(&mut self, max: usize, out: &mut Vec<StreamRecord>) -> Result<bool> {
        let slot = self
            .open
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(open) = slot.as_mut() else {
            return Ok(true);
        };
        let key = open.meta.location.to_string();
        let what = format!("{}/{key}", self.opts.bucket);
        let now = Utc::now();
        let mut rows = Vec::new();
        let mut frames: Vec<Frame> = Vec::new();
        match &mut open.kind {
            OpenKind::Records { reader, done, .. } => {
                reader.next_rows(max - out.len(), &mut rows)?;
                if rows.is_empty() {
                    *done = true;
                }
                let schema = reader.schema();
                for row in rows.drain(..) {
                    open.records += 1;
                    match row {
                        Ok(values) => {
                            let mut record =
                                StreamRecord::from_parts_at(schema.clone(), values, now);
                            record.offset = open.records as i64 - 1;
                            out.push(record);
                        }
                        Err(e) => bad(
                            self.policy,
                            &mut self.skipped,
                            &format!("{what}, record {}", open.records),
                            &e,
                        )?,
                    }
                }
                let finished = *done;
                self.position_current();
                return Ok(finished);
            }
            OpenKind::Bytes {
                decoder,
                body,
                buf,
                offset,
                eof,
            } => loop {
                let want = max - out.len();
                if want == 0 {
                    break;
                }
                frames.clear();
                let consumed = decoder.decode(buf, *eof, want, &mut frames);
                let mut at = *offset;
                for frame in frames.drain(..) {
                    at += frame.len as u64;
                    open.records += 1;
                    match frame.result {
                        Ok(values) => {
                            let mut record = StreamRecord::from_parts_at(frame.schema, values, now);
                            record.offset = open.records as i64 - 1;
                            out.push(record);
                        }
                        Err(e) => bad(
                            self.policy,
                            &mut self.skipped,
                            &format!(
                                "{what}, byte {}",
                                at - (frame.len - frame.skipped_bytes) as u64
                            ),
                            &e,
                        )?,
                    }
                }
                buf.drain(..consumed);
                *offset += consumed as u64;
                if consumed == 0 || buf.is_empty() {
                    if *eof {
                        if !buf.is_empty() {
                            return Err(Error::decode(
                                format!("{what}, byte {offset}"),
                                format!("{} bytes at the end are not a complete record", buf.len()),
                            ));
                        }
                        break;
                    }
                    match body.next(&what).await? {
                        Some(chunk) => buf.extend_from_slice(&chunk),
                        None => *eof = true,
                    }
                }
            },
        }
        let finished = match &open.kind {
            OpenKind::Bytes { buf, eof, .. } => *eof && buf.is_empty(),
            OpenKind::Records { done, .. } => *done,
        };
        self.position_current();
        Ok(finished)
    }

    fn position_current(&mut self) {
        let slot = self
            .open
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(open) = slot.as_ref() {
            let byte_offset = match &open.kind {
                OpenKind::Bytes { offset, .. } => *offset,
                OpenKind::Records { .. } => 0,
            };
            self.state.current = Some(InProgress {
                key: open.meta.location.to_string(),
                etag: open.etag.clone(),
                byte_offset,
                records: open.records,
            });
        }
    }

    fn finish_open(&mut self) {
        let slot = self
            .open
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(open) = slot.take() else { return };
        let key = open.meta.location.to_string();
        self.state.current = None;
        if self.opts.track_processed {
            self.state.done.insert(key.clone(), open.etag);
        }
        if self.opts.scan_mode == ScanMode::Incremental {
            if self.state.after.as_deref().is_none_or(|a| a < key.as_str()) {
                self.state.after = Some(key);
            }
            while self.state.done.len() > self.opts.boundary_keys.max(1) {
                self.state.done.pop_first();
            }
        }
    }
}

/// An object's ETag without quotes or weak marker: stores quote it in some
/// answers (HEAD) and not in others (listings).
fn etag_of(meta: &ObjectMeta) -> String {
    meta.e_tag
        .as_deref()
        .unwrap_or_default()
        .trim_start_matches("W/")
        .trim_matches('"')
        .to_owned()
}

fn bad(policy: BadRecordPolicy, skipped: &mut u64, location: &str, error: &str) -> Result<()> {
    match policy {
        BadRecordPolicy::Skip => {
            *skipped += 1;
            if skipped.is_power_of_two() {
                tracing::warn!(location, error, skipped = *skipped, "skipping a bad record");
            }
            Ok(())
        }
        _ => Err(Error::decode(location.to_owned(), error.to_owned())),
    }
}

#[async_trait]
impl DataReader for S3Reader {
    async fn read(&mut self) -> Result<Option<StreamRecord>> {
        Ok(self.read_batch(1).await?.pop())
    }

    async fn read_batch(&mut self, max_size: usize) -> Result<Vec<StreamRecord>> {
        let started = Instant::now();
        let deadline = started + self.opts.batch.batch_timeout;
        let mut out = Vec::with_capacity(max_size.min(8192));
        while out.len() < max_size && !self.ended {
            if self
                .open
                .get_mut()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .is_some()
            {
                if self.decode_open(max_size, &mut out).await? {
                    self.finish_open();
                }
                continue;
            }
            if !self.queue.is_empty() {
                self.open_next().await?;
                continue;
            }
            if self.opts.bounded && self.listed_once {
                self.ended = true;
                break;
            }
            let due = self
                .last_listing
                .is_none_or(|at| at.elapsed() >= self.opts.poll_interval);
            if due {
                self.list().await?;
                if self.queue.is_empty() && !self.opts.bounded {
                    break;
                }
                continue;
            }
            if !out.is_empty() {
                break;
            }
            let now = Instant::now();
            let next = self
                .last_listing
                .map_or(now, |at| at + self.opts.poll_interval);
            if now >= deadline {
                break;
            }
            tokio::time::sleep(
                next.min(deadline)
                    .saturating_duration_since(now)
                    .max(Duration::from_millis(1)),
            )
            .await;
            if Instant::now() >= deadline {
                break;
            }
        }
        if let Some(extractor) = self.event_time.as_mut() {
            for record in &mut out {
                extractor.apply(record);
            }
        }
        if !out.is_empty() {
            self.metrics.record_batch(out.len(), 0, started.elapsed());
        }
        Ok(out)
    }

    async fn commit(&mut self) -> Result<()> {
        let position = self.position()?;
        self.commit_up_to(&position).await
    }

    fn supports_commit_up_to(&self) -> bool {
        true
    }

    /// Saves `position` to the `state_file`, if there is one; the bucket keeps no state.
    async fn commit_up_to(&mut self, position: &SourcePosition) -> Result<()> {
        if let Some((store, key)) = self.state_store() {
            store
                .save(
                    &key,
                    &Checkpoint::new(
                        format!("{}/{}", self.opts.bucket, self.opts.prefix),
                        position.clone(),
                        0,
                    ),
                )
                .await?;
        }
        Ok(())
    }

    async fn seek(&mut self, offset: SourceOffset) -> Result<()> {
        match offset {
            SourceOffset::Generic { source_type, value } if source_type == LISTING => self
                .restore_position(&SourcePosition::new(vec![SourceOffset::Generic {
                    source_type,
                    value,
                }])),
            SourceOffset::S3 {
                key, byte_offset, ..
            } => {
                // An offset alone: read that object from there (its ETag is taken as current).
                let meta = self
                    .opts
                    .store
                    .head(&Path::from(key.as_str()))
                    .await
                    .map_err(|e| store_error(&self.opts, &format!("looking up {key}"), e))?;
                self.state.current = Some(InProgress {
                    key,
                    etag: etag_of(&meta),
                    byte_offset,
                    records: 0,
                });
                Ok(())
            }
            other => Err(Error::Offset(format!(
                "an object-store source takes S3 offsets, not {}",
                other.describe()
            ))),
        }
    }

    async fn restore(&mut self, position: SourcePosition) -> Result<()> {
        self.restore_position(&position)
    }

    async fn has_more(&self) -> Result<bool> {
        Ok(!self.ended)
    }

    fn position(&self) -> Result<SourcePosition> {
        let mut offsets = Vec::with_capacity(2);
        if let Some(c) = &self.state.current {
            offsets.push(SourceOffset::S3 {
                bucket: self.opts.bucket.clone(),
                key: c.key.clone(),
                byte_offset: c.byte_offset,
            });
        }
        offsets.push(SourceOffset::Generic {
            source_type: LISTING.into(),
            value: serde_json::to_value(&self.state).map_err(|e| Error::Offset(e.to_string()))?,
        });
        Ok(SourcePosition::new(offsets))
    }

    fn lag(&self) -> Option<Lag> {
        let open = self.open.lock().map_or(1, |o| u64::from(o.is_some()));
        Some(Lag::Objects(self.queue.len() as u64 + open))
    }

    async fn close(&mut self) -> Result<()> {
        for (_, handle) in self.prefetch.drain() {
            handle.abort();
        }
        self.commit().await
    }
}
