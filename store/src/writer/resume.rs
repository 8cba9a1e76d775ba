//! Resuming: reopening a store after its last committed step, without what a kill left
//! behind.

use super::{Lane, StoreWriter};
use crate::atomic::TEMP_SUFFIX;
use crate::open::OpenStore;
use crate::{ArrayName, StoreError};
use std::path::Path;

impl StoreWriter {
    /// Reopens a store to append after its last committed step and returns the weights that
    /// step left. What a kill left behind is removed first: temporary metadata files and
    /// rows past the committed count.
    pub fn resume(path: &Path) -> Result<(Self, Vec<f64>), StoreError> {
        let open = OpenStore::open(path)?;
        let mut attrs = open.attrs.clone();
        let steps = attrs.steps as u64;
        let last = open.row_f64(ArrayName::Weights, steps, attrs.num_params)?;
        remove_temporaries(path)?;
        let mut lanes = Vec::new();
        for name in ArrayName::PER_STEP {
            let array = open.open_array(name)?;
            let files = open.shard_files(name).clone();
            files.keep_rows(name.rows(steps))?;
            lanes.push(Lane::new(&attrs, name, array, files));
        }
        attrs.finished = false;
        let mut writer = StoreWriter {
            root: path.to_path_buf(),
            attrs,
            lanes,
            written: steps,
            capacity: steps,
            scratch: Vec::new(),
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
