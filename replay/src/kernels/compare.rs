//! `replay compare`: how faithfully each kernel's surrogate reproduces the network on the
//! held-out points, with the protocol of Engel et al. (kGLM refits, Kendall τ_b, R²) beside the
//! exact and discrete path kernel machines, which need no refit.

use super::faithfulness::{kendall_tau_b, r_squared_affine};
use super::kglm::{Kglm, KglmOptions, softmax_rows};
use super::tangent::Kernel;
use crate::{Network, ReplayError, ReplayOptions, Rule, replay};
use epk_model::EpkModel;
use epk_store::{Loss, StoreReader};
use ndarray::{Array2, s};
use serde::Serialize;
use std::time::Instant;

/// A surrogate of the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Surrogate {
    /// The exact path kernel machine (rule `auto`), no refit.
    Epk,
    /// The discrete path kernel machine (rule `left:1`), no refit.
    Dpk,
    /// A kGLM on a tangent kernel at the chosen step's weights.
    Tangent(Kernel),
    /// A kGLM on the conjugate kernel: the cosine of penultimate features.
    Ck,
    /// A kGLM on the exact path kernel's Gram ([`crate::path_kernel`], train × train
    /// symmetrised): the EPK refitted like the others.
    EpkKglm,
}

impl Surrogate {
    /// Every surrogate, in the order of the comparison table.
    pub const ALL: [Surrogate; 9] = [
        Surrogate::Epk,
        Surrogate::Dpk,
        Surrogate::Tangent(Kernel::TrNtk0),
        Surrogate::Tangent(Kernel::TrNtk),
        Surrogate::Tangent(Kernel::PNtk),
        Surrogate::Tangent(Kernel::ProjTrNtk),
        Surrogate::Tangent(Kernel::ProjPNtk),
        Surrogate::Ck,
        Surrogate::EpkKglm,
    ];

    /// The name on the command line (`--kernels`) and in the table.
    pub fn name(self) -> &'static str {
        match self {
            Surrogate::Epk => "epk",
            Surrogate::Dpk => "dpk",
            Surrogate::Tangent(kernel) => kernel.name(),
            Surrogate::Ck => "ck",
            Surrogate::EpkKglm => "epk-kglm",
        }
    }

    fn is_machine(self) -> bool {
        matches!(self, Surrogate::Epk | Surrogate::Dpk)
    }
}

impl std::str::FromStr for Surrogate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Surrogate::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Surrogate::ALL.iter().map(|k| k.name()).collect();
                format!("unknown kernel {s:?}; choose from {}", names.join(", "))
            })
    }
}

/// What `compare` computes and how.
#[derive(Clone, Debug)]
pub struct CompareOptions {
    /// The surrogates to compare.
    pub surrogates: Vec<Surrogate>,
    /// Projection dimension (default 10240, capped at P) and seed.
    pub projection_dim: Option<usize>,
    /// Seed of the projections.
    pub seed: u64,
    /// Recorded step whose weights the tangent kernels (and CK) use; default: the last.
    pub step: Option<usize>,
    /// Fit the kGLMs on the first N training points only (all kernels alike); default: all.
    pub fit_samples: Option<usize>,
    /// How the kGLMs are fitted.
    pub kglm: KglmOptions,
    /// Training points per block of Jacobians.
    pub block: usize,
    /// Bytes the tangent kernels' features may hold at once; their Grams are built in panels
    /// of training points that fit (the Grams themselves, n² numbers each, come on top).
    pub memory: usize,
    /// How the EPK and DPK machines (and the EPK Gram) are replayed.
    pub replay: ReplayOptions,
}

impl Default for CompareOptions {
    fn default() -> Self {
        CompareOptions {
            surrogates: Surrogate::ALL.to_vec(),
            projection_dim: None,
            seed: 0,
            step: None,
            fit_samples: None,
            kglm: KglmOptions::default(),
            block: 256,
            memory: 1 << 30,
            replay: ReplayOptions::default(),
        }
    }
}

/// One surrogate's faithfulness.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// The surrogate's name.
    pub kernel: String,
    /// `machine` (EPK, DPK: b + ΣA + N + R, no refit) or `kglm` (refit on train × train).
    pub form: String,
    /// Kendall τ_b between surrogate and network true-class probabilities.
    pub tau: Option<f64>,
    /// R² of the affine fit of network logits on surrogate logits.
    pub r2: Option<f64>,
    /// Surrogate accuracy − network accuracy on the held-out points.
    pub accuracy_gap: f64,
    /// Jaccard index of the two sets of misclassified points (1 when both are empty).
    pub misclassification_overlap: f64,
    /// max |logit error|: raw for machines, after the affine fit for kGLMs.
    pub max_logit_error: f64,
    /// Wall time: kernel, fit and prediction.
    pub seconds: f64,
    /// L-BFGS iterations of the kGLM fit and max |∇| at its end.
    pub kglm_iterations: Option<usize>,
    /// max |∇| at the end of the kGLM fit.
    pub kglm_gradient: Option<f64>,
    /// Surrogate logits `[points, outputs]` (for plots).
    #[serde(skip)]
    pub logits: Array2<f64>,
}

