//! A model trained on its own batch type, by its own batcher, with its own loss (label
//! smoothing and class weights, Burn's `CrossEntropyLoss`), under burn-train's Learner: epk
//! records the per-sample dL/df of that loss, which match the closed form, and the run
//! verifies at 1e-12. A batcher that feeds something other than the stored samples, a loss
//! with a weight penalty and an undeclared own loss are refused at the first step, named.

mod common;

use burn::data::dataloader::DataLoaderBuilder;
use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::InMemDataset;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::optim::SgdConfig;
use burn::optim::lr_scheduler::constant::ConstantLr;
use burn::tensor::{Device, Int, Tensor, TensorData, activation};
use burn::train::logger::InMemoryMetricLogger;
use burn::train::{Learner, SupervisedTraining, TrainStep};
use epk::recorder::renderer::QuietRenderer;
use epk::recorder::{
    EpkModel, Explain, Indexed, KeepIndices, Loss, Numbered, Recorder, Samples, Switches,
    WithRecorder, batch::float_tensor, device::flex_f64, params, stored_samples,
};
use serde::{Deserialize, Serialize};
use std::path::Path;

const SIDE: usize = 4;
const CLASSES: usize = 4;
/// Burn computes smoothing and weights in f32: values exact in binary keep the closed form exact.
const ALPHA: f32 = 0.25;
const WEIGHTS: [f32; CLASSES] = [1.0, 2.0, 0.5, 1.5];

#[derive(Clone, Debug, Serialize, Deserialize)]
struct SmallConfig {
    side: usize,
}

/// A user's model: its own `forward` on images `[batch, 1, side, side]`.
#[derive(Module, Debug)]
struct Small {
    conv: Conv2d,
    head: Linear,
    #[module(skip)]
    side: usize,
}

impl Small {
    fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let [batch, ..] = images.dims();
        let x = activation::tanh(self.conv.forward(images));
        self.head.forward(x.reshape([batch as i32, -1]))
    }
}

impl EpkModel for Small {
    const KIND: &'static str = "own-small";
    type Config = SmallConfig;

    fn init(config: &SmallConfig, device: &Device) -> Self {
        Small {
            conv: Conv2dConfig::new([1, 3], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device),
            head: LinearConfig::new(3 * config.side * config.side, CLASSES).init(device),
            side: config.side,
        }
    }

    fn epk_forward(&self, inputs: Tensor<2>, _: &mut Switches) -> Tensor<2> {
        let [batch, _] = inputs.dims();
        self.forward(inputs.reshape([batch, 1, self.side, self.side]))
    }
}

/// The user's item, batch and batcher. `scale`, `penalty` and `shift` make the broken variants.
#[derive(Clone, Debug)]
struct Digit {
    pixels: Vec<f64>,
    label: i64,
}

#[derive(Clone, Debug)]
struct DigitBatch {
    images: Tensor<4>,
    labels: Tensor<1, Int>,
    penalty: f64,
    /// Added to the model's outputs on this batch: an `Explain::outputs` that is not
    /// `epk_forward`.
    shift: f64,
}

#[derive(Clone, Debug)]
struct DigitBatcher {
    scale: f64,
    penalty: f64,
    shift: f64,
}

impl Batcher<Digit, DigitBatch> for DigitBatcher {
    fn batch(&self, items: Vec<Digit>, device: &Device) -> DigitBatch {
        let n = items.len();
        let pixels = items
            .iter()
            .flat_map(|d| d.pixels.iter().map(|p| p * self.scale))
            .collect();
        let labels = items.iter().map(|d| d.label).collect();
        DigitBatch {
            images: float_tensor(pixels, [n, 1, SIDE, SIDE], device),
            labels: Tensor::from_data(TensorData::new(labels, [n]), device),
            penalty: self.penalty,
            shift: self.shift,
        }
    }
}

/// The one trait impl: the explained forward, the labels, and the loss the training computes.
impl Explain<Indexed<DigitBatch>> for Small {
    fn inputs(&self, batch: &Indexed<DigitBatch>) -> Tensor<2> {
        let [n, ..] = batch.images.dims();
        batch.images.clone().reshape([n as i32, -1])
    }

    /// The model's own forward on the images (the default would reshape them back).
    fn outputs(&self, batch: &Indexed<DigitBatch>) -> Tensor<2> {
        self.forward(batch.images.clone()).add_scalar(batch.shift)
    }

    fn targets(&self, batch: &Indexed<DigitBatch>) -> Tensor<1, Int> {
        batch.labels.clone()
    }

    fn loss(&self, f: Tensor<2>, batch: &Indexed<DigitBatch>) -> Option<Tensor<1>> {
        let ce = CrossEntropyLossConfig::new()
            .with_smoothing(Some(ALPHA))
            .with_weights(Some(WEIGHTS.to_vec()))
            .init(&f.device());
        let loss = ce.forward(f, batch.labels.clone());
        Some(if batch.penalty > 0.0 {
            let w = self.conv.weight.val();
            loss + w.clone().mul(w).sum().mul_scalar(batch.penalty)
        } else {
            loss
        })
    }
}

