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
use burn::tensor::{DType, Device, Tensor};
use epk_model::nn::dropout::{self, Keys};
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
        let x = float_tensor(inputs, [rows.len(), len], device);
        // epk's Dropout keys its masks by sample: a training pass is then a function of the
        // inputs and weights. Burn's own draws anew, which the checks below refuse.
        let indices: Vec<usize> = rows.collect();
        let keys = Keys {
            step: 0,
            rows: &indices,
        };
        let (f, mismatch) =
            dropout::keyed(Some(keys), || model.epk_forward(x, &mut Switches::off()));
        if let Some(e) = mismatch {
            return Err(RecordError::Unsupported(e));
        }
        f.try_into_vec_as::<f64>()
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
                 differ by {d:.3e} (Burn's Dropout layer in training mode?). Use \
                 epk::model::nn::Dropout instead: it draws its masks from the step and the \
                 sample, so replay rebuilds them (or set the dropout probability to 0)"
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
    keys: Keys<'_>,
    given: &Tensor<2>,
    f: &Tensor<2>,
) -> Result<(), RecordError> {
    let indices = keys.rows;
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
    check_inputs(given, &inputs, indices)?;
    let x = float_tensor(inputs, [rows, len], &f.device());
    let (stored, _) = dropout::keyed(Some(keys), || model.epk_forward(x, &mut Switches::off()));
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

/// The batch's own inputs (`Explain::inputs`) against the stored samples of its rows: equal up
/// to the rounding of the batch's float type (samples formed by `stored_samples` are equal).
fn check_inputs(given: &Tensor<2>, stored: &[f64], indices: &[usize]) -> Result<(), RecordError> {
    let ours = given
        .clone()
        .try_into_vec_as::<f64>()
        .map_err(|e| RecordError::Tensor(format!("{e:?}")))?;
    let len = stored.len() / indices.len().max(1);
    if ours.len() != stored.len() {
        return Err(RecordError::Mismatch(format!(
            "the batch's inputs have {} values per row (Explain::inputs), the stored samples {len}",
            ours.len() / indices.len().max(1)
        )));
    }
    let u = unit(given.dtype());
    let differs = |j: usize| {
        let (a, b) = (ours[j], stored[j]);
        // NaN against NaN is the same sample: a non-finite input is the NonFinite policy's.
        let same = a == b || (a.is_nan() && b.is_nan());
        !(same || (a - b).abs() <= 4.0 * u * a.abs().max(b.abs()))
    };
    match (0..ours.len()).find(|&j| differs(j)) {
        Some(j) => Err(RecordError::Mismatch(format!(
            "the batch's inputs are not the stored samples: training sample {} (row {} of the \
             first batch) has value {:e} at position {} in your batch and {:e} in the store. \
             Form the store's samples with your batcher (epk::recorder::stored_samples), so it \
             holds each sample as your batches feed it",
            indices[j / len],
            j / len,
            ours[j],
            j % len,
            stored[j]
        ))),
        None => Ok(()),
    }
}

/// The loss must reach the weights through the outputs alone: the gradient is then
/// Σ_i J_iᵀ·dL/df_i, which is all the store records. Checked exactly, not to a tolerance: the
/// loss is differentiated with the outputs held fixed, and any weight gradient left is a path
/// around them (a weight penalty, an auxiliary loss), refused here instead of surfacing as
/// replay's decomposition residual. Only the first batch is checked.
pub(crate) fn check_loss_reads_outputs<M: Explain<B>, B>(
    model: &M,
    batch: &B,
    f: &Tensor<2>,
) -> Result<(), RecordError> {
    let held = f.clone().detach().require_grad();
    let Some(loss) = model.loss(held, batch) else {
        return Ok(());
    };
    let grads = loss.backward();
    let around = params::flatten_grads(model, &grads).map_err(RecordError::Tensor)?;
    match around.iter().position(|v| *v != 0.0) {
        Some(j) => Err(RecordError::Unsupported(format!(
            "the loss depends on the weights other than through the model's outputs: with the \
             outputs held fixed, weight {j}'s gradient is still {:e} (an L2 penalty or an \
             auxiliary loss?). epk records dL/df per sample; move a weight penalty into the \
             optimizer (weight decay), which replay rebuilds exactly",
            around[j]
        ))),
        None => Ok(()),
    }
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
