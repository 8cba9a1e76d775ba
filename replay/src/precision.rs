//! Is the rebuilt network a deterministic, float64-smooth function of its weights? Replay's
//! 1e-12 rests on both, and a Burn module can break either without an error: a Dropout layer
//! left in training mode draws a new mask at every pass, and burn-nn 0.22's `RmsNorm` computes
//! its root mean square in f32 whatever the input type, so an f64 network that uses it moves in
//! f32 steps. Both are refused before the first step, with the cause named, instead of failing
//! `verify` at its evaluation cap many minutes later.

use crate::ReplayError;
use crate::network::Network;
use epk_model::EpkModel;

/// Steps of the central differences: the truncation error falls as h², the rounding error of
/// an f64 network grows as ε/h, and an f32 rounding inside grows as 6e-8/h.
const STEPS: [f64; 3] = [1e-3, 1e-4, 1e-5];
/// Largest relative disagreement between a central difference and the Jacobian accepted from
/// an f64 network (the best step leaves about 1e-9); f32 arithmetic inside leaves 1e-4 or more.
const SMOOTH: f64 = 1e-6;

/// Checks, at weights `w` and one input `x`, that two forward passes agree bit for bit and that
/// central differences along a fixed direction agree with J·d to f64 precision.
pub fn check<M: EpkModel>(net: &Network<M>, w: &[f64], x: &[f64]) -> Result<(), ReplayError> {
    let f = net.forward(w, x);
    let again = net.forward(w, x);
    if f.iter()
        .zip(&again)
        .any(|(a, b)| a.to_bits() != b.to_bits() && !(a.is_nan() && b.is_nan()))
    {
        return Err(ReplayError::Unsupported(
            "the rebuilt network's forward pass is random: two passes on the same input and \
             weights differ (a Dropout layer in training mode?). Set its probability to 0"
                .into(),
        ));
    }
    // A fixed direction with weight-sized entries: no random draw, so replay is reproducible.
    let d: Vec<f64> = w
        .iter()
        .enumerate()
        .map(|(j, v)| (1.0 + v.abs()) * (0.7 * j as f64 + 0.3).sin())
        .collect();
    let j = net.implementation().jacobians(net, w, x);
    let jd: Vec<f64> = j
        .outer_iter()
        .map(|row| row.dot(&ndarray::aview1(&d)))
        .collect();
    let scale = 1.0 + jd.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let along = |t: f64| -> Vec<f64> {
        let moved: Vec<f64> = w.iter().zip(&d).map(|(w, d)| w + t * d).collect();
        net.forward(&moved, x)
    };
    let best = STEPS
        .iter()
        .map(|&h| {
            let (up, down) = (along(h), along(-h));
            up.iter()
                .zip(&down)
                .zip(&jd)
                .map(|((u, d), g)| ((u - d) / (2.0 * h) - g).abs() / scale)
                .fold(0.0f64, f64::max)
        })
        .fold(f64::INFINITY, f64::min);
    if best.is_nan() || best > SMOOTH {
        return Err(ReplayError::Unsupported(format!(
            "the rebuilt network is not a float64-smooth function of its weights: central \
             differences disagree with its Jacobian by {best:.1e} (relative) at every step \
             from 1e-3 to 1e-5, where f64 arithmetic leaves about 1e-9. A layer computes in \
             f32 inside (burn-nn 0.22's RmsNorm does; LayerNorm does not), or the forward pass \
             reads a value back and branches on it"
        )));
    }
    Ok(())
}
