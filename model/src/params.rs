//! A module's float parameters as one flat f64 vector, in the module's visiting order.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{DType, Device, Gradients, Tensor, TensorData, Transaction};
use epk_store::ParamLayout;

struct LayoutVisitor {
    path: Vec<String>,
    layout: Vec<ParamLayout>,
    offset: usize,
}

impl ModuleVisitor for LayoutVisitor {
    fn enter_module(&mut self, name: &str, _container: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let shape = param.lazy_shape().dims::<D>().to_vec();
        let len = shape.iter().product();
        self.layout.push(ParamLayout {
            path: self.path.join("."),
            shape,
            offset: self.offset,
            len,
        });
        self.offset += len;
    }
}

/// Path, shape and offset of every float parameter, in flatten order.
pub fn layout<M: Module>(module: &M) -> Vec<ParamLayout> {
    let mut v = LayoutVisitor {
        path: Vec::new(),
        layout: Vec::new(),
        offset: 0,
    };
    module.visit(&mut v);
    v.layout
}

/// Where a flattening reads each parameter's values.
enum Source<'a> {
    /// The parameter itself.
    Values,
    /// Its gradient from a backward pass.
    Grads(&'a Gradients),
    /// Its gradient as an optimizer step receives it.
    Params(&'a burn::optim::GradientsParams),
}

struct FlattenVisitor<'a> {
    out: Vec<f64>,
    source: Source<'a>,
    error: Option<String>,
}

impl ModuleVisitor for FlattenVisitor<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let n: usize = param.lazy_shape().dims::<D>().iter().product();
        let tensor = match self.source {
            Source::Values => Some(param.val()),
            Source::Grads(grads) => param.val().grad(grads),
            Source::Params(grads) => grads.get::<D>(param.id),
        };
        match tensor {
            Some(t) => match t.try_into_vec_as::<f64>() {
                Ok(v) => self.out.extend(v),
                Err(e) => {
                    self.error.get_or_insert(format!("{e:?}"));
                    self.out.extend(std::iter::repeat_n(f64::NAN, n));
                }
            },
            // A parameter the output does not depend on has a zero gradient.
            None => self.out.extend(std::iter::repeat_n(0.0, n)),
        }
    }
}

/// Flattens `module` from `source`.
fn flatten_from<M: Module>(module: &M, source: Source<'_>) -> Result<Vec<f64>, String> {
    let mut v = FlattenVisitor {
        out: Vec::new(),
        source,
        error: None,
    };
    module.visit(&mut v);
    v.error.map_or(Ok(v.out), Err)
}

/// The module's weights as one f64 vector (exact for f32 and f64 parameters).
pub fn flatten<M: Module>(module: &M) -> Result<Vec<f64>, String> {
    flatten_from(module, Source::Values)
}

/// A module's weights captured without reading them: the reads happen later, on another thread.
///
/// Burn tensors are immutable values (an operation on a shared buffer writes a new one), so the
/// snapshot keeps the weights exactly as they were when it was taken. Taking one costs the
/// trainer a reference count per parameter, and on a GPU it queues the device-to-host copy
/// instead of waiting for it.
pub struct Snapshot {
    transaction: Transaction,
    len: usize,
}

struct SnapshotVisitor {
    transaction: Option<Transaction>,
    len: usize,
}

impl ModuleVisitor for SnapshotVisitor {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let value = param.val().inner();
        self.len += value.dims().iter().product::<usize>();
        let t = self.transaction.take().unwrap_or_default();
        self.transaction = Some(t.register(value));
    }
}

/// Captures the module's weights for a later [`Snapshot::read_into`].
pub fn snapshot<M: Module>(module: &M) -> Snapshot {
    let mut v = SnapshotVisitor {
        transaction: Some(Transaction::default()),
        len: 0,
    };
    module.visit(&mut v);
    Snapshot {
        transaction: v.transaction.unwrap_or_default(),
        len: v.len,
    }
}

impl Snapshot {
    /// The number of weights captured.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the module had no float parameters.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Reads the weights as the backend holds them, one [`TensorData`] per parameter in layout
    /// order. On the CPU a tensor no one else holds any more (the model has stepped on) is
    /// handed over without a copy.
    pub fn read_data(self) -> Result<Vec<TensorData>, String> {
        let data = self
            .transaction
            .try_execute()
            .map_err(|e| format!("{e:?}"))?;
        let len: usize = data.iter().map(|d| d.num_elements()).sum();
        if len != self.len {
            return Err(format!("read {len} weights, expected {}", self.len));
        }
        Ok(data)
    }

    /// Reads the weights into `out` (cleared first) as f64, flat in layout order; exact for f32
    /// and f64 parameters. `out`'s allocation is reused.
    pub fn read_into(self, out: &mut Vec<f64>) -> Result<(), String> {
        out.clear();
        out.reserve(self.len);
        let data = self
            .transaction
            .try_execute()
            .map_err(|e| format!("{e:?}"))?;
        for d in data {
            match d.dtype() {
                DType::F64 => {
                    out.extend_from_slice(d.as_slice::<f64>().map_err(|e| format!("{e:?}"))?)
                }
                DType::F32 => out.extend(
                    d.as_slice::<f32>()
                        .map_err(|e| format!("{e:?}"))?
                        .iter()
                        .map(|&v| f64::from(v)),
                ),
                _ => out.extend(d.convert::<f64>().iter::<f64>()),
            }
        }
        if out.len() != self.len {
            return Err(format!("read {} weights, expected {}", out.len(), self.len));
        }
        Ok(())
    }
}

/// The gradient of every parameter from `grads`, flat in layout order (zero where absent).
pub fn flatten_grads<M: Module>(module: &M, grads: &Gradients) -> Result<Vec<f64>, String> {
    flatten_from(module, Source::Grads(grads))
}

struct LoadMapper<'a> {
    flat: &'a [f64],
    offset: usize,
    device: Device,
    require_grad: bool,
}

impl ModuleMapper for LoadMapper<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, value, _) = param.consume();
        let dims = value.dims();
        let n: usize = dims.iter().product();
        let values = self.flat[self.offset..self.offset + n].to_vec();
        self.offset += n;
        let dtype = value.dtype();
        let mut t: Tensor<D> = Tensor::from_data(TensorData::new(values, dims), &self.device);
        if t.dtype() != dtype {
            t = t.cast(dtype);
        }
        if self.require_grad {
            t = t.require_grad();
        }
        Param::initialized(id, t)
    }
}

/// Replaces the module's weights with `flat` (in layout order). `require_grad` marks them as
/// leaves for a following backward pass.
pub fn load_flat<M: Module>(
    module: M,
    flat: &[f64],
    device: &Device,
    require_grad: bool,
) -> Result<M, String> {
    let expected: usize = layout(&module).iter().map(|p| p.len).sum();
    if expected != flat.len() {
        return Err(format!(
            "the module has {expected} parameters, {} values given",
            flat.len()
        ));
    }
    let mut mapper = LoadMapper {
        flat,
        offset: 0,
        device: device.clone(),
        require_grad,
    };
    Ok(module.map(&mut mapper))
}

/// The gradients an optimizer step receives ([`GradientsParams`](burn::optim::GradientsParams),
/// keyed by parameter id), flat in layout order (zero where absent).
pub fn flatten_grads_params<M: Module>(
    module: &M,
    grads: &burn::optim::GradientsParams,
) -> Result<Vec<f64>, String> {
    flatten_from(module, Source::Params(grads))
}
