/// Why a replay could not run. A replay that ran but did not verify is not an error: it is a
/// report with `passed == false`.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    /// The store could not be read.
    Store(#[from] epk_store::StoreError),
    #[error("model does not match the store: {0}")]
    /// The model rebuilt for replay does not match the store.
    Model(String),
    #[error(transparent)]
    /// The stored optimizer cannot be replayed.
    Optimizer(#[from] epk_optim::OptimError),
    #[error("epk cannot make this model exact: {0}")]
    /// The rebuilt network is not what exact replay needs (a random forward pass, f32
    /// arithmetic inside an f64 network).
    Unsupported(String),
    #[error("{0}")]
    /// Bad input: an option, a point, a scratch file.
    Input(String),
}
