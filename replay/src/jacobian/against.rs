//! Per-sample gradients held as factors, met by a flat vector (`dot`) or by dense rows
//! (`rows_against`: ⟨V_r, ∇_w f(x_s)⟩ for every row r, the stateful adjoint's E_s, one per
//! point and output, and sample s), without the samples' P-long gradients.

use super::linear::{Factors, Layer, Layers};
use ndarray::{Array2, ArrayView2, Axis, s};

impl Layers {
    /// Every sample's gradient dotted with `v`, and the same with every factor's absolute
    /// value (the size of the sum, for rounding bounds): Σ_l Σ_p a_pᵀ V_l d_p + v_b · Σ_p d_p.
    pub fn dot(&self, f: &Factors, v: &[f64]) -> (Vec<f64>, Vec<f64>) {
        (self.dot_sized(f, v, false), self.dot_sized(f, v, true))
    }

    /// Every sample's gradient dotted with `v` (with `abs`, in absolute values).
    fn dot_sized(&self, f: &Factors, v: &[f64], abs: bool) -> Vec<f64> {
        let mut total = vec![0.0; f.samples];
        for (i, l) in self.layers.iter().enumerate() {
            if f.blocks.get(i).is_some_and(Option::is_some) {
                for (r, t) in total.iter_mut().enumerate() {
                    *t += l.block_dot(f.block(i, r).expect("a block per sample"), v, abs);
                }
                continue;
            }
            let one_input =
                l.positions == 1 && f.a[i].rows().into_iter().all(|r| r == f.a[i].row(0));
            let rows = if one_input && f.samples > 0 {
                l.dot_one_input(f.a[i].row(0), &f.d[i], v, abs)
            } else {
                l.dot_rows(&f.a[i], &f.d[i], v, abs)
            };
            for (t, sample) in total.iter_mut().zip(rows.exact_chunks(l.positions)) {
                *t += sample.sum();
            }
        }
        total
    }

    /// `rows` `[R, P]` against every sample's gradient in `f`: `[R, n]`, without forming the
    /// `[n, P]` gradients (for 64 samples of Burn's guide model 272 MB, written and read again
    /// every step, for the same multiply-adds). A linear layer meets each row
    /// through one product a·V (Σ_p a_pᵀ V d_p, V the row's weights as `[in, out]`); a
    /// convolution, blocked first ([`Layers::block_convolutions`]), through one product of
    /// all rows with the samples' blocks laid out as the flat vector stores them. Rows are
    /// split across `threads`.
    pub fn rows_against(
        &self,
        f: &Factors,
        rows: ArrayView2<'_, f64>,
        threads: usize,
    ) -> Array2<f64> {
        let mut out = Array2::<f64>::zeros((rows.nrows(), f.rows()));
        for (l, layer) in self.layers.iter().enumerate() {
            match f.blocks.get(l).and_then(Option::as_ref) {
                Some(blocks) => out += &blocks_against(layer, blocks, rows),
                None => by_row(layer, &f.a[l], &f.d[l], rows, &mut out, threads),
            }
        }
        out
    }
}

/// out[r, s] += Σ_p a_spᵀ V_r d_sp for one layer, the rows split across `threads`.
fn by_row(
    layer: &Layer,
    a: &Array2<f64>,
    d: &Array2<f64>,
    rows: ArrayView2<'_, f64>,
    out: &mut Array2<f64>,
    threads: usize,
) {
    let per = rows.nrows().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|scope| {
        for (mine, mut out) in rows
            .axis_chunks_iter(Axis(0), per)
            .zip(out.axis_chunks_iter_mut(Axis(0), per))
        {
            scope.spawn(move || {
                for (row, mut o) in mine.rows().into_iter().zip(out.rows_mut()) {
                    let row = row.as_standard_layout();
                    let v = row.as_slice().expect("standard layout");
                    let per_position = layer.dot_rows(a, d, v, false);
                    for (o, sample) in o.iter_mut().zip(per_position.exact_chunks(layer.positions))
                    {
                        *o += sample.sum();
                    }
                }
            });
        }
    });
}

/// `rows` against each sample's block `[in (+ 1), out]` of one convolution: the blocks
/// written in the stored order of the layer's weights (and bias), then one product.
fn blocks_against(layer: &Layer, blocks: &[Array2<f64>], rows: ArrayView2<'_, f64>) -> Array2<f64> {
    let len = layer.inputs * layer.outputs;
    let at_zero = Layer {
        weight: 0,
        ..layer.clone()
    };
    let mut g = Array2::<f64>::zeros((blocks.len(), len));
    for (mut row, block) in g.rows_mut().into_iter().zip(blocks) {
        let flat = row.as_slice_mut().expect("a fresh array");
        at_zero
            .view_mut(flat)
            .assign(&block.slice(s![..layer.inputs, ..]));
    }
    let weights = rows.slice(s![.., layer.weight..layer.weight + len]);
    let mut out = weights.dot(&g.t());
    if let Some(b) = layer.bias {
        let db = Array2::from_shape_fn((blocks.len(), layer.outputs), |(s, o)| {
            blocks[s][[layer.inputs, o]]
        });
        out += &rows.slice(s![.., b..b + layer.outputs]).dot(&db.t());
    }
    out
}
