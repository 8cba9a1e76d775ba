//! What epk needs of a model's forward pass, checked when recording starts: the same output
//! for the same input and weights, and each sample's output independent of the rest of its
//! batch.
//!
//! A Dropout layer in training mode breaks the first (every pass draws a new mask, so replay
//! could never rebuild the steps); BatchNorm in training mode breaks the second (a step is then
//! not a sum of per-sample terms). Both used to be recorded silently and to fail `verify` after
//! many minutes without naming the cause; now they are refused before the first step.

use crate::RecordError;
use crate::own::Explain;
use burn::tensor::{DType, Device, Gradients, Tensor};
use epk_model::{EpkModel, Switches, float_tensor, params};
use epk_store::{Samples, TrainDType};

/// How many rounding units of the training float type two computations of the same value may
/// differ by, relative to the largest magnitude: the first-step check's κ.
const KAPPA: f64 = 16384.0;

/// Checks `model`'s forward pass on the first training samples, on `device`, trained in
/// `dtype`: at its own weights and at perturbed ones, since a layer that starts at zero (a
/// zero last layer, as in Bell et al.'s toy) hides everything before it.
pub(crate) fn check_forward<M: EpkModel>(
    model: &M,
    train: &Samples,
    device: &Device,
    dtype: TrainDType,
) -> Result<(), RecordError> {
    check_at(model, train, device, dtype)?;
    let w = params::flatten(model).map_err(RecordError::Tensor)?;
    // A fixed, weight-sized perturbation: no random draw, so recording stays reproducible.
    let moved: Vec<f64> = w
        .iter()
        .enumerate()
        .map(|(j, v)| v + 0.25 * (1.0 + v.abs()) * (0.7 * j as f64 + 0.3).sin())
        .collect();
    let copy =
        params::load_flat(model.clone(), &moved, device, false).map_err(RecordError::Tensor)?;
    check_at(&copy, train, device, dtype)
}

/// The checks at `model`'s current weights.
fn check_at<M: EpkModel>(
    model: &M,
    train: &Samples,
    device: &Device,
    dtype: TrainDType,
) -> Result<(), RecordError> {
    let n = train.len().min(4);
    let len = train.input(0).len();
    let forward = |rows: std::ops::Range<usize>| -> Result<Vec<f64>, RecordError> {
        let inputs = train.inputs[rows.start * len..rows.end * len].to_vec();
        model
            .epk_forward(
                float_tensor(inputs, [rows.len(), len], device),
                &mut Switches::off(),
            )
            .try_into_vec_as::<f64>()
            .map_err(|e| RecordError::Tensor(format!("{e:?}")))
    };
    let batch = forward(0..n)?;
    // Three passes: a dropout mask drawn twice alike is then out of the question.
    for _ in 0..2 {
        let again = forward(0..n)?;
        let d = max_diff(&batch, &again);
        if d != 0.0 {
            return Err(RecordError::Unsupported(format!(
                "the model's forward pass is random: two passes on the same samples and weights \
                 differ by {d:.3e} (a Dropout layer in training mode?). epk explains the \
                 evaluation network and does not record dropout masks: set the dropout \
                 probability to 0 or remove the layer to record this run"
            )));
        }
    }
    let k = batch.len() / n;
    let alone = forward(0..1)?;
    let d = max_diff(&alone, &batch[..k]);
    let scale = alone.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    // A batched matrix product may round differently from a single row: allow that, and
    // nothing like a batch statistic.
    let allowed = 64.0 * epk_optim::unit_roundoff(dtype) * scale * len as f64;
    if n > 1 && d > allowed {
        return Err(RecordError::Unsupported(format!(
            "the model mixes the samples of a batch: sample 0's output alone differs from its \
             output in a batch of {n} by {d:.3e} (BatchNorm in training mode?). epk splits every \
             step into per-sample terms, which a batch statistic couples; normalise per sample \
             instead (LayerNorm, GroupNorm or RMSNorm)"
        )));
    }
    Ok(())
}

