//! How a network's Jacobians ∇_w f(x; w) are computed: one named choice per network, in the
//! spirit of neural-tangents' `NtkImplementation`.
//!
//! [`Implementation::detect`] makes the choice once, when the network is rebuilt; everything
//! downstream (the quadrature rules, the kernel machine, the tangent kernels) asks the
//! [`Implementation`], a [`Node`] or a [`Jbar`] and never tests which one it holds. Each
//! implementation is one file:
//!
//! * [`dense`](Implementation::Dense): one backward pass per output and input, for any Burn
//!   module (and the reference the fast paths are tested against);
//! * [`linear`](Implementation::Linear): every parameter sits in a layer that is a linear map of
//!   its input — a linear layer routed through `Switches::linear`, so a sample's gradient is
//!   `a ⊗ δ`, or a convolution routed through `Switches::conv2d`/`conv1d`, `Σ_p a_p ⊗ δ_p` over
//!   its output positions (`conv`) — read for a whole batch from one backward pass, and Jbar
//!   is kept as merged rank-one rows ([`merge`](LayerRows)).
//!
//! A new layer kind with a fast path is one more file here and one more variant.

mod against;
mod combine;
pub(crate) mod conv;
mod dense;
mod linear;
mod merge;
mod spread;

pub use combine::Term;
pub(crate) use dense::split;
pub use linear::{Factors, Layer, Layers};
pub use merge::{ConvBlocks, LayerRows, add_blocks};

use crate::network::Network;
use crate::quadrature::Segment;
use epk_model::EpkModel;
use epk_model::nn::dropout::Keys;
use epk_store::ParamLayout;
use ndarray::Array2;
use std::sync::Arc;

/// How Jacobians and per-sample gradients are computed for one network.
#[derive(Clone, Debug)]
pub enum Implementation {
    /// One backward pass per output per input: any Burn module.
    Dense,
    /// Factors `a ⊗ δ` per probed linear layer or convolution from one batched backward pass.
    Linear(Arc<Layers>),
}

/// One Jacobian evaluation: ∇_w f_k(x; w) for every output k of one input.
pub enum Node {
    /// `[outputs, P]` row-major.
    Dense(Vec<f64>),
    /// One row per output in each layer's factors.
    Factored(Arc<Layers>, Factors),
}

/// Jbar = Σ_q w_q ∇_w f(x; w(t_q)) for one input: the path-averaged Jacobian of a step.
pub enum Jbar {
    /// `[outputs, P]` row-major.
    Dense(Vec<f64>),
    /// Merged rank-one rows per layer, owned by output index.
    Factored(Arc<Layers>, Vec<LayerRows>),
}

impl Implementation {
    /// The fastest exact implementation for `model`: [`Implementation::Linear`] when a probing
    /// forward pass finds linear layers and convolutions holding every parameter exactly once,
    /// else
    /// [`Implementation::Dense`].
    pub fn detect<M: EpkModel>(
        model: &M,
        device: &burn::tensor::Device,
        input_len: usize,
        layout: &[ParamLayout],
        num_params: usize,
    ) -> Self {
        match Layers::detect(model, device, input_len, layout, num_params) {
            Some(layers) => Implementation::Linear(Arc::new(layers)),
            None => Implementation::Dense,
        }
    }

    /// The probed linear layers, for [`Implementation::Linear`].
    pub fn layers(&self) -> Option<&Layers> {
        match self {
            Implementation::Linear(layers) => Some(layers),
            Implementation::Dense => None,
        }
    }

    /// The probed layers, shared, for [`Implementation::Linear`].
    pub fn layer_arc(&self) -> Option<&Arc<Layers>> {
        match self {
            Implementation::Linear(layers) => Some(layers),
            Implementation::Dense => None,
        }
    }

    /// ∇_w f(x; w) for one input.
    pub fn node<M: EpkModel>(&self, net: &Network<M>, w: &[f64], x: &[f64]) -> Node {
        match self {
            Implementation::Dense => Node::Dense(net.jacobian(w, x)),
            Implementation::Linear(layers) => {
                Node::Factored(layers.clone(), net.jacobian_factors(w, x))
            }
        }
    }

