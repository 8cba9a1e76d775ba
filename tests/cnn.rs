//! The CNN (convolutions, ReLU, max-pooling) with minibatch momentum SGD: the adaptive rule
//! finds the ReLU and max-pool switches and verifies at 1e-12; a fixed rule does not.

use burn::data::dataloader::batcher::Batcher;
use burn::optim::SgdConfig;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::train::TrainStep;
use epk::recorder::models::{Cnn, CnnConfig};
use epk::recorder::{
    IndexedBatcher, IndexedItem, Loss, Recorder, Samples, WithRecorder, device::flex_f64,
};
use epk::replay::{Network, ReplayOptions, Rule, VerifyReport, replay};
use epk::store::StoreReader;

/// 4×4 images: class c has a bright pixel in quadrant c, plus a deterministic texture.
fn images(n: usize, offset: usize) -> Samples {
    let mut inputs = Vec::new();
    let mut targets = Vec::new();
    for i in 0..n {
        let c = i % 4;
        for p in 0..16 {
            let (r, col) = (p / 4, p % 4);
            let quadrant = (r / 2) * 2 + col / 2;
            let texture = (((i + offset) * 7 + p * 13) % 11) as f64 / 11.0;
            inputs.push(if quadrant == c { 1.0 } else { 0.0 } + 0.5 * texture);
        }
        targets.push(c as i64);
    }
    Samples::new(inputs, vec![4, 4], targets).unwrap()
}

#[test]
fn cnn_with_momentum_verifies_through_pool_and_relu_switches() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cnn.zarr");
    let device = flex_f64().unwrap();
    device.seed(5);
    let config = CnnConfig::new(4, [3, 4], 4);
    let train = images(24, 0);
    let sgd = SgdConfig::new()
        .with_momentum(Some(MomentumConfig::new()))
        .with_weight_decay(Some(WeightDecayConfig::new(1e-3)));
    let recorder = Recorder::builder(&path)
        .model_config::<Cnn>(&config)
        .loss(Loss::CrossEntropy)
        .sgd(&sgd)
        .train_data(train.clone())
        .eval_data(images(4, 100));
    let mut model = Cnn::new(&config, &device).with_recorder(recorder).unwrap();
    let mut optim = sgd.init();
    for s in 0..8 {
        let items = (0..8)
            .map(|j| {
                let i = (s * 8 + j * 5) % train.len();
                IndexedItem {
                    index: i,
                    input: train.input(i).to_vec(),
                    target: train.targets[i],
                }
            })
            .collect();
        let out = TrainStep::step(&model, IndexedBatcher.batch(items, &device));
        model = TrainStep::optimize(model, &mut optim, 0.5.into(), out.grads);
    }
    model.finish().unwrap();

    let reader = StoreReader::open(&path).unwrap();
    let net = Network::<Cnn>::new(reader.attrs(), &device).unwrap();
    let eval = reader.eval().unwrap();
    let run = |rule| {
        let options = ReplayOptions {
            rule,
            ..ReplayOptions::default()
        };
        replay(&reader, &net, &eval.inputs, &options, |_| {}).unwrap()
    };
    let exact = run(Rule::Auto);
    let report = VerifyReport::new(&exact, Rule::Auto, 1e-12, true, 0.0);
    assert!(report.passed, "{}", report.table());
    assert!(
        report.mean_pieces_per_step_per_point > 1.0,
        "the steps cross switches"
    );
    let fixed = run(Rule::Gauss(8));
    assert!(
        fixed.max_error() > 1e-10,
        "gauss:8 across switches: {:e}",
        fixed.max_error()
    );
}
