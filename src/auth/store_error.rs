//! Failures of the sign-in's SQLite stores (sessions, known devices), typed
//! so that callers can tell a poisoned lock or missing randomness from a
//! busy or broken database.

use std::path::PathBuf;

/// Why the session or device store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database file (or its directory) could not be opened or set up.
    #[error("{path}: {source}")]
    Open {
        /// The file or directory.
        path: PathBuf,
        /// What went wrong.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A thread panicked while holding the store; nothing more is trusted.
    #[error("{0} store lock poisoned")]
    Poisoned(&'static str),
    /// SQLite refused a statement (busy past its timeout, disk full, ...).
    #[error("{0} store: {1}")]
    Db(&'static str, rusqlite::Error),
    /// The OS gave no randomness for a new id.
    #[error("no randomness for a {0} id: {1}")]
    Random(&'static str, getrandom::Error),
    /// The shared Redis did not answer or refused (the message says which).
    #[error("{0} store: {1}")]
    Shared(&'static str, crate::redis_link::LinkError),
    /// The caller's input was refused (the message says why).
    #[error("{0}")]
    Refused(&'static str),
}

impl StoreError {
    /// Whether the store could not be reached (Redis down): the caller
    /// answers 503 instead of treating the session as unknown.
    pub fn unreachable(&self) -> bool {
        matches!(
            self,
            Self::Shared(_, crate::redis_link::LinkError::Unreachable { .. })
        )
    }

    /// An open failure of `path`.
    pub fn open(path: &std::path::Path, e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Open {
            path: path.to_path_buf(),
            source: Box::new(e),
        }
    }
}
