//! Optimizers with state (momentum, Adam) or data-dependent factors (clipping), replayed in two
//! passes over the steps.
//!
//! The forward pass advances the optimizer from the recorded data gradients and keeps each
//! step's linear map (scalars in memory, vectors in a scratch file). The backward pass carries
//! the adjoint of the momentum buffer, Z_s = α_s u_s + a_{s+1} Z_{s+1} with
//! u_s = −η_s D_s ⊙ Jbar_s, so that a point used at step r is credited for every later step it
//! moves: the data gradient of step s meets E_s = γ_s u_s + b_s Z_s. Memory stays independent
//! of the number of steps and of the training set.

use super::compensated::{Attributions, Terms};
use super::contraction::{Groups, add, dense_block, dense_jbar};
use super::scratch::{Scratch, StepVectors};
use super::walk::{self, Direction, Integrator, Step, blocks};
use super::{KernelMachine, ReplayOptions, Setup, StepCheck};
use crate::ReplayError;
use crate::network::Network;
use crate::optimizer::{Agreement, Optimizer, State, Transform, unit_roundoff};
use epk_model::EpkModel;
use epk_store::{Samples, StoreReader};
use ndarray::{Array2, ArrayView1};

/// Per step of the forward pass: the linear map's scalars and the decomposition residual.
struct Kept {
    transform: Transform,
    decomposition: Agreement,
}

/// The kernel machine of a run whose optimizer has state or clips.
pub(super) fn replay<M: EpkModel>(
    reader: &StoreReader,
    net: &Network<M>,
    xs: &[f64],
    options: &ReplayOptions,
    optimizer: Optimizer,
    mut progress: impl FnMut(usize),
) -> Result<KernelMachine, ReplayError> {
    let Setup {
        k,
        p,
        m,
        bias,
        attributions,
    } = Setup::new(reader, net, xs)?;
    let train = reader.train()?;
    let steps = reader.steps();
    let describe = optimizer.describe();
    let mut scratch = Scratch::new(p)?;
    let kept = forward(reader, net, &train, options, optimizer, &mut scratch)?;
    let end = reader.weights(steps)?;
    let network = Array2::from_shape_vec((m, k), net.forward(&end, xs)).expect("f is [m, k]");
    let mut adjoint = Adjoint {
        net,
        train: &train,
        options,
        z: Array2::<f64>::zeros((m * k, p)),
        a_next: 0.0,
        attributions,
        nondata: Terms::zeros((m, k)),
        residual: Terms::zeros((m, k)),
        groups: Groups::new(&options.groups, m, reader.attrs().train_samples, k),
    };
    let integrator = Integrator::new(net, xs, options, steps);
    let mut checks: Vec<StepCheck> = Vec::with_capacity(steps);
    walk::steps(reader, Direction::Backward, |step| {
        let (results, mut check) = integrator.integrate(step)?;
        let kept = &kept[step.index];
        check.decomposition = kept.decomposition;
        let vectors = scratch.read(step.index)?;
        let jbar = dense_jbar(&results, k, p);
        let dloss = reader.batch(step.index)?;
        adjoint.step(step, &kept.transform, vectors, jbar, &dloss)?;
        checks.push(check);
        progress(steps - step.index);
        Ok(())
    })?;
    checks.reverse();
    Ok(KernelMachine {
        bias,
        attributions: adjoint.attributions.finish(),
        nondata: adjoint.nondata.finish(),
        residual: adjoint.residual.finish(),
        network,
        steps: checks,
        constant_coefficients: None,
        optimizer: describe,
        group_attributions: adjoint.groups.out,
        unit_roundoff: epk_optim::unit_roundoff(reader.attrs().dtype),
    })
}

