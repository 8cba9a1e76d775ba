//! Recording overhead: the same training with and without the epk recorder, interleaved in
//! one run, on the paper's toy and on an MLP with about a million parameters.
//!
//! ```text
//! cargo run --release --example bench_record -- --repeats 5
//! ```
//!
//! The baseline is an ordinary hand-written Burn loop (forward, cross-entropy, backward,
//! optimizer step); the recorded run is the same loop on `model.with_recorder(...)`. Reported:
//! median wall time of each, the overhead ratio, bytes written per step and the store's size.

use anyhow::Result;
use burn::data::dataloader::batcher::Batcher;
use burn::optim::{GradientsParams, SgdConfig};
use burn::train::TrainStep;
use clap::Parser;
use epk::recorder::models::{Mlp, MlpConfig};
use epk::recorder::{
    EpkModel, IndexedBatch, IndexedBatcher, IndexedItem, Loss, Recorder, Samples, Switches,
    WithRecorder, device::flex_f64, loss,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::Instant;

#[derive(Parser, Debug)]
struct Args {
    /// Interleaved repetitions of (baseline, recorded); medians are reported.
    #[arg(long, default_value_t = 5)]
    repeats: usize,
}

struct Case {
    name: &'static str,
    sizes: Vec<usize>,
    samples: usize,
    batch: usize,
    steps: usize,
}

fn data(n: usize, dim: usize, classes: usize, rng: &mut StdRng) -> Samples {
    let inputs = (0..n * dim)
        .map(|_| (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 - 0.5)
        .collect();
    let targets = (0..n).map(|i| (i % classes) as i64).collect();
    Samples::new(inputs, vec![dim], targets).expect("shapes")
}

fn batches(samples: &Samples, batch: usize, device: &burn::tensor::Device) -> Vec<IndexedBatch> {
    let items: Vec<IndexedItem> = (0..samples.len())
        .map(|i| IndexedItem {
            index: i,
            input: samples.input(i).to_vec(),
            target: samples.targets[i],
        })
        .collect();
    items
        .chunks(batch)
        .map(|c| IndexedBatcher.batch(c.to_vec(), device))
        .collect()
}

fn baseline(case: &Case, model: Mlp, data: &[IndexedBatch]) -> f64 {
    let mut optim = SgdConfig::new().init();
    let mut model = model;
    let started = Instant::now();
    for s in 0..case.steps {
        let b = &data[s % data.len()];
        let f = model.epk_forward(b.inputs.clone(), &mut Switches::off());
        let l = loss::loss(Loss::CrossEntropy, f, b.targets.clone());
        let grads = GradientsParams::from_grads(l.backward(), &model);
        model = optim.step(0.01, model, grads);
    }
    let _ = epk::recorder::params::flatten(&model); // wait for the last step's tensors
    started.elapsed().as_secs_f64()
}

/// (seconds in the training loop, seconds creating and finishing the store, store bytes)
fn recorded(
    case: &Case,
    model: Mlp,
    config: &MlpConfig,
    train: &Samples,
    data: &[IndexedBatch],
) -> Result<(f64, f64, u64)> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("bench.zarr");
    let recorder = Recorder::builder(&path)
        .model_config::<Mlp>(config)
        .loss(Loss::CrossEntropy)
        .sgd(&SgdConfig::new())
        .train_data(train.clone())
        .max_batch(case.batch);
    let mut optim = SgdConfig::new().init();
    let created = Instant::now();
    let mut model = model.with_recorder(recorder)?;
    let create = created.elapsed().as_secs_f64();
    let started = Instant::now();
    for s in 0..case.steps {
        let out = TrainStep::step(&model, data[s % data.len()].clone());
        model = TrainStep::optimize(model, &mut optim, 0.01.into(), out.grads);
    }
    let _ = epk::recorder::params::flatten(&model.model);
    let seconds = started.elapsed().as_secs_f64();
    let finishing = Instant::now();
    model.finish()?;
    let fixed = create + finishing.elapsed().as_secs_f64();
    Ok((seconds, fixed, dir_size(&path)))
}

fn dir_size(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| {
                    if e.path().is_dir() {
                        dir_size(&e.path())
                    } else {
                        e.metadata().map_or(0, |m| m.len())
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let args = Args::parse();
    let device = flex_f64().map_err(anyhow::Error::msg)?;
    let cases = [
        Case {
            name: "toy (paper §4.1): 3000 × 100, width 64, full batch",
            sizes: vec![100, 64, 3],
            samples: 3000,
            batch: 3000,
            steps: 50,
        },
        Case {
            name: "MLP 256-1024-768-10 (P ≈ 1.05e6), batch 256",
            sizes: vec![256, 1024, 768, 10],
            samples: 2048,
            batch: 256,
            steps: 20,
        },
    ];
    println!(
        "| case | P | steps | baseline s | recorded s | overhead per step | store creation + final flush s | bytes/step | store MB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for case in &cases {
        let mut rng = StdRng::seed_from_u64(1);
        let train = data(
            case.samples,
            case.sizes[0],
            *case.sizes.last().unwrap(),
            &mut rng,
        );
        let config = MlpConfig::new(case.sizes.clone());
        let batched = batches(&train, case.batch, &device);
        let model = Mlp::new(&config, &device);
        let p = epk::recorder::params::layout(&model)
            .iter()
            .map(|l| l.len)
            .sum::<usize>();
        let (mut base, mut rec, mut fixed, mut size) = (Vec::new(), Vec::new(), Vec::new(), 0);
        // One untimed round warms caches and the allocator.
        let _ = baseline(case, model.clone(), &batched);
        for _ in 0..args.repeats {
            base.push(baseline(case, model.clone(), &batched));
            let (t, f, bytes) = recorded(case, model.clone(), &config, &train, &batched)?;
            rec.push(t);
            fixed.push(f);
            size = bytes;
        }
        let (b, r) = (median(base), median(rec));
        let data_bytes = (train.inputs.len() * 8 + train.len() * 8) as u64;
        println!(
            "| {} | {p} | {} | {b:.3} | {r:.3} | {:+.1} % | {:.3} | {} | {:.1} |",
            case.name,
            case.steps,
            100.0 * (r / b - 1.0),
            median(fixed),
            (size - data_bytes) / case.steps as u64,
            size as f64 / 1e6
        );
    }
    Ok(())
}
