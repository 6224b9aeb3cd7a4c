//! What the reader keeps of its positions between batches: a snapshot of
//! the position a blocking pass started from, the key of each position
//! handed out (for `commit_up_to`), and the bytes left to read.
//!
//! A position lists every file, but a batch reads from a few of them: the
//! others (finished, or not reached yet) keep their entries. So the files
//! are cut into chunks of [`CHUNK`], and each chunk's snapshot, key and
//! bytes left are kept until the reader touches one of its files. Per
//! batch, a snapshot or a key costs a reference or a number per chunk and
//! the chunks the batch read from. Before, they copied and hashed every
//! entry per batch: a bounded glob of 50,000 small files spent half its
//! reading time doing that, and the time per record grew with the number
//! of files.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use velo_datasource_core::{SourceOffset, SourcePosition};

use crate::tracked::{self, KeyParts, OffsetSnapshot, Tracked};

/// Files per chunk whose part of a position is kept, and entries per chunk
/// of a [`PositionKey`].
const CHUNK: usize = 256;

/// A position as the reader remembers it for `commit_up_to`: a 64-bit hash
/// of its entries. The positions themselves list every file: 64 of them
/// for a glob of 10,000 files read without commits held about 120 MiB.
///
/// The hash is taken in two levels, every [`CHUNK`] entries and then over
/// those chunks' hashes, so that the reader can keep the hashes of the
/// chunks it did not touch and hash only the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PositionKey(u64);

impl PositionKey {
    /// The key of a position given back by a caller.
    pub(crate) fn of(position: &SourcePosition) -> Self {
        let chunks = position
            .offsets
            .chunks(CHUNK)
            .map(|chunk| chunk_key(chunk.iter().map(offset_parts)));
        Self::from_chunks(chunks, position.offsets.len())
    }

    /// The key of `files` entries whose chunks' keys are `chunks`.
    fn from_chunks(chunks: impl Iterator<Item = u64>, files: usize) -> Self {
        let mut h = DefaultHasher::new();
        chunks.for_each(|k| h.write_u64(k));
        files.hash(&mut h);
        PositionKey(h.finish())
    }
}

/// The key of one chunk of entries.
fn chunk_key(entries: impl Iterator<Item = KeyParts>) -> u64 {
    let mut h = DefaultHasher::new();
    for (text, offset, line) in entries {
        h.write_u64(text);
        h.write_u64(offset);
        h.write_u64(line);
    }
    h.finish()
}

/// The [`KeyParts`] of a caller's entry. One that is not a file's is not
/// one of this reader's, and matches none of its entries.
fn offset_parts(offset: &SourceOffset) -> KeyParts {
    match offset {
        SourceOffset::File {
            path,
            byte_offset,
            line_number,
            fingerprint,
        } => (
            tracked::text_hash(path, fingerprint.as_deref()),
            *byte_offset,
            *line_number,
        ),
        other => {
            let mut h = DefaultHasher::new();
            other.describe().hash(&mut h);
            (h.finish(), u64::MAX, u64::MAX)
        }
    }
}

/// A position taken without copying its texts: a blocking pass keeps the
/// position it started from this way, in case its caller goes away.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot(Vec<Arc<[OffsetSnapshot]>>);

impl Snapshot {
    /// The position this is a snapshot of.
    pub(crate) fn position(&self) -> SourcePosition {
        let entries = self.0.iter().flat_map(|c| c.iter());
        SourcePosition::new(entries.map(OffsetSnapshot::source_offset).collect())
    }
}

/// What the reader keeps of its files' positions, a chunk at a time.
///
/// The reader calls [`touch`](Self::touch) with each file it is about to
/// read from or change, [`forget`](Self::forget) wherever its list of
/// files changes other than by a file added at the end, and
/// [`extend_finished`](Self::extend_finished) once files were finished.
#[derive(Debug, Default)]
pub(crate) struct PositionCache {
    /// The files before this one are all finished.
    finished: usize,
    /// One per chunk of files, `None` until made or once touched.
    chunks: Vec<Option<Chunk>>,
}

/// One chunk's part of a position.
#[derive(Debug)]
struct Chunk {
    entries: Arc<[OffsetSnapshot]>,
    key: u64,
    /// Bytes not yet handed out of its unfinished files.
    lag: u64,
}

impl Chunk {
    fn of(files: &[Tracked]) -> Self {
        let entries: Arc<[OffsetSnapshot]> = files.iter().map(Tracked::snapshot).collect();
        Chunk {
            key: chunk_key(entries.iter().map(OffsetSnapshot::key_parts)),
            entries,
            lag: files
                .iter()
                .filter(|t| !t.finished)
                .map(Tracked::known_remaining)
                .sum(),
        }
    }
}

impl PositionCache {
    /// The number of leading files known to be finished: a walk for work
    /// to do can start there.
    pub(crate) fn finished(&self) -> usize {
        self.finished
    }

    /// Forgets everything: the files may have changed.
    pub(crate) fn forget(&mut self) {
        *self = PositionCache::default();
    }

    /// Forgets what was kept of file `i`'s chunk: the file is about to change.
    pub(crate) fn touch(&mut self, i: usize) {
        if let Some(chunk) = self.chunks.get_mut(i / CHUNK) {
            *chunk = None;
        }
    }

    /// Takes in the files finished since the last call.
    pub(crate) fn extend_finished(&mut self, files: &[Tracked]) {
        self.finished += files[self.finished..]
            .iter()
            .take_while(|t| t.finished)
            .count();
    }

    /// Each chunk of `files`, made where it is not kept.
    fn chunks<'a>(&'a mut self, files: &[Tracked]) -> impl Iterator<Item = &'a Chunk> {
        self.chunks
            .resize_with(files.len().div_ceil(CHUNK), || None);
        self.chunks
            .iter_mut()
            .zip(files.chunks(CHUNK))
            .map(|(kept, files)| {
                // A file added at the end of a chunk: made again.
                if kept
                    .as_ref()
                    .is_some_and(|c| c.entries.len() != files.len())
                {
                    *kept = None;
                }
                &*kept.get_or_insert_with(|| Chunk::of(files))
            })
    }

    /// A [`Snapshot`] of the position of `files`.
    pub(crate) fn snapshot(&mut self, files: &[Tracked]) -> Snapshot {
        Snapshot(self.chunks(files).map(|c| c.entries.clone()).collect())
    }

    /// The [`PositionKey`] of the position of `files`, without building it.
    pub(crate) fn key(&mut self, files: &[Tracked]) -> PositionKey {
        let n = files.len();
        PositionKey::from_chunks(self.chunks(files).map(|c| c.key), n)
    }

    /// The bytes of `files` not yet handed out, as of their last stat or read.
    pub(crate) fn lag(&mut self, files: &[Tracked]) -> u64 {
        self.chunks(files).map(|c| c.lag).sum()
    }
}
