//! A data pipeline that carries dataset indices through shuffling and batching, so that every
//! recorded step knows exactly which samples built it.

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::{Dataset, DatasetError};
use burn::tensor::{Device, Int, Tensor, TensorData};
use epk_store::Samples;

/// Kept at its old path; the helper lives in epk-model.
pub use epk_model::float_tensor;

/// One sample and its position in the training set.
#[derive(Clone, Debug)]
pub struct IndexedItem {
    /// The sample's index in the training set.
    pub index: usize,
    /// The flat input.
    pub input: Vec<f64>,
    /// The class label.
    pub target: i64,
}

/// A [`Dataset`] over [`Samples`] whose items remember their index.
#[derive(Clone, Debug)]
pub struct IndexedDataset {
    samples: Samples,
}

impl IndexedDataset {
    /// A dataset of `samples`, item `i` being sample `i`.
    pub fn new(samples: Samples) -> Self {
        IndexedDataset { samples }
    }
}

impl Dataset<IndexedItem> for IndexedDataset {
    fn get(&self, index: usize) -> Result<IndexedItem, DatasetError> {
        if index >= self.samples.len() {
            return Err(DatasetError::new(std::io::Error::other(format!(
                "index {index} is past the {} samples",
                self.samples.len()
            ))));
        }
        Ok(IndexedItem {
            index,
            input: self.samples.input(index).to_vec(),
            target: self.samples.targets[index],
        })
    }

    fn len(&self) -> usize {
        self.samples.len()
    }
}

/// A batch of flat inputs, labels, and the dataset indices they came from.
#[derive(Clone, Debug)]
pub struct IndexedBatch {
    /// `[batch, input_len]`.
    pub inputs: Tensor<2>,
    /// `[batch]` class labels.
    pub targets: Tensor<1, Int>,
    /// The training-set index of each row.
    pub indices: Vec<usize>,
}

/// Builds [`IndexedBatch`]es; inputs are created in float64 and cast to the device's float type.
#[derive(Clone, Debug, Default)]
pub struct IndexedBatcher;

impl Batcher<IndexedItem, IndexedBatch> for IndexedBatcher {
    fn batch(&self, items: Vec<IndexedItem>, device: &Device) -> IndexedBatch {
        let n = items.len();
        let width = items.first().map_or(0, |i| i.input.len());
        let mut inputs = Vec::with_capacity(n * width);
        let mut targets = Vec::with_capacity(n);
        let mut indices = Vec::with_capacity(n);
        for item in items {
            inputs.extend_from_slice(&item.input);
            targets.push(item.target);
            indices.push(item.index);
        }
        IndexedBatch {
            inputs: float_tensor(inputs, [n, width], device),
            targets: Tensor::from_data(TensorData::new(targets, [n]), device),
            indices,
        }
    }
}
