//! The kernel machine against independent truth.

mod common;

use common::{Run, machine_for};
use epk::recorder::models::{Mlp, MlpConfig};
use epk::recorder::{device::flex_f64, params};
use epk::replay::{Network, ReplayOptions, Rule, VerifyReport, replay};
use epk::store::StoreReader;

/// Softmax regression (no hidden layer) has a constant Jacobian, so its path kernel is
/// K(x, x') = (x·x' + 1) per output, and with gradient descent trained here by hand,
/// A[x, i, k] = Σ_s −η (p_k(x_i; w_s) − y_ik) / N · (x·x_i + 1).
#[test]
fn linear_model_matches_its_closed_form_kernel_machine() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("linear.zarr");
    let (dim, k) = (4, 3);
    let run = Run::linear(dim, k, 15, 0.3);
    run.record(&path);
    let (reader, machine) = machine_for(&path, Rule::Left(1));

    // Gradient descent by hand from the recorded initial weights.
    let layout = &reader.attrs().params;
    let w0 = reader.weights(0).unwrap();
    let find = |name: &str| layout.iter().find(|p| p.path.ends_with(name)).unwrap();
    let (wl, bl) = (find("weight"), find("bias"));
    assert_eq!(
        wl.shape,
        vec![dim, k],
        "Burn's Linear stores W as [in, out]"
    );
    let mut w: Vec<f64> = w0[wl.offset..wl.offset + wl.len].to_vec();
    let mut b: Vec<f64> = w0[bl.offset..bl.offset + bl.len].to_vec();
    let n = run.train.len();
    let logits = |w: &[f64], b: &[f64], x: &[f64]| -> Vec<f64> {
        (0..k)
            .map(|o| b[o] + (0..dim).map(|d| x[d] * w[d * k + o]).sum::<f64>())
            .collect()
    };
    let softmax = |z: Vec<f64>| -> Vec<f64> {
        let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = z.iter().map(|v| (v - m).exp()).collect();
        let s: f64 = e.iter().sum();
        e.into_iter().map(|v| v / s).collect()
    };
    let m = run.eval.len();
    let mut expected = vec![0.0; m * n * k];
    for s in 0..run.steps {
        let mut gw = vec![0.0; dim * k];
        let mut gb = vec![0.0; k];
        for i in 0..n {
            let xi = run.train.input(i);
            let p = softmax(logits(&w, &b, xi));
            for o in 0..k {
                let y = if run.train.targets[i] as usize == o {
                    1.0
                } else {
                    0.0
                };
                let dl = (p[o] - y) / n as f64;
                gb[o] += dl;
                for d in 0..dim {
                    gw[d * k + o] += dl * xi[d];
                }
                for t in 0..m {
                    let x = run.eval.input(t);
                    let kern: f64 = 1.0 + (0..dim).map(|d| x[d] * xi[d]).sum::<f64>();
                    expected[(t * n + i) * k + o] += -run.lr * dl * kern;
                }
            }
        }
        for (w, g) in w.iter_mut().zip(&gw) {
            *w -= run.lr * g;
        }
        for (b, g) in b.iter_mut().zip(&gb) {
            *b -= run.lr * g;
        }
        let recorded = reader.weights(s + 1).unwrap();
        for (a, e) in recorded[wl.offset..wl.offset + wl.len].iter().zip(&w) {
            assert!(
                (a - e).abs() < 1e-13,
                "step {s}: weight {a} vs hand-computed {e}"
            );
        }
    }
    let got = machine.attributions.as_slice().unwrap();
    let worst = got
        .iter()
        .zip(&expected)
        .map(|(a, e)| (a - e).abs())
        .fold(0.0, f64::max);
    assert!(
        worst < 1e-13,
        "attributions differ from the closed form by {worst:e}"
    );
    assert!(
        machine.max_error() < 1e-12,
        "machine error {:e}",
        machine.max_error()
    );
    // A linear model's Jacobian is constant: even the one-point left rule is exact.
    assert!(machine.steps.iter().all(|s| s.certificate < 1e-13));
    assert!(
        machine.constant_coefficients.is_none(),
        "cross-entropy on logits: a_i varies"
    );
}

