//! The path integral over one step for one input: Jbar_s(x) = ∫₀¹ ∇_w f(x; w_s + tΔw_s) dt.

use crate::network::Network;
use crate::rule::{AUTO_ORDERS, Rule};
use epk_recorder::EpkModel;

/// One optimizer step's straight segment in weight space.
pub struct Segment<'a> {
    pub start: &'a [f64],
    pub end: &'a [f64],
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
    /// `[outputs, num_params]`.
    pub jbar: Vec<f64>,
    /// f(x; w_s) and f(x; w_{s+1}).
    pub f_start: Vec<f64>,
    pub f_end: Vec<f64>,
    /// Jacobian evaluations spent.
    pub evals: usize,
    /// Smooth pieces the step was split into.
    pub pieces: usize,
    /// max_k |f_k(w_{s+1}) − f_k(w_s) − Jbar_k · Δw|: the certificate.
    pub certificate: f64,
}

/// Integrates one step for input `x` with `rule`; `tol` is the certificate the adaptive rule
/// aims at for the whole step.
pub fn integrate<M: EpkModel>(
    net: &Network<M>,
    seg: &Segment<'_>,
    x: &[f64],
    rule: Rule,
    tol: f64,
) -> StepIntegral {
    let k = net.outputs();
    let p = net.num_params();
    let mut jbar = vec![0.0; k * p];
    let mut evals = 0;
    let mut pieces = 1;
    let (f_start, s_start) = net.forward_switches(seg.start, x);
    let (f_end, s_end) = net.forward_switches(seg.end, x);
    match rule {
        Rule::Auto => {
            let ends = Ends {
                a: 0.0,
                b: 1.0,
                fa: f_start.clone(),
                fb: f_end.clone(),
                sa: s_start,
                sb: s_end,
            };
            let mut acc = Accumulator {
                net,
                seg,
                x,
                jbar: &mut jbar,
                evals: 0,
                pieces: 0,
                tol,
            };
            acc.interval(ends, 0);
            evals = acc.evals;
            pieces = acc.pieces;
        }
        fixed => {
            for (t, w) in fixed.nodes(0.0, 1.0) {
                add_scaled(&mut jbar, &net.jacobian(&seg.at(t), x), w);
                evals += 1;
            }
        }
    }
    let certificate = residual(&jbar, &f_start, &f_end, seg.delta, k);
    StepIntegral {
        jbar,
        f_start,
        f_end,
        evals,
        pieces,
        certificate,
    }
}

fn add_scaled(acc: &mut [f64], v: &[f64], w: f64) {
    for (a, v) in acc.iter_mut().zip(v) {
        *a += w * v;
    }
}

/// max_k |fb_k − fa_k − J_k · Δw| for J = `[outputs, params]`.
pub fn residual(j: &[f64], fa: &[f64], fb: &[f64], delta: &[f64], k: usize) -> f64 {
    let p = delta.len();
    (0..k)
        .map(|o| {
            let dot: f64 = j[o * p..(o + 1) * p]
                .iter()
                .zip(delta)
                .map(|(a, b)| a * b)
                .sum();
            (fb[o] - fa[o] - dot).abs()
        })
        .fold(0.0, f64::max)
}

/// An interval of the step with f and the switching values at both ends.
struct Ends {
    a: f64,
    b: f64,
    fa: Vec<f64>,
    fb: Vec<f64>,
    sa: Vec<f64>,
    sb: Vec<f64>,
}

struct Accumulator<'a, M: EpkModel> {
    net: &'a Network<M>,
    seg: &'a Segment<'a>,
    x: &'a [f64],
    jbar: &'a mut [f64],
    evals: usize,
    pieces: usize,
    tol: f64,
}

/// Deepest bisection of a piece that resists every order (a switch the endpoint signs missed).
const MAX_DEPTH: usize = 24;
/// Jacobian evaluations one step and point may spend before the rule settles for its best
/// estimate (a model whose kinks are not declared through `Switches` would bisect forever).
const MAX_EVALS: usize = 2000;

