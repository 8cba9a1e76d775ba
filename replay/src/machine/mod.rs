//! The kernel machine: b + Σ_i A[x, i, ·] for every explained input, rebuilt step by step.
//!
//! [`replay`] walks the stored steps (`walk.rs`) once forward for plain gradient descent
//! (`plain.rs`), or forward then backward for optimizers with state (`stateful.rs`: the
//! adjoint of momentum and Adam's first moment); each step's Jbar meets the training gradients
//! in `contraction.rs`. The path kernel between arbitrary inputs walks the same steps
//! ([`crate::kernels::path`]).

pub(crate) mod boundary;
pub(crate) mod coefficients;
pub(crate) mod compensated;
pub(crate) mod contraction;
mod plain;
mod scratch;
mod stateful;
pub(crate) mod walk;

use crate::network::Network;
use crate::optimizer::Optimizer;
use crate::{ReplayError, Rule};
use epk_model::EpkModel;
use epk_store::StoreReader;
use ndarray::{Array2, Array3, Axis};

/// What to replay and how.
#[derive(Clone, Debug)]
pub struct ReplayOptions {
    /// The quadrature rule of the path integral.
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
    /// Bytes the stateful backward pass's `[points·outputs, P]` arrays (Z and Jbar) may take:
    /// [`replay`] replays blocks of points that fit, one after another.
    pub adjoint_bytes: usize,
    /// Bytes a block's per-sample gradients `[samples, P]` may take when the stateful backward
    /// pass meets them with E_s: above it a model on the structured path meets their factors
    /// instead ([`Layers::rows_against`](crate::jacobian::Layers::rows_against)),
    /// the same multiply-adds in many small products, which cost small models more than
    /// forming the gradients.
    pub gradient_bytes: usize,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions {
            rule: Rule::Auto,
            tolerance: 1e-12,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            block: 256,
            groups: Vec::new(),
            adjoint_bytes: ADJOINT_BYTES,
            gradient_bytes: GRADIENT_BYTES,
        }
    }
}

/// Per-step facts that `verify` checks.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct StepCheck {
    /// The step, from 0.
    pub step: usize,
    /// Worst certificate over the points, and the point it was met at.
    pub certificate: f64,
    /// The point of the worst certificate.
    pub worst_point: usize,
    /// ρ_s = Δw_s − (per-sample terms + non-data terms): how far the replayed optimizer's step
    /// is from the step training took, in absolute terms and against the rounding the training
    /// arithmetic can leave ([`Agreement`](crate::optimizer::Agreement)).
    pub decomposition: crate::optimizer::Agreement,
    /// Jacobian evaluations over all points.
    pub evals: usize,
    /// Smooth pieces over all points.
    pub pieces: usize,
    /// max over points of the larger of ε max_k (|f_k(w_s)| + |f_k(w_s+1)|) and the measured
    /// rounding noise of f near w_s ([`crate::quadrature::noise`]): the rounding the step's
    /// change carries as f64 computes it, below which its certificate cannot go.
    pub rounding: f64,
    /// With the `auto` rule, a bound on the error of the step's Jbar in ℓ2 over the parameters,
    /// the worst over points and outputs; `None` for the fixed rules, which certify nothing.
    pub jbar_error: Option<f64>,
    /// For plain gradient descent with the `auto` rule: a bound on what that error moves any
    /// one training point's term of this step, max over points, outputs and samples of
    /// ‖Jbar error‖₂ · ‖a_{i,s}∇_w f(x_i; w_s)‖₂. `None` where it is not computed (the fixed
    /// rules, and optimizers with state, whose terms read Jbar through the adjoint).
    pub attribution_bound: Option<f64>,
}

/// The exact path kernel machine for a set of inputs.
///
/// f(x; w_N) = b(x) + Σ_i A[x, i, ·] where b(x) = f(x; w_0) and
/// A[x, i, k] = Σ_s Σ_j a_{i,j,s} ⟨Jbar_s(x)_k, ∇_w f_j(x_i; w_s)⟩, a_{i,s} = −η_s ∂L/∂f(x_i)
/// (Bell et al., Theorem 3.6).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
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
    /// What `verify` checks, per step.
    pub steps: Vec<StepCheck>,
    /// a_i when it is the same at every step (Theorem 3.7), per training sample: then
    /// A[x, i, k] = a_i K(x, x_i)_k with one kernel K for the whole run.
    pub constant_coefficients: Option<Vec<f64>>,
    /// The optimizer replayed, in one line.
    pub optimizer: String,
    /// A split by [`ReplayOptions::groups`], `[groups, points, train samples, outputs]`: the
    /// groups' attributions add up to `attributions`.
    pub group_attributions: Option<ndarray::Array4<f64>>,
    /// The training float type's unit roundoff, which bounds what ρ_s may be
    /// ([`Agreement`](crate::optimizer::Agreement)).
    pub unit_roundoff: f64,
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
        &self.bias
            + &compensated::sum_over_samples(&self.attributions)
            + &self.nondata
            + &self.residual
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

/// What every replay needs before its first step.
struct Setup {
    /// Outputs, parameters, points.
    k: usize,
    p: usize,
    m: usize,
    /// b(x) = f(x; w_0), `[points, outputs]`.
    bias: Array2<f64>,
    /// A, zero, `[points, train samples, outputs]`, summed with compensation.
    attributions: compensated::Attributions,
}

