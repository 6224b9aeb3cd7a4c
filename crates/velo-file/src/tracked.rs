//! One file being read: its identity, decoder, buffer and position.

use std::fs::{File, Metadata};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use velo_datasource_core::format::compression::Compression;
use velo_datasource_core::format::records::RecordFileReader;
use velo_datasource_core::format::{self, Decoder, Frame, Inferred, Span};
use velo_datasource_core::{Error, Result};

use crate::fingerprint::Fingerprint;
use crate::options::FileSourceOptions;
use crate::output::Sink;
use crate::read_ahead::{HEADROOM, ReadAhead, read_at};

/// Bytes read from a file at a time.
const CHUNK: usize = 256 * 1024;
/// Bytes first sampled for schema inference: 1,000 rows of 65 bytes.
const FIRST_SAMPLE: u64 = 64 * 1024;
/// The most bytes sampled for schema inference. The sample grows fourfold
/// from [`FIRST_SAMPLE`] up to this only while inference wants more rows:
/// reading and allocating the whole 1 MiB made every open of a larger file
/// cost 0.65-1.4 ms instead of 0.4 (the criterion bench's 100,000-row file,
/// where that was 5-10% of reading it).
const SAMPLE: u64 = 1 << 20;

enum Input {
    /// Shared with the read ahead, which reads at positions of its own.
    Plain(Arc<File>),
    Compressed(Box<dyn Read + Send>),
    /// Parquet and Avro: whole rows, positions counted in records.
    Records(Box<dyn RecordFileReader>),
    /// No descriptor and no buffers: a file read to its end, or one that a
    /// bounded read has not reached yet (opened again at its turn).
    Closed,
}

/// A frame with the position just after it.
#[derive(Debug)]
pub(crate) struct Located {
    pub(crate) frame: Frame,
    /// Byte offset and line where the record starts.
    pub(crate) start: (u64, u64),
    /// Byte offset and line just after the record.
    pub(crate) end: (u64, u64),
}

/// What reading a file found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Status {
    /// Frames were produced (maybe fewer than asked); with `in_sink`,
    /// their good records' values are in the sink given, not the frames.
    Frames { in_sink: bool },
    /// Nothing more for now: the end of what exists has been reached.
    AtEnd,
    /// The file shrank or its first bytes changed (copytruncate, rewrite):
    /// nothing was read from it; it must be handled before reading again.
    Changed,
    /// Going on needs file I/O, which the caller did not allow.
    NeedsIo,
    /// Going on needs the read ahead, which is still running.
    Waiting,
}

pub(crate) struct Tracked {
    /// Where the file was found (stale once it is rotated away).
    path: PathBuf,
    /// Changed only where `offset_text` is made again with it.
    fingerprint: Fingerprint,
    /// `path` and `fingerprint` as a checkpoint writes them, kept with
    /// them: a position lists every file, once per batch, and formatting
    /// both there was most of reading a directory of small files.
    offset_text: Arc<OffsetText>,
    input: Input,
    /// Compressed and Parquet/Avro files are read once to their end and never grow.
    pub(crate) read_once: bool,
    /// The byte decoder; `None` for Parquet and Avro, whose rows come whole.
    decoder: Option<Box<dyn Decoder>>,
    pub(crate) inferred: Inferred,
    /// Next record to hand out.
    pub(crate) offset: u64,
    pub(crate) line: u64,
    /// Bytes from `buf_base` on; `buf[decoded - buf_base..]` is not decoded
    /// yet. Bytes before `offset.min(decoded)` were handed out and may be
    /// stale (see `take_ahead`).
    buf: Vec<u8>,
    buf_base: u64,
    decoded: u64,
    decoded_line: u64,
    /// Input position of the end of `buf`.
    read_pos: u64,
    input_eof: bool,
    /// The file's length as last seen (for lag).
    known_len: u64,
    /// The end was reached before: check the file is still the same before reading on.
    recheck: bool,
    /// The path now names another file (or none): read to the end, then drop.
    pub(crate) rotated: bool,
    /// Nothing more will come from this file.
    pub(crate) finished: bool,
    /// The bytes after `read_pos`, being read.
    ahead: Option<ReadAhead>,
    /// The buffer a finished read ahead replaced, for the next one to read
    /// into: a new one was allocated and zeroed for every chunk.
    spare: Option<Vec<u8>>,
}

