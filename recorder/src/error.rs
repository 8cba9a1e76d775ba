/// Why recording failed. The store keeps every step committed before the failure.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Store(#[from] epk_store::StoreError),
    #[error("recorder is not configured: {0}")]
    Config(String),
    #[error("the store writer stopped: {0}")]
    WriterGone(String),
    #[error("training does not match the recording: {0}")]
    Mismatch(String),
    #[error("non-finite value in training: {0}")]
    NonFinite(String),
    #[error("cannot read a tensor: {0}")]
    Tensor(String),
}