impl<M: EpkModel> Accumulator<'_, M> {
    /// Splits [a, b] at every switching value whose sign differs between a and b, then
    /// integrates the smooth pieces.
    fn interval(&mut self, ends: Ends, depth: usize) {
        let mut breaks = self.breakpoints(&ends);
        breaks.sort_by(f64::total_cmp);
        breaks.dedup_by(|u, v| (*u - *v).abs() <= 4.0 * f64::EPSILON);
        if breaks.is_empty() {
            self.piece(ends, depth);
            return;
        }
        let mut left = (ends.a, ends.fa, ends.sa);
        for t in breaks {
            let (ft, st) = self.net.forward_switches(&self.seg.at(t), self.x);
            self.piece(
                Ends {
                    a: left.0,
                    b: t,
                    fa: left.1,
                    fb: ft.clone(),
                    sa: left.2,
                    sb: st.clone(),
                },
                depth,
            );
            left = (t, ft, st);
        }
        self.piece(
            Ends {
                a: left.0,
                b: ends.b,
                fa: left.1,
                fb: ends.fb,
                sa: left.2,
                sb: ends.sb,
            },
            depth,
        );
    }

    /// Zero crossings inside (a, b) of every switching value that changes sign, by the
    /// Illinois variant of regula falsi: exact in one step for values affine in t, and
    /// bracketing for the rest.
    fn breakpoints(&self, e: &Ends) -> Vec<f64> {
        let mut out = Vec::new();
        for u in 0..e.sa.len().min(e.sb.len()) {
            let (mut ta, mut va, mut tb, mut vb) = (e.a, e.sa[u], e.b, e.sb[u]);
            if !(va * vb < 0.0) {
                // Same sign, a zero at an end, or a non-finite value: nothing to split at.
                continue;
            }
            let scale = va.abs().max(vb.abs());
            let mut side = 0i8;
            let mut t = ta;
            for _ in 0..60 {
                t = (ta * vb - tb * va) / (vb - va);
                if !(t > ta && t < tb) {
                    t = 0.5 * (ta + tb);
                }
                let v = self.net.forward_switches(&self.seg.at(t), self.x).1[u];
                if v.abs() <= 4.0 * f64::EPSILON * scale || tb - ta <= 4.0 * f64::EPSILON {
                    break;
                }
                if v * va > 0.0 {
                    (ta, va) = (t, v);
                    if side == -1 {
                        vb *= 0.5;
                    }
                    side = -1;
                } else {
                    (tb, vb) = (t, v);
                    if side == 1 {
                        va *= 0.5;
                    }
                    side = 1;
                }
            }
            out.push(t);
        }
        out
    }

    /// Integrates a piece with rising Gauss–Legendre orders until its fundamental-theorem
    /// residual meets the piece's share of the tolerance; bisects if none does.
    fn piece(&mut self, e: Ends, depth: usize) {
        let (k, p) = (self.net.outputs(), self.net.num_params());
        let h = e.b - e.a;
        if h <= 0.0 {
            return;
        }
        let mut best: Option<(f64, Vec<f64>)> = None;
        for &n in &AUTO_ORDERS {
            let mut part = vec![0.0; k * p];
            let mut scale = 0.0f64;
            for (t, w) in Rule::Gauss(n).nodes(e.a, e.b) {
                let j = self.net.jacobian(&self.seg.at(t), self.x);
                scale = scale.max(abs_dot_max(&j, self.seg.delta, k) * h);
                add_scaled(&mut part, &j, w);
                self.evals += 1;
            }
            let r = residual(&part, &e.fa, &e.fb, self.seg.delta, k);
            // What rounding alone leaves in f(b) − f(a) − J·Δw.
            let floor = 16.0
                * f64::EPSILON
                * (scale + e.fa.iter().chain(&e.fb).fold(0.0f64, |m, v| m.max(v.abs())));
            let target = (self.tol * h).max(floor);
            // A non-finite residual cannot improve: keep it for the certificate to report.
            // Past the evaluation budget, take what there is.
            if r <= target || !r.is_finite() || self.evals >= MAX_EVALS {
                self.pieces += 1;
                add_scaled(self.jbar, &part, 1.0);
                return;
            }
            if best.as_ref().is_none_or(|(b, _)| r < *b) {
                best = Some((r, part));
            }
        }
        if depth < MAX_DEPTH && self.evals < MAX_EVALS {
            let m = 0.5 * (e.a + e.b);
            let (fm, sm) = self.net.forward_switches(&self.seg.at(m), self.x);
            let left = Ends {
                a: e.a,
                b: m,
                fa: e.fa,
                fb: fm.clone(),
                sa: e.sa,
                sb: sm.clone(),
            };
            let right = Ends {
                a: m,
                b: e.b,
                fa: fm,
                fb: e.fb,
                sa: sm,
                sb: e.sb,
            };
            self.interval(left, depth + 1);
            self.interval(right, depth + 1);
        } else if let Some((_, part)) = best {
            // Out of depth: keep the best estimate; the certificate reports what it is worth.
            self.pieces += 1;
            add_scaled(self.jbar, &part, 1.0);
        }
    }
}

/// max_k Σ_p |J_kp Δw_p|: the size of the terms in J·Δw, for the rounding floor.
fn abs_dot_max(j: &[f64], delta: &[f64], k: usize) -> f64 {
    let p = delta.len();
    (0..k)
        .map(|o| {
            j[o * p..(o + 1) * p]
                .iter()
                .zip(delta)
                .map(|(a, b)| (a * b).abs())
                .sum::<f64>()
        })
        .fold(0.0, f64::max)
}
