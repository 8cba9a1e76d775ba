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

use super::batch::{self, Ask, Eval, Shared, Task};
use super::degree::{self, Bernstein};
use super::estimate::{Estimate, fan, held};
use super::hold::{Pool, Slot};
use super::part::{Nodes, Part};
use super::root::Root;
use super::{AUTO_ORDERS, Rule, Segment, StepIntegral, residual};
use crate::jacobian::{JbarSum, Node};
use crate::network::Network;
use epk_model::EpkModel;
use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;

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
    integrate_all(net, seg, x, tol)
        .pop()
        .expect("one input, one integral")
}

/// Bytes of dense `[outputs, P]` Jbar estimates the pieces searched side by side may hold
/// (each holds two orders' at a time): above it the points go in waves, and a point's pieces
/// take turns for its `fan` slots.
pub(super) const SIDE_BY_SIDE_BYTES: usize = 256 << 20;

/// Integrates one step for every input of `xs` (flat) with the adaptive rule. The points'
/// searches run side by side and each round of their requests is answered together
/// (`quadrature/batch.rs`): on the fast path by one batched pass with each input at its own t.
pub fn integrate_all<M: EpkModel>(
    net: &Network<M>,
    seg: &Segment<'_>,
    xs: &[f64],
    tol: f64,
) -> Vec<StepIntegral> {
    let len = net.input_len();
    let fan = fan(net);
    let wave = (SIDE_BY_SIDE_BYTES / (held(net) * fan).max(1)).max(1);
    xs.chunks(wave * len)
        .flat_map(|wave| side_by_side(net, seg, wave, tol))
        .collect()
}

fn side_by_side<M: EpkModel>(
    net: &Network<M>,
    seg: &Segment<'_>,
    xs: &[f64],
    tol: f64,
) -> Vec<StepIntegral> {
    let (k, p) = (net.outputs(), net.num_params());
    let m = xs.len() / net.input_len();
    // The ends are at the recorded weights, the same for every point: one pass each.
    let (f_start, s_start) = net.forward_switches(seg.start, xs);
    let (f_end, s_end) = net.forward_switches(seg.end, xs);
    let noise = super::noise(net, seg, xs, &f_start);
    let per = s_start.len() / m.max(1);
    let delta_norm = seg.delta.iter().map(|d| d * d).sum::<f64>().sqrt();
    let exact = net
        .path_degree()
        .filter(|l| *l <= degree::MAX_DEGREE)
        .map(|l| (l, Bernstein::new(l)));
    let shared = Shared::default();
    let tasks: Vec<Task<'_>> = (0..m)
        .map(|i| {
            let ends = Ends {
                a: 0.0,
                b: 1.0,
                fa: f_start[i * k..(i + 1) * k].to_vec(),
                fb: f_end[i * k..(i + 1) * k].to_vec(),
                sa: s_start[i * per..(i + 1) * per].to_vec(),
                sb: s_end[i * per..(i + 1) * per].to_vec(),
            };
            let run = Adaptive {
                ask: Ask {
                    shared: &shared,
                    task: i,
                },
                k,
                p,
                evals: Cell::new(0),
                slots: Cell::new(fan(net)),
                spare: Pool::default(),
                tol,
                noise: noise[i],
                delta_norm,
                exact: exact.as_ref().map(|(l, b)| (*l, b)),
            };
            Box::pin(run.step(ends)) as Task<'_>
        })
        .collect();
    batch::run(net, seg, xs, &shared, tasks)
}

/// An interval of the step with f and the switching values at both ends.
pub(super) struct Ends {
    pub a: f64,
    pub b: f64,
    pub fa: Vec<f64>,
    pub fb: Vec<f64>,
    pub sa: Vec<f64>,
    pub sb: Vec<f64>,
}

