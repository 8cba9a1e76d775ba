//! Probes: the layers whose per-sample gradients replay reads from one batched backward pass.
//!
//! A linear layer's gradient for one sample is an outer product, ∂f/∂W = a ⊗ δ (the layer's
//! input and the gradient at its output). A convolution is the same linear map applied to the
//! input patch of every output position, so its gradient is Σ_positions a_p ⊗ δ_p (Dᵀ·A over
//! positions, with A the unfolded input). A probing pass adds a zero leaf to such a layer's
//! output: the leaf's gradient is every sample's δ at every position, and replay never forms a
//! P-long gradient per sample (Novak et al., "Fast Finite Width Neural Tangent Kernel").

use crate::Switches;
use burn::module::{Param, ParamId};
use burn::nn::conv::{Conv1d, Conv2d};
use burn::nn::{Linear, PaddingConfig1d, PaddingConfig2d};
use burn::tensor::Tensor;

/// A layer seen by a probing forward pass.
pub struct Probe {
    /// The layer's input: `[batch, in]` for a linear layer, `[batch, channels·h·w]` (the
    /// image, flat) for a convolution.
    pub input: Tensor<2>,
    /// A zero leaf added to the layer's output, `[batch·positions, out]` (sample-major): its
    /// gradient is each sample's δ at each output position.
    pub leaf: Tensor<2>,
    /// How the input meets the weight.
    pub map: LinearMap,
    /// The layer's weight parameter.
    pub weight: ParamId,
    /// The layer's bias parameter, if it has one.
    pub bias: Option<ParamId>,
}

/// How a probed layer's input meets its weight.
#[derive(Clone, Debug, PartialEq)]
pub enum LinearMap {
    /// `x · W + b` with W stored `[in, out]` (Burn's `Linear`).
    Dense,
    /// A convolution: W stored `[out, in / groups, kh, kw]`, applied to each output position's
    /// input patch.
    Conv(ConvGeometry),
}

/// The geometry of a 2D convolution (a 1D one is a 2D one of height 1), with its padding
/// resolved as Burn's layer resolves it.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvGeometry {
    /// Input and output channels.
    pub channels: [usize; 2],
    /// Input height and width.
    pub input: [usize; 2],
    /// Output height and width (as the forward pass produced them).
    pub output: [usize; 2],
    /// Kernel height and width.
    pub kernel: [usize; 2],
    /// Stride.
    pub stride: [usize; 2],
    /// Dilation.
    pub dilation: [usize; 2],
    /// Zero padding before the first row and column (top, left); the padding after follows
    /// from the output size.
    pub padding: [usize; 2],
    /// Channel groups: group g maps input channels g·in/groups.. to output channels
    /// g·out/groups...
    pub groups: usize,
}

impl ConvGeometry {
    /// Output positions per sample.
    pub fn positions(&self) -> usize {
        self.output[0] * self.output[1]
    }

    /// Length of one group's input patch: in/groups · kh · kw.
    pub fn patch(&self) -> usize {
        self.channels[0] / self.groups * self.kernel[0] * self.kernel[1]
    }
}

impl Switches {
    /// A linear layer on `[batch, in]` inputs; the same as `layer.forward(x)` except under
    /// [`Switches::probing`] (a probe on its output) and [`Switches::along`] (each sample at
    /// its own point of a step).
    pub fn linear(&mut self, layer: &Linear, x: Tensor<2>) -> Tensor<2> {
        let mut z = layer.forward(x.clone());
        if let Some(along) = self.moved() {
            z = z + along.linear(layer, x.clone());
        }
        if !self.is_probing() {
            return z;
        }
        let leaf = Tensor::zeros(z.dims(), &z.device()).require_grad();
        self.push_probe(Probe {
            input: x.detach(),
            leaf: leaf.clone(),
            map: LinearMap::Dense,
            weight: layer.weight.id,
            bias: layer.bias.as_ref().map(|b| b.id),
        });
        z + leaf
    }

