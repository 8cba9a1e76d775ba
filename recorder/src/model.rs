//! What a model implements to be recorded and replayed.

use burn::module::{Module, ModuleDisplay, ParamId};
use burn::nn::Linear;
use burn::tensor::{Device, Tensor, activation};
use serde::{Serialize, de::DeserializeOwned};

/// A Burn module whose output f(x) epk explains.
///
/// `epk_forward` takes inputs flattened to `[batch, input_len]` (the store keeps inputs flat)
/// and returns f, `[batch, outputs]`. Every ReLU goes through [`Switches::relu`] so that replay
/// can find where a unit switches along a step: those points, not the quadrature order, limit
/// the precision of the path integral.
pub trait EpkModel: Module + ModuleDisplay + Sized {
    /// Name under which a replay binary finds this model type (stored in the store).
    const KIND: &'static str;
    /// Configuration that rebuilds the module's structure; stored as JSON.
    type Config: Serialize + DeserializeOwned + Clone;

    /// Builds a module of this configuration (weights are replaced on replay).
    fn init(config: &Self::Config, device: &Device) -> Self;

    /// f(x) for flat inputs `[batch, input_len]`.
    fn epk_forward(&self, inputs: Tensor<2>, switches: &mut Switches) -> Tensor<2>;
}

/// Collects the quantities whose sign decides which smooth piece a forward pass is on.
///
/// While training it records nothing; replay asks for a recording one and reads, per sample,
/// every switching value: a ReLU's pre-activation, or a max-pool's margin between the chosen
/// element and the runner-up. Where one of them crosses zero along a step, the network's
/// Jacobian jumps, and replay splits the step there.
///
/// It also carries replay's fast path: a model that routes its linear layers through
/// [`Switches::linear`] lets replay read every sample's gradient of those layers from one
/// batched backward pass, as the factors `a ⊗ δ` (layer input and output gradient), instead of
/// one backward pass per sample.
#[derive(Default)]
pub struct Switches {
    recording: bool,
    values: Vec<Tensor<2>>,
    probing: bool,
    probes: Vec<Probe>,
}

/// A linear layer seen by a probing forward pass.
pub struct Probe {
    /// The layer's input, `[batch, in]`.
    pub input: Tensor<2>,
    /// A zero leaf added to the layer's output: its gradient is each sample's δ, `[batch, out]`.
    pub leaf: Tensor<2>,
    pub weight: ParamId,
    pub bias: Option<ParamId>,
}

impl Switches {
    /// A collector that records nothing (training and plain inference).
    pub fn off() -> Self {
        Switches::default()
    }

    /// A collector that keeps every switching value.
    pub fn recording() -> Self {
        Switches {
            recording: true,
            ..Switches::default()
        }
    }

    /// A collector that adds a probe to every [`Switches::linear`] layer (replay's fast path).
    pub fn probing() -> Self {
        Switches {
            probing: true,
            ..Switches::default()
        }
    }

    /// A linear layer on `[batch, in]` inputs; the same as `layer.forward(x)` except under
    /// [`Switches::probing`].
    pub fn linear(&mut self, layer: &Linear, x: Tensor<2>) -> Tensor<2> {
        let z = layer.forward(x.clone());
        if !self.probing {
            return z;
        }
        let leaf = Tensor::zeros(z.dims(), &z.device()).require_grad();
        self.probes.push(Probe {
            input: x.detach(),
            leaf: leaf.clone(),
            weight: layer.weight.id,
            bias: layer.bias.as_ref().map(|b| b.id),
        });
        z + leaf
    }

    /// The probes of a probing pass, in forward order.
    pub fn into_probes(self) -> Vec<Probe> {
        self.probes
    }

    /// ReLU, noting its pre-activation as a switching value.
    pub fn relu<const D: usize>(&mut self, z: Tensor<D>) -> Tensor<D> {
        if self.recording {
            let batch = z.dims()[0];
            self.values
                .push(z.clone().detach().reshape([batch as i32, -1]));
        }
        activation::relu(z)
    }

    /// Notes any other switching value `[batch, ...]`: a piece changes where it crosses zero.
    pub fn note<const D: usize>(&mut self, value: Tensor<D>) {
        if self.recording {
            let batch = value.dims()[0];
            self.values.push(value.detach().reshape([batch as i32, -1]));
        }
    }

    /// The recorded switching values, concatenated per sample: `[batch, switches]`.
    pub fn into_values(self) -> Option<Tensor<2>> {
        if self.values.is_empty() {
            None
        } else {
            Some(Tensor::cat(self.values, 1))
        }
    }
}
