//! Models epk cannot make exact are refused when recording starts, with the cause named:
//! Dropout in training mode (a random forward pass) and BatchNorm in training mode (a batch
//! statistic). Both used to record silently and fail `verify` many minutes later without a
//! reason. The same models with dropout off, or with a per-sample norm, record and verify.
//! Replay names the cause of what it cannot make exact: a kink no switch declares (at the step
//! that meets it) and a gradient that is not the derivative of the forward pass (before the
//! first step).

mod common;

use burn::module::Module;
use burn::nn::{BatchNorm, BatchNormConfig, Dropout, DropoutConfig, LayerNorm, LayerNormConfig};
use burn::tensor::{Device, Tensor, activation};
use common::Run;
use epk::recorder::models::{Mlp, MlpConfig};
use epk::recorder::{EpkModel, Switches};

/// The toy MLP with a middle layer: Dropout, BatchNorm, LayerNorm or nothing.
#[derive(Module, Debug)]
struct Middle<L> {
    mlp: Mlp,
    middle: L,
}

fn forward<L>(
    m: &Middle<L>,
    x: Tensor<2>,
    sw: &mut Switches,
    mid: impl Fn(&L, Tensor<2>) -> Tensor<2>,
) -> Tensor<2>
where
    L: Module,
{
    let [first, last] = [&m.mlp.layers[0], &m.mlp.layers[1]];
    let h = mid(&m.middle, sw.linear(first, x));
    let h = sw.relu(h);
    activation::log_softmax(sw.linear(last, h), 1)
}

macro_rules! middle_model {
    ($name:ident, $layer:ty, $kind:literal, $init:expr, $apply:expr) => {
        #[derive(Module, Debug)]
        struct $name {
            inner: Middle<$layer>,
        }
        impl EpkModel for $name {
            const KIND: &'static str = $kind;
            type Config = MlpConfig;
            fn init(config: &MlpConfig, device: &Device) -> Self {
                let width = config.sizes[1];
                $name {
                    inner: Middle {
                        mlp: Mlp::new(config, device),
                        middle: ($init)(width, device),
                    },
                }
            }
            fn epk_forward(&self, x: Tensor<2>, sw: &mut Switches) -> Tensor<2> {
                forward(&self.inner, x, sw, $apply)
            }
        }
    };
}

middle_model!(
    WithDropout,
    Dropout,
    "mlp-dropout",
    |_w: usize, _d: &Device| DropoutConfig::new(0.3).init(),
    |l: &Dropout, h| l.forward(h)
);
middle_model!(
    WithBatchNorm,
    BatchNorm,
    "mlp-batchnorm",
    |w: usize, d: &Device| BatchNormConfig::new(w).init(d),
    |l: &BatchNorm, h| l.forward(h)
);
middle_model!(
    WithLayerNorm,
    LayerNorm,
    "mlp-layernorm",
    |w: usize, d: &Device| LayerNormConfig::new(w).init(d),
    |l: &LayerNorm, h| l.forward(h)
);

fn run() -> Run {
    Run::toy(6, 8, 8, 6).with(common::Optim::Sgd(burn::optim::SgdConfig::new()), 8, 0.2)
}

#[test]
fn dropout_in_training_mode_is_refused_up_front() {
    let dir = tempfile::tempdir().unwrap();
    let error = run()
        .try_record_as::<WithDropout>(&dir.path().join("d.zarr"))
        .expect_err("refused")
        .to_string();
    assert!(error.contains("forward pass is random"), "{error}");
    assert!(error.contains("Dropout"), "{error}");
}

#[test]
fn batchnorm_in_training_mode_is_refused_with_the_alternatives() {
    let dir = tempfile::tempdir().unwrap();
    let error = run()
        .try_record_as::<WithBatchNorm>(&dir.path().join("b.zarr"))
        .expect_err("refused")
        .to_string();
    assert!(error.contains("mixes the samples of a batch"), "{error}");
    assert!(error.contains("LayerNorm"), "{error}");
}

