//! Dropout whose masks replay can rebuild: each mask bit is a fixed function of the optimizer
//! step, the training sample and the unit, so nothing is stored and the per-sample terms replay
//! computes are the ones the optimizer used.
//!
//! Under the recorder a forward pass runs in a [`keyed`] scope that names the step and each
//! row's training index; [`Dropout`] then keeps unit u of row r in its l-th call of the pass
//! when a counter-based hash of (step, index, l, u) falls below 1 − p, and scales the kept
//! ones by 1/(1 − p), as Burn's Dropout does with its random draw. Replay runs a step's
//! training samples in the same scope and so gets the same masks; everything else it runs
//! (the network it explains) in an [`evaluation`] scope, where Dropout is the identity: the
//! explained network is the evaluation network. Outside any scope (training without the
//! recorder) it is Burn's Dropout.

use burn::config::Config;
use burn::module::Module;
use burn::tensor::{Distribution, Tensor};
use std::cell::RefCell;

/// Where the rows of a forward pass sit in training: the optimizer step and each row's index
/// in the training set.
#[derive(Clone, Copy, Debug)]
pub struct Keys<'a> {
    /// The optimizer step the pass belongs to.
    pub step: usize,
    /// The training-set index of each row.
    pub rows: &'a [usize],
}

enum Mode {
    Evaluation,
    Keyed {
        step: u64,
        rows: Vec<u64>,
        /// Dropout calls so far in this pass: each layer draws its own bits.
        layer: u64,
        /// Set when a Dropout's input has another number of rows than the keys.
        mismatch: Option<String>,
    },
}

thread_local! {
    static MODE: RefCell<Option<Mode>> = const { RefCell::new(None) };
}

/// Runs `pass` with the Dropout masks keyed by `keys` (a training pass), or in evaluation
/// mode when `keys` is None. Beside the result: the error of a Dropout whose input is not one
/// row per key (it then dropped nothing).
pub fn keyed<R>(keys: Option<Keys<'_>>, pass: impl FnOnce() -> R) -> (R, Option<String>) {
    let mode = match keys {
        None => Mode::Evaluation,
        Some(k) => Mode::Keyed {
            step: k.step as u64,
            rows: k.rows.iter().map(|&i| i as u64).collect(),
            layer: 0,
            mismatch: None,
        },
    };
    let outer = MODE.with(|m| m.borrow_mut().replace(mode));
    // Restores the outer scope even if `pass` panics.
    struct Restore(Option<Option<Mode>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            if let Some(outer) = self.0.take() {
                MODE.with(|m| *m.borrow_mut() = outer);
            }
        }
    }
    let mut restore = Restore(Some(outer));
    let out = pass();
    let ended = MODE.with(|m| m.borrow_mut().take());
    if let Some(outer) = restore.0.take() {
        MODE.with(|m| *m.borrow_mut() = outer);
    }
    match ended {
        Some(Mode::Keyed { mismatch, .. }) => (out, mismatch),
        _ => (out, None),
    }
}

/// Runs `pass` as the evaluation network (every Dropout the identity).
pub fn evaluation<R>(pass: impl FnOnce() -> R) -> R {
    keyed(None, pass).0
}

/// Configuration of [`Dropout`], as Burn's `DropoutConfig`.
#[derive(Config, Debug)]
pub struct DropoutConfig {
    /// The probability of dropping a unit.
    pub prob: f64,
}

impl DropoutConfig {
    /// The module.
    pub fn init(&self) -> Dropout {
        Dropout { prob: self.prob }
    }
}

/// Burn's `nn::Dropout` with masks replay can rebuild (see the module's documentation).
#[derive(Module, Debug)]
pub struct Dropout {
    /// The probability of dropping a unit.
    pub prob: f64,
}

