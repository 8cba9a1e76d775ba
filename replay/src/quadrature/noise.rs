//! How much rounding f carries as f64 evaluates it near w_s, measured.
//!
//! A step's certificate |f(w_{s+1}) − f(w_s) − Jbar·Δw| cannot go below the rounding of the
//! two forward passes, and that rounding scales with the network's intermediate values, not
//! with |f|: LayerNorm's x − mean, attention's softmax sums and a pooled head cancel terms of
//! order one into outputs near zero (a transformer's f ≈ 0.01 carries noise of 1e-15, 45ε|f|).
//! So replay measures it: f at t = 0, δ, 2δ, 3δ along the step, δ = 2⁻³⁰, where the weights
//! differ by far more than an ulp (the roundings decorrelate) and the curvature term δ²f″/2 is
//! below 1e-18 of f″. A second difference f(t) − 2f(t+δ) + f(t+2δ) cancels the linear term
//! exactly, so what is left is rounding alone.

use super::Segment;
use crate::network::Network;
use epk_model::EpkModel;

/// Spacing of the probes, as a fraction of the step.
const DELTA: f64 = 1.0 / (1u64 << 30) as f64;

/// For each input of `xs` (given f(x; w_s) as `f_start`, `[points, outputs]`), the largest
/// second difference of f over outputs: max_k |f_k(0) − 2f_k(δ) + f_k(2δ)|, and the same one δ
/// later. Its standard deviation is √6 σ for a rounding noise σ per evaluation.
pub fn noise<M: EpkModel>(
    net: &Network<M>,
    seg: &Segment<'_>,
    xs: &[f64],
    f_start: &[f64],
) -> Vec<f64> {
    let k = net.outputs();
    let probes: Vec<Vec<f64>> = (1..=3)
        .map(|i| net.forward(&seg.at(i as f64 * DELTA), xs))
        .collect();
    let f = |i: usize, j: usize| if i == 0 { f_start[j] } else { probes[i - 1][j] };
    let points = f_start.len() / k.max(1);
    (0..points)
        .map(|p| {
            (p * k..(p + 1) * k)
                .flat_map(|j| (0..2).map(move |i| (i, j)))
                .map(|(i, j)| (f(i, j) - 2.0 * f(i + 1, j) + f(i + 2, j)).abs())
                .fold(0.0, f64::max)
        })
        .collect()
}
