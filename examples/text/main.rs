//! A small transformer (token and position embeddings, one attention block with a padding
//! mask, LayerNorm, GELU feed-forward, a linear head on the mean of the tokens) learns the
//! sentiment of 4,196 tweets rated by people (`data/tweets/`, Hutto & Gilbert, ICWSM 2014),
//! trained with burn-train's Learner and Adam, recorded by epk. Then, as Engel et al.'s text
//! study does with an approximate kernel, it explains one held-out tweet and counterfactual
//! edits of it exactly: each edit's margin f₁ − f₀ split by layer and by training tweet.
//!
//! ```text
//! cargo run --release --example text -- --store runs/text.zarr --overwrite
//! cargo run --release --bin replay -- verify runs/text.zarr --tolerance 1e-12
//! cargo run --release --bin replay -- layers runs/text.zarr --point 0
//! ```
//!
//! The store explains the edits first (points 0–4), then `--explain` more held-out tweets.

#[path = "../common/mod.rs"]
mod common;
mod profile;
mod tweets;

use anyhow::{Context, Result, bail};
use burn::optim::AdamConfig;
use burn::tensor::Device;
use clap::Parser;
use epk::recorder::models::{Text, TextConfig};
use epk::recorder::{EpkModel, Loss, Recorder, Samples, WithRecorder, device::flex_f64};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    about = "Train a small transformer on rated tweets with the epk recorder, then explain a tweet and its edits"
)]
struct Args {
    /// Where to write the epk store.
    #[arg(long, default_value = "runs/text.zarr")]
    store: PathBuf,
    /// Replace an existing store at that path.
    #[arg(long)]
    overwrite: bool,
    /// Training tweets (the rest are held out).
    #[arg(long, default_value_t = 3400)]
    train: usize,
    /// Held-out tweets stored for replay to explain, after the edited tweet's variants.
    #[arg(long, default_value_t = 5)]
    explain: usize,
    #[arg(long, default_value_t = 3)]
    epochs: usize,
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Vocabulary size (padding and unknown words included).
    #[arg(long, default_value_t = 2000)]
    vocab: usize,
    /// Tokens per tweet.
    #[arg(long, default_value_t = 32)]
    seq_len: usize,
    #[arg(long, default_value_t = 16)]
    d_model: usize,
    /// Attention heads. Keep d_model/heads a power of 4 (1, 4, 16, …): burn-autodiff 0.22.1
    /// rounds the divisor √(d_model/heads) to f32 in its gradient, which replay refuses.
    #[arg(long, default_value_t = 4)]
    heads: usize,
    #[arg(long, default_value_t = 1e-2)]
    lr: f64,
    /// Train in float32 instead of float64.
    #[arg(long)]
    f32: bool,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Explain this text instead of the first held-out tweet with a synonym to swap.
    #[arg(long)]
    tweet: Option<String>,
    /// Only train and record; skip explaining the edits.
    #[arg(long)]
    no_explain: bool,
    /// Where to draw the edits' per-layer parts.
    #[arg(long, default_value = "runs/text_layers.png")]
    plot: PathBuf,
    /// The rated tweets (gzip; id, mean rating, text per line).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/data/tweets/tweets_GroundTruth.txt.gz"))]
    data: PathBuf,
}