impl Setup {
    /// For a replay that starts at step `start` (b is f at w_start).
    fn new<M: EpkModel>(
        reader: &StoreReader,
        net: &Network<M>,
        xs: &[f64],
        start: usize,
    ) -> Result<Self, ReplayError> {
        let attrs = reader.attrs();
        let (k, p, n_train) = (attrs.outputs, attrs.num_params, attrs.train_samples);
        let m = xs.len() / attrs.input_len();
        if m == 0 {
            return Err(ReplayError::Input("no inputs to explain".into()));
        }
        let w0 = reader.weights(start)?;
        let bias = Array2::from_shape_vec((m, k), net.forward(&w0, xs)).expect("f is [m, k]");
        Ok(Setup {
            k,
            p,
            m,
            bias,
            attributions: compensated::Attributions::zeros((m, n_train, k)),
        })
    }
}

/// A replay of the steps `s0..s1` alone: the machine of that stretch of the path (its `bias` is
/// f(x; w_s0) and its `network` f(x; w_s1)), with what joining it to the other stretches needs
/// ([`crate::shard`]).
pub(crate) struct Part {
    /// The stretch's machine.
    pub machine: KernelMachine,
    /// Each sample's dL/df as seen in the stretch (plain gradient descent).
    pub coefficients: Option<coefficients::Coefficients>,
    /// Where the stretch meets the steps after it (optimizers with state).
    pub boundary: Option<boundary::Boundary>,
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
///
/// The backward pass holds the adjoint Z and one step's Jbar, each `[points·outputs, P]`: with
/// more points than fit in [`ReplayOptions::adjoint_bytes`], the points are replayed in blocks one after
/// another (each block repeats the forward pass, one gradient per step) and set side by side,
/// so memory stays flat in the number of points too.
pub fn replay<M: EpkModel>(
    reader: &StoreReader,
    net: &Network<M>,
    xs: &[f64],
    options: &ReplayOptions,
    mut progress: impl FnMut(usize),
) -> Result<KernelMachine, ReplayError> {
    let steps = reader.steps();
    let len = net.input_len().max(1);
    let points = xs.len() / len;
    let blocks = point_blocks(reader, net, points, options)?;
    if blocks <= 1 {
        return Ok(replay_steps(reader, net, xs, options, 0..steps, progress)?.machine);
    }
    let mut machines = Vec::with_capacity(blocks);
    let mut starts = Vec::with_capacity(blocks);
    for b in 0..blocks {
        let range = (b * points / blocks)..((b + 1) * points / blocks);
        let block = &xs[range.start * len..range.end * len];
        // Progress over the whole job: block b's step s is (b·steps + s) / blocks steps done.
        let report = |s: usize| progress((b * steps + s) / blocks);
        machines.push(replay_steps(reader, net, block, options, 0..steps, report)?.machine);
        starts.push(range.start);
    }
    Ok(crate::shard::side_by_side(machines, &starts))
}

/// How many blocks of points [`replay`] replays `points` held-out points in: one unless the
/// optimizer has state and the backward pass's arrays (Z and one step's Jbar, each
/// `[points·outputs, P]` in f64) would not fit in [`ReplayOptions::adjoint_bytes`]; then blocks
/// of as many points as fit (at least one), so no block passes the budget unless one point
/// alone does.
pub fn point_blocks<M: EpkModel>(
    reader: &StoreReader,
    net: &Network<M>,
    points: usize,
    options: &ReplayOptions,
) -> Result<usize, ReplayError> {
    if Optimizer::from_spec(&reader.attrs().optimizer)?.is_plain() {
        return Ok(1);
    }
    let per_point = 2 * net.outputs() * net.num_params() * size_of::<f64>();
    let per_block = (options.adjoint_bytes / per_point.max(1)).max(1);
    Ok(points.div_ceil(per_block).max(1))
}

/// The default [`ReplayOptions::adjoint_bytes`]: 512 MiB.
pub const ADJOINT_BYTES: usize = 512 << 20;

/// The default [`ReplayOptions::gradient_bytes`]: 64 MiB (the digits CNN's 64 samples take
/// 1 MB and are formed; Burn's guide model's take 272 MB and meet E_s as factors).
pub const GRADIENT_BYTES: usize = 64 << 20;

/// [`replay`] of the steps `steps` alone; `progress` counts the steps done in the range.
pub(crate) fn replay_steps<M: EpkModel>(
    reader: &StoreReader,
    net: &Network<M>,
    xs: &[f64],
    options: &ReplayOptions,
    steps: std::ops::Range<usize>,
    progress: impl FnMut(usize),
) -> Result<Part, ReplayError> {
    let optimizer = Optimizer::from_spec(&reader.attrs().optimizer)?;
    if let Some(x) = xs.get(..net.input_len()) {
        // At the last weights: a zero last layer at w_0 would hide everything before it.
        crate::precision::check(net, &reader.weights(reader.steps())?, x)?;
    }
    if steps.start > steps.end || steps.end > reader.steps() {
        return Err(ReplayError::Input(format!(
            "steps {}..{} are not a stretch of the store's {} committed steps",
            steps.start,
            steps.end,
            reader.steps()
        )));
    }
    if optimizer.is_plain() {
        plain::replay(reader, net, xs, options, steps, progress)
    } else {
        stateful::replay(reader, net, xs, options, optimizer, steps, progress)
    }
}
