//! Merging a rule's nodes into the fewest exact rank-one rows per linear layer.
//!
//! Jbar = Σ_q w_q J(t_q) is, per linear layer, a sum of rank-one terms `[a_q; 1] ⊗ d_q` (the
//! layer's input, augmented with the bias input, and its output gradient). Kept as rows, it
//! meets the training gradients at `rows · (in + out)` per sample instead of P (Novak et al.'s
//! structured derivatives); merged, a first layer or a last linear layer needs one row however
//! many nodes the rule took.

use super::linear::{Factors, Layers};
use ndarray::{Array2, ArrayView1, s};

/// One layer's part of a factored Jbar: row r contributes `a[r] ⊗ d[r]` to output row
/// `owner[r]`. `a` is augmented with the bias input: for a layer with a bias its last column is
/// the coefficient of the bias gradient `d` (1 for a single Jacobian).
#[derive(Clone, Debug)]
pub struct LayerRows {
    /// The (point or output) row each rank-one row belongs to.
    pub owner: Vec<usize>,
    /// Input factors augmented with the bias coefficient, `[rows, in (+ 1)]`.
    pub a: Array2<f64>,
    /// Output-gradient factors, `[rows, out]`.
    pub d: Array2<f64>,
}

impl Layers {
    /// Σ_q w_q J_q for one input, with J_q its Jacobian factors at rule node q (samples
    /// `base..base + k` of `nodes[q]`, one per output, each L rows in a layer of L positions),
    /// as merged rows per layer owned by output index.
    /// `blocks`, when given, holds each convolution's block per output already summed
    /// ([`Layers::absorb_convolutions`]), and `nodes` need not carry that layer's factors.
    pub fn merge(
        &self,
        weights: &[f64],
        nodes: &[Factors],
        k: usize,
        base: usize,
        blocks: Option<&ConvBlocks>,
    ) -> Vec<LayerRows> {
        self.layers
            .iter()
            .enumerate()
            .map(|(l, layer)| {
                let bias = layer.bias.is_some();
                let width = layer.inputs + usize::from(bias);
                let (mut a_out, mut d_out, mut owner) = (Vec::new(), Vec::new(), Vec::new());
                let terms = layer.positions;
                for o in 0..k {
                    let summed = blocks.and_then(|b| b[l].as_ref()).map(|b| &b[o]);
                    let rows = if let Some(block) = summed {
                        emit_block(block, &mut a_out, &mut d_out)
                    } else if weights.is_empty() {
                        0
                    } else if terms > 1 {
                        // A convolution's node is L rank-one terms, one per output position:
                        // their weighted sum is one block, formed by a matrix product.
                        let rows = (base + o) * terms..(base + o + 1) * terms;
                        let block = conv_block(weights, nodes, l, rows, bias);
                        emit_block(&block, &mut a_out, &mut d_out)
                    } else {
                        let a: Vec<_> = nodes.iter().map(|f| f.a[l].row(base + o)).collect();
                        let d: Vec<_> = nodes.iter().map(|f| f.d[l].row(base + o)).collect();
                        merge_into(weights, &a, &d, bias, &mut a_out, &mut d_out)
                    };
                    owner.extend(std::iter::repeat_n(o, rows));
                }
                let rows = owner.len();
                LayerRows {
                    owner,
                    a: Array2::from_shape_vec((rows, width), a_out).expect("rows of width in + 1"),
                    d: Array2::from_shape_vec((rows, layer.outputs), d_out)
                        .expect("rows of width out"),
                }
            })
            .collect()
    }
}

/// Per layer, for a convolution, its summed block `[in (+ 1), out]` per output.
pub type ConvBlocks = Vec<Option<Vec<Array2<f64>>>>;

impl Layers {
    /// Adds `w ×` one node's convolution blocks (samples `0..k` of `node`, one per output) to
    /// `blocks`, and drops those layers' factors from the node: a convolution's L rows per
    /// output are summed as they come instead of kept until the step's end.
    pub fn absorb_convolutions(
        &self,
        w: f64,
        node: &mut Factors,
        k: usize,
        blocks: &mut ConvBlocks,
    ) {
        blocks.resize(self.layers.len(), None);
        for (l, layer) in self.layers.iter().enumerate() {
            let terms = layer.positions;
            let own = node.blocks.get_mut(l).and_then(Option::take);
            if terms == 1 || (node.a[l].nrows() == 0 && own.is_none()) {
                continue;
            }
            let bias = layer.bias.is_some();
            let sums = blocks[l].get_or_insert_with(|| {
                let width = layer.inputs + usize::from(bias);
                vec![Array2::zeros((width, layer.outputs)); k]
            });
            if let Some(own) = own {
                // Summed when the node was evaluated (`Layers::block_convolutions`).
                sums.iter_mut()
                    .zip(&own)
                    .for_each(|(s, g)| s.scaled_add(w, g));
                continue;
            }
            for (o, sum) in sums.iter_mut().enumerate() {
                let rows = o * terms..(o + 1) * terms;
                *sum += &conv_block(&[w], std::slice::from_ref(node), l, rows, bias);
            }
            node.a[l] = Array2::zeros((0, layer.inputs));
            node.d[l] = Array2::zeros((0, layer.outputs));
        }
    }
}

