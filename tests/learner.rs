//! The recorder under burn-train's Learner: shuffled minibatches, gradient accumulation with
//! a partial window, several epochs. One record per optimizer step, and the run verifies.

mod common;

use burn::data::dataloader::DataLoaderBuilder;
use burn::optim::SgdConfig;
use burn::optim::lr_scheduler::constant::ConstantLr;
use burn::train::logger::InMemoryMetricLogger;
use burn::train::{Learner, SupervisedTraining};
use common::Run;
use epk::recorder::models::Mlp;
use epk::recorder::renderer::QuietRenderer;
use epk::recorder::{
    IndexedBatcher, IndexedDataset, Recorder, WithRecorder, device::flex_f64, params,
};
use epk::replay::{Network, ReplayOptions, VerifyReport, replay};
use epk::store::StoreReader;

#[test]
fn learner_records_one_entry_per_optimizer_step() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("learner.zarr");
    let run = Run::toy(6, 8, 10, 0); // 30 training samples
    let device = flex_f64().unwrap();
    device.seed(3);
    let model = Mlp::new(&run.config, &device);
    let sgd = SgdConfig::new();
    let recorder = Recorder::builder(&path)
        .model_config::<Mlp>(&run.config)
        .loss(run.loss)
        .sgd(&sgd)
        .train_data(run.train.clone())
        .eval_data(run.eval.clone());
    let model = model.with_recorder(recorder).unwrap();
    let train = DataLoaderBuilder::new(IndexedBatcher)
        .batch_size(10)
        .shuffle(5)
        .build(IndexedDataset::new(run.train.clone()));
    let valid = DataLoaderBuilder::new(IndexedBatcher)
        .batch_size(12)
        .build(IndexedDataset::new(run.eval.clone()));
    let artifacts = tempfile::tempdir().unwrap();
    let result = SupervisedTraining::new(artifacts.path(), train, valid)
        .num_epochs(2)
        .grads_accumulation(2)
        .with_metric_logger(InMemoryMetricLogger::new())
        .with_application_logger(None)
        .renderer(Box::new(QuietRenderer))
        .launch(Learner::new(model, sgd.init(), ConstantLr::new(0.3)));
    assert!(result.error.is_none());
    let trained = result.model;
    let final_weights = params::flatten(&trained.model).unwrap();
    trained.finish().unwrap();

    let reader = StoreReader::open(&path).unwrap();
    // Three batches an epoch with accumulation 2: windows of 2 and 1 batches.
    assert_eq!(reader.steps(), 4);
    let sizes: Vec<usize> = (0..4)
        .map(|s| reader.batch(s).unwrap().indices.len())
        .collect();
    assert_eq!(sizes, vec![20, 10, 20, 10]);
    for epoch in 0..2 {
        let mut seen: Vec<usize> = (2 * epoch..2 * epoch + 2)
            .flat_map(|s| reader.batch(s).unwrap().indices)
            .collect();
        seen.sort();
        assert_eq!(
            seen,
            (0..30).collect::<Vec<_>>(),
            "epoch {epoch} covers the data once"
        );
    }
    assert_eq!(reader.lr(0).unwrap(), 0.3);
    assert_eq!(reader.weights(4).unwrap(), final_weights);
    assert!(reader.attrs().finished);

    let net = Network::<Mlp>::new(reader.attrs(), &device).unwrap();
    let eval = reader.eval().unwrap();
    let machine = replay(
        &reader,
        &net,
        &eval.inputs,
        &ReplayOptions::default(),
        |_| {},
    )
    .unwrap();
    let report = VerifyReport::new(&machine, epk::replay::Rule::Auto, 1e-12, true, 0.0);
    assert!(report.passed, "{}", report.table());
}

/// AdamW under the Learner with a cosine schedule, norm clipping and accumulation 2 over three
/// batches an epoch (a partial window each epoch): the recorded learning rates are the
/// schedule's, and the run verifies with the decomposition checked.
#[test]
fn learner_with_adamw_schedule_clipping_and_accumulation_verifies() {
    use burn::grad_clipping::GradientClippingConfig;
    use burn::optim::AdamWConfig;
    use burn::optim::lr_scheduler::cosine::CosineAnnealingLrSchedulerConfig;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("adamw.zarr");
    let run = Run::toy(6, 8, 10, 0);
    let device = flex_f64().unwrap();
    device.seed(4);
    let model = Mlp::new(&run.config, &device);
    let adamw = AdamWConfig::new()
        .with_weight_decay(0.05)
        .with_grad_clipping(Some(GradientClippingConfig::Norm(0.02)));
    let recorder = Recorder::builder(&path)
        .model_config::<Mlp>(&run.config)
        .loss(run.loss)
        .adamw(&adamw)
        .train_data(run.train.clone())
        .eval_data(run.eval.clone());
    let model = model.with_recorder(recorder).unwrap();
    let train = DataLoaderBuilder::new(IndexedBatcher)
        .batch_size(10)
        .shuffle(9)
        .build(IndexedDataset::new(run.train.clone()));
    let valid = DataLoaderBuilder::new(IndexedBatcher)
        .batch_size(12)
        .build(IndexedDataset::new(run.eval.clone()));
    let schedule = CosineAnnealingLrSchedulerConfig::new(0.05, 6).with_min_lr(0.005);
    let artifacts = tempfile::tempdir().unwrap();
    let result = SupervisedTraining::new(artifacts.path(), train, valid)
        .num_epochs(3)
        .grads_accumulation(2)
        .with_metric_logger(InMemoryMetricLogger::new())
        .with_application_logger(None)
        .renderer(Box::new(QuietRenderer))
        .launch(Learner::new(model, adamw.init(), schedule.init().unwrap()));
    assert!(result.error.is_none());
    result.model.finish().unwrap();

    let reader = StoreReader::open(&path).unwrap();
    assert_eq!(reader.steps(), 6);
    let sizes: Vec<usize> = (0..6)
        .map(|s| reader.batch(s).unwrap().indices.len())
        .collect();
    assert_eq!(sizes, vec![20, 10, 20, 10, 20, 10]);
    let mut expected = schedule.init().unwrap();
    let lrs: Vec<f64> = (0..6).map(|s| reader.lr(s).unwrap()).collect();
    let want: Vec<f64> = (0..6).map(|_| expected.step().base()).collect();
    assert_eq!(lrs, want);
    assert!(lrs[0] > lrs[3], "the schedule decays: {lrs:?}");

    let net = Network::<Mlp>::new(reader.attrs(), &device).unwrap();
    let eval = reader.eval().unwrap();
    let options = ReplayOptions::default();
    let machine = replay(&reader, &net, &eval.inputs, &options, |_| {}).unwrap();
    let report = VerifyReport::new(&machine, epk::replay::Rule::Auto, 1e-12, true, 0.0);
    assert!(report.passed, "{}", report.table());
    assert!(report.max_nondata_term > 0.0, "decoupled decay shows up");
}
