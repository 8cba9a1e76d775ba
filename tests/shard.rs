//! Replay cut into tiles (stretches of steps × blocks of points) and joined equals the
//! one-process replay: on plain gradient descent, where stretches just add, and on optimizers
//! with state, where the later steps' adjoint enters each stretch through its boundary.

mod common;

use burn::grad_clipping::GradientClippingConfig;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamConfig, SgdConfig};
use common::{Optim, Run};
use epk::recorder::device::flex_f64;
use epk::recorder::models::Mlp;
use epk::replay::shard::{Job, Partial, Plan, read_partials, reduce, replay_tile, write_partial};
use epk::replay::{KernelMachine, Network, ReplayOptions, point_blocks, replay};
use epk::store::StoreReader;
use std::path::Path;

/// The tiles of `plan`, each replayed on its own.
fn tiles(path: &Path, plan: Plan, options: &ReplayOptions) -> Vec<Partial> {
    let reader = StoreReader::open(path).unwrap();
    let net = Network::<Mlp>::new(reader.attrs(), &flex_f64().unwrap()).unwrap();
    let eval = reader.eval().unwrap();
    let job = Job::new(&reader, eval.len(), options, plan);
    (0..plan.count())
        .map(|i| replay_tile(&reader, &net, &eval.inputs, options, &job, i, |_| {}).unwrap())
        .collect()
}

fn one_process(path: &Path, options: &ReplayOptions) -> KernelMachine {
    one_process_counted(path, options).0
}

/// [`one_process`], with how many times replay reported progress (once per step and block of
/// points).
fn one_process_counted(path: &Path, options: &ReplayOptions) -> (KernelMachine, usize) {
    let reader = StoreReader::open(path).unwrap();
    let net = Network::<Mlp>::new(reader.attrs(), &flex_f64().unwrap()).unwrap();
    let eval = reader.eval().unwrap();
    let mut reports = 0;
    let machine = replay(&reader, &net, &eval.inputs, options, |_| reports += 1).unwrap();
    (machine, reports)
}

/// max |a − b| / max(1, |b|) over two arrays of one shape: relative where values exceed 1.
/// Adding the stretches in another grouping, and Adam's boundary maps, leave a few to a few
/// tens of units in the last place on a prediction near 8 (2.8e-15 seen in CI with four Adam
/// stretches): [`BOUND`] allows that, while dropping the boundaries misses by 1e-6.
const BOUND: f64 = 1e-14;

fn gap<D: ndarray::Dimension>(a: &ndarray::Array<f64, D>, b: &ndarray::Array<f64, D>) -> f64 {
    assert_eq!(a.shape(), b.shape());
    a.iter()
        .zip(b)
        .fold(0.0, |m, (x, y)| m.max((x - y).abs() / y.abs().max(1.0)))
}

/// The joined machine equals the one-process machine: every array within `tol` ([`gap`]), and
/// the per-step checks the same.
fn assert_same(joined: &KernelMachine, whole: &KernelMachine, tol: f64, what: &str) {
    assert_eq!(joined.bias, whole.bias, "{what}: b is f(x; w_0) either way");
    assert_eq!(
        joined.network, whole.network,
        "{what}: f(x; w_N) either way"
    );
    let gaps = [
        ("A", gap(&joined.attributions, &whole.attributions)),
        ("N", gap(&joined.nondata, &whole.nondata)),
        ("R", gap(&joined.residual, &whole.residual)),
        (
            "b + ΣA + N + R",
            gap(&joined.prediction(), &whole.prediction()),
        ),
    ];
    for (name, g) in gaps {
        assert!(g <= tol, "{what}: {name} differs by {g:e}");
    }
    if let (Some(a), Some(b)) = (&joined.group_attributions, &whole.group_attributions) {
        let g = gap(a, b);
        assert!(g <= tol, "{what}: per-group attributions differ by {g:e}");
    }
    assert_eq!(joined.constant_coefficients, whole.constant_coefficients);
    assert_eq!(joined.steps.len(), whole.steps.len());
    // A batched Jacobian pass rounds a point's factors differently with another number of rows
    // beside it (Burn's matrix products pick their kernels by shape), so a block of points
    // certifies its steps to the same rounding, not to the bit; a flipped acceptance by that
    // rounding moves a step's evaluation count a little. The decomposition does not depend on
    // the points.
    for (j, w) in joined.steps.iter().zip(&whole.steps) {
        let gap = (j.certificate - w.certificate).abs();
        assert!(gap <= 4e-15, "{what}: step {}: certificate {gap:e}", w.step);
        assert!(
            j.evals.abs_diff(w.evals) * 10 <= w.evals,
            "{what}: step {}: {} evaluations against {}",
            w.step,
            j.evals,
            w.evals
        );
        assert_eq!(j.decomposition, w.decomposition, "{what}: step {}", w.step);
    }
    assert!(
        joined.max_error() < 1e-12,
        "{what}: {:e}",
        joined.max_error()
    );
}

