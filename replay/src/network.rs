//! The rebuilt network: forward passes, Jacobians and per-sample gradients at any weights.

use crate::ReplayError;
use crate::jacobian::{Factors, Implementation, Layers, conv};
use burn::tensor::{Device, Tensor};
use epk_model::along::Along;
use epk_model::float_tensor;
use epk_model::nn::dropout::{self, Keys};
use epk_model::{EpkModel, Switches, params};
use epk_store::RunAttributes;

/// A model of the store's architecture whose weights are set per call.
#[derive(Clone)]
pub struct Network<M: EpkModel> {
    template: M,
    device: Device,
    num_params: usize,
    outputs: usize,
    input_len: usize,
    jacobian: Implementation,
    /// [`EpkModel::path_degree`] of the stored configuration.
    path_degree: Option<usize>,
}

impl<M: EpkModel> Network<M> {
    /// Rebuilds the model from the store's configuration and checks that its parameter layout
    /// is the store's.
    pub fn new(attrs: &RunAttributes, device: &Device) -> Result<Self, ReplayError> {
        if attrs.model.kind != M::KIND {
            return Err(ReplayError::Model(format!(
                "the store holds a {:?} model, this replay was asked for {:?}",
                attrs.model.kind,
                M::KIND
            )));
        }
        let config: M::Config =
            serde_json::from_value(attrs.model.config.clone()).map_err(|e| {
                ReplayError::Model(format!(
                    "the stored {} configuration does not parse: {e}",
                    M::KIND
                ))
            })?;
        let template = M::init(&config, device);
        let path_degree = M::path_degree(&config);
        let layout = params::layout(&template);
        if layout.len() != attrs.params.len() {
            return Err(ReplayError::Model(format!(
                "the rebuilt model has {} parameter tensors, the store {}",
                layout.len(),
                attrs.params.len()
            )));
        }
        for (built, stored) in layout.iter().zip(&attrs.params) {
            if built.shape != stored.shape {
                return Err(ReplayError::Model(format!(
                    "parameter {} has shape {:?} in the rebuilt model but {} has {:?} in the store",
                    built.path, built.shape, stored.path, stored.shape
                )));
            }
        }
        // The one place the Jacobian implementation is chosen.
        let jacobian = Implementation::detect(
            &template,
            device,
            attrs.input_len(),
            &layout,
            attrs.num_params,
        );
        Ok(Network {
            template,
            device: device.clone(),
            num_params: attrs.num_params,
            outputs: attrs.outputs,
            input_len: attrs.input_len(),
            jacobian,
            path_degree,
        })
    }

    /// L if f is a polynomial of degree at most L in t on every smooth piece of a step
    /// ([`EpkModel::path_degree`]).
    pub fn path_degree(&self) -> Option<usize> {
        self.path_degree
    }

    /// The same network without a declared degree: the `auto` rule then accepts a piece
    /// only where two Gauss–Legendre orders agree (to cross-check the exact-by-degree path).
    pub fn undeclared(mut self) -> Self {
        self.path_degree = None;
        self
    }

    /// The same network with the dense implementation: every Jacobian and per-sample
    /// gradient then comes from per-sample backward passes (to cross-check the fast path).
    pub fn general(mut self) -> Self {
        self.jacobian = Implementation::Dense;
        self
    }

    /// How this network's Jacobians are computed.
    pub fn implementation(&self) -> &Implementation {
        &self.jacobian
    }

    /// The probed linear layers, when they hold every parameter (the fast path applies).
    pub fn layers(&self) -> Option<&Layers> {
        self.jacobian.layers()
    }

    /// Gradient factors of Σ_j c_rj f_j(x_r) for every sample r of `xs` with coefficients
    /// `coeffs` `[n, outputs]`: one batched forward and backward pass, probing the model's
    /// `Switches::linear` layers and convolutions (none: no factors).
    pub fn factors(&self, weights: &[f64], xs: &[f64], coeffs: &[f64]) -> Factors {
        self.factors_keyed(weights, xs, coeffs, None)
    }

    /// [`Network::factors`] of training samples: with `keys` (the step and each row's training
    /// index) every `epk_model::nn::Dropout` applies the mask that step used.
    pub fn factors_keyed(
        &self,
        weights: &[f64],
        xs: &[f64],
        coeffs: &[f64],
        keys: Option<Keys<'_>>,
    ) -> Factors {
        let model = self.at(weights, false);
        self.probe(&model, Switches::probing(), xs, coeffs, keys)
    }

