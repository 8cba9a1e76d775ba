//! Which training points made one prediction: the kernel machine's terms for one held-out
//! point, ranked.

use crate::KernelMachine;
use serde::Serialize;

/// One training point's term in a prediction.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Attribution {
    /// Index in the training set.
    pub index: usize,
    /// Its label.
    pub label: i64,
    /// A[x, i, k].
    pub value: f64,
    /// value / (f_k(x) − b): the point's share of what training added to the output (the
    /// shares of all points, the non-data terms and the residual add up to 1).
    pub share: f64,
}

/// The prediction f_k(x) = b + Σ_i A[x, i, k] + N + R taken apart, with the largest terms.
#[derive(Clone, Debug, Serialize)]
pub struct PointAttribution {
    /// The held-out point, by index.
    pub point: usize,
    /// The explained output (by default the predicted class).
    pub output: usize,
    /// The held-out point's label, if the store has one.
    pub label: Option<i64>,
    /// f_k(x; w_N), the network.
    pub network: f64,
    /// b = f_k(x; w_0).
    pub bias: f64,
    /// Σ_i A[x, i, k].
    pub data: f64,
    /// Non-data terms (weight decay).
    pub nondata: f64,
    /// Decomposition residual R.
    pub residual: f64,
    /// |b + Σ A + N + R − f|.
    pub error: f64,
    /// Largest positive terms, largest first.
    pub positive: Vec<Attribution>,
    /// Most negative terms, most negative first.
    pub negative: Vec<Attribution>,
}

impl PointAttribution {
    /// Ranks the training points of `machine`'s row `row` for `output` (`None`: the class the
    /// network predicts). `point` is the point's index in the store's held-out set.
    ///
    /// ```
    /// use epk_replay::attribute::PointAttribution;
    /// use epk_replay::KernelMachine;
    /// use ndarray::{Array2, Array3, array};
    /// let machine = KernelMachine {
    ///     bias: array![[0.0, 0.0]],
    ///     attributions: Array3::from_shape_vec((1, 3, 2), vec![0.5, -0.1, -0.2, 0.3, 1.0, 0.0]).unwrap(),
    ///     nondata: Array2::zeros((1, 2)),
    ///     residual: Array2::zeros((1, 2)),
    ///     network: array![[1.3, 0.2]],
    ///     steps: Vec::new(),
    ///     constant_coefficients: None,
    ///     optimizer: "sgd".into(),
    ///     group_attributions: None,
    ///     unit_roundoff: f64::EPSILON / 2.0,
    /// };
    /// let r = PointAttribution::rank(&machine, 0, 7, None, &[4, 5, 6], Some(1), 2);
    /// assert_eq!(r.output, 0); // the predicted class
    /// assert_eq!(r.positive[0].index, 2);
    /// assert_eq!(r.negative[0].value, -0.2);
    /// assert!(r.error < 1e-15);
    /// ```
    pub fn rank(
        machine: &KernelMachine,
        row: usize,
        point: usize,
        output: Option<usize>,
        labels: &[i64],
        label: Option<i64>,
        top: usize,
    ) -> Self {
        let f = machine.network.row(row);
        let k = output.unwrap_or_else(|| crate::argmax(f));
        let column = machine.attributions.slice(ndarray::s![row, .., k]).to_vec();
        let network = f[k];
        let learned = network - machine.bias[[row, k]];
        let term = |i: usize| Attribution {
            index: i,
            label: labels.get(i).copied().unwrap_or(-1),
            value: column[i],
            share: column[i] / learned,
        };
        let mut order: Vec<usize> = (0..column.len()).collect();
        order.sort_by(|&a, &b| column[b].total_cmp(&column[a]));
        let positive = order
            .iter()
            .take_while(|&&i| column[i] > 0.0)
            .take(top)
            .map(|&i| term(i))
            .collect();
        let negative = order
            .iter()
            .rev()
            .take_while(|&&i| column[i] < 0.0)
            .take(top)
            .map(|&i| term(i))
            .collect();
        let data: f64 = column.iter().sum();
        let (bias, nondata, residual) = (
            machine.bias[[row, k]],
            machine.nondata[[row, k]],
            machine.residual[[row, k]],
        );
        PointAttribution {
            point,
            output: k,
            label,
            network,
            bias,
            data,
            nondata,
            residual,
            error: (bias + data + nondata + residual - network).abs(),
            positive,
            negative,
        }
    }

    /// The ranking as a table for people.
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "held-out point {}{}: output {} = {:.6e}",
            self.point,
            self.label
                .map_or(String::new(), |l| format!(" (label {l})")),
            self.output,
            self.network
        );
        let _ = writeln!(
            s,
            "  = b {:.6e} + Σ_i A {:.6e} + non-data {:.3e} + residual {:.3e}   (|error| {:.1e})",
            self.bias, self.data, self.nondata, self.residual, self.error
        );
        for (title, list) in [
            ("largest positive", &self.positive),
            ("largest negative", &self.negative),
        ] {
            let _ = writeln!(s, "{title}:");
            let _ = writeln!(
                s,
                "  {:>4} {:>7} {:>6} {:>13} {:>10}",
                "rank", "index", "label", "A[x,i,k]", "of f − b"
            );
            for (r, a) in list.iter().enumerate() {
                let _ = writeln!(
                    s,
                    "  {:>4} {:>7} {:>6} {:>13.5e} {:>9.3}%",
                    r + 1,
                    a.index,
                    a.label,
                    a.value,
                    100.0 * a.share
                );
            }
        }
        s
    }
}
