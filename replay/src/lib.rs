//! Replay of an epk store as the exact path kernel machine of Bell et al.
//!
//! The crate is laid out by concept:
//!
//! * [`network`]: the model rebuilt from the store, evaluated at any weights;
//! * [`jacobian`]: how ∇_w f is computed for that network (dense, or factored per linear layer),
//!   chosen once;
//! * [`quadrature`]: the path integral over one step, by a fixed rule or the adaptive `auto`;
//! * [`optimizer`]: each optimizer's step as a linear map of the per-sample gradients;
//! * [`machine`]: the kernel machine, b + Σ_i A[x, i], rebuilt by walking the stored steps;
//! * [`kernels`]: the path kernel and the tangent-kernel family, with faithfulness, kGLMs, GP
//!   and SVM;
//! * [`precision`]: the rebuilt network checked deterministic and f64-smooth before replay;
//! * [`export`]: the whole machine as a Zarr group with dimension names, for xarray;
//! * [`verify`], [`attribute`], [`layers`], [`plot`] and [`cli`]: what the `replay` command
//!   reports.
//!
//! Record a tiny run (four inputs, two classes, eight steps of full-batch gradient descent),
//! then rebuild its kernel machine and check that it equals the network:
//!
//! ```
//! # use burn::data::dataloader::batcher::Batcher;
//! # use burn::optim::SgdConfig;
//! # use burn::train::TrainStep;
//! # use epk_recorder::{IndexedBatcher, IndexedItem, Loss, Recorder, Samples, WithRecorder};
//! use epk_model::{device::flex_f64, models::{Mlp, MlpConfig}};
//! use epk_replay::{Network, ReplayOptions, replay};
//! # let dir = tempfile::tempdir().unwrap();
//! # let path = dir.path().join("run.zarr");
//! let device = flex_f64().unwrap();
//! # let xs: Vec<f64> = (0..24).map(|i| ((i * 7) % 11) as f64 / 5.0 - 1.0).collect();
//! # let data = |r: std::ops::Range<usize>| {
//! #     let inputs = xs[r.start * 4..r.end * 4].to_vec();
//! #     Samples::new(inputs, vec![4], r.map(|i| (i % 2) as i64).collect()).unwrap()
//! # };
//! # let (train, eval) = (data(0..4), data(4..6));
//! # let config = MlpConfig::new(vec![4, 5, 2]).with_log_softmax(true);
//! # let sgd = SgdConfig::new();
//! # let recorder = Recorder::builder(&path)
//! #     .model_config::<Mlp>(&config)
//! #     .loss(Loss::NllLogSoftmax)
//! #     .sgd(&sgd)
//! #     .train_data(train.clone())
//! #     .eval_data(eval);
//! # let mut model = Mlp::new(&config, &device).with_recorder(recorder).unwrap();
//! # let mut optim = sgd.init();
//! # let items: Vec<IndexedItem> = (0..4)
//! #     .map(|i| IndexedItem { index: i, input: train.input(i).to_vec(), target: train.targets[i] })
//! #     .collect();
//! # for _ in 0..8 {
//! #     let out = TrainStep::step(&model, IndexedBatcher.batch(items.clone(), &device));
//! #     model = TrainStep::optimize(model, &mut optim, 0.5.into(), out.grads);
//! # }
//! # model.finish().unwrap();
//! // `path` holds the recorded run.
//! let reader = epk_store::StoreReader::open(&path).unwrap();
//! let net = Network::<Mlp>::new(reader.attrs(), &device).unwrap();
//! let eval = reader.eval().unwrap();
//! let machine = replay(&reader, &net, &eval.inputs, &ReplayOptions::default(), |_| {}).unwrap();
//! // b + Σ_i A[x, i] equals f(x; w_N) to the default tolerance, 1e-12.
//! assert!(machine.max_error() < 1e-12);
//! assert_eq!(machine.attributions.shape(), &[2, 4, 2]);
//! ```

#![warn(missing_docs)]

pub mod attribute;
pub mod broken_pipe;
pub mod cli;
mod error;
pub mod export;
pub mod heap;
pub mod jacobian;
pub mod kernels;
pub mod layers;
pub mod machine;
pub mod network;
pub mod plot;
pub mod precision;
pub mod quadrature;
pub mod shard;
pub mod verify;

/// burn-optim's optimizers as linear maps of the data gradients (crate `epk-optim`).
pub use epk_optim as optimizer;
pub use error::ReplayError;
pub use kernels::{path_kernel, path_kernel_diagonal};
pub use machine::{KernelMachine, ReplayOptions, StepCheck, argmax, point_blocks, replay};
pub use network::Network;
pub use optimizer::Optimizer;
pub use quadrature::Rule;
pub use verify::VerifyReport;
