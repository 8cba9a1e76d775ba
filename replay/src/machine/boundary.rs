//! Where a stateful replay of the steps s0..s1 meets the steps after it.
//!
//! The backward pass carries the adjoint Z_s = α_s u_s + a_{s+1} Z_{s+1} (`stateful.rs`). A
//! stretch replayed alone starts from Z_{s1} = 0, so it computes Z_s^loc, and the true adjoint
//! is Z_s = Z_s^loc + P_s Z_{s1} with P_s = Π_{r=s+1}^{s1} a_r. Z_{s1} is known only once the
//! later steps are replayed, but everything it reaches is linear in it:
//! - the data terms, through E_s = γ_s u_s + b_s Z_s: sample i gains
//!   ⟨Z_{s1}, H_i⟩ with H_i = Σ_s b_s P_s c_s ⊙ ∇_w f(x_i; w_s)·∂L/∂f (over the steps i is in);
//! - the coupled decay, through E_s·(λ_c w_s): ⟨Z_{s1}, V⟩ with V = Σ_s b_s P_s λ_c w_s;
//! - the stretch before, whose own Z_{s0} is Z_{s0}^loc + P_{s0} Z_{s1}.
//!
//! So a stretch keeps Z_{s0}^loc, P_{s0}, V and the H_i of the samples it saw: an affine map of
//! Z_{s1}, which a reduction applies from the last stretch to the first (an exclusive scan of
//! affine maps, `crate::shard::reduce`).

use ndarray::{Array2, ArrayView2};
use std::collections::HashMap;

/// A stretch's affine map of the adjoint that enters it from the later steps.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Boundary {
    /// Z_{s0}^loc, `[points·outputs, P]`.
    pub z: Array2<f64>,
    /// P_{s0} = Π_{r=s0+1}^{s1} a_r.
    pub carry: f64,
    /// V, `[P]` (empty when the stretch ends the run: nothing enters it).
    pub coupled: Vec<f64>,
    /// The training samples the stretch saw, one per row of `h`.
    pub samples: Vec<usize>,
    /// H_i, `[samples, P]`.
    pub h: Array2<f64>,
}

/// Builds a [`Boundary`] while the backward pass walks the stretch from s1 − 1 down to s0.
pub(super) struct Through {
    /// Whether anything enters the stretch (it does not end the run).
    open: bool,
    /// P_s of the step being walked.
    product: f64,
    /// P of the step walked last.
    last: f64,
    coupled: Vec<f64>,
    rows: HashMap<usize, usize>,
    samples: Vec<usize>,
    /// H, `[samples, P]`.
    h: Array2<f64>,
}

impl Through {
    /// For a stretch whose next step (s1) has momentum factor `a_s1` (`None` when the stretch
    /// ends the run) and whose batches hold `samples` (each once, in any order): H is sized
    /// once, one row per sample.
    pub fn new(a_s1: Option<f64>, p: usize, samples: Vec<usize>) -> Self {
        let open = a_s1.is_some();
        let samples = if open { samples } else { Vec::new() };
        let rows = samples.iter().enumerate().map(|(r, &i)| (i, r)).collect();
        Through {
            open,
            product: a_s1.unwrap_or(0.0),
            // An empty stretch passes the adjoint on unchanged.
            last: 1.0,
            coupled: vec![0.0; if open { p } else { 0 }],
            rows,
            h: Array2::zeros((samples.len(), p)),
            samples,
        }
    }

    /// b_s P_s: what step s's Z_s carries of Z_{s1} into E_s.
    pub fn beta(&self, b: f64) -> f64 {
        b * self.product
    }

    /// V += β λ_c w_s (`coupled` is λ_c w_s).
    pub fn add_coupled(&mut self, beta: f64, coupled: &[f64]) {
        if !self.open {
            return;
        }
        for (v, c) in self.coupled.iter_mut().zip(coupled) {
            *v += beta * c;
        }
    }

    /// Whether anything enters the stretch: then [`Through::add_grads`] needs each sample's
    /// gradient.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// H_i += β c_s ⊙ g_i for a block's samples `indices` and their gradients `grads`
    /// `[samples, P]` (weighted by ∂L/∂f).
    pub fn add_grads(
        &mut self,
        beta: f64,
        clip: Option<&[f64]>,
        indices: &[usize],
        grads: &ArrayView2<f64>,
    ) {
        if !self.open {
            return;
        }
        for (&i, g) in indices.iter().zip(grads.rows()) {
            let row = self.rows[&i];
            let mut h = self.h.row_mut(row);
            match clip {
                Some(c) => {
                    for ((h, g), c) in h.iter_mut().zip(g).zip(c) {
                        *h += beta * c * g;
                    }
                }
                None => h.scaled_add(beta, &g),
            }
        }
    }

    /// After step s: P_{s−1} = P_s a_s.
    pub fn advance(&mut self, a_s: f64) {
        self.last = self.product;
        self.product *= a_s;
    }

    /// The map, given Z_{s0}^loc once s0 is walked.
    pub fn finish(self, z: Array2<f64>) -> Boundary {
        Boundary {
            z,
            carry: self.last,
            coupled: self.coupled,
            samples: self.samples,
            h: self.h,
        }
    }
}
