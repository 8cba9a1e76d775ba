//! The declared optimizer must be the one training runs. A recorder told `.sgd(…)` while the
//! loop runs Adam wrote a store whose `verify` passed in f32 with most of each prediction in the
//! residual term; now the first step is refused, and replay fails any step that is not the
//! declared optimizer's to the rounding f32 arithmetic can leave.
//!
//! Every test here trains in f32 (flex's default float type, set once per process); replay,
//! which needs f64, runs as the `replay` binary.

mod common;

use burn::optim::{AdamConfig, AdamWConfig, SgdConfig, momentum::MomentumConfig};
use common::{Optim, Run, built};
use epk::store::StoreReader;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// `replay verify --json` on `path`: its exit status and report.
fn verify(path: &Path) -> (bool, Value) {
    let out = Command::new(built("replay"))
        .arg("verify")
        .arg(path)
        .args(["--tolerance", "1e-12", "--json"])
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), report)
}

fn f32_run(optim: Optim, declared: Option<Optim>) -> Run {
    let mut run = Run::toy(10, 16, 20, 12).with(optim, 20, 0.05);
    run.declared = declared;
    run.f32 = true;
    run
}

/// Records `run` and expects the recorder to stop at the first step, naming the mismatch.
fn assert_refused(run: &Run, path: &Path) -> String {
    assert_refused_at(run, path, 0)
}

/// Records `run` and expects the recorder to stop at optimizer step `step`, before committing
/// it, naming the mismatch.
fn assert_refused_at(run: &Run, path: &Path, step: usize) -> String {
    let model = run.try_record(path).unwrap();
    let error = model.error().expect("the mismatch stops recording");
    let named = format!(
        "optimizer step {step} (of the first 3, which are checked) is not the declared optimizer's"
    );
    assert!(error.contains(&named), "{error}");
    assert_eq!(model.steps(), step, "the steps before it are committed");
    assert!(model.finish().is_err(), "finish reports the stop");
    assert_eq!(StoreReader::open(path).unwrap().steps(), step);
    error
}

/// Momentum's buffer starts as the gradient, so plain SGD takes momentum's first step: the
/// second step is where they part, and where the recorder stops.
#[test]
fn sgd_declared_while_momentum_runs_is_refused_at_the_second_step() {
    let dir = tempfile::tempdir().unwrap();
    let momentum = SgdConfig::new().with_momentum(Some(MomentumConfig::new()));
    let run = f32_run(Optim::Sgd(momentum), Some(Optim::Sgd(SgdConfig::new())));
    assert_refused_at(&run, &dir.path().join("run.zarr"), 1);
}

/// Adam's first step is lr·g/(|g| + ε) whatever β₁ and β₂ are; the second tells them apart.
#[test]
fn adam_with_other_betas_is_refused_at_the_second_step() {
    let dir = tempfile::tempdir().unwrap();
    let run = f32_run(
        Optim::Adam(AdamConfig::new().with_beta_1(0.5)),
        Some(Optim::Adam(AdamConfig::new())),
    );
    assert_refused_at(&run, &dir.path().join("run.zarr"), 1);
}

#[test]
fn sgd_declared_while_adam_runs_is_refused_at_the_first_step() {
    let dir = tempfile::tempdir().unwrap();
    let run = f32_run(
        Optim::Adam(AdamConfig::new()),
        Some(Optim::Sgd(SgdConfig::new())),
    );
    let error = assert_refused(&run, &dir.path().join("run.zarr"));
    assert!(error.contains("sgd"), "{error}");
    assert!(error.contains("Recorder::optimizer"), "{error}");
}

#[test]
fn adam_declared_while_adamw_runs_is_refused() {
    // The only difference on the first step is AdamW's decoupled decay, −η λ w.
    let dir = tempfile::tempdir().unwrap();
    let run = f32_run(
        Optim::AdamW(AdamWConfig::new().with_weight_decay(0.1)),
        Some(Optim::Adam(AdamConfig::new())),
    );
    assert_refused(&run, &dir.path().join("run.zarr"));
}

/// Honest f32 runs record, and every step's residual is within f32's rounding bound, with
/// the path identity still at 1e-12 on the recorded weights.
#[test]
fn honest_f32_runs_are_within_the_rounding_bound() {
    let momentum = SgdConfig::new().with_momentum(Some(MomentumConfig::new()));
    for optim in [
        Optim::Sgd(momentum),
        Optim::Adam(AdamConfig::new()),
        Optim::AdamW(AdamWConfig::new().with_weight_decay(0.1)),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.zarr");
        f32_run(optim, None).record(&path);
        let (passed, report) = verify(&path);
        assert!(passed, "{report}");
        let units = report["max_rounding_units"].as_f64().unwrap();
        assert!(units <= 1.0, "{report}");
        // f32 rounding is there, and it is what the bound measures.
        assert!(report["max_decomposition_residual"].as_f64().unwrap() > 1e-12);
        assert!(units > 1e-6, "{report}");
    }
}

/// A store whose declared optimizer does not match its steps (here edited after recording,
/// as a store written by other code could be) fails `verify` in f32, where the decomposition
/// residual is only reported, instead of passing with wrong attributions.
#[test]
fn replay_fails_a_store_whose_steps_are_not_its_optimizer_s() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.zarr");
    f32_run(Optim::Adam(AdamConfig::new()), None).record(&path);
    let root = path.join("zarr.json");
    let mut meta: Value = serde_json::from_str(&std::fs::read_to_string(&root).unwrap()).unwrap();
    meta["attributes"]["epk"]["optimizer"] = serde_json::json!({
        "name": "sgd",
        "config": serde_json::to_value(SgdConfig::new()).unwrap(),
    });
    std::fs::write(&root, serde_json::to_string(&meta).unwrap()).unwrap();
    let (passed, report) = verify(&path);
    assert!(!passed, "{report}");
    assert!(
        report["max_rounding_units"].as_f64().unwrap() > 1e3,
        "{report}"
    );
    let failure = report["failures"].to_string();
    assert!(
        failure.contains("is not the declared optimizer's step"),
        "{failure}"
    );
    // The path identity itself holds: only the split into training points is wrong.
    assert!(
        report["max_abs_error"].as_f64().unwrap() < 1e-12,
        "{report}"
    );
    assert!(
        report["max_certificate"].as_f64().unwrap() < 1e-12,
        "{report}"
    );
}
