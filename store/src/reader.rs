use crate::layout::ROOT_ATTRIBUTE;
use crate::shard::{MAX_STEPS_PER_SHARD, ShardFiles};
use crate::writer::blosc;
use crate::{
    ArrayName, FORMAT_NAME, FORMAT_VERSION, RunAttributes, Samples, StoreError, TrainDType,
};
use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use zarrs::array::codec::api::{BytesRepresentation, BytesToBytesCodecTraits};
use zarrs::array::{Array, ElementOwned};
use zarrs::filesystem::FilesystemStore;

/// The samples that built one step and their recorded dL/df.
#[derive(Clone, Debug, PartialEq)]
pub struct StepBatch {
    pub indices: Vec<usize>,
    /// `[indices.len(), outputs]`, row-major.
    pub dloss: Vec<f64>,
}

/// Read access to a store's committed steps. Opening validates the metadata against the
/// format; every read checks that the chunk it needs exists and has the right size.
pub struct StoreReader {
    root: PathBuf,
    attrs: RunAttributes,
    store: Arc<FilesystemStore>,
    /// The per-step arrays, in [`ArrayName::PER_STEP`] order.
    lanes: Vec<Lane>,
}

/// Where a per-step array's rows are and how they are encoded.
struct Lane {
    files: ShardFiles,
    /// Rows pass through blosc after the little-endian bytes.
    blosc: bool,
}

