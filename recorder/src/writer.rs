//! The background thread that owns the store: the trainer hands it steps through a bounded
//! channel and waits only when the queue is full.

use crate::RecordError;
use crossbeam_channel::{Sender, bounded};
use epk_store::{StepRecord, StoreWriter};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

enum Msg {
    Step(Box<StepRecord>),
    Finish,
}

pub(crate) struct Writer {
    tx: Option<Sender<Msg>>,
    handle: Option<JoinHandle<()>>,
    error: Arc<Mutex<Option<String>>>,
}

impl Writer {
    pub(crate) fn spawn(mut store: StoreWriter, capacity: usize) -> Self {
        let (tx, rx) = bounded::<Msg>(capacity.max(1));
        let error = Arc::new(Mutex::new(None));
        let slot = error.clone();
        let handle = std::thread::Builder::new()
            .name("epk-store-writer".into())
            .spawn(move || {
                for msg in rx {
                    let result = match msg {
                        Msg::Step(step) => store.append_step(&step),
                        Msg::Finish => store.finish(),
                    };
                    if let Err(e) = result {
                        *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
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
