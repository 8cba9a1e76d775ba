//! One walker over the stored steps, used by plain gradient descent, the stateful optimizers'
//! two passes and the path kernel.
//!
//! It reads each weight vector once, hands each step's segment w_s → w_{s+1} to the caller in
//! either direction, and integrates Jbar_s for every explained point with the points split
//! across worker threads.

use super::{ReplayOptions, StepCheck};
use crate::ReplayError;
use crate::jacobian::split;
use crate::network::Network;
use crate::quadrature::{self, Segment, StepIntegral};
use epk_model::EpkModel;
use epk_model::nn::dropout::Keys;
use epk_store::{Samples, StoreReader};
use std::ops::Range;

/// One step of the walk.
pub(crate) struct Step<'a> {
    /// s, from 0.
    pub index: usize,
    /// w_s.
    pub start: &'a [f64],
    /// w_{s+1}.
    pub end: &'a [f64],
    /// Δw_s = w_{s+1} − w_s.
    pub delta: &'a [f64],
}

impl Step<'_> {
    /// The step's straight segment.
    pub fn segment(&self) -> Segment<'_> {
        Segment {
            start: self.start,
            end: self.end,
            delta: self.delta,
        }
    }
}

/// Which way the walk goes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    Forward,
    Backward,
}

/// Visits the steps `range` of `reader` in `direction`, reading each weight vector once.
pub(crate) fn steps(
    reader: &StoreReader,
    direction: Direction,
    range: Range<usize>,
    mut visit: impl FnMut(&Step<'_>) -> Result<(), ReplayError>,
) -> Result<(), ReplayError> {
    let (first, last) = (range.start, range.end);
    let mut kept = reader.weights(match direction {
        Direction::Forward => first,
        Direction::Backward => last,
    })?;
    for i in range {
        let (s, other) = match direction {
            Direction::Forward => (i, reader.weights(i + 1)?),
            Direction::Backward => {
                let s = last - 1 - (i - first);
                (s, reader.weights(s)?)
            }
        };
        let (start, end) = match direction {
            Direction::Forward => (&kept, &other),
            Direction::Backward => (&other, &kept),
        };
        let delta: Vec<f64> = end.iter().zip(start.iter()).map(|(b, a)| b - a).collect();
        visit(&Step {
            index: s,
            start,
            end,
            delta: &delta,
        })?;
        kept = other;
    }
    Ok(())
}

/// Jbar of one step for every explained point, with the step's checks.
pub(crate) struct Integrator<'a, M: EpkModel> {
    net: &'a Network<M>,
    xs: &'a [f64],
    options: &'a ReplayOptions,
    /// Each step's share of the tolerance: tol / (2 · steps).
    step_tol: f64,
}

impl<'a, M: EpkModel> Integrator<'a, M> {
    /// For the points `xs` of a run of `steps` steps.
    pub fn new(
        net: &'a Network<M>,
        xs: &'a [f64],
        options: &'a ReplayOptions,
        steps: usize,
    ) -> Self {
        Integrator {
            net,
            xs,
            options,
            step_tol: options.tolerance / (2.0 * steps.max(1) as f64),
        }
    }

