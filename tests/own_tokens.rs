//! A text model on its own batches of integer token ids with a padding mask: sentences of
//! different lengths, padded by the user's batcher, embedded, averaged over the real tokens
//! and classified. The store keeps the ids as floats, the model's own forward takes the ids and
//! the mask, and the run verifies at 1e-12 with every padded position left out of the sums.

use burn::data::dataloader::DataLoaderBuilder;
use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::InMemDataset;
use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::optim::AdamConfig;
use burn::optim::lr_scheduler::constant::ConstantLr;
use burn::tensor::{Bool, Device, Int, Tensor, TensorData, activation};
use burn::train::logger::InMemoryMetricLogger;
use burn::train::{Learner, SupervisedTraining};
use epk::recorder::renderer::QuietRenderer;
use epk::recorder::{
    EpkModel, Explain, Indexed, KeepIndices, Loss, Numbered, Recorder, Switches, WithRecorder,
    device::flex_f64, params, stored_samples,
};
use serde::{Deserialize, Serialize};

/// Positions per sentence (shorter ones are padded with id 0).
const LEN: usize = 6;
const VOCAB: usize = 12;

#[derive(Clone, Debug, Serialize, Deserialize)]
struct TaggerConfig;

/// The user's model: mean of the real tokens' embeddings, tanh, a linear head.
#[derive(Module, Debug)]
struct Tagger {
    embedding: Embedding,
    head: Linear,
}

impl Tagger {
    /// ids `[batch, LEN]`, `padding` true where a position is padding.
    fn forward(&self, ids: Tensor<2, Int>, padding: Tensor<2, Bool>) -> Tensor<2> {
        let [batch, len] = ids.dims();
        let e = self.embedding.forward(ids); // [batch, len, 4]
        let keep = padding.bool_not().float().reshape([batch, len, 1]);
        let count = keep.clone().sum_dim(1); // [batch, 1, 1]
        let mean = (e * keep).sum_dim(1) / count;
        self.head
            .forward(activation::tanh(mean.reshape([batch, 4])))
    }
}

impl EpkModel for Tagger {
    const KIND: &'static str = "tagger";
    type Config = TaggerConfig;

    fn init(_: &TaggerConfig, device: &Device) -> Self {
        Tagger {
            embedding: EmbeddingConfig::new(VOCAB, 4).init(device),
            head: LinearConfig::new(4, 2).init(device),
        }
    }

    /// The stored ids are floats: back to ids, and the padding mask from the pad id.
    fn epk_forward(&self, x: Tensor<2>, _: &mut Switches) -> Tensor<2> {
        let ids = x.int();
        let padding = ids.clone().equal_elem(0);
        self.forward(ids, padding)
    }
}

/// The user's batch and batcher: pads each sentence to LEN and keeps a mask.
#[derive(Clone, Debug)]
struct TokenBatch {
    ids: Tensor<2, Int>,
    padding: Tensor<2, Bool>,
    labels: Tensor<1, Int>,
}

#[derive(Clone, Debug)]
struct Sentence {
    ids: Vec<i64>,
    label: i64,
}

#[derive(Clone, Debug)]
struct Padder;

impl Batcher<Sentence, TokenBatch> for Padder {
    fn batch(&self, items: Vec<Sentence>, device: &Device) -> TokenBatch {
        let n = items.len();
        let mut ids = vec![0i64; n * LEN];
        let mut pad = vec![true; n * LEN];
        for (r, s) in items.iter().enumerate() {
            for (c, &id) in s.ids.iter().enumerate() {
                ids[r * LEN + c] = id;
                pad[r * LEN + c] = false;
            }
        }
        let labels = items.iter().map(|s| s.label).collect();
        TokenBatch {
            ids: Tensor::from_data(TensorData::new(ids, [n, LEN]), device),
            padding: Tensor::from_data(TensorData::new(pad, [n, LEN]), device),
            labels: Tensor::from_data(TensorData::new(labels, [n]), device),
        }
    }
}

