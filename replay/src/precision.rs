//! Is the rebuilt network a deterministic, float64-smooth function of its weights? Replay's
//! 1e-12 rests on both, and a Burn module can break either without an error: a Dropout layer
//! left in training mode draws a new mask at every pass; burn-nn 0.22's `RmsNorm` computes
//! its root mean square in f32 whatever the input type, so an f64 network that uses it moves in
//! f32 steps; and burn-autodiff 0.22.1's `div_scalar` backward multiplies by `1 / (divisor as
//! f32)`, so the gradient of `x / √d_k` in `MultiHeadAttention` is off by up to 3e-8 relative
//! unless √d_k is a power of two. All three are refused before the first step, with the cause
//! named, instead of failing `verify` at its evaluation cap many minutes later.

use crate::ReplayError;
use crate::network::Network;
use epk_model::EpkModel;

/// Steps of the central differences, each extrapolated with half of it (Richardson): the
/// truncation error falls as h⁴, the rounding error of an f64 network grows as ε/h, and an f32
/// rounding inside grows as 6e-8/h.
const STEPS: [f64; 4] = [1e-2, 1e-3, 1e-4, 1e-5];
/// Largest relative disagreement between an extrapolated central difference and the Jacobian
/// accepted from an f64 network (the best step leaves 1e-11 or less); f32 arithmetic inside
/// the forward pass leaves 1e-6 or more, an f32 constant in a backward pass about 1e-8.
const SMOOTH: f64 = 5e-10;

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
    // A difference whose two ends sit on other pieces than w (a switching value changed sign)
    // straddles a kink and says nothing about smoothness: such steps are skipped. A network
    // with thousands of ReLUs often has a kink within 1e-5 of its weights along d.
    let (_, at_w) = net.forward_switches(w, x);
    let along = |t: f64| -> (Vec<f64>, Vec<f64>) {
        let moved: Vec<f64> = w.iter().zip(&d).map(|(w, d)| w + t * d).collect();
        net.forward_switches(&moved, x)
    };
    let difference = |h: f64| -> Option<Vec<f64>> {
        let ((up, s_up), (down, s_down)) = (along(h), along(-h));
        if crosses(&at_w, &s_up) || crosses(&at_w, &s_down) {
            return None;
        }
        Some(
            up.iter()
                .zip(&down)
                .map(|(u, d)| (u - d) / (2.0 * h))
                .collect(),
        )
    };
    let best = STEPS
        .iter()
        .filter_map(|&h| {
            let (coarse, fine) = (difference(h)?, difference(h / 2.0)?);
            Some(
                coarse
                    .iter()
                    .zip(&fine)
                    .zip(&jd)
                    .map(|((c, f), g)| ((4.0 * f - c) / 3.0 - g).abs() / scale)
                    .fold(0.0f64, f64::max),
            )
        })
        .fold(f64::INFINITY, f64::min);
    // Every step straddles a kink: nothing to judge here (the walk still stops at a kink it
    // cannot place, naming the causes).
    if best == f64::INFINITY {
        return Ok(());
    }
    if best.is_nan() || best > SMOOTH {
        return Err(ReplayError::Unsupported(format!(
            "the rebuilt network is not a float64-smooth function of its weights: central \
             differences disagree with its Jacobian by {best:.1e} (relative) at every step \
             from 1e-2 to 1e-5 that crosses no switch, where f64 arithmetic leaves 1e-11 or \
             less. A layer computes in \
             f32 inside (burn-nn 0.22's RmsNorm does: use epk::model::nn::RmsNorm; LayerNorm \
             does not); a backward pass \
             uses an f32 constant (burn-autodiff 0.22's div_scalar rounds the divisor to f32: \
             MultiHeadAttention whose head width d_model/heads is not 1, 4, 16, 64, …, a power \
             of 4, divides by its square root); or the forward pass reads a value back and \
             branches on it"
        )));
    }
    Ok(())
}

/// Whether a switching value has another sign in `b` than in `a` (a piece changed).
fn crosses(a: &[f64], b: &[f64]) -> bool {
    a.iter()
        .zip(b)
        .any(|(x, y)| (*x > 0.0) != (*y > 0.0) || (*x < 0.0) != (*y < 0.0))
}
