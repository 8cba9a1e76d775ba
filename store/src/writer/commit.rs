//! Committing: the per-step arrays' shapes when they need room, then the root attributes,
//! each replaced atomically, so that a reader sees the committed steps and nothing else.
//! A commit first checks that the store is still this writer's (`guard`).

use super::StoreWriter;
use crate::atomic::write_atomic;
use crate::layout::root_metadata;
use crate::{ArrayName, StoreError};
use zarrs::array::Array;
use zarrs::filesystem::FilesystemStore;

impl StoreWriter {
    /// Commits every written step: the per-step arrays' shapes when they need room, then the
    /// root's step count.
    pub fn commit(&mut self) -> Result<(), StoreError> {
        self.prepare_commit()?;
        let end = self.written;
        if end > self.capacity {
            self.capacity = end.max(2 * self.capacity).max(16);
            self.resize_all(self.capacity)?;
        }
        self.attrs.steps = end as usize;
        self.commit_root()
    }

    /// Steps written but not yet committed.
    pub fn uncommitted(&self) -> usize {
        (self.written - self.attrs.steps as u64) as usize
    }

    /// Commits what is written, trims the arrays to the committed steps and marks the run as
    /// finished normally.
    pub fn finish(&mut self) -> Result<(), StoreError> {
        self.prepare_commit()?;
        self.attrs.steps = self.written as usize;
        self.capacity = self.written;
        self.resize_all(self.capacity)?;
        self.attrs.finished = true;
        self.commit_root()
    }

    /// Sets every per-step array to `steps` entries (weights to `steps + 1`).
    pub(super) fn resize_all(&mut self, steps: u64) -> Result<(), StoreError> {
        for i in 0..self.lanes.len() {
            let name = self.lanes[i].name;
            let shape = name.spec(&self.attrs).shape_at(steps);
            let file = self.file(name);
            self.lanes[i]
                .array
                .set_shape(shape)
                .map_err(|e| StoreError::zarr(&file, "cannot resize", e))?;
            self.store_array_metadata(name, &self.lanes[i].array)?;
        }
        Ok(())
    }

    /// Writes an array's metadata file, replacing it atomically.
    pub(super) fn store_array_metadata(
        &self,
        name: ArrayName,
        array: &Array<FilesystemStore>,
    ) -> Result<(), StoreError> {
        let file = self.file(name);
        let json = serde_json::to_vec_pretty(array.metadata())
            .map_err(|e| StoreError::zarr(&file, "cannot serialise metadata", e))?;
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir)
                .map_err(StoreError::io(dir, "cannot create array directory"))?;
        }
        write_atomic(&file, &json, self.durable)
    }

    /// Writes the root metadata with the current attributes, replacing it atomically: this is
    /// what makes written steps committed.
    pub(super) fn commit_root(&self) -> Result<(), StoreError> {
        let file = self.root.join("zarr.json");
        let epk = serde_json::to_value(&self.attrs)
            .map_err(|e| StoreError::zarr(&file, "cannot serialise attributes", e))?;
        let json = serde_json::to_vec_pretty(&root_metadata(epk))
            .map_err(|e| StoreError::zarr(&file, "cannot serialise attributes", e))?;
        write_atomic(&file, &json, self.durable)
    }
}
