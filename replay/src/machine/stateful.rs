//! Optimizers with state (momentum, Adam) or data-dependent factors (clipping), replayed in two
//! passes over the steps.
//!
//! The forward pass advances the optimizer from the recorded data gradients and keeps each
//! step's linear map (scalars in memory, vectors in a scratch file). The backward pass carries
//! the adjoint of the momentum buffer, Z_s = α_s u_s + a_{s+1} Z_{s+1} with
//! u_s = −η_s D_s ⊙ Jbar_s, so that a point used at step r is credited for every later step it
//! moves: the data gradient of step s meets E_s = γ_s u_s + b_s Z_s. Memory stays independent
//! of the number of steps and of the training set.
//!
//! A stretch s0..s1 replayed alone runs the forward pass from step 0 to s1 (the optimizer's state
//! needs every earlier gradient; one gradient per step, cheap beside the Jacobians) and the
//! backward pass over the stretch, keeping what the later steps' adjoint will reach
//! (`boundary.rs`).

use super::boundary::Through;
use super::compensated::{Attributions, Terms};
use super::contraction::{Groups, add, contract, dense_jbar_into, sample_grads};
use super::scratch::{Scratch, StepVectors};
use super::walk::{self, Direction, Integrator, Step, blocks};
use super::{KernelMachine, Part, ReplayOptions, Setup, StepCheck};
use crate::ReplayError;
use crate::network::Network;
use crate::optimizer::{Agreement, Optimizer, State, Transform, unit_roundoff};
use epk_model::EpkModel;
use epk_store::{Samples, StoreReader};
use ndarray::{Array2, Axis};
use std::ops::Range;

/// Per step of the forward pass: the linear map's scalars and the decomposition residual.
struct Kept {
    transform: Transform,
    decomposition: Agreement,
}

/// The kernel machine of the steps `range` of a run whose optimizer has state or clips.
pub(super) fn replay<M: EpkModel>(
    reader: &StoreReader,
    net: &Network<M>,
    xs: &[f64],
    options: &ReplayOptions,
    optimizer: Optimizer,
    range: Range<usize>,
    mut progress: impl FnMut(usize),
) -> Result<Part, ReplayError> {
    let Setup {
        k,
        p,
        m,
        bias,
        attributions,
    } = Setup::new(reader, net, xs, range.start)?;
    let train = reader.train()?;
    let steps = reader.steps();
    let describe = optimizer.describe();
    let mut scratch = Scratch::new()?;
    let kept = forward(
        reader,
        net,
        &train,
        options,
        optimizer,
        &range,
        &mut scratch,
    )?;
    let end = reader.weights(range.end)?;
    let network = Array2::from_shape_vec((m, k), net.forward(&end, xs)).expect("f is [m, k]");
    let mut adjoint = Adjoint {
        net,
        train: &train,
        options,
        z: Array2::<f64>::zeros((m * k, p)),
        spare: None,
        a_next: 0.0,
        attributions,
        nondata: Terms::zeros((m, k)),
        residual: Terms::zeros((m, k)),
        groups: Groups::new(&options.groups, m, reader.attrs().train_samples, k),
        through: through(reader, &kept, &range, p)?,
    };
    let integrator = Integrator::new(net, xs, options, steps);
    let mut checks: Vec<StepCheck> = Vec::with_capacity(range.len());
    let last = range.end;
    walk::steps(reader, Direction::Backward, range, |step| {
        let (results, mut check) = integrator.integrate(step)?;
        let kept = &kept[step.index];
        check.decomposition = kept.decomposition;
        let vectors = scratch.read(step.index)?;
        let jbar = dense_jbar_into(&results, k, p, adjoint.spare.take());
        let dloss = reader.batch(step.index)?;
        adjoint.step(step, &kept.transform, vectors, jbar, &dloss)?;
        checks.push(check);
        progress(last - step.index);
        Ok(())
    })?;
    checks.reverse();
    let boundary = adjoint.through.finish(adjoint.z);
    let machine = KernelMachine {
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
    };
    Ok(Part {
        machine,
        coefficients: None,
        boundary: Some(boundary),
    })
}

