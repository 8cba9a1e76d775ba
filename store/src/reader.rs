use crate::layout::ROOT_ATTRIBUTE;
use crate::{
    ArrayName, FORMAT_NAME, FORMAT_VERSION, RunAttributes, Samples, StoreError, TrainDType,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use zarrs::array::Array;
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
        let reader = StoreReader {
            root: path.to_path_buf(),
            attrs,
            store,
        };
        for name in ArrayName::PER_STEP {
            reader.check_array(name)?;
        }
        Ok(reader)
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

    /// Checks an array's element type and shape against the attributes.
    fn check_array(&self, name: ArrayName) -> Result<(), StoreError> {
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
        let want: Vec<u64> = min_shape
            .iter()
            .enumerate()
            .map(|(i, &d)| if i == 0 && grows { 1 } else { d.max(1) })
            .collect();
        let zero = vec![0u64; want.len()];
        let chunk = array.chunk_shape(&zero).map_err(|e| {
            StoreError::zarr(self.file(name).join("zarr.json"), "bad chunk grid", e)
        })?;
        let chunk: Vec<u64> = chunk.iter().map(|d| d.get()).collect();
        if chunk != want {
            return Err(StoreError::invalid(
                self.file(name).join("zarr.json"),
                format!("chunk shape is {chunk:?}, the format needs {want:?}"),
            ));
        }
        Ok(())
    }

    /// Reads one chunk, failing if it is missing (zarr would fill it) or has the wrong length.
    fn chunk<T: zarrs::array::ElementOwned>(
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
        let array = self.open_array(ArrayName::Weights)?;
        self.chunk_f64(
            &array,
            ArrayName::Weights,
            &[state as u64, 0],
            self.attrs.num_params,
        )
    }

    /// Learning rate applied at `step`.
    pub fn lr(&self, step: usize) -> Result<f64, StoreError> {
        self.check_step(step, false)?;
        let array = self.open_array(ArrayName::Lr)?;
        Ok(self.chunk_f64(&array, ArrayName::Lr, &[step as u64], 1)?[0])
    }

    /// The samples of `step` and their dL/df.
    pub fn batch(&self, step: usize) -> Result<StepBatch, StoreError> {
        self.check_step(step, false)?;
        let (k, b) = (self.attrs.outputs, self.attrs.max_batch);
        let sizes = self.open_array(ArrayName::BatchSize)?;
        let n = self.chunk_i64(&sizes, ArrayName::BatchSize, &[step as u64], 1)?[0];
        let n = usize::try_from(n)
            .ok()
            .filter(|&n| n >= 1 && n <= b)
            .ok_or_else(|| {
                StoreError::invalid(
                    self.file(ArrayName::BatchSize),
                    format!("step {step} has batch size {n}, outside 1..={b}"),
                )
            })?;
        let idx = self.open_array(ArrayName::BatchIndex)?;
        let raw = self.chunk_i64(&idx, ArrayName::BatchIndex, &[step as u64, 0], b)?;
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
        let dl = self.open_array(ArrayName::Dloss)?;
        let mut dloss = self.chunk_f64(&dl, ArrayName::Dloss, &[step as u64, 0, 0], b * k)?;
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
        self.check_array(inputs)?;
        self.check_array(targets)?;
        let x = self.open_array(inputs)?;
        let zero = vec![0u64; shape.len() + 1];
        let values = self.chunk_f64(&x, inputs, &zero, n * self.attrs.input_len())?;
        let y = self.open_array(targets)?;
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