fn digits(samples: &Samples) -> InMemDataset<Digit> {
    InMemDataset::new(
        (0..samples.len())
            .map(|i| Digit {
                pixels: samples.input(i).to_vec(),
                label: samples.targets[i],
            })
            .collect(),
    )
}

/// A model with fixed weights (Burn's generator is shared by the tests beside this one).
fn model(device: &Device) -> Small {
    let m = Small::init(&SmallConfig { side: SIDE }, device);
    let n: usize = params::layout(&m).iter().map(|p| p.len).sum();
    let w: Vec<f64> = (0..n).map(|j| 0.4 * (1.3 * j as f64 + 0.2).sin()).collect();
    params::load_flat(m, &w, device, true).unwrap()
}

fn sgd() -> SgdConfig {
    let momentum = burn::optim::momentum::MomentumConfig::new().with_momentum(0.9);
    SgdConfig::new().with_momentum(Some(momentum))
}

fn recorder(path: &Path, train: &Samples, eval: &Samples, loss: Loss) -> Recorder {
    Recorder::builder(path)
        .model_config::<Small>(&SmallConfig { side: SIDE })
        .loss(loss)
        .sgd(&sgd())
        .train_data(train.clone())
        .eval_data(eval.clone())
        .max_batch(12)
}

/// dL/df of Burn's smoothed, weighted cross-entropy for one batch, by hand:
/// L = −Σ_i Σ_c q_ic w_c log p_ic / Σ_i w_{y_i}, q_ic = (1 − α)[c = y_i] + α/K, so
/// dL/df_ij = −(q_ij w_j − p_ij Σ_c q_ic w_c) / Σ_i w_{y_i}.
fn closed_form(f: &[f64], labels: &[i64]) -> Vec<f64> {
    let (a, k) = (ALPHA as f64, CLASSES);
    let total: f64 = labels.iter().map(|&y| WEIGHTS[y as usize] as f64).sum();
    let mut out = Vec::with_capacity(f.len());
    for (row, &y) in f.chunks(k).zip(labels) {
        let m = row.iter().fold(f64::NEG_INFINITY, |m, v| m.max(*v));
        let z: f64 = row.iter().map(|v| (v - m).exp()).sum();
        let q = |c: usize| (1.0 - a) * f64::from(c == y as usize) + a / k as f64;
        let qw: f64 = (0..k).map(|c| q(c) * WEIGHTS[c] as f64).sum();
        for (c, v) in row.iter().enumerate() {
            let p = (v - m).exp() / z;
            out.push(-(q(c) * WEIGHTS[c] as f64 - p * qw) / total);
        }
    }
    out
}

#[test]
fn own_batcher_and_smoothed_weighted_loss_record_their_gradients_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("own.zarr");
    let train = common::blobs(36, SIDE * SIDE, CLASSES, 5);
    let eval = common::blobs(4, SIDE * SIDE, CLASSES, 6);
    let device = flex_f64().unwrap();
    let model = model(&device);
    let w0 = params::flatten(&model).unwrap();
    let plain = DigitBatcher {
        scale: 1.0,
        penalty: 0.0,
        shift: 0.0,
    };
    // The store's samples as the user's batcher forms them: here the same values.
    let stored = stored_samples(&model, &digits(&train), &plain, &device, vec![SIDE, SIDE]);
    let stored = stored.unwrap();
    assert_eq!(
        (&stored.inputs, &stored.targets),
        (&train.inputs, &train.targets)
    );
    assert_eq!(stored.input_shape, vec![SIDE, SIDE]);
    let eval = stored_samples(&model, &digits(&eval), &plain, &device, vec![SIDE, SIDE]);
    let eval = eval.unwrap();
    let model = model
        .with_recorder(recorder(&path, &stored, &eval, Loss::Model))
        .unwrap();
    let batcher = KeepIndices(plain);
    let loader = DataLoaderBuilder::new(batcher.clone())
        .batch_size(12)
        .shuffle(3)
        .build(Numbered::new(digits(&train)));
    let valid = DataLoaderBuilder::new(batcher)
        .batch_size(4)
        .build(Numbered::new(digits(&eval)));
    let artifacts = tempfile::tempdir().unwrap();
    let result = SupervisedTraining::new(artifacts.path(), loader, valid)
        .num_epochs(3)
        .with_metric_logger(InMemoryMetricLogger::new())
        .with_application_logger(None)
        .renderer(Box::new(QuietRenderer))
        .launch(Learner::new(model, sgd().init(), ConstantLr::new(0.2)));
    assert!(result.error.is_none(), "{:?}", result.model.error());
    result.model.finish().unwrap();

    let reader = epk::store::StoreReader::open(&path).unwrap();
    assert_eq!(reader.steps(), 9);
    assert_eq!(reader.attrs().loss, Loss::Model);
    assert_closed_form(&reader, &train, &w0, &device);

    let report = verify_small(&path);
    assert!(report.passed, "{}", report.table());
}

