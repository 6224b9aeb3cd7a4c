//! The file reader: finds files, follows them through growth, rotation and
//! truncation, decodes records, applies the bad-record policy, and reports
//! its position over every file it tracks.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use velo_datasource_core::format::Span;
use velo_datasource_core::{
    BadRecordPolicy, Checkpoint, CheckpointStore, ColumnBatch, DataReader, Error,
    EventTimeExtractor, FileCheckpointStore, Lag, Result, SourceMetrics, SourceOffset,
    SourcePosition, StreamRecord, async_trait,
};

use crate::dead_letter::{DeadLetter, DeadLetterFile};
use crate::fingerprint::Fingerprint;
use crate::options::{FileSourceOptions, Mode};
use crate::output::{ColumnsOut, Output, Records, RowsOut, Unclaimed};
use crate::position::{PositionCache, PositionKey, Snapshot};
use crate::tracked::{Located, Status, Tracked, open_file};
use crate::watch::{ChangeWatcher, watch_root};

/// How far [`State::fill_into`] got without file I/O.
enum Fill {
    /// The batch is complete.
    Done,
    /// File `i`'s read ahead is running: wait for it, then fill on.
    Waiting(usize),
    /// Going on needs file I/O: fill the rest on the blocking pool.
    NeedsIo,
}

/// Everything the blocking part of the reader owns.
#[derive(Debug)]
struct State {
    opts: Arc<FileSourceOptions>,
    /// Files in reading order: rotated (older) ones first.
    files: Vec<Tracked>,
    /// What positions need of `files`, kept a chunk at a time: touched
    /// before a file changes, forgotten wherever `files` changes other
    /// than by a file added at the end.
    positions: PositionCache,
    scanned: bool,
    restore_from: Option<SourcePosition>,
    /// A bad record met after good ones in the same batch: reported next call.
    pending_error: Option<Error>,
    dead_letters: Option<DeadLetterFile>,
    bad_records: u64,
    event_time: Option<EventTimeExtractor>,
    lag_bytes: u64,
    /// Bytes of input handed out (records, bad records and what lies between them).
    bytes_read: u64,
}

/// Where a record starts: `skipped` bytes and lines (blank lines,
/// separators) into its frame, which starts at `frame` (byte, line).
fn record_start(frame: (u64, u64), skipped_bytes: usize, skipped_lines: u64) -> (u64, u64) {
    (frame.0 + skipped_bytes as u64, frame.1 + skipped_lines)
}

fn location(path: &Path, at: (u64, u64)) -> String {
    format!("{}, byte {} (line {})", path.display(), at.0, at.1 + 1)
}

fn is_glob(path: &str) -> bool {
    path.contains(['*', '?', '['])
}

impl State {
    fn new(opts: Arc<FileSourceOptions>) -> Result<Self> {
        let dead_letters = match (&opts.errors, &opts.dead_letter) {
            (BadRecordPolicy::DeadLetter, Some(p)) => Some(DeadLetterFile::open(p)?),
            _ => None,
        };
        let event_time = opts
            .event_time
            .clone()
            .map(|c| EventTimeExtractor::new(c, opts.log_every));
        Ok(State {
            opts,
            files: Vec::new(),
            positions: PositionCache::default(),
            scanned: false,
            restore_from: None,
            pending_error: None,
            dead_letters,
            bad_records: 0,
            event_time,
            lag_bytes: 0,
            bytes_read: 0,
        })
    }

