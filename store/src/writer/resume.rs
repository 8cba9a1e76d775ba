//! Resuming: reopening a store after its last committed step, without what a kill left
//! behind.

use super::{Guard, Lane, StoreOptions, StoreWriter};
use crate::atomic::TEMP_SUFFIX;
use crate::open::OpenStore;
use crate::{ArrayName, StoreError, WriterLock};
use std::path::Path;
use std::sync::Arc;
use zarrs::array::Array;
use zarrs::filesystem::FilesystemStore;

impl StoreWriter {
    /// Reopens a store to append after its last committed step and returns the weights that
    /// step left. What a kill left behind is removed first: temporary metadata files and
    /// rows past the committed count. The writer holds the store's [`WriterLock`] until it is
    /// dropped; a store someone else writes is refused with [`StoreError::Locked`].
    pub fn resume(path: &Path) -> Result<(Self, Vec<f64>), StoreError> {
        Self::resume_with(path, StoreOptions::default())
    }

    /// [`StoreWriter::resume`] with store-wide options (`durable`, `allow_network_lock`; the
    /// others only apply to a new store).
    pub fn resume_with(path: &Path, options: StoreOptions) -> Result<(Self, Vec<f64>), StoreError> {
        let lock = WriterLock::acquire(path, options.allow_network_lock)?;
        Self::reopen(path, lock, options.durable)
    }

    /// Reopens the store at `path`, whose lock is `lock`.
    pub(super) fn reopen(
        path: &Path,
        lock: WriterLock,
        durable: bool,
    ) -> Result<(Self, Vec<f64>), StoreError> {
        let open = OpenStore::open(path)?;
        let mut attrs = open.attrs.clone();
        let steps = attrs.steps as u64;
        let last = open.row_f64(ArrayName::Weights, steps, attrs.num_params)?;
        remove_temporaries(path)?;
        let store = Arc::new(
            FilesystemStore::new(path).map_err(|e| StoreError::zarr(path, "cannot open", e))?,
        );
        let mut lanes = Vec::new();
        for name in ArrayName::PER_STEP {
            let array = Array::open(store.clone(), &name.zarr_path())
                .map_err(|e| StoreError::zarr(open.metadata_file(name), "cannot open array", e))?;
            let files = open.shard_files(name).clone();
            files.keep_rows(name.rows(steps))?;
            lanes.push(Lane::new(path, &attrs, name, array, files, durable)?);
        }
        attrs.finished = false;
        let mut writer = StoreWriter {
            root: path.to_path_buf(),
            attrs,
            lanes,
            written: steps,
            capacity: steps,
            scratch: Vec::new(),
            guard: Some(Guard::new(lock, path)?),
            durable,
        };
        writer.resize_all(steps)?;
        writer.commit_root()?;
        Ok((writer, last))
    }
}

/// Removes temporary metadata files anywhere in the store (a kill between writing one and
/// renaming it leaves it behind).
fn remove_temporaries(root: &Path) -> Result<(), StoreError> {
    let cleanup = "cannot clean up after an interrupted run";
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).map_err(StoreError::io(&dir, cleanup))? {
            let path = entry.map_err(StoreError::io(&dir, cleanup))?.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.to_string_lossy().ends_with(TEMP_SUFFIX) {
                std::fs::remove_file(&path).map_err(StoreError::io(&path, cleanup))?;
            }
        }
    }
    Ok(())
}
