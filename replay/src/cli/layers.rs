//! `replay layers`: one held-out prediction's attributions and kernel values split by layer.

use super::{PointArgs, PointReplay, print_json, print_plot_written, replay_point};
use crate::layers::LayerShare;
use crate::{KernelMachine, ReplayOptions, plot};
use anyhow::{Context, Result};
use burn::tensor::Device;
use clap::Args;
use epk_model::EpkModel;
use epk_store::StoreReader;
use std::path::PathBuf;
use std::process::ExitCode;

/// The arguments of `layers`.
#[derive(Args, Debug)]
pub struct LayersArgs {
    /// The point to explain and how to replay it.
    #[command(flatten)]
    pub point: PointArgs,
    /// Draw the layers' parts of the prediction to this PNG.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Print the split as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also write the per-layer attributions A[layer, point, training sample, output] with b,
    /// N, R and f as a Zarr v3 group with dimension names (read it with xarray.open_zarr).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub(super) fn layers<M: EpkModel>(
    args: &LayersArgs,
    reader: &StoreReader,
    device: &Device,
) -> Result<ExitCode> {
    super::out_is_free(args.out.as_deref())?;
    let a = reader.attrs();
    let options = ReplayOptions {
        groups: a
            .params
            .iter()
            .map(|p| p.offset..p.offset + p.len)
            .collect(),
        ..ReplayOptions::default()
    };
    let PointReplay {
        x, machine, net, ..
    } = replay_point::<M>(&args.point, reader, device, options, args.json)?;
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
        print_json(&serde_json::json!({
            "point": args.point.point,
            "output": k,
            "network": f[k],
            "bias": machine.bias[[0, k]],
            "nondata": machine.nondata[[0, k]],
            "residual": machine.residual[[0, k]],
            "max_error": machine.max_error(),
            "layers": shares,
        }))?;
    } else {
        print_table(args.point.point, k, &machine, &shares);
        print_plot_written(args.plot.as_deref());
    }
    let out = args.out.as_deref();
    super::export_and_judge(out, &machine, reader, &args.point, 1e-12)
}

/// The split of output `k` at held-out point `point` as a table.
fn print_table(point: usize, k: usize, machine: &KernelMachine, shares: &[LayerShare]) {
    let f = machine.network[[0, k]];
    let learned = f - machine.bias[[0, k]];
    println!(
        "held-out point {point}: output {k} = {:.6e} = b {:.6e} + Σ_layers Σ_i A + non-data {:.3e} + residual {:.3e}  (|error| {:.1e})",
        f,
        machine.bias[[0, k]],
        machine.nondata[[0, k]],
        machine.residual[[0, k]],
        machine.max_error()
    );
    println!(
        "{:<16} {:>8} {:>13} {:>9} {:>22} {:>12} {:>12}",
        "layer", "params", "Σ_i A", "of f − b", "top point (label) A", "trNTK⁰ same", "other"
    );
    for s in shares {
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
}
