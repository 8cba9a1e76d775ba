/// Key of the epk block inside the root group's attributes.
pub const ROOT_ATTRIBUTE: &str = "epk";

/// The arrays of a store: their paths and dimension names live here and nowhere else.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArrayName {
    /// `weights[state, param]`: row `s` holds the weights before step `s`; row `steps` the final ones.
    Weights,
    /// `lr[step]`: the learning rate the optimizer applied at each step.
    Lr,
    /// `batch_size[step]`: how many samples built each step.
    BatchSize,
    /// `batch_index[step, slot]`: the dataset indices of those samples, `-1` past `batch_size`.
    BatchIndex,
    /// `dloss[step, slot, output]`: per-sample dL/df as it entered the step's gradient.
    Dloss,
    /// `train/inputs[sample, ...]`: the training inputs, by dataset index.
    TrainInputs,
    /// `train/targets[sample]`: the training class labels.
    TrainTargets,
    /// `eval/inputs[sample, ...]`: held-out inputs (optional).
    EvalInputs,
    /// `eval/targets[sample]`: held-out labels (optional).
    EvalTargets,
}

impl ArrayName {
    /// Arrays that grow by one entry per optimizer step.
    pub const PER_STEP: [ArrayName; 5] = [
        ArrayName::Weights,
        ArrayName::Lr,
        ArrayName::BatchSize,
        ArrayName::BatchIndex,
        ArrayName::Dloss,
    ];

    /// The array's path inside the store, relative to its root.
    pub fn path(self) -> &'static str {
        match self {
            ArrayName::Weights => "weights",
            ArrayName::Lr => "lr",
            ArrayName::BatchSize => "batch_size",
            ArrayName::BatchIndex => "batch_index",
            ArrayName::Dloss => "dloss",
            ArrayName::TrainInputs => "train/inputs",
            ArrayName::TrainTargets => "train/targets",
            ArrayName::EvalInputs => "eval/inputs",
            ArrayName::EvalTargets => "eval/targets",
        }
    }

    /// Zarr path (absolute inside the hierarchy).
    pub(crate) fn zarr_path(self) -> String {
        format!("/{}", self.path())
    }

    /// Names of the leading dimensions; sample arrays add one `feature_i` per input axis.
    pub(crate) fn leading_dims(self) -> &'static [&'static str] {
        match self {
            ArrayName::Weights => &["state", "param"],
            ArrayName::Lr | ArrayName::BatchSize => &["step"],
            ArrayName::BatchIndex => &["step", "slot"],
            ArrayName::Dloss => &["step", "slot", "output"],
            ArrayName::TrainInputs
            | ArrayName::TrainTargets
            | ArrayName::EvalInputs
            | ArrayName::EvalTargets => &["sample"],
        }
    }
}
