//! burn-optim's AdamW, mirroring `burn-optim/src/optim/adamw.rs`: Adam's moments (see
//! [`super::adam`]) with decoupled, optionally cautious, weight decay.

use super::adam::AdaptiveMomentum;
use super::{Algorithm, Config, Registered, Transform};
use crate::OptimError;

/// Registration: the recorder's name, the key of `AdamWConfig::grad_clipping`, and how the
/// error for an unknown optimizer lists it.
pub(super) const ADAMW: Registered = Registered::of::<AdamW>("adamw", "grad_clipping", "adamw");

/// `AdamW`: adaptive moments and decoupled weight decay λ_d.
#[derive(Clone, Debug, PartialEq)]
pub struct AdamW {
    momentum: AdaptiveMomentum,
    /// λ_d, as f32 like burn holds it.
    weight_decay: f32,
    /// Decay only where the weight and the first moment agree in sign.
    cautious_weight_decay: bool,
}

impl Algorithm for AdamW {
    fn from_config(config: &Config) -> Result<Self, OptimError> {
        Ok(AdamW {
            momentum: AdaptiveMomentum::from_config(config)?,
            cautious_weight_decay: config.flag("cautious_weight_decay")?,
            weight_decay: config.f32_or("weight_decay", 1e-4)?,
        })
    }

    fn describe(&self) -> String {
        let mut s = self.momentum.describe("adamw");
        s += &format!(" cautious={}", self.cautious_weight_decay);
        if self.weight_decay != 0.0 {
            s += &format!(" decoupled_decay={}", self.weight_decay);
        }
        s
    }

    /// Mirrors `AdamW::step` and `AdaptiveMomentumW::transform`:
    /// Δw = −w η λ_d k − η (m / (1 − β1ᵗ)) / (√(v / (1 − β2ᵗ)) + ε), with k the cautious mask.
    fn step(&mut self, lr: f64, w: &[f64], grad: Vec<f64>, t: &mut Transform) -> Vec<f64> {
        let (beta_1, beta_2, epsilon) = (
            self.momentum.beta_1,
            self.momentum.beta_2,
            self.momentum.epsilon,
        );
        let state = self.momentum.update(&grad, t);
        let time = state.time as i32;
        let c1 = (1f32 - beta_1.powi(time)) as f64;
        let c2 = (1f32 - beta_2.powi(time)) as f64;
        let eps = epsilon as f64;
        let v = state.v_to_use();
        let m = &state.moment_1;
        let rate = lr * self.weight_decay as f64;
        let mask: Option<Vec<f64>> = self.cautious_weight_decay.then(|| {
            w.iter()
                .zip(m)
                .map(|(w, m)| f64::from(u8::from((*w >= 0.0) == (*m >= 0.0))))
                .collect()
        });
        let delta = (0..w.len())
            .map(|j| {
                let raw = (m[j] / c1) / ((v[j] / c2).sqrt() + eps);
                let k = mask.as_ref().map_or(1.0, |mask| mask[j]);
                -(w[j] * rate * k) - raw * lr
            })
            .collect();
        t.precondition = Some(
            v.iter()
                .map(|v| 1.0 / c1 / ((v / c2).sqrt() + eps))
                .collect(),
        );
        (t.alpha, t.gamma) = (1.0, 0.0);
        t.decoupled = rate;
        t.mask = mask;
        delta
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use epk_store::OptimizerSpec;

    #[test]
    fn parses_the_decoupled_decay_as_f32() {
        let spec = OptimizerSpec {
            name: "adamw".into(),
            config: serde_json::json!({"grad_clipping":null,"beta_1":0.9,"beta_2":0.999,"epsilon":0.00001,"weight_decay":0.0001,"cautious_weight_decay":false,"amsgrad":false}),
        };
        let a = AdamW::from_config(&Config::new(&spec)).unwrap();
        assert_eq!(a.weight_decay, 1e-4f32);
        assert_eq!(a.momentum.beta_1, 0.9f32);
        assert!(!a.cautious_weight_decay);
    }
}
