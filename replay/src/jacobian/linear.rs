//! The fast path for models whose parameters all sit in layers that are linear maps of their
//! input, routed through [`Switches::linear`](epk_model::Switches::linear) or
//! [`Switches::conv2d`](epk_model::Switches::conv2d)/[`conv1d`](epk_model::Switches::conv1d).
//!
//! A linear layer's gradient for one sample is an outer product, ∂f/∂W = a ⊗ δ (the layer's
//! input and the gradient at its output), and ∂f/∂b = δ. A convolution applies one linear map
//! to the input patch of each of its L output positions, so its gradient is Σ_p a_p ⊗ δ_p =
//! Aᵀ·D (the unfolded input against the output gradients, [`conv`](super::conv)): a layer with
//! L rows per sample. One batched backward pass with a zero "probe" added to each layer's output
//! gives every sample's δ at once, and ⟨a ⊗ δ, a' ⊗ δ'⟩ = (a·a')(δ·δ'), so kernel values never
//! need the P-long gradients (Novak et al., "Fast Finite Width Neural Tangent Kernel").

use super::Jbar;
use super::merge::ConvBlocks;
use super::merge::LayerRows;
use crate::network::Network;
use crate::quadrature::Segment;
use burn::module::{ModuleVisitor, Param, ParamId};
use burn::tensor::{Device, Tensor};
use epk_model::float_tensor;
use epk_model::{EpkModel, LinearMap, Switches};
use epk_store::ParamLayout;
use ndarray::{
    Array1, Array2, ArrayView1, ArrayView2, ArrayViewMut2, Axis, CowArray, Ix2, ShapeBuilder, s,
};
use std::sync::Arc;

/// One probed layer (a linear layer, or one channel group of a convolution): where its weight
/// and bias sit in the flat parameter vector.
#[derive(Clone, Debug, PartialEq)]
pub struct Layer {
    /// Offset of the weight in the flat parameter vector.
    pub weight: usize,
    /// Offset of the bias, if any.
    pub bias: Option<usize>,
    /// Input width (a convolution's patch length, in/groups · kh · kw).
    pub inputs: usize,
    /// Output width (a convolution's output channels per group).
    pub outputs: usize,
    /// Rows per sample: 1 for a linear layer, the output positions of a convolution.
    pub positions: usize,
    /// Whether the weight is stored `[out, in]` (a convolution's `[out, in/groups, kh, kw]`)
    /// rather than `[in, out]` (Burn's `Linear`).
    pub transposed: bool,
}

impl Layer {
    /// Where W[i, o] sits in the flat parameter vector (the tests' independent indexing).
    #[cfg(test)]
    pub(crate) fn at(&self, i: usize, o: usize) -> usize {
        if self.transposed {
            self.weight + o * self.inputs + i
        } else {
            self.weight + i * self.outputs + o
        }
    }

