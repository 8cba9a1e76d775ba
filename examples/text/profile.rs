//! The edits' exact explanation: each edit's margin f₁ − f₀ as b + Σ_layers Σ_i A, the
//! layer that carries most of it, and the training tweets that carry most of the original's.

use crate::tweets::Tweet;
use anyhow::{Context, Result};
use epk::recorder::models::Text;
use epk::recorder::{Samples, device::flex_f64};
use epk::replay::{KernelMachine, Network, ReplayOptions, replay};
use epk::store::StoreReader;
use std::path::Path;
use std::time::Instant;

/// Replays the store for the first `variants.len()` points of `explain` (the edits), prints
/// the table and draws the per-layer parts to `plot`.
pub fn explain(
    store: &Path,
    variants: &[(String, String)],
    explain: &Samples,
    train: &[Tweet],
    plot: &Path,
) -> Result<()> {
    let reader = StoreReader::open(store)?;
    let device = flex_f64().map_err(anyhow::Error::msg)?;
    let attrs = reader.attrs();
    let net = Network::<Text>::new(attrs, &device)?;
    let options = ReplayOptions {
        // One group per parameter tensor; the table sums them by module.
        groups: attrs
            .params
            .iter()
            .map(|p| p.offset..p.offset + p.len)
            .collect(),
        ..ReplayOptions::default()
    };
    let len = explain.input_shape[0];
    let xs = &explain.inputs[..variants.len() * len];
    let started = Instant::now();
    let machine = replay(&reader, &net, xs, &options, |_| {})?;
    let evals: usize = machine.steps.iter().map(|s| s.evals).sum();
    let rounding = machine
        .steps
        .iter()
        .map(|s| s.decomposition.rounding_units)
        .fold(0.0, f64::max);
    println!(
        "replayed {} steps for {} texts in {:.1} s ({:.1} Jacobian evaluations per step per text): \
         machine vs network max |error| {:.1e}; decomposition within {:.3} rounding units",
        machine.steps.len(),
        variants.len(),
        started.elapsed().as_secs_f64(),
        evals as f64 / (machine.steps.len() * variants.len()).max(1) as f64,
        machine.max_error(),
        rounding
    );
    let modules = modules(&attrs.params);
    let parts = layer_margins(&machine, &attrs.params, &modules, variants.len())?;
    print_table(&machine, variants, &modules, &parts);
    print_top(&machine, train, 0, 3);
    let names: Vec<String> = modules.clone();
    let series: Vec<String> = variants.iter().map(|(n, _)| n.clone()).collect();
    epk::replay::plot::grouped_bars(
        plot,
        "Each edit's margin f₁ − f₀ (positive − negative) by layer, exact",
        &names,
        &series,
        &parts,
        "Σ_i A_layer[x, i, 1] − A_layer[x, i, 0]",
    )?;
    println!("drew {}", plot.display());
    Ok(())
}

/// Top-level modules in parameter order (`attention.query.weight` → `attention`).
fn modules(params: &[epk::store::ParamLayout]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for p in params {
        let m = p.path.split('.').next().unwrap_or(&p.path).to_string();
        if !out.contains(&m) {
            out.push(m);
        }
    }
    out
}

/// `[variant][module]`: the module's part of the margin, Σ_i A_g[x, i, 1] − A_g[x, i, 0].
fn layer_margins(
    machine: &KernelMachine,
    params: &[epk::store::ParamLayout],
    modules: &[String],
    rows: usize,
) -> Result<Vec<Vec<f64>>> {
    let parts = machine
        .group_attributions
        .as_ref()
        .context("no per-layer split")?;
    let n = machine.attributions.shape()[1];
    Ok((0..rows)
        .map(|row| {
            modules
                .iter()
                .map(|m| {
                    params
                        .iter()
                        .enumerate()
                        .filter(|(_, p)| p.path.split('.').next() == Some(m))
                        .map(|(g, _)| {
                            (0..n)
                                .map(|i| parts[[g, row, i, 1]] - parts[[g, row, i, 0]])
                                .sum::<f64>()
                        })
                        .sum()
                })
                .collect()
        })
        .collect())
}

fn margin(a: &ndarray::Array2<f64>, row: usize) -> f64 {
    a[[row, 1]] - a[[row, 0]]
}

fn print_table(
    machine: &KernelMachine,
    variants: &[(String, String)],
    modules: &[String],
    parts: &[Vec<f64>],
) {
    println!("the tweet: {}", variants[0].1);
    print!("{:<16} {:>9} {:>9}", "edit", "f₁ − f₀", "b");
    for m in modules {
        print!(" {m:>9}");
    }
    println!("  largest");
    for (row, (name, _)) in variants.iter().enumerate() {
        print!(
            "{name:<16} {:>9.4} {:>9.4}",
            margin(&machine.network, row),
            margin(&machine.bias, row)
        );
        for v in &parts[row] {
            print!(" {v:>9.4}");
        }
        let largest = (0..modules.len())
            .max_by(|&a, &b| parts[row][a].abs().total_cmp(&parts[row][b].abs()))
            .map_or("", |k| modules[k].as_str());
        println!("  {largest}");
    }
    let rest = (0..variants.len())
        .map(|row| margin(&machine.nondata, row).abs() + margin(&machine.residual, row).abs())
        .fold(0.0, f64::max);
    println!(
        "f₁ − f₀ > 0 reads positive. Each row: f₁ − f₀ = b + the layer parts + N + R, where N \
         (optimizer terms that are no training point's) and R (the residual) together are at \
         most {rest:.1e} here."
    );
}

/// The training tweets with the largest attributions to the margin of `row`, both signs.
fn print_top(machine: &KernelMachine, train: &[Tweet], row: usize, k: usize) {
    let n = machine.attributions.shape()[1];
    let a = |i: usize| machine.attributions[[row, i, 1]] - machine.attributions[[row, i, 0]];
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&x, &y| a(y).total_cmp(&a(x)));
    println!("training tweets that move the original's margin most:");
    for &i in order.iter().take(k).chain(order.iter().rev().take(k)) {
        let label = if train[i].label == 1 { "pos" } else { "neg" };
        println!(
            "  {:>+9.5}  #{i:<5} {label}  {}",
            a(i),
            clip(&train[i].text, 70)
        );
    }
}

fn clip(text: &str, width: usize) -> String {
    let t: String = text.chars().take(width).collect();
    if text.chars().count() > width {
        format!("{t}…")
    } else {
        t
    }
}
