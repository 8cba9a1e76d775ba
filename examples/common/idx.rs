//! MNIST's idx format (gzip-compressed): a big-endian header, then one byte per pixel or label.
//! Fashion-MNIST ships in it (`data/fashion-mnist/`).

use anyhow::{Context, Result, bail, ensure};
use std::io::Read;
use std::path::Path;

/// The images of `images` and labels of `labels` (idx3 and idx1, gzip), pixels scaled to
/// [0, 1], in file order.
pub fn load(images: &Path, labels: &Path) -> Result<Vec<(Vec<f64>, i64)>> {
    let (dims, pixels) = read(images, 3)?;
    let (label_dims, labels_raw) = read(labels, 1)?;
    let n = dims[0];
    ensure!(
        label_dims[0] == n,
        "{} holds {n} images but {} holds {} labels",
        images.display(),
        labels.display(),
        label_dims[0]
    );
    let size = dims[1] * dims[2];
    Ok(pixels
        .chunks(size)
        .zip(labels_raw)
        .map(|(p, y)| (p.iter().map(|&v| v as f64 / 255.0).collect(), y as i64))
        .collect())
}

/// An idx file of `rank` dimensions of unsigned bytes: its dimensions and data.
fn read(path: &Path, rank: usize) -> Result<(Vec<usize>, Vec<u8>)> {
    let file = std::fs::File::open(path).with_context(|| {
        format!(
            "reading {} (bash scripts/fetch-fashion-mnist.sh fetches it)",
            path.display()
        )
    })?;
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(file)
        .read_to_end(&mut bytes)
        .with_context(|| format!("{}: not gzip", path.display()))?;
    let header = 4 + 4 * rank;
    // Magic: two zero bytes, 0x08 (unsigned byte), then the rank.
    if bytes.len() < header || bytes[..4] != [0, 0, 8, rank as u8] {
        bail!("{}: not an idx file of rank {rank}", path.display());
    }
    let dims: Vec<usize> = (0..rank)
        .map(|d| {
            let b = &bytes[4 + 4 * d..8 + 4 * d];
            u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize
        })
        .collect();
    let len: usize = dims.iter().product();
    ensure!(
        bytes.len() == header + len,
        "{}: {} bytes of data where the header says {len}",
        path.display(),
        bytes.len() - header
    );
    bytes.drain(..header);
    Ok((dims, bytes))
}