/// The boundary builder of the stretch `range`: open (with its samples) unless it ends the run.
fn through(
    reader: &StoreReader,
    kept: &[Kept],
    range: &Range<usize>,
    p: usize,
) -> Result<Through, ReplayError> {
    Ok(match kept.get(range.end) {
        Some(next) => Through::new(Some(next.transform.a), p, stretch_samples(reader, range)?),
        None => Through::new(None, p, Vec::new()),
    })
}

/// The training samples in the batches of the steps `range`, each once.
fn stretch_samples(reader: &StoreReader, range: &Range<usize>) -> Result<Vec<usize>, ReplayError> {
    let mut seen = std::collections::BTreeSet::new();
    for s in range.clone() {
        seen.extend(reader.batch(s)?.indices);
    }
    Ok(seen.into_iter().collect())
}

/// The forward pass from step 0 through the step after `range` (whose momentum factor the
/// stretch's boundary needs): the optimizer's state from the recorded data gradients; the
/// vectors (clipping factors, preconditioner, decay mask, residual) of the steps in `range` go
/// to `scratch`.
fn forward<M: EpkModel>(
    reader: &StoreReader,
    net: &Network<M>,
    train: &Samples,
    options: &ReplayOptions,
    optimizer: Optimizer,
    range: &Range<usize>,
    scratch: &mut Scratch,
) -> Result<Vec<Kept>, ReplayError> {
    let (k, p) = (net.outputs(), net.num_params());
    let mut state = State::new(optimizer, &reader.attrs().params, p);
    let through = (range.end + 1).min(reader.steps());
    let mut kept: Vec<Kept> = Vec::with_capacity(through);
    let unit = unit_roundoff(reader.attrs().dtype);
    walk::steps(reader, Direction::Forward, 0..through, |step| {
        let batch = reader.batch(step.index)?;
        let mut grad = vec![0.0; p];
        for block in blocks(
            step.index,
            train,
            &batch.indices,
            &batch.dloss,
            k,
            options.block,
        ) {
            add(
                &mut grad,
                &net.weighted_grad(step.start, &block.inputs, block.coeffs, Some(block.keys())),
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
        if range.contains(&step.index) {
            scratch.write(step.index, &vectors)?;
        }
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
    /// The last step's E, for the next step's Jbar (held while the next step integrates, as
    /// E was while the step contracted: the peak stays Z and one more such array).
    spare: Option<Array2<f64>>,
    /// a_{s+1}.
    a_next: f64,
    attributions: Attributions,
    nondata: Terms,
    residual: Terms,
    groups: Groups,
    /// What the later steps' adjoint will reach (a stretch replayed alone).
    through: Through,
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
        // One pass turns Jbar into E_s in place and advances Z, taking Jbar's and E's dot
        // products on the way: the step holds two [points·outputs, P] arrays (Z and this
        // one) and reads each once.
        let maps = StepMaps::new(step, t, &v, self.a_next);
        let mut e = jbar;
        let sums = maps.apply(&mut e, &mut self.z, self.options.threads.max(1));
        for (row, [decay, rho, _]) in sums.iter().enumerate() {
            self.nondata.add(row / k, row % k, *decay);
            self.residual.add(row / k, row % k, *rho);
        }
        for (row, [_, _, coupled]) in sums.iter().enumerate() {
            self.nondata.add(row / k, row % k, *coupled);
        }
        let beta = self.through.beta(t.b);
        self.through.add_coupled(beta, &maps.coupled);
        self.a_next = t.a;
        let threads = self.options.threads.max(1);
        for block in blocks(
            step.index,
            self.train,
            &batch.indices,
            &batch.dloss,
            k,
            self.options.block,
        ) {
            // The samples' gradients themselves where they are small, or where a stretch's
            // boundary or the parameter groups need them.
            let formed = block.indices.len() * e.ncols() * 8 <= self.options.gradient_bytes;
            let dense = formed || self.through.is_open() || self.groups.out.is_some();
            let contrib = match self.net.layers().filter(|_| !dense) {
                // Large blocks on the structured path meet E_s as factors.
                Some(layers) => {
                    let mut f = self.net.factors_keyed(
                        step.start,
                        &block.inputs,
                        block.coeffs,
                        Some(block.keys()),
                    );
                    layers.block_convolutions(&mut f);
                    layers.rows_against(&f, e.view(), threads)
                }
                // The gradients themselves: small, or a stretch's boundary or the parameter
                // groups need them.
                None => {
                    let g = sample_grads(self.net, step.start, &block, threads);
                    let clip = v.clip.as_deref();
                    self.through.add_grads(beta, clip, block.indices, &g.view());
                    contract(&e, &g.view(), block.indices, None, &mut self.groups)
                }
            };
            self.attributions.scatter(&contrib, block.indices, k);
        }
        self.through.advance(t.a);
        self.spare = Some(e);
        Ok(())
    }
}

/// The P-long factors of one backward step, as in the module docs.
struct StepMaps<'a> {
    /// −η_s λ_d m ⊙ w_s: decoupled decay, read through Jbar.
    decay: Vec<f64>,
    /// ρ_s, read through Jbar.
    rho: &'a [f64],
    /// −η_s D_s: u_s = scale ⊙ Jbar_s.
    scale: Vec<f64>,
    /// λ_c w_s: coupled decay, read through E_s.
    coupled: Vec<f64>,
    /// c_s, applied to E_s last.
    clip: Option<&'a [f64]>,
    /// Z_s = alpha u_s + a_next Z_{s+1}; E_s = gamma u_s + b Z_s.
    a_next: f64,
    alpha: f64,
    gamma: f64,
    b: f64,
}

impl<'a> StepMaps<'a> {
    fn new(step: &Step<'_>, t: &Transform, v: &'a StepVectors, a_next: f64) -> Self {
        let p = step.start.len();
        let decay = (0..p)
            .map(|j| -t.decoupled * step.start[j] * v.mask.as_ref().map_or(1.0, |m| m[j]))
            .collect();
        let scale = (0..p)
            .map(|j| -t.lr * v.precondition.as_ref().map_or(1.0, |d| d[j]))
            .collect();
        StepMaps {
            decay,
            rho: &v.rho,
            scale,
            coupled: step.start.iter().map(|w| t.coupled * w).collect(),
            clip: v.clip.as_deref(),
            a_next,
            alpha: t.alpha,
            gamma: t.gamma,
            b: t.b,
        }
    }

    /// Turns each row of `e` (Jbar_s) into E_s, and each row of `z` (Z_{s+1}) into Z_s, in
    /// one pass split across `threads`; per row, [Jbar·decay, Jbar·ρ, E·coupled] (E before
    /// clipping).
    fn apply(&self, e: &mut Array2<f64>, z: &mut Array2<f64>, threads: usize) -> Vec<[f64; 3]> {
        assert_eq!(e.dim(), z.dim(), "E and Z are both [points·outputs, P]");
        let per = e.nrows().div_ceil(threads).max(1);
        std::thread::scope(|scope| {
            let handles: Vec<_> = e
                .axis_chunks_iter_mut(Axis(0), per)
                .zip(z.axis_chunks_iter_mut(Axis(0), per))
                .map(|(mut e, mut z)| {
                    scope.spawn(move || {
                        let rows = e.rows_mut().into_iter().zip(z.rows_mut());
                        rows.map(|(e, z)| {
                            let (e, z) = (e.into_slice().expect("rows"), z.into_slice());
                            self.row(e, z.expect("rows"))
                        })
                        .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("adjoint worker"))
                .collect()
        })
    }

    /// One row: u = scale ⊙ jbar; z ← alpha u + a_next z; e ← (gamma u + b z) ⊙ clip.
    fn row(&self, e: &mut [f64], z: &mut [f64]) -> [f64; 3] {
        let (mut decay, mut rho, mut coupled) = (0.0, 0.0, 0.0);
        for j in 0..e.len() {
            let jbar = e[j];
            decay += jbar * self.decay[j];
            rho += jbar * self.rho[j];
            let u = jbar * self.scale[j];
            z[j] = self.a_next * z[j] + self.alpha * u;
            let ej = self.gamma * u + self.b * z[j];
            coupled += ej * self.coupled[j];
            e[j] = self.clip.map_or(ej, |c| ej * c[j]);
        }
        [decay, rho, coupled]
    }
}
