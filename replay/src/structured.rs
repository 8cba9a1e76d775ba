//! The fast path for models whose parameters all sit in linear layers routed through
//! [`Switches::linear`](epk_recorder::Switches::linear).
//!
//! A linear layer's gradient for one sample is an outer product, ∂f/∂W = a ⊗ δ (the layer's
//! input and the gradient at its output), and ∂f/∂b = δ. One batched backward pass with a zero
//! "probe" added to each layer's output gives every sample's δ at once, and
//! ⟨a ⊗ δ, a' ⊗ δ'⟩ = (a·a')(δ·δ'), so kernel values never need the P-long gradients
//! (Novak et al., "Fast Finite Width Neural Tangent Kernel").

use epk_store::ParamLayout;
use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis};

/// One probed linear layer: where its weight `[in, out]` (row-major) and bias sit in the flat
/// parameter vector.
#[derive(Clone, Debug, PartialEq)]
pub struct Layer {
    pub weight: usize,
    pub bias: Option<usize>,
    pub inputs: usize,
    pub outputs: usize,
}

/// Per-sample gradient factors for a batch: per layer, inputs `a` `[n, in]` and output
/// gradients `d` `[n, out]`. Sample r's gradient is `a[r] ⊗ d[r]` for W and `d[r]` for b.
#[derive(Clone, Debug)]
pub struct Factors {
    pub a: Vec<Array2<f64>>,
    pub d: Vec<Array2<f64>>,
}

impl Factors {
    pub fn rows(&self) -> usize {
        self.a.first().map_or(0, |a| a.nrows())
    }
}

/// The probed layers of a model, in forward order.
#[derive(Clone, Debug)]
pub struct Layers {
    pub layers: Vec<Layer>,
    pub num_params: usize,
}

impl Layers {
    /// The layers, if together they hold every parameter exactly once.
    pub fn covering(layers: Vec<Layer>, layout: &[ParamLayout], num_params: usize) -> Option<Self> {
        let mut covered = vec![false; layout.len()];
        let mut mark = |offset: usize, len: usize| -> bool {
            match layout
                .iter()
                .position(|p| p.offset == offset && p.len == len)
            {
                Some(i) if !covered[i] => {
                    covered[i] = true;
                    true
                }
                _ => false,
            }
        };
        for l in &layers {
            if !mark(l.weight, l.inputs * l.outputs) {
                return None;
            }
            if let Some(b) = l.bias
                && !mark(b, l.outputs)
            {
                return None;
            }
        }
        covered
            .iter()
            .all(|&c| c)
            .then_some(Layers { layers, num_params })
    }

    fn weight<'a>(&self, v: &'a [f64], l: &Layer) -> ArrayView2<'a, f64> {
        ArrayView2::from_shape(
            (l.inputs, l.outputs),
            &v[l.weight..l.weight + l.inputs * l.outputs],
        )
        .expect("layer shape")
    }

    /// Sample r's gradient dotted with `v`: Σ_l a_rᵀ V_l d_r + v_b · d_r. With `abs`, the same
    /// with every term's absolute value (the size of the sum, for rounding bounds).
    pub fn dot(&self, f: &Factors, r: usize, v: &[f64], abs: bool) -> f64 {
        let mut total = 0.0;
        for (i, l) in self.layers.iter().enumerate() {
            let (a, d) = (f.a[i].row(r), f.d[i].row(r));
            let w = self.weight(v, l);
            if abs {
                let a = a.mapv(f64::abs);
                let d = d.mapv(f64::abs);
                total += a.dot(&w.mapv(f64::abs).dot(&d));
                if let Some(b) = l.bias {
                    total += d
                        .iter()
                        .zip(&v[b..b + l.outputs])
                        .map(|(d, v)| d * v.abs())
                        .sum::<f64>();
                }
            } else {
                total += a.dot(&w.dot(&d));
                if let Some(b) = l.bias {
                    total += d
                        .iter()
                        .zip(&v[b..b + l.outputs])
                        .map(|(d, v)| d * v)
                        .sum::<f64>();
                }
            }
        }
        total
    }

    /// Adds `scale ×` sample r's gradient to the flat vector `out`.
    pub fn add_dense(&self, f: &Factors, r: usize, scale: f64, out: &mut [f64]) {
        for (i, l) in self.layers.iter().enumerate() {
            let (a, d) = (f.a[i].row(r), f.d[i].row(r));
            for (p, &ap) in a.iter().enumerate() {
                let row = &mut out[l.weight + p * l.outputs..l.weight + (p + 1) * l.outputs];
                for (o, &dv) in row.iter_mut().zip(d.iter()) {
                    *o += scale * ap * dv;
                }
            }
            if let Some(b) = l.bias {
                for (o, &dv) in out[b..b + l.outputs].iter_mut().zip(d.iter()) {
                    *o += scale * dv;
                }
            }
        }
    }

    /// Σ_r of every sample's gradient, flat: Aᵀ D per layer and Σ_r d_r for biases.
    pub fn sum_dense(&self, f: &Factors) -> Vec<f64> {
        let mut out = vec![0.0; self.num_params];
        for (i, l) in self.layers.iter().enumerate() {
            let w = f.a[i].t().dot(&f.d[i]);
            out[l.weight..l.weight + l.inputs * l.outputs]
                .iter_mut()
                .zip(w.iter())
                .for_each(|(o, v)| *o += v);
            if let Some(b) = l.bias {
                let s: Array1<f64> = f.d[i].sum_axis(Axis(0));
                out[b..b + l.outputs]
                    .iter_mut()
                    .zip(s.iter())
                    .for_each(|(o, v)| *o += v);
            }
        }
        out
    }
}

