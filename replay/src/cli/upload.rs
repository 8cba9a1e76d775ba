//! `replay upload`: copy a local store to S3-compatible object storage (feature `s3`), once
//! or following a run that is still being recorded. The remote copy commits its steps only
//! when its root metadata arrives, after every file it needs (see `epk_store::remote`).

use anyhow::{Context, Result};
use clap::Args;
use epk_store::remote::{Mirror, Remote};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// The arguments of `upload`.
#[derive(Args, Debug)]
pub struct UploadArgs {
    /// The local epk store (a Zarr v3 directory).
    pub store: PathBuf,
    /// Where to: s3://bucket/path (endpoint and keys from AWS_ENDPOINT_URL,
    /// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ALLOW_HTTP).
    pub url: String,
    /// Keep uploading what the recorder commits until the run is finished.
    #[arg(long)]
    pub follow: bool,
    /// Seconds between two passes with --follow.
    #[arg(long, default_value_t = 10.0, value_parser = positive_seconds)]
    pub interval: f64,
}

fn positive_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("{s:?} is not a number of seconds ≥ 0")),
    }
}

pub(super) fn upload(args: &UploadArgs) -> Result<ExitCode> {
    let remote = Remote::new(&args.url)?;
    let url = remote.url().to_string();
    let mut mirror = Mirror::new(&args.store, remote);
    let interval = Duration::from_secs_f64(args.interval);
    loop {
        let started = Instant::now();
        let attrs = mirror
            .sync()
            .with_context(|| format!("cannot upload {} to {url}", args.store.display()))?;
        let (steps, finished) = (attrs.steps, attrs.finished);
        let state = if finished { "finished" } else { "running" };
        println!(
            "{url}: {steps} steps committed ({state}), pass of {:.1} s",
            started.elapsed().as_secs_f64()
        );
        if !args.follow || finished {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(interval.saturating_sub(started.elapsed()));
    }
}
