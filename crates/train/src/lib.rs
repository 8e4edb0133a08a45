//! kiln-train: Keras's training workflow — the model trait, optimizers, losses, metrics,
//! callbacks, History and the generic compile/fit/evaluate/predict loop.
//!
//! This crate is being built out; today it re-exports the numeric foundation it stands on.

#![warn(missing_docs)]

pub use kiln_tape as tape;
