//! Replay of an epk store as the exact path kernel machine of Bell et al.
//!
//! ```no_run
//! use epk_replay::{Network, ReplayOptions, Rule, replay};
//! use epk_recorder::{device::flex_f64, models::Mlp};
//! let reader = epk_store::StoreReader::open("runs/gaussians.zarr".as_ref()).unwrap();
//! let device = flex_f64().unwrap();
//! let net = Network::<Mlp>::new(reader.attrs(), &device).unwrap();
//! let eval = reader.eval().unwrap();
//! let machine = replay(&reader, &net, &eval.inputs, &ReplayOptions::default(), |_| {}).unwrap();
//! assert!(machine.max_error() < 1e-12);
//! ```

pub mod attribute;
pub mod cli;
pub mod compare;
mod error;
pub mod faithfulness;
pub mod gauss;
pub mod gp;
pub mod kernels;
pub mod kglm;
pub mod layers;
pub mod machine;
pub mod network;
pub mod optimizer;
pub mod path;
pub mod plot;
pub mod rule;
pub mod structured;
pub mod svm;
pub mod verify;

pub use error::ReplayError;
pub use machine::{
    KernelMachine, ReplayOptions, StepCheck, argmax, path_kernel, path_kernel_diagonal, replay,
};
pub use network::Network;
pub use optimizer::Optimizer;
pub use rule::Rule;
pub use verify::VerifyReport;
