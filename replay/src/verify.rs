//! `replay verify`: does the rebuilt kernel machine equal the network?

use crate::Rule;
use crate::machine::{KernelMachine, StepCheck};
use epk_store::Fault;
use serde::Serialize;
use std::fmt::Write;

/// The verdict and the figures behind it.
#[derive(Clone, Debug, Serialize)]
pub struct VerifyReport {
    /// Whether every check met the tolerance.
    pub passed: bool,
    /// The quadrature rule.
    pub rule: String,
    /// The tolerance the checks had to meet.
    pub tolerance: f64,
    /// Committed steps replayed.
    pub steps: usize,
    /// Points explained.
    pub points: usize,
    /// Training samples in the store.
    pub train_samples: usize,
    /// max over points of |b + Σ_i A[x, i, ·] − f(x; w_N)|.
    pub max_abs_error: f64,
    /// Worst per-step certificate |f(w_{s+1}) − f(w_s) − Jbar·Δw|, with its step and point.
    pub max_certificate: f64,
    /// The step of the worst certificate.
    pub worst_step: usize,
    /// The point of the worst certificate.
    pub worst_point: usize,
    /// The optimizer replayed.
    pub optimizer: String,
    /// Worst |Δw − (per-sample terms + non-data terms)| over steps and weights: rounding for
    /// f64 training, f32 rounding for f32 training.
    pub max_decomposition_residual: f64,
    /// The step of the worst decomposition residual.
    pub decomposition_step: usize,
    /// max over points of |R(x)| = |Σ_s Jbar_s(x)·ρ_s|: what the residual moves the prediction.
    pub max_residual_term: f64,
    /// Whether the decomposition residual had to meet the tolerance (it must always be within
    /// the training arithmetic's rounding, `max_rounding_units` ≤ 1).
    pub decomposition_checked: bool,
    /// The training float type's unit roundoff u (2⁻²⁴ for f32, 2⁻⁵³ for f64).
    pub unit_roundoff: f64,
    /// Worst |ρ_j| / β_j over steps and weights, β_j = u (|w_s,j| + |w_s+1,j|) + κ u ‖Δŵ_s‖∞:
    /// at most 1 when every recorded step is the declared optimizer's, to rounding.
    pub max_rounding_units: f64,
    /// The step of that worst ratio.
    pub rounding_step: usize,
    /// ‖ρ_s‖₂ / ‖Δw_s‖₂ at that step: the share of the step the declared optimizer leaves
    /// unexplained.
    pub rounding_step_relative: f64,
    /// max over points of |N(x)|, the non-data terms (weight decay) in the prediction.
    pub max_nondata_term: f64,
    /// max over points of |N(x)| / (|Σ_i A[x, i]| + |N(x)|): the non-data share.
    pub max_nondata_share: f64,
    /// max_s ε (|f(w_s)| + |f(w_s+1)|) over steps, points and outputs: the rounding of a
    /// step's change as f64 computes it, so the smallest tolerance a step's certificate can
    /// meet. (The machine's own error is not bounded below by a sum of these: the roundings of
    /// f telescope out of b + Σ_s Jbar_s·Δw_s.)
    pub rounding_floor: f64,
    /// With the `auto` rule: the worst bound on a step's Jbar error, ℓ2 over the parameters,
    /// from two Gauss–Legendre orders agreeing on each piece, or the rounding floor 16ε‖Q‖ of
    /// a piece integrated exactly by degree (`quadrature/degree.rs`). `None` for the fixed
    /// rules.
    pub max_jbar_error: Option<f64>,
    /// For plain gradient descent with the `auto` rule: a bound on the quadrature error of any
    /// one attribution A[x, i, k], Σ_s max ‖Jbar error‖₂ · ‖a_{i,s}∇_w f(x_i; w_s)‖₂. The
    /// machine's check sees only the sum over i; this covers each term. `None` where not
    /// computed (fixed rules; momentum and Adam, whose terms read Jbar through the adjoint).
    pub attribution_bound: Option<f64>,
    /// Mean Jacobian evaluations per step per point.
    pub evals_per_step_per_point: f64,
    /// Jacobian evaluations in all.
    pub total_evals: usize,
    /// Mean smooth pieces per step per point.
    pub mean_pieces_per_step_per_point: f64,
    /// max |b(x) − b(x₀)|: whether b is constant in x.
    pub bias_spread: f64,
    /// Whether that spread is within the tolerance.
    pub bias_constant: bool,
    /// `single` when a_i is constant (Theorem 3.7), else `ensemble` (Theorem 3.6).
    pub machine_form: String,
    /// Wall time of the replay.
    pub seconds: f64,
    /// Non-finite values the recorder saw, by step.
    pub faults: Vec<Fault>,
    /// What failed, one line each.
    pub failures: Vec<String>,
}

