//! Max-pooling of any kernel and stride, and leaky ReLU, with their switching values.
//!
//! The pooled values come from Burn's own `max_pool1d`/`max_pool2d`, so the function and its
//! gradient are exactly those of `nn::pool::MaxPool1d`/`MaxPool2d` without padding. The
//! switching values are each window's margins x_j − max_{i≠j} x_i: positive only for the chosen
//! element, zero on a tie, so a margin changes sign exactly where the window's choice changes
//! (and not where the other elements merely reorder). With overlapping windows (stride below
//! the kernel) an element has one margin per window it is in.

use crate::Switches;
use burn::tensor::module::{max_pool1d, max_pool2d};
use burn::tensor::ops::MaxPoolOptions;
use burn::tensor::{Tensor, activation};

impl Switches {
    /// Max-pooling over `[batch, channels, length]` with windows of `kernel` every `stride`
    /// (no padding, no dilation), as `MaxPool1d`.
    pub fn max_pool1d(&mut self, x: Tensor<3>, kernel: usize, stride: usize) -> Tensor<3> {
        if self.is_recording() && kernel > 1 {
            // [b, c, windows, kernel]
            let windows: Tensor<4> = x.clone().detach().unfold(2, kernel, stride);
            self.note(margins(windows));
        }
        let mut options = MaxPoolOptions::new([kernel]);
        options.stride = [stride];
        max_pool1d(x, options)
    }

    /// Max-pooling over `[batch, channels, height, width]` with `kernel` windows every `stride`
    /// (no padding, no dilation), as `MaxPool2d`.
    pub fn max_pool2d(
        &mut self,
        x: Tensor<4>,
        kernel: [usize; 2],
        stride: [usize; 2],
    ) -> Tensor<4> {
        if self.is_recording() && kernel[0] * kernel[1] > 1 {
            // [b, c, rows, h-windows... ] then the width: [b, c, oh, ow, kh, kw].
            let rows: Tensor<5> = x.clone().detach().unfold(2, kernel[0], stride[0]);
            let windows: Tensor<6> = rows.unfold(3, kernel[1], stride[1]);
            let [b, c, oh, ow, kh, kw] = windows.dims();
            self.note(margins(windows.reshape([b, c, oh, ow, kh * kw])));
        }
        let mut options = MaxPoolOptions::new(kernel);
        options.stride = stride;
        max_pool2d(x, options)
    }

    /// Leaky ReLU with `slope` below zero, noting its pre-activation as a switching value.
    pub fn leaky_relu<const D: usize>(&mut self, z: Tensor<D>, slope: f64) -> Tensor<D> {
        self.note(z.clone());
        activation::leaky_relu(z, slope)
    }
}

/// x_j − max_{i≠j} x_i over the last dimension (at least two elements): the two largest of
/// each window give it, m₁ − m₂ for the maximum and x_j − m₁ for the rest.
fn margins<const D: usize>(windows: Tensor<D>) -> Tensor<D> {
    let last = D - 1;
    let shape = windows.shape();
    let top = windows.clone().topk(2, last);
    let first = top.clone().narrow(last, 0, 1);
    let second = top.narrow(last, 1, 1);
    let below = windows - first.clone().expand(shape.clone());
    let is_max = below.clone().equal_elem(0.0);
    below.mask_where(is_max, (first - second).expand(shape))
}

#[cfg(test)]
mod tests {
    use crate::device::flex_f64;
    use crate::{Switches, float_tensor};

    #[test]
    fn overlapping_windows_note_one_margin_per_window_and_element() {
        let device = flex_f64().unwrap();
        // One row of 5: windows of 3 every 2 are [1, 4, 2] and [2, 0, 3].
        let x = float_tensor(vec![1.0, 4.0, 2.0, 0.0, 3.0], [1, 1, 5], &device);
        let mut sw = Switches::recording();
        let pooled: Vec<f64> = sw.max_pool1d(x, 3, 2).try_into_vec_as().unwrap();
        assert_eq!(pooled, vec![4.0, 3.0]);
        let m: Vec<f64> = sw.into_values().unwrap().try_into_vec_as().unwrap();
        assert_eq!(
            m,
            vec![
                1.0 - 4.0,
                4.0 - 2.0,
                2.0 - 4.0,
                2.0 - 3.0,
                0.0 - 3.0,
                3.0 - 2.0
            ]
        );
    }

    #[test]
    fn the_2d_margins_agree_with_the_2x2_pool_and_ties_give_zero() {
        let device = flex_f64().unwrap();
        let values = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 7.0];
        let x = || float_tensor(values.clone(), [1, 1, 2, 4], &device);
        let (mut a, mut b) = (Switches::recording(), Switches::recording());
        let pa: Vec<f64> = a.max_pool2(x()).try_into_vec_as().unwrap();
        let pb: Vec<f64> = b.max_pool2d(x(), [2, 2], [2, 2]).try_into_vec_as().unwrap();
        assert_eq!(pa, pb);
        let ma: Vec<f64> = a.into_values().unwrap().try_into_vec_as().unwrap();
        let mb: Vec<f64> = b.into_values().unwrap().try_into_vec_as().unwrap();
        assert_eq!(ma, mb);
        let tie = float_tensor(vec![2.0, 2.0, 1.0, 0.0], [1, 1, 2, 2], &device);
        let mut sw = Switches::recording();
        sw.max_pool2d(tie, [2, 2], [1, 1]);
        let m: Vec<f64> = sw.into_values().unwrap().try_into_vec_as().unwrap();
        assert_eq!(m, vec![0.0, 0.0, -1.0, -2.0]);
    }
}
