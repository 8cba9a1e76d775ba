use std::path::PathBuf;

use crate::mnist::MnistItem;
use crate::{
    data::{MnistBatch, MnistBatcher},
    model::{Model, ModelConfig},
};
use burn::data::dataset::InMemDataset;
use burn::{
    data::dataloader::DataLoaderBuilder,
    nn::loss::CrossEntropyLossConfig,
    optim::AdamConfig,
    prelude::*,
    train::{
        ClassificationOutput, InferenceStep, Learner, SupervisedTraining, TrainOutput, TrainStep,
        metric::{AccuracyMetric, LossMetric},
    },
};
use epk::recorder::{KeepIndices, Loss, Numbered, Recorder, WithRecorder, stored_samples};

impl Model {
    pub fn forward_classification(
        &self,
        images: Tensor<3>,
        targets: Tensor<1, Int>,
    ) -> ClassificationOutput {
        let output = self.forward(images);
        let loss = CrossEntropyLossConfig::new()
            .init(&output.device())
            .forward(output.clone(), targets.clone());

        ClassificationOutput::new(loss, output, targets)
    }
}

impl TrainStep for Model {
    type Input = MnistBatch;
    type Output = ClassificationOutput;

    fn step(&self, batch: MnistBatch) -> TrainOutput<ClassificationOutput> {
        let item = self.forward_classification(batch.images, batch.targets);

        TrainOutput::new(self, item.loss.backward(), item)
    }
}

impl InferenceStep for Model {
    type Input = MnistBatch;
    type Output = ClassificationOutput;

    fn step(&self, batch: MnistBatch) -> ClassificationOutput {
        self.forward_classification(batch.images, batch.targets)
    }
}

#[derive(Config, Debug)]
pub struct TrainingConfig {
    pub model: ModelConfig,
    pub optimizer: AdamConfig,
    #[config(default = 10)]
    pub num_epochs: usize,
    #[config(default = 64)]
    pub batch_size: usize,
    #[config(default = 4)]
    pub num_workers: usize,
    #[config(default = 42)]
    pub seed: u64,
    #[config(default = 1.0e-4)]
    pub learning_rate: f64,
}

fn create_artifact_dir(artifact_dir: &str) {
    std::fs::remove_file(PathBuf::from(artifact_dir).join("experiment.log")).ok();
    std::fs::create_dir_all(artifact_dir).ok();
}

/// Where epk records, and the data (Burn's `MnistDataset::train()`/`test()` need downloads).
pub struct Epk {
    pub store: PathBuf,
    pub overwrite: bool,
    pub train: Vec<MnistItem>,
    pub test: Vec<MnistItem>,
    /// Held-out digits stored for replay to explain.
    pub explain: usize,
}

pub fn train(
    artifact_dir: &str,
    config: TrainingConfig,
    device: impl Into<Device>,
    epk: Epk,
) -> anyhow::Result<()> {
    create_artifact_dir(artifact_dir);
    config
        .save(format!("{artifact_dir}/config.json"))
        .expect("Config should be saved successfully");

    let device = device.into();
    device.seed(config.seed);
    let autodiff_device = device.autodiff();

    let batcher = KeepIndices(MnistBatcher::default());

    let dataloader_train = DataLoaderBuilder::new(batcher.clone())
        .batch_size(config.batch_size)
        .shuffle(config.seed)
        .num_workers(config.num_workers)
        .build(Numbered::new(InMemDataset::new(epk.train.clone())));

    let dataloader_test = DataLoaderBuilder::new(batcher)
        .batch_size(config.batch_size)
        .shuffle(config.seed)
        .num_workers(config.num_workers)
        .build(Numbered::new(InMemDataset::new(epk.test.clone())));

    let training = SupervisedTraining::new(artifact_dir, dataloader_train, dataloader_test)
        .metrics((AccuracyMetric::new(), LossMetric::new()))
        .with_default_checkpointers()
        .num_epochs(config.num_epochs)
        .summary();

    let model = config.model.init(&autodiff_device);
    let explain = &epk.test[..epk.explain.min(epk.test.len())];
    let samples = |items: &[MnistItem]| {
        let items = InMemDataset::new(items.to_vec());
        stored_samples(
            &model,
            &items,
            &MnistBatcher::default(),
            &autodiff_device,
            vec![28, 28],
        )
    };
    let recorder = Recorder::builder(&epk.store)
        .overwrite(epk.overwrite)
        .model_config::<Model>(&config.model)
        .loss(Loss::Model)
        .adam(&config.optimizer)
        .train_data(samples(&epk.train)?)
        .eval_data(samples(explain)?)
        .max_batch(config.batch_size);
    let model = model.with_recorder(recorder)?;
    let result = training.launch(Learner::new(
        model,
        config.optimizer.init(),
        config.learning_rate,
    ));

    let steps = result.model.steps();
    let model = result.model.finish()?;
    println!("recorded {steps} Adam steps to {}", epk.store.display());
    model
        .into_record()
        .save(format!("{artifact_dir}/model"))
        .expect("Trained model should be saved successfully");
    Ok(())
}
