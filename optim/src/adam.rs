//! burn-optim's Adam, mirroring `burn-optim/src/optim/adam.rs`, with the adaptive moments
//! AdamW shares.

use super::decay::WeightDecay;
use super::{Algorithm, Config, Registered, Transform};
use crate::OptimError;

/// Registration: the recorder's name, the key of `AdamConfig::grad_clipping`, and how the error
/// for an unknown optimizer lists it.
pub(super) const ADAM: Registered = Registered::of::<Adam>("adam", "grad_clipping", "adam");

/// `AdaptiveMomentum` (Adam's and AdamW's): its hyper-parameters, as f32 like burn holds them,
/// and its state.
#[derive(Clone, Debug, PartialEq)]
pub struct AdaptiveMomentum {
    /// β1.
    pub beta_1: f32,
    /// β2.
    pub beta_2: f32,
    /// ε.
    pub epsilon: f32,
    /// AMSGrad: the running maximum of the second moment.
    pub amsgrad: bool,
    /// The moments; None before the first step.
    pub state: Option<AdaptiveMomentumState>,
}

/// `AdaptiveMomentumState`.
#[derive(Clone, Debug, PartialEq)]
pub struct AdaptiveMomentumState {
    /// Steps taken.
    pub time: usize,
    /// First moment m.
    pub moment_1: Vec<f64>,
    /// Second moment v.
    pub moment_2: Vec<f64>,
    /// Running maximum of v (AMSGrad only).
    pub max_moment_2: Option<Vec<f64>>,
}

impl AdaptiveMomentumState {
    /// The second moment the update divides by: the running maximum under AMSGrad.
    pub fn v_to_use(&self) -> &[f64] {
        self.max_moment_2.as_deref().unwrap_or(&self.moment_2)
    }
}

impl AdaptiveMomentum {
    /// Reads `beta_1`, `beta_2`, `epsilon` and `amsgrad` with burn's defaults.
    pub fn from_config(config: &Config) -> Result<Self, OptimError> {
        Ok(AdaptiveMomentum {
            beta_1: config.f32_or("beta_1", 0.9)?,
            beta_2: config.f32_or("beta_2", 0.999)?,
            epsilon: config.f32_or("epsilon", 1e-5)?,
            amsgrad: config.flag("amsgrad")?,
            state: None,
        })
    }

    /// `name β1=… β2=… ε=… amsgrad=…`.
    pub fn describe(&self, name: &str) -> String {
        let AdaptiveMomentum {
            beta_1,
            beta_2,
            epsilon,
            amsgrad,
            ..
        } = self;
        format!("{name} β1={beta_1} β2={beta_2} ε={epsilon} amsgrad={amsgrad}")
    }

    /// The moment updates of `AdaptiveMomentum::transform` (and `AdaptiveMomentumW::transform`,
    /// which writes them the same way): m = β1 m + (1 − β1) g, v = β2 v + (1 − β2) g², both
    /// starting from 0, and the running maximum of v under AMSGrad. Sets the step's a and b.
    pub fn update(&mut self, grad: &[f64], t: &mut Transform) -> &AdaptiveMomentumState {
        let (b1, b2) = (self.beta_1 as f64, self.beta_2 as f64);
        // burn computes the factors 1 − β in f32.
        let (f1, f2) = ((1.0f32 - self.beta_1) as f64, (1.0f32 - self.beta_2) as f64);
        (t.a, t.b) = (if self.state.is_none() { 0.0 } else { b1 }, f1);
        let state = match self.state.take() {
            Some(mut s) => {
                for (j, &g) in grad.iter().enumerate() {
                    s.moment_1[j] = s.moment_1[j] * b1 + g * f1;
                    s.moment_2[j] = s.moment_2[j] * b2 + g * g * f2;
                }
                if let Some(max) = &mut s.max_moment_2 {
                    for (max, &v) in max.iter_mut().zip(&s.moment_2) {
                        *max = max.max(v);
                    }
                }
                s.time += 1;
                s
            }
            None => {
                let moment_2: Vec<f64> = grad.iter().map(|g| g * g * f2).collect();
                AdaptiveMomentumState {
                    time: 1,
                    moment_1: grad.iter().map(|g| g * f1).collect(),
                    max_moment_2: self.amsgrad.then(|| moment_2.clone()),
                    moment_2,
                }
            }
        };
        self.state.insert(state)
    }
}

/// `Adam`: adaptive moments after coupled weight decay.
#[derive(Clone, Debug, PartialEq)]
pub struct Adam {
    momentum: AdaptiveMomentum,
    weight_decay: WeightDecay,
}

impl Algorithm for Adam {
    fn from_config(config: &Config) -> Result<Self, OptimError> {
        Ok(Adam {
            momentum: AdaptiveMomentum::from_config(config)?,
            weight_decay: WeightDecay::from_config(config)?,
        })
    }

    fn describe(&self) -> String {
        self.momentum.describe("adam") + &self.weight_decay.describe()
    }

    /// Mirrors `Adam::step` and the update of `AdaptiveMomentum::transform`:
    /// Δw = −η m √(1 − β2ᵗ)/(1 − β1ᵗ) / (√v + ε √(1 − β2ᵗ)), the scalars in f32 as burn has them.
    fn step(&mut self, lr: f64, w: &[f64], mut grad: Vec<f64>, t: &mut Transform) -> Vec<f64> {
        self.weight_decay.transform(&mut grad, w, t);
        let (beta_1, beta_2, epsilon) = (
            self.momentum.beta_1,
            self.momentum.beta_2,
            self.momentum.epsilon,
        );
        let state = self.momentum.update(&grad, t);
        let time = state.time as i32;
        let bc2_sqrt = (1.0f32 - beta_2.powi(time)).sqrt();
        let combined = (bc2_sqrt / (1.0f32 - beta_1.powi(time))) as f64;
        let eps = (epsilon * bc2_sqrt) as f64;
        let v = state.v_to_use();
        t.precondition = Some(v.iter().map(|v| combined / (v.sqrt() + eps)).collect());
        (t.alpha, t.gamma) = (1.0, 0.0);
        state
            .moment_1
            .iter()
            .zip(v)
            .map(|(m, v)| -((m * combined / (v.sqrt() + eps)) * lr))
            .collect()
    }
}
