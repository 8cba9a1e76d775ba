//! Every layer kind epk covers, written with Burn's own modules (`common/zoo.rs`): its
//! Jacobian against central finite differences, and a recorded minibatch run whose kernel
//! machine equals the network at 1e-12 with the `auto` rule.
//!
//! Run with `-- --nocapture` for the table of kinds, parameters, errors, evaluations and the
//! Jacobian path (factored linear fast path, or the general per-sample backward passes).

mod common;
#[path = "common/zoo.rs"]
mod zoo;

use burn::optim::SgdConfig;
use burn::optim::momentum::MomentumConfig;
use common::{Optim, Run, blobs};
use epk::recorder::Samples;
use epk::recorder::device::flex_f64;
use epk::replay::jacobian::{Factors, Implementation, Layers};
use epk::replay::kernels::jacobians;
use epk::replay::{Network, ReplayOptions, Rule, VerifyReport, replay};
use epk::store::StoreReader;
use ndarray::Array2;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use zoo::{CLASSES, Kind, VOCAB, Zoo};

/// `n` sequences of 8 token ids whose class is the most frequent of the tokens 0, 1, 2.
fn tokens(n: usize, seed: u64) -> Samples {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut inputs = Vec::with_capacity(8 * n);
    let mut targets = Vec::with_capacity(n);
    for i in 0..n {
        let class = i % CLASSES;
        for p in 0..8 {
            let t = if p < 3 {
                class
            } else {
                (rng.next_u64() % VOCAB as u64) as usize
            };
            inputs.push(t as f64);
        }
        targets.push(class as i64);
    }
    Samples::new(inputs, vec![8], targets).unwrap()
}

/// A run of 8 momentum-SGD steps on minibatches of 12 for `kind`.
fn run(kind: Kind) -> Run {
    let mut run = Run::toy(4, 4, 4, 8).with(
        Optim::Sgd(SgdConfig::new().with_momentum(Some(MomentumConfig::new()))),
        12,
        0.1,
    );
    run.loss = epk::recorder::Loss::CrossEntropy;
    (run.train, run.eval) = match kind {
        Kind::Embedding => (tokens(36, 1), tokens(4, 2)),
        _ => (blobs(36, 32, CLASSES, 1), blobs(4, 32, CLASSES, 2)),
    };
    run
}

/// The fast path (probed linear layers and convolutions, factored gradients) against the
/// general path (one backward pass per sample and output) on the same store: per-sample
/// gradients and their norms, Jacobians, and the replayed machine's attributions.
fn fast_equals_general(
    net: &Network<Zoo>,
    reader: &StoreReader,
    w: &[f64],
    xs: &[f64],
    machine: &epk::replay::KernelMachine,
) {
    let general = net.clone().general();
    let layers = net.layers().expect("fast path");
    let train = reader.train().unwrap();
    let samples = train.gather(&[0, 5, 9, 17]);
    let c: Vec<f64> = (0..4 * CLASSES).map(|i| (i as f64 - 5.0) / 3.0).collect();
    let f = net.factors(w, &samples, &c);
    let dense = general.sample_grads(w, &samples, &c);
    let p = w.len();
    let scale = 1.0 + dense.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    // The same factors with each convolution's positions summed into per-sample blocks, as
    // `auto` holds its Jacobian evaluations.
    // Blocked in place, or while samples 1.. are selected (their index r − 1 there).
    let mut blocked = f.clone();
    layers.block_convolutions(&mut blocked);
    let selected = layers.select_blocked(&f, 1, f.rows() - 1);
    let v: Vec<f64> = (0..p).map(|i| ((i * 7 % 11) as f64 - 5.0) / 5.0).collect();
    for factors in [&f, &blocked] {
        rows_against_equal_formed(layers, factors, &dense, p, scale);
    }
    let dots = [layers.dot(&f, &v).0, layers.dot(&blocked, &v).0];
    let selected_dots = layers.dot(&selected, &v).0;
    for (r, norm) in layers.norms(&f).iter().enumerate() {
        let want = &dense[r * p..(r + 1) * p];
        if r > 0 {
            let mut row = vec![0.0; p];
            layers.add_dense(&selected, r - 1, 1.0, &mut row);
            let gap = row
                .iter()
                .zip(want)
                .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
            assert!(gap < 1e-13 * scale, "selected sample {r}: {gap:e}");
            let dot: f64 = want.iter().zip(&v).map(|(a, b)| a * b).sum();
            assert!(
                (selected_dots[r - 1] - dot).abs() < 1e-12 * scale,
                "selected dot {r}"
            );
        }
        for factors in [&f, &blocked] {
            let mut row = vec![0.0; p];
            layers.add_dense(factors, r, 1.0, &mut row);
            let gap = row
                .iter()
                .zip(want)
                .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
            assert!(gap < 1e-13 * scale, "per-sample gradient {r}: {gap:e}");
        }
        let want_norm = want.iter().map(|v| v * v).sum::<f64>().sqrt();
        assert!((norm - want_norm).abs() < 1e-13 * scale, "norm {r}");
        let dot: f64 = want.iter().zip(&v).map(|(a, b)| a * b).sum();
        for d in &dots {
            assert!((d[r] - dot).abs() < 1e-12 * scale, "dot {r}");
        }
    }
    // One input's Jacobian (its rows share the layer inputs, dotted once per layer) along v,
    // and the size of that sum, against the dense rows.
    let x = &xs[..net.input_len()];
    let (jv, size) = net.implementation().node(net, w, x).dot(&v, CLASSES);
    let dense_j = general.implementation().node(&general, w, x);
    let (want_jv, want_size) = dense_j.dot(&v, CLASSES);
    for (a, b) in jv.iter().zip(&want_jv) {
        assert!((a - b).abs() < 1e-12 * scale, "J·v: {a} against {b}");
    }
    // Exactly Σ|J v| on linear layers; a convolution's positions only bound it from above.
    assert!(
        size >= want_size * (1.0 - 1e-12),
        "size {size} below {want_size}"
    );
    let fast_j = jacobians(net, w, xs);
    let general_j = jacobians(&general, w, xs);
    let gap = (&fast_j - &general_j)
        .iter()
        .fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(gap < 1e-13 * scale, "Jacobians differ by {gap:e}");
    let options = ReplayOptions {
        rule: Rule::Auto,
        ..ReplayOptions::default()
    };
    let other = replay(reader, &general, xs, &options, |_| {}).unwrap();
    // The adjoint meeting the samples' factors instead of their formed gradients.
    let factored = ReplayOptions {
        gradient_bytes: 0,
        ..options
    };
    let factored = replay(reader, net, xs, &factored, |_| {}).unwrap();
    let size = machine
        .attributions
        .iter()
        .fold(0.0f64, |m, v| m.max(v.abs()));
    for (mine, what) in [(machine, "formed"), (&factored, "factored")] {
        let gap = (&mine.attributions - &other.attributions)
            .iter()
            .fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(
            gap < 1e-12 * size.max(1.0),
            "attributions ({what} gradients) differ by {gap:e}"
        );
    }
}

