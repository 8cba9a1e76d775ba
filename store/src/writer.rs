use crate::atomic::TEMP_SUFFIX;
use crate::atomic::write_atomic;
use crate::layout::ROOT_ATTRIBUTE;
use crate::shard::{MAX_STEPS_PER_SHARD, ShardAppender, ShardFiles, steps_per_shard};
use crate::{ArrayName, Fault, RunAttributes, Samples, StoreError, StoreReader, TrainDType};
use std::borrow::Cow;
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use zarrs::array::codec::api::BytesToBytesCodecTraits;
use zarrs::array::codec::{
    BloscCodec, BloscCompressionLevel, BloscCompressor, BloscShuffleMode, BytesCodec,
    ShardingCodecBuilder, ShardingIndexLocation,
};
use zarrs::array::{Array, ArrayBuilder, DataType, data_type};
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

/// Store-wide choices that are not run attributes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreOptions {
    /// Steps per shard file of the per-step arrays (1 to 1024); `None` sizes shards to about
    /// 64 MiB (at most 1024 steps).
    pub steps_per_shard: Option<u64>,
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
    lanes: Vec<Lane>,
    /// Steps whose rows are written (≥ committed steps).
    written: u64,
    /// Steps the per-step arrays' metadata currently has room for (≥ committed steps): the
    /// shapes grow ahead in doubling blocks so that a step rewrites only the root metadata.
    capacity: u64,
    /// Reused for encoding rows.
    scratch: Vec<u8>,
}

/// One per-step array: its metadata and the shard file being appended to.
struct Lane {
    name: ArrayName,
    array: Array<FilesystemStore>,
    shards: ShardAppender,
}

impl Lane {
    /// The shard file that holds `row`, for errors.
    fn file(&self, row: u64) -> PathBuf {
        self.shards.files().file_of(row)
    }
}

