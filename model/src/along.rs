//! A batch whose samples sit at different points of one optimizer step.
//!
//! The `auto` rule integrates each point over its own pieces of a step, so at any moment every
//! point wants its Jacobian at its own t. A layer whose weights are affine in t evaluates every
//! (sample, t) pair of a batch at once: x·W(t) + b(t) = (x·W_s + b_s) + t·(x·ΔW + Δb), and a
//! convolution the same way, since both are linear in their weights. A model whose parameters
//! all sit in layers routed through [`Switches`] (replay's fast path) is then evaluated at
//! w_s + t_r Δw_s for each sample r by one forward pass at w_s, and its backward pass gives
//! every sample's gradient at its own t. The two forms differ by rounding alone.

use crate::Switches;
use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::nn::Linear;
use burn::nn::conv::{Conv1d, Conv2d};
use burn::tensor::{Device, Tensor};
use std::collections::HashMap;

/// Per-sample positions t_r along a step and the step Δw_s, by parameter.
pub struct Along {
    /// t_r, `[batch, 1]`.
    t: Tensor<2>,
    /// Δw_s per parameter, flat.
    deltas: HashMap<ParamId, Tensor<1>>,
}

impl Along {
    /// The positions `t` (one per sample of the batch) along the step `delta`: a module of the
    /// model's structure holding Δw_s as its weights (its parameter ids are the model's).
    pub fn new<M: Module>(delta: &M, t: Vec<f64>, device: &Device) -> Self {
        struct Deltas(HashMap<ParamId, Tensor<1>>);
        impl ModuleVisitor for Deltas {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                let value = param.val();
                let n = value.shape().num_elements();
                self.0.insert(param.id, value.reshape([n]));
            }
        }
        let mut deltas = Deltas(HashMap::new());
        delta.visit(&mut deltas);
        let rows = t.len();
        Along {
            t: crate::float_tensor(t, [rows, 1], device),
            deltas: deltas.0,
        }
    }

    /// Δ of a parameter in the shape `dims`.
    fn delta<const D: usize>(&self, id: ParamId, dims: [usize; D]) -> Param<Tensor<D>> {
        let flat = self
            .deltas
            .get(&id)
            .expect("every parameter of the model has a Δ")
            .clone();
        Param::initialized(ParamId::new(), flat.reshape(dims))
    }

    /// t_r · (x·ΔW + Δb).
    pub(crate) fn linear(&self, layer: &Linear, x: Tensor<2>) -> Tensor<2> {
        let mut d = layer.clone();
        d.weight = self.delta(layer.weight.id, layer.weight.dims());
        d.bias = layer.bias.as_ref().map(|b| self.delta(b.id, b.dims()));
        d.forward(x) * self.t.clone()
    }

    /// t_r · conv(x; ΔW, Δb).
    pub(crate) fn conv2d(&self, layer: &Conv2d, x: Tensor<4>) -> Tensor<4> {
        let mut d = layer.clone();
        d.weight = self.delta(layer.weight.id, layer.weight.dims());
        d.bias = layer.bias.as_ref().map(|b| self.delta(b.id, b.dims()));
        let rows = self.t.dims()[0];
        d.forward(x) * self.t.clone().reshape([rows, 1, 1, 1])
    }

    /// t_r · conv(x; ΔW, Δb).
    pub(crate) fn conv1d(&self, layer: &Conv1d, x: Tensor<3>) -> Tensor<3> {
        let mut d = layer.clone();
        d.weight = self.delta(layer.weight.id, layer.weight.dims());
        d.bias = layer.bias.as_ref().map(|b| self.delta(b.id, b.dims()));
        let rows = self.t.dims()[0];
        d.forward(x) * self.t.clone().reshape([rows, 1, 1])
    }
}

impl Switches {
    /// The same collector with each sample of the batch at its own point of a step (see
    /// [`Along`]); only layers routed through `Switches` move, so this is for models whose
    /// parameters all sit in such layers.
    pub fn along(mut self, along: Along) -> Self {
        self.set_along(along);
        self
    }
}
