//! Recording overhead: the same training with and without the epk recorder, interleaved in
//! one run, on the paper's toy, on an MLP with about a million parameters and on the digits
//! CNN (SGD with momentum and weight decay, as `examples/digits.rs`) and on Burn's guide model at
//! its own size (Adam; `--f32 --only guide` trains it in float32, as Burn does by default).
//!
//! ```text
//! cargo run --release --example bench_record -- --repeats 5
//! ```
//!
//! The baseline is an ordinary hand-written Burn loop (forward, cross-entropy, backward,
//! optimizer step); the recorded run is the same loop on `model.with_recorder(...)`, with the
//! store in `$TMPDIR` (set it to put the store on another file system). Reported: median wall
//! time of each, the overhead (the median over back-to-back pairs of recorded / baseline),
//! bytes written per step, the store's size and its compression ratio (raw array bytes over
//! bytes on disk). `--durable` records with `Recorder::durable` (fsync at each commit).

use anyhow::Result;
use burn::data::dataloader::batcher::Batcher;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer, SgdConfig};
use burn::train::TrainStep;
use clap::Parser;
use epk::recorder::models::{Cnn, CnnConfig, Guide, GuideConfig, Mlp, MlpConfig};
use epk::recorder::{
    Compression, EpkModel, IndexedBatch, IndexedBatcher, IndexedItem, Loss, Recorder, Samples,
    Switches, WithRecorder, device::flex_f64, loss,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::Path;
use std::time::Instant;

mod common;

#[derive(Parser, Debug)]
struct Args {
    /// Interleaved repetitions of (baseline, recorded); medians are reported.
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// The recorder's commit interval in milliseconds (the recorder's default is 100).
    #[arg(long, default_value_t = 100)]
    commit_ms: u64,
    /// Run only the cases whose name contains this text.
    #[arg(long)]
    only: Option<String>,
    /// Print the table as JSON lines instead of Markdown.
    #[arg(long)]
    json: bool,
    /// Record durably (`Recorder::durable`: fsync at each commit).
    #[arg(long)]
    durable: bool,
    /// Multiplies every case's step count (longer runs average out a shared machine's noise).
    #[arg(long, default_value_t = 1)]
    scale: usize,
    /// Train in float32 (flex's default) instead of float64; the store then holds f32.
    #[arg(long)]
    f32: bool,
    /// The store's compression: auto (blosc-LZ4 for f32, none for f64), none, lz4 or zstd.
    #[arg(long, default_value = "auto", value_parser = compression)]
    compression: Compression,
}

fn compression(name: &str) -> Result<Compression, String> {
    match name {
        "auto" => Ok(Compression::Auto),
        "none" => Ok(Compression::None),
        "lz4" => Ok(Compression::Lz4),
        "zstd" => Ok(Compression::Zstd),
        _ => Err(format!("{name}: choose auto, none, lz4 or zstd")),
    }
}

/// The optimizer a case trains with, as Burn builds it and as the recorder declares it.
enum Optim {
    Sgd(SgdConfig),
    Adam(AdamConfig),
}

impl Optim {
    fn init(&self) -> ModuleOptimizer {
        match self {
            Optim::Sgd(c) => c.init(),
            Optim::Adam(c) => c.init(),
        }
    }

    fn declare(&self) -> epk::recorder::OptimizerSpec {
        use epk::recorder::IntoOptimizerSpec;
        match self {
            Optim::Sgd(c) => c.into_optimizer_spec(),
            Optim::Adam(c) => c.into_optimizer_spec(),
        }
    }
}

/// One benchmark: a model, its data in batches, and how many optimizer steps to time.
struct Case<M: EpkModel> {
    name: &'static str,
    config: M::Config,
    train: Samples,
    batch: usize,
    steps: usize,
    optim: Optim,
    lr: f64,
}

fn random_data(n: usize, shape: Vec<usize>, classes: usize, seed: u64) -> Samples {
    let dim: usize = shape.iter().product();
    let mut rng = StdRng::seed_from_u64(seed);
    let inputs = (0..n * dim)
        .map(|_| (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 - 0.5)
        .collect();
    let targets = (0..n).map(|i| (i % classes) as i64).collect();
    Samples::new(inputs, shape, targets).expect("shapes")
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

/// The loop without epk: forward, cross-entropy, backward, optimizer step.
fn baseline<M: EpkModel>(case: &Case<M>, model: M, data: &[IndexedBatch]) -> f64 {
    let mut optim = case.optim.init();
    let mut model = model;
    let started = Instant::now();
    for s in 0..case.steps {
        let b = &data[s % data.len()];
        let f = model.epk_forward(b.inputs.clone(), &mut Switches::off());
        let l = loss::cross_entropy(f, b.targets.clone());
        let grads = GradientsParams::from_grads(l.backward(), &model);
        model = optim.step(case.lr, model, grads);
    }
    let _ = epk::recorder::params::flatten(&model); // wait for the last step's tensors
    started.elapsed().as_secs_f64()
}

/// What one recorded run measured.
struct Recorded {
    /// Seconds in the training loop.
    seconds: f64,
    /// Seconds creating the store and flushing it at the end.
    fixed: f64,
    /// Bytes on disk: the whole store, and the weights array alone.
    store: u64,
    weights: u64,
    /// Steps that waited for the writer.
    stalls: usize,
    /// Bytes on disk besides the data sets (the per-step arrays and metadata).
    recorded: u64,
}

fn recorded<M: EpkModel + 'static>(
    case: &Case<M>,
    model: M,
    data: &[IndexedBatch],
    args: &Args,
) -> Result<Recorded> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("bench.zarr");
    let recorder = Recorder::builder(&path)
        .model_config::<M>(&case.config)
        .loss(Loss::CrossEntropy)
        .optimizer(case.optim.declare())
        .train_data(case.train.clone())
        .max_batch(case.batch)
        .commit_interval(std::time::Duration::from_millis(args.commit_ms))
        .compression(args.compression)
        .durable(args.durable);
    let mut optim = case.optim.init();
    let created = Instant::now();
    let mut model = model.with_recorder(recorder)?;
    let create = created.elapsed().as_secs_f64();
    let started = Instant::now();
    for s in 0..case.steps {
        let out = TrainStep::step(&model, data[s % data.len()].clone());
        model = TrainStep::optimize(model, &mut optim, case.lr.into(), out.grads);
    }
    let _ = epk::recorder::params::flatten(&model.model);
    let seconds = started.elapsed().as_secs_f64();
    let stalls = model.stalls();
    let finishing = Instant::now();
    model.finish()?;
    Ok(Recorded {
        seconds,
        fixed: create + finishing.elapsed().as_secs_f64(),
        store: dir_size(&path),
        weights: dir_size(&path.join("weights")),
        stalls,
        recorded: dir_size(&path) - dir_size(&path.join("train")) - dir_size(&path.join("eval")),
    })
}

fn dir_size(path: &Path) -> u64 {
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

fn run<M: EpkModel + 'static>(
    mut case: Case<M>,
    args: &Args,
    device: &burn::tensor::Device,
) -> Result<()> {
    let (repeats, json) = (args.repeats, args.json);
    if args.only.as_deref().is_some_and(|o| !case.name.contains(o)) {
        return Ok(());
    }
    case.steps *= args.scale.max(1);
    let batched = batches(&case.train, case.batch, device);
    let model = M::init(&case.config, device);
    let p = epk::recorder::params::layout(&model)
        .iter()
        .map(|l| l.len)
        .sum::<usize>();
    let (mut base, mut rec, mut fixed, mut ratios) = (vec![], vec![], vec![], vec![]);
    let mut last = None;
    // One untimed round warms caches and the allocator.
    let _ = baseline(&case, model.clone(), &batched);
    for i in 0..repeats {
        // Pairs alternate their order, so that what one run leaves behind (dirty pages being
        // written back, a warm cache) weighs on both sides alike.
        let (b, r) = if i % 2 == 0 {
            let b = baseline(&case, model.clone(), &batched);
            (b, recorded(&case, model.clone(), &batched, args)?)
        } else {
            let r = recorded(&case, model.clone(), &batched, args)?;
            (baseline(&case, model.clone(), &batched), r)
        };
        base.push(b);
        rec.push(r.seconds);
        ratios.push(r.seconds / b);
        fixed.push(r.fixed);
        last = Some(r);
    }
    let last = last.expect("at least one repeat");
    let (b, r) = (median(base), median(rec));
    let name = format!(
        "{}{}{}",
        case.name,
        if args.f32 { ", f32" } else { "" },
        match args.compression {
            Compression::Auto => "",
            Compression::None => ", uncompressed",
            Compression::Lz4 => ", LZ4",
            Compression::Zstd => ", Zstandard",
        }
    );
    // What the weights take uncompressed in the training dtype: the initial state and one row
    // per step.
    let width = if args.f32 { 4 } else { 8 };
    let raw_weights = ((case.steps + 1) * p * width) as u64;
    // Bytes on disk per step: what recording wrote less the initial weights, over steps.
    let per_step = (last.recorded - (p * width) as u64) / case.steps as u64;
    // The median of the pairs' ratios: a pair runs back to back, so a slow phase of a shared
    // machine slows both of its runs.
    let overhead = 100.0 * (median(ratios) - 1.0);
    let ratio = raw_weights as f64 / last.weights as f64;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "case": name, "params": p, "steps": case.steps, "baseline_s": b,
                "recorded_s": r, "overhead_percent": overhead, "fixed_s": median(fixed.clone()),
                "bytes_per_step": per_step, "store_bytes": last.store,
                "weights_compression": ratio, "stalls": last.stalls,
            })
        );
    } else {
        println!(
            "| {name} | {p} | {} | {b:.3} | {r:.3} | {overhead:+.1} % | {:.3} | {per_step} | {:.1} | {ratio:.2} | {} |",
            case.steps,
            median(fixed),
            last.store as f64 / 1e6,
            last.stalls,
        );
    }
    Ok(())
}

