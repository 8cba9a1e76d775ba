//! A kernel support-vector machine on a given Gram matrix (Bell et al. §4: the kernel
//! weights refitted by an SVM), one-vs-rest over classes, without a bias term, solved by dual
//! coordinate descent (Hsieh et al., 2008).

use ndarray::{Array2, ArrayView2};

/// One-vs-rest SVMs: for class c, f_c(x) = Σ_i α_{c,i} y_{c,i} K(x, x_i), y = ±1.
#[derive(Clone, Debug)]
pub struct Svm {
    /// α_{c,i} y_{c,i}, `[train samples, classes]`.
    pub coefficients: Array2<f64>,
    /// Largest KKT violation left per class, and the sweeps used.
    pub violation: f64,
    /// Coordinate sweeps used.
    pub sweeps: usize,
}

impl Svm {
    /// Fits to `gram` (`[n, n]`, symmetric, positive semi-definite) and `labels` in 0..classes
    /// with box constraint `c`: min ½ αᵀQα − Σα, 0 ≤ α ≤ C, Q_ij = y_i y_j K_ij.
    ///
    /// ```
    /// use epk_replay::kernels::svm::Svm;
    /// use ndarray::array;
    /// // Linear kernel on x = +1 (class 0) and x = −1 (class 1).
    /// let k = array![[1.0, -1.0], [-1.0, 1.0]];
    /// let svm = Svm::fit(k.view(), &[0, 1], 2, 10.0, 1e-12, 1000);
    /// let f = svm.decision(k.view());
    /// assert!((f[[0, 0]] - 1.0).abs() < 1e-9); // margin exactly 1
    /// ```
    pub fn fit(
        gram: ArrayView2<f64>,
        labels: &[usize],
        classes: usize,
        c: f64,
        tolerance: f64,
        max_sweeps: usize,
    ) -> Self {
        let n = gram.nrows();
        let mut coefficients = Array2::<f64>::zeros((n, classes));
        let (mut worst, mut sweeps) = (0.0f64, 0);
        for class in 0..classes {
            let y: Vec<f64> = labels
                .iter()
                .map(|&l| if l == class { 1.0 } else { -1.0 })
                .collect();
            let mut alpha = vec![0.0; n];
            // f_j = Σ_i α_i y_i K_ij, kept up to date.
            let mut f = vec![0.0; n];
            let mut violation = f64::INFINITY;
            let mut sweep = 0;
            while violation > tolerance && sweep < max_sweeps {
                sweep += 1;
                violation = 0.0;
                for i in 0..n {
                    let q = gram[[i, i]];
                    if q <= 0.0 {
                        continue;
                    }
                    let g = y[i] * f[i] - 1.0; // ∂/∂α_i
                    let projected = if alpha[i] <= 0.0 {
                        g.min(0.0)
                    } else if alpha[i] >= c {
                        g.max(0.0)
                    } else {
                        g
                    };
                    violation = violation.max(projected.abs());
                    if projected == 0.0 {
                        continue;
                    }
                    let new = (alpha[i] - g / q).clamp(0.0, c);
                    let step = (new - alpha[i]) * y[i];
                    if step != 0.0 {
                        for (fj, kij) in f.iter_mut().zip(gram.row(i)) {
                            *fj += step * kij;
                        }
                        alpha[i] = new;
                    }
                }
            }
            worst = worst.max(violation);
            sweeps = sweeps.max(sweep);
            for i in 0..n {
                coefficients[[i, class]] = alpha[i] * y[i];
            }
        }
        Svm {
            coefficients,
            violation: worst,
            sweeps,
        }
    }

    /// Decision values `[m, classes]` for cross-kernel rows `[m, n]`.
    pub fn decision(&self, cross: ArrayView2<f64>) -> Array2<f64> {
        cross.dot(&self.coefficients)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Four 1-D points with a linear kernel, separable with margin: the hard-margin solution
    /// without bias is w = 1/min|x| on the support vectors ±1 (the points ±3 do not count).
    #[test]
    fn finds_the_maximum_margin_without_bias() {
        let x = [1.0, 3.0, -1.0, -3.0];
        let k = Array2::from_shape_fn((4, 4), |(i, j)| x[i] * x[j]);
        let svm = Svm::fit(k.view(), &[0, 0, 1, 1], 2, 1e6, 1e-12, 10_000);
        assert!(svm.violation < 1e-12);
        let f = svm.decision(k.view());
        // f_0(x) = w x with w = 1: margins exactly 1 on the support vectors.
        assert!((f[[0, 0]] - 1.0).abs() < 1e-9 && (f[[2, 0]] + 1.0).abs() < 1e-9);
        assert!((f[[1, 0]] - 3.0).abs() < 1e-9);
        // Points beyond the margin have α = 0.
        assert_eq!(svm.coefficients[[1, 0]], 0.0);
        assert_eq!(svm.coefficients[[3, 0]], 0.0);
        // The box constraint binds when C is small: α ≤ C.
        let soft = Svm::fit(k.view(), &[0, 0, 1, 1], 2, 0.1, 1e-12, 10_000);
        assert!(soft.coefficients.iter().all(|a| a.abs() <= 0.1 + 1e-15));
    }
}
