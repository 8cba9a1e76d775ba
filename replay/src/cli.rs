//! The `replay` command line. A user with a model of their own gets the whole CLI from one
//! call in their own binary:
//!
//! ```no_run
//! # use epk_recorder::models::Mlp as MyModel;
//! fn main() -> std::process::ExitCode {
//!     epk_replay::cli::main_with(epk_replay::cli::Registry::builtin().with::<MyModel>())
//! }
//! ```

use crate::attribute::PointAttribution;
use crate::{KernelMachine, Network, ReplayOptions, Rule, VerifyReport, plot, replay};
use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use clap::{Args, Parser, Subcommand};
use epk_recorder::EpkModel;
use epk_recorder::device::select;
use epk_store::StoreReader;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

#[derive(Parser, Debug)]
#[command(
    name = "replay",
    version,
    about = "Rebuild a network recorded by epk as its exact path kernel machine, and prove it",
    after_help = "Exit codes: 0 success, 1 verification failed (verify) or attributions not exact (attribute), 2 bad input (flags, store, model)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Where replay computes (always in float64): cpu (Burn's flex backend), or cuda / cuda:N in
    /// a build with the `cuda` feature.
    #[arg(long, global = true, default_value = "cpu")]
    pub device: String,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check that the machine b + Σ_i A[x, i] + non-data terms equals the network, step by step.
    Verify(VerifyArgs),
    /// Rank the training points behind one held-out prediction (optionally drawn to a PNG).
    Attribute(AttributeArgs),
    /// Compare the exact path kernel with DPK and the trace-NTK family on held-out points.
    Compare(CompareArgs),
    /// Split one held-out prediction's attributions and kernel values by layer.
    Layers(LayersArgs),
    /// Summarise a store: model, optimizer, steps, data.
    Info(InfoArgs),
}

/// Which held-out prediction to explain, and how to replay it (`attribute`, `layers`).
#[derive(Args, Debug)]
pub struct PointArgs {
    /// The epk store (a Zarr v3 directory).
    pub store: PathBuf,
    /// The held-out point to explain (its index in the store's held-out set).
    #[arg(long)]
    pub point: usize,
    /// The output to explain (default: the class the network predicts).
    #[arg(long)]
    pub output: Option<usize>,
    /// Quadrature rule, as for verify.
    #[arg(long, default_value = "auto")]
    pub rule: Rule,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

#[derive(Args, Debug)]
pub struct LayersArgs {
    #[command(flatten)]
    pub point: PointArgs,
    /// Draw the layers' parts of the prediction to this PNG.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Print the split as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// The epk store (a Zarr v3 directory).
    pub store: PathBuf,
    /// Surrogates, comma-separated: epk, dpk, trntk0, trntk, pntk, proj-trntk, proj-pntk, ck; and on request
    /// epk-kglm, a kGLM on the EPK Gram (dense path kernel between all training points: cost
    /// grows as training points² × outputs² × parameters per step; small runs only).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "epk,dpk,trntk0,trntk,pntk,proj-trntk,proj-pntk,ck"
    )]
    pub kernels: Vec<crate::compare::Surrogate>,
    /// Compare on the first N held-out points (default: all of them).
    #[arg(long)]
    pub points: Option<usize>,
    /// Dimension of the Rademacher projection (default 10240, capped at the parameter count).
    #[arg(long)]
    pub projection_dim: Option<usize>,
    /// Seed of the projection.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Recorded step whose weights the tangent kernels and the CK use (default: the last).
    #[arg(long)]
    pub step: Option<usize>,
    /// Fit the kGLMs on the first N training points only, every kernel alike (default: all).
    #[arg(long)]
    pub fit_samples: Option<usize>,
    /// L2 penalty of the kGLM refits.
    #[arg(long, default_value_t = 1e-4)]
    pub l2: f64,
    /// Quadrature rule of the EPK machine.
    #[arg(long, default_value = "auto")]
    pub rule: Rule,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print the table as JSON.
    #[arg(long)]
    pub json: bool,
    /// Write plots here: scatter.png (each surrogate against the network), attributions.png
    /// (the first point's EPK attributions by training class) and, with --rule-sweep, rules.png.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also replay with ten quadrature rules (left, mid, Gauss, auto) and report each one's
    /// evaluations and error.
    #[arg(long)]
    pub rule_sweep: bool,
}

