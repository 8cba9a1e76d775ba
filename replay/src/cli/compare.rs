//! `replay compare`: the exact path kernel beside DPK and the trace-NTK family.

use super::{Prepared, held_out_points, prepare, print_json, set_rule};
use crate::kernels::compare::{CompareOptions, Comparison, Surrogate};
use crate::quadrature::sweep::{self, RulePoint};
use crate::{Network, Rule, plot};
use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use clap::Args;
use epk_model::EpkModel;
use epk_store::StoreReader;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The arguments of `compare`.
#[derive(Args, Debug)]
pub struct CompareArgs {
    /// The epk store (a Zarr v3 directory).
    pub store: PathBuf,
    /// Surrogates, comma-separated: epk, dpk, trntk0, trntk, pntk, proj-trntk, proj-pntk, ck; and on request
    /// epk-kglm, a kGLM on the EPK Gram (dense path kernel between all training points: cost
    /// grows as training points² × outputs² × parameters per step; small runs only).
    /// Default: all but epk-kglm, and ck only for a model whose last layer goes through
    /// Switches::linear.
    #[arg(long, value_delimiter = ',')]
    pub kernels: Option<Vec<Surrogate>>,
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
    /// Memory for the tangent kernels' features, in MiB: their Grams are built in panels of
    /// training points whose features fit, recomputing Jacobians once per panel. The Grams
    /// themselves (n² numbers per kernel) come on top.
    #[arg(long, default_value_t = 1024)]
    pub memory: usize,
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

/// The surrogates compared when `--kernels` is not given.
const DEFAULT_KERNELS: [&str; 8] = [
    "epk",
    "dpk",
    "trntk0",
    "trntk",
    "pntk",
    "proj-trntk",
    "proj-pntk",
    "ck",
];

/// The surrogates `args` asks for; by default all but epk-kglm, leaving out the CK (with a
/// note) when the model gives no penultimate features.
fn surrogates<M: EpkModel>(
    args: &CompareArgs,
    reader: &StoreReader,
    net: &Network<M>,
) -> Result<Vec<Surrogate>> {
    if let Some(kernels) = &args.kernels {
        return Ok(kernels.clone());
    }
    let mut kernels: Vec<Surrogate> = DEFAULT_KERNELS
        .iter()
        .map(|k| k.parse().map_err(anyhow::Error::msg))
        .collect::<Result<_>>()?;
    let train = reader.train()?;
    let w = reader.weights(0)?;
    if crate::kernels::penultimate(net, &w, train.input(0)).is_none() {
        eprintln!(
            "compare: leaving out ck: the model's last layer does not go through \
             Switches::linear, so its penultimate features are not known"
        );
        kernels.retain(|&k| k != Surrogate::Ck);
    }
    Ok(kernels)
}

pub(super) fn compare<M: EpkModel>(
    args: &CompareArgs,
    reader: &StoreReader,
    device: &Device,
) -> Result<ExitCode> {
    let a = reader.attrs();
    let Prepared {
        eval,
        net,
        checked: (m, targets),
    } = prepare::<M, _>(reader, device, "", |eval| {
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
        Ok((m, targets))
    })?;
    if args.fit_samples == Some(0) {
        bail!("--fit-samples must be at least 1");
    }
    if args.memory == 0 {
        bail!("--memory must be at least 1 (MiB)");
    }
    if let Some(s) = args.step
        && s > a.steps
    {
        bail!("--step {s}: the store has {} committed steps", a.steps);
    }
    let mut options = CompareOptions {
        surrogates: surrogates(args, reader, &net)?,
        projection_dim: args.projection_dim,
        seed: args.seed,
        step: args.step,
        fit_samples: args.fit_samples,
        memory: args.memory << 20,
        ..Default::default()
    };
    options.kglm.l2 = args.l2;
    set_rule(&mut options.replay, args.rule, args.threads);
    let xs = &eval.inputs[..m * a.input_len()];
    let comparison = crate::kernels::compare::compare(reader, &net, xs, &targets, &options)
        .context("compare failed")?;
    let sweep = if args.rule_sweep {
        let rules = sweep::sweep_rules();
        sweep::rule_sweep(reader, &net, xs, &rules, &options.replay).context("rule sweep failed")?
    } else {
        Vec::new()
    };
    if let Some(dir) = &args.out {
        write_plots(dir, &comparison, &sweep)?;
    }
    if args.json {
        print_json(&serde_json::json!({ "kernels": comparison.rows, "rules": sweep }))?;
    } else {
        print_tables(&comparison, &sweep, args.out.as_deref());
    }
    Ok(ExitCode::SUCCESS)
}

/// scatter.png, attributions.png (when there is a first point) and rules.png (after a sweep)
/// in `dir`.
fn write_plots(dir: &Path, comparison: &Comparison, sweep: &[RulePoint]) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    plot::scatter(&dir.join("scatter.png"), comparison)?;
    if let Some((class, values, labels)) = &comparison.first_point {
        plot::distribution(&dir.join("attributions.png"), *class, values, labels)?;
    }
    if !sweep.is_empty() {
        plot::rules(&dir.join("rules.png"), sweep)?;
    }
    Ok(())
}

/// The comparison, the rule sweep if any, and where the plots went.
fn print_tables(comparison: &Comparison, sweep: &[RulePoint], out: Option<&Path>) {
    print!("{}", comparison.table());
    if !sweep.is_empty() {
        println!(
            "{:<10} {:>16} {:>12} {:>8}",
            "rule", "evals/step/point", "max error", "seconds"
        );
        for p in sweep {
            println!(
                "{:<10} {:>16.2} {:>12.3e} {:>8.1}",
                p.rule, p.evals_per_step_per_point, p.max_error, p.seconds
            );
        }
    }
    if let Some(dir) = out {
        println!("plots written to {}", dir.display());
    }
}
