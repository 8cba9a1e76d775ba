//! The rule sweep: one run replayed with each quadrature rule, cost against error (Bell et
//! al. Fig. 7).

use crate::{Network, ReplayError, ReplayOptions, Rule, replay};
use epk_model::EpkModel;
use epk_store::StoreReader;
use serde::Serialize;
use std::time::Instant;

/// One quadrature rule's cost and error on the same points (Bell et al. Fig. 7).
#[derive(Clone, Debug, Serialize)]
pub struct RulePoint {
    /// The rule.
    pub rule: String,
    /// Mean Jacobian evaluations per step per point.
    pub evals_per_step_per_point: f64,
    /// max |b + ΣA + N + R − f|.
    pub max_error: f64,
    /// Wall time of the replay.
    pub seconds: f64,
}

/// The rules of the sweep: Riemann sums as in the paper, midpoint, Gauss–Legendre, adaptive.
pub fn sweep_rules() -> Vec<Rule> {
    vec![
        Rule::Left(1),
        Rule::Left(10),
        Rule::Left(100),
        Rule::Mid(10),
        Rule::Mid(100),
        Rule::Gauss(2),
        Rule::Gauss(4),
        Rule::Gauss(8),
        Rule::Gauss(16),
        Rule::Auto,
    ]
}

/// Replays `xs` with each rule and reports its cost and error.
pub fn rule_sweep<M: EpkModel>(
    reader: &StoreReader,
    net: &Network<M>,
    xs: &[f64],
    rules: &[Rule],
    options: &ReplayOptions,
) -> Result<Vec<RulePoint>, ReplayError> {
    let m = xs.len() / net.input_len();
    rules
        .iter()
        .map(|&rule| {
            let started = Instant::now();
            let o = ReplayOptions {
                rule,
                ..options.clone()
            };
            let machine = replay(reader, net, xs, &o, |_| {})?;
            let evals: usize = machine.steps.iter().map(|s| s.evals).sum();
            Ok(RulePoint {
                rule: rule.to_string(),
                evals_per_step_per_point: evals as f64 / (machine.steps.len() * m).max(1) as f64,
                max_error: machine.max_error(),
                seconds: started.elapsed().as_secs_f64(),
            })
        })
        .collect()
}