/// Rows `[3, P]` against the samples' factors (a convolution's positions apart, or summed in
/// blocks) equal the rows against the general path's formed gradients `dense` `[n, P]`.
fn rows_against_equal_formed(layers: &Layers, f: &Factors, dense: &[f64], p: usize, scale: f64) {
    let rows = Array2::from_shape_fn((3, p), |(r, i)| ((i * (r + 3) % 13) as f64 - 6.0) / 4.0);
    let got = layers.rows_against(f, rows.view(), 2);
    let g = Array2::from_shape_vec((dense.len() / p, p), dense.to_vec()).unwrap();
    let want = rows.dot(&g.t());
    let gap = (&got - &want).iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(
        gap < 1e-15 * scale * p as f64,
        "rows against factors: {gap:e}"
    );
}

/// max |J − FD| / (1 + max |J|) over every output and weight, with central differences.
fn gradient_error(net: &Network<Zoo>, w: &[f64], xs: &[f64]) -> f64 {
    let j = jacobians(net, w, xs);
    let h = 1e-5;
    let scale = 1.0 + j.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let mut worst = 0.0f64;
    let mut moved = w.to_vec();
    for p in 0..w.len() {
        moved[p] = w[p] + h;
        let up = net.forward(&moved, xs);
        moved[p] = w[p] - h;
        let down = net.forward(&moved, xs);
        moved[p] = w[p];
        for (r, (u, d)) in up.iter().zip(&down).enumerate() {
            worst = worst.max(((u - d) / (2.0 * h) - j[[r, p]]).abs() / scale);
        }
    }
    worst
}

#[test]
fn every_layer_kind_has_exact_gradients_and_a_verified_machine() {
    let device = flex_f64().unwrap();
    println!("| layer | P | gradient vs FD | machine error | evals/step/point | Jacobian path |");
    println!("|---|---|---|---|---|---|");
    for kind in Kind::ALL {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("zoo.zarr");
        run(kind)
            .try_record_model::<Zoo>(&kind, &path)
            .unwrap()
            .finish()
            .unwrap();
        let reader = StoreReader::open(&path).unwrap();
        let net = Network::<Zoo>::new(reader.attrs(), &device).unwrap();
        let eval = reader.eval().unwrap();
        let len = kind.input_len();
        let w = reader.weights(reader.steps()).unwrap();
        let options = ReplayOptions {
            rule: Rule::Auto,
            ..ReplayOptions::default()
        };
        if kind == Kind::RmsNorm {
            // burn-nn 0.22 computes the RMS in f32: replay refuses the network up front.
            let error = replay(&reader, &net, &eval.inputs, &options, |_| {})
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(error.contains("not a float64-smooth function"), "{error}");
            println!("| {kind:?} | {} | refused: RMS in f32 | | | |", w.len());
            continue;
        }
        let fd = gradient_error(&net, &w, &eval.inputs[..2 * len]);
        assert!(fd < 1e-7, "{kind:?}: Jacobian differs from FD by {fd:e}");
        let machine = replay(&reader, &net, &eval.inputs, &options, |_| {}).unwrap();
        let report = VerifyReport::new(&machine, Rule::Auto, 1e-12, true, 0.0);
        assert!(report.passed, "{kind:?}:\n{}", report.table());
        let path = match net.implementation() {
            Implementation::Linear(_) => {
                fast_equals_general(&net, &reader, &w, &eval.inputs, &machine);
                "fast path"
            }
            Implementation::Dense => "general",
        };
        println!(
            "| {kind:?} | {} | {fd:.1e} | {:.1e} | {:.2} | {path} |",
            w.len(),
            report.max_abs_error,
            report.evals_per_step_per_point
        );
    }
}
