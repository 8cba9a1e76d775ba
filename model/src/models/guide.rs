//! The model of Burn's guide (burn.dev/books/burn, "Guide: Model"), kept layer for layer:
//! two 3×3 convolutions, Dropout, ReLU, adaptive average pooling to 8×8, and two linear
//! layers. What differs for epk, and nothing else:
//!
//! - `epk_forward` takes the images flat, `[batch, side·side]`, as the store keeps them;
//! - the two ReLUs go through [`Switches::relu`], the two convolutions through
//!   [`Switches::conv2d`] and the two linear layers through [`Switches::linear`] (replay's
//!   fast path, which then holds every parameter);
//! - Dropout is [`crate::nn::Dropout`], Burn's with masks keyed by step and sample, so replay
//!   rebuilds the masks each step used.

use crate::model::{EpkModel, Switches};
use crate::nn::{Dropout, DropoutConfig};
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

/// The guide's `ModelConfig`, with the image side (28 for MNIST).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GuideConfig {
    /// Image side; the images are `side × side`, one channel.
    pub side: usize,
    /// Classes.
    pub num_classes: usize,
    /// Width of the hidden linear layer (512 in the guide).
    pub hidden_size: usize,
    /// Dropout probability (0.5 in the guide).
    pub dropout: f64,
}

impl GuideConfig {
    /// The guide's sizes for `side × side` images and `num_classes` classes, without dropout.
    pub fn new(side: usize, num_classes: usize, hidden_size: usize) -> Self {
        GuideConfig {
            side,
            num_classes,
            hidden_size,
            dropout: 0.0,
        }
    }
}

/// See [`GuideConfig`].
#[derive(Module, Debug)]
pub struct Guide {
    conv1: Conv2d,
    conv2: Conv2d,
    pool: AdaptiveAvgPool2d,
    dropout: Dropout,
    linear1: Linear,
    linear2: Linear,
    #[module(skip)]
    side: usize,
}

impl EpkModel for Guide {
    const KIND: &'static str = "guide";
    type Config = GuideConfig;

    fn init(config: &GuideConfig, device: &Device) -> Self {
        Guide {
            conv1: Conv2dConfig::new([1, 8], [3, 3]).init(device),
            conv2: Conv2dConfig::new([8, 16], [3, 3]).init(device),
            pool: AdaptiveAvgPool2dConfig::new([8, 8]).init(),
            dropout: DropoutConfig::new(config.dropout).init(),
            linear1: LinearConfig::new(16 * 8 * 8, config.hidden_size).init(device),
            linear2: LinearConfig::new(config.hidden_size, config.num_classes).init(device),
            side: config.side,
        }
    }

    /// Two convolutions and two linear layers; pooling averages and dropout's masks are
    /// fixed within a step.
    fn path_degree(_: &GuideConfig) -> Option<usize> {
        Some(4)
    }

    fn epk_forward(&self, images: Tensor<2>, switches: &mut Switches) -> Tensor<2> {
        let [batch, _] = images.dims();
        let x = images.reshape([batch, 1, self.side, self.side]);
        let x = switches.conv2d(&self.conv1, x);
        let x = self.dropout.forward(x);
        let x = switches.conv2d(&self.conv2, x);
        let x = self.dropout.forward(x);
        let x = switches.relu(x);
        let x = self.pool.forward(x);
        let x = x.reshape([batch, 16 * 8 * 8]);
        let x = switches.linear(&self.linear1, x);
        let x = self.dropout.forward(x);
        let x = switches.relu(x);
        switches.linear(&self.linear2, x)
    }
}