    /// The weight part of the flat vector `v` as `[in, out]`, whatever its storage order.
    fn view<'a>(&self, v: &'a [f64]) -> ArrayView2<'a, f64> {
        let w = &v[self.weight..self.weight + self.inputs * self.outputs];
        let shape = (self.inputs, self.outputs);
        if self.transposed {
            ArrayView2::from_shape(shape.strides((1, self.inputs)), w)
        } else {
            ArrayView2::from_shape(shape, w)
        }
        .expect("layer shape")
    }

    /// Multiply-adds of contracting `rows` Jbar rows with `n` samples' factors by Gram
    /// products: rows · n · L · (in + out).
    pub(crate) fn gram_cost(&self, rows: usize, n: usize) -> usize {
        rows * n * self.positions * (self.inputs + self.outputs)
    }

    /// The same against each sample's gradient Aᵀ D formed once: n · L · in · out to form
    /// them, rows · n · in · out to contract.
    pub(crate) fn dense_cost(&self, rows: usize, n: usize) -> usize {
        (self.positions + rows) * n * self.inputs * self.outputs
    }

    /// The weight part of the flat vector `out` as `[in, out]`, whatever its storage order.
    pub(super) fn view_mut<'a>(&self, out: &'a mut [f64]) -> ArrayViewMut2<'a, f64> {
        let w = &mut out[self.weight..self.weight + self.inputs * self.outputs];
        let shape = (self.inputs, self.outputs);
        if self.transposed {
            ArrayViewMut2::from_shape(shape.strides((1, self.inputs)), w)
        } else {
            ArrayViewMut2::from_shape(shape, w)
        }
        .expect("layer shape")
    }

    /// Adds the `[in, out]` matrix `g` to the weight part of the flat vector `out`.
    fn add_weight(&self, g: &ArrayView2<'_, f64>, out: &mut [f64]) {
        let mut view = self.view_mut(out);
        view += g;
    }

    /// A gradient block `g` `[in (+ 1), out]` dotted with `v` (with `abs`, in absolute values).
    pub(super) fn block_dot(&self, g: &Array2<f64>, v: &[f64], abs: bool) -> f64 {
        let size = |x: f64| size1(x, abs);
        let w = self.view(v);
        let weight = g.slice(s![..self.inputs, ..]);
        let mut total: f64 = weight.iter().zip(w.iter()).map(|(a, b)| size(a * b)).sum();
        if let Some(b) = self.bias {
            let vb = &v[b..b + self.outputs];
            total += g
                .row(self.inputs)
                .iter()
                .zip(vb)
                .map(|(a, b)| size(a * b))
                .sum::<f64>();
        }
        total
    }

    /// Each row r of the factors dotted with `v`: a_rᵀ V d_r + v_b · d_r (with `abs`, in
    /// absolute values).
    pub(super) fn dot_rows(
        &self,
        a: &Array2<f64>,
        d: &Array2<f64>,
        v: &[f64],
        abs: bool,
    ) -> Array1<f64> {
        let (a, d, w) = (
            sized(a.view(), abs),
            sized(d.view(), abs),
            sized(self.view(v), abs),
        );
        let mut rows = (a.dot(&w) * &d).sum_axis(Axis(1));
        if let Some(b) = self.bias {
            let vb = Array1::from_iter(v[b..b + self.outputs].iter().map(|x| size1(*x, abs)));
            rows += &d.dot(&vb);
        }
        rows
    }

    /// [`Layer::dot_rows`] when every row has the same input `a` (one Jacobian evaluation's
    /// rows, one per output): aᵀV is formed once, in one pass over V that skips the zero
    /// inputs a ReLU leaves, instead of once per row.
    pub(super) fn dot_one_input(
        &self,
        a: ArrayView1<'_, f64>,
        d: &Array2<f64>,
        v: &[f64],
        abs: bool,
    ) -> Array1<f64> {
        let mut av = Array1::<f64>::zeros(self.outputs);
        for (&x, row) in a.iter().zip(self.view(v).rows()) {
            if x != 0.0 {
                av.zip_mut_with(&row, |o, w| *o += size1(x, abs) * size1(*w, abs));
            }
        }
        if let Some(b) = self.bias {
            av.zip_mut_with(&ArrayView1::from(&v[b..b + self.outputs]), |o, w| {
                *o += size1(*w, abs)
            });
        }
        sized(d.view(), abs).dot(&av)
    }

    /// Adds `scale · a ⊗ d` (`a` of the layer's inputs, `d` of its outputs) to the weight part
    /// of the flat vector `out`, a contiguous run of the stored order at a time.
    pub(crate) fn add_outer(&self, scale: f64, a: &[f64], d: &[f64], out: &mut [f64]) {
        let w = &mut out[self.weight..self.weight + self.inputs * self.outputs];
        let (rows, cols, width) = if self.transposed {
            (d, a, self.inputs)
        } else {
            (a, d, self.outputs)
        };
        for (run, &r) in w.chunks_exact_mut(width).zip(rows) {
            let c = scale * r;
            run.iter_mut().zip(cols).for_each(|(x, v)| *x += c * v);
        }
    }
}

