//! kiln-macros: the `model!` proc macro, which declares a Sequential network once,
//! checks every layer's shape while the program compiles and generates its fused
//! forward and backward passes.
//!
//! The macro itself lands with the model! issue; this crate reserves its place in the
//! workspace so that the dependency graph (macros emits paths into `::kiln`) is fixed.
