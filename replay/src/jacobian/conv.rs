//! Convolutions on the fast path: a convolution is one linear map applied to the input patch
//! of every output position (im2col), so a sample's kernel gradient is Aᵀ·D — its unfolded
//! input `A` `[L, in/groups·kh·kw]` against its output gradients `D` `[L, out/groups]` over the
//! L positions — and a layer of [`Layers`](super::Layers) with L rows per sample. Each channel
//! group is a layer of its own (the weight `[out, in/groups, kh, kw]` holds the groups one
//! after another).

use super::linear::{Factors, Layer, Layers};
use super::merge::LayerRows;
use epk_model::{ConvGeometry, LinearMap};
use ndarray::{Array2, ArrayView2, Axis, s};

/// One layer per channel group of a convolution whose weight sits at `weight` and bias at
/// `bias` in the flat parameter vector; `None` for a geometry the patches cannot reproduce.
pub(super) fn layers(g: &ConvGeometry, weight: usize, bias: Option<usize>) -> Option<Vec<Layer>> {
    let [ci, co] = g.channels;
    if g.groups == 0 || ci % g.groups != 0 || co % g.groups != 0 || !reaches_input(g) {
        return None;
    }
    let (patch, out) = (g.patch(), co / g.groups);
    Some(
        (0..g.groups)
            .map(|group| Layer {
                weight: weight + group * out * patch,
                bias: bias.map(|b| b + group * out),
                inputs: patch,
                outputs: out,
                positions: g.positions(),
                transposed: true,
            })
            .collect(),
    )
}

/// Whether the geometry describes a convolution at all. The patches follow the padding
/// before the first row and column that the probe resolved as Burn does; that they are the
/// ones the layer convolved is what `tests/layer_kinds.rs` checks against the dense path for
/// every padding kind, stride, dilation and grouping.
fn reaches_input(g: &ConvGeometry) -> bool {
    (0..2).all(|d| g.output[d] > 0 && g.stride[d] > 0 && g.dilation[d] > 0 && g.kernel[d] > 0)
}

/// The unfolded inputs of `n` samples (each `[channels, h, w]`, flat): `[n·L, in·kh·kw]`,
/// row `r·L + p` = sample r's patch at output position p (row-major over the output), column
/// `c·kh·kw + i·kw + j` = channel c at kernel offset (i, j), zero where the window covers
/// padding. Group g's patch is columns g·(in/groups)·kh·kw.. of it.
pub(crate) fn patches(g: &ConvGeometry, input: &[f64], n: usize) -> Array2<f64> {
    let ([ci, _], [h, w], [oh, ow], [kh, kw]) = (g.channels, g.input, g.output, g.kernel);
    let width = ci * kh * kw;
    let mut out = Array2::<f64>::zeros((n * oh * ow, width));
    for (r, image) in input.chunks(ci * h * w).take(n).enumerate() {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut row = out.row_mut((r * oh + oy) * ow + ox);
                for i in 0..kh {
                    let Some(y) = (oy * g.stride[0] + i * g.dilation[0]).checked_sub(g.padding[0])
                    else {
                        continue;
                    };
                    if y >= h {
                        continue;
                    }
                    for j in 0..kw {
                        let Some(x) =
                            (ox * g.stride[1] + j * g.dilation[1]).checked_sub(g.padding[1])
                        else {
                            continue;
                        };
                        if x >= w {
                            continue;
                        }
                        for c in 0..ci {
                            row[(c * kh + i) * kw + j] = image[(c * h + y) * w + x];
                        }
                    }
                }
            }
        }
    }
    out
}

/// A probe's factors per layer: the inputs `input` (flat, `n` samples) and the leaf's
/// gradient `d` `[n·L, out]` as (a, d) for each of the probe's layers (one per channel group).
pub(crate) fn probe_factors(
    map: &LinearMap,
    input: Vec<f64>,
    d: Vec<f64>,
    n: usize,
) -> Vec<(Array2<f64>, Array2<f64>)> {
    match map {
        LinearMap::Dense => {
            let (i, o) = (input.len() / n.max(1), d.len() / n.max(1));
            vec![(
                Array2::from_shape_vec((n, i), input).expect("[n, in]"),
                Array2::from_shape_vec((n, o), d).expect("[n, out]"),
            )]
        }
        LinearMap::Conv(g) => {
            let a = patches(g, &input, n);
            let d =
                Array2::from_shape_vec((n * g.positions(), g.channels[1]), d).expect("[n·L, out]");
            let (patch, out) = (g.patch(), g.channels[1] / g.groups);
            (0..g.groups)
                .map(|group| {
                    (
                        a.slice(s![.., group * patch..(group + 1) * patch])
                            .to_owned(),
                        d.slice(s![.., group * out..(group + 1) * out]).to_owned(),
                    )
                })
                .collect()
        }
    }
}

