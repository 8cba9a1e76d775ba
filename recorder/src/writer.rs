//! The background thread that owns the store: the trainer hands it steps through a bounded
//! channel and waits only when the queue is full.

use crate::RecordError;
use crate::non_finite::NonFinite;
use crossbeam_channel::{Sender, bounded};
use epk_model::params::Snapshot;
use epk_store::{Fault, StepRecord, StoreWriter};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Where the writer thread puts steps: the store, or a stand-in in tests.
pub(crate) trait Sink: Send + 'static {
    /// Writes a step without committing it.
    fn write(&mut self, step: &StepRecord) -> Result<(), String>;
    /// Commits every written step.
    fn commit(&mut self) -> Result<(), String>;
    /// Records a fault, committing every written step with it.
    fn fault(&mut self, fault: Fault) -> Result<(), String>;
    fn finish(&mut self) -> Result<(), String>;
}

impl Sink for StoreWriter {
    fn write(&mut self, step: &StepRecord) -> Result<(), String> {
        self.write_step(step).map_err(|e| chain(&e))
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

/// Most written steps one commit waits for while more keep arriving: bounds how far the
/// committed count can lag behind a writer that is busy.
const MAX_GROUP: usize = 64;

/// The writer thread's loop: reads each step's weights, checks them, appends the step to the
/// store at once and commits when the commit interval is over and no step is waiting.
struct Worker<S: Sink> {
    store: S,
    /// Reused for every step's weights: a fresh multi-megabyte vector per step costs the
    /// writer a page fault per 4 KiB, which on two cores is time taken from training.
    buffer: Vec<f64>,
    /// Shortest time between two commits.
    interval: Duration,
    /// Steps written since the last commit.
    uncommitted: usize,
    last_commit: Instant,
}

impl<S: Sink> Worker<S> {
    fn write(&mut self, pending: PendingStep) -> Result<(), Failure> {
        let PendingStep {
            mut record,
            weights,
            step,
            check,
        } = pending;
        let mut buffer = std::mem::take(&mut self.buffer);
        weights
            .read_into(&mut buffer)
            .map_err(|e| Failure::Io(format!("cannot read the weights of step {step}: {e}")))?;
        record.weights_after = buffer;
        if let Some(policy) = check
            && let Some(i) = record.weights_after.iter().position(|v| !v.is_finite())
        {
            let message = format!("weight {i} became {}", record.weights_after[i]);
            // The fault is committed with the steps before this one, so under `Stop` the
            // store ends at the last finite step.
            self.store
                .fault(Fault {
                    step,
                    message: message.clone(),
                })
                .map_err(Failure::Io)?;
            self.committed();
            if policy == NonFinite::Stop {
                return Err(Failure::NonFinite(format!("{message} at step {step}")));
            }
        }
        if let Err(e) = self.store.write(&record) {
            // Steps written in full before the failure are still committed, if the disk lets.
            if self.uncommitted > 0 {
                let _ = self.commit();
            }
            return Err(Failure::Io(e));
        }
        self.uncommitted += 1;
        self.buffer = record.weights_after;
        Ok(())
    }

    fn commit(&mut self) -> Result<(), Failure> {
        self.store.commit().map_err(Failure::Io)?;
        self.committed();
        Ok(())
    }

    fn committed(&mut self) {
        self.uncommitted = 0;
        self.last_commit = Instant::now();
    }

    fn run(&mut self, rx: &crossbeam_channel::Receiver<Msg>) -> Result<(), Failure> {
        use crossbeam_channel::RecvTimeoutError;
        loop {
            let msg = if self.uncommitted > 0 {
                match rx.recv_deadline(self.last_commit + self.interval) {
                    Ok(msg) => msg,
                    Err(RecvTimeoutError::Timeout) => {
                        self.commit()?;
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => return self.commit(),
                }
            } else {
                match rx.recv() {
                    Ok(msg) => msg,
                    Err(_) => return Ok(()),
                }
            };
            match msg {
                Msg::Fault(fault) => {
                    self.store.fault(fault).map_err(Failure::Io)?;
                    self.committed();
                }
                Msg::Finish => {
                    self.store.finish().map_err(Failure::Io)?;
                    self.committed();
                }
                Msg::Pending(pending) => {
                    self.write(*pending)?;
                    // Group commit: steps already queued join this one's commit (a commit
                    // replaces the root metadata, which costs the file system more than
                    // appending a step), up to a bound so that the count keeps moving.
                    let due = Instant::now() >= self.last_commit + self.interval;
                    if due && (rx.is_empty() || self.uncommitted >= MAX_GROUP) {
                        self.commit()?;
                    }
                }
            }
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
                let mut worker = Worker {
                    store,
                    buffer: Vec::new(),
                    interval,
                    uncommitted: 0,
                    last_commit: Instant::now(),
                };
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

#[cfg(test)]
mod tests {
    use super::{NonFinite, PendingStep, RecordError, Sink, Writer};
    use burn::module::Param;
    use burn::tensor::Tensor;
    use epk_model::params::snapshot;
    use epk_store::{Fault, StepRecord};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Barrier};
    use std::time::Duration;

    /// A disk that stalls on its first write until released.
    struct Stalled(Arc<Barrier>);

    impl Sink for Stalled {
        fn write(&mut self, _: &StepRecord) -> Result<(), String> {
            self.0.wait();
            Ok(())
        }
        fn commit(&mut self) -> Result<(), String> {
            Ok(())
        }
        fn fault(&mut self, _: Fault) -> Result<(), String> {
            Ok(())
        }
        fn finish(&mut self) -> Result<(), String> {
            Ok(())
        }
    }

    struct Failing;

    impl Sink for Failing {
        fn write(&mut self, _: &StepRecord) -> Result<(), String> {
            Err("No space left on device".into())
        }
        fn commit(&mut self) -> Result<(), String> {
            Ok(())
        }
        fn fault(&mut self, _: Fault) -> Result<(), String> {
            Ok(())
        }
        fn finish(&mut self) -> Result<(), String> {
            Ok(())
        }
    }

    fn step() -> PendingStep {
        let device = epk_model::device::flex_f64().unwrap();
        let weights = Param::from_tensor(Tensor::<1>::zeros([1], &device));
        PendingStep {
            record: StepRecord {
                lr: 0.1,
                indices: vec![0],
                dloss: vec![0.0],
                weights_after: Vec::new(),
            },
            weights: snapshot(&weights),
            step: 0,
            check: None,
        }
    }

    #[test]
    fn a_stalled_disk_blocks_training_once_the_queue_is_full() {
        let release = Arc::new(Barrier::new(2));
        let writer = Writer::spawn(Stalled(release.clone()), 3, Duration::ZERO);
        let sent = Arc::new(AtomicUsize::new(0));
        let counter = sent.clone();
        let trainer = std::thread::spawn(move || {
            let mut writer = writer;
            for _ in 0..20 {
                writer.pending(step()).unwrap();
                counter.fetch_add(1, Ordering::SeqCst);
            }
            writer
        });
        std::thread::sleep(std::time::Duration::from_millis(300));
        // The writer holds the step it is writing, the queue another three; then sends block.
        let stalled = sent.load(Ordering::SeqCst);
        assert_eq!(stalled, 4, "{stalled} steps went through a stalled disk");
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert_eq!(
            sent.load(Ordering::SeqCst),
            stalled,
            "training must wait for the disk"
        );
        release.wait();
        // Later writes stall again one by one; release each.
        for _ in 0..19 {
            release.wait();
        }
        let mut writer = trainer.join().unwrap();
        assert_eq!(sent.load(Ordering::SeqCst), 20);
        assert!(writer.stalls() > 0, "a full queue counts as a stall");
        writer.finish().unwrap();
    }

    #[test]
    fn a_write_error_reaches_the_next_send() {
        let mut writer = Writer::spawn(Failing, 1, Duration::ZERO);
        writer.pending(step()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100));
        let err = writer.pending(step()).unwrap_err().to_string();
        assert!(err.contains("No space left"), "{err}");
    }

    /// Records what reaches the disk.
    /// Weights of each written step, and the faults.
    type Written = (Vec<Vec<f64>>, Vec<Fault>);

    #[derive(Default)]
    struct Log(Arc<std::sync::Mutex<Written>>);

    impl Sink for Log {
        fn write(&mut self, step: &StepRecord) -> Result<(), String> {
            self.0.lock().unwrap().0.push(step.weights_after.clone());
            Ok(())
        }
        fn commit(&mut self) -> Result<(), String> {
            Ok(())
        }
        fn fault(&mut self, fault: Fault) -> Result<(), String> {
            self.0.lock().unwrap().1.push(fault);
            Ok(())
        }
        fn finish(&mut self) -> Result<(), String> {
            Ok(())
        }
    }

    fn step_with(weights: &[f64], number: usize, check: Option<NonFinite>) -> PendingStep {
        let device = epk_model::device::flex_f64().unwrap();
        let data = burn::tensor::TensorData::new(weights.to_vec(), [weights.len()]);
        let weights = Param::from_tensor(Tensor::<1>::from_data(data, &device));
        PendingStep {
            weights: snapshot(&weights),
            step: number,
            check,
            ..step()
        }
    }

    #[test]
    fn weights_are_read_exactly_and_non_finite_ones_stop_the_writer() {
        for policy in [NonFinite::Stop, NonFinite::Record] {
            let log = Log::default();
            let seen = log.0.clone();
            let mut writer = Writer::spawn(log, 8, Duration::from_millis(50));
            let tiny = [1.0 + f64::EPSILON, -3.5e-300];
            writer.pending(step_with(&tiny, 0, Some(policy))).unwrap();
            writer
                .pending(step_with(&[f64::NAN, 2.0], 1, Some(policy)))
                .unwrap();
            // The trainer learns of the fault at a later send or at finish.
            let result = writer.finish();
            let (steps, faults) = std::mem::take(&mut *seen.lock().unwrap());
            assert_eq!(steps[0], tiny.to_vec(), "f64 weights pass unrounded");
            assert_eq!(faults.len(), 1, "{policy:?}");
            assert_eq!(faults[0].step, 1);
            assert!(faults[0].message.contains("weight 0 became NaN"));
            match policy {
                NonFinite::Stop => {
                    assert_eq!(steps.len(), 1, "the non-finite step is not written");
                    let e = result.unwrap_err();
                    assert!(matches!(e, RecordError::NonFinite(_)), "{e}");
                }
                NonFinite::Record => {
                    assert_eq!(steps.len(), 2);
                    result.unwrap();
                }
            }
        }
    }
}
