//! What epk needs of a model's forward pass, checked when recording starts: the same output
//! for the same input and weights, and each sample's output independent of the rest of its
//! batch.
//!
//! A Dropout layer in training mode breaks the first (every pass draws a new mask, so replay
//! could never rebuild the steps); BatchNorm in training mode breaks the second (a step is then
//! not a sum of per-sample terms). Both used to be recorded silently and to fail `verify` after
//! many minutes without naming the cause; now they are refused before the first step.

use crate::RecordError;
use burn::tensor::Device;
use epk_model::{EpkModel, Switches, float_tensor, params};
use epk_store::{Samples, TrainDType};

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

/// The largest difference between finite entries: non-finite values are the recorder's
/// [`NonFinite`](crate::NonFinite) policy's to report, not a sign of randomness.
fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f64, f64::max)
}
