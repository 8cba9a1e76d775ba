//! Exact by degree. A model of L weighted layers joined by ReLUs and max-pools
//! ([`epk_model::EpkModel::path_degree`]) is, on a piece of a step where no switching value
//! changes sign, a polynomial of degree L in t: each layer multiplies its input by weights
//! affine in t. Its Jacobian J then has degree L − 1, and Gauss–Legendre of order n, exact to
//! degree 2n − 1, integrates it exactly once 2n ≥ L: in every direction, so every training
//! point's term and not only their sum along Δw_s.
//!
//! What has to be certified is the premise: that no switching value changes sign inside the
//! piece. The signs at its ends miss a value that crosses zero twice. But each switching value
//! is itself a polynomial of degree at most L there (by induction over the layers: a layer's
//! values are polynomials while every switch before it keeps its sign), so L + 1 samples
//! determine it, and its Bernstein coefficients on [a, b] bound it (the convex-hull
//! property): coefficients all of one sign, the value keeps that sign on the whole piece.
//!
//! A max-pool's margin for the chosen element is a minimum of polynomials, not a polynomial;
//! but the other elements' margins are x_j − x_chosen, polynomials, and their signs alone fix
//! the choice. If the chosen element's margin is refused the piece falls back to comparing
//! orders, which is only slower.

/// Degrees above which the exact path is not tried (equispaced Bernstein collocation grows
/// ill-conditioned, and the samples would cost more than the orders they save).
pub const MAX_DEGREE: usize = 8;

/// Roundings of the largest sample that a Bernstein coefficient may lie within of zero and
/// still count as zero: one coefficient is a combination of the samples with weights up to
/// the conversion's norm, each sample a forward pass with its own rounding.
const MARGIN: f64 = 64.0;

/// The Gauss–Legendre order that integrates J of a degree-L path exactly: ⌈L/2⌉, at least 1.
pub fn exact_order(degree: usize) -> usize {
    degree.div_ceil(2).max(1)
}

/// The interior sample points a + (j/L)(b − a), j = 1 … L − 1: with the ends, L + 1 points
/// that determine a polynomial of degree L.
pub fn interior(a: f64, b: f64, degree: usize) -> Vec<f64> {
    (1..degree)
        .map(|j| a + (b - a) * j as f64 / degree as f64)
        .collect()
}

/// Values at the equispaced points j/L of [0, 1] to Bernstein coefficients of degree L.
pub struct Bernstein {
    degree: usize,
    /// `[L + 1, L + 1]` row-major: coefficient i = Σ_j inv[i, j] · value j.
    inv: Vec<f64>,
    /// max_i Σ_j |inv[i, j]|: how much the conversion can amplify the samples' rounding.
    norm: f64,
}

impl Bernstein {
    /// The conversion for degree `degree` (the collocation matrix B_i(j/L) inverted by
    /// Gauss–Jordan elimination with partial pivoting).
    pub fn new(degree: usize) -> Self {
        let n = degree + 1;
        let mut m = vec![0.0; n * n];
        for j in 0..n {
            let u = j as f64 / degree.max(1) as f64;
            for i in 0..n {
                m[j * n + i] =
                    binomial(degree, i) * u.powi(i as i32) * (1.0 - u).powi((n - 1 - i) as i32);
            }
        }
        let inv = invert(m, n);
        let norm = inv
            .chunks(n)
            .map(|row| row.iter().map(|v| v.abs()).sum::<f64>())
            .fold(0.0, f64::max);
        Bernstein { degree, inv, norm }
    }

    /// The Bernstein coefficients of the polynomial through `values` at j/L, j = 0 … L.
    pub fn coefficients(&self, values: &[f64]) -> Vec<f64> {
        let n = self.degree + 1;
        self.inv
            .chunks(n)
            .map(|row| row.iter().zip(values).map(|(a, v)| a * v).sum())
            .collect()
    }

    /// The rounding margin for samples whose largest magnitude is `scale`.
    pub fn margin(&self, scale: f64) -> f64 {
        MARGIN * f64::EPSILON * self.norm * scale
    }

