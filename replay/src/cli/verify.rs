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
    /// Memory an optimizer with state (momentum, Adam, weight decay) may give its backward
    /// pass's arrays (Z and one step's Jbar, each points × outputs × parameters in f64): the
    /// points are replayed in blocks of as many as fit (at least one), one after another, each
    /// repeating the forward pass. A size in KiB, MiB or GiB (a plain number is MiB). One
    /// process only: under mpirun, and in `shard`, each tile is sized by the job's plan.
    #[arg(long, default_value = "512MiB", value_parser = parse_memory)]
    pub adjoint_memory: usize,
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
    /// With `auto`, ignore the degree the model declares (EpkModel::path_degree): accept a
    /// piece only where two Gauss–Legendre orders agree, as for models that declare none.
    /// Slower; a check on a declared degree, and the baseline of `scripts/bench.py`.
    #[arg(long)]
    pub orders_only: bool,
}

/// A memory size: a positive whole number of KiB, MiB or GiB (`64KiB`, `1GiB`; a plain number
/// is MiB), in bytes.
fn parse_memory(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let (digits, shift) = [("kib", 10), ("mib", 20), ("gib", 30)]
        .iter()
        .find_map(|(unit, shift)| lower.strip_suffix(unit).map(|d| (d.trim(), *shift)))
        .unwrap_or((lower.as_str(), 20));
    let n: usize = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a size; write e.g. 512MiB, 2GiB or 64KiB"))?;
    match n.checked_shl(shift).filter(|b| n > 0 && b >> shift == n) {
        Some(bytes) => Ok(bytes),
        None => Err(format!("{s} is not a positive size that fits in memory")),
    }
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
        let prepared = prepare::<M, _>(reader, device, " to verify", |eval| {
            if eval.is_empty() {
                bail!(
                    "{}: the store has no held-out points to explain",
                    reader.path().display()
                );
            }
            held_out_points(self.points, eval.len())
        })?;
        Ok(match self.orders_only {
            true => Prepared {
                net: prepared.net.undeclared(),
                ..prepared
            },
            false => prepared,
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
    let options = ReplayOptions {
        adjoint_bytes: args.adjoint_memory,
        ..args.job.options()
    };
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

#[cfg(test)]
mod tests {
    use super::parse_memory;

    #[test]
    fn memory_sizes_are_read_in_binary_units() {
        assert_eq!(parse_memory("512MiB"), Ok(512 << 20));
        assert_eq!(parse_memory("2 GiB"), Ok(2 << 30));
        assert_eq!(parse_memory("64kib"), Ok(64 << 10));
        assert_eq!(parse_memory("3"), Ok(3 << 20));
        for bad in ["0", "-1", "1.5GiB", "MiB", "1TB", "99999999999999999999GiB"] {
            assert!(parse_memory(bad).is_err(), "{bad}");
        }
        assert!(parse_memory(&format!("{}GiB", usize::MAX >> 20)).is_err());
    }
}
