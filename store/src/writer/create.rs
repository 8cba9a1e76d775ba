//! Creating a store: the root, the data sets and the empty per-step arrays, built in a
//! temporary folder and renamed into place.

use super::{Lane, StoreOptions, StoreWriter};
use crate::atomic::{TEMP_SUFFIX, sync_dir, sync_tree, write_atomic};
use crate::codec::{Compression, FloatType, keep_all};
use crate::layout::{ArraySpec, GROUP_METADATA};
use crate::shard::{MAX_STEPS_PER_SHARD, ShardFiles, steps_per_shard};
use crate::{ArrayName, RunAttributes, Samples, StoreError, StoreReader, WriterLock};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use zarrs::array::Array;
use zarrs::filesystem::FilesystemStore;

impl StoreWriter {
    /// Creates a new store at `path` (which must not exist) holding the run's data sets.
    ///
    /// The store is built in `PATH.epk-tmp` with `initial_weights` as its state 0 and renamed
    /// into place, so a kill during creation leaves either no store or a complete one. The
    /// writer holds the store's [`WriterLock`] from before anything is written until it is
    /// dropped; a store someone else writes is refused with [`StoreError::Locked`].
    pub fn create(
        path: &Path,
        attrs: RunAttributes,
        train: &Samples,
        eval: Option<&Samples>,
        initial_weights: &[f64],
    ) -> Result<Self, StoreError> {
        Self::create_with(
            path,
            attrs,
            train,
            eval,
            initial_weights,
            StoreOptions::default(),
        )
    }

    /// [`StoreWriter::create`] with store-wide options.
    pub fn create_with(
        path: &Path,
        attrs: RunAttributes,
        train: &Samples,
        eval: Option<&Samples>,
        initial_weights: &[f64],
        options: StoreOptions,
    ) -> Result<Self, StoreError> {
        if let Some(steps) = options.steps_per_shard
            && !(1..=MAX_STEPS_PER_SHARD).contains(&steps)
        {
            return Err(StoreError::invalid(
                path,
                format!("{steps} steps per shard; choose 1 to {MAX_STEPS_PER_SHARD}"),
            ));
        }
        let lock = WriterLock::acquire(path, options.allow_network_lock)?;
        if path.exists() {
            if !options.overwrite {
                return Err(StoreError::Exists {
                    path: path.to_path_buf(),
                });
            }
            remove_old_store(path)?;
        }
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(TEMP_SUFFIX);
        let tmp = PathBuf::from(tmp);
        if tmp.exists() {
            // A leftover from a creation that was killed (the lock rules out a live one).
            std::fs::remove_dir_all(&tmp).map_err(StoreError::io(
                &tmp,
                "cannot remove a stale temporary store",
            ))?;
        }
        let attrs = new_attributes(&tmp, attrs, train, eval)?;
        let mut building = Self::build_new(&tmp, attrs, train, eval, options)?;
        building.write_initial_weights(initial_weights)?;
        drop(building);
        if options.durable {
            sync_tree(&tmp)?;
        }
        std::fs::rename(&tmp, path)
            .map_err(StoreError::io(&tmp, "cannot move the new store into place"))?;
        if options.durable {
            sync_dir(path.parent().unwrap_or(Path::new(".")))?;
        }
        Ok(Self::reopen(path, lock, options.durable)?.0)
    }

    /// Builds the store's root, data sets and empty per-step arrays at `path`.
    fn build_new(
        path: &Path,
        attrs: RunAttributes,
        train: &Samples,
        eval: Option<&Samples>,
        options: StoreOptions,
    ) -> Result<Self, StoreError> {
        std::fs::create_dir_all(path)
            .map_err(StoreError::io(path, "cannot create the store directory"))?;
        let store = Arc::new(
            FilesystemStore::new(path).map_err(|e| StoreError::zarr(path, "cannot open", e))?,
        );
        let mut writer = StoreWriter {
            root: path.to_path_buf(),
            attrs,
            lanes: Vec::new(),
            written: 0,
            capacity: 0,
            scratch: Vec::new(),
            guard: None,
            durable: false,
        };
        // The root goes first so that even an empty store says what it is.
        writer.commit_root()?;
        writer.write_samples(
            &store,
            train,
            ArrayName::TrainInputs,
            ArrayName::TrainTargets,
            options.compression,
        )?;
        if let Some(eval) = eval {
            writer.write_samples(
                &store,
                eval,
                ArrayName::EvalInputs,
                ArrayName::EvalTargets,
                options.compression,
            )?;
        }
        let steps = options
            .steps_per_shard
            .unwrap_or_else(|| default_steps_per_shard(&writer.attrs));
        for name in ArrayName::PER_STEP {
            let spec = name.spec(&writer.attrs);
            let array = writer.build(&store, &spec, steps, options.compression)?;
            let files = ShardFiles::new(&name.dir(path), spec.shape.len(), steps);
            let lane = Lane::new(path, &writer.attrs, name, array, files, false)?;
            writer.lanes.push(lane);
        }
        Ok(writer)
    }

