//! One small model per layer kind, each written with Burn's own modules: the layer under test
//! between the input and a linear head (through `Switches::linear`, replay's fast path for the
//! head). Convolutions go through `Switches::conv1d`/`conv2d`, so a model of convolutions,
//! pooling and the head takes the fast path; any other parameterised layer puts the model on
//! the general path. Inputs are 32 values per sample, reshaped as the layer needs, or 8 token
//! ids for the embedding.

use burn::module::Module;
use burn::nn::attention::{MhaInput, MultiHeadAttention, MultiHeadAttentionConfig};
use burn::nn::conv::{Conv1d, Conv1dConfig, Conv2d, Conv2dConfig};
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig, AvgPool2d, AvgPool2dConfig};
use burn::nn::{
    Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig, PaddingConfig1d,
    PaddingConfig2d, RmsNorm, RmsNormConfig,
};
use burn::tensor::{Device, Tensor, activation};
use epk::recorder::{EpkModel, Switches};
use serde::{Deserialize, Serialize};

/// The layer kind between the input and the head.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    Linear,
    Conv1d,
    Conv2d,
    AvgPool2d,
    AdaptiveAvgPool2d,
    MaxPool1d,
    MaxPool2d,
    LeakyRelu,
    Gelu,
    Silu,
    Tanh,
    Sigmoid,
    LayerNorm,
    RmsNorm,
    /// epk's drop-in `epk::model::nn::RmsNorm`, the RMS in f64.
    EpkRmsNorm,
    Embedding,
    Residual,
    Attention,
}

impl Kind {
    pub const ALL: [Kind; 18] = [
        Kind::Linear,
        Kind::Conv1d,
        Kind::Conv2d,
        Kind::AvgPool2d,
        Kind::AdaptiveAvgPool2d,
        Kind::MaxPool1d,
        Kind::MaxPool2d,
        Kind::LeakyRelu,
        Kind::Gelu,
        Kind::Silu,
        Kind::Tanh,
        Kind::Sigmoid,
        Kind::LayerNorm,
        Kind::RmsNorm,
        Kind::EpkRmsNorm,
        Kind::Embedding,
        Kind::Residual,
        Kind::Attention,
    ];

    /// Values per sample: token ids for the embedding, 32 numbers otherwise.
    pub fn input_len(self) -> usize {
        if self == Kind::Embedding { 8 } else { 32 }
    }
}

/// Vocabulary of the embedding model.
pub const VOCAB: usize = 10;
/// Classes.
pub const CLASSES: usize = 3;

/// The layer kind and its modules; only those of `kind` are present.
#[derive(Module, Debug)]
pub struct Zoo {
    #[module(skip)]
    kind: Kind,
    linear: Option<Linear>,
    conv1d: Option<Conv1d>,
    conv2d: Option<Conv2d>,
    avg: Option<AvgPool2d>,
    adaptive: Option<AdaptiveAvgPool2d>,
    layer_norm: Option<LayerNorm>,
    rms_norm: Option<RmsNorm>,
    epk_rms_norm: Option<epk::model::nn::RmsNorm>,
    embedding: Option<Embedding>,
    attention: Option<MultiHeadAttention>,
    head: Linear,
}

/// Width of the head's input, per kind.
fn features(kind: Kind) -> usize {
    match kind {
        // [4 channels, 8 positions] after a stride-2 conv with dilation 2.
        Kind::Conv1d => 4 * 8,
        // [4, 1, 4] after stride (2, 1), dilation (2, 1).
        Kind::Conv2d => 16,
        // [3, 3, 3] after a 2×2 average every 1.
        Kind::AvgPool2d => 27,
        Kind::AdaptiveAvgPool2d => 12,
        // [3 channels, 7 windows of 3 every 2] over 16 positions.
        Kind::MaxPool1d => 21,
        // [3, 2, 2]: 3×3 windows every 1 over 4×4.
        Kind::MaxPool2d => 12,
        Kind::Embedding | Kind::Attention => 8,
        Kind::Residual => 32,
        _ => 8,
    }
}

impl EpkModel for Zoo {
    const KIND: &'static str = "zoo";
    type Config = Kind;