    /// Whether the degree-L polynomial through `values` keeps one sign inside the interval,
    /// up to `margin`: every coefficient within it (a tie, such as a max-pool window of
    /// equal values, or a value at the rounding level of the layer), or every interior
    /// coefficient beyond it on one side and the end ones not beyond it on the other (a
    /// value that switches at an end of the piece is zero there up to the root's rounding).
    pub fn keeps_sign(&self, values: &[f64], margin: f64) -> bool {
        let c = self.coefficients(values);
        if c.iter().all(|v| v.abs() <= margin) {
            return true;
        }
        let inner = &c[1..c.len() - 1];
        let one_side =
            |s: f64| inner.iter().all(|v| s * v > margin) && c.iter().all(|v| s * v >= -margin);
        one_side(1.0) || one_side(-1.0)
    }
}

/// Whether no switching value changes sign inside a piece: `samples[j]` holds every
/// switching value at a + (j/L)(b − a), j = 0 … L (the piece's ends and [`interior`]).
///
/// The rounding margin scales with the largest switching value of all: a value's rounding
/// error comes from the magnitudes summed into it, the layer's, not from its own size, and
/// a value that only wanders in its rounding noise must not be refused at every bisection.
pub fn fixed_pattern(bernstein: &Bernstein, samples: &[&[f64]]) -> bool {
    let units = samples.iter().map(|s| s.len()).min().unwrap_or(0);
    let scale = samples
        .iter()
        .flat_map(|s| s.iter())
        .fold(0.0f64, |m, v| m.max(v.abs()));
    let margin = bernstein.margin(scale);
    let mut values = vec![0.0; samples.len()];
    (0..units).all(|u| {
        for (v, s) in values.iter_mut().zip(samples) {
            *v = s[u];
        }
        bernstein.keeps_sign(&values, margin)
    })
}

fn binomial(n: usize, k: usize) -> f64 {
    (0..k).fold(1.0, |c, i| c * (n - i) as f64 / (i + 1) as f64)
}

