//! Ready-made replayable models.

use crate::model::{EpkModel, Switches};
use burn::module::Module;
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::tensor::{Device, Tensor, activation};
use serde::{Deserialize, Serialize};

/// A fully connected ReLU network: `sizes[0]` inputs, hidden layers, `sizes.last()` outputs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MlpConfig {
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

    pub fn with_log_softmax(mut self, on: bool) -> Self {
        self.log_softmax = on;
        self
    }

    pub fn with_zero_last_layer(mut self, on: bool) -> Self {
        self.zero_last_layer = on;
        self
    }
}

/// See [`MlpConfig`].
#[derive(Module, Debug)]
pub struct Mlp {
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
