//! Rebuilds the kernel machine: b + Σ_i A[x, i, ·] for every explained input, step by step.

use crate::network::Network;
use crate::optimizer::{Optimizer, State as OptimizerState, Transform};
use crate::path::{Jbar, Segment, StepIntegral, integrate, integrate_fixed_batched};
use crate::structured::{LayerRows, Layers};
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
    /// Parameter groups (ranges of the flat parameter vector) to split the attributions by;
    /// empty for no split. Splitting uses dense contractions.
    pub groups: Vec<std::ops::Range<usize>>,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions {
            rule: Rule::Auto,
            tolerance: 1e-12,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            block: 256,
            groups: Vec::new(),
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
    /// Σ_s of the steps' non-data terms (weight decay), `[points, outputs]`.
    pub nondata: Array2<f64>,
    /// Σ_s Jbar_s(x)·ρ_s, where ρ_s is the part of the recorded step that the optimizer's
    /// arithmetic replayed in f64 does not produce: rounding for f64 training, f32 rounding for
    /// f32 training, anything else a sign of a wrong store. `[points, outputs]`.
    pub residual: Array2<f64>,
    /// f(x; w_N), the network itself, `[points, outputs]`.
    pub network: Array2<f64>,
    pub steps: Vec<StepCheck>,
    /// a_i when it is the same at every step (Theorem 3.7), per training sample: then
    /// A[x, i, k] = a_i K(x, x_i)_k with one kernel K for the whole run.
    pub constant_coefficients: Option<Vec<f64>>,
    /// The optimizer replayed, in one line.
    pub optimizer: String,
    /// A split by [`ReplayOptions::groups`], `[groups, points, train samples, outputs]`: the
    /// groups' attributions add up to `attributions`.
    pub group_attributions: Option<ndarray::Array4<f64>>,
}

/// The index of the largest value (the last one on ties, as `Iterator::max_by`; 0 when empty):
/// a predicted class.
pub fn argmax<'a>(values: impl IntoIterator<Item = &'a f64>) -> usize {
    values
        .into_iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i)
}

impl KernelMachine {
    /// b + Σ_i A + N + R: the kernel machine's prediction with the non-data terms N and the
    /// decomposition residual R, `[points, outputs]`.
    pub fn prediction(&self) -> Array2<f64> {
        &self.bias + &self.attributions.sum_axis(Axis(1)) + &self.nondata + &self.residual
    }

