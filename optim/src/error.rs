/// Why a stored optimizer cannot be replayed.
#[derive(Debug, thiserror::Error)]
pub enum OptimError {
    /// The stored configuration names an optimizer epk does not decompose, or a field of it
    /// cannot be read.
    #[error("{0}")]
    Config(String),
}
