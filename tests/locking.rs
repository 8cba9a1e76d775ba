//! One writer per store (issue #13): two recorders started together, a recorder against an
//! `--overwrite` of its store, a store removed under a running recorder, a stale lock left
//! by a killed run, and `Recorder::resume` of a store being written.
#![cfg(unix)]

mod common;

use burn::data::dataloader::batcher::Batcher;
use burn::optim::SgdConfig;
use burn::train::TrainStep;
use common::{Run, TINY_GAUSSIANS, built, verify};
use epk::recorder::models::Mlp;
use epk::recorder::{
    IndexedBatcher, IndexedItem, Recorded, Recorder, Samples, WithRecorder, device::flex_f64,
};
use epk::store::{StoreReader, WriterLock};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Steps of the racing runs: long enough that the loser reaches the lock while the winner
/// still holds it (a few tenths of a second), short enough for 20 rounds on 2 cores.
const STEPS: usize = 500;

/// The gaussians example on a tiny problem: `steps` full-batch steps take well under a
/// second, and its store verifies at 1e-12.
fn gaussians(store: &Path, steps: usize, overwrite: bool) -> Child {
    let mut command = Command::new(built("examples/gaussians"));
    command
        .args(TINY_GAUSSIANS)
        .args(["--steps", &steps.to_string(), "--store"])
        .arg(store)
        .env_remove("RUST_BACKTRACE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if overwrite {
        command.arg("--overwrite");
    }
    command.spawn().unwrap()
}

/// The refused run's error: one line naming the holder's process.
fn assert_refused(out: &Output, holder: u32, round: usize) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "round {round}: {stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "round {round}: {stderr}");
    let named = format!("is being written by process {holder} (gaussians)");
    assert!(stderr.contains(&named), "round {round}: {stderr}");
}

fn assert_finished_and_verifies(path: &Path, steps: usize, round: usize) {
    let reader = StoreReader::open(path).unwrap();
    assert!(reader.attrs().finished, "round {round}");
    assert_eq!(reader.steps(), steps, "round {round}");
    let report = verify(path, 1);
    assert!(report.passed, "round {round}: {}", report.table());
    assert!(
        !WriterLock::path_for(path).exists(),
        "round {round}: lock left"
    );
}

/// 20 times, two runs started together on one new store: one records and its store verifies,
/// the other refuses, naming the first's process.
#[test]
fn two_recorders_started_together_one_refuses_naming_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut winners = [0; 2];
    for round in 0..20 {
        let path = dir.path().join(format!("race-{round}.zarr"));
        let children = [
            gaussians(&path, STEPS, false),
            gaussians(&path, STEPS, false),
        ];
        let pids = children.each_ref().map(Child::id);
        let outs = children.map(|c| c.wait_with_output().unwrap());
        let ok: Vec<usize> = (0..2).filter(|&i| outs[i].status.success()).collect();
        assert_eq!(ok.len(), 1, "round {round}: exactly one run records");
        let (winner, loser) = (ok[0], 1 - ok[0]);
        winners[winner] += 1;
        assert_refused(&outs[loser], pids[winner], round);
        assert_finished_and_verifies(&path, STEPS, round);
    }
    eprintln!(
        "race: 20 rounds in {:.1} s; first-started won {} times, second {}",
        started.elapsed().as_secs_f64(),
        winners[0],
        winners[1]
    );
}

