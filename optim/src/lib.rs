//! burn-optim's optimizers rewritten as linear maps of the data gradients, so that every
//! step splits exactly into per-training-point terms and explicit non-data terms.
//!
//! Every supported optimizer takes, per step s, the data gradient G_s = Σ_i g_{s,i} and does
//!
//! ```text
//! G'_s = c_s ⊙ G_s + λ_c w_s                      clipping factors c_s, coupled decay λ_c
//! m_s  = a_s m_{s-1} + b_s G'_s                    momentum or first moment (m_{-1} = 0)
//! Δw_s = −η_s D_s ⊙ (α_s m_s + γ_s G'_s) − η_s λ_d (w_s ⊙ k_s)   decoupled decay
//! ```
//!
//! with D_s a diagonal preconditioner (1 for SGD, Adam's 1/(√v̂+ε) with its bias corrections)
//! and k_s the cautious-decay mask. Given c_s and D_s, Δw_s is linear in every g_{r,i} with
//! r ≤ s; [`Transform`] holds one step's c, D and coefficients. The arithmetic follows
//! burn-optim 0.22 to the rounding: hyper-parameters it holds as f32 are rounded to f32 here too
//! (0.9 as f32 differs from 0.9 by 2.4e-8, which would break a 1e-12 check).
//!
//! Each optimizer lives in a file of its own beside burn-optim's (`sgd.rs`, `adam.rs`,
//! `adamw.rs`, and `clip.rs`, `decay.rs` for clipping and coupled decay), so that a Burn upgrade
//! can be read side by side. A new one implements [`Algorithm`] in a file of its own and adds
//! its registration to `ALGORITHMS`: one file and one line.

#![warn(missing_docs)]

mod adam;
mod adamw;
pub mod agreement;
mod clip;
mod decay;
mod error;
mod sgd;

pub use agreement::{Agreement, unit_roundoff};
pub use clip::Clipping;
use epk_store::{OptimizerSpec, ParamLayout};
pub use error::OptimError;
use serde_json::Value;
use std::fmt;

/// The optimizers replay decomposes; adding one is one line here.
const ALGORITHMS: &[Registered] = &[sgd::SGD, adam::ADAM, adamw::ADAMW];

/// One of burn-optim's optimizers, replayed: its hyper-parameters as burn holds them and, once
/// stepped, its state (None before the first step, as in burn).
pub trait Algorithm: fmt::Debug + Send + Sync + CloneAlgorithm {
    /// Reads the optimizer's burn config as the recorder stored it.
    fn from_config(config: &Config) -> Result<Self, OptimError>
    where
        Self: Sized;

    /// Name, hyper-parameters and weight decay in one line.
    fn describe(&self) -> String;

    /// Whether every step is Δw = −η G and keeps no state.
    fn is_plain(&self) -> bool {
        false
    }

    /// One step with learning rate `lr` at weights `w` and the clipped data gradient `grad`:
    /// advances the state, sets the step's coefficients in `t` (all but `lr` and `clip`) and
    /// returns Δw as the optimizer computes it.
    fn step(&mut self, lr: f64, w: &[f64], grad: Vec<f64>, t: &mut Transform) -> Vec<f64>;
}

/// Lets an [`Optimizer`] be cloned although its algorithm is a trait object; every `Clone`
/// algorithm has it.
pub trait CloneAlgorithm {
    /// A boxed copy.
    fn clone_box(&self) -> Box<dyn Algorithm>;
}

impl<T: Algorithm + Clone + 'static> CloneAlgorithm for T {
    fn clone_box(&self) -> Box<dyn Algorithm> {
        Box::new(self.clone())
    }
}

impl Clone for Box<dyn Algorithm> {
    fn clone(&self) -> Self {
        self.clone_box()
    }
}

/// An optimizer replay knows: the name the recorder stores, the field of its config that holds
/// burn's gradient clipping, how the error for an unknown optimizer lists it, and its reader.
struct Registered {
    name: &'static str,
    clipping: &'static str,
    about: &'static str,
    read: fn(&Config) -> Result<Box<dyn Algorithm>, OptimError>,
}