impl VerifyReport {
    /// The verdict on `machine`. With `check_decomposition` the decomposition residual must
    /// meet the tolerance too (right for f64 training; f32 training leaves f32 rounding).
    pub fn new(
        machine: &KernelMachine,
        rule: Rule,
        tolerance: f64,
        check_decomposition: bool,
        seconds: f64,
    ) -> Self {
        let points = machine.bias.nrows();
        let steps = machine.steps.len();
        let worst = machine
            .steps
            .iter()
            .max_by(|a, b| a.certificate.total_cmp(&b.certificate));
        let decomp = machine
            .steps
            .iter()
            .max_by(|a, b| a.decomposition.max_abs.total_cmp(&b.decomposition.max_abs));
        let rounding = machine.steps.iter().max_by(|a, b| {
            let units = |c: &StepCheck| c.decomposition.rounding_units;
            // NaN sorts last: a NaN residual is the worst.
            units(a).total_cmp(&units(b))
        });
        let total_evals: usize = machine.steps.iter().map(|s| s.evals).sum();
        let pieces: usize = machine.steps.iter().map(|s| s.pieces).sum();
        let per = (steps * points).max(1) as f64;
        let max_abs_error = machine.max_error();
        let bias_spread = machine.bias_spread();
        let pick = |c: Option<&StepCheck>, f: fn(&StepCheck) -> f64| c.map_or(0.0, f);
        let amax = |a: &ndarray::Array2<f64>| a.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let mut report = VerifyReport {
            passed: false,
            rule: rule.to_string(),
            tolerance,
            steps,
            points,
            train_samples: machine.attributions.shape()[1],
            max_abs_error,
            max_certificate: pick(worst, |c| c.certificate),
            worst_step: worst.map_or(0, |c| c.step),
            worst_point: worst.map_or(0, |c| c.worst_point),
            optimizer: machine.optimizer.clone(),
            max_decomposition_residual: pick(decomp, |c| c.decomposition.max_abs),
            decomposition_step: decomp.map_or(0, |c| c.step),
            max_residual_term: amax(&machine.residual),
            decomposition_checked: check_decomposition,
            unit_roundoff: machine.unit_roundoff,
            max_rounding_units: pick(rounding, |c| c.decomposition.rounding_units),
            rounding_step: rounding.map_or(0, |c| c.step),
            rounding_step_relative: pick(rounding, |c| c.decomposition.relative),
            max_nondata_term: amax(&machine.nondata),
            max_nondata_share: nondata_share(machine),
            rounding_floor: machine.steps.iter().fold(0.0, |m, s| m.max(s.rounding)),
            max_jbar_error: machine
                .steps
                .iter()
                .try_fold(0.0f64, |m, s| Some(m.max(s.jbar_error?))),
            attribution_bound: machine
                .steps
                .iter()
                .try_fold(0.0f64, |m, s| Some(m + s.attribution_bound?)),
            evals_per_step_per_point: total_evals as f64 / per,
            total_evals,
            mean_pieces_per_step_per_point: pieces as f64 / per,
            bias_spread,
            bias_constant: bias_spread <= tolerance,
            machine_form: if machine.constant_coefficients.is_some() {
                "single".into()
            } else {
                "ensemble".into()
            },
            seconds,
            faults: Vec::new(),
            failures: Vec::new(),
        };
        report.failures = report.failures();
        report.passed = report.failures.is_empty();
        report
    }

    /// What fails at the report's tolerance: the path certificate, the decomposition residual
    /// (when checked) and the machine's error.
    fn failures(&self) -> Vec<String> {
        let tolerance = self.tolerance;
        let bad = |v: f64| v.is_nan() || v > tolerance;
        let mut failures = Vec::new();
        if bad(self.max_certificate) {
            failures.push(format!(
                "path certificate {:.3e} > {:.1e} at step {}, point {} with rule {}",
                self.max_certificate, tolerance, self.worst_step, self.worst_point, self.rule
            ));
        }
        if self.max_rounding_units.is_nan() || self.max_rounding_units > 1.0 {
            failures.push(format!(
                "step {} is not the declared optimizer's step ({}): its residual is {:.3e} times \
                 what {} training arithmetic can leave, {:.2e} of the step unexplained; was the \
                 run trained with another optimizer, other hyper-parameters or another loss \
                 than the store declares?",
                self.rounding_step,
                self.optimizer,
                self.max_rounding_units,
                self.dtype_name(),
                self.rounding_step_relative
            ));
        }
        if self.decomposition_checked && bad(self.max_decomposition_residual) {
            failures.push(format!(
                "decomposition residual {:.3e} > {:.1e} at step {}: the recorded per-sample terms do not add up to the step",
                self.max_decomposition_residual, tolerance, self.decomposition_step
            ));
        }
        if bad(self.max_abs_error) {
            failures.push(format!(
                "kernel machine differs from the network by {:.3e} > {:.1e} (rule {}; worst step {}, point {})",
                self.max_abs_error, tolerance, self.rule, self.worst_step, self.worst_point
            ));
        }
        failures
    }