fn main() -> Result<()> {
    epk::replay::broken_pipe::exit_quietly();
    let args = Args::parse();
    let device = if args.f32 {
        burn::tensor::Device::flex().autodiff()
    } else {
        flex_f64().map_err(anyhow::Error::msg)?
    };
    if !args.json {
        println!(
            "| case | P | steps | baseline s | recorded s | overhead | store creation + final flush s | bytes/step | store MB | weights compression | stalls |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|");
    }
    run::<Mlp>(
        Case {
            name: "toy (paper §4.1): 3000 × 100, width 64, full batch",
            config: MlpConfig::new(vec![100, 64, 3]),
            train: random_data(3000, vec![100], 3, 1),
            batch: 3000,
            steps: 200,
            optim: Optim::Sgd(SgdConfig::new()),
            lr: 0.01,
        },
        &args,
        &device,
    )?;
    let digits = common::load_digits(
        Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/data/digits/digits.csv"
        )),
        0,
    )?;
    // The digits recipe of examples/digits.rs: momentum 0.9, weight decay 5e-4, batch 64.
    run::<Cnn>(
        Case {
            name: "digits CNN (examples/digits.rs): batch 64, momentum + decay",
            config: CnnConfig::new(8, [8, 16], 10),
            train: common::digit_samples(&digits[..1500])?,
            batch: 64,
            steps: 96,
            optim: Optim::Sgd(
                SgdConfig::new()
                    .with_momentum(Some(MomentumConfig::new().with_dampening(0.0)))
                    .with_weight_decay(Some(WeightDecayConfig::new(5e-4))),
            ),
            lr: 0.1,
        },
        &args,
        &device,
    )?;
    run::<Mlp>(
        Case {
            name: "MLP 256-1024-768-10 (P ≈ 1.05e6), batch 256",
            config: MlpConfig::new(vec![256, 1024, 768, 10]),
            train: random_data(2048, vec![256], 10, 1),
            batch: 256,
            steps: 20,
            optim: Optim::Sgd(SgdConfig::new()),
            lr: 0.01,
        },
        &args,
        &device,
    )?;
    // Burn's guide model at its own size (hidden 512, P = 531,178) and its own recipe: Adam at
    // 1e-4, batches of 64 (examples/guide.rs; without dropout, as bench_replay replays it).
    run::<Guide>(
        Case {
            name: "Burn's guide model (P ≈ 5.3e5), Adam, batch 64",
            config: GuideConfig::new(28, 10, 512),
            train: random_data(1024, vec![28, 28], 10, 1),
            batch: 64,
            steps: 16,
            optim: Optim::Adam(AdamConfig::new()),
            lr: 1e-4,
        },
        &args,
        &device,
    )?;
    Ok(())
}
