//! The background thread that owns the store: the trainer hands it steps through a bounded
//! channel and waits only when the queue is full.

use crate::RecordError;
use crossbeam_channel::{Sender, bounded};
use epk_store::{Fault, StepRecord, StoreWriter};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Where the writer thread puts steps: the store, or a stand-in in tests.
pub(crate) trait Sink: Send + 'static {
    /// Writes and commits the steps (several at once when training ran ahead of the disk).
    fn steps(&mut self, steps: &[StepRecord]) -> Result<(), String>;
    fn fault(&mut self, fault: Fault) -> Result<(), String>;
    fn finish(&mut self) -> Result<(), String>;
}

impl Sink for StoreWriter {
    fn steps(&mut self, steps: &[StepRecord]) -> Result<(), String> {
        self.append_steps(steps).map_err(|e| e.to_string())
    }
    fn fault(&mut self, fault: Fault) -> Result<(), String> {
        self.record_fault(fault).map_err(|e| e.to_string())
    }
    fn finish(&mut self) -> Result<(), String> {
        StoreWriter::finish(self).map_err(|e| e.to_string())
    }
}

enum Msg {
    Step(Box<StepRecord>),
    Fault(Fault),
    Finish,
}

pub(crate) struct Writer {
    tx: Option<Sender<Msg>>,
    handle: Option<JoinHandle<()>>,
    error: Arc<Mutex<Option<String>>>,
}

impl Writer {
    pub(crate) fn spawn(mut store: impl Sink, capacity: usize) -> Self {
        let (tx, rx) = bounded::<Msg>(capacity.max(1));
        let error = Arc::new(Mutex::new(None));
        let slot = error.clone();
        let handle = std::thread::Builder::new()
            .name("epk-store-writer".into())
            .spawn(move || {
                let mut pending: Option<Msg> = None;
                loop {
                    let Some(msg) = pending.take().or_else(|| rx.recv().ok()) else {
                        return;
                    };
                    let result = match msg {
                        Msg::Step(step) => {
                            // Group commit: whatever steps are already queued share one commit.
                            let mut steps = vec![*step];
                            while let Ok(next) = rx.try_recv() {
                                match next {
                                    Msg::Step(s) => steps.push(*s),
                                    other => {
                                        pending = Some(other);
                                        break;
                                    }
                                }
                            }
                            store.steps(&steps)
                        }
                        Msg::Fault(fault) => store.fault(fault),
                        Msg::Finish => store.finish(),
                    };
                    if let Err(e) = result {
                        *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                        // Dropping the receiver makes every later send fail at once.
                        return;
                    }
                }
            })
            .expect("spawning the store writer thread");
        Writer {
            tx: Some(tx),
            handle: Some(handle),
            error,
        }
    }

    fn failure(&self) -> Option<String> {
        self.error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn send(&self, msg: Msg) -> Result<(), RecordError> {
        if let Some(e) = self.failure() {
            return Err(RecordError::WriterGone(e));
        }
        let tx = self
            .tx
            .as_ref()
            .ok_or_else(|| RecordError::WriterGone("the recording was finished".into()))?;
        tx.send(msg).map_err(|_| {
            RecordError::WriterGone(
                self.failure()
                    .unwrap_or_else(|| "the writer thread ended".into()),
            )
        })
    }

    pub(crate) fn step(&self, step: StepRecord) -> Result<(), RecordError> {
        self.send(Msg::Step(Box::new(step)))
    }

    pub(crate) fn fault(&self, fault: Fault) -> Result<(), RecordError> {
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
            Some(e) => Err(RecordError::WriterGone(e)),
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
    use super::{Sink, Writer};
    use epk_store::{Fault, StepRecord};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Barrier};

    /// A disk that stalls on its first write until released.
    struct Stalled(Arc<Barrier>);

    impl Sink for Stalled {
        fn steps(&mut self, steps: &[StepRecord]) -> Result<(), String> {
            for _ in steps {
                self.0.wait();
            }
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
        fn steps(&mut self, _: &[StepRecord]) -> Result<(), String> {
            Err("No space left on device".into())
        }
        fn fault(&mut self, _: Fault) -> Result<(), String> {
            Ok(())
        }
        fn finish(&mut self) -> Result<(), String> {
            Ok(())
        }
    }

    fn step() -> StepRecord {
        StepRecord {
            lr: 0.1,
            indices: vec![0],
            dloss: vec![0.0],
            weights_after: vec![0.0],
        }
    }

    #[test]
    fn a_stalled_disk_blocks_training_once_the_queue_is_full() {
        let release = Arc::new(Barrier::new(2));
        let writer = Writer::spawn(Stalled(release.clone()), 3);
        let sent = Arc::new(AtomicUsize::new(0));
        let counter = sent.clone();
        let trainer = std::thread::spawn(move || {
            let writer = writer;
            for _ in 0..20 {
                writer.step(step()).unwrap();
                counter.fetch_add(1, Ordering::SeqCst);
            }
            writer
        });
        std::thread::sleep(std::time::Duration::from_millis(300));
        // The writer holds at most one queue's worth (what it drained for a group commit), the
        // queue another three; then sends block.
        let stalled = sent.load(Ordering::SeqCst);
        assert!(
            (4..=7).contains(&stalled),
            "{stalled} steps went through a stalled disk"
        );
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
        writer.finish().unwrap();
    }

    #[test]
    fn a_write_error_reaches_the_next_send() {
        let writer = Writer::spawn(Failing, 1);
        writer.step(step()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100));
        let err = writer.step(step()).unwrap_err().to_string();
        assert!(err.contains("No space left"), "{err}");
    }
}