    /// Creates an array as the layout describes it and writes its metadata.
    fn build(
        &self,
        store: &Arc<FilesystemStore>,
        spec: &ArraySpec,
        steps_per_shard: u64,
        compression: Compression,
    ) -> Result<Array<FilesystemStore>, StoreError> {
        let array = spec
            .builder(steps_per_shard, compression)
            .build(store.clone(), &spec.name.zarr_path())
            .map_err(|e| StoreError::zarr(self.file(spec.name), "cannot create array", e))?;
        self.store_array_metadata(spec.name, &array)?;
        Ok(array)
    }

    /// Writes a data set: its group, its inputs and its targets, each one chunk.
    fn write_samples(
        &self,
        store: &Arc<FilesystemStore>,
        set: &Samples,
        inputs: ArrayName,
        targets: ArrayName,
        compression: Compression,
    ) -> Result<(), StoreError> {
        // The subgroup's own metadata makes the hierarchy explicit for readers that walk it.
        if let Some(group) = inputs.dir(&self.root).parent() {
            std::fs::create_dir_all(group)
                .map_err(StoreError::io(group, "cannot create group directory"))?;
            write_atomic(&group.join("zarr.json"), GROUP_METADATA, false)?;
        }
        let spec = inputs.spec(&self.attrs);
        let array = self.build(store, &spec, 0, compression)?;
        if !set.is_empty() {
            FloatType(self.attrs.dtype)
                .store_chunk(&array, &vec![0; spec.shape.len()], &set.inputs)
                .map_err(|e| StoreError::zarr(self.file(inputs), "cannot write", e))?;
        }
        let array = self.build(store, &targets.spec(&self.attrs), 0, compression)?;
        if !set.is_empty() {
            array
                .store_chunk_opt(&[0], &set.targets[..], &keep_all())
                .map_err(|e| StoreError::zarr(self.file(targets), "cannot write", e))?;
        }
        Ok(())
    }

    /// Writes `w_0`, the weights before the first step (a new store only: `create` calls it
    /// once, before the writer is handed out).
    fn write_initial_weights(&mut self, weights: &[f64]) -> Result<(), StoreError> {
        self.check_weights(weights)?;
        self.write_weight_row(0, weights)?;
        self.resize_all(0)?;
        self.commit_root()
    }
}

/// Removes the epk store at `path` to make room for a new one (the caller holds its lock).
/// A damaged epk store or one of an older format may go; a Zarr store of another kind stays.
fn remove_old_store(path: &Path) -> Result<(), StoreError> {
    let root = path.join("zarr.json");
    if root.exists() && !StoreReader::is_epk_store(path) {
        return Err(StoreError::NotEpk {
            path: root,
            message: "refusing to overwrite a Zarr store of another kind".into(),
        });
    }
    let removed = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    removed.map_err(StoreError::io(path, "cannot remove the old store"))
}

/// The attributes of a new store: sized to its data sets, with no steps, and checked.
fn new_attributes(
    path: &Path,
    mut attrs: RunAttributes,
    train: &Samples,
    eval: Option<&Samples>,
) -> Result<RunAttributes, StoreError> {
    attrs.train_samples = train.len();
    attrs.eval_samples = eval.map_or(0, Samples::len);
    attrs.steps = 0;
    attrs.finished = false;
    attrs.check().map_err(|m| StoreError::invalid(path, m))?;
    for (set, name) in [(Some(train), "training"), (eval, "evaluation")] {
        if let Some(set) = set
            && set.input_shape != attrs.input_shape
        {
            return Err(StoreError::invalid(
                path,
                format!(
                    "{name} inputs have shape {:?}, the model takes {:?}",
                    set.input_shape, attrs.input_shape
                ),
            ));
        }
    }
    Ok(attrs)
}

/// Steps per shard when the options leave it open: shards near 64 MiB for the largest row,
/// counted at 8 bytes a value whatever the dtype.
fn default_steps_per_shard(attrs: &RunAttributes) -> u64 {
    let rows = ArrayName::PER_STEP.map(|name| {
        let values: u64 = name.spec(attrs).row().iter().product();
        values * 8
    });
    steps_per_shard(rows.into_iter().max().unwrap_or(8))
}