impl std::fmt::Debug for Tracked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracked")
            .field("path", &self.path)
            .field("fingerprint", &self.fingerprint.to_string())
            .field("offset", &self.offset)
            .field("rotated", &self.rotated)
            .finish()
    }
}

/// Infers the schema of `file` from its first bytes, reading more of them
/// (up to [`SAMPLE`]) only while inference wants more rows. Returns the
/// sample with what was found.
fn infer_from_sample(
    path: &Path,
    file: &File,
    compression: Compression,
    opts: &FileSourceOptions,
) -> Result<(Vec<u8>, Inferred)> {
    let reader = compression.reader(file.try_clone().map_err(|e| Error::io(path, e))?)?;
    let mut src = reader.take(SAMPLE);
    let mut sample = Vec::new();
    let mut size = FIRST_SAMPLE;
    loop {
        let want = size - sample.len() as u64;
        sample.reserve_exact(want as usize);
        let got = src
            .by_ref()
            .take(want)
            .read_to_end(&mut sample)
            .map_err(|e| Error::io(path, e))?;
        let eof = (got as u64) < want;
        let inferred = format::infer(&opts.format, &sample, eof);
        // A short sample may fail (no whole row yet) where a longer one would not.
        let more = size < SAMPLE && !eof && !inferred.as_ref().is_ok_and(|i| !i.needs_more);
        if !more {
            let inferred = inferred.map_err(|e| match e {
                Error::Schema(m) => Error::decode(format!("{}, byte 0", path.display()), m),
                other => other,
            })?;
            return Ok((sample, inferred));
        }
        size = (size * 4).min(SAMPLE);
    }
}

/// A file's path and fingerprint as a checkpoint writes them.
#[derive(Debug)]
pub(crate) struct OffsetText {
    path: String,
    fingerprint: String,
    /// [`text_hash`] of the two.
    hash: u64,
}

impl OffsetText {
    fn of(path: &Path, fingerprint: &Fingerprint) -> Arc<Self> {
        let (path, fingerprint) = (path.display().to_string(), fingerprint.to_string());
        Arc::new(OffsetText {
            hash: text_hash(&path, Some(&fingerprint)),
            path,
            fingerprint,
        })
    }

    fn source_offset(
        &self,
        byte_offset: u64,
        line_number: u64,
    ) -> velo_datasource_core::SourceOffset {
        velo_datasource_core::SourceOffset::File {
            path: self.path.clone(),
            byte_offset,
            line_number,
            fingerprint: Some(self.fingerprint.clone()),
        }
    }
}

/// A file's entry of a position, taken without copying its texts: the
/// reader keeps its files' entries this way, a chunk at a time (see
/// `position.rs`).
#[derive(Debug, Clone)]
pub(crate) struct OffsetSnapshot {
    text: Arc<OffsetText>,
    offset: u64,
    line: u64,
}

impl OffsetSnapshot {
    /// The checkpoint entry.
    pub(crate) fn source_offset(&self) -> velo_datasource_core::SourceOffset {
        self.text.source_offset(self.offset, self.line)
    }

    /// The [`KeyParts`] of [`source_offset`](Self::source_offset).
    pub(crate) fn key_parts(&self) -> KeyParts {
        (self.text.hash, self.offset, self.line)
    }
}

/// What a file's entry of a position is hashed from: its texts' hash
/// ([`text_hash`]), byte offset and line. The same entry gives the same
/// parts whether it comes from a [`Tracked`], an [`OffsetSnapshot`] or a
/// `SourceOffset::File`. A file keeps its texts' hash: hashing every path
/// once per batch was a third of reading a directory of small files.
pub(crate) type KeyParts = (u64, u64, u64);

/// The hash of a file's path and fingerprint texts, for [`KeyParts`].
pub(crate) fn text_hash(path: &str, fingerprint: Option<&str>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (path, fingerprint).hash(&mut h);
    h.finish()
}

/// `path` opened (unless the caller has it open already: `opened`), with
/// its metadata and fingerprint.
fn open_fingerprinted(
    path: &Path,
    opened: Option<(File, Metadata)>,
    opts: &FileSourceOptions,
) -> Result<(File, Metadata, Fingerprint)> {
    let (file, metadata) = match opened {
        Some(opened) => opened,
        None => open_file(path)?,
    };
    let fingerprint = Fingerprint::of_opened(&file, &metadata, opts.fingerprint_bytes)
        .map_err(|e| Error::io(path, e))?;
    Ok((file, metadata, fingerprint))
}

