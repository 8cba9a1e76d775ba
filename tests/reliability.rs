//! Nothing lost, nothing panics: kills at random moments, live readers, numerical faults,
//! a full disk and a stalled disk.

mod common;

use burn::data::dataloader::batcher::Batcher;
use burn::optim::SgdConfig;
use burn::train::TrainStep;
use common::{Run, verify};
use epk::recorder::models::Mlp;
use epk::recorder::{
    IndexedBatcher, IndexedItem, NonFinite, RecordError, Recorded, Recorder, WithRecorder,
    device::flex_f64,
};
use epk::store::StoreReader;
use rand::{RngExt, SeedableRng};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "EPK_TEST_CHILD_STORE";

fn toy() -> Run {
    Run::toy(8, 12, 20, 0)
}

fn items(run: &Run) -> Vec<IndexedItem> {
    (0..run.train.len())
        .map(|i| IndexedItem {
            index: i,
            input: run.train.input(i).to_vec(),
            target: run.train.targets[i],
        })
        .collect()
}

/// `steps` full-batch steps on a recorded model.
fn train(model: Recorded<Mlp>, run: &Run, steps: usize) -> Recorded<Mlp> {
    let device = flex_f64().unwrap();
    let mut optim = SgdConfig::new().init();
    let items = items(run);
    let mut model = model;
    for _ in 0..steps {
        let batch = IndexedBatcher.batch(items.clone(), &device);
        let out = TrainStep::step(&model, batch);
        model = TrainStep::optimize(model, &mut optim, run.lr.into(), out.grads);
        if model.check().is_err() {
            break;
        }
    }
    model
}

fn recorder(run: &Run, path: &Path) -> Recorder {
    Recorder::builder(path)
        .model_config::<Mlp>(&run.config)
        .loss(run.loss)
        .sgd(&SgdConfig::new())
        .train_data(run.train.clone())
        .eval_data(run.eval.clone())
}

/// Not a test on its own: the training process the kill tests start and kill.
#[test]
#[ignore = "started by the kill tests as a child process"]
fn child_trains_until_killed() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let run = toy();
    let device = flex_f64().unwrap();
    let model = Mlp::new(&run.config, &device);
    let model = model
        .with_recorder(recorder(&run, Path::new(&path)))
        .unwrap();
    let _ = train(model, &run, 1_000_000);
}

fn spawn_child(path: &Path) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_trains_until_killed",
            "--ignored",
            "--test-threads",
            "1",
        ])
        .env(CHILD_ENV, path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Committed steps are there and no array is shorter than the committed count (they grow
/// ahead in blocks); a finished store's arrays are exactly as long. A finished store is read
/// in full; a store being written (or killed) at its first and newest 64 steps, where a torn
/// write would show, since it can hold hundreds of thousands of steps by then.
fn check_consistent(path: &Path, finished: bool) -> usize {
    let reader = StoreReader::open(path).unwrap();
    let steps = reader.steps();
    for (name, extra) in [
        ("weights", 1),
        ("lr", 0),
        ("batch_size", 0),
        ("batch_index", 0),
        ("dloss", 0),
    ] {
        let meta: serde_json::Value =
            serde_json::from_slice(&std::fs::read(path.join(name).join("zarr.json")).unwrap())
                .unwrap();
        let len = meta["shape"][0].as_u64().unwrap() as usize;
        assert!(
            len >= steps + extra && (!finished || len == steps + extra),
            "{name} has {len} entries for {steps} committed steps"
        );
    }
    let newest = if finished {
        0
    } else {
        steps.saturating_sub(64)
    };
    for s in (0..steps.min(3)).chain(newest..steps) {
        reader.batch(s).unwrap();
        reader.lr(s).unwrap();
        reader.weights(s).unwrap();
    }
    reader.weights(steps).unwrap();
    steps
}

fn temp_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.to_string_lossy().ends_with(".epk-tmp") {
                out.push(p.clone());
            }
            if p.is_dir() {
                dirs.push(p);
            }
        }
    }
    out
}

/// 20 runs killed with SIGKILL at random moments: every store opens, its committed prefix
/// is complete and verifies, and training resumed from it appends correctly.
#[test]
fn survives_sigkill_at_random_moments() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let run = toy();
    let mut committed = Vec::new();
    for trial in 0..20 {
        let path = dir.path().join(format!("kill-{trial}.zarr"));
        let mut child = spawn_child(&path);
        std::thread::sleep(Duration::from_millis(rng.random_range(50..700)));
        child.kill().unwrap();
        child.wait().unwrap();
        if !path.exists() {
            // Killed while the store was being created: nothing must be half there.
            committed.push(None);
            continue;
        }
        let steps = check_consistent(&path, false);
        committed.push(Some(steps));
        if steps > 0 {
            let report = verify(&path, 2);
            assert!(report.passed, "trial {trial}: {}", report.table());
        }
        // Resume and append three steps.
        let resumed = Recorder::resume(&path).unwrap();
        let device = flex_f64().unwrap();
        let config = resumed.stored_model_config::<Mlp>().unwrap();
        let model = resumed.restore(Mlp::new(&config, &device)).unwrap();
        let model = model.with_recorder(resumed).unwrap();
        assert!(
            temp_files(&path).is_empty(),
            "trial {trial}: leftovers after resume"
        );
        let model = train(model, &run, 3);
        model.finish().unwrap();
        assert_eq!(check_consistent(&path, true), steps + 3, "trial {trial}");
        let report = verify(&path, 2);
        assert!(
            report.passed,
            "trial {trial} after resume: {}",
            report.table()
        );
    }
    let stores = committed.iter().flatten().count();
    eprintln!("kill trials: 20; stores that existed: {stores}; committed steps: {committed:?}");
    assert!(
        stores >= 15,
        "most kills should land after the store exists: {committed:?}"
    );
    assert!(committed.iter().flatten().any(|&s| s > 0));
}

