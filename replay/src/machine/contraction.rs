//! How a step's Jbar meets the training gradients: A[x, i, k] += ⟨Jbar_s(x)_k, a_{i,s} ∇_w f(x_i; w_s)⟩.

use super::walk::Block;
use crate::jacobian::{Jbar, LayerRows, Layers};
use crate::network::Network;
use crate::quadrature::StepIntegral;
use epk_model::EpkModel;
use ndarray::{Array2, Array4, ArrayView2, Axis};
use std::ops::Range;
use std::sync::Arc;

/// A step's Jbar for all points, in the form that meets the training gradients cheapest.
pub(crate) enum Contraction {
    /// Dense Jbar rows `[points·outputs, P]` against dense per-sample gradients.
    Dense(Array2<f64>),
    /// Factored Jbar, per layer, against factored gradients: cost ∝ rows·(in + out) per
    /// sample instead of P, where merging leaves one row per (point, output) in a first layer
    /// and a last linear layer whatever the rule's node count.
    Layered {
        /// The probed layers.
        layers: Arc<Layers>,
        /// Per layer, every point's rows, owned by (point, output).
        rows: Vec<LayerRows>,
        /// points · outputs.
        owners: usize,
    },
}

impl Contraction {
    /// The factored form when every point's Jbar is factored and that costs less than the
    /// dense one; the dense form otherwise, or always with `dense`.
    pub fn choose(results: &[StepIntegral], k: usize, p: usize, dense: bool) -> Self {
        let factored: Option<Vec<(&Arc<Layers>, &Vec<LayerRows>)>> = results
            .iter()
            .map(|r| match &r.jbar {
                Jbar::Factored(layers, rows) => Some((layers, rows)),
                Jbar::Dense(_) => None,
            })
            .collect();
        if !dense
            && let Some(factored) = factored
            && let Some(&(layers, _)) = factored.first()
        {
            let per_point: Vec<&Vec<LayerRows>> = factored.iter().map(|(_, r)| *r).collect();
            let rows = layer_rows(layers, &per_point, k);
            // Per sample, the cheaper of each layer's two contractions.
            let cost: usize = rows
                .iter()
                .zip(&layers.layers)
                .map(|(r, l)| {
                    l.gram_cost(r.owner.len(), 1)
                        .min(l.dense_cost(r.owner.len(), 1))
                })
                .sum();
            // Dense costs m·k·p per sample (plus building the dense rows).
            if cost < results.len() * k * p {
                return Contraction::Layered {
                    layers: layers.clone(),
                    rows,
                    owners: results.len() * k,
                };
            }
        }
        Contraction::Dense(dense_jbar(results, k, p))
    }

    /// One block's contributions `[points·outputs, samples]` and the ℓ2 norm of each
    /// sample's coefficient-weighted gradient (what a Jbar error is multiplied by), adding the
    /// block's summed gradient to `total` and each parameter group's share to `groups`.
    pub fn block<M: EpkModel>(
        &self,
        net: &Network<M>,
        w: &[f64],
        block: &Block<'_>,
        threads: usize,
        total: &mut [f64],
        groups: &mut Groups,
    ) -> (Array2<f64>, Vec<f64>) {
        match self {
            Contraction::Layered {
                layers,
                rows,
                owners,
            } => {
                let f = net.factors_keyed(w, &block.inputs, block.coeffs, Some(block.keys()));
                add(total, &layers.sum_dense(&f));
                let mut c = Array2::<f64>::zeros((*owners, block.indices.len()));
                for (l, r) in rows.iter().enumerate() {
                    let g = layers.gram_layer(l, r, &f);
                    for (q, &own) in r.owner.iter().enumerate() {
                        let mut row = c.row_mut(own);
                        row += &g.row(q);
                    }
                }
                (c, layers.norms(&f))
            }
            Contraction::Dense(jbar) => {
                let g = sample_grads(net, w, block, threads);
                let norms = g.rows().into_iter().map(|r| r.dot(&r).sqrt()).collect();
                let c = contract(jbar, &g.view(), block.indices, Some(total), groups);
                (c, norms)
            }
        }
    }
}

/// A block's per-sample gradients at `w`, each weighted by its coefficients, `[samples, P]`.
pub(crate) fn sample_grads<M: EpkModel>(
    net: &Network<M>,
    w: &[f64],
    block: &Block<'_>,
    threads: usize,
) -> Array2<f64> {
    let (p, n) = (net.num_params(), block.indices.len());
    let grads = net.implementation().sample_grads(
        net,
        w,
        &block.inputs,
        block.coeffs,
        Some(block.keys()),
        threads,
    );
    Array2::from_shape_vec((n, p), grads).expect("grads are [n, p]")
}