    /// The paths the source covers right now.
    fn candidates(&self) -> Result<Vec<PathBuf>> {
        let path = &self.opts.path;
        if Path::new(path).is_dir() {
            let dir = Path::new(path);
            let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
                .map_err(|e| Error::io(dir, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && !is_hidden(p))
                .collect();
            out.sort();
            return Ok(out);
        }
        if is_glob(path) {
            let paths =
                glob::glob(path).map_err(|e| Error::invalid_value("path", path, e.to_string()))?;
            let mut out: Vec<PathBuf> = paths
                .filter_map(|p| p.ok())
                .filter(|p| p.is_file() && !is_hidden(p))
                .collect();
            out.sort();
            return Ok(out);
        }
        Ok(vec![PathBuf::from(path)])
    }

    /// Starts reading `path` (`opened` already, if the caller has it) at
    /// `at` (see [`Tracked::open`]). A bounded read takes its files one at
    /// a time, so only its first unfinished file is kept open; the others
    /// are probed ([`Tracked::probe`]) and opened again at their turn.
    /// Streaming modes watch every file.
    fn track(
        &mut self,
        path: &Path,
        opened: Option<(std::fs::File, std::fs::Metadata)>,
        at: Option<(u64, u64)>,
    ) -> Result<&mut Tracked> {
        let later = !self.opts.mode.is_streaming()
            && self.files.iter().any(|f| !f.finished && !f.is_closed());
        let t = if later {
            Tracked::probe(path, opened, &self.opts, at)?
        } else {
            Tracked::open(path, opened, &self.opts, at)?
        };
        self.files.push(t);
        Ok(self.files.last_mut().expect("a file was just added"))
    }

    /// Finds new, rotated, renamed, truncated and vanished files.
    fn scan(&mut self) -> Result<()> {
        self.positions.forget();
        let first = !self.scanned;
        self.scanned = true;
        if first && let Some(position) = self.restore_from.take() {
            self.apply_position(position)?;
        }
        let candidates = self.candidates()?;
        if first && candidates.is_empty() && !self.opts.mode.is_streaming() {
            return Err(Error::io(
                &self.opts.path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no file matches"),
            ));
        }
        let mut seen = vec![false; self.files.len()];
        // One stat per candidate and a lookup, not a stat per tracked file:
        // a first scan of 3,000 files made 9,000,000 `statx` calls.
        let mut index = FileIndex::of(&self.files);
        for cand in candidates {
            let (file, metadata) = match open_file(&cand) {
                Ok(opened) => opened,
                // A file may vanish between listing and opening, or during rotation.
                Err(Error::Io { source, .. })
                    if !first && source.kind() == std::io::ErrorKind::NotFound =>
                {
                    continue;
                }
                Err(e) if first || !self.opts.mode.is_streaming() => return Err(e),
                Err(e) => {
                    tracing::warn!("skipping {}: {e}", cand.display());
                    continue;
                }
            };
            let identity = Fingerprint::identity_of(&metadata);
            // Tracked files with the candidate's inode (not rotated away).
            let same_inode: Vec<usize> = index
                .by_inode
                .get(&identity)
                .into_iter()
                .flatten()
                .copied()
                .filter(|&i| !self.files[i].rotated)
                .collect();
            let known = same_inode.iter().copied().find(|&i| {
                self.files[i]
                    .fingerprint()
                    .content_matches(&file)
                    .unwrap_or(false)
            });
            match known {
                Some(i) => {
                    if i < seen.len() {
                        seen[i] = true;
                    }
                    let t = &mut self.files[i];
                    if t.path() != cand {
                        tracing::info!(from = %t.path().display(), to = %cand.display(), "file renamed; keeping its position");
                        index.by_path.entry(cand.clone()).or_default().push(i);
                        t.set_path(cand);
                    }
                    if t.open_len()
                        .is_some_and(|len| len < t.read_pos().min(t.offset.max(t.header_len())))
                    {
                        self.handle_truncation(i)?;
                        index = FileIndex::of(&self.files);
                    } else {
                        self.files[i].refresh_fingerprint(self.opts.fingerprint_bytes);
                    }
                }
                None => {
                    // The same inode with other first bytes was rewritten in place.
                    if let Some(&i) = same_inode.iter().find(|&&i| !self.files[i].read_once) {
                        if i < seen.len() {
                            seen[i] = true;
                        }
                        self.handle_truncation(i)?;
                        index = FileIndex::of(&self.files);
                        continue;
                    }
                    if self.opts.detect_rotation {
                        let named: Vec<usize> = index
                            .by_path
                            .get(&cand)
                            .into_iter()
                            .flatten()
                            .copied()
                            .filter(|&i| self.files[i].path() == cand && !self.files[i].rotated)
                            .collect();
                        for i in named {
                            let t = &mut self.files[i];
                            tracing::info!(path = %cand.display(), "file rotated: a new file took its name");
                            t.rotated = true;
                            if !self.opts.finish_rotated {
                                t.finish();
                            }
                        }
                    }
                    if self.opts.mode == Mode::Tail
                        && self.opts.compression.is_none()
                        && velo_datasource_core::format::compression::Compression::from_path(&cand)
                            != velo_datasource_core::format::compression::Compression::None
                    {
                        return Err(Error::invalid_value(
                            "mode",
                            "tail",
                            format!("{} is compressed and cannot be tailed", cand.display()),
                        ));
                    }
                    let i = self.files.len();
                    let t = self.track(&cand, Some((file, metadata)), None)?;
                    index.add(t, i);
                }
            }
        }
        if !first && self.opts.mode.is_streaming() {
            for (i, t) in self.files.iter_mut().enumerate() {
                if i < seen.len() && !seen[i] && !t.rotated && !t.finished {
                    tracing::info!(path = %t.path().display(), "file moved away or deleted; reading it to its end");
                    t.rotated = true;
                    if !self.opts.finish_rotated {
                        t.finish();
                    }
                }
            }
        }
        self.files.retain(|t| !(t.finished && t.rotated));
        // Rotated files are older: read them first. The sort is stable.
        self.files.sort_by_key(|t| !t.rotated);
        self.lag_bytes = self
            .files
            .iter_mut()
            .filter(|t| !t.finished)
            .map(Tracked::remaining)
            .sum();
        Ok(())
    }

    /// A file shrank below what was read, or was rewritten in place.
    fn handle_truncation(&mut self, i: usize) -> Result<()> {
        self.positions.forget();
        let (path, offset) = (self.files[i].path().to_owned(), self.files[i].offset);
        tracing::warn!(path = %path.display(), offset, "file was truncated or rewritten (copytruncate rotation?); reading it again from the start");
        // copytruncate: the copy holds what was written before the truncation.
        let copy = if self.opts.finish_rotated {
            self.find_rotated(&path, self.files[i].fingerprint(), true)
        } else {
            None
        };
        self.files[i].restart(&self.opts)?;
        if let Some(copy) = copy {
            let at = (self.files[i].header_len().max(offset), self.files[i].line);
            let mut t = Tracked::open(&copy, None, &self.opts, Some((offset, at.1)))?;
            tracing::info!(copy = %copy.display(), offset, "reading the rest of the truncated file from its copy");
            t.rotated = true;
            self.files.insert(i, t);
        }
        Ok(())
    }

    /// A file matching `rotation_pattern` next to `path` that is `fingerprint`'s file
    /// (or, for copytruncate, has its first bytes).
    fn find_rotated(
        &self,
        path: &Path,
        fingerprint: &Fingerprint,
        by_content: bool,
    ) -> Option<PathBuf> {
        let pattern = self.opts.rotation_pattern.as_ref()?;
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p != path
                    && p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| pattern.matches(n))
            })
            .collect();
        entries.sort();
        entries.into_iter().find(|p| {
            std::fs::File::open(p)
                .and_then(|f| {
                    if by_content {
                        fingerprint.content_matches(&f)
                    } else {
                        fingerprint.matches(&f)
                    }
                })
                .unwrap_or(false)
        })
    }

    /// Rotated files next to `path` written after `rotated`, oldest first.
    fn rotated_after(&self, path: &Path, rotated: &Path) -> Vec<PathBuf> {
        let (Some(pattern), Ok(since)) = (
            &self.opts.rotation_pattern,
            std::fs::metadata(rotated).and_then(|m| m.modified()),
        ) else {
            return Vec::new();
        };
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut newer: Vec<(std::time::SystemTime, PathBuf)> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p != path
                    && p != rotated
                    && p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| pattern.matches(n))
            })
            .filter_map(|p| Some((std::fs::metadata(&p).and_then(|m| m.modified()).ok()?, p)))
            .filter(|(t, _)| *t > since)
            .collect();
        newer.sort();
        newer.into_iter().map(|(_, p)| p).collect()
    }

    /// Re-opens every file of a saved position where it was.
    fn apply_position(&mut self, position: SourcePosition) -> Result<()> {
        self.files.clear();
        self.positions.forget();
        let mut newest_rotated: Option<(PathBuf, PathBuf)> = None;
        for offset in position.offsets {
            let SourceOffset::File {
                path,
                byte_offset,
                line_number,
                fingerprint,
            } = offset
            else {
                return Err(Error::Offset(format!(
                    "not a file offset: {}",
                    offset.describe()
                )));
            };
            let fp = fingerprint
                .as_deref()
                .map(str::parse::<Fingerprint>)
                .transpose()
                .map_err(|e| Error::Offset(format!("{path}: {e}")))?;
            let at = Some((byte_offset, line_number));
            let p = PathBuf::from(&path);
            let same = match (std::fs::File::open(&p), &fp) {
                (Ok(_), None) => true,
                (Ok(f), Some(fp)) => fp.matches(&f).unwrap_or(false),
                (Err(_), _) => false,
            };
            if same {
                self.track(&p, None, at)?;
                continue;
            }
            match fp.as_ref().and_then(|fp| self.find_rotated(&p, fp, false)) {
                Some(rotated) => {
                    tracing::info!(from = %path, to = %rotated.display(), "checkpointed file was rotated; finishing it under its new name");
                    self.track(&rotated, None, at)?.rotated = true;
                    newest_rotated = Some((p.clone(), rotated));
                }
                None => tracing::warn!(
                    path = %path,
                    byte_offset,
                    "the checkpointed file was replaced or removed and no rotated file matches rotation_pattern; \
                     records after this offset in the old file cannot be read, the file now at this path is read from the start"
                ),
            }
        }
        // Files rotated after the checkpointed ones while the reader was down
        // come next, oldest first; files already tracked are known by inode.
        if let Some((path, rotated)) = newest_rotated {
            for newer in self.rotated_after(&path, &rotated) {
                let Ok(f) = std::fs::File::open(&newer) else {
                    continue;
                };
                if self
                    .files
                    .iter()
                    .any(|t| t.fingerprint().same_inode(&f).unwrap_or(false))
                {
                    continue;
                }
                tracing::info!(file = %newer.display(), "reading a file rotated while the reader was down");
                self.track(&newer, None, None)?.rotated = true;
            }
        }
        Ok(())
    }

    /// Reads up to `max` records into `out` (which may hold some already).
    ///
    /// Without `io`, only from bytes already read or read ahead, on the
    /// caller's task: [`Fill::Waiting`] or [`Fill::NeedsIo`] say how the
    /// caller goes on (see [`FileReader::read_with`]).
    fn fill_into(
        &mut self,
        max: usize,
        scan: bool,
        out: &mut impl Output,
        io: bool,
    ) -> Result<Fill> {
        if let Some(e) = self.pending_error.take() {
            return Err(e);
        }
        if !io && (!self.scanned || scan || self.dead_letters.is_some()) {
            return Ok(Fill::NeedsIo);
        }
        if !self.scanned || scan {
            self.scan()?;
        }
        let mut located = Vec::new();
        let mut spans = Vec::new();
        let mut i = self.positions.finished();
        while out.len() < max && i < self.files.len() {
            if self.files[i].finished {
                i += 1;
                continue;
            }
            self.positions.touch(i);
            if self.files[i].is_closed() {
                if !io {
                    return Ok(Fill::NeedsIo);
                }
                match self.files[i].reopen(&self.opts) {
                    Ok(()) => {}
                    // Removed before its turn: there is nothing left to read.
                    Err(Error::Io { source, .. })
                        if source.kind() == std::io::ErrorKind::NotFound =>
                    {
                        let t = &mut self.files[i];
                        tracing::warn!(path = %t.path().display(), "file removed before it was read; skipping it");
                        t.finish();
                        i += 1;
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            let final_eof =
                !self.opts.mode.is_streaming() || self.files[i].rotated || self.files[i].read_once;
            let t = &mut self.files[i];
            let room = max - out.len();
            let sink = out.sink_for(&t.schema()).map(|sink| {
                // Once, for the whole batch (a read into frames needs none).
                spans.reserve(room);
                (sink, &mut spans)
            });
            let in_sink = match t.next_frames(room, final_eof, &mut located, sink, io)? {
                Status::NeedsIo => return Ok(Fill::NeedsIo),
                Status::Waiting => return Ok(Fill::Waiting(i)),
                Status::Changed => {
                    self.handle_truncation(i)?;
                    continue;
                }
                Status::AtEnd => {
                    let t = &mut self.files[i];
                    if final_eof {
                        if t.rotated {
                            tracing::info!(path = %t.path().display(), "finished reading a rotated file");
                        }
                        t.finish();
                    } else {
                        t.retry_at_end();
                    }
                    i += 1;
                    continue;
                }
                Status::Frames { in_sink } => in_sink,
            };
            let stopped = if in_sink {
                self.hand_out_spans(i, &mut spans, out)?
            } else {
                self.hand_out(i, &mut located, out)?
            };
            if let Some(stop) = stopped {
                out.stop();
                self.files[i].rewind_to(stop, &self.opts)?;
                if out.len() == 0 {
                    return Err(self
                        .pending_error
                        .take()
                        .unwrap_or_else(|| Error::State("bad record without an error".into())));
                }
                return Ok(Fill::Done);
            }
            self.files[i].consume_all();
        }
        self.positions.extend_finished(&self.files);
        self.lag_bytes = self.positions.lag(&self.files);
        Ok(Fill::Done)
    }

    /// Hands frames' good records to `out`; returns the start of a bad record that stops the batch.
    fn hand_out(
        &mut self,
        i: usize,
        located: &mut Vec<Located>,
        out: &mut impl Output,
    ) -> Result<Option<(u64, u64)>> {
        for loc in located.drain(..) {
            let at = record_start(loc.start, loc.frame.skipped_bytes, loc.frame.skipped_lines);
            match loc.frame.result {
                Ok(values) => {
                    let values = Some((loc.frame.schema, values));
                    out.accept(values, (at.1 + 1) as i64, &mut self.event_time);
                }
                Err(message) => {
                    if let Some(stop) = self.bad_record(i, loc.start, at, loc.end, &message)? {
                        return Ok(Some(stop));
                    }
                }
            }
            self.bytes_read += loc.end.0 - loc.start.0;
            self.files[i].advance_to(loc.end);
        }
        Ok(None)
    }

    /// [`hand_out`](Self::hand_out) for records whose values the decoder
    /// appended to `out`'s columns; the first starts at file `i`'s position.
    fn hand_out_spans(
        &mut self,
        i: usize,
        spans: &mut Vec<Span>,
        out: &mut impl Output,
    ) -> Result<Option<(u64, u64)>> {
        let mut pos = (self.files[i].offset, self.files[i].line);
        for span in spans.drain(..) {
            let start = pos;
            let at = record_start(start, span.skipped_bytes, span.skipped_lines);
            pos = (pos.0 + span.len as u64, pos.1 + span.lines);
            match span.error {
                None => out.accept(None, (at.1 + 1) as i64, &mut self.event_time),
                Some(message) => {
                    if let Some(stop) = self.bad_record(i, start, at, pos, &message)? {
                        return Ok(Some(stop));
                    }
                }
            }
            self.bytes_read += span.len as u64;
        }
        self.files[i].advance_to(pos);
        Ok(None)
    }

    /// Applies the bad-record policy to the record of file `i` at `at`
    /// (byte, line) that ends at `end`, in the frame that begins at `start`;
    /// returns `start` when the batch must stop there.
    fn bad_record(
        &mut self,
        i: usize,
        start: (u64, u64),
        at: (u64, u64),
        end: (u64, u64),
        message: &str,
    ) -> Result<Option<(u64, u64)>> {
        let path = self.files[i].path().to_owned();
        self.bad_records += 1;
        metrics::counter!("velo_source_bad_records_total", "source" => "file").increment(1);
        match self.opts.errors {
            BadRecordPolicy::Fail => {
                self.pending_error = Some(Error::decode(location(&path, at), message));
                return Ok(Some(start));
            }
            BadRecordPolicy::Skip => {
                if self.bad_records == 1 || self.bad_records.is_multiple_of(self.opts.log_every) {
                    tracing::warn!(
                        bad_records = self.bad_records,
                        "skipping bad record at {}: {message}",
                        location(&path, at)
                    );
                }
            }
            BadRecordPolicy::DeadLetter => {
                let raw = self.files[i].raw_bytes(at.0, end.0);
                let letter = DeadLetter {
                    source: &path.display().to_string(),
                    byte_offset: at.0,
                    line: at.1 + 1,
                    error: message,
                    raw: String::from_utf8_lossy(&raw)
                        .trim_end_matches(['\n', '\r'])
                        .to_owned(),
                };
                if let Some(d) = &mut self.dead_letters {
                    d.write(&letter)?;
                }
            }
        }
        Ok(None)
    }

    fn position(&self) -> SourcePosition {
        SourcePosition::new(self.files.iter().map(Tracked::source_offset).collect())
    }

    /// [`position`](Self::position) for later, without copying its texts.
    fn snapshot(&mut self) -> Snapshot {
        let snapshot = self.positions.snapshot(&self.files);
        debug_assert_eq!(snapshot.position(), self.position());
        snapshot
    }

    /// The [`PositionKey`] of [`position`](Self::position), without
    /// building it.
    fn position_key(&mut self) -> PositionKey {
        let key = self.positions.key(&self.files);
        debug_assert_eq!(key, PositionKey::of(&self.position()));
        key
    }

    fn exhausted(&self) -> bool {
        self.scanned
            && self.files[self.positions.finished()..]
                .iter()
                .all(|t| t.finished)
    }
}

/// The first file the source covers, opened for its schema.
pub(crate) fn first_file(opts: &Arc<FileSourceOptions>) -> Result<Tracked> {
    let state = State::new(opts.clone())?;
    let first = state.candidates()?.into_iter().next().ok_or_else(|| {
        Error::io(
            &opts.path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no file matches"),
        )
    })?;
    Tracked::open(&first, None, opts, None)
}

fn is_hidden(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

/// Reads records from files. See the crate docs for modes and positions.
#[derive(Debug)]
pub struct FileReader {
    /// `None` only while a blocking task owns it. The mutex makes the reader
    /// `Sync` (a zstd decoder is not); `&mut self` paths never lock it.
    state: std::sync::Mutex<Option<State>>,
    /// The blocking pass in flight, kept here so that a caller whose future
    /// is dropped at its await (a timeout, a `select!`) leaves the reader
    /// usable: the next call waits for the pass and takes the state back.
    pass: Option<tokio::task::JoinHandle<(State, Result<Option<Unclaimed>>)>>,
    /// What such a pass read: the next read hands it out.
    unclaimed: Option<Unclaimed>,
    /// The position handed out (its snapshot), and the bytes read, when the reading pass
    /// in flight (or the one whose batch is unclaimed) started: the state's
    /// position is past records the caller has not got.
    pass_start: Option<(Snapshot, u64)>,
    opts: Arc<FileSourceOptions>,
    /// Kept alive for its events.
    _watcher: Option<ChangeWatcher>,
    changed: Arc<Notify>,
    woken: bool,
    last_scan: Instant,
    metrics: SourceMetrics,
    checkpoint: Option<(FileCheckpointStore, String)>,
    since_save: u64,
    last_save: Instant,
    delivered: u64,
    uncommitted: u64,
    /// The position (its key) and record count after each batch not yet
    /// committed, oldest first, for [`DataReader::commit_up_to`]. Bounded: a caller that reads
    /// without committing does not grow it.
    unacknowledged: VecDeque<(PositionKey, u64)>,
}

/// How many uncommitted batches [`FileReader`] remembers for `commit_up_to`.
const UNACKNOWLEDGED_BATCHES: usize = 64;

impl FileReader {
    pub(crate) fn new(opts: Arc<FileSourceOptions>) -> Result<Self> {
        let state = State::new(opts.clone())?;
        let watcher = match opts.mode {
            Mode::Tail | Mode::DirectoryWatch => {
                let (root, recursive) = watch_root(&opts.path);
                Some(ChangeWatcher::new(&root, recursive))
            }
            _ => None,
        };
        let changed = watcher
            .as_ref()
            .map_or_else(|| Arc::new(Notify::new()), |w| w.changed.clone());
        let checkpoint = opts
            .checkpoint_dir
            .as_ref()
            .map(|dir| (FileCheckpointStore::new(dir), checkpoint_key(&opts.path)));
        Ok(FileReader {
            state: std::sync::Mutex::new(Some(state)),
            pass: None,
            unclaimed: None,
            pass_start: None,
            opts,
            _watcher: watcher,
            changed,
            woken: false,
            last_scan: Instant::now(),
            metrics: SourceMetrics::new("file"),
            checkpoint,
            since_save: 0,
            last_save: Instant::now(),
            delivered: 0,
            uncommitted: 0,
            unacknowledged: VecDeque::new(),
        })
    }

    /// Loads this source's own checkpoint, if it keeps one.
    pub(crate) async fn load_checkpoint(&mut self) -> Result<()> {
        if let Some((store, key)) = &self.checkpoint
            && let Some(cp) = store.load(key).await?
        {
            tracing::info!(checkpoint = %store.path_of(key)?.display(), records = cp.records, "resuming from checkpoint");
            self.delivered = cp.records;
            self.restore(cp.position).await?;
        }
        Ok(())
    }

    fn state(&mut self) -> Result<&mut State> {
        self.state
            .get_mut()
            .map_err(|_| Error::State("the file reader panicked earlier".into()))?
            .as_mut()
            .ok_or_else(|| {
                Error::State("the file reader was interrupted in the middle of a read".into())
            })
    }

    fn with_state<T>(&self, f: impl FnOnce(&State) -> T) -> Result<T> {
        let guard = self
            .state
            .lock()
            .map_err(|_| Error::State("the file reader panicked earlier".into()))?;
        guard.as_ref().map(f).ok_or_else(|| {
            Error::State("the file reader was interrupted in the middle of a read".into())
        })
    }

    /// Runs `f` on the state in tokio's blocking pool. Cancel-safe: see
    /// [`FileReader::pass`].
    async fn run_blocking(
        &mut self,
        f: impl FnOnce(&mut State) -> Result<Option<Unclaimed>> + Send + 'static,
    ) -> Result<Option<Unclaimed>> {
        let slot = self
            .state
            .get_mut()
            .map_err(|_| Error::State("the file reader panicked earlier".into()))?;
        let mut state = slot.take().ok_or_else(|| {
            Error::State("the file reader lost its state in a failed read".into())
        })?;
        self.pass = Some(tokio::task::spawn_blocking(move || {
            let r = f(&mut state);
            (state, r)
        }));
        self.finish_pass().await
    }

    /// Waits for the blocking pass in flight, if any, and puts the state
    /// back; what the pass returned.
    async fn finish_pass(&mut self) -> Result<Option<Unclaimed>> {
        let Some(pass) = &mut self.pass else {
            return Ok(None);
        };
        let joined = pass.await;
        self.pass = None;
        let (state, result) =
            joined.map_err(|e| Error::State(format!("file read task failed: {e}")))?;
        *self
            .state
            .get_mut()
            .map_err(|_| Error::State("the file reader panicked earlier".into()))? = Some(state);
        result
    }

    /// Takes back a pass left behind by a dropped call: the records it read
    /// wait in `unclaimed` for the next read. Every `&mut self` entry point
    /// starts here.
    async fn settle(&mut self) -> Result<()> {
        if self.pass.is_none() {
            return Ok(());
        }
        let kept = self.finish_pass().await;
        match kept {
            Ok(Some(batch)) if batch.len() > 0 => self.unclaimed = Some(batch),
            other => {
                self.pass_start = None;
                other?;
            }
        }
        Ok(())
    }

    /// The position after the last record handed out.
    fn handed_out(&mut self) -> Result<SourcePosition> {
        match &self.pass_start {
            Some((start, _)) => Ok(start.position()),
            None => Ok(self.state()?.position()),
        }
    }

    /// One batch into a `new` output (records or columns), waiting up to
    /// the read timeout in the streaming modes; positions and metrics are
    /// kept the same way for both. A batch that needs a read the caller's
    /// task has not got yet is handed out short, so that dropping this
    /// future while it waits loses no record.
    async fn read_with<O: Output + Send + 'static>(
        &mut self,
        max_size: usize,
        new: fn(usize) -> O,
    ) -> Result<O> {
        let max = max_size.max(1);
        let deadline = Instant::now() + self.opts.read_timeout;
        let streaming = self.opts.mode.is_streaming();
        self.settle().await?;
        loop {
            let started = Instant::now();
            if let Some(kept) = self.unclaimed.take() {
                let bytes_before = self.pass_start.take().map_or(0, |(_, b)| b);
                let batch = O::from_unclaimed(kept, &mut self.state()?.event_time);
                return self.hand_out(batch, bytes_before, started);
            }
            let scan =
                streaming && (self.woken || self.last_scan.elapsed() >= self.opts.poll_interval);
            if scan {
                self.woken = false;
                self.last_scan = Instant::now();
            }
            let bytes_before = self.state()?.bytes_read;
            let mut batch = new(max);
            loop {
                // Records already in `batch` have left the reader's
                // position: this future must not be dropped (a timeout) at
                // an await while it holds any, so it waits only when empty,
                // counting what this fill just added.
                let fill = self.state()?.fill_into(max, scan, &mut batch, false)?;
                let empty = batch.len() == 0;
                match fill {
                    Fill::Done => break,
                    Fill::Waiting(i) if empty => self.state()?.files[i].wait_ahead().await,
                    Fill::NeedsIo if empty => {
                        self.pass_start = Some((self.state()?.snapshot(), bytes_before));
                        let filled = self
                            .run_blocking(move |s| {
                                s.fill_into(max, scan, &mut batch, true)?;
                                Ok(Some(batch.into_unclaimed()))
                            })
                            .await;
                        // Not reached when this future is dropped at the await.
                        self.pass_start = None;
                        let filled = filled?.expect("a reading pass returns its batch");
                        batch = O::from_unclaimed(filled, &mut self.state()?.event_time);
                        break;
                    }
                    // A shorter batch now; the rest comes with the next call.
                    Fill::Waiting(_) | Fill::NeedsIo => break,
                }
            }
            if batch.len() > 0 || !streaming {
                return self.hand_out(batch, bytes_before, started);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(batch);
            }
            let wait = self
                .opts
                .poll_interval
                .min(deadline - now)
                .max(Duration::from_millis(1));
            tokio::select! {
                _ = self.changed.notified() => self.woken = true,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Counts `batch` as handed out: metrics, and its position for
    /// `commit_up_to`.
    fn hand_out<O: Output>(&mut self, batch: O, bytes_before: u64, started: Instant) -> Result<O> {
        let n = batch.len();
        let bytes = self.state()?.bytes_read.saturating_sub(bytes_before);
        self.metrics.record_batch(n, bytes, started.elapsed());
        let lag = self.state()?.lag_bytes;
        self.metrics.set_lag("0", Lag::Bytes(lag));
        self.uncommitted += n as u64;
        if n > 0 {
            if self.unacknowledged.len() == UNACKNOWLEDGED_BATCHES {
                self.unacknowledged.pop_front();
            }
            let key = self.state()?.position_key();
            self.unacknowledged.push_back((key, n as u64));
        }
        Ok(batch)
    }

    /// Counts `records` up to `position` as delivered and saves this
    /// source's own checkpoint when one is due.
    async fn acknowledge(
        &mut self,
        position: SourcePosition,
        records: u64,
        exhausted: bool,
    ) -> Result<()> {
        // Dead letters of records read ahead are synced too: more is harmless.
        if let Some(d) = &mut self.state()?.dead_letters {
            d.sync()?;
        }
        self.delivered += records;
        self.since_save += records;
        self.uncommitted -= records.min(self.uncommitted);
        if self.checkpoint.is_some()
            && (self.since_save >= self.opts.checkpoint_interval
                || self.last_save.elapsed() >= self.opts.checkpoint_interval_time
                || exhausted)
        {
            self.save_checkpoint(position).await?;
        }
        Ok(())
    }

    async fn save_checkpoint(&mut self, position: SourcePosition) -> Result<()> {
        if let Some((store, key)) = &self.checkpoint {
            store
                .save(
                    key,
                    &Checkpoint::new(self.opts.path.clone(), position, self.delivered),
                )
                .await?;
        }
        self.since_save = 0;
        self.last_save = Instant::now();
        Ok(())
    }
}

/// The checkpoint key of a source path: readable, and unique per path.
pub(crate) fn checkpoint_key(path: &str) -> String {
    let name: String = Path::new(path)
        .file_name()
        .map(|n| {
            n.to_string_lossy()
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
                        c
                    } else {
                        '-'
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let name = name.trim_start_matches('.');
    format!("file-{name}-{:08x}", crc32fast::hash(path.as_bytes()))
}

/// The smallest CSV batch whose values `read_batch` has the decoder write
/// in place: smaller ones pay more for the batch's setup than they save
/// (measured when the records were built from columns: even at 8 records,
/// 7% slower at 4; 28% faster at 16).
const CSV_RECORDS_IN_PLACE: usize = 8;

#[async_trait]
impl DataReader for FileReader {
    async fn read(&mut self) -> Result<Option<StreamRecord>> {
        Ok(self.read_batch(1).await?.pop())
    }

    async fn read_batch(&mut self, max_size: usize) -> Result<Vec<StreamRecord>> {
        // CSV is typed a column at a time, each value written in place in
        // one block of values per batch that its records share (see
        // `velo_datasource_core::rows`): the type of each cell decided once
        // per column and one allocation per batch instead of per record.
        if self.opts.format.format == velo_datasource_core::FileFormat::Csv
            && max_size >= CSV_RECORDS_IN_PLACE
        {
            let out = self.read_with(max_size, RowsOut::new).await?;
            return Ok(out.records(&mut self.state()?.event_time));
        }
        Ok(self.read_with(max_size, Records::new).await?.records)
    }

    async fn read_columns(&mut self, max_size: usize) -> Result<Vec<ColumnBatch>> {
        let out = self.read_with(max_size, ColumnsOut::new).await?;
        Ok(out.finish(&mut self.state()?.event_time))
    }

    async fn commit(&mut self) -> Result<()> {
        self.settle().await?;
        let position = self.handed_out()?;
        let records = self.uncommitted;
        self.unacknowledged.clear();
        let exhausted = self.unclaimed.is_none() && self.state()?.exhausted();
        self.acknowledge(position, records, exhausted).await
    }

    fn supports_commit_up_to(&self) -> bool {
        true
    }

    async fn commit_up_to(&mut self, position: &SourcePosition) -> Result<()> {
        self.settle().await?;
        let key = PositionKey::of(position);
        let Some(at) = self.unacknowledged.iter().position(|(k, _)| *k == key) else {
            return Err(Error::State(format!(
                "commit_up_to: {} is not the position after an uncommitted batch of this reader",
                position.describe()
            )));
        };
        let records = self.unacknowledged.drain(..=at).map(|(_, n)| n).sum();
        // Exhausted only if nothing was read after `position`.
        let exhausted =
            self.unacknowledged.is_empty() && self.unclaimed.is_none() && self.state()?.exhausted();
        self.acknowledge(position.clone(), records, exhausted).await
    }

    async fn seek(&mut self, offset: SourceOffset) -> Result<()> {
        let SourceOffset::File { ref path, .. } = offset else {
            return Err(Error::Offset(format!(
                "not a file offset: {}",
                offset.describe()
            )));
        };
        self.settle().await?;
        let mut position = self.handed_out()?;
        position
            .offsets
            .retain(|o| !matches!(o, SourceOffset::File { path: p, .. } if p == path));
        position.offsets.push(offset);
        self.restore(position).await
    }

    async fn has_more(&self) -> Result<bool> {
        // A pass left behind by a dropped read may hold records.
        Ok(self.opts.mode.is_streaming()
            || self.pass_start.is_some()
            || !self.with_state(State::exhausted)?)
    }

    fn position(&self) -> Result<SourcePosition> {
        match &self.pass_start {
            Some((start, _)) => Ok(start.position()),
            None => self.with_state(State::position),
        }
    }

    async fn restore(&mut self, position: SourcePosition) -> Result<()> {
        // The new position replaces whatever an interrupted call read or
        // failed on; only the state is wanted back.
        let _ = self.settle().await;
        self.unclaimed = None;
        self.pass_start = None;
        let state = self.state()?;
        state.files.clear();
        state.positions.forget();
        state.scanned = false;
        state.pending_error = None;
        state.restore_from = Some(position);
        self.unacknowledged.clear();
        // Open the files now, so that a bad position fails here and not at the first read.
        self.run_blocking(|s| s.scan().map(|()| None)).await?;
        Ok(())
    }

    fn lag(&self) -> Option<Lag> {
        self.with_state(|s| Lag::Bytes(s.lag_bytes)).ok()
    }

    async fn close(&mut self) -> Result<()> {
        self.settle().await?;
        if self.checkpoint.is_some() {
            let position = self.handed_out()?;
            self.save_checkpoint(position).await?;
        }
        Ok(())
    }
}

/// Where the tracked files are by inode and by path, for one scan.
#[derive(Debug, Default)]
struct FileIndex {
    by_inode: HashMap<(u64, u64), Vec<usize>>,
    by_path: HashMap<PathBuf, Vec<usize>>,
}

impl FileIndex {
    fn of(files: &[Tracked]) -> Self {
        let mut index = FileIndex::default();
        for (i, t) in files.iter().enumerate() {
            index.add(t, i);
        }
        index
    }

    /// Adds `t`, at `i` in the files.
    fn add(&mut self, t: &Tracked, i: usize) {
        let identity = (t.fingerprint().dev, t.fingerprint().ino);
        self.by_inode.entry(identity).or_default().push(i);
        self.by_path.entry(t.path().to_owned()).or_default().push(i);
    }
}
