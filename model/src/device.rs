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
/// let device = epk_model::device::select("cpu").unwrap();
/// assert!(epk_model::device::select("tpu").is_err());
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
    use std::sync::{Arc, Mutex};
    // The CUDA runtime panics (on its own threads too) when there is no driver or no such GPU;
    // a probe tensor read back here turns that into an error naming the first cause, and the
    // default panic output is held back meanwhile.
    let first = Arc::new(Mutex::new(None::<String>));
    let seen = first.clone();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "the CUDA runtime failed".into());
        seen.lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(message);
    }));
    let probe = std::panic::catch_unwind(move || {
        let mut device = Device::cuda(index);
        configure_f64(&mut device)?;
        let t = burn::tensor::Tensor::<1>::ones([2], &device);
        let sum = (t.clone() + t).sum().into_scalar::<f64>();
        if sum != 4.0 {
            return Err(format!("a float64 probe on cuda:{index} gave {sum}, not 4"));
        }
        Ok(device)
    });
    std::panic::set_hook(previous);
    match probe {
        Ok(result) => Ok(result?.autodiff()),
        Err(_) => {
            let why = first
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
                .unwrap_or_else(|| "the CUDA runtime failed".into());
            Err(format!("cuda:{index} is not usable: {why}"))
        }
    }
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
