//! The fast path for models whose parameters all sit in linear layers routed through
//! [`Switches::linear`](epk_model::Switches::linear).
//!
//! A linear layer's gradient for one sample is an outer product, ∂f/∂W = a ⊗ δ (the layer's
//! input and the gradient at its output), and ∂f/∂b = δ. One batched backward pass with a zero
//! "probe" added to each layer's output gives every sample's δ at once, and
//! ⟨a ⊗ δ, a' ⊗ δ'⟩ = (a·a')(δ·δ'), so kernel values never need the P-long gradients
//! (Novak et al., "Fast Finite Width Neural Tangent Kernel").

use super::Jbar;
use super::merge::LayerRows;
use crate::network::Network;
use crate::quadrature::Segment;
use burn::module::{ModuleVisitor, Param, ParamId};
use burn::tensor::{Device, Tensor};
use epk_model::float_tensor;
use epk_model::{EpkModel, Switches};
use epk_store::ParamLayout;
use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis};
use std::sync::Arc;

/// One probed linear layer: where its weight `[in, out]` (row-major) and bias sit in the flat
/// parameter vector.
#[derive(Clone, Debug, PartialEq)]
pub struct Layer {
    /// Offset of the weight in the flat parameter vector.
    pub weight: usize,
    /// Offset of the bias, if any.
    pub bias: Option<usize>,
    /// Input width.
    pub inputs: usize,
    /// Output width.
    pub outputs: usize,
}

/// Per-sample gradient factors for a batch: per layer, inputs `a` `[n, in]` and output
/// gradients `d` `[n, out]`. Sample r's gradient is `a[r] ⊗ d[r]` for W and `d[r]` for b.
#[derive(Clone, Debug)]
pub struct Factors {
    /// Per layer, the inputs `a`, `[n, in]`.
    pub a: Vec<Array2<f64>>,
    /// Per layer, the output gradients `d`, `[n, out]`.
    pub d: Vec<Array2<f64>>,
}

impl Factors {
    /// The number of samples (rows).
    pub fn rows(&self) -> usize {
        self.a.first().map_or(0, |a| a.nrows())
    }
}

/// The probed layers of a model, in forward order.
#[derive(Clone, Debug)]
pub struct Layers {
    /// The layers in forward order.
    pub layers: Vec<Layer>,
    /// P: every parameter is in exactly one layer.
    pub num_params: usize,
}

impl Layers {
    /// Runs one probing forward pass of `model` and maps each probed layer to its parameters'
    /// offsets in `layout`: the layers, if together they hold every parameter exactly once.
    pub fn detect<M: EpkModel>(
        model: &M,
        device: &Device,
        input_len: usize,
        layout: &[ParamLayout],
        num_params: usize,
    ) -> Option<Self> {
        struct Ids(Vec<ParamId>);
        impl ModuleVisitor for Ids {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                self.0.push(param.id);
            }
        }
        let mut ids = Ids(Vec::new());
        model.visit(&mut ids);
        let offset = |id: ParamId| {
            ids.0
                .iter()
                .position(|&i| i == id)
                .map(|i| layout[i].offset)
        };
        let mut sw = Switches::probing();
        let x = float_tensor(vec![0.0; input_len], [1, input_len], device);
        let _ = model.epk_forward(x, &mut sw);
        let mut layers = Vec::new();
        for probe in sw.into_probes() {
            let [_, inputs] = probe.input.dims();
            let [_, outputs] = probe.leaf.dims();
            let bias = match probe.bias {
                Some(id) => Some(offset(id)?),
                None => None,
            };
            layers.push(Layer {
                weight: offset(probe.weight)?,
                bias,
                inputs,
                outputs,
            });
        }
        if layers.is_empty() {
            return None;
        }
        Layers::covering(layers, layout, num_params)
    }

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

    /// ‖sample r's gradient‖₂ for every sample: Σ over layers of ‖a_r‖²‖d_r‖², plus ‖d_r‖²
    /// for a bias, without forming the P-long gradients.
    pub fn norms(&self, f: &Factors) -> Vec<f64> {
        let mut sq = vec![0.0; f.rows()];
        for (i, l) in self.layers.iter().enumerate() {
            let bias = if l.bias.is_some() { 1.0 } else { 0.0 };
            for (r, s) in sq.iter_mut().enumerate() {
                let (a, d) = (f.a[i].row(r), f.d[i].row(r));
                *s += (a.dot(&a) + bias) * d.dot(&d);
            }
        }
        sq.into_iter().map(f64::sqrt).collect()
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

impl Layers {
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

/// Jbar and Jbar·Δw for every input at once: each node is one batched pass over all inputs
/// (so inputs share the rule's nodes), and each input's rows are merged across nodes. Jbar·Δw
/// comes from the merged rows: the nodes are not dotted one by one.
pub(super) fn integrate_nodes<M: EpkModel>(
    layers: &Arc<Layers>,
    net: &Network<M>,
    seg: &Segment<'_>,
    xs: &[f64],
    nodes: &[(f64, f64)],
) -> Vec<(Jbar, Vec<f64>)> {
    let k = net.outputs();
    let m = xs.len() / net.input_len();
    let all: Vec<Factors> = nodes
        .iter()
        .map(|&(t, _)| net.jacobian_factors(&seg.at(t), xs))
        .collect();
    let weights: Vec<f64> = nodes.iter().map(|&(_, w)| w).collect();
    (0..m)
        .map(|pt| {
            let rows = layers.merge(&weights, &all, k, pt * k);
            let jdw = layers.rows_dot(&rows, seg.delta, k);
            (Jbar::Factored(layers.clone(), rows), jdw)
        })
        .collect()
}