impl StoreWriter {
    /// Creates a new store at `path` (which must not exist) holding the run's data sets.
    ///
    /// The store is built in `PATH.epk-tmp` with `initial_weights` as its state 0 and renamed
    /// into place, so a kill during creation leaves either no store or a complete one.
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
        if path.exists() {
            return Err(StoreError::Exists {
                path: path.to_path_buf(),
            });
        }
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(TEMP_SUFFIX);
        let tmp = PathBuf::from(tmp);
        let io = |source, message: &str| StoreError::Io {
            path: tmp.clone(),
            message: message.into(),
            source,
        };
        if tmp.exists() {
            // Our own leftover from a creation that was killed.
            std::fs::remove_dir_all(&tmp)
                .map_err(|e| io(e, "cannot remove a stale temporary store"))?;
        }
        let mut building = Self::build_new(&tmp, attrs, train, eval, options)?;
        building.write_initial_weights(initial_weights)?;
        drop(building);
        std::fs::rename(&tmp, path).map_err(|e| io(e, "cannot move the new store into place"))?;
        Ok(Self::resume(path)?.0)
    }

    fn build_new(
        path: &Path,
        mut attrs: RunAttributes,
        train: &Samples,
        eval: Option<&Samples>,
        options: StoreOptions,
    ) -> Result<Self, StoreError> {
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
        std::fs::create_dir_all(path).map_err(|source| StoreError::Io {
            path: path.to_path_buf(),
            message: "cannot create the store directory".into(),
            source,
        })?;
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
        };
        // The root goes first so that even an empty store says what it is.
        writer.commit_root()?;
        writer.write_samples(
            &store,
            train,
            ArrayName::TrainInputs,
            ArrayName::TrainTargets,
        )?;
        if let Some(eval) = eval {
            writer.write_samples(&store, eval, ArrayName::EvalInputs, ArrayName::EvalTargets)?;
        }
        let float = writer.float_type();
        let steps = options.steps_per_shard.unwrap_or_else(|| {
            let rows = ArrayName::PER_STEP.map(|name| {
                let values: u64 = writer.row_shape(name).iter().product();
                values * 8
            });
            steps_per_shard(rows.into_iter().max().unwrap_or(8))
        });
        for name in ArrayName::PER_STEP {
            let row = writer.row_shape(name);
            let shape: Vec<u64> = [0].into_iter().chain(row.iter().copied()).collect();
            let shard: Vec<u64> = [steps].into_iter().chain(row.iter().copied()).collect();
            let subchunk: Vec<u64> = [1].into_iter().chain(row.iter().copied()).collect();
            let (mut builder, data_type, compress) = match name {
                ArrayName::Lr => (
                    ArrayBuilder::new(shape, shard, data_type::float64(), 0.0f64),
                    data_type::float64(),
                    false,
                ),
                ArrayName::BatchSize => (
                    ArrayBuilder::new(shape, shard, data_type::int64(), 0i64),
                    data_type::int64(),
                    false,
                ),
                ArrayName::BatchIndex => (
                    ArrayBuilder::new(shape, shard, data_type::int64(), -1i64),
                    data_type::int64(),
                    false,
                ),
                _ => (
                    float.plain_builder(shape, shard),
                    float.data_type(),
                    float.compressed(),
                ),
            };
            let codecs = compress.then(|| float.blosc()).into_iter().collect();
            builder.array_to_bytes_codec(sharding(&subchunk, &data_type, codecs));
            let array = writer.build(&store, name, builder)?;
            let files = ShardFiles::new(&path.join(name.path()), subchunk.len(), steps);
            writer.lanes.push(Lane {
                name,
                array,
                shards: ShardAppender::new(files),
            });
        }
        Ok(writer)
    }

    /// A per-step array's entry for one step (the array's shape without its step axis).
    fn row_shape(&self, name: ArrayName) -> Vec<u64> {
        let (p, k, b) = (
            self.attrs.num_params as u64,
            self.attrs.outputs as u64,
            self.attrs.max_batch as u64,
        );
        match name {
            ArrayName::Weights => vec![p],
            ArrayName::BatchIndex => vec![b],
            ArrayName::Dloss => vec![b, k],
            _ => vec![],
        }
    }

    /// Reopens a store to append after its last committed step and returns the weights that
    /// step left. What a kill left behind is removed first: temporary metadata files and
    /// rows past the committed count.
    pub fn resume(path: &Path) -> Result<(Self, Vec<f64>), StoreError> {
        let reader = StoreReader::open(path)?;
        let mut attrs = reader.attrs().clone();
        let steps = attrs.steps as u64;
        let last = reader.weights(attrs.steps)?;
        remove_temporaries(path)?;
        let store = Arc::new(
            FilesystemStore::new(path).map_err(|e| StoreError::zarr(path, "cannot open", e))?,
        );
        let mut lanes = Vec::new();
        for name in ArrayName::PER_STEP {
            let dir = path.join(name.path());
            let array = Array::open(store.clone(), &name.zarr_path())
                .map_err(|e| StoreError::zarr(&dir, "cannot open array", e))?;
            let files = reader.shard_files(name).clone();
            let keep = if name == ArrayName::Weights {
                steps + 1
            } else {
                steps
            };
            files.keep_rows(keep)?;
            lanes.push(Lane {
                name,
                array,
                shards: ShardAppender::new(files),
            });
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

    /// Notes a numerical fault at a step, with every written step; `replay verify` reports it.
    pub fn record_fault(&mut self, fault: Fault) -> Result<(), StoreError> {
        self.attrs.faults.push(fault);
        self.commit()
    }

    fn float_type(&self) -> FloatType {
        FloatType(self.attrs.dtype)
    }

    fn build(
        &self,
        store: &Arc<FilesystemStore>,
        name: ArrayName,
        mut builder: ArrayBuilder,
    ) -> Result<Array<FilesystemStore>, StoreError> {
        let mut dims: Vec<String> = name.leading_dims().iter().map(|s| s.to_string()).collect();
        let rank = match name {
            ArrayName::TrainInputs | ArrayName::EvalInputs => 1 + self.attrs.input_shape.len(),
            _ => dims.len(),
        };
        for i in dims.len()..rank {
            dims.push(format!("feature_{}", i - 1));
        }
        builder.dimension_names(Some(dims));
        let array = builder
            .build(store.clone(), &name.zarr_path())
            .map_err(|e| StoreError::zarr(self.file(name), "cannot create array", e))?;
        self.store_array_metadata(name, &array)?;
        Ok(array)
    }

    fn write_samples(
        &self,
        store: &Arc<FilesystemStore>,
        set: &Samples,
        inputs: ArrayName,
        targets: ArrayName,
    ) -> Result<(), StoreError> {
        let n = set.len() as u64;
        // The subgroup's own metadata makes the hierarchy explicit for readers that walk it.
        let group = self
            .root
            .join(inputs.path())
            .parent()
            .map(Path::to_path_buf);
        if let Some(group) = group {
            std::fs::create_dir_all(&group).map_err(|source| StoreError::Io {
                path: group.clone(),
                message: "cannot create group directory".into(),
                source,
            })?;
            write_atomic(
                &group.join("zarr.json"),
                br#"{"zarr_format": 3, "node_type": "group", "attributes": {}}"#,
            )?;
        }
        let mut shape = vec![n];
        shape.extend(set.input_shape.iter().map(|&d| d as u64));
        let chunk: Vec<u64> = shape.iter().map(|&d| d.max(1)).collect();
        let array = self.build(store, inputs, self.float_type().builder(shape, chunk))?;
        if n > 0 {
            self.float_type()
                .store_chunk(&array, &vec![0; set.input_shape.len() + 1], &set.inputs)
                .map_err(|e| StoreError::zarr(self.file(inputs), "cannot write", e))?;
        }
        let array = self.build(
            store,
            targets,
            ArrayBuilder::new(vec![n], vec![n.max(1)], data_type::int64(), -1i64),
        )?;
        if n > 0 {
            array
                .store_chunk_opt(&[0], &set.targets[..], &keep_all())
                .map_err(|e| StoreError::zarr(self.file(targets), "cannot write", e))?;
        }
        Ok(())
    }

    /// The run's attributes as last committed.
    pub fn attrs(&self) -> &RunAttributes {
        &self.attrs
    }

    /// The store's directory.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Writes `w_0`, the weights before the first step (a new store only: `create` calls it
    /// once, before the writer is handed out).
    fn write_initial_weights(&mut self, weights: &[f64]) -> Result<(), StoreError> {
        self.check_weights(weights)?;
        self.write_weight_row(0, weights)?;
        self.resize_all(0)?;
        self.commit_root()
    }

    /// Appends one optimizer step and commits it.
    pub fn append_step(&mut self, step: &StepRecord) -> Result<(), StoreError> {
        self.append_steps(std::slice::from_ref(step))
    }

    /// Appends several steps with one commit. Steps written in full before a failure are
    /// still committed.
    pub fn append_steps(&mut self, steps: &[StepRecord]) -> Result<(), StoreError> {
        let mut failure = None;
        for step in steps {
            if let Err(e) = self.write_step(step) {
                failure = Some(e);
                break;
            }
        }
        self.commit()?;
        failure.map_or(Ok(()), Err)
    }

    /// Writes the next step's rows without committing it: readers see it after the next
    /// [`StoreWriter::commit`]. A kill before then loses the step, never the store.
    pub fn write_step(&mut self, step: &StepRecord) -> Result<(), StoreError> {
        self.check_weights(&step.weights_after)?;
        let (k, b) = (self.attrs.outputs, self.attrs.max_batch);
        let n = step.indices.len();
        if n == 0 || n > b {
            return Err(StoreError::invalid(
                &self.root,
                format!("a step with {n} samples does not fit the store's {b} slots per step"),
            ));
        }
        if step.dloss.len() != n * k {
            return Err(StoreError::invalid(
                &self.root,
                format!(
                    "{} dL/df values for {n} samples of {k} outputs",
                    step.dloss.len()
                ),
            ));
        }
        let s = self.written;
        self.write_weight_row(s + 1, &step.weights_after)?;
        let mut index = vec![-1i64; b];
        for (slot, &i) in index.iter_mut().zip(&step.indices) {
            *slot = i as i64;
        }
        let mut dloss = vec![f64::NAN; b * k];
        dloss[..n * k].copy_from_slice(&step.dloss);
        let (lr, size) = ([step.lr], [n as i64]);
        let float = self.float_type();
        for lane in 1..self.lanes.len() {
            let name = self.lanes[lane].name;
            let bytes = match name {
                ArrayName::Lr => Cow::Borrowed(le_bytes(&lr, &mut self.scratch)),
                ArrayName::BatchSize => Cow::Borrowed(le_bytes(&size, &mut self.scratch)),
                ArrayName::BatchIndex => Cow::Borrowed(le_bytes(&index, &mut self.scratch)),
                ArrayName::Dloss => float
                    .encode(&dloss, &mut self.scratch)
                    .map_err(|e| StoreError::zarr(self.lanes[lane].file(s), "cannot encode", e))?,
                _ => unreachable!("weights are lane 0"),
            };
            self.lanes[lane].shards.append(s, &bytes)?;
        }
        self.written = s + 1;
        Ok(())
    }

    /// Commits every written step: the per-step arrays' shapes when they need room, then the
    /// root's step count.
    pub fn commit(&mut self) -> Result<(), StoreError> {
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
        self.attrs.steps = self.written as usize;
        self.capacity = self.written;
        self.resize_all(self.capacity)?;
        self.attrs.finished = true;
        self.commit_root()
    }

    fn check_weights(&self, weights: &[f64]) -> Result<(), StoreError> {
        if weights.len() != self.attrs.num_params {
            return Err(StoreError::invalid(
                &self.root,
                format!(
                    "{} weights given, the store's layout has {}",
                    weights.len(),
                    self.attrs.num_params
                ),
            ));
        }
        Ok(())
    }

    fn write_weight_row(&mut self, row: u64, weights: &[f64]) -> Result<(), StoreError> {
        let float = self.float_type();
        let lane = &mut self.lanes[0];
        debug_assert_eq!(lane.name, ArrayName::Weights);
        let bytes = float
            .encode(weights, &mut self.scratch)
            .map_err(|e| StoreError::zarr(lane.file(row), "cannot encode", e))?;
        lane.shards.append(row, &bytes)
    }

    /// Sets every per-step array to `steps` entries (weights to `steps + 1`).
    fn resize_all(&mut self, steps: u64) -> Result<(), StoreError> {
        for i in 0..self.lanes.len() {
            let name = self.lanes[i].name;
            let first = if name == ArrayName::Weights {
                steps + 1
            } else {
                steps
            };
            let shape: Vec<u64> = [first].into_iter().chain(self.row_shape(name)).collect();
            let file = self.file(name);
            let lane = &mut self.lanes[i];
            lane.array
                .set_shape(shape)
                .map_err(|e| StoreError::zarr(&file, "cannot resize", e))?;
            self.store_array_metadata(name, &self.lanes[i].array)?;
        }
        Ok(())
    }

    fn file(&self, name: ArrayName) -> PathBuf {
        self.root.join(name.path()).join("zarr.json")
    }

    fn store_array_metadata(
        &self,
        name: ArrayName,
        array: &Array<FilesystemStore>,
    ) -> Result<(), StoreError> {
        let file = self.file(name);
        let json = serde_json::to_vec_pretty(array.metadata())
            .map_err(|e| StoreError::zarr(&file, "cannot serialise metadata", e))?;
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
                path: dir.to_path_buf(),
                message: "cannot create array directory".into(),
                source,
            })?;
        }
        write_atomic(&file, &json)
    }

    fn commit_root(&self) -> Result<(), StoreError> {
        let file = self.root.join("zarr.json");
        let epk = serde_json::to_value(&self.attrs)
            .map_err(|e| StoreError::zarr(&file, "cannot serialise attributes", e))?;
        let meta = serde_json::json!({
            "zarr_format": 3,
            "node_type": "group",
            "attributes": { ROOT_ATTRIBUTE: epk },
        });
        let json = serde_json::to_vec_pretty(&meta)
            .map_err(|e| StoreError::zarr(&file, "cannot serialise attributes", e))?;
        write_atomic(&file, &json)
    }
}

