//! Joining a job's tiles into the whole machine.
//!
//! Per block of points, the stretches are joined from the last to the first: the adjoint that
//! enters a stretch, Z_{s1}, is the later stretches' boundaries applied in turn
//! (Z_{s0} = Z_{s0}^loc + P_{s0} Z_{s1}, an exclusive scan of affine maps), and the stretch's
//! attributions and coupled decay gain ⟨Z_{s1}, H_i⟩ and ⟨Z_{s1}, V⟩. The stretches' sums are
//! then added in step order with compensation, and the blocks set side by side.

use super::Partial;
use crate::machine::boundary::Boundary;
use crate::machine::compensated;
use crate::{KernelMachine, ReplayError, StepCheck};
use ndarray::{Array, Array2, ArrayView1, Axis, Dimension, s};
use std::ops::Range;

/// The whole machine from every tile of one job (in any order).
pub fn reduce(mut partials: Vec<Partial>) -> Result<KernelMachine, ReplayError> {
    let Some(first) = partials.first() else {
        return Err(ReplayError::Input("no tiles to join".into()));
    };
    let job = first.job.clone();
    let count = job.plan.count();
    if let Some(p) = partials.iter().find(|p| p.job != job) {
        return Err(ReplayError::Input(format!(
            "tile {} belongs to another job than tile {}",
            p.tile.index, first.tile.index
        )));
    }
    partials.sort_by_key(|p| p.tile.index);
    let have: Vec<usize> = partials.iter().map(|p| p.tile.index).collect();
    if have != (0..count).collect::<Vec<_>>() {
        let missing: Vec<usize> = (0..count).filter(|i| !have.contains(i)).collect();
        return Err(ReplayError::Input(format!(
            "the job has {count} tiles; missing {missing:?}, present {have:?}"
        )));
    }
    for p in &partials {
        let want = job.plan.tile(p.tile.index, job.steps, job.points);
        if p.tile != want || p.machine.steps.len() != want.steps.len() {
            return Err(ReplayError::Input(format!(
                "tile {} covers steps {:?} and points {:?}, not the plan's {:?} and {:?}",
                p.tile.index, p.tile.steps, p.tile.points, want.steps, want.points
            )));
        }
    }
    // Tile index = stretch · blocks + block: gather each block's stretches in step order.
    let blocks = job.plan.blocks;
    let mut per_block: Vec<Vec<Partial>> = (0..blocks).map(|_| Vec::new()).collect();
    for p in partials {
        per_block[p.tile.index % blocks].push(p);
    }
    let joined: Vec<KernelMachine> = per_block
        .into_iter()
        .map(|stretches| join_stretches(stretches, &job.groups))
        .collect();
    let starts: Vec<usize> = (0..blocks)
        .map(|b| job.plan.tile(b, job.steps, job.points).points.start)
        .collect();
    Ok(side_by_side(joined, &starts))
}

/// One block's stretches, in step order, joined into its machine.
fn join_stretches(mut stretches: Vec<Partial>, groups: &[Range<usize>]) -> KernelMachine {
    let mut entering: Option<Array2<f64>> = None;
    for p in stretches.iter_mut().rev() {
        if let (Some(z), Some(b)) = (&entering, &p.boundary) {
            enter(z, b, &mut p.machine, groups);
        }
        if let Some(b) = &p.boundary {
            entering = Some(match entering {
                Some(z) => &b.z + &(z * b.carry),
                None => b.z.clone(),
            });
        }
    }
    let mut coefficients = None::<crate::machine::coefficients::Coefficients>;
    for p in &stretches {
        match (&mut coefficients, &p.coefficients) {
            (None, Some(c)) => coefficients = Some(c.clone()),
            (Some(mine), Some(c)) => mine.merge(c),
            _ => {}
        }
    }
    let machines: Vec<&KernelMachine> = stretches.iter().map(|p| &p.machine).collect();
    let (head, tail) = (machines[0], machines[machines.len() - 1]);
    KernelMachine {
        bias: head.bias.clone(),
        attributions: sum(machines.iter().map(|m| &m.attributions)),
        nondata: sum(machines.iter().map(|m| &m.nondata)),
        residual: sum(machines.iter().map(|m| &m.residual)),
        network: tail.network.clone(),
        steps: machines.iter().flat_map(|m| m.steps.clone()).collect(),
        constant_coefficients: coefficients.and_then(|c| c.constant()),
        optimizer: head.optimizer.clone(),
        group_attributions: head.group_attributions.as_ref().map(|_| {
            sum(machines
                .iter()
                .filter_map(|m| m.group_attributions.as_ref()))
        }),
        unit_roundoff: head.unit_roundoff,
    }
}

