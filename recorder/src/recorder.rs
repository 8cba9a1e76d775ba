use crate::hook::Hook;
use crate::model::{EpkModel, Switches};
use crate::writer::Writer;
use crate::{RecordError, batch::float_tensor, params};
use burn::optim::SgdConfig;
use burn::tensor::DType;
use epk_store::{
    FORMAT_NAME, FORMAT_VERSION, Loss, ModelInfo, OptimizerSpec, RunAttributes, Samples,
    StoreWriter, TrainDType,
};
use std::path::{Path, PathBuf};

/// What to record and where: build it with [`Recorder::builder`], then attach it to a model
/// with [`WithRecorder::with_recorder`](crate::WithRecorder::with_recorder).
#[derive(Clone, Debug)]
pub struct Recorder {
    path: PathBuf,
    model: Option<ModelInfo>,
    loss: Loss,
    optimizer: Option<OptimizerSpec>,
    train: Option<Samples>,
    eval: Option<Samples>,
    queue: usize,
    max_batch: Option<usize>,
}

impl Recorder {
    /// A recorder that will create a new store at `path`.
    pub fn builder(path: impl AsRef<Path>) -> Self {
        Recorder {
            path: path.as_ref().to_path_buf(),
            model: None,
            loss: Loss::CrossEntropy,
            optimizer: None,
            train: None,
            eval: None,
            queue: 8,
            max_batch: None,
        }
    }

    /// The configuration that rebuilds the model on replay.
    pub fn model_config<M: EpkModel>(mut self, config: &M::Config) -> Self {
        self.model = Some(ModelInfo {
            kind: M::KIND.to_string(),
            config: serde_json::to_value(config).unwrap_or(serde_json::Value::Null),
        });
        self
    }

    /// The training loss (default: cross-entropy on logits).
    pub fn loss(mut self, loss: Loss) -> Self {
        self.loss = loss;
        self
    }

    /// Plain or momentum SGD with Burn's configuration.
    pub fn sgd(self, config: &SgdConfig) -> Self {
        let config = serde_json::to_value(config).unwrap_or(serde_json::Value::Null);
        self.optimizer(OptimizerSpec {
            name: "sgd".into(),
            config,
        })
    }

    /// Any optimizer, by name and configuration.
    pub fn optimizer(mut self, spec: OptimizerSpec) -> Self {
        self.optimizer = Some(spec);
        self
    }

    /// The training set; batches name samples by their index in it.
    pub fn train_data(mut self, samples: Samples) -> Self {
        self.train = Some(samples);
        self
    }

    /// A held-out set stored beside the run for replay to explain.
    pub fn eval_data(mut self, samples: Samples) -> Self {
        self.eval = Some(samples);
        self
    }

    /// Steps the writer may hold before training waits for the disk (default 8).
    pub fn queue(mut self, steps: usize) -> Self {
        self.queue = steps.max(1);
        self
    }

    /// Most samples one optimizer step can use (default: the training set's size).
    pub fn max_batch(mut self, samples: usize) -> Self {
        self.max_batch = Some(samples);
        self
    }

    /// Creates the store for `model` and writes its initial weights.
    pub(crate) fn start<M: EpkModel>(self, model: &M) -> Result<Hook, RecordError> {
        let missing = |what: &str| RecordError::Config(format!("{what} is not set"));
        let info = self.model.ok_or_else(|| missing("model_config"))?;
        let optimizer = self.optimizer.ok_or_else(|| missing("the optimizer"))?;
        let train = self.train.ok_or_else(|| missing("train_data"))?;
        if train.is_empty() {
            return Err(RecordError::Config("the training set is empty".into()));
        }
        let layout = params::layout(model);
        let num_params = layout.iter().map(|p| p.len).sum();
        let weights = params::flatten(model).map_err(RecordError::Tensor)?;
        let device = model
            .devices()
            .into_iter()
            .next()
            .ok_or_else(|| RecordError::Config("the model has no parameters".into()))?;
        let probe = float_tensor(train.input(0).to_vec(), [1, train.input(0).len()], &device);
        let f = model.epk_forward(probe, &mut Switches::off());
        let dtype = match f.dtype() {
            DType::F64 => TrainDType::F64,
            DType::F32 => TrainDType::F32,
            other => {
                return Err(RecordError::Config(format!(
                    "training in {other:?} is not supported; use f32 or f64"
                )));
            }
        };
        let attrs = RunAttributes {
            format: FORMAT_NAME.into(),
            version: FORMAT_VERSION,
            model: info,
            params: layout,
            num_params,
            outputs: f.dims()[1],
            input_shape: train.input_shape.clone(),
            loss: self.loss,
            optimizer,
            dtype,
            max_batch: self.max_batch.unwrap_or(train.len()),
            train_samples: train.len(),
            eval_samples: 0,
            steps: 0,
            finished: false,
        };
        let outputs = attrs.outputs;
        let max_batch = attrs.max_batch;
        let mut store = StoreWriter::create(&self.path, attrs, &train, self.eval.as_ref())?;
        store.write_initial_weights(&weights)?;
        let writer = Writer::spawn(store, self.queue);
        Ok(Hook::new(
            self.path, self.loss, outputs, max_batch, weights, writer,
        ))
    }
}
