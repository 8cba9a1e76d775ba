//! The tangent kernels of a network at fixed weights (Engel et al.): eNTK, trNTK⁰, trNTK,
//! pNTK, their Rademacher projections, and the conjugate kernel (CK). Formulas and references
//! are in `docs/kernels.md`.
//!
//! Gram matrices are computed in blocks of inputs, so that a train × train Gram of thousands of
//! points needs the Jacobians of two blocks at a time, never of the whole set.

use crate::network::Network;
use epk_model::EpkModel;
use ndarray::{Array2, Axis, s};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A member of the tangent-kernel family (Engel et al.): the one vocabulary for these kernels,
/// used by [`reduce`] on eNTK blocks and by [`Kernel::features`] on Jacobian rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// trNTK⁰(x, x') = Σ_c ⟨∇f_c(x), ∇f_c(x')⟩.
    TrNtk0,
    /// trNTK = trNTK⁰(x, x') / √(trNTK⁰(x, x) · trNTK⁰(x', x')).
    TrNtk,
    /// pNTK(x, x') = ⟨∇Σ_c f_c(x), ∇Σ_c f_c(x')⟩ / K.
    PNtk,
    /// trNTK on Rademacher-projected Jacobians ([`Projection`]).
    ProjTrNtk,
    /// pNTK on Rademacher-projected Jacobians ([`Projection`]).
    ProjPNtk,
}

impl Kernel {
    /// Every member, in the order `replay compare` lists them.
    pub const ALL: [Kernel; 5] = [
        Kernel::TrNtk0,
        Kernel::TrNtk,
        Kernel::PNtk,
        Kernel::ProjTrNtk,
        Kernel::ProjPNtk,
    ];

    /// The name on the command line (`--kernels`).
    pub fn name(self) -> &'static str {
        match self {
            Kernel::TrNtk0 => "trntk0",
            Kernel::TrNtk => "trntk",
            Kernel::PNtk => "pntk",
            Kernel::ProjTrNtk => "proj-trntk",
            Kernel::ProjPNtk => "proj-pntk",
        }
    }

    /// Whether the Gram is cosine-normalised ([`cosine_normalise`]).
    pub fn is_cosine(self) -> bool {
        matches!(self, Kernel::TrNtk | Kernel::ProjTrNtk)
    }

    /// Point features whose inner products are the kernel (before any cosine normalisation),
    /// from Jacobian rows `j` `[n·K, P]` (see [`jacobians`]): the stacked rows for the trace
    /// kernels, their sum over outputs / √K for the pNTK, projected first for the projections.
    pub fn features(self, j: &Array2<f64>, k: usize, projection: &Projection) -> Array2<f64> {
        let n = j.nrows() / k;
        let summed = |rows: &Array2<f64>| -> Array2<f64> {
            let width = rows.ncols();
            let mut out = Array2::<f64>::zeros((n, width));
            for (i, mut row) in out.rows_mut().into_iter().enumerate() {
                row += &rows.slice(s![i * k..(i + 1) * k, ..]).sum_axis(Axis(0));
            }
            out / (k as f64).sqrt()
        };
        let stacked = |rows: Array2<f64>| -> Array2<f64> {
            let width = rows.ncols();
            rows.into_shape_with_order((n, k * width))
                .expect("rows are (point, output)")
        };
        match self {
            Kernel::TrNtk0 | Kernel::TrNtk => stacked(j.clone()),
            Kernel::PNtk => summed(j),
            Kernel::ProjTrNtk => stacked(projection.apply(j)),
            Kernel::ProjPNtk => summed(&projection.apply(j)),
        }
    }
}

/// Every input's Jacobian, `[n·outputs, P]`, row `r·outputs + c` = ∇_w f_c(x_r).
pub fn jacobians<M: EpkModel>(net: &Network<M>, weights: &[f64], xs: &[f64]) -> Array2<f64> {
    net.implementation().jacobians(net, weights, xs)
}

/// Penultimate features φ(x), the input of the model's last [`Switches::linear`] layer,
/// `[n, width]`: the conjugate kernel is their cosine. `None` when the model routes no linear
/// layer through `Switches::linear`.
///
/// [`Switches::linear`]: epk_model::Switches::linear
pub fn penultimate<M: EpkModel>(
    net: &Network<M>,
    weights: &[f64],
    xs: &[f64],
) -> Option<Array2<f64>> {
    let n = xs.len() / net.input_len();
    let f = net.factors(weights, xs, &vec![0.0; n * net.outputs()]);
    // A convolution last (several rows per sample) has no penultimate features.
    f.a.last().filter(|a| a.nrows() == n).cloned()
}

/// The eNTK blocks ⟨∇f_c(x), ∇f_d(x')⟩ for two sets of Jacobian rows: `[n·K, m·K]`.
pub fn entk(a: &Array2<f64>, b: &Array2<f64>) -> Array2<f64> {
    a.dot(&b.t())
}

