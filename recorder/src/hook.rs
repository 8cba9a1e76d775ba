//! State shared by every clone of a recorded model: the micro-batches since the last
//! optimizer step and the writer.

use crate::RecordError;
use crate::writer::Writer;
use epk_store::{Loss, StepRecord};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

struct State {
    loss: Loss,
    outputs: usize,
    max_batch: usize,
    indices: Vec<usize>,
    dloss: Vec<f64>,
    last_weights: Vec<f64>,
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
    pub(crate) fn new(
        path: PathBuf,
        loss: Loss,
        outputs: usize,
        max_batch: usize,
        weights: Vec<f64>,
        writer: Writer,
    ) -> Self {
        Hook {
            path: Arc::new(path),
            state: Arc::new(Mutex::new(State {
                loss,
                outputs,
                max_batch,
                indices: Vec::new(),
                dloss: Vec::new(),
                last_weights: weights,
                steps: 0,
                error: None,
                writer,
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
        self.lock().loss
    }

    pub(crate) fn steps(&self) -> usize {
        self.lock().steps
    }

    /// The first recording error, if any; recording stops at it.
    pub(crate) fn error(&self) -> Option<String> {
        self.lock().error.clone()
    }

    /// Notes a micro-batch's samples and dL/df; they join the next optimizer step.
    pub(crate) fn micro_batch(&self, indices: &[usize], dloss: Vec<f64>) {
        let mut s = self.lock();
        s.indices.extend_from_slice(indices);
        s.dloss.extend(dloss);
    }

    /// Records one optimizer step: `before` must be the weights the last step left.
    pub(crate) fn commit(&self, before: &[f64], after: Vec<f64>, lr: f64) {
        let mut s = self.lock();
        if s.error.is_some() {
            return;
        }
        let result = Self::commit_locked(&mut s, before, after, lr);
        if let Err(e) = result {
            eprintln!("epk: recording stopped at step {}: {e}", s.steps);
            s.error = Some(e.to_string());
        }
    }

    /// Stops recording with `error`.
    pub(crate) fn fail(&self, error: RecordError) {
        let mut s = self.lock();
        if s.error.is_none() {
            eprintln!("epk: recording stopped at step {}: {error}", s.steps);
            s.error = Some(error.to_string());
        }
    }

    fn commit_locked(
        s: &mut State,
        before: &[f64],
        after: Vec<f64>,
        lr: f64,
    ) -> Result<(), RecordError> {
        if before != s.last_weights.as_slice() {
            return Err(RecordError::Mismatch(
                "the weights changed outside the optimizer between two steps".into(),
            ));
        }
        let indices = std::mem::take(&mut s.indices);
        let dloss = std::mem::take(&mut s.dloss);
        if indices.is_empty() {
            return Err(RecordError::Mismatch(
                "an optimizer step came without a training step before it".into(),
            ));
        }
        if indices.len() > s.max_batch {
            return Err(RecordError::Config(format!(
                "a step used {} samples, more than max_batch = {}",
                indices.len(),
                s.max_batch
            )));
        }
        debug_assert_eq!(dloss.len(), indices.len() * s.outputs);
        s.last_weights.clone_from(&after);
        s.writer.step(StepRecord {
            lr,
            indices,
            dloss,
            weights_after: after,
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
