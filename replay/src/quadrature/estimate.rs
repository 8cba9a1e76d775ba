//! One Gauss–Legendre order's Jbar on a piece, kept so that the `auto` rule can compare it
//! with the next order's: dense `[outputs, P]` for small models and the general path, or the
//! order's factored nodes on the linear fast path, compared a layer and an output at a time
//! ([`Layers::compare_sums`]) without forming `[outputs, P]` at all.

use super::batch;
use super::hold::Buffer;
use crate::jacobian::{Factors, Layers, Term};
use crate::network::Network;
use epk_model::EpkModel;
use std::sync::Arc;

/// Σ_q w_q J(t_q) of one order on one piece.
pub(super) enum Estimate<'a> {
    /// `[outputs, P]` row-major.
    Dense(Buffer<'a>),
    /// The weighted nodes' factors.
    Factored(Arc<Layers>, Vec<(f64, Factors)>),
}

impl Estimate<'_> {
    /// Per output k, (‖Q_k − M_k‖₂, ‖Q_k‖₂) with Q this estimate and M `other`: how far two
    /// orders lie apart, and this one's size (for its rounding floor).
    pub fn compare(&self, other: &Estimate<'_>, k: usize) -> (Vec<f64>, Vec<f64>) {
        match (self, other) {
            (Estimate::Dense(q), Estimate::Dense(m)) => {
                let p = q.len() / k.max(1);
                let rows = q.chunks(p.max(1)).zip(m.chunks(p.max(1)));
                rows.map(|(q, m)| {
                    let (mut spread, mut size) = (0.0, 0.0);
                    for (a, b) in q.iter().zip(m) {
                        spread += (a - b) * (a - b);
                        size += a * a;
                    }
                    (f64::sqrt(spread), f64::sqrt(size))
                })
                .unzip()
            }
            (Estimate::Factored(layers, q), Estimate::Factored(_, m)) => {
                layers.compare_sums(&terms(q), &terms(m), k)
            }
            _ => unreachable!("the orders of one piece are evaluated alike"),
        }
    }
}

/// The weighted nodes as terms of a sum.
fn terms(nodes: &[(f64, Factors)]) -> Vec<Term<'_>> {
    nodes.iter().map(|(w, f)| (*w, f)).collect()
}

/// Bytes a piece holds while it is searched: two orders' dense `[outputs, P]` Jbar, or, when
/// the orders are kept factored, the factors of about ten nodes (orders 2 and 3, each kept
/// once as nodes and once as the estimate compared with the next order).
pub(super) fn held<M: EpkModel>(net: &Network<M>) -> usize {
    let k = net.outputs();
    match net.layers() {
        Some(layers) if !batch::dense_estimates(net) => {
            let per_output: usize = layers
                .layers
                .iter()
                .map(|l| match l.positions {
                    1 => l.inputs + l.outputs,
                    _ => (l.inputs + 1) * l.outputs,
                })
                .sum();
            10 * 8 * k * per_output
        }
        _ => 16 * k * net.num_params(),
    }
}

/// Pieces of one point searched side by side at most.
pub(super) fn fan<M: EpkModel>(net: &Network<M>) -> usize {
    (super::auto::SIDE_BY_SIDE_BYTES / held(net).max(1)).clamp(1, 8)
}
