//! What the examples share: preparing the store path.

use anyhow::{Context, Result, bail};
use std::path::Path;

/// Makes room for a new store at `path`: refuses to touch an existing path unless `overwrite`,
/// and never deletes a Zarr store that is not an epk store.
pub fn prepare_store(path: &Path, overwrite: bool) -> Result<()> {
    if path.exists() {
        if !overwrite {
            bail!("{} exists; pass --overwrite to replace it", path.display());
        }
        if epk::store::StoreReader::open(path).is_err() && path.join("zarr.json").exists() {
            bail!(
                "{} is not an epk store; refusing to overwrite it",
                path.display()
            );
        }
        std::fs::remove_dir_all(path).with_context(|| format!("removing {}", path.display()))?;
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    Ok(())
}