/// Step 0's recorded dL/df against the closed form at the initial weights `w0`; the plain
/// cross-entropy's gradient is far from it, so the check tells the losses apart.
fn assert_closed_form(
    reader: &epk::store::StoreReader,
    train: &Samples,
    w0: &[f64],
    device: &Device,
) {
    let batch = reader.batch(0).unwrap();
    let net = Small::init(&SmallConfig { side: SIDE }, device);
    let net = params::load_flat(net, w0, device, false).unwrap();
    let xs: Vec<f64> = batch
        .indices
        .iter()
        .flat_map(|&i| train.input(i))
        .copied()
        .collect();
    let f = net
        .epk_forward(
            float_tensor(xs, [batch.indices.len(), SIDE * SIDE], device),
            &mut Switches::off(),
        )
        .try_into_vec_as::<f64>()
        .unwrap();
    let labels: Vec<i64> = batch.indices.iter().map(|&i| train.targets[i]).collect();
    let expected = closed_form(&f, &labels);
    let scale = expected.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    for (j, (got, want)) in batch.dloss.iter().zip(&expected).enumerate() {
        assert!(
            (got - want).abs() <= 1e-14 * scale,
            "entry {j}: recorded {got:e}, closed form {want:e}"
        );
    }
    // The plain cross-entropy's gradient is far from it: the check can tell the losses apart.
    let plain_gap = batch
        .dloss
        .iter()
        .zip(plain_cross_entropy(&f, &labels))
        .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
    assert!(plain_gap > 1e-3 * scale, "{plain_gap:e}");
}

/// dL/df of the mean cross-entropy without smoothing or weights.
fn plain_cross_entropy(f: &[f64], labels: &[i64]) -> Vec<f64> {
    let n = labels.len() as f64;
    let mut out = Vec::new();
    for (row, &y) in f.chunks(CLASSES).zip(labels) {
        let z: f64 = row.iter().map(|v| v.exp()).sum();
        for (c, v) in row.iter().enumerate() {
            out.push((v.exp() / z - f64::from(c == y as usize)) / n);
        }
    }
    out
}

fn verify_small(path: &Path) -> epk::replay::VerifyReport {
    let reader = epk::store::StoreReader::open(path).unwrap();
    let device = flex_f64().unwrap();
    let net = epk::replay::Network::<Small>::new(reader.attrs(), &device).unwrap();
    let eval = reader.eval().unwrap();
    let options = epk::replay::ReplayOptions::default();
    let machine = epk::replay::replay(&reader, &net, &eval.inputs, &options, |_| {}).unwrap();
    epk::replay::VerifyReport::new(&machine, epk::replay::Rule::Auto, 1e-12, true, 0.0)
}

/// One hand-written step with a broken variant; the recorder's error.
fn first_step_error(loss: Loss, batcher: DigitBatcher) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.zarr");
    let train = common::blobs(12, SIDE * SIDE, CLASSES, 5);
    let device = flex_f64().unwrap();
    let model = model(&device)
        .with_recorder(recorder(&path, &train, &train, loss))
        .unwrap();
    let items: Vec<(usize, Digit)> = (0..train.len())
        .map(|i| {
            let d = Digit {
                pixels: train.input(i).to_vec(),
                label: train.targets[i],
            };
            (i, d)
        })
        .collect();
    let batch = KeepIndices(batcher).batch(items, &device);
    let out = TrainStep::step(&model, batch);
    let mut optim = sgd().init();
    let model = TrainStep::optimize(model, &mut optim, 0.1.into(), out.grads);
    model.error().expect("the recorder refuses this run")
}

#[test]
fn a_batcher_that_is_not_the_stored_samples_is_refused_naming_the_sample() {
    let e = first_step_error(
        Loss::Model,
        DigitBatcher {
            scale: 1.0 + 1e-6,
            penalty: 0.0,
            shift: 0.0,
        },
    );
    assert!(
        e.contains("inputs are not the stored samples") && e.contains("training sample"),
        "{e}"
    );
}

#[test]
fn a_loss_with_a_weight_penalty_is_refused_with_its_cause() {
    let e = first_step_error(
        Loss::Model,
        DigitBatcher {
            scale: 1.0,
            penalty: 1e-3,
            shift: 0.0,
        },
    );
    assert!(e.contains("other than through the model's outputs"), "{e}");
}

#[test]
fn an_own_loss_under_a_declared_cross_entropy_is_refused() {
    let plain = DigitBatcher {
        scale: 1.0,
        penalty: 0.0,
        shift: 0.0,
    };
    let e = first_step_error(Loss::CrossEntropy, plain);
    assert!(e.contains("Loss::Model"), "{e}");
}

#[test]
fn outputs_that_are_not_epk_forward_are_refused_naming_the_sample() {
    let e = first_step_error(
        Loss::Model,
        DigitBatcher {
            scale: 1.0,
            penalty: 0.0,
            shift: 1e-6,
        },
    );
    assert!(
        e.contains("not epk_forward on the stored samples") && e.contains("training sample"),
        "{e}"
    );
}
