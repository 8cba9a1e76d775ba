//! Whether the machine takes Theorem 3.7's single-kernel form: a_i constant across steps.

use epk_store::Loss;

/// Tracks whether each sample's dL/df is the same at every step it appears in and has one
/// non-zero entry (cross-entropy on log-softmax outputs): then a_i is constant.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct Coefficients {
    seen: Vec<Option<Vec<f64>>>,
    constant: bool,
    k: usize,
}

impl Coefficients {
    pub(super) fn new(n: usize, loss: Loss, k: usize) -> Self {
        Coefficients {
            seen: vec![None; n],
            constant: loss == Loss::NllLogSoftmax,
            k,
        }
    }

    pub(super) fn observe(&mut self, indices: &[usize], dloss: &[f64]) {
        if !self.constant {
            return;
        }
        for (c, &i) in indices.iter().enumerate() {
            let d = &dloss[c * self.k..(c + 1) * self.k];
            match &self.seen[i] {
                None => self.seen[i] = Some(d.to_vec()),
                Some(prev) if prev.as_slice() == d => {}
                Some(_) => self.constant = false,
            }
        }
    }

    /// The observations of two stretches of one run, as if one had seen both.
    pub(crate) fn merge(&mut self, other: &Coefficients) {
        self.constant &= other.constant;
        for (mine, theirs) in self.seen.iter_mut().zip(&other.seen) {
            match (mine.as_ref(), theirs) {
                (_, None) => {}
                (None, Some(d)) => *mine = Some(d.clone()),
                (Some(a), Some(b)) if a == b => {}
                (Some(_), Some(_)) => self.constant = false,
            }
        }
    }

    /// a_i = −(the one non-zero dL/df entry) for each sample, if constant.
    pub(crate) fn constant(&self) -> Option<Vec<f64>> {
        if !self.constant {
            return None;
        }
        self.seen
            .iter()
            .map(|d| match d {
                None => Some(0.0),
                Some(d) => {
                    let nz: Vec<f64> = d.iter().copied().filter(|v| *v != 0.0).collect();
                    (nz.len() == 1).then(|| -nz[0])
                }
            })
            .collect()
    }
}