impl StoreReader {
    /// Opens the store at `path` and checks that it is an epk store this build can read.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let file = path.join("zarr.json");
        let bytes = std::fs::read(&file).map_err(|source| StoreError::Io {
            path: file.clone(),
            message: if path.exists() {
                "cannot read the root metadata (is this a Zarr v3 store?)".into()
            } else {
                "no such store".into()
            },
            source,
        })?;
        let root: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
            StoreError::invalid(&file, format!("root metadata is not valid JSON: {e}"))
        })?;
        if root.get("zarr_format").and_then(|v| v.as_u64()) != Some(3) {
            return Err(StoreError::NotEpk {
                path: file,
                message: "zarr_format is not 3".into(),
            });
        }
        let epk = root
            .get("attributes")
            .and_then(|a| a.get(ROOT_ATTRIBUTE))
            .ok_or_else(|| StoreError::NotEpk {
                path: file.clone(),
                message: format!("the root group has no {ROOT_ATTRIBUTE:?} attribute"),
            })?;
        if epk.get("format").and_then(|f| f.as_str()) != Some(FORMAT_NAME) {
            return Err(StoreError::NotEpk {
                path: file,
                message: format!("attribute {ROOT_ATTRIBUTE}.format is not {FORMAT_NAME:?}"),
            });
        }
        let version = epk.get("version").and_then(|v| v.as_u64()).unwrap_or(0);
        if version != u64::from(FORMAT_VERSION) {
            return Err(StoreError::Version {
                path: file,
                found: u32::try_from(version).unwrap_or(u32::MAX),
                supported: FORMAT_VERSION,
            });
        }
        let attrs: RunAttributes = serde_json::from_value(epk.clone()).map_err(|e| {
            StoreError::invalid(&file, format!("bad {ROOT_ATTRIBUTE} attributes: {e}"))
        })?;
        attrs.check().map_err(|m| StoreError::invalid(&file, m))?;
        let store = Arc::new(
            FilesystemStore::new(path).map_err(|e| StoreError::zarr(path, "cannot open", e))?,
        );
        let mut reader = StoreReader {
            root: path.to_path_buf(),
            attrs,
            store,
            lanes: Vec::new(),
        };
        for name in ArrayName::PER_STEP {
            let array = reader.check_array(name)?;
            let steps = reader.chunk_shape(name, &array)?[0];
            let files = ShardFiles::new(&reader.file(name), array.dimensionality(), steps);
            let blosc = reader.check_sharding(name, &array)?;
            reader.lanes.push(Lane { files, blosc });
        }
        Ok(reader)
    }

    /// Whether `path` holds an epk store of any version, damaged or not (its root metadata
    /// names the format): what a tool may replace when asked to overwrite.
    pub fn is_epk_store(path: &Path) -> bool {
        std::fs::read(path.join("zarr.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .is_some_and(|root| root["attributes"][ROOT_ATTRIBUTE]["format"] == FORMAT_NAME)
    }

    /// The run's attributes as committed.
    pub fn attrs(&self) -> &RunAttributes {
        &self.attrs
    }

    /// Committed optimizer steps.
    pub fn steps(&self) -> usize {
        self.attrs.steps
    }

    /// The store's directory.
    pub fn path(&self) -> &Path {
        &self.root
    }

    fn file(&self, name: ArrayName) -> PathBuf {
        self.root.join(name.path())
    }

    fn open_array(&self, name: ArrayName) -> Result<Array<FilesystemStore>, StoreError> {
        Array::open(self.store.clone(), &name.zarr_path()).map_err(|e| {
            StoreError::zarr(self.file(name).join("zarr.json"), "cannot open array", e)
        })
    }

    /// Opens an array and checks its element type, shape and chunking against the attributes.
    fn check_array(&self, name: ArrayName) -> Result<Array<FilesystemStore>, StoreError> {
        let a = &self.attrs;
        let array = self.open_array(name)?;
        let (s, p, k, b) = (
            a.steps as u64,
            a.num_params as u64,
            a.outputs as u64,
            a.max_batch as u64,
        );
        let float = match a.dtype {
            TrainDType::F64 => "float64",
            TrainDType::F32 => "float32",
        };
        let (min_shape, dtype): (Vec<u64>, &str) = match name {
            ArrayName::Weights => (vec![s + 1, p], float),
            ArrayName::Lr => (vec![s], "float64"),
            ArrayName::BatchSize => (vec![s], "int64"),
            ArrayName::BatchIndex => (vec![s, b], "int64"),
            ArrayName::Dloss => (vec![s, b, k], float),
            ArrayName::TrainInputs | ArrayName::EvalInputs => {
                let n = if name == ArrayName::TrainInputs {
                    a.train_samples
                } else {
                    a.eval_samples
                };
                let mut shape = vec![n as u64];
                shape.extend(a.input_shape.iter().map(|&d| d as u64));
                (shape, float)
            }
            ArrayName::TrainTargets | ArrayName::EvalTargets => {
                let n = if name == ArrayName::TrainTargets {
                    a.train_samples
                } else {
                    a.eval_samples
                };
                (vec![n as u64], "int64")
            }
        };
        let found = array.data_type().to_string();
        if !found.contains(dtype) {
            return Err(StoreError::invalid(
                self.file(name).join("zarr.json"),
                format!("data type is {found}, expected {dtype}"),
            ));
        }
        let shape = array.shape();
        let grows = ArrayName::PER_STEP.contains(&name);
        let ok = shape.len() == min_shape.len()
            && shape
                .iter()
                .zip(&min_shape)
                .enumerate()
                .all(|(i, (&have, &want))| {
                    if i == 0 && grows {
                        have >= want
                    } else {
                        have == want
                    }
                });
        if !ok {
            return Err(StoreError::invalid(
                self.file(name).join("zarr.json"),
                format!("shape is {shape:?}, the attributes need {min_shape:?}"),
            ));
        }
        // The format fixes the chunking; anything else could ask for absurd allocations.
        let chunk = self.chunk_shape(name, &array)?;
        let metadata = self.file(name).join("zarr.json");
        if grows {
            // Per-step arrays: shards of 1..=MAX steps; `check_sharding` checks the codecs.
            let row = &min_shape[1..];
            if !(1..=MAX_STEPS_PER_SHARD).contains(&chunk[0]) || chunk[1..] != *row {
                return Err(StoreError::invalid(
                    metadata,
                    format!(
                        "shard shape is {chunk:?}, the format needs [steps] + {row:?} with 1 ≤ steps ≤ {MAX_STEPS_PER_SHARD}"
                    ),
                ));
            }
        } else {
            let want: Vec<u64> = min_shape.iter().map(|&d| d.max(1)).collect();
            if chunk != want {
                return Err(StoreError::invalid(
                    metadata,
                    format!("chunk shape is {chunk:?}, the format needs {want:?}"),
                ));
            }
        }
        Ok(array)
    }

    /// The shape of the array's first chunk (for a sharded array, its shard).
    fn chunk_shape(
        &self,
        name: ArrayName,
        array: &Array<FilesystemStore>,
    ) -> Result<Vec<u64>, StoreError> {
        let zero = vec![0u64; array.dimensionality()];
        let chunk = array.chunk_shape(&zero).map_err(|e| {
            StoreError::zarr(self.file(name).join("zarr.json"), "bad chunk grid", e)
        })?;
        Ok(chunk.iter().map(|d| d.get()).collect())
    }

    /// Checks that a per-step array is sharded the way the recorder writes it (rows of one
    /// entry, little-endian, index first and without checksum) and says whether its rows are
    /// blosc-compressed. Rows are read without zarrs' sharding decoder, which cannot tell a
    /// missing row from a fill value.
    fn check_sharding(
        &self,
        name: ArrayName,
        array: &Array<FilesystemStore>,
    ) -> Result<bool, StoreError> {
        let metadata = serde_json::to_value(array.metadata()).unwrap_or_default();
        let codecs = &metadata["codecs"];
        let little = serde_json::json!({"name": "bytes", "configuration": {"endian": "little"}});
        let sharding = &codecs[0]["configuration"];
        let inner = sharding["codecs"].as_array().cloned().unwrap_or_default();
        let blosc = inner.len() == 2 && inner[1]["name"] == "blosc";
        let ok = codecs.as_array().is_some_and(|c| c.len() == 1)
            && codecs[0]["name"] == "sharding_indexed"
            && sharding["index_location"] == "start"
            && sharding["index_codecs"] == serde_json::json!([little])
            && inner.first() == Some(&little)
            && (inner.len() == 1 || blosc);
        if !ok {
            return Err(StoreError::invalid(
                self.file(name).join("zarr.json"),
                "the format needs sharding_indexed (index at the start, bytes little-endian, no index checksum) over bytes little-endian and optionally blosc",
            ));
        }
        Ok(blosc)
    }

    fn lane(&self, name: ArrayName) -> &Lane {
        let i = ArrayName::PER_STEP
            .iter()
            .position(|&n| n == name)
            .expect("a per-step array");
        &self.lanes[i]
    }

    /// The shard files of a per-step array, as its metadata describes them.
    pub(crate) fn shard_files(&self, name: ArrayName) -> &ShardFiles {
        &self.lane(name).files
    }

    /// The bytes of entry `row` of a per-step array, decoded to `width`-byte little-endian
    /// values; an error if the entry is missing from its shard (zarr would fill it) or does not
    /// hold `len` values.
    fn row_bytes(
        &self,
        name: ArrayName,
        row: u64,
        len: usize,
        width: usize,
    ) -> Result<Vec<u8>, StoreError> {
        let lane = self.lane(name);
        let file = lane.files.file_of(row);
        let want = (len * width) as u64;
        // Blosc adds at most a 16-byte header to incompressible data.
        let max = if lane.blosc { want + 16 } else { want };
        let bytes = lane.files.read_row(row, max)?.ok_or_else(|| {
            StoreError::invalid(&file, format!("entry {row} is missing from its shard"))
        })?;
        let bytes = if lane.blosc {
            // A blosc frame describes itself, so any blosc configuration decodes.
            blosc(width)
                .decode(
                    Cow::Owned(bytes),
                    &BytesRepresentation::FixedSize(want),
                    &one_thread(),
                )
                .map_err(|e| StoreError::zarr(&file, &format!("cannot decode entry {row}"), e))?
                .into_owned()
        } else {
            bytes
        };
        if bytes.len() as u64 != want {
            return Err(StoreError::invalid(
                &file,
                format!("entry {row} holds {} bytes, expected {want}", bytes.len()),
            ));
        }
        Ok(bytes)
    }

    /// Entry `row` of an int64 per-step array.
    fn row_i64(&self, name: ArrayName, row: u64, len: usize) -> Result<Vec<i64>, StoreError> {
        let bytes = self.row_bytes(name, row, len, 8)?;
        Ok(bytes
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
            .collect())
    }

    /// Entry `row` of a float per-step array as f64 (f32 widens exactly).
    fn row_f64(
        &self,
        name: ArrayName,
        row: u64,
        len: usize,
        dtype: TrainDType,
    ) -> Result<Vec<f64>, StoreError> {
        Ok(match dtype {
            TrainDType::F64 => self
                .row_bytes(name, row, len, 8)?
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
                .collect(),
            TrainDType::F32 => self
                .row_bytes(name, row, len, 4)?
                .chunks_exact(4)
                .map(|b| f64::from(f32::from_le_bytes(b.try_into().expect("4 bytes"))))
                .collect(),
        })
    }

    /// Reads one chunk, failing if it is missing (zarr would fill it) or has the wrong length.
    fn chunk<T: ElementOwned>(
        &self,
        array: &Array<FilesystemStore>,
        name: ArrayName,
        chunk: &[u64],
        len: usize,
    ) -> Result<Vec<T>, StoreError> {
        let key: Vec<String> = chunk.iter().map(u64::to_string).collect();
        let file = self.file(name).join("c").join(key.join("/"));
        let values = array
            .retrieve_chunk_if_exists::<Vec<T>>(chunk)
            .map_err(|e| StoreError::zarr(&file, "cannot read chunk", e))?
            .ok_or_else(|| StoreError::invalid(&file, "chunk is missing"))?;
        if values.len() != len {
            return Err(StoreError::invalid(
                &file,
                format!("chunk holds {} values, expected {len}", values.len()),
            ));
        }
        Ok(values)
    }

    /// Reads a chunk of a training-dtype array as f64 (f32 widens exactly).
    fn chunk_f64(
        &self,
        array: &Array<FilesystemStore>,
        name: ArrayName,
        chunk: &[u64],
        len: usize,
    ) -> Result<Vec<f64>, StoreError> {
        if array.data_type().to_string().contains("float32") {
            let v: Vec<f32> = self.chunk(array, name, chunk, len)?;
            Ok(v.into_iter().map(f64::from).collect())
        } else {
            self.chunk(array, name, chunk, len)
        }
    }

    fn chunk_i64(
        &self,
        array: &Array<FilesystemStore>,
        name: ArrayName,
        chunk: &[u64],
        len: usize,
    ) -> Result<Vec<i64>, StoreError> {
        self.chunk(array, name, chunk, len)
    }

    fn check_step(&self, step: usize, states: bool) -> Result<(), StoreError> {
        let last = self.attrs.steps + usize::from(states);
        if step >= last {
            return Err(StoreError::invalid(
                &self.root,
                format!(
                    "step {step} is past the {} committed steps",
                    self.attrs.steps
                ),
            ));
        }
        Ok(())
    }

    /// Weights before step `state` (`state == steps()` gives the final weights).
    pub fn weights(&self, state: usize) -> Result<Vec<f64>, StoreError> {
        self.check_step(state, true)?;
        self.row_f64(
            ArrayName::Weights,
            state as u64,
            self.attrs.num_params,
            self.attrs.dtype,
        )
    }

    /// Learning rate applied at `step`.
    pub fn lr(&self, step: usize) -> Result<f64, StoreError> {
        self.check_step(step, false)?;
        Ok(self.row_f64(ArrayName::Lr, step as u64, 1, TrainDType::F64)?[0])
    }

    /// The samples of `step` and their dL/df.
    pub fn batch(&self, step: usize) -> Result<StepBatch, StoreError> {
        self.check_step(step, false)?;
        let (k, b) = (self.attrs.outputs, self.attrs.max_batch);
        let n = self.row_i64(ArrayName::BatchSize, step as u64, 1)?[0];
        let n = usize::try_from(n)
            .ok()
            .filter(|&n| n >= 1 && n <= b)
            .ok_or_else(|| {
                StoreError::invalid(
                    self.file(ArrayName::BatchSize),
                    format!("step {step} has batch size {n}, outside 1..={b}"),
                )
            })?;
        let raw = self.row_i64(ArrayName::BatchIndex, step as u64, b)?;
        let mut indices = Vec::with_capacity(n);
        for &i in &raw[..n] {
            match usize::try_from(i) {
                Ok(i) if i < self.attrs.train_samples => indices.push(i),
                _ => {
                    return Err(StoreError::invalid(
                        self.file(ArrayName::BatchIndex),
                        format!(
                            "step {step} names sample {i}, outside the {} training samples",
                            self.attrs.train_samples
                        ),
                    ));
                }
            }
        }
        let mut dloss = self.row_f64(ArrayName::Dloss, step as u64, b * k, self.attrs.dtype)?;
        dloss.truncate(n * k);
        Ok(StepBatch { indices, dloss })
    }

    fn samples(
        &self,
        inputs: ArrayName,
        targets: ArrayName,
        n: usize,
    ) -> Result<Samples, StoreError> {
        let shape = self.attrs.input_shape.clone();
        if n == 0 {
            return Ok(Samples {
                inputs: vec![],
                input_shape: shape,
                targets: vec![],
            });
        }
        let x = self.check_array(inputs)?;
        let y = self.check_array(targets)?;
        let zero = vec![0u64; shape.len() + 1];
        let values = self.chunk_f64(&x, inputs, &zero, n * self.attrs.input_len())?;
        let labels = self.chunk_i64(&y, targets, &[0], n)?;
        if let Some(bad) = labels
            .iter()
            .find(|&&t| t < 0 || t as usize >= self.attrs.outputs)
        {
            return Err(StoreError::invalid(
                self.file(targets),
                format!("label {bad} is outside 0..{}", self.attrs.outputs),
            ));
        }
        Samples::new(values, shape, labels).map_err(|m| StoreError::invalid(self.file(inputs), m))
    }

    /// The training set, by dataset index.
    pub fn train(&self) -> Result<Samples, StoreError> {
        self.samples(
            ArrayName::TrainInputs,
            ArrayName::TrainTargets,
            self.attrs.train_samples,
        )
    }

    /// The held-out set (empty when the run recorded none).
    pub fn eval(&self) -> Result<Samples, StoreError> {
        self.samples(
            ArrayName::EvalInputs,
            ArrayName::EvalTargets,
            self.attrs.eval_samples,
        )
    }
}

/// Decodes on the calling thread: a row is small, and replay's own threads read in parallel.
fn one_thread() -> zarrs::array::CodecOptions {
    zarrs::array::CodecOptions::default().with_concurrent_target(1)
}