    /// Jbar for every input of `xs` under the weighted `nodes` (t, weight) of a fixed rule on
    /// `seg`, with Jbar_k · Δw for each output. The linear implementation evaluates each node
    /// once for all inputs; the dense one goes input by input, so memory stays `[outputs, P]`.
    pub fn integrate_nodes<M: EpkModel>(
        &self,
        net: &Network<M>,
        seg: &Segment<'_>,
        xs: &[f64],
        nodes: &[(f64, f64)],
    ) -> Vec<(Jbar, Vec<f64>)> {
        match self {
            Implementation::Dense => dense::integrate_nodes(self, net, seg, xs, nodes),
            Implementation::Linear(layers) => linear::integrate_nodes(layers, net, seg, xs, nodes),
        }
    }

    /// Σ_j c_rj ∇_w f_j(x_r; w) for every sample r of `xs` with coefficients `coeffs`
    /// `[n, outputs]`: per-sample weighted gradients, `[n, P]` row-major.
    /// With `keys` (the step and each sample's training index) each sample's pass is its
    /// training pass, with the Dropout masks that step used.
    pub fn sample_grads<M: EpkModel>(
        &self,
        net: &Network<M>,
        w: &[f64],
        xs: &[f64],
        coeffs: &[f64],
        keys: Option<Keys<'_>>,
        threads: usize,
    ) -> Vec<f64> {
        match self {
            Implementation::Dense => dense::sample_grads(net, w, xs, coeffs, keys, threads),
            Implementation::Linear(layers) => {
                let f = net.factors_keyed(w, xs, coeffs, keys);
                let p = net.num_params();
                let mut g = vec![0.0; f.rows() * p];
                for (r, row) in g.chunks_mut(p).enumerate() {
                    layers.add_dense(&f, r, 1.0, row);
                }
                g
            }
        }
    }

    /// Every input's Jacobian, `[n·outputs, P]`, row `r·outputs + c` = ∇_w f_c(x_r).
    pub fn jacobians<M: EpkModel>(&self, net: &Network<M>, w: &[f64], xs: &[f64]) -> Array2<f64> {
        let (k, p) = (net.outputs(), net.num_params());
        let n = xs.len() / net.input_len();
        let mut out = Array2::<f64>::zeros((n * k, p));
        match self {
            Implementation::Linear(layers) => {
                let f = net.jacobian_factors(w, xs);
                for (r, mut row) in out.rows_mut().into_iter().enumerate() {
                    layers.add_dense(&f, r, 1.0, row.as_slice_mut().expect("contiguous"));
                }
            }
            Implementation::Dense => {
                let len = net.input_len();
                for (r, rows) in out
                    .as_slice_mut()
                    .expect("contiguous")
                    .chunks_mut(k * p)
                    .enumerate()
                {
                    rows.copy_from_slice(&net.jacobian(w, &xs[r * len..(r + 1) * len]));
                }
            }
        }
        out
    }
}

impl Node {
    /// Adds `w · J` to `out`, `[outputs, P]` row-major, for `k` outputs.
    pub fn add_dense(&self, w: f64, k: usize, out: &mut [f64]) {
        match self {
            Node::Dense(j) => out.iter_mut().zip(j).for_each(|(o, v)| *o += w * v),
            Node::Factored(layers, f) => {
                let p = out.len() / k.max(1);
                for (o, row) in out.chunks_mut(p).enumerate() {
                    layers.add_dense(f, o, w, row);
                }
            }
        }
    }

    /// Adds `w ×` this node's convolution blocks (for `k` outputs) to `blocks` and drops those
    /// layers' factors: an accepted node then holds `[in + 1, out]` per convolution and output
    /// instead of L positions' `in + out` (see [`Layers::absorb_convolutions`]).
    pub fn absorb_convolutions(&mut self, w: f64, k: usize, blocks: &mut ConvBlocks) {
        if let Node::Factored(layers, f) = self {
            layers.absorb_convolutions(w, f, k, blocks);
        }
    }