/// A momentum run of the toy (`per_class` points a class, `steps` steps of 10) at `dir/run.zarr`.
fn momentum_run(dir: &Path, per_class: usize, steps: usize) -> std::path::PathBuf {
    let path = dir.join("run.zarr");
    let config = SgdConfig::new().with_momentum(Some(MomentumConfig::new()));
    Run::toy(6, 8, per_class, steps)
        .with(Optim::Sgd(config), 10, 0.2)
        .record(&path);
    path
}

/// Every cut of a run: steps alone, points alone, both, and an uneven one.
fn cuts(steps: usize, points: usize) -> Vec<Plan> {
    vec![
        Plan::with_stretches(4, 4, steps, points).unwrap(),
        Plan::with_stretches(4, 1, steps, points).unwrap(),
        Plan::with_stretches(4, 2, steps, points).unwrap(),
        Plan::with_stretches(6, 3, steps, points).unwrap(),
    ]
}

fn check_run(run: Run, groups: bool, what: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.zarr");
    run.record(&path);
    let reader = StoreReader::open(&path).unwrap();
    let mut options = ReplayOptions::default();
    if groups {
        options.groups = reader
            .attrs()
            .params
            .iter()
            .map(|p| p.offset..p.offset + p.len)
            .collect();
    }
    let whole = one_process(&path, &options);
    let points = reader.eval().unwrap().len();
    // Room for less than one point's adjoint: an optimizer with state replays the points one
    // by one, in one process, and sets them side by side.
    let tight = ReplayOptions {
        adjoint_bytes: 1,
        ..options.clone()
    };
    let (blocked, reports) = one_process_counted(&path, &tight);
    let stateful = !epk::replay::Optimizer::from_spec(&reader.attrs().optimizer)
        .unwrap()
        .is_plain();
    let blocks = if stateful { points } else { 1 };
    assert_eq!(reports, blocks * reader.steps(), "{what}: blocks of points");
    assert_same(
        &blocked,
        &whole,
        BOUND,
        &format!("{what}, points one by one"),
    );
    for plan in cuts(reader.steps(), points) {
        let joined = reduce(tiles(&path, plan, &options)).unwrap();
        assert_same(&joined, &whole, BOUND, &format!("{what}, {plan:?}"));
    }
}

#[test]
fn plain_minibatch_sgd_joins_to_the_one_process_machine() {
    let run = Run::toy(6, 8, 10, 9).with(Optim::Sgd(SgdConfig::new()), 10, 0.3);
    check_run(run, true, "sgd");
}

#[test]
fn momentum_with_coupled_decay_joins_to_the_one_process_machine() {
    let config = SgdConfig::new()
        .with_momentum(Some(MomentumConfig::new()))
        .with_weight_decay(Some(WeightDecayConfig::new(1e-2)));
    let run = Run::toy(6, 8, 10, 9).with(Optim::Sgd(config), 10, 0.2);
    check_run(run, true, "momentum");
}

#[test]
fn adam_with_clipping_and_decay_joins_to_the_one_process_machine() {
    let config = AdamConfig::new()
        .with_weight_decay(Some(WeightDecayConfig::new(1e-2)))
        .with_grad_clipping(Some(GradientClippingConfig::Norm(0.05)));
    let run = Run::toy(6, 8, 10, 9).with(Optim::Adam(config), 10, 0.02);
    check_run(run, false, "adam");
}