/// The compression of `path`: the configured one, or by its extension.
fn compression_of(path: &Path, opts: &FileSourceOptions) -> Compression {
    opts.compression
        .unwrap_or_else(|| Compression::from_path(path))
}

/// The schema of `file` and where to start reading it: `at` when it is
/// past the header, else the first record. The start of the file is
/// sampled for both, unless `known` (the schema from an earlier open of
/// the same file) and `at` already say all.
fn locate(
    path: &Path,
    file: &File,
    compression: Compression,
    opts: &FileSourceOptions,
    at: Option<(u64, u64)>,
    known: Option<Inferred>,
) -> Result<(Inferred, (u64, u64))> {
    if let (Some(inferred), Some((offset, line))) = (&known, at)
        && offset >= inferred.header_len as u64
    {
        return Ok((inferred.clone(), (offset, line)));
    }
    let (sample, inferred) = infer_from_sample(path, file, compression, opts)?;
    let header_len = inferred.header_len as u64;
    let start = match at {
        Some((offset, line)) if offset >= header_len => (offset, line),
        _ => (header_len, count_lines(&sample[..inferred.header_len])),
    };
    Ok((inferred, start))
}

/// Opens `path` for reading, with errors that say what is wrong with it,
/// and its metadata (which callers reuse rather than `fstat` again).
pub(crate) fn open_file(path: &Path) -> Result<(File, Metadata)> {
    // Opened first and checked through the handle: one lookup of the path,
    // not two (a bounded glob opens each of its files twice).
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let metadata = file.metadata().map_err(|e| Error::io(path, e))?;
    if metadata.is_dir() {
        return Err(Error::invalid_value(
            "path",
            path.display().to_string(),
            "is a directory: give a file, a glob such as dir/*.csv, or mode=directory_watch",
        ));
    }
    Ok((file, metadata))
}

impl Tracked {
    /// Opens `path` at `at` (byte offset and line of a record start; `None`:
    /// the first record). `opened`: `path` already opened by the caller
    /// ([`open_file`]), if it has it (a scan opens each candidate to know it).
    pub(crate) fn open(
        path: &Path,
        opened: Option<(File, Metadata)>,
        opts: &FileSourceOptions,
        at: Option<(u64, u64)>,
    ) -> Result<Self> {
        let (file, _, fingerprint) = open_fingerprinted(path, opened, opts)?;
        Self::from_file(path, file, fingerprint, opts, at, None)
    }

    /// [`open`](Self::open), but closed at once ([`close`](Self::close)):
    /// the file's fingerprint, schema and first position, for a file a
    /// bounded read reaches later. It costs no decoder and no buffer.
    pub(crate) fn probe(
        path: &Path,
        opened: Option<(File, Metadata)>,
        opts: &FileSourceOptions,
        at: Option<(u64, u64)>,
    ) -> Result<Self> {
        let (file, metadata, fingerprint) = open_fingerprinted(path, opened, opts)?;
        if format::is_record_file(opts.format.format) {
            let mut t = Self::record_file(path, file, fingerprint, opts, at)?;
            t.close();
            return Ok(t);
        }
        let compression = compression_of(path, opts);
        let (inferred, start) = locate(path, &file, compression, opts, at, None)?;
        let plain = compression == Compression::None;
        let mut t = Self::with_input(path, fingerprint, inferred, Input::Closed, start, !plain);
        if plain {
            t.known_len = metadata.len();
        }
        Ok(t)
    }

    /// A file opened as `file`, at `at`; `known` is its schema from an
    /// earlier open (sampled again unless `at` is past the header).
    fn from_file(
        path: &Path,
        mut file: File,
        fingerprint: Fingerprint,
        opts: &FileSourceOptions,
        at: Option<(u64, u64)>,
        known: Option<Inferred>,
    ) -> Result<Self> {
        if format::is_record_file(opts.format.format) {
            return Self::record_file(path, file, fingerprint, opts, at);
        }
        let compression = compression_of(path, opts);
        let (inferred, (offset, line)) = locate(path, &file, compression, opts, at, known)?;
        let input = if compression == Compression::None {
            file.seek(SeekFrom::Start(offset))
                .map_err(|e| Error::io(path, e))?;
            Input::Plain(Arc::new(file))
        } else {
            file.seek(SeekFrom::Start(0))
                .map_err(|e| Error::io(path, e))?;
            let mut reader = compression.reader(file)?;
            let skipped = io::copy(&mut reader.by_ref().take(offset), &mut io::sink())
                .map_err(|e| Error::io(path, e))?;
            if skipped < offset {
                return Err(Error::Offset(format!(
                    "{} has {skipped} bytes after decompression, less than the saved offset {offset}",
                    path.display()
                )));
            }
            Input::Compressed(reader)
        };
        let decoder = format::decoder(&opts.format, &inferred, offset)?;
        let read_once = compression != Compression::None;
        let mut t = Self::with_input(
            path,
            fingerprint,
            inferred,
            input,
            (offset, line),
            read_once,
        );
        t.decoder = Some(decoder);
        Ok(t)
    }