/// One layer's part of a factored Jbar: row r contributes `a[r] ⊗ d[r]` to output row
/// `owner[r]`. `a` is augmented with the bias input: for a layer with a bias its last column is
/// the coefficient of the bias gradient `d` (1 for a single Jacobian).
#[derive(Clone, Debug)]
pub struct LayerRows {
    pub owner: Vec<usize>,
    pub a: Array2<f64>,
    pub d: Array2<f64>,
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
    let same = |v: &[ArrayView1<'_, f64>]| {
        v[1..].iter().all(|x| {
            x.iter()
                .zip(v[0].iter())
                .all(|(p, r)| p.to_bits() == r.to_bits())
        })
    };
    let push_a = |out: &mut Vec<f64>, row: &ArrayView1<'_, f64>, w: f64, bias_value: f64| {
        out.extend(row.iter().map(|v| w * v));
        if bias {
            out.push(bias_value);
        }
    };
    if same(a) {
        push_a(a_out, &a[0], 1.0, 1.0);
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
            push_a(a_out, aq, 1.0, 1.0);
            d_out.extend(dq.iter().map(|v| w * v));
        }
        return q;
    }
    // The summed block B = Σ w_q [a_q; 1] d_qᵀ, `[width, out]`, by columns or by rows.
    let mut block = vec![0.0; width * n_out];
    for ((w, aq), dq) in weights.iter().zip(a).zip(d) {
        for (i, ai) in aq.iter().chain(bias.then_some(&1.0)).enumerate() {
            let c = w * ai;
            for (b, v) in block[i * n_out..(i + 1) * n_out].iter_mut().zip(dq.iter()) {
                *b += c * v;
            }
        }
    }
    if n_out <= width {
        for j in 0..n_out {
            a_out.extend((0..width).map(|i| block[i * n_out + j]));
            d_out.extend((0..n_out).map(|o| f64::from(u8::from(o == j))));
        }
        n_out
    } else {
        for i in 0..width {
            a_out.extend((0..width).map(|r| f64::from(u8::from(r == i))));
            d_out.extend_from_slice(&block[i * n_out..(i + 1) * n_out]);
        }
        width
    }
}

impl Layers {
    /// Σ_q w_q J_q for one input, with J_q its Jacobian factors at rule node q (rows
    /// `base..base + k` of `nodes[q]`, one per output), as merged rows per layer owned by
    /// output index.
    pub fn merge(
        &self,
        weights: &[f64],
        nodes: &[Factors],
        k: usize,
        base: usize,
    ) -> Vec<LayerRows> {
        self.layers
            .iter()
            .enumerate()
            .map(|(l, layer)| {
                let bias = layer.bias.is_some();
                let width = layer.inputs + usize::from(bias);
                let (mut a_out, mut d_out, mut owner) = (Vec::new(), Vec::new(), Vec::new());
                for o in 0..k {
                    let a: Vec<_> = nodes.iter().map(|f| f.a[l].row(base + o)).collect();
                    let d: Vec<_> = nodes.iter().map(|f| f.d[l].row(base + o)).collect();
                    let rows = if weights.is_empty() {
                        0
                    } else {
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

    /// Jbar · v for each of `k` outputs, from merged rows.
    pub fn rows_dot(&self, rows: &[LayerRows], v: &[f64], k: usize) -> Vec<f64> {
        let mut out = vec![0.0; k];
        for (l, r) in self.layers.iter().zip(rows) {
            let w = self.weight(v, l);
            for ((a, d), &o) in r.a.rows().into_iter().zip(r.d.rows()).zip(&r.owner) {
                let wd = w.dot(&d);
                out[o] += a.slice(ndarray::s![..l.inputs]).dot(&wd);
                if let Some(b) = l.bias {
                    let vb = ArrayView1::from(&v[b..b + l.outputs]);
                    out[o] += a[l.inputs] * vb.dot(&d);
                }
            }
        }
        out
    }

    /// Adds merged rows densely: `out` is `[k, P]` row-major.
    pub fn rows_add_dense(&self, rows: &[LayerRows], out: &mut [f64]) {
        let p = self.num_params;
        for (l, r) in self.layers.iter().zip(rows) {
            for ((a, d), &o) in r.a.rows().into_iter().zip(r.d.rows()).zip(&r.owner) {
                let row = &mut out[o * p..(o + 1) * p];
                for (i, &ai) in a.iter().take(l.inputs).enumerate() {
                    let w = &mut row[l.weight + i * l.outputs..l.weight + (i + 1) * l.outputs];
                    for (x, &dv) in w.iter_mut().zip(d.iter()) {
                        *x += ai * dv;
                    }
                }
                if let Some(b) = l.bias {
                    for (x, &dv) in row[b..b + l.outputs].iter_mut().zip(d.iter()) {
                        *x += a[l.inputs] * dv;
                    }
                }
            }
        }
    }

    /// Kernel values between one layer's Jbar rows and sample gradients:
    /// `out[r, n] = (a_r·[a_n, 1]) (d_r·d_n)` for layer `l`.
    pub fn gram_layer(&self, l: usize, rows: &LayerRows, samples: &Factors) -> Array2<f64> {
        let layer = &self.layers[l];
        let mut ga = rows
            .a
            .slice(ndarray::s![.., ..layer.inputs])
            .dot(&samples.a[l].t());
        if layer.bias.is_some() {
            let bias = rows.a.column(layer.inputs);
            for (mut g, &c) in ga.rows_mut().into_iter().zip(bias.iter()) {
                g += c;
            }
        }
        let gd = rows.d.dot(&samples.d[l].t());
        ga * gd
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