/// Kernel values between layer `l`'s Jbar rows and the samples' gradients, each sample's
/// gradient Aᵀ D `[in, out]` (and Σ_p d_p for a bias) formed once: for a layer with many
/// positions this costs n·L·in·out + rows·n·in·out instead of rows·n·L·(in + out).
pub(super) fn gram_dense(
    layer: &Layer,
    l: usize,
    rows: &LayerRows,
    samples: &Factors,
) -> Array2<f64> {
    let (n, inputs, outputs) = (samples.rows(), layer.inputs, layer.outputs);
    let bias = usize::from(layer.bias.is_some());
    let width = (inputs + bias) * outputs;
    let mut grads = Array2::<f64>::zeros((n, width));
    for (r, mut g) in grads.rows_mut().into_iter().enumerate() {
        let (a, d) = samples.sample(l, r, layer.positions);
        let w = a.t().dot(&d);
        let flat = g.as_slice_mut().expect("contiguous");
        flat[..inputs * outputs].copy_from_slice(w.as_slice().expect("contiguous"));
        if bias == 1 {
            for (b, v) in flat[inputs * outputs..]
                .iter_mut()
                .zip(d.sum_axis(ndarray::Axis(0)))
            {
                *b = v;
            }
        }
    }
    // Each row a ⊗ d as [in (+ 1), out], flat: the bias coefficient is a's last entry.
    let mut jbar = Array2::<f64>::zeros((rows.owner.len(), width));
    for ((a, d), mut out) in rows
        .a
        .rows()
        .into_iter()
        .zip(rows.d.rows())
        .zip(jbar.rows_mut())
    {
        let flat = out.as_slice_mut().expect("contiguous");
        for (i, &ai) in a.iter().enumerate() {
            for (o, &dv) in d.iter().enumerate() {
                flat[i * outputs + o] = ai * dv;
            }
        }
    }
    jbar.dot(&grads.t())
}

impl Layers {
    /// Sums each convolution's L positions into every sample's block (see [`sample_blocks`])
    /// and drops that layer's factors: a Jacobian evaluation then holds `[in (+ 1), out]` per
    /// convolution and output instead of L positions' `in + out`, and the block is formed once
    /// for its dense sum, its J·Δw and its share of Jbar.
    pub fn block_convolutions(&self, f: &mut Factors) {
        f.blocks.resize(self.layers.len(), None);
        for (l, layer) in self.layers.iter().enumerate() {
            if layer.positions == 1 || f.a[l].nrows() == 0 {
                continue;
            }
            f.blocks[l] = Some(sample_blocks(
                layer,
                f.a[l].view(),
                f.d[l].view(),
                f.samples,
            ));
            f.a[l] = Array2::zeros((0, layer.inputs));
            f.d[l] = Array2::zeros((0, layer.outputs));
        }
    }
}

impl Layers {
    /// Samples `start..start + count` of `f` as factors of their own, each convolution's
    /// positions summed into blocks as [`Layers::block_convolutions`] does, read in place:
    /// only the blocks and the linear layers' rows are copied, not the convolutions' L rows
    /// per sample.
    pub fn select_blocked(&self, f: &Factors, start: usize, count: usize) -> Factors {
        let mut out = Factors {
            a: Vec::with_capacity(self.layers.len()),
            d: Vec::with_capacity(self.layers.len()),
            samples: count,
            blocks: vec![None; self.layers.len()],
        };
        for (l, layer) in self.layers.iter().enumerate() {
            let per = f.a[l].nrows() / f.samples.max(1);
            let rows = s![start * per..(start + count) * per, ..];
            if let Some(b) = f.blocks.get(l).and_then(Option::as_ref) {
                out.blocks[l] = Some(b[start..start + count].to_vec());
            } else if layer.positions > 1 && per > 0 && count > 0 {
                let (a, d) = (f.a[l].slice(rows), f.d[l].slice(rows));
                out.blocks[l] = Some(sample_blocks(layer, a, d, count));
                out.a.push(Array2::zeros((0, layer.inputs)));
                out.d.push(Array2::zeros((0, layer.outputs)));
                continue;
            }
            out.a.push(f.a[l].slice(rows).to_owned());
            out.d.push(f.d[l].slice(rows).to_owned());
        }
        out
    }
}

