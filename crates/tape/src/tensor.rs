//! `Tensor<T>`: an owned, contiguous, row-major array with a runtime shape.

use crate::error::{Result, TapeError};
use crate::scalar::Scalar;
use crate::shape::{check_len, numel};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// A dense tensor: a shape (any rank, 0 for a scalar) and its elements in row-major order.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor<T> {
    shape: Vec<usize>,
    data: Vec<T>,
}

impl<T: Scalar> Tensor<T> {
    /// A tensor of `shape` filled with `value`.
    pub fn full(shape: &[usize], value: T) -> Self {
        Tensor { shape: shape.to_vec(), data: vec![value; numel(shape)] }
    }

    /// A tensor of zeros.
    pub fn zeros(shape: &[usize]) -> Self {
        Self::full(shape, T::zero())
    }

    /// A tensor of ones.
    pub fn ones(shape: &[usize]) -> Self {
        Self::full(shape, T::one())
    }

    /// A rank-0 tensor holding one value.
    pub fn scalar(value: T) -> Self {
        Tensor { shape: Vec::new(), data: vec![value] }
    }

    /// Wraps `data` as a tensor of `shape`; errors when the lengths disagree.
    pub fn from_vec(shape: &[usize], data: Vec<T>) -> Result<Self> {
        check_len("Tensor::from_vec", shape, data.len())?;
        Ok(Tensor { shape: shape.to_vec(), data })
    }

    /// Samples from N(mean, std²) with a seeded ChaCha8 generator: same seed, same tensor.
    pub fn random_normal(shape: &[usize], mean: T, std: T, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let data = (0..numel(shape))
            .map(|_| {
                let z: f64 = StandardNormal.sample(&mut rng);
                mean + std * T::of(z)
            })
            .collect();
        Tensor { shape: shape.to_vec(), data }
    }

    /// Samples uniformly from [low, high) with a seeded ChaCha8 generator.
    pub fn random_uniform(shape: &[usize], low: T, high: T, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let data = (0..numel(shape))
            .map(|_| {
                let u: f64 = rng.random();
                low + (high - low) * T::of(u)
            })
            .collect();
        Tensor { shape: shape.to_vec(), data }
    }

    /// The same elements under another shape with the same element count.
    pub fn reshape(mut self, shape: &[usize]) -> Result<Self> {
        if numel(shape) != self.data.len() {
            return Err(TapeError::ShapeMismatch {
                op: "reshape",
                lhs: self.shape,
                rhs: shape.to_vec(),
                hint: "a reshape must keep the number of elements".into(),
            });
        }
        self.shape = shape.to_vec();
        Ok(self)
    }

    /// Applies `f` to every element, producing a new tensor of the same shape.
    pub fn map(&self, f: impl Fn(T) -> T) -> Self {
        Tensor { shape: self.shape.clone(), data: self.data.iter().map(|&x| f(x)).collect() }
    }

    /// Converts every element to another scalar type (e.g. f32 → f64 for gradient checks).
    pub fn cast<U: Scalar>(&self) -> Tensor<U> {
        Tensor {
            shape: self.shape.clone(),
            data: self.data.iter().map(|x| U::of(x.as_f64())).collect(),
        }
    }

    /// The element at a multi-index, or `None` when the index is out of range.
    pub fn get(&self, index: &[usize]) -> Option<T> {
        if index.len() != self.shape.len() || index.iter().zip(&self.shape).any(|(i, d)| i >= d) {
            return None;
        }
        let flat = index.iter().zip(&self.shape).fold(0, |acc, (i, d)| acc * d + i);
        Some(self.data[flat])
    }

    /// The single value of a tensor with one element (a scalar loss, say).
    pub fn item(&self) -> Result<T> {
        if self.data.len() != 1 {
            return Err(TapeError::InvalidArgument {
                op: "item",
                message: format!(
                    "item() needs exactly one element, but shape {:?} holds {}; reduce it first",
                    self.shape,
                    self.data.len()
                ),
            });
        }
        Ok(self.data[0])
    }
}

impl<T> Tensor<T> {
    /// The shape, outermost dimension first.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the tensor holds no element (some dimension is 0).
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The elements in row-major order.
    pub fn data(&self) -> &[T] {
        &self.data
    }

    /// The elements in row-major order, writable.
    pub fn data_mut(&mut self) -> &mut [T] {
        &mut self.data
    }

    /// Gives up the tensor and returns its elements.
    pub fn into_vec(self) -> Vec<T> {
        self.data
    }

    /// Builds a tensor from parts whose lengths the caller has already matched.
    pub(crate) fn from_parts(shape: Vec<usize>, data: Vec<T>) -> Self {
        debug_assert_eq!(numel(&shape), data.len());
        Tensor { shape, data }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_vec_checks_length() {
        let e = Tensor::<f32>::from_vec(&[2, 3], vec![0.0; 5]).unwrap_err();
        assert!(e.to_string().contains("holds 6 elements but 5 were given"), "{e}");
        assert!(Tensor::<f32>::from_vec(&[2, 3], vec![0.0; 6]).is_ok());
    }

    #[test]
    fn seeded_random_is_reproducible_and_has_the_asked_moments() {
        let a = Tensor::<f64>::random_normal(&[10000], 1.0, 2.0, 7);
        assert_eq!(a, Tensor::random_normal(&[10000], 1.0, 2.0, 7));
        assert_ne!(a, Tensor::random_normal(&[10000], 1.0, 2.0, 8));
        let mean = a.data().iter().sum::<f64>() / 1e4;
        let var = a.data().iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 1e4;
        assert!((mean - 1.0).abs() < 0.05 && (var.sqrt() - 2.0).abs() < 0.05, "{mean} {var}");
        let u = Tensor::<f32>::random_uniform(&[1000], -0.5, 0.5, 3);
        assert!(u.data().iter().all(|&x| (-0.5..0.5).contains(&x)));
    }

    #[test]
    fn get_and_item() {
        let t = Tensor::<f32>::from_vec(&[2, 2], vec![1.0, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!(t.get(&[1, 0]), Some(3.0));
        assert_eq!(t.get(&[2, 0]), None);
        assert!(t.item().is_err());
        assert_eq!(Tensor::scalar(5.0f32).item().unwrap(), 5.0);
    }
}
