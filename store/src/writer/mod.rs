//! Writing a store: [`StoreWriter`] creates one (`create`), appends steps to it (`append`),
//! commits them (`commit`) and reopens one to go on after a kill (`resume`), holding the
//! store's [`WriterLock`](crate::WriterLock) throughout (`guard`).

mod append;
mod commit;
mod create;
mod guard;
mod resume;

use crate::codec::Compression;
use crate::layout::Element;
use crate::shard::{ShardAppender, ShardFiles};
use crate::{ArrayName, Fault, RunAttributes, StoreError};
use guard::Guard;
use std::path::{Path, PathBuf};
use zarrs::array::Array;
use zarrs::array::codec::BloscCodec;
use zarrs::filesystem::FilesystemStore;

/// One optimizer step as the recorder hands it to the store.
#[derive(Clone, Debug, PartialEq)]
pub struct StepRecord {
    /// Learning rate the optimizer applied.
    pub lr: f64,
    /// Dataset indices of the samples whose gradients built the step, in order.
    pub indices: Vec<usize>,
    /// dL/df of each of those samples, `[indices.len(), outputs]` row-major, as it entered the
    /// step's gradient (mean reductions and accumulation sums included).
    pub dloss: Vec<f64>,
    /// The weights after the step, flat in layout order.
    pub weights_after: Vec<f64>,
}

/// A step's weights as [`StoreWriter::write_step_row`] takes them.
#[derive(Clone, Copy, Debug)]
pub enum WeightRow<'a> {
    /// The values in layout order, narrowed (exactly) to the store's dtype on write.
    Values(&'a [f64]),
    /// The little-endian bytes of the store's dtype, in layout order, in pieces (one per
    /// tensor, as a backend returned them): written as they are, with no conversion or join
    /// when the rows are not compressed. Their lengths must add up to the row's.
    Bytes(&'a [&'a [u8]]),
}

impl WeightRow<'_> {
    /// The values, as f64, of a row in the given dtype (for tests and checks).
    pub fn to_values(&self, dtype: crate::TrainDType) -> Vec<f64> {
        match self {
            WeightRow::Values(v) => v.to_vec(),
            WeightRow::Bytes(parts) => {
                let bytes: Vec<u8> = parts.concat();
                crate::codec::FloatType(dtype).values(&bytes)
            }
        }
    }
}

/// Store-wide choices that are not run attributes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreOptions {
    /// Steps per shard file of the per-step arrays (1 to 1024); `None` sizes shards to about
    /// 64 MiB (at most 1024 steps).
    pub steps_per_shard: Option<u64>,
    /// [`StoreWriter::create_with`] replaces an existing epk store at the path, once it holds
    /// the store's lock (a store being written is refused, never removed). A Zarr store of
    /// another kind is never removed.
    pub overwrite: bool,
    /// Survive power loss, not only a killed process: before each commit's rename the shard
    /// files written since the last commit and the folders that gained files are flushed to
    /// disk (`fsync`), and the root folder after it. Off by default; its cost per step is in
    /// `docs/reliability.md`.
    pub durable: bool,
    /// Accept the writer lock on a network or user-space file system (NFS, SMB, FUSE, …),
    /// where it may not keep out a writer on another machine; without it such a store is
    /// refused with [`StoreError::UntrustedLock`].
    pub allow_network_lock: bool,
    /// How the float arrays are compressed (blosc-LZ4 for f32 stores and none for f64 by
    /// default). A resumed store keeps the compression it was created with.
    pub compression: Compression,
}

/// Creates a store and appends committed steps to it.
///
/// Crash consistency: a step's rows are appended to the per-step arrays' shard files (a
/// committed row is never rewritten); a commit then rewrites the per-step arrays' metadata
/// when they need room and finally the root attributes, each through a temporary file and a
/// rename. A reader trusts `steps` in the root attributes, so a kill at any point leaves the
/// committed prefix readable.
pub struct StoreWriter {
    root: PathBuf,
    attrs: RunAttributes,
    /// The per-step arrays, in [`ArrayName::PER_STEP`] order.
    lanes: Vec<Lane>,
    /// Steps whose rows are written (≥ committed steps).
    written: u64,
    /// Steps the per-step arrays' metadata currently has room for (≥ committed steps): the
    /// shapes grow ahead in doubling blocks so that a step rewrites only the root metadata.
    capacity: u64,
    /// Reused for encoding rows.
    scratch: Vec<u8>,
    /// The store's lock and identity; `None` only while a new store is being built.
    guard: Option<Guard>,
    /// Flush shards and metadata to disk at each commit ([`StoreOptions::durable`]).
    durable: bool,
}

/// One per-step array: its metadata and the shard file being appended to.
struct Lane {
    name: ArrayName,
    /// What its rows hold, as the layout says.
    element: Element,
    /// The blosc codec its metadata names for the rows, if any.
    blosc: Option<BloscCodec>,
    array: Array<FilesystemStore>,
    shards: ShardAppender,
}

impl Lane {
    fn new(
        root: &Path,
        attrs: &RunAttributes,
        name: ArrayName,
        array: Array<FilesystemStore>,
        files: ShardFiles,
        durable: bool,
    ) -> Result<Self, StoreError> {
        let metadata = serde_json::to_value(array.metadata()).unwrap_or_default();
        let blosc = crate::codec::row_codec(&metadata)
            .map_err(|m| StoreError::invalid(name.metadata_file(root), m))?;
        Ok(Lane {
            name,
            element: name.spec(attrs).element,
            blosc,
            array,
            shards: ShardAppender::new(files, durable),
        })
    }

    /// The shard file that holds `row`, for errors.
    fn file(&self, row: u64) -> PathBuf {
        self.shards.files().file_of(row)
    }
}

impl StoreWriter {
    /// The run's attributes as last committed.
    pub fn attrs(&self) -> &RunAttributes {
        &self.attrs
    }

    /// The store's directory.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// The holder named by a stale lock file this writer took over (a writer that ended
    /// without letting go), if it did.
    pub fn took_over_lock(&self) -> Option<&str> {
        self.guard.as_ref().and_then(|g| g.lock().took_over())
    }

    /// Notes a numerical fault at a step, with every written step; `replay verify` reports it.
    pub fn record_fault(&mut self, fault: Fault) -> Result<(), StoreError> {
        self.attrs.faults.push(fault);
        self.commit()
    }

    /// The metadata file of an array.
    fn file(&self, name: ArrayName) -> PathBuf {
        name.metadata_file(&self.root)
    }
}
