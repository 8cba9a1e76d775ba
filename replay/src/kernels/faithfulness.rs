//! How faithfully a surrogate reproduces the network (Engel et al.): rank agreement of
//! probabilities (Kendall τ_b) and the R² of an affine fit of logits.

/// Kendall's τ_b between two samples, with ties handled as in Kendall (1945):
/// (n_c − n_d) / √((n_0 − n_1)(n_0 − n_2)). `None` when either sample is constant or the
/// lengths differ. O(n²), exact.
///
/// ```
/// use epk_replay::kernels::faithfulness::kendall_tau_b;
/// assert_eq!(kendall_tau_b(&[1.0, 2.0, 3.0], &[10.0, 20.0, 30.0]), Some(1.0));
/// assert_eq!(kendall_tau_b(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]), Some(-1.0));
/// ```
pub fn kendall_tau_b(x: &[f64], y: &[f64]) -> Option<f64> {
    if x.len() != y.len() || x.len() < 2 {
        return None;
    }
    let n = x.len();
    let (mut concordant, mut discordant, mut ties_x, mut ties_y) = (0u64, 0u64, 0u64, 0u64);
    for i in 0..n {
        for j in i + 1..n {
            let sx = (x[i] - x[j]).partial_cmp(&0.0)?;
            let sy = (y[i] - y[j]).partial_cmp(&0.0)?;
            use std::cmp::Ordering::Equal;
            match (sx, sy) {
                (Equal, Equal) => {
                    ties_x += 1;
                    ties_y += 1;
                }
                (Equal, _) => ties_x += 1,
                (_, Equal) => ties_y += 1,
                (a, b) if a == b => concordant += 1,
                _ => discordant += 1,
            }
        }
    }
    let n0 = (n * (n - 1) / 2) as f64;
    let denominator = ((n0 - ties_x as f64) * (n0 - ties_y as f64)).sqrt();
    (denominator > 0.0).then(|| (concordant as f64 - discordant as f64) / denominator)
}

/// R² of the least-squares affine fit y ≈ a·x + c: 1 − SS_res / SS_tot. `None` when y is
/// constant or the lengths differ. For a surrogate x of the network's y, 1 means the network
/// is an affine image of the surrogate.
///
/// ```
/// use epk_replay::kernels::faithfulness::r_squared_affine;
/// // y = 2x + 1 exactly.
/// assert!((r_squared_affine(&[0.0, 1.0, 2.0], &[1.0, 3.0, 5.0]).unwrap() - 1.0).abs() < 1e-15);
/// ```
pub fn r_squared_affine(x: &[f64], y: &[f64]) -> Option<f64> {
    if x.len() != y.len() || x.is_empty() {
        return None;
    }
    let n = x.len() as f64;
    let mx = x.iter().sum::<f64>() / n;
    let my = y.iter().sum::<f64>() / n;
    let sxx: f64 = x.iter().map(|v| (v - mx) * (v - mx)).sum();
    let sxy: f64 = x.iter().zip(y).map(|(a, b)| (a - mx) * (b - my)).sum();
    let syy: f64 = y.iter().map(|v| (v - my) * (v - my)).sum();
    if syy == 0.0 {
        return None;
    }
    let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    let residual: f64 = x
        .iter()
        .zip(y)
        .map(|(a, b)| {
            let e = b - (my + slope * (a - mx));
            e * e
        })
        .sum();
    Some(1.0 - residual / syy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tau_b_matches_hand_worked_cases_with_ties() {
        // x = (1, 2, 2, 3), y = (1, 3, 2, 2). Pairs: (1,2) c, (1,3) c, (1,4) c, (2,3) tie x,
        // (2,4) d, (3,4) tie y. n0 = 6, n1 = 1, n2 = 1: τ_b = (3 − 1)/√(5·5) = 0.4.
        let t = kendall_tau_b(&[1.0, 2.0, 2.0, 3.0], &[1.0, 3.0, 2.0, 2.0]).unwrap();
        assert!((t - 0.4).abs() < 1e-15, "{t}");
        // No ties: x = (1, 2, 3, 4), y = (2, 1, 4, 3): 4 concordant, 2 discordant → 1/3.
        let t = kendall_tau_b(&[1.0, 2.0, 3.0, 4.0], &[2.0, 1.0, 4.0, 3.0]).unwrap();
        assert!((t - 1.0 / 3.0).abs() < 1e-15, "{t}");
        assert_eq!(kendall_tau_b(&[1.0, 1.0], &[1.0, 2.0]), None);
        assert_eq!(kendall_tau_b(&[1.0, f64::NAN], &[1.0, 2.0]), None);
    }

    #[test]
    fn r_squared_matches_a_hand_worked_fit() {
        // x = (0, 1, 2), y = (0, 2, 1): slope 0.5, intercept 0.5, residuals (−0.5, 1, −0.5),
        // SS_res = 1.5, SS_tot = 2: R² = 0.25.
        let r = r_squared_affine(&[0.0, 1.0, 2.0], &[0.0, 2.0, 1.0]).unwrap();
        assert!((r - 0.25).abs() < 1e-15, "{r}");
        assert_eq!(r_squared_affine(&[0.0, 1.0], &[3.0, 3.0]), None);
        // A constant surrogate explains nothing.
        assert_eq!(
            r_squared_affine(&[1.0, 1.0, 1.0], &[0.0, 1.0, 2.0]),
            Some(0.0)
        );
    }
}
