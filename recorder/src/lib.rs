//! The epk recorder: one line added to ordinary Burn training code records every optimizer
//! step to an epk store, from which `epk-replay` rebuilds the network as an exact kernel
//! machine.
//!
//! ```no_run
//! use burn::optim::SgdConfig;
//! use epk_recorder::{Loss, Recorder, WithRecorder, models::{Mlp, MlpConfig}};
//! # fn data() -> epk_store::Samples { unimplemented!() }
//! let device = epk_recorder::device::flex_f64().unwrap();
//! let config = MlpConfig::new(vec![100, 64, 3]);
//! let model = Mlp::new(&config, &device);
//! let sgd = SgdConfig::new();
//! let recorder = Recorder::builder("runs/toy.zarr")
//!     .model_config::<Mlp>(&config)
//!     .loss(Loss::NllLogSoftmax)
//!     .sgd(&sgd)
//!     .train_data(data());
//! let model = model.with_recorder(recorder).unwrap();
//! // ... Learner::new(model, sgd.init(), lr) and SupervisedTraining::launch as usual ...
//! # let _ = model;
//! ```

pub mod batch;
mod error;
mod hook;
pub mod loss;
mod non_finite;
mod optimizer;
mod recorded;
mod recorder;
pub mod renderer;
mod writer;

pub use batch::{IndexedBatch, IndexedBatcher, IndexedDataset, IndexedItem};
pub use epk_store::{Loss, OptimizerSpec, Samples, TrainDType};
// The model contract, devices and built-in models live in epk-model; these keep their
// `epk_recorder::` paths.
pub use epk_model::{EpkModel, Probe, Switches};
pub use epk_model::{device, model, models, params};
pub use error::RecordError;
pub use non_finite::NonFinite;
pub use optimizer::IntoOptimizerSpec;
pub use recorded::{Recorded, WithRecorder};
pub use recorder::{DEFAULT_COMMIT_INTERVAL, Recorder};
