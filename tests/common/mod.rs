//! Small recorded runs shared by the integration tests.
#![allow(dead_code)]

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

pub struct Run {
    pub config: MlpConfig,
    pub steps: usize,
    pub lr: f64,
    pub loss: Loss,
    pub train: Samples,
    pub eval: Samples,
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
        }
    }

    /// Full-batch gradient descent in a hand-written loop with the recorder attached.
    pub fn record(&self, path: &Path) -> Mlp {
        let device = flex_f64().unwrap();
        device.seed(7);
        let model = Mlp::new(&self.config, &device);
        let sgd = SgdConfig::new();
        let recorder = Recorder::builder(path)
            .model_config::<Mlp>(&self.config)
            .loss(self.loss)
            .sgd(&sgd)
            .train_data(self.train.clone())
            .eval_data(self.eval.clone());
        let mut model = model.with_recorder(recorder).unwrap();
        let mut optim = sgd.init();
        let items: Vec<IndexedItem> = (0..self.train.len())
            .map(|i| IndexedItem {
                index: i,
                input: self.train.input(i).to_vec(),
                target: self.train.targets[i],
            })
            .collect();
        for _ in 0..self.steps {
            let batch = IndexedBatcher.batch(items.clone(), &device);
            let out = TrainStep::step(&model, batch);
            model = TrainStep::optimize(model, &mut optim, self.lr.into(), out.grads);
        }
        assert_eq!(model.steps(), self.steps);
        model.finish().unwrap()
    }
}

/// A standard normal draw by the Box–Muller transform.
fn standard_normal(rng: &mut StdRng) -> f64 {
    let u: f64 = 1.0 - (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64; // (0, 1]
    let v: f64 = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}