/// The first batch of a new store against the stored samples: your forward on your batch
/// (`f`) must be `epk_forward` on the stored flat inputs of its rows, which is what replay
/// rebuilds. A batcher that normalises, orders or augments differently is refused here.
pub(crate) fn check_batch<M: EpkModel>(
    model: &M,
    train: &Samples,
    indices: &[usize],
    f: &Tensor<2>,
) -> Result<(), RecordError> {
    if let Some(&i) = indices.iter().find(|&&i| i >= train.len()) {
        return Err(RecordError::Mismatch(format!(
            "the batch holds training index {i}, past the {} stored samples",
            train.len()
        )));
    }
    let [rows, k] = f.dims();
    if rows != indices.len() {
        return Err(RecordError::Mismatch(format!(
            "the batch has {rows} rows of outputs but {} indices",
            indices.len()
        )));
    }
    let len = train.input(0).len();
    let inputs: Vec<f64> = indices
        .iter()
        .flat_map(|&i| train.input(i))
        .copied()
        .collect();
    let stored = model.epk_forward(
        float_tensor(inputs, [rows, len], &f.device()),
        &mut Switches::off(),
    );
    let read = |t: Tensor<2>| {
        t.try_into_vec_as::<f64>()
            .map_err(|e| RecordError::Tensor(format!("{e:?}")))
    };
    let (ours, theirs) = (read(f.clone().detach())?, read(stored)?);
    let scale = ours.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    let allowed = KAPPA * unit(f.dtype()) * scale;
    let worst = (0..ours.len())
        .filter(|&j| ours[j].is_finite() && theirs[j].is_finite())
        .max_by(|&a, &b| {
            (ours[a] - theirs[a])
                .abs()
                .total_cmp(&(ours[b] - theirs[b]).abs())
        });
    match worst {
        Some(j) if (ours[j] - theirs[j]).abs() > allowed => Err(RecordError::Mismatch(format!(
            "the model's outputs on the training batch are not epk_forward on the stored \
             samples: training sample {} (row {} of the first batch) gives output {} = {:e} \
             from your batch and {:e} from the stored input. The store must hold each sample \
             as your batcher feeds it (same normalisation and order), and Explain::outputs must \
             be the function epk_forward computes",
            indices[j / k],
            j / k,
            j % k,
            ours[j],
            theirs[j]
        ))),
        _ => Ok(()),
    }
}

/// The first batch's gradient must come through the outputs alone: Σ_i J_iᵀ·dL/df_i, which
/// is all the store records. A loss with a weight penalty, or any other path from the weights
/// to the loss, is refused here; it would otherwise surface only as replay's decomposition
/// residual.
pub(crate) fn check_through_outputs<M: Explain<B>, B>(
    model: &M,
    batch: &B,
    grads: &Gradients,
    dloss: &[f64],
) -> Result<(), RecordError> {
    let f = model.outputs(batch);
    let [rows, k] = f.dims();
    let g = float_tensor(dloss.to_vec(), [rows, k], &f.device()).cast(f.dtype());
    let through = (f.clone() * g).sum().backward();
    let taken = params::flatten_grads(model, grads).map_err(RecordError::Tensor)?;
    let via_f = params::flatten_grads(model, &through).map_err(RecordError::Tensor)?;
    let scale = taken.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let allowed = KAPPA * unit(f.dtype()) * scale;
    let d = max_diff(&taken, &via_f);
    if d > allowed {
        let j = (0..taken.len())
            .max_by(|&a, &b| {
                (taken[a] - via_f[a])
                    .abs()
                    .total_cmp(&(taken[b] - via_f[b]).abs())
            })
            .unwrap_or(0);
        return Err(RecordError::Unsupported(format!(
            "the loss depends on the weights other than through the model's outputs: weight \
             {j}'s gradient is {:e}, of which the outputs' dL/df explain {:e} (an L2 penalty or \
             an auxiliary loss?). epk records dL/df per sample; move a weight penalty into the \
             optimizer (weight decay), which replay rebuilds exactly",
            taken[j], via_f[j]
        )));
    }
    Ok(())
}

/// The unit roundoff of a float type (f32's for anything narrower than f64).
fn unit(dtype: DType) -> f64 {
    match dtype {
        DType::F64 => epk_optim::unit_roundoff(TrainDType::F64),
        _ => epk_optim::unit_roundoff(TrainDType::F32),
    }
}

/// The largest difference between finite entries: non-finite values are the recorder's
/// [`NonFinite`](crate::NonFinite) policy's to report, not a sign of randomness.
fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f64, f64::max)
}