/// The comparison for the held-out inputs `xs` with labels `targets`.
pub struct Comparison {
    /// One row per surrogate, in the requested order.
    pub rows: Vec<Row>,
    /// EPK attributions A[x₀, i, k] of the first held-out point x₀ to its predicted class k,
    /// with the training labels (for the per-class distribution plot).
    pub first_point: Option<(usize, Vec<f64>, Vec<i64>)>,
    /// Network logits `[points, outputs]`.
    pub network: Array2<f64>,
    /// The held-out labels.
    pub targets: Vec<usize>,
}

/// Runs every requested surrogate on the store's held-out inputs `xs`.
pub fn compare<M: EpkModel>(
    reader: &StoreReader,
    net: &Network<M>,
    xs: &[f64],
    targets: &[usize],
    options: &CompareOptions,
) -> Result<Comparison, ReplayError> {
    let attrs = reader.attrs();
    let k = attrs.outputs;
    let m = xs.len() / attrs.input_len();
    let w = reader.weights(reader.steps())?;
    let network = Array2::from_shape_vec((m, k), net.forward(&w, xs)).expect("[m, k]");
    let mut rows = Vec::new();
    let mut first_point = None;
    let wanted = |s: Surrogate| options.surrogates.contains(&s);
    for s in [Surrogate::Epk, Surrogate::Dpk] {
        if !wanted(s) {
            continue;
        }
        let started = Instant::now();
        let replay_options = ReplayOptions {
            rule: if s == Surrogate::Epk {
                options.replay.rule
            } else {
                Rule::Left(1)
            },
            ..options.replay.clone()
        };
        let machine = replay(reader, net, xs, &replay_options, |_| {})?;
        let logits = machine.prediction();
        if s == Surrogate::Epk {
            let f = machine.network.row(0);
            let class = crate::argmax(f);
            let values = machine.attributions.slice(s![0, .., class]).to_vec();
            first_point = Some((class, values, reader.train()?.targets));
        }
        rows.push(row(s, &logits, &network, targets, started));
    }
    let kernels: Vec<Surrogate> = options
        .surrogates
        .iter()
        .copied()
        .filter(|s| !s.is_machine() && *s != Surrogate::EpkKglm)
        .collect();
    if !kernels.is_empty() || wanted(Surrogate::EpkKglm) {
        rows.extend(kglm_rows(
            reader, net, xs, targets, &network, kernels, options,
        )?);
    }
    Ok(Comparison {
        rows,
        first_point,
        network,
        targets: targets.to_vec(),
    })
}

/// The kGLM rows: each kernel's Gram on the fitting points (train × train and test × train),
/// a kGLM fitted to the training labels, its outputs against the network's.
fn kglm_rows<M: EpkModel>(
    reader: &StoreReader,
    net: &Network<M>,
    xs: &[f64],
    targets: &[usize],
    network: &Array2<f64>,
    kernels: Vec<Surrogate>,
    options: &CompareOptions,
) -> Result<Vec<Row>, ReplayError> {
    let attrs = reader.attrs();
    let k = attrs.outputs;
    let wanted = |s: Surrogate| options.surrogates.contains(&s);
    let mut rows = Vec::new();
    let train = reader.train()?;
    let n_fit = options.fit_samples.unwrap_or(train.len()).min(train.len());
    let fit_inputs = &train.inputs[..n_fit * attrs.input_len()];
    let labels: Vec<usize> = train.targets[..n_fit].iter().map(|&t| t as usize).collect();
    let step = options.step.unwrap_or(reader.steps());
    if step > reader.steps() {
        return Err(ReplayError::Input(format!(
            "step {step}: the store has {} committed steps",
            reader.steps()
        )));
    }
    let w_kernel = reader.weights(step)?;
    let mut grams = super::gram::grams(net, &w_kernel, fit_inputs, xs, &kernels, options)?;
    let mut kernels = kernels;
    if wanted(Surrogate::EpkKglm) {
        let started = Instant::now();
        let k_tt = crate::path_kernel(reader, net, fit_inputs, fit_inputs, &options.replay)?;
        let g_train = (&k_tt + &k_tt.t()) / 2.0;
        let g_test = crate::path_kernel(reader, net, xs, fit_inputs, &options.replay)?;
        grams.push((g_train, g_test, started.elapsed().as_secs_f64()));
        kernels.push(Surrogate::EpkKglm);
    }
    for (s, (mut g_train, mut g_test, seconds)) in kernels.iter().zip(grams) {
        let started = Instant::now();
        // Unnormalised kernels reach 1e3 and more: scaling the Gram to unit mean diagonal
        // keeps L-BFGS well conditioned without changing the model class.
        let scale = g_train.diag().mean().filter(|d| *d > 0.0).unwrap_or(1.0);
        g_train /= scale;
        g_test /= scale;
        let fit = Kglm::fit(g_train.view(), &labels, k, &options.kglm);
        let mut logits = fit.logits(g_test.view());
        if attrs.loss == Loss::NllLogSoftmax {
            // The network outputs log-probabilities: compare like with like.
            logits = softmax_rows(logits).mapv(f64::ln);
        }
        let mut r = row(*s, &logits, network, targets, started);
        r.seconds += seconds;
        r.kglm_iterations = Some(fit.iterations);
        r.kglm_gradient = Some(fit.gradient_norm);
        rows.push(r);
    }
    Ok(rows)
}

