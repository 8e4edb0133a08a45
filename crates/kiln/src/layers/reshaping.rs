//! `Flatten` and `Reshape`: the same values under another per-sample shape.
//!
//! Shape rules: Flatten turns any input into `[product]`; Reshape needs a target with
//! the same number of values.

use super::{Layer, Params, ParamsMut};
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

impl<T: Scalar> Layer<T> for Flatten {
    fn class_name(&self) -> &'static str {
        "Flatten"
    }
    fn base_name(&self) -> &'static str {
        "flatten"
    }
    fn build(&mut self, input: &[usize]) -> Result<Vec<usize>, String> {
        Ok(vec![input.iter().product()])
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
    fn backward(
        &mut self,
        _p: Params<'_, T>,
        _x: &[T],
        _y: &[T],
        dy: &[T],
        _b: usize,
        _g: ParamsMut<'_, T>,
        dx: Option<&mut [T]>,
    ) -> kiln_tape::Result<()> {
        if let Some(dx) = dx {
            copy(dy, dx);
        }
        Ok(())
    }
}

/// Gives each sample another shape with the same number of values (Keras `Reshape`).
#[derive(Clone, Debug)]
pub struct Reshape {
    target: Vec<usize>,
}

impl Reshape {
    /// Reshape to `target` (per sample).
    pub fn new(target: &[usize]) -> Self {
        Reshape { target: target.to_vec() }
    }
}

impl<T: Scalar> Layer<T> for Reshape {
    fn class_name(&self) -> &'static str {
        "Reshape"
    }
    fn base_name(&self) -> &'static str {
        "reshape"
    }
    fn build(&mut self, input: &[usize]) -> Result<Vec<usize>, String> {
        let (a, b): (usize, usize) = (input.iter().product(), self.target.iter().product());
        if a != b || self.target.contains(&0) {
            return Err(format!(
                "Reshape to {:?} holds {b} values but its input {input:?} holds {a}: the element counts must match",
                self.target
            ));
        }
        Ok(self.target.clone())
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
    fn backward(
        &mut self,
        _p: Params<'_, T>,
        _x: &[T],
        _y: &[T],
        dy: &[T],
        _b: usize,
        _g: ParamsMut<'_, T>,
        dx: Option<&mut [T]>,
    ) -> kiln_tape::Result<()> {
        if let Some(dx) = dx {
            copy(dy, dx);
        }
        Ok(())
    }
    fn describe(&self) -> String {
        format!("target_shape={:?}", self.target)
    }
}
