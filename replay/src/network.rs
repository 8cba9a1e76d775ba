//! The rebuilt network: forward passes, Jacobians and per-sample gradients at any weights.

use crate::ReplayError;
use burn::tensor::{Device, Tensor};
use epk_recorder::batch::float_tensor;
use epk_recorder::{EpkModel, Switches, params};
use epk_store::RunAttributes;

/// A model of the store's architecture whose weights are set per call.
#[derive(Clone)]
pub struct Network<M: EpkModel> {
    template: M,
    device: Device,
    num_params: usize,
    outputs: usize,
    input_len: usize,
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
        let net = Network {
            template,
            device: device.clone(),
            num_params: attrs.num_params,
            outputs: attrs.outputs,
            input_len: attrs.input_len(),
        };
        Ok(net)
    }

    pub fn num_params(&self) -> usize {
        self.num_params
    }

    pub fn outputs(&self) -> usize {
        self.outputs
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
        to_vec(model.epk_forward(self.inputs(xs), &mut Switches::off()))
    }

    /// f and the switching values at one input.
    pub fn forward_switches(&self, weights: &[f64], x: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let model = self.at(weights, false);
        let mut sw = Switches::recording();
        let f = to_vec(model.epk_forward(self.inputs(x), &mut sw));
        let s = sw.into_values().map(to_vec).unwrap_or_default();
        (f, s)
    }

    /// ∇_w f_k(x; w) for every output k: `[outputs, num_params]` row-major.
    pub fn jacobian(&self, weights: &[f64], x: &[f64]) -> Vec<f64> {
        let model = self.at(weights, true);
        let mut out = Vec::with_capacity(self.outputs * self.num_params);
        for k in 0..self.outputs {
            let f = model.epk_forward(self.inputs(x), &mut Switches::off());
            let fk = f.slice([0..1, k..k + 1]).sum();
            let grads = fk.backward();
            out.extend(params::flatten_grads(&model, &grads).expect("gradients are float"));
        }
        out
    }

    /// Σ_j c_j ∇_w f_j(x; w) for each sample of `xs` with its own coefficients `c`
    /// (`[n, outputs]`): per-sample weighted gradients, `[n, num_params]` row-major.
    pub fn sample_grads(&self, weights: &[f64], xs: &[f64], coeffs: &[f64]) -> Vec<f64> {
        let model = self.at(weights, true);
        let n = xs.len() / self.input_len;
        let mut out = Vec::with_capacity(n * self.num_params);
        for i in 0..n {
            let x = &xs[i * self.input_len..(i + 1) * self.input_len];
            let c = &coeffs[i * self.outputs..(i + 1) * self.outputs];
            let f = model.epk_forward(self.inputs(x), &mut Switches::off());
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
