//! The first recorded step, checked against the declared optimizer: a recorder told `.sgd(…)`
//! while training runs Adam would otherwise write a store whose attributions are wrong.
//!
//! At the first optimizer step the recorder holds what the optimizer was given (the
//! `GradientsParams`) and what it did (the weights before and after). The declared optimizer,
//! replayed in f64 on the same gradients ([`epk_optim`]), must make the same step up to what the
//! training arithmetic can leave ([`Agreement`]); otherwise recording stops before anything
//! is committed, with the two steps' difference in the error.

use crate::RecordError;
use epk_optim::{Agreement, Optimizer, State};
use epk_store::{OptimizerSpec, ParamLayout, TrainDType};

/// The declared optimizer, ready to replay the first step.
pub(crate) struct FirstStep {
    optimizer: Optimizer,
    layout: Vec<ParamLayout>,
    dtype: TrainDType,
}

impl FirstStep {
    /// Reads the declared optimizer; one epk cannot replay is refused here, when recording
    /// starts.
    pub fn new(
        spec: &OptimizerSpec,
        layout: &[ParamLayout],
        dtype: TrainDType,
    ) -> Result<Self, RecordError> {
        let optimizer =
            Optimizer::from_spec(spec).map_err(|e| RecordError::Config(e.to_string()))?;
        Ok(FirstStep {
            optimizer,
            layout: layout.to_vec(),
            dtype,
        })
    }

    /// Whether the step from `before` to `after`, taken with gradient `grad` at learning rate
    /// `lr`, is the declared optimizer's first step. A step with a non-finite value is left to
    /// the recorder's [`NonFinite`](crate::NonFinite) policy.
    pub fn check(
        self,
        before: &[f64],
        grad: &[f64],
        after: &[f64],
        lr: f64,
    ) -> Result<(), RecordError> {
        let finite = |v: &[f64]| v.iter().all(|x| x.is_finite());
        if !(lr.is_finite() && finite(before) && finite(grad) && finite(after)) {
            return Ok(());
        }
        let describe = self.optimizer.describe();
        let mut state = State::new(self.optimizer, &self.layout, before.len());
        let (_, replayed) = state.advance(before, grad, lr);
        let taken: Vec<f64> = after.iter().zip(before).map(|(b, a)| b - a).collect();
        let unit = epk_optim::unit_roundoff(self.dtype);
        let agreement = Agreement::new(before, after, &taken, &replayed, unit);
        if agreement.within_rounding() {
            return Ok(());
        }
        let j = agreement.worst;
        Err(RecordError::Mismatch(format!(
            "the first optimizer step is not the declared optimizer's ({describe}, learning \
             rate {lr}): weight {j} moved by {:e} where it would move by {:e}, {:.3e} times what \
             {} arithmetic can leave, and {:.2e} of the step is unexplained. Declare the \
             optimizer training runs with Recorder::optimizer(&config), with its \
             hyper-parameters and gradient clipping",
            taken[j],
            replayed[j],
            agreement.rounding_units,
            match self.dtype {
                TrainDType::F32 => "f32",
                TrainDType::F64 => "f64",
            },
            agreement.relative
        )))
    }
}
