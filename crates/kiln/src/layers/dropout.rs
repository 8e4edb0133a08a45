//! `Dropout`: inverted dropout — in training each value is zeroed with probability
//! `rate` and the survivors scaled by `1/(1 − rate)`; at inference it is the identity.
//! The mask is drawn from a seeded generator, reseeded by the fit loop every epoch.

use super::{Layer, Params, ParamsMut};
use kiln_tape::Scalar;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Randomly drops inputs while training (Keras `Dropout`).
#[derive(Clone, Debug)]
pub struct Dropout<T = f32> {
    rate: f64,
    rng: ChaCha8Rng,
    mask: Vec<T>,
}

impl<T: Scalar> Dropout<T> {
    /// Drops each value with probability `rate` (in [0, 1)).
    pub fn new(rate: f64) -> Self {
        Dropout { rate, rng: ChaCha8Rng::seed_from_u64(0), mask: Vec::new() }
    }

    /// The mask of the last training pass (0 or `1/(1 − rate)` per value).
    pub fn mask(&self) -> &[T] {
        &self.mask
    }

    /// Uses this mask (scale factors per value) instead of drawing one: for tests.
    pub fn with_mask(mut self, mask: Vec<T>) -> Self {
        self.mask = mask;
        self.rate = f64::NAN;
        self
    }
}

impl<T: Scalar> Layer<T> for Dropout<T> {
    fn class_name(&self) -> &'static str {
        "Dropout"
    }
    fn base_name(&self) -> &'static str {
        "dropout"
    }
    fn build(&mut self, input: &[usize]) -> Result<Vec<usize>, String> {
        if !self.rate.is_nan() && !(0.0..1.0).contains(&self.rate) {
            return Err(format!("Dropout rate must be in [0, 1), got {}", self.rate));
        }
        Ok(input.to_vec())
    }
    fn forward(
        &mut self,
        _p: Params<'_, T>,
        x: &[T],
        _batch: usize,
        y: &mut [T],
    ) -> kiln_tape::Result<()> {
        y[..x.len()].copy_from_slice(x);
        Ok(())
    }
    fn forward_train(
        &mut self,
        _p: ParamsMut<'_, T>,
        x: &[T],
        _batch: usize,
        y: &mut [T],
    ) -> kiln_tape::Result<()> {
        if !self.rate.is_nan() {
            let keep = 1.0 - self.rate;
            let scale = T::of(1.0 / keep);
            self.mask.resize(x.len(), T::zero());
            for m in &mut self.mask[..x.len()] {
                *m = if self.rng.random::<f64>() < keep { scale } else { T::zero() };
            }
        }
        for ((o, &v), &m) in y.iter_mut().zip(x).zip(&self.mask) {
            *o = v * m;
        }
        Ok(())
    }
    fn backward(
        &mut self,
        _p: Params<'_, T>,
        x: &[T],
        _y: &[T],
        dy: &[T],
        _b: usize,
        _g: ParamsMut<'_, T>,
        dx: Option<&mut [T]>,
    ) -> kiln_tape::Result<()> {
        if let Some(dx) = dx {
            for ((d, &g), &m) in dx[..x.len()].iter_mut().zip(dy).zip(&self.mask) {
                *d = g * m;
            }
        }
        Ok(())
    }
    fn reseed(&mut self, seed: u64) {
        self.rng = ChaCha8Rng::seed_from_u64(seed);
    }
    fn describe(&self) -> String {
        format!("rate={}", self.rate)
    }
}
