//! Momentum, weight decay, Adam, AdamW and gradient clipping decomposed into per-training-point
//! terms, checked against updates computed by hand on softmax regression, and the toy MLP with
//! minibatches verified to 1e-12.

mod common;

use burn::grad_clipping::GradientClippingConfig;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamConfig, AdamWConfig, SgdConfig};
use common::{Optim, Run, machine_for};
use epk::recorder::device::flex_f64;
use epk::recorder::models::Mlp;
use epk::replay::{Network, ReplayOptions, Rule, VerifyReport, replay};
use epk::store::StoreReader;

/// An optimizer written out by hand from its textbook formulas, tracking each training
/// sample's share of the momentum buffer separately (fine on 30 samples; replay never does
/// this). Hyper-parameters are passed already rounded as burn-optim holds them.
#[derive(Clone, Copy)]
enum Hand {
    /// (momentum, dampening, nesterov, coupled decay, clip norm)
    Sgd(f64, f64, bool, f64, Option<f64>),
    /// (β1, β2, ε, coupled decay, clip value)
    Adam(f32, f32, f32, f64, Option<f64>),
    /// (β1, β2, ε, decoupled decay)
    AdamW(f32, f32, f32, f64),
}

/// Replays `run` by hand on softmax regression: per step, the gradient in closed form at the
/// recorded weights, the optimizer by hand, and each sample's attribution
/// A[x, i, o] = Σ_s J(x)_o · Δw_s^(i) with the constant Jacobian J(x)_o = (x ⊗ e_o, e_o).
/// Returns the hand attributions `[eval, train, k]` and non-data terms `[eval, k]`, and
/// checks the hand update against the recorded weights.
fn by_hand(run: &Run, reader: &StoreReader, hand: Hand, update_tol: f64) -> (Vec<f64>, Vec<f64>) {
    let (dim, k) = (run.config.sizes[0], run.config.sizes[1]);
    let layout = &reader.attrs().params;
    let find = |name: &str| layout.iter().find(|p| p.path.ends_with(name)).unwrap();
    let (wl, bl) = (find("weight").clone(), find("bias").clone());
    let p = reader.attrs().num_params;
    let n = run.train.len();
    let m = run.eval.len();
    // Index of W[d, o] and b[o] in the flat vector.
    let wi = |d: usize, o: usize| wl.offset + d * k + o;
    let bi = |o: usize| bl.offset + o;
    let jdot = |x: &[f64], o: usize, v: &[f64]| -> f64 {
        v[bi(o)] + (0..dim).map(|d| x[d] * v[wi(d, o)]).sum::<f64>()
    };
    // Per-sample buffers, and the non-data buffer.
    let mut mi = vec![vec![0.0; p]; n];
    let mut mnd = vec![0.0; p];
    let mut v2 = vec![0.0; p];
    let mut attributions = vec![0.0; m * n * k];
    let mut nondata = vec![0.0; m * k];
    let mut clipped = false;
    for (s, batch) in run.batches().iter().enumerate() {
        let w = reader.weights(s).unwrap();
        let lr = run.lr;
        let mut gi = vec![vec![0.0; p]; n];
        for &i in batch {
            let x = run.train.input(i);
            let z: Vec<f64> = (0..k)
                .map(|o| w[bi(o)] + (0..dim).map(|d| x[d] * w[wi(d, o)]).sum::<f64>())
                .collect();
            let zmax = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = z.iter().map(|v| (v - zmax).exp()).collect();
            let sum: f64 = e.iter().sum();
            for o in 0..k {
                let y = f64::from(u8::from(run.train.targets[i] as usize == o));
                let dl = (e[o] / sum - y) / batch.len() as f64;
                gi[i][bi(o)] = dl;
                for d in 0..dim {
                    gi[i][wi(d, o)] = dl * x[d];
                }
            }
        }
        let g: Vec<f64> = (0..p).map(|j| gi.iter().map(|g| g[j]).sum()).collect();
        // Clipping factors, per parameter tensor.
        let mut c = vec![1.0; p];
        match hand {
            Hand::Sgd(.., Some(max)) => {
                for t in [&wl, &bl] {
                    let r = t.offset..t.offset + t.len;
                    let norm = g[r.clone()].iter().map(|v| v * v).sum::<f64>().sqrt();
                    c[r].fill((max / norm).min(1.0));
                }
            }
            Hand::Adam(.., Some(v)) => {
                for j in 0..p {
                    if g[j].abs() > v {
                        c[j] = v / g[j].abs();
                    }
                }
            }
            _ => {}
        }
        clipped |= c.iter().any(|&v| v < 1.0);
        let first = s == 0;
        // Δw split: per sample (data) and the rest (decay).
        let mut dwi = vec![vec![0.0; p]; n];
        let mut dwnd = vec![0.0; p];
        let adam = match hand {
            Hand::Adam(b1, b2, eps, lambda, _) => Some((b1, b2, eps, lambda, 0.0)),
            Hand::AdamW(b1, b2, eps, lambda) => Some((b1, b2, eps, 0.0, lambda)),
            Hand::Sgd(..) => None,
        };
        if let Hand::Sgd(mu, damp, nesterov, lambda, _) = hand {
            let (keep, take) = if first { (0.0, 1.0) } else { (mu, 1.0 - damp) };
            for j in 0..p {
                for i in 0..n {
                    let gp = c[j] * gi[i][j];
                    mi[i][j] = keep * mi[i][j] + take * gp;
                    let u = if nesterov {
                        mu * mi[i][j] + gp
                    } else {
                        mi[i][j]
                    };
                    dwi[i][j] = -lr * u;
                }
                let gp = lambda * w[j];
                mnd[j] = keep * mnd[j] + take * gp;
                let u = if nesterov { mu * mnd[j] + gp } else { mnd[j] };
                dwnd[j] = -lr * u;
            }
        }
        if let Some((b1, b2, eps, coupled, decoupled)) = adam {
            let t = (s + 1) as i32;
            let c1 = (1.0f32 - b1.powi(t)) as f64;
            let c2 = (1.0f32 - b2.powi(t)) as f64;
            let (f1, f2) = ((1.0f32 - b1) as f64, (1.0f32 - b2) as f64);
            let (b1, b2, eps) = (b1 as f64, b2 as f64, eps as f64);
            // Adam folds ε into its bias correction: ε·√(1 − β2^t) against √v, which is
            // ε against √v̂ as AdamW writes it, up to f32 rounding of the product.
            let adam_eps = matches!(hand, Hand::Adam(..)).then(|| {
                let bc2 = (1.0f32 - (b2 as f32).powi(t)).sqrt();
                (
                    (eps as f32 * bc2) as f64,
                    (bc2 / (1.0f32 - (b1 as f32).powi(t))) as f64,
                )
            });
            for j in 0..p {
                let total = c[j] * g[j] + coupled * w[j];
                v2[j] = if first { 0.0 } else { b2 * v2[j] } + f2 * total * total;
                let d = match adam_eps {
                    Some((e, combined)) => combined / (v2[j].sqrt() + e),
                    None => 1.0 / c1 / ((v2[j] / c2).sqrt() + eps),
                };
                for i in 0..n {
                    mi[i][j] = if first { 0.0 } else { b1 * mi[i][j] } + f1 * c[j] * gi[i][j];
                    dwi[i][j] = -lr * d * mi[i][j];
                }
                mnd[j] = if first { 0.0 } else { b1 * mnd[j] } + f1 * coupled * w[j];
                dwnd[j] = -lr * d * mnd[j] - lr * decoupled * w[j];
            }
        }
        // The hand update is the recorded one.
        let next = reader.weights(s + 1).unwrap();
        for j in 0..p {
            let dw: f64 = dwnd[j] + dwi.iter().map(|d| d[j]).sum::<f64>();
            assert!(
                ((next[j] - w[j]) - dw).abs() < update_tol,
                "step {s}, weight {j}: recorded Δw {} vs hand {dw}",
                next[j] - w[j]
            );
        }
        for t in 0..m {
            let x = run.eval.input(t);
            for o in 0..k {
                nondata[t * k + o] += jdot(x, o, &dwnd);
                for i in 0..n {
                    attributions[(t * n + i) * k + o] += jdot(x, o, &dwi[i]);
                }
            }
        }
    }
    let clipping = matches!(hand, Hand::Sgd(.., Some(_)) | Hand::Adam(.., Some(_)));
    assert_eq!(
        clipped, clipping,
        "clipping is active exactly when configured"
    );
    (attributions, nondata)
}