impl Registered {
    /// The entry of algorithm `A`.
    const fn of<A: Algorithm + 'static>(
        name: &'static str,
        clipping: &'static str,
        about: &'static str,
    ) -> Self {
        Registered {
            name,
            clipping,
            about,
            read: read::<A>,
        }
    }
}

fn read<A: Algorithm + 'static>(config: &Config) -> Result<Box<dyn Algorithm>, OptimError> {
    Ok(Box::new(A::from_config(config)?))
}

/// An optimizer's stored burn config, read field by field; errors name the optimizer and the
/// whole config.
pub struct Config<'a> {
    spec: &'a OptimizerSpec,
}

impl<'a> Config<'a> {
    /// The config of `spec`.
    pub fn new(spec: &'a OptimizerSpec) -> Self {
        Config { spec }
    }

    /// The error for a config replay cannot read: `what` is wrong with it.
    pub fn bad(&self, what: &str) -> OptimError {
        OptimError::Config(format!(
            "optimizer {:?}: {what} in its stored configuration {}",
            self.spec.name, self.spec.config
        ))
    }

    /// Field `key`; None when absent or null.
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.spec.config.get(key).filter(|v| !v.is_null())
    }

    /// The number `object[key]` (`default` when absent or null), called `label` in errors.
    pub fn number_in(
        &self,
        object: &Value,
        key: &str,
        label: &str,
        default: f64,
    ) -> Result<f64, OptimError> {
        match object.get(key).filter(|v| !v.is_null()) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .ok_or_else(|| self.bad(&format!("{label} is not a number"))),
        }
    }

    /// The number field `key` rounded to f32 as burn holds it (`default` when absent or null).
    pub fn f32_or(&self, key: &str, default: f32) -> Result<f32, OptimError> {
        Ok(self.number_in(&self.spec.config, key, key, default as f64)? as f32)
    }

    /// The boolean field `key` (false when absent or null).
    pub fn flag(&self, key: &str) -> Result<bool, OptimError> {
        match self.get(key) {
            None => Ok(false),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.bad(&format!("{key} is not a boolean"))),
        }
    }
}

/// A recorded optimizer, ready to be replayed.
#[derive(Clone, Debug)]
pub struct Optimizer {
    /// The algorithm with its hyper-parameters (and weight decay).
    pub algorithm: Box<dyn Algorithm>,
    /// Gradient clipping, applied before the algorithm.
    pub clipping: Option<Clipping>,
}

impl Optimizer {
    /// Reads the optimizer the recorder stored (`sgd`, `adam` or `adamw` with Burn's config).
    pub fn from_spec(spec: &OptimizerSpec) -> Result<Self, OptimError> {
        let Some(entry) = ALGORITHMS.iter().find(|e| e.name == spec.name) else {
            let about: Vec<&str> = ALGORITHMS.iter().map(|e| e.about).collect();
            let (last, rest) = about.split_last().expect("ALGORITHMS is not empty");
            return Err(OptimError::Config(format!(
                "optimizer {:?} cannot be replayed: epk decomposes {} and {last}, each with \
                 gradient clipping",
                spec.name,
                rest.join(", ")
            )));
        };
        let config = Config::new(spec);
        let clipping = Clipping::from_config(&config, entry.clipping)?;
        Ok(Optimizer {
            algorithm: (entry.read)(&config)?,
            clipping,
        })
    }

    /// Plain gradient descent: Δw = −η G. Every step is then a sum over its own batch only.
    pub fn is_plain(&self) -> bool {
        self.algorithm.is_plain() && self.clipping.is_none()
    }

    /// Name and hyper-parameters in one line.
    pub fn describe(&self) -> String {
        let clipping = self.clipping.map(Clipping::describe).unwrap_or_default();
        self.algorithm.describe() + &clipping
    }
}

