//! A small transformer classifier for short texts: token and position embeddings, one
//! self-attention block with a padding mask (Burn's `MultiHeadAttention`), LayerNorm, a GELU
//! feed-forward block, and a linear head on the mean of the unpadded positions.
//!
//! Every function in it is smooth in the weights (softmax, GELU, LayerNorm, the masked mean),
//! so it declares no switching values: replay integrates each step with Gauss–Legendre alone.
//! Padded positions get attention scores of Burn's `min_float` (−10⁴), whose softmax weight is
//! exactly 0 in f32 and f64, so a pad token changes neither f nor its gradient.

use crate::model::{EpkModel, Switches};
use burn::module::Module;
use burn::nn::attention::{MhaInput, MultiHeadAttention, MultiHeadAttentionConfig};
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::{Device, Tensor, activation};
use serde::{Deserialize, Serialize};

/// The token id that pads a text to the sequence length; attention and pooling skip it.
pub const PAD: usize = 0;

/// Sizes of a [`Text`] model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TextConfig {
    /// Token ids are `0..vocab`; id [`PAD`] is padding.
    pub vocab: usize,
    /// Tokens per text (texts are padded or cut to it).
    pub seq_len: usize,
    /// Width of the embeddings and of the attention block.
    pub d_model: usize,
    /// Attention heads (dividing `d_model`).
    pub heads: usize,
    /// Width of the feed-forward block's hidden layer.
    pub d_ff: usize,
    /// Classes.
    pub classes: usize,
}

/// See [`TextConfig`]. Its inputs are token ids stored as numbers, `[batch, seq_len]`.
#[derive(Module, Debug)]
pub struct Text {
    tokens: Embedding,
    positions: Embedding,
    attention: MultiHeadAttention,
    norm1: LayerNorm,
    ff_in: Linear,
    ff_out: Linear,
    norm2: LayerNorm,
    head: Linear,
    #[module(skip)]
    seq_len: usize,
}

impl EpkModel for Text {
    const KIND: &'static str = "text";
    type Config = TextConfig;

    fn init(config: &TextConfig, device: &Device) -> Self {
        let d = config.d_model;
        Text {
            tokens: EmbeddingConfig::new(config.vocab, d).init(device),
            positions: EmbeddingConfig::new(config.seq_len, d).init(device),
            attention: MultiHeadAttentionConfig::new(d, config.heads)
                .with_dropout(0.0)
                .init(device),
            norm1: LayerNormConfig::new(d).init(device),
            ff_in: LinearConfig::new(d, config.d_ff).init(device),
            ff_out: LinearConfig::new(config.d_ff, d).init(device),
            norm2: LayerNormConfig::new(d).init(device),
            head: LinearConfig::new(d, config.classes).init(device),
            seq_len: config.seq_len,
        }
    }

    fn epk_forward(&self, ids: Tensor<2>, switches: &mut Switches) -> Tensor<2> {
        let [batch, len] = ids.dims();
        let device = ids.device();
        let pad = ids.clone().equal_elem(PAD as f64);
        // [batch, len, 1]: 1 on tokens, 0 on padding.
        let keep = pad.clone().bool_not().float().reshape([batch, len, 1]);
        let positions = Tensor::arange(0..len as i64, &device)
            .reshape([1, len])
            .expand([batch, len]);
        let x = self.tokens.forward(ids.int()) + self.positions.forward(positions);
        let attended = self
            .attention
            .forward(MhaInput::self_attn(x.clone()).mask_pad(pad))
            .context;
        let x = self.norm1.forward(x + attended);
        let ff = self
            .ff_out
            .forward(activation::gelu(self.ff_in.forward(x.clone())));
        let x = self.norm2.forward(x + ff);
        // The mean over the unpadded positions (at least one: an empty text pools to 0).
        let counts = keep.clone().sum_dim(1).clamp_min(1.0);
        let pooled = (x * keep).sum_dim(1).div(counts);
        let pooled = pooled.reshape([batch as i32, -1]);
        switches.linear(&self.head, pooled)
    }
}

impl Text {
    /// Tokens per text.
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }
}