impl Explain<Indexed<TokenBatch>> for Tagger {
    fn inputs(&self, batch: &Indexed<TokenBatch>) -> Tensor<2> {
        batch.ids.clone().float()
    }

    fn outputs(&self, batch: &Indexed<TokenBatch>) -> Tensor<2> {
        self.forward(batch.ids.clone(), batch.padding.clone())
    }

    fn targets(&self, batch: &Indexed<TokenBatch>) -> Tensor<1, Int> {
        batch.labels.clone()
    }
}

/// Sentences of 2–6 ids from 1–11; the label is whether ids above 6 outnumber the rest.
fn sentences(n: usize, seed: u64) -> Vec<Sentence> {
    let mut state = seed;
    let mut next = move |m: u64| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) % m
    };
    (0..n)
        .map(|_| {
            let len = 2 + next(5) as usize;
            let ids: Vec<i64> = (0..len).map(|_| 1 + next(11) as i64).collect();
            let high = ids.iter().filter(|&&i| i > 6).count();
            let label = i64::from(2 * high > len);
            Sentence { ids, label }
        })
        .collect()
}

#[test]
fn token_ids_with_a_padding_mask_in_the_users_batches_verify() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.zarr");
    let device = flex_f64().unwrap();
    let model = Tagger::init(&TaggerConfig, &device);
    let n: usize = params::layout(&model).iter().map(|p| p.len).sum();
    let w: Vec<f64> = (0..n).map(|j| 0.5 * (0.7 * j as f64 + 0.4).sin()).collect();
    let model = params::load_flat(model, &w, &device, true).unwrap();
    let (train, test) = (sentences(40, 3), sentences(3, 9));
    let stored = |s: &[Sentence]| {
        let set = InMemDataset::new(s.to_vec());
        stored_samples(&model, &set, &Padder, &device, vec![LEN]).unwrap()
    };
    let train_samples = stored(&train);
    // Padding is stored as id 0, the real ids as they are.
    assert_eq!(
        train_samples.input(0)[..train[0].ids.len()],
        train[0].ids.iter().map(|&i| i as f64).collect::<Vec<_>>()
    );
    assert!(
        train_samples.input(0)[train[0].ids.len()..]
            .iter()
            .all(|&v| v == 0.0)
    );
    let adam = AdamConfig::new();
    let recorder = Recorder::builder(&path)
        .model_config::<Tagger>(&TaggerConfig)
        .loss(Loss::CrossEntropy)
        .adam(&adam)
        .train_data(train_samples)
        .eval_data(stored(&test))
        .max_batch(10);
    let model = model.with_recorder(recorder).unwrap();
    let loader = DataLoaderBuilder::new(KeepIndices(Padder))
        .batch_size(10)
        .shuffle(4)
        .build(Numbered::new(InMemDataset::new(train)));
    let valid = DataLoaderBuilder::new(KeepIndices(Padder))
        .batch_size(3)
        .build(Numbered::new(InMemDataset::new(test)));
    let artifacts = tempfile::tempdir().unwrap();
    let result = SupervisedTraining::new(artifacts.path(), loader, valid)
        .num_epochs(3)
        .with_metric_logger(InMemoryMetricLogger::new())
        .with_application_logger(None)
        .renderer(Box::new(QuietRenderer))
        .launch(Learner::new(model, adam.init(), ConstantLr::new(0.05)));
    assert!(result.error.is_none(), "{:?}", result.model.error());
    result.model.finish().unwrap();

    let reader = epk::store::StoreReader::open(&path).unwrap();
    assert_eq!(reader.steps(), 12);
    let net = epk::replay::Network::<Tagger>::new(reader.attrs(), &device).unwrap();
    let eval = reader.eval().unwrap();
    let options = epk::replay::ReplayOptions::default();
    let machine = epk::replay::replay(&reader, &net, &eval.inputs, &options, |_| {}).unwrap();
    let report =
        epk::replay::VerifyReport::new(&machine, epk::replay::Rule::Auto, 1e-12, true, 0.0);
    assert!(report.passed, "{}", report.table());
}
