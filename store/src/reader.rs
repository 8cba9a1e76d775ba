use crate::ArrayName;
use crate::layout::ROOT_ATTRIBUTE;
use crate::open::OpenStore;
use crate::open::Storage;
use crate::{FORMAT_NAME, RunAttributes, Samples, StoreError, TrainDType};
use std::path::{Path, PathBuf};
use zarrs::array::{Array, ElementOwned};

/// The samples that built one step and their recorded dL/df.
#[derive(Clone, Debug, PartialEq)]
pub struct StepBatch {
    /// Dataset indices of the step's samples, in the order they entered the step.
    pub indices: Vec<usize>,
    /// `[indices.len(), outputs]`, row-major.
    pub dloss: Vec<f64>,
}

/// Read access to a store's committed steps. Opening validates the metadata against the
/// format; every read checks that the chunk it needs exists and has the right size.
pub struct StoreReader {
    open: OpenStore,
}

impl StoreReader {
    /// Opens the store at `path` and checks that it is an epk store this build can read.
    ///
    /// With the `s3` feature, `path` may also be a URL, `s3://bucket/path`: the store is then
    /// read from S3-compatible object storage, configured by the AWS variables of the
    /// environment (see [`remote`](crate::remote)).
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Ok(StoreReader {
            open: OpenStore::open(path)?,
        })
    }

    /// Whether `path` holds an epk store of any version, damaged or not (its root metadata
    /// names the format): what a tool may replace when asked to overwrite.
    pub fn is_epk_store(path: &Path) -> bool {
        std::fs::read(path.join("zarr.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .is_some_and(|root| root["attributes"][ROOT_ATTRIBUTE]["format"] == FORMAT_NAME)
    }

    /// Opens the store on object storage at `remote`: for a client set up by hand
    /// ([`Remote::from_object_store`](crate::remote::Remote::from_object_store)).
    #[cfg(feature = "s3")]
    pub fn open_remote(remote: crate::remote::Remote) -> Result<Self, StoreError> {
        Ok(StoreReader {
            open: OpenStore::from_remote(remote)?,
        })
    }

    /// Whether `path` names a store on object storage (`s3://bucket/path`) rather than a
    /// local folder.
    pub fn is_url(path: &Path) -> bool {
        crate::open::is_url(path)
    }

    /// Whether this store is read from object storage: it has no local folder to write
    /// beside (partial results, exports).
    pub fn is_remote(&self) -> bool {
        self.open.is_remote()
    }

    /// The run's attributes as committed.
    pub fn attrs(&self) -> &RunAttributes {
        &self.open.attrs
    }

    /// Committed optimizer steps.
    pub fn steps(&self) -> usize {
        self.open.attrs.steps
    }

    /// The store's directory, or its URL for a store on object storage.
    pub fn path(&self) -> &Path {
        &self.open.root
    }

    /// The array's folder, for errors.
    fn file(&self, name: ArrayName) -> PathBuf {
        name.dir(&self.open.root)
    }

    /// Reads one chunk, failing if it is missing (zarr would fill it) or has the wrong length.
    fn chunk<T: ElementOwned>(
        &self,
        array: &Array<Storage>,
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

    fn check_step(&self, step: usize, states: bool) -> Result<(), StoreError> {
        let last = self.open.attrs.steps + usize::from(states);
        if step >= last {
            return Err(StoreError::invalid(
                &self.open.root,
                format!(
                    "step {step} is past the {} committed steps",
                    self.open.attrs.steps
                ),
            ));
        }
        Ok(())
    }

    /// Weights before step `state` (`state == steps()` gives the final weights).
    pub fn weights(&self, state: usize) -> Result<Vec<f64>, StoreError> {
        self.check_step(state, true)?;
        self.open
            .row_f64(ArrayName::Weights, state as u64, self.open.attrs.num_params)
    }

    /// Learning rate applied at `step`.
    pub fn lr(&self, step: usize) -> Result<f64, StoreError> {
        self.check_step(step, false)?;
        Ok(self.open.row_f64(ArrayName::Lr, step as u64, 1)?[0])
    }

    /// The samples of `step` and their dL/df.
    pub fn batch(&self, step: usize) -> Result<StepBatch, StoreError> {
        self.check_step(step, false)?;
        let (k, b) = (self.open.attrs.outputs, self.open.attrs.max_batch);
        let n = self.open.row_i64(ArrayName::BatchSize, step as u64, 1)?[0];
        let n = usize::try_from(n)
            .ok()
            .filter(|&n| n >= 1 && n <= b)
            .ok_or_else(|| {
                StoreError::invalid(
                    self.file(ArrayName::BatchSize),
                    format!("step {step} has batch size {n}, outside 1..={b}"),
                )
            })?;
        let raw = self.open.row_i64(ArrayName::BatchIndex, step as u64, b)?;
        let mut indices = Vec::with_capacity(n);
        for &i in &raw[..n] {
            match usize::try_from(i) {
                Ok(i) if i < self.open.attrs.train_samples => indices.push(i),
                _ => {
                    return Err(StoreError::invalid(
                        self.file(ArrayName::BatchIndex),
                        format!(
                            "step {step} names sample {i}, outside the {} training samples",
                            self.open.attrs.train_samples
                        ),
                    ));
                }
            }
        }
        let mut dloss = self.open.row_f64(ArrayName::Dloss, step as u64, b * k)?;
        dloss.truncate(n * k);
        Ok(StepBatch { indices, dloss })
    }

    fn samples(
        &self,
        inputs: ArrayName,
        targets: ArrayName,
        n: usize,
    ) -> Result<Samples, StoreError> {
        let shape = self.open.attrs.input_shape.clone();
        if n == 0 {
            return Ok(Samples {
                inputs: vec![],
                input_shape: shape,
                targets: vec![],
            });
        }
        let x = self.open.check_array(inputs)?;
        let y = self.open.check_array(targets)?;
        let zero = vec![0u64; shape.len() + 1];
        let len = n * self.open.attrs.input_len();
        // check_array saw the training dtype; f32 widens exactly.
        let values = match self.open.attrs.dtype {
            TrainDType::F64 => self.chunk::<f64>(&x, inputs, &zero, len)?,
            TrainDType::F32 => {
                let narrow = self.chunk::<f32>(&x, inputs, &zero, len)?;
                narrow.into_iter().map(f64::from).collect()
            }
        };
        let labels = self.chunk::<i64>(&y, targets, &[0], n)?;
        if let Some(bad) = labels
            .iter()
            .find(|&&t| t < 0 || t as usize >= self.open.attrs.outputs)
        {
            return Err(StoreError::invalid(
                self.file(targets),
                format!("label {bad} is outside 0..{}", self.open.attrs.outputs),
            ));
        }
        Samples::new(values, shape, labels).map_err(|m| StoreError::invalid(self.file(inputs), m))
    }

    /// The training set, by dataset index.
    pub fn train(&self) -> Result<Samples, StoreError> {
        self.samples(
            ArrayName::TrainInputs,
            ArrayName::TrainTargets,
            self.open.attrs.train_samples,
        )
    }

    /// The held-out set (empty when the run recorded none).
    pub fn eval(&self) -> Result<Samples, StoreError> {
        self.samples(
            ArrayName::EvalInputs,
            ArrayName::EvalTargets,
            self.open.attrs.eval_samples,
        )
    }
}
