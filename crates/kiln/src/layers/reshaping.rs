//! `Flatten` and `Reshape`: the same values under another per-sample shape.
//!
//! Shape rules (kiln-spec): Flatten turns any input into `[product]`; Reshape needs a
//! target with the same number of values.

use super::{Backward, Builtin, Layer, Params};
use kiln_spec::{LayerSpec, layers as spec};
use kiln_tape::Scalar;

fn copy<T: Scalar>(src: &[T], dst: &mut [T]) {
    dst[..src.len()].copy_from_slice(src);
}

/// Flattens each sample to one axis (Keras `Flatten`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Flatten;

impl Flatten {
    /// A Flatten layer.
    pub fn new() -> Self {
        Flatten
    }
}

impl<T: Scalar> Builtin<T> for spec::Flatten {
    type Layer = Flatten;
    fn into_layer(self) -> Flatten {
        Flatten
    }
}

impl<T: Scalar> Layer<T> for Flatten {
    fn class_name(&self) -> &'static str {
        spec::Flatten::CLASS
    }
    fn base_name(&self) -> &'static str {
        spec::Flatten::BASE_NAME
    }
    fn build(&mut self, input: &[usize]) -> Result<Vec<usize>, String> {
        spec::Flatten.output(input).map_err(|e| e.message)
    }
    fn forward(
        &mut self,
        _p: Params<'_, T>,
        x: &[T],
        _batch: usize,
        y: &mut [T],
    ) -> kiln_tape::Result<()> {
        copy(x, y);
        Ok(())
    }
    fn backward(&mut self, b: Backward<'_, T>) -> kiln_tape::Result<()> {
        let Backward { dy, dx, .. } = b;
        if let Some(dx) = dx {
            copy(dy, dx);
        }
        Ok(())
    }
}

/// Gives each sample another shape with the same number of values (Keras `Reshape`).
#[derive(Clone, Debug)]
pub struct Reshape {
    cfg: spec::Reshape,
}

impl Reshape {
    /// Reshape to `target` (per sample).
    pub fn new(target: &[usize]) -> Self {
        Reshape { cfg: spec::Reshape { target_shape: target.to_vec() } }
    }
}

impl<T: Scalar> Builtin<T> for spec::Reshape {
    type Layer = Reshape;
    fn into_layer(self) -> Reshape {
        Reshape { cfg: self }
    }
}

impl<T: Scalar> Layer<T> for Reshape {
    fn class_name(&self) -> &'static str {
        spec::Reshape::CLASS
    }
    fn base_name(&self) -> &'static str {
        spec::Reshape::BASE_NAME
    }
    fn build(&mut self, input: &[usize]) -> Result<Vec<usize>, String> {
        self.cfg.output(input).map_err(|e| e.message)
    }
    fn forward(
        &mut self,
        _p: Params<'_, T>,
        x: &[T],
        _batch: usize,
        y: &mut [T],
    ) -> kiln_tape::Result<()> {
        copy(x, y);
        Ok(())
    }
    fn backward(&mut self, b: Backward<'_, T>) -> kiln_tape::Result<()> {
        let Backward { dy, dx, .. } = b;
        if let Some(dx) = dx {
            copy(dy, dx);
        }
        Ok(())
    }
    fn describe(&self) -> String {
        format!("target_shape={:?}", self.cfg.target_shape)
    }
}
