//! Two orders' Jbar on one linear layer compared through a small triangular factor.
//!
//! On a linear layer, Σ_q c_q J_q for one output is G = Σ_q c_q ã_q ⊗ d_q = Ãᵀ·diag(c)·D, with
//! ã_q the layer's input at node q augmented by the bias input 1. Write the `[in + 1, n]`
//! matrix of those inputs as Q·R (Householder, R `[n, n]` upper triangular, Q with orthonormal
//! columns): then ‖G‖_F = ‖R·diag(c)·D‖_F, an `[n, out]` product. Comparing two orders (n = 5
//! nodes) then costs (in + 1)·n² + n²·out per output instead of (in + 1)·out·n, and nothing of
//! the layer's size is formed. Householder's R is the exact factor of the inputs perturbed by
//! a few roundings of their size, so the norms carry an error of that order of ‖G‖'s scale,
//! like the dense sums they replace (and below the rule's rounding floor, 16ε‖Q‖).

use super::combine::Term;
use super::linear::Layer;

impl Layer {
    /// For output `o` of this linear layer (one row per sample, no summed blocks):
    /// (‖Q − M‖²_F, ‖Q‖²_F) with Q = Σ w J over `q` and M over `m`.
    pub(super) fn spread_rank_one(
        &self,
        l: usize,
        q: &[Term<'_>],
        m: &[Term<'_>],
        o: usize,
    ) -> (f64, f64) {
        let terms = q.iter().chain(m);
        let mut inputs: Vec<Vec<f64>> = terms
            .clone()
            .map(|(_, f)| {
                let mut a = f.a[l].row(o).to_vec();
                if self.bias.is_some() {
                    a.push(1.0);
                }
                a
            })
            .collect();
        let r = householder_r(&mut inputs);
        let d: Vec<_> = terms.map(|(_, f)| f.d[l].row(o)).collect();
        // Q's weights, then the difference's (M's weights negated).
        let c_q: Vec<f64> = q.iter().map(|t| t.0).chain(m.iter().map(|_| 0.0)).collect();
        let c_diff: Vec<f64> = q
            .iter()
            .map(|t| t.0)
            .chain(m.iter().map(|t| -t.0))
            .collect();
        let (mut spread, mut size) = (0.0, 0.0);
        let (mut xq, mut xd) = (vec![0.0; self.outputs], vec![0.0; self.outputs]);
        for row in &r {
            xq.fill(0.0);
            xd.fill(0.0);
            for (j, (&rij, dj)) in row.iter().zip(&d).enumerate() {
                if rij == 0.0 {
                    continue;
                }
                let (sq, sd) = (rij * c_q[j], rij * c_diff[j]);
                for ((x, y), v) in xq.iter_mut().zip(xd.iter_mut()).zip(dj.iter()) {
                    *x += sq * v;
                    *y += sd * v;
                }
            }
            size += xq.iter().map(|v| v * v).sum::<f64>();
            spread += xd.iter().map(|v| v * v).sum::<f64>();
        }
        (spread, size)
    }
}

/// The R factor of the thin QR factorization of the matrix whose columns are `cols` (all of
/// one length), by Householder reflections, as rows: ‖M·y‖₂ = ‖R·y‖₂ for every y. `cols` is
/// overwritten.
pub(super) fn householder_r(cols: &mut [Vec<f64>]) -> Vec<Vec<f64>> {
    let n = cols.len();
    let len = cols.first().map_or(0, Vec::len);
    let steps = n.min(len);
    for j in 0..steps {
        let norm = cols[j][j..].iter().map(|v| v * v).sum::<f64>().sqrt();
        if norm == 0.0 {
            continue;
        }
        // v = x − αe₁ with α of the sign opposite to x₀, so that v₀ does not cancel.
        let alpha = if cols[j][j] > 0.0 { -norm } else { norm };
        let mut v = cols[j][j..].to_vec();
        v[0] -= alpha;
        let vv: f64 = v.iter().map(|x| x * x).sum();
        for col in cols[j..].iter_mut() {
            let s = 2.0 * v.iter().zip(&col[j..]).map(|(a, b)| a * b).sum::<f64>() / vv;
            col[j..].iter_mut().zip(&v).for_each(|(c, vi)| *c -= s * vi);
        }
        cols[j][j] = alpha;
        cols[j][j + 1..].fill(0.0);
    }
    (0..steps)
        .map(|i| {
            (0..n)
                .map(|c| if i <= c { cols[c][i] } else { 0.0 })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::householder_r;

    #[test]
    fn r_keeps_every_product_norm() {
        let cols: Vec<Vec<f64>> = (0..4)
            .map(|c| {
                (0..9)
                    .map(|i| ((i * 7 + c * 3) % 11) as f64 / 3.0 - 1.5)
                    .collect()
            })
            .collect();
        let r = householder_r(&mut cols.clone());
        for y in [[1.0, -2.0, 0.5, 3.0], [0.2, 0.3, -0.4, 0.1]] {
            let my: f64 = (0..9)
                .map(|i| (0..4).map(|c| cols[c][i] * y[c]).sum::<f64>().powi(2))
                .sum();
            let ry: f64 = r
                .iter()
                .map(|row| row.iter().zip(&y).map(|(a, b)| a * b).sum::<f64>().powi(2))
                .sum();
            assert!(
                (my.sqrt() - ry.sqrt()).abs() <= 1e-14 * my.sqrt(),
                "{my} {ry}"
            );
        }
        // Upper triangular.
        assert!(
            r.iter()
                .enumerate()
                .all(|(i, row)| row[..i].iter().all(|v| *v == 0.0))
        );
    }

    #[test]
    fn r_of_a_wide_or_rank_deficient_matrix() {
        // Two equal columns and a zero one: rank one; more columns than rows.
        let mut cols = vec![vec![3.0, 4.0], vec![3.0, 4.0], vec![0.0, 0.0]];
        let r = householder_r(&mut cols);
        assert_eq!(r.len(), 2);
        assert!((r[0][0].abs() - 5.0).abs() < 1e-15 && (r[0][1].abs() - 5.0).abs() < 1e-15);
        assert!(r[1].iter().all(|v| v.abs() < 1e-15));
    }
}