#[derive(Args, Debug)]
pub struct AttributeArgs {
    #[command(flatten)]
    pub point: PointArgs,
    /// How many of the largest positive and of the most negative terms to list.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// Largest |b + ΣA + N + R − f| accepted; above it the command exits 1.
    #[arg(long, default_value = "1e-12", value_parser = parse_tolerance, allow_negative_numbers = true)]
    pub tolerance: f64,
    /// Draw the ranked points to this PNG (images for 2-D inputs, else bars).
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Print the ranking as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The epk store (a Zarr v3 directory).
    pub store: PathBuf,
    /// Largest absolute error accepted, for each step's certificate and the whole machine.
    #[arg(long, default_value = "1e-12", value_parser = parse_tolerance, allow_negative_numbers = true)]
    pub tolerance: f64,
    /// Quadrature rule: auto, left:T, right:T, mid:T or gauss:n (left:1 is the DPK).
    #[arg(long, default_value = "auto")]
    pub rule: Rule,
    /// Explain the first N held-out points (default: all of them).
    #[arg(long)]
    pub points: Option<usize>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Whether the decomposition residual (recorded step minus the replayed optimizer's
    /// per-sample and non-data terms) must meet the tolerance: `check`, `report`, or `auto`
    /// (check for f64 training, report for f32 training, whose steps carry f32 rounding).
    #[arg(long, value_enum, default_value = "auto")]
    pub decomposition: Decomposition,
}

/// How `verify` treats the decomposition residual.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Decomposition {
    Auto,
    Check,
    Report,
}

#[derive(Args, Debug)]
pub struct InfoArgs {
    /// The epk store (a Zarr v3 directory).
    pub store: PathBuf,
    /// Print the store's attributes as JSON.
    #[arg(long)]
    pub json: bool,
}

fn parse_tolerance(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number; write e.g. 1e-12"))?;
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(format!("{s} is not a positive finite tolerance"))
    }
}

type Runner = fn(&Command, &StoreReader, &Device) -> Result<ExitCode>;

/// The model kinds a `replay` binary can rebuild.
pub struct Registry {
    kinds: Vec<(&'static str, Runner)>,
}

impl Registry {
    /// The models that ship with epk.
    pub fn builtin() -> Self {
        Registry { kinds: Vec::new() }
            .with::<epk_recorder::models::Mlp>()
            .with::<epk_recorder::models::Cnn>()
    }

    /// Adds a model type.
    pub fn with<M: EpkModel + 'static>(mut self) -> Self {
        self.kinds.push((M::KIND, run::<M>));
        self
    }

    fn find(&self, kind: &str) -> Option<Runner> {
        self.kinds.iter().find(|(k, _)| *k == kind).map(|(_, r)| *r)
    }
}

