//! ReLU and leaky ReLU as Burn's modules, noting their pre-activations.

use super::with_active;
use burn::config::Config;
use burn::module::Module;
use burn::tensor::Tensor;

/// Burn's `nn::Relu`, noting its switching values.
#[derive(Module, Debug, Default)]
pub struct Relu;

impl Relu {
    /// The ReLU module.
    pub fn new() -> Self {
        Relu
    }

    /// max(z, 0), elementwise.
    pub fn forward<const D: usize>(&self, z: Tensor<D>) -> Tensor<D> {
        super::relu(z)
    }
}

/// Configuration of [`LeakyRelu`], as Burn's `LeakyReluConfig`.
#[derive(Config, Debug)]
pub struct LeakyReluConfig {
    /// The slope below zero.
    #[config(default = "0.01")]
    pub negative_slope: f64,
}

impl LeakyReluConfig {
    /// The module.
    pub fn init(&self) -> LeakyRelu {
        LeakyRelu {
            negative_slope: self.negative_slope,
        }
    }
}

/// Burn's `nn::LeakyRelu`, noting its switching values.
#[derive(Module, Debug)]
pub struct LeakyRelu {
    /// The slope below zero.
    pub negative_slope: f64,
}

impl LeakyRelu {
    /// z above zero, slope·z below.
    pub fn forward<const D: usize>(&self, z: Tensor<D>) -> Tensor<D> {
        with_active(|s| s.leaky_relu(z, self.negative_slope))
    }
}