fn row(
    s: Surrogate,
    logits: &Array2<f64>,
    network: &Array2<f64>,
    targets: &[usize],
    started: Instant,
) -> Row {
    let true_class = |z: &Array2<f64>| -> Vec<f64> {
        let p = softmax_rows(z.clone());
        targets
            .iter()
            .enumerate()
            .map(|(i, &t)| p[[i, t]])
            .collect()
    };
    let tau = kendall_tau_b(&true_class(logits), &true_class(network));
    let (x, y) = (
        logits.iter().copied().collect::<Vec<_>>(),
        network.iter().copied().collect::<Vec<_>>(),
    );
    let r2 = r_squared_affine(&x, &y);
    let max_logit_error = if s.is_machine() {
        x.iter()
            .zip(&y)
            .fold(0.0f64, |mx, (a, b)| mx.max((a - b).abs()))
    } else {
        affine_max_error(&x, &y)
    };
    let argmax =
        |z: &Array2<f64>| -> Vec<usize> { z.rows().into_iter().map(crate::argmax).collect() };
    let (ps, pn) = (argmax(logits), argmax(network));
    let n = targets.len().max(1) as f64;
    let right = |p: &[usize]| p.iter().zip(targets).filter(|(a, b)| a == b).count() as f64 / n;
    let wrong = |p: &[usize]| -> Vec<bool> { p.iter().zip(targets).map(|(a, b)| a != b).collect() };
    let (ws, wn) = (wrong(&ps), wrong(&pn));
    let both = ws.iter().zip(&wn).filter(|(a, b)| **a && **b).count();
    let either = ws.iter().zip(&wn).filter(|(a, b)| **a || **b).count();
    Row {
        kernel: s.name().into(),
        form: if s.is_machine() { "machine" } else { "kglm" }.into(),
        tau,
        r2,
        accuracy_gap: right(&ps) - right(&pn),
        misclassification_overlap: if either == 0 {
            1.0
        } else {
            both as f64 / either as f64
        },
        max_logit_error,
        seconds: started.elapsed().as_secs_f64(),
        kglm_iterations: None,
        kglm_gradient: None,
        logits: logits.clone(),
    }
}

/// max |y − (a x + c)| after the least-squares affine fit.
fn affine_max_error(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len().max(1) as f64;
    let mx = x.iter().sum::<f64>() / n;
    let my = y.iter().sum::<f64>() / n;
    let sxx: f64 = x.iter().map(|v| (v - mx) * (v - mx)).sum();
    let sxy: f64 = x.iter().zip(y).map(|(a, b)| (a - mx) * (b - my)).sum();
    let a = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    x.iter().zip(y).fold(0.0f64, |m, (xi, yi)| {
        m.max((yi - (my + a * (xi - mx))).abs())
    })
}

impl Comparison {
    /// The table for people.
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:<11} {:<8} {:>8} {:>9} {:>9} {:>8} {:>12} {:>8}",
            "kernel", "form", "tau_b", "R2", "acc gap", "miss ∩", "max|Δlogit|", "seconds"
        );
        let opt = |v: Option<f64>, d: usize| v.map_or("-".to_string(), |v| format!("{v:.d$}"));
        for r in &self.rows {
            let _ = writeln!(
                s,
                "{:<11} {:<8} {:>8} {:>9} {:>+9.3} {:>8.3} {:>12.3e} {:>8.1}",
                r.kernel,
                r.form,
                opt(r.tau, 4),
                opt(r.r2, 6),
                r.accuracy_gap,
                r.misclassification_overlap,
                r.max_logit_error,
                r.seconds
            );
        }
        s
    }
}
