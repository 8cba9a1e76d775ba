//! The `auto` rule: split each step where the network switches pieces, then integrate each
//! smooth piece with Gauss–Legendre of rising order until its fundamental-theorem residual
//! meets the piece's share of the tolerance.
//!
//! A ReLU unit (or a max-pool's choice) that switches inside a step makes the integrand jump,
//! and no polynomial rule integrates a jump accurately: what limits the fixed rules is the
//! switches, not their order. The model reports its *switching values* through `Switches`;
//! where one changes sign between the ends of an interval, its root is found by regula falsi
//! (exact in one iteration for values affine in t) and the interval is split there.

use super::{AUTO_ORDERS, Rule, Segment, StepIntegral, residual};
use crate::jacobian::{JbarSum, Node};
use crate::network::Network;
use epk_model::EpkModel;

/// One Jacobian evaluation with what the acceptance test needs.
struct Eval {
    node: Node,
    /// J_k · Δw for each output.
    jdw: Vec<f64>,
    /// max_k Σ_p |J_kp Δw_p|.
    size: f64,
}

fn evaluate<M: EpkModel>(net: &Network<M>, seg: &Segment<'_>, t: f64, x: &[f64]) -> Eval {
    let node = net.implementation().node(net, &seg.at(t), x);
    let (jdw, size) = node.dot(seg.delta, net.outputs());
    Eval { node, jdw, size }
}

/// Accepted nodes: their Jbar and Σ w J·Δw.
struct Acc {
    sum: JbarSum,
    jdw: Vec<f64>,
}

impl Acc {
    fn add(&mut self, w: f64, e: Eval) {
        for (a, j) in self.jdw.iter_mut().zip(&e.jdw) {
            *a += w * j;
        }
        self.sum.add(w, e.node);
    }
}

/// Integrates one step for input `x` with the adaptive rule; `tol` is the certificate it aims
/// at for the whole step.
pub fn integrate<M: EpkModel>(
    net: &Network<M>,
    seg: &Segment<'_>,
    x: &[f64],
    tol: f64,
) -> StepIntegral {
    let k = net.outputs();
    let (f_start, s_start) = net.forward_switches(seg.start, x);
    let (f_end, s_end) = net.forward_switches(seg.end, x);
    let noise = super::noise(net, seg, x, &f_start)[0];
    let mut acc = Acc {
        sum: JbarSum::default(),
        jdw: vec![0.0; k],
    };
    let ends = Ends {
        a: 0.0,
        b: 1.0,
        fa: f_start.clone(),
        fb: f_end.clone(),
        sa: s_start,
        sb: s_end,
    };
    let mut run = Adaptive {
        net,
        seg,
        x,
        acc: &mut acc,
        evals: 0,
        pieces: 0,
        tol,
        noise,
        kink: None,
    };
    run.interval(ends, 0);
    let (evals, pieces, undeclared_kink) = (run.evals, run.pieces, run.kink);
    let certificate = residual(&f_start, &f_end, &acc.jdw);
    StepIntegral {
        jbar: acc.sum.finish(k, net.num_params()),
        f_start,
        f_end,
        evals,
        pieces,
        certificate,
        noise,
        undeclared_kink,
    }
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

struct Adaptive<'a, M: EpkModel> {
    net: &'a Network<M>,
    seg: &'a Segment<'a>,
    x: &'a [f64],
    acc: &'a mut Acc,
    evals: usize,
    pieces: usize,
    tol: f64,
    /// The measured rounding noise of f near w_s ([`super::noise`]).
    noise: f64,
    /// The first piece that resisted every order at the deepest bisection.
    kink: Option<(f64, f64)>,
}

/// Deepest bisection of a piece that resists every order. A switch the endpoint signs missed
/// shows its sign change at a bisection point long before; a smooth piece 2⁻¹⁶ of a step long
/// meets the tolerance at order 3. What is left is a kink no switching value declares.
pub const MAX_DEPTH: usize = 16;
/// Jacobian evaluations one step and point may spend before the rule settles for its best
/// estimate (a model whose kinks are not declared through `Switches` would bisect forever).
const MAX_EVALS: usize = 2000;

impl<M: EpkModel> Adaptive<'_, M> {
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
            // Same sign, a zero at an end, or a non-finite value: nothing to split at.
            if va * vb >= 0.0 || !(va * vb).is_finite() {
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
        let k = self.net.outputs();
        let h = e.b - e.a;
        if h <= 0.0 {
            return;
        }
        let mut best: Option<(f64, Vec<(f64, Eval)>)> = None;
        for &n in &AUTO_ORDERS {
            let mut nodes = Vec::with_capacity(n);
            let mut jdw = vec![0.0; k];
            let mut size = 0.0f64;
            for (t, w) in Rule::Gauss(n).nodes(e.a, e.b) {
                let ev = evaluate(self.net, self.seg, t, self.x);
                for (a, j) in jdw.iter_mut().zip(&ev.jdw) {
                    *a += w * j;
                }
                size = size.max(ev.size * h);
                nodes.push((w, ev));
                self.evals += 1;
            }
            let r = (0..k)
                .map(|o| (e.fb[o] - e.fa[o] - jdw[o]).abs())
                .fold(0.0, f64::max);
            // What rounding alone leaves in f(b) − f(a) − J·Δw: relative to |f| and |J·Δw|,
            // or the measured noise of f, whichever is larger. Two noisy forward passes
            // differ by √2σ; 2·max|second difference| is about 5σ.
            let fmax = e.fa.iter().chain(&e.fb).fold(0.0f64, |m, v| m.max(v.abs()));
            let floor = (16.0 * f64::EPSILON * (size + fmax)).max(2.0 * self.noise);
            let target = (self.tol * h).max(floor);
            // A non-finite residual cannot improve: keep it for the certificate to report.
            // Past the evaluation budget, take what there is.
            if r <= target || !r.is_finite() || self.evals >= MAX_EVALS {
                self.accept(nodes);
                return;
            }
            if best.as_ref().is_none_or(|(b, _)| r < *b) {
                best = Some((r, nodes));
            }
        }
        if depth < MAX_DEPTH && self.evals < MAX_EVALS {
            self.bisect(e, depth);
            return;
        }
        if depth >= MAX_DEPTH {
            self.kink.get_or_insert((e.a, e.b));
        }
        if let Some((_, nodes)) = best {
            // Out of depth: keep the best estimate; the certificate reports what it is worth.
            self.accept(nodes);
        }
    }

    /// Splits [a, b] at its midpoint and integrates both halves one level deeper.
    fn bisect(&mut self, e: Ends, depth: usize) {
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
    }

    fn accept(&mut self, nodes: Vec<(f64, Eval)>) {
        self.pieces += 1;
        for (w, ev) in nodes {
            self.acc.add(w, ev);
        }
    }
}
