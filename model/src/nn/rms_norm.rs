//! RMSNorm in the input's float type.
//!
//! Burn 0.22.1's `RmsNorm` casts its input to f32 for the root mean square
//! (`burn-nn/src/modules/norm/rms.rs`), so its output carries f32 rounding that no float64
//! replay can integrate exactly (replay refuses such a network). This one is the same module
//! (a `gamma` of ones, the same `epsilon`, the same parameter name, so records load either
//! way) with the mean taken in the input's own type.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor};

/// Configuration of [`RmsNorm`], as Burn's `RmsNormConfig`.
#[derive(Config, Debug)]
pub struct RmsNormConfig {
    /// Size of the last dimension, which is normalised.
    pub d_model: usize,
    /// Added to the mean square before the root.
    #[config(default = 1e-5)]
    pub epsilon: f64,
}

impl RmsNormConfig {
    /// The module, with `gamma` all ones.
    pub fn init(&self, device: &Device) -> RmsNorm {
        RmsNorm {
            gamma: Param::from_tensor(Tensor::ones([self.d_model], device)),
            epsilon: self.epsilon,
        }
    }
}

/// y = x / √(mean(x²) + ε) · γ over the last dimension.
#[derive(Module, Debug)]
pub struct RmsNorm {
    /// The learnt scale γ, `[d_model]`.
    pub gamma: Param<Tensor<1>>,
    /// ε.
    pub epsilon: f64,
}

impl RmsNorm {
    /// Normalises `x` `[..., d_model]` over its last dimension.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let rms = (x.clone().square().mean_dim(D - 1) + self.epsilon).sqrt();
        (x / rms) * self.gamma.val().unsqueeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::flex_f64;
    use crate::float_tensor;

    /// Against the formula in f64, to rounding; Burn's own is off by f32 rounding.
    #[test]
    fn rms_norm_is_the_formula_in_f64() {
        let device = flex_f64().unwrap();
        let x: Vec<f64> = (0..12)
            .map(|j| (0.9 * j as f64 + 0.1).sin() * 3.0)
            .collect();
        let norm = RmsNormConfig::new(4).init(&device);
        let y: Vec<f64> = norm
            .forward(float_tensor(x.clone(), [3, 4], &device))
            .try_into_vec_as()
            .unwrap();
        let burns: Vec<f64> = burn::nn::RmsNormConfig::new(4)
            .init(&device)
            .forward(float_tensor(x.clone(), [3, 4], &device))
            .try_into_vec_as()
            .unwrap();
        let (mut ours, mut theirs) = (0.0f64, 0.0f64);
        for (r, row) in x.chunks(4).enumerate() {
            let rms = (row.iter().map(|v| v * v).sum::<f64>() / 4.0 + 1e-5).sqrt();
            for (c, v) in row.iter().enumerate() {
                ours = ours.max((y[r * 4 + c] - v / rms).abs());
                theirs = theirs.max((burns[r * 4 + c] - v / rms).abs());
            }
        }
        assert!(ours < 1e-15, "{ours:e}");
        assert!(theirs > 1e-10, "Burn's RmsNorm is now f64: {theirs:e}");
    }
}
