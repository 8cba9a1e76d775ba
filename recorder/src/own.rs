//! Your own batches and your own loss: the dataset, batcher and batch type your training code
//! already has stay, and epk carries each row's training-set index beside them.
//!
//! - [`Numbered`] wraps your `Dataset<I>`: item `i` becomes `(i, item)`.
//! - [`KeepIndices`] wraps your `Batcher<I, B>`: it batches the items as your batcher does
//!   and keeps their indices, giving an [`Indexed<B>`].
//! - [`Explain`] is the one small trait impl: your batch's inputs as the store keeps them
//!   (flat), its labels, optionally your own forward on it, and, if your training step
//!   computes its own loss (label smoothing, class weights), that loss as a function of the
//!   outputs.
//! - [`stored_samples`] forms the store's training samples with your batcher, so the store
//!   holds exactly what your batches feed the model.
//!
//! The recorder checks at the first step that your forward on your batch and `epk_forward` on
//! the stored samples of its indices agree, and refuses the run, naming the sample, if they do
//! not.

use crate::batch::IndexedBatch;
use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::tensor::{Device, Int, Tensor};
use epk_model::{EpkModel, Switches};
use epk_store::Samples;

/// A batch of your own type with the training-set index of each of its rows.
///
/// It dereferences to your batch, so `batch.images` reads your batch's field.
#[derive(Clone, Debug)]
pub struct Indexed<B> {
    /// Your batch, as your batcher built it.
    pub batch: B,
    /// The training-set index of each row, in row order.
    pub indices: Vec<usize>,
}

impl<B> std::ops::Deref for Indexed<B> {
    type Target = B;

    fn deref(&self) -> &B {
        &self.batch
    }
}

/// Your dataset, whose item `i` is `(i, item)`: the index travels through shuffling and
/// batching.
#[derive(Clone, Debug)]
pub struct Numbered<D> {
    dataset: D,
}

impl<D> Numbered<D> {
    /// Numbers the items of `dataset`.
    pub fn new(dataset: D) -> Self {
        Numbered { dataset }
    }
}

impl<I, D: Dataset<I>> Dataset<(usize, I)> for Numbered<D> {
    fn get(&self, index: usize) -> Result<(usize, I), burn::data::dataset::DatasetError> {
        self.dataset.get(index).map(|item| (index, item))
    }

    fn len(&self) -> usize {
        self.dataset.len()
    }
}

/// Your batcher, keeping the indices of the items it batches.
#[derive(Clone, Debug)]
pub struct KeepIndices<T>(pub T);

impl<I, B, T: Batcher<I, B>> Batcher<(usize, I), Indexed<B>> for KeepIndices<T> {
    fn batch(&self, items: Vec<(usize, I)>, device: &Device) -> Indexed<B> {
        let (indices, items): (Vec<usize>, Vec<I>) = items.into_iter().unzip();
        Indexed {
            batch: self.0.batch(items, device),
            indices,
        }
    }
}

/// A training batch that knows which training samples it holds.
pub trait HasIndices {
    /// The training-set index of each row.
    fn indices(&self) -> &[usize];
}

impl HasIndices for IndexedBatch {
    fn indices(&self) -> &[usize] {
        &self.indices
    }
}

impl<B> HasIndices for Indexed<B> {
    fn indices(&self) -> &[usize] {
        &self.indices
    }
}

/// What the recorder needs of a model trained on batches of type `B`: the one trait impl a
/// model with its own batch type adds.
///
/// Every [`EpkModel`] already implements it for epk's flat [`IndexedBatch`]; implement it for
/// [`Indexed<YourBatch>`](Indexed) to keep your batcher:
///
/// ```
/// use burn::module::Module;
/// use burn::nn::loss::CrossEntropyLossConfig;
/// use burn::nn::{Linear, LinearConfig};
/// use burn::tensor::{Device, Int, Tensor, TensorData};
/// use epk_recorder::{EpkModel, Explain, Indexed, Switches, batch::float_tensor};
///
/// /// Your model, with its own forward.
/// #[derive(Module, Debug)]
/// struct Net {
///     linear: Linear,
/// }
///
/// impl EpkModel for Net {
///     const KIND: &'static str = "net";
///     type Config = [usize; 2];
///     fn init(&[inputs, classes]: &[usize; 2], device: &Device) -> Self {
///         Net { linear: LinearConfig::new(inputs, classes).init(device) }
///     }
///     fn epk_forward(&self, x: Tensor<2>, _: &mut Switches) -> Tensor<2> {
///         self.linear.forward(x)
///     }
/// }
///
/// /// Your batch type, as your batcher builds it.
/// #[derive(Clone, Debug)]
/// struct PointBatch {
///     points: Tensor<2>,
///     labels: Tensor<1, Int>,
/// }
///
/// impl Explain<Indexed<PointBatch>> for Net {
///     fn inputs(&self, batch: &Indexed<PointBatch>) -> Tensor<2> {
///         batch.points.clone()
///     }
///     fn targets(&self, batch: &Indexed<PointBatch>) -> Tensor<1, Int> {
///         batch.labels.clone()
///     }
///     /// The loss your training step computes, here with label smoothing; the recorder
///     /// stores its per-sample dL/df (declare `Recorder::loss(Loss::Model)`).
///     fn loss(&self, f: Tensor<2>, batch: &Indexed<PointBatch>) -> Option<Tensor<1>> {
///         let ce = CrossEntropyLossConfig::new()
///             .with_smoothing(Some(0.1))
///             .init(&f.device());
///         Some(ce.forward(f, batch.labels.clone()))
///     }
/// }
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let device = epk_recorder::device::flex_f64()?;
/// let net = Net::init(&[2, 3], &device);
/// let batch = Indexed {
///     batch: PointBatch {
///         points: float_tensor(vec![0.5, -1.0, 2.0, 0.25], [2, 2], &device),
///         labels: Tensor::from_data(TensorData::new(vec![2i64, 0], [2]), &device),
///     },
///     indices: vec![7, 3], // the two rows are training samples 7 and 3
/// };
/// let f = net.outputs(&batch);
/// assert_eq!(f.dims(), [2, 3]);
/// assert!(net.loss(f, &batch).is_some());
/// # Ok(())
/// # }
/// ```
pub trait Explain<B>: EpkModel {
    /// The batch's inputs as the store keeps them, flat: `[batch, input_len]`, what
    /// [`EpkModel::epk_forward`] takes (token ids as floats, images flattened).
    fn inputs(&self, batch: &B) -> Tensor<2>;

