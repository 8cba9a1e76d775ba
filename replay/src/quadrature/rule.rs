//! Quadrature rules for the path integral over one step, t ∈ [0, 1].

use super::gauss::gauss_legendre;
use std::fmt;
use std::str::FromStr;

/// How Jbar_s(x) = ∫₀¹ ∇_w f(x; w_s + tΔw_s) dt is computed.
///
/// ```
/// use epk_replay::Rule;
/// assert_eq!("mid:100".parse::<Rule>().unwrap(), Rule::Mid(100));
/// assert_eq!("auto".parse::<Rule>().unwrap(), Rule::Auto);
/// assert!("simpson:3".parse::<Rule>().is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// Left Riemann sum with T points; `left:1` is the discrete path kernel (DPK).
    Left(usize),
    /// Right Riemann sum with T points.
    Right(usize),
    /// Midpoint rule with T points.
    Mid(usize),
    /// Gauss–Legendre with n points over the whole step.
    Gauss(usize),
    /// Splits each step where a switching value (ReLU pre-activation, max-pool margin)
    /// crosses zero, then integrates each smooth piece with Gauss–Legendre, raising the
    /// order until the piece's fundamental-theorem residual meets the tolerance.
    Auto,
}

impl Rule {
    /// Nodes and weights on [a, b] for the fixed rules (`Auto` chooses its own).
    pub fn nodes(self, a: f64, b: f64) -> Vec<(f64, f64)> {
        let h = b - a;
        let riemann = |t: usize, offset: f64| {
            (0..t)
                .map(|j| (a + h * (j as f64 + offset) / t as f64, h / t as f64))
                .collect()
        };
        match self {
            Rule::Left(t) => riemann(t, 0.0),
            Rule::Right(t) => riemann(t, 1.0),
            Rule::Mid(t) => riemann(t, 0.5),
            Rule::Gauss(n) => {
                let (t, w) = gauss_legendre(n);
                t.iter().zip(&w).map(|(t, w)| (a + h * t, h * w)).collect()
            }
            Rule::Auto => Rule::Gauss(AUTO_ORDERS[1]).nodes(a, b),
        }
    }
}

/// Gauss–Legendre orders the adaptive rule tries on a smooth piece, in order. The first only
/// gives the second something to agree with: the rule accepts an order once it agrees with
/// the one before.
pub(crate) const AUTO_ORDERS: [usize; 8] = [2, 3, 4, 6, 8, 12, 16, 24];

/// Why a rule did not parse.
#[derive(Debug, thiserror::Error)]
#[error(
    "unknown quadrature rule {0:?}: use auto, left:T, right:T, mid:T or gauss:n with a positive count"
)]
pub struct RuleError(String);

impl FromStr for Rule {
    type Err = RuleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || RuleError(s.to_string());
        if s == "auto" {
            return Ok(Rule::Auto);
        }
        let (name, count) = s.split_once(':').ok_or_else(bad)?;
        let n: usize = count.parse().map_err(|_| bad())?;
        if n == 0 || n > 100_000 {
            return Err(bad());
        }
        match name {
            "left" => Ok(Rule::Left(n)),
            "right" => Ok(Rule::Right(n)),
            "mid" => Ok(Rule::Mid(n)),
            "gauss" => Ok(Rule::Gauss(n)),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Left(n) => write!(f, "left:{n}"),
            Rule::Right(n) => write!(f, "right:{n}"),
            Rule::Mid(n) => write!(f, "mid:{n}"),
            Rule::Gauss(n) => write!(f, "gauss:{n}"),
            Rule::Auto => write!(f, "auto"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Rule;

    #[test]
    fn parses_and_prints_every_rule() {
        for s in ["auto", "left:1", "right:7", "mid:100", "gauss:16"] {
            let r: Rule = s.parse().unwrap();
            assert_eq!(r.to_string(), s);
        }
        for bad in [
            "",
            "left",
            "left:0",
            "mid:-3",
            "gauss:x",
            "trapezoid:4",
            "auto:3",
        ] {
            assert!(bad.parse::<Rule>().is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn riemann_rules_have_the_documented_nodes() {
        let nodes = |r: Rule| {
            r.nodes(0.0, 1.0)
                .into_iter()
                .map(|(t, _)| t)
                .collect::<Vec<_>>()
        };
        assert_eq!(nodes(Rule::Left(4)), vec![0.0, 0.25, 0.5, 0.75]);
        assert_eq!(nodes(Rule::Right(2)), vec![0.5, 1.0]);
        assert_eq!(nodes(Rule::Mid(2)), vec![0.25, 0.75]);
        for r in [Rule::Left(3), Rule::Mid(5), Rule::Gauss(6)] {
            let sum: f64 = r.nodes(0.2, 0.7).iter().map(|(_, w)| w).sum();
            assert!((sum - 0.5).abs() < 1e-15);
        }
        // Midpoint is exact on linear integrands; left is not.
        let integral = |r: Rule| r.nodes(0.0, 1.0).iter().map(|(t, w)| w * t).sum::<f64>();
        assert!((integral(Rule::Mid(3)) - 0.5).abs() < 1e-15);
        assert!((integral(Rule::Left(3)) - 0.5).abs() > 0.1);
    }
}
