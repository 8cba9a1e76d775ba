//! burn-optim's gradient clipping, mirroring `burn-optim/src/grad_clipping/base.rs`, written as
//! per-element factors c with c ⊙ g the clipped gradient.

use super::Config;
use crate::OptimError;
use epk_store::ParamLayout;
use serde_json::Value;

/// Gradient clipping as burn-optim applies it (`GradientClipping`): per parameter tensor, before
/// the optimizer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Clipping {
    /// Each element clamped to [−v, v].
    Value(f32),
    /// Each tensor scaled by min(1, v / (‖g‖ + tiny)).
    Norm(f32),
}

impl Clipping {
    /// Reads `GradientClippingConfig` (`{"Value": v}` or `{"Norm": v}`) from the field `key` of
    /// the optimizer's config; absent or null: no clipping.
    pub fn from_config(config: &Config, key: &str) -> Result<Option<Self>, OptimError> {
        let Some(v) = config.get(key) else {
            return Ok(None);
        };
        let get = |k: &str| v.get(k).and_then(Value::as_f64).map(|x| x as f32);
        match (get("Value"), get("Norm")) {
            (Some(x), None) => Ok(Some(Clipping::Value(x))),
            (None, Some(x)) => Ok(Some(Clipping::Norm(x))),
            _ => Err(config.bad("unknown gradient clipping")),
        }
    }

    /// c such that c ⊙ g is burn's clipped gradient, per parameter tensor of `layout`; mirrors
    /// `GradientClipping::clip_gradient`.
    pub fn factors(self, grad: &[f64], layout: &[ParamLayout]) -> Vec<f64> {
        match self {
            Clipping::Value(v) => clip_by_value(grad, v),
            Clipping::Norm(v) => clip_by_norm(grad, v, layout),
        }
    }

    /// ` clip_value=v` or ` clip_norm=v`.
    pub fn describe(self) -> String {
        match self {
            Clipping::Value(v) => format!(" clip_value={v}"),
            Clipping::Norm(v) => format!(" clip_norm={v}"),
        }
    }
}

/// Mirrors `GradientClipping::clip_by_value`: elements above v or below −v are set to ±v.
fn clip_by_value(grad: &[f64], v: f32) -> Vec<f64> {
    let v = v as f64;
    grad.iter()
        .map(|&g| {
            if g > v || g < -v {
                v.copysign(g) / g
            } else {
                1.0
            }
        })
        .collect()
}

/// Mirrors `GradientClipping::clip_by_norm`, one parameter tensor at a time: each scaled by
/// min(1, v / (‖g‖ + min_positive)).
fn clip_by_norm(grad: &[f64], v: f32, layout: &[ParamLayout]) -> Vec<f64> {
    let mut c = vec![1.0; grad.len()];
    for p in layout {
        let g = &grad[p.offset..p.offset + p.len];
        let norm = g.iter().map(|x| x * x).sum::<f64>().sqrt();
        let coef = (v as f64 / (norm + f64::MIN_POSITIVE)).min(1.0);
        c[p.offset..p.offset + p.len].fill(coef);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let c = Clipping::Value(0.5).factors(&g, &layout);
        let clipped: Vec<f64> = g.iter().zip(&c).map(|(g, c)| g * c).collect();
        assert_eq!(clipped, vec![0.5, -0.25, 0.3, 0.4]);
        let c = Clipping::Norm(0.25).factors(&g, &layout);
        // ‖(0.3, 0.4)‖ = 0.5: scaled by 0.5; the first tensor by 0.25/‖(3, −0.25)‖.
        assert!((c[2] - 0.5).abs() < 1e-15);
        assert!((c[0] - 0.25 / (9.0f64 + 0.0625).sqrt()).abs() < 1e-15);
    }
}
