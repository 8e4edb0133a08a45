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
///
/// ```
/// use kiln::prelude::*;
/// model! { struct Net: [2, 3, 1] => [Flatten] }
/// let x = Inputs::<S3<2, 3, 1>>::from_vec((0..6).map(|v| v as f32).collect())?;
/// let y = Net::new(Seed(1)).predict(&x)?;
/// assert_eq!((y.sample_shape(), y.data()), (&[6][..], x.data()));
/// # Ok::<(), kiln::Error>(())
/// ```
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
///
/// ```
/// use kiln::prelude::*;
/// model! { struct Net: [6] => [Reshape([2, 3])] }
/// let x = Inputs::<S1<6>>::from_vec((0..6).map(|v| v as f32).collect())?;
/// let y = Net::new(Seed(1)).predict(&x)?;
/// assert_eq!((y.sample_shape(), y.data()), (&[2, 3][..], x.data()));
/// # Ok::<(), kiln::Error>(())
/// ```
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

/// Masks padding steps (Keras `Masking`): a step whose features all equal the mask value
/// is zeroed, and the recurrent layers after it skip it.
///
/// ```
/// use kiln::prelude::*;
/// model! { struct Net: [3, 2] => [Masking(0.0), LSTM(4, return_sequences = true)] }
/// // The last step is padding: the LSTM skips it and repeats step 2's output there.
/// let x = Inputs::<S2<3, 2>>::from_vec(vec![0.5, 1.0, -1.0, 0.5, 0.0, 0.0])?;
/// let y = Net::new(Seed(1)).predict(&x)?;
/// assert_eq!(y.sample_shape(), &[3, 4]);
/// assert_eq!(y.data()[8..12], y.data()[4..8]);
/// # Ok::<(), kiln::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Masking<T = f32> {
    cfg: spec::Masking,
    features: usize,
    /// 1 kept, 0 masked, per sample and step, from the last forward pass.
    keep: Vec<T>,
}

impl<T: Scalar> Builtin<T> for spec::Masking {
    type Layer = Masking<T>;
    fn into_layer(self) -> Masking<T> {
        Masking { cfg: self, features: 0, keep: Vec::new() }
    }
}

impl<T: Scalar> Masking<T> {
    /// Masks the steps whose features all equal `mask_value`.
    pub fn new(mask_value: f64) -> Self {
        spec::Masking { mask_value }.into_layer()
    }
}

impl<T: Scalar> Layer<T> for Masking<T> {
    fn class_name(&self) -> &'static str {
        spec::Masking::CLASS
    }
    fn base_name(&self) -> &'static str {
        spec::Masking::BASE_NAME
    }
    fn build(&mut self, input: &[usize]) -> Result<Vec<usize>, String> {
        let out = self.cfg.output(input).map_err(|e| e.message)?;
        self.features = input[1];
        Ok(out)
    }
    fn forward(
        &mut self,
        _p: Params<'_, T>,
        x: &[T],
        _batch: usize,
        y: &mut [T],
    ) -> kiln_tape::Result<()> {
        let (f, value) = (self.features, T::of(self.cfg.mask_value));
        self.keep.clear();
        for (xs, ys) in x.chunks_exact(f).zip(y.chunks_exact_mut(f)) {
            let keep = xs.iter().any(|&v| v != value);
            self.keep.push(if keep { T::one() } else { T::zero() });
            for (o, &v) in ys.iter_mut().zip(xs) {
                *o = if keep { v } else { T::zero() };
            }
        }
        Ok(())
    }
    fn backward(&mut self, b: Backward<'_, T>) -> kiln_tape::Result<()> {
        let Backward { dy, dx, .. } = b;
        if let Some(dx) = dx {
            let f = self.features;
            for ((d, g), &k) in dx.chunks_exact_mut(f).zip(dy.chunks_exact(f)).zip(&self.keep) {
                d.iter_mut().zip(g).for_each(|(o, &v)| *o = v * k);
            }
        }
        Ok(())
    }
    fn output_mask(&self, _x: &[T], _batch: usize, mask: &mut Vec<T>) -> bool {
        mask.clear();
        mask.extend_from_slice(&self.keep);
        true
    }
    fn describe(&self) -> String {
        format!("mask_value={}", self.cfg.mask_value)
    }
}
