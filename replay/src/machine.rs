//! Rebuilds the kernel machine: b + Σ_i A[x, i, ·] for every explained input, step by step.

use crate::network::Network;
use crate::path::{Jbar, Segment, StepIntegral, integrate, integrate_fixed_batched};
use crate::structured::{Factors, stack};
use crate::{ReplayError, Rule};
use epk_recorder::EpkModel;
use epk_store::{Loss, StoreReader};
use ndarray::{Array2, Array3, ArrayView2, Axis};

/// What to replay and how.
#[derive(Clone, Debug)]
pub struct ReplayOptions {
    pub rule: Rule,
    /// Tolerance of the whole machine; the adaptive rule gives each step its share.
    pub tolerance: f64,
    /// Worker threads (steps are sequential, points and samples are split across threads).
    pub threads: usize,
    /// Training samples per block of per-sample gradients (bounds memory).
    pub block: usize,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions {
            rule: Rule::Auto,
            tolerance: 1e-12,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            block: 256,
        }
    }
}

/// Per-step facts that `verify` checks.
#[derive(Clone, Debug, serde::Serialize)]
pub struct StepCheck {
    pub step: usize,
    /// Worst certificate over the points, and the point it was met at.
    pub certificate: f64,
    pub worst_point: usize,
    /// max_p |Δw_p − Σ_i a_i ∇_w f(x_i)_p|: how far the recorded per-sample terms are from
    /// the step the optimizer actually took.
    pub decomposition: f64,
    /// Jacobian evaluations over all points.
    pub evals: usize,
    /// Smooth pieces over all points.
    pub pieces: usize,
}

/// The exact path kernel machine for a set of inputs.
///
/// f(x; w_N) = b(x) + Σ_i A[x, i, ·] where b(x) = f(x; w_0) and
/// A[x, i, k] = Σ_s Σ_j a_{i,j,s} ⟨Jbar_s(x)_k, ∇_w f_j(x_i; w_s)⟩, a_{i,s} = −η_s ∂L/∂f(x_i)
/// (Bell et al., Theorem 3.6).
pub struct KernelMachine {
    /// b(x) = f(x; w_0), `[points, outputs]`.
    pub bias: Array2<f64>,
    /// A, `[points, train samples, outputs]`.
    pub attributions: Array3<f64>,
    /// f(x; w_N), the network itself, `[points, outputs]`.
    pub network: Array2<f64>,
    pub steps: Vec<StepCheck>,
    /// a_i when it is the same at every step (Theorem 3.7), per training sample: then
    /// A[x, i, k] = a_i K(x, x_i)_k with one kernel K for the whole run.
    pub constant_coefficients: Option<Vec<f64>>,
}

impl KernelMachine {
    /// b + Σ_i A, the kernel machine's prediction, `[points, outputs]`.
    pub fn prediction(&self) -> Array2<f64> {
        &self.bias + &self.attributions.sum_axis(Axis(1))
    }

    /// max |b + Σ_i A − f(x; w_N)| over points and outputs.
    pub fn max_error(&self) -> f64 {
        (&self.prediction() - &self.network)
            .iter()
            .fold(0.0, |m, v| m.max(v.abs()))
    }

    /// max over points and outputs of |b(x) − b(x₀)|: zero when the last layer starts at zero.
    pub fn bias_spread(&self) -> f64 {
        let first = self.bias.row(0);
        self.bias
            .rows()
            .into_iter()
            .flat_map(|r| {
                r.iter()
                    .zip(first.iter())
                    .map(|(a, b)| (a - b).abs())
                    .collect::<Vec<_>>()
            })
            .fold(0.0, f64::max)
    }

    /// The single kernel K(x, x_i)_k = A[x, i, k] / a_i of Theorem 3.7, when it applies.
    pub fn single_kernel(&self) -> Option<Array3<f64>> {
        let a = self.constant_coefficients.as_ref()?;
        let mut k = self.attributions.clone();
        for (i, mut col) in k.axis_iter_mut(Axis(1)).enumerate() {
            if a[i] != 0.0 {
                col /= a[i];
            } else {
                col.fill(0.0);
            }
        }
        Some(k)
    }
}

