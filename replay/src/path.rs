//! The path integral over one step for one input: Jbar_s(x) = ∫₀¹ ∇_w f(x; w_s + tΔw_s) dt.

use crate::network::Network;
use crate::rule::{AUTO_ORDERS, Rule};
use crate::structured::{Factors, LayerRows, Layers};
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

/// Jbar, as a dense `[outputs, num_params]` matrix or, on the fast path, as merged rank-one
/// rows per layer (see [`Layers::merge`]), owned by output index.
pub enum Jbar {
    Dense(Vec<f64>),
    Layered(Vec<LayerRows>),
}

/// Jbar for one input over one step, with its bookkeeping.
pub struct StepIntegral {
    pub jbar: Jbar,
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

/// One Jacobian evaluation.
enum Node {
    Dense(Vec<f64>),
    Factored(Factors),
}

struct Eval {
    node: Node,
    /// J_k · Δw for each output.
    jdw: Vec<f64>,
    /// max_k Σ_p |J_kp Δw_p|.
    size: f64,
}

fn evaluate<M: EpkModel>(net: &Network<M>, seg: &Segment<'_>, t: f64, x: &[f64]) -> Eval {
    let k = net.outputs();
    let w = seg.at(t);
    match net.layers() {
        Some(layers) => {
            let f = net.jacobian_factors(&w, x);
            let jdw = (0..k)
                .map(|o| layers.dot(&f, o, seg.delta, false))
                .collect();
            let size = (0..k)
                .map(|o| layers.dot(&f, o, seg.delta, true))
                .fold(0.0, f64::max);
            Eval {
                node: Node::Factored(f),
                jdw,
                size,
            }
        }
        None => {
            let j = net.jacobian(&w, x);
            let p = seg.delta.len();
            let row = |o: usize| j[o * p..(o + 1) * p].iter().zip(seg.delta);
            let jdw = (0..k).map(|o| row(o).map(|(a, b)| a * b).sum()).collect();
            let size = (0..k)
                .map(|o| row(o).map(|(a, b)| (a * b).abs()).sum::<f64>())
                .fold(0.0, f64::max);
            Eval {
                node: Node::Dense(j),
                jdw,
                size,
            }
        }
    }
}

/// Accepted nodes, summed densely or kept factored.
struct Acc {
    dense: Option<Vec<f64>>,
    weights: Vec<f64>,
    factors: Vec<Factors>,
    jdw: Vec<f64>,
}

impl Acc {
    fn new(k: usize) -> Self {
        Acc {
            dense: None,
            weights: Vec::new(),
            factors: Vec::new(),
            jdw: vec![0.0; k],
        }
    }

    fn add(&mut self, w: f64, e: Eval) {
        for (a, j) in self.jdw.iter_mut().zip(&e.jdw) {
            *a += w * j;
        }
        match e.node {
            Node::Dense(j) => {
                let acc = self.dense.get_or_insert_with(|| vec![0.0; j.len()]);
                for (a, v) in acc.iter_mut().zip(&j) {
                    *a += w * v;
                }
            }
            Node::Factored(f) => {
                self.weights.push(w);
                self.factors.push(f);
            }
        }
    }

    fn into_jbar(self, k: usize, p: usize, layers: Option<&Layers>) -> Jbar {
        match (self.dense, layers) {
            (Some(d), _) => Jbar::Dense(d),
            (None, Some(layers)) if !self.factors.is_empty() => {
                Jbar::Layered(layers.merge(&self.weights, &self.factors, k, 0))
            }
            _ => Jbar::Dense(vec![0.0; k * p]),
        }
    }
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
    let (f_start, s_start) = net.forward_switches(seg.start, x);
    let (f_end, s_end) = net.forward_switches(seg.end, x);
    let mut acc = Acc::new(k);
    let mut evals = 0;
    let mut pieces = 1;
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
            let mut run = Adaptive {
                net,
                seg,
                x,
                acc: &mut acc,
                evals: 0,
                pieces: 0,
                tol,
            };
            run.interval(ends, 0);
            evals = run.evals;
            pieces = run.pieces;
        }
        fixed => {
            for (t, w) in fixed.nodes(0.0, 1.0) {
                acc.add(w, evaluate(net, seg, t, x));
                evals += 1;
            }
        }
    }
    let certificate = (0..k)
        .map(|o| (f_end[o] - f_start[o] - acc.jdw[o]).abs())
        .fold(0.0, f64::max);
    StepIntegral {
        jbar: acc.into_jbar(k, net.num_params(), net.layers()),
        f_start,
        f_end,
        evals,
        pieces,
        certificate,
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
}

/// Deepest bisection of a piece that resists every order (a switch the endpoint signs missed).
const MAX_DEPTH: usize = 24;
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
            // What rounding alone leaves in f(b) − f(a) − J·Δw.
            let fmax = e.fa.iter().chain(&e.fb).fold(0.0f64, |m, v| m.max(v.abs()));
            let floor = 16.0 * f64::EPSILON * (size + fmax);
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
        } else if let Some((_, nodes)) = best {
            // Out of depth: keep the best estimate; the certificate reports what it is worth.
            self.accept(nodes);
        }
    }

    fn accept(&mut self, nodes: Vec<(f64, Eval)>) {
        self.pieces += 1;
        for (w, ev) in nodes {
            self.acc.add(w, ev);
        }
    }
}

/// A fixed rule for many inputs at once on the fast path: all inputs share the rule's nodes,
/// so each node is one batched pass over every input. Same result as [`integrate`] per input.
pub fn integrate_fixed_batched<M: EpkModel>(
    net: &Network<M>,
    seg: &Segment<'_>,
    xs: &[f64],
    rule: Rule,
) -> Option<Vec<StepIntegral>> {
    let layers = net.layers()?;
    if rule == Rule::Auto {
        return None;
    }
    let k = net.outputs();
    let f_start = net.forward(seg.start, xs);
    let f_end = net.forward(seg.end, xs);
    let m = f_start.len() / k;
    let nodes = rule.nodes(0.0, 1.0);
    // Every node's factors for all points at once; each point reads its own rows.
    let all: Vec<Factors> = nodes
        .iter()
        .map(|&(t, _)| net.jacobian_factors(&seg.at(t), xs))
        .collect();
    let weights: Vec<f64> = nodes.iter().map(|&(_, w)| w).collect();
    Some(
        (0..m)
            .map(|pt| {
                let rows = layers.merge(&weights, &all, k, pt * k);
                // Jbar · Δw from the merged rows: the nodes are not dotted one by one.
                let jdw = layers.rows_dot(&rows, seg.delta, k);
                let (fs, fe) = (&f_start[pt * k..(pt + 1) * k], &f_end[pt * k..(pt + 1) * k]);
                let certificate = (0..k)
                    .map(|o| (fe[o] - fs[o] - jdw[o]).abs())
                    .fold(0.0, f64::max);
                StepIntegral {
                    jbar: Jbar::Layered(rows),
                    f_start: fs.to_vec(),
                    f_end: fe.to_vec(),
                    evals: nodes.len(),
                    pieces: 1,
                    certificate,
                }
            })
            .collect(),
    )
}
