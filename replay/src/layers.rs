//! Where a decision emerges: one prediction's attributions and kernel values split by layer.

use crate::kernels::jacobians;
use crate::{KernelMachine, Network};
use epk_model::EpkModel;
use epk_store::ParamLayout;
use serde::Serialize;
use std::ops::Range;

/// Parameter tensors grouped by layer: the module path without its last segment
/// (`layers.0.weight` and `layers.0.bias` → `layers.0`), in first-appearance order.
pub fn layer_groups(params: &[ParamLayout]) -> Vec<(String, Vec<Range<usize>>)> {
    let mut out: Vec<(String, Vec<Range<usize>>)> = Vec::new();
    for p in params {
        let name = p
            .path
            .rsplit_once('.')
            .map_or(p.path.as_str(), |(head, _)| head)
            .to_string();
        let range = p.offset..p.offset + p.len;
        match out.iter_mut().find(|(n, _)| *n == name) {
            Some((_, ranges)) => ranges.push(range),
            None => out.push((name, vec![range])),
        }
    }
    out
}

/// One layer's part in a prediction.
#[derive(Clone, Debug, Serialize)]
pub struct LayerShare {
    /// The layer: its parameters' common path.
    pub layer: String,
    /// Its number of parameters.
    pub params: usize,
    /// Σ_i A_layer[x, i, k]: the layer's part of f_k − b (the layers add up to Σ_i A).
    pub attribution: f64,
    /// The training point with the largest |A_layer[x, i, k]|, its label and value.
    pub top_index: usize,
    /// The top point's label.
    pub top_label: i64,
    /// The top point's A_layer[x, i, k].
    pub top_value: f64,
    /// Mean trNTK⁰ restricted to the layer's parameters, at the final weights, between x and
    /// the training points of the explained class, and of the other classes.
    pub kernel_same_class: f64,
    /// The same for the training points of the other classes.
    pub kernel_other_classes: f64,
}

/// Memory for the training points' Jacobians in one block of the layer kernels.
const JACOBIAN_BYTES: usize = 256 << 20;

/// The per-layer split of `machine`'s row 0 (replayed with one group per parameter tensor, in
/// the order of `params`) for output `k`.
#[allow(clippy::too_many_arguments)]
pub fn split<M: EpkModel>(
    machine: &KernelMachine,
    params: &[ParamLayout],
    k: usize,
    net: &Network<M>,
    final_weights: &[f64],
    x: &[f64],
    train_inputs: &[f64],
    labels: &[i64],
) -> Option<Vec<LayerShare>> {
    let by_tensor = machine.group_attributions.as_ref()?;
    let outputs = net.outputs();
    let jx = jacobians(net, final_weights, x);
    let len = net.input_len();
    let n = labels.len();
    // trNTK⁰ per tensor between x and every training point, in blocks of training points whose
    // Jacobians (K·P numbers each) fit in JACOBIAN_BYTES: 256 of the guide model's took 11 GB.
    let per_point = outputs * net.num_params() * std::mem::size_of::<f64>();
    let block = (JACOBIAN_BYTES / per_point.max(1)).clamp(1, 256);
    let mut kernel = vec![vec![0.0; n]; params.len()];
    for start in (0..n).step_by(block) {
        let end = (start + block).min(n);
        let jt = jacobians(net, final_weights, &train_inputs[start * len..end * len]);
        for (q, p) in params.iter().enumerate() {
            let cols = ndarray::s![.., p.offset..p.offset + p.len];
            let (a, b) = (jx.slice(cols), jt.slice(cols));
            for i in 0..end - start {
                kernel[q][start + i] = (0..outputs)
                    .map(|c| a.row(c).dot(&b.row(i * outputs + c)))
                    .sum();
            }
        }
    }
    let mut out = Vec::new();
    for (name, ranges) in layer_groups(params) {
        let tensors: Vec<usize> = params
            .iter()
            .enumerate()
            .filter(|(_, p)| ranges.contains(&(p.offset..p.offset + p.len)))
            .map(|(q, _)| q)
            .collect();
        let values: Vec<f64> = (0..n)
            .map(|i| tensors.iter().map(|&q| by_tensor[[q, 0, i, k]]).sum())
            .collect();
        let top = (0..n)
            .max_by(|&a, &b| values[a].abs().total_cmp(&values[b].abs()))
            .unwrap_or(0);
        let kern: Vec<f64> = (0..n)
            .map(|i| tensors.iter().map(|&q| kernel[q][i]).sum())
            .collect();
        let mean = |same: bool| {
            let v: Vec<f64> = (0..n)
                .filter(|&i| (labels[i] == k as i64) == same)
                .map(|i| kern[i])
                .collect();
            if v.is_empty() {
                0.0
            } else {
                v.iter().sum::<f64>() / v.len() as f64
            }
        };
        out.push(LayerShare {
            layer: name,
            params: ranges.iter().map(|r| r.len()).sum(),
            attribution: values.iter().sum(),
            top_index: top,
            top_label: labels.get(top).copied().unwrap_or(-1),
            top_value: values.get(top).copied().unwrap_or(0.0),
            kernel_same_class: mean(true),
            kernel_other_classes: mean(false),
        });
    }
    Some(out)
}
