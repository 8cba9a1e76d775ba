//! The writer thread's loop: it holds each step until the next arrives, reads the held step's
//! weights, checks them, appends the step to the store and commits when the commit interval
//! is over and no step is waiting.
//!
//! Why hold a step: a [`Snapshot`](epk_model::params::Snapshot) shares the weights' buffers
//! with the model. Read at once, each buffer is still the model's and must be copied; read
//! once the next step has arrived, the model has stepped on to new buffers, so the backend
//! hands the old ones over without a copy, and their bytes go to the shard file as they are.
//! At 10⁶ parameters that copy (and the conversion to f64 after it) cost training about a
//! third of the recorder's overhead on two cores. A step is never held longer than the
//! commit interval, and not at all when that interval is zero.

use super::{Failure, Msg, PendingStep, Sink};
use crate::non_finite::NonFinite;
use burn::tensor::{DType, TensorData};
use epk_store::{Fault, TrainDType, WeightRow};
use std::time::{Duration, Instant};

/// Most written steps one commit waits for while more keep arriving: bounds how far the
/// committed count can lag behind a writer that is busy.
const MAX_GROUP: usize = 64;

pub(super) struct Worker<S: Sink> {
    store: S,
    /// Reused for weights that must be converted: a fresh multi-megabyte vector per step
    /// costs the writer a page fault per 4 KiB, which on two cores is time taken from training.
    buffer: Vec<f64>,
    /// Shortest time between two commits, and longest a step is held.
    interval: Duration,
    /// The last step received, not yet read, and when it arrived.
    held: Option<(PendingStep, Instant)>,
    /// Steps written since the last commit.
    uncommitted: usize,
    last_commit: Instant,
}

impl<S: Sink> Worker<S> {
    pub(super) fn new(store: S, interval: Duration) -> Self {
        Worker {
            store,
            buffer: Vec::new(),
            interval,
            held: None,
            uncommitted: 0,
            last_commit: Instant::now(),
        }
    }