    /// The training type, named by its unit roundoff.
    fn dtype_name(&self) -> &'static str {
        if self.unit_roundoff > f64::EPSILON {
            "f32"
        } else {
            "f64"
        }
    }

    /// Adds the recorder's numerical faults; any fault fails verification.
    pub fn with_faults(mut self, faults: &[Fault]) -> Self {
        for f in faults {
            self.failures.push(format!(
                "non-finite values recorded at step {}: {}",
                f.step, f.message
            ));
        }
        self.faults = faults.to_vec();
        self.passed = self.failures.is_empty();
        self
    }

    /// A short table for people.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "rule {}  steps {}  points {}  training samples {}  machine {}\noptimizer {}",
            self.rule,
            self.steps,
            self.points,
            self.train_samples,
            self.machine_form,
            self.optimizer
        );
        self.checks(&mut s);
        let _ = writeln!(
            s,
            "rounding floor {:.1e}: ε(|f(w_s)| + |f(w_s+1)|) or f's measured rounding noise, at worst: the smallest tolerance a step's certificate can meet{}",
            self.rounding_floor,
            if self.rounding_floor > self.tolerance {
                " (the tolerance is below it)"
            } else {
                ""
            }
        );
        self.bounds(&mut s);
        if self.max_nondata_term > 0.0 {
            let _ = writeln!(
                s,
                "non-data terms (weight decay): up to {:.3e} of a prediction, {:.2} % of its change at most",
                self.max_nondata_term,
                100.0 * self.max_nondata_share
            );
        }
        let _ = writeln!(
            s,
            "Jacobian evaluations per step per point: {:.2} (pieces {:.2}); b constant in x: {} ({:.1e}); {:.1} s",
            self.evals_per_step_per_point,
            self.mean_pieces_per_step_per_point,
            if self.bias_constant { "yes" } else { "no" },
            self.bias_spread,
            self.seconds
        );
        let _ = write!(
            s,
            "{}",
            if self.passed {
                format!("PASS at tolerance {:.1e}", self.tolerance)
            } else {
                format!(
                    "FAIL at tolerance {:.1e}: {}",
                    self.tolerance,
                    self.failures.join("; ")
                )
            }
        );
        s
    }

    /// The table's three checks, one line each.
    fn checks(&self, s: &mut String) {
        let ok = |v: f64| {
            if v.is_nan() || v > self.tolerance {
                "FAIL"
            } else {
                "ok"
            }
        };
        let _ = writeln!(s, "{:<34} {:>12}", "check", "max |error|");
        let _ = writeln!(
            s,
            "{:<34} {:>12.3e}  {}  (step {}, point {})",
            "path certificate per step",
            self.max_certificate,
            ok(self.max_certificate),
            self.worst_step,
            self.worst_point
        );
        let _ = writeln!(
            s,
            "{:<34} {:>12.3e}  {}  (step {}; moves predictions by {:.3e})",
            "decomposition residual per step",
            self.max_decomposition_residual,
            if self.decomposition_checked {
                ok(self.max_decomposition_residual)
            } else {
                "reported"
            },
            self.decomposition_step,
            self.max_residual_term
        );
        let _ = writeln!(
            s,
            "{:<34} {:>12.3e}  {}  (step {}; {} rounding bound β = u(|w_s|+|w_s+1|) + {}u‖Δw‖∞)",
            "  in units of training rounding",
            self.max_rounding_units,
            if self.max_rounding_units <= 1.0 {
                "ok"
            } else {
                "FAIL"
            },
            self.rounding_step,
            self.dtype_name(),
            epk_optim::agreement::KAPPA
        );
        let _ = writeln!(
            s,
            "{:<34} {:>12.3e}  {}",
            "machine (b+ΣA+N+R) vs network",
            self.max_abs_error,
            ok(self.max_abs_error)
        );
    }
}

impl VerifyReport {
    /// What the `auto` rule certifies beyond the sum: Jbar itself, and each attribution.
    fn bounds(&self, s: &mut String) {
        let Some(jbar) = self.max_jbar_error else {
            return;
        };
        let each = match self.attribution_bound {
            Some(b) => format!(
                "; each attribution A[x, i, k] within {b:.1e} of its exact value{}",
                if b <= self.tolerance {
                    ""
                } else {
                    " (above the tolerance)"
                }
            ),
            None => "; per-attribution bound not computed for optimizers with state".into(),
        };
        let _ = writeln!(
            s,
            "Jbar within {jbar:.1e} per step (ℓ2; the spread of two Gauss–Legendre orders agreeing, or rounding where the model's degree makes one order exact){each}"
        );
    }
}

/// max over points and outputs of |N| / (|Σ_i A| + |N|): the non-data terms' share of a
/// prediction's change.
fn nondata_share(machine: &KernelMachine) -> f64 {
    let data = machine.attributions.sum_axis(ndarray::Axis(1));
    data.iter()
        .zip(&machine.nondata)
        .map(|(d, n)| {
            if *n == 0.0 {
                0.0
            } else {
                n.abs() / (d.abs() + n.abs())
            }
        })
        .fold(0.0f64, f64::max)
}
