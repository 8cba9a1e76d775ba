//! A tiny recorded run shared by the CLI tests.
#![allow(dead_code)]

use burn::data::dataloader::batcher::Batcher;
use burn::optim::SgdConfig;
use burn::train::TrainStep;
use epk_recorder::models::{Mlp, MlpConfig};
use epk_recorder::{
    IndexedBatcher, IndexedItem, Loss, Recorder, Samples, WithRecorder, device::flex_f64,
};
use std::path::Path;
use std::process::{Command, Output};

/// A tiny recorded run: deterministic inputs, two classes, full-batch descent.
pub fn record(path: &Path) {
    let dim = 4;
    let sample = |i: usize| -> Vec<f64> {
        (0..dim)
            .map(|d| ((i * 7 + d * 3) % 11) as f64 / 5.0 - 1.0 + if d == i % 2 { 1.5 } else { 0.0 })
            .collect()
    };
    let train = Samples::new(
        (0..16).flat_map(sample).collect(),
        vec![dim],
        (0..16).map(|i| (i % 2) as i64).collect(),
    )
    .unwrap();
    let eval = Samples::new(
        (16..20).flat_map(sample).collect(),
        vec![dim],
        (16..20).map(|i| (i % 2) as i64).collect(),
    )
    .unwrap();
    let device = flex_f64().unwrap();
    let config = MlpConfig::new(vec![dim, 5, 2])
        .with_log_softmax(true)
        .with_zero_last_layer(true);
    let sgd = SgdConfig::new();
    let recorder = Recorder::builder(path)
        .model_config::<Mlp>(&config)
        .loss(Loss::NllLogSoftmax)
        .sgd(&sgd)
        .train_data(train.clone())
        .eval_data(eval);
    let mut model = Mlp::new(&config, &device).with_recorder(recorder).unwrap();
    let mut optim = sgd.init();
    let items: Vec<IndexedItem> = (0..16)
        .map(|i| IndexedItem {
            index: i,
            input: train.input(i).to_vec(),
            target: train.targets[i],
        })
        .collect();
    for _ in 0..8 {
        let out = TrainStep::step(&model, IndexedBatcher.batch(items.clone(), &device));
        model = TrainStep::optimize(model, &mut optim, 0.5.into(), out.grads);
    }
    model.finish().unwrap();
}

pub fn replay(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_replay"))
        .args(args)
        .output()
        .unwrap()
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
