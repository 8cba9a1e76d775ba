//! epk: neural networks trained with Burn, explained exactly by their training data.
//!
//! A network trained by discrete gradient steps is a kernel machine (Bell et al., "An Exact
//! Kernel Equivalence for Finite Classification Models"). epk records the optimisation path
//! during ordinary Burn training ([`recorder`]) of a model written against the model contract
//! ([`model`]), stores it as a Zarr v3 hierarchy ([`store`]), and rebuilds the exact path kernel
//! machine from it in float64 ([`replay`]), with a certificate that the machine equals the
//! network.
//!
//! ```
//! // The four crates, re-exported.
//! use epk::{model::EpkModel, recorder::Recorder, replay::Rule, store::StoreReader};
//! assert_eq!("gauss:8".parse::<Rule>().unwrap(), Rule::Gauss(8));
//! assert_eq!(<epk::model::models::Mlp as EpkModel>::KIND, "mlp");
//! # let _ = (Recorder::builder("x"), StoreReader::open);
//! ```

#![warn(missing_docs)]

pub use epk_model as model;
pub use epk_recorder as recorder;
pub use epk_replay as replay;
pub use epk_store as store;
