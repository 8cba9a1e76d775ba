/// Why recording failed. The store keeps every step committed before the failure.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// Creating, opening or writing the store failed.
    #[error(transparent)]
    Store(#[from] epk_store::StoreError),
    /// A setting is missing or cannot work (no optimizer, an empty training set, a step
    /// larger than `max_batch`, an unsupported float type).
    #[error("recorder is not configured: {0}")]
    Config(String),
    /// The writer thread stopped (a write error) or recording has stopped or finished.
    #[error("the store writer stopped: {0}")]
    WriterGone(String),
    /// The model or the training loop does not fit the store (another model kind or
    /// parameter layout, other weights than the stored ones, an optimizer step without a
    /// training step).
    #[error("training does not match the recording: {0}")]
    Mismatch(String),
    /// A learning rate, dL/df or weight became NaN or infinite under
    /// [`NonFinite::Stop`](crate::NonFinite::Stop).
    #[error("non-finite value in training: {0}")]
    NonFinite(String),
    /// The model does something epk cannot make exact (a random forward pass such as
    /// Dropout in training mode, a batch statistic such as BatchNorm in training mode); the
    /// message names it and the alternatives.
    #[error("epk cannot make this model exact: {0}")]
    Unsupported(String),
    /// A tensor could not be read back as f64.
    #[error("cannot read a tensor: {0}")]
    Tensor(String),
}