/// Blosc's compression level for float arrays (its own default).
const BLOSC_LEVEL: u8 = 5;

/// Blosc with LZ4 after a byte shuffle of `typesize`-byte elements, which zarr-python reads
/// without plug-ins.
pub(crate) fn blosc(typesize: usize) -> BloscCodec {
    BloscCodec::new(
        BloscCompressor::LZ4,
        BloscCompressionLevel::try_from(BLOSC_LEVEL).expect("a level in 0..=9"),
        None,
        BloscShuffleMode::Shuffle,
        Some(typesize),
    )
    .expect("c-blosc always has LZ4")
}

/// The sharding codec of a per-step array: rows of `subchunk` shape, little-endian, then
/// `inner` (blosc for f32 floats); the index at the start of the file, without a checksum
/// because the recorder rewrites one entry in place per step and a live reader may read the
/// index while an uncommitted entry changes (only that entry can differ from what it saw).
fn sharding(
    subchunk: &[u64],
    data_type: &DataType,
    inner: Vec<Arc<dyn BytesToBytesCodecTraits>>,
) -> Arc<zarrs::array::codec::ShardingCodec> {
    let shape = subchunk
        .iter()
        .map(|&d| NonZeroU64::new(d).expect("the attributes check nonzero sizes"))
        .collect();
    ShardingCodecBuilder::new(shape, data_type)
        .array_to_bytes_codec(Arc::new(BytesCodec::little()))
        .bytes_to_bytes_codecs(inner)
        .index_array_to_bytes_codec(Arc::new(BytesCodec::little()))
        .index_bytes_to_bytes_codecs(Vec::new())
        .index_location(ShardingIndexLocation::Start)
        .build_arc()
}

