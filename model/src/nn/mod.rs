//! Drop-in activation and pooling modules that note their own switching values, so a model
//! keeps its own `forward` and never passes [`Switches`] by hand.
//!
//! Replace `burn::nn::Relu` by `epk_model::nn::Relu` (and likewise `LeakyRelu`, `MaxPool1d`,
//! `MaxPool2d` and their configs, or the function [`relu`]): they compute exactly what Burn's
//! do, and when replay runs a forward pass under [`Switches::active`] they note every
//! switching value (a ReLU's pre-activation, a pooling window's margins) into it. Outside
//! such a pass (training, inference) they are Burn's.
//!
//! [`Dropout`] is Burn's Dropout with masks keyed by step and training sample, so replay
//! rebuilds them and the explained network is the evaluation network ([`dropout`]).
//!
//! [`RmsNorm`] is Burn's RMSNorm computed in the input's float type: Burn 0.22's takes the
//! root mean square in f32, which no float64 replay can make exact.
//!
//! ```
//! use burn::module::Module;
//! use burn::nn::{Linear, LinearConfig};
//! use burn::tensor::Tensor;
//! use epk_model::nn::Relu;
//! use epk_model::{Switches, device, float_tensor};
//!
//! #[derive(Module, Debug)]
//! struct Net {
//!     hidden: Linear,
//!     activation: Relu, // was burn::nn::Relu
//! }
//!
//! impl Net {
//!     fn forward(&self, x: Tensor<2>) -> Tensor<2> {
//!         self.activation.forward(self.hidden.forward(x))
//!     }
//! }
//!
//! let device = device::flex_f64().unwrap();
//! let net = Net { hidden: LinearConfig::new(2, 3).init(&device), activation: Relu::new() };
//! let x = float_tensor(vec![1.0, -1.0], [1, 2], &device);
//! let mut switches = Switches::recording();
//! let f = switches.active(|_| net.forward(x));
//! assert_eq!(f.dims(), [1, 3]);
//! // The ReLU noted its three pre-activations.
//! assert_eq!(switches.into_values().unwrap().dims(), [1, 3]);
//! ```

mod activation;
pub mod dropout;
mod pool;
mod rms_norm;

pub use activation::{LeakyRelu, LeakyReluConfig, Relu};
pub use dropout::{Dropout, DropoutConfig};
pub use pool::{MaxPool1d, MaxPool1dConfig, MaxPool2d, MaxPool2dConfig};
pub use rms_norm::{RmsNorm, RmsNormConfig};

use crate::Switches;
use burn::tensor::Tensor;
use std::cell::RefCell;

thread_local! {
    /// The collectors of the forward passes running on this thread under
    /// [`Switches::active`], innermost last.
    static ACTIVE: RefCell<Vec<Switches>> = const { RefCell::new(Vec::new()) };
}

impl Switches {
    /// Runs `forward` with this collector active on this thread: the drop-in modules of
    /// [`crate::nn`] note their switching values into it, after any noted through `self`.
    /// A collector that does not record runs `forward` as it is.
    pub fn active<R>(&mut self, forward: impl FnOnce(&mut Switches) -> R) -> R {
        if !self.is_recording() {
            return forward(self);
        }
        let depth = ACTIVE.with(|a| {
            let mut a = a.borrow_mut();
            a.push(Switches::recording());
            a.len()
        });
        // Pops this pass's collector even if `forward` panics, so a later pass on this thread
        // does not note into a stale one.
        struct Pop(usize);
        impl Drop for Pop {
            fn drop(&mut self) {
                ACTIVE.with(|a| a.borrow_mut().truncate(self.0 - 1));
            }
        }
        let pop = Pop(depth);
        let out = forward(self);
        let inner = ACTIVE.with(|a| a.borrow_mut().pop());
        std::mem::forget(pop);
        if let Some(values) = inner.and_then(Switches::into_values) {
            self.note(values);
        }
        out
    }
}

/// Runs `op` on the innermost active collector, or on one that records nothing.
pub(crate) fn with_active<R>(op: impl FnOnce(&mut Switches) -> R) -> R {
    // Taken out while `op` runs, so no borrow of the stack is held across Burn's code; put
    // back by a guard, so a panic inside `op` that the caller catches leaves the stack whole.
    struct Back(Option<Switches>);
    impl Drop for Back {
        fn drop(&mut self) {
            if let Some(switches) = self.0.take() {
                ACTIVE.with(|a| a.borrow_mut().push(switches));
            }
        }
    }
    match ACTIVE.with(|a| a.borrow_mut().pop()) {
        Some(switches) => {
            let mut back = Back(Some(switches));
            op(back.0.as_mut().expect("held until dropped"))
        }
        None => op(&mut Switches::off()),
    }
}

/// ReLU, noting its pre-activation when a forward pass is [`active`](Switches::active).
pub fn relu<const D: usize>(z: Tensor<D>) -> Tensor<D> {
    with_active(|s| s.relu(z))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::flex_f64;
    use crate::float_tensor;

    /// The drop-ins note exactly what the explicit `Switches` calls note, in forward order,
    /// after what the pass notes by hand; outside an active pass they note nothing.
    #[test]
    fn drop_ins_note_what_switches_note() {
        let device = flex_f64().unwrap();
        let x: Vec<f64> = (0..32).map(|j| (1.7 * j as f64).sin()).collect();
        let x4 = || float_tensor(x.clone(), [2, 1, 4, 4], &device);
        let pool = MaxPool2dConfig::new([2, 2]).with_strides([1, 2]).init();
        let leaky = LeakyReluConfig::new().with_negative_slope(0.1).init();
        let by_hand = {
            let mut s = Switches::recording();
            s.note(x4().reshape([2, 16]).mul_scalar(2.0));
            let r = s.relu(x4());
            let y = s.max_pool2d(r, [2, 2], [1, 2]);
            let y = s.leaky_relu(y, 0.1);
            (y, s.into_values().unwrap())
        };
        let mut s = Switches::recording();
        let y = s.active(|s| {
            s.note(x4().reshape([2, 16]).mul_scalar(2.0));
            leaky.forward(pool.forward(Relu::new().forward(x4())))
        });
        let read = |t: Tensor<2>| t.try_into_vec_as::<f64>().unwrap();
        assert_eq!(read(y.reshape([2, -1])), read(by_hand.0.reshape([2, -1])));
        assert_eq!(read(s.into_values().unwrap()), read(by_hand.1));
        // Outside an active pass: Burn's function.
        let plain = Relu::new().forward(x4());
        let burns = burn::tensor::activation::relu(x4());
        assert_eq!(read(plain.reshape([2, 16])), read(burns.reshape([2, 16])));
    }
}