/// Replays every committed step for the inputs `xs` (flat, one sample per row) and returns the
/// kernel machine. `progress` is called after each step.
pub fn replay<M: EpkModel>(
    reader: &StoreReader,
    net: &Network<M>,
    xs: &[f64],
    options: &ReplayOptions,
    mut progress: impl FnMut(usize),
) -> Result<KernelMachine, ReplayError> {
    let attrs = reader.attrs();
    let (k, p, n_train) = (attrs.outputs, attrs.num_params, attrs.train_samples);
    let input_len = attrs.input_len();
    let m = xs.len() / input_len;
    if m == 0 {
        return Err(ReplayError::Input("no inputs to explain".into()));
    }
    let train = reader.train()?;
    let steps = reader.steps();
    let w0 = reader.weights(0)?;
    let bias = Array2::from_shape_vec((m, k), net.forward(&w0, xs)).expect("f is [m, k]");
    let mut attributions = Array3::<f64>::zeros((m, n_train, k));
    let mut checks = Vec::with_capacity(steps);
    let mut coefficients = Coefficients::new(n_train, attrs.loss, k);
    let step_tol = options.tolerance / (2.0 * steps.max(1) as f64);
    let threads = options.threads.max(1);
    let mut start = w0;
    for s in 0..steps {
        let end = reader.weights(s + 1)?;
        let delta: Vec<f64> = end.iter().zip(&start).map(|(b, a)| b - a).collect();
        let lr = reader.lr(s)?;
        let batch = reader.batch(s)?;
        let seg = Segment {
            start: &start,
            end: &end,
            delta: &delta,
        };
        // Test side: Jbar for every point, split across threads.
        let chunks = split(m, threads);
        let batched = integrate_fixed_batched(net, &seg, xs, options.rule);
        let results: Vec<StepIntegral> = batched.unwrap_or_else(|| {
            std::thread::scope(|scope| {
                let handles: Vec<_> = chunks
                    .iter()
                    .map(|range| {
                        let range = range.clone();
                        let seg = &seg;
                        // Modules are Send but not Sync: each worker gets its own copy.
                        let net = net.clone();
                        scope.spawn(move || {
                            range
                                .map(|i| {
                                    integrate(
                                        &net,
                                        seg,
                                        &xs[i * input_len..(i + 1) * input_len],
                                        options.rule,
                                        step_tol,
                                    )
                                })
                                .collect::<Vec<_>>()
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .flat_map(|h| h.join().expect("worker"))
                    .collect()
            })
        });
        let mut check = StepCheck {
            step: s,
            certificate: 0.0,
            worst_point: 0,
            decomposition: 0.0,
            evals: 0,
            pieces: 0,
        };
        for (i, r) in results.iter().enumerate() {
            if r.certificate > check.certificate || r.certificate.is_nan() {
                check.certificate = r.certificate;
                check.worst_point = i;
            }
            check.evals += r.evals;
            check.pieces += r.pieces;
        }
        // Train side: a_{i,s} = −η ∂L/∂f(x_i), per-sample gradients in blocks.
        coefficients.observe(&batch.indices, &batch.dloss);
        let coeffs: Vec<f64> = batch.dloss.iter().map(|d| -lr * d).collect();
        let contraction = Contraction::choose(net, &results, k, p);
        let mut total = vec![0.0; p];
        let block = options.block.max(1);
        for (b, idx) in batch.indices.chunks(block).enumerate() {
            let xb = train.gather(idx);
            let cb = &coeffs[b * block * k..(b * block + idx.len()) * k];
            // contrib[(point, output), sample in block]
            let contrib = match (&contraction, net.layers()) {
                (
                    Contraction::Gram {
                        weights,
                        owner,
                        nodes,
                    },
                    Some(layers),
                ) => {
                    let f = net.factors(&start, &xb, cb);
                    add(&mut total, &layers.sum_dense(&f));
                    let g = layers.gram(nodes, &f);
                    let mut c = Array2::<f64>::zeros((m * k, idx.len()));
                    for (q, (&w, &pt)) in weights.iter().zip(owner).enumerate() {
                        for o in 0..k {
                            c.row_mut(pt * k + o).scaled_add(w, &g.row(q * k + o));
                        }
                    }
                    c
                }
                (Contraction::Dense(jbar), layers) => {
                    let grads = match layers {
                        Some(layers) => {
                            let f = net.factors(&start, &xb, cb);
                            let mut g = vec![0.0; idx.len() * p];
                            for (r, row) in g.chunks_mut(p).enumerate() {
                                layers.add_dense(&f, r, 1.0, row);
                            }
                            g
                        }
                        None => parallel_sample_grads(net, &start, &xb, cb, input_len, k, threads),
                    };
                    let g =
                        ArrayView2::from_shape((idx.len(), p), &grads).expect("grads are [n, p]");
                    for row in g.rows() {
                        add(&mut total, row.as_slice().expect("contiguous"));
                    }
                    // [m·k, p] · [p, n] → [m·k, n]
                    jbar.dot(&g.t())
                }
                (Contraction::Gram { .. }, None) => unreachable!("Gram needs probed layers"),
            };
            for (c, &i) in idx.iter().enumerate() {
                for pt in 0..m {
                    for o in 0..k {
                        attributions[[pt, i, o]] += contrib[[pt * k + o, c]];
                    }
                }
            }
        }
        check.decomposition = delta
            .iter()
            .zip(&total)
            .fold(0.0, |mx, (d, t)| mx.max((d - t).abs()));
        checks.push(check);
        start = end;
        progress(s + 1);
    }
    let network = Array2::from_shape_vec((m, k), net.forward(&start, xs)).expect("f is [m, k]");
    Ok(KernelMachine {
        bias,
        attributions,
        network,
        steps: checks,
        constant_coefficients: coefficients.constant(),
    })
}

fn add(total: &mut [f64], v: &[f64]) {
    for (t, v) in total.iter_mut().zip(v) {
        *t += v;
    }
}

/// How a step's Jbar meets the training gradients.
enum Contraction {
    /// Dense Jbar rows `[points·outputs, P]` against dense per-sample gradients.
    Dense(Array2<f64>),
    /// Factored nodes against factored gradients: cost ∝ nodes·(in + out) instead of P.
    Gram {
        weights: Vec<f64>,
        owner: Vec<usize>,
        nodes: Factors,
    },
}

impl Contraction {
    fn choose<M: EpkModel>(net: &Network<M>, results: &[StepIntegral], k: usize, p: usize) -> Self {
        let m = results.len();
        let all_nodes = results.iter().all(|r| matches!(r.jbar, Jbar::Nodes { .. }));
        if let (true, Some(layers)) = (all_nodes, net.layers()) {
            let q: usize = results.iter().map(|r| r.jbar.nodes()).sum();
            let width: usize = layers.layers.iter().map(|l| l.inputs + k * l.outputs).sum();
            // Gram costs q·width per sample, dense m·k·p (plus building dense rows).
            if q * width < m * k * p {
                let mut weights = Vec::with_capacity(q);
                let mut owner = Vec::with_capacity(q);
                let mut parts = Vec::with_capacity(m);
                for (pt, r) in results.iter().enumerate() {
                    if let Some((w, f)) = r.jbar.stacked() {
                        owner.extend(std::iter::repeat_n(pt, w.len()));
                        weights.extend(w);
                        parts.push(f);
                    }
                }
                let refs: Vec<&Factors> = parts.iter().collect();
                return Contraction::Gram {
                    weights,
                    owner,
                    nodes: stack(&refs),
                };
            }
        }
        let mut jbar = Array2::<f64>::zeros((m * k, p));
        for (pt, r) in results.iter().enumerate() {
            match &r.jbar {
                Jbar::Dense(d) => jbar
                    .slice_mut(ndarray::s![pt * k..(pt + 1) * k, ..])
                    .assign(&ArrayView2::from_shape((k, p), d).expect("jbar is [k, p]")),
                Jbar::Nodes { weights, factors } => {
                    let layers = net.layers().expect("nodes come from probed layers");
                    for (w, f) in weights.iter().zip(factors) {
                        for o in 0..k {
                            let mut row = jbar.row_mut(pt * k + o);
                            layers.add_dense(f, o, *w, row.as_slice_mut().expect("contiguous"));
                        }
                    }
                }
            }
        }
        Contraction::Dense(jbar)
    }
}

fn split(n: usize, parts: usize) -> Vec<std::ops::Range<usize>> {
    let parts = parts.min(n).max(1);
    (0..parts)
        .map(|i| (i * n / parts)..((i + 1) * n / parts))
        .collect()
}

fn parallel_sample_grads<M: EpkModel>(
    net: &Network<M>,
    w: &[f64],
    xs: &[f64],
    coeffs: &[f64],
    input_len: usize,
    k: usize,
    threads: usize,
) -> Vec<f64> {
    let n = xs.len() / input_len;
    let parts = split(n, threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = parts
            .iter()
            .map(|r| {
                let r = r.clone();
                let net = net.clone();
                scope.spawn(move || {
                    net.sample_grads(
                        w,
                        &xs[r.start * input_len..r.end * input_len],
                        &coeffs[r.start * k..r.end * k],
                    )
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("worker"))
            .collect()
    })
}

/// Tracks whether each sample's dL/df is the same at every step it appears in and has one
/// non-zero entry (cross-entropy on log-softmax outputs): then a_i is constant.
struct Coefficients {
    seen: Vec<Option<Vec<f64>>>,
    constant: bool,
    k: usize,
}

impl Coefficients {
    fn new(n: usize, loss: Loss, k: usize) -> Self {
        Coefficients {
            seen: vec![None; n],
            constant: loss == Loss::NllLogSoftmax,
            k,
        }
    }

    fn observe(&mut self, indices: &[usize], dloss: &[f64]) {
        if !self.constant {
            return;
        }
        for (c, &i) in indices.iter().enumerate() {
            let d = &dloss[c * self.k..(c + 1) * self.k];
            match &self.seen[i] {
                None => self.seen[i] = Some(d.to_vec()),
                Some(prev) if prev.as_slice() == d => {}
                Some(_) => self.constant = false,
            }
        }
    }

    /// a_i = −(the one non-zero dL/df entry) for each sample, if constant.
    fn constant(&self) -> Option<Vec<f64>> {
        if !self.constant {
            return None;
        }
        self.seen
            .iter()
            .map(|d| match d {
                None => Some(0.0),
                Some(d) => {
                    let nz: Vec<f64> = d.iter().copied().filter(|v| *v != 0.0).collect();
                    (nz.len() == 1).then(|| -nz[0])
                }
            })
            .collect()
    }
}