/// The boundaries carry real weight: dropping them (each stretch alone) misses the machine.
#[test]
fn without_the_boundaries_momentum_stretches_do_not_add_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = momentum_run(dir.path(), 10, 8);
    let options = ReplayOptions::default();
    let reader = StoreReader::open(&path).unwrap();
    let points = reader.eval().unwrap().len();
    let plan = Plan::with_stretches(2, 2, reader.steps(), points).unwrap();
    let mut parts = tiles(&path, plan, &options);
    let whole = one_process(&path, &options);
    let joined = reduce(parts.clone()).unwrap();
    assert!(gap(&joined.attributions, &whole.attributions) <= BOUND);
    for p in &mut parts {
        p.boundary = None;
    }
    let cut = reduce(parts).unwrap();
    let missed = gap(&cut.prediction(), &whole.network);
    assert!(
        missed > 1e-6,
        "the later steps' momentum moved the first stretch: {missed:e}"
    );
}

/// Tiles kept in the store and read back join the same, in whatever order; a missing tile, a
/// torn record and another job's tile are refused with the reason.
#[test]
fn partials_in_the_store_round_trip_and_bad_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = momentum_run(dir.path(), 10, 6);
    let options = ReplayOptions::default();
    let reader = StoreReader::open(&path).unwrap();
    let points = reader.eval().unwrap().len();
    let plan = Plan::new(3, reader.steps(), points).unwrap();
    assert_eq!((plan.stretches, plan.blocks), (3, 1), "steps are cut first");
    let parts = tiles(&path, plan, &options);
    for p in parts.iter().rev() {
        write_partial(&path, "check", p).unwrap();
    }
    let back = read_partials(&path, "check").unwrap();
    let (a, b) = (reduce(back).unwrap(), reduce(parts.clone()).unwrap());
    assert_eq!(a.attributions, b.attributions, "the same to the bit");
    // The store still opens, and the partials are a Zarr group beside the run.
    StoreReader::open(&path).unwrap();
    assert!(path.join("partials/check/zarr.json").exists());

    let err = reduce(parts[..2].to_vec()).unwrap_err().to_string();
    assert!(err.contains("missing [2]"), "{err}");

    let other = Job::new(&reader, points - 1, &options, plan);
    let mut stranger = parts[0].clone();
    stranger.job = other;
    let err = write_partial(&path, "check", &stranger)
        .unwrap_err()
        .to_string();
    assert!(err.contains("another job"), "{err}");

    let file = path.join("partials/check/tile-0001-of-0003.bin");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    let err = read_partials(&path, "check").unwrap_err().to_string();
    assert!(
        err.contains("tile-0001-of-0003.bin") && err.contains("not a whole tile"),
        "{err}"
    );
}

