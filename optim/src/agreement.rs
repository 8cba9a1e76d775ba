//! Does a recorded step agree with the declared optimizer, to what the training arithmetic can
//! leave?
//!
//! The step taken, Δw_s = w_{s+1} − w_s, and the step the declared optimizer makes of the same
//! data gradients, Δŵ_s, differ by the decomposition residual ρ_s = Δw_s − Δŵ_s. Replay moves
//! every prediction by R(x) = Σ_s Jbar_s(x)·ρ_s, a term no training point explains; it must be
//! rounding, never a wrong optimizer or loss. Training in a float type of unit roundoff u
//! leaves, per weight,
//!
//! ```text
//! |ρ_{s,j}| ≤ β_{s,j} = u (|w_{s,j}| + |w_{s+1,j}|) + κ u ‖Δŵ_s‖∞
//! ```
//!
//! the first term the rounding of w_s + Δw to the stored type (and of the weights the gradient
//! was taken at), the second the update's own arithmetic (products and sums over the batch in
//! the training type, Adam's square roots), allowed κ = 2¹⁴ units of the step's largest entry.
//! A declared SGD whose run took Adam steps, or a loss whose gradients are not the recorded
//! ones, leaves ρ of the size of Δw itself: thousands of times β.

use epk_store::TrainDType;

/// κ: how many units of roundoff, relative to the step's largest entry, the update's own
/// arithmetic may leave in a weight.
pub const KAPPA: f64 = 16384.0;

/// The unit roundoff u of the training float type: 2⁻²⁴ for f32, 2⁻⁵³ for f64.
pub fn unit_roundoff(dtype: TrainDType) -> f64 {
    match dtype {
        TrainDType::F32 => f64::from(f32::EPSILON) / 2.0,
        TrainDType::F64 => f64::EPSILON / 2.0,
    }
}

/// One step's decomposition residual ρ = Δw − Δŵ, measured against the rounding bound β.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Agreement {
    /// max_j |ρ_j|.
    pub max_abs: f64,
    /// max_j |ρ_j| / β_j: at most 1 when the step is the declared one up to the training
    /// arithmetic's rounding.
    pub rounding_units: f64,
    /// The weight j of the worst ratio.
    pub worst: usize,
    /// ‖ρ‖₂ / ‖Δw‖₂: the share of the step the declared optimizer does not explain.
    pub relative: f64,
}

impl Agreement {
    /// ρ = `taken` − `replayed` for the step from `start` to `end` (`taken` = end − start),
    /// against the rounding bound of unit roundoff `unit`.
    pub fn new(start: &[f64], end: &[f64], taken: &[f64], replayed: &[f64], unit: f64) -> Self {
        let step_max = replayed.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let floor = KAPPA * unit * step_max;
        let mut out = Agreement::default();
        let (mut rho2, mut taken2) = (0.0f64, 0.0f64);
        for j in 0..taken.len() {
            let rho = taken[j] - replayed[j];
            let beta = unit * (start[j].abs() + end[j].abs()) + floor;
            let units = if rho == 0.0 { 0.0 } else { rho.abs() / beta };
            // A NaN residual is the worst of all.
            if units.is_nan() || units > out.rounding_units {
                (out.rounding_units, out.worst) = (units, j);
            }
            out.max_abs = out.max_abs.max(rho.abs());
            rho2 += rho * rho;
            taken2 += taken[j] * taken[j];
        }
        if out.rounding_units.is_nan() {
            out.rounding_units = f64::INFINITY;
        }
        out.relative = if rho2 == 0.0 {
            0.0
        } else {
            (rho2 / taken2).sqrt()
        };
        out
    }

    /// Whether ρ is within what the training arithmetic can leave (β).
    pub fn within_rounding(&self) -> bool {
        self.rounding_units <= 1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f32_rounding_of_a_step_is_within_the_bound() {
        // w + Δw rounded to f32: exactly the first term of β.
        let start = [1.0f64, -0.5, 3.0, 0.0];
        let replayed = [1e-3, -2e-4, 7e-5, 1e-3];
        let end: Vec<f64> = start
            .iter()
            .zip(&replayed)
            .map(|(w, d)| f64::from((w + d) as f32))
            .collect();
        let taken: Vec<f64> = end.iter().zip(&start).map(|(b, a)| b - a).collect();
        let a = Agreement::new(
            &start,
            &end,
            &taken,
            &replayed,
            unit_roundoff(TrainDType::F32),
        );
        assert!(a.max_abs > 0.0, "f32 rounding leaves a residual");
        assert!(a.within_rounding(), "{a:?}");
        // The same residual is far outside f64's bound.
        let b = Agreement::new(
            &start,
            &end,
            &taken,
            &replayed,
            unit_roundoff(TrainDType::F64),
        );
        assert!(!b.within_rounding(), "{b:?}");
    }

    #[test]
    fn a_different_optimizer_is_far_outside() {
        // Adam's first step is about −η sign(G); plain SGD's is −η G.
        let g = [0.3, -0.02, 0.001, 0.5];
        let lr = 1e-2;
        let start = [0.1, 0.2, -0.3, 0.05];
        let adam: Vec<f64> = g.iter().map(|v: &f64| -lr * v.signum()).collect();
        let sgd: Vec<f64> = g.iter().map(|v| -lr * v).collect();
        let end: Vec<f64> = start.iter().zip(&adam).map(|(w, d)| w + d).collect();
        let a = Agreement::new(&start, &end, &adam, &sgd, unit_roundoff(TrainDType::F32));
        assert!(a.rounding_units > 1e3, "{a:?}");
        assert!(a.relative > 0.5, "{a:?}");
        assert_eq!(a.worst, 2, "the smallest gradient moves most under Adam");
    }

    #[test]
    fn nan_is_never_within() {
        let a = Agreement::new(&[0.0], &[f64::NAN], &[f64::NAN], &[0.0], 1e-16);
        assert!(!a.within_rounding());
    }
}
