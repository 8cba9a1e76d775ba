//! All the numbers, not only the top ten: a kernel machine written as a Zarr v3 group whose
//! arrays carry dimension names, so that `xarray.open_zarr` reads them as one data set.
//!
//! | array | dimensions | what |
//! |---|---|---|
//! | `attributions` | point, train_sample, output | A[x, i, k] |
//! | `bias` | point, output | b(x) = f(x; w_0) |
//! | `nondata` | point, output | N(x), the weight decay's terms |
//! | `residual` | point, output | R(x), what the decomposition residual moved |
//! | `network` | point, output | f(x; w_N) |
//! | `point` | point | the held-out index of each point |
//! | `train_target` | train_sample | each training sample's label |
//! | `layer_attributions` | layer, point, train_sample, output | A split by parameter tensor (`replay layers`) |
//!
//! b + Σ_i A + N + R = f to the machine's error, which the group's attributes state with the
//! rule and the store it came from.

use crate::{KernelMachine, ReplayError};
use std::path::Path;
use std::sync::Arc;
use zarrs::array::{ArrayBuilder, DataType, data_type};
use zarrs::filesystem::FilesystemStore;
use zarrs::group::GroupBuilder;

/// What the export says about where its numbers came from.
pub struct Provenance<'a> {
    /// The store replayed.
    pub store: &'a Path,
    /// The quadrature rule.
    pub rule: String,
    /// The held-out index of each explained point.
    pub points: &'a [usize],
    /// Each training sample's label.
    pub train_targets: &'a [i64],
    /// The parameter tensors, when the attributions were split by layer.
    pub layers: Option<Vec<String>>,
}

/// Writes `machine` to a new Zarr v3 group at `path` (refusing to replace anything there).
pub fn write(path: &Path, machine: &KernelMachine, p: &Provenance<'_>) -> Result<(), ReplayError> {
    let group = Group::create(path, machine, p)?;
    let (m, n, k) = machine.attributions.dim();
    let (m64, n64, k64) = (m as u64, n as u64, k as u64);
    group.put(
        "attributions",
        &["point", "train_sample", "output"],
        vec![m64, n64, k64],
        Values::F64(machine.attributions.iter().copied().collect()),
    )?;
    for (name, values) in [
        ("bias", &machine.bias),
        ("nondata", &machine.nondata),
        ("residual", &machine.residual),
        ("network", &machine.network),
    ] {
        let flat = values.iter().copied().collect();
        group.put(
            name,
            &["point", "output"],
            vec![m64, k64],
            Values::F64(flat),
        )?;
    }
    let points = p.points.iter().map(|&i| i as i64).collect();
    group.put("point", &["point"], vec![m64], Values::I64(points))?;
    let targets = Values::I64(p.train_targets.to_vec());
    group.put("train_target", &["train_sample"], vec![n64], targets)?;
    if let Some(groups) = &machine.group_attributions {
        group.put(
            "layer_attributions",
            &["layer", "point", "train_sample", "output"],
            vec![groups.dim().0 as u64, m64, n64, k64],
            Values::F64(groups.iter().copied().collect()),
        )?;
    }
    Ok(())
}

/// The export's root group, being written.
struct Group<'a> {
    path: &'a Path,
    store: Arc<FilesystemStore>,
}

impl<'a> Group<'a> {
    /// Creates the directory and the root group with its provenance attributes.
    fn create(
        path: &'a Path,
        machine: &KernelMachine,
        p: &Provenance<'_>,
    ) -> Result<Self, ReplayError> {
        if path.exists() {
            return Err(ReplayError::Input(format!(
                "{} exists; choose a new path for the export",
                path.display()
            )));
        }
        let fail = |e: &dyn std::fmt::Display| {
            ReplayError::Input(format!("cannot write {}: {e}", path.display()))
        };
        std::fs::create_dir_all(path).map_err(|e| fail(&e))?;
        let store = Arc::new(FilesystemStore::new(path).map_err(|e| fail(&e))?);
        let mut attributes = serde_json::Map::new();
        attributes.insert(
            "epk_export".into(),
            serde_json::json!({
                "store": p.store.display().to_string(),
                "rule": p.rule,
                "max_abs_error": machine.max_error(),
                "layers": p.layers,
            }),
        );
        GroupBuilder::new()
            .attributes(attributes)
            .build(store.clone(), "/")
            .map_err(|e| fail(&e))?
            .store_metadata()
            .map_err(|e| fail(&e))?;
        Ok(Group { path, store })
    }

    /// Writes array `name` of `shape` with dimension names `dims`; arrays with a point axis
    /// and two more get one chunk per point, the rest one chunk.
    fn put(
        &self,
        name: &str,
        dims: &[&str],
        shape: Vec<u64>,
        values: Values,
    ) -> Result<(), ReplayError> {
        let fail = |e: &dyn std::fmt::Display| {
            ReplayError::Input(format!("cannot write {}/{name}: {e}", self.path.display()))
        };
        let mut chunk: Vec<u64> = shape.iter().map(|&c| c.max(1)).collect();
        if dims.len() >= 3
            && let Some(axis) = dims.iter().position(|d| *d == "point")
        {
            chunk[axis] = 1;
        }
        let (dtype, fill): (DataType, zarrs::array::builder::ArrayBuilderFillValue) = match values {
            Values::F64(_) => (data_type::float64(), 0.0f64.into()),
            Values::I64(_) => (data_type::int64(), 0i64.into()),
        };
        let mut builder = ArrayBuilder::new(shape, chunk, dtype, fill);
        builder.dimension_names(Some(dims.to_vec()));
        let array = builder
            .build(self.store.clone(), &format!("/{name}"))
            .map_err(|e| fail(&e))?;
        array.store_metadata().map_err(|e| fail(&e))?;
        let subset = array.subset_all();
        match values {
            Values::F64(v) => array.store_array_subset(&subset, &v[..]),
            Values::I64(v) => array.store_array_subset(&subset, &v[..]),
        }
        .map_err(|e| fail(&e))
    }
}

/// An array's elements, in row-major order.
enum Values {
    F64(Vec<f64>),
    I64(Vec<i64>),
}
