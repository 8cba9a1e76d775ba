//! The optimizer a run is recorded with: Burn's configurations, or a raw [`OptimizerSpec`].

use burn::optim::{AdamConfig, AdamWConfig, SgdConfig};
use epk_store::OptimizerSpec;
use serde::Serialize;

/// An optimizer the recorder stores with a run: pass it to
/// [`Recorder::optimizer`](crate::Recorder::optimizer).
///
/// Burn's [`SgdConfig`], [`AdamConfig`] and [`AdamWConfig`] (by reference) are stored by name
/// with their configuration as JSON, which replay decomposes; an [`OptimizerSpec`] is stored as
/// it is.
///
/// ```
/// use burn::optim::{AdamWConfig, SgdConfig};
/// use epk_recorder::{IntoOptimizerSpec, OptimizerSpec};
/// let sgd = (&SgdConfig::new()).into_optimizer_spec();
/// assert_eq!(sgd.name, "sgd");
/// assert_eq!((&AdamWConfig::new()).into_optimizer_spec().name, "adamw");
/// let raw = OptimizerSpec { name: "mine".into(), config: serde_json::Value::Null };
/// assert_eq!(raw.clone().into_optimizer_spec(), raw);
/// ```
pub trait IntoOptimizerSpec {
    /// The optimizer's name and configuration as stored in the run's attributes.
    fn into_optimizer_spec(self) -> OptimizerSpec;
}

/// A named optimizer with its serialised configuration (`null` if it does not serialise).
fn named(name: &str, config: &impl Serialize) -> OptimizerSpec {
    OptimizerSpec {
        name: name.into(),
        config: serde_json::to_value(config).unwrap_or(serde_json::Value::Null),
    }
}

/// SGD with Burn's configuration (momentum, Nesterov, weight decay, clipping).
impl IntoOptimizerSpec for &SgdConfig {
    fn into_optimizer_spec(self) -> OptimizerSpec {
        named("sgd", self)
    }
}

/// Adam with Burn's configuration (coupled weight decay and clipping included).
impl IntoOptimizerSpec for &AdamConfig {
    fn into_optimizer_spec(self) -> OptimizerSpec {
        named("adam", self)
    }
}

/// AdamW with Burn's configuration (decoupled weight decay).
impl IntoOptimizerSpec for &AdamWConfig {
    fn into_optimizer_spec(self) -> OptimizerSpec {
        named("adamw", self)
    }
}

/// Any optimizer, by name and configuration, stored as given.
impl IntoOptimizerSpec for OptimizerSpec {
    fn into_optimizer_spec(self) -> OptimizerSpec {
        self
    }
}

/// Any optimizer, by name and configuration, stored as given.
impl IntoOptimizerSpec for &OptimizerSpec {
    fn into_optimizer_spec(self) -> OptimizerSpec {
        self.clone()
    }
}
