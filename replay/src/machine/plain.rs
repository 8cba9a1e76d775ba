//! Plain gradient descent, replayed forward one step at a time: Δw_s = Σ_i a_{i,s} ∇_w f(x_i; w_s)
//! with a_{i,s} = −η_s ∂L/∂f(x_i), so A[x, i] += a_{i,s} ⟨Jbar_s(x), ∇_w f(x_i; w_s)⟩.

use super::coefficients::Coefficients;
use super::compensated::Terms;
use super::contraction::{Contraction, Groups};
use super::walk::{self, Direction, Integrator, blocks};
use super::{KernelMachine, Part, ReplayOptions, Setup};
use crate::ReplayError;
use crate::network::Network;
use crate::optimizer::{Agreement, unit_roundoff};
use crate::quadrature::StepIntegral;
use epk_model::EpkModel;
use epk_store::StoreReader;
use ndarray::Array2;
use std::ops::Range;

/// The kernel machine of the steps `range` of a plain gradient-descent run.
pub(super) fn replay<M: EpkModel>(
    reader: &StoreReader,
    net: &Network<M>,
    xs: &[f64],
    options: &ReplayOptions,
    range: Range<usize>,
    mut progress: impl FnMut(usize),
) -> Result<Part, ReplayError> {
    let Setup {
        k,
        p,
        m,
        bias,
        mut attributions,
    } = Setup::new(reader, net, xs, range.start)?;
    let attrs = reader.attrs();
    let train = reader.train()?;
    let integrator = Integrator::new(net, xs, options, reader.steps());
    let mut residual = Terms::zeros((m, k));
    let mut groups = Groups::new(&options.groups, m, attrs.train_samples, k);
    let mut checks = Vec::with_capacity(range.len());
    let mut coefficients = Coefficients::new(attrs.train_samples, attrs.loss, k);
    let threads = options.threads.max(1);
    let unit = unit_roundoff(attrs.dtype);
    let first = range.start;
    walk::steps(reader, Direction::Forward, range.clone(), |step| {
        let (lr, batch) = (reader.lr(step.index)?, reader.batch(step.index)?);
        let (results, mut check) = integrator.integrate(step)?;
        // Train side: a_{i,s} = −η ∂L/∂f(x_i), per-sample gradients in blocks.
        coefficients.observe(&batch.indices, &batch.dloss);
        let coeffs: Vec<f64> = batch.dloss.iter().map(|d| -lr * d).collect();
        let contraction = Contraction::choose(&results, k, p, !options.groups.is_empty());
        let mut total = vec![0.0; p];
        let mut widest = 0.0f64;
        for block in blocks(
            step.index,
            &train,
            &batch.indices,
            &coeffs,
            k,
            options.block,
        ) {
            let (contrib, norms) =
                contraction.block(net, step.start, &block, threads, &mut total, &mut groups);
            attributions.scatter(&contrib, block.indices, k);
            widest = norms.into_iter().fold(widest, f64::max);
        }
        // |ΔJbar_k · v_i| ≤ ‖ΔJbar_k‖₂ ‖v_i‖₂ (Cauchy–Schwarz), the worst pairing of the step.
        check.attribution_bound = check.jbar_error.map(|e| e * widest);
        // ρ_s: what the per-sample terms leave of the recorded step, moved through Jbar.
        let rho: Vec<f64> = step.delta.iter().zip(&total).map(|(d, t)| d - t).collect();
        check.decomposition = Agreement::new(step.start, step.end, step.delta, &total, unit);
        add_residual(&mut residual, &results, &rho, k);
        checks.push(check);
        progress(step.index + 1 - first);
        Ok(())
    })?;
    let end = reader.weights(range.end)?;
    let network = Array2::from_shape_vec((m, k), net.forward(&end, xs)).expect("f is [m, k]");
    let machine = KernelMachine {
        bias,
        attributions: attributions.finish(),
        nondata: Array2::zeros((m, k)),
        residual: residual.finish(),
        network,
        steps: checks,
        constant_coefficients: coefficients.constant(),
        optimizer: "sgd".into(),
        group_attributions: groups.out,
        unit_roundoff: unit,
    };
    Ok(Part {
        machine,
        coefficients: Some(coefficients),
        boundary: None,
    })
}

/// R(x) += Jbar_s(x)·ρ_s for every point: what the residual moves each prediction.
fn add_residual(residual: &mut Terms, results: &[StepIntegral], rho: &[f64], k: usize) {
    for (pt, r) in results.iter().enumerate() {
        for (o, v) in r.jbar.dot(rho, k).into_iter().enumerate() {
            residual.add(pt, o, v);
        }
    }
}
