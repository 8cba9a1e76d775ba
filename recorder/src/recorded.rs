use crate::batch::IndexedBatch;
use crate::first_step::FirstStep;
use crate::hook::Hook;
use crate::own::{Explain, HasIndices};
use crate::{RecordError, Recorder, contract, loss};
use burn::module::Module;
use burn::optim::lr_scheduler::module_lr_scheduler::ModuleLearningRate;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::{Int, Tensor};
use burn::train::{ClassificationOutput, InferenceStep, TrainOutput, TrainStep};
use epk_model::EpkModel;
use epk_model::nn::dropout::{self, Keys};
use epk_model::params;
use std::marker::PhantomData;
use std::path::Path;

/// A model with a recorder attached. It trains exactly like the model itself (burn-train's
/// `Learner` or a hand-written loop calling [`TrainStep::step`] and [`TrainStep::optimize`]),
/// and records every optimizer step.
///
/// `B` is the batch it trains on: epk's flat [`IndexedBatch`] by default, or your own batch
/// type carried in an [`Indexed`](crate::Indexed) (see [`Explain`]).
#[derive(Module, Debug)]
pub struct Recorded<M: Module, B = IndexedBatch> {
    /// The model being trained.
    pub model: M,
    #[module(skip)]
    hook: Hook,
    #[module(skip)]
    batches: TrainsOn<B>,
}

/// The batch type a recorded model trains on; holds no data.
pub struct TrainsOn<B>(PhantomData<fn(B) -> B>);

impl<B> Clone for TrainsOn<B> {
    fn clone(&self) -> Self {
        TrainsOn(PhantomData)
    }
}

/// The batch type's name without module paths (`Indexed<MnistBatch>`), for Burn's summaries.
impl<B> std::fmt::Debug for TrainsOn<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let full = std::any::type_name::<B>();
        let mut short = String::with_capacity(full.len());
        let mut word = String::new();
        for c in full.chars() {
            if c.is_alphanumeric() || c == '_' || c == ':' {
                word.push(c);
            } else {
                short.push_str(word.rsplit("::").next().unwrap_or(""));
                word.clear();
                short.push(c);
            }
        }
        short.push_str(word.rsplit("::").next().unwrap_or(""));
        f.write_str(&short)
    }
}

/// Attaches a [`Recorder`] to a model: the one line added to training code.
pub trait WithRecorder: EpkModel {
    /// Creates the store, writes the initial weights and returns the recording model, which
    /// trains on batches of type `B` (inferred from the data loader; epk's flat
    /// [`IndexedBatch`] when the model explains no other).
    fn with_recorder<B>(self, recorder: Recorder) -> Result<Recorded<Self, B>, RecordError>
    where
        Self: Explain<B>;
}

impl<M: EpkModel> WithRecorder for M {
    fn with_recorder<B>(self, recorder: Recorder) -> Result<Recorded<M, B>, RecordError>
    where
        M: Explain<B>,
    {
        let hook = recorder.start(&self)?;
        Ok(Recorded {
            model: self,
            hook,
            batches: TrainsOn(PhantomData),
        })
    }
}

impl<M: EpkModel, B> Recorded<M, B> {
    /// Optimizer steps recorded so far.
    pub fn steps(&self) -> usize {
        self.hook.steps()
    }

    /// How many optimizer steps had to wait for the store writer because its queue was full
    /// (the disk or the writer thread fell behind training). Zero means recording never
    /// stalled training.
    pub fn stalls(&self) -> usize {
        self.hook.stalls()
    }

    /// The store being written.
    pub fn store_path(&self) -> &Path {
        self.hook.path()
    }

    /// The error that stopped recording, if one did.
    pub fn error(&self) -> Option<String> {
        self.hook.error()
    }

    /// `Err` once recording has stopped (a hand-written loop's way to stop promptly).
    pub fn check(&self) -> Result<(), RecordError> {
        match self.hook.error() {
            Some(e) => Err(RecordError::WriterGone(e)),
            None => Ok(()),
        }
    }

    /// Waits for every step to reach the disk, marks the run finished and returns the model.
    pub fn finish(self) -> Result<M, RecordError> {
        self.hook.finish()?;
        Ok(self.model)
    }
}

