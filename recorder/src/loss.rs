//! The recorded losses, computed in Burn.

use burn::tensor::{Int, Tensor, activation};
use epk_store::Loss;

/// Mean loss over the batch for outputs `f` `[batch, outputs]` and class labels, or `None`
/// for [`Loss::Model`], which only the model computes.
pub fn loss(kind: Loss, f: Tensor<2>, targets: Tensor<1, Int>) -> Option<Tensor<1>> {
    match kind {
        Loss::CrossEntropy => Some(cross_entropy(f, targets)),
        Loss::NllLogSoftmax => Some(nll(f, targets)),
        Loss::Model => None,
    }
}

/// Mean over the batch of −log softmax(f)_y.
pub fn cross_entropy(f: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
    nll(activation::log_softmax(f, 1), targets)
}

/// Mean over the batch of −log_p_y.
pub fn nll(log_p: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
    log_p.gather(1, targets.unsqueeze_dim(1)).mean().neg()
}
