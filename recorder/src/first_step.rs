//! The first recorded steps, checked against the declared optimizer: a recorder told `.sgd(…)`
//! while training runs Adam would otherwise write a store whose attributions are wrong.
//!
//! At each of the first [`STEPS`] optimizer steps the recorder holds what the optimizer was
//! given (the `GradientsParams`) and what it did (the weights before and after). The declared
//! optimizer, replayed in f64 on the same gradients with its state carried from step to step
//! ([`epk_optim`]), must make the same step up to what the training arithmetic can leave
//! ([`Agreement`]); otherwise recording stops before that step is committed, with the two
//! steps' difference in the error.
//!
//! Why more than one step: some mismatches leave the first step alone. Momentum's buffer
//! starts as the gradient, so SGD with and without momentum take the same first step; Adam's
//! first step is lr·g/(|g| + ε) whatever β₁ and β₂ are. The second step tells them apart.

use crate::RecordError;
use epk_optim::{Agreement, Optimizer, State};
use epk_store::{OptimizerSpec, ParamLayout, TrainDType};

/// How many of a new store's first optimizer steps are checked.
pub(crate) const STEPS: usize = 3;

/// The declared optimizer, ready to replay the first steps.
pub(crate) struct FirstStep {
    describe: String,
    /// Its state after the steps checked so far.
    state: State,
    dtype: TrainDType,
    /// Steps checked so far.
    checked: usize,
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
        let num_params = layout.iter().map(|p| p.len).sum();
        Ok(FirstStep {
            describe: optimizer.describe(),
            state: State::new(optimizer, layout, num_params),
            dtype,
            checked: 0,
        })
    }

    /// Whether the step from `before` to `after`, taken with gradient `grad` at learning rate
    /// `lr`, is the declared optimizer's next step. `Ok(Some(self))` while more steps are to be
    /// checked, `Ok(None)` when done. A step with a non-finite value ends the checks: it is left
    /// to the recorder's [`NonFinite`](crate::NonFinite) policy.
    pub fn check(
        mut self,
        before: &[f64],
        grad: &[f64],
        after: &[f64],
        lr: f64,
    ) -> Result<Option<Self>, RecordError> {
        let finite = |v: &[f64]| v.iter().all(|x| x.is_finite());
        if !(lr.is_finite() && finite(before) && finite(grad) && finite(after)) {
            return Ok(None);
        }
        let describe = self.describe.clone();
        let (_, replayed) = self.state.advance(before, grad, lr);
        let step = self.checked;
        self.checked += 1;
        let taken: Vec<f64> = after.iter().zip(before).map(|(b, a)| b - a).collect();
        let unit = epk_optim::unit_roundoff(self.dtype);
        let agreement = Agreement::new(before, after, &taken, &replayed, unit);
        if agreement.within_rounding() {
            return Ok((self.checked < STEPS).then_some(self));
        }
        let j = agreement.worst;
        Err(RecordError::Mismatch(format!(
            "optimizer step {step} (of the first {STEPS}, which are checked) is not the declared \
             optimizer's ({describe}, learning rate {lr}): weight {j} moved by {:e} where it \
             would move by {:e}, {:.3e} times what \
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
