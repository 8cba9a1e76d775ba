//! The `auto` rule's points side by side: each point's adaptive search is a task that asks for
//! Jacobians and switching values at the t it needs, and every round the requests of all
//! tasks are answered together.
//!
//! Points split a step into different pieces, so their nodes differ; on the fast path a batch
//! evaluates each input at its own t (`Network::moved`, x·W(t) = x·W_s + t·x·ΔW_s), so one
//! forward and one backward pass answer a round for every point. On the general path the
//! answers are computed one by one, as before. The search itself is written once, as an
//! `async` function whose awaits are these requests, and a point's independent pieces are
//! searched side by side too ([`join`]); the tasks are polled in lockstep by [`run`] (no
//! threads, no runtime: a future is pending exactly while one of its requests is open).

use super::{Segment, StepIntegral};
use crate::jacobian::Node;
use crate::network::{Moved, Network};
use epk_model::EpkModel;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// One Jacobian evaluation with what the acceptance test needs.
pub(super) struct Eval {
    pub node: Node,
    /// J `[outputs, P]`, when small enough to keep: formed once, it gives J·Δw, its size and
    /// the order's sum without going through the factors three times.
    pub dense: Option<Vec<f64>>,
    /// J_k · Δw for each output.
    pub jdw: Vec<f64>,
    /// max_k Σ_p |J_kp Δw_p|.
    pub size: f64,
}

/// f and the switching values at one t.
pub(super) type Switching = (Vec<f64>, Vec<f64>);

/// What a task asks for: values at each of several t.
pub(super) enum Request {
    Switches(Vec<f64>),
    Nodes(Vec<f64>),
}

enum Reply {
    Switches(Vec<Switching>),
    Nodes(Vec<Eval>),
}

/// The open requests of a round (request id, task, request) and the replies to them, by
/// request id.
#[derive(Default)]
pub(super) struct Shared {
    queue: RefCell<Vec<(usize, usize, Request)>>,
    replies: RefCell<HashMap<usize, Reply>>,
    next: Cell<usize>,
}

/// A task's handle for asking.
#[derive(Clone, Copy)]
pub(super) struct Ask<'a> {
    pub shared: &'a Shared,
    pub task: usize,
}

/// A request waiting for its round: pending once (it is queued), then ready with the reply.
struct Asking<'a> {
    ask: Ask<'a>,
    request: Option<Request>,
    id: usize,
}

impl Future for Asking<'_> {
    type Output = Reply;

    fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Reply> {
        let shared = self.ask.shared;
        if let Some(request) = self.request.take() {
            self.id = shared.next.get();
            shared.next.set(self.id + 1);
            shared
                .queue
                .borrow_mut()
                .push((self.id, self.ask.task, request));
            return Poll::Pending;
        }
        match shared.replies.borrow_mut().remove(&self.id) {
            Some(reply) => Poll::Ready(reply),
            None => Poll::Pending,
        }
    }
}

/// Every future's output, in order, the futures advancing together: each poll polls every
/// unfinished one, so their requests share a round.
pub(super) async fn join<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    struct Join<F: Future> {
        futures: Vec<Option<Pin<Box<F>>>>,
        out: Vec<Option<F::Output>>,
    }
    // The futures are pinned in their boxes; the outputs are never pinned.
    impl<F: Future> Unpin for Join<F> {}
    impl<F: Future> Future for Join<F> {
        type Output = Vec<F::Output>;
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            let this = self.get_mut();
            for (slot, out) in this.futures.iter_mut().zip(this.out.iter_mut()) {
                if let Some(f) = slot
                    && let Poll::Ready(v) = f.as_mut().poll(cx)
                {
                    *out = Some(v);
                    *slot = None;
                }
            }
            if this.futures.iter().all(Option::is_none) {
                Poll::Ready(
                    this.out
                        .iter_mut()
                        .map(|o| o.take().expect("ready"))
                        .collect(),
                )
            } else {
                Poll::Pending
            }
        }
    }
    let out = futures.iter().map(|_| None).collect();
    Join {
        futures: futures.into_iter().map(|f| Some(Box::pin(f))).collect(),
        out,
    }
    .await
}

