//! The path integral over one step: Jbar_s(x) = ∫₀¹ ∇_w f(x; w_s + tΔw_s) dt.
//!
//! [`Rule`] names how it is computed: the fixed rules ([`fixed`]: left, right and midpoint
//! Riemann sums, Gauss–Legendre from [`gauss`]) or the adaptive `auto` rule ([`auto`]), which
//! splits a step where the network switches pieces. [`sweep`] replays one run with many rules.

pub mod auto;
mod batch;
pub mod degree;
mod estimate;
pub mod fixed;
pub mod gauss;
mod hold;
mod noise;
mod part;
mod root;
mod rule;
pub mod sweep;

pub use noise::noise;
pub(crate) use rule::AUTO_ORDERS;
pub use rule::{Rule, RuleError};

use crate::jacobian::Jbar;
use crate::network::Network;
use epk_model::EpkModel;

/// One optimizer step's straight segment in weight space.
pub struct Segment<'a> {
    /// w_s.
    pub start: &'a [f64],
    /// w_{s+1}, as recorded.
    pub end: &'a [f64],
    /// Δw_s = w_{s+1} − w_s.
    pub delta: &'a [f64],
}

impl Segment<'_> {
    /// w_s + tΔw_s, and exactly the recorded w_{s+1} at t = 1.
    pub fn at(&self, t: f64) -> Vec<f64> {
        if t == 1.0 {
            return self.end.to_vec();
        }
        self.start
            .iter()
            .zip(self.delta)
            .map(|(w, d)| w + t * d)
            .collect()
    }
}

/// Jbar for one input over one step, with its bookkeeping.
pub struct StepIntegral {
    /// Jbar_s(x).
    pub jbar: Jbar,
    /// f(x; w_s).
    pub f_start: Vec<f64>,
    /// f(x; w_{s+1}).
    pub f_end: Vec<f64>,
    /// Jacobian evaluations spent.
    pub evals: usize,
    /// Smooth pieces the step was split into.
    pub pieces: usize,
    /// max_k |f_k(w_{s+1}) − f_k(w_s) − Jbar_k · Δw|: the certificate.
    pub certificate: f64,
    /// The rounding noise of f near w_s, measured ([`noise`]): below it no certificate can go.
    pub noise: f64,
    /// Where the `auto` rule met a piece no order integrates even after [`auto::MAX_DEPTH`]
    /// bisections, with no switching value changing sign in it: a kink the model does not
    /// declare through `Switches`. The interval's ends along the step.
    pub undeclared_kink: Option<(f64, f64)>,
    /// For the `auto` rule, a bound on ‖Jbar_k − ∫ J_k dt‖₂ per output k: the accepted
    /// pieces' spreads between two Gauss–Legendre orders, summed (the embedded estimate, a
    /// bound where the rule converges on a piece, which the orders' agreement shows). A
    /// training point's term Jbar_k·v is then off by at most this times ‖v‖₂. `None` for the
    /// fixed rules, which estimate nothing.
    pub jbar_error: Option<Vec<f64>>,
}

/// max_k |f_end_k − f_start_k − jdw_k|: the fundamental-theorem residual of a step.
pub(crate) fn residual(f_start: &[f64], f_end: &[f64], jdw: &[f64]) -> f64 {
    f_start
        .iter()
        .zip(f_end)
        .zip(jdw)
        .map(|((a, b), j)| (b - a - j).abs())
        .fold(0.0, f64::max)
}

/// Integrates one step for every input of `xs` (flat, one input per row) with `rule`; `tol`
/// is the certificate the adaptive rule aims at for the whole step.
pub fn integrate<M: EpkModel>(
    net: &Network<M>,
    seg: &Segment<'_>,
    xs: &[f64],
    rule: Rule,
    tol: f64,
) -> Vec<StepIntegral> {
    if rule == Rule::Auto {
        auto::integrate_all(net, seg, xs, tol)
    } else {
        fixed::integrate(net, seg, xs, rule)
    }
}
