//! Weighted sums of factored Jacobians, a layer and an output at a time, by matrix products.
//!
//! On a linear layer a Jacobian evaluation is `a ⊗ d`, so Σ_q c_q J_q restricted to that layer
//! and one output is Aᵀ·diag(c)·D: one product whose inner dimension is the number of terms.
//! Formed that way, the `auto` rule compares two Gauss–Legendre orders on a piece without
//! forming either order's `[outputs, P]` Jbar (each a pass over tens of MB per node for a
//! model of 10⁵–10⁶ parameters), and merged rows become a dense Jbar with one product per
//! layer and output instead of one rank-one pass over the layer per row.
//!
//! Entry by entry the products round like the dense sums they replace: each entry is the same
//! few products added, only in another order.

use super::linear::{Factors, Layer, Layers};
use super::merge::LayerRows;
use ndarray::linalg::general_mat_mul;
use ndarray::{Array2, ArrayView2, s};
use std::ops::Range;

/// One term of a weighted sum: its weight and its Jacobian factors (one sample per output).
pub type Term<'a> = (f64, &'a Factors);

impl Layers {
    /// Per output k, (‖Q_k − M_k‖₂, ‖Q_k‖₂) for Q = Σ_q w_q J_q over `q` and M likewise over
    /// `m`: two orders' Jbar on a piece, their spread and the higher one's size, without
    /// forming either as `[outputs, P]`: through a small triangular factor on linear layers
    /// (`spread.rs`), by products a layer and an output at a time on convolutions.
    pub fn compare_sums(&self, q: &[Term<'_>], m: &[Term<'_>], k: usize) -> (Vec<f64>, Vec<f64>) {
        let (mut spread, mut size) = (vec![0.0; k], vec![0.0; k]);
        for (l, layer) in self.layers.iter().enumerate() {
            let shape = (
                layer.inputs + usize::from(layer.bias.is_some()),
                layer.outputs,
            );
            let summed = |t: &[Term<'_>]| t.iter().any(|(_, f)| f.block(l, 0).is_some());
            if layer.positions == 1 && !summed(q) && !summed(m) {
                for o in 0..k {
                    let (ds, qs) = layer.spread_rank_one(l, q, m, o);
                    spread[o] += ds;
                    size[o] += qs;
                }
                continue;
            }
            let (mut gq, mut gm) = (Array2::zeros(shape), Array2::zeros(shape));
            for o in 0..k {
                layer.weighted_sum(l, q, o, &mut gq);
                layer.weighted_sum(l, m, o, &mut gm);
                let (ds, qs) = squares(
                    gq.as_slice().expect("standard layout"),
                    gm.as_slice().expect("standard layout"),
                );
                spread[o] += ds;
                size[o] += qs;
            }
        }
        let root = |v: Vec<f64>| v.into_iter().map(f64::sqrt).collect();
        (root(spread), root(size))
    }

    /// Adds merged rows densely: `out` is `[k, P]` row-major. Each run of rows that one output
    /// owns is one product Aᵀ·D into that output's weights (and Dᵀ·a_bias into its biases).
    pub fn rows_add_dense(&self, rows: &[LayerRows], out: &mut [f64]) {
        let p = self.num_params;
        for (l, r) in self.layers.iter().zip(rows) {
            for (o, run) in runs(&r.owner) {
                let row = &mut out[o * p..(o + 1) * p];
                let a = r.a.slice(s![run.clone(), ..l.inputs]);
                let d = r.d.slice(s![run.clone(), ..]);
                l.add_product(&a.t(), &d, row);
                if let Some(b) = l.bias {
                    let db = d.t().dot(&r.a.slice(s![run, l.inputs]));
                    row[b..b + l.outputs]
                        .iter_mut()
                        .zip(&db)
                        .for_each(|(x, v)| *x += v);
                }
            }
        }
    }
}

impl Layer {
    /// Σ_q c_q × (output o's gradient of this layer in node q) as `[in (+ 1), out]`, the last
    /// row the bias's, into `g`: the nodes' positions stacked for one product, plus the
    /// blocks of nodes whose convolution positions were already summed.
    fn weighted_sum(&self, l: usize, terms: &[Term<'_>], o: usize, g: &mut Array2<f64>) {
        let bias = self.bias.is_some();
        let width = self.inputs + usize::from(bias);
        let rows: usize = terms
            .iter()
            .filter(|(_, f)| f.block(l, o).is_none())
            .map(|_| self.positions)
            .sum();
        let (mut a, mut d) = (
            Array2::zeros((rows, width)),
            Array2::zeros((rows, self.outputs)),
        );
        let mut at = 0;
        for (c, f) in terms.iter().filter(|(_, f)| f.block(l, o).is_none()) {
            let (fa, fd) = f.sample(l, o, self.positions);
            let next = at + self.positions;
            a.slice_mut(s![at..next, ..self.inputs]).assign(&fa);
            if bias {
                a.slice_mut(s![at..next, self.inputs]).fill(1.0);
            }
            d.slice_mut(s![at..next, ..]).assign(&(&fd * *c));
            at = next;
        }
        general_mat_mul(1.0, &a.t(), &d, 0.0, g);
        for (c, f) in terms {
            if let Some(block) = f.block(l, o) {
                g.scaled_add(*c, block);
            }
        }
    }

    /// Adds the product `a·d` (`[in, n]·[n, out]`) to the weight part of the flat vector
    /// `out`, whatever its storage order.
    fn add_product(&self, a: &ArrayView2<'_, f64>, d: &ArrayView2<'_, f64>, out: &mut [f64]) {
        let mut view = self.view_mut(out);
        general_mat_mul(1.0, a, d, 1.0, &mut view);
    }
}

/// (Σ (q − m)², Σ q²), in eight lanes so that the loop vectorizes.
fn squares(q: &[f64], m: &[f64]) -> (f64, f64) {
    let (mut ds, mut qs) = ([0.0; 8], [0.0; 8]);
    let (qc, mc) = (q.chunks_exact(8), m.chunks_exact(8));
    let rest = qc.remainder().iter().zip(mc.remainder());
    for (a, b) in qc.zip(mc) {
        for j in 0..8 {
            ds[j] += (a[j] - b[j]) * (a[j] - b[j]);
            qs[j] += a[j] * a[j];
        }
    }
    let (mut d, mut s) = (ds.iter().sum::<f64>(), qs.iter().sum::<f64>());
    for (a, b) in rest {
        d += (a - b) * (a - b);
        s += a * a;
    }
    (d, s)
}

/// The runs of equal owners in `owner`: (owner, rows).
fn runs(owner: &[usize]) -> Vec<(usize, Range<usize>)> {
    let mut out: Vec<(usize, Range<usize>)> = Vec::new();
    for (r, &o) in owner.iter().enumerate() {
        match out.last_mut() {
            Some((last, run)) if *last == o => run.end = r + 1,
            _ => out.push((o, r..r + 1)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Axis;

    /// Three small layers (one with a bias, one stored transposed, one with two positions per
    /// sample) and random factors.
    fn setup() -> (Layers, Vec<Factors>) {
        let layers = Layers::covering(
            vec![
                Layer {
                    weight: 0,
                    bias: Some(12),
                    inputs: 3,
                    outputs: 4,
                    positions: 1,
                    transposed: false,
                },
                Layer {
                    weight: 16,
                    bias: None,
                    inputs: 4,
                    outputs: 2,
                    positions: 1,
                    transposed: true,
                },
                // A convolution's: two positions per sample, compared by products.
                Layer {
                    weight: 24,
                    bias: Some(30),
                    inputs: 2,
                    outputs: 3,
                    positions: 2,
                    transposed: true,
                },
            ],
            33,
        )
        .expect("layers cover 33 parameters");
        let mut seed = 7u64;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        };
        let k = 2;
        let nodes = (0..5)
            .map(|_| Factors {
                a: vec![
                    Array2::from_shape_fn((k, 3), |_| next()),
                    Array2::from_shape_fn((k, 4), |_| next()),
                    Array2::from_shape_fn((2 * k, 2), |_| next()),
                ],
                d: vec![
                    Array2::from_shape_fn((k, 4), |_| next()),
                    Array2::from_shape_fn((k, 2), |_| next()),
                    Array2::from_shape_fn((2 * k, 3), |_| next()),
                ],
                samples: k,
                blocks: Vec::new(),
            })
            .collect();
        (layers, nodes)
    }

    /// Σ w J as `[k, P]`, each node formed densely by the rank-one path.
    fn dense(layers: &Layers, terms: &[Term<'_>], k: usize) -> Array2<f64> {
        let mut out = Array2::zeros((k, layers.num_params));
        for (o, mut row) in out.axis_iter_mut(Axis(0)).enumerate() {
            for (w, f) in terms {
                layers.add_dense(f, o, *w, row.as_slice_mut().expect("contiguous"));
            }
        }
        out
    }

    #[test]
    fn two_orders_compare_as_their_dense_sums_do() {
        let (layers, mut nodes) = setup();
        // Two nodes with the two-position layer summed into blocks, as `auto` holds them.
        for node in &mut nodes[1..3] {
            layers.block_convolutions(node);
        }
        let q: Vec<Term<'_>> = [0.2, 0.5, 0.3].into_iter().zip(&nodes[..3]).collect();
        let m: Vec<Term<'_>> = [0.6, -0.1].into_iter().zip(&nodes[3..]).collect();
        let (spread, size) = layers.compare_sums(&q, &m, 2);
        let (dq, dm) = (dense(&layers, &q, 2), dense(&layers, &m, 2));
        for o in 0..2 {
            let norm = |r: ndarray::ArrayView1<'_, f64>| r.dot(&r).sqrt();
            let diff = &dq.row(o) - &dm.row(o);
            assert!((spread[o] - norm(diff.view())).abs() <= 1e-15 * spread[o]);
            assert!((size[o] - norm(dq.row(o))).abs() <= 1e-15 * size[o]);
            assert!(spread[o] > 0.1, "the sums differ: {}", spread[o]);
        }
    }

    #[test]
    fn merged_rows_add_as_their_rank_one_terms() {
        let (layers, nodes) = setup();
        let weights = [0.1, 0.2, 0.3, 0.25, 0.15];
        let rows = layers.merge(&weights, &nodes, 2, 0, None);
        let mut out = vec![0.0; 2 * layers.num_params];
        layers.rows_add_dense(&rows, &mut out);
        let terms: Vec<Term<'_>> = weights.into_iter().zip(&nodes).collect();
        let want = dense(&layers, &terms, 2);
        let worst = out
            .iter()
            .zip(want.iter())
            .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
        assert!(worst <= 1e-15, "off by {worst}");
        assert!(want.iter().any(|v| v.abs() > 0.01));
    }

    #[test]
    fn runs_group_consecutive_owners() {
        assert_eq!(
            runs(&[0, 0, 1, 1, 1, 0]),
            vec![(0, 0..2), (1, 2..5), (0, 5..6)]
        );
        assert!(runs(&[]).is_empty());
    }
}