fn main() -> Result<()> {
    epk::replay::broken_pipe::exit_quietly();
    let args = Args::parse();
    if args.epochs == 0 || args.batch == 0 || args.seq_len < 3 || args.heads == 0 {
        bail!("--epochs, --batch and --heads must be positive and --seq-len at least 3");
    }
    if args.d_model % args.heads != 0 {
        bail!(
            "--heads {} does not divide --d-model {}",
            args.heads,
            args.d_model
        );
    }
    let mut all = tweets::load(&args.data)?;
    if args.train >= all.len() {
        bail!(
            "--train {} leaves none of the {} tweets held out",
            args.train,
            all.len()
        );
    }
    common::shuffle(&mut all, args.seed);
    let (train_tweets, held_out_tweets) = all.split_at(args.train);
    let vocab = tweets::Vocabulary::build(train_tweets, args.vocab);
    let words = match &args.tweet {
        Some(text) => tweets::words(text),
        None => tweets::pick(held_out_tweets, &vocab, args.seq_len)
            .context("no held-out tweet has a synonym to swap")?,
    };
    let edits = tweets::counterfactuals(&words, &vocab)
        .with_context(|| format!("no word of {:?} has a synonym to swap", words.join(" ")))?;
    let encode = |rows: &[&[String]], labels: Vec<i64>| {
        let ids = rows
            .iter()
            .flat_map(|w| vocab.encode(w, args.seq_len))
            .collect();
        Samples::new(ids, vec![args.seq_len], labels).map_err(anyhow::Error::msg)
    };
    let samples = |ts: &[tweets::Tweet]| {
        let ws: Vec<Vec<String>> = ts.iter().map(|t| tweets::words(&t.text)).collect();
        let rows: Vec<&[String]> = ws.iter().map(Vec::as_slice).collect();
        encode(&rows, ts.iter().map(|t| t.label).collect())
    };
    let train = samples(train_tweets)?;
    let held_out = samples(held_out_tweets)?;
    // Stored for replay: the edits (labelled as the original's model prediction is unknown
    // yet: label 1 for all, the label is not used to explain), then held-out tweets.
    let mut rows: Vec<&[String]> = edits.iter().map(|(_, w)| w.as_slice()).collect();
    let extra: Vec<Vec<String>> = held_out_tweets[..args.explain.min(held_out_tweets.len())]
        .iter()
        .map(|t| tweets::words(&t.text))
        .collect();
    rows.extend(extra.iter().map(Vec::as_slice));
    let mut labels = vec![1; edits.len()];
    labels.extend(held_out_tweets.iter().take(extra.len()).map(|t| t.label));
    let explain = encode(&rows, labels)?;

    common::prepare_store(&args.store, args.overwrite)?;
    let device = if args.f32 {
        Device::flex().autodiff()
    } else {
        flex_f64().map_err(anyhow::Error::msg)?
    };
    device.seed(args.seed);
    let config = TextConfig {
        vocab: vocab.size(),
        seq_len: args.seq_len,
        d_model: args.d_model,
        heads: args.heads,
        d_ff: 2 * args.d_model,
        classes: 2,
    };
    let adam = AdamConfig::new();
    let recorder = Recorder::builder(&args.store)
        .overwrite(args.overwrite)
        .model_config::<Text>(&config)
        .loss(Loss::CrossEntropy)
        .optimizer(&adam)
        .train_data(train.clone())
        .eval_data(explain.clone())
        .max_batch(args.batch);
    let model = Text::init(&config, &device).with_recorder(recorder)?;
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
    let model = recorded.finish().context("finishing the recording")?;
    let params: usize = epk::recorder::params::layout(&model)
        .iter()
        .map(|p| p.len)
        .sum();
    println!(
        "trained the text model ({params} parameters, vocabulary {}) in {} for {} epochs: {steps} \
         Adam steps on {} tweets in {seconds:.1} s",
        vocab.size(),
        if args.f32 { "f32" } else { "f64" },
        args.epochs,
        train.len()
    );
    println!(
        "accuracy: train {:.3}, held-out {:.3} ({} tweets); store {}",
        common::accuracy(&model, &train, &device),
        common::accuracy(&model, &held_out, &device),
        held_out.len(),
        args.store.display()
    );
    if args.no_explain {
        return Ok(());
    }
    let variants: Vec<(String, String)> = edits
        .iter()
        .map(|(name, w)| (name.clone(), w.join(" ")))
        .collect();
    profile::explain(&args.store, &variants, &explain, train_tweets, &args.plot)
}
