use std::path::PathBuf;

/// Everything that can go wrong reading or writing a store; each variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file system refused a read or write.
    #[error("{path}: {message}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What was being done.
        message: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// zarrs could not open, create, encode or decode something.
    #[error("{path}: {message}")]
    Zarr {
        /// The file or folder.
        path: PathBuf,
        /// What was being done, and zarrs' error.
        message: String,
    },
    /// The path holds something other than an epk store.
    #[error("{path}: not an epk store: {message}")]
    NotEpk {
        /// The root metadata file.
        path: PathBuf,
        /// What is missing.
        message: String,
    },
    /// An epk store of a format version this build does not read.
    #[error(
        "{path}: store format version {found} is not supported (this build reads version {supported})"
    )]
    Version {
        /// The root metadata file.
        path: PathBuf,
        /// The store's version.
        found: u32,
        /// The version this build reads, [`FORMAT_VERSION`](crate::FORMAT_VERSION).
        supported: u32,
    },
    /// Data that breaks the format: damage, or a step or data set that does not fit the store.
    #[error("{path}: {message}")]
    Invalid {
        /// The file (or the store) at fault.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Another writer holds the store's lock ([`WriterLock`](crate::WriterLock)).
    #[error(
        "{path} is being written by {holder} (lock file {lock}); let that run end or stop it first"
    )]
    Locked {
        /// The store.
        path: PathBuf,
        /// The lock file beside it.
        lock: PathBuf,
        /// Who holds it: process, program, host and since when.
        holder: String,
    },
    /// The store's folder is on a file system where a file lock may not keep out a writer
    /// on another machine.
    #[error(
        "{path} is on {fs}, where a file lock may not keep out a writer on another machine; make sure no other machine writes it and allow the lock explicitly (Recorder::allow_network_lock)"
    )]
    UntrustedLock {
        /// The store.
        path: PathBuf,
        /// The file system's kind (NFS, SMB, FUSE, …).
        fs: String,
    },
    /// The store or its lock file was removed or replaced while being written: writing on
    /// would write into a store nobody reads, or into another writer's.
    #[error("{path}: {message}; recording stopped")]
    Gone {
        /// The store or its lock file.
        path: PathBuf,
        /// What happened to it.
        message: String,
    },
    /// A new store's path is taken.
    #[error("{path} already exists; choose another path or remove it first")]
    Exists {
        /// The path.
        path: PathBuf,
    },
}

impl StoreError {
    pub(crate) fn zarr(path: impl Into<PathBuf>, what: &str, err: impl std::fmt::Display) -> Self {
        StoreError::Zarr {
            path: path.into(),
            message: format!("{what}: {err}"),
        }
    }

    /// Wraps an I/O error about `path`, for `map_err`.
    pub(crate) fn io(path: &std::path::Path, message: &str) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.to_path_buf();
        let message = message.to_string();
        move |source| StoreError::Io {
            path,
            message,
            source,
        }
    }

    pub(crate) fn gone(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        StoreError::Gone {
            path: path.into(),
            message: message.into(),
        }
    }

    pub(crate) fn invalid(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        StoreError::Invalid {
            path: path.into(),
            message: message.into(),
        }
    }
}