    /// f for `batch`, `[batch, outputs]`: by default `epk_forward` on [`Explain::inputs`].
    /// Override it to run your own forward on your batch; it must be the same function of a
    /// sample as `epk_forward` on its stored input (checked at the first batch).
    fn outputs(&self, batch: &B) -> Tensor<2> {
        self.epk_forward(self.inputs(batch), &mut Switches::off())
    }

    /// The class label of each row (burn-train's metrics, and the declared loss, read them).
    fn targets(&self, batch: &B) -> Tensor<1, Int>;

    /// The training loss of outputs `f`, as your training step computes it, or `None` for the
    /// loss declared with [`Recorder::loss`](crate::Recorder::loss). The recorder stores the
    /// per-sample dL/df of what this returns, so the attributions are those of the loss that
    /// trained the network; it refuses a loss that also depends on the weights other than
    /// through `f` (an L2 penalty: use the optimizer's weight decay instead).
    fn loss(&self, f: Tensor<2>, batch: &B) -> Option<Tensor<1>> {
        let _ = (f, batch);
        None
    }
}

impl<M: EpkModel> Explain<IndexedBatch> for M {
    fn inputs(&self, batch: &IndexedBatch) -> Tensor<2> {
        batch.inputs.clone()
    }

    fn targets(&self, batch: &IndexedBatch) -> Tensor<1, Int> {
        batch.targets.clone()
    }
}

/// The training samples as your batcher forms them: `dataset` batched by `batcher` in chunks,
/// each row read through [`Explain::inputs`] and [`Explain::targets`], every sample of shape
/// `shape` (e.g. `[28, 28]`; its product is the flat input length). Give the result to
/// [`Recorder::train_data`](crate::Recorder::train_data) (or `eval_data`): the store then holds
/// exactly what your batches feed the model, normalisation included.
pub fn stored_samples<M, I, B, D, T>(
    model: &M,
    dataset: &D,
    batcher: &T,
    device: &Device,
    shape: Vec<usize>,
) -> Result<Samples, crate::RecordError>
where
    M: Explain<Indexed<B>>,
    D: Dataset<I>,
    T: Batcher<I, B>,
{
    use crate::RecordError;
    const CHUNK: usize = 256;
    let (mut inputs, mut targets) = (Vec::new(), Vec::new());
    let read = |e| RecordError::Tensor(format!("{e:?}"));
    for start in (0..dataset.len()).step_by(CHUNK) {
        let end = (start + CHUNK).min(dataset.len());
        let items = (start..end)
            .map(|i| {
                dataset
                    .get(i)
                    .map_err(|e| RecordError::Config(format!("item {i}: {e}")))
            })
            .collect::<Result<Vec<I>, _>>()?;
        let batch = Indexed {
            batch: batcher.batch(items, device),
            indices: (start..end).collect(),
        };
        let x = model.inputs(&batch);
        let width: usize = shape.iter().product();
        if x.dims() != [end - start, width] {
            return Err(RecordError::Config(format!(
                "items {start}..{end} batch to inputs of shape {:?}, not [{}, {width}] (samples \
                 of shape {shape:?}): pad every batch to the same length",
                x.dims(),
                end - start
            )));
        }
        inputs.extend(x.try_into_vec_as::<f64>().map_err(read)?);
        targets.extend(
            model
                .targets(&batch)
                .try_into_vec_as::<i64>()
                .map_err(read)?,
        );
    }
    Samples::new(inputs, shape, targets).map_err(RecordError::Config)
}