impl Dropout {
    /// Drops units with probability `prob` and scales the rest by 1/(1 − prob) in training;
    /// the identity when evaluating.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        if self.prob <= 0.0 {
            return x;
        }
        let keep = 1.0 - self.prob;
        let plan = MODE.with(|m| match &mut *m.borrow_mut() {
            None => Plan::Burn,
            Some(Mode::Evaluation) => Plan::Identity,
            Some(Mode::Keyed {
                step,
                rows,
                layer,
                mismatch,
            }) => {
                let n = x.dims()[0];
                if n != rows.len() {
                    *mismatch = Some(format!(
                        "a Dropout's input has {n} rows where the batch has {}: epk keys each \
                         mask by the row's training sample, so Dropout must see [batch, ...]",
                        rows.len()
                    ));
                    return Plan::Identity;
                }
                *layer += 1;
                let units = x.shape().num_elements() / n.max(1);
                Plan::Mask(mask(*step, rows, *layer - 1, units, keep))
            }
        });
        match plan {
            Plan::Identity => x,
            Plan::Burn if !x.device().is_autodiff() => x,
            Plan::Burn => {
                let random = x.random_like(Distribution::Bernoulli(keep));
                (x * random) * (1.0 / keep)
            }
            Plan::Mask(bits) => {
                let shape = x.shape();
                let len = shape.num_elements();
                let m = crate::float_tensor(bits, [len], &x.device())
                    .cast(x.dtype())
                    .reshape(shape);
                (x * m) * (1.0 / keep)
            }
        }
    }
}

enum Plan {
    Identity,
    Burn,
    Mask(Vec<f64>),
}

/// The keep bits (1 or 0) of `units` units for each row of `rows`, in row-major order.
fn mask(step: u64, rows: &[u64], layer: u64, units: usize, keep: f64) -> Vec<f64> {
    let mut out = Vec::with_capacity(rows.len() * units);
    for &row in rows {
        let base = mix(mix(step ^ 0x5851_F42D_4C95_7F2D) ^ row.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let base = mix(base ^ layer.wrapping_mul(0xC2B2_AE3D_27D4_EB4F));
        for u in 0..units as u64 {
            let z = mix(base ^ u.wrapping_mul(0x1656_67B1_9E37_79F9));
            // 53 uniform bits in [0, 1).
            let uniform = (z >> 11) as f64 / (1u64 << 53) as f64;
            out.push(if uniform < keep { 1.0 } else { 0.0 });
        }
    }
    out
}

/// SplitMix64's finalizer: a bijection of u64 whose output bits all depend on every input bit.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::flex_f64;
    use crate::float_tensor;

    fn read<const D: usize>(t: Tensor<D>) -> Vec<f64> {
        t.try_into_vec_as::<f64>().unwrap()
    }

    /// Keyed masks: the same keys give the same mask, a row alone the same as in a batch,
    /// another step or layer another mask, about 1 − p kept, kept units scaled by 1/(1 − p);
    /// evaluation is the identity.
    #[test]
    fn keyed_masks_are_a_function_of_step_row_and_layer() {
        let device = flex_f64().unwrap();
        let drop = DropoutConfig::new(0.25).init();
        let x = || float_tensor(vec![1.0; 2 * 500], [2, 500], &device);
        let pass = |step: usize, rows: &[usize]| {
            let rows = rows.to_vec();
            let n = rows.len();
            let (out, error) = keyed(Some(Keys { step, rows: &rows }), || {
                let x = float_tensor(vec![1.0; n * 500], [n, 500], &device);
                (read(drop.forward(x.clone())), read(drop.forward(x)))
            });
            assert!(error.is_none());
            out
        };
        let (a, second_layer) = pass(3, &[7, 9]);
        assert_eq!(a, pass(3, &[7, 9]).0);
        assert_eq!(a[500..], pass(3, &[9]).0[..], "row 9 alone");
        assert_ne!(a, pass(4, &[7, 9]).0, "another step");
        assert_ne!(a, second_layer, "another layer");
        let kept = a.iter().filter(|&&v| v != 0.0).count() as f64 / a.len() as f64;
        assert!((kept - 0.75).abs() < 0.05, "{kept}");
        assert!(
            a.iter()
                .all(|&v| v == 0.0 || (v - 1.0 / 0.75).abs() < 1e-15)
        );
        assert_eq!(evaluation(|| read(drop.forward(x()))), read(x()));
        let rows = [1usize];
        let (_, e) = keyed(
            Some(Keys {
                step: 0,
                rows: &rows,
            }),
            || drop.forward(x()),
        );
        assert!(e.unwrap().contains("2 rows where the batch has 1"));
    }
}
