//! Criterion benchmarks of the two hot loops: one training step with and without the recorder,
//! and a replay of a short toy run with each kind of quadrature rule.
//!
//! ```text
//! cargo bench --bench epk
//! ```
//!
//! The README's table (the whole jobs, the JAX comparison, memory) comes from
//! `python3 scripts/bench.py`; these isolate the per-step costs.

use burn::data::dataloader::batcher::Batcher;
use burn::optim::{GradientsParams, SgdConfig};
use burn::tensor::Device;
use burn::train::TrainStep;
use criterion::{Criterion, criterion_group, criterion_main};
use epk::recorder::models::{Mlp, MlpConfig};
use epk::recorder::{
    EpkModel, IndexedBatch, IndexedBatcher, IndexedItem, Loss, Recorder, Samples, Switches,
    WithRecorder, device::flex_f64, loss,
};
use epk::replay::{Network, ReplayOptions, Rule, replay};
use epk::store::StoreReader;
use std::hint::black_box;
use std::path::Path;

/// Points around three class means in `dim` dimensions (deterministic, no RNG).
fn toy(n: usize, dim: usize, phase: f64) -> Samples {
    let inputs = (0..n * dim)
        .map(|j| {
            let (i, d) = (j / dim, j % dim);
            ((i % 3) as f64) * f64::from(u8::from(d < 3)) + (phase + j as f64 * 0.618).sin()
        })
        .collect();
    let targets = (0..n).map(|i| (i % 3) as i64).collect();
    Samples::new(inputs, vec![dim], targets).expect("shapes")
}

fn batch(samples: &Samples, device: &Device) -> IndexedBatch {
    let items = (0..samples.len())
        .map(|i| IndexedItem {
            index: i,
            input: samples.input(i).to_vec(),
            target: samples.targets[i],
        })
        .collect();
    IndexedBatcher.batch(items, device)
}

fn config() -> MlpConfig {
    MlpConfig::new(vec![100, 64, 3])
        .with_log_softmax(true)
        .with_zero_last_layer(true)
}

fn recorder(path: &Path, train: &Samples, eval: Option<Samples>) -> Recorder {
    let r = Recorder::builder(path)
        .model_config::<Mlp>(&config())
        .loss(Loss::NllLogSoftmax)
        .sgd(&SgdConfig::new())
        .train_data(train.clone());
    match eval {
        Some(e) => r.eval_data(e),
        None => r,
    }
}

/// One full-batch step on 1,500 points, P = 6,659: plain Burn, and through the recorder.
fn train_step(c: &mut Criterion) {
    let device = flex_f64().expect("flex f64");
    let train = toy(1500, 100, 0.0);
    let data = batch(&train, &device);
    let mut group = c.benchmark_group("train step (toy, 1500 × 100, P = 6659)");
    let mut plain = Mlp::init(&config(), &device);
    let mut optim = SgdConfig::new().init();
    group.bench_function("without recorder", |b| {
        b.iter(|| {
            let f = plain.epk_forward(data.inputs.clone(), &mut Switches::off());
            let l = loss::nll(f, data.targets.clone());
            let grads = GradientsParams::from_grads(l.backward(), &plain);
            plain = optim.step(0.1, plain.clone(), grads);
        })
    });
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut recorded = Some(
        Mlp::init(&config(), &device)
            .with_recorder(recorder(&dir.path().join("bench.zarr"), &train, None))
            .expect("recorder"),
    );
    let mut optim = SgdConfig::new().init();
    group.bench_function("with recorder", |b| {
        b.iter(|| {
            let model = recorded.take().expect("model");
            let out = TrainStep::step(&model, data.clone());
            recorded = Some(TrainStep::optimize(
                model,
                &mut optim,
                0.1.into(),
                out.grads,
            ));
        })
    });
    group.finish();
    recorded.expect("model").finish().expect("store finished");
}

/// Replay of 5 full-batch steps on 600 points for 10 held-out points, per rule.
fn replay_rules(c: &mut Criterion) {
    let device = flex_f64().expect("flex f64");
    let train = toy(600, 100, 0.0);
    let eval = toy(10, 100, 1.0);
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("toy.zarr");
    let data = batch(&train, &device);
    let mut model = Mlp::init(&config(), &device)
        .with_recorder(recorder(&path, &train, Some(eval.clone())))
        .expect("recorder");
    let mut optim = SgdConfig::new().init();
    for _ in 0..5 {
        let out = TrainStep::step(&model, data.clone());
        model = TrainStep::optimize(model, &mut optim, 0.1.into(), out.grads);
    }
    model.finish().expect("store finished");
    let reader = StoreReader::open(&path).expect("store");
    let net = Network::<Mlp>::new(reader.attrs(), &device).expect("network");
    let mut group = c.benchmark_group("replay (toy, 5 steps, 600 train, 10 points)");
    group.sample_size(10);
    for rule in ["mid:100", "gauss:8", "auto"] {
        let options = ReplayOptions {
            rule: rule.parse::<Rule>().expect("rule"),
            ..ReplayOptions::default()
        };
        group.bench_function(rule, |b| {
            b.iter(|| black_box(replay(&reader, &net, &eval.inputs, &options, |_| {})))
        });
    }
    group.finish();
}

criterion_group!(benches, train_step, replay_rules);
criterion_main!(benches);
