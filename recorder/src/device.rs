//! Devices: Burn's pure-Rust `flex` CPU backend (the default) or, with the `cuda` feature, a CUDA
//! GPU, each computing in float64 with autodiff.

use burn::tensor::{Device, FloatDType};

/// The flex CPU device configured for f64, with autodiff. Safe to call more than once.
pub fn flex_f64() -> Result<Device, String> {
    let mut device = Device::flex();
    configure_f64(&mut device)?;
    Ok(device.autodiff())
}

/// The device a `--device` flag names, configured for f64, with autodiff.
///
/// `cpu` (or `flex`) is the flex CPU backend; `cuda` or `cuda:N` is CUDA device N (0 by default),
/// available when epk is built with the `cuda` feature.
///
/// ```
/// let device = epk_recorder::device::select("cpu").unwrap();
/// assert!(epk_recorder::device::select("tpu").is_err());
/// # let _ = device;
/// ```
pub fn select(name: &str) -> Result<Device, String> {
    match name {
        "cpu" | "flex" => flex_f64(),
        cuda if cuda == "cuda" || cuda.starts_with("cuda:") => {
            let index = match cuda.strip_prefix("cuda:") {
                None => 0,
                Some(n) => n
                    .parse::<usize>()
                    .map_err(|_| format!("device `{name}`: expected cuda:N with N a GPU index"))?,
            };
            cuda_f64(index)
        }
        other => Err(format!(
            "unknown device `{other}`: expected cpu, cuda or cuda:N"
        )),
    }
}

#[cfg(feature = "cuda")]
fn cuda_f64(index: usize) -> Result<Device, String> {
    let mut device = Device::cuda(index);
    configure_f64(&mut device)?;
    Ok(device.autodiff())
}

#[cfg(not(feature = "cuda"))]
fn cuda_f64(_index: usize) -> Result<Device, String> {
    Err(
        "this build has no CUDA support: rebuild with `--features cuda` (see scripts/cuda-llvm.sh)"
            .into(),
    )
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