/// 20 times, `--overwrite` of a store being recorded: it refuses naming the recording run,
/// removes nothing, and the recording finishes and verifies.
#[test]
fn an_overwrite_of_a_store_being_recorded_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    for round in 0..20 {
        let path = dir.path().join(format!("overwrite-{round}.zarr"));
        let first = gaussians(&path, STEPS, false);
        let pid = first.id();
        // The holder names itself in the lock file just after taking the lock (the file
        // alone may exist an instant before that).
        let lock = WriterLock::path_for(&path);
        let named = format!("\"pid\": {pid}");
        let waiting = Instant::now();
        while !std::fs::read_to_string(&lock).is_ok_and(|t| t.contains(&named)) {
            assert!(waiting.elapsed() < Duration::from_secs(20), "round {round}");
            std::thread::sleep(Duration::from_millis(2));
        }
        let second = gaussians(&path, 10, true).wait_with_output().unwrap();
        let first = first.wait_with_output().unwrap();
        assert!(
            first.status.success(),
            "round {round}: {}\n{}",
            String::from_utf8_lossy(&first.stderr),
            String::from_utf8_lossy(&second.stderr)
        );
        assert_refused(&second, pid, round);
        assert_finished_and_verifies(&path, STEPS, round);
    }
    eprintln!(
        "overwrite: 20 rounds in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

fn items(train: &Samples) -> Vec<IndexedItem> {
    (0..train.len())
        .map(|i| IndexedItem {
            index: i,
            input: train.input(i).to_vec(),
            target: train.targets[i],
        })
        .collect()
}

/// Full-batch steps until `steps` are done or the recorder reports an error.
fn train(mut model: Recorded<Mlp>, train: &Samples, steps: usize) -> (Recorded<Mlp>, usize) {
    let device = flex_f64().unwrap();
    let mut optim = SgdConfig::new().init();
    let items = items(train);
    for step in 0..steps {
        let out = TrainStep::step(&model, IndexedBatcher.batch(items.clone(), &device));
        model = TrainStep::optimize(model, &mut optim, 0.1.into(), out.grads);
        if model.check().is_err() {
            return (model, step);
        }
    }
    (model, steps)
}

fn toy_recorder(run: &Run, path: &Path) -> Recorded<Mlp> {
    let device = flex_f64().unwrap();
    let recorder = Recorder::builder(path)
        .model_config::<Mlp>(&run.config)
        .loss(run.loss)
        .sgd(&SgdConfig::new())
        .train_data(run.train.clone())
        .eval_data(run.eval.clone())
        .queue(1);
    Mlp::new(&run.config, &device)
        .with_recorder(recorder)
        .unwrap()
}

/// A store removed under a running recorder stops it at the next step with an error saying
/// so, and the run does not finish "normally".
#[test]
fn a_store_removed_under_a_running_recorder_fails_the_next_step() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("removed.zarr");
    let run = Run::toy(4, 6, 10, 0);
    let (model, done) = train(toy_recorder(&run, &path), &run.train, 20);
    assert_eq!(done, 20);
    // The writer may be creating a file as `rm -r` walks the folder: try again, as a user would.
    let mut removed = std::fs::remove_dir_all(&path);
    for _ in 0..50 {
        if removed.is_ok() || !path.exists() {
            break;
        }
        removed = std::fs::remove_dir_all(&path);
    }
    assert!(!path.exists(), "{removed:?}");
    let (model, stopped) = train(model, &run.train, 20);
    // The writer finds it at the next step it writes; the loop hears at the send after.
    assert!(stopped <= 2, "the recorder went on for {stopped} steps");
    let err = model.check().unwrap_err().to_string();
    assert!(
        err.contains("removed.zarr: the store was removed or moved away while being written"),
        "{err}"
    );
    let finished = model.finish().map(|_| ()).unwrap_err().to_string();
    assert!(finished.contains("was removed"), "{finished}");
    assert!(!path.exists(), "nothing was written after the removal");
}

/// A run killed with SIGKILL leaves its lock file naming it; the kernel dropped its lock, so
/// `Recorder::resume` takes it over and the resumed store verifies.
#[test]
fn the_lock_of_a_killed_run_is_taken_over_on_resume() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("killed.zarr");
    let mut child = gaussians(&path, 1_000_000, false);
    let waiting = Instant::now();
    while StoreReader::open(&path).map_or(true, |r| r.steps() < 10) {
        assert!(waiting.elapsed() < Duration::from_secs(30), "no steps");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let lock = WriterLock::path_for(&path);
    let stale = std::fs::read_to_string(&lock).unwrap();
    assert!(
        stale.contains(&format!("\"pid\": {}", child.id())),
        "{stale}"
    );

    let resumed = Recorder::resume(&path).unwrap();
    let device = flex_f64().unwrap();
    let config = resumed.stored_model_config::<Mlp>().unwrap();
    let model = resumed.restore(Mlp::new(&config, &device)).unwrap();
    let model = model.with_recorder(resumed).unwrap();
    let mine = std::fs::read_to_string(&lock).unwrap();
    assert!(
        mine.contains(&format!("\"pid\": {}", std::process::id())),
        "{mine}"
    );
    let steps = StoreReader::open(&path).unwrap().steps();
    let train_set = StoreReader::open(&path).unwrap().train().unwrap();
    let (model, done) = train(model, &train_set, 3);
    assert_eq!(done, 3);
    model.finish().unwrap();
    assert_finished_and_verifies(&path, steps + 3, 0);
}

/// While a recorder writes a store, `Recorder::resume` and a second recorder on the same
/// path refuse, naming this process; once it finishes, the store resumes.
#[test]
fn a_store_being_recorded_cannot_be_resumed_or_recorded_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("busy.zarr");
    let run = Run::toy(4, 6, 10, 0);
    let (model, _) = train(toy_recorder(&run, &path), &run.train, 3);
    let me = format!("is being written by process {}", std::process::id());
    let resumed = Recorder::resume(&path).unwrap_err().to_string();
    assert!(resumed.contains(&me), "{resumed}");
    let device = flex_f64().unwrap();
    let second = Mlp::new(&run.config, &device)
        .with_recorder(
            Recorder::builder(&path)
                .overwrite(true)
                .model_config::<Mlp>(&run.config)
                .sgd(&SgdConfig::new())
                .train_data(run.train.clone()),
        )
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(second.contains(&me), "{second}");
    model.finish().unwrap();
    assert!(Recorder::resume(&path).is_ok());
}