    /// `epk_forward` on `xs`: with `keys` as the training pass of those samples at that step
    /// (their Dropout masks), without as the evaluation network (Dropout off).
    fn run(&self, model: &M, xs: &[f64], keys: Option<Keys<'_>>, sw: &mut Switches) -> Tensor<2> {
        dropout::keyed(keys, || model.epk_forward(self.inputs(xs), sw)).0
    }

    fn probe(
        &self,
        model: &M,
        mut sw: Switches,
        xs: &[f64],
        coeffs: &[f64],
        keys: Option<Keys<'_>>,
    ) -> Factors {
        let n = xs.len() / self.input_len;
        let f = self.run(model, xs, keys, &mut sw);
        let mut out = Factors {
            a: Vec::new(),
            d: Vec::new(),
            samples: n,
            blocks: Vec::new(),
        };
        let probes = sw.into_probes();
        if probes.is_empty() {
            // Nothing is routed through Switches: no leaf to differentiate (a backward pass
            // would panic inside Burn on a graph without one).
            return out;
        }
        let c = float_tensor(coeffs.to_vec(), [n, self.outputs], &self.device);
        let grads = (f * c).sum().backward();
        for probe in probes {
            let d = probe
                .leaf
                .grad(&grads)
                .map(to_vec)
                .unwrap_or_else(|| vec![0.0; probe.leaf.dims().iter().product()]);
            let input = to_vec(probe.input);
            for (a, d) in conv::probe_factors(&probe.map, input, d, n) {
                out.a.push(a);
                out.d.push(d);
            }
        }
        out
    }

    /// The Jacobians of the inputs `xs` as factors with one row per (input, output):
    /// row `r·outputs + k` is ∇_w f_k(x_r). One batched pass over `outputs` copies of each input.
    pub fn jacobian_factors(&self, weights: &[f64], xs: &[f64]) -> Factors {
        let (copies, coeffs) = self.copies(xs);
        self.factors(weights, &copies, &coeffs)
    }

    /// `outputs` copies of each input, and coefficients picking output k in copy k.
    fn copies(&self, xs: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let k = self.outputs;
        let n = xs.len() / self.input_len;
        let mut copies = Vec::with_capacity(xs.len() * k);
        let mut coeffs = vec![0.0; n * k * k];
        for r in 0..n {
            for o in 0..k {
                copies.extend_from_slice(&xs[r * self.input_len..(r + 1) * self.input_len]);
                coeffs[(r * k + o) * k + o] = 1.0;
            }
        }
        (copies, coeffs)
    }

