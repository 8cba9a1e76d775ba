//! `replay attribute`: the training points behind one held-out prediction, ranked.

use super::{
    PointArgs, PointReplay, parse_tolerance, print_json, print_plot_written, replay_point,
};
use crate::attribute::PointAttribution;
use crate::{ReplayOptions, plot};
use anyhow::{Result, bail};
use burn::tensor::Device;
use clap::Args;
use epk_model::EpkModel;
use epk_store::StoreReader;
use std::path::PathBuf;
use std::process::ExitCode;

/// The arguments of `attribute`.
#[derive(Args, Debug)]
pub struct AttributeArgs {
    /// The point to explain and how to replay it.
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
    /// Also write the point's every attribution A[point, training sample, output] with b, N,
    /// R and f as a Zarr v3 group with dimension names (read it with xarray.open_zarr).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub(super) fn attribute<M: EpkModel>(
    args: &AttributeArgs,
    reader: &StoreReader,
    device: &Device,
) -> Result<ExitCode> {
    if args.top == 0 {
        bail!("--top must be at least 1");
    }
    super::out_is_free(args.out.as_deref())?;
    let options = ReplayOptions {
        tolerance: args.tolerance,
        ..ReplayOptions::default()
    };
    let PointReplay {
        eval, x, machine, ..
    } = replay_point::<M>(&args.point, reader, device, options, args.json)?;
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
        print_json(&ranked)?;
    } else {
        print!("{}", ranked.table());
        print_plot_written(args.plot.as_deref());
    }
    let out = args.out.as_deref();
    super::export_and_judge(out, &machine, reader, &args.point, args.tolerance)
}