    /// J_k · v for each of `k` outputs, and max_k Σ_p |J_kp v_p| (the size of those sums, for
    /// rounding bounds).
    pub fn dot(&self, v: &[f64], k: usize) -> (Vec<f64>, f64) {
        match self {
            Node::Dense(j) => {
                let p = v.len();
                let row = |o: usize| j[o * p..(o + 1) * p].iter().zip(v);
                let jdw = (0..k).map(|o| row(o).map(|(a, b)| a * b).sum()).collect();
                let size = (0..k)
                    .map(|o| row(o).map(|(a, b)| (a * b).abs()).sum::<f64>())
                    .fold(0.0, f64::max);
                (jdw, size)
            }
            Node::Factored(layers, f) => {
                debug_assert_eq!(f.samples, k, "one sample per output");
                let (jdw, size) = layers.dot(f, v);
                (jdw, size.into_iter().fold(0.0, f64::max))
            }
        }
    }
}

/// A running Σ_q w_q J_q: dense nodes are summed as they come, factored ones kept and merged
/// at the end.
#[derive(Default)]
pub struct JbarSum {
    dense: Option<Vec<f64>>,
    factored: Option<(Arc<Layers>, Vec<f64>, Vec<Factors>)>,
    /// The convolutions' blocks, summed as nodes come (their factors are not kept).
    blocks: ConvBlocks,
}

impl JbarSum {
    /// Adds `w · node`.
    pub fn add(&mut self, w: f64, node: Node) {
        match node {
            Node::Dense(j) => {
                let acc = self.dense.get_or_insert_with(|| vec![0.0; j.len()]);
                for (a, v) in acc.iter_mut().zip(&j) {
                    *a += w * v;
                }
            }
            Node::Factored(layers, mut f) => {
                let k = f.rows();
                layers.absorb_convolutions(w, &mut f, k, &mut self.blocks);
                let (_, weights, factors) = self
                    .factored
                    .get_or_insert_with(|| (layers, Vec::new(), Vec::new()));
                weights.push(w);
                factors.push(f);
            }
        }
    }

    /// Adds blocks already summed with their weights ([`Node::absorb_convolutions`]).
    pub fn add_blocks(&mut self, blocks: ConvBlocks) {
        add_blocks(&mut self.blocks, blocks);
    }

    /// The sum as a [`Jbar`] for `k` outputs and `p` parameters (zero when nothing was added).
    pub fn finish(self, k: usize, p: usize) -> Jbar {
        let blocks = self.blocks;
        let merged = self.factored.map(|(layers, weights, factors)| {
            let rows = layers.merge(&weights, &factors, k, 0, Some(&blocks));
            (layers, rows)
        });
        match (self.dense, merged) {
            (None, Some((layers, rows))) => Jbar::Factored(layers, rows),
            (dense, merged) => {
                let mut d = dense.unwrap_or_else(|| vec![0.0; k * p]);
                if let Some((layers, rows)) = merged {
                    layers.rows_add_dense(&rows, &mut d);
                }
                Jbar::Dense(d)
            }
        }
    }
}

impl Jbar {
    /// Jbar_k · v for each of `k` outputs.
    pub fn dot(&self, v: &[f64], k: usize) -> Vec<f64> {
        match self {
            Jbar::Dense(d) => {
                let p = v.len();
                (0..k)
                    .map(|o| {
                        d[o * p..(o + 1) * p]
                            .iter()
                            .zip(v)
                            .map(|(a, b)| a * b)
                            .sum()
                    })
                    .collect()
            }
            Jbar::Factored(layers, rows) => layers.rows_dot(rows, v, k),
        }
    }

    /// Adds Jbar to `out`, `[outputs, P]` row-major.
    pub fn add_dense(&self, out: &mut [f64]) {
        match self {
            Jbar::Dense(d) => out.iter_mut().zip(d).for_each(|(o, v)| *o += v),
            Jbar::Factored(layers, rows) => layers.rows_add_dense(rows, out),
        }
    }
}
