//! Burn's guide model (burn.dev/books/burn, "Guide") on 5,000 MNIST digits (`data/mnist/`),
//! trained as the guide trains it — burn-train's Learner, Adam at 1e-4, batches of 64 — with
//! the recorder attached. The model is `epk::model::models::Guide`: the guide's layers, with
//! its ReLUs and linear layers routed through `Switches` (docs/layers.md says why).
//!
//! ```text
//! cargo run --release --example guide -- --store runs/guide.zarr
//! cargo run --release --bin replay -- verify runs/guide.zarr --points 2 --tolerance 1e-12
//! ```
//!
//! `--fashion data/fashion-mnist` trains on Fashion-MNIST instead (60,000 + 10,000 clothing
//! images from Debian's `dataset-fashion-mnist`; `bash scripts/fetch-fashion-mnist.sh`).
//!
//! `--dropout 0.5` (the guide's own setting) records and verifies: the model's Dropout is
//! `epk::model::nn::Dropout`, whose masks replay rebuilds; it explains the evaluation network.

mod common;

use anyhow::{Context, Result, bail};
use burn::optim::AdamConfig;
use burn::tensor::Device;
use clap::Parser;
use epk::recorder::models::{Guide, GuideConfig};
use epk::recorder::{EpkModel, Loss, Recorder, WithRecorder, device::flex_f64};
use std::path::PathBuf;

/// MNIST's mean and standard deviation, as the guide's batcher normalises.
const MEAN: f64 = 0.1307;
const STD: f64 = 0.3081;
/// Fashion-MNIST's (over its 60,000 training images).
const FASHION_MEAN: f64 = 0.2860;
const FASHION_STD: f64 = 0.3530;

#[derive(Parser, Debug)]
#[command(about = "Train Burn's guide model on MNIST with the epk recorder")]
struct Args {
    /// Where to write the epk store.
    #[arg(long, default_value = "runs/guide.zarr")]
    store: PathBuf,
    /// Replace an existing store at that path.
    #[arg(long)]
    overwrite: bool,
    /// Training images (the rest of the 5,000 are held out).
    #[arg(long, default_value_t = 4000)]
    train: usize,
    /// Held-out images stored for replay to explain.
    #[arg(long, default_value_t = 10)]
    explain: usize,
    #[arg(long, default_value_t = 1)]
    epochs: usize,
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Width of the hidden linear layer (the guide's is 512).
    #[arg(long, default_value_t = 512)]
    hidden: usize,
    /// Dropout probability (the guide's is 0.5).
    #[arg(long, default_value_t = 0.0)]
    dropout: f64,
    #[arg(long, default_value_t = 1e-4)]
    lr: f64,
    /// Train in float32 instead of float64.
    #[arg(long)]
    f32: bool,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// The MNIST CSV (gzip; 784 pixels 0–255 and a label per line).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist/mnist_5k.csv.gz"))]
    data: PathBuf,
    /// Train on Fashion-MNIST from this folder instead (`bash scripts/fetch-fashion-mnist.sh`
    /// fills `data/fashion-mnist/`): `--train` images of its 60,000, held out from its 10,000.
    #[arg(long)]
    fashion: Option<PathBuf>,
}

fn main() -> Result<()> {
    epk::replay::broken_pipe::exit_quietly();
    let args = Args::parse();
    if args.epochs == 0 || args.batch == 0 || args.explain == 0 || args.hidden == 0 {
        bail!("--epochs, --batch, --explain and --hidden must be positive");
    }
    let (train, held_out) = images(&args)?;
    common::prepare_store(&args.store, args.overwrite)?;
    let explain = common::image_samples(&held_out[..args.explain], 28)?;
    let train = common::image_samples(&train, 28)?;
    let held_out = common::image_samples(&held_out, 28)?;

    let device = if args.f32 {
        Device::flex().autodiff()
    } else {
        flex_f64().map_err(anyhow::Error::msg)?
    };
    device.seed(args.seed);
    let config = GuideConfig {
        dropout: args.dropout,
        ..GuideConfig::new(28, 10, args.hidden)
    };
    let model = Guide::init(&config, &device);
    let adam = AdamConfig::new();
    let recorder = Recorder::builder(&args.store)
        .overwrite(args.overwrite)
        .model_config::<Guide>(&config)
        .loss(Loss::CrossEntropy)
        .optimizer(&adam)
        .train_data(train.clone())
        .eval_data(explain.clone())
        .max_batch(args.batch);
    let model = model.with_recorder(recorder)?;
    let (recorded, seconds) = common::learn(
        model,
        &adam,
        (&train, &held_out),
        args.batch,
        args.epochs,
        args.lr,
        args.seed,
    )?;
    let steps = recorded.steps();
    let path = recorded.store_path().to_path_buf();
    let model = recorded.finish().context("finishing the recording")?;
    let params: usize = epk::recorder::params::layout(&model)
        .iter()
        .map(|p| p.len)
        .sum();
    println!(
        "trained the guide model ({params} parameters, hidden {}) on {} in {} for {} epochs: \
         {steps} Adam steps on {} images in {seconds:.1} s",
        args.hidden,
        if args.fashion.is_some() {
            "Fashion-MNIST"
        } else {
            "MNIST"
        },
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

use common::Rows;

/// The training and held-out images, normalised as the guide's batcher does: MNIST's 5,000
/// split at `--train`, or Fashion-MNIST's training and test sets.
fn images(args: &Args) -> Result<(Rows, Rows)> {
    let (mut train, mut held_out, mean, std) = match &args.fashion {
        Some(dir) => {
            let [train, test] = common::load_fashion(dir, args.seed)?;
            (train, test, FASHION_MEAN, FASHION_STD)
        }
        None => {
            let mut rows = common::load_mnist(&args.data, args.seed)?;
            let rest = rows.split_off(args.train.min(rows.len()));
            (rows, rest, MEAN, STD)
        }
    };
    if args.train > train.len() || args.explain > held_out.len() {
        bail!(
            "--train {} and --explain {} exceed the {} training and {} held-out images",
            args.train,
            args.explain,
            train.len(),
            held_out.len()
        );
    }
    train.truncate(args.train);
    for (pixels, _) in train.iter_mut().chain(held_out.iter_mut()) {
        pixels.iter_mut().for_each(|p| *p = (*p - mean) / std);
    }
    Ok((train, held_out))
}