/// The training dtype as a zarr element type: values travel as f64 and are narrowed on write
/// (exactly, since they came from that dtype).
#[derive(Clone, Copy)]
struct FloatType(TrainDType);

impl FloatType {
    fn data_type(self) -> DataType {
        match self.0 {
            TrainDType::F64 => data_type::float64(),
            TrainDType::F32 => data_type::float32(),
        }
    }

    /// f32 arrays are compressed with blosc; f64 arrays are not: trained f64 weights compress
    /// by about 1.07× (see the README's benchmarks), not worth the writer's CPU time on a
    /// machine whose cores all train.
    fn compressed(self) -> bool {
        self.0 == TrainDType::F32
    }

    fn blosc(self) -> Arc<dyn BytesToBytesCodecTraits> {
        Arc::new(blosc(4))
    }

    /// A builder with the dtype's fill value and no codecs chosen.
    fn plain_builder(self, shape: Vec<u64>, chunk: Vec<u64>) -> ArrayBuilder {
        match self.0 {
            TrainDType::F64 => ArrayBuilder::new(shape, chunk, data_type::float64(), f64::NAN),
            TrainDType::F32 => ArrayBuilder::new(shape, chunk, data_type::float32(), f32::NAN),
        }
    }

    /// A builder for a one-chunk array (the data sets), blosc-compressed when f32.
    fn builder(self, shape: Vec<u64>, chunk: Vec<u64>) -> ArrayBuilder {
        let mut builder = self.plain_builder(shape, chunk);
        if self.compressed() {
            builder.bytes_to_bytes_codecs(vec![self.blosc()]);
        }
        builder
    }

