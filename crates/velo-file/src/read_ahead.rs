//! The next bytes of a plain file, read on the blocking pool while the
//! caller decodes the bytes before them.
//!
//! Decoding on the caller's task keeps records on the core that uses them,
//! but the caller must never wait on file I/O there. So the reader decodes
//! what it has already read, and reads the next chunk in the background: in
//! a long file the caller only finds it done. Each wait for another thread
//! costs a sleep and a wake-up; on this project's 2-core benchmark machine
//! the CSV reader into columns went from 3.44 to 4.96 M records/s (medians
//! of alternating runs) once it stopped waiting.

use std::fs::File;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use tokio::task::JoinHandle;

/// One background read of `len` bytes at `pos`.
pub(crate) struct ReadAhead {
    pos: u64,
    task: Task,
}

enum Task {
    Running(JoinHandle<io::Result<Vec<u8>>>),
    Done(io::Result<Vec<u8>>),
}

/// Free bytes before the bytes read, in the buffer a read ahead returns:
/// the reader moves the few bytes it still needs from its own buffer there
/// and keeps the new one, rather than appending 256 KB to its own (a copy
/// that was a thirtieth of reading CSV into columns, by cachegrind).
pub(crate) const HEADROOM: usize = 64 * 1024;

impl std::fmt::Debug for ReadAhead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadAhead")
            .field("pos", &self.pos)
            .field("done", &matches!(self.task, Task::Done(_)))
            .finish()
    }
}

impl ReadAhead {
    /// Starts reading up to `len` bytes of `file` at `pos` into `buf` (a
    /// spare buffer, its contents of no account, or an empty one); `None`
    /// outside a Tokio runtime.
    pub(crate) fn start(file: Arc<File>, pos: u64, len: usize, mut buf: Vec<u8>) -> Option<Self> {
        let handle = tokio::runtime::Handle::try_current().ok()?;
        let task = handle.spawn_blocking(move || {
            // A reused buffer is already initialized: only growth is zeroed.
            buf.resize(HEADROOM + len, 0);
            let n = read_at(&file, &mut buf[HEADROOM..], pos)?;
            buf.truncate(HEADROOM + n);
            Ok(buf)
        });
        Some(ReadAhead {
            pos,
            task: Task::Running(task),
        })
    }

    /// Where the bytes start.
    pub(crate) fn pos(&self) -> u64 {
        self.pos
    }

    /// The bytes after [`HEADROOM`] free ones (none at the end of the
    /// file), if the read is over; `None` while it runs.
    pub(crate) fn try_take(&mut self) -> Option<io::Result<Vec<u8>>> {
        if let Task::Running(task) = &mut self.task {
            let mut cx = Context::from_waker(Waker::noop());
            match Pin::new(task).poll(&mut cx) {
                Poll::Ready(done) => self.task = Task::Done(done.unwrap_or_else(joined)),
                Poll::Pending => return None,
            }
        }
        match std::mem::replace(&mut self.task, Task::Done(Ok(Vec::new()))) {
            Task::Done(result) => Some(result),
            Task::Running(_) => unreachable!("polled to completion above"),
        }
    }

    /// Waits for the read to finish; [`try_take`](Self::try_take) then has it.
    pub(crate) async fn wait(&mut self) {
        if let Task::Running(task) = &mut self.task {
            self.task = Task::Done(task.await.unwrap_or_else(joined));
        }
    }
}

/// A read task that panicked or was cancelled, as an I/O error.
fn joined(e: tokio::task::JoinError) -> io::Result<Vec<u8>> {
    Err(io::Error::other(format!("read-ahead task failed: {e}")))
}

/// Reads at `pos` without moving (or depending on) the file's offset.
#[cfg(unix)]
pub(crate) fn read_at(file: &File, buf: &mut [u8], pos: u64) -> io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(file, buf, pos)
}

/// Reads at `pos` (Windows moves the offset; the reader never uses it).
#[cfg(windows)]
pub(crate) fn read_at(file: &File, buf: &mut [u8], pos: u64) -> io::Result<usize> {
    std::os::windows::fs::FileExt::seek_read(file, buf, pos)
}
