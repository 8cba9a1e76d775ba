//! Gaussian-process regression with a given Gram matrix (Bell et al. §4: the exact path kernel
//! as a GP prior on the network's outputs).

use ndarray::{Array1, Array2, ArrayView1, ArrayView2};

/// Why a GP could not be fitted.
#[derive(Debug, thiserror::Error)]
#[error(
    "the Gram matrix plus noise {noise:.3e} is not positive definite (pivot {pivot} = {value:.3e})"
)]
pub struct NotPositiveDefinite {
    /// The noise variance σ² added to the diagonal.
    pub noise: f64,
    /// The Cholesky pivot that failed.
    pub pivot: usize,
    /// Its value.
    pub value: f64,
}

/// A GP conditioned on training targets: the Cholesky factor of K + σ²I and α = (K + σ²I)⁻¹ y.
#[derive(Clone, Debug)]
pub struct Gp {
    chol: Array2<f64>,
    alpha: Array2<f64>,
    /// The noise variance σ².
    pub noise: f64,
}

impl Gp {
    /// Conditions on `gram` (`[n, n]`, symmetric) and `targets` (`[n, outputs]`) with noise
    /// variance `noise`.
    ///
    /// ```
    /// use epk_replay::kernels::gp::Gp;
    /// use ndarray::array;
    /// let k = array![[2.0, 1.0], [1.0, 2.0]];
    /// let gp = Gp::fit(k.view(), array![[1.0], [-1.0]].view(), 1e-12).unwrap();
    /// let (mean, var) = gp.predict(k.view(), array![2.0, 2.0].view());
    /// assert!((mean[[0, 0]] - 1.0).abs() < 1e-9 && var[0].abs() < 1e-9);
    /// ```
    pub fn fit(
        gram: ArrayView2<f64>,
        targets: ArrayView2<f64>,
        noise: f64,
    ) -> Result<Self, NotPositiveDefinite> {
        let n = gram.nrows();
        let mut a = gram.to_owned();
        for i in 0..n {
            a[[i, i]] += noise;
        }
        let chol = cholesky(a).map_err(|(pivot, value)| NotPositiveDefinite {
            noise,
            pivot,
            value,
        })?;
        let mut alpha = targets.to_owned();
        for mut col in alpha.columns_mut() {
            let y = solve_lower(&chol, col.view());
            let x = solve_upper_t(&chol, y.view());
            col.assign(&x);
        }
        Ok(Gp { chol, alpha, noise })
    }

    /// Predictive mean `[m, outputs]` and variance `[m]` at inputs with cross-kernel rows
    /// `cross` (`[m, n]`) and prior variances `prior` (`[m]`, K(x, x)).
    pub fn predict(
        &self,
        cross: ArrayView2<f64>,
        prior: ArrayView1<f64>,
    ) -> (Array2<f64>, Array1<f64>) {
        let mean = cross.dot(&self.alpha);
        let var = Array1::from_iter(cross.rows().into_iter().zip(prior).map(|(row, p)| {
            let v = solve_lower(&self.chol, row);
            p - v.dot(&v)
        }));
        (mean, var)
    }
}

/// Lower Cholesky factor, or the failing pivot and its value.
fn cholesky(mut a: Array2<f64>) -> Result<Array2<f64>, (usize, f64)> {
    let n = a.nrows();
    for j in 0..n {
        let mut d = a[[j, j]];
        for k in 0..j {
            d -= a[[j, k]] * a[[j, k]];
        }
        if d <= 0.0 || d.is_nan() {
            return Err((j, d));
        }
        let d = d.sqrt();
        a[[j, j]] = d;
        for i in j + 1..n {
            let mut v = a[[i, j]];
            for k in 0..j {
                v -= a[[i, k]] * a[[j, k]];
            }
            a[[i, j]] = v / d;
        }
        for i in 0..j {
            a[[i, j]] = 0.0;
        }
    }
    Ok(a)
}

/// L y = b.
fn solve_lower(l: &Array2<f64>, b: ArrayView1<f64>) -> Array1<f64> {
    let n = l.nrows();
    let mut y = Array1::<f64>::zeros(n);
    for i in 0..n {
        let mut v = b[i];
        for k in 0..i {
            v -= l[[i, k]] * y[k];
        }
        y[i] = v / l[[i, i]];
    }
    y
}

/// Lᵀ x = y.
fn solve_upper_t(l: &Array2<f64>, y: ArrayView1<f64>) -> Array1<f64> {
    let n = l.nrows();
    let mut x = Array1::<f64>::zeros(n);
    for i in (0..n).rev() {
        let mut v = y[i];
        for k in i + 1..n {
            v -= l[[k, i]] * x[k];
        }
        x[i] = v / l[[i, i]];
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    /// One training point with kernel k and noise σ²: the posterior mean at a point with cross
    /// kernel c is c·y/(k + σ²) and the variance p − c²/(k + σ²).
    #[test]
    fn one_point_posterior_has_its_closed_form() {
        let gp = Gp::fit(array![[2.0]].view(), array![[3.0]].view(), 0.5).unwrap();
        let (mean, var) = gp.predict(array![[1.0]].view(), array![4.0].view());
        assert!((mean[[0, 0]] - 3.0 / 2.5).abs() < 1e-15);
        assert!((var[0] - (4.0 - 1.0 / 2.5)).abs() < 1e-15);
    }

    #[test]
    fn solves_a_3x3_system_and_refuses_an_indefinite_one() {
        let k = array![[4.0, 2.0, 0.4], [2.0, 5.0, 1.0], [0.4, 1.0, 3.0]];
        let y = array![[1.0], [2.0], [3.0]];
        let gp = Gp::fit(k.view(), y.view(), 0.0).unwrap();
        // K α = y.
        let back = k.dot(&gp.alpha);
        assert!((&back - &y).iter().all(|v| v.abs() < 1e-13));
        let bad = array![[1.0, 2.0], [2.0, 1.0]];
        assert!(Gp::fit(bad.view(), array![[0.0], [0.0]].view(), 0.0).is_err());
    }
}