    /// Jbar over `step` for every point (split across threads), and the step's checks
    /// (the decomposition residual is the caller's to fill in). A kink the model does not
    /// declare through `Switches` ends the replay here, with the step, point and place named:
    /// no rule can integrate across it, and a replay that went on would spend its evaluation
    /// cap on every step before failing `verify` without a reason.
    pub fn integrate(
        &self,
        step: &Step<'_>,
    ) -> Result<(Vec<StepIntegral>, StepCheck), ReplayError> {
        let len = self.net.input_len();
        let m = self.xs.len() / len;
        let seg = step.segment();
        let results: Vec<StepIntegral> = std::thread::scope(|scope| {
            let handles: Vec<_> = split(m, self.options.threads.max(1))
                .into_iter()
                .map(|range| {
                    let xs = &self.xs[range.start * len..range.end * len];
                    // Modules are Send but not Sync: each worker gets its own copy.
                    let net = self.net.clone();
                    let (rule, tol) = (self.options.rule, self.step_tol);
                    let seg = &seg;
                    scope.spawn(move || quadrature::integrate(&net, seg, xs, rule, tol))
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("worker"))
                .collect()
        });
        if let Some((pt, (a, b))) = results
            .iter()
            .enumerate()
            .find_map(|(pt, r)| r.undeclared_kink.map(|k| (pt, k)))
        {
            return Err(ReplayError::Unsupported(format!(
                "at step {}, point {pt}, the network's Jacobian jumps between t = {a:.9} and \
                 {b:.9} of the step (no quadrature converges there after {} bisections) while \
                 none of its switching values changes sign: a ReLU, max-pool or other kink is \
                 neither one of epk's drop-in modules (epk::model::nn: Relu, LeakyRelu, \
                 MaxPool1d, MaxPool2d in place of Burn's) nor routed through Switches (relu, \
                 leaky_relu, max_pool1d, max_pool2d, note) in epk_forward, or the gradient Burn computes is not quite the derivative of \
                 the forward pass (an f32 constant in a backward pass)",
                step.index,
                crate::quadrature::auto::MAX_DEPTH
            )));
        }
        let check = check(step.index, &results);
        Ok((results, check))
    }
}

/// The step's worst certificate and its cost over the points.
fn check(s: usize, results: &[StepIntegral]) -> StepCheck {
    let mut check = StepCheck {
        step: s,
        certificate: 0.0,
        worst_point: 0,
        decomposition: Default::default(),
        evals: 0,
        pieces: 0,
        rounding: 0.0,
        jbar_error: Some(0.0),
        attribution_bound: None,
    };
    for (i, r) in results.iter().enumerate() {
        check.jbar_error = match (check.jbar_error, &r.jbar_error) {
            (Some(worst), Some(e)) => Some(e.iter().fold(worst, |m, v| m.max(*v))),
            _ => None,
        };
        let ends = r.f_start.iter().zip(&r.f_end);
        let size = ends.fold(0.0f64, |m, (a, b)| m.max(a.abs() + b.abs()));
        check.rounding = check.rounding.max(f64::EPSILON * size).max(r.noise);
        if r.certificate > check.certificate || r.certificate.is_nan() {
            check.certificate = r.certificate;
            check.worst_point = i;
        }
        check.evals += r.evals;
        check.pieces += r.pieces;
    }
    check
}

/// One block of a step's training samples.
pub(crate) struct Block<'a> {
    /// The step.
    pub step: usize,
    /// Dataset indices.
    pub indices: &'a [usize],
    /// Their inputs, flat.
    pub inputs: Vec<f64>,
    /// Their rows of the step's per-sample coefficients, `[indices.len(), outputs]`.
    pub coeffs: &'a [f64],
}

impl Block<'_> {
    /// The keys of the block's training passes: its step and samples (Dropout's masks).
    pub fn keys(&self) -> Keys<'_> {
        Keys {
            step: self.step,
            rows: self.indices,
        }
    }
}

/// A step's samples in blocks of at most `block` (bounds the memory of per-sample gradients),
/// each with its rows of `coeffs` (`[samples, k]`).
pub(crate) fn blocks<'a>(
    step: usize,
    train: &'a Samples,
    indices: &'a [usize],
    coeffs: &'a [f64],
    k: usize,
    block: usize,
) -> impl Iterator<Item = Block<'a>> + 'a {
    let block = block.max(1);
    indices
        .chunks(block)
        .enumerate()
        .map(move |(b, idx)| Block {
            step,
            indices: idx,
            inputs: train.gather(idx),
            coeffs: &coeffs[b * block * k..(b * block + idx.len()) * k],
        })
}
