//! Appending steps: each step's rows go to the end of the per-step arrays' open shards,
//! where readers see them after the next commit.

use super::{StoreWriter, WeightRow};
use crate::codec::{self, FloatType};
use crate::layout::Element;
use crate::{ArrayName, StepRecord, StoreError};
use std::borrow::Cow;

/// One step's entry in a per-step array, before encoding.
enum Values<'a> {
    Floats(&'a [f64]),
    Ints(&'a [i64]),
}

impl StoreWriter {
    /// Appends one optimizer step and commits it.
    pub fn append_step(&mut self, step: &StepRecord) -> Result<(), StoreError> {
        self.append_steps(std::slice::from_ref(step))
    }

    /// Appends several steps with one commit. Steps written in full before a failure are
    /// still committed.
    pub fn append_steps(&mut self, steps: &[StepRecord]) -> Result<(), StoreError> {
        let mut failure = None;
        for step in steps {
            if let Err(e) = self.write_step(step) {
                failure = Some(e);
                break;
            }
        }
        self.commit()?;
        failure.map_or(Ok(()), Err)
    }

    /// Writes the next step's rows without committing it: readers see it after the next
    /// [`StoreWriter::commit`]. A kill before then loses the step, never the store.
    ///
    /// Fails with [`StoreError::Gone`] if the store was removed or replaced meanwhile.
    pub fn write_step(&mut self, step: &StepRecord) -> Result<(), StoreError> {
        self.write_step_row(step, WeightRow::Values(&step.weights_after))
    }

    /// [`StoreWriter::write_step`] with the weights given apart (`step.weights_after` is not
    /// read): the recorder hands the bytes its backend returned, which an uncompressed store
    /// writes without a copy of its own.
    pub fn write_step_row(
        &mut self,
        step: &StepRecord,
        weights: WeightRow<'_>,
    ) -> Result<(), StoreError> {
        self.check_guard(false)?;
        self.check_step(step, weights)?;
        let (k, b) = (self.attrs.outputs, self.attrs.max_batch);
        let n = step.indices.len();
        let s = self.written;
        self.write_weights(s + 1, weights)?;
        let mut index = vec![-1i64; b];
        for (slot, &i) in index.iter_mut().zip(&step.indices) {
            *slot = i as i64;
        }
        let mut dloss = vec![f64::NAN; b * k];
        dloss[..n * k].copy_from_slice(&step.dloss);
        let (lr, size) = ([step.lr], [n as i64]);
        for lane in 1..self.lanes.len() {
            let values = match self.lanes[lane].name {
                ArrayName::Lr => Values::Floats(&lr),
                ArrayName::BatchSize => Values::Ints(&size),
                ArrayName::BatchIndex => Values::Ints(&index),
                ArrayName::Dloss => Values::Floats(&dloss),
                _ => unreachable!("weights are lane 0"),
            };
            self.append_row(lane, s, values)?;
        }
        self.written = s + 1;
        Ok(())
    }

    /// Checks that a step fits the store: its weights, its sample count and its dL/df.
    fn check_step(&self, step: &StepRecord, weights: WeightRow<'_>) -> Result<(), StoreError> {
        match weights {
            WeightRow::Values(values) => self.check_weights(values)?,
            WeightRow::Bytes(parts) => {
                let bytes: usize = parts.iter().map(|p| p.len()).sum();
                let width = self.lanes[0].element.width();
                if bytes != self.attrs.num_params * width {
                    return Err(StoreError::invalid(
                        &self.root,
                        format!(
                            "{bytes} bytes of weights given, the store's layout has {} weights of {width} bytes",
                            self.attrs.num_params
                        ),
                    ));
                }
            }
        }
        let (k, b) = (self.attrs.outputs, self.attrs.max_batch);
        let n = step.indices.len();
        if n == 0 || n > b {
            return Err(StoreError::invalid(
                &self.root,
                format!("a step with {n} samples does not fit the store's {b} slots per step"),
            ));
        }
        if step.dloss.len() != n * k {
            return Err(StoreError::invalid(
                &self.root,
                format!(
                    "{} dL/df values for {n} samples of {k} outputs",
                    step.dloss.len()
                ),
            ));
        }
        Ok(())
    }

    pub(super) fn check_weights(&self, weights: &[f64]) -> Result<(), StoreError> {
        if weights.len() != self.attrs.num_params {
            return Err(StoreError::invalid(
                &self.root,
                format!(
                    "{} weights given, the store's layout has {}",
                    weights.len(),
                    self.attrs.num_params
                ),
            ));
        }
        Ok(())
    }

    /// Appends weight row `row` (the state before step `row`).
    pub(super) fn write_weight_row(&mut self, row: u64, weights: &[f64]) -> Result<(), StoreError> {
        debug_assert_eq!(self.lanes[0].name, ArrayName::Weights);
        self.append_row(0, row, Values::Floats(weights))
    }

    /// Appends weight row `row` given as values or as bytes of the store's dtype.
    fn write_weights(&mut self, row: u64, weights: WeightRow<'_>) -> Result<(), StoreError> {
        let parts = match weights {
            WeightRow::Values(values) => return self.write_weight_row(row, values),
            WeightRow::Bytes(parts) => parts,
        };
        let lane = &mut self.lanes[0];
        let Some(codec) = &lane.blosc else {
            return lane.shards.append_parts(row, parts);
        };
        let joined = parts.concat();
        let bytes = codec::compress(codec, &joined)
            .map_err(|e| StoreError::zarr(lane.file(row), "cannot encode", e))?;
        lane.shards.append(row, &bytes)
    }

    /// Encodes `values` as entry `row` of lane `lane` and appends it to its shard.
    fn append_row(&mut self, lane: usize, row: u64, values: Values) -> Result<(), StoreError> {
        let lane = &mut self.lanes[lane];
        let bytes = match (values, lane.element) {
            (Values::Floats(values), Element::Float(dtype)) => FloatType(dtype)
                .encode(values, &mut self.scratch, lane.blosc.as_ref())
                .map_err(|e| StoreError::zarr(lane.file(row), "cannot encode", e))?,
            (Values::Ints(values), Element::Int64) => {
                Cow::Borrowed(codec::encode_ints(values, &mut self.scratch))
            }
            _ => unreachable!("{} holds {:?}", lane.name.path(), lane.element),
        };
        lane.shards.append(row, &bytes)
    }
}
