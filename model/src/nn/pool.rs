//! Max-pooling as Burn's modules (no padding or dilation), noting each window's margins.

use super::with_active;
use burn::config::Config;
use burn::module::Module;
use burn::tensor::Tensor;

/// Configuration of [`MaxPool1d`]: Burn's `MaxPool1dConfig` without padding or dilation,
/// which epk does not cover (a padded window's margins would be infinite).
#[derive(Config, Debug)]
pub struct MaxPool1dConfig {
    /// Window length.
    pub kernel_size: usize,
    /// Step between windows.
    #[config(default = "kernel_size")]
    pub stride: usize,
}

impl MaxPool1dConfig {
    /// The module.
    pub fn init(&self) -> MaxPool1d {
        MaxPool1d {
            kernel_size: self.kernel_size,
            stride: self.stride,
        }
    }
}

/// Burn's `nn::pool::MaxPool1d` over `[batch, channels, length]`, noting each window's margins.
#[derive(Module, Debug)]
pub struct MaxPool1d {
    /// Window length.
    pub kernel_size: usize,
    /// Step between windows.
    pub stride: usize,
}

impl MaxPool1d {
    /// The maximum of each window.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        with_active(|s| s.max_pool1d(x, self.kernel_size, self.stride))
    }
}

/// Configuration of [`MaxPool2d`]: Burn's `MaxPool2dConfig` without padding, dilation or ceil
/// mode.
#[derive(Config, Debug)]
pub struct MaxPool2dConfig {
    /// Window size.
    pub kernel_size: [usize; 2],
    /// Step between windows.
    #[config(default = "kernel_size")]
    pub strides: [usize; 2],
}

impl MaxPool2dConfig {
    /// The module.
    pub fn init(&self) -> MaxPool2d {
        MaxPool2d {
            kernel_size: self.kernel_size,
            stride: self.strides,
        }
    }
}

/// Burn's `nn::pool::MaxPool2d` over `[batch, channels, height, width]`, noting each window's
/// margins.
#[derive(Module, Debug)]
pub struct MaxPool2d {
    /// Window size.
    pub kernel_size: [usize; 2],
    /// Step between windows.
    pub stride: [usize; 2],
}

impl MaxPool2d {
    /// The maximum of each window.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        with_active(|s| s.max_pool2d(x, self.kernel_size, self.stride))
    }
}
