//! Tensors built from f64 values in the device's float type.

use burn::tensor::{Device, Tensor, TensorData};

/// A float tensor of the device's float type built from f64 values.
pub fn float_tensor<const D: usize>(
    values: Vec<f64>,
    shape: [usize; D],
    device: &Device,
) -> Tensor<D> {
    let t: Tensor<D> = Tensor::from_data(TensorData::new(values, shape), device);
    let dtype = Tensor::<1>::zeros([1], device).dtype();
    if t.dtype() == dtype { t } else { t.cast(dtype) }
}
