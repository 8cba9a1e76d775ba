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

use crate::ReplayError;
use epk_store::{OptimizerSpec, ParamLayout};
use serde_json::Value;

/// Gradient clipping as burn-optim applies it: per parameter tensor, before the optimizer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Clipping {
    /// Each element clamped to [−v, v].
    Value(f32),
    /// Each tensor scaled by min(1, v / (‖g‖ + tiny)).
    Norm(f32),
}

/// The algorithm and its hyper-parameters, as burn-optim holds them.
#[derive(Clone, Debug, PartialEq)]
pub enum Algorithm {
    Sgd {
        /// (momentum as f32, dampening, nesterov).
        momentum: Option<(f32, f64, bool)>,
    },
    Adam {
        beta_1: f32,
        beta_2: f32,
        epsilon: f32,
        amsgrad: bool,
    },
    AdamW {
        beta_1: f32,
        beta_2: f32,
        epsilon: f32,
        amsgrad: bool,
        cautious: bool,
    },
}

/// A recorded optimizer, ready to be replayed.
#[derive(Clone, Debug, PartialEq)]
pub struct Optimizer {
    pub algorithm: Algorithm,
    /// Coupled (L2) weight decay: added to the gradient before the algorithm.
    pub coupled_decay: f32,
    /// Decoupled weight decay (AdamW).
    pub decoupled_decay: f32,
    pub clipping: Option<Clipping>,
}

impl Optimizer {
    /// Reads the optimizer the recorder stored (`sgd`, `adam` or `adamw` with Burn's config).
    pub fn from_spec(spec: &OptimizerSpec) -> Result<Self, ReplayError> {
        let c = &spec.config;
        let bad = |what: &str| {
            ReplayError::Input(format!(
                "optimizer {:?}: {what} in its stored configuration {c}",
                spec.name
            ))
        };
        let f32_field = |name: &str, default: f32| -> Result<f32, ReplayError> {
            match c.get(name) {
                None | Some(Value::Null) => Ok(default),
                Some(v) => v
                    .as_f64()
                    .map(|x| x as f32)
                    .ok_or_else(|| bad(&format!("{name} is not a number"))),
            }
        };
        let bool_field = |name: &str| -> Result<bool, ReplayError> {
            match c.get(name) {
                None | Some(Value::Null) => Ok(false),
                Some(v) => v
                    .as_bool()
                    .ok_or_else(|| bad(&format!("{name} is not a boolean"))),
            }
        };
        let clip_key = if spec.name == "sgd" {
            "gradient_clipping"
        } else {
            "grad_clipping"
        };
        let clipping = match c.get(clip_key) {
            None | Some(Value::Null) => None,
            Some(v) => {
                let get = |k: &str| v.get(k).and_then(Value::as_f64).map(|x| x as f32);
                match (get("Value"), get("Norm")) {
                    (Some(x), None) => Some(Clipping::Value(x)),
                    (None, Some(x)) => Some(Clipping::Norm(x)),
                    _ => return Err(bad("unknown gradient clipping")),
                }
            }
        };
        let adam = || -> Result<(f32, f32, f32, bool), ReplayError> {
            Ok((
                f32_field("beta_1", 0.9)?,
                f32_field("beta_2", 0.999)?,
                f32_field("epsilon", 1e-5)?,
                bool_field("amsgrad")?,
            ))
        };
        let coupled = |c: &Value| -> Result<f32, ReplayError> {
            match c.get("weight_decay") {
                None | Some(Value::Null) => Ok(0.0),
                Some(v) => v
                    .get("penalty")
                    .and_then(Value::as_f64)
                    .map(|x| x as f32)
                    .ok_or_else(|| bad("weight_decay has no penalty")),
            }
        };
        match spec.name.as_str() {
            "sgd" => {
                let momentum = match c.get("momentum") {
                    None | Some(Value::Null) => None,
                    Some(m) => {
                        let num = |k: &str, d: f64| match m.get(k) {
                            None | Some(Value::Null) => Ok(d),
                            Some(v) => v
                                .as_f64()
                                .ok_or_else(|| bad(&format!("momentum.{k} is not a number"))),
                        };
                        let nesterov = m.get("nesterov").and_then(Value::as_bool).unwrap_or(false);
                        Some((
                            num("momentum", 0.9)? as f32,
                            num("dampening", 0.1)?,
                            nesterov,
                        ))
                    }
                };
                Ok(Optimizer {
                    algorithm: Algorithm::Sgd { momentum },
                    coupled_decay: coupled(c)?,
                    decoupled_decay: 0.0,
                    clipping,
                })
            }
            "adam" => {
                let (beta_1, beta_2, epsilon, amsgrad) = adam()?;
                Ok(Optimizer {
                    algorithm: Algorithm::Adam {
                        beta_1,
                        beta_2,
                        epsilon,
                        amsgrad,
                    },
                    coupled_decay: coupled(c)?,
                    decoupled_decay: 0.0,
                    clipping,
                })
            }
            "adamw" => {
                let (beta_1, beta_2, epsilon, amsgrad) = adam()?;
                Ok(Optimizer {
                    algorithm: Algorithm::AdamW {
                        beta_1,
                        beta_2,
                        epsilon,
                        amsgrad,
                        cautious: bool_field("cautious_weight_decay")?,
                    },
                    coupled_decay: 0.0,
                    decoupled_decay: f32_field("weight_decay", 1e-4)?,
                    clipping,
                })
            }
            other => Err(ReplayError::Input(format!(
                "optimizer {other:?} cannot be replayed: epk decomposes sgd (with momentum, \
                 Nesterov, weight decay), adam and adamw, each with gradient clipping"
            ))),
        }
    }

