//! Being the store's only writer, and noticing when that stops being true: the writer holds
//! the lock beside the store and remembers which folder it opened (device and inode). Before
//! each step and each commit it checks both, a few `stat` calls, so that a store removed or
//! replaced under it (`rm -r`, another tool's overwrite) stops recording with an error at the
//! next step instead of writing on into files nobody will read, or into another store.

use super::StoreWriter;
use crate::lock::FileId;
use crate::{StoreError, WriterLock};
use std::path::Path;

/// The writer's lock and the identity of the store it opened.
#[derive(Debug)]
pub(super) struct Guard {
    lock: WriterLock,
    root: FileId,
}

impl Guard {
    /// Holds `lock` for the store now at `root`.
    pub(super) fn new(lock: WriterLock, root: &Path) -> Result<Self, StoreError> {
        let id = FileId::of_path(root).map_err(StoreError::io(root, "cannot open the store"))?;
        Ok(Guard { lock, root: id })
    }

    pub(super) fn lock(&self) -> &WriterLock {
        &self.lock
    }

    /// Fails if `root` is no longer the store opened, or the lock file is no longer ours.
    fn check(&self, root: &Path) -> Result<(), StoreError> {
        match FileId::of_path(root) {
            Ok(id) if id == self.root => self.lock.check(),
            Ok(_) => Err(StoreError::gone(
                root,
                "the store was replaced by another one while being written",
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(StoreError::gone(
                root,
                "the store was removed or moved away while being written",
            )),
            Err(e) => Err(StoreError::io(root, "cannot check the store")(e)),
        }
    }
}

impl StoreWriter {
    /// Fails if the store was removed or replaced, or its lock file was, since this writer
    /// opened it; with `shards`, also if an open shard file was removed.
    pub(super) fn check_guard(&self, shards: bool) -> Result<(), StoreError> {
        if let Some(guard) = &self.guard {
            guard.check(&self.root)?;
            if shards {
                for lane in &self.lanes {
                    lane.shards.check_linked()?;
                }
            }
        }
        Ok(())
    }

    /// Before a commit: the checks, and with [`StoreOptions::durable`](crate::StoreOptions)
    /// the shards written since the last commit flushed to disk.
    pub(super) fn prepare_commit(&mut self) -> Result<(), StoreError> {
        self.check_guard(true)?;
        if self.durable {
            for lane in &mut self.lanes {
                lane.shards.sync()?;
            }
        }
        Ok(())
    }
}
