//! Counterfactuals: a held-out point and copies of it moved step by step toward another
//! class. For each copy, the exact path kernel machine gives its attribution profile over the
//! training set and its split by layer, so one sees which training points and which layers
//! carry the change of decision.
//!
//! ```text
//! cargo run --release --example counterfactuals -- --store runs/counterfactuals.zarr --overwrite
//! ```
//!
//! The model is the paper's toy in two dimensions (3 Gaussian classes with means (1,4), (4,1),
//! (5,5); one hidden ReLU layer; last layer at zero; log-softmax; full-batch gradient descent),
//! trained in a hand-written loop with the recorder attached.

mod common;

use anyhow::{Context, Result, bail};
use clap::Parser;
use epk::recorder::models::Mlp;
use epk::recorder::{Samples, device::flex_f64};
use epk::replay::layers::layer_groups;
use epk::replay::{Network, ReplayOptions, replay};
use epk::store::StoreReader;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(about = "Attribution profiles of a point moved toward another class")]
struct Args {
    #[arg(long, default_value = "runs/counterfactuals.zarr")]
    store: PathBuf,
    #[arg(long)]
    overwrite: bool,
    /// Copies between the point and its move (inclusive).
    #[arg(long, default_value_t = 6)]
    copies: usize,
    #[arg(long, default_value_t = 60)]
    steps: usize,
}

fn main() -> Result<()> {
    epk::replay::broken_pipe::exit_quietly();
    let args = Args::parse();
    if args.copies < 2 || args.steps == 0 {
        bail!("--copies must be at least 2 and --steps positive");
    }
    common::prepare_store(&args.store, args.overwrite)?;
    let train = common::rings(40, 0.1);
    // The explained point: the first class-0 point of a held-out ring, and copies of it moved
    // toward the class-1 mean.
    let held_out = common::rings(4, 0.5);
    let x0 = held_out.input(0).to_vec();
    let target = common::MEANS[1];
    let copies: Vec<f64> = (0..args.copies)
        .flat_map(|c| {
            let t = c as f64 / (args.copies - 1) as f64;
            [
                x0[0] + t * (target.0 - x0[0]),
                x0[1] + t * (target.1 - x0[1]),
            ]
        })
        .collect();
    let eval =
        Samples::new(copies.clone(), vec![2], vec![0; args.copies]).map_err(anyhow::Error::msg)?;

    common::train_toy_2d(&args.store, args.overwrite, &train, eval, 32, args.steps)?;

    let reader = StoreReader::open(&args.store)?;
    let device = flex_f64().map_err(anyhow::Error::msg)?;
    let attrs = reader.attrs();
    let net = Network::<Mlp>::new(attrs, &device)?;
    let options = ReplayOptions {
        groups: attrs
            .params
            .iter()
            .map(|p| p.offset..p.offset + p.len)
            .collect(),
        ..ReplayOptions::default()
    };
    let machine = replay(&reader, &net, &copies, &options, |_| {})?;
    println!(
        "machine vs network: max |error| {:.1e} over {} copies",
        machine.max_error(),
        args.copies
    );
    let parts = machine
        .group_attributions
        .as_ref()
        .context("no per-layer split")?;
    let layers = layer_groups(&attrs.params);
    let n = train.len();
    // The profile: attributions to class 0 (the original class) over the training set.
    let profile =
        |row: usize| -> Vec<f64> { (0..n).map(|i| machine.attributions[[row, i, 0]]).collect() };
    let base = profile(0);
    let cosine = |a: &[f64], b: &[f64]| {
        let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        let na: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
        let nb: f64 = b.iter().map(|x| x * x).sum::<f64>().sqrt();
        dot / (na * nb)
    };
    print!(
        "{:>5} {:>15} {:>6} {:>10} {:>10}",
        "t", "x", "class", "f_0", "cos(A, A₀)"
    );
    for c in 0..3 {
        print!(" {:>9}", format!("A from {c}"));
    }
    for (name, _) in &layers {
        print!(" {:>10}", name);
    }
    println!();
    for row in 0..args.copies {
        let t = row as f64 / (args.copies - 1) as f64;
        let f = machine.network.row(row);
        let class = epk::replay::argmax(f);
        let p = profile(row);
        print!(
            "{t:>5.2} ({:>5.2}, {:>5.2}) {class:>6} {:>10.4} {:>10.4}",
            copies[2 * row],
            copies[2 * row + 1],
            f[0],
            cosine(&p, &base)
        );
        for c in 0..3 {
            let from: f64 = (0..n)
                .filter(|&i| train.targets[i] == c)
                .map(|i| p[i])
                .sum();
            print!(" {from:>9.4}");
        }
        for (_, ranges) in &layers {
            let total: f64 = attrs
                .params
                .iter()
                .enumerate()
                .filter(|(_, q)| ranges.contains(&(q.offset..q.offset + q.len)))
                .map(|(g, _)| (0..n).map(|i| parts[[g, row, i, 0]]).sum::<f64>())
                .sum();
            print!(" {total:>10.4}");
        }
        println!();
    }
    println!(
        "f_0 is the log-probability of class 0; 'A from c' sums the attributions to it by training class; the layer columns split the same sum by layer."
    );
    Ok(())
}
