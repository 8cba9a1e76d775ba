//! Kernels of a trained network and what is built on them.
//!
//! * [`tangent`]: the tangent kernels at fixed weights (Engel et al.): eNTK, trNTK⁰, trNTK,
//!   pNTK, their Rademacher projections ([`Projection`]) and the conjugate kernel;
//! * [`path`]: the exact path kernel K(x, z) between arbitrary inputs (Bell et al.);
//! * [`compare`]: every surrogate beside the network with Engel et al.'s faithfulness measures
//!   ([`faithfulness`]), kernel GLMs refitted on each Gram ([`kglm`]);
//! * [`gram`]: the tangent kernels' Grams built in panels that fit a memory budget;
//! * [`gp`] and [`svm`]: a Gram used as a Gaussian-process covariance or by SVMs (Bell et al.
//!   Figs. 3 and 5).

pub mod compare;
pub mod faithfulness;
pub mod gp;
pub mod gram;
pub mod kglm;
pub mod path;
pub mod svm;
pub mod tangent;

pub use path::{path_kernel, path_kernel_diagonal};
pub use tangent::{Kernel, Projection, cosine_normalise, entk, jacobians, penultimate, reduce};
