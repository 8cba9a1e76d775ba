//! The `replay` binary: exit codes, messages and the JSON report.

use burn::data::dataloader::batcher::Batcher;
use burn::optim::SgdConfig;
use burn::train::TrainStep;
use epk_recorder::models::{Mlp, MlpConfig};
use epk_recorder::{
    IndexedBatcher, IndexedItem, Loss, Recorder, Samples, WithRecorder, device::flex_f64,
};
use std::path::Path;
use std::process::{Command, Output};

/// A tiny recorded run: deterministic inputs, two classes, full-batch descent.
fn record(path: &Path) {
    let dim = 4;
    let sample = |i: usize| -> Vec<f64> {
        (0..dim)
            .map(|d| ((i * 7 + d * 3) % 11) as f64 / 5.0 - 1.0 + if d == i % 2 { 1.5 } else { 0.0 })
            .collect()
    };
    let train = Samples::new(
        (0..16).flat_map(sample).collect(),
        vec![dim],
        (0..16).map(|i| (i % 2) as i64).collect(),
    )
    .unwrap();
    let eval = Samples::new(
        (16..20).flat_map(sample).collect(),
        vec![dim],
        (16..20).map(|i| (i % 2) as i64).collect(),
    )
    .unwrap();
    let device = flex_f64().unwrap();
    let config = MlpConfig::new(vec![dim, 5, 2])
        .with_log_softmax(true)
        .with_zero_last_layer(true);
    let sgd = SgdConfig::new();
    let recorder = Recorder::builder(path)
        .model_config::<Mlp>(&config)
        .loss(Loss::NllLogSoftmax)
        .sgd(&sgd)
        .train_data(train.clone())
        .eval_data(eval);
    let mut model = Mlp::new(&config, &device).with_recorder(recorder).unwrap();
    let mut optim = sgd.init();
    let items: Vec<IndexedItem> = (0..16)
        .map(|i| IndexedItem {
            index: i,
            input: train.input(i).to_vec(),
            target: train.targets[i],
        })
        .collect();
    for _ in 0..8 {
        let out = TrainStep::step(&model, IndexedBatcher.batch(items.clone(), &device));
        model = TrainStep::optimize(model, &mut optim, 0.5.into(), out.grads);
    }
    model.finish().unwrap();
}

fn replay(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_replay"))
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn verify_passes_fails_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("run.zarr");
    record(&store);
    let s = store.to_str().unwrap();

    let ok = replay(&["verify", s, "--tolerance", "1e-12"]);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));
    assert!(text(&ok).contains("PASS"));

    let json = replay(&["verify", s, "--json", "--points", "3"]);
    assert_eq!(json.status.code(), Some(0), "{}", text(&json));
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    for key in [
        "max_abs_error",
        "rule",
        "steps",
        "points",
        "evals_per_step_per_point",
    ] {
        assert!(v.get(key).is_some(), "JSON report lacks {key}");
    }
    assert_eq!(v["points"], 3);
    assert_eq!(v["steps"], 8);
    assert!(v["max_abs_error"].as_f64().unwrap() <= 1e-12);

    let coarse = replay(&["verify", s, "--rule", "left:2"]);
    assert_eq!(coarse.status.code(), Some(1), "{}", text(&coarse));
    let t = text(&coarse);
    assert!(
        t.contains("FAIL") && t.contains("left:2") && t.contains("step"),
        "{t}"
    );
}

#[test]
fn bad_input_exits_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("run.zarr");
    record(&store);
    let s = store.to_str().unwrap();
    let missing = dir.path().join("absent.zarr");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["verify", s, "--rule", "simpson:3"],
            "unknown quadrature rule",
        ),
        (vec!["verify", s, "--tolerance", "-1"], "not a positive"),
        (vec!["verify", s, "--tolerance", "abc"], "not a number"),
        (vec!["verify", s, "--points", "99"], "held-out points"),
        (vec!["verify", missing.to_str().unwrap()], "no such store"),
        (vec!["verify", s, "--bogus"], "--bogus"),
    ];
    for (args, needle) in cases {
        let o = replay(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(text(&o).contains(needle), "{args:?}: {}", text(&o));
    }
}