/// The paper's toy in miniature: the adaptive rule verifies at 1e-12, the paper's Riemann
/// sums do not, and Theorem 3.7's single kernel reproduces the same prediction.
#[test]
fn toy_verifies_with_auto_and_not_with_riemann() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("toy.zarr");
    Run::toy(10, 16, 20, 25).record(&path);

    let (_, machine) = machine_for(&path, Rule::Auto);
    let report = VerifyReport::new(&machine, Rule::Auto, 1e-12, true, 0.0);
    assert!(report.passed, "{}", report.table());
    // Two orders must agree on Jbar itself: orders 2, 3, 4 and 6 on a log-softmax piece.
    assert!(
        report.evals_per_step_per_point <= 16.0,
        "{}",
        report.table()
    );
    assert!(
        report.bias_constant,
        "zero last layer: b(x) is the same for every x"
    );
    // Some unit must switch inside a step for this test to mean anything.
    assert!(
        report.mean_pieces_per_step_per_point > 1.0,
        "{}",
        report.table()
    );

    // Theorem 3.7: a_i is constant, and b + Σ_i a_i K(x, x_i) is the network.
    let a = machine
        .constant_coefficients
        .clone()
        .expect("NLL on log-softmax: constant a_i");
    let kernel = machine.single_kernel().unwrap();
    for x in 0..machine.network.nrows() {
        for o in 0..3 {
            let pred: f64 =
                machine.bias[[x, o]] + (0..a.len()).map(|i| a[i] * kernel[[x, i, o]]).sum::<f64>();
            assert!((pred - machine.network[[x, o]]).abs() < 1e-12);
        }
    }

    let (_, riemann) = machine_for(&path, Rule::Left(100));
    let report = VerifyReport::new(&riemann, Rule::Left(100), 1e-12, true, 0.0);
    assert!(!report.passed);
    assert!(
        report.failures[0].contains("left:100"),
        "{:?}",
        report.failures
    );
    assert!(
        report.max_abs_error > 1e-9,
        "left:100 should be visibly inexact"
    );
}

/// Changing one weight of one step breaks the decomposition: verify must fail.
#[test]
fn tampered_store_fails_verification() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("toy.zarr");
    Run::toy(6, 8, 10, 6).record(&path);
    let (_, clean) = machine_for(&path, Rule::Auto);
    assert!(VerifyReport::new(&clean, Rule::Auto, 1e-12, true, 0.0).passed);

    // Rewrite weights row 3 with one value nudged, through zarrs like any other tool would
    // (zarrs rewrites the whole shard in its own layout, which the reader must still read).
    use std::sync::Arc;
    use zarrs::array::{Array, ArraySubset};
    let store = Arc::new(zarrs::filesystem::FilesystemStore::new(&path).unwrap());
    let array = Array::open(store, "/weights").unwrap();
    let row3 = ArraySubset::new_with_ranges(&[3..4, 0..array.shape()[1]]);
    let mut row: Vec<f64> = array.retrieve_array_subset(&row3).unwrap();
    row[5] += 1e-6;
    array.store_array_subset(&row3, &row[..]).unwrap();

    let (_, tampered) = machine_for(&path, Rule::Auto);
    let report = VerifyReport::new(&tampered, Rule::Auto, 1e-12, true, 0.0);
    assert!(!report.passed);
    assert!(
        report.failures.iter().any(|f| f.contains("decomposition")),
        "{:?}",
        report.failures
    );
}

