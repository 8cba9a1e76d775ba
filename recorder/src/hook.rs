//! State shared by every clone of a recorded model: the micro-batches since the last
//! optimizer step and the writer.

use crate::RecordError;
use crate::first_step::FirstStep;
use crate::non_finite::NonFinite;
use crate::writer::{PendingStep, Writer};
use burn::data::dataset::DatasetError;
use burn::train::Interrupter;
use epk_model::params::Snapshot;
use epk_store::{Fault, Loss, Samples, StepRecord};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// Fixed facts about the run the hook records.
pub(crate) struct HookConfig {
    pub path: PathBuf,
    pub loss: Loss,
    pub outputs: usize,
    pub max_batch: usize,
    pub steps: usize,
    pub non_finite: NonFinite,
    pub interrupter: Option<Interrupter>,
    /// The declared optimizer, to check the first step of a new store against.
    pub first_step: Option<FirstStep>,
    /// The stored training samples, to check the first batch of a new store against.
    pub first_batch: Option<Samples>,
}

struct State {
    config: HookConfig,
    indices: Vec<usize>,
    dloss: Vec<f64>,
    steps: usize,
    error: Option<String>,
    writer: Writer,
}

/// Cheap to clone: Burn clones the module at every step.
#[derive(Clone)]
pub(crate) struct Hook {
    path: Arc<PathBuf>,
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Recorder({})", self.path.display())
    }
}

impl Hook {
    pub(crate) fn new(config: HookConfig, writer: Writer) -> Self {
        Hook {
            path: Arc::new(config.path.clone()),
            state: Arc::new(Mutex::new(State {
                indices: Vec::new(),
                dloss: Vec::new(),
                steps: config.steps,
                error: None,
                writer,
                config,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn loss(&self) -> Loss {
        self.lock().config.loss
    }

    pub(crate) fn steps(&self) -> usize {
        self.lock().steps
    }

    pub(crate) fn stalls(&self) -> usize {
        self.lock().writer.stalls()
    }

    /// The first recording error, if any; recording stops at it. A fault the writer thread
    /// found (a write error, non-finite weights) counts from the moment it was found.
    pub(crate) fn error(&self) -> Option<String> {
        let mut s = self.lock();
        if s.error.is_none()
            && let Some(e) = s.writer.failure()
        {
            Self::stop(&mut s, e);
        }
        s.error.clone()
    }

    /// The first-steps check, for the step being taken: None once the first steps are checked
    /// (see [`Hook::put_first_step`]), on a resumed store, or once recording has stopped.
    pub(crate) fn take_first_step(&self) -> Option<FirstStep> {
        let mut s = self.lock();
        if s.error.is_some() {
            return None;
        }
        s.config.first_step.take()
    }

    /// Hands the first-steps check back for the next step (unless recording has stopped).
    pub(crate) fn put_first_step(&self, check: FirstStep) {
        let mut s = self.lock();
        if s.error.is_none() {
            s.config.first_step = Some(check);
        }
    }

    /// The stored samples to check the first batch against, once: None after the first call,
    /// on a resumed store, or once recording has stopped.
    pub(crate) fn take_first_batch(&self) -> Option<Samples> {
        let mut s = self.lock();
        if s.error.is_some() {
            return None;
        }
        s.config.first_batch.take()
    }

    /// Notes a micro-batch's samples and dL/df; they join the next optimizer step.
    pub(crate) fn micro_batch(&self, indices: &[usize], dloss: Vec<f64>) {
        let mut s = self.lock();
        s.indices.extend_from_slice(indices);
        s.dloss.extend(dloss);
    }

    /// Records one optimizer step that left the weights `after`; the writer thread reads them.
    pub(crate) fn commit(&self, after: Snapshot, lr: f64) {
        let mut s = self.lock();
        if s.error.is_some() {
            return;
        }
        if let Err(e) = Self::commit_locked(&mut s, after, lr) {
            Self::stop(&mut s, e);
        }
    }

    /// Stops recording with `error`.
    pub(crate) fn fail(&self, error: RecordError) {
        let mut s = self.lock();
        if s.error.is_none() {
            Self::stop(&mut s, error);
        }
    }

    fn stop(s: &mut State, error: RecordError) {
        let message = format!("epk recorder stopped at step {}: {error}", s.steps);
        eprintln!("{message}");
        if let Some(interrupter) = &s.config.interrupter {
            interrupter.fail(DatasetError::new(std::io::Error::other(message.clone())));
        }
        s.error = Some(message);
    }

    fn commit_locked(s: &mut State, after: Snapshot, lr: f64) -> Result<(), RecordError> {
        let indices = std::mem::take(&mut s.indices);
        let dloss = std::mem::take(&mut s.dloss);
        if indices.is_empty() {
            return Err(RecordError::Mismatch(
                "an optimizer step came without a training step before it".into(),
            ));
        }
        if indices.len() > s.config.max_batch {
            return Err(RecordError::Config(format!(
                "a step used {} samples, more than max_batch = {}",
                indices.len(),
                s.config.max_batch
            )));
        }
        debug_assert_eq!(dloss.len(), indices.len() * s.config.outputs);
        let fault = non_finite(&dloss, lr).map(|message| Fault {
            step: s.steps,
            message,
        });
        if let Some(fault) = &fault {
            s.writer.fault(fault.clone())?;
            if s.config.non_finite == NonFinite::Stop {
                return Err(RecordError::NonFinite(fault.message.clone()));
            }
        }
        s.writer.pending(PendingStep {
            record: StepRecord {
                lr,
                indices,
                dloss,
                weights_after: Vec::new(),
            },
            weights: after,
            step: s.steps,
            // Weights are checked where they are read; one fault per step is enough.
            check: fault.is_none().then_some(s.config.non_finite),
        })?;
        s.steps += 1;
        Ok(())
    }

    /// Writes everything queued and marks the run finished.
    pub(crate) fn finish(&self) -> Result<usize, RecordError> {
        let mut s = self.lock();
        s.writer.finish()?;
        match &s.error {
            Some(e) => Err(RecordError::WriterGone(e.clone())),
            None => Ok(s.steps),
        }
    }
}

/// Describes the first non-finite learning rate or dL/df of a step, if there is one (the
/// writer thread checks the weights).
fn non_finite(dloss: &[f64], lr: f64) -> Option<String> {
    if !lr.is_finite() {
        return Some(format!("learning rate is {lr}"));
    }
    dloss
        .iter()
        .position(|v| !v.is_finite())
        .map(|i| format!("dL/df entry {i} is {}", dloss[i]))
}
