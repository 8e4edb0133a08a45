//! The specification of every built-in layer, by family. Each type is the layer's
//! configuration as plain data (public fields, Keras's names), its argument table and
//! its shape rule; the `kiln` crate's layer of the same name computes it.

mod conv;
mod core;
mod embedding;
mod normalization;
mod pooling;
mod recurrent;

pub use conv::{Conv1D, Conv2D};
pub use core::{
    Activation, Dense, Dropout, ELU, Flatten, GELU, LeakyReLU, Masking, ReLU, Reshape, SELU,
    Sigmoid, Softmax, Softplus, Swish, Tanh,
};
pub use embedding::Embedding;
pub use normalization::{BatchNormalization, LayerNormalization};
pub use pooling::{
    AveragePooling1D, AveragePooling2D, Global, GlobalAveragePooling1D, GlobalAveragePooling2D,
    GlobalMaxPooling1D, GlobalMaxPooling2D, MaxPooling1D, MaxPooling2D, Pool1D, Pool2D,
};
pub use recurrent::{Bidirectional, GRU, LSTM, MERGE_MODES, Recurrent, SimpleRNN, Wrapped};

use crate::names::{ACTIVATIONS, Activation as Act, INITIALIZERS, Initializer};
use crate::value::{Args, SpecError};

/// Reads an activation argument.
pub(crate) fn activation(a: &Args, name: &str) -> Result<Act, SpecError> {
    let n = a.choice(name, "activation", ACTIVATIONS)?;
    Ok(Act::from_name(&n).unwrap_or_default())
}

/// Reads an initializer argument.
pub(crate) fn initializer(a: &Args, name: &str) -> Result<Initializer, SpecError> {
    let n = a.choice(name, "initializer", INITIALIZERS)?;
    Ok(Initializer::from_name(&n).unwrap_or_default())
}

/// `Ok(())` when `v ≥ 1`, else an error on `arg`.
pub(crate) fn at_least_one(class: &str, arg: &'static str, v: usize) -> Result<(), SpecError> {
    if v == 0 {
        Err(SpecError::arg(arg, format!("{class} needs {arg} of at least 1, got 0")))
    } else {
        Ok(())
    }
}

/// The element count of a shape, or an error when it overflows.
pub(crate) fn elements(class: &str, shape: &[usize]) -> Result<usize, SpecError> {
    shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or_else(|| {
        SpecError::layer(format!(
            "{class}: the shape {shape:?} holds more values than this machine can address"
        ))
    })
}
