/// Why a replay could not run. A replay that ran but did not verify is not an error: it is a
/// report with `passed == false`.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Store(#[from] epk_store::StoreError),
    #[error("model does not match the store: {0}")]
    Model(String),
    #[error("{0}")]
    Input(String),
}
