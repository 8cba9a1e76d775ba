//! The layout of a store: every array's path, dimension names, shape, data type, fill value
//! and chunking, derived from the run's attributes. The writer creates arrays from these facts
//! and the reader checks arrays against them, so the two cannot drift apart; `docs/store.md`
//! describes the same table for readers in other languages.

use crate::codec::{self, Compression};
use crate::{MAX_STEPS_PER_SHARD, RunAttributes, TrainDType};
use std::path::{Path, PathBuf};
use zarrs::array::builder::ArrayBuilderFillValue;
use zarrs::array::{ArrayBuilder, DataType, data_type};

/// Key of the epk block inside the root group's attributes.
pub const ROOT_ATTRIBUTE: &str = "epk";

/// The metadata of a subgroup (`train`, `eval`): it only makes the hierarchy explicit for
/// readers that walk it.
pub(crate) const GROUP_METADATA: &[u8] =
    br#"{"zarr_format": 3, "node_type": "group", "attributes": {}}"#;

/// The root group's metadata: a Zarr v3 group whose attributes hold `attrs` under
/// [`ROOT_ATTRIBUTE`].
pub(crate) fn root_metadata(attrs: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "zarr_format": 3,
        "node_type": "group",
        "attributes": { ROOT_ATTRIBUTE: attrs },
    })
}

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

    /// Every array of the format.
    #[cfg(test)]
    pub(crate) const ALL: [ArrayName; 9] = [
        ArrayName::Weights,
        ArrayName::Lr,
        ArrayName::BatchSize,
        ArrayName::BatchIndex,
        ArrayName::Dloss,
        ArrayName::TrainInputs,
        ArrayName::TrainTargets,
        ArrayName::EvalInputs,
        ArrayName::EvalTargets,
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

    /// The array's folder in the store at `root`.
    pub(crate) fn dir(self, root: &Path) -> PathBuf {
        root.join(self.path())
    }

    /// The array's metadata file in the store at `root`.
    pub(crate) fn metadata_file(self, root: &Path) -> PathBuf {
        self.dir(root).join("zarr.json")
    }

    /// Whether the array grows by one entry per step (sharded along its first axis).
    pub(crate) fn is_per_step(self) -> bool {
        Self::PER_STEP.contains(&self)
    }

    /// Entries along the first axis of a per-step array for `steps` steps: the weights have
    /// one more row (the state before the first step).
    pub(crate) fn rows(self, steps: u64) -> u64 {
        if self == ArrayName::Weights {
            steps + 1
        } else {
            steps
        }
    }

    /// Names of the leading dimensions; sample arrays add one `feature_i` per input axis.
    fn leading_dims(self) -> &'static [&'static str] {
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

    /// What the array's element type and fill value are.
    fn element_and_fill(self, dtype: TrainDType) -> (Element, Fill) {
        match self {
            ArrayName::Weights
            | ArrayName::Dloss
            | ArrayName::TrainInputs
            | ArrayName::EvalInputs => (Element::Float(dtype), Fill::NaN),
            ArrayName::Lr => (Element::Float(TrainDType::F64), Fill::Zero),
            ArrayName::BatchSize => (Element::Int64, Fill::Zero),
            ArrayName::BatchIndex | ArrayName::TrainTargets | ArrayName::EvalTargets => {
                (Element::Int64, Fill::MinusOne)
            }
        }
    }

    /// Everything the format fixes about this array in a store with attributes `attrs`.
    pub(crate) fn spec(self, attrs: &RunAttributes) -> ArraySpec {
        let (p, k, b) = (
            attrs.num_params as u64,
            attrs.outputs as u64,
            attrs.max_batch as u64,
        );
        let input = attrs.input_shape.iter().map(|&d| d as u64);
        let steps = self.rows(attrs.steps as u64);
        let (first, row): (u64, Vec<u64>) = match self {
            ArrayName::Weights => (steps, vec![p]),
            ArrayName::Lr | ArrayName::BatchSize => (steps, vec![]),
            ArrayName::BatchIndex => (steps, vec![b]),
            ArrayName::Dloss => (steps, vec![b, k]),
            ArrayName::TrainInputs => (attrs.train_samples as u64, input.collect()),
            ArrayName::EvalInputs => (attrs.eval_samples as u64, input.collect()),
            ArrayName::TrainTargets => (attrs.train_samples as u64, vec![]),
            ArrayName::EvalTargets => (attrs.eval_samples as u64, vec![]),
        };
        let mut dims: Vec<String> = self.leading_dims().iter().map(|s| s.to_string()).collect();
        for i in dims.len()..1 + row.len() {
            dims.push(format!("feature_{}", i - 1));
        }
        let (element, fill) = self.element_and_fill(attrs.dtype);
        ArraySpec {
            name: self,
            dims,
            shape: [first].into_iter().chain(row).collect(),
            element,
            fill,
        }
    }
}

