//! What the `auto` rule accepted on part of a step: its pieces' nodes, their convolution
//! blocks, and the pieces' Jbar error per output.

use super::batch::Eval;
use crate::jacobian::{ConvBlocks, add_blocks};

/// A rule's evaluations on a piece with their weights.
pub(super) type Nodes = Vec<(f64, Eval)>;

/// What the search accepted on part of a step, left to right.
#[derive(Default)]
pub(super) struct Part {
    /// Their convolutions' factors absorbed into `blocks` when accepted: a node's L positions
    /// would otherwise be held until the step ends.
    pub nodes: Nodes,
    pub blocks: ConvBlocks,
    /// The accepted pieces' spreads per output, summed.
    pub error: Vec<f64>,
    /// Smooth pieces accepted.
    pub pieces: usize,
    /// The first piece that resisted every order at the deepest bisection.
    pub kink: Option<(f64, f64)>,
}

impl Part {
    /// One accepted piece: its weighted nodes and its Jbar error per output.
    pub fn accepted(mut nodes: Nodes, spread: Vec<f64>, k: usize) -> Self {
        let mut blocks = ConvBlocks::new();
        for (w, ev) in &mut nodes {
            ev.node.absorb_convolutions(*w, k, &mut blocks);
        }
        Part {
            nodes,
            blocks,
            error: spread,
            pieces: 1,
            kink: None,
        }
    }

    /// The parts one after another.
    pub fn chain(parts: Vec<Part>) -> Self {
        let mut out = Part::default();
        for p in parts {
            out.nodes.extend(p.nodes);
            add_blocks(&mut out.blocks, p.blocks);
            if out.error.is_empty() {
                out.error = p.error;
            } else {
                out.error
                    .iter_mut()
                    .zip(&p.error)
                    .for_each(|(e, d)| *e += d);
            }
            out.pieces += p.pieces;
            out.kink = out.kink.or(p.kink);
        }
        out
    }
}
