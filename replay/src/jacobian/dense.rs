//! The dense implementation: one backward pass per output and input, for any Burn module.
//!
//! It needs nothing from the model beyond its forward pass, so it is also the reference that
//! every fast path is tested against.

use super::{Implementation, Jbar, JbarSum};
use crate::network::Network;
use crate::quadrature::Segment;
use epk_model::EpkModel;
use epk_model::nn::dropout::Keys;

/// Jbar and Jbar·Δw for each input, input by input: a node is evaluated, dotted with Δw and
/// added at once, so memory stays one `[outputs, P]` Jacobian per input.
pub(super) fn integrate_nodes<M: EpkModel>(
    implementation: &Implementation,
    net: &Network<M>,
    seg: &Segment<'_>,
    xs: &[f64],
    nodes: &[(f64, f64)],
) -> Vec<(Jbar, Vec<f64>)> {
    let (k, p, len) = (net.outputs(), net.num_params(), net.input_len());
    xs.chunks(len)
        .map(|x| {
            let mut sum = JbarSum::default();
            let mut jdw = vec![0.0; k];
            for &(t, w) in nodes {
                let node = implementation.node(net, &seg.at(t), x);
                for (a, j) in jdw.iter_mut().zip(node.dot(seg.delta, k).0) {
                    *a += w * j;
                }
                sum.add(w, node);
            }
            (sum.finish(k, p), jdw)
        })
        .collect()
}

/// Per-sample weighted gradients `[n, P]`, the samples split across `threads` workers.
pub(super) fn sample_grads<M: EpkModel>(
    net: &Network<M>,
    w: &[f64],
    xs: &[f64],
    coeffs: &[f64],
    keys: Option<Keys<'_>>,
    threads: usize,
) -> Vec<f64> {
    let (len, k) = (net.input_len(), net.outputs());
    let n = xs.len() / len;
    let parts = split(n, threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = parts
            .iter()
            .map(|r| {
                let r = r.clone();
                // Modules are Send but not Sync: each worker gets its own copy.
                let net = net.clone();
                let keys = keys.map(|k| Keys {
                    step: k.step,
                    rows: &k.rows[r.clone()],
                });
                scope.spawn(move || {
                    net.sample_grads_keyed(
                        w,
                        &xs[r.start * len..r.end * len],
                        &coeffs[r.start * k..r.end * k],
                        keys,
                    )
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("worker"))
            .collect()
    })
}

/// `n` items in at most `parts` contiguous ranges of near-equal size (at least one range).
pub(crate) fn split(n: usize, parts: usize) -> Vec<std::ops::Range<usize>> {
    let parts = parts.min(n).max(1);
    (0..parts)
        .map(|i| (i * n / parts)..((i + 1) * n / parts))
        .collect()
}
