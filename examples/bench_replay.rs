//! Replay speed of the structured, batched Jacobian path against the general one, side by side
//! on one store: the `auto` rule at 1e-12 over the same held-out points, the two runs
//! alternating so that a shared machine's load falls on both.
//!
//! ```text
//! cargo run --release --example digits -- --store runs/digits-sgd.zarr
//! cargo run --release --example bench_replay -- runs/digits-sgd.zarr --points 10 --repeats 2
//! ```
//!
//! "structured" is what `replay verify` does: every layer routed through `Switches` gives its
//! per-sample gradients from one batched backward pass (convolutions as Aᵀ·D over positions),
//! and the points' adaptive searches ask for their Jacobians together, each input at its own
//! t. "general" is the reference path: one backward pass per output, input and node, point by
//! point. Reported: median wall time, the ratio (median over the alternating pairs), the
//! largest machine error and Jacobian evaluations per step per point of each.

use anyhow::{Result, bail};
use clap::Parser;
use epk::recorder::device::flex_f64;
use epk::recorder::models::Cnn;
use epk::replay::{KernelMachine, Network, ReplayOptions, Rule, replay};
use epk::store::StoreReader;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Parser, Debug)]
struct Args {
    /// A store of the digits CNN (`examples/digits.rs`).
    store: PathBuf,
    /// Held-out points to replay (the first ones).
    #[arg(long, default_value_t = 10)]
    points: usize,
    /// Alternating repetitions of (structured, general).
    #[arg(long, default_value_t = 2)]
    repeats: usize,
    /// Print the result as one JSON line.
    #[arg(long)]
    json: bool,
}

fn timed(net: &Network<Cnn>, reader: &StoreReader, xs: &[f64]) -> Result<(f64, KernelMachine)> {
    let options = ReplayOptions {
        rule: Rule::Auto,
        ..ReplayOptions::default()
    };
    let start = Instant::now();
    let machine = replay(reader, net, xs, &options, |_| {})?;
    Ok((start.elapsed().as_secs_f64(), machine))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn evals(m: &KernelMachine, points: usize) -> f64 {
    let total: usize = m.steps.iter().map(|s| s.evals).sum();
    total as f64 / (m.steps.len() * points).max(1) as f64
}

fn main() -> Result<()> {
    let args = Args::parse();
    let device = flex_f64().map_err(anyhow::Error::msg)?;
    let reader = StoreReader::open(&args.store)?;
    let fast = Network::<Cnn>::new(reader.attrs(), &device)?;
    if fast.layers().is_none() {
        bail!("the store's model does not take the structured path");
    }
    let general = fast.clone().general();
    let eval = reader.eval()?;
    let points = args.points.min(eval.len());
    let xs = &eval.inputs[..points * reader.attrs().input_len()];
    let (mut t_fast, mut t_general, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let (mut m_fast, mut m_general) = (None, None);
    for i in 0..args.repeats.max(1) {
        // Alternate which side goes first.
        let (a, b) = if i % 2 == 0 {
            let a = timed(&fast, &reader, xs)?;
            (a, timed(&general, &reader, xs)?)
        } else {
            let b = timed(&general, &reader, xs)?;
            (timed(&fast, &reader, xs)?, b)
        };
        ratios.push(b.0 / a.0);
        t_fast.push(a.0);
        t_general.push(b.0);
        (m_fast, m_general) = (Some(a.1), Some(b.1));
    }
    let (m_fast, m_general) = (m_fast.expect("ran"), m_general.expect("ran"));
    let gap = (&m_fast.attributions - &m_general.attributions)
        .iter()
        .fold(0.0f64, |m, v| m.max(v.abs()));
    let row = serde_json::json!({
        "points": points,
        "steps": m_fast.steps.len(),
        "structured_s": median(t_fast),
        "general_s": median(t_general),
        "ratio": median(ratios),
        "structured_error": m_fast.max_error(),
        "general_error": m_general.max_error(),
        "structured_evals": evals(&m_fast, points),
        "general_evals": evals(&m_general, points),
        "attribution_gap": gap,
    });
    if args.json {
        println!("{row}");
        return Ok(());
    }
    println!(
        "| path | points | steps | median s | general / structured | max error | evals/step/point |"
    );
    println!("|---|---|---|---|---|---|---|");
    for side in ["structured", "general"] {
        println!(
            "| {side} | {points} | {} | {:.1} | {} | {:.2e} | {:.2} |",
            row["steps"],
            row[format!("{side}_s")].as_f64().unwrap_or(f64::NAN),
            if side == "general" {
                format!("{:.2}", row["ratio"].as_f64().unwrap_or(f64::NAN))
            } else {
                "–".into()
            },
            row[format!("{side}_error")].as_f64().unwrap_or(f64::NAN),
            row[format!("{side}_evals")].as_f64().unwrap_or(f64::NAN),
        );
    }
    println!("largest difference between the two paths' attributions: {gap:.2e}");
    Ok(())
}
