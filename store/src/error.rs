use std::path::PathBuf;

/// Everything that can go wrong reading or writing a store; each variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {message}")]
    Io {
        path: PathBuf,
        message: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Zarr { path: PathBuf, message: String },
    #[error("{path}: not an epk store: {message}")]
    NotEpk { path: PathBuf, message: String },
    #[error(
        "{path}: store format version {found} is not supported (this build reads version {supported})"
    )]
    Version {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{path} already exists; choose another path or remove it first")]
    Exists { path: PathBuf },
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

    pub(crate) fn invalid(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        StoreError::Invalid {
            path: path.into(),
            message: message.into(),
        }
    }
}