/// The command line: three shards (one found through $JOB_COMPLETION_INDEX, as a Kubernetes
/// Indexed Job sets it), then `reduce`, report what `verify` reports for the same job.
#[test]
fn shard_and_reduce_on_the_command_line_report_what_verify_reports() {
    use std::process::Command;
    let dir = tempfile::tempdir().unwrap();
    let path = momentum_run(dir.path(), 10, 6);
    let replay = common::built("replay");
    let store = path.to_str().unwrap();
    for i in 0..3 {
        let mut cmd = Command::new(&replay);
        cmd.args(["shard", store, "--count", "3", "--points", "5", "--quiet"]);
        if i == 1 {
            cmd.env("JOB_COMPLETION_INDEX", "1");
        } else {
            cmd.args(["--index", &i.to_string()]);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            said.contains(&format!("tile {i} of 3: steps {}..{}", 2 * i, 2 * i + 2)),
            "{said}"
        );
    }
    let json = |args: &[&str]| -> serde_json::Value {
        let out = Command::new(&replay).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let joined = json(&["reduce", store, "--json"]);
    let whole = json(&["verify", store, "--points", "5", "--json"]);
    assert_eq!(joined["passed"], true);
    for key in [
        "points",
        "steps",
        "total_evals",
        "max_certificate",
        "worst_step",
    ] {
        assert_eq!(joined[key], whole[key], "{key}");
    }
    let (a, b) = (
        joined["max_abs_error"].as_f64().unwrap(),
        whole["max_abs_error"].as_f64().unwrap(),
    );
    assert!((a - b).abs() <= 1e-14, "machine errors {a:e} and {b:e}");

    // A missing tile and a wrong index are refused with the reason, exit 2.
    std::fs::remove_file(path.join("partials/verify/tile-0002-of-0003.bin")).unwrap();
    let out = Command::new(&replay)
        .args(["reduce", store])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing [2]"));
    let out = Command::new(&replay)
        .args(["shard", store, "--index", "3", "--count", "3"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("below the count"));
}

/// For momentum or Adam, a stretch keeps H (samples seen × P × 8 bytes; the last stretch none):
/// when the stretches' H would pass the budget, the plan keeps one stretch and cuts points;
/// plain runs cut steps whatever the budget.
#[test]
fn plans_cut_points_when_stateful_stretches_would_not_fit() {
    let dir = tempfile::tempdir().unwrap();
    let (mom, gd) = (dir.path().join("mom.zarr"), dir.path().join("gd.zarr"));
    let momentum = SgdConfig::new().with_momentum(Some(MomentumConfig::new()));
    Run::toy(6, 8, 20, 6)
        .with(Optim::Sgd(momentum), 10, 0.2)
        .record(&mom);
    Run::toy(6, 8, 20, 6)
        .with(Optim::Sgd(SgdConfig::new()), 10, 0.2)
        .record(&gd);
    let (mom, gd) = (
        StoreReader::open(&mom).unwrap(),
        StoreReader::open(&gd).unwrap(),
    );
    let bytes = |s| epk::replay::shard::stretch_bytes(&mom, s).unwrap();
    let p = mom.attrs().num_params as u64 * 8;
    // 6 steps of 10 over 60 samples, one epoch: a stretch of 4 sees 2 steps' 20 samples, of 2
    // sees 30, and a single stretch ends the run and keeps nothing.
    assert_eq!((bytes(4), bytes(2), bytes(1)), (20 * p, 30 * p, 0));
    let plan = |r: &StoreReader, points, budget| Plan::for_store(4, r, points, budget).unwrap();
    assert_eq!(
        plan(&mom, 12, bytes(4)),
        Plan {
            stretches: 4,
            blocks: 1
        }
    );
    assert_eq!(
        plan(&mom, 12, bytes(4) - 1),
        Plan {
            stretches: 1,
            blocks: 4
        }
    );
    assert_eq!(
        plan(&mom, 3, 1),
        Plan {
            stretches: 4,
            blocks: 1
        },
        "too few points to cut"
    );
    assert_eq!(
        plan(&gd, 12, 1),
        Plan {
            stretches: 4,
            blocks: 1
        },
        "plain runs keep no H"
    );
}

/// `replay verify --adjoint-memory`: a budget below one point's arrays replays a momentum run's
/// points one block each (and says so), and still verifies; a size of zero is a clear error.
#[test]
fn verify_replays_points_in_blocks_within_the_adjoint_memory_flag() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.zarr");
    let config = SgdConfig::new().with_momentum(Some(MomentumConfig::new()));
    Run::toy(6, 8, 10, 9)
        .with(Optim::Sgd(config), 10, 0.2)
        .record(&path);
    let reader = StoreReader::open(&path).unwrap();
    let points = reader.eval().unwrap().len();
    // Blocks hold as many points as fit: room for two and a half points' arrays gives blocks
    // of two points, none over the budget.
    let net = Network::<Mlp>::new(reader.attrs(), &flex_f64().unwrap()).unwrap();
    let per_point = 2 * net.outputs() * net.num_params() * size_of::<f64>();
    let room = |bytes: usize| ReplayOptions {
        adjoint_bytes: bytes,
        ..ReplayOptions::default()
    };
    let blocks = |bytes: usize| point_blocks(&reader, &net, points, &room(bytes)).unwrap();
    assert_eq!(blocks(5 * per_point / 2), points.div_ceil(2));
    assert_eq!(blocks(per_point - 1), points);
    assert_eq!(blocks(points * per_point), 1);
    let verify = |memory: &str| {
        std::process::Command::new(common::built("replay"))
            .arg("verify")
            .arg(&path)
            .args(["--tolerance", "1e-12", "--json", "--adjoint-memory", memory])
            .output()
            .unwrap()
    };
    let report = |out: &std::process::Output| -> serde_json::Value {
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let whole = verify("512MiB");
    let blocked = verify("1KiB");
    for (out, what) in [(&whole, "one block"), (&blocked, "blocks")] {
        assert!(
            out.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(report(out)["max_abs_error"].as_f64().unwrap() <= 1e-12);
    }
    let said = |out: &std::process::Output| String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !said(&whole).contains("blocks of points"),
        "{}",
        said(&whole)
    );
    assert!(
        said(&blocked).contains(&format!("{points} points in {points} blocks of points")),
        "{}",
        said(&blocked)
    );
    let zero = verify("0");
    assert_eq!(zero.status.code(), Some(2));
    assert!(
        said(&zero).contains("not a positive size"),
        "{}",
        said(&zero)
    );
}
