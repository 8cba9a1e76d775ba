//! The `auto` rule: split each step where the network switches pieces, then integrate each
//! smooth piece with Gauss–Legendre of rising order until its fundamental-theorem residual
//! meets the piece's share of the tolerance and two successive orders agree on Jbar itself,
//! so that every training point's term, not only their sum, is within the tolerance.
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

/// Accepted nodes: their Jbar, Σ w J·Δw, and the accepted pieces' error estimates of Jbar
/// per output (ℓ2 over the parameters, summed over pieces).
struct Acc {
    sum: JbarSum,
    jdw: Vec<f64>,
    error: Vec<f64>,
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
        error: vec![0.0; k],
    };
    let delta_norm = seg.delta.iter().map(|d| d * d).sum::<f64>().sqrt();
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
        delta_norm,
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
        jbar_error: Some(acc.error),
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
    /// ‖Δw_s‖₂: the scale at which a Jbar error becomes an error in f.
    delta_norm: f64,
    /// The first piece that resisted every order at the deepest bisection.
    kink: Option<(f64, f64)>,
}

/// Deepest bisection of a piece that resists every order. A switch the endpoint signs missed
/// shows its sign change at a bisection point long before; a smooth piece 2⁻¹⁶ of a step long
/// meets the tolerance at order 3. What is left is a kink no switching value declares.
pub const MAX_DEPTH: usize = 16;
/// Jacobian evaluations one step and point may spend before the rule settles for its best
/// estimate (a model whose kinks are not declared through `Switches` would bisect forever):
/// room for one kink chased to [`MAX_DEPTH`] through every order, 75 evaluations a level.
const MAX_EVALS: usize = 3200;

