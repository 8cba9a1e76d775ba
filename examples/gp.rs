//! Bell et al. §4: a Gaussian process on the network's outputs with the exact path kernel as
//! its covariance, on the paper's toy in two dimensions. Draws the predictive mean of each
//! output and the predictive standard deviation over a grid as heat maps (their Fig. 5), and
//! the kernel weights refitted by one-vs-rest SVMs on the same kernel (their Fig. 3).
//!
//! ```text
//! cargo run --release --example gp -- --store runs/gp.zarr --overwrite --plot runs/gp.png --svm-plot runs/svm.png
//! ```
//!
//! The kernel is K(x, z) = Σ_s η_s Σ_k ⟨Jbar_s(x)_k, ∇f_k(z; w_s)⟩ (`epk::replay::path_kernel`),
//! evaluated between training points, from grid points to training points, and on the grid's
//! diagonal. It is not exactly symmetric (Jbar integrates along each step, the other side is
//! taken at the step's start); the GP uses its symmetric part, and the asymmetry is printed.

mod common;

use anyhow::{Context, Result, bail};
use clap::Parser;
use epk::recorder::device::flex_f64;
use epk::recorder::models::Mlp;
use epk::replay::kernels::gp::Gp;
use epk::replay::kernels::svm::Svm;
use epk::replay::{Network, ReplayOptions, path_kernel, path_kernel_diagonal, plot};
use epk::store::StoreReader;
use ndarray::{Array1, Array2, Axis};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(about = "A Gaussian process with the exact path kernel on the 2-D toy")]
struct Args {
    #[arg(long, default_value = "runs/gp.zarr")]
    store: PathBuf,
    #[arg(long)]
    overwrite: bool,
    #[arg(long, default_value = "runs/gp.png")]
    plot: PathBuf,
    #[arg(long, default_value = "runs/svm.png")]
    svm_plot: PathBuf,
    /// SVM box constraint.
    #[arg(long, default_value_t = 1.0)]
    c: f64,
    /// Grid points per side.
    #[arg(long, default_value_t = 30)]
    grid: usize,
    #[arg(long, default_value_t = 60)]
    steps: usize,
    /// GP noise variance, relative to the mean prior variance of the training points.
    #[arg(long, default_value_t = 1e-3)]
    noise: f64,
}

