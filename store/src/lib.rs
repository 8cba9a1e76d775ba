//! The epk store: a Zarr v3 hierarchy that holds a training run's whole optimisation path.
//!
//! This crate owns the format. The recorder writes it through [`StoreWriter`], replay and
//! any other reader go through [`StoreReader`]; `docs/store.md` describes the same layout for
//! readers in other languages. Nothing here depends on Burn, so the format can be read, tested
//! and fuzzed without a deep-learning framework.
//!
//! ```
//! use epk_store::{RunAttributes, Samples, StepRecord, StoreReader, StoreWriter};
//! # let dir = tempfile::tempdir().unwrap();
//! # let path = dir.path().join("run.zarr");
//! let attrs = RunAttributes::example(2, 1, 2);
//! let train = Samples::new(vec![1.0, 2.0, 3.0, 4.0], vec![2], vec![0, 1]).unwrap();
//! let mut writer = StoreWriter::create(&path, attrs, &train, None, &[0.0, 0.0]).unwrap();
//! let step = StepRecord {
//!     lr: 0.5,
//!     indices: vec![0, 1],
//!     dloss: vec![0.25, -0.25],
//!     weights_after: vec![0.1, -0.1],
//! };
//! writer.append_step(&step).unwrap();
//! let reader = StoreReader::open(&path).unwrap();
//! assert_eq!(reader.steps(), 1);
//! assert_eq!(reader.weights(1).unwrap(), vec![0.1, -0.1]);
//! ```

#![warn(missing_docs)]

mod atomic;
mod attrs;
mod codec;
#[cfg(test)]
mod doc_tests;
mod error;
mod layout;
mod lock;
mod open;
mod reader;
#[cfg(feature = "s3")]
pub mod remote;
mod samples;
mod shard;
mod writer;

pub use attrs::{
    FORMAT_NAME, FORMAT_VERSION, Fault, Loss, ModelInfo, OptimizerSpec, ParamLayout, RunAttributes,
    TrainDType,
};
pub use codec::Compression;
pub use error::StoreError;
pub use layout::{ArrayName, ROOT_ATTRIBUTE};
pub use lock::WriterLock;
pub use reader::{StepBatch, StoreReader};
pub use samples::Samples;
pub use shard::MAX_STEPS_PER_SHARD;
pub use writer::{StepRecord, StoreOptions, StoreWriter, WeightRow};