fn assert_matches_hand(run: Run, hand: Hand) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.zarr");
    run.record(&path);
    let (reader, machine) = machine_for(&path, Rule::Left(1));
    let (attributions, nondata) = by_hand(&run, &reader, hand, 1e-14);
    let scale = attributions.iter().fold(0.0f64, |a, v| a.max(v.abs()));
    let worst = machine
        .attributions
        .iter()
        .zip(&attributions)
        .fold(0.0f64, |a, (x, y)| a.max((x - y).abs()));
    assert!(scale > 1e-3, "attributions are not trivially zero");
    assert!(
        worst < 1e-13,
        "attributions differ from the hand computation by {worst:e}"
    );
    let worst_nd = machine
        .nondata
        .iter()
        .zip(&nondata)
        .fold(0.0f64, |a, (x, y)| a.max((x - y).abs()));
    assert!(worst_nd < 1e-13, "non-data terms differ by {worst_nd:e}");
    let report = VerifyReport::new(&machine, Rule::Left(1), 1e-12, true, 0.0);
    assert!(report.passed, "{}", report.table());
    assert!(report.max_decomposition_residual < 1e-14);
}

fn clip_norm(v: f32) -> Option<GradientClippingConfig> {
    Some(GradientClippingConfig::Norm(v))
}