    /// The network along the step from `start` by `delta`, for batches whose inputs each sit
    /// at their own t (the fast path only: every parameter in a layer routed through
    /// `Switches`).
    pub fn moved(&self, start: &[f64], delta: &[f64]) -> Moved<'_, M> {
        Moved {
            net: self,
            model: self.at(start, false),
            delta: self.at(delta, false),
        }
    }

    /// P, the number of parameters.
    pub fn num_params(&self) -> usize {
        self.num_params
    }

    /// K, the number of outputs.
    pub fn outputs(&self) -> usize {
        self.outputs
    }

    /// Flat input length.
    pub fn input_len(&self) -> usize {
        self.input_len
    }

    /// Σ_r Σ_j c_rj ∇_w f_j(x_r; w): the data gradient of a batch from one batched backward pass.
    /// With `keys`, the training pass of those samples at that step (their Dropout masks).
    pub fn weighted_grad(
        &self,
        weights: &[f64],
        xs: &[f64],
        coeffs: &[f64],
        keys: Option<Keys<'_>>,
    ) -> Vec<f64> {
        let model = self.at(weights, true);
        let n = xs.len() / self.input_len;
        let f = self.run(&model, xs, keys, &mut Switches::off());
        let c = float_tensor(coeffs.to_vec(), [n, self.outputs], &self.device);
        let grads = (f * c).sum().backward();
        params::flatten_grads(&model, &grads).expect("gradients are float")
    }

    fn at(&self, weights: &[f64], grad: bool) -> M {
        params::load_flat(self.template.clone(), weights, &self.device, grad)
            .expect("weights match the checked layout")
    }

    fn inputs(&self, xs: &[f64]) -> Tensor<2> {
        let n = xs.len() / self.input_len;
        float_tensor(xs.to_vec(), [n, self.input_len], &self.device)
    }

    /// f at `weights` for the flat inputs `xs`: `[n, outputs]` row-major.
    pub fn forward(&self, weights: &[f64], xs: &[f64]) -> Vec<f64> {
        let model = self.at(weights, false);
        to_vec(self.run(&model, xs, None, &mut Switches::off()))
    }

    /// f and the switching values at one input.
    pub fn forward_switches(&self, weights: &[f64], x: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let model = self.at(weights, false);
        let mut sw = Switches::recording();
        // Active, so that epk's drop-in modules (epk_model::nn) note their values too.
        let f = to_vec(sw.active(|sw| self.run(&model, x, None, sw)));
        let s = sw.into_values().map(to_vec).unwrap_or_default();
        (f, s)
    }

    /// ∇_w f_k(x; w) for every output k: `[outputs, num_params]` row-major.
    pub fn jacobian(&self, weights: &[f64], x: &[f64]) -> Vec<f64> {
        let model = self.at(weights, true);
        let mut out = Vec::with_capacity(self.outputs * self.num_params);
        for k in 0..self.outputs {
            let f = self.run(&model, x, None, &mut Switches::off());
            let fk = f.slice([0..1, k..k + 1]).sum();
            let grads = fk.backward();
            out.extend(params::flatten_grads(&model, &grads).expect("gradients are float"));
        }
        out
    }

    /// Σ_j c_j ∇_w f_j(x; w) for each sample of `xs` with its own coefficients `c`
    /// (`[n, outputs]`): per-sample weighted gradients, `[n, num_params]` row-major.
    pub fn sample_grads(&self, weights: &[f64], xs: &[f64], coeffs: &[f64]) -> Vec<f64> {
        self.sample_grads_keyed(weights, xs, coeffs, None)
    }

    /// [`Network::sample_grads`] of training samples: with `keys`, each sample's pass is its
    /// training pass at that step (its Dropout masks).
    pub fn sample_grads_keyed(
        &self,
        weights: &[f64],
        xs: &[f64],
        coeffs: &[f64],
        keys: Option<Keys<'_>>,
    ) -> Vec<f64> {
        let model = self.at(weights, true);
        let n = xs.len() / self.input_len;
        let mut out = Vec::with_capacity(n * self.num_params);
        for i in 0..n {
            let x = &xs[i * self.input_len..(i + 1) * self.input_len];
            let c = &coeffs[i * self.outputs..(i + 1) * self.outputs];
            let key = keys.map(|k| Keys {
                step: k.step,
                rows: &k.rows[i..i + 1],
            });
            let f = self.run(&model, x, key, &mut Switches::off());
            let c = float_tensor(c.to_vec(), [1, self.outputs], &self.device);
            let grads = (f * c).sum().backward();
            out.extend(params::flatten_grads(&model, &grads).expect("gradients are float"));
        }
        out
    }
}

fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f64> {
    t.try_into_vec_as::<f64>()
        .expect("float tensors read back as f64")
}

/// A network along one step w_s + tΔw_s whose batches put each input at its own t: one
/// forward (and backward) pass for inputs at different points of the step
/// ([`epk_model::along`]).
pub struct Moved<'a, M: EpkModel> {
    net: &'a Network<M>,
    model: M,
    delta: M,
}

impl<M: EpkModel> Moved<'_, M> {
    fn along(&self, ts: Vec<f64>) -> Along {
        Along::new(&self.delta, ts, &self.net.device)
    }

    /// f `[n, outputs]` and the switching values `[n, switches]` (flat) of each input of `xs`
    /// at its own `ts`.
    pub fn forward_switches(&self, ts: &[f64], xs: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let mut sw = Switches::recording().along(self.along(ts.to_vec()));
        let f = to_vec(sw.active(|sw| self.net.run(&self.model, xs, None, sw)));
        let s = sw.into_values().map(to_vec).unwrap_or_default();
        (f, s)
    }

    /// The Jacobians of the inputs `xs`, each at its own `ts`, as factors with one row per
    /// (input, output), as [`Network::jacobian_factors`].
    pub fn jacobian_factors(&self, ts: &[f64], xs: &[f64]) -> Factors {
        let (copies, coeffs) = self.net.copies(xs);
        let k = self.net.outputs;
        let ts = ts.iter().flat_map(|&t| std::iter::repeat_n(t, k)).collect();
        let sw = Switches::probing().along(self.along(ts));
        self.net.probe(&self.model, sw, &copies, &coeffs, None)
    }
}
