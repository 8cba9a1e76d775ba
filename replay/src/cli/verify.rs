//! `replay verify`: the machine against the network, step by step.

use super::{
    Prepared, held_out_points, parse_tolerance, prepare, print_json, replay_with_progress, set_rule,
};
use crate::{ReplayOptions, Rule, VerifyReport};
use anyhow::{Result, bail};
use burn::tensor::Device;
use clap::Args;
use epk_model::EpkModel;
use epk_store::StoreReader;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

/// The arguments of `verify`.
#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The epk store (a Zarr v3 directory).
    pub store: PathBuf,
    /// What to replay and how.
    #[command(flatten)]
    pub job: JobArgs,
    /// How to report.
    #[command(flatten)]
    pub report: ReportArgs,
}

/// How a verify report is given (`verify`, `reduce`).
#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also write every attribution A[point, training sample, output] with b, N, R and f as a
    /// Zarr v3 group with dimension names (read it with xarray.open_zarr).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Whether the decomposition residual (recorded step minus the replayed optimizer's
    /// per-sample and non-data terms) must meet the tolerance: `check`, `report`, or `auto`
    /// (check for f64 training, report for f32 training, whose steps carry f32 rounding).
    /// Whatever this says, every weight's residual must be within the rounding the training
    /// arithmetic can leave, or verification fails (a wrong optimizer, loss or
    /// hyper-parameter).
    #[arg(long, value_enum, default_value = "auto")]
    pub decomposition: Decomposition,
}

/// Which held-out points a verify job explains, and how (`verify`, `shard`).
#[derive(Args, Debug)]
pub struct JobArgs {
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
}

impl JobArgs {
    /// The replay options these flags ask for.
    pub(super) fn options(&self) -> ReplayOptions {
        let mut options = ReplayOptions {
            tolerance: self.tolerance,
            ..ReplayOptions::default()
        };
        set_rule(&mut options, self.rule, self.threads);
        options
    }

    /// [`prepare`] for a job over the first `--points` held-out points (their count in
    /// `checked`).
    pub(super) fn prepare<M: EpkModel>(
        &self,
        reader: &StoreReader,
        device: &Device,
    ) -> Result<Prepared<M, usize>> {
        prepare::<M, _>(reader, device, " to verify", |eval| {
            if eval.is_empty() {
                bail!(
                    "{}: the store has no held-out points to explain",
                    reader.path().display()
                );
            }
            held_out_points(self.points, eval.len())
        })
    }
}

/// How `verify` treats the decomposition residual: `Auto` checks it for f64 training and
/// reports it for f32 training, `Check` always checks it, `Report` only reports it.
// The variants carry no doc comments of their own: clap would print them in `--help`.
#[allow(missing_docs)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Decomposition {
    Auto,
    Check,
    Report,
}

pub(super) fn verify<M: EpkModel>(
    args: &VerifyArgs,
    reader: &StoreReader,
    device: &Device,
) -> Result<ExitCode> {
    super::out_is_free(args.report.out.as_deref())?;
    let Prepared {
        eval,
        net,
        checked: m,
    } = args.job.prepare::<M>(reader, device)?;
    let xs = &eval.inputs[..m * reader.attrs().input_len()];
    let options = args.job.options();
    let started = Instant::now();
    let machine = replay_with_progress(reader, &net, xs, &options, args.report.json)?;
    let points: Vec<usize> = (0..m).collect();
    let judged = Judged {
        rule: args.job.rule,
        tolerance: args.job.tolerance,
        report: &args.report,
    };
    judged.report(&machine, reader, &points, started.elapsed().as_secs_f64())
}

/// How a machine is judged and shown (`verify`, `reduce`).
pub(super) struct Judged<'a> {
    pub rule: Rule,
    pub tolerance: f64,
    pub report: &'a ReportArgs,
}

impl Judged<'_> {
    /// The verify report of `machine` (replayed for the held-out `points` of `reader` in
    /// `seconds`), the export if asked, and the exit code: 0 passed, 1 failed.
    pub fn report(
        &self,
        machine: &crate::KernelMachine,
        reader: &StoreReader,
        points: &[usize],
        seconds: f64,
    ) -> Result<ExitCode> {
        let a = reader.attrs();
        let check = match self.report.decomposition {
            Decomposition::Check => true,
            Decomposition::Report => false,
            Decomposition::Auto => a.dtype == epk_store::TrainDType::F64,
        };
        let report = VerifyReport::new(machine, self.rule, self.tolerance, check, seconds)
            .with_faults(&a.faults);
        super::export_to(
            self.report.out.as_deref(),
            machine,
            reader,
            self.rule,
            points,
        )?;
        if self.report.json {
            print_json(&report)?;
        } else {
            println!("{}", report.table());
        }
        if report.passed {
            Ok(ExitCode::SUCCESS)
        } else {
            if self.report.json {
                eprintln!("verification failed: {}", report.failures.join("; "));
            }
            Ok(ExitCode::from(1))
        }
    }
}
