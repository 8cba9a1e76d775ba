use crate::RecordError;
use crate::contract;
use crate::first_step::FirstStep;
use crate::hook::{Hook, HookConfig};
use crate::non_finite::NonFinite;
use crate::optimizer::IntoOptimizerSpec;
use crate::writer::Writer;
use burn::optim::{AdamConfig, AdamWConfig, SgdConfig};
use burn::tensor::{DType, Device};
use burn::train::Interrupter;
use epk_model::{EpkModel, Switches};
use epk_model::{float_tensor, params};
use epk_store::{
    FORMAT_NAME, FORMAT_VERSION, Loss, ModelInfo, OptimizerSpec, RunAttributes, Samples,
    StoreOptions, StoreReader, StoreWriter, TrainDType, WriterLock,
};
use std::path::{Path, PathBuf};

/// How often the writer commits by default: a commit replaces the root metadata, about 0.1–0.2
/// ms of file-system work, so 10 per second cost nothing measurable while a kill loses at most
/// a tenth of a second of steps.
pub const DEFAULT_COMMIT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// What to record and where: build it with [`Recorder::builder`], then attach it to a model
/// with [`WithRecorder::with_recorder`](crate::WithRecorder::with_recorder).
#[derive(Clone)]
pub struct Recorder {
    path: PathBuf,
    model: Option<ModelInfo>,
    loss: Loss,
    optimizer: Option<OptimizerSpec>,
    train: Option<Samples>,
    eval: Option<Samples>,
    queue: usize,
    commit_interval: std::time::Duration,
    store: StoreOptions,
    max_batch: Option<usize>,
    non_finite: NonFinite,
    interrupter: Option<Interrupter>,
    /// Set by [`Recorder::resume`]: append to this store instead of creating one.
    resume: Option<RunAttributes>,
    /// Upload the store to object storage as it is written.
    #[cfg(feature = "s3")]
    upload: Option<crate::upload::Upload>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("path", &self.path)
            .field("model", &self.model)
            .field("loss", &self.loss)
            .field("resume", &self.resume.is_some())
            .finish_non_exhaustive()
    }
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
            commit_interval: DEFAULT_COMMIT_INTERVAL,
            store: StoreOptions::default(),
            max_batch: None,
            non_finite: NonFinite::Stop,
            interrupter: None,
            resume: None,
            #[cfg(feature = "s3")]
            upload: None,
        }
    }

    /// A recorder that appends to the existing store at `path`, after its last committed
    /// step. Load that step's weights into the model with [`Recorder::restore`] before
    /// attaching. Leftovers of a killed run (temporary files, uncommitted chunks) are removed
    /// when the recorder is attached.
    ///
    /// Plain SGD resumes exactly; optimizers with state (momentum, Adam) would restart theirs.
    ///
    /// A store another run is writing is refused here already, naming that run
    /// ([`epk_store::StoreError::Locked`]); the lock itself is taken when the recorder is
    /// attached.
    pub fn resume(path: impl AsRef<Path>) -> Result<Self, RecordError> {
        WriterLock::ensure_free(path.as_ref())?;
        let reader = StoreReader::open(path.as_ref())?;
        let attrs = reader.attrs().clone();
        let mut r = Recorder::builder(path);
        r.loss = attrs.loss;
        r.model = Some(attrs.model.clone());
        r.optimizer = Some(attrs.optimizer.clone());
        r.max_batch = Some(attrs.max_batch);
        r.resume = Some(attrs);
        Ok(r)
    }

    /// The model configuration stored in a store being resumed.
    pub fn stored_model_config<M: EpkModel>(&self) -> Result<M::Config, RecordError> {
        let info = self
            .model
            .as_ref()
            .ok_or_else(|| RecordError::Config("model_config is not set".into()))?;
        if info.kind != M::KIND {
            return Err(RecordError::Mismatch(format!(
                "the store holds a {:?} model, not {:?}",
                info.kind,
                M::KIND
            )));
        }
        serde_json::from_value(info.config.clone())
            .map_err(|e| RecordError::Mismatch(format!("stored model configuration: {e}")))
    }

    /// Loads the last committed weights of a resumed store into `model`.
    pub fn restore<M: EpkModel>(&self, model: M) -> Result<M, RecordError> {
        let attrs = self
            .resume
            .as_ref()
            .ok_or_else(|| RecordError::Config("restore needs Recorder::resume".into()))?;
        let reader = StoreReader::open(&self.path)?;
        let weights = reader.weights(reader.steps())?;
        check_layout(&model, attrs)?;
        let device = device_of(&model)?;
        params::load_flat(model, &weights, &device, true).map_err(RecordError::Mismatch)
    }

    /// What to do when a step holds NaN or infinity (default: stop).
    pub fn on_non_finite(mut self, policy: NonFinite) -> Self {
        self.non_finite = policy;
        self
    }

    /// burn-train's interrupter: a recording failure (full disk, NaN under
    /// [`NonFinite::Stop`]) then stops training promptly with that error.
    pub fn interrupter(mut self, interrupter: &Interrupter) -> Self {
        self.interrupter = Some(interrupter.clone());
        self
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

    /// SGD with Burn's configuration (momentum, Nesterov, weight decay, clipping); the same as
    /// [`Recorder::optimizer`] with `config`.
    pub fn sgd(self, config: &SgdConfig) -> Self {
        self.optimizer(config)
    }

    /// Adam with Burn's configuration (coupled weight decay and clipping included); the same as
    /// [`Recorder::optimizer`] with `config`.
    pub fn adam(self, config: &AdamConfig) -> Self {
        self.optimizer(config)
    }

    /// AdamW with Burn's configuration (decoupled weight decay); the same as
    /// [`Recorder::optimizer`] with `config`.
    pub fn adamw(self, config: &AdamWConfig) -> Self {
        self.optimizer(config)
    }

    /// The optimizer training uses: a reference to Burn's [`SgdConfig`], [`AdamConfig`] or
    /// [`AdamWConfig`], or any optimizer as an [`OptimizerSpec`] (name and configuration).
    /// Replay decomposes `sgd`, `adam` and `adamw` with Burn's configuration as JSON.
    pub fn optimizer(mut self, optimizer: impl IntoOptimizerSpec) -> Self {
        self.optimizer = Some(optimizer.into_optimizer_spec());
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

    /// Shortest time between two commits of the store (default 100 ms). Every step is
    /// appended to the store as soon as the writer has it; a commit then makes the steps
    /// written since the last one visible to readers. A kill loses at most the last interval's
    /// steps (and the queue's), and the store stays valid. Zero commits every step, which on
    /// a fast model costs the file system a metadata replacement per step (see the README's
    /// benchmarks).
    pub fn commit_interval(mut self, interval: std::time::Duration) -> Self {
        self.commit_interval = interval;
        self
    }

    /// Steps per shard file in the per-step arrays of a new store (1 to 1024; default: shards
    /// of about 64 MiB, at most 1024 steps). Each step is appended to the open shards, so the
    /// file system creates a file per array only every `steps` steps.
    pub fn steps_per_shard(mut self, steps: u64) -> Self {
        self.store.steps_per_shard = Some(steps);
        self
    }

    /// How a new store's float arrays are compressed: [`Compression::Auto`] (the default:
    /// blosc-LZ4 for f32 training, none for f64), `None`, `Lz4` or `Zstd`. Every choice is
    /// read by zarr-python without plug-ins; a resumed store keeps its own.
    ///
    /// [`Compression::Auto`]: epk_store::Compression::Auto
    pub fn compression(mut self, compression: epk_store::Compression) -> Self {
        self.store.compression = compression;
        self
    }

    /// Replace an existing epk store at the path (default: refuse). The old store is removed
    /// only once the recorder holds the store's lock: a store another run is writing is
    /// refused, naming that run, and a Zarr store of another kind is never removed.
    pub fn overwrite(mut self, overwrite: bool) -> Self {
        self.store.overwrite = overwrite;
        self
    }

    /// Flush every commit to disk (`fsync` of the new shard data, the metadata and their
    /// folders), so that a power loss or an operating-system crash, not only a killed
    /// process, leaves the committed steps (default: off; the cost per step is in
    /// `docs/reliability.md`).
    pub fn durable(mut self, durable: bool) -> Self {
        self.store.durable = durable;
        self
    }

    /// Accept the store's writer lock on a network or user-space file system (NFS, SMB,
    /// FUSE, …), where it may not keep out a writer on another machine (default: such a
    /// store is refused with [`epk_store::StoreError::UntrustedLock`]). Make sure no other
    /// machine writes the store first.
    pub fn allow_network_lock(mut self, allow: bool) -> Self {
        self.store.allow_network_lock = allow;
        self
    }

    /// Upload the store to S3-compatible object storage while it is written (feature `s3`):
    /// `url` is `s3://bucket/path`, and the endpoint and keys come from the AWS variables of
    /// the environment (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, …). The store is written to
    /// the local path as always; a thread of its own uploads each file that changed since
    /// its last pass and then the root metadata, which commits the steps on the remote copy,
    /// at most once per `interval`. A pass that fails is reported and retried at the next
    /// commit, and the last pass runs when the recording finishes: its error, if any, comes
    /// back from finishing the recording, with the local store complete. See
    /// [`epk_store::remote`] for what the remote copy holds at each moment.
    #[cfg(feature = "s3")]
    pub fn upload_to(mut self, url: &str, interval: std::time::Duration) -> Self {
        self.upload = Some(crate::upload::Upload {
            url: url.to_string(),
            interval,
        });
        self
    }

    /// Most samples one optimizer step can use (default: the training set's size).
    pub fn max_batch(mut self, samples: usize) -> Self {
        self.max_batch = Some(samples);
        self
    }

    /// Creates the store for `model` and writes its initial weights, or reopens the store
    /// being resumed.
    pub(crate) fn start<M: EpkModel>(mut self, model: &M) -> Result<Hook, RecordError> {
        match self.resume.take() {
            Some(attrs) => self.reopen(model, &attrs),
            None => self.create(model),
        }
    }

    /// Reopens the store being resumed, whose last committed weights `model` must hold.
    fn reopen<M: EpkModel>(self, model: &M, attrs: &RunAttributes) -> Result<Hook, RecordError> {
        check_layout(model, attrs)?;
        let (store, last) = StoreWriter::resume_with(&self.path, self.store)?;
        let weights = params::flatten(model).map_err(RecordError::Tensor)?;
        if weights != last {
            return Err(RecordError::Mismatch(
                "the model's weights are not the store's last committed weights; load them with Recorder::restore".into(),
            ));
        }
        self.hook(
            store,
            attrs.loss,
            attrs.outputs,
            attrs.max_batch,
            attrs.steps,
            // The optimizer's state before the resumed step is not the declared optimizer's
            // fresh state, so there is nothing to check the step against.
            None,
        )
    }

    /// Creates the store for `model` and writes its initial weights.
    fn create<M: EpkModel>(mut self, model: &M) -> Result<Hook, RecordError> {
        let missing = |what: &str| RecordError::Config(format!("{what} is not set"));
        let info = self.model.take().ok_or_else(|| missing("model_config"))?;
        let optimizer = self
            .optimizer
            .take()
            .ok_or_else(|| missing("the optimizer"))?;
        let train = self.train.take().ok_or_else(|| missing("train_data"))?;
        if train.is_empty() {
            return Err(RecordError::Config("the training set is empty".into()));
        }
        let layout = params::layout(model);
        let num_params = layout.iter().map(|p| p.len).sum();
        let weights = params::flatten(model).map_err(RecordError::Tensor)?;
        let (outputs, dtype) = probe(model, &train)?;
        contract::check_forward(model, &train, &device_of(model)?, dtype)?;
        let max_batch = self.max_batch.unwrap_or(train.len());
        let first_step = FirstStep::new(&optimizer, &layout, dtype)?;
        let attrs = RunAttributes {
            format: FORMAT_NAME.into(),
            version: FORMAT_VERSION,
            model: info,
            params: layout,
            num_params,
            outputs,
            input_shape: train.input_shape.clone(),
            loss: self.loss,
            optimizer,
            dtype,
            max_batch,
            train_samples: train.len(),
            eval_samples: 0,
            steps: 0,
            finished: false,
            faults: Vec::new(),
        };
        let store = StoreWriter::create_with(
            &self.path,
            attrs,
            &train,
            self.eval.as_ref(),
            &weights,
            self.store,
        )?;
        let loss = self.loss;
        let first = (first_step, train);
        self.hook(store, loss, outputs, max_batch, 0, Some(first))
    }

    /// Starts the writer thread on `store` and the hook that feeds it, `steps` steps in.
    fn hook(
        self,
        store: StoreWriter,
        loss: Loss,
        outputs: usize,
        max_batch: usize,
        steps: usize,
        first: Option<(FirstStep, Samples)>,
    ) -> Result<Hook, RecordError> {
        if let Some(holder) = store.took_over_lock() {
            eprintln!(
                "epk recorder: took over the lock of {}, left by {holder}, which has ended",
                self.path.display()
            );
        }
        let (first_step, first_batch) = first.unzip();
        let config = HookConfig {
            path: self.path,
            loss,
            outputs,
            max_batch,
            steps,
            non_finite: self.non_finite,
            interrupter: self.interrupter,
            first_step,
            first_batch,
        };
        #[cfg(feature = "s3")]
        if let Some(upload) = &self.upload {
            let store = crate::upload::Uploading::start(store, upload)?;
            let writer = Writer::spawn(store, self.queue, self.commit_interval);
            return Ok(Hook::new(config, writer));
        }
        let writer = Writer::spawn(store, self.queue, self.commit_interval);
        Ok(Hook::new(config, writer))
    }
}

/// The device holding the model's parameters.
fn device_of<M: EpkModel>(model: &M) -> Result<Device, RecordError> {
    model
        .devices()
        .into_iter()
        .next()
        .ok_or_else(|| RecordError::Config("the model has no parameters".into()))
}

/// The model's number of outputs and the float type it trains in, from a forward pass on the
/// first training sample.
fn probe<M: EpkModel>(model: &M, train: &Samples) -> Result<(usize, TrainDType), RecordError> {
    let device = device_of(model)?;
    let input = train.input(0);
    let f = model.epk_forward(
        float_tensor(input.to_vec(), [1, input.len()], &device),
        &mut Switches::off(),
    );
    let dtype = match f.dtype() {
        DType::F64 => TrainDType::F64,
        DType::F32 => TrainDType::F32,
        other => {
            return Err(RecordError::Config(format!(
                "training in {other:?} is not supported; use f32 or f64"
            )));
        }
    };
    Ok((f.dims()[1], dtype))
}

/// The model must have the store's kind and parameter layout.
fn check_layout<M: EpkModel>(model: &M, attrs: &RunAttributes) -> Result<(), RecordError> {
    if attrs.model.kind != M::KIND {
        return Err(RecordError::Mismatch(format!(
            "the store holds a {:?} model, not {:?}",
            attrs.model.kind,
            M::KIND
        )));
    }
    if params::layout(model) != attrs.params {
        return Err(RecordError::Mismatch(
            "the model's parameter layout differs from the store's".into(),
        ));
    }
    Ok(())
}