    /// A Parquet or Avro file: its position is `(0, records read)`.
    fn record_file(
        path: &Path,
        file: File,
        fingerprint: Fingerprint,
        opts: &FileSourceOptions,
        at: Option<(u64, u64)>,
    ) -> Result<Self> {
        let what = path.display().to_string();
        let mut records = format::open_records(opts.format.format, file, &what)?;
        let line = at.map_or(0, |(_, records_read)| records_read);
        records.skip(line)?;
        let inferred = Inferred {
            schema: records.schema(),
            header_len: 0,
            needs_more: false,
        };
        let input = Input::Records(records);
        Ok(Self::with_input(
            path,
            fingerprint,
            inferred,
            input,
            (0, line),
            true,
        ))
    }

    /// A file read from `start` (byte offset and line) on, nothing read yet
    /// and no decoder.
    fn with_input(
        path: &Path,
        fingerprint: Fingerprint,
        inferred: Inferred,
        input: Input,
        (offset, line): (u64, u64),
        read_once: bool,
    ) -> Self {
        Tracked {
            path: path.to_owned(),
            fingerprint,
            offset_text: OffsetText::of(path, &fingerprint),
            read_once,
            input,
            decoder: None,
            inferred,
            offset,
            line,
            buf: Vec::new(),
            buf_base: offset,
            decoded: offset,
            decoded_line: line,
            read_pos: offset,
            input_eof: false,
            known_len: 0,
            recheck: false,
            rotated: false,
            finished: false,
            ahead: None,
            spare: None,
        }
    }

    /// Where this file is, as a checkpoint entry.
    pub(crate) fn source_offset(&self) -> velo_datasource_core::SourceOffset {
        self.offset_text.source_offset(self.offset, self.line)
    }

    /// [`source_offset`](Self::source_offset) for later, without copying
    /// its texts.
    pub(crate) fn snapshot(&self) -> OffsetSnapshot {
        OffsetSnapshot {
            text: self.offset_text.clone(),
            offset: self.offset,
            line: self.line,
        }
    }

