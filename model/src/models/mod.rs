//! Ready-made replayable models: [`Mlp`], [`Cnn`], [`Guide`] (Burn's guide model) and
//! [`Text`], a small transformer classifier.

mod guide;
mod text;

pub use guide::{Guide, GuideConfig};
pub use text::{PAD, Text, TextConfig};

use crate::model::{EpkModel, Switches};
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Initializer, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::{Device, Tensor, activation};
use serde::{Deserialize, Serialize};

/// A fully connected ReLU network: `sizes[0]` inputs, hidden layers, `sizes.last()` outputs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MlpConfig {
    /// Layer widths: the input length, each hidden layer's width, the number of outputs.
    pub sizes: Vec<usize>,
    /// Apply log-softmax to the last layer (f are log-probabilities).
    #[serde(default)]
    pub log_softmax: bool,
    /// Start the last layer at zero (Bell et al.'s toy): then b = f(x; w_0) is the same for
    /// every x.
    #[serde(default)]
    pub zero_last_layer: bool,
}

impl MlpConfig {
    /// Logit outputs, default initialisation.
    pub fn new(sizes: Vec<usize>) -> Self {
        MlpConfig {
            sizes,
            log_softmax: false,
            zero_last_layer: false,
        }
    }

    /// Sets [`MlpConfig::log_softmax`].
    pub fn with_log_softmax(mut self, on: bool) -> Self {
        self.log_softmax = on;
        self
    }

    /// Sets [`MlpConfig::zero_last_layer`].
    pub fn with_zero_last_layer(mut self, on: bool) -> Self {
        self.zero_last_layer = on;
        self
    }
}

/// See [`MlpConfig`].
#[derive(Module, Debug)]
pub struct Mlp {
    /// The linear layers, input first; a ReLU follows each but the last.
    pub layers: Vec<Linear>,
    #[module(skip)]
    log_softmax: bool,
}

impl Mlp {
    /// A network of `config`'s shape with Burn's default initialisation.
    pub fn new(config: &MlpConfig, device: &Device) -> Self {
        let n = config.sizes.len().saturating_sub(1);
        let layers = (0..n)
            .map(|i| {
                let mut c = LinearConfig::new(config.sizes[i], config.sizes[i + 1]);
                if config.zero_last_layer && i + 1 == n {
                    c = c.with_initializer(Initializer::Zeros);
                }
                c.init(device)
            })
            .collect();
        Mlp {
            layers,
            log_softmax: config.log_softmax,
        }
    }
}

impl EpkModel for Mlp {
    const KIND: &'static str = "mlp";
    type Config = MlpConfig;

    fn init(config: &MlpConfig, device: &Device) -> Self {
        Mlp::new(config, device)
    }

    /// One per linear layer; log-softmax makes f no polynomial.
    fn path_degree(config: &MlpConfig) -> Option<usize> {
        (!config.log_softmax).then(|| config.sizes.len().saturating_sub(1))
    }

    fn epk_forward(&self, inputs: Tensor<2>, switches: &mut Switches) -> Tensor<2> {
        let last = self.layers.len().saturating_sub(1);
        let mut x = inputs;
        for (i, layer) in self.layers.iter().enumerate() {
            x = switches.linear(layer, x);
            if i < last {
                x = switches.relu(x);
            }
        }
        if self.log_softmax {
            activation::log_softmax(x, 1)
        } else {
            x
        }
    }
}

/// A small convolutional classifier for square one-channel images: two 3×3 convolutions
/// (padding 1), each followed by ReLU and 2×2 max-pooling, then a linear layer to logits.
///
/// ```
/// use epk_model::models::{Cnn, CnnConfig};
/// use epk_model::{EpkModel, Switches, device::flex_f64};
/// use burn::tensor::Tensor;
/// let device = flex_f64().unwrap();
/// let cnn = Cnn::new(&CnnConfig::new(8, [4, 8], 10), &device);
/// let f = cnn.epk_forward(Tensor::zeros([2, 64], &device), &mut Switches::off());
/// assert_eq!(f.dims(), [2, 10]);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CnnConfig {
    /// Image side (divisible by 4).
    pub side: usize,
    /// Channels after the first and second convolution.
    pub channels: [usize; 2],
    /// Outputs (logits).
    pub classes: usize,
}

impl CnnConfig {
    /// A network for `side`×`side` images, with `channels` after the two convolutions and
    /// `classes` outputs.
    pub fn new(side: usize, channels: [usize; 2], classes: usize) -> Self {
        CnnConfig {
            side,
            channels,
            classes,
        }
    }
}

/// See [`CnnConfig`].
#[derive(Module, Debug)]
pub struct Cnn {
    /// The first 3×3 convolution, from one channel.
    pub conv1: Conv2d,
    /// The second 3×3 convolution.
    pub conv2: Conv2d,
    /// The linear layer from the pooled features to the logits.
    pub head: Linear,
    #[module(skip)]
    side: usize,
}

impl Cnn {
    /// A network of `config`'s shape with Burn's default initialisation.
    pub fn new(config: &CnnConfig, device: &Device) -> Self {
        let conv = |i: usize, o: usize| {
            Conv2dConfig::new([i, o], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device)
        };
        let q = config.side / 4;
        Cnn {
            conv1: conv(1, config.channels[0]),
            conv2: conv(config.channels[0], config.channels[1]),
            head: LinearConfig::new(config.channels[1] * q * q, config.classes).init(device),
            side: config.side,
        }
    }
}

impl EpkModel for Cnn {
    const KIND: &'static str = "cnn";
    type Config = CnnConfig;

    fn init(config: &CnnConfig, device: &Device) -> Self {
        Cnn::new(config, device)
    }

    /// Two convolutions and a linear layer.
    fn path_degree(_: &CnnConfig) -> Option<usize> {
        Some(3)
    }

    fn epk_forward(&self, inputs: Tensor<2>, switches: &mut Switches) -> Tensor<2> {
        let [b, _] = inputs.dims();
        let x = inputs.reshape([b, 1, self.side, self.side]);
        // Pooling before ReLU is the same function as after it (they commute) with fewer
        // switching values for replay to watch.
        let x = switches.conv2d(&self.conv1, x);
        let x = switches.max_pool2(x);
        let x = switches.relu(x);
        let x = switches.conv2d(&self.conv2, x);
        let x = switches.max_pool2(x);
        let x = switches.relu(x);
        let x = x.reshape([b as i32, -1]);
        switches.linear(&self.head, x)
    }
}
