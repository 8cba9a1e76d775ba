//! The epk recorder: one line added to ordinary Burn training code records every optimizer
//! step to an epk store, from which `epk-replay` rebuilds the network as an exact kernel
//! machine.
//!
//! The model contract ([`EpkModel`], [`Switches`]), the parameter layout, the devices and the
//! built-in models live in `epk-model`; they are re-exported here under their old paths
//! ([`model`], [`params`], [`device`], [`models`], [`batch::float_tensor`]).
//!
//! ```
//! use burn::data::dataloader::batcher::Batcher;
//! use burn::optim::SgdConfig;
//! use burn::train::TrainStep;
//! use epk_recorder::models::{Mlp, MlpConfig};
//! use epk_recorder::{IndexedBatcher, IndexedItem, Loss, Recorder, Samples, WithRecorder};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("toy.zarr");
//! // Four 2-D points in two classes.
//! let train = Samples::new(
//!     vec![0.0, 1.0, 1.0, 0.0, 2.0, 2.0, -1.0, 0.5],
//!     vec![2],
//!     vec![0, 1, 0, 1],
//! )?;
//! let device = epk_recorder::device::flex_f64()?;
//! let config = MlpConfig::new(vec![2, 8, 2]);
//! let sgd = SgdConfig::new();
//! let recorder = Recorder::builder(&path)
//!     .model_config::<Mlp>(&config)
//!     .loss(Loss::CrossEntropy)
//!     .optimizer(&sgd)
//!     .train_data(train.clone());
//! let mut model = Mlp::new(&config, &device).with_recorder(recorder)?; // the one added line
//!
//! // A hand-written loop; burn-train's `Learner` calls the same two methods.
//! let mut optim = sgd.init();
//! let batch: Vec<IndexedItem> = (0..train.len())
//!     .map(|index| IndexedItem {
//!         index,
//!         input: train.input(index).to_vec(),
//!         target: train.targets[index],
//!     })
//!     .collect();
//! for _ in 0..2 {
//!     let out = TrainStep::step(&model, IndexedBatcher.batch(batch.clone(), &device));
//!     model = TrainStep::optimize(model, &mut optim, 0.1.into(), out.grads);
//! }
//! assert_eq!(model.steps(), 2);
//! let _trained: Mlp = model.finish()?; // flushes the writer and marks the run finished
//!
//! let store = epk_store::StoreReader::open(&path)?;
//! assert_eq!(store.steps(), 2);
//! assert!(store.attrs().finished);
//! assert_eq!(store.attrs().optimizer.name, "sgd");
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod batch;
mod contract;
mod error;
mod first_step;
mod hook;
pub mod loss;
mod non_finite;
mod optimizer;
mod own;
mod recorded;
mod recorder;
pub mod renderer;
#[cfg(feature = "s3")]
mod upload;
mod writer;

pub use batch::{IndexedBatch, IndexedBatcher, IndexedDataset, IndexedItem};
pub use epk_store::{Compression, Loss, OptimizerSpec, Samples, TrainDType};
// The model contract, devices and built-in models live in epk-model; these keep their
// `epk_recorder::` paths.
pub use epk_model::{EpkModel, Probe, Switches};
pub use epk_model::{device, model, models, params};
pub use error::RecordError;
pub use non_finite::NonFinite;
pub use optimizer::IntoOptimizerSpec;
pub use own::{Explain, HasIndices, Indexed, KeepIndices, Numbered, stored_samples};
pub use recorded::{Recorded, WithRecorder};
pub use recorder::{DEFAULT_COMMIT_INTERVAL, Recorder};