    fn write(&mut self, pending: PendingStep) -> Result<(), Failure> {
        let PendingStep {
            record,
            weights,
            step,
            check,
        } = pending;
        let data = weights
            .read_data()
            .map_err(|e| Failure::Io(format!("cannot read the weights of step {step}: {e}")))?;
        if let Some(policy) = check
            && let Some((i, value)) = first_non_finite(&data)
        {
            let message = format!("weight {i} became {value}");
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
        let written = match as_bytes(&data, self.store.dtype()) {
            Some(parts) => self.store.write(&record, WeightRow::Bytes(&parts)),
            None => {
                read_values(&data, &mut self.buffer);
                self.store.write(&record, WeightRow::Values(&self.buffer))
            }
        };
        if let Err(e) = written {
            // Steps written in full before the failure are still committed, if the disk lets.
            if self.uncommitted > 0 {
                let _ = self.commit();
            }
            return Err(Failure::Io(e));
        }
        self.uncommitted += 1;
        Ok(())
    }

    /// Writes the held step, if any.
    fn write_held(&mut self) -> Result<(), Failure> {
        match self.held.take() {
            Some((pending, _)) => self.write(pending),
            None => Ok(()),
        }
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

    /// When the loop must act without a message: the held step is due, or a commit is.
    fn deadline(&self) -> Option<Instant> {
        let held = self.held.as_ref().map(|(_, at)| *at + self.interval);
        let commit = (self.uncommitted > 0).then(|| self.last_commit + self.interval);
        held.into_iter().chain(commit).min()
    }

    /// The deadline passed: write the held step if it is due, then commit.
    fn on_deadline(&mut self) -> Result<(), Failure> {
        if self
            .held
            .as_ref()
            .is_some_and(|(_, at)| at.elapsed() >= self.interval)
        {
            self.write_held()?;
        }
        if self.uncommitted > 0 && self.last_commit.elapsed() >= self.interval {
            self.commit()?;
        }
        Ok(())
    }

    pub(super) fn run(&mut self, rx: &crossbeam_channel::Receiver<Msg>) -> Result<(), Failure> {
        use crossbeam_channel::RecvTimeoutError;
        loop {
            let msg = match self.deadline() {
                Some(deadline) => match rx.recv_deadline(deadline) {
                    Ok(msg) => msg,
                    Err(RecvTimeoutError::Timeout) => {
                        self.on_deadline()?;
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => {
                        self.write_held()?;
                        return if self.uncommitted > 0 {
                            self.commit()
                        } else {
                            Ok(())
                        };
                    }
                },
                None => match rx.recv() {
                    Ok(msg) => msg,
                    Err(_) => return Ok(()),
                },
            };
            self.handle(msg, rx)?;
        }
    }

    fn handle(&mut self, msg: Msg, rx: &crossbeam_channel::Receiver<Msg>) -> Result<(), Failure> {
        match msg {
            Msg::Fault(fault) => {
                self.write_held()?;
                self.store.fault(fault).map_err(Failure::Io)?;
                self.committed();
            }
            Msg::Finish => {
                self.write_held()?;
                self.store.finish().map_err(Failure::Io)?;
                self.committed();
            }
            Msg::Pending(pending) => {
                let previous = if self.interval.is_zero() {
                    Some(*pending)
                } else {
                    self.held
                        .replace((*pending, Instant::now()))
                        .map(|(p, _)| p)
                };
                if let Some(previous) = previous {
                    self.write(previous)?;
                }
                // Group commit: steps already queued join this one's commit (a commit
                // replaces the root metadata, which costs the file system more than
                // appending a step), up to a bound so that the count keeps moving.
                let due = Instant::now() >= self.last_commit + self.interval;
                if self.uncommitted > 0 && due && (rx.is_empty() || self.uncommitted >= MAX_GROUP) {
                    self.commit()?;
                }
            }
        }
        Ok(())
    }
}

/// The first non-finite weight, with its flat index.
fn first_non_finite(data: &[TensorData]) -> Option<(usize, f64)> {
    let mut offset = 0;
    for d in data {
        let found = match d.dtype() {
            DType::F64 => d.as_slice::<f64>().ok().and_then(|v| {
                let i = v.iter().position(|x| !x.is_finite())?;
                Some((i, v[i]))
            }),
            DType::F32 => d.as_slice::<f32>().ok().and_then(|v| {
                let i = v.iter().position(|x| !x.is_finite())?;
                Some((i, f64::from(v[i])))
            }),
            _ => {
                let v: Vec<f64> = d.iter::<f64>().collect();
                v.iter().position(|x| !x.is_finite()).map(|i| (i, v[i]))
            }
        };
        if let Some((i, value)) = found {
            return Some((offset + i, value));
        }
        offset += d.num_elements();
    }
    None
}

/// Each tensor's bytes, when they are already the store's: its dtype, little-endian.
fn as_bytes(data: &[TensorData], dtype: TrainDType) -> Option<Vec<&[u8]>> {
    let want = match dtype {
        TrainDType::F32 => DType::F32,
        TrainDType::F64 => DType::F64,
    };
    let same = cfg!(target_endian = "little") && data.iter().all(|d| d.dtype() == want);
    same.then(|| data.iter().map(|d| d.as_bytes()).collect())
}

/// The weights as f64 in `out` (cleared first; exact for f32, f16 and bf16).
fn read_values(data: &[TensorData], out: &mut Vec<f64>) {
    out.clear();
    for d in data {
        match d.dtype() {
            DType::F64 => out.extend_from_slice(d.as_slice::<f64>().expect("f64 data")),
            DType::F32 => out.extend(
                d.as_slice::<f32>()
                    .expect("f32 data")
                    .iter()
                    .map(|&v| f64::from(v)),
            ),
            _ => out.extend(d.iter::<f64>()),
        }
    }
}
