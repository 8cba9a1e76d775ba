//! The `replay` command line. A user with a model of their own gets the whole CLI from one
//! call in their own binary:
//!
//! ```no_run
//! # use epk_model::models::Mlp as MyModel;
//! fn main() -> std::process::ExitCode {
//!     epk_replay::cli::main_with(epk_replay::cli::Registry::builtin().with::<MyModel>())
//! }
//! ```
//!
//! One file per command, its arguments beside it; this one holds the parser, the model
//! registry, the dispatch and the preamble the replaying commands share (`prepare`).

mod attribute;
mod compare;
mod info;
mod layers;
#[cfg(feature = "mpi")]
mod mpi;
mod progress;
mod shard;
#[cfg(feature = "s3")]
mod upload;
mod verify;

pub use attribute::AttributeArgs;
pub use compare::CompareArgs;
pub use info::InfoArgs;
pub use layers::LayersArgs;
pub use shard::{ReduceArgs, ShardArgs};
pub use verify::{Decomposition, JobArgs, ReportArgs, VerifyArgs};

use crate::{KernelMachine, Network, ReplayOptions, Rule, replay};
use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use clap::{Args, Parser, Subcommand};
use epk_model::EpkModel;
use epk_model::device::select;
use epk_store::{Samples, StoreReader};
use progress::Progress;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The parsed command line.
#[derive(Parser, Debug)]
#[command(
    name = "replay",
    version,
    about = "Rebuild a network recorded by epk as its exact path kernel machine, and prove it",
    after_help = "Exit codes: 0 success, 1 verification failed (verify) or attributions not exact (attribute), 2 bad input (flags, store, model)."
)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
    /// Where replay computes (always in float64): cpu (Burn's flex backend), or cuda / cuda:N in
    /// a build with the `cuda` feature.
    #[arg(long, global = true, default_value = "cpu")]
    pub device: String,
}

/// The commands.
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
    /// Replay one tile of a verify job (a stretch of steps × a block of points) into
    /// STORE/partials/JOB, for job arrays (Slurm --array, Kubernetes Indexed Jobs).
    Shard(ShardArgs),
    /// Join a job's tiles into the whole machine and verify it, as verify does.
    Reduce(ReduceArgs),
    /// Copy a local store to S3-compatible object storage, once or following a run.
    #[cfg(feature = "s3")]
    Upload(upload::UploadArgs),
}

impl Command {
    /// The store the command reads.
    pub fn store(&self) -> &Path {
        match self {
            Command::Verify(a) => &a.store,
            Command::Attribute(a) => &a.point.store,
            Command::Compare(a) => &a.store,
            Command::Layers(a) => &a.point.store,
            Command::Info(a) => &a.store,
            Command::Shard(a) => &a.store,
            Command::Reduce(a) => &a.store,
            #[cfg(feature = "s3")]
            Command::Upload(a) => &a.store,
        }
    }
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
            .with::<epk_model::models::Mlp>()
            .with::<epk_model::models::Cnn>()
            .with::<epk_model::models::Guide>()
            .with::<epk_model::models::Text>()
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
/// Sets the allocator up for replay first ([`crate::heap::keep_freed_memory`]).
pub fn main_with(registry: Registry) -> ExitCode {
    crate::heap::keep_freed_memory();
    main_with_args(registry, std::env::args_os())
}

/// [`main_with`] on `args` (the program name first) instead of the process's own: a program
/// that trains and replays can hand its `replay …` arguments on.
pub fn main_with_args<I, T>(registry: Registry, args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = Cli::parse_from(args);
    #[cfg(not(feature = "mpi"))]
    if let Some(n) = launched_ranks()
        && n > 1
        && !matches!(
            cli.command,
            Command::Shard(_) | Command::Reduce(_) | Command::Info(_)
        )
    {
        eprintln!(
            "error: launched as one of {n} MPI ranks, but this replay was built without the \
             `mpi` feature, so every rank would replay everything: build it with \
             `--features mpi`, or run one process"
        );
        return ExitCode::from(2);
    }
    #[cfg(feature = "mpi")]
    let _mpi = match mpi::init(&cli.command) {
        Ok(session) => session,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    match dispatch(&registry, &cli) {
        Ok(code) => code,
        #[cfg(feature = "mpi")]
        Err(e) if e.downcast_ref::<mpi::Contributed>().is_some() => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            #[cfg(feature = "mpi")]
            mpi::abort_others(2);
            ExitCode::from(2)
        }
    }
}

/// How many ranks an MPI launcher (Open MPI, MPICH, PMIx) started this process among.
#[cfg(not(feature = "mpi"))]
fn launched_ranks() -> Option<usize> {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.parse().ok())
}