/// Jacobians and per-sample gradients against central finite differences.
#[test]
fn gradients_match_finite_differences() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fd.zarr");
    let mut run = Run::toy(5, 7, 4, 3);
    run.config = MlpConfig::new(vec![5, 7, 6, 3]).with_log_softmax(true);
    run.record(&path);
    let reader = StoreReader::open(&path).unwrap();
    let device = flex_f64().unwrap();
    let net = Network::<Mlp>::new(reader.attrs(), &device).unwrap();
    let w = reader.weights(2).unwrap();
    let x = run.eval.input(1).to_vec();
    let j = net.jacobian(&w, &x);
    let (k, p) = (3, w.len());
    let h = 1e-6;
    let mut worst = 0.0f64;
    for q in 0..p {
        let (mut wp, mut wm) = (w.clone(), w.clone());
        wp[q] += h;
        wm[q] -= h;
        let (fp, fm) = (net.forward(&wp, &x), net.forward(&wm, &x));
        for o in 0..k {
            let fd = (fp[o] - fm[o]) / (2.0 * h);
            worst = worst.max((fd - j[o * p + q]).abs() / (1.0 + fd.abs()));
        }
    }
    assert!(worst < 1e-7, "Jacobian vs finite differences: {worst:e}");

    // Weighted per-sample gradients are the Jacobian rows combined.
    let c = [0.3, -1.2, 0.5];
    let g = net.sample_grads(&w, &x, &c);
    for q in 0..p {
        let want: f64 = (0..k).map(|o| c[o] * j[o * p + q]).sum();
        assert!((g[q] - want).abs() < 1e-14 * (1.0 + want.abs()));
    }
    // The layout's flatten order is the store's.
    let model = Mlp::new(&run.config, &device);
    let layout = params::layout(&model);
    assert_eq!(layout, reader.attrs().params);
}

/// The fast path (probed linear layers, factored gradients, Gram contraction) against the
/// general path (one backward pass per sample and output) on the same run.
#[test]
fn fast_path_equals_general_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("toy.zarr");
    let mut run = Run::toy(6, 9, 8, 6);
    run.config = MlpConfig::new(vec![6, 9, 7, 3]).with_log_softmax(true);
    run.record(&path);
    let reader = StoreReader::open(&path).unwrap();
    let device = flex_f64().unwrap();
    let fast = Network::<Mlp>::new(reader.attrs(), &device).unwrap();
    assert!(
        fast.layers().is_some(),
        "an Mlp is all probed linear layers"
    );
    let general = fast.clone().general();
    let eval = reader.eval().unwrap();

    // Factored per-sample gradients and Jacobians equal the per-sample backward passes.
    let w = reader.weights(3).unwrap();
    let train = reader.train().unwrap();
    let xs = train.gather(&[0, 5, 9]);
    let c = [0.5, -1.0, 0.25, 0.0, 2.0, -0.5, 1.0, 1.0, -3.0];
    let layers = fast.layers().unwrap();
    let f = fast.factors(&w, &xs, &c);
    let dense = general.sample_grads(&w, &xs, &c);
    let p = w.len();
    for r in 0..3 {
        let mut row = vec![0.0; p];
        layers.add_dense(&f, r, 1.0, &mut row);
        for (a, b) in row.iter().zip(&dense[r * p..(r + 1) * p]) {
            assert!((a - b).abs() < 1e-14 * (1.0 + b.abs()));
        }
    }
    let jf = fast.jacobian_factors(&w, eval.input(2));
    let jd = general.jacobian(&w, eval.input(2));
    for o in 0..3 {
        let mut row = vec![0.0; p];
        layers.add_dense(&jf, o, 1.0, &mut row);
        for (a, b) in row.iter().zip(&jd[o * p..(o + 1) * p]) {
            assert!((a - b).abs() < 1e-14 * (1.0 + b.abs()));
        }
    }

    let options = ReplayOptions::default();
    let a = replay(&reader, &fast, &eval.inputs, &options, |_| {}).unwrap();
    let b = replay(&reader, &general, &eval.inputs, &options, |_| {}).unwrap();
    let worst = (&a.attributions - &b.attributions)
        .iter()
        .fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(worst < 1e-14, "attributions differ by {worst:e}");
    assert!(a.max_error() < 1e-12 && b.max_error() < 1e-12);
    let evals = |m: &epk::replay::KernelMachine| m.steps.iter().map(|s| s.evals).sum::<usize>();
    assert_eq!(
        evals(&a),
        evals(&b),
        "both paths take the same quadrature decisions"
    );
}
