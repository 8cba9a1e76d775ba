use crate::atomic::TEMP_SUFFIX;
use crate::atomic::write_atomic;
use crate::layout::ROOT_ATTRIBUTE;
use crate::{ArrayName, Fault, RunAttributes, Samples, StoreError, StoreReader, TrainDType};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use zarrs::array::codec::{BloscCodec, BloscCompressionLevel, BloscCompressor, BloscShuffleMode};
use zarrs::array::{Array, ArrayBuilder, data_type};
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

/// Creates a store and appends committed steps to it.
///
/// Crash consistency: every step writes its chunks first (new files only), then rewrites
/// the per-step arrays' metadata and finally the root attributes, each through a temporary
/// file and a rename. A reader trusts `steps` in the root attributes, so a kill at any point
/// leaves the committed prefix readable.
pub struct StoreWriter {
    root: PathBuf,
    attrs: RunAttributes,
    arrays: Vec<(ArrayName, Array<FilesystemStore>)>,
    /// Rows written to `weights` (steps + 1 once the initial weights are in).
    weight_rows: u64,
    /// Steps the per-step arrays' metadata currently has room for (≥ committed steps): the
    /// shapes grow ahead in doubling blocks so that a step rewrites only the root metadata.
    capacity: u64,
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
        let mut building = Self::build_new(&tmp, attrs, train, eval)?;
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
            arrays: Vec::new(),
            weight_rows: 0,
            capacity: 0,
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
        let (p, k, b) = (
            writer.attrs.num_params as u64,
            writer.attrs.outputs as u64,
            writer.attrs.max_batch as u64,
        );
        let float = writer.float_type();
        for name in ArrayName::PER_STEP {
            let (shape, chunk): (Vec<u64>, Vec<u64>) = match name {
                ArrayName::Weights => (vec![0, p], vec![1, p]),
                ArrayName::Lr | ArrayName::BatchSize => (vec![0], vec![1]),
                ArrayName::BatchIndex => (vec![0, b], vec![1, b]),
                ArrayName::Dloss => (vec![0, b, k], vec![1, b, k]),
                _ => unreachable!("not a per-step array"),
            };
            let builder = match name {
                ArrayName::Lr => ArrayBuilder::new(shape, chunk, data_type::float64(), 0.0f64),
                ArrayName::BatchSize => ArrayBuilder::new(shape, chunk, data_type::int64(), 0i64),
                ArrayName::BatchIndex => ArrayBuilder::new(shape, chunk, data_type::int64(), -1i64),
                _ => float.builder(shape, chunk),
            };
            let array = writer.build(&store, name, builder)?;
            writer.arrays.push((name, array));
        }
        Ok(writer)
    }

    /// Reopens a store to append after its last committed step and returns the weights that
    /// step left. What a kill left behind is removed first: temporary metadata files and
    /// chunks past the committed count.
    pub fn resume(path: &Path) -> Result<(Self, Vec<f64>), StoreError> {
        let reader = StoreReader::open(path)?;
        let mut attrs = reader.attrs().clone();
        let steps = attrs.steps as u64;
        let last = reader.weights(attrs.steps)?;
        remove_leftovers(path, steps)?;
        let store = Arc::new(
            FilesystemStore::new(path).map_err(|e| StoreError::zarr(path, "cannot open", e))?,
        );
        let mut arrays = Vec::new();
        for name in ArrayName::PER_STEP {
            let array = Array::open(store.clone(), &name.zarr_path())
                .map_err(|e| StoreError::zarr(path.join(name.path()), "cannot open array", e))?;
            arrays.push((name, array));
        }
        attrs.finished = false;
        let mut writer = StoreWriter {
            root: path.to_path_buf(),
            attrs,
            arrays,
            weight_rows: steps + 1,
            capacity: steps,
        };
        writer.resize_all(steps)?;
        writer.commit_root()?;
        Ok((writer, last))
    }

    /// Notes a numerical fault at a step; `replay verify` reports it.
    pub fn record_fault(&mut self, fault: Fault) -> Result<(), StoreError> {
        self.attrs.faults.push(fault);
        self.commit_root()
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

    /// Writes `w_0`, the weights before the first step.
    fn write_initial_weights(&mut self, weights: &[f64]) -> Result<(), StoreError> {
        if self.weight_rows != 0 {
            return Err(StoreError::invalid(
                &self.root,
                "initial weights were already written",
            ));
        }
        self.check_weights(weights)?;
        self.write_weight_row(0, weights)?;
        self.weight_rows = 1;
        self.resize_all(0)?;
        self.commit_root()
    }

    /// Appends one optimizer step and commits it.
    pub fn append_step(&mut self, step: &StepRecord) -> Result<(), StoreError> {
        self.append_steps(std::slice::from_ref(step))
    }

    /// Appends several steps with one commit: their chunks first, then (when the arrays need
    /// room) the arrays' shapes, then the root's step count.
    pub fn append_steps(&mut self, steps: &[StepRecord]) -> Result<(), StoreError> {
        if self.weight_rows == 0 {
            return Err(StoreError::invalid(
                &self.root,
                "a step was recorded before the initial weights",
            ));
        }
        let first = self.attrs.steps as u64;
        let mut written = 0;
        let mut failure = None;
        for step in steps {
            if let Err(e) = self.write_step_chunks(first + written, step) {
                failure = Some(e);
                break;
            }
            written += 1;
        }
        // Steps written in full before a failure are still committed.
        if written > 0 {
            let end = first + written;
            if end > self.capacity {
                self.capacity = end.max(2 * self.capacity).max(16);
                self.resize_all(self.capacity)?;
            }
            self.attrs.steps = end as usize;
            self.commit_root()?;
        }
        failure.map_or(Ok(()), Err)
    }

    fn write_step_chunks(&mut self, s: u64, step: &StepRecord) -> Result<(), StoreError> {
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
        let mut index = vec![-1i64; b];
        for (slot, &i) in index.iter_mut().zip(&step.indices) {
            *slot = i as i64;
        }
        let mut dloss = vec![f64::NAN; b * k];
        dloss[..n * k].copy_from_slice(&step.dloss);
        self.write_weight_row(s + 1, &step.weights_after)?;
        let float = self.float_type();
        for (name, array) in &self.arrays {
            let result = match name {
                ArrayName::Lr => array.store_chunk_opt(&[s], &[step.lr][..], &keep_all()),
                ArrayName::BatchSize => array.store_chunk_opt(&[s], &[n as i64][..], &keep_all()),
                ArrayName::BatchIndex => array.store_chunk_opt(&[s, 0], &index[..], &keep_all()),
                ArrayName::Dloss => float.store_chunk(array, &[s, 0, 0], &dloss),
                _ => Ok(()),
            };
            result.map_err(|e| {
                StoreError::zarr(self.chunk_file(*name, s), "cannot write chunk", e)
            })?;
        }
        self.weight_rows = s + 2;
        Ok(())
    }

    /// Trims the arrays to the committed steps and marks the run as finished normally.
    pub fn finish(&mut self) -> Result<(), StoreError> {
        self.capacity = self.attrs.steps as u64;
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
        let (_, array) = self
            .arrays
            .iter()
            .find(|(n, _)| *n == ArrayName::Weights)
            .expect("weights array exists");
        float.store_chunk(array, &[row, 0], weights).map_err(|e| {
            StoreError::zarr(
                self.chunk_file(ArrayName::Weights, row),
                "cannot write chunk",
                e,
            )
        })
    }

    /// Sets every per-step array to `steps` entries (weights to `steps + 1`).
    fn resize_all(&mut self, steps: u64) -> Result<(), StoreError> {
        let (p, k, b) = (
            self.attrs.num_params as u64,
            self.attrs.outputs as u64,
            self.attrs.max_batch as u64,
        );
        for i in 0..self.arrays.len() {
            let name = self.arrays[i].0;
            let shape = match name {
                ArrayName::Weights => vec![steps + 1, p],
                ArrayName::Lr | ArrayName::BatchSize => vec![steps],
                ArrayName::BatchIndex => vec![steps, b],
                ArrayName::Dloss => vec![steps, b, k],
                _ => continue,
            };
            let file = self.file(name);
            let array = &mut self.arrays[i].1;
            array
                .set_shape(shape)
                .map_err(|e| StoreError::zarr(&file, "cannot resize", e))?;
            let array = &self.arrays[i].1;
            self.store_array_metadata(name, array)?;
        }
        Ok(())
    }

    /// The file of a per-step chunk (all trailing chunk indices are 0).
    fn chunk_file(&self, name: ArrayName, index: u64) -> PathBuf {
        let mut file = self
            .root
            .join(name.path())
            .join("c")
            .join(index.to_string());
        for _ in 1..name.leading_dims().len() {
            file.push("0");
        }
        file
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

/// The training dtype as a zarr element type: values travel as f64 and are narrowed on write
/// (exactly, since they came from that dtype).
#[derive(Clone, Copy)]
struct FloatType(TrainDType);

impl FloatType {
    /// f32 arrays are compressed with blosc (LZ4 after a byte shuffle), which zarr-python reads
    /// without plug-ins. f64 arrays are not: trained f64 weights compress by about 1.07× (see
    /// the README's benchmarks), not worth the writer's CPU time on a machine whose cores all
    /// train.
    fn builder(self, shape: Vec<u64>, chunk: Vec<u64>) -> ArrayBuilder {
        let (mut builder, typesize) = match self.0 {
            TrainDType::F64 => {
                return ArrayBuilder::new(shape, chunk, data_type::float64(), f64::NAN);
            }
            TrainDType::F32 => (
                ArrayBuilder::new(shape, chunk, data_type::float32(), f32::NAN),
                4,
            ),
        };
        let blosc = BloscCodec::new(
            BloscCompressor::LZ4,
            BloscCompressionLevel::try_from(BLOSC_LEVEL).expect("a level in 0..=9"),
            None,
            BloscShuffleMode::Shuffle,
            Some(typesize),
        )
        .expect("c-blosc always has LZ4");
        builder.bytes_to_bytes_codecs(vec![Arc::new(blosc)]);
        builder
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

/// Removes temporary metadata files anywhere in the store, and chunks of per-step arrays at
/// or past the committed count (past it for `weights`, which has one more row).
fn remove_leftovers(root: &Path, steps: u64) -> Result<(), StoreError> {
    let io = |path: &Path, source| StoreError::Io {
        path: path.to_path_buf(),
        message: "cannot clean up after an interrupted run".into(),
        source,
    };
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).map_err(|e| io(&dir, e))? {
            let entry = entry.map_err(|e| io(&dir, e))?;
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.to_string_lossy().ends_with(TEMP_SUFFIX) {
                std::fs::remove_file(&path).map_err(|e| io(&path, e))?;
            }
        }
    }
    for name in ArrayName::PER_STEP {
        let keep = if name == ArrayName::Weights {
            steps + 1
        } else {
            steps
        };
        let chunks = root.join(name.path()).join("c");
        let Ok(entries) = std::fs::read_dir(&chunks) else {
            continue;
        };
        for entry in entries {
            let path = entry.map_err(|e| io(&chunks, e))?.path();
            let index = path
                .file_name()
                .and_then(|n| n.to_str()?.parse::<u64>().ok());
            if index.is_some_and(|i| i >= keep) {
                let removed = if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
                removed.map_err(|e| io(&path, e))?;
            }
        }
    }
    Ok(())
}

/// zarrs erases a chunk that equals the fill value; every chunk of a committed step must
/// exist (an all-zero weight row is real data, and a missing chunk means damage).
/// Every chunk is stored (a fill-valued chunk is data here), and encoded on the calling thread:
/// zarrs would otherwise encode on rayon's global pool, which Burn's CPU backend trains on.
fn keep_all() -> zarrs::array::CodecOptions {
    zarrs::array::CodecOptions::default()
        .with_store_empty_chunks(true)
        .with_concurrent_target(1)
}
