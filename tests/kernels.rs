//! Tangent kernels against closed forms.

mod common;

use common::Run;
use epk::recorder::device::flex_f64;
use epk::recorder::models::Mlp;
use epk::replay::Network;
use epk::replay::kernels::{Kernel, cosine_normalise, entk, jacobians, reduce};
use epk::store::StoreReader;

/// Softmax regression f_c(x) = W_c·x + b_c has ∇f_c(x) = (x ⊗ e_c, e_c), so
/// ⟨∇f_c(x), ∇f_d(x')⟩ = δ_cd (x·x' + 1): trNTK⁰ = K(x·x' + 1), pNTK = x·x' + 1, and trNTK is
/// the cosine of the augmented inputs (x, 1).
#[test]
fn trace_kernels_of_a_linear_model_have_their_closed_form() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("linear.zarr");
    let (dim, k) = (4, 3);
    let run = Run::linear(dim, k, 3, 0.3);
    run.record(&path);
    let reader = StoreReader::open(&path).unwrap();
    let device = flex_f64().unwrap();
    let net = Network::<Mlp>::new(reader.attrs(), &device).unwrap();
    let w = reader.weights(reader.steps()).unwrap();
    let (xs, ys) = (&run.train.inputs[..6 * dim], &run.eval.inputs[..4 * dim]);
    let (ja, jb) = (jacobians(&net, &w, xs), jacobians(&net, &w, ys));
    let blocks = entk(&ja, &jb);
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>() + 1.0;
    let tr0 = reduce(&blocks, k, Kernel::TrNtk0);
    let p = reduce(&blocks, k, Kernel::PNtk);
    let mut tr = tr0.clone();
    let diag = |x: &[f64], n: usize| -> Vec<f64> {
        (0..n)
            .map(|i| k as f64 * dot(&x[i * dim..(i + 1) * dim], &x[i * dim..(i + 1) * dim]))
            .collect()
    };
    cosine_normalise(&mut tr, &diag(xs, 6), &diag(ys, 4));
    for i in 0..6 {
        for j in 0..4 {
            let (a, b) = (&xs[i * dim..(i + 1) * dim], &ys[j * dim..(j + 1) * dim]);
            let e = dot(a, b);
            assert!((tr0[[i, j]] - k as f64 * e).abs() < 1e-12);
            assert!((p[[i, j]] - e).abs() < 1e-12);
            let cosine = e / (dot(a, a) * dot(b, b)).sqrt();
            assert!((tr[[i, j]] - cosine).abs() < 1e-14);
            // Off-diagonal output blocks vanish.
            for c in 0..k {
                for d in 0..k {
                    let want = if c == d { e } else { 0.0 };
                    assert!((blocks[[i * k + c, j * k + d]] - want).abs() < 1e-12);
                }
            }
        }
    }
    // The general (per-sample backward) Jacobians agree with the factored fast path.
    let general = net.clone().general();
    let jg = jacobians(&general, &w, xs);
    let diff = (&jg - &ja).iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(diff < 1e-13, "{diff:e}");
}

/// The path kernel of a linear model: the Jacobian is constant, so
/// K(x, z) = Σ_s η_s Σ_k (x·z + 1) = (Σ_s η_s) · K · (x·z + 1), for any inputs on both sides.
#[test]
fn path_kernel_of_a_linear_model_has_its_closed_form() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("linear.zarr");
    let (dim, k) = (3, 4);
    let run = Run::linear(dim, k, 5, 0.2);
    run.record(&path);
    let reader = StoreReader::open(&path).unwrap();
    let device = flex_f64().unwrap();
    let net = Network::<Mlp>::new(reader.attrs(), &device).unwrap();
    let xs = [0.5, -1.0, 2.0, 1.5, 0.0, -0.5];
    let zs = [1.0, 1.0, 1.0, -2.0, 0.25, 3.0, 0.0, 0.0, 0.0];
    let kernel = epk::replay::path_kernel(
        &reader,
        &net,
        &xs,
        &zs,
        &epk::replay::ReplayOptions::default(),
    )
    .unwrap();
    let eta: f64 = (0..reader.steps()).map(|s| reader.lr(s).unwrap()).sum();
    let diag = epk::replay::path_kernel_diagonal(
        &reader,
        &net,
        &zs,
        &epk::replay::ReplayOptions::default(),
    )
    .unwrap();
    let full = epk::replay::path_kernel(&reader, &net, &zs, &zs, &Default::default()).unwrap();
    for z in 0..3 {
        assert!((diag[z] - full[[z, z]]).abs() < 1e-12);
    }
    for x in 0..2 {
        for z in 0..3 {
            let dot: f64 = (0..dim).map(|d| xs[x * dim + d] * zs[z * dim + d]).sum();
            let want = eta * k as f64 * (dot + 1.0);
            assert!(
                (kernel[[x, z]] - want).abs() < 1e-12,
                "K({x}, {z}) = {} vs {want}",
                kernel[[x, z]]
            );
        }
    }
}

