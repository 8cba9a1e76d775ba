//! A small CNN on the UCI handwritten digits (8×8, 10 classes; `data/digits/`), trained with
//! burn-train's Learner on shuffled minibatches and recorded by epk. Two recipes:
//!
//! - `--optimizer sgd` (default): SGD with momentum 0.9 and weight decay 5e-4, constant rate.
//! - `--optimizer adamw`: AdamW with decoupled decay, a cosine learning-rate schedule, norm
//!   clipping and gradient accumulation over two batches.
//!
//! ```text
//! cargo run --release --example digits -- --store runs/digits-sgd.zarr
//! cargo run --release --example digits -- --optimizer adamw --store runs/digits-adamw.zarr
//! cargo run --release --bin replay -- verify runs/digits-sgd.zarr --tolerance 1e-12
//! ```
//!
//! `--f32` trains in float32 (the store keeps f32); replay still computes in f64.

mod common;

use anyhow::{Context, Result, bail};
use burn::data::dataloader::DataLoaderBuilder;
use burn::grad_clipping::GradientClippingConfig;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::lr_scheduler::constant::ConstantLr;
use burn::optim::lr_scheduler::cosine::CosineAnnealingLrSchedulerConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamWConfig, SgdConfig};
use burn::tensor::Device;
use burn::train::logger::InMemoryMetricLogger;
use burn::train::{Learner, SupervisedTraining};
use clap::{Parser, ValueEnum};
use epk::recorder::models::{Cnn, CnnConfig};
use epk::recorder::renderer::QuietRenderer;
use epk::recorder::{
    IndexedBatcher, IndexedDataset, Loss, Recorder, WithRecorder, device::flex_f64,
};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Optimizer {
    /// SGD, momentum 0.9, weight decay 5e-4, constant learning rate.
    Sgd,
    /// AdamW, weight decay 1e-2, cosine schedule, norm clipping, accumulation 2.
    Adamw,
}

#[derive(Parser, Debug)]
#[command(about = "Train a small CNN on the UCI digits with the epk recorder")]
struct Args {
    /// Where to write the epk store.
    #[arg(long, default_value = "runs/digits.zarr")]
    store: PathBuf,
    /// Replace an existing store at that path.
    #[arg(long)]
    overwrite: bool,
    #[arg(long, value_enum, default_value = "sgd")]
    optimizer: Optimizer,
    /// Train in float32 instead of float64.
    #[arg(long)]
    f32: bool,
    #[arg(long, default_value_t = 5)]
    epochs: usize,
    /// Samples per batch (per micro-batch for adamw).
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Training images (the rest of the 1,797 are held out).
    #[arg(long, default_value_t = 1500)]
    train: usize,
    /// Held-out images stored for replay to explain.
    #[arg(long, default_value_t = 30)]
    explain: usize,
    /// Learning rate (the schedule's peak for adamw).
    #[arg(long)]
    lr: Option<f64>,
    /// Channels of the two convolutions.
    #[arg(long, num_args = 2, default_values_t = [8, 16])]
    channels: Vec<usize>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The digits CSV (64 pixels 0–16 and a label per line).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/data/digits/digits.csv"))]
    data: PathBuf,
}

fn main() -> Result<()> {
    epk::replay::broken_pipe::exit_quietly();
    let args = Args::parse();
    if args.epochs == 0 || args.batch == 0 || args.explain == 0 {
        bail!("--epochs, --batch and --explain must be positive");
    }
    if args.channels.contains(&0) {
        bail!("--channels must be positive");
    }
    let rows = common::load_digits(&args.data, args.seed)?;
    if args.train + args.explain > rows.len() {
        bail!(
            "--train {} and --explain {} exceed the {} images",
            args.train,
            args.explain,
            rows.len()
        );
    }
    common::prepare_store(&args.store, args.overwrite)?;
    let train = common::digit_samples(&rows[..args.train])?;
    let held_out = common::digit_samples(&rows[args.train..])?;
    let explain = common::digit_samples(&rows[args.train..args.train + args.explain])?;

    let device = if args.f32 {
        Device::flex().autodiff()
    } else {
        flex_f64().map_err(anyhow::Error::msg)?
    };
    device.seed(args.seed);
    let config = CnnConfig::new(8, [args.channels[0], args.channels[1]], 10);
    let model = Cnn::new(&config, &device);
    let recorder = Recorder::builder(&args.store)
        .overwrite(args.overwrite)
        .model_config::<Cnn>(&config)
        .loss(Loss::CrossEntropy)
        .train_data(train.clone())
        .eval_data(explain.clone())
        // One optimizer step takes a batch, or two under AdamW's accumulation: the store's
        // per-step rows are sized to that, not to the training set.
        .max_batch(match args.optimizer {
            Optimizer::Sgd => args.batch,
            Optimizer::Adamw => 2 * args.batch,
        });
    let loader_train = DataLoaderBuilder::new(IndexedBatcher)
        .batch_size(args.batch)
        .shuffle(args.seed)
        .build(IndexedDataset::new(train.clone()));
    let loader_valid = DataLoaderBuilder::new(IndexedBatcher)
        .batch_size(held_out.len())
        .build(IndexedDataset::new(held_out.clone()));
    let artifacts = tempfile::tempdir()?;
    let training = SupervisedTraining::new(artifacts.path(), loader_train, loader_valid)
        .num_epochs(args.epochs)
        .with_metric_logger(InMemoryMetricLogger::new())
        .with_application_logger(None)
        .renderer(Box::new(QuietRenderer));
    let started = Instant::now();
    let result = match args.optimizer {
        Optimizer::Sgd => {
            let sgd = SgdConfig::new()
                .with_momentum(Some(MomentumConfig::new().with_dampening(0.0)))
                .with_weight_decay(Some(WeightDecayConfig::new(5e-4)));
            let model = model.with_recorder(recorder.sgd(&sgd))?;
            let lr = args.lr.unwrap_or(0.1);
            training.launch(Learner::new(model, sgd.init(), ConstantLr::new(lr)))
        }
        Optimizer::Adamw => {
            let adamw = AdamWConfig::new()
                .with_weight_decay(1e-2)
                .with_grad_clipping(Some(GradientClippingConfig::Norm(1.0)));
            let model = model.with_recorder(recorder.adamw(&adamw))?;
            let per_epoch = train.len().div_ceil(args.batch).div_ceil(2);
            let schedule = CosineAnnealingLrSchedulerConfig::new(
                args.lr.unwrap_or(0.01),
                per_epoch * args.epochs,
            )
            .with_min_lr(1e-4)
            .init()
            .map_err(anyhow::Error::msg)?;
            training
                .grads_accumulation(2)
                .launch(Learner::new(model, adamw.init(), schedule))
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    if let Some(e) = result.error {
        bail!("training failed: {e}");
    }
    let recorded = result.model;
    let steps = recorded.steps();
    let path = recorded.store_path().to_path_buf();
    let model = recorded.finish().context("finishing the recording")?;
    println!(
        "trained {:?} in {} for {} epochs: {steps} optimizer steps on {} images in {seconds:.1} s",
        args.optimizer,
        if args.f32 { "f32" } else { "f64" },
        args.epochs,
        train.len()
    );
    println!(
        "accuracy: train {:.3}, held-out {:.3} ({} images); store {} explains {} held-out images",
        common::accuracy(&model, &train, &device),
        common::accuracy(&model, &held_out, &device),
        held_out.len(),
        path.display(),
        explain.len()
    );
    println!(
        "verify: cargo run --release --bin replay -- verify {} --tolerance 1e-12",
        path.display()
    );
    Ok(())
}
