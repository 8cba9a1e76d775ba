//! Small recorded runs shared by the integration tests.
#![allow(dead_code)]

use burn::data::dataloader::batcher::Batcher;
use burn::optim::{AdamConfig, AdamWConfig, SgdConfig};
use burn::train::TrainStep;
use epk::recorder::EpkModel;
use epk::recorder::models::{Mlp, MlpConfig};
use epk::recorder::{
    IndexedBatcher, IndexedItem, Loss, RecordError, Recorded, Recorder, Samples, WithRecorder,
    device::flex_f64,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};

/// `n` points cycling through `classes` Gaussian blobs in `dim` dimensions.
pub fn blobs(n: usize, dim: usize, classes: usize, seed: u64) -> Samples {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut inputs = Vec::new();
    let mut targets = Vec::new();
    for i in 0..n {
        let c = i % classes;
        for d in 0..dim {
            let mean = if d % classes == c { 2.0 } else { 0.0 };
            inputs.push(mean + standard_normal(&mut rng));
        }
        targets.push(c as i64);
    }
    Samples::new(inputs, vec![dim], targets).unwrap()
}

/// The optimizer a test run trains with.
#[derive(Clone)]
pub enum Optim {
    Sgd(SgdConfig),
    Adam(AdamConfig),
    AdamW(AdamWConfig),
}

pub struct Run {
    pub config: MlpConfig,
    pub steps: usize,
    pub lr: f64,
    pub loss: Loss,
    pub train: Samples,
    pub eval: Samples,
    pub optim: Optim,
    /// Samples per step; 0 means the whole set. Minibatches walk a seeded shuffle, epoch by
    /// epoch, and the last batch of an epoch may be smaller.
    pub batch: usize,
    /// The optimizer the recorder is told, when it is not `optim` (a mismatch under test).
    pub declared: Option<Optim>,
    /// Train in f32 (flex's default float type) instead of f64. A test process uses one.
    pub f32: bool,
}

impl Run {
    /// The paper's toy in miniature: one hidden ReLU layer, zero last layer, log-softmax.
    pub fn toy(dim: usize, width: usize, per_class: usize, steps: usize) -> Self {
        Run {
            config: MlpConfig::new(vec![dim, width, 3])
                .with_log_softmax(true)
                .with_zero_last_layer(true),
            steps,
            lr: 0.5,
            loss: Loss::NllLogSoftmax,
            train: blobs(3 * per_class, dim, 3, 1),
            eval: blobs(12, dim, 3, 2),
            optim: Optim::Sgd(SgdConfig::new()),
            batch: 0,
            declared: None,
            f32: false,
        }
    }

    /// Softmax regression (no hidden layer) on `dim`-dimensional blobs: closed forms exist.
    pub fn linear(dim: usize, k: usize, steps: usize, lr: f64) -> Self {
        Run {
            config: MlpConfig::new(vec![dim, k]),
            steps,
            lr,
            loss: Loss::CrossEntropy,
            train: blobs(30, dim, k, 3),
            eval: blobs(6, dim, k, 4),
            optim: Optim::Sgd(SgdConfig::new()),
            batch: 0,
            declared: None,
            f32: false,
        }
    }

    /// The same run with another optimizer and minibatches of `batch`.
    pub fn with(mut self, optim: Optim, batch: usize, lr: f64) -> Self {
        self.optim = optim;
        self.batch = batch;
        self.lr = lr;
        self
    }

    /// The dataset indices of every step's batch.
    pub fn batches(&self) -> Vec<Vec<usize>> {
        let n = self.train.len();
        if self.batch == 0 || self.batch >= n {
            return vec![(0..n).collect(); self.steps];
        }
        let mut rng = StdRng::seed_from_u64(11);
        let mut out = Vec::new();
        while out.len() < self.steps {
            let mut order: Vec<usize> = (0..n).collect();
            for i in (1..n).rev() {
                order.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
            }
            for chunk in order.chunks(self.batch) {
                if out.len() < self.steps {
                    out.push(chunk.to_vec());
                }
            }
        }
        out
    }

    /// Full-batch gradient descent in a hand-written loop with the recorder attached.
    pub fn record(&self, path: &Path) -> Mlp {
        let model = self.try_record(path).unwrap();
        assert!(model.error().is_none(), "{:?}", model.error());
        assert_eq!(model.steps(), self.steps);
        model.finish().unwrap()
    }

    /// Records as [`Run::record`] does, stopping early when the recorder stops, and returns
    /// the recording model unfinished.
    pub fn try_record(&self, path: &Path) -> Result<Recorded<Mlp>, RecordError> {
        self.try_record_as::<Mlp>(path)
    }

