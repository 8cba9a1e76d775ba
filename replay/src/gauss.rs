//! Gauss–Legendre quadrature on [0, 1].

/// Nodes and weights of the `n`-point Gauss–Legendre rule mapped to [0, 1]; the weights sum
/// to one. Exact for polynomials of degree `2n − 1`.
///
/// Roots of P_n by Newton's method from Tricomi's initial guesses, weights from P_n'; both are
/// accurate to a few ulps for the `n` this crate uses (up to a few hundred).
///
/// ```
/// let (t, w) = epk_replay::gauss::gauss_legendre(3);
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