/// The toy MLP written as a user would: Burn's `Linear::forward`, no `Switches::linear`.
#[derive(burn::module::Module, Debug)]
struct PlainMlp {
    layers: Vec<burn::nn::Linear>,
}

impl epk::recorder::EpkModel for PlainMlp {
    const KIND: &'static str = "plain-mlp";
    type Config = epk::recorder::models::MlpConfig;

    fn init(config: &Self::Config, device: &burn::tensor::Device) -> Self {
        PlainMlp {
            layers: Mlp::new(config, device).layers,
        }
    }

    fn epk_forward(
        &self,
        inputs: burn::tensor::Tensor<2>,
        switches: &mut epk::recorder::Switches,
    ) -> burn::tensor::Tensor<2> {
        let last = self.layers.len() - 1;
        let mut x = inputs;
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(x);
            if i < last {
                x = switches.relu(x);
            }
        }
        burn::tensor::activation::log_softmax(x, 1)
    }
}

/// `compare`'s conjugate kernel needs the last layer's input, found through
/// `Switches::linear`. Without it the CK is refused with that reason before any Jacobian is
/// computed (it used to panic inside Burn after the first block), and the tangent kernels still
/// run on the general path.
#[test]
fn the_ck_of_a_model_without_switches_linear_is_a_clear_error() {
    use epk::replay::kernels::compare::{CompareOptions, Surrogate, compare};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plain.zarr");
    let run = Run::toy(6, 8, 6, 4);
    run.try_record_as::<PlainMlp>(&path)
        .unwrap()
        .finish()
        .unwrap();
    let reader = StoreReader::open(&path).unwrap();
    let device = flex_f64().unwrap();
    let net = Network::<PlainMlp>::new(reader.attrs(), &device).unwrap();
    let eval = reader.eval().unwrap();
    let targets: Vec<usize> = eval.targets.iter().map(|&t| t as usize).collect();
    let options = |surrogates| CompareOptions {
        surrogates,
        ..CompareOptions::default()
    };
    let w = reader.weights(0).unwrap();
    assert!(epk::replay::kernels::penultimate(&net, &w, &eval.inputs).is_none());
    let error = compare(
        &reader,
        &net,
        &eval.inputs,
        &targets,
        &options(vec![Surrogate::Ck]),
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(error.contains("Switches::linear"), "{error}");
    let tangent = compare(
        &reader,
        &net,
        &eval.inputs,
        &targets,
        &options(vec![Surrogate::Tangent(Kernel::TrNtk)]),
    )
    .unwrap();
    assert_eq!(tangent.rows.len(), 1);
}

/// The Grams `compare` fits its kGLMs on are built in panels that fit `memory`: with room for
/// everything, and with room for one point at a time (n panels, Jacobians recomputed per
/// panel), they equal the dense Grams from all Jacobians at once.
#[test]
fn grams_built_in_panels_equal_the_dense_grams() {
    use epk::replay::kernels::compare::{CompareOptions, Surrogate};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("toy.zarr");
    let run = Run::toy(5, 6, 4, 3);
    run.record(&path);
    let reader = StoreReader::open(&path).unwrap();
    let device = flex_f64().unwrap();
    let net = Network::<Mlp>::new(reader.attrs(), &device).unwrap();
    let w = reader.weights(reader.steps()).unwrap();
    let (train, test) = (&run.train.inputs, &run.eval.inputs[..3 * 5]);
    let k = net.outputs();
    let kernels = [Kernel::TrNtk0, Kernel::TrNtk, Kernel::PNtk].map(Surrogate::Tangent);
    let (jt, js) = (jacobians(&net, &w, train), jacobians(&net, &w, test));
    let dense = |kernel: Kernel| {
        let (mut g_train, mut g_test) = (
            reduce(&entk(&jt, &jt), k, kernel),
            reduce(&entk(&js, &jt), k, kernel),
        );
        if kernel.is_cosine() {
            let d_train: Vec<f64> = g_train.diag().to_vec();
            let d_test: Vec<f64> = reduce(&entk(&js, &js), k, kernel).diag().to_vec();
            cosine_normalise(&mut g_train, &d_train, &d_train);
            cosine_normalise(&mut g_test, &d_test, &d_train);
        }
        (g_train, g_test)
    };
    for memory in [1 << 30, 1] {
        let options = CompareOptions {
            memory,
            ..CompareOptions::default()
        };
        let grams =
            epk::replay::kernels::gram::grams(&net, &w, train, test, &kernels, &options).unwrap();
        for (s, (g_train, g_test, _)) in kernels.iter().zip(grams) {
            let Surrogate::Tangent(kernel) = *s else {
                unreachable!()
            };
            let (want_train, want_test) = dense(kernel);
            let err = |a: &ndarray::Array2<f64>, b: &ndarray::Array2<f64>| {
                (a - b).iter().fold(0.0f64, |m, v| m.max(v.abs()))
                    / b.iter().fold(1e-300f64, |m, v| m.max(v.abs()))
            };
            assert!(err(&g_train, &want_train) < 1e-13, "{memory} {}", s.name());
            assert!(err(&g_test, &want_test) < 1e-13, "{memory} {}", s.name());
        }
    }
}