/// Both futures' outputs, the two advancing together (their requests share a round).
pub(super) async fn join2<A: Future, B: Future>(a: A, b: B) -> (A::Output, B::Output) {
    let (mut a, mut b) = (Box::pin(a), Box::pin(b));
    let (mut x, mut y) = (None, None);
    std::future::poll_fn(move |cx| {
        // A finished future is not polled again.
        if x.is_none()
            && let Poll::Ready(v) = a.as_mut().poll(cx)
        {
            x = Some(v);
        }
        if y.is_none()
            && let Poll::Ready(v) = b.as_mut().poll(cx)
        {
            y = Some(v);
        }
        match (x.take(), y.take()) {
            (Some(v), Some(w)) => Poll::Ready((v, w)),
            (v, w) => {
                (x, y) = (v, w);
                Poll::Pending
            }
        }
    })
    .await
}

impl Ask<'_> {
    async fn ask(self, request: Request) -> Reply {
        let asking = Asking {
            ask: self,
            request: Some(request),
            id: 0,
        };
        asking.await
    }

    /// f and the switching values at each t.
    pub async fn switches(self, ts: Vec<f64>) -> Vec<Switching> {
        match self.ask(Request::Switches(ts)).await {
            Reply::Switches(s) => s,
            Reply::Nodes(_) => unreachable!("a switches request gets switching values"),
        }
    }

    /// The Jacobian at each t.
    pub async fn nodes(self, ts: Vec<f64>) -> Vec<Eval> {
        match self.ask(Request::Nodes(ts)).await {
            Reply::Nodes(n) => n,
            Reply::Switches(_) => unreachable!("a nodes request gets Jacobians"),
        }
    }
}

/// A task: one point's search over one step.
pub(super) type Task<'a> = Pin<Box<dyn Future<Output = StepIntegral> + 'a>>;

/// Polls every task until each has finished, answering each round's requests together
/// (`inputs[task]` is the task's input).
pub(super) fn run<M: EpkModel>(
    net: &Network<M>,
    seg: &Segment<'_>,
    inputs: &[f64],
    shared: &Shared,
    tasks: Vec<Task<'_>>,
) -> Vec<StepIntegral> {
    let moved = net
        .layers()
        .is_some()
        .then(|| net.moved(seg.start, seg.delta));
    let answer = Answer {
        net,
        moved,
        seg,
        inputs,
    };
    let mut out: Vec<Option<StepIntegral>> = tasks.iter().map(|_| None).collect();
    let mut live: Vec<(usize, Task<'_>)> = tasks.into_iter().enumerate().collect();
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        live.retain_mut(|(i, task)| match task.as_mut().poll(&mut cx) {
            Poll::Ready(r) => {
                out[*i] = Some(r);
                false
            }
            Poll::Pending => true,
        });
        if live.is_empty() {
            break;
        }
        let requests = std::mem::take(&mut *shared.queue.borrow_mut());
        assert!(
            !requests.is_empty(),
            "a pending task always has a request open"
        );
        shared.replies.borrow_mut().extend(answer.all(requests));
    }
    out.into_iter()
        .map(|r| r.expect("every task finished"))
        .collect()
}

/// Entries of J `[outputs, P]` up to which an evaluation is also kept dense.
const DENSE_EVAL: usize = 1 << 17;

/// Whether the `auto` rule sums each order densely for `net`: on the general path, or when J
/// is small enough to keep dense; otherwise the orders stay factored.
pub(super) fn dense_estimates<M: EpkModel>(net: &Network<M>) -> bool {
    net.layers().is_none() || net.outputs() * net.num_params() <= DENSE_EVAL
}

/// Rows of one batched Jacobian pass (inputs × outputs) at most: bounds its memory.
const MAX_ROWS: usize = 2048;

/// Bytes of factors one batched Jacobian pass may produce (a convolution's factors are its
/// unfolded input, positions × patch per row).
const PASS_BYTES: usize = 32 << 20;

struct Answer<'a, M: EpkModel> {
    net: &'a Network<M>,
    moved: Option<Moved<'a, M>>,
    seg: &'a Segment<'a>,
    inputs: &'a [f64],
}