/// Opens the store and runs the command with the model the store names.
fn dispatch(registry: &Registry, cli: &Cli) -> Result<ExitCode> {
    let command = &cli.command;
    #[cfg(feature = "s3")]
    if let Command::Upload(a) = command {
        return upload::upload(a);
    }
    let path = command.store();
    let reader = StoreReader::open(path)?;
    match command {
        Command::Info(a) => return info::info(&reader, a),
        Command::Reduce(a) => return shard::reduce(a, &reader),
        _ => {}
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

fn run<M: EpkModel>(command: &Command, reader: &StoreReader, device: &Device) -> Result<ExitCode> {
    match command {
        Command::Verify(args) => verify::verify::<M>(args, reader, device),
        Command::Attribute(args) => attribute::attribute::<M>(args, reader, device),
        Command::Compare(args) => compare::compare::<M>(args, reader, device),
        Command::Layers(args) => layers::layers::<M>(args, reader, device),
        Command::Info(args) => info::info(reader, args),
        Command::Shard(args) => shard::shard::<M>(args, reader, device),
        Command::Reduce(args) => shard::reduce(args, reader),
        #[cfg(feature = "s3")]
        Command::Upload(_) => unreachable!("dispatched before the store is opened"),
    }
}

/// What a replaying command has once [`prepare`] is done.
struct Prepared<M: EpkModel, T> {
    /// The store's held-out set.
    eval: Samples,
    /// The rebuilt network.
    net: Network<M>,
    /// What the command's check returned.
    checked: T,
}

/// The preamble of every command that replays (verify, attribute, layers, compare), in this
/// order: the store must hold a committed step (the error ends with `purpose`), its held-out set
/// is read, `check` tests the command's flags against it, and the network is rebuilt.
fn prepare<M: EpkModel, T>(
    reader: &StoreReader,
    device: &Device,
    purpose: &str,
    check: impl FnOnce(&Samples) -> Result<T>,
) -> Result<Prepared<M, T>> {
    if reader.attrs().steps == 0 {
        bail!(
            "{}: the store has no committed step{purpose}",
            reader.path().display()
        );
    }
    let eval = reader.eval()?;
    let checked = check(&eval)?;
    let net = Network::<M>::new(reader.attrs(), device)?;
    Ok(Prepared { eval, net, checked })
}

/// A size in bytes in the largest binary unit that divides it (`--adjoint-memory`'s units).
fn show_memory(bytes: usize) -> String {
    [(30, "GiB"), (20, "MiB"), (10, "KiB")]
        .iter()
        .find(|(shift, _)| bytes >= 1 << shift && bytes.is_multiple_of(1 << shift))
        .map_or(format!("{bytes} bytes"), |(shift, unit)| {
            format!("{} {unit}", bytes >> shift)
        })
}

/// Sets the quadrature rule and, when given, the worker threads.
fn set_rule(options: &mut ReplayOptions, rule: Rule, threads: Option<usize>) {
    options.rule = rule;
    if let Some(t) = threads {
        options.threads = t.max(1);
    }
}

/// Replays the machine at `xs`, reporting progress over steps (a bar, or lines when stderr is
/// not a terminal).
fn replay_with_progress<M: EpkModel>(
    reader: &StoreReader,
    net: &Network<M>,
    xs: &[f64],
    options: &ReplayOptions,
    json: bool,
) -> Result<KernelMachine> {
    #[cfg(feature = "mpi")]
    if let Some(machine) = mpi::replay(reader, net, xs, options, json)? {
        return Ok(machine);
    }
    let points = xs.len() / net.input_len().max(1);
    let blocks = crate::point_blocks(reader, net, points, options).context("replay failed")?;
    if blocks > 1 {
        // Each block repeats the forward pass: say why the run takes longer than one pass.
        eprintln!(
            "replay: {points} points in {blocks} blocks of points, so that the backward pass's \
             arrays fit in {} (--adjoint-memory)",
            show_memory(options.adjoint_bytes)
        );
    }
    let mut progress = Progress::new("replay", reader.attrs().steps, json);
    let machine = replay(reader, net, xs, options, |s| progress.set(s)).context("replay failed")?;
    progress.finish();
    Ok(machine)
}

/// One held-out point replayed as `args` asks (`attribute`, `layers`).
struct PointReplay<M: EpkModel> {
    eval: Samples,
    /// The point's input.
    x: Vec<f64>,
    machine: KernelMachine,
    net: Network<M>,
}

/// Replays the held-out point `args` names with `options` (rule and threads from `args`),
/// after checking the flags against the store.
fn replay_point<M: EpkModel>(
    args: &PointArgs,
    reader: &StoreReader,
    device: &Device,
    mut options: ReplayOptions,
    json: bool,
) -> Result<PointReplay<M>> {
    let outputs = reader.attrs().outputs;
    let Prepared { eval, net, .. } = prepare::<M, _>(reader, device, "", |eval| {
        if args.point >= eval.len() {
            bail!(
                "--point {}: the store holds {} held-out points (0 to {})",
                args.point,
                eval.len(),
                eval.len().saturating_sub(1)
            );
        }
        if let Some(k) = args.output
            && k >= outputs
        {
            bail!("--output {k}: the model has {outputs} outputs");
        }
        Ok(())
    })?;
    let x = eval.input(args.point).to_vec();
    set_rule(&mut options, args.rule, args.threads);
    let machine = replay_with_progress(reader, &net, &x, &options, json)?;
    Ok(PointReplay {
        eval,
        x,
        machine,
        net,
    })
}

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

/// What `verify` would fail on this machine for (path certificates and the machine's error at
/// `tolerance`, every step's residual within the training arithmetic's rounding, and the
/// residual against the tolerance for f64 stores): `attribute` and `layers` present no
/// attribution as exact that `verify` would not pass.
fn exactness_failures(
    machine: &KernelMachine,
    reader: &StoreReader,
    rule: Rule,
    tolerance: f64,
) -> Vec<String> {
    let f64_store = reader.attrs().dtype == epk_store::TrainDType::F64;
    crate::VerifyReport::new(machine, rule, tolerance, f64_store, 0.0)
        .with_faults(&reader.attrs().faults)
        .failures
}

/// The end of `attribute` and `layers`: the export, if asked, then exit 1 with the reasons
/// when `verify` would fail this one-point replay at `tolerance`.
fn export_and_judge(
    out: Option<&Path>,
    machine: &KernelMachine,
    reader: &StoreReader,
    point: &PointArgs,
    tolerance: f64,
) -> Result<ExitCode> {
    export_to(out, machine, reader, point.rule, &[point.point])?;
    let failures = exactness_failures(machine, reader, point.rule, tolerance);
    if failures.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("not exact: {}", failures.join("; "));
    Ok(ExitCode::from(1))
}

/// Refuses an `--out` path that exists before any replay work is done.
fn out_is_free(out: Option<&Path>) -> Result<()> {
    if let Some(out) = out
        && out.exists()
    {
        bail!(
            "--out {}: it exists; choose a new path for the export",
            out.display()
        );
    }
    Ok(())
}

/// Writes the whole machine to `out` (`--out`), if asked, and says so on stderr.
fn export_to(
    out: Option<&Path>,
    machine: &KernelMachine,
    reader: &StoreReader,
    rule: Rule,
    points: &[usize],
) -> Result<()> {
    let Some(out) = out else {
        return Ok(());
    };
    let train = reader.train()?;
    let layers = machine.group_attributions.as_ref().map(|_| {
        reader
            .attrs()
            .params
            .iter()
            .map(|p| p.path.clone())
            .collect()
    });
    let provenance = crate::export::Provenance {
        store: reader.path(),
        rule: rule.to_string(),
        points,
        train_targets: &train.targets,
        layers,
    };
    crate::export::write(out, machine, &provenance)
        .with_context(|| format!("cannot export to {}", out.display()))?;
    eprintln!(
        "attributions written to {} (Zarr v3, xarray.open_zarr)",
        out.display()
    );
    Ok(())
}

/// Prints `value` as pretty JSON on stdout.
fn print_json(value: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Says where a plot went, if one was asked for.
fn print_plot_written(path: Option<&Path>) {
    if let Some(path) = path {
        println!("plot written to {}", path.display());
    }
}