    /// A 2D convolution on `[batch, channels, height, width]`; the same as `layer.forward(x)`
    /// except under [`Switches::probing`], where replay reads its per-sample kernel gradients
    /// (any stride, padding, dilation and groups).
    pub fn conv2d(&mut self, layer: &Conv2d, x: Tensor<4>) -> Tensor<4> {
        let mut z = layer.forward(x.clone());
        if let Some(along) = self.moved() {
            z = z + along.conv2d(layer, x.clone());
        }
        if !self.is_probing() {
            return z;
        }
        let [b, ci, h, w] = x.dims();
        let [_, co, oh, ow] = z.dims();
        let (top, left) = match &layer.padding {
            PaddingConfig2d::Valid => (0, 0),
            PaddingConfig2d::Explicit(top, left, _, _) => (*top, *left),
            PaddingConfig2d::Same => (
                same_padding_start(layer.kernel_size[0], layer.stride[0], h),
                same_padding_start(layer.kernel_size[1], layer.stride[1], w),
            ),
        };
        let geometry = ConvGeometry {
            channels: [ci, co],
            input: [h, w],
            output: [oh, ow],
            kernel: layer.kernel_size,
            stride: layer.stride,
            dilation: layer.dilation,
            padding: [top, left],
            groups: layer.groups,
        };
        let input = x.detach().reshape([b, ci * h * w]);
        let leaf = self.probe_conv(input, geometry, layer.weight.id, layer.bias.as_ref());
        z + leaf.reshape([b, oh, ow, co]).permute([0, 3, 1, 2])
    }

    /// A 1D convolution on `[batch, channels, length]`; the same as `layer.forward(x)` except
    /// under [`Switches::probing`] (any stride, padding, dilation and groups).
    pub fn conv1d(&mut self, layer: &Conv1d, x: Tensor<3>) -> Tensor<3> {
        let mut z = layer.forward(x.clone());
        if let Some(along) = self.moved() {
            z = z + along.conv1d(layer, x.clone());
        }
        if !self.is_probing() {
            return z;
        }
        let [b, ci, len] = x.dims();
        let [_, co, out] = z.dims();
        let left = match &layer.padding {
            PaddingConfig1d::Valid => 0,
            PaddingConfig1d::Explicit(left, _) => *left,
            PaddingConfig1d::Same => same_padding_start(layer.kernel_size, layer.stride, len),
        };
        let geometry = ConvGeometry {
            channels: [ci, co],
            input: [1, len],
            output: [1, out],
            kernel: [1, layer.kernel_size],
            stride: [1, layer.stride],
            dilation: [1, layer.dilation],
            padding: [0, left],
            groups: layer.groups,
        };
        let input = x.detach().reshape([b, ci * len]);
        let leaf = self.probe_conv(input, geometry, layer.weight.id, layer.bias.as_ref());
        z + leaf.reshape([b, out, co]).permute([0, 2, 1])
    }
}

impl Switches {
    /// Keeps a convolution's probe: its flat input, its geometry and a zero leaf
    /// `[batch·positions, out]` (returned) for the caller to add to the output.
    fn probe_conv<const D: usize>(
        &mut self,
        input: Tensor<2>,
        geometry: ConvGeometry,
        weight: ParamId,
        bias: Option<&Param<Tensor<D>>>,
    ) -> Tensor<2> {
        let rows = input.dims()[0] * geometry.positions();
        let leaf = Tensor::zeros([rows, geometry.channels[1]], &input.device()).require_grad();
        self.push_probe(Probe {
            input,
            leaf: leaf.clone(),
            map: LinearMap::Conv(geometry),
            weight,
            bias: bias.map(|b| b.id),
        });
        leaf
    }
}

/// The padding before the first element for `Same`, as burn-nn 0.22 computes it
/// (`calculate_same_padding` in `burn-nn/src/padding.rs`, which is crate-private): the output
/// keeps ⌈size/stride⌉ positions and the odd unit of padding goes after. The patches this
/// gives are tested against Burn's own convolution (`replay/src/jacobian/conv.rs`), so a
/// change in Burn fails that test.
fn same_padding_start(kernel: usize, stride: usize, size: usize) -> usize {
    let out = size.div_ceil(stride);
    let total = if out > 0 {
        ((out - 1) * stride + kernel).saturating_sub(size)
    } else {
        0
    };
    total / 2
}
