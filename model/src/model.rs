//! What a model implements to be recorded and replayed.

use crate::along::Along;
use crate::probe::Probe;
use burn::module::{Module, ModuleDisplay};
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

    /// L, if f is a polynomial of degree at most L in t along every step w_s + tΔw_s on each
    /// stretch where no switching value changes sign; `None` (the default) otherwise.
    ///
    /// It is L for L weighted layers (linear, convolution, embedding) joined by routed ReLUs
    /// and max-pools, average pools, reshapes and dropout with fixed masks: each layer's
    /// output is its input times weights affine in t. Softmax, normalisation, tanh, GELU and
    /// attention make f no polynomial, and their models keep `None`.
    ///
    /// Replay uses it to integrate a piece exactly: J then has degree L − 1, which
    /// Gauss–Legendre of order ⌈L/2⌉ integrates exactly, once the switching values (degree at
    /// most L) are certified not to change sign inside the piece. A degree that is too low
    /// makes replay accept pieces it should have refined, so declare it only for such models.
    ///
    /// ```
    /// use epk_model::EpkModel;
    /// use epk_model::models::{Cnn, CnnConfig};
    /// // Two convolutions and a linear head.
    /// assert_eq!(Cnn::path_degree(&CnnConfig::new(8, [4, 8], 10)), Some(3));
    /// ```
    fn path_degree(config: &Self::Config) -> Option<usize> {
        let _ = config;
        None
    }
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
    along: Option<Along>,
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

    /// Moves each sample of the batch to its own point of a step.
    pub(crate) fn set_along(&mut self, along: Along) {
        self.along = Some(along);
    }

    /// Where each sample sits along a step, if it moves.
    pub(crate) fn moved(&self) -> Option<&Along> {
        self.along.as_ref()
    }

    /// Whether this pass probes layers (replay's fast path).
    pub(crate) fn is_probing(&self) -> bool {
        self.probing
    }

    /// Keeps a probe of a probing pass.
    pub(crate) fn push_probe(&mut self, probe: Probe) {
        self.probes.push(probe);
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

    /// 2×2 max-pooling with stride 2 over `[batch, channels, height, width]` (even sizes).
    /// For each element of a window it notes the margin x_j − max_{i≠j} x_i, positive only for
    /// the chosen element: a margin changes sign exactly where the choice changes, and not
    /// where the other elements merely reorder.
    ///
    /// ReLU commutes with max-pooling (relu(max z) = max relu(z), in floating point too), so
    /// a model can pool before its ReLU: the same function with a quarter of the ReLU switches.
    pub fn max_pool2(&mut self, x: Tensor<4>) -> Tensor<4> {
        let [b, c, h, w] = x.dims();
        let windows = x
            .reshape([b, c, h / 2, 2, w / 2, 2])
            .permute([0, 1, 2, 4, 3, 5])
            .reshape([b, c, h / 2, w / 2, 4]);
        if self.recording {
            let e = |i: usize| windows.clone().narrow(4, i, 1);
            let margins: Vec<Tensor<5>> = (0..4)
                .map(|j| {
                    let others: Vec<Tensor<5>> = (0..4).filter(|&i| i != j).map(e).collect();
                    e(j) - Tensor::cat(others, 4).max_dim(4)
                })
                .collect();
            self.note(Tensor::cat(margins, 4));
        }
        windows.max_dim(4).reshape([b, c, h / 2, w / 2])
    }

    /// Whether this pass keeps switching values (computing them can then be skipped).
    pub fn is_recording(&self) -> bool {
        self.recording
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::flex_f64;
    use crate::float_tensor;

    #[test]
    fn max_pool_margins_are_positive_only_for_the_chosen_element() {
        let device = flex_f64().unwrap();
        // One 2×4 image: windows [[1, 2], [5, 6]] → 6 and [[3, 4], [8, 7]] → 8.
        let x = float_tensor(
            vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 7.0],
            [1, 1, 2, 4],
            &device,
        );
        let mut sw = Switches::recording();
        let pooled = sw.max_pool2(x);
        let pooled: Vec<f64> = pooled.try_into_vec_as::<f64>().unwrap();
        assert_eq!(pooled, vec![6.0, 8.0]);
        let margins: Vec<f64> = sw.into_values().unwrap().try_into_vec_as::<f64>().unwrap();
        // Per window, for j in window order (0, 1 top row; 2, 3 bottom): x_j − max of the others.
        assert_eq!(
            margins,
            vec![
                1.0 - 6.0,
                2.0 - 6.0,
                5.0 - 6.0,
                6.0 - 5.0, // first window
                3.0 - 8.0,
                4.0 - 8.0,
                8.0 - 7.0,
                7.0 - 8.0, // second window
            ]
        );
    }
}
