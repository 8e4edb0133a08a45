//! kiln-tape: the foundation of kiln — tensors, CPU kernels and a reverse-mode autograd
//! tape with finite-difference gradient checking.
//!
//! * [`Tensor`] holds a shape and contiguous row-major data, generic over [`Scalar`]
//!   (`f32` or `f64`).
//! * [`kernels`] are plain functions over slices (GEMM, elementwise math, activations,
//!   reductions, convolution, pooling, layout). The tape and kiln's fused layer passes
//!   call the same functions.
//! * [`Tape`] records operations on [`Var`]s and [`Tape::backward`] returns every
//!   gradient; [`gradcheck()`] verifies any differentiable function against central
//!   differences.
//!
//! ```
//! use kiln_tape::{Tape, Tensor};
//! let tape = Tape::<f64>::new();
//! let w = tape.var(Tensor::from_vec(&[2], vec![1.0, -2.0])?);
//! let loss = w.mul(w)?.sum()?;            // Σ w²
//! let grads = tape.backward(loss)?;
//! assert_eq!(grads.get(w).unwrap().data(), &[2.0, -4.0]);
//! # Ok::<(), kiln_tape::TapeError>(())
//! ```

#![warn(missing_docs)]

pub mod error;
pub mod gradcheck;
pub mod kernels;
pub mod scalar;
pub mod shape;
pub mod tape;
pub mod tensor;

pub use error::{Result, TapeError};
pub use gradcheck::{GradcheckOptions, GradcheckReport, gradcheck, gradcheck_with};
pub use kernels::{Activation, Padding, Trans};
/// The numeric traits every [`Scalar`] has, re-exported so dependents need not name num-traits.
pub use num_traits::{Float, FromPrimitive, One, Zero};
pub use scalar::Scalar;
pub use tape::{Gradients, NoGradGuard, Tape, Var, concat};
pub use tensor::Tensor;