    /// max |b + Σ_i A + N + R − f(x; w_N)| over points and outputs: the path (quadrature)
    /// error alone.
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

/// The exact path kernel between arbitrary inputs, traced over outputs:
/// K(x, z) = Σ_s η_s Σ_k ⟨Jbar_s(x)_k, ∇_w f_k(z; w_s)⟩, `[xs, zs]`. For gradient descent with
/// constant coefficients this is the kernel of Bell et al.'s Theorem 3.7 (up to the sign and
/// scale of a_i); `zs` need not be training points, so K can be evaluated on a grid or between
/// training points, as a Gaussian process or an SVM needs.
pub fn path_kernel<M: EpkModel>(
    reader: &StoreReader,
    net: &Network<M>,
    xs: &[f64],
    zs: &[f64],
    options: &ReplayOptions,
) -> Result<Array2<f64>, ReplayError> {
    path_kernel_with(reader, net, xs, zs, options, false)
}

/// K(x, x) for every input: the diagonal of [`path_kernel`] without the rest, `[xs, 1]`.
pub fn path_kernel_diagonal<M: EpkModel>(
    reader: &StoreReader,
    net: &Network<M>,
    xs: &[f64],
    options: &ReplayOptions,
) -> Result<Vec<f64>, ReplayError> {
    let d = path_kernel_with(reader, net, xs, xs, options, true)?;
    Ok(d.column(0).to_vec())
}

fn path_kernel_with<M: EpkModel>(
    reader: &StoreReader,
    net: &Network<M>,
    xs: &[f64],
    zs: &[f64],
    options: &ReplayOptions,
    diagonal: bool,
) -> Result<Array2<f64>, ReplayError> {
    let (k, p, len) = (net.outputs(), net.num_params(), net.input_len());
    let (m, nz) = (xs.len() / len, zs.len() / len);
    if m == 0 || nz == 0 {
        return Err(ReplayError::Input("no inputs for the path kernel".into()));
    }
    // Each z once per output, with a one-hot coefficient: rows ∇f_k(z).
    let mut copies = Vec::with_capacity(nz * k * len);
    let mut onehot = vec![0.0; nz * k * k];
    for z in 0..nz {
        for o in 0..k {
            copies.extend_from_slice(&zs[z * len..(z + 1) * len]);
            onehot[(z * k + o) * k + o] = 1.0;
        }
    }
    let steps = reader.steps();
    let step_tol = options.tolerance / (2.0 * steps.max(1) as f64);
    let mut kernel = Array2::<f64>::zeros((m, if diagonal { 1 } else { nz }));
    let mut start = reader.weights(0)?;
    for s in 0..steps {
        let end = reader.weights(s + 1)?;
        let delta: Vec<f64> = end.iter().zip(&start).map(|(b, a)| b - a).collect();
        let seg = Segment {
            start: &start,
            end: &end,
            delta: &delta,
        };
        let (results, _) = integrate_step(net, &seg, xs, options, step_tol, s);
        let jbar = dense_jbar(net, &results, k, p);
        let lr = reader.lr(s)?;
        let block = options.block.max(1) * k;
        for (b, rows) in onehot.chunks(block * k).enumerate() {
            let first = b * block;
            let count = rows.len() / k;
            let grads = sample_grads(
                net,
                &start,
                &copies[first * len..(first + count) * len],
                rows,
                options.threads.max(1),
            );
            let g = ArrayView2::from_shape((count, p), &grads).expect("[n, p]");
            if diagonal {
                // Row (z, o) of the gradients meets row (z, o) of Jbar only.
                for r in 0..count {
                    let (z, row) = ((first + r) / k, first + r);
                    kernel[[z, 0]] += lr * jbar.row(row).dot(&g.row(r));
                }
                continue;
            }
            let dots = jbar.dot(&g.t());
            for r in 0..count {
                let (z, o) = ((first + r) / k, (first + r) % k);
                for x in 0..m {
                    kernel[[x, z]] += lr * dots[[x * k + o, r]];
                }
            }
        }
        start = end;
    }
    Ok(kernel)
}

/// Replays every committed step for the inputs `xs` (flat, one sample per row) and returns the
/// kernel machine. `progress` is called after each step.
///
/// Plain gradient descent is replayed forward, one step at a time. Optimizers with state
/// (momentum, Adam) or with data-dependent factors (clipping) are replayed in two passes over the
/// steps: a forward pass advances the optimizer from the recorded data gradients and keeps each
/// step's linear map on disk, and a backward pass carries the adjoint of the momentum buffer, so
/// that a point used at step r is credited for every later step it moves. Memory stays
/// independent of the number of steps and of the training set.
pub fn replay<M: EpkModel>(
    reader: &StoreReader,
    net: &Network<M>,
    xs: &[f64],
    options: &ReplayOptions,
    progress: impl FnMut(usize),
) -> Result<KernelMachine, ReplayError> {
    let optimizer = Optimizer::from_spec(&reader.attrs().optimizer)?;
    if optimizer.is_plain() {
        replay_plain(reader, net, xs, options, progress)
    } else {
        replay_stateful(reader, net, xs, options, optimizer, progress)
    }
}

/// What every replay needs before its first step.
struct Setup {
    k: usize,
    p: usize,
    m: usize,
    input_len: usize,
    bias: Array2<f64>,
    attributions: Array3<f64>,
    step_tol: f64,
}

fn setup<M: EpkModel>(
    reader: &StoreReader,
    net: &Network<M>,
    xs: &[f64],
    options: &ReplayOptions,
) -> Result<Setup, ReplayError> {
    let attrs = reader.attrs();
    let (k, p, n_train) = (attrs.outputs, attrs.num_params, attrs.train_samples);
    let input_len = attrs.input_len();
    let m = xs.len() / input_len;
    if m == 0 {
        return Err(ReplayError::Input("no inputs to explain".into()));
    }
    let w0 = reader.weights(0)?;
    let bias = Array2::from_shape_vec((m, k), net.forward(&w0, xs)).expect("f is [m, k]");
    Ok(Setup {
        k,
        p,
        m,
        input_len,
        bias,
        attributions: Array3::<f64>::zeros((m, n_train, k)),
        step_tol: options.tolerance / (2.0 * reader.steps().max(1) as f64),
    })
}

/// Jbar over one step for every point (split across threads), and the step's checks.
fn integrate_step<M: EpkModel>(
    net: &Network<M>,
    seg: &Segment<'_>,
    xs: &[f64],
    options: &ReplayOptions,
    step_tol: f64,
    s: usize,
) -> (Vec<StepIntegral>, StepCheck) {
    let input_len = net.input_len();
    let m = xs.len() / input_len;
    let chunks = split(m, options.threads.max(1));
    let batched = (options.rule != Rule::Auto && net.layers().is_some()).then(|| {
        // One batched pass per thread over its share of the points.
        std::thread::scope(|scope| {
            let handles: Vec<_> = chunks
                .iter()
                .map(|range| {
                    let xs = &xs[range.start * input_len..range.end * input_len];
                    let net = net.clone();
                    scope.spawn(move || {
                        integrate_fixed_batched(&net, seg, xs, options.rule)
                            .expect("a fixed rule on probed layers")
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("worker"))
                .collect::<Vec<_>>()
        })
    });
    let results: Vec<StepIntegral> = batched.unwrap_or_else(|| {
        std::thread::scope(|scope| {
            let handles: Vec<_> = chunks
                .iter()
                .map(|range| {
                    let range = range.clone();
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
    (results, check)
}

fn replay_plain<M: EpkModel>(
    reader: &StoreReader,
    net: &Network<M>,
    xs: &[f64],
    options: &ReplayOptions,
    mut progress: impl FnMut(usize),
) -> Result<KernelMachine, ReplayError> {
    let Setup {
        k,
        p,
        m,
        input_len,
        bias,
        mut attributions,
        step_tol,
    } = setup(reader, net, xs, options)?;
    let attrs = reader.attrs();
    let train = reader.train()?;
    let steps = reader.steps();
    let mut residual = Array2::<f64>::zeros((m, k));
    let mut groups = group_array(&options.groups, m, attrs.train_samples, k);
    let mut checks = Vec::with_capacity(steps);
    let mut coefficients = Coefficients::new(attrs.train_samples, attrs.loss, k);
    let threads = options.threads.max(1);
    let mut start = reader.weights(0)?;
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
        let (results, mut check) = integrate_step(net, &seg, xs, options, step_tol, s);
        // Train side: a_{i,s} = −η ∂L/∂f(x_i), per-sample gradients in blocks.
        coefficients.observe(&batch.indices, &batch.dloss);
        let coeffs: Vec<f64> = batch.dloss.iter().map(|d| -lr * d).collect();
        let contraction = if options.groups.is_empty() {
            Contraction::choose(net, &results, k, p)
        } else {
            Contraction::Dense(dense_jbar(net, &results, k, p))
        };
        let mut total = vec![0.0; p];
        let block = options.block.max(1);
        for (b, idx) in batch.indices.chunks(block).enumerate() {
            let xb = train.gather(idx);
            let cb = &coeffs[b * block * k..(b * block + idx.len()) * k];
            // contrib[(point, output), sample in block]
            let contrib = match (&contraction, net.layers()) {
                (Contraction::Layered(rows), Some(layers)) => {
                    let f = net.factors(&start, &xb, cb);
                    add(&mut total, &layers.sum_dense(&f));
                    let mut c = Array2::<f64>::zeros((m * k, idx.len()));
                    for (l, r) in rows.iter().enumerate() {
                        let g = layers.gram_layer(l, r, &f);
                        for (q, &own) in r.owner.iter().enumerate() {
                            let mut row = c.row_mut(own);
                            row += &g.row(q);
                        }
                    }
                    c
                }
                (Contraction::Dense(jbar), _) => {
                    let grads = sample_grads(net, &start, &xb, cb, threads);
                    let g =
                        ArrayView2::from_shape((idx.len(), p), &grads).expect("grads are [n, p]");
                    for row in g.rows() {
                        add(&mut total, row.as_slice().expect("contiguous"));
                    }
                    split_groups(&mut groups, &options.groups, jbar, &g, idx, m, k);
                    // [m·k, p] · [p, n] → [m·k, n]
                    jbar.dot(&g.t())
                }
                (Contraction::Layered(_), None) => unreachable!("Layered needs probed layers"),
            };
            scatter(&mut attributions, &contrib, idx, m, k);
        }
        let rho: Vec<f64> = delta.iter().zip(&total).map(|(d, t)| d - t).collect();
        check.decomposition = rho.iter().fold(0.0, |mx, r| mx.max(r.abs()));
        for (pt, r) in results.iter().enumerate() {
            let v = jbar_dot(net, r, &rho);
            for o in 0..k {
                residual[[pt, o]] += v[o];
            }
        }
        checks.push(check);
        start = end;
        progress(s + 1);
    }
    let _ = input_len;
    let network = Array2::from_shape_vec((m, k), net.forward(&start, xs)).expect("f is [m, k]");
    Ok(KernelMachine {
        bias,
        attributions,
        nondata: Array2::zeros((m, k)),
        residual,
        network,
        steps: checks,
        constant_coefficients: coefficients.constant(),
        optimizer: "sgd".into(),
        group_attributions: groups,
    })
}

/// Per step of the forward pass: the linear map's scalars, and where its vectors lie in the
/// scratch file.
struct Kept {
    transform: Transform,
    decomposition: f64,
}

fn replay_stateful<M: EpkModel>(
    reader: &StoreReader,
    net: &Network<M>,
    xs: &[f64],
    options: &ReplayOptions,
    optimizer: Optimizer,
    mut progress: impl FnMut(usize),
) -> Result<KernelMachine, ReplayError> {
    let Setup {
        k,
        p,
        m,
        bias,
        mut attributions,
        step_tol,
        ..
    } = setup(reader, net, xs, options)?;
    let attrs = reader.attrs();
    let train = reader.train()?;
    let steps = reader.steps();
    let threads = options.threads.max(1);
    let block = options.block.max(1);
    let describe = optimizer.describe();
    // Forward: the optimizer's state from the recorded data gradients. Each step's vectors
    // (clipping factors, preconditioner, decay mask, residual) go to a scratch file.
    let mut scratch = Scratch::new(p)?;
    let mut state = OptimizerState::new(optimizer, &attrs.params, p);
    let mut kept: Vec<Kept> = Vec::with_capacity(steps);
    let mut w = reader.weights(0)?;
    for s in 0..steps {
        let next = reader.weights(s + 1)?;
        let batch = reader.batch(s)?;
        let mut grad = vec![0.0; p];
        for (b, idx) in batch.indices.chunks(block).enumerate() {
            let xb = train.gather(idx);
            let cb = &batch.dloss[b * block * k..(b * block + idx.len()) * k];
            add(&mut grad, &net.weighted_grad(&w, &xb, cb));
        }
        let (mut transform, delta) = state.advance(&w, &grad, reader.lr(s)?);
        let rho: Vec<f64> = (0..p).map(|j| (next[j] - w[j]) - delta[j]).collect();
        let decomposition = rho.iter().fold(0.0f64, |mx, r| mx.max(r.abs()));
        scratch.write(
            s,
            [
                transform.clip.take(),
                transform.precondition.take(),
                transform.mask.take(),
                Some(rho),
            ],
        )?;
        kept.push(Kept {
            transform,
            decomposition,
        });
        w = next;
    }
    let network = Array2::from_shape_vec((m, k), net.forward(&w, xs)).expect("f is [m, k]");
    // Backward: Z_s = α_s u_s + a_{s+1} Z_{s+1} with u_s = −η_s D_s ⊙ Jbar_s; the data
    // gradient of step s then meets E_s = γ_s u_s + b_s Z_s.
    let mut nondata = Array2::<f64>::zeros((m, k));
    let mut residual = Array2::<f64>::zeros((m, k));
    let mut groups = group_array(&options.groups, m, attrs.train_samples, k);
    let mut z = Array2::<f64>::zeros((m * k, p));
    let mut a_next = 0.0;
    let mut checks: Vec<StepCheck> = Vec::with_capacity(steps);
    let mut end = w;
    for s in (0..steps).rev() {
        let start = reader.weights(s)?;
        let delta: Vec<f64> = end.iter().zip(&start).map(|(b, a)| b - a).collect();
        let seg = Segment {
            start: &start,
            end: &end,
            delta: &delta,
        };
        let (results, mut check) = integrate_step(net, &seg, xs, options, step_tol, s);
        let t = &kept[s].transform;
        check.decomposition = kept[s].decomposition;
        let [clip, precondition, mask, rho] = scratch.read(s)?;
        let jbar = dense_jbar(net, &results, k, p);
        let mut u = jbar.clone();
        for mut row in u.rows_mut() {
            for (j, v) in row.iter_mut().enumerate() {
                *v *= -t.lr * precondition.as_ref().map_or(1.0, |d| d[j]);
            }
        }
        z *= a_next;
        z.scaled_add(t.alpha, &u);
        let mut e = u;
        e *= t.gamma;
        e.scaled_add(t.b, &z);
        a_next = t.a;
        // Non-data terms: coupled decay through E, decoupled decay through Jbar.
        let rho = rho.expect("the residual is always kept");
        let decay: Vec<f64> = (0..p)
            .map(|j| -t.decoupled * start[j] * mask.as_ref().map_or(1.0, |m| m[j]))
            .collect();
        let coupled: Vec<f64> = start.iter().map(|w| t.coupled * w).collect();
        let row_dot = |r: ndarray::ArrayView1<f64>, v: &[f64]| -> f64 {
            r.iter().zip(v).map(|(a, b)| a * b).sum()
        };
        for pt in 0..m {
            for o in 0..k {
                let row = pt * k + o;
                nondata[[pt, o]] += row_dot(e.row(row), &coupled) + row_dot(jbar.row(row), &decay);
                residual[[pt, o]] += row_dot(jbar.row(row), &rho);
            }
        }
        // Data terms: E_s ⊙ c_s against each sample's gradient at w_s.
        if let Some(c) = &clip {
            for mut row in e.rows_mut() {
                for (v, c) in row.iter_mut().zip(c) {
                    *v *= c;
                }
            }
        }
        let batch = reader.batch(s)?;
        for (b, idx) in batch.indices.chunks(block).enumerate() {
            let xb = train.gather(idx);
            let cb = &batch.dloss[b * block * k..(b * block + idx.len()) * k];
            let grads = sample_grads(net, &start, &xb, cb, threads);
            let g = ArrayView2::from_shape((idx.len(), p), &grads).expect("grads are [n, p]");
            split_groups(&mut groups, &options.groups, &e, &g, idx, m, k);
            scatter(&mut attributions, &e.dot(&g.t()), idx, m, k);
        }
        checks.push(check);
        end = start;
        progress(steps - s);
    }
    checks.reverse();
    Ok(KernelMachine {
        bias,
        attributions,
        nondata,
        residual,
        network,
        steps: checks,
        constant_coefficients: None,
        optimizer: describe,
        group_attributions: groups,
    })
}

fn group_array(
    groups: &[std::ops::Range<usize>],
    m: usize,
    n: usize,
    k: usize,
) -> Option<ndarray::Array4<f64>> {
    (!groups.is_empty()).then(|| ndarray::Array4::zeros((groups.len(), m, n, k)))
}

/// Adds each parameter group's share of a block's contributions: rows `[m·k, p]` against
/// gradients `[n, p]`, restricted to the group's columns.
fn split_groups(
    out: &mut Option<ndarray::Array4<f64>>,
    ranges: &[std::ops::Range<usize>],
    rows: &Array2<f64>,
    grads: &ArrayView2<f64>,
    idx: &[usize],
    m: usize,
    k: usize,
) {
    let Some(out) = out else { return };
    for (q, r) in ranges.iter().enumerate() {
        let cols = ndarray::s![.., r.clone()];
        let contrib = rows.slice(cols).dot(&grads.slice(cols).t());
        let mut target = out.index_axis_mut(Axis(0), q);
        for (c, &i) in idx.iter().enumerate() {
            for pt in 0..m {
                for o in 0..k {
                    target[[pt, i, o]] += contrib[[pt * k + o, c]];
                }
            }
        }
    }
}

/// Adds a block's contributions `[points·outputs, samples]` to A.
fn scatter(
    attributions: &mut Array3<f64>,
    contrib: &Array2<f64>,
    idx: &[usize],
    m: usize,
    k: usize,
) {
    for (c, &i) in idx.iter().enumerate() {
        for pt in 0..m {
            for o in 0..k {
                attributions[[pt, i, o]] += contrib[[pt * k + o, c]];
            }
        }
    }
}

/// Per-sample weighted gradients `[n, p]`, from factors on the fast path.
fn sample_grads<M: EpkModel>(
    net: &Network<M>,
    w: &[f64],
    xs: &[f64],
    coeffs: &[f64],
    threads: usize,
) -> Vec<f64> {
    let p = net.num_params();
    let n = coeffs.len() / net.outputs();
    match net.layers() {
        Some(layers) => {
            let f = net.factors(w, xs, coeffs);
            let mut g = vec![0.0; n * p];
            for (r, row) in g.chunks_mut(p).enumerate() {
                layers.add_dense(&f, r, 1.0, row);
            }
            g
        }
        None => parallel_sample_grads(net, w, xs, coeffs, net.input_len(), net.outputs(), threads),
    }
}

/// Jbar(x)_k · v for every output k.
fn jbar_dot<M: EpkModel>(net: &Network<M>, r: &StepIntegral, v: &[f64]) -> Vec<f64> {
    let k = net.outputs();
    match &r.jbar {
        Jbar::Dense(d) => {
            let p = v.len();
            (0..k)
                .map(|o| {
                    d[o * p..(o + 1) * p]
                        .iter()
                        .zip(v)
                        .map(|(a, b)| a * b)
                        .sum()
                })
                .collect()
        }
        Jbar::Layered(rows) => net
            .layers()
            .expect("layered rows come from probed layers")
            .rows_dot(rows, v, k),
    }
}

/// Dense Jbar rows `[points·outputs, P]`.
fn dense_jbar<M: EpkModel>(
    net: &Network<M>,
    results: &[StepIntegral],
    k: usize,
    p: usize,
) -> Array2<f64> {
    let m = results.len();
    let mut jbar = Array2::<f64>::zeros((m * k, p));
    for (pt, r) in results.iter().enumerate() {
        match &r.jbar {
            Jbar::Dense(d) => jbar
                .slice_mut(ndarray::s![pt * k..(pt + 1) * k, ..])
                .assign(&ArrayView2::from_shape((k, p), d).expect("jbar is [k, p]")),
            Jbar::Layered(rows) => {
                let layers = net.layers().expect("layered rows come from probed layers");
                let mut block = jbar.slice_mut(ndarray::s![pt * k..(pt + 1) * k, ..]);
                layers.rows_add_dense(rows, block.as_slice_mut().expect("contiguous rows"));
            }
        }
    }
    jbar
}

/// Per-step vectors of the forward pass, on disk so that memory does not grow with steps.
struct Scratch {
    file: std::fs::File,
    p: usize,
    /// Which of the four vectors each step has.
    present: Vec<[bool; 4]>,
    offsets: Vec<u64>,
    end: u64,
}

impl Scratch {
    fn new(p: usize) -> Result<Self, ReplayError> {
        let file = tempfile::tempfile()
            .map_err(|e| ReplayError::Input(format!("cannot create a scratch file: {e}")))?;
        Ok(Scratch {
            file,
            p,
            present: Vec::new(),
            offsets: Vec::new(),
            end: 0,
        })
    }

    fn write(&mut self, s: usize, vectors: [Option<Vec<f64>>; 4]) -> Result<(), ReplayError> {
        use std::io::{Seek, SeekFrom, Write};
        debug_assert_eq!(s, self.offsets.len());
        let mut bytes = Vec::new();
        let mut present = [false; 4];
        for (i, v) in vectors.iter().enumerate() {
            if let Some(v) = v {
                present[i] = true;
                bytes.extend(v.iter().flat_map(|x| x.to_le_bytes()));
            }
        }
        let io = |e: std::io::Error| ReplayError::Input(format!("scratch file: {e}"));
        self.file.seek(SeekFrom::Start(self.end)).map_err(io)?;
        self.file.write_all(&bytes).map_err(io)?;
        self.offsets.push(self.end);
        self.present.push(present);
        self.end += bytes.len() as u64;
        Ok(())
    }

    fn read(&mut self, s: usize) -> Result<[Option<Vec<f64>>; 4], ReplayError> {
        use std::io::{Read, Seek, SeekFrom};
        let io = |e: std::io::Error| ReplayError::Input(format!("scratch file: {e}"));
        self.file
            .seek(SeekFrom::Start(self.offsets[s]))
            .map_err(io)?;
        let mut out: [Option<Vec<f64>>; 4] = Default::default();
        let mut buf = vec![0u8; self.p * 8];
        for (i, slot) in out.iter_mut().enumerate() {
            if self.present[s][i] {
                self.file.read_exact(&mut buf).map_err(io)?;
                *slot = Some(
                    buf.chunks_exact(8)
                        .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
                        .collect(),
                );
            }
        }
        Ok(out)
    }
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
    /// Factored Jbar, per layer, against factored gradients: cost ∝ rows·(in + out) per
    /// sample instead of P, where merging (see [`merge_terms`]) leaves one row per (point,
    /// output) in a first layer and a last linear layer whatever the rule's node count.
    Layered(Vec<LayerRows>),
}

impl Contraction {
    fn choose<M: EpkModel>(net: &Network<M>, results: &[StepIntegral], k: usize, p: usize) -> Self {
        let m = results.len();
        let all_nodes = results.iter().all(|r| matches!(r.jbar, Jbar::Layered(_)));
        if let (true, Some(layers)) = (all_nodes, net.layers()) {
            let rows = layer_rows(layers, results, k);
            let cost: usize = rows
                .iter()
                .zip(&layers.layers)
                .map(|(r, l)| r.owner.len() * (l.inputs + l.outputs))
                .sum();
            // Dense costs m·k·p per sample (plus building the dense rows).
            if cost < m * k * p {
                return Contraction::Layered(rows);
            }
        }
        Contraction::Dense(dense_jbar(net, results, k, p))
    }
}

/// Every point's merged Jbar rows, per layer, owned by (point, output).
fn layer_rows(layers: &Layers, results: &[StepIntegral], k: usize) -> Vec<LayerRows> {
    (0..layers.layers.len())
        .map(|l| {
            let mut owner = Vec::new();
            let (mut a, mut d) = (Vec::new(), Vec::new());
            for (pt, r) in results.iter().enumerate() {
                let Jbar::Layered(rows) = &r.jbar else {
                    unreachable!("checked by the caller")
                };
                owner.extend(rows[l].owner.iter().map(|o| pt * k + o));
                a.push(rows[l].a.view());
                d.push(rows[l].d.view());
            }
            LayerRows {
                owner,
                a: ndarray::concatenate(Axis(0), &a).expect("rows of one layer share a width"),
                d: ndarray::concatenate(Axis(0), &d).expect("rows of one layer share a width"),
            }
        })
        .collect()
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
