//! The recorded losses, computed in Burn.

use burn::tensor::{Int, Tensor, activation};
use epk_store::Loss;

/// Mean loss over the batch for outputs `f` `[batch, outputs]` and class labels.
pub fn loss(kind: Loss, f: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
    let log_p = match kind {
        Loss::CrossEntropy => activation::log_softmax(f, 1),
        Loss::NllLogSoftmax => f,
    };
    let picked = log_p.gather(1, targets.unsqueeze_dim(1));
    picked.mean().neg()
}
