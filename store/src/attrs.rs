use serde::{Deserialize, Serialize};

/// Value of `format` in the root attributes; anything else is not an epk store.
pub const FORMAT_NAME: &str = "epk";
/// The layout version this build writes and reads.
pub const FORMAT_VERSION: u32 = 2;

/// Element type of the arrays that hold training-dtype values (weights, dloss, inputs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrainDType {
    /// 32-bit floats: stored as f32 and blosc-compressed.
    F32,
    /// 64-bit floats: stored as f64, uncompressed.
    F64,
}

/// The loss whose per-sample gradient dL/df the store records. `f` is what the model's
/// forward returns, the function the kernel machine explains.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Loss {
    /// `f` are logits; L = mean over the batch of −log softmax(f)_y.
    CrossEntropy,
    /// `f` are log-probabilities (a log-softmax output); L = mean of −f_y. dL/df is then the
    /// same for every step, which gives Bell et al.'s single kernel machine (Theorem 3.7).
    NllLogSoftmax,
    /// The model's own loss, computed by its training step (label smoothing, class weights,
    /// anything that depends on the weights only through `f`); the store holds its per-sample
    /// dL/df as they entered the optimizer, which is all replay needs.
    Model,
}

/// What rebuilds the model: a kind that a replay binary knows and its configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// The model type's name (`EpkModel::KIND`), e.g. `mlp`: which code rebuilds it.
    pub kind: String,
    /// The model's configuration, enough to rebuild its structure.
    pub config: serde_json::Value,
}

/// The optimizer and its hyper-parameters as the recorder saw them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OptimizerSpec {
    /// `sgd`, `adam`, `adamw`, ...
    pub name: String,
    /// The optimizer's own configuration (Burn's config serialised as JSON).
    pub config: serde_json::Value,
}

/// One parameter tensor inside the flat weight vector, in flatten order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamLayout {
    /// Module path, e.g. `hidden.weight`.
    pub path: String,
    /// The tensor's shape; its values are row-major in the flat vector.
    pub shape: Vec<usize>,
    /// First element in the flat vector.
    pub offset: usize,
    /// Number of elements (the product of `shape`).
    pub len: usize,
}

/// The root group's `epk` attribute block: everything a reader needs besides the arrays.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunAttributes {
    /// Always [`FORMAT_NAME`]: what marks a Zarr store as an epk store.
    pub format: String,
    /// The layout version, [`FORMAT_VERSION`] for stores this build writes.
    pub version: u32,
    /// What rebuilds the model.
    pub model: ModelInfo,
    /// The flat weight vector's parameter tensors, in flatten order and contiguous.
    pub params: Vec<ParamLayout>,
    /// Length of the flat weight vector (the sum of the parameters' lengths).
    pub num_params: usize,
    /// Width of f (number of model outputs).
    pub outputs: usize,
    /// Shape of one input sample.
    pub input_shape: Vec<usize>,
    /// The loss whose dL/df the store records.
    pub loss: Loss,
    /// The optimizer that made the steps.
    pub optimizer: OptimizerSpec,
    /// The training dtype, in which weights, dL/df and inputs are stored.
    pub dtype: TrainDType,
    /// Slots per step in `batch_index` and `dloss`.
    pub max_batch: usize,
    /// Samples in the stored training set.
    pub train_samples: usize,
    /// Samples in the stored held-out set (0 when there is none).
    pub eval_samples: usize,
    /// Optimizer steps committed. Arrays may hold one more, uncommitted, entry after a kill.
    pub steps: usize,
    /// True once the recorder closed the run normally.
    pub finished: bool,
    /// Numerical faults (NaN or infinity) seen while recording, by step.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<Fault>,
}

/// A non-finite value the recorder saw in a step's loss gradients or weights.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    /// The step at which the value was seen.
    pub step: usize,
    /// What was non-finite, and where.
    pub message: String,
}

/// Upper bounds that keep a hostile store from asking for absurd allocations.
const MAX_VALUES_PER_CHUNK: usize = 1 << 31;

impl RunAttributes {
    /// Attributes for a model with one flat parameter vector of `num_params` entries, used in
    /// examples and tests of the format itself.
    pub fn example(num_params: usize, outputs: usize, max_batch: usize) -> Self {
        RunAttributes {
            format: FORMAT_NAME.to_string(),
            version: FORMAT_VERSION,
            model: ModelInfo {
                kind: "example".into(),
                config: serde_json::json!({}),
            },
            params: vec![ParamLayout {
                path: "weight".into(),
                shape: vec![num_params],
                offset: 0,
                len: num_params,
            }],
            num_params,
            outputs,
            input_shape: vec![2],
            loss: Loss::CrossEntropy,
            optimizer: OptimizerSpec {
                name: "sgd".into(),
                config: serde_json::json!({}),
            },
            dtype: TrainDType::F64,
            max_batch,
            train_samples: 0,
            eval_samples: 0,
            steps: 0,
            finished: false,
            faults: Vec::new(),
        }
    }

    /// Checks the internal consistency of the block; the message says what is wrong.
    pub fn check(&self) -> Result<(), String> {
        if self.format != FORMAT_NAME {
            return Err(format!(
                "format is {:?}, expected {FORMAT_NAME:?}",
                self.format
            ));
        }
        let mut offset = 0usize;
        for p in &self.params {
            let len = p.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
            if len != Some(p.len) {
                return Err(format!(
                    "parameter {} has shape {:?} but length {}",
                    p.path, p.shape, p.len
                ));
            }
            if p.offset != offset {
                return Err(format!(
                    "parameter {} starts at {} but the previous one ends at {offset}",
                    p.path, p.offset
                ));
            }
            offset = offset
                .checked_add(p.len)
                .ok_or("parameter lengths overflow")?;
        }
        if offset != self.num_params {
            return Err(format!(
                "parameters add up to {offset} values but num_params is {}",
                self.num_params
            ));
        }
        if self.outputs == 0 || self.max_batch == 0 || self.num_params == 0 {
            return Err("outputs, max_batch and num_params must be positive".into());
        }
        let per_step = self.max_batch.checked_mul(self.outputs);
        let input = self
            .input_shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .and_then(|v| v.checked_mul(self.train_samples.max(self.eval_samples)));
        for (what, v) in [
            ("num_params", Some(self.num_params)),
            ("max_batch × outputs", per_step),
            ("the input arrays", input),
        ] {
            if v.is_none_or(|v| v > MAX_VALUES_PER_CHUNK) {
                return Err(format!("{what} is too large for one chunk"));
            }
        }
        if self.input_shape.is_empty() || self.input_shape.contains(&0) {
            return Err(format!("input shape {:?} is empty", self.input_shape));
        }
        Ok(())
    }

    /// Number of values in one input sample.
    pub fn input_len(&self) -> usize {
        self.input_shape.iter().product()
    }
}