/// `m`, or `|m|` with `abs`.
fn sized(m: ArrayView2<'_, f64>, abs: bool) -> CowArray<'_, f64, Ix2> {
    if abs {
        m.mapv(f64::abs).into()
    } else {
        m.into()
    }
}

/// `x`, or `|x|` with `abs`.
fn size1(x: f64, abs: bool) -> f64 {
    if abs { x.abs() } else { x }
}

/// Per-sample gradient factors for a batch: per layer, inputs `a` `[n·L, in]` and output
/// gradients `d` `[n·L, out]`, L = the layer's positions (sample-major). Sample r's gradient
/// is Σ_p `a[rL + p] ⊗ d[rL + p]` for W and Σ_p `d[rL + p]` for b.
#[derive(Clone, Debug)]
pub struct Factors {
    /// Per layer, the inputs `a`, `[n·L, in]`.
    pub a: Vec<Array2<f64>>,
    /// Per layer, the output gradients `d`, `[n·L, out]`.
    pub d: Vec<Array2<f64>>,
    /// n, the number of samples.
    pub samples: usize,
    /// Per layer, for a convolution whose positions were summed
    /// ([`Layers::block_convolutions`]), each sample's gradient block `[in (+ 1), out]` (the
    /// last row the bias's); that layer's `a` and `d` then have no rows. Empty otherwise.
    pub blocks: ConvBlocks,
}

impl Factors {
    /// The number of samples.
    pub fn rows(&self) -> usize {
        self.samples
    }

    /// Samples `start..start + count` as factors of their own.
    pub fn select(&self, start: usize, count: usize) -> Factors {
        let pick = |m: &Array2<f64>| {
            let per = m.nrows() / self.samples.max(1);
            m.slice(ndarray::s![start * per..(start + count) * per, ..])
                .to_owned()
        };
        let blocks = self
            .blocks
            .iter()
            .map(|b| b.as_ref().map(|b| b[start..start + count].to_vec()));
        Factors {
            a: self.a.iter().map(pick).collect(),
            d: self.d.iter().map(pick).collect(),
            samples: count,
            blocks: blocks.collect(),
        }
    }

    /// Sample r's block of layer `l`, if its positions were summed.
    pub fn block(&self, l: usize, r: usize) -> Option<&Array2<f64>> {
        self.blocks.get(l)?.as_ref().map(|b| &b[r])
    }

    /// Sample r's rows of layer `l` with `positions` rows per sample: (a, d).
    pub fn sample(
        &self,
        l: usize,
        r: usize,
        positions: usize,
    ) -> (ArrayView2<'_, f64>, ArrayView2<'_, f64>) {
        let rows = ndarray::s![r * positions..(r + 1) * positions, ..];
        (self.a[l].slice(rows), self.d[l].slice(rows))
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
        let _ = epk_model::nn::dropout::evaluation(|| model.epk_forward(x, &mut sw));
        let mut layers = Vec::new();
        for probe in sw.into_probes() {
            let bias = match probe.bias {
                Some(id) => Some(offset(id)?),
                None => None,
            };
            let weight = offset(probe.weight)?;
            match &probe.map {
                LinearMap::Dense => layers.push(Layer {
                    weight,
                    bias,
                    inputs: probe.input.dims()[1],
                    outputs: probe.leaf.dims()[1],
                    positions: 1,
                    transposed: false,
                }),
                LinearMap::Conv(g) => layers.extend(super::conv::layers(g, weight, bias)?),
            }
        }
        Layers::covering(layers, num_params)
    }

    /// The layers, if together they hold every parameter exactly once (their weights and
    /// biases tile `0..num_params`).
    pub fn covering(layers: Vec<Layer>, num_params: usize) -> Option<Self> {
        let mut spans: Vec<(usize, usize)> = layers
            .iter()
            .flat_map(|l| {
                std::iter::once((l.weight, l.inputs * l.outputs))
                    .chain(l.bias.map(|b| (b, l.outputs)))
            })
            .collect();
        spans.sort_unstable();
        let mut next = 0;
        for (start, len) in spans {
            if start != next {
                return None;
            }
            next += len;
        }
        (next == num_params && !layers.is_empty()).then_some(Layers { layers, num_params })
    }

    /// Adds `scale ×` sample r's gradient to the flat vector `out`.
    pub fn add_dense(&self, f: &Factors, r: usize, scale: f64, out: &mut [f64]) {
        for (i, l) in self.layers.iter().enumerate() {
            if let Some(g) = f.block(i, r) {
                l.add_weight(&(&g.slice(s![..l.inputs, ..]) * scale).view(), out);
                if let Some(b) = l.bias {
                    let db = g.row(l.inputs);
                    let bias = out[b..b + l.outputs].iter_mut().zip(db);
                    bias.for_each(|(o, dv)| *o += scale * dv);
                }
                continue;
            }
            let (a, d) = f.sample(i, r, l.positions);
            if l.positions == 1 {
                let (a, d) = (a.row(0).to_vec(), d.row(0).to_vec());
                l.add_outer(scale, &a, &d, out);
            } else {
                l.add_weight(&(a.t().dot(&d) * scale).view(), out);
            }
            if let Some(b) = l.bias {
                for (o, dv) in out[b..b + l.outputs].iter_mut().zip(d.sum_axis(Axis(0))) {
                    *o += scale * dv;
                }
            }
        }
    }

    /// ‖sample r's gradient‖₂ for every sample, without forming the P-long gradients: per
    /// layer ‖a‖²‖d‖² (plus ‖d‖² for a bias) for one row per sample, ‖Aᵀ D‖²_F + ‖Σ_p d_p‖²
    /// for several.
    pub fn norms(&self, f: &Factors) -> Vec<f64> {
        let mut sq = vec![0.0; f.rows()];
        for (i, l) in self.layers.iter().enumerate() {
            let bias = if l.bias.is_some() { 1.0 } else { 0.0 };
            for (r, s) in sq.iter_mut().enumerate() {
                let (a, d) = f.sample(i, r, l.positions);
                *s += if l.positions == 1 {
                    let (a, d) = (a.row(0), d.row(0));
                    (a.dot(&a) + bias) * d.dot(&d)
                } else {
                    let g = a.t().dot(&d);
                    let db = d.sum_axis(Axis(0));
                    g.iter().map(|v| v * v).sum::<f64>() + bias * db.dot(&db)
                };
            }
        }
        sq.into_iter().map(f64::sqrt).collect()
    }

    /// Σ_r of every sample's gradient, flat: Aᵀ D per layer and Σ d for biases.
    pub fn sum_dense(&self, f: &Factors) -> Vec<f64> {
        let mut out = vec![0.0; self.num_params];
        for (i, l) in self.layers.iter().enumerate() {
            l.add_weight(&f.a[i].t().dot(&f.d[i]).view(), &mut out);
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
            let w = l.view(v);
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

    /// Kernel values between one layer's Jbar rows and sample gradients: `out[r, n]` =
    /// Σ_p (a_r·[a_np, 1]) (d_r·d_np) for layer `l`, by Gram products of the factors, or, for
    /// a layer with many positions where that is cheaper, against each sample's gradient
    /// Aᵀ D formed once.
    pub fn gram_layer(&self, l: usize, rows: &LayerRows, samples: &Factors) -> Array2<f64> {
        let layer = &self.layers[l];
        let (n, positions) = (samples.rows(), layer.positions);
        if layer.gram_cost(rows.owner.len(), n) > layer.dense_cost(rows.owner.len(), n) {
            return super::conv::gram_dense(layer, l, rows, samples);
        }
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
        let g = ga * gd;
        if positions == 1 {
            return g;
        }
        g.into_shape_with_order((rows.owner.len(), n, positions))
            .expect("[rows, n·L]")
            .sum_axis(Axis(2))
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
            let rows = layers.merge(&weights, &all, k, pt * k, None);
            let jdw = layers.rows_dot(&rows, seg.delta, k);
            (Jbar::Factored(layers.clone(), rows), jdw)
        })
        .collect()
}