    /// Plain gradient descent: Δw = −η G. Every step is then a sum over its own batch only.
    pub fn is_plain(&self) -> bool {
        matches!(self.algorithm, Algorithm::Sgd { momentum: None })
            && self.coupled_decay == 0.0
            && self.clipping.is_none()
    }

    /// Name and hyper-parameters in one line.
    pub fn describe(&self) -> String {
        let mut s = match &self.algorithm {
            Algorithm::Sgd { momentum: None } => "sgd".to_string(),
            Algorithm::Sgd {
                momentum: Some((m, d, n)),
            } => format!("sgd momentum={m} dampening={d} nesterov={n}"),
            Algorithm::Adam {
                beta_1,
                beta_2,
                epsilon,
                amsgrad,
            } => format!("adam β1={beta_1} β2={beta_2} ε={epsilon} amsgrad={amsgrad}"),
            Algorithm::AdamW {
                beta_1,
                beta_2,
                epsilon,
                amsgrad,
                cautious,
            } => format!(
                "adamw β1={beta_1} β2={beta_2} ε={epsilon} amsgrad={amsgrad} cautious={cautious}"
            ),
        };
        if self.coupled_decay != 0.0 {
            s += &format!(" weight_decay={}", self.coupled_decay);
        }
        if self.decoupled_decay != 0.0 {
            s += &format!(" decoupled_decay={}", self.decoupled_decay);
        }
        match self.clipping {
            Some(Clipping::Value(v)) => s += &format!(" clip_value={v}"),
            Some(Clipping::Norm(v)) => s += &format!(" clip_norm={v}"),
            None => {}
        }
        s
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
    /// m_s = a m_{s-1} + b G'_s.
    pub a: f64,
    pub b: f64,
    /// Δw uses α m_s + γ G'_s.
    pub alpha: f64,
    pub gamma: f64,
    /// λ_c (coupled decay inside G').
    pub coupled: f64,
    /// η_s λ_d, applied to w_s (masked by `mask` for cautious decay).
    pub decoupled: f64,
    pub mask: Option<Vec<f64>>,
}

/// The optimizer's running state, advanced step by step from the recorded data gradients.
pub struct State {
    optimizer: Optimizer,
    layout: Vec<ParamLayout>,
    step: usize,
    /// Momentum velocity or Adam's first moment.
    m: Vec<f64>,
    /// Adam's second moment, and its running maximum under AMSGrad.
    v: Vec<f64>,
    vmax: Vec<f64>,
}

impl State {
    pub fn new(optimizer: Optimizer, layout: &[ParamLayout], num_params: usize) -> Self {
        State {
            optimizer,
            layout: layout.to_vec(),
            step: 0,
            m: vec![0.0; num_params],
            v: vec![0.0; num_params],
            vmax: vec![0.0; num_params],
        }
    }

