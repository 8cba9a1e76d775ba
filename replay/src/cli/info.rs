//! `replay info`: a store's attributes, without replaying anything.

use super::print_json;
use anyhow::Result;
use clap::Args;
use epk_store::StoreReader;
use std::path::PathBuf;
use std::process::ExitCode;

/// The arguments of `info`.
#[derive(Args, Debug)]
pub struct InfoArgs {
    /// The epk store (a Zarr v3 directory).
    pub store: PathBuf,
    /// Print the store's attributes as JSON.
    #[arg(long)]
    pub json: bool,
}

pub(super) fn info(reader: &StoreReader, args: &InfoArgs) -> Result<ExitCode> {
    let a = reader.attrs();
    if args.json {
        print_json(a)?;
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