/// Each of `n` samples' gradient block Aᵀ·D `[in (+ 1), out]` from a convolution's factors (L
/// rows per sample), its last row Σ_p d_p when the layer has a bias. The samples of one
/// Jacobian evaluation are copies of one input at one t, one per output, so their A are the
/// same: one product Aᵀ·[D_0 … D_{n−1}] then serves them all instead of n thin ones.
fn sample_blocks(
    layer: &Layer,
    a: ArrayView2<'_, f64>,
    d: ArrayView2<'_, f64>,
    n: usize,
) -> Vec<Array2<f64>> {
    let (l, n_out) = (layer.positions, layer.outputs);
    let rows = |r: usize| s![r * l..(r + 1) * l, ..];
    let first = a.slice(rows(0));
    let gradients: Vec<Array2<f64>> = if (1..n).all(|r| a.slice(rows(r)) == first) {
        // D as [L, n·out]: position-major, the samples side by side.
        let stacked = d
            .into_shape_with_order((n, l, n_out))
            .expect("n samples of L rows")
            .permuted_axes([1, 0, 2])
            .as_standard_layout()
            .into_owned()
            .into_shape_with_order((l, n * n_out))
            .expect("standard layout");
        let g = first.t().dot(&stacked);
        (0..n)
            .map(|r| g.slice(s![.., r * n_out..(r + 1) * n_out]).to_owned())
            .collect()
    } else {
        (0..n)
            .map(|r| a.slice(rows(r)).t().dot(&d.slice(rows(r))))
            .collect()
    };
    gradients
        .into_iter()
        .enumerate()
        .map(|(r, g)| match layer.bias {
            None => g,
            Some(_) => {
                let db = d.slice(rows(r)).sum_axis(Axis(0)).insert_axis(Axis(0));
                ndarray::concatenate(Axis(0), &[g.view(), db.view()]).expect("out columns")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{Layer, layers, probe_factors};
    use burn::nn::conv::{Conv1dConfig, Conv2dConfig};
    use burn::nn::{PaddingConfig1d, PaddingConfig2d};
    use burn::tensor::Tensor;
    use epk_model::device::flex_f64;
    use epk_model::{LinearMap, Switches, float_tensor, params};
    use ndarray::Array2;

    fn values(n: usize, seed: usize) -> Vec<f64> {
        (0..n)
            .map(|i| (((i * 37 + seed * 11) % 23) as f64 - 11.0) / 7.0)
            .collect()
    }

    /// The layer's output rebuilt from the probe's patches and the flat weights, against
    /// Burn's own convolution: `[n·L, out]` per group side by side.
    fn rebuilt(
        map: &LinearMap,
        input: Vec<f64>,
        weights: &[f64],
        bias: bool,
        n: usize,
    ) -> Array2<f64> {
        let LinearMap::Conv(g) = map else {
            panic!("a convolution")
        };
        let layers = layers(g, 0, bias.then_some(g.channels[1] * g.patch())).unwrap();
        let zero = vec![0.0; n * g.positions() * g.channels[1]];
        let parts: Vec<Array2<f64>> = probe_factors(map, input, zero, n)
            .into_iter()
            .zip(&layers)
            .map(|((a, _), l)| {
                let mut z = Array2::<f64>::zeros((a.nrows(), l.outputs));
                for ((r, o), v) in z.indexed_iter_mut() {
                    *v = (0..l.inputs)
                        .map(|i| a[[r, i]] * weights[l.at(i, o)])
                        .sum::<f64>()
                        + l.bias.map_or(0.0, |b| weights[b + o]);
                }
                z
            })
            .collect();
        let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
        ndarray::concatenate(ndarray::Axis(1), &views).unwrap()
    }

    /// Burn's output `[n, out, positions]` as `[n·L, out]`.
    fn burn_rows<const D: usize>(z: Tensor<D>, n: usize, out: usize) -> Array2<f64> {
        let positions = z.dims()[2..].iter().product::<usize>();
        let v: Vec<f64> = z.try_into_vec_as::<f64>().unwrap();
        Array2::from_shape_fn((n * positions, out), |(r, o)| {
            v[((r / positions) * out + o) * positions + r % positions]
        })
    }

    fn gap(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
        assert_eq!(a.dim(), b.dim());
        (a - b).iter().fold(0.0f64, |m, v| m.max(v.abs()))
    }

    /// Patches times the weights are Burn's convolution, for every padding kind (Same with an
    /// even kernel and a stride, which pads one more after than before; asymmetric explicit
    /// padding; none), strides, dilations and groups.
    #[test]
    fn patches_reproduce_burns_convolutions() {
        let device = flex_f64().unwrap();
        let n = 2;
        let configs2d = [
            Conv2dConfig::new([2, 4], [4, 2])
                .with_stride([2, 3])
                .with_padding(PaddingConfig2d::Same),
            Conv2dConfig::new([3, 6], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(2, 0, 1, 3))
                .with_dilation([2, 1])
                .with_groups(3),
            Conv2dConfig::new([2, 2], [2, 3]).with_bias(false),
        ];
        for config in configs2d {
            let layer = config.init(&device);
            let [ci, _] = config.channels;
            let x = float_tensor(values(n * ci * 7 * 9, 1), [n, ci, 7, 9], &device);
            let mut sw = Switches::probing();
            let z = sw.conv2d(&layer, x.clone());
            let probe = sw.into_probes().pop().unwrap();
            let w = params::flatten(&layer).unwrap();
            let input: Vec<f64> = probe.input.try_into_vec_as::<f64>().unwrap();
            let ours = rebuilt(&probe.map, input, &w, config.bias, n);
            let theirs = burn_rows(layer.forward(x), n, config.channels[1]);
            assert!(gap(&ours, &theirs) < 1e-13, "{config:?}");
            assert!(gap(&burn_rows(z, n, config.channels[1]), &theirs) == 0.0);
        }
        let configs1d = [
            Conv1dConfig::new(2, 4, 4)
                .with_stride(3)
                .with_padding(PaddingConfig1d::Same),
            Conv1dConfig::new(4, 2, 3)
                .with_padding(PaddingConfig1d::Explicit(0, 2))
                .with_dilation(3)
                .with_groups(2),
        ];
        for config in configs1d {
            let layer = config.init(&device);
            let ci = config.channels_in;
            let x = float_tensor(values(n * ci * 13, 2), [n, ci, 13], &device);
            let mut sw = Switches::probing();
            let _ = sw.conv1d(&layer, x.clone());
            let probe = sw.into_probes().pop().unwrap();
            let w = params::flatten(&layer).unwrap();
            let input: Vec<f64> = probe.input.try_into_vec_as::<f64>().unwrap();
            let ours = rebuilt(&probe.map, input, &w, config.bias, n);
            let theirs = burn_rows(layer.forward(x), n, config.channels_out);
            assert!(gap(&ours, &theirs) < 1e-13, "{config:?}");
        }
    }

    /// Each sample's block is Σ_p a_p ⊗ d_p over its positions (and Σ_p d_p for the bias),
    /// summed term by term here, whether the samples share their A (copies of one input, one
    /// product) or not.
    #[test]
    fn sample_blocks_sum_the_positions() {
        let (l, n_in, n_out, n) = (7, 5, 3, 4);
        let value = |i: usize, salt: f64| ((i as f64 + salt) * 0.7123).sin();
        for (shared, bias) in [(true, true), (true, false), (false, true)] {
            let layer = Layer {
                weight: 0,
                bias: bias.then_some(n_in * n_out),
                inputs: n_in,
                outputs: n_out,
                positions: l,
                transposed: true,
            };
            let a = Array2::from_shape_fn((n * l, n_in), |(r, i)| {
                let row = if shared { r % l } else { r };
                value(row * n_in + i, 0.3)
            });
            let d = Array2::from_shape_fn((n * l, n_out), |(r, o)| value(r * n_out + o, 1.9));
            let blocks = super::sample_blocks(&layer, a.view(), d.view(), n);
            for (r, block) in blocks.iter().enumerate() {
                assert_eq!(block.dim(), (n_in + usize::from(bias), n_out));
                for ((i, o), got) in block.indexed_iter() {
                    let want: f64 = (r * l..(r + 1) * l)
                        .map(|p| if i < n_in { a[[p, i]] } else { 1.0 } * d[[p, o]])
                        .sum();
                    assert!((got - want).abs() < 1e-14, "{shared} {bias} {r} {i} {o}");
                }
            }
        }
    }
}