/// `rows` `[points·outputs, P]` against gradients `g` `[samples, P]` of the samples `indices`:
/// `[points·outputs, samples]`, adding the summed gradient to `total` (if any) and each
/// parameter group's share to `groups`.
pub(crate) fn contract(
    rows: &Array2<f64>,
    g: &ArrayView2<f64>,
    indices: &[usize],
    total: Option<&mut [f64]>,
    groups: &mut Groups,
) -> Array2<f64> {
    if let Some(total) = total {
        for row in g.rows() {
            add(total, row.as_slice().expect("contiguous"));
        }
    }
    groups.add(rows, g, indices);
    // [m·k, p] · [p, n] → [m·k, n]
    rows.dot(&g.t())
}

/// Dense Jbar rows `[points·outputs, P]`.
pub(crate) fn dense_jbar(results: &[StepIntegral], k: usize, p: usize) -> Array2<f64> {
    dense_jbar_into(results, k, p, None)
}

/// [`dense_jbar`] written into `spare` when it has the shape (a step's array reused by the
/// next: a fresh one of hundreds of MB costs its page faults every step).
pub(crate) fn dense_jbar_into(
    results: &[StepIntegral],
    k: usize,
    p: usize,
    spare: Option<Array2<f64>>,
) -> Array2<f64> {
    let shape = (results.len() * k, p);
    let mut jbar = match spare {
        Some(mut a) if a.dim() == shape && a.is_standard_layout() => {
            a.fill(0.0);
            a
        }
        _ => Array2::<f64>::zeros(shape),
    };
    let flat = jbar.as_slice_mut().expect("contiguous");
    for (r, rows) in results.iter().zip(flat.chunks_mut(k * p)) {
        r.jbar.add_dense(rows);
    }
    jbar
}

/// Every point's merged Jbar rows, per layer, owned by (point, output).
fn layer_rows(layers: &Layers, per_point: &[&Vec<LayerRows>], k: usize) -> Vec<LayerRows> {
    (0..layers.layers.len())
        .map(|l| {
            let mut owner = Vec::new();
            let (mut a, mut d) = (Vec::new(), Vec::new());
            for (pt, rows) in per_point.iter().enumerate() {
                owner.extend(rows[l].owner.iter().map(|o| pt * k + o));
                a.push(rows[l].a.view());
                d.push(rows[l].d.view());
            }
            LayerRows {
                owner,
                a: ndarray::concatenate(Axis(0), &a).expect("rows of one layer share a width"),
                d: ndarray::concatenate(Axis(0), &d).expect("rows of one layer share a width"),
            }
        })
        .collect()
}

/// The attributions split by parameter group (ranges of the flat parameter vector),
/// `[groups, points, train samples, outputs]`; nothing when no groups are asked for.
pub(crate) struct Groups {
    ranges: Vec<Range<usize>>,
    /// The split.
    pub out: Option<Array4<f64>>,
    m: usize,
    k: usize,
}

impl Groups {
    /// For `m` points, `n` training samples and `k` outputs.
    pub fn new(ranges: &[Range<usize>], m: usize, n: usize, k: usize) -> Self {
        Groups {
            ranges: ranges.to_vec(),
            out: (!ranges.is_empty()).then(|| Array4::zeros((ranges.len(), m, n, k))),
            m,
            k,
        }
    }

    /// Adds each group's share of a block's contributions: rows `[m·k, p]` against gradients
    /// `[n, p]`, restricted to the group's columns.
    fn add(&mut self, rows: &Array2<f64>, grads: &ArrayView2<f64>, idx: &[usize]) {
        let Some(out) = &mut self.out else { return };
        for (q, r) in self.ranges.iter().enumerate() {
            let cols = ndarray::s![.., r.clone()];
            let contrib = rows.slice(cols).dot(&grads.slice(cols).t());
            let mut target = out.index_axis_mut(Axis(0), q);
            for (c, &i) in idx.iter().enumerate() {
                for pt in 0..self.m {
                    for o in 0..self.k {
                        target[[pt, i, o]] += contrib[[pt * self.k + o, c]];
                    }
                }
            }
        }
    }
}

/// total += v.
pub(crate) fn add(total: &mut [f64], v: &[f64]) {
    for (t, v) in total.iter_mut().zip(v) {
        *t += v;
    }
}
