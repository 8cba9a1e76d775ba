//! A model written with Burn's modules and its own `forward`, its ReLU and max-pooling taken
//! from `epk::model::nn` instead of `burn::nn` (an import changed, nothing routed by hand):
//! replay finds every switching value itself and the run verifies at 1e-12. The same model
//! with Burn's own ReLU and pooling stops the replay, naming the cause.

mod common;

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::{Device, Tensor};
use common::{Optim, Run};
use epk::model::nn;
use epk::recorder::{EpkModel, Loss, Switches};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Config;

/// conv 3×3 (2 channels) → 2×2 max-pool → ReLU → linear, on 4×4 images. `B` picks Burn's
/// modules (`true`) or epk's drop-ins.
#[derive(Module, Debug)]
struct Net<const BURN: bool> {
    conv: Conv2d,
    pool: nn::MaxPool2d,
    burn_pool: burn::nn::pool::MaxPool2d,
    relu: nn::Relu,
    burn_relu: burn::nn::Relu,
    head: Linear,
}

impl<const BURN: bool> Net<BURN> {
    /// The model's own forward on images `[batch, 1, 4, 4]`.
    fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let [batch, ..] = images.dims();
        let x = self.conv.forward(images);
        let x = if BURN {
            self.burn_relu.forward(self.burn_pool.forward(x))
        } else {
            self.relu.forward(self.pool.forward(x))
        };
        self.head.forward(x.reshape([batch, 8]))
    }
}

impl<const BURN: bool> EpkModel for Net<BURN> {
    const KIND: &'static str = if BURN { "net-burn" } else { "net-drop-in" };
    type Config = Config;

    fn init(_: &Config, device: &Device) -> Self {
        Net {
            conv: Conv2dConfig::new([1, 2], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device),
            pool: nn::MaxPool2dConfig::new([2, 2]).init(),
            burn_pool: burn::nn::pool::MaxPool2dConfig::new([2, 2]).init(),
            relu: nn::Relu::new(),
            burn_relu: burn::nn::Relu::new(),
            head: LinearConfig::new(8, 3).init(device),
        }
    }

    /// No `Switches` here: the drop-ins find the active pass themselves.
    fn epk_forward(&self, x: Tensor<2>, _: &mut Switches) -> Tensor<2> {
        let [batch, _] = x.dims();
        self.forward(x.reshape([batch, 1, 4, 4]))
    }
}

fn run() -> Run {
    let mut r = Run::toy(16, 8, 12, 30).with(Optim::Sgd(burn::optim::SgdConfig::new()), 12, 0.5);
    r.loss = Loss::CrossEntropy;
    r
}

fn replay<const BURN: bool>(
    path: &std::path::Path,
) -> Result<epk::replay::KernelMachine, epk::replay::ReplayError> {
    run()
        .try_record_model::<Net<BURN>>(&Config, path)
        .unwrap()
        .finish()
        .unwrap();
    let reader = epk::store::StoreReader::open(path).unwrap();
    let device = epk::recorder::device::flex_f64().unwrap();
    let net = epk::replay::Network::<Net<BURN>>::new(reader.attrs(), &device).unwrap();
    // 4 margins per element of each 2×2 window (2 channels × 4 windows), then 8 ReLU inputs.
    let eval = reader.eval().unwrap();
    let w0 = reader.weights(0).unwrap();
    let (_, switches) = net.forward_switches(&w0, eval.input(0));
    assert_eq!(switches.len(), if BURN { 0 } else { 2 * 4 * 4 + 8 });
    let options = epk::replay::ReplayOptions::default();
    epk::replay::replay(&reader, &net, &eval.inputs, &options, |_| {})
}

#[test]
fn drop_in_relu_and_max_pool_verify_without_routing() {
    let dir = tempfile::tempdir().unwrap();
    let machine = replay::<false>(&dir.path().join("drop-in.zarr")).unwrap();
    let report =
        epk::replay::VerifyReport::new(&machine, epk::replay::Rule::Auto, 1e-12, true, 0.0);
    assert!(report.passed, "{}", report.table());
}

#[test]
fn burns_own_relu_and_max_pool_stop_the_replay_naming_the_drop_ins() {
    let dir = tempfile::tempdir().unwrap();
    let error = replay::<true>(&dir.path().join("burn.zarr"))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(error.contains("drop-in modules"), "{error}");
}

/// An MLP with epk's Dropout (p = 0.4) between its layers, trained with momentum on
/// minibatches: the masks are keyed by step and sample, replay rebuilds the ones each step
/// used, and the run verifies at 1e-12; the explained network is the evaluation network.
#[derive(Module, Debug)]
struct Dropped {
    hidden: Linear,
    dropout: nn::Dropout,
    relu: nn::Relu,
    head: Linear,
}

impl EpkModel for Dropped {
    const KIND: &'static str = "dropped";
    type Config = Config;

    fn init(_: &Config, device: &Device) -> Self {
        Dropped {
            hidden: LinearConfig::new(16, 24).init(device),
            dropout: nn::DropoutConfig::new(0.4).init(),
            relu: nn::Relu::new(),
            head: LinearConfig::new(24, 3).init(device),
        }
    }

    fn epk_forward(&self, x: Tensor<2>, _: &mut Switches) -> Tensor<2> {
        let h = self
            .relu
            .forward(self.dropout.forward(self.hidden.forward(x)));
        self.head.forward(h)
    }
}

#[test]
fn dropout_masks_keyed_by_step_and_sample_verify() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dropout.zarr");
    let momentum = burn::optim::momentum::MomentumConfig::new().with_momentum(0.9);
    let sgd = burn::optim::SgdConfig::new().with_momentum(Some(momentum));
    let mut r = Run::toy(16, 8, 12, 12).with(Optim::Sgd(sgd), 12, 0.2);
    r.loss = Loss::CrossEntropy;
    r.try_record_model::<Dropped>(&Config, &path)
        .unwrap()
        .finish()
        .unwrap();
    let reader = epk::store::StoreReader::open(&path).unwrap();
    let device = epk::recorder::device::flex_f64().unwrap();
    let net = epk::replay::Network::<Dropped>::new(reader.attrs(), &device).unwrap();
    let eval = reader.eval().unwrap();
    // The explained network drops nothing: f is the evaluation network's.
    let w = reader.weights(reader.steps()).unwrap();
    let model =
        epk::recorder::params::load_flat(Dropped::init(&Config, &device), &w, &device, false);
    let x = epk::recorder::batch::float_tensor(eval.input(0).to_vec(), [1, 16], &device);
    let m = model.unwrap();
    let plain = m.head.forward(m.relu.forward(m.hidden.forward(x)));
    let plain: Vec<f64> = plain.try_into_vec_as().unwrap();
    assert_eq!(net.forward(&w, eval.input(0)), plain);
    let options = epk::replay::ReplayOptions::default();
    let machine = epk::replay::replay(&reader, &net, &eval.inputs, &options, |_| {}).unwrap();
    let report =
        epk::replay::VerifyReport::new(&machine, epk::replay::Rule::Auto, 1e-12, true, 0.0);
    assert!(report.passed, "{}", report.table());
    println!(
        "dropout: machine error {:.1e}, {:.2} evaluations per step per point",
        report.max_abs_error, report.evals_per_step_per_point
    );
}