impl<M: EpkModel> Answer<'_, M> {
    fn input(&self, task: usize) -> &[f64] {
        let len = self.net.input_len();
        &self.inputs[task * len..(task + 1) * len]
    }

    /// Every request's reply, by request id.
    fn all(&self, requests: Vec<(usize, usize, Request)>) -> Vec<(usize, Reply)> {
        // Flatten to (task, t) pairs of each kind, answer each kind in batches, then hand
        // each task its slice back.
        let (mut switches, mut nodes) = (Vec::new(), Vec::new());
        for (_, task, request) in &requests {
            match request {
                Request::Switches(ts) => switches.extend(ts.iter().map(|&t| (*task, t))),
                Request::Nodes(ts) => nodes.extend(ts.iter().map(|&t| (*task, t))),
            }
        }
        let mut switches = self.switches(&switches).into_iter();
        let mut nodes = self.nodes(&nodes).into_iter();
        requests
            .into_iter()
            .map(|(id, _, request)| match request {
                Request::Switches(ts) => (
                    id,
                    Reply::Switches(switches.by_ref().take(ts.len()).collect()),
                ),
                Request::Nodes(ts) => (id, Reply::Nodes(nodes.by_ref().take(ts.len()).collect())),
            })
            .collect()
    }

    fn gather(&self, pairs: &[(usize, f64)]) -> (Vec<f64>, Vec<f64>) {
        let ts = pairs.iter().map(|&(_, t)| t).collect();
        let xs = pairs
            .iter()
            .flat_map(|&(task, _)| self.input(task).iter().copied())
            .collect();
        (ts, xs)
    }

    fn switches(&self, pairs: &[(usize, f64)]) -> Vec<Switching> {
        let Some(moved) = &self.moved else {
            return pairs
                .iter()
                .map(|&(task, t)| self.net.forward_switches(&self.seg.at(t), self.input(task)))
                .collect();
        };
        let k = self.net.outputs();
        let mut out = Vec::with_capacity(pairs.len());
        for chunk in pairs.chunks(MAX_ROWS) {
            let (ts, xs) = self.gather(chunk);
            let (f, s) = moved.forward_switches(&ts, &xs);
            let per = s.len() / chunk.len();
            for r in 0..chunk.len() {
                out.push((
                    f[r * k..(r + 1) * k].to_vec(),
                    s[r * per..(r + 1) * per].to_vec(),
                ));
            }
        }
        out
    }

    fn nodes(&self, pairs: &[(usize, f64)]) -> Vec<Eval> {
        let (k, p) = (self.net.outputs(), self.net.num_params());
        let delta = self.seg.delta;
        let eval = |node: Node| {
            if k * p > DENSE_EVAL {
                let (jdw, size) = node.dot(delta, k);
                return Eval {
                    node,
                    dense: None,
                    jdw,
                    size,
                };
            }
            let mut dense = vec![0.0; k * p];
            node.add_dense(1.0, k, &mut dense);
            let rows = || dense.chunks(p.max(1));
            let jdw = rows()
                .map(|j| j.iter().zip(delta).map(|(a, b)| a * b).sum())
                .collect();
            let size = rows()
                .map(|j| j.iter().zip(delta).map(|(a, b)| (a * b).abs()).sum::<f64>())
                .fold(0.0, f64::max);
            Eval {
                node,
                dense: Some(dense),
                jdw,
                size,
            }
        };
        let (Some(moved), Some(layers)) = (&self.moved, self.net.implementation().layer_arc())
        else {
            return pairs
                .iter()
                .map(|&(task, t)| {
                    let w = self.seg.at(t);
                    eval(
                        self.net
                            .implementation()
                            .node(self.net, &w, self.input(task)),
                    )
                })
                .collect();
        };
        // A row's factors: Σ over layers of positions × (in + out) values.
        let row: usize = layers
            .layers
            .iter()
            .map(|l| l.positions * (l.inputs + l.outputs))
            .sum();
        let rows = MAX_ROWS.min(PASS_BYTES / (8 * row).max(1));
        let mut out = Vec::with_capacity(pairs.len());
        for chunk in pairs.chunks((rows / k.max(1)).max(1)) {
            let (ts, xs) = self.gather(chunk);
            let f = moved.jacobian_factors(&ts, &xs);
            for r in 0..chunk.len() {
                let node = layers.select_blocked(&f, r * k, k);
                out.push(eval(Node::Factored(layers.clone(), node)));
            }
        }
        out
    }
}