    /// Decodes up to `max` frames. `final_eof`: a trailing record without a
    /// terminator is complete once the input ends (bounded reads, rotated files).
    ///
    /// The caller hands out the frames' records in order and then calls
    /// [`consume_all`](Self::consume_all), or stops at one and calls
    /// [`rewind_to`](Self::rewind_to) with its start.
    ///
    /// With a `sink`, a decoder that can writes good records' values to it
    /// and reports each record by a [`Span`] (see
    /// [`Decoder::decode_columns`], [`Decoder::decode_rows`]) instead of a
    /// frame; the first span starts at the position of the next record to
    /// hand out.
    pub(crate) fn next_frames(
        &mut self,
        max: usize,
        final_eof: bool,
        out: &mut Vec<Located>,
        mut sink: Option<(Sink<'_>, &mut Vec<Span>)>,
        io: bool,
    ) -> Result<Status> {
        debug_assert_eq!(self.decoded, self.offset, "frames were left unconsumed");
        if !io && matches!(self.input, Input::Records(_)) {
            return Ok(Status::NeedsIo);
        }
        if let Input::Records(records) = &mut self.input {
            return next_records(
                records.as_mut(),
                &mut self.decoded_line,
                &self.inferred,
                max,
                out,
            );
        }
        let mut frames = Vec::new();
        loop {
            let start = (self.decoded - self.buf_base) as usize;
            let eof = final_eof && self.input_eof;
            let avail = &self.buf[start..];
            let decoder = self
                .decoder
                .as_mut()
                .ok_or_else(|| Error::State("a byte format without a decoder".into()))?;
            let mut pos = (self.decoded, self.decoded_line);
            let (used, in_sink, produced) = match sink.as_mut().and_then(|(sink, spans)| {
                Some((
                    sink.decode(decoder.as_mut(), avail, eof, max, spans)?,
                    spans,
                ))
            }) {
                Some((used, spans)) => {
                    for span in spans.iter() {
                        pos = (pos.0 + span.len as u64, pos.1 + span.lines);
                    }
                    (used, true, !spans.is_empty())
                }
                None => {
                    frames.reserve(max.min(4096));
                    let used = decoder.decode(avail, eof, max, &mut frames);
                    let produced = !frames.is_empty();
                    for frame in frames.drain(..) {
                        let begin = pos;
                        pos = (pos.0 + frame.len as u64, pos.1 + frame.lines);
                        out.push(Located {
                            frame,
                            start: begin,
                            end: pos,
                        });
                    }
                    (used, false, produced)
                }
            };
            // Bytes after the last frame: blank lines, a closing bracket.
            let after = (pos.0 - self.decoded) as usize;
            self.decoded_line = pos.1 + count_lines(&avail[after..used]);
            self.decoded += used as u64;
            if produced {
                return Ok(Status::Frames { in_sink });
            }
            if used > 0 {
                self.consume_all();
                continue;
            }
            if self.input_eof {
                self.compact();
                return Ok(Status::AtEnd);
            }
            if !io {
                if self.recheck {
                    return Ok(Status::NeedsIo);
                }
                match self.take_ahead() {
                    Some(true) => continue,
                    Some(false) => return Ok(Status::Waiting),
                    None => return Ok(Status::NeedsIo),
                }
            }
            if self.recheck {
                self.recheck = false;
                if self.changed_under_us()? {
                    self.ahead = None;
                    return Ok(Status::Changed);
                }
            }
            if self.take_ahead() != Some(true) {
                self.read_more()?;
            }
        }
    }

    /// Appends the read ahead's bytes if it is done (`Some(true)`); `Some(false)`
    /// while it runs; `None` when there is none to use (none started, a
    /// stale one, or a failed one, whose error a plain read will meet).
    fn take_ahead(&mut self) -> Option<bool> {
        let ahead = self.ahead.as_mut()?;
        if ahead.pos() != self.read_pos {
            self.ahead = None;
            return None;
        }
        let Some(result) = ahead.try_take() else {
            return Some(false);
        };
        self.ahead = None;
        let mut bytes = result.ok()?;
        let n = bytes.len() - HEADROOM;
        // The bytes still needed (from the next record to hand out on)
        // go in front of the new ones, which then are the buffer; what is
        // before them there stands for input already handed out, never read.
        let keep_at = self.offset.min(self.decoded);
        let keep = &self.buf[(keep_at - self.buf_base) as usize..];
        match HEADROOM.checked_sub(keep.len()) {
            Some(start) if keep_at >= start as u64 => {
                bytes[start..HEADROOM].copy_from_slice(keep);
                self.spare = Some(std::mem::replace(&mut self.buf, bytes));
                self.buf_base = keep_at - start as u64;
            }
            _ => {
                self.compact();
                self.buf.extend_from_slice(&bytes[HEADROOM..]);
                self.spare = Some(bytes);
            }
        }
        self.advance_read(n);
        if n == CHUNK {
            self.start_ahead();
        }
        Some(true)
    }

    /// Waits for the read ahead (after [`Status::Waiting`]).
    pub(crate) async fn wait_ahead(&mut self) {
        if let Some(ahead) = &mut self.ahead {
            ahead.wait().await;
        }
    }

    /// Starts reading the bytes after `read_pos` of a plain file in the
    /// background, unless its end was reached or a read is running. Called
    /// after a full chunk only: a shorter read found the end of the file as
    /// it is, and a tailed file is then checked before it is read again.
    fn start_ahead(&mut self) {
        let Input::Plain(f) = &self.input else {
            return;
        };
        if self.input_eof || self.ahead.is_some() {
            return;
        }
        let spare = self.spare.take().unwrap_or_default();
        self.ahead = ReadAhead::start(f.clone(), self.read_pos, CHUNK, spare);
    }

    /// Counts `n` bytes just appended to `buf`; none means the input ended.
    fn advance_read(&mut self, n: usize) {
        self.read_pos += n as u64;
        self.known_len = self.known_len.max(self.read_pos);
        self.input_eof = n == 0;
    }

    /// Whether the open file shrank below what was read or no longer starts
    /// with the bytes it was fingerprinted by. Reading on would return the
    /// middle of other content.
    fn changed_under_us(&mut self) -> Result<bool> {
        let Input::Plain(f) = &self.input else {
            return Ok(false);
        };
        let len = f.metadata().map_err(|e| Error::io(&self.path, e))?.len();
        if len < self.read_pos {
            return Ok(true);
        }
        Ok(!self
            .fingerprint
            .content_matches(f)
            .map_err(|e| Error::io(&self.path, e))?)
    }

    /// The input bytes in `[start, end)` (a frame just decoded), for dead letters.
    pub(crate) fn raw_bytes(&self, start: u64, end: u64) -> Vec<u8> {
        let a = start.saturating_sub(self.buf_base) as usize;
        let b = (end.saturating_sub(self.buf_base) as usize).min(self.buf.len());
        let raw = self.buf.get(a..b).unwrap_or_default();
        let skip = raw.iter().take_while(|b| b.is_ascii_whitespace()).count();
        raw[skip..].to_vec()
    }

    /// Records up to `pos` (a frame's end) were handed out.
    pub(crate) fn advance_to(&mut self, pos: (u64, u64)) {
        self.offset = pos.0;
        self.line = pos.1;
    }

    /// Every decoded frame was handed out.
    pub(crate) fn consume_all(&mut self) {
        self.offset = self.decoded;
        self.line = self.decoded_line;
    }

    /// Hands out frames up to `pos` (a frame's start) and forgets the rest:
    /// the next read decodes from `pos` again, with a fresh decoder.
    pub(crate) fn rewind_to(&mut self, pos: (u64, u64), opts: &FileSourceOptions) -> Result<()> {
        self.offset = pos.0;
        self.line = pos.1;
        self.decoded = pos.0;
        self.decoded_line = pos.1;
        if let Input::Records(records) = &mut self.input {
            // Rows cannot be un-read: open the file again and skip to `pos`.
            let (file, _) = open_file(&self.path)?;
            *records =
                format::open_records(opts.format.format, file, &self.path.display().to_string())?;
            records.skip(pos.1)?;
        } else {
            self.decoder = Some(format::decoder(&opts.format, &self.inferred, pos.0)?);
        }
        Ok(())
    }

    fn read_more(&mut self) -> Result<()> {
        self.compact();
        let len = self.buf.len();
        let want = self.next_read_len();
        self.buf.resize(len + want, 0);
        // The running read ahead (if any) is dropped: its bytes are read here.
        self.ahead = None;
        let n = match &mut self.input {
            // Its length says it has nothing more: no read to learn that.
            Input::Plain(_) if want == 0 => Ok(0),
            Input::Plain(f) => read_at(f, &mut self.buf[len..], self.read_pos),
            Input::Compressed(r) => r.read(&mut self.buf[len..]),
            Input::Records(_) => Ok(0),
            Input::Closed => {
                self.buf.truncate(len);
                return Err(Error::State(format!(
                    "{} was read after it was closed",
                    self.path.display()
                )));
            }
        };
        let n = match n {
            Ok(n) => n,
            Err(e) => {
                self.buf.truncate(len);
                return Err(Error::io(&self.path, e));
            }
        };
        self.buf.truncate(len + n);
        self.advance_read(n);
        if n == CHUNK {
            self.start_ahead();
        }
        Ok(())
    }

    /// How many bytes the next read asks for: a chunk, or what a regular
    /// file has beyond the bytes read when that is less. A watched file is
    /// read again at every poll, mostly to find nothing or a few lines:
    /// growing (and zeroing) its buffer by a whole chunk each time cost a
    /// 256 KiB `memset` per file per poll.
    fn next_read_len(&self) -> usize {
        match &self.input {
            Input::Plain(f) => match f.metadata() {
                Ok(m) if m.is_file() => {
                    m.len().saturating_sub(self.read_pos).min(CHUNK as u64) as usize
                }
                // A pipe or device has no length to go by.
                _ => CHUNK,
            },
            _ => CHUNK,
        }
    }

    /// Drops handed-out bytes from the front of the buffer.
    fn compact(&mut self) {
        let keep_from = (self.offset.min(self.decoded) - self.buf_base) as usize;
        if keep_from > 0 && (keep_from >= self.buf.len() / 2 || keep_from > 4 * CHUNK) {
            self.buf.drain(..keep_from);
            self.buf_base += keep_from as u64;
        }
        if self.buf.capacity() > 8 * CHUNK && self.buf.len() < CHUNK {
            self.buf.shrink_to(2 * CHUNK);
        }
    }

    /// After reaching the end: lets the next read try the file again (it may have grown).
    pub(crate) fn retry_at_end(&mut self) {
        if !self.read_once {
            self.input_eof = false;
            self.recheck = true;
            self.keep_only_unread();
        }
    }

    /// Shrinks the buffers to the bytes not handed out yet (a partial
    /// record at most): a watched file mostly waits at its end, and a
    /// directory of them kept a 256 KiB buffer or two each.
    fn keep_only_unread(&mut self) {
        let keep_from = (self.offset.min(self.decoded) - self.buf_base) as usize;
        self.buf.drain(..keep_from);
        self.buf_base += keep_from as u64;
        self.buf.shrink_to_fit();
        self.spare = None;
    }

    /// Bytes the buffers hold room for (for tests of what a file keeps).
    #[cfg(test)]
    pub(crate) fn buffered_capacity(&self) -> usize {
        self.buf.capacity() + self.spare.as_ref().map_or(0, Vec::capacity)
    }

    /// Bytes in the file not yet handed out.
    ///
    /// Stats the file; [`known_remaining`](Self::known_remaining) does not.
    pub(crate) fn remaining(&mut self) -> u64 {
        if let Input::Plain(f) = &self.input
            && let Ok(m) = f.metadata()
        {
            self.known_len = self.known_len.max(m.len());
        }
        self.known_remaining()
    }

    /// Bytes not yet handed out, as of the last stat or read (plain files).
    pub(crate) fn known_remaining(&self) -> u64 {
        match &self.input {
            Input::Plain(_) | Input::Closed => self.known_len.saturating_sub(self.offset),
            Input::Compressed(_) | Input::Records(_) => 0,
        }
    }

    /// The current length of the open file (plain files only).
    pub(crate) fn open_len(&self) -> Option<u64> {
        match &self.input {
            Input::Plain(f) => f.metadata().ok().map(|m| m.len()),
            Input::Compressed(_) | Input::Records(_) | Input::Closed => None,
        }
    }

    /// Bytes read past the handed-out position (for truncation checks).
    pub(crate) fn read_pos(&self) -> u64 {
        self.read_pos
    }

    /// Where the file was found (stale once it is rotated away).
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The identity of the file's content.
    pub(crate) fn fingerprint(&self) -> &Fingerprint {
        &self.fingerprint
    }

    /// The file is now known as `path` (it was renamed).
    pub(crate) fn set_path(&mut self, path: PathBuf) {
        self.offset_text = OffsetText::of(&path, &self.fingerprint);
        self.path = path;
    }

    /// Lets go of the file's descriptor, buffers and decoder; its path,
    /// fingerprint, position and schema stay. A bounded read of a
    /// directory otherwise held every file open (the usual limit is 1,024
    /// descriptors) with a 256 KiB buffer each.
    pub(crate) fn close(&mut self) {
        self.remaining();
        self.input = Input::Closed;
        self.decoder = None;
        self.ahead = None;
        self.buf = Vec::new();
        self.buf_base = self.offset;
        self.spare = None;
    }

    /// Nothing more will come from this file: it is closed.
    pub(crate) fn finish(&mut self) {
        self.finished = true;
        self.close();
    }

    /// Whether [`close`](Self::close) let go of the file.
    pub(crate) fn is_closed(&self) -> bool {
        matches!(self.input, Input::Closed)
    }

    /// Opens a closed file again at its position. A file that is no longer
    /// the one closed (another inode or other first bytes) is read from its
    /// start, as a replaced file is.
    pub(crate) fn reopen(&mut self, opts: &FileSourceOptions) -> Result<()> {
        let path = self.path.clone();
        let (file, metadata) = open_file(&path)?;
        let same = self
            .fingerprint
            .matches_opened(&file, &metadata)
            .map_err(|e| Error::io(&path, e))?;
        let (fingerprint, at) = if same {
            (self.fingerprint, Some((self.offset, self.line)))
        } else {
            tracing::warn!(path = %path.display(), offset = self.offset, "file was replaced before it was read on; reading it from the start");
            let fp = Fingerprint::of_opened(&file, &metadata, opts.fingerprint_bytes)
                .map_err(|e| Error::io(&path, e))?;
            (fp, None)
        };
        let known = same.then(|| self.inferred.clone());
        let rotated = self.rotated;
        *self = Self::from_file(&path, file, fingerprint, opts, at, known)?;
        self.rotated = rotated;
        Ok(())
    }

    /// Starts this file over from its first record (it was truncated or rewritten in place).
    pub(crate) fn restart(&mut self, opts: &FileSourceOptions) -> Result<()> {
        let path = self.path.clone();
        let Input::Plain(f) = &self.input else {
            return Err(Error::State("only a plain file can restart".into()));
        };
        let mut file = f.try_clone().map_err(|e| Error::io(&path, e))?;
        file.seek(SeekFrom::Start(0))
            .map_err(|e| Error::io(&path, e))?;
        let fingerprint =
            Fingerprint::of(&file, opts.fingerprint_bytes).map_err(|e| Error::io(&path, e))?;
        *self = Self::from_file(&path, file, fingerprint, opts, None, None)?;
        Ok(())
    }

    /// Takes a fuller fingerprint once the file has grown past a short one.
    pub(crate) fn refresh_fingerprint(&mut self, window: u64) {
        if self.fingerprint.covered < window
            && let Input::Plain(f) = &self.input
            && let Ok(fp) = Fingerprint::of(f, window)
            && fp.covered > self.fingerprint.covered
            && fp.dev == self.fingerprint.dev
            && fp.ino == self.fingerprint.ino
        {
            self.fingerprint = fp;
            self.offset_text = OffsetText::of(&self.path, &fp);
        }
    }

    pub(crate) fn header_len(&self) -> u64 {
        self.inferred.header_len as u64
    }

    pub(crate) fn schema(&self) -> std::sync::Arc<velo_datasource_core::Schema> {
        self.inferred.schema.clone()
    }
}

/// Up to `max` whole rows of a Parquet or Avro file as frames; the position
/// is `(0, records read)`.
fn next_records(
    records: &mut dyn RecordFileReader,
    read: &mut u64,
    inferred: &Inferred,
    max: usize,
    out: &mut Vec<Located>,
) -> Result<Status> {
    let mut rows = Vec::new();
    records.next_rows(max, &mut rows)?;
    if rows.is_empty() {
        return Ok(Status::AtEnd);
    }
    for result in rows {
        let start = (0, *read);
        *read += 1;
        let frame = Frame {
            len: 0,
            lines: 1,
            skipped_bytes: 0,
            skipped_lines: 0,
            result,
            schema: inferred.schema.clone(),
        };
        out.push(Located {
            frame,
            start,
            end: (0, *read),
        });
    }
    Ok(Status::Frames { in_sink: false })
}

fn count_lines(bytes: &[u8]) -> u64 {
    memchr::memchr_iter(b'\n', bytes).count() as u64
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use velo_datasource_core::DataSourceUri;

    use super::*;

    /// Frames decoded (and handed out) until the file's current end.
    fn read_to_end(t: &mut Tracked) -> usize {
        let mut got = 0;
        loop {
            let mut out = Vec::new();
            match t.next_frames(100, false, &mut out, None, true).unwrap() {
                Status::Frames { .. } => {
                    got += out.len();
                    t.consume_all();
                }
                Status::AtEnd => {
                    t.retry_at_end();
                    return got;
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn a_tailed_file_at_its_end_keeps_no_chunk_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.jsonl");
        let line = format!("{{\"n\":1,\"pad\":\"{}\"}}\n", "x".repeat(100));
        std::fs::write(&path, line.repeat(5000)).unwrap();
        let uri = format!("file://{}?mode=tail", path.display());
        let opts = FileSourceOptions::from_config(
            &DataSourceUri::parse(&uri)
                .unwrap()
                .to_source_config()
                .unwrap(),
        )
        .unwrap();
        let mut t = Tracked::open(&path, None, &opts, None).unwrap();
        assert_eq!(read_to_end(&mut t), 5000);
        assert_eq!(t.buffered_capacity(), 0, "nothing left to hand out");
        // A few new lines are read into a buffer of their size, not a chunk's.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(line.repeat(3).as_bytes()).unwrap();
        // A partial line stays for the next read.
        f.write_all(b"{\"n\":").unwrap();
        assert_eq!(read_to_end(&mut t), 3);
        assert!(t.buffered_capacity() < 64, "{}", t.buffered_capacity());
        f.write_all(b"2}\n").unwrap();
        assert_eq!(read_to_end(&mut t), 1);
        assert_eq!(t.offset, std::fs::metadata(&path).unwrap().len());
    }
}
