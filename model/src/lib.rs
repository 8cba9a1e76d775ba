//! The epk model contract: what a Burn module implements to be recorded and replayed
//! ([`EpkModel`], with every switching point noted through [`Switches`]), its parameters as one
//! flat vector ([`params`]), float64 devices ([`device`]) and the built-in [`models`].
//!
//! ```
//! use epk_model::models::{Mlp, MlpConfig};
//! use epk_model::{EpkModel, Switches, device, float_tensor, params};
//! let device = device::flex_f64().unwrap();
//! let config = MlpConfig::new(vec![2, 4, 3]);
//! let model = Mlp::new(&config, &device);
//! let x = float_tensor(vec![1.0, -1.0, 0.5, 2.0], [2, 2], &device);
//! let mut switches = Switches::recording();
//! let f = model.epk_forward(x, &mut switches);
//! assert_eq!(f.dims(), [2, 3]);
//! // One switching value per sample and hidden ReLU.
//! assert_eq!(switches.into_values().unwrap().dims(), [2, 4]);
//! // 2·4 + 4 weights and biases in the hidden layer, 4·3 + 3 in the last one.
//! let layout = params::layout(&model);
//! assert_eq!(layout.iter().map(|p| p.len).sum::<usize>(), 27);
//! // The flat weights load into a fresh module of the same configuration.
//! let flat = params::flatten(&model).unwrap();
//! let copy = params::load_flat(Mlp::new(&config, &device), &flat, &device, false).unwrap();
//! assert_eq!(params::flatten(&copy).unwrap(), flat);
//! ```

#![warn(missing_docs)]

pub mod along;
pub mod device;
pub mod model;
pub mod models;
pub mod nn;
pub mod params;
mod pool;
pub mod probe;
pub mod tensor;

pub use model::{EpkModel, Switches};
pub use probe::{ConvGeometry, LinearMap, Probe};
pub use tensor::float_tensor;
