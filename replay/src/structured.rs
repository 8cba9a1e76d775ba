//! The fast path for models whose parameters all sit in linear layers routed through
//! [`Switches::linear`](epk_recorder::Switches::linear).
//!
//! A linear layer's gradient for one sample is an outer product, ∂f/∂W = a ⊗ δ (the layer's
//! input and the gradient at its output), and ∂f/∂b = δ. One batched backward pass with a zero
//! "probe" added to each layer's output gives every sample's δ at once, and
//! ⟨a ⊗ δ, a' ⊗ δ'⟩ = (a·a')(δ·δ'), so kernel values never need the P-long gradients
//! (Novak et al., "Fast Finite Width Neural Tangent Kernel").

use epk_store::ParamLayout;
use ndarray::{Array1, Array2, ArrayView2, Axis};

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
