//! The writer thread against stand-in disks.

use super::{NonFinite, PendingStep, RecordError, Sink, Writer};
use burn::module::Param;
use burn::tensor::Tensor;
use epk_model::params::snapshot;
use epk_store::{Fault, StepRecord, TrainDType, WeightRow};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

/// A disk that stalls on its first write until released.
struct Stalled(Arc<Barrier>);

impl Sink for Stalled {
    fn write(&mut self, _: &StepRecord, _: WeightRow<'_>) -> Result<(), String> {
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
    fn write(&mut self, _: &StepRecord, _: WeightRow<'_>) -> Result<(), String> {
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
    fn write(&mut self, _: &StepRecord, weights: WeightRow<'_>) -> Result<(), String> {
        let values = weights.to_values(TrainDType::F64);
        self.0.lock().unwrap().0.push(values);
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

#[test]
fn a_held_step_is_written_once_the_commit_interval_passes() {
    let log = Log::default();
    let seen = log.0.clone();
    let mut writer = Writer::spawn(log, 8, Duration::from_millis(50));
    writer.pending(step_with(&[1.0, 2.0], 0, None)).unwrap();
    // No next step comes: the writer must not keep the step back for longer than the interval.
    let started = std::time::Instant::now();
    while seen.lock().unwrap().0.is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the held step was never written"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    writer.pending(step_with(&[3.0, 4.0], 1, None)).unwrap();
    writer.finish().unwrap();
    let (steps, _) = std::mem::take(&mut *seen.lock().unwrap());
    assert_eq!(
        steps,
        vec![vec![1.0, 2.0], vec![3.0, 4.0]],
        "in order, once each"
    );
}