/// The terms the adjoint entering a stretch, `z` `[points·outputs, P]`, adds to it: A[x, i, o]
/// += ⟨z[x·k + o], H_i⟩ (and per parameter group over the group's columns), N += ⟨z, V⟩.
fn enter(z: &Array2<f64>, b: &Boundary, m: &mut KernelMachine, groups: &[Range<usize>]) {
    let k = m.attributions.dim().2;
    let scatter = |target: &mut ndarray::ArrayViewMut3<f64>, corr: &Array2<f64>| {
        for (c, &i) in b.samples.iter().enumerate() {
            for ((pt, o), v) in target.index_axis_mut(Axis(1), i).indexed_iter_mut() {
                *v += corr[[pt * k + o, c]];
            }
        }
    };
    scatter(&mut m.attributions.view_mut(), &z.dot(&b.h.t()));
    if let Some(g) = &mut m.group_attributions {
        for (q, r) in groups.iter().enumerate() {
            let cols = s![.., r.clone()];
            let corr = z.slice(cols).dot(&b.h.slice(cols).t());
            scatter(&mut g.index_axis_mut(Axis(0), q), &corr);
        }
    }
    if !b.coupled.is_empty() {
        let n = z.dot(&ArrayView1::from(&b.coupled[..]));
        for ((pt, o), v) in m.nondata.indexed_iter_mut() {
            *v += n[pt * k + o];
        }
    }
}

/// Σ of arrays of one shape, in the order given, with Neumaier's compensation.
fn sum<'a, D: Dimension + 'a>(arrays: impl Iterator<Item = &'a Array<f64, D>>) -> Array<f64, D> {
    let mut arrays = arrays;
    let first = arrays.next().expect("at least one stretch").clone();
    let mut carry = Array::zeros(first.raw_dim());
    let mut total = first;
    for a in arrays {
        ndarray::Zip::from(&mut total)
            .and(&mut carry)
            .and(a)
            .for_each(|s, c, v| compensated::add(s, c, *v));
    }
    total + carry
}

/// Blocks of points (starting at `starts`) set side by side; a step's checks are the worst over
/// the blocks, its costs their sum.
pub(crate) fn side_by_side(blocks: Vec<KernelMachine>, starts: &[usize]) -> KernelMachine {
    let cat2 = |f: fn(&KernelMachine) -> &Array2<f64>| {
        let views: Vec<_> = blocks.iter().map(|m| f(m).view()).collect();
        ndarray::concatenate(Axis(0), &views).expect("blocks share outputs")
    };
    let attr: Vec<_> = blocks.iter().map(|m| m.attributions.view()).collect();
    let groups = blocks[0].group_attributions.as_ref().map(|_| {
        let g: Vec<_> = blocks
            .iter()
            .map(|m| m.group_attributions.as_ref().expect("every block").view())
            .collect();
        ndarray::concatenate(Axis(1), &g).expect("blocks share groups")
    });
    let mut steps: Vec<StepCheck> = blocks[0].steps.clone();
    for (b, m) in blocks.iter().enumerate().skip(1) {
        for (all, c) in steps.iter_mut().zip(&m.steps) {
            if c.certificate > all.certificate || c.certificate.is_nan() {
                all.certificate = c.certificate;
                all.worst_point = starts[b] + c.worst_point;
            }
            all.evals += c.evals;
            all.pieces += c.pieces;
            all.rounding = all.rounding.max(c.rounding);
            let worst = |a: Option<f64>, b: Option<f64>| Some(a?.max(b?));
            all.jbar_error = worst(all.jbar_error, c.jbar_error);
            all.attribution_bound = worst(all.attribution_bound, c.attribution_bound);
        }
    }
    KernelMachine {
        bias: cat2(|m| &m.bias),
        attributions: ndarray::concatenate(Axis(0), &attr).expect("blocks share samples"),
        nondata: cat2(|m| &m.nondata),
        residual: cat2(|m| &m.residual),
        network: cat2(|m| &m.network),
        steps,
        constant_coefficients: blocks[0].constant_coefficients.clone(),
        optimizer: blocks[0].optimizer.clone(),
        group_attributions: groups,
        unit_roundoff: blocks[0].unit_roundoff,
    }
}
