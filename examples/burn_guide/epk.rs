//! What epk needs of the guide's model, beside its own code: one trait impl for the store
//! (`EpkModel`: the model's name, its config, and its forward on flat stored images) and one
//! for the guide's batches (`Explain`: the batch flat, its labels, the guide's own forward and
//! loss).

use crate::data::MnistBatch;
use crate::model::{Model, ModelConfig};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::prelude::*;
use epk::recorder::{EpkModel, Explain, Indexed, Switches};

impl EpkModel for Model {
    const KIND: &'static str = "burn-guide";
    type Config = ModelConfig;

    fn init(config: &ModelConfig, device: &Device) -> Self {
        config.init(device)
    }

    fn epk_forward(&self, images: Tensor<2>, _: &mut Switches) -> Tensor<2> {
        let [batch, _] = images.dims();
        self.forward(images.reshape([batch, 28, 28]))
    }
}

impl Explain<Indexed<MnistBatch>> for Model {
    fn inputs(&self, batch: &Indexed<MnistBatch>) -> Tensor<2> {
        let [n, h, w] = batch.images.dims();
        batch.images.clone().reshape([n, h * w])
    }

    fn outputs(&self, batch: &Indexed<MnistBatch>) -> Tensor<2> {
        self.forward(batch.images.clone())
    }

    fn targets(&self, batch: &Indexed<MnistBatch>) -> Tensor<1, Int> {
        batch.targets.clone()
    }

    /// The loss of the guide's `forward_classification`.
    fn loss(&self, f: Tensor<2>, batch: &Indexed<MnistBatch>) -> Option<Tensor<1>> {
        let loss = CrossEntropyLossConfig::new()
            .init(&f.device())
            .forward(f, batch.targets.clone());
        Some(loss)
    }
}