/// An array's element type, with the training dtype resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Element {
    /// Floats of the given width: the training dtype, or f64 for the learning rate.
    Float(TrainDType),
    /// Signed 64-bit integers: sizes, indices and labels.
    Int64,
}

impl Element {
    /// The Zarr data type.
    pub(crate) fn data_type(self) -> DataType {
        match self {
            Element::Float(TrainDType::F64) => data_type::float64(),
            Element::Float(TrainDType::F32) => data_type::float32(),
            Element::Int64 => data_type::int64(),
        }
    }

    /// The Zarr v3 name of the data type.
    pub(crate) fn zarr_name(self) -> &'static str {
        match self {
            Element::Float(TrainDType::F64) => "float64",
            Element::Float(TrainDType::F32) => "float32",
            Element::Int64 => "int64",
        }
    }

    /// Bytes of one value.
    pub(crate) fn width(self) -> usize {
        match self {
            Element::Float(TrainDType::F32) => 4,
            Element::Float(TrainDType::F64) | Element::Int64 => 8,
        }
    }
}

/// What a Zarr reader sees where no entry was written. The store never relies on it (a
/// missing entry is damage), but it marks padding: unused batch slots hold `-1` and NaN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fill {
    Zero,
    MinusOne,
    NaN,
}

/// One array as the format fixes it for a given run.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ArraySpec {
    pub(crate) name: ArrayName,
    /// One name per axis.
    pub(crate) dims: Vec<String>,
    /// The shape with the committed steps; a per-step array may be longer along axis 0 while a
    /// run is written.
    pub(crate) shape: Vec<u64>,
    pub(crate) element: Element,
    pub(crate) fill: Fill,
}

impl ArraySpec {
    /// The shape of one entry along axis 0 (one step's row, or one sample).
    pub(crate) fn row(&self) -> &[u64] {
        &self.shape[1..]
    }

    /// The shape of a per-step array with room for `steps` steps.
    pub(crate) fn shape_at(&self, steps: u64) -> Vec<u64> {
        self.rows_of(self.name.rows(steps))
    }

    /// The shape of `n` entries along axis 0.
    fn rows_of(&self, n: u64) -> Vec<u64> {
        [n].into_iter().chain(self.row().iter().copied()).collect()
    }

    /// The one chunk of a data set: the whole array (at least one entry per axis, since Zarr
    /// has no empty chunks).
    fn whole_chunk(&self) -> Vec<u64> {
        self.shape.iter().map(|&d| d.max(1)).collect()
    }

    /// The fill value in the element type.
    fn fill_value(&self) -> ArrayBuilderFillValue {
        match (self.element, self.fill) {
            (Element::Float(TrainDType::F64), Fill::NaN) => f64::NAN.into(),
            (Element::Float(TrainDType::F32), Fill::NaN) => f32::NAN.into(),
            (Element::Float(TrainDType::F64), Fill::Zero) => 0.0f64.into(),
            (Element::Int64, Fill::Zero) => 0i64.into(),
            (Element::Int64, Fill::MinusOne) => (-1i64).into(),
            (element, fill) => {
                unreachable!("no array of the layout fills {element:?} with {fill:?}")
            }
        }
    }

    /// A builder for this array. Per-step arrays are sharded along axis 0 with
    /// `steps_per_shard` steps per shard file and one step per inner chunk; the data sets are
    /// one chunk each.
    pub(crate) fn builder(&self, steps_per_shard: u64, choice: Compression) -> ArrayBuilder {
        let data_type = self.element.data_type();
        let compression = codec::compression(self.element, choice);
        let mut builder = if self.name.is_per_step() {
            let shard = self.rows_of(steps_per_shard);
            let mut builder = ArrayBuilder::new(
                self.shape.clone(),
                shard,
                data_type.clone(),
                self.fill_value(),
            );
            let subchunk = self.rows_of(1);
            builder.array_to_bytes_codec(codec::sharding(&subchunk, &data_type, compression));
            builder
        } else {
            let chunk = self.whole_chunk();
            let mut builder =
                ArrayBuilder::new(self.shape.clone(), chunk, data_type, self.fill_value());
            if !compression.is_empty() {
                builder.bytes_to_bytes_codecs(compression);
            }
            builder
        };
        builder.dimension_names(Some(self.dims.clone()));
        builder
    }

