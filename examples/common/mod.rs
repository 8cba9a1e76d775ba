//! What the examples share: preparing the store path, and the paper's toy in two dimensions.
#![allow(dead_code)]

pub mod idx;

use anyhow::{Context, Result, bail};
use burn::data::dataloader::batcher::Batcher;
use burn::optim::SgdConfig;
use burn::train::TrainStep;
use epk::recorder::models::{Mlp, MlpConfig};
use epk::recorder::{
    IndexedBatcher, IndexedItem, Loss, Recorder, Samples, WithRecorder, device::flex_f64,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::Path;

/// The class means of Bell et al.'s toy, in its first two dimensions.
pub const MEANS: [(f64, f64); 3] = [(1.0, 4.0), (4.0, 1.0), (5.0, 5.0)];

/// Deterministic 2-D points on rings around each mean (no RNG needed for a demonstration).
pub fn rings(per_class: usize, phase: f64) -> Samples {
    let mut inputs = Vec::new();
    let mut targets = Vec::new();
    for i in 0..per_class * 3 {
        let c = i % 3;
        let j = (i / 3) as f64;
        let r = 0.3 + 1.2 * ((j * 0.618_033_988_75 + phase) % 1.0);
        let a = j * 2.399_963_229_7 + phase;
        inputs.extend([MEANS[c].0 + r * a.cos(), MEANS[c].1 + r * a.sin()]);
        targets.push(c as i64);
    }
    Samples::new(inputs, vec![2], targets).expect("consistent shapes")
}

/// Trains the 2-D toy (one hidden ReLU layer of `width`, last layer at zero, log-softmax,
/// full-batch gradient descent at lr 0.1) in a hand-written loop with the recorder attached;
/// `overwrite` replaces an existing store.
pub fn train_toy_2d(
    store: &Path,
    overwrite: bool,
    train: &Samples,
    eval: Samples,
    width: usize,
    steps: usize,
) -> Result<()> {
    let device = flex_f64().map_err(anyhow::Error::msg)?;
    device.seed(1);
    let config = MlpConfig::new(vec![2, width, 3])
        .with_log_softmax(true)
        .with_zero_last_layer(true);
    let sgd = SgdConfig::new();
    let recorder = Recorder::builder(store)
        .overwrite(overwrite)
        .model_config::<Mlp>(&config)
        .loss(Loss::NllLogSoftmax)
        .sgd(&sgd)
        .train_data(train.clone())
        .eval_data(eval);
    let mut model = Mlp::new(&config, &device).with_recorder(recorder)?;
    let mut optim = sgd.init();
    let items: Vec<IndexedItem> = (0..train.len())
        .map(|i| IndexedItem {
            index: i,
            input: train.input(i).to_vec(),
            target: train.targets[i],
        })
        .collect();
    for _ in 0..steps {
        let out = TrainStep::step(&model, IndexedBatcher.batch(items.clone(), &device));
        model = TrainStep::optimize(model, &mut optim, 0.1.into(), out.grads);
        model.check()?;
    }
    model.finish().context("finishing the recording")?;
    Ok(())
}

/// Checks that a new store may go to `path`, before any training: an existing path is refused
/// unless `overwrite`, and so is one that another run is writing (naming that run) or a Zarr
/// store that is not an epk store. The old store is removed by the recorder
/// (`Recorder::overwrite`) once it holds the store's lock, never here.
pub fn prepare_store(path: &Path, overwrite: bool) -> Result<()> {
    if path.exists() {
        // A run writing the store holds its lock: name it, whatever was asked.
        epk::store::WriterLock::ensure_free(path)?;
        if !overwrite {
            bail!("{} exists; pass --overwrite to replace it", path.display());
        }
        // A damaged epk store or one of an older format may go; anything else stays.
        if !epk::store::StoreReader::is_epk_store(path) && path.join("zarr.json").exists() {
            bail!(
                "{} is not an epk store; refusing to overwrite it",
                path.display()
            );
        }
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    Ok(())
}

/// The UCI digits of `data/digits/` (64 pixels 0–16 and a label per line), pixels scaled to
/// [0, 1], in a seeded shuffle.
pub fn load_digits(path: &Path, seed: u64) -> Result<Vec<(Vec<f64>, i64)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    image_rows(&text, path, 64, 16.0, seed)
}

/// Images (pixels) and labels, one row per sample.
pub type Rows = Vec<(Vec<f64>, i64)>;

/// Fashion-MNIST from `dir` (`data/fashion-mnist/`): the 60,000 training images and the
/// 10,000 test images, each in a seeded shuffle, pixels scaled to [0, 1].
pub fn load_fashion(dir: &Path, seed: u64) -> Result<[Rows; 2]> {
    let split = |name: &str| -> Result<Rows> {
        let mut rows = idx::load(
            &dir.join(format!("{name}-images-idx3-ubyte.gz")),
            &dir.join(format!("{name}-labels-idx1-ubyte.gz")),
        )?;
        shuffle(&mut rows, seed);
        Ok(rows)
    };
    Ok([split("train")?, split("t10k")?])
}

/// The MNIST digits of `data/mnist/` (gzip: 784 pixels 0–255 and a label per line), pixels
/// scaled to [0, 1], in a seeded shuffle.
pub fn load_mnist(path: &Path, seed: u64) -> Result<Vec<(Vec<f64>, i64)>> {
    use std::io::Read;
    let file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut text = String::new();
    flate2::read::GzDecoder::new(file)
        .read_to_string(&mut text)
        .with_context(|| format!("{}: not a gzip-compressed CSV", path.display()))?;
    image_rows(&text, path, 784, 255.0, seed)
}

/// Parses CSV rows of `pixels` values in [0, `max`] and a label 0–9, scales the pixels to
/// [0, 1] and shuffles the rows with `seed`.
fn image_rows(
    text: &str,
    path: &Path,
    pixels: usize,
    max: f64,
    seed: u64,
) -> Result<Vec<(Vec<f64>, i64)>> {
    let mut rows = Vec::new();
    for (line, row) in text
        .lines()
        .enumerate()
        .filter(|(_, r)| !r.trim().is_empty())
    {
        let values: Vec<f64> = row
            .split(',')
            .map(|v| v.trim().parse::<f64>())
            .collect::<Result<_, _>>()
            .with_context(|| format!("{} line {}: not numbers", path.display(), line + 1))?;
        if values.len() != pixels + 1 || !(0.0..=9.0).contains(&values[pixels]) {
            bail!(
                "{} line {}: expected {pixels} pixels and a label 0–9",
                path.display(),
                line + 1
            );
        }
        rows.push((
            values[..pixels].iter().map(|v| v / max).collect(),
            values[pixels] as i64,
        ));
    }
    shuffle(&mut rows, seed);
    Ok(rows)
}

/// A seeded Fisher–Yates shuffle (the same order on every platform).
pub fn shuffle<T>(rows: &mut [T], seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    for i in (1..rows.len()).rev() {
        rows.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
    }
}

/// Digit rows as 8×8 samples.
pub fn digit_samples(rows: &[(Vec<f64>, i64)]) -> Result<Samples> {
    image_samples(rows, 8)
}

/// Image rows as `side × side` samples.
pub fn image_samples(rows: &[(Vec<f64>, i64)], side: usize) -> Result<Samples> {
    let inputs = rows.iter().flat_map(|r| r.0.iter().copied()).collect();
    let targets = rows.iter().map(|r| r.1).collect();
    Samples::new(inputs, vec![side, side], targets).map_err(anyhow::Error::msg)
}

/// The share of `data` that `model` classifies right (argmax of f against the label).
pub fn accuracy<M: epk::recorder::EpkModel>(
    model: &M,
    data: &Samples,
    device: &burn::tensor::Device,
) -> f64 {
    let n = data.len();
    let len: usize = data.input_shape.iter().product();
    // In chunks: a convolution's activations for 10,000 images would take gigabytes.
    let mut right = 0;
    for start in (0..n).step_by(500) {
        let end = (start + 500).min(n);
        let inputs = data.inputs[start * len..end * len].to_vec();
        let x = epk::recorder::batch::float_tensor(inputs, [end - start, len], device);
        // The evaluation network: epk's Dropout off.
        let f = epk::model::nn::dropout::evaluation(|| {
            model.epk_forward(x, &mut epk::recorder::Switches::off())
        });
        let predicted: Vec<i64> = f
            .argmax(1)
            .into_data()
            .convert::<i64>()
            .try_into_vec::<i64>()
            .unwrap_or_default();
        right += predicted
            .iter()
            .zip(&data.targets[start..end])
            .filter(|(a, b)| a == b)
            .count();
    }
    right as f64 / n.max(1) as f64
}

/// Trains `model` (a recorded one) with burn-train's `Learner`: Adam at a constant `lr`,
/// shuffled batches of `batch` from `train`, `held_out` as the validation set, no terminal
/// dashboard. Returns the trained model and the seconds training took.
pub fn learn<M: epk::recorder::EpkModel + 'static>(
    model: epk::recorder::Recorded<M>,
    adam: &burn::optim::AdamConfig,
    data: (&Samples, &Samples),
    batch: usize,
    epochs: usize,
    lr: f64,
    seed: u64,
) -> Result<(epk::recorder::Recorded<M>, f64)> {
    use burn::data::dataloader::DataLoaderBuilder;
    use burn::optim::lr_scheduler::constant::ConstantLr;
    use burn::train::logger::InMemoryMetricLogger;
    use burn::train::{Learner, SupervisedTraining};
    let (train, held_out) = data;
    let loader_train = DataLoaderBuilder::new(IndexedBatcher)
        .batch_size(batch)
        .shuffle(seed)
        .build(epk::recorder::IndexedDataset::new(train.clone()));
    let loader_valid = DataLoaderBuilder::new(IndexedBatcher)
        .batch_size(256)
        .build(epk::recorder::IndexedDataset::new(held_out.clone()));
    let artifacts = tempfile::tempdir()?;
    let started = std::time::Instant::now();
    let result = SupervisedTraining::new(artifacts.path(), loader_train, loader_valid)
        .num_epochs(epochs)
        .with_metric_logger(InMemoryMetricLogger::new())
        .with_application_logger(None)
        .renderer(Box::new(epk::recorder::renderer::QuietRenderer))
        .launch(Learner::new(model, adam.init(), ConstantLr::new(lr)));
    let seconds = started.elapsed().as_secs_f64();
    if let Some(e) = result.error {
        bail!("training failed: {e}");
    }
    Ok((result.model, seconds))
}