/// Reduces eNTK blocks `[n·K, m·K]` to a trace-family Gram `[n, m]`: the trace of each block
/// for the trace kernels, its sum / K for the pNTK (unnormalised: normalise trNTK with
/// [`cosine_normalise`]; for the projections, pass blocks of projected Jacobians).
pub fn reduce(blocks: &Array2<f64>, k: usize, kernel: Kernel) -> Array2<f64> {
    let (n, m) = (blocks.nrows() / k, blocks.ncols() / k);
    let mut g = Array2::<f64>::zeros((n, m));
    for i in 0..n {
        for j in 0..m {
            let block = blocks.slice(s![i * k..(i + 1) * k, j * k..(j + 1) * k]);
            g[[i, j]] = match kernel {
                Kernel::TrNtk0 | Kernel::TrNtk | Kernel::ProjTrNtk => block.diag().sum(),
                Kernel::PNtk | Kernel::ProjPNtk => block.sum() / k as f64,
            };
        }
    }
    g
}

/// K(x, x') / √(K(x, x) K(x', x')) given the diagonals of both sides.
pub fn cosine_normalise(g: &mut Array2<f64>, left: &[f64], right: &[f64]) {
    for ((i, j), v) in g.indexed_iter_mut() {
        let d = (left[i] * right[j]).sqrt();
        *v = if d > 0.0 { *v / d } else { 0.0 };
    }
}

/// A seeded Rademacher projection R (`dim × P`, entries ±1/√dim), generated block by block so
/// that it is never held whole: ⟨Ru, Rv⟩ ≈ ⟨u, v⟩ (Johnson–Lindenstrauss).
#[derive(Clone, Debug)]
pub struct Projection {
    /// Projection dimension D.
    pub dim: usize,
    /// Seed of R.
    pub seed: u64,
}

impl Projection {
    /// Columns of R per generated block.
    const BLOCK: usize = 256;

    /// Default dimension 10240, capped at P (Engel et al.).
    pub fn new(dim: Option<usize>, num_params: usize, seed: u64) -> Self {
        Projection {
            dim: dim.unwrap_or(10240).min(num_params).max(1),
            seed,
        }
    }

    /// R·rowᵀ for every row of `rows` (`[n, P]`): `[n, dim]`.
    pub fn apply(&self, rows: &Array2<f64>) -> Array2<f64> {
        let p = rows.ncols();
        let scale = 1.0 / (self.dim as f64).sqrt();
        let mut out = Array2::<f64>::zeros((rows.nrows(), self.dim));
        for (b, start) in (0..p).step_by(Self::BLOCK).enumerate() {
            let end = (start + Self::BLOCK).min(p);
            // Each block has its own stream, so R does not depend on how it is traversed.
            let mut rng =
                StdRng::seed_from_u64(self.seed ^ (b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let mut r = Array2::<f64>::zeros((end - start, self.dim));
            for v in r.iter_mut() {
                *v = if rng.next_u64() & 1 == 0 {
                    scale
                } else {
                    -scale
                };
            }
            out += &rows.slice(s![.., start..end]).dot(&r);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projection_preserves_inner_products_within_the_jl_bound() {
        // 20 random vectors in R^5000 projected to 2048 dimensions. Achlioptas' bound for
        // Rademacher projections: P(|‖Ru‖² − ‖u‖²| > ε‖u‖²) ≤ 2 exp(−D(ε²/2 − ε³/3)/2), which
        // for ε = 0.2, D = 2048 is 4e-8 per vector; by polarisation every inner product then
        // moves by at most ε(‖u‖² + ‖v‖²)/2. The seed is fixed, so the test is deterministic.
        let (n, p, d) = (20, 5000, 2048);
        let mut rng = StdRng::seed_from_u64(3);
        let u = Array2::from_shape_fn((n, p), |_| (rng.next_u64() % 2001) as f64 / 1000.0 - 1.0);
        let proj = Projection::new(Some(d), p, 11);
        assert_eq!(proj.dim, d);
        let ru = proj.apply(&u);
        let exact = u.dot(&u.t());
        let approx = ru.dot(&ru.t());
        let eps = 0.2;
        let mut worst: f64 = 0.0;
        for i in 0..n {
            for j in 0..n {
                let bound = eps * (exact[[i, i]] + exact[[j, j]]) / 2.0;
                let err = (approx[[i, j]] - exact[[i, j]]).abs();
                assert!(err <= bound, "({i}, {j}): {err} > {bound}");
                worst = worst.max(err / bound);
            }
        }
        // The projection does something: not the identity, not exact.
        assert!(worst > 0.0);
        // Deterministic in the seed, independent of how rows are batched.
        let again = proj.apply(&u.slice(s![..3, ..]).to_owned());
        assert_eq!(again, ru.slice(s![..3, ..]));
        assert_eq!(Projection::new(None, 300, 0).dim, 300, "capped at P");
    }

    #[test]
    fn trace_reductions_of_entk_blocks() {
        // Two inputs, K = 2: blocks [[1, 2], [0, 4]] and [[5, 6], [7, 8]] side by side.
        let blocks =
            Array2::from_shape_vec((2, 4), vec![1.0, 2.0, 5.0, 6.0, 0.0, 4.0, 7.0, 8.0]).unwrap();
        let tr = reduce(&blocks, 2, Kernel::TrNtk0);
        assert_eq!(tr, Array2::from_shape_vec((1, 2), vec![5.0, 13.0]).unwrap());
        let p = reduce(&blocks, 2, Kernel::PNtk);
        assert_eq!(p, Array2::from_shape_vec((1, 2), vec![3.5, 13.0]).unwrap());
        let mut g = tr.clone();
        cosine_normalise(&mut g, &[4.0], &[1.0, 169.0]);
        assert_eq!(g, Array2::from_shape_vec((1, 2), vec![2.5, 0.5]).unwrap());
    }
}