    /// Records as [`Run::try_record`] does, with another model type built from the same
    /// configuration.
    pub fn try_record_as<M: EpkModel<Config = MlpConfig> + 'static>(
        &self,
        path: &Path,
    ) -> Result<Recorded<M>, RecordError> {
        self.try_record_model::<M>(&self.config, path)
    }

    /// Records as [`Run::try_record`] does, with a model of type `M` and configuration
    /// `config` (the run's own `config` is not used).
    pub fn try_record_model<M: EpkModel + 'static>(
        &self,
        config: &M::Config,
        path: &Path,
    ) -> Result<Recorded<M>, RecordError> {
        let device = if self.f32 {
            burn::tensor::Device::flex().autodiff()
        } else {
            flex_f64().unwrap()
        };
        // Burn's generator is one static shared by the tests running beside this one: seed,
        // draw and materialize the weights at once, one recording at a time, so that another
        // test's draw rarely falls between the seed and the weights.
        let model = {
            static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
            let _held = INIT.lock().unwrap_or_else(|p| p.into_inner());
            device.seed(7);
            let model = M::init(config, &device);
            epk::recorder::params::flatten(&model).expect("the initial weights");
            model
        };
        let recorder = Recorder::builder(path)
            .model_config::<M>(config)
            .loss(self.loss)
            .train_data(self.train.clone())
            .eval_data(self.eval.clone());
        let recorder = match self.declared.as_ref().unwrap_or(&self.optim) {
            Optim::Sgd(c) => recorder.sgd(c),
            Optim::Adam(c) => recorder.adam(c),
            Optim::AdamW(c) => recorder.adamw(c),
        };
        let mut optim: burn::optim::ModuleOptimizer = match &self.optim {
            Optim::Sgd(c) => c.init(),
            Optim::Adam(c) => c.init(),
            Optim::AdamW(c) => c.init(),
        };
        let mut model = model.with_recorder(recorder)?;
        let items: Vec<IndexedItem> = (0..self.train.len())
            .map(|i| IndexedItem {
                index: i,
                input: self.train.input(i).to_vec(),
                target: self.train.targets[i],
            })
            .collect();
        for idx in self.batches() {
            let batch =
                IndexedBatcher.batch(idx.iter().map(|&i| items[i].clone()).collect(), &device);
            let out = TrainStep::step(&model, batch);
            model = TrainStep::optimize(model, &mut optim, self.lr.into(), out.grads);
            if model.error().is_some() {
                break;
            }
        }
        Ok(model)
    }
}

/// A standard normal draw by the Box–Muller transform.
fn standard_normal(rng: &mut StdRng) -> f64 {
    let u: f64 = 1.0 - (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64; // (0, 1]
    let v: f64 = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

/// Replays the store's held-out points with `rule` and returns the reader and the machine.
pub fn machine_for(
    path: &Path,
    rule: epk::replay::Rule,
) -> (epk::store::StoreReader, epk::replay::KernelMachine) {
    let reader = epk::store::StoreReader::open(path).unwrap();
    let device = flex_f64().unwrap();
    let net = epk::replay::Network::<Mlp>::new(reader.attrs(), &device).unwrap();
    let eval = reader.eval().unwrap();
    let options = epk::replay::ReplayOptions {
        rule,
        ..epk::replay::ReplayOptions::default()
    };
    let machine = epk::replay::replay(&reader, &net, &eval.inputs, &options, |_| {}).unwrap();
    (reader, machine)
}

/// Replays the store's first `points` held-out points with the default rule and verifies the
/// machine against the network at 1e-12, with the store's faults.
pub fn verify(path: &Path, points: usize) -> epk::replay::VerifyReport {
    let reader = epk::store::StoreReader::open(path).unwrap();
    let device = flex_f64().unwrap();
    let net = epk::replay::Network::<Mlp>::new(reader.attrs(), &device).unwrap();
    let eval = reader.eval().unwrap();
    let xs = &eval.inputs[..points * reader.attrs().input_len()];
    let options = epk::replay::ReplayOptions::default();
    let machine = epk::replay::replay(&reader, &net, xs, &options, |_| {}).unwrap();
    epk::replay::VerifyReport::new(&machine, epk::replay::Rule::Auto, 1e-12, true, 0.0)
        .with_faults(&reader.attrs().faults)
}

/// The gaussians example's flags for a tiny problem (60 points in 4 dimensions, width 4, 2
/// held out): thousands of full-batch steps take well under a second.
pub const TINY_GAUSSIANS: [&str; 8] = [
    "--per-class",
    "20",
    "--dim",
    "4",
    "--width",
    "4",
    "--test",
    "2",
];

/// A binary built beside this test (in `target/<profile>` or `target/<profile>/examples`).
pub fn built(relative: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<this test> → target/<profile>
    let path = exe.parent().unwrap().parent().unwrap().join(relative);
    assert!(path.exists(), "{} is built with the tests", path.display());
    path
}