    /// Checks an array's data type and shape; the message says what differs. A per-step
    /// array may be longer than the committed steps.
    pub(crate) fn check_type_and_shape(
        &self,
        data_type: &str,
        shape: &[u64],
    ) -> Result<(), String> {
        let want = self.element.zarr_name();
        if !data_type.contains(want) {
            return Err(format!("data type is {data_type}, expected {want}"));
        }
        let grows = self.name.is_per_step();
        let ok = shape.len() == self.shape.len()
            && shape
                .iter()
                .zip(&self.shape)
                .enumerate()
                .all(|(i, (&have, &want))| {
                    if i == 0 && grows {
                        have >= want
                    } else {
                        have == want
                    }
                });
        if !ok {
            return Err(format!(
                "shape is {shape:?}, the attributes need {:?}",
                self.shape
            ));
        }
        Ok(())
    }

    /// Checks an array's chunk (for a per-step array, shard) shape: the format fixes it, and
    /// anything else could ask for absurd allocations.
    pub(crate) fn check_chunk(&self, chunk: &[u64]) -> Result<(), String> {
        if self.name.is_per_step() {
            // Shards of 1..=MAX steps; the codecs are checked by `codec::sharded_rows_blosc`.
            let row = self.row();
            if !(1..=MAX_STEPS_PER_SHARD).contains(&chunk[0]) || chunk[1..] != *row {
                return Err(format!(
                    "shard shape is {chunk:?}, the format needs [steps] + {row:?} with 1 ≤ steps ≤ {MAX_STEPS_PER_SHARD}"
                ));
            }
        } else {
            let want = self.whole_chunk();
            if chunk != want {
                return Err(format!(
                    "chunk shape is {chunk:?}, the format needs {want:?}"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{ArrayName, Element};
    use crate::codec::Compression;
    use crate::{RunAttributes, TrainDType};
    use std::sync::Arc;
    use zarrs::filesystem::FilesystemStore;

    fn attrs(dtype: TrainDType) -> RunAttributes {
        let mut attrs = RunAttributes::example(3, 2, 4);
        attrs.dtype = dtype;
        attrs.input_shape = vec![2, 5];
        attrs.train_samples = 6;
        attrs.steps = 7;
        attrs
    }

    /// What the writer builds from a spec passes the reader's checks against the same spec.
    #[test]
    fn every_array_built_from_its_spec_passes_its_checks() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(FilesystemStore::new(dir.path()).unwrap());
        for dtype in [TrainDType::F64, TrainDType::F32] {
            for name in ArrayName::ALL {
                let spec = name.spec(&attrs(dtype));
                assert_eq!(spec.dims.len(), spec.shape.len(), "{name:?}");
                let array = spec
                    .builder(4, Compression::Auto)
                    .build(store.clone(), &name.zarr_path())
                    .unwrap();
                let chunk: Vec<u64> = array
                    .chunk_shape(&vec![0; spec.shape.len()])
                    .unwrap()
                    .iter()
                    .map(|d| d.get())
                    .collect();
                let data_type = array.data_type().to_string();
                spec.check_type_and_shape(&data_type, array.shape())
                    .unwrap();
                spec.check_chunk(&chunk).unwrap();
            }
        }
        let weights = ArrayName::Weights.spec(&attrs(TrainDType::F32));
        assert_eq!(weights.shape, vec![8, 3]);
        assert_eq!(weights.shape_at(2), vec![3, 3]);
        assert_eq!(weights.element, Element::Float(TrainDType::F32));
        let lr = ArrayName::Lr.spec(&attrs(TrainDType::F32));
        assert_eq!(lr.element, Element::Float(TrainDType::F64));
        let inputs = ArrayName::TrainInputs.spec(&attrs(TrainDType::F64));
        assert_eq!(inputs.shape, vec![6, 2, 5]);
        assert_eq!(inputs.dims, ["sample", "feature_0", "feature_1"]);
    }
}