    /// Encodes a row the way the per-step arrays' inner codecs decode it.
    fn encode<'a>(
        self,
        values: &'a [f64],
        scratch: &'a mut Vec<u8>,
    ) -> Result<Cow<'a, [u8]>, zarrs::array::codec::api::CodecError> {
        match self.0 {
            TrainDType::F64 => Ok(Cow::Borrowed(le_bytes(values, scratch))),
            TrainDType::F32 => {
                scratch.clear();
                scratch.extend(values.iter().flat_map(|&v| (v as f32).to_le_bytes()));
                let encoded = blosc(4)
                    .encode(Cow::Borrowed(scratch), &keep_all())?
                    .into_owned();
                Ok(Cow::Owned(encoded))
            }
        }
    }

    fn store_chunk(
        self,
        array: &Array<FilesystemStore>,
        chunk: &[u64],
        values: &[f64],
    ) -> Result<(), zarrs::array::ArrayError> {
        match self.0 {
            TrainDType::F64 => array.store_chunk_opt(chunk, values, &keep_all()),
            TrainDType::F32 => {
                let narrow: Vec<f32> = values.iter().map(|&v| v as f32).collect();
                array.store_chunk_opt(chunk, &narrow[..], &keep_all())
            }
        }
    }
}

/// The little-endian bytes of `values`: the values themselves on a little-endian machine
/// (no copy of a million-weight row), else a byte-swapped copy in `scratch`.
fn le_bytes<'a, T: bytemuck::Pod>(values: &'a [T], scratch: &'a mut Vec<u8>) -> &'a [u8] {
    let bytes: &[u8] = bytemuck::cast_slice(values);
    if cfg!(target_endian = "little") {
        return bytes;
    }
    scratch.clear();
    scratch.extend_from_slice(bytes);
    for value in scratch.chunks_exact_mut(size_of::<T>()) {
        value.reverse();
    }
    scratch
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

/// Every chunk is stored (a fill-valued chunk is data here: an all-zero weight row is real,
/// and a missing chunk means damage), and encoded on the calling thread: zarrs would
/// otherwise encode on rayon's global pool, which Burn's CPU backend trains on.
fn keep_all() -> zarrs::array::CodecOptions {
    zarrs::array::CodecOptions::default()
        .with_store_empty_chunks(true)
        .with_concurrent_target(1)
}
