//! A file the edge re-reads when it changes (the users file, `agents.json`):
//! one rule for both. A change is a new modification time or size; a file
//! that fails to load, or disappears (an editor saving by delete-and-write,
//! a volume mounted late), is logged and the last good content kept, so a
//! bad edit never empties a running edge.

use arc_swap::ArcSwap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// What identifies a version of the file; `None` while it does not exist.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// What a look at the file found, for its owner to log in its own words.
pub enum Reload<'a, T> {
    /// A new version was loaded.
    Loaded(&'a T),
    /// The new version was refused (why); the last good content stays.
    Rejected(&'a str),
    /// The file is gone; the last good content stays.
    Vanished,
}

/// The parsed content of a file, re-read when the file changes.
pub struct WatchedFile<T> {
    path: PathBuf,
    current: ArcSwap<T>,
    seen: Mutex<Stamp>,
    checked: Mutex<Instant>,
    load: fn(&Path) -> Result<T, String>,
    report: fn(&Path, Reload<'_, T>),
}

impl<T> WatchedFile<T> {
    /// Starts from `initial` (what the caller loaded, or a fallback) as the
    /// content of `path` as it is now; `load` reads later versions, `report`
    /// says what happened (the owner logs it under its own target).
    pub fn new(
        path: &Path,
        initial: T,
        load: fn(&Path) -> Result<T, String>,
        report: fn(&Path, Reload<'_, T>),
    ) -> Self {
        Self {
            path: path.to_path_buf(),
            current: ArcSwap::from_pointee(initial),
            seen: Mutex::new(stamp(path)),
            checked: Mutex::new(Instant::now()),
            load,
            report,
        }
    }

    /// The content, without looking at the file.
    pub fn current(&self) -> Arc<T> {
        self.current.load_full()
    }

    /// The content, after re-reading the file if it changed. Looking,
    /// loading and storing happen under one lock, so two callers racing
    /// over two quick edits cannot leave the older version stored last.
    pub fn refresh(&self) -> Arc<T> {
        if let Ok(mut at) = self.checked.lock() {
            *at = Instant::now();
        }
        if let Ok(mut seen) = self.seen.lock() {
            let now = stamp(&self.path);
            if *seen != now {
                let vanished = now.is_none();
                *seen = now;
                if vanished {
                    (self.report)(&self.path, Reload::Vanished);
                } else {
                    self.reload();
                }
            }
        }
        self.current()
    }

    /// As [`Self::refresh`], but looks at the file at most once per `every`:
    /// for callers on the request path.
    pub fn refresh_at_most(&self, every: Duration) -> Arc<T> {
        let due = self.checked.lock().is_ok_and(|at| at.elapsed() >= every);
        if due { self.refresh() } else { self.current() }
    }

    fn reload(&self) {
        match (self.load)(&self.path) {
            Ok(v) => {
                (self.report)(&self.path, Reload::Loaded(&v));
                self.current.store(Arc::new(v));
            }
            Err(e) => (self.report)(&self.path, Reload::Rejected(&e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbers(path: &Path) -> Result<Vec<u32>, String> {
        let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
        text.split_whitespace()
            .map(|w| w.parse().map_err(|_| format!("not a number: {w}")))
            .collect()
    }

    fn quiet(_: &Path, _: Reload<'_, Vec<u32>>) {}

    #[test]
    fn changes_are_read_and_bad_or_missing_files_keep_the_last_good_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.txt");
        std::fs::write(&path, "1 2").unwrap();
        let f = WatchedFile::new(&path, numbers(&path).unwrap(), numbers, quiet);
        assert_eq!(*f.refresh(), vec![1, 2]);
        std::fs::write(&path, "1 2 3").unwrap();
        assert_eq!(*f.refresh(), vec![1, 2, 3], "a new size is a change");
        std::fs::write(&path, "1 x 3").unwrap();
        assert_eq!(*f.refresh(), vec![1, 2, 3], "a broken edit is refused");
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            *f.refresh(),
            vec![1, 2, 3],
            "a vanished file keeps the list"
        );
        std::fs::write(&path, "7").unwrap();
        assert_eq!(*f.refresh(), vec![7], "it comes back");
    }

    #[test]
    fn the_request_path_looks_at_most_once_per_interval() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.txt");
        std::fs::write(&path, "1").unwrap();
        let f = WatchedFile::new(&path, vec![1], numbers, quiet);
        std::fs::write(&path, "2 2").unwrap();
        assert_eq!(*f.refresh_at_most(Duration::from_secs(3600)), vec![1]);
        assert_eq!(*f.refresh_at_most(Duration::ZERO), vec![2, 2]);
    }
}