impl<M, B> Recorded<M, B>
where
    M: Explain<B>,
    B: HasIndices + Clone + std::fmt::Debug + Send + Sync + 'static,
{
    /// Forward, loss and backward for one (micro-)batch, noting the per-sample dL/df.
    ///
    /// A zero probe added to the outputs is a leaf whose gradient is dL/df, so one backward
    /// pass gives both the parameters' gradients and what is recorded: what is recorded is
    /// exactly what entered the optimizer, at the cost of one addition.
    fn forward_backward(&self, batch: B) -> TrainOutput<ClassificationOutput> {
        // Dropout masks keyed by the step and each row's sample, so replay rebuilds them.
        let keys = Keys {
            step: self.hook.steps(),
            rows: batch.indices(),
        };
        let (f, mismatch) = dropout::keyed(Some(keys), || self.model.outputs(&batch));
        if let Some(e) = mismatch {
            self.hook.fail(RecordError::Unsupported(e));
        }
        let targets = self.model.targets(&batch);
        // The first batch of a new store: the contract between your batch and the store.
        let train = self.hook.take_first_batch();
        if let Some(train) = &train
            && let Err(e) =
                contract::check_batch(&self.model, train, keys, &self.model.inputs(&batch), &f)
        {
            self.hook.fail(e);
        }
        let probe = f.zeros_like().detach().require_grad();
        let loss = self.loss(f.clone() + probe.clone(), &batch, targets.clone());
        let grads = loss.backward();
        if train.is_some()
            && let Err(e) = contract::check_loss_reads_outputs(&self.model, &batch, &f)
        {
            self.hook.fail(e);
        }
        match probe.grad(&grads).map(|g| g.try_into_vec_as::<f64>()) {
            Some(Ok(values)) => self.hook.micro_batch(batch.indices(), values),
            Some(Err(e)) => self.hook.fail(RecordError::Tensor(format!("{e:?}"))),
            None => self.hook.fail(RecordError::Tensor(
                "the loss does not depend on the outputs".into(),
            )),
        }
        let output = ClassificationOutput::new(loss.detach(), f.detach(), targets);
        TrainOutput::new(self, grads, output)
    }

    /// The training loss of outputs `f`: the model's own when it computes one (and the store
    /// declares [`Loss::Model`]), else the declared one. A disagreement stops recording.
    fn loss(&self, f: Tensor<2>, batch: &B, targets: Tensor<1, Int>) -> Tensor<1> {
        let declared = self.hook.loss();
        let own = self.model.loss(f.clone(), batch);
        match (own, loss::loss(declared, f.clone(), targets.clone())) {
            (Some(own), None) => own,
            (None, Some(declared)) => declared,
            (Some(own), Some(_)) => {
                self.hook.fail(RecordError::Config(format!(
                    "the model computes its own loss for this batch type (Explain::loss), but the \
                     recorder was told {declared:?}; declare Recorder::loss(Loss::Model) so the \
                     store records that loss's dL/df"
                )));
                own
            }
            (None, None) => {
                self.hook.fail(RecordError::Config(
                    "Loss::Model is declared, but the model's Explain impl for this batch type \
                     computes no loss (Explain::loss returns None)"
                        .into(),
                ));
                loss::cross_entropy(f, targets)
            }
        }
    }
}

impl<M: EpkModel, B> Recorded<M, B> {
    /// Stops recording, before the step is committed, if one of the first steps is not the
    /// declared optimizer's.
    fn check_first_step(
        &self,
        check: FirstStep,
        before: Result<Vec<f64>, String>,
        grad: Result<Vec<f64>, String>,
        lr: f64,
    ) {
        let after = params::flatten(&self.model);
        let outcome = match (before, grad, after) {
            (Ok(before), Ok(grad), Ok(after)) => check.check(&before, &grad, &after, lr),
            (Err(e), ..) | (_, Err(e), _) | (.., Err(e)) => Err(RecordError::Tensor(e)),
        };
        match outcome {
            Ok(Some(next)) => self.hook.put_first_step(next),
            Ok(None) => {}
            Err(e) => self.hook.fail(e),
        }
    }
}

impl<M, B> TrainStep for Recorded<M, B>
where
    M: Explain<B> + 'static,
    B: HasIndices + Clone + std::fmt::Debug + Send + Sync + 'static,
{
    type Input = B;
    type Output = ClassificationOutput;

    fn step(&self, batch: B) -> TrainOutput<ClassificationOutput> {
        self.forward_backward(batch)
    }

    fn optimize(
        self,
        optim: &mut ModuleOptimizer,
        lr_module: ModuleLearningRate,
        grads: GradientsParams,
    ) -> Self {
        let lr = lr_module.base();
        // The first step of a new store: what the optimizer is given, read before it steps.
        let check = self.hook.take_first_step().map(|check| {
            let before = params::flatten(&self.model);
            let grad = params::flatten_grads_params(&self.model, &grads);
            (check, before, grad)
        });
        let updated = optim.step(lr_module, self, grads);
        if let Some((check, before, grad)) = check {
            updated.check_first_step(check, before, grad, lr);
        }
        // Weights changed outside the optimizer between steps are not checked here (that
        // would read the weights twice per step): replay's decomposition residual exposes them.
        updated.hook.commit(params::snapshot(&updated.model), lr);
        updated
    }
}

/// Validation uses the recorded loss, so burn-train's metrics report what training optimises.
impl<M, B> InferenceStep for Recorded<M, B>
where
    M: Explain<B> + 'static,
    B: HasIndices + Clone + std::fmt::Debug + Send + Sync + 'static,
{
    type Input = B;
    type Output = ClassificationOutput;

    fn step(&self, batch: B) -> ClassificationOutput {
        // The explained network: Dropout off.
        let f = dropout::evaluation(|| self.model.outputs(&batch));
        let targets = self.model.targets(&batch);
        let loss = self
            .model
            .loss(f.clone(), &batch)
            .or_else(|| loss::loss(self.hook.loss(), f.clone(), targets.clone()))
            .unwrap_or_else(|| loss::cross_entropy(f.clone(), targets.clone()));
        ClassificationOutput::new(loss, f, targets)
    }
}
