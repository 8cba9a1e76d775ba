//! The kernel general linear model of Engel et al.: L2-regularised multinomial logistic
//! regression on the rows of a train × train kernel matrix, fitted by L-BFGS.

use ndarray::{Array1, Array2, ArrayView2, Axis};

/// A fitted kGLM: logits(x) = K(x, X_train) · W + b.
#[derive(Clone, Debug)]
pub struct Kglm {
    /// `[train samples, classes]`.
    pub weights: Array2<f64>,
    /// `[classes]`.
    pub bias: Array1<f64>,
    /// Objective value at the solution, and the gradient's max-norm there.
    pub objective: f64,
    /// max |∇| at the solution.
    pub gradient_norm: f64,
    /// L-BFGS iterations used.
    pub iterations: usize,
}

/// How hard to fit.
#[derive(Clone, Copy, Debug)]
pub struct KglmOptions {
    /// λ in mean cross-entropy + λ/2 ‖W‖² (the bias is not penalised).
    pub l2: f64,
    /// Most L-BFGS iterations.
    pub max_iterations: usize,
    /// Stop when max |∇| falls below this.
    pub gradient_tolerance: f64,
}

impl Default for KglmOptions {
    fn default() -> Self {
        KglmOptions {
            l2: 1e-4,
            max_iterations: 2000,
            gradient_tolerance: 1e-9,
        }
    }
}

impl Kglm {
    /// Fits to `features` (`[n, d]`, a kernel's train × train rows) and `labels` in 0..classes.
    ///
    /// ```
    /// use epk_replay::kernels::kglm::{Kglm, KglmOptions};
    /// use ndarray::array;
    /// let k = array![[1.0, 0.2], [0.2, 1.0]];
    /// let fit = Kglm::fit(k.view(), &[0, 1], 2, &KglmOptions::default());
    /// let p = fit.probabilities(k.view());
    /// assert!(p[[0, 0]] > 0.5 && p[[1, 1]] > 0.5);
    /// ```
    pub fn fit(
        features: ArrayView2<f64>,
        labels: &[usize],
        classes: usize,
        o: &KglmOptions,
    ) -> Self {
        let (n, d) = features.dim();
        let size = d * classes + classes;
        let objective = |theta: &[f64], grad: &mut [f64]| -> f64 {
            let w = ArrayView2::from_shape((d, classes), &theta[..d * classes]).expect("[d, c]");
            let b = &theta[d * classes..];
            let mut z = features.dot(&w);
            for mut row in z.rows_mut() {
                for (v, bb) in row.iter_mut().zip(b) {
                    *v += bb;
                }
            }
            // Softmax residuals (p − y)/n and the mean cross-entropy.
            let mut loss = 0.0;
            for (i, mut row) in z.rows_mut().into_iter().enumerate() {
                let m = row.fold(f64::NEG_INFINITY, |a, &v| a.max(v));
                let s: f64 = row.iter().map(|v| (v - m).exp()).sum();
                loss += m + s.ln() - row[labels[i]];
                for (c, v) in row.iter_mut().enumerate() {
                    *v = ((*v - m).exp() / s - f64::from(u8::from(c == labels[i]))) / n as f64;
                }
            }
            loss /= n as f64;
            let gw = features.t().dot(&z);
            let mut reg = 0.0;
            // `iter` walks gw in row-major order, the layout of θ's weight block.
            for ((g, &wj), &gj) in grad[..d * classes].iter_mut().zip(theta).zip(gw.iter()) {
                *g = gj + o.l2 * wj;
                reg += wj * wj;
            }
            let gb = z.sum_axis(Axis(0));
            grad[d * classes..].copy_from_slice(gb.as_slice().expect("contiguous"));
            loss + 0.5 * o.l2 * reg
        };
        let (theta, value, gnorm, iterations) = lbfgs(
            vec![0.0; size],
            objective,
            o.max_iterations,
            o.gradient_tolerance,
        );
        Kglm {
            weights: Array2::from_shape_vec((d, classes), theta[..d * classes].to_vec())
                .expect("[d, c]"),
            bias: Array1::from_vec(theta[d * classes..].to_vec()),
            objective: value,
            gradient_norm: gnorm,
            iterations,
        }
    }

    /// Logits for kernel rows `[m, d]` (test × train).
    pub fn logits(&self, features: ArrayView2<f64>) -> Array2<f64> {
        features.dot(&self.weights) + &self.bias
    }

    /// Class probabilities for kernel rows `[m, d]`.
    pub fn probabilities(&self, features: ArrayView2<f64>) -> Array2<f64> {
        softmax_rows(self.logits(features))
    }
}

/// Row-wise softmax.
pub fn softmax_rows(mut z: Array2<f64>) -> Array2<f64> {
    for mut row in z.rows_mut() {
        let m = row.fold(f64::NEG_INFINITY, |a, &v| a.max(v));
        row.mapv_inplace(|v| (v - m).exp());
        let s = row.sum();
        row /= s;
    }
    z
}