    fn init(kind: &Kind, device: &Device) -> Self {
        let kind = *kind;
        let is = |k: Kind| kind == k;
        let linear_width = if is(Kind::Residual) { 32 } else { 8 };
        let uses_linear = !matches!(
            kind,
            Kind::Conv1d
                | Kind::Conv2d
                | Kind::AvgPool2d
                | Kind::AdaptiveAvgPool2d
                | Kind::MaxPool1d
                | Kind::MaxPool2d
                | Kind::Embedding
                | Kind::Attention
        );
        let conv2d = match kind {
            Kind::Conv2d => Some(
                Conv2dConfig::new([2, 4], [3, 3])
                    .with_stride([2, 1])
                    .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                    .with_dilation([2, 1])
                    .with_groups(2),
            ),
            Kind::AvgPool2d | Kind::AdaptiveAvgPool2d | Kind::MaxPool2d => Some(
                Conv2dConfig::new([2, 3], [3, 3])
                    .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)),
            ),
            _ => None,
        };
        let conv1d = match kind {
            Kind::Conv1d => Some(
                Conv1dConfig::new(2, 4, 3)
                    .with_stride(2)
                    .with_padding(PaddingConfig1d::Explicit(2, 2))
                    .with_dilation(2)
                    .with_groups(2),
            ),
            Kind::MaxPool1d => {
                Some(Conv1dConfig::new(2, 3, 3).with_padding(PaddingConfig1d::Explicit(1, 1)))
            }
            _ => None,
        };
        Zoo {
            kind,
            linear: uses_linear.then(|| LinearConfig::new(32, linear_width).init(device)),
            conv1d: conv1d.map(|c| c.init(device)),
            conv2d: conv2d.map(|c| c.init(device)),
            avg: is(Kind::AvgPool2d)
                .then(|| AvgPool2dConfig::new([2, 2]).with_strides([1, 1]).init()),
            adaptive: is(Kind::AdaptiveAvgPool2d)
                .then(|| AdaptiveAvgPool2dConfig::new([2, 2]).init()),
            layer_norm: is(Kind::LayerNorm).then(|| LayerNormConfig::new(8).init(device)),
            rms_norm: is(Kind::RmsNorm).then(|| RmsNormConfig::new(8).init(device)),
            epk_rms_norm: is(Kind::EpkRmsNorm)
                .then(|| epk::model::nn::RmsNormConfig::new(8).init(device)),
            embedding: is(Kind::Embedding).then(|| EmbeddingConfig::new(VOCAB, 8).init(device)),
            attention: is(Kind::Attention).then(|| {
                MultiHeadAttentionConfig::new(8, 2)
                    .with_dropout(0.0)
                    .init(device)
            }),
            head: LinearConfig::new(features(kind), CLASSES).init(device),
        }
    }

    fn epk_forward(&self, x: Tensor<2>, sw: &mut Switches) -> Tensor<2> {
        let b = x.dims()[0];
        let h = self.body(x, sw);
        let h = h.reshape([b as i32, -1]);
        sw.linear(&self.head, h)
    }
}

impl Zoo {
    /// The layer under test, from flat inputs to `[batch, ...]` features.
    fn body(&self, x: Tensor<2>, sw: &mut Switches) -> Tensor<2> {
        let b = x.dims()[0];
        let flat = |t: Tensor<3>| t.reshape([b as i32, -1]);
        let flat4 = |t: Tensor<4>| t.reshape([b as i32, -1]);
        match self.kind {
            Kind::Linear => {
                let z = sw.linear(some(&self.linear), x);
                sw.relu(z)
            }
            Kind::Conv1d => {
                let z = sw.conv1d(some(&self.conv1d), x.reshape([b, 2, 16]));
                flat(sw.relu(z))
            }
            Kind::Conv2d => {
                let z = sw.conv2d(some(&self.conv2d), x.reshape([b, 2, 4, 4]));
                flat4(sw.relu(z))
            }
            Kind::AvgPool2d => {
                let z = sw.conv2d(some(&self.conv2d), x.reshape([b, 2, 4, 4]));
                let z = sw.relu(z);
                flat4(some(&self.avg).forward(z))
            }
            Kind::AdaptiveAvgPool2d => {
                let z = sw.conv2d(some(&self.conv2d), x.reshape([b, 2, 4, 4]));
                let z = sw.relu(z);
                flat4(some(&self.adaptive).forward(z))
            }
            Kind::MaxPool1d => {
                let z = sw.conv1d(some(&self.conv1d), x.reshape([b, 2, 16]));
                flat(sw.max_pool1d(z, 3, 2))
            }
            Kind::MaxPool2d => {
                let z = sw.conv2d(some(&self.conv2d), x.reshape([b, 2, 4, 4]));
                flat4(sw.max_pool2d(z, [3, 3], [1, 1]))
            }
            Kind::LeakyRelu => sw.leaky_relu(self.hidden(x), 0.1),
            Kind::Gelu => activation::gelu(self.hidden(x)),
            Kind::Silu => activation::silu(self.hidden(x)),
            Kind::Tanh => activation::tanh(self.hidden(x)),
            Kind::Sigmoid => activation::sigmoid(self.hidden(x)),
            Kind::LayerNorm => sw.relu(some(&self.layer_norm).forward(self.hidden(x))),
            Kind::RmsNorm => sw.relu(some(&self.rms_norm).forward(self.hidden(x))),
            Kind::EpkRmsNorm => sw.relu(some(&self.epk_rms_norm).forward(self.hidden(x))),
            Kind::Embedding => {
                let tokens = x.int();
                // Mean over the 8 positions: [b, 8].
                some(&self.embedding)
                    .forward(tokens)
                    .mean_dim(1)
                    .reshape([b, 8])
            }
            Kind::Residual => {
                let h = sw.relu(self.hidden(x.clone()));
                activation::tanh(h + x)
            }
            Kind::Attention => {
                let seq = x.reshape([b, 4, 8]);
                let out = some(&self.attention).forward(MhaInput::self_attn(seq.clone()));
                // Residual, then mean over the sequence.
                (out.context + seq).mean_dim(1).reshape([b, 8])
            }
        }
    }
}

/// The module of an `Option` field, present for the kind that uses it.
fn some<T>(o: &Option<T>) -> &T {
    o.as_ref().expect("built for this kind")
}

impl Zoo {
    fn hidden(&self, x: Tensor<2>) -> Tensor<2> {
        self.linear.as_ref().expect("a linear layer").forward(x)
    }
}