struct Adaptive<'a> {
    ask: Ask<'a>,
    /// Outputs and parameters.
    k: usize,
    p: usize,
    /// Jacobian evaluations so far (the pieces of a step are searched side by side).
    evals: Cell<usize>,
    /// Pieces that may be searched now: each holds two orders' dense Jbar while it is, so a
    /// piece takes a slot for its orders and gives it back before it bisects.
    slots: Cell<usize>,
    /// Dense `[outputs, P]` buffers given back by finished orders (a fresh one of tens of MB
    /// costs its page faults every time).
    spare: Pool,
    tol: f64,
    /// The measured rounding noise of f near w_s ([`super::noise`]).
    noise: f64,
    /// ‖Δw_s‖₂: the scale at which a Jbar error becomes an error in f.
    delta_norm: f64,
    /// The model's path degree L and the conversion of L + 1 samples to Bernstein
    /// coefficients, if it declares one (`quadrature/degree.rs`).
    exact: Option<(usize, &'a Bernstein)>,
}

/// A search's step, boxed so that it can recurse.
type Search<'s> = Pin<Box<dyn Future<Output = Part> + 's>>;

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

impl Adaptive<'_> {
    /// The whole step [0, 1] between `ends`.
    async fn step(self, ends: Ends) -> StepIntegral {
        let (f_start, f_end) = (ends.fa.clone(), ends.fb.clone());
        let part = self.interval(ends, 0).await;
        let mut acc = Acc {
            sum: JbarSum::default(),
            jdw: vec![0.0; self.k],
        };
        acc.sum.add_blocks(part.blocks);
        for (w, ev) in part.nodes {
            acc.add(w, ev);
        }
        let certificate = residual(&f_start, &f_end, &acc.jdw);
        let mut error = part.error;
        error.resize(self.k, 0.0);
        StepIntegral {
            jbar: acc.sum.finish(self.k, self.p),
            f_start,
            f_end,
            evals: self.evals.get(),
            pieces: part.pieces,
            certificate,
            noise: self.noise,
            undeclared_kink: part.kink,
            jbar_error: Some(error),
        }
    }

    /// Splits [a, b] at every switching value whose sign differs between a and b, then
    /// integrates the smooth pieces.
    fn interval(&self, ends: Ends, depth: usize) -> Search<'_> {
        Box::pin(async move {
            let mut breaks = self.breakpoints(&ends).await;
            breaks.sort_by(f64::total_cmp);
            breaks.dedup_by(|u, v| (*u - *v).abs() <= 4.0 * f64::EPSILON);
            if breaks.is_empty() {
                return self.piece(ends, depth).await;
            }
            let values = self.ask.switches(breaks.clone()).await;
            let mut pieces = Vec::with_capacity(breaks.len() + 1);
            let mut left = (ends.a, ends.fa, ends.sa);
            for (t, (ft, st)) in breaks.into_iter().zip(values) {
                pieces.push(Ends {
                    a: left.0,
                    b: t,
                    fa: left.1,
                    fb: ft.clone(),
                    sa: left.2,
                    sb: st.clone(),
                });
                left = (t, ft, st);
            }
            pieces.push(Ends {
                a: left.0,
                b: ends.b,
                fa: left.1,
                fb: ends.fb,
                sa: left.2,
                sb: ends.sb,
            });
            // The pieces are independent: searched side by side (as many at a time as there
            // are slots), kept in order.
            let side = pieces.into_iter().map(|e| self.piece(e, depth)).collect();
            Part::chain(batch::join(side).await)
        })
    }

    /// Zero crossings inside (a, b) of every switching value that changes sign, by the
    /// Illinois variant of regula falsi: exact in one step for values affine in t, and
    /// bracketing for the rest. All the values' searches advance together, one request an
    /// iteration.
    async fn breakpoints(&self, e: &Ends) -> Vec<f64> {
        let mut open: Vec<Root> = (0..e.sa.len().min(e.sb.len()))
            .filter_map(|u| Root::new(u, e))
            .collect();
        let mut out = Vec::with_capacity(open.len());
        for _ in 0..60 {
            if open.is_empty() {
                break;
            }
            let ts: Vec<f64> = open.iter_mut().map(Root::next).collect();
            let values = self.ask.switches(ts).await;
            let mut still = Vec::with_capacity(open.len());
            for (mut root, (_, s)) in open.into_iter().zip(values) {
                if root.update(s[root.unit]) {
                    out.push(root.t);
                } else {
                    still.push(root);
                }
            }
            open = still;
        }
        out.extend(open.iter().map(|r| r.t));
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
    fn piece(&self, e: Ends, depth: usize) -> Search<'_> {
        Box::pin(async move {
            let k = self.k;
            let h = e.b - e.a;
            if h <= 0.0 {
                return Part::default();
            }
            let slot = Slot::take(&self.slots).await;
            let mut best: Option<(f64, Vec<f64>, Nodes)> = None;
            let mut previous: Option<Estimate<'_>> = None;
            // The widest spread of the last two comparisons with the last rounding floor,
            // and whether the residual passed at the last order and at any order.
            let (mut spreads, mut jfloor) = ([f64::INFINITY; 2], 0.0);
            let (mut passed, mut passed_any) = (false, false);
            // Whether no switching value changes sign inside the piece, once asked.
            let mut fixed = None;
            for &n in &AUTO_ORDERS {
                let exact = self.exact.filter(|(l, _)| degree::exact_order(*l) <= n);
                let order = match exact {
                    Some((l, bernstein)) if fixed.is_none() => {
                        let (order, f) =
                            batch::join2(self.order(&e, n), self.fixed(&e, l, bernstein)).await;
                        fixed = Some(f);
                        order
                    }
                    _ => self.order(&e, n).await,
                };
                let target = self.target(&e, order.size);
                // Exact by degree: only rounding is left, in every direction.
                if exact.is_some() && fixed == Some(true) && order.r <= target {
                    let (_, size) = order.q.compare(&order.q, k);
                    let floor = size.iter().map(|s| 16.0 * f64::EPSILON * s).collect();
                    return Part::accepted(order.nodes, floor, k);
                }
                // A switching value may cross zero twice inside: the nodes of two orders can
                // both miss the gap and agree, so look at the halves instead.
                if exact.is_some() && fixed == Some(false) && self.may_bisect(depth) {
                    drop((order, slot));
                    return self.bisect(e, depth).await;
                }
                let Some(prev) = previous.take() else {
                    previous = Some(order.q);
                    continue;
                };
                let (spread, size) = order.q.compare(&prev, k);
                let widest = spread.iter().fold(0.0f64, |m, v| m.max(*v));
                spreads = [spreads[1], widest];
                // Two f64 sums of Jbar differ by the rounding of its entries: ε‖Q‖ per row.
                jfloor = 16.0 * f64::EPSILON * size.iter().fold(0.0f64, |m, v| m.max(*v));
                let agreed = widest * self.delta_norm <= target.max(jfloor * self.delta_norm);
                passed = order.r <= target;
                passed_any |= passed;
                // A non-finite residual cannot improve: keep it for the certificate to
                // report. Past the evaluation budget, take what there is.
                if (passed && agreed) || !order.r.is_finite() || self.evals.get() >= MAX_EVALS {
                    return Part::accepted(order.nodes, spread, k);
                }
                if best.as_ref().is_none_or(|(b, _, _)| order.r < *b) || passed {
                    best = Some((order.r, spread, order.nodes));
                }
                previous = Some(order.q);
            }
            // The residual met, the orders disagreeing by no more than a few hundred
            // roundings of Jbar's entries, and their spread no longer shrinking (a converging
            // rule shrinks it many times per order): what is left is the rounding noise of
            // the Jacobian itself, which bisection cannot remove. Keep the highest order; its
            // spread goes into the reported bound. A larger spread (slow convergence, or a
            // switch crossed twice inside the piece) is bisected.
            let noise_limited =
                passed && spreads[1] > spreads[0] / 8.0 && spreads[1] <= NOISE_SPREAD * jfloor;
            if !noise_limited && self.may_bisect(depth) {
                // What this level kept is not needed below it.
                drop((best, previous, slot));
                return self.bisect(e, depth).await;
            }
            // Out of depth: keep the best estimate; the certificate reports what it is worth.
            let mut part = best
                .map(|(_, spread, nodes)| Part::accepted(nodes, spread, k))
                .unwrap_or_default();
            if !passed_any && depth >= MAX_DEPTH {
                part.kink = Some((e.a, e.b));
            }
            part
        })
    }

    /// Whether a piece at `depth` may still be split: within the depth and evaluation budgets.
    fn may_bisect(&self, depth: usize) -> bool {
        depth < MAX_DEPTH && self.evals.get() < MAX_EVALS
    }

    /// Whether no switching value changes sign inside the piece: each is a polynomial of
    /// degree at most L there, so its values at the ends and at L − 1 points between decide.
    async fn fixed(&self, e: &Ends, degree: usize, bernstein: &Bernstein) -> bool {
        let ts = degree::interior(e.a, e.b, degree);
        let inner = if ts.is_empty() {
            Vec::new()
        } else {
            self.ask.switches(ts).await
        };
        let mut samples: Vec<&[f64]> = vec![&e.sa];
        samples.extend(inner.iter().map(|(_, s)| s.as_slice()));
        samples.push(&e.sb);
        degree::fixed_pattern(bernstein, &samples)
    }

    /// Gauss–Legendre of order `n` on the piece: its nodes, Q = Σ w J (dense or factored), the
    /// fundamental-theorem residual, and the size of the sums J·Δw for rounding bounds.
    async fn order(&self, e: &Ends, n: usize) -> Order<'_> {
        let (k, h) = (self.k, e.b - e.a);
        let (ts, ws): (Vec<f64>, Vec<f64>) = Rule::Gauss(n).nodes(e.a, e.b).into_iter().unzip();
        let evals = self.ask.nodes(ts).await;
        // On the fast path with a large J, the order is kept as its nodes' factors and
        // compared a layer at a time; otherwise it is summed densely.
        let q = match evals.first().map(|ev| (&ev.node, &ev.dense)) {
            Some((Node::Factored(layers, _), None)) => {
                Estimate::Factored(layers.clone(), Vec::with_capacity(n))
            }
            _ => Estimate::Dense(self.spare.zeroed(k * self.p)),
        };
        let mut order = Order {
            nodes: Vec::with_capacity(n),
            q,
            r: 0.0,
            size: 0.0,
        };
        let mut jdw = vec![0.0; k];
        for (w, mut ev) in ws.into_iter().zip(evals) {
            for (a, j) in jdw.iter_mut().zip(&ev.jdw) {
                *a += w * j;
            }
            match (&mut order.q, ev.dense.take(), &ev.node) {
                (Estimate::Factored(_, terms), _, Node::Factored(_, f)) => {
                    terms.push((w, f.clone()))
                }
                (Estimate::Dense(q), Some(j), _) => {
                    q.iter_mut().zip(&j).for_each(|(q, v)| *q += w * v)
                }
                (Estimate::Dense(q), None, node) => node.add_dense(w, k, q),
                _ => unreachable!("one network evaluates every node alike"),
            }
            order.size = order.size.max(ev.size * h);
            order.nodes.push((w, ev));
            self.evals.set(self.evals.get() + 1);
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
    async fn bisect(&self, e: Ends, depth: usize) -> Part {
        let m = 0.5 * (e.a + e.b);
        let (fm, sm) = self
            .ask
            .switches(vec![m])
            .await
            .pop()
            .expect("one value asked");
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
        let halves = vec![
            self.interval(left, depth + 1),
            self.interval(right, depth + 1),
        ];
        Part::chain(batch::join(halves).await)
    }
}

/// One order's estimate on a piece.
struct Order<'a> {
    nodes: Nodes,
    /// Σ_q w_q J(t_q), dense or as its factored nodes.
    q: Estimate<'a>,
    /// max_k |f_k(b) − f_k(a) − Q_k·Δw|.
    r: f64,
    /// max over nodes of h·Σ_p |J_kp Δw_p|.
    size: f64,
}
