//! The background thread that owns the store: the trainer hands it steps through a bounded
//! channel and waits only when the queue is full. The thread's loop is in `worker.rs`.

#[cfg(test)]
mod tests;
mod worker;

use crate::RecordError;
use crate::non_finite::NonFinite;
use crossbeam_channel::{Sender, bounded};
use epk_model::params::Snapshot;
use epk_store::{Fault, StepRecord, StoreWriter, TrainDType, WeightRow};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use worker::Worker;

/// Where the writer thread puts steps: the store, or a stand-in in tests.
pub(crate) trait Sink: Send + 'static {
    /// Writes a step, its weights given apart, without committing it.
    fn write(&mut self, step: &StepRecord, weights: WeightRow<'_>) -> Result<(), String>;
    /// The float type the weights are stored in.
    fn dtype(&self) -> TrainDType {
        TrainDType::F64
    }
    /// Commits every written step.
    fn commit(&mut self) -> Result<(), String>;
    /// Records a fault, committing every written step with it.
    fn fault(&mut self, fault: Fault) -> Result<(), String>;
    fn finish(&mut self) -> Result<(), String>;
}

impl Sink for StoreWriter {
    fn write(&mut self, step: &StepRecord, weights: WeightRow<'_>) -> Result<(), String> {
        self.write_step_row(step, weights).map_err(|e| chain(&e))
    }
    fn dtype(&self) -> TrainDType {
        self.attrs().dtype
    }
    fn commit(&mut self) -> Result<(), String> {
        StoreWriter::commit(self).map_err(|e| chain(&e))
    }
    fn fault(&mut self, fault: Fault) -> Result<(), String> {
        self.record_fault(fault).map_err(|e| chain(&e))
    }
    fn finish(&mut self) -> Result<(), String> {
        StoreWriter::finish(self).map_err(|e| chain(&e))
    }
}

/// An error with its causes (the operating system's reason for an I/O error), on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// A step whose weights the writer thread reads: the trainer only takes a [`Snapshot`].
pub(crate) struct PendingStep {
    /// The step with `weights_after` still empty.
    pub record: StepRecord,
    pub weights: Snapshot,
    /// The step's number, for a fault.
    pub step: usize,
    /// How to treat non-finite weights; `None` when the step's fault is already recorded.
    pub check: Option<NonFinite>,
}

enum Msg {
    Pending(Box<PendingStep>),
    Fault(Fault),
    Finish,
}

/// Why the writer thread stopped.
#[derive(Clone, Debug)]
enum Failure {
    Io(String),
    NonFinite(String),
}

impl From<Failure> for RecordError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Io(e) => RecordError::WriterGone(e),
            Failure::NonFinite(e) => RecordError::NonFinite(e),
        }
    }
}

pub(crate) struct Writer {
    tx: Option<Sender<Msg>>,
    /// Sends that found the queue full and had to wait for the disk.
    stalls: usize,
    handle: Option<JoinHandle<()>>,
    error: Arc<Mutex<Option<Failure>>>,
}

impl Writer {
    /// Starts the writer thread: `capacity` steps may wait in the queue, and commits are at
    /// least `interval` apart (steps arriving in between join the next commit).
    pub(crate) fn spawn(store: impl Sink, capacity: usize, interval: Duration) -> Self {
        let (tx, rx) = bounded::<Msg>(capacity.max(1));
        let error = Arc::new(Mutex::new(None));
        let slot = error.clone();
        let handle = std::thread::Builder::new()
            .name("epk-store-writer".into())
            .spawn(move || {
                let mut worker = Worker::new(store, interval);
                if let Err(e) = worker.run(&rx) {
                    *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                }
                // Dropping the receiver makes every later send fail at once; only after the
                // failure is stored, so that a send that fails finds its cause.
                drop(rx);
            })
            .expect("spawning the store writer thread");
        Writer {
            tx: Some(tx),
            stalls: 0,
            handle: Some(handle),
            error,
        }
    }

    /// Why the writer thread stopped, if it did.
    pub(crate) fn failure(&self) -> Option<RecordError> {
        self.error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .map(RecordError::from)
    }

    /// How many sends found the queue full: each is a wait of the trainer for the disk.
    pub(crate) fn stalls(&self) -> usize {
        self.stalls
    }

    fn send(&mut self, msg: Msg) -> Result<(), RecordError> {
        if let Some(e) = self.failure() {
            return Err(e);
        }
        let tx = self
            .tx
            .as_ref()
            .ok_or_else(|| RecordError::WriterGone("the recording was finished".into()))?;
        let msg = match tx.try_send(msg) {
            Ok(()) => return Ok(()),
            Err(crossbeam_channel::TrySendError::Full(msg)) => {
                self.stalls += 1;
                msg
            }
            Err(crossbeam_channel::TrySendError::Disconnected(msg)) => msg,
        };
        tx.send(msg).map_err(|_| {
            self.failure()
                .unwrap_or_else(|| RecordError::WriterGone("the writer thread ended".into()))
        })
    }

    /// Queues a step whose weights the writer thread reads from `step.weights`.
    pub(crate) fn pending(&mut self, step: PendingStep) -> Result<(), RecordError> {
        self.send(Msg::Pending(Box::new(step)))
    }

    pub(crate) fn fault(&mut self, fault: Fault) -> Result<(), RecordError> {
        self.send(Msg::Fault(fault))
    }

    /// Flushes every queued step, marks the run finished and stops the thread.
    pub(crate) fn finish(&mut self) -> Result<(), RecordError> {
        if self.tx.is_some() {
            let sent = self.send(Msg::Finish);
            self.tx = None;
            if let Some(h) = self.handle.take() {
                let _ = h.join();
            }
            sent?;
        }
        match self.failure() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Queued steps are written even if the user forgot `finish`; the run is then left
        // unfinished but every step is committed.
        self.tx = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