/// A reader polling a store that is being written never sees a torn step.
#[test]
fn live_readers_see_only_committed_steps() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("live.zarr");
    let mut child = spawn_child(&path);
    let started = Instant::now();
    let (mut opens, mut failures, mut last) = (0, Vec::new(), 0);
    // At least 300 opens, and on until the writer has committed a few dozen steps.
    while (opens < 300 || last < 30) && started.elapsed() < Duration::from_secs(60) {
        if !path.exists() {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        opens += 1;
        let result = std::panic::catch_unwind(|| check_consistent(&path, false));
        match result {
            Ok(steps) => {
                assert!(steps >= last, "committed steps went backwards");
                last = steps;
            }
            Err(_) => failures.push(opens),
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    eprintln!(
        "live reading: {opens} opens, {} failures, last committed step {last}",
        failures.len()
    );
    assert!(opens >= 100, "only {opens} opens");
    assert!(
        last >= 30,
        "the run committed only {last} steps while being read"
    );
    assert!(failures.is_empty(), "failed opens: {failures:?}");
}

/// A NaN in the data is caught at the step it first appears; the user chooses the policy.
#[test]
fn non_finite_values_are_detected_recorded_and_reported() {
    for policy in [NonFinite::Stop, NonFinite::Record] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nan.zarr");
        let mut run = toy();
        run.train.inputs[5] = f64::NAN;
        let device = flex_f64().unwrap();
        let model = Mlp::new(&run.config, &device)
            .with_recorder(recorder(&run, &path).on_non_finite(policy))
            .unwrap();
        let model = train(model, &run, 4);
        // The NaN reaches the weights (ReLU maps a NaN pre-activation to 0, so dL/df stays
        // finite); the writer thread finds it, and the loop learns of it asynchronously.
        let finished = model.finish();
        let stopped = matches!(finished, Err(RecordError::NonFinite(_)));
        let reader = StoreReader::open(&path).unwrap();
        let faults = &reader.attrs().faults;
        assert_eq!(
            faults.len(),
            if policy == NonFinite::Stop { 1 } else { 4 },
            "{policy:?}"
        );
        assert_eq!(faults[0].step, 0);
        assert!(faults[0].message.contains("NaN"), "{}", faults[0].message);
        match policy {
            NonFinite::Stop => {
                assert!(stopped);
                assert_eq!(
                    reader.steps(),
                    0,
                    "nothing non-finite is committed under Stop"
                );
            }
            NonFinite::Record => {
                assert!(!stopped);
                assert_eq!(reader.steps(), 4);
                let report = verify(&path, 2);
                assert!(!report.passed);
                assert!(
                    report
                        .failures
                        .iter()
                        .any(|f| f.contains("non-finite values recorded at step 0"))
                );
            }
        }
    }
}

/// A full disk (ENOSPC from /dev/full) reaches the training loop at the next step, and the
/// store stays valid up to the last committed step.
#[test]
fn a_full_disk_stops_recording_and_keeps_the_committed_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("full.zarr");
    let run = toy();
    let device = flex_f64().unwrap();
    // Two steps per shard: weights rows 4 and 5 (written by steps 3 and 4) share a shard
    // file, which lands on a device that is always full.
    let model = Mlp::new(&run.config, &device)
        .with_recorder(recorder(&run, &path).queue(1).steps_per_shard(2))
        .unwrap();
    std::fs::create_dir_all(path.join("weights/c/2")).unwrap();
    std::os::unix::fs::symlink("/dev/full", path.join("weights/c/2/0")).unwrap();
    let mut optim = SgdConfig::new().init();
    let items = items(&run);
    let mut model = model;
    let mut stopped_after = None;
    for step in 0..20 {
        let out = TrainStep::step(&model, IndexedBatcher.batch(items.clone(), &device));
        model = TrainStep::optimize(model, &mut optim, run.lr.into(), out.grads);
        if let Err(e) = model.check() {
            assert!(e.to_string().contains("No space left"), "{e}");
            assert!(
                e.to_string().contains("weights/c/2/0"),
                "the error names the file: {e}"
            );
            stopped_after = Some(step);
            break;
        }
    }
    // The queue holds one step and the writer holds one more until the next arrives (it then
    // reads the held step's buffers without a copy), so the error surfaces within three steps
    // of the failing write.
    let stopped_after = stopped_after.expect("the disk error must reach the training loop");
    assert!(stopped_after <= 6, "stopped after step {stopped_after}");
    assert!(model.finish().is_err());
    std::fs::remove_file(path.join("weights/c/2/0")).unwrap();
    assert_eq!(check_consistent(&path, false), 3);
    assert!(verify(&path, 2).passed);
}