/// A per-sample norm is fine: the run records and its machine equals the network at 1e-12 on
/// the general path.
#[test]
fn layernorm_records_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.zarr");
    let r = run();
    r.try_record_as::<WithLayerNorm>(&path)
        .unwrap()
        .finish()
        .unwrap();
    let reader = epk::store::StoreReader::open(&path).unwrap();
    let device = epk::recorder::device::flex_f64().unwrap();
    let net = epk::replay::Network::<WithLayerNorm>::new(reader.attrs(), &device).unwrap();
    let eval = reader.eval().unwrap();
    let xs = &eval.inputs[..3 * reader.attrs().input_len()];
    let machine = epk::replay::replay(
        &reader,
        &net,
        xs,
        &epk::replay::ReplayOptions::default(),
        |_| {},
    )
    .unwrap();
    let report =
        epk::replay::VerifyReport::new(&machine, epk::replay::Rule::Auto, 1e-12, true, 0.0);
    assert!(report.passed, "{}", report.table());
}

/// The toy MLP with its ReLU applied directly, not through `Switches::relu`.
#[derive(Module, Debug)]
struct Unrouted {
    mlp: Mlp,
}

impl EpkModel for Unrouted {
    const KIND: &'static str = "mlp-unrouted";
    type Config = MlpConfig;
    fn init(config: &MlpConfig, device: &Device) -> Self {
        Unrouted {
            mlp: Mlp::new(config, device),
        }
    }
    fn epk_forward(&self, x: Tensor<2>, sw: &mut Switches) -> Tensor<2> {
        let h = activation::relu(sw.linear(&self.mlp.layers[0], x));
        activation::log_softmax(sw.linear(&self.mlp.layers[1], h), 1)
    }
}

/// A ReLU not routed through `Switches` makes the Jacobian jump where replay cannot see a
/// switch: the replay stops at the first such step with the cause named, instead of spending
/// its evaluation cap on every step and failing `verify` without a reason.
#[test]
fn a_kink_without_a_switch_stops_the_replay_with_its_cause() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("u.zarr");
    let r = Run::toy(6, 8, 8, 12).with(common::Optim::Sgd(burn::optim::SgdConfig::new()), 0, 0.5);
    r.try_record_as::<Unrouted>(&path)
        .unwrap()
        .finish()
        .unwrap();
    let reader = epk::store::StoreReader::open(&path).unwrap();
    let device = epk::recorder::device::flex_f64().unwrap();
    let net = epk::replay::Network::<Unrouted>::new(reader.attrs(), &device).unwrap();
    let eval = reader.eval().unwrap();
    let error = epk::replay::replay(
        &reader,
        &net,
        &eval.inputs,
        &epk::replay::ReplayOptions::default(),
        |_| {},
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(error.contains("routed through Switches"), "{error}");
    // The same run with its ReLU routed verifies.
    let routed = dir.path().join("r.zarr");
    r.record(&routed);
    let report = common::verify(&routed, eval.len());
    assert!(report.passed, "{}", report.table());
}

/// The toy's inputs through Burn's `MultiHeadAttention` over a sequence of two 8-wide tokens
/// made from them, with `HEADS` heads: head width d_k = 8 / HEADS.
#[derive(Module, Debug)]
struct Attention<const HEADS: usize> {
    embed: burn::nn::Linear,
    attention: burn::nn::attention::MultiHeadAttention,
    head: burn::nn::Linear,
}

impl<const HEADS: usize> EpkModel for Attention<HEADS> {
    const KIND: &'static str = "attention-heads";
    type Config = MlpConfig;
    fn init(config: &MlpConfig, device: &Device) -> Self {
        use burn::nn::LinearConfig;
        use burn::nn::attention::MultiHeadAttentionConfig;
        let model = Attention {
            embed: LinearConfig::new(config.sizes[0], 16).init(device),
            attention: MultiHeadAttentionConfig::new(8, HEADS)
                .with_dropout(0.0)
                .init(device),
            head: LinearConfig::new(8, 3).init(device),
        };
        // Fixed weights, not Burn's global generator, which tests running beside this one
        // also draw from: how far the f32 constant shows depends on the weights.
        let len: usize = epk::recorder::params::layout(&model)
            .iter()
            .map(|p| p.len)
            .sum();
        let flat: Vec<f64> = (0..len)
            .map(|j| 1.3 * (0.37 * j as f64 + 0.11).sin())
            .collect();
        epk::recorder::params::load_flat(model, &flat, device, false).unwrap()
    }
    fn epk_forward(&self, x: Tensor<2>, sw: &mut Switches) -> Tensor<2> {
        let b = x.dims()[0];
        let seq = self.embed.forward(x).reshape([b, 2, 8]);
        let input = burn::nn::attention::MhaInput::self_attn(seq.clone());
        let pooled = (self.attention.forward(input).context + seq).mean_dim(1);
        activation::log_softmax(sw.linear(&self.head, pooled.reshape([b, 8])), 1)
    }
}