    /// Advances over one step with data gradient `grad` at weights `w` and learning rate `lr`:
    /// returns the step as a linear map and Δw as the optimizer computes it.
    pub fn advance(&mut self, w: &[f64], grad: &[f64], lr: f64) -> (Transform, Vec<f64>) {
        let p = grad.len();
        let first = self.step == 0;
        self.step += 1;
        let clip = self
            .optimizer
            .clipping
            .map(|c| clip_factors(c, grad, &self.layout));
        // G' = c ⊙ G + λ_c w
        let lc = self.optimizer.coupled_decay as f64;
        let gp: Vec<f64> = (0..p)
            .map(|j| {
                let g = clip.as_ref().map_or(grad[j], |c| c[j] * grad[j]);
                if lc != 0.0 { w[j] * lc + g } else { g }
            })
            .collect();
        let mut t = Transform {
            lr,
            clip,
            coupled: lc,
            ..Transform::default()
        };
        let mut delta = vec![0.0; p];
        match self.optimizer.algorithm.clone() {
            Algorithm::Sgd { momentum: None } => {
                t.gamma = 1.0;
                for j in 0..p {
                    delta[j] = -(gp[j] * lr);
                }
            }
            Algorithm::Sgd {
                momentum: Some((mu, damp, nesterov)),
            } => {
                let mu = mu as f64;
                // burn: velocity = g on the first step, else g·(1 − dampening) + v·μ.
                (t.a, t.b) = if first { (0.0, 1.0) } else { (mu, 1.0 - damp) };
                (t.alpha, t.gamma) = if nesterov { (mu, 1.0) } else { (1.0, 0.0) };
                for j in 0..p {
                    self.m[j] = if first {
                        gp[j]
                    } else {
                        gp[j] * (1.0 - damp) + self.m[j] * mu
                    };
                    let u = if nesterov {
                        self.m[j] * mu + gp[j]
                    } else {
                        self.m[j]
                    };
                    delta[j] = -(u * lr);
                }
            }
            Algorithm::Adam {
                beta_1,
                beta_2,
                epsilon,
                amsgrad,
            } => {
                self.moments(&gp, beta_1, beta_2, first, &mut t);
                let time = self.step as i32;
                // burn computes these scalars in f32.
                let bc2_sqrt = (1.0f32 - beta_2.powi(time)).sqrt();
                let combined = (bc2_sqrt / (1.0f32 - beta_1.powi(time))) as f64;
                let eps = (epsilon * bc2_sqrt) as f64;
                let v = if amsgrad { &self.vmax } else { &self.v };
                let d: Vec<f64> = v.iter().map(|v| combined / (v.sqrt() + eps)).collect();
                for j in 0..p {
                    delta[j] = -((self.m[j] * combined / (v[j].sqrt() + eps)) * lr);
                }
                t.precondition = Some(d);
                (t.alpha, t.gamma) = (1.0, 0.0);
            }
            Algorithm::AdamW {
                beta_1,
                beta_2,
                epsilon,
                amsgrad,
                cautious,
            } => {
                self.moments(&gp, beta_1, beta_2, first, &mut t);
                let time = self.step as i32;
                let c1 = (1f32 - beta_1.powi(time)) as f64;
                let c2 = (1f32 - beta_2.powi(time)) as f64;
                let eps = epsilon as f64;
                let v = if amsgrad { &self.vmax } else { &self.v };
                let d: Vec<f64> = v
                    .iter()
                    .map(|v| 1.0 / c1 / ((v / c2).sqrt() + eps))
                    .collect();
                let rate = lr * self.optimizer.decoupled_decay as f64;
                let mask: Option<Vec<f64>> = cautious.then(|| {
                    (0..p)
                        .map(|j| f64::from(u8::from((w[j] >= 0.0) == (self.m[j] >= 0.0))))
                        .collect()
                });
                for j in 0..p {
                    let raw = (self.m[j] / c1) / ((v[j] / c2).sqrt() + eps);
                    let k = mask.as_ref().map_or(1.0, |m| m[j]);
                    delta[j] = -(w[j] * rate * k) - raw * lr;
                }
                t.precondition = Some(d);
                (t.alpha, t.gamma) = (1.0, 0.0);
                t.decoupled = rate;
                t.mask = mask;
            }
        }
        (t, delta)
    }