#[test]
fn sgd_nesterov_momentum_with_decay_and_norm_clipping_matches_the_hand_update() {
    let config = SgdConfig::new()
        .with_momentum(Some(
            MomentumConfig::new()
                .with_momentum(0.9)
                .with_dampening(0.0)
                .with_nesterov(true),
        ))
        .with_weight_decay(Some(WeightDecayConfig::new(0.01)))
        .with_gradient_clipping(clip_norm(0.05));
    let run = Run::linear(4, 3, 12, 0.2).with(Optim::Sgd(config), 8, 0.2);
    // Burn holds momentum and decay as f32.
    let hand = Hand::Sgd(
        0.9f32 as f64,
        0.0,
        true,
        0.01f32 as f64,
        Some(0.05f32 as f64),
    );
    assert_matches_hand(run, hand);
}

#[test]
fn sgd_momentum_with_dampening_matches_the_hand_update() {
    let config = SgdConfig::new().with_momentum(Some(MomentumConfig::new()));
    let run = Run::linear(4, 3, 12, 0.3).with(Optim::Sgd(config), 7, 0.3);
    assert_matches_hand(run, Hand::Sgd(0.9f32 as f64, 0.1, false, 0.0, None));
}

#[test]
fn adam_with_coupled_decay_and_value_clipping_matches_the_hand_update() {
    let config = AdamConfig::new()
        .with_weight_decay(Some(WeightDecayConfig::new(0.02)))
        .with_grad_clipping(Some(GradientClippingConfig::Value(0.02)));
    let run = Run::linear(4, 3, 12, 0.05).with(Optim::Adam(config), 10, 0.05);
    let hand = Hand::Adam(0.9, 0.999, 1e-5, 0.02f32 as f64, Some(0.02f32 as f64));
    assert_matches_hand(run, hand);
}

#[test]
fn adamw_matches_the_hand_update() {
    let config = AdamWConfig::new().with_weight_decay(0.1);
    let run = Run::linear(4, 3, 12, 0.05).with(Optim::AdamW(config), 10, 0.05);
    assert_matches_hand(run, Hand::AdamW(0.9, 0.999, 1e-5, 0.1f32 as f64));
}

