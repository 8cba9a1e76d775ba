//! Burn's own guide (burn.dev/books/burn, "Guide": `model.rs`, `data.rs`, `training.rs`),
//! recorded by epk and replayed by this same program. The guide's files are here as the guide
//! has them (from tracel-ai/burn at 2c06be35; Burn is MIT or Apache-2.0, © the Burn
//! contributors); what changed for epk, line by line, is:
//!
//! - `model.rs`: `Relu`, `Dropout` and `DropoutConfig` come from `epk::model::nn` instead of
//!   `burn::nn` (their switching values noted, their masks keyed by step and sample);
//! - `data.rs`: `MnistItem` comes from `mnist.rs`, since Burn's `MnistDataset` downloads
//!   MNIST at run time (2 lines);
//! - `training.rs`: the datasets and batcher are wrapped to carry indices, the store's samples
//!   are formed by the guide's own batcher, and the recorder is attached with
//!   `.with_recorder(...)`; the guide's loss is computed through `Explain::loss` (its
//!   `TrainStep` stays in the file, but the Learner runs the recorder's);
//! - `epk.rs` is new: the two small trait impls.
//!
//! Dropout is the guide's 0.5: epk's Dropout draws each mask bit from the step, the sample and
//! the unit, so replay rebuilds the masks each step used, and explains the evaluation network.
//!
//! ```text
//! cargo run --release --example burn_guide -- train --store runs/burn-guide.zarr --overwrite
//! cargo run --release --example burn_guide -- replay verify runs/burn-guide.zarr --points 2
//! ```

#[path = "../common/mod.rs"]
mod common;
mod data;
mod epk;
mod mnist;
mod model;
mod training;

use ::epk::replay::cli::{Registry, main_with_args};
use anyhow::Result;
use burn::optim::AdamConfig;
use burn::tensor::Device;
use clap::{Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    about = "Burn's guide model, trained as the guide trains it, recorded and replayed by epk"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train the guide's model on MNIST with the recorder attached.
    Train(TrainArgs),
    /// epk's replay (verify, attribute, layers, compare, …), knowing the guide's model.
    Replay {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
}

#[derive(clap::Args, Debug)]
struct TrainArgs {
    /// Where to write the epk store.
    #[arg(long, default_value = "runs/burn-guide.zarr")]
    store: PathBuf,
    /// Replace an existing store at that path.
    #[arg(long)]
    overwrite: bool,
    /// Where the guide's Learner writes its checkpoints and the trained model.
    #[arg(long, default_value = "target/burn-guide")]
    artifacts: String,
    /// Training digits (the rest of the 5,000 are held out).
    #[arg(long, default_value_t = 4000)]
    train: usize,
    /// Held-out digits stored for replay to explain.
    #[arg(long, default_value_t = 10)]
    explain: usize,
    /// Epochs (the guide's are 10).
    #[arg(long, default_value_t = 1)]
    epochs: usize,
    /// Width of the hidden linear layer (the guide's is 512).
    #[arg(long, default_value_t = 512)]
    hidden: usize,
    /// Dropout probability (the guide's is 0.5).
    #[arg(long, default_value_t = 0.5)]
    dropout: f64,
    /// Train in float32 instead of float64.
    #[arg(long)]
    f32: bool,
    /// The MNIST CSV (gzip; 784 pixels 0–255 and a label per line).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist/mnist_5k.csv.gz"))]
    data: PathBuf,
}

fn main() -> ExitCode {
    ::epk::replay::broken_pipe::exit_quietly();
    match Cli::parse().command {
        Command::Replay { args } => {
            let argv = std::iter::once(OsString::from("replay")).chain(args);
            main_with_args(Registry::builtin().with::<model::Model>(), argv)
        }
        Command::Train(args) => match train(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

/// The guide's `bin/train.rs`, on the CPU in float64 (or float32), with epk's store.
fn train(args: TrainArgs) -> Result<()> {
    if args.epochs == 0 || args.explain == 0 || args.hidden == 0 {
        anyhow::bail!("--epochs, --explain and --hidden must be positive");
    }
    let config = training::TrainingConfig::new(
        model::ModelConfig::new(10, args.hidden).with_dropout(args.dropout),
        AdamConfig::new(),
    )
    .with_num_epochs(args.epochs);
    let (train, test) = mnist::datasets(&args.data, args.train, config.seed)?;
    common::prepare_store(&args.store, args.overwrite)?;
    let device = if args.f32 {
        Device::flex()
    } else {
        ::epk::recorder::device::flex_f64().map_err(anyhow::Error::msg)?
    };
    let epk = training::Epk {
        store: args.store,
        overwrite: args.overwrite,
        train,
        test,
        explain: args.explain,
    };
    training::train(&args.artifacts, config, device, epk)
}
