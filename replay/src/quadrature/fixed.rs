//! The fixed rules: the same nodes for every input and step.

use super::{Rule, Segment, StepIntegral, residual};
use crate::network::Network;
use epk_model::EpkModel;

/// Integrates one step for every input of `xs` with the fixed `rule` (not `auto`): the
/// network's Jacobian implementation evaluates the rule's nodes, batched across inputs where
/// it can.
pub fn integrate<M: EpkModel>(
    net: &Network<M>,
    seg: &Segment<'_>,
    xs: &[f64],
    rule: Rule,
) -> Vec<StepIntegral> {
    let k = net.outputs();
    let nodes = rule.nodes(0.0, 1.0);
    let f_start = net.forward(seg.start, xs);
    let f_end = net.forward(seg.end, xs);
    let noise = super::noise(net, seg, xs, &f_start);
    net.implementation()
        .integrate_nodes(net, seg, xs, &nodes)
        .into_iter()
        .enumerate()
        .map(|(pt, (jbar, jdw))| {
            let (fs, fe) = (&f_start[pt * k..(pt + 1) * k], &f_end[pt * k..(pt + 1) * k]);
            StepIntegral {
                jbar,
                f_start: fs.to_vec(),
                f_end: fe.to_vec(),
                evals: nodes.len(),
                pieces: 1,
                certificate: residual(fs, fe, &jdw),
                noise: noise[pt],
                undeclared_kink: None,
                jbar_error: None,
            }
        })
        .collect()
}