/// Replicating burn-optim to the rounding matters: the f64 literal 0.9 instead of 0.9f32
/// moves the updates by far more than 1e-12.
#[test]
fn f64_hyper_parameters_would_break_the_decomposition() {
    let config = SgdConfig::new().with_momentum(Some(MomentumConfig::new().with_dampening(0.0)));
    let run = Run::linear(4, 3, 6, 0.3).with(Optim::Sgd(config), 10, 0.3);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.zarr");
    run.record(&path);
    let reader = StoreReader::open(&path).unwrap();
    let wrong = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        by_hand(&run, &reader, Hand::Sgd(0.9, 0.0, false, 0.0, None), 1e-12)
    }));
    assert!(wrong.is_err(), "0.9 (f64) must not reproduce Burn's 0.9f32");
    by_hand(
        &run,
        &reader,
        Hand::Sgd(0.9f32 as f64, 0.0, false, 0.0, None),
        1e-14,
    );
}

/// The paper's toy in miniature with shuffled minibatches: the adaptive rule verifies at 1e-12.
fn toy_verifies(optim: Optim, batch: usize, lr: f64) -> VerifyReport {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("toy.zarr");
    let run = Run::toy(10, 16, 20, 24).with(optim, batch, lr);
    run.record(&path);
    let (_, machine) = machine_for(&path, Rule::Auto);
    let report = VerifyReport::new(&machine, Rule::Auto, 1e-12, true, 0.0);
    assert!(report.passed, "{}", report.table());
    // The left rule leaves an error that the check catches.
    let (_, left) = self::machine_for(&path, Rule::Left(4));
    assert!(
        left.max_error() > 1e-9,
        "left:4 error {:e}",
        left.max_error()
    );
    report
}

#[test]
fn toy_with_minibatch_momentum_and_decay_verifies() {
    let config = SgdConfig::new()
        .with_momentum(Some(MomentumConfig::new()))
        .with_weight_decay(Some(WeightDecayConfig::new(1e-3)));
    let report = toy_verifies(Optim::Sgd(config), 16, 0.2);
    assert!(
        report.max_nondata_share > 0.0,
        "weight decay is a non-data term"
    );
}

#[test]
fn toy_with_minibatch_adam_verifies() {
    toy_verifies(Optim::Adam(AdamConfig::new()), 16, 0.01);
}

/// Splitting the attributions by parameter tensor loses nothing: the parts add up to the
/// whole, on the stateful (momentum) path and on plain gradient descent.
#[test]
fn per_tensor_split_adds_up_to_the_attributions() {
    for optim in [
        Optim::Sgd(SgdConfig::new().with_momentum(Some(MomentumConfig::new()))),
        Optim::Sgd(SgdConfig::new()),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("toy.zarr");
        let run = Run::toy(6, 8, 10, 6).with(optim, 10, 0.2);
        run.record(&path);
        let reader = StoreReader::open(&path).unwrap();
        let device = flex_f64().unwrap();
        let net = Network::<Mlp>::new(reader.attrs(), &device).unwrap();
        let eval = reader.eval().unwrap();
        let groups: Vec<_> = reader
            .attrs()
            .params
            .iter()
            .map(|p| p.offset..p.offset + p.len)
            .collect();
        let options = ReplayOptions {
            groups,
            ..ReplayOptions::default()
        };
        let m = replay(&reader, &net, &eval.inputs, &options, |_| {}).unwrap();
        let parts = m.group_attributions.as_ref().unwrap();
        assert_eq!(parts.shape()[0], 4, "two weights, two biases");
        let summed = parts.sum_axis(ndarray::Axis(0));
        let worst = (&summed - &m.attributions)
            .iter()
            .fold(0.0f64, |a, v| a.max(v.abs()));
        assert!(worst < 1e-13, "parts differ from the whole by {worst:e}");
        // Every layer takes part: no group is identically zero.
        for q in 0..4 {
            assert!(
                parts
                    .index_axis(ndarray::Axis(0), q)
                    .iter()
                    .any(|v| v.abs() > 1e-9)
            );
        }
        assert!(m.max_error() < 1e-12);
    }
}