/// Adds `from` to `into`, layer by layer and output by output (the blocks of two runs of nodes).
pub fn add_blocks(into: &mut ConvBlocks, from: ConvBlocks) {
    if into.len() < from.len() {
        into.resize(from.len(), None);
    }
    for (sum, part) in into.iter_mut().zip(from) {
        match (sum.as_mut(), part) {
            (_, None) => {}
            (None, part) => *sum = part,
            (Some(sum), Some(part)) => sum.iter_mut().zip(&part).for_each(|(s, p)| *s += p),
        }
    }
}

/// The fewest exact rank-one rows for `Σ_q w_q [a_q; 1] ⊗ d_q` (the `1` only with a bias),
/// appended to `a_out`/`d_out`: one row `[a; 1] ⊗ Σ w_q d_q` when every node has the same `a`
/// (a first layer's input is the point itself), one row `Σ w_q [a_q; 1] ⊗ d` when every node
/// has the same `d` (a last linear layer), or the summed block written as `min(in + 1, out)`
/// rows when that is fewer than the nodes (a narrow layer, such as a three-class output under a
/// log-softmax). Exact up to rounding; the contraction with training gradients then costs
/// `rows · (in + out)` per sample whatever the rule's node count.
fn merge_into(
    weights: &[f64],
    a: &[ArrayView1<'_, f64>],
    d: &[ArrayView1<'_, f64>],
    bias: bool,
    a_out: &mut Vec<f64>,
    d_out: &mut Vec<f64>,
) -> usize {
    let q = weights.len();
    let (n_in, n_out) = (a[0].len(), d[0].len());
    let width = n_in + usize::from(bias);
    if same(a) {
        push_augmented(a_out, &a[0], bias);
        let start = d_out.len();
        d_out.resize(start + n_out, 0.0);
        for (w, dq) in weights.iter().zip(d) {
            for (o, v) in d_out[start..].iter_mut().zip(dq.iter()) {
                *o += w * v;
            }
        }
        return 1;
    }
    if same(d) {
        let start = a_out.len();
        a_out.resize(start + width, 0.0);
        for (w, aq) in weights.iter().zip(a) {
            let row = &mut a_out[start..];
            for (o, v) in row.iter_mut().zip(aq.iter()) {
                *o += w * v;
            }
            if bias {
                row[n_in] += w;
            }
        }
        d_out.extend(d[0].iter());
        return 1;
    }
    if q <= n_out.min(width) {
        for ((w, aq), dq) in weights.iter().zip(a).zip(d) {
            push_augmented(a_out, aq, bias);
            d_out.extend(dq.iter().map(|v| w * v));
        }
        return q;
    }
    merge_block(weights, a, d, bias, a_out, d_out)
}

/// Whether every vector is bit-for-bit the first.
fn same(v: &[ArrayView1<'_, f64>]) -> bool {
    v[1..].iter().all(|x| {
        x.iter()
            .zip(v[0].iter())
            .all(|(p, r)| p.to_bits() == r.to_bits())
    })
}

/// Appends `[row; 1]` (the `1` only with a bias).
fn push_augmented(out: &mut Vec<f64>, row: &ArrayView1<'_, f64>, bias: bool) {
    out.extend(row.iter());
    if bias {
        out.push(1.0);
    }
}

/// The summed block B = Σ w_q [a_q; 1] d_qᵀ, `[width, out]`, written by columns or by rows,
/// whichever is fewer.
fn merge_block(
    weights: &[f64],
    a: &[ArrayView1<'_, f64>],
    d: &[ArrayView1<'_, f64>],
    bias: bool,
    a_out: &mut Vec<f64>,
    d_out: &mut Vec<f64>,
) -> usize {
    let (n_in, n_out) = (a[0].len(), d[0].len());
    let width = n_in + usize::from(bias);
    let mut block = Array2::<f64>::zeros((width, n_out));
    for ((w, aq), dq) in weights.iter().zip(a).zip(d) {
        for (i, ai) in aq.iter().chain(bias.then_some(&1.0)).enumerate() {
            block.row_mut(i).scaled_add(w * ai, dq);
        }
    }
    emit_block(&block, a_out, d_out)
}

/// Σ_q w_q Σ_p [a_qp; 1] ⊗ d_qp over the samples' rows `rows` of layer `l` at every node, as
/// one `[width, out]` block: (W·A)ᵀ D with the terms stacked.
fn conv_block(
    weights: &[f64],
    nodes: &[Factors],
    l: usize,
    rows: std::ops::Range<usize>,
    bias: bool,
) -> Array2<f64> {
    let (n_in, n_out) = (nodes[0].a[l].ncols(), nodes[0].d[l].ncols());
    let (terms, width) = (rows.len(), n_in + usize::from(bias));
    let mut a = Array2::<f64>::zeros((weights.len() * terms, width));
    let mut d = Array2::<f64>::zeros((weights.len() * terms, n_out));
    for (q, (w, f)) in weights.iter().zip(nodes).enumerate() {
        let stack = q * terms..(q + 1) * terms;
        let mut aq = a.slice_mut(s![stack.clone(), ..n_in]);
        aq.assign(&f.a[l].slice(s![rows.clone(), ..]));
        aq *= *w;
        if bias {
            a.slice_mut(s![stack.clone(), n_in]).fill(*w);
        }
        d.slice_mut(s![stack, ..])
            .assign(&f.d[l].slice(s![rows.clone(), ..]));
    }
    a.t().dot(&d)
}

/// A block `[width, out]` as rank-one rows appended to `a_out`/`d_out`: by columns (`a` = a
/// column, `d` = a unit vector) or by rows, whichever is fewer.
fn emit_block(block: &Array2<f64>, a_out: &mut Vec<f64>, d_out: &mut Vec<f64>) -> usize {
    let (width, n_out) = block.dim();
    if n_out <= width {
        for j in 0..n_out {
            a_out.extend(block.column(j).iter());
            d_out.extend((0..n_out).map(|o| f64::from(u8::from(o == j))));
        }
        n_out
    } else {
        for i in 0..width {
            a_out.extend((0..width).map(|r| f64::from(u8::from(r == i))));
            d_out.extend(block.row(i).iter());
        }
        width
    }
}

#[cfg(test)]
mod tests {
    use super::merge_into;
    use ndarray::{Array1, Array2, ArrayView1};

    fn pseudo(seed: &mut u64, n: usize) -> Array1<f64> {
        Array1::from_iter((0..n).map(|_| {
            *seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (*seed >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        }))
    }

    /// Merged rows add up to the same block Σ w [a; 1] ⊗ d as the terms, with the promised
    /// row counts.
    #[test]
    fn merging_is_exact_and_as_small_as_promised() {
        let mut seed = 7;
        let q = 9;
        let shared_a = pseudo(&mut seed, 6);
        let shared_d = pseudo(&mut seed, 5);
        // (in, out, shared a?, shared d?, bias, expected rows)
        for (n_in, n_out, same_a, same_d, bias, rows) in [
            (6, 5, true, false, true, 1),
            (6, 5, false, true, true, 1),
            (6, 5, false, true, false, 1),
            (12, 3, false, false, true, 3),
            (2, 12, false, false, true, 3),
            (2, 12, false, false, false, 2),
            (20, 20, false, false, true, q),
        ] {
            let mut vectors = |same: bool, shared: &Array1<f64>, n: usize| -> Vec<Array1<f64>> {
                (0..q)
                    .map(|_| {
                        if same {
                            shared.clone()
                        } else {
                            pseudo(&mut seed, n)
                        }
                    })
                    .collect()
            };
            let a = vectors(same_a, &shared_a, n_in);
            let d = vectors(same_d, &shared_d, n_out);
            let w: Vec<f64> = (0..q).map(|i| 0.1 + i as f64).collect();
            let width = n_in + usize::from(bias);
            let mut want = Array2::<f64>::zeros((width, n_out));
            for i in 0..q {
                let aug: Vec<f64> = a[i].iter().copied().chain(bias.then_some(1.0)).collect();
                for (r, &ar) in aug.iter().enumerate() {
                    want.row_mut(r).scaled_add(w[i] * ar, &d[i]);
                }
            }
            let (av, dv): (Vec<ArrayView1<f64>>, Vec<ArrayView1<f64>>) = (
                a.iter().map(|x| x.view()).collect(),
                d.iter().map(|x| x.view()).collect(),
            );
            let (mut a_out, mut d_out) = (Vec::new(), Vec::new());
            let n = merge_into(&w, &av, &dv, bias, &mut a_out, &mut d_out);
            assert_eq!(n, rows, "{n_in}×{n_out}");
            let a_rows = Array2::from_shape_vec((n, width), a_out).unwrap();
            let d_rows = Array2::from_shape_vec((n, n_out), d_out).unwrap();
            let got = a_rows.t().dot(&d_rows);
            let err = (&want - &got).iter().fold(0.0f64, |m, v| m.max(v.abs()));
            assert!(err < 1e-13, "{n_in}×{n_out}: {err:e}");
        }
    }
}