/// Limited-memory BFGS (memory 10) with a backtracking Armijo line search. Returns the
/// point, the objective, max |∇| and the iterations used.
fn lbfgs(
    mut x: Vec<f64>,
    mut f: impl FnMut(&[f64], &mut [f64]) -> f64,
    max_iterations: usize,
    tolerance: f64,
) -> (Vec<f64>, f64, f64, usize) {
    const MEMORY: usize = 10;
    let n = x.len();
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let norm_inf = |a: &[f64]| a.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let mut g = vec![0.0; n];
    let mut value = f(&x, &mut g);
    let mut history: std::collections::VecDeque<(Vec<f64>, Vec<f64>, f64)> =
        std::collections::VecDeque::new();
    let mut iterations = 0;
    while iterations < max_iterations && norm_inf(&g) > tolerance {
        iterations += 1;
        // Two-loop recursion: direction = −H g.
        let mut q = g.clone();
        let mut alphas = Vec::with_capacity(history.len());
        for (s, y, rho) in history.iter().rev() {
            let a = rho * dot(s, &q);
            for (qi, yi) in q.iter_mut().zip(y) {
                *qi -= a * yi;
            }
            alphas.push(a);
        }
        if let Some((s, y, _)) = history.back() {
            let gamma = dot(s, y) / dot(y, y);
            q.iter_mut().for_each(|v| *v *= gamma);
        }
        for ((s, y, rho), a) in history.iter().zip(alphas.iter().rev()) {
            let b = rho * dot(y, &q);
            for (qi, si) in q.iter_mut().zip(s) {
                *qi += (a - b) * si;
            }
        }
        let mut dir: Vec<f64> = q.iter().map(|v| -v).collect();
        let mut slope = dot(&g, &dir);
        if slope >= 0.0 {
            // Not a descent direction: restart from steepest descent.
            history.clear();
            dir = g.iter().map(|v| -v).collect();
            slope = dot(&g, &dir);
        }
        let mut step = if history.is_empty() {
            1.0 / norm_inf(&g).max(1.0)
        } else {
            1.0
        };
        let mut g_new = vec![0.0; n];
        let (x_new, v_new) = loop {
            let trial: Vec<f64> = x.iter().zip(&dir).map(|(xi, di)| xi + step * di).collect();
            let v = f(&trial, &mut g_new);
            if v <= value + 1e-4 * step * slope || step < 1e-20 {
                break (trial, v);
            }
            step *= 0.5;
        };
        let s: Vec<f64> = x_new.iter().zip(&x).map(|(a, b)| a - b).collect();
        let y: Vec<f64> = g_new.iter().zip(&g).map(|(a, b)| a - b).collect();
        let sy = dot(&s, &y);
        let converged = v_new >= value && step < 1e-20;
        x = x_new;
        value = v_new;
        g = g_new;
        if sy > 1e-300 {
            history.push_back((s, y, 1.0 / sy));
            if history.len() > MEMORY {
                history.pop_front();
            }
        }
        if converged {
            break;
        }
    }
    let gnorm = norm_inf(&g);
    (x, value, gnorm, iterations)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    /// Two points with one feature each, φ = ±1, labels 0 and 1. By symmetry the optimum has
    /// b = 0 and W = (−u, u)/... : with margin z = 2u between the classes, the mean
    /// cross-entropy is ln(1 + e^{−2u}) and the penalty λu² (two weights ±u), so the optimum
    /// solves 2e^{−2u}/(1 + e^{−2u}) = 2λu. Solved here by bisection, independently.
    #[test]
    fn reaches_the_known_optimum_on_a_separable_toy() {
        let lambda = 0.05;
        let phi = array![[-1.0], [1.0]];
        let fit = Kglm::fit(
            phi.view(),
            &[0, 1],
            2,
            &KglmOptions {
                l2: lambda,
                max_iterations: 200,
                gradient_tolerance: 1e-13,
            },
        );
        let (mut lo, mut hi) = (0.0f64, 100.0f64);
        for _ in 0..200 {
            let u = 0.5 * (lo + hi);
            let g = 2.0 * (-2.0 * u).exp() / (1.0 + (-2.0 * u).exp()) - 2.0 * lambda * u;
            if g > 0.0 {
                lo = u;
            } else {
                hi = u;
            }
        }
        let u = 0.5 * (lo + hi);
        assert!(fit.gradient_norm < 1e-12, "{}", fit.gradient_norm);
        assert!(
            (fit.weights[[0, 1]] - u).abs() < 1e-10,
            "{} vs {u}",
            fit.weights[[0, 1]]
        );
        assert!((fit.weights[[0, 0]] + u).abs() < 1e-10);
        assert!(fit.bias.iter().all(|b| b.abs() < 1e-10));
        // Separable: both points classified right, with the known probability.
        let p = fit.probabilities(phi.view());
        let want = 1.0 / (1.0 + (-2.0 * u).exp());
        assert!((p[[1, 1]] - want).abs() < 1e-10);
    }
}
