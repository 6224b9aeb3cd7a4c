//! Checkpoints: a reader's position saved so that a restart resumes there.
//!
//! [`FileCheckpointStore`] writes each checkpoint to a temp file, fsyncs it,
//! renames it over the old one and fsyncs the directory, so a crash leaves
//! either the old checkpoint or the new one, never a torn one. A checkpoint
//! that cannot be parsed is an error that names the file and what to do: a
//! pipeline never silently starts over from zero.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::offset::SourcePosition;

/// A saved position with what is needed to judge it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Where to resume.
    pub position: SourcePosition,
    /// When it was saved.
    pub saved_at: DateTime<Utc>,
    /// Records delivered up to this checkpoint, over the pipeline's life.
    pub records: u64,
    /// The source it belongs to (redacted URI), to catch a checkpoint used
    /// with the wrong source.
    pub source: String,
}

impl Checkpoint {
    /// A checkpoint saved now.
    pub fn new(source: impl Into<String>, position: SourcePosition, records: u64) -> Self {
        Checkpoint {
            position,
            saved_at: Utc::now(),
            records,
            source: source.into(),
        }
    }
}

/// The on-disk form carries a version so that later layouts can still read this one.
#[derive(Serialize, Deserialize)]
#[serde(tag = "version")]
enum Stored {
    #[serde(rename = "1")]
    V1(Checkpoint),
}

/// Where checkpoints are kept, by key.
#[async_trait]
pub trait CheckpointStore: Send + Sync + std::fmt::Debug {
    /// The checkpoint under `key`, `None` if there is none yet, an error if it is unreadable.
    async fn load(&self, key: &str) -> Result<Option<Checkpoint>>;

    /// Replaces the checkpoint under `key` atomically.
    async fn save(&self, key: &str, checkpoint: &Checkpoint) -> Result<()>;

    /// Every key that has a checkpoint.
    async fn keys(&self) -> Result<Vec<String>>;

    /// Removes the checkpoint under `key` (no error if there is none).
    async fn delete(&self, key: &str) -> Result<()>;
}

/// Checkpoints as `<dir>/<key>.checkpoint.json` files.
#[derive(Debug, Clone)]
pub struct FileCheckpointStore {
    dir: PathBuf,
}

const SUFFIX: &str = ".checkpoint.json";

impl FileCheckpointStore {
    /// A store in `dir` (created on first save).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FileCheckpointStore { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file that holds `key`.
    pub fn path_of(&self, key: &str) -> Result<PathBuf> {
        validate_key(key)?;
        Ok(self.dir.join(format!("{key}{SUFFIX}")))
    }

    fn load_blocking(path: &Path) -> Result<Option<Checkpoint>> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(path, e)),
        };
        match serde_json::from_slice::<Stored>(&bytes) {
            Ok(Stored::V1(c)) => Ok(Some(c)),
            Err(e) => Err(Error::Checkpoint {
                path: path.to_owned(),
                message: format!(
                    "is corrupt ({e}); it was not written by this program or was damaged outside it. \
                     Restore it from a backup, or move it away to start this pipeline from the beginning"
                ),
            }),
        }
    }

    fn save_blocking(dir: &Path, path: &Path, checkpoint: &Checkpoint) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let tmp = temp_path(path);
        let body = serde_json::to_vec_pretty(&Stored::V1(checkpoint.clone())).map_err(|e| {
            Error::Checkpoint {
                path: path.to_owned(),
                message: format!("cannot be serialized: {e}"),
            }
        })?;
        {
            let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
            f.write_all(&body).map_err(|e| Error::io(&tmp, e))?;
            f.sync_all().map_err(|e| Error::io(&tmp, e))?;
        }
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
        sync_dir(dir)
    }
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> Result<()> {
    Ok(())
}

fn validate_key(key: &str) -> Result<()> {
    let ok = !key.is_empty()
        && key.len() <= 200
        && !key.starts_with('.')
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_value(
            "checkpoint key",
            key,
            "use letters, digits, `-`, `_` and `.` (not first), at most 200",
        ))
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::State(format!("checkpoint task failed: {e}")))?
}

#[async_trait]
impl CheckpointStore for FileCheckpointStore {
    async fn load(&self, key: &str) -> Result<Option<Checkpoint>> {
        let path = self.path_of(key)?;
        blocking(move || Self::load_blocking(&path)).await
    }

    async fn save(&self, key: &str, checkpoint: &Checkpoint) -> Result<()> {
        let path = self.path_of(key)?;
        let dir = self.dir.clone();
        let checkpoint = checkpoint.clone();
        blocking(move || Self::save_blocking(&dir, &path, &checkpoint)).await
    }