/// The forward pass: the optimizer's state from the recorded data gradients; each step's
/// vectors (clipping factors, preconditioner, decay mask, residual) go to `scratch`.
fn forward<M: EpkModel>(
    reader: &StoreReader,
    net: &Network<M>,
    train: &Samples,
    options: &ReplayOptions,
    optimizer: Optimizer,
    scratch: &mut Scratch,
) -> Result<Vec<Kept>, ReplayError> {
    let (k, p) = (net.outputs(), net.num_params());
    let mut state = State::new(optimizer, &reader.attrs().params, p);
    let mut kept: Vec<Kept> = Vec::with_capacity(reader.steps());
    let unit = unit_roundoff(reader.attrs().dtype);
    walk::steps(reader, Direction::Forward, |step| {
        let batch = reader.batch(step.index)?;
        let mut grad = vec![0.0; p];
        for block in blocks(train, &batch.indices, &batch.dloss, k, options.block) {
            add(
                &mut grad,
                &net.weighted_grad(step.start, &block.inputs, block.coeffs),
            );
        }
        let (mut transform, delta) = state.advance(step.start, &grad, reader.lr(step.index)?);
        let rho: Vec<f64> = (0..p).map(|j| step.delta[j] - delta[j]).collect();
        let decomposition = Agreement::new(step.start, step.end, step.delta, &delta, unit);
        let vectors = StepVectors {
            clip: transform.clip.take(),
            precondition: transform.precondition.take(),
            mask: transform.mask.take(),
            rho,
        };
        scratch.write(step.index, vectors)?;
        kept.push(Kept {
            transform,
            decomposition,
        });
        Ok(())
    })?;
    Ok(kept)
}

/// The backward pass's running state.
struct Adjoint<'a, M: EpkModel> {
    net: &'a Network<M>,
    train: &'a Samples,
    options: &'a ReplayOptions,
    /// Z_{s+1}, `[points·outputs, P]`.
    z: Array2<f64>,
    /// a_{s+1}.
    a_next: f64,
    attributions: Attributions,
    nondata: Terms,
    residual: Terms,
    groups: Groups,
}

impl<M: EpkModel> Adjoint<'_, M> {
    /// Step s of the backward pass: the non-data terms, the residual's share and the data
    /// terms E_s ⊙ c_s against each sample's gradient at w_s.
    fn step(
        &mut self,
        step: &Step<'_>,
        t: &Transform,
        v: StepVectors,
        jbar: Array2<f64>,
        batch: &epk_store::StepBatch,
    ) -> Result<(), ReplayError> {
        let k = self.net.outputs();
        let mut u = jbar.clone();
        for mut row in u.rows_mut() {
            for (j, x) in row.iter_mut().enumerate() {
                *x *= -t.lr * v.precondition.as_ref().map_or(1.0, |d| d[j]);
            }
        }
        self.z *= self.a_next;
        self.z.scaled_add(t.alpha, &u);
        let mut e = u;
        e *= t.gamma;
        e.scaled_add(t.b, &self.z);
        self.a_next = t.a;
        self.add_nondata(step, t, &v, &e, &jbar);
        if let Some(c) = &v.clip {
            for mut row in e.rows_mut() {
                for (x, c) in row.iter_mut().zip(c) {
                    *x *= c;
                }
            }
        }
        let threads = self.options.threads.max(1);
        for block in blocks(
            self.train,
            &batch.indices,
            &batch.dloss,
            k,
            self.options.block,
        ) {
            let contrib = dense_block(
                &e,
                self.net,
                step.start,
                &block,
                threads,
                None,
                &mut self.groups,
            );
            self.attributions.scatter(&contrib, block.indices, k);
        }
        Ok(())
    }

    /// N(x) += E_s·(λ_c w_s) + Jbar_s·(−η_s λ_d m ⊙ w_s): coupled decay through E,
    /// decoupled decay through Jbar; R(x) += Jbar_s·ρ_s.
    fn add_nondata(
        &mut self,
        step: &Step<'_>,
        t: &Transform,
        v: &StepVectors,
        e: &Array2<f64>,
        jbar: &Array2<f64>,
    ) {
        let (p, k) = (self.net.num_params(), self.net.outputs());
        let decay: Vec<f64> = (0..p)
            .map(|j| -t.decoupled * step.start[j] * v.mask.as_ref().map_or(1.0, |m| m[j]))
            .collect();
        let coupled: Vec<f64> = step.start.iter().map(|w| t.coupled * w).collect();
        let row_dot =
            |r: ArrayView1<f64>, x: &[f64]| -> f64 { r.iter().zip(x).map(|(a, b)| a * b).sum() };
        for row in 0..e.nrows() {
            let (pt, o) = (row / k, row % k);
            let n = row_dot(e.row(row), &coupled) + row_dot(jbar.row(row), &decay);
            self.nondata.add(pt, o, n);
            self.residual.add(pt, o, row_dot(jbar.row(row), &v.rho));
        }
    }
}
