//! The default device: Burn's pure-Rust `flex` CPU backend computing in float64.

use burn::tensor::{Device, FloatDType};

/// The flex CPU device configured for f64, with autodiff. Safe to call more than once.
pub fn flex_f64() -> Result<Device, String> {
    let mut device = Device::flex();
    configure_f64(&mut device)?;
    Ok(device.autodiff())
}

/// Sets f64 as `device`'s float type; an earlier identical setting is accepted.
pub fn configure_f64(device: &mut Device) -> Result<(), String> {
    match device.configure(FloatDType::F64) {
        Ok(()) => Ok(()),
        Err(e) => {
            // Settings lock at the first tensor; that is fine when they already say f64.
            let probe = burn::tensor::Tensor::<1>::zeros([1], &*device);
            if probe.dtype() == burn::tensor::DType::F64 {
                Ok(())
            } else {
                Err(format!(
                    "cannot make float64 the device's float type ({e}); configure the device before creating any tensor"
                ))
            }
        }
    }
}
