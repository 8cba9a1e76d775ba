//! The tangent kernels' Gram matrices in bounded memory.
//!
//! A trace kernel's features are a point's whole Jacobian, K·P numbers: kept for every
//! training point they take n·K·P·8 bytes (12.6 GB for 1,500 digits and a 34k-parameter
//! model). So the training points are taken in *panels* whose features fit in the budget; each
//! panel's Gram entries against itself, the later training points and the test points are
//! computed while it is held, and the later points' features are recomputed block by block.
//! A Gram entry is the same dot product of the same two feature rows whatever the panel size,
//! so the budget changes the time (Jacobians recomputed once per panel), never the Gram.

use super::compare::{CompareOptions, Surrogate};
use super::tangent::{Kernel, Projection, cosine_normalise, jacobians, penultimate};
use crate::{Network, ReplayError};
use epk_model::EpkModel;
use ndarray::{Array2, Axis, s};
use std::time::Instant;

/// Each kernel's train × train and test × train Gram, and the seconds it took.
pub type Grams = Vec<(Array2<f64>, Array2<f64>, f64)>;

/// What a kernel's features are made of; kernels of the same kind share them (trNTK⁰ and
/// trNTK differ only by the cosine normalisation).
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Tangent(Kernel),
    Ck,
}

fn kind(s: Surrogate) -> Kind {
    match s {
        Surrogate::Tangent(Kernel::TrNtk) => Kind::Tangent(Kernel::TrNtk0),
        Surrogate::Tangent(k) => Kind::Tangent(k),
        _ => Kind::Ck,
    }
}

/// Features of `xs` for each kind, one Jacobian evaluation shared by the tangent kinds.
struct Features<'a, M: EpkModel> {
    net: &'a Network<M>,
    w: &'a [f64],
    kinds: Vec<Kind>,
    projection: Projection,
}

impl<M: EpkModel> Features<'_, M> {
    fn of(&self, xs: &[f64]) -> Result<Vec<Array2<f64>>, ReplayError> {
        let k = self.net.outputs();
        let need_j = self.kinds.iter().any(|&q| q != Kind::Ck);
        let j = if need_j {
            jacobians(self.net, self.w, xs)
        } else {
            Array2::zeros((0, 0))
        };
        self.kinds
            .iter()
            .map(|&q| match q {
                Kind::Tangent(kernel) => Ok(kernel.features(&j, k, &self.projection)),
                Kind::Ck => penultimate(self.net, self.w, xs).ok_or_else(|| {
                    ReplayError::Input(
                        "the CK (conjugate kernel) reads the input of the model's last layer, \
                         which it finds only when that layer goes through Switches::linear in \
                         epk_forward; route it there or leave ck out of --kernels"
                            .into(),
                    )
                }),
            })
            .collect()
    }

    /// Features of the points `range` of `train`, computed `block` points at a time.
    fn of_range(
        &self,
        train: &[f64],
        range: std::ops::Range<usize>,
        block: usize,
    ) -> Result<Vec<Array2<f64>>, ReplayError> {
        let len = self.net.input_len();
        let mut parts: Vec<Vec<Array2<f64>>> = vec![Vec::new(); self.kinds.len()];
        for start in range.clone().step_by(block) {
            let end = (start + block).min(range.end);
            for (q, phi) in self
                .of(&train[start * len..end * len])?
                .into_iter()
                .enumerate()
            {
                parts[q].push(phi);
            }
        }
        parts
            .iter()
            .map(|p| {
                let views: Vec<_> = p.iter().map(|a| a.view()).collect();
                ndarray::concatenate(Axis(0), &views)
                    .map_err(|e| ReplayError::Input(format!("kernel features: {e}")))
            })
            .collect()
    }
}

/// Train × train and test × train Grams of `kernels` at weights `w`, their features held in at
/// most about `options.memory` bytes (see the module documentation).
pub fn grams<M: EpkModel>(
    net: &Network<M>,
    w: &[f64],
    train: &[f64],
    test: &[f64],
    kernels: &[Surrogate],
    options: &CompareOptions,
) -> Result<Grams, ReplayError> {
    let started = Instant::now();
    let len = net.input_len();
    let (n, m) = (train.len() / len, test.len() / len);
    let mut kinds: Vec<Kind> = Vec::new();
    for &s in kernels {
        if !kinds.contains(&kind(s)) {
            kinds.push(kind(s));
        }
    }
    let features = Features {
        net,
        w,
        kinds,
        projection: Projection::new(options.projection_dim, net.num_params(), options.seed),
    };
    // Refused before any Gram is built; also gives each kind's width.
    let probe = features.of(&train[..len.min(train.len())])?;
    let width: usize = probe.iter().map(|p| p.ncols()).sum();
    // A Jacobian block takes K·P numbers a point; it and a block of features stay below a
    // quarter of the budget, a panel of features below the rest.
    let per_point = 8 * (net.outputs() * net.num_params() + width);
    let block = options.block.min(options.memory / 4 / per_point).max(1);
    let panel = (options.memory * 3 / 4 / (8 * width.max(1))).max(block);
    let phi_test = features.of(test)?;
    let q = features.kinds.len();
    let mut g_train = vec![Array2::<f64>::zeros((n, n)); q];
    let mut g_test = vec![Array2::<f64>::zeros((m, n)); q];
    for p0 in (0..n).step_by(panel) {
        let p1 = (p0 + panel).min(n);
        let phi = features.of_range(train, p0..p1, block)?;
        for c in 0..q {
            let gp = phi[c].dot(&phi[c].t());
            g_train[c].slice_mut(s![p0..p1, p0..p1]).assign(&gp);
            let gt = phi_test[c].dot(&phi[c].t());
            g_test[c].slice_mut(s![.., p0..p1]).assign(&gt);
        }
        for b0 in (p1..n).step_by(block) {
            let b1 = (b0 + block).min(n);
            let later = features.of_range(train, b0..b1, block)?;
            for c in 0..q {
                let g = phi[c].dot(&later[c].t());
                g_train[c].slice_mut(s![p0..p1, b0..b1]).assign(&g);
                g_train[c].slice_mut(s![b0..b1, p0..p1]).assign(&g.t());
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64() / kernels.len().max(1) as f64;
    Ok(kernels
        .iter()
        .map(|&s| {
            let c = features
                .kinds
                .iter()
                .position(|&k| k == kind(s))
                .expect("listed");
            let (mut gt, mut gs) = (g_train[c].clone(), g_test[c].clone());
            let cosine = matches!(s, Surrogate::Ck)
                || matches!(s, Surrogate::Tangent(kernel) if kernel.is_cosine());
            if cosine {
                let d_train: Vec<f64> = gt.diag().to_vec();
                let d_test: Vec<f64> = phi_test[c].rows().into_iter().map(|r| r.dot(&r)).collect();
                cosine_normalise(&mut gt, &d_train, &d_train);
                cosine_normalise(&mut gs, &d_test, &d_train);
            }
            (gt, gs, seconds)
        })
        .collect())
}
