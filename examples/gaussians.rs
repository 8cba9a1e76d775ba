//! Bell et al. §4.1: three Gaussian classes in 100 dimensions, one hidden ReLU layer with the
//! last layer starting at zero, log-softmax output, cross-entropy, full-batch gradient descent
//! in float64, trained with burn-train's Learner and recorded by epk.
//!
//! ```text
//! cargo run --release --example gaussians -- --store runs/gaussians.zarr
//! cargo run --release --bin replay -- verify runs/gaussians.zarr --tolerance 1e-12
//! ```

mod common;

use anyhow::{Context, Result, bail};
use burn::data::dataloader::DataLoaderBuilder;
use burn::optim::lr_scheduler::constant::ConstantLr;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamConfig, SgdConfig};
use burn::train::logger::InMemoryMetricLogger;
use burn::train::{Learner, SupervisedTraining};
use clap::{Parser, ValueEnum};
use epk::recorder::models::{Mlp, MlpConfig};
use epk::recorder::renderer::QuietRenderer;
use epk::recorder::{
    IndexedBatcher, IndexedDataset, Loss, Recorder, Samples, WithRecorder, device::flex_f64,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Optimizer {
    /// Gradient descent (the paper's setting).
    Gd,
    /// SGD with momentum 0.9 (no dampening).
    Momentum,
    /// Adam with Burn's defaults.
    Adam,
}

#[derive(Parser, Debug)]
#[command(about = "Train the paper's Gaussian toy with the epk recorder")]
struct Args {
    /// Where to write the epk store.
    #[arg(long, default_value = "runs/gaussians.zarr")]
    store: PathBuf,
    /// Replace an existing store at that path.
    #[arg(long)]
    overwrite: bool,
    /// Hidden units.
    #[arg(long, default_value_t = 64)]
    width: usize,
    /// Gradient-descent steps (full batch: one per epoch).
    #[arg(long, default_value_t = 100)]
    steps: usize,
    #[arg(long, value_enum, default_value = "gd")]
    optimizer: Optimizer,
    /// Shuffled minibatches of this size instead of the full batch (then --epochs counts).
    #[arg(long)]
    batch: Option<usize>,
    /// Epochs over the data when --batch is given.
    #[arg(long, default_value_t = 1)]
    epochs: usize,
    /// Learning rate.
    #[arg(long, default_value_t = 0.1)]
    lr: f64,
    /// Input dimensions (the class means live in the first two).
    #[arg(long, default_value_t = 100)]
    dim: usize,
    /// Training points per class.
    #[arg(long, default_value_t = 1000)]
    per_class: usize,
    /// Held-out points (stored for replay to explain).
    #[arg(long, default_value_t = 100)]
    test: usize,
    /// Upload the store to S3-compatible object storage while it is written
    /// (s3://bucket/path; endpoint and keys from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, …).
    #[cfg(feature = "s3")]
    #[arg(long)]
    upload: Option<String>,
    /// Seconds between two upload passes.
    #[cfg(feature = "s3")]
    #[arg(long, default_value_t = 1.0)]
    upload_every: f64,
    /// Seed for data and initialisation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

const MEANS: [(f64, f64); 3] = [(1.0, 4.0), (4.0, 1.0), (5.0, 5.0)];

/// `n` points cycling through the classes, each N(mean, I) in `dim` dimensions.
fn gaussians(n: usize, dim: usize, rng: &mut StdRng) -> Samples {
    let mut inputs = Vec::with_capacity(n * dim);
    let mut targets = Vec::with_capacity(n);
    for i in 0..n {
        let class = i % 3;
        for d in 0..dim {
            let mean = match d {
                0 => MEANS[class].0,
                1 => MEANS[class].1,
                _ => 0.0,
            };
            inputs.push(mean + standard_normal(rng));
        }
        targets.push(class as i64);
    }
    Samples::new(inputs, vec![dim], targets).expect("consistent shapes")
}

fn main() -> Result<()> {
    epk::replay::broken_pipe::exit_quietly();
    let args = Args::parse();
    if args.dim < 2 || args.width == 0 || args.steps == 0 || args.per_class == 0 {
        bail!("--dim must be at least 2 and --width, --steps, --per-class positive");
    }
    if !(args.lr.is_finite() && args.lr > 0.0) {
        bail!("--lr must be a positive number");
    }
    common::prepare_store(&args.store, args.overwrite)?;

    let mut rng = StdRng::seed_from_u64(args.seed);
    let train = gaussians(3 * args.per_class, args.dim, &mut rng);
    let test = gaussians(args.test, args.dim, &mut rng);

    let device = flex_f64().map_err(anyhow::Error::msg)?;
    device.seed(args.seed);
    let config = MlpConfig::new(vec![args.dim, args.width, 3])
        .with_log_softmax(true)
        .with_zero_last_layer(true);
    let model = Mlp::new(&config, &device);
    let n = train.len();
    let (batch, epochs) = match args.batch {
        Some(0) => bail!("--batch must be positive"),
        Some(b) => (b.min(n), args.epochs),
        None => (n, args.steps),
    };
    let recorder = Recorder::builder(&args.store)
        .overwrite(args.overwrite)
        .model_config::<Mlp>(&config)
        .loss(Loss::NllLogSoftmax)
        .train_data(train.clone())
        .eval_data(test.clone())
        .max_batch(batch);
    #[cfg(feature = "s3")]
    let recorder = match &args.upload {
        Some(url) => {
            let every = std::time::Duration::try_from_secs_f64(args.upload_every)
                .context("--upload-every")?;
            recorder.upload_to(url, every)
        }
        None => recorder,
    };
    let (recorder, optim) = match args.optimizer {
        Optimizer::Gd => (recorder.sgd(&SgdConfig::new()), SgdConfig::new().init()),
        Optimizer::Momentum => {
            let c = SgdConfig::new().with_momentum(Some(MomentumConfig::new().with_dampening(0.0)));
            (recorder.sgd(&c), c.init())
        }
        Optimizer::Adam => (recorder.adam(&AdamConfig::new()), AdamConfig::new().init()),
    };
    let model = model.with_recorder(recorder)?;

    let mut loader_train = DataLoaderBuilder::new(IndexedBatcher).batch_size(batch);
    if args.batch.is_some() {
        loader_train = loader_train.shuffle(args.seed);
    }
    let loader_train = loader_train.build(IndexedDataset::new(train));
    let loader_valid = DataLoaderBuilder::new(IndexedBatcher)
        .batch_size(test.len().max(1))
        .build(IndexedDataset::new(test));
    let learner = Learner::new(model, optim, ConstantLr::new(args.lr));
    let artifacts = tempfile::tempdir()?;
    let started = Instant::now();
    let result = SupervisedTraining::new(artifacts.path(), loader_train, loader_valid)
        .num_epochs(epochs)
        .with_metric_logger(InMemoryMetricLogger::new())
        .with_application_logger(None)
        .renderer(Box::new(QuietRenderer))
        .launch(learner);
    let seconds = started.elapsed().as_secs_f64();
    if let Some(e) = result.error {
        bail!("training failed: {e}");
    }
    let recorded = result.model;
    let steps = recorded.steps();
    let path = recorded.store_path().to_path_buf();
    recorded.finish().context("finishing the recording")?;
    println!(
        "trained {steps} {:?} steps of {batch} on {n} points in {seconds:.2} s; store {}",
        args.optimizer,
        path.display()
    );
    println!(
        "verify: cargo run --release --bin replay -- verify {} --tolerance 1e-12",
        path.display()
    );
    Ok(())
}

/// A standard normal draw by the Box–Muller transform.
fn standard_normal(rng: &mut StdRng) -> f64 {
    let u: f64 = 1.0 - (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64; // (0, 1]
    let v: f64 = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}
