//! burn-optim's SGD, mirroring `burn-optim/src/optim/sgd.rs` and the momentum it holds,
//! `burn-optim/src/optim/momentum.rs`.

use super::decay::WeightDecay;
use super::{Algorithm, Config, Registered, Transform};
use crate::OptimError;

/// Registration: the recorder's name, the key of `SgdConfig::gradient_clipping`, and how the
/// error for an unknown optimizer lists it.
pub(super) const SGD: Registered = Registered::of::<Sgd>(
    "sgd",
    "gradient_clipping",
    "sgd (with momentum, Nesterov, weight decay)",
);

/// `Momentum`'s hyper-parameters, as it holds them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Momentum {
    /// μ, rounded to f32 as `Momentum::new` does (`config.momentum.elem()`).
    pub momentum: f32,
    /// The dampening, kept in f64.
    pub dampening: f64,
    /// Nesterov's variant.
    pub nesterov: bool,
}

impl Momentum {
    /// Reads `SgdConfig::momentum` (`MomentumConfig`); absent or null: none.
    fn from_config(config: &Config) -> Result<Option<Self>, OptimError> {
        let Some(m) = config.get("momentum") else {
            return Ok(None);
        };
        let nesterov = m
            .get("nesterov")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false);
        Ok(Some(Momentum {
            momentum: config.number_in(m, "momentum", "momentum.momentum", 0.9)? as f32,
            dampening: config.number_in(m, "dampening", "momentum.dampening", 0.1)?,
            nesterov,
        }))
    }

    /// Mirrors `Momentum::transform`: the velocity is g on the first step, else
    /// g (1 − dampening) + v μ, and the update is the velocity, or v μ + g under Nesterov.
    /// Sets the step's a, b, α and γ.
    fn transform(
        &self,
        grad: &[f64],
        velocity: &mut Option<Vec<f64>>,
        t: &mut Transform,
    ) -> Vec<f64> {
        let mu = self.momentum as f64;
        let damp = self.dampening;
        let first = velocity.is_none();
        (t.a, t.b) = if first { (0.0, 1.0) } else { (mu, 1.0 - damp) };
        (t.alpha, t.gamma) = if self.nesterov { (mu, 1.0) } else { (1.0, 0.0) };
        let v = velocity.get_or_insert_with(|| grad.to_vec());
        if !first {
            for (v, g) in v.iter_mut().zip(grad) {
                *v = g * (1.0 - damp) + *v * mu;
            }
        }
        if self.nesterov {
            v.iter().zip(grad).map(|(v, g)| v * mu + g).collect()
        } else {
            v.clone()
        }
    }
}

/// `Sgd`: optional momentum and coupled weight decay, and the velocity (`SgdState`).
#[derive(Clone, Debug, PartialEq)]
pub struct Sgd {
    momentum: Option<Momentum>,
    weight_decay: WeightDecay,
    /// The momentum's velocity; None before the first step.
    velocity: Option<Vec<f64>>,
}

impl Algorithm for Sgd {
    fn from_config(config: &Config) -> Result<Self, OptimError> {
        Ok(Sgd {
            momentum: Momentum::from_config(config)?,
            weight_decay: WeightDecay::from_config(config)?,
            velocity: None,
        })
    }

    fn describe(&self) -> String {
        let name = match &self.momentum {
            None => "sgd".to_string(),
            Some(Momentum {
                momentum,
                dampening,
                nesterov,
            }) => format!("sgd momentum={momentum} dampening={dampening} nesterov={nesterov}"),
        };
        name + &self.weight_decay.describe()
    }

    fn is_plain(&self) -> bool {
        self.momentum.is_none() && self.weight_decay.penalty == 0.0
    }

    /// Mirrors `Sgd::step`: weight decay, momentum, then Δw = −u η.
    fn step(&mut self, lr: f64, w: &[f64], mut grad: Vec<f64>, t: &mut Transform) -> Vec<f64> {
        self.weight_decay.transform(&mut grad, w, t);
        let u = match &self.momentum {
            Some(momentum) => momentum.transform(&grad, &mut self.velocity, t),
            None => {
                t.gamma = 1.0;
                grad
            }
        };
        u.iter().map(|u| -(u * lr)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use epk_store::OptimizerSpec;

    fn sgd(config: serde_json::Value) -> Result<Sgd, OptimError> {
        let spec = OptimizerSpec {
            name: "sgd".into(),
            config,
        };
        Sgd::from_config(&Config::new(&spec))
    }

    #[test]
    fn parses_momentum_and_decay_with_f32_hyper_parameters() {
        let o = sgd(serde_json::json!({"weight_decay":{"penalty":0.0005},"momentum":{"momentum":0.9,"dampening":0.1,"nesterov":true}})).unwrap();
        assert_eq!(
            o.momentum,
            Some(Momentum {
                momentum: 0.9f32,
                dampening: 0.1,
                nesterov: true
            })
        );
        assert_eq!(o.weight_decay.penalty, 0.0005f32);
        // The f32 rounding is kept: 0.9f32 widened is not 0.9.
        assert_ne!(0.9f32 as f64, 0.9);
        assert!(sgd(serde_json::json!({"momentum":{"momentum":"fast"}})).is_err());
    }
}
