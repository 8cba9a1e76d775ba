//! Stores on object storage (issue #15, feature `s3`), against a real S3 server (Garage, see
//! `tests/common/garage.rs`; run through `scripts/s3-test.sh`): a run uploaded while it
//! trains replays from the bucket exactly as from its local folder; a killed upload and a
//! stopped server each leave a remote store that opens and verifies at 1e-12 on its
//! committed prefix, and `replay upload` then completes it.
#![cfg(unix)]

mod common;
#[path = "common/garage.rs"]
mod garage;

use common::{TINY_GAUSSIANS, built};
use garage::{BUCKET, Garage};
use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

/// Steps of the runs that are killed or lose their server: two seconds of training or so,
/// so that both happen while it trains.
const STEPS: usize = 6_000;

/// The gaussians example on a tiny problem, full-batch with momentum, uploading as it trains.
fn train(garage: &Garage, store: &Path, url: &str, steps: usize) -> Child {
    garage
        .command(&built("examples/gaussians"))
        .args(TINY_GAUSSIANS)
        .args(["--optimizer", "momentum", "--lr", "0.05"])
        .args(["--steps", &steps.to_string(), "--upload", url])
        .args(["--upload-every", "0.05", "--store"])
        .arg(store)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// `replay ARGS` with the server's environment.
fn replay(garage: &Garage, args: &[&str]) -> Output {
    garage
        .command(&built("replay"))
        .args(args)
        .output()
        .unwrap()
}

/// The committed steps and whether the run finished, from `replay info`.
fn info(garage: &Garage, store: &str) -> Option<(usize, bool)> {
    let out = replay(garage, &["info", store]);
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.starts_with("steps"))?;
    let steps = line.split_whitespace().nth(1)?.parse().ok()?;
    Some((steps, line.contains("run finished")))
}

/// `replay verify --json` at 1e-12, which must pass; the report without its wall time.
fn verify(garage: &Garage, store: &str) -> serde_json::Value {
    let out = replay(garage, &["verify", store, "--tolerance", "1e-12", "--json"]);
    assert!(
        out.status.success(),
        "verify {store}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    if let Some(map) = report.as_object_mut() {
        map.remove("seconds");
    }
    report
}

/// Waits until the remote store commits at least one step.
fn wait_for_remote_steps(garage: &Garage, url: &str, child: &mut Child) -> usize {
    let started = Instant::now();
    loop {
        if let Some((steps, _)) = info(garage, url).filter(|&(s, _)| s > 0) {
            return steps;
        }
        assert!(child.try_wait().unwrap().is_none(), "training ended first");
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no upload in 60 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn a_run_uploaded_while_training_replays_from_the_bucket_as_from_disk() {
    let garage = Garage::start();
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("run.zarr");
    let url = format!("s3://{BUCKET}/runs/whole.zarr");
    let out = train(&garage, &local, &url, 300)
        .wait_with_output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(info(&garage, &url), Some((300, true)));
    let remote = verify(&garage, &url);
    assert_eq!(
        remote,
        verify(&garage, s(&local)),
        "the same bytes replay the same"
    );
    assert_eq!(remote["passed"], true);
}

#[test]
fn a_killed_upload_leaves_a_store_that_verifies_on_its_committed_prefix() {
    let garage = Garage::start();
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("run.zarr");
    let url = format!("s3://{BUCKET}/runs/killed.zarr");
    let mut child = train(&garage, &local, &url, STEPS);
    wait_for_remote_steps(&garage, &url, &mut child);
    std::thread::sleep(Duration::from_millis(100));
    child.kill().unwrap();
    child.wait().unwrap();
    let (remote, finished) = info(&garage, &url).expect("the remote store opens");
    let (local_steps, _) = info(&garage, s(&local)).expect("the local store opens");
    assert!(
        local_steps < STEPS,
        "killed while training: {local_steps} steps"
    );
    assert!(
        !finished && remote > 0 && remote <= local_steps,
        "{remote} of {local_steps}"
    );
    verify(&garage, &url);
    complete(&garage, &local, &url, (local_steps, false));
}

#[test]
fn a_stopped_server_leaves_a_store_that_verifies_on_its_committed_prefix() {
    let mut garage = Garage::start();
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("run.zarr");
    let url = format!("s3://{BUCKET}/runs/stopped.zarr");
    let mut child = train(&garage, &local, &url, STEPS);
    wait_for_remote_steps(&garage, &url, &mut child);
    garage.stop();
    // Training goes on and finishes on disk; finishing reports the failed upload.
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("is complete, but its upload"), "{stderr}");
    assert_eq!(info(&garage, s(&local)), Some((STEPS, true)));
    garage.restart();
    let (remote, finished) = info(&garage, &url).expect("the remote store opens");
    assert!(!finished && remote > 0 && remote < STEPS, "{remote}");
    verify(&garage, &url);
    complete(&garage, &local, &url, (STEPS, true));
}

/// `replay upload` completes the copy to what the local store commits (`steps`, finished),
/// and the copy verifies.
fn complete(garage: &Garage, local: &Path, url: &str, steps: (usize, bool)) {
    let out = replay(garage, &["upload", s(local), url]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(info(garage, url), Some(steps));
    verify(garage, url);
}