    /// Adam's moment updates, as burn writes them.
    fn moments(&mut self, gp: &[f64], beta_1: f32, beta_2: f32, first: bool, t: &mut Transform) {
        let (b1, b2) = (beta_1 as f64, beta_2 as f64);
        let (f1, f2) = ((1.0f32 - beta_1) as f64, (1.0f32 - beta_2) as f64);
        (t.a, t.b) = (if first { 0.0 } else { b1 }, f1);
        for (j, &g) in gp.iter().enumerate() {
            if first {
                self.m[j] = g * f1;
                self.v[j] = g * g * f2;
                self.vmax[j] = self.v[j];
            } else {
                self.m[j] = self.m[j] * b1 + g * f1;
                self.v[j] = self.v[j] * b2 + g * g * f2;
                self.vmax[j] = self.vmax[j].max(self.v[j]);
            }
        }
    }
}

/// c such that c ⊙ g is burn's clipped gradient, per parameter tensor.
fn clip_factors(clip: Clipping, grad: &[f64], layout: &[ParamLayout]) -> Vec<f64> {
    let mut c = vec![1.0; grad.len()];
    match clip {
        Clipping::Value(v) => {
            let v = v as f64;
            for (c, &g) in c.iter_mut().zip(grad) {
                if g > v || g < -v {
                    *c = v.copysign(g) / g;
                }
            }
        }
        Clipping::Norm(v) => {
            for p in layout {
                let g = &grad[p.offset..p.offset + p.len];
                let norm = g.iter().map(|x| x * x).sum::<f64>().sqrt();
                let coef = (v as f64 / (norm + f64::MIN_POSITIVE)).min(1.0);
                c[p.offset..p.offset + p.len].fill(coef);
            }
        }
    }
    c
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
    fn parses_burn_configs_with_f32_hyper_parameters() {
        let o = Optimizer::from_spec(&spec(
            "sgd",
            serde_json::json!({"weight_decay":{"penalty":0.0005},"momentum":{"momentum":0.9,"dampening":0.1,"nesterov":true},"gradient_clipping":{"Norm":1.0}}),
        ))
        .unwrap();
        assert_eq!(
            o.algorithm,
            Algorithm::Sgd {
                momentum: Some((0.9f32, 0.1, true))
            }
        );
        assert_eq!(o.coupled_decay, 0.0005f32);
        assert_eq!(o.clipping, Some(Clipping::Norm(1.0)));
        // The f32 rounding is kept: 0.9f32 widened is not 0.9.
        assert_ne!(0.9f32 as f64, 0.9);
        let a = Optimizer::from_spec(&spec(
            "adamw",
            serde_json::json!({"grad_clipping":null,"beta_1":0.9,"beta_2":0.999,"epsilon":0.00001,"weight_decay":0.0001,"cautious_weight_decay":false,"amsgrad":false}),
        ))
        .unwrap();
        assert_eq!(a.decoupled_decay, 1e-4f32);
        assert!(Optimizer::from_spec(&spec("lion", Value::Null)).is_err());
        assert!(
            Optimizer::from_spec(&spec(
                "sgd",
                serde_json::json!({"momentum":{"momentum":"fast"}})
            ))
            .is_err()
        );
    }

    #[test]
    fn clip_factors_reproduce_clamping_and_norm_scaling() {
        let layout = vec![
            ParamLayout {
                path: "a".into(),
                shape: vec![2],
                offset: 0,
                len: 2,
            },
            ParamLayout {
                path: "b".into(),
                shape: vec![2],
                offset: 2,
                len: 2,
            },
        ];
        let g = [3.0, -0.25, 0.3, 0.4];
        let c = clip_factors(Clipping::Value(0.5), &g, &layout);
        let clipped: Vec<f64> = g.iter().zip(&c).map(|(g, c)| g * c).collect();
        assert_eq!(clipped, vec![0.5, -0.25, 0.3, 0.4]);
        let c = clip_factors(Clipping::Norm(0.25), &g, &layout);
        // ‖(0.3, 0.4)‖ = 0.5: scaled by 0.5; the first tensor by 0.25/‖(3, −0.25)‖.
        assert!((c[2] - 0.5).abs() < 1e-15);
        assert!((c[0] - 0.25 / (9.0f64 + 0.0625).sqrt()).abs() < 1e-15);
    }
}