    async fn keys(&self) -> Result<Vec<String>> {
        let dir = self.dir.clone();
        blocking(move || {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(Error::io(&dir, e)),
            };
            let mut keys = Vec::new();
            for entry in entries {
                let entry = entry.map_err(|e| Error::io(&dir, e))?;
                if let Some(key) = entry
                    .file_name()
                    .to_str()
                    .and_then(|n| n.strip_suffix(SUFFIX))
                {
                    keys.push(key.to_owned());
                }
            }
            keys.sort();
            Ok(keys)
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let path = self.path_of(key)?;
        blocking(move || match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(&path, e)),
        })
        .await
    }
}

/// Checkpoints in memory, for tests and embedding.
#[derive(Debug, Default)]
pub struct MemoryCheckpointStore {
    map: Mutex<BTreeMap<String, Checkpoint>>,
}

impl MemoryCheckpointStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl CheckpointStore for MemoryCheckpointStore {
    async fn load(&self, key: &str) -> Result<Option<Checkpoint>> {
        Ok(self.map.lock().map_err(poisoned)?.get(key).cloned())
    }

    async fn save(&self, key: &str, checkpoint: &Checkpoint) -> Result<()> {
        self.map
            .lock()
            .map_err(poisoned)?
            .insert(key.to_owned(), checkpoint.clone());
        Ok(())
    }

    async fn keys(&self) -> Result<Vec<String>> {
        Ok(self.map.lock().map_err(poisoned)?.keys().cloned().collect())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.map.lock().map_err(poisoned)?.remove(key);
        Ok(())
    }
}

fn poisoned<T>(_: std::sync::PoisonError<T>) -> Error {
    Error::State("checkpoint store lock poisoned by a panic".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offset::SourceOffset;

    fn checkpoint(line: u64) -> Checkpoint {
        Checkpoint::new(
            "file:///in.csv",
            SourcePosition::new(vec![SourceOffset::File {
                path: "/in.csv".into(),
                byte_offset: line * 10,
                line_number: line,
                fingerprint: None,
            }]),
            line,
        )
    }

    #[tokio::test]
    async fn save_load_replace() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileCheckpointStore::new(dir.path().join("cp"));
        assert_eq!(store.load("pipe").await.unwrap(), None);
        store.save("pipe", &checkpoint(1)).await.unwrap();
        let second = checkpoint(2);
        store.save("pipe", &second).await.unwrap();
        assert_eq!(store.load("pipe").await.unwrap(), Some(second));
        assert_eq!(store.keys().await.unwrap(), vec!["pipe".to_owned()]);
        store.delete("pipe").await.unwrap();
        assert_eq!(store.load("pipe").await.unwrap(), None);
    }

    #[tokio::test]
    async fn torn_temp_file_does_not_replace_good_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileCheckpointStore::new(dir.path());
        let good = checkpoint(7);
        store.save("pipe", &good).await.unwrap();
        // A crash during the next save leaves half a temp file and no rename.
        let path = store.path_of("pipe").unwrap();
        let full = serde_json::to_vec(&Stored::V1(checkpoint(8))).unwrap();
        std::fs::write(temp_path(&path), &full[..full.len() / 2]).unwrap();
        assert_eq!(store.load("pipe").await.unwrap(), Some(good));
        assert_eq!(store.keys().await.unwrap(), vec!["pipe".to_owned()]);
        // The next save goes through over the leftover.
        let next = checkpoint(9);
        store.save("pipe", &next).await.unwrap();
        assert_eq!(store.load("pipe").await.unwrap(), Some(next));
        assert!(!temp_path(&path).exists());
    }

    #[tokio::test]
    async fn corrupt_checkpoint_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileCheckpointStore::new(dir.path());
        let path = store.path_of("pipe").unwrap();
        std::fs::write(&path, b"{\"version\":\"1\",\"position\":").unwrap();
        let err = store.load("pipe").await.unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(
            err.contains("corrupt") && err.contains("move it away"),
            "{err}"
        );
        std::fs::write(&path, b"{\"version\":\"99\"}").unwrap();
        assert!(store.load("pipe").await.is_err());
    }

    #[tokio::test]
    async fn keys_are_validated() {
        let store = FileCheckpointStore::new("/nonexistent");
        assert!(store.load("../etc/passwd").await.is_err());
        assert!(store.load(".hidden").await.is_err());
        assert!(store.path_of("my-pipeline_1.source").is_ok());
    }

    #[tokio::test]
    async fn memory_store() {
        let store = MemoryCheckpointStore::new();
        let c = checkpoint(3);
        store.save("a", &c).await.unwrap();
        assert_eq!(store.load("a").await.unwrap(), Some(c));
        assert_eq!(store.keys().await.unwrap(), vec!["a".to_owned()]);
    }
}