/// One step of the optimizer as a linear map of the data gradients (see the module docs).
#[derive(Clone, Debug, Default)]
pub struct Transform {
    /// η_s.
    pub lr: f64,
    /// Clipping factors c_s (None: all ones).
    pub clip: Option<Vec<f64>>,
    /// Preconditioner D_s (None: all ones).
    pub precondition: Option<Vec<f64>>,
    /// m_s = a m_{s-1} + b G'_s: the factor a.
    pub a: f64,
    /// The factor b of G'_s in m_s.
    pub b: f64,
    /// Δw uses α m_s + γ G'_s: the factor α.
    pub alpha: f64,
    /// The factor γ of G'_s in Δw.
    pub gamma: f64,
    /// λ_c (coupled decay inside G').
    pub coupled: f64,
    /// η_s λ_d, applied to w_s (masked by `mask` for cautious decay).
    pub decoupled: f64,
    /// The cautious-decay mask k_s (None: all ones).
    pub mask: Option<Vec<f64>>,
}

/// The optimizer's running state, advanced step by step from the recorded data gradients.
pub struct State {
    optimizer: Optimizer,
    layout: Vec<ParamLayout>,
    num_params: usize,
}

impl State {
    /// The state before the first step of `optimizer` over `num_params` parameters laid out as
    /// `layout`.
    pub fn new(optimizer: Optimizer, layout: &[ParamLayout], num_params: usize) -> Self {
        State {
            optimizer,
            layout: layout.to_vec(),
            num_params,
        }
    }

    /// Advances over one step with data gradient `grad` at weights `w` and learning rate `lr`:
    /// returns the step as a linear map and Δw as the optimizer computes it.
    pub fn advance(&mut self, w: &[f64], grad: &[f64], lr: f64) -> (Transform, Vec<f64>) {
        debug_assert_eq!(grad.len(), self.num_params);
        let clip = self
            .optimizer
            .clipping
            .map(|c| c.factors(grad, &self.layout));
        let clipped = match &clip {
            Some(c) => c.iter().zip(grad).map(|(c, g)| c * g).collect(),
            None => grad.to_vec(),
        };
        let mut t = Transform {
            lr,
            clip,
            ..Transform::default()
        };
        let delta = self.optimizer.algorithm.step(lr, w, clipped, &mut t);
        (t, delta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, config: Value) -> OptimizerSpec {
        OptimizerSpec {
            name: name.into(),
            config,
        }
    }

    #[test]
    fn reads_the_algorithm_and_its_clipping() {
        let o = Optimizer::from_spec(&spec(
            "sgd",
            serde_json::json!({"weight_decay":{"penalty":0.0005},"momentum":{"momentum":0.9,"dampening":0.1,"nesterov":true},"gradient_clipping":{"Norm":1.0}}),
        ))
        .unwrap();
        assert_eq!(o.clipping, Some(Clipping::Norm(1.0)));
        assert_eq!(
            o.describe(),
            "sgd momentum=0.9 dampening=0.1 nesterov=true weight_decay=0.0005 clip_norm=1"
        );
        assert!(!o.is_plain());
        let a = Optimizer::from_spec(&spec(
            "adamw",
            serde_json::json!({"grad_clipping":null,"beta_1":0.9,"beta_2":0.999,"epsilon":0.00001,"weight_decay":0.0001,"cautious_weight_decay":false,"amsgrad":false}),
        ))
        .unwrap();
        assert_eq!(a.clipping, None);
        assert_eq!(
            a.describe(),
            "adamw β1=0.9 β2=0.999 ε=0.00001 amsgrad=false cautious=false decoupled_decay=0.0001"
        );
        assert!(
            Optimizer::from_spec(&spec("sgd", Value::Null))
                .unwrap()
                .is_plain()
        );
        let lion = Optimizer::from_spec(&spec("lion", Value::Null)).unwrap_err();
        assert!(
            lion.to_string().contains(
                "epk decomposes sgd (with momentum, Nesterov, weight decay), adam and adamw, \
                 each with gradient clipping"
            ),
            "{lion}"
        );
        assert!(
            Optimizer::from_spec(&spec(
                "sgd",
                serde_json::json!({"momentum":{"momentum":"fast"}})
            ))
            .is_err()
        );
    }
}