/// The inverse of the `n × n` row-major matrix `m` (non-singular: Bernstein collocation at
/// distinct points).
fn invert(mut m: Vec<f64>, n: usize) -> Vec<f64> {
    let mut inv: Vec<f64> = (0..n * n)
        .map(|i| if i / n == i % n { 1.0 } else { 0.0 })
        .collect();
    for col in 0..n {
        let pivot = (col..n)
            .max_by(|&a, &b| m[a * n + col].abs().total_cmp(&m[b * n + col].abs()))
            .expect("a column has rows");
        for k in 0..n {
            m.swap(col * n + k, pivot * n + k);
            inv.swap(col * n + k, pivot * n + k);
        }
        let d = m[col * n + col];
        for k in 0..n {
            m[col * n + k] /= d;
            inv[col * n + k] /= d;
        }
        for r in (0..n).filter(|&r| r != col) {
            let f = m[r * n + col];
            for k in 0..n {
                m[r * n + k] -= f * m[col * n + k];
                inv[r * n + k] -= f * inv[col * n + k];
            }
        }
    }
    inv
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Samples of p at the L + 1 points of [a, b].
    fn samples(p: impl Fn(f64) -> f64, a: f64, b: f64, degree: usize) -> Vec<f64> {
        let mut ts = vec![a];
        ts.extend(interior(a, b, degree));
        ts.push(b);
        ts.into_iter().map(p).collect()
    }

    #[test]
    fn coefficients_are_the_closed_form_bernstein_ones() {
        // t² − 0.6t + 0.08 on [0, 1]: b0 = p(0), b1 = p(0) + p'(0)/2, b2 = p(1).
        let p = |t: f64| t * t - 0.6 * t + 0.08;
        let c = Bernstein::new(2).coefficients(&samples(p, 0.0, 1.0, 2));
        for (got, want) in c.iter().zip([0.08, -0.22, 0.48]) {
            assert!((got - want).abs() < 1e-15, "{c:?}");
        }
        // 1 − t + t³ in degree 3: 1, 2/3, 1/3, 1.
        let p = |t: f64| 1.0 - t + t * t * t;
        let c = Bernstein::new(3).coefficients(&samples(p, 0.0, 1.0, 3));
        for (got, want) in c.iter().zip([1.0, 2.0 / 3.0, 1.0 / 3.0, 1.0]) {
            assert!((got - want).abs() < 1e-15, "{c:?}");
        }
    }

    /// `keeps_sign` with the margin of the values' own scale.
    fn keeps(b: &Bernstein, values: &[f64]) -> bool {
        let scale = values.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        b.keeps_sign(values, b.margin(scale))
    }

    #[test]
    fn a_double_crossing_the_samples_miss_is_refused() {
        // Roots at 0.2 and 0.4 of [0, 1]; the samples at 0, 1/2 and 1 are all positive.
        let p = |t: f64| (t - 0.2) * (t - 0.4);
        let s = samples(p, 0.0, 1.0, 2);
        assert!(s.iter().all(|v| *v > 0.0));
        assert!(!keeps(&Bernstein::new(2), &s));
        // The same on a short piece inside a step, at degree 3.
        let q = |t: f64| (t - 0.301) * (t - 0.303) * (t + 1.0);
        let s = samples(q, 0.3, 0.33, 3);
        assert!(s.iter().all(|v| *v > 0.0));
        assert!(!keeps(&Bernstein::new(3), &s));
    }

    #[test]
    fn values_of_one_sign_ties_and_switches_at_the_ends_are_certified() {
        let b3 = Bernstein::new(3);
        assert!(keeps(&b3, &samples(|t| 1.0 - t + t * t * t, 0.0, 1.0, 3)));
        assert!(keeps(
            &b3,
            &samples(|t| -(1.0 - t + t * t * t), 0.0, 1.0, 3)
        ));
        // Zero at both ends (switching there), positive inside.
        assert!(keeps(
            &b3,
            &samples(|t| t * (1.0 - t) * (2.0 - t), 0.0, 1.0, 3)
        ));
        // A root at the end, off by a rounding.
        let r = 0.25 + 1e-17;
        assert!(keeps(&b3, &samples(|t| (t - r) * (t + 3.0), 0.25, 0.5, 3)));
        // An exact tie.
        assert!(keeps(&b3, &[0.0; 4]));
        // A single crossing inside.
        assert!(!keeps(&b3, &samples(|t| t - 0.5, 0.0, 1.0, 3)));
    }

    fn refs(v: &[Vec<f64>]) -> Vec<&[f64]> {
        v.iter().map(|s| s.as_slice()).collect()
    }

    #[test]
    fn a_piece_is_fixed_only_if_every_unit_keeps_its_sign() {
        let b2 = Bernstein::new(2);
        let good = samples(|t| 1.0 + t, 0.0, 1.0, 2);
        let bad = samples(|t| (t - 0.2) * (t - 0.4), 0.0, 1.0, 2);
        let by_point = |units: &[&[f64]]| -> Vec<Vec<f64>> {
            (0..3)
                .map(|j| units.iter().map(|u| u[j]).collect())
                .collect()
        };
        let ok = by_point(&[&good, &good]);
        let mixed = by_point(&[&good, &bad]);
        assert!(fixed_pattern(&b2, &refs(&ok)));
        // A value wandering in the rounding noise of a layer of values near 1: a tie.
        let noise = [1e-17, -2e-17, 1e-17];
        assert!(fixed_pattern(&b2, &refs(&by_point(&[&good, &noise]))));
        assert!(!keeps(&b2, &noise), "on its own scale it would be refused");
        assert!(!fixed_pattern(&b2, &refs(&mixed)));
    }

    #[test]
    fn the_exact_order_integrates_degree_l_minus_one() {
        assert_eq!(exact_order(1), 1);
        assert_eq!(exact_order(3), 2);
        assert_eq!(exact_order(4), 2);
        assert_eq!(exact_order(5), 3);
    }
}
