//! Gauss–Legendre quadrature on [0, 1].

/// Nodes and weights of the `n`-point Gauss–Legendre rule mapped to [0, 1]; the weights sum
/// to one. Exact for polynomials of degree `2n − 1`.
///
/// Roots of P_n by Newton's method from Tricomi's initial guesses, weights from P_n'; both are
/// accurate to a few ulps for the `n` this crate uses (up to a few hundred).
///
/// ```
/// let (t, w) = epk_replay::quadrature::gauss::gauss_legendre(3);
/// let integral: f64 = t.iter().zip(&w).map(|(t, w)| w * t.powi(5)).sum();
/// assert!((integral - 1.0 / 6.0).abs() < 1e-15);
/// ```
pub fn gauss_legendre(n: usize) -> (Vec<f64>, Vec<f64>) {
    assert!(n >= 1, "a Gauss–Legendre rule needs at least one point");
    let mut nodes = vec![0.0; n];
    let mut weights = vec![0.0; n];
    let nf = n as f64;
    for i in 0..n.div_ceil(2) {
        // Root i of P_n on [-1, 1], largest first.
        let mut x = (std::f64::consts::PI * (i as f64 + 0.75) / (nf + 0.5)).cos();
        let mut dp = 0.0;
        for _ in 0..100 {
            let (p, d) = legendre(n, x);
            dp = d;
            let dx = p / d;
            x -= dx;
            if dx.abs() <= 1e-16 * x.abs().max(1.0) {
                let (_, d) = legendre(n, x);
                dp = d;
                break;
            }
        }
        let w = 2.0 / ((1.0 - x * x) * dp * dp);
        // Map to [0, 1]: t = (1 ± x) / 2, weight w / 2.
        nodes[i] = 0.5 * (1.0 - x);
        nodes[n - 1 - i] = 0.5 * (1.0 + x);
        weights[i] = 0.5 * w;
        weights[n - 1 - i] = 0.5 * w;
    }
    (nodes, weights)
}

/// P_n(x) and P_n'(x) by the three-term recurrence.
fn legendre(n: usize, x: f64) -> (f64, f64) {
    let (mut p0, mut p1) = (1.0, x);
    if n == 0 {
        return (1.0, 0.0);
    }
    for k in 2..=n {
        let kf = k as f64;
        let p2 = ((2.0 * kf - 1.0) * x * p1 - (kf - 1.0) * p0) / kf;
        p0 = p1;
        p1 = p2;
    }
    let d = n as f64 * (x * p1 - p0) / (x * x - 1.0);
    (p1, d)
}

#[cfg(test)]
mod tests {
    use super::gauss_legendre;

    #[test]
    fn exact_on_polynomials_up_to_degree_2n_minus_1() {
        for n in 1..=24 {
            let (t, w) = gauss_legendre(n);
            for degree in 0..2 * n {
                let q: f64 = t
                    .iter()
                    .zip(&w)
                    .map(|(t, w)| w * t.powi(degree as i32))
                    .sum();
                let exact = 1.0 / (degree as f64 + 1.0);
                assert!(
                    (q - exact).abs() < 4e-15,
                    "n = {n}, degree {degree}: {q} vs {exact}"
                );
            }
            // Degree 2n is not integrated exactly (visible while the error beats rounding).
            if n <= 6 {
                let q: f64 = t
                    .iter()
                    .zip(&w)
                    .map(|(t, w)| w * t.powi(2 * n as i32))
                    .sum();
                assert!((q - 1.0 / (2.0 * n as f64 + 1.0)).abs() > 1e-10, "n = {n}");
            }
        }
    }

    #[test]
    fn nodes_are_interior_sorted_and_symmetric() {
        let (t, w) = gauss_legendre(9);
        assert!(t.windows(2).all(|p| p[0] < p[1]));
        assert!(t[0] > 0.0 && t[8] < 1.0);
        for i in 0..9 {
            assert!((t[i] + t[8 - i] - 1.0).abs() < 1e-15);
            assert!((w[i] - w[8 - i]).abs() < 1e-15);
        }
        assert_eq!(t[4], 0.5);
    }
}
