//! burn-optim's coupled weight decay, mirroring `burn-optim/src/optim/decay.rs`: an L2 penalty
//! added to the gradient before the optimizer (SGD and Adam hold one; AdamW decays apart).

use super::{Config, Transform};
use crate::OptimError;
use serde_json::Value;

/// `WeightDecay`: the L2 penalty λ_c, as f32 like burn holds it (0: no decay).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct WeightDecay {
    /// λ_c.
    pub penalty: f32,
}

impl WeightDecay {
    /// Reads `weight_decay: {"penalty": λ}` (`SgdConfig`, `AdamConfig`); absent or null: none.
    pub fn from_config(config: &Config) -> Result<Self, OptimError> {
        let Some(v) = config.get("weight_decay") else {
            return Ok(WeightDecay::default());
        };
        v.get("penalty")
            .and_then(Value::as_f64)
            .map(|x| WeightDecay { penalty: x as f32 })
            .ok_or_else(|| config.bad("weight_decay has no penalty"))
    }

    /// Mirrors `WeightDecay::transform` (`tensor.mul_scalar(penalty).add(grad)`): G' = w λ_c + G
    /// in place, and λ_c as the step's coupled coefficient.
    pub fn transform(&self, grad: &mut [f64], w: &[f64], t: &mut Transform) {
        let lc = self.penalty as f64;
        t.coupled = lc;
        if lc != 0.0 {
            for (g, w) in grad.iter_mut().zip(w) {
                // w λ + g as burn orders it; IEEE addition commutes, so += is the same number.
                *g += w * lc;
            }
        }
    }

    /// ` weight_decay=λ` when there is decay, else nothing.
    pub fn describe(&self) -> String {
        if self.penalty != 0.0 {
            format!(" weight_decay={}", self.penalty)
        } else {
            String::new()
        }
    }
}
