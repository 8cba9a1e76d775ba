//! `replay shard` and `replay reduce`: a verify job cut into tiles that any job-array scheduler
//! runs (Slurm `--array`, Kubernetes Indexed Jobs, GNU parallel), then joined.

use super::Prepared;
use super::verify::{JobArgs, Judged, ReportArgs};
use crate::Rule;
use crate::shard::{
    Job, Plan, STRETCH_MEMORY, check_job, read_partials, reduce as join, replay_tile, write_partial,
};
use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use clap::Args;
use epk_model::EpkModel;
use epk_store::StoreReader;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

/// The arguments of `shard`.
#[derive(Args, Debug)]
pub struct ShardArgs {
    /// The epk store (a Zarr v3 directory); the tile goes to STORE/partials/JOB.
    pub store: PathBuf,
    /// This tile, from 0 (default: $JOB_COMPLETION_INDEX, or $SLURM_ARRAY_TASK_ID less
    /// $SLURM_ARRAY_TASK_MIN).
    #[arg(long)]
    pub index: Option<usize>,
    /// How many tiles the job has (every shard of a job is given the same).
    #[arg(long)]
    pub count: usize,
    /// Cut the steps into exactly this many stretches (default: as many as --count allows while
    /// every tile has a step and a point, and, for momentum or Adam, each stretch's boundary
    /// map stays within 1 GiB; the rest of --count cuts the points).
    #[arg(long)]
    pub stretches: Option<usize>,
    /// The job's name (letters, digits, '-', '_', '.').
    #[arg(long, default_value = "verify")]
    pub job: String,
    /// The folder for the job's tiles, as WORK/partials/JOB (default: the store; needed when
    /// the store is on object storage: a folder every shard can write).
    #[arg(long)]
    pub work: Option<PathBuf>,
    /// What to replay and how, as for verify.
    #[command(flatten)]
    pub replay: JobArgs,
    /// Progress as lines, never a bar.
    #[arg(long)]
    pub quiet: bool,
}

/// The arguments of `reduce`.
#[derive(Args, Debug)]
pub struct ReduceArgs {
    /// The epk store whose partials/JOB holds every tile.
    pub store: PathBuf,
    /// The job's name, as given to shard.
    #[arg(long, default_value = "verify")]
    pub job: String,
    /// The folder holding the job's tiles, as given to shard.
    #[arg(long)]
    pub work: Option<PathBuf>,
    /// How to report, as for verify.
    #[command(flatten)]
    pub report: ReportArgs,
}

/// Where the job's tiles go: `--work`, or the store itself when it is a local folder.
fn work_dir<'a>(flag: &'a Option<PathBuf>, reader: &'a StoreReader) -> Result<&'a Path> {
    match flag {
        Some(dir) => Ok(dir),
        None if reader.is_remote() => bail!(
            "{} is on object storage, which takes no partial results: give --work DIR, a folder every shard can write",
            reader.path().display()
        ),
        None => Ok(reader.path()),
    }
}

/// The tile index from the flag or the job-array scheduler's environment.
fn tile_index(flag: Option<usize>) -> Result<usize> {
    if let Some(i) = flag {
        return Ok(i);
    }
    let var = |name: &str| -> Result<Option<usize>> {
        std::env::var(name)
            .ok()
            .map(|v| {
                v.trim()
                    .parse::<usize>()
                    .with_context(|| format!("${name} is {v:?}, not a tile index"))
            })
            .transpose()
    };
    if let Some(i) = var("JOB_COMPLETION_INDEX")? {
        return Ok(i);
    }
    if let Some(i) = var("SLURM_ARRAY_TASK_ID")? {
        return Ok(i - var("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0).min(i));
    }
    bail!("--index is missing, and neither $JOB_COMPLETION_INDEX nor $SLURM_ARRAY_TASK_ID is set")
}

pub(super) fn shard<M: EpkModel>(
    args: &ShardArgs,
    reader: &StoreReader,
    device: &Device,
) -> Result<ExitCode> {
    let index = tile_index(args.index)?;
    if args.count == 0 || index >= args.count {
        bail!(
            "--index {index} --count {}: the index must be below the count",
            args.count
        );
    }
    let Prepared {
        eval,
        net,
        checked: m,
    } = args.replay.prepare::<M>(reader, device)?;
    let steps = reader.steps();
    let plan = match args.stretches {
        Some(s) => Plan::with_stretches(args.count, s, steps, m),
        None => Plan::for_store(args.count, reader, m, STRETCH_MEMORY),
    }
    .context("--count")?;
    let options = args.replay.options();
    let job = Job::new(reader, m, &options, plan);
    // Before the work: a name that holds another job's tiles would refuse this one after it.
    check_job(work_dir(&args.work, reader)?, &args.job, &job)?;
    let tile = plan.tile(index, steps, m);
    let mut progress = super::progress::Progress::new("shard", tile.steps.len(), args.quiet);
    let partial = replay_tile(reader, &net, &eval.inputs, &options, &job, index, |s| {
        progress.set(s)
    })
    .context("replay failed")?;
    progress.finish();
    let path = write_partial(work_dir(&args.work, reader)?, &args.job, &partial)?;
    println!(
        "tile {index} of {}: steps {}..{} × points {}..{} in {:.1} s → {}",
        args.count,
        tile.steps.start,
        tile.steps.end,
        tile.points.start,
        tile.points.end,
        partial.seconds,
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

pub(super) fn reduce(args: &ReduceArgs, reader: &StoreReader) -> Result<ExitCode> {
    super::out_is_free(args.report.out.as_deref())?;
    let started = Instant::now();
    let partials = read_partials(work_dir(&args.work, reader)?, &args.job)?;
    let job = partials[0].job.clone();
    if job.steps != reader.steps() {
        bail!(
            "the tiles replayed {} steps and the store now has {}: run the shards again",
            job.steps,
            reader.steps()
        );
    }
    let slowest = partials.iter().map(|p| p.seconds).fold(0.0, f64::max);
    let machine = join(partials).context("cannot join the tiles")?;
    let rule: Rule = job.rule.parse().map_err(anyhow::Error::msg)?;
    let judged = Judged {
        rule,
        tolerance: job.tolerance,
        report: &args.report,
    };
    let points: Vec<usize> = (0..job.points).collect();
    let seconds = slowest + started.elapsed().as_secs_f64();
    judged.report(&machine, reader, &points, seconds)
}
