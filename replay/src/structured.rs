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

    /// Kernel values between node gradients and sample gradients:
    /// `out[q, r] = Σ_l (a_q·a_r + [bias]) (d_q·d_r)` for `nodes` `[Q]` and `samples` `[N]`.
    pub fn gram(&self, nodes: &Factors, samples: &Factors) -> Array2<f64> {
        let mut out = Array2::<f64>::zeros((nodes.rows(), samples.rows()));
        for (i, l) in self.layers.iter().enumerate() {
            let mut ga = nodes.a[i].dot(&samples.a[i].t());
            if l.bias.is_some() {
                ga += 1.0;
            }
            let gd = nodes.d[i].dot(&samples.d[i].t());
            out += &(ga * gd);
        }
        out
    }
}

/// Stacks factors of several batches row-wise.
pub fn stack(parts: &[&Factors]) -> Factors {
    let layers = parts.first().map_or(0, |p| p.a.len());
    let cat = |pick: &dyn Fn(&Factors, usize) -> &Array2<f64>, l: usize| {
        let views: Vec<_> = parts.iter().map(|p| pick(p, l).view()).collect();
        ndarray::concatenate(Axis(0), &views).expect("same layer widths")
    };
    Factors {
        a: (0..layers).map(|l| cat(&|p, l| &p.a[l], l)).collect(),
        d: (0..layers).map(|l| cat(&|p, l| &p.d[l], l)).collect(),
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

/// A weighted rank-one term `w · a ⊗ d` (`a` augmented as in [`LayerRows`]).
type Term = (f64, Array1<f64>, Array1<f64>);

/// The fewest exact rank-one rows for `Σ_q w_q a_q ⊗ d_q`: nodes with bitwise-equal `a` merged
/// into `a ⊗ Σ w_q d_q` (a first layer's input is the point itself at every node), or with
/// equal `d` into `(Σ w_q a_q) ⊗ d` (a last linear layer without a nonlinearity after it), or
/// the summed `[in, out]` block written as `min(in, out)` rows (a narrow layer, such as the
/// three-class output layer under a log-softmax). Exact up to rounding; the contraction with
/// training gradients then costs `rows · (in + out)` per sample whatever the rule's node count.
fn merge_terms(terms: &[Term]) -> Vec<(Array1<f64>, Array1<f64>)> {
    let q = terms.len();
    let (width_a, width_d) = terms.first().map_or((0, 0), |(_, a, d)| (a.len(), d.len()));
    let unique = |pick: &dyn Fn(&Term) -> &Array1<f64>| {
        let mut seen = std::collections::HashSet::<Vec<u64>>::new();
        for t in terms {
            seen.insert(pick(t).iter().map(|v| v.to_bits()).collect());
        }
        seen.len()
    };
    let (by_a, by_d) = (unique(&|t| &t.1), unique(&|t| &t.2));
    let best = q.min(by_a).min(by_d).min(width_a).min(width_d);
    if best == q {
        return terms
            .iter()
            .map(|(w, a, d)| (a.clone(), d.mapv(|v| w * v)))
            .collect();
    }
    if best == by_a || best == by_d {
        let on_a = best == by_a;
        let mut index = std::collections::HashMap::<Vec<u64>, usize>::new();
        let mut out: Vec<(Array1<f64>, Array1<f64>)> = Vec::new();
        for (w, a, d) in terms {
            let (key, value) = if on_a { (a, d) } else { (d, a) };
            let bits: Vec<u64> = key.iter().map(|v| v.to_bits()).collect();
            let slot = *index.entry(bits).or_insert_with(|| {
                out.push((key.clone(), Array1::zeros(value.len())));
                out.len() - 1
            });
            out[slot].1.scaled_add(*w, value);
        }
        return if on_a {
            out
        } else {
            out.into_iter().map(|(d, a)| (a, d)).collect()
        };
    }
    // The summed block B = Σ w_q a_q d_qᵀ, by columns or by rows.
    let mut block = Array2::<f64>::zeros((width_a, width_d));
    for (w, a, d) in terms {
        for (i, &ai) in a.iter().enumerate() {
            block.row_mut(i).scaled_add(w * ai, d);
        }
    }
    let unit = |n: usize, j: usize| {
        let mut e = Array1::zeros(n);
        e[j] = 1.0;
        e
    };
    if width_d <= width_a {
        (0..width_d)
            .map(|j| (block.column(j).to_owned(), unit(width_d, j)))
            .collect()
    } else {
        (0..width_a)
            .map(|i| (unit(width_a, i), block.row(i).to_owned()))
            .collect()
    }
}

impl Layers {
    /// Σ_q w_q J_q, with each J_q a single input's Jacobian factors (`[k, ·]` per layer), as
    /// merged rows per layer owned by output index.
    pub fn merge(&self, weights: &[f64], nodes: &[Factors], k: usize) -> Vec<LayerRows> {
        self.layers
            .iter()
            .enumerate()
            .map(|(l, layer)| {
                let mut owner = Vec::new();
                let (mut a_rows, mut d_rows) = (Vec::new(), Vec::new());
                for o in 0..k {
                    let terms: Vec<Term> = weights
                        .iter()
                        .zip(nodes)
                        .map(|(&w, f)| {
                            let a = f.a[l].row(o);
                            let a = if layer.bias.is_some() {
                                a.iter().copied().chain([1.0]).collect()
                            } else {
                                a.to_owned()
                            };
                            (w, a, f.d[l].row(o).to_owned())
                        })
                        .collect();
                    for (a, d) in merge_terms(&terms) {
                        owner.push(o);
                        a_rows.push(a);
                        d_rows.push(d);
                    }
                }
                let stack_rows = |rows: &[Array1<f64>], width: usize| {
                    let views: Vec<_> = rows.iter().map(|r| r.view()).collect();
                    if views.is_empty() {
                        Array2::zeros((0, width))
                    } else {
                        ndarray::stack(Axis(0), &views).expect("rows of one layer share a width")
                    }
                };
                let width_a = layer.inputs + usize::from(layer.bias.is_some());
                LayerRows {
                    owner,
                    a: stack_rows(&a_rows, width_a),
                    d: stack_rows(&d_rows, layer.outputs),
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
    use super::{Term, merge_terms};
    use ndarray::{Array1, Array2};

    fn pseudo(seed: &mut u64, n: usize) -> Array1<f64> {
        Array1::from_iter((0..n).map(|_| {
            *seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (*seed >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        }))
    }

    fn dense(terms: &[(Array1<f64>, Array1<f64>)], scale: &[f64]) -> Array2<f64> {
        let (n, m) = (terms[0].0.len(), terms[0].1.len());
        let mut out = Array2::zeros((n, m));
        for ((a, d), w) in terms.iter().zip(scale) {
            for i in 0..n {
                out.row_mut(i).scaled_add(w * a[i], d);
            }
        }
        out
    }

    /// Merged rows add up to the same block as the terms, with the promised row counts.
    #[test]
    fn merging_is_exact_and_as_small_as_promised() {
        let mut seed = 7;
        let q = 9;
        let shared_a = pseudo(&mut seed, 6);
        let shared_d = pseudo(&mut seed, 5);
        // (in, out, shared a?, shared d?, expected rows)
        for (width_a, width_d, same_a, same_d, rows) in [
            (6, 5, true, false, 1),
            (6, 5, false, true, 1),
            (12, 3, false, false, 3),
            (2, 12, false, false, 2),
            (20, 20, false, false, q),
        ] {
            let terms: Vec<Term> = (0..q)
                .map(|i| {
                    let a = if same_a {
                        shared_a.clone()
                    } else {
                        pseudo(&mut seed, width_a)
                    };
                    let d = if same_d {
                        shared_d.clone()
                    } else {
                        pseudo(&mut seed, width_d)
                    };
                    (0.1 + i as f64, a, d)
                })
                .collect();
            let merged = merge_terms(&terms);
            assert_eq!(merged.len(), rows, "{width_a}×{width_d}");
            let plain: Vec<_> = terms
                .iter()
                .map(|(_, a, d)| (a.clone(), d.clone()))
                .collect();
            let weights: Vec<f64> = terms.iter().map(|t| t.0).collect();
            let want = dense(&plain, &weights);
            let got = dense(&merged, &vec![1.0; merged.len()]);
            let err = (&want - &got).iter().fold(0.0f64, |m, v| m.max(v.abs()));
            assert!(err < 1e-14, "{width_a}×{width_d}: {err:e}");
        }
    }
}
