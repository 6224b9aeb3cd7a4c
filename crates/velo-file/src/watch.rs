//! Waking the reader when files change: `notify` events, polling as fallback.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use notify::{RecursiveMode, Watcher};
use tokio::sync::Notify;

/// Keeps a file-system watcher alive and signals `changed` on every event.
pub(crate) struct ChangeWatcher {
    _watcher: Option<notify::RecommendedWatcher>,
    pub(crate) changed: Arc<Notify>,
}

impl std::fmt::Debug for ChangeWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeWatcher")
            .field("events", &self._watcher.is_some())
            .finish()
    }
}

impl ChangeWatcher {
    /// Watches `dir` (recursively when `recursive`); without events the
    /// reader still polls, so a failure here only costs latency.
    pub(crate) fn new(dir: &Path, recursive: bool) -> Self {
        let changed = Arc::new(Notify::new());
        let signal = changed.clone();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if event.is_ok() {
                signal.notify_one();
            }
        })
        .and_then(|mut w| {
            let mode = if recursive {
                RecursiveMode::Recursive
            } else {
                RecursiveMode::NonRecursive
            };
            w.watch(dir, mode).map(|()| w)
        });
        match watcher {
            Ok(w) => ChangeWatcher {
                _watcher: Some(w),
                changed,
            },
            Err(e) => {
                tracing::info!(dir = %dir.display(), "file-system events unavailable ({e}); polling instead");
                ChangeWatcher {
                    _watcher: None,
                    changed,
                }
            }
        }
    }
}

/// The directory to watch for `path`: its parent, or for a glob the longest
/// directory prefix without wildcards. Also says whether the glob recurses.
pub(crate) fn watch_root(path: &str) -> (PathBuf, bool) {
    let p = Path::new(path);
    if p.is_dir() {
        return (p.to_owned(), false);
    }
    let mut root = PathBuf::new();
    let mut recursive = false;
    let comps: Vec<_> = p.components().collect();
    for (i, c) in comps.iter().enumerate() {
        let s = c.as_os_str().to_string_lossy();
        if s.contains(['*', '?', '[']) {
            recursive = s == "**" || i + 1 < comps.len();
            break;
        }
        if i + 1 == comps.len() {
            break;
        }
        root.push(c);
    }
    if root.as_os_str().is_empty() {
        root.push(".");
    }
    (root, recursive)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots() {
        assert_eq!(
            watch_root("/var/log/app.log"),
            (PathBuf::from("/var/log"), false)
        );
        assert_eq!(
            watch_root("/var/log/*.log"),
            (PathBuf::from("/var/log"), false)
        );
        assert_eq!(watch_root("/var/**/x.log"), (PathBuf::from("/var"), true));
        assert_eq!(watch_root("app.log"), (PathBuf::from("."), false));
    }
}
