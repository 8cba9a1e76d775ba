//! The exact path kernel between arbitrary inputs (Bell et al., Theorem 3.7):
//! K(x, z) = Σ_s η_s Σ_k ⟨Jbar_s(x)_k, ∇_w f_k(z; w_s)⟩.

use crate::machine::contraction::dense_jbar;
use crate::machine::walk::{self, Direction, Integrator};
use crate::{Network, ReplayError, ReplayOptions};
use epk_model::EpkModel;
use epk_store::StoreReader;
use ndarray::{Array2, ArrayView2};

/// The exact path kernel between arbitrary inputs, traced over outputs:
/// K(x, z) = Σ_s η_s Σ_k ⟨Jbar_s(x)_k, ∇_w f_k(z; w_s)⟩, `[xs, zs]`. For gradient descent with
/// constant coefficients this is the kernel of Bell et al.'s Theorem 3.7 (up to the sign and
/// scale of a_i); `zs` need not be training points, so K can be evaluated on a grid or between
/// training points, as a Gaussian process or an SVM needs.
pub fn path_kernel<M: EpkModel>(
    reader: &StoreReader,
    net: &Network<M>,
    xs: &[f64],
    zs: &[f64],
    options: &ReplayOptions,
) -> Result<Array2<f64>, ReplayError> {
    path_kernel_with(reader, net, xs, zs, options, false)
}

/// K(x, x) for every input: the diagonal of [`path_kernel`] without the rest, `[xs, 1]`.
pub fn path_kernel_diagonal<M: EpkModel>(
    reader: &StoreReader,
    net: &Network<M>,
    xs: &[f64],
    options: &ReplayOptions,
) -> Result<Vec<f64>, ReplayError> {
    let d = path_kernel_with(reader, net, xs, xs, options, true)?;
    Ok(d.column(0).to_vec())
}

/// K(x, z) for every pair, or K(x, x) alone with `diagonal` (`zs` then equals `xs`).
fn path_kernel_with<M: EpkModel>(
    reader: &StoreReader,
    net: &Network<M>,
    xs: &[f64],
    zs: &[f64],
    options: &ReplayOptions,
    diagonal: bool,
) -> Result<Array2<f64>, ReplayError> {
    let (k, p, len) = (net.outputs(), net.num_params(), net.input_len());
    let (m, nz) = (xs.len() / len, zs.len() / len);
    if m == 0 || nz == 0 {
        return Err(ReplayError::Input("no inputs for the path kernel".into()));
    }
    let (copies, onehot) = one_hot_copies(zs, len, k);
    let integrator = Integrator::new(net, xs, options, reader.steps());
    let mut kernel = Array2::<f64>::zeros((m, if diagonal { 1 } else { nz }));
    let rows_per_block = options.block.max(1) * k;
    let threads = options.threads.max(1);
    walk::steps(reader, Direction::Forward, 0..reader.steps(), |step| {
        let (results, _) = integrator.integrate(step)?;
        let jbar = dense_jbar(&results, k, p);
        let lr = reader.lr(step.index)?;
        for (b, rows) in onehot.chunks(rows_per_block * k).enumerate() {
            let first = b * rows_per_block;
            let count = rows.len() / k;
            let grads = net.implementation().sample_grads(
                net,
                step.start,
                &copies[first * len..(first + count) * len],
                rows,
                None, // the path kernel's points are inputs, not training passes
                threads,
            );
            let g = ArrayView2::from_shape((count, p), &grads).expect("[n, p]");
            if diagonal {
                // Row (z, o) of the gradients meets row (z, o) of Jbar only.
                for r in 0..count {
                    let (z, row) = ((first + r) / k, first + r);
                    kernel[[z, 0]] += lr * jbar.row(row).dot(&g.row(r));
                }
                continue;
            }
            let dots = jbar.dot(&g.t());
            for r in 0..count {
                let (z, o) = ((first + r) / k, (first + r) % k);
                for x in 0..m {
                    kernel[[x, z]] += lr * dots[[x * k + o, r]];
                }
            }
        }
        Ok(())
    })?;
    Ok(kernel)
}

/// Each z once per output, with a one-hot coefficient: the rows ∇f_k(z).
fn one_hot_copies(zs: &[f64], len: usize, k: usize) -> (Vec<f64>, Vec<f64>) {
    let nz = zs.len() / len;
    let mut copies = Vec::with_capacity(nz * k * len);
    let mut onehot = vec![0.0; nz * k * k];
    for z in 0..nz {
        for o in 0..k {
            copies.extend_from_slice(&zs[z * len..(z + 1) * len]);
            onehot[(z * k + o) * k + o] = 1.0;
        }
    }
    (copies, onehot)
}