/// How many rounding floors (16ε‖Q‖) two orders' Jbar may differ by and still be called
/// the Jacobian's noise: 64 × 16ε ≈ 2.3e-13 of ‖Q‖.
const NOISE_SPREAD: f64 = 64.0;

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

    /// Integrates a piece with rising Gauss–Legendre orders until two successive orders
    /// agree on Jbar itself and the higher one's fundamental-theorem residual meets the
    /// piece's share of the tolerance; bisects if none does.
    ///
    /// The residual alone sees Jbar only along Δw_s; each training point's term reads Jbar
    /// along its own gradient, where a low order can be off while the sum along Δw_s is
    /// right. The spread ‖Q_n − Q_m‖₂ of two orders n > m estimates the lower one's error
    /// (the standard embedded estimate) and so bounds the higher one's pessimistically; once
    /// scaled by ‖Δw_s‖₂ it must meet the same target as the residual.
    fn piece(&mut self, e: Ends, depth: usize) {
        let k = self.net.outputs();
        let h = e.b - e.a;
        if h <= 0.0 {
            return;
        }
        let mut best: Option<(f64, Vec<f64>, Nodes)> = None;
        let mut previous: Option<Vec<f64>> = None;
        // The widest spread of the last two comparisons with the last rounding floor, and
        // whether the residual passed at the last order and at any order.
        let (mut spreads, mut jfloor) = ([f64::INFINITY; 2], 0.0);
        let (mut passed, mut passed_any) = (false, false);
        for &n in &AUTO_ORDERS {
            let order = self.order(&e, n);
            let target = self.target(&e, order.size);
            let Some(prev) = previous.take() else {
                previous = Some(order.q);
                continue;
            };
            let spread = spread(&order.q, &prev, k);
            let widest = spread.iter().fold(0.0f64, |m, v| m.max(*v));
            spreads = [spreads[1], widest];
            // Two f64 sums of Jbar differ by the rounding of its entries: ε‖Q‖ per row.
            jfloor = 16.0 * f64::EPSILON * row_norms(&order.q, k).fold(0.0, f64::max);
            let agreed = widest * self.delta_norm <= target.max(jfloor * self.delta_norm);
            passed = order.r <= target;
            passed_any |= passed;
            // A non-finite residual cannot improve: keep it for the certificate to report.
            // Past the evaluation budget, take what there is.
            if (passed && agreed) || !order.r.is_finite() || self.evals >= MAX_EVALS {
                self.accept(order.nodes, spread);
                return;
            }
            if best.as_ref().is_none_or(|(b, _, _)| order.r < *b) || passed {
                best = Some((order.r, spread, order.nodes));
            }
            previous = Some(order.q);
        }
        // The residual met, the orders disagreeing by no more than a few hundred roundings of
        // Jbar's entries, and their spread no longer shrinking (a converging rule shrinks it
        // many times per order): what is left is the rounding noise of the Jacobian itself,
        // which bisection cannot remove. Keep the highest order; its spread goes into the
        // reported bound. A larger spread (slow convergence, or a switch crossed twice
        // inside the piece) is bisected.
        let noise_limited =
            passed && spreads[1] > spreads[0] / 8.0 && spreads[1] <= NOISE_SPREAD * jfloor;
        if !noise_limited && depth < MAX_DEPTH && self.evals < MAX_EVALS {
            self.bisect(e, depth);
            return;
        }
        if !passed_any && depth >= MAX_DEPTH {
            self.kink.get_or_insert((e.a, e.b));
        }
        if let Some((_, spread, nodes)) = best {
            // Out of depth: keep the best estimate; the certificate reports what it is worth.
            self.accept(nodes, spread);
        }
    }

    /// Gauss–Legendre of order `n` on the piece: its nodes, Q = Σ w J as `[outputs, P]`, the
    /// fundamental-theorem residual, and the size of the sums J·Δw for rounding bounds.
    fn order(&mut self, e: &Ends, n: usize) -> Order {
        let (k, p, h) = (self.net.outputs(), self.net.num_params(), e.b - e.a);
        let mut order = Order {
            nodes: Vec::with_capacity(n),
            q: vec![0.0; k * p],
            r: 0.0,
            size: 0.0,
        };
        let mut jdw = vec![0.0; k];
        for (t, w) in Rule::Gauss(n).nodes(e.a, e.b) {
            let ev = evaluate(self.net, self.seg, t, self.x);
            for (a, j) in jdw.iter_mut().zip(&ev.jdw) {
                *a += w * j;
            }
            ev.node.add_dense(w, k, &mut order.q);
            order.size = order.size.max(ev.size * h);
            order.nodes.push((w, ev));
            self.evals += 1;
        }
        order.r = residual(&e.fa, &e.fb, &jdw);
        order
    }

    /// The piece's share of the tolerance, or what rounding alone leaves in f(b) − f(a) −
    /// J·Δw if that is larger: relative to |f| and |J·Δw|, or the measured noise of f. Two
    /// noisy forward passes differ by √2σ; 2·max|second difference| is about 5σ.
    fn target(&self, e: &Ends, size: f64) -> f64 {
        let fmax = e.fa.iter().chain(&e.fb).fold(0.0f64, |m, v| m.max(v.abs()));
        let floor = (16.0 * f64::EPSILON * (size + fmax)).max(2.0 * self.noise);
        (self.tol * (e.b - e.a)).max(floor)
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

    fn accept(&mut self, nodes: Nodes, spread: Vec<f64>) {
        self.pieces += 1;
        for (e, d) in self.acc.error.iter_mut().zip(spread) {
            *e += d;
        }
        for (w, ev) in nodes {
            self.acc.add(w, ev);
        }
    }
}

/// A rule's evaluations on a piece with their weights.
type Nodes = Vec<(f64, Eval)>;

/// One order's estimate on a piece.
struct Order {
    nodes: Nodes,
    /// Σ_q w_q J(t_q), `[outputs, P]`.
    q: Vec<f64>,
    /// max_k |f_k(b) − f_k(a) − Q_k·Δw|.
    r: f64,
    /// max over nodes of h·Σ_p |J_kp Δw_p|.
    size: f64,
}

/// ‖Q_k‖₂ for each of `k` output rows of `q` (`[outputs, P]`).
fn row_norms(q: &[f64], k: usize) -> impl Iterator<Item = f64> + '_ {
    q.chunks(q.len() / k.max(1))
        .map(|r| r.iter().map(|v| v * v).sum::<f64>().sqrt())
}

/// ‖Q_k − M_k‖₂ for each of `k` output rows: how far two orders' Jbar lie apart.
fn spread(q: &[f64], m: &[f64], k: usize) -> Vec<f64> {
    let diff: Vec<f64> = q.iter().zip(m).map(|(a, b)| a - b).collect();
    row_norms(&diff, k).collect()
}