fn main() -> Result<()> {
    epk::replay::broken_pipe::exit_quietly();
    let args = Args::parse();
    if args.grid < 2 || args.steps == 0 || !args.noise.is_finite() || args.noise <= 0.0 {
        bail!("--grid must be at least 2, --steps and --noise positive");
    }
    if !args.c.is_finite() || args.c <= 0.0 {
        bail!("--c must be a positive number");
    }
    common::prepare_store(&args.store, args.overwrite)?;
    let train = common::rings(20, 0.1);
    common::train_toy_2d(
        &args.store,
        args.overwrite,
        &train,
        common::rings(2, 0.5),
        32,
        args.steps,
    )?;

    let reader = StoreReader::open(&args.store)?;
    let device = flex_f64().map_err(anyhow::Error::msg)?;
    let net = Network::<Mlp>::new(reader.attrs(), &device)?;
    let options = ReplayOptions::default();
    let n = train.len();
    let k_tt = path_kernel(&reader, &net, &train.inputs, &train.inputs, &options)?;
    let asym = (&k_tt - &k_tt.t())
        .iter()
        .fold(0.0f64, |m, v| m.max(v.abs()));
    let scale = k_tt.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let sym = (&k_tt + &k_tt.t()) / 2.0;
    let mean_prior = sym.diag().mean().unwrap_or(1.0);
    // Targets: the trained network's outputs at the training points.
    let w = reader.weights(reader.steps())?;
    let y = Array2::from_shape_vec((n, 3), net.forward(&w, &train.inputs))?;
    let gp = Gp::fit(sym.view(), y.view(), args.noise * mean_prior)
        .context("the symmetrised path kernel is not positive definite at this noise")?;

    let (x0, x1, y0, y1) = (-1.5, 8.0, -1.5, 8.0);
    let g = args.grid;
    let grid: Vec<f64> = (0..g * g)
        .flat_map(|i| {
            let (ix, iy) = ((i % g) as f64 + 0.5, (i / g) as f64 + 0.5);
            [
                x0 + ix * (x1 - x0) / g as f64,
                y0 + iy * (y1 - y0) / g as f64,
            ]
        })
        .collect();
    let k_gt = path_kernel(&reader, &net, &grid, &train.inputs, &options)?;
    let k_tg = path_kernel(&reader, &net, &train.inputs, &grid, &options)?;
    let cross = (&k_gt + &k_tg.t()) / 2.0;
    let prior = Array1::from_vec(path_kernel_diagonal(&reader, &net, &grid, &options)?);
    let (mean, var) = gp.predict(cross.view(), prior.view());
    let std: Vec<f64> = var.iter().map(|v| v.max(0.0).sqrt()).collect();
    let negative = var.iter().filter(|v| **v < 0.0).count();

    // The GP reproduces the network at the training points (up to the noise).
    let (fit, _) = gp.predict(sym.view(), sym.diag());
    let train_err = (&fit - &y).iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let net_grid = Array2::from_shape_vec((g * g, 3), net.forward(&w, &grid))?;
    let grid_err = (&mean - &net_grid)
        .iter()
        .fold(0.0f64, |m, v| m.max(v.abs()));
    println!(
        "path kernel: {n} training points, max |K − Kᵀ| {asym:.3e} of max |K| {scale:.3e}; noise {:.3e}",
        gp.noise
    );
    println!(
        "GP mean vs network: max |error| {train_err:.3e} at the training points, {grid_err:.3e} over the {g}×{g} grid; \
         std over the grid {:.3e} to {:.3e} ({negative} tiny negative variances clamped to 0)",
        std.iter().cloned().fold(f64::INFINITY, f64::min),
        std.iter().cloned().fold(0.0, f64::max)
    );
    let mut panels: Vec<(String, Vec<f64>)> = (0..3)
        .map(|c| {
            (
                format!("GP mean, output {c}"),
                mean.index_axis(Axis(1), c).to_vec(),
            )
        })
        .collect();
    panels.push(("GP standard deviation".into(), std));
    let points: Vec<(f64, f64, i64)> = (0..n)
        .map(|i| (train.input(i)[0], train.input(i)[1], train.targets[i]))
        .collect();
    if let Some(parent) = args.plot.parent() {
        std::fs::create_dir_all(parent)?;
    }
    plot::heatmaps(&args.plot, (x0, x1, g), (y0, y1, g), &panels, &points)?;
    println!("plot written to {}", args.plot.display());

    // The kernel weights refitted by SVMs (one-vs-rest, no bias) on the same kernel.
    let labels: Vec<usize> = train.targets.iter().map(|&t| t as usize).collect();
    let svm = Svm::fit(sym.view(), &labels, 3, args.c, 1e-9, 100_000);
    let argmax = |row: ndarray::ArrayView1<f64>| epk::replay::argmax(row);
    let on_train = svm.decision(sym.view());
    let right = (0..n)
        .filter(|&i| argmax(on_train.row(i)) == labels[i])
        .count();
    let on_grid = svm.decision(cross.view());
    let agree = (0..g * g)
        .filter(|&i| argmax(on_grid.row(i)) == argmax(net_grid.row(i)))
        .count();
    println!(
        "SVM (C = {}): KKT violation {:.1e} after {} sweeps; {right}/{n} training points right; agrees with the network's class on {agree}/{} grid points",
        args.c,
        svm.violation,
        svm.sweeps,
        g * g
    );
    let mut panels: Vec<(String, Vec<f64>)> = (0..3)
        .map(|c| {
            (
                format!("SVM decision, class {c}"),
                on_grid.index_axis(Axis(1), c).to_vec(),
            )
        })
        .collect();
    panels.push((
        "SVM class (0 blue … 2 yellow)".into(),
        (0..g * g).map(|i| argmax(on_grid.row(i)) as f64).collect(),
    ));
    plot::heatmaps(&args.svm_plot, (x0, x1, g), (y0, y1, g), &panels, &points)?;
    println!("plot written to {}", args.svm_plot.display());
    Ok(())
}