/// Parses the command line and runs it; the exit code follows the documented convention.
pub fn main_with(registry: Registry) -> ExitCode {
    let cli = Cli::parse();
    match dispatch(&registry, &cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn dispatch(registry: &Registry, cli: &Cli) -> Result<ExitCode> {
    let command = &cli.command;
    let path = match command {
        Command::Verify(a) => &a.store,
        Command::Attribute(a) => &a.point.store,
        Command::Compare(a) => &a.store,
        Command::Layers(a) => &a.point.store,
        Command::Info(a) => &a.store,
    };
    let reader = StoreReader::open(path)?;
    if let Command::Info(a) = command {
        return info(&reader, a.json);
    }
    let kind = reader.attrs().model.kind.clone();
    let Some(runner) = registry.find(&kind) else {
        let known: Vec<_> = registry.kinds.iter().map(|(k, _)| *k).collect();
        bail!(
            "{}: model kind {kind:?} is not known to this binary (it knows {known:?}); build a replay binary that registers it with Registry::with",
            path.display()
        );
    };
    let device = select(&cli.device)
        .map_err(anyhow::Error::msg)
        .context("--device")?;
    runner(command, &reader, &device)
}

fn info(reader: &StoreReader, json: bool) -> Result<ExitCode> {
    let a = reader.attrs();
    if json {
        println!("{}", serde_json::to_string_pretty(a)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("store      {}", reader.path().display());
    println!("model      {} {}", a.model.kind, a.model.config);
    println!(
        "parameters {} in {} tensors ({:?})",
        a.num_params,
        a.params.len(),
        a.dtype
    );
    println!("outputs    {}   loss {:?}", a.outputs, a.loss);
    println!("optimizer  {} {}", a.optimizer.name, a.optimizer.config);
    println!(
        "steps      {} committed{}",
        a.steps,
        if a.finished {
            ", run finished"
        } else {
            ", run not finished"
        }
    );
    println!(
        "data       {} training, {} held-out samples of shape {:?}",
        a.train_samples, a.eval_samples, a.input_shape
    );
    Ok(ExitCode::SUCCESS)
}

fn run<M: EpkModel>(command: &Command, reader: &StoreReader, device: &Device) -> Result<ExitCode> {
    match command {
        Command::Verify(args) => verify::<M>(args, reader, device),
        Command::Attribute(args) => attribute::<M>(args, reader, device),
        Command::Compare(args) => compare::<M>(args, reader, device),
        Command::Layers(args) => layers::<M>(args, reader, device),
        Command::Info(a) => info(reader, a.json),
    }
}

/// One held-out point replayed as `args` asks: the point's input and the machine. Checks the
/// flags against the store first.
fn replay_point<M: EpkModel>(
    args: &PointArgs,
    reader: &StoreReader,
    device: &Device,
    mut options: ReplayOptions,
    json: bool,
) -> Result<(Vec<f64>, KernelMachine, Network<M>)> {
    let a = reader.attrs();
    if a.steps == 0 {
        bail!(
            "{}: the store has no committed step",
            reader.path().display()
        );
    }
    let eval = reader.eval()?;
    if args.point >= eval.len() {
        bail!(
            "--point {}: the store holds {} held-out points (0 to {})",
            args.point,
            eval.len(),
            eval.len().saturating_sub(1)
        );
    }
    if let Some(k) = args.output
        && k >= a.outputs
    {
        bail!("--output {k}: the model has {} outputs", a.outputs);
    }
    let net = Network::<M>::new(a, device)?;
    let x = eval.input(args.point).to_vec();
    options.rule = args.rule;
    if let Some(t) = args.threads {
        options.threads = t.max(1);
    }
    let bar = progress_bar(a.steps, json);
    let machine = replay(reader, &net, &x, &options, |s| bar.set_position(s as u64))
        .context("replay failed")?;
    bar.finish_and_clear();
    Ok((x, machine, net))
}

fn attribute<M: EpkModel>(
    args: &AttributeArgs,
    reader: &StoreReader,
    device: &Device,
) -> Result<ExitCode> {
    if args.top == 0 {
        bail!("--top must be at least 1");
    }
    let options = ReplayOptions {
        tolerance: args.tolerance,
        ..ReplayOptions::default()
    };
    let (x, machine, _) = replay_point::<M>(&args.point, reader, device, options, args.json)?;
    let eval = reader.eval()?;
    let train = reader.train()?;
    let ranked = PointAttribution::rank(
        &machine,
        0,
        args.point.point,
        args.point.output,
        &train.targets,
        eval.targets.get(args.point.point).copied(),
        args.top,
    );
    if let Some(path) = &args.plot {
        plot::attribution(path, &ranked, &x, &train)?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&ranked)?);
    } else {
        print!("{}", ranked.table());
        if let Some(path) = &args.plot {
            println!("plot written to {}", path.display());
        }
    }
    if ranked.error.is_nan() || ranked.error > args.tolerance {
        eprintln!(
            "the kernel machine differs from the network by {:.3e} > {:.1e} with rule {}: these attributions are not exact",
            ranked.error, args.tolerance, args.point.rule
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn layers<M: EpkModel>(
    args: &LayersArgs,
    reader: &StoreReader,
    device: &Device,
) -> Result<ExitCode> {
    let a = reader.attrs();
    let options = ReplayOptions {
        groups: a
            .params
            .iter()
            .map(|p| p.offset..p.offset + p.len)
            .collect(),
        ..ReplayOptions::default()
    };
    let (x, machine, net) = replay_point::<M>(&args.point, reader, device, options, args.json)?;
    let f = machine.network.row(0);
    let k = args.point.output.unwrap_or_else(|| crate::argmax(f));
    let train = reader.train()?;
    let w = reader.weights(a.steps)?;
    let shares = crate::layers::split(
        &machine,
        &a.params,
        k,
        &net,
        &w,
        &x,
        &train.inputs,
        &train.targets,
    )
    .context("the replay kept no per-layer split")?;
    let learned = f[k] - machine.bias[[0, k]];
    if let Some(path) = &args.plot {
        let names: Vec<String> = shares.iter().map(|s| s.layer.clone()).collect();
        let values: Vec<f64> = shares.iter().map(|s| s.attribution).collect();
        plot::layer_bars(
            path,
            &format!(
                "held-out point {}, output {k}: f − b = {learned:.4} by layer",
                args.point.point
            ),
            &names,
            &values,
        )?;
    }
    if args.json {
        let v = serde_json::json!({
            "point": args.point.point,
            "output": k,
            "network": f[k],
            "bias": machine.bias[[0, k]],
            "nondata": machine.nondata[[0, k]],
            "residual": machine.residual[[0, k]],
            "max_error": machine.max_error(),
            "layers": shares,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "held-out point {}: output {k} = {:.6e} = b {:.6e} + Σ_layers Σ_i A + non-data {:.3e} + residual {:.3e}  (|error| {:.1e})",
            args.point.point,
            f[k],
            machine.bias[[0, k]],
            machine.nondata[[0, k]],
            machine.residual[[0, k]],
            machine.max_error()
        );
        println!(
            "{:<16} {:>8} {:>13} {:>9} {:>22} {:>12} {:>12}",
            "layer", "params", "Σ_i A", "of f − b", "top point (label) A", "trNTK⁰ same", "other"
        );
        for s in &shares {
            println!(
                "{:<16} {:>8} {:>13.5e} {:>8.2}% {:>10} ({}) {:>+9.2e} {:>12.4e} {:>12.4e}",
                s.layer,
                s.params,
                s.attribution,
                100.0 * s.attribution / learned,
                s.top_index,
                s.top_label,
                s.top_value,
                s.kernel_same_class,
                s.kernel_other_classes
            );
        }
        if let Some(path) = &args.plot {
            println!("plot written to {}", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn compare<M: EpkModel>(
    args: &CompareArgs,
    reader: &StoreReader,
    device: &Device,
) -> Result<ExitCode> {
    let a = reader.attrs();
    if a.steps == 0 {
        bail!(
            "{}: the store has no committed step",
            reader.path().display()
        );
    }
    let eval = reader.eval()?;
    let m = held_out_points(args.points, eval.len())?;
    if m < 2 {
        bail!("compare needs at least 2 held-out points (Kendall's tau ranks them)");
    }
    if !(args.l2.is_finite() && args.l2 > 0.0) {
        bail!("--l2 must be a positive number");
    }
    if args.projection_dim == Some(0) {
        bail!("--projection-dim must be at least 1");
    }
    let targets: Vec<usize> = eval.targets[..m]
        .iter()
        .map(|&t| usize::try_from(t).ok().filter(|&t| t < a.outputs))
        .collect::<Option<_>>()
        .context("held-out labels must be classes 0..outputs")?;
    let net = Network::<M>::new(a, device)?;
    if args.fit_samples == Some(0) {
        bail!("--fit-samples must be at least 1");
    }
    if let Some(s) = args.step
        && s > a.steps
    {
        bail!("--step {s}: the store has {} committed steps", a.steps);
    }
    let mut options = crate::compare::CompareOptions {
        surrogates: args.kernels.clone(),
        projection_dim: args.projection_dim,
        seed: args.seed,
        step: args.step,
        fit_samples: args.fit_samples,
        ..Default::default()
    };
    options.kglm.l2 = args.l2;
    options.replay.rule = args.rule;
    if let Some(t) = args.threads {
        options.replay.threads = t.max(1);
    }
    let xs = &eval.inputs[..m * a.input_len()];
    let comparison =
        crate::compare::compare(reader, &net, xs, &targets, &options).context("compare failed")?;
    let sweep = if args.rule_sweep {
        let rules = crate::compare::sweep_rules();
        crate::compare::rule_sweep(reader, &net, xs, &rules, &options.replay)
            .context("rule sweep failed")?
    } else {
        Vec::new()
    };
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        plot::scatter(&dir.join("scatter.png"), &comparison)?;
        if let Some((class, values, labels)) = &comparison.first_point {
            plot::distribution(&dir.join("attributions.png"), *class, values, labels)?;
        }
        if !sweep.is_empty() {
            plot::rules(&dir.join("rules.png"), &sweep)?;
        }
    }
    if args.json {
        let v = serde_json::json!({ "kernels": comparison.rows, "rules": sweep });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", comparison.table());
        if !sweep.is_empty() {
            println!(
                "{:<10} {:>16} {:>12} {:>8}",
                "rule", "evals/step/point", "max error", "seconds"
            );
            for p in &sweep {
                println!(
                    "{:<10} {:>16.2} {:>12.3e} {:>8.1}",
                    p.rule, p.evals_per_step_per_point, p.max_error, p.seconds
                );
            }
        }
        if let Some(dir) = &args.out {
            println!("plots written to {}", dir.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A progress bar over steps on a terminal; hidden for JSON output or when piped.
/// How many held-out points `--points` asks for (all of them by default).
fn held_out_points(points: Option<usize>, available: usize) -> Result<usize> {
    match points {
        Some(0) => bail!("--points must be at least 1"),
        Some(n) if n > available => {
            bail!("--points {n}: the store holds {available} held-out points")
        }
        Some(n) => Ok(n),
        None => Ok(available),
    }
}

fn progress_bar(steps: usize, json: bool) -> ProgressBar {
    let bar = if json || !std::io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(steps as u64)
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} steps  {elapsed} (eta {eta})")
            .expect("static template"),
    );
    bar
}

fn verify<M: EpkModel>(
    args: &VerifyArgs,
    reader: &StoreReader,
    device: &Device,
) -> Result<ExitCode> {
    let a = reader.attrs();
    if a.steps == 0 {
        bail!(
            "{}: the store has no committed step to verify",
            reader.path().display()
        );
    }
    let eval = reader.eval()?;
    if eval.is_empty() {
        bail!(
            "{}: the store has no held-out points to explain",
            reader.path().display()
        );
    }
    let m = held_out_points(args.points, eval.len())?;
    let net = Network::<M>::new(a, device)?;
    let xs = &eval.inputs[..m * a.input_len()];
    let mut options = ReplayOptions {
        rule: args.rule,
        tolerance: args.tolerance,
        ..ReplayOptions::default()
    };
    if let Some(t) = args.threads {
        options.threads = t.max(1);
    }
    let bar = progress_bar(a.steps, args.json);
    let started = Instant::now();
    let machine = replay(reader, &net, xs, &options, |s| bar.set_position(s as u64))
        .context("replay failed")?;
    bar.finish_and_clear();
    let check = match args.decomposition {
        Decomposition::Check => true,
        Decomposition::Report => false,
        Decomposition::Auto => a.dtype == epk_store::TrainDType::F64,
    };
    let report = VerifyReport::new(
        &machine,
        args.rule,
        args.tolerance,
        check,
        started.elapsed().as_secs_f64(),
    )
    .with_faults(&a.faults);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}", report.table());
    }
    if report.passed {
        Ok(ExitCode::SUCCESS)
    } else {
        if args.json {
            eprintln!("verification failed: {}", report.failures.join("; "));
        }
        Ok(ExitCode::from(1))
    }
}