fn replayed<M: EpkModel>(path: &std::path::Path) -> Result<epk::replay::KernelMachine, String> {
    let reader = epk::store::StoreReader::open(path).unwrap();
    let device = epk::recorder::device::flex_f64().unwrap();
    let net = epk::replay::Network::<M>::new(reader.attrs(), &device).unwrap();
    let eval = reader.eval().unwrap();
    epk::replay::replay(
        &reader,
        &net,
        &eval.inputs,
        &epk::replay::ReplayOptions::default(),
        |_| {},
    )
    .map_err(|e| e.to_string())
}

/// burn-autodiff 0.22.1 scales the gradient of `x / c` by the f32 rounding of 1/c. Attention
/// divides by √d_k: with d_k = 2 its gradient is not the derivative of its forward pass, and
/// replay refuses it before the first step, naming the cause; with d_k = 4 (√d_k = 2, exact in
/// f32) the same run verifies at 1e-12.
#[test]
fn an_f32_constant_in_a_backward_pass_is_refused_with_its_cause() {
    let dir = tempfile::tempdir().unwrap();
    let r = Run::toy(6, 8, 8, 6).with(common::Optim::Sgd(burn::optim::SgdConfig::new()), 8, 0.2);
    let inexact = dir.path().join("d2.zarr");
    r.try_record_as::<Attention<4>>(&inexact)
        .unwrap()
        .finish()
        .unwrap();
    let error = replayed::<Attention<4>>(&inexact).err().unwrap_or_default();
    assert!(error.contains("not a float64-smooth"), "{error}");
    assert!(error.contains("div_scalar"), "{error}");
    let exact = dir.path().join("d4.zarr");
    r.try_record_as::<Attention<2>>(&exact)
        .unwrap()
        .finish()
        .unwrap();
    let machine = replayed::<Attention<2>>(&exact).unwrap();
    assert!(machine.max_error() < 1e-12, "{:.1e}", machine.max_error());
}

/// The smoothness check before the first step differentiates along a fixed direction at steps
/// down to 1e-5. With a ReLU 1e-7 from its kink every one of those differences straddles the
/// kink; the check must skip them (a switching value changes sign), not call the network
/// non-smooth.
#[test]
fn the_smoothness_check_skips_differences_across_a_kink() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.zarr");
    Run::toy(6, 8, 8, 4).record(&path);
    let reader = epk::store::StoreReader::open(&path).unwrap();
    let device = epk::recorder::device::flex_f64().unwrap();
    let net = epk::replay::Network::<Mlp>::new(reader.attrs(), &device).unwrap();
    let x = reader.eval().unwrap().input(0).to_vec();
    let mut w = reader.weights(reader.steps()).unwrap();
    assert!(epk::replay::precision::check(&net, &w, &x).is_ok());
    // Move the first hidden unit's bias so its pre-activation sits 1e-7 above zero.
    let (_, s) = net.forward_switches(&w, &x);
    let bias = reader
        .attrs()
        .params
        .iter()
        .find(|p| p.path.ends_with("bias"))
        .unwrap();
    w[bias.offset] += 1e-7 - s[0];
    let (_, moved) = net.forward_switches(&w, &x);
    assert!(moved[0] > 0.0 && moved[0] < 2e-7, "{}", moved[0]);
    let outcome = epk::replay::precision::check(&net, &w, &x);
    assert!(outcome.is_ok(), "{:?}", outcome.err());
}
