//! Preprocessing fitted on training data and applied to any split: standardization and
//! min-max scaling per feature, one-hot encoding, seeded (stratified) train/test splits
//! and shuffling.

use kiln_train::{ClassLabels, Inputs, Shape, Targets, TrainError};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

/// Per-feature `(x − mean) / std`, fitted on training data (Keras/scikit-learn's
/// StandardScaler: population standard deviation; constant features are left centred).
#[derive(Clone, Debug, PartialEq)]
pub struct StandardScaler {
    /// Mean of each feature.
    pub mean: Vec<f64>,
    /// Standard deviation of each feature (1 where it is 0).
    pub std: Vec<f64>,
}

impl StandardScaler {
    /// Fits means and deviations on `x`.
    pub fn fit<S: Shape>(x: &Inputs<S>) -> Self {
        let d = x.sample_len();
        let n = x.len().max(1) as f64;
        let mut mean = vec![0.0; d];
        for row in x.iter() {
            for (m, &v) in mean.iter_mut().zip(row) {
                *m += f64::from(v);
            }
        }
        mean.iter_mut().for_each(|m| *m /= n);
        let mut var = vec![0.0; d];
        for row in x.iter() {
            for ((s, &v), m) in var.iter_mut().zip(row).zip(&mean) {
                *s += (f64::from(v) - m).powi(2);
            }
        }
        let std = var
            .into_iter()
            .map(|s| (s / n).sqrt())
            .map(|s| if s > 0.0 { s } else { 1.0 })
            .collect();
        StandardScaler { mean, std }
    }

    /// Applies the fitted scaling to any split of the same width (another width is an
    /// error naming both).
    pub fn transform<S: Shape>(&self, x: &Inputs<S>) -> kiln_train::Result<Inputs<S>> {
        let d = self.mean.len();
        check_width("StandardScaler", d, x)?;
        let data = x
            .data()
            .iter()
            .enumerate()
            .map(|(i, &v)| ((f64::from(v) - self.mean[i % d]) / self.std[i % d]) as f32)
            .collect();
        Inputs::from_vec_shape(x.sample_shape(), data)
    }
}

/// Per-feature scaling into [0, 1] with the training data's minimum and maximum.
#[derive(Clone, Debug, PartialEq)]
pub struct MinMaxScaler {
    /// Minimum of each feature.
    pub min: Vec<f64>,
    /// Maximum of each feature.
    pub max: Vec<f64>,
}

impl MinMaxScaler {
    /// Fits minima and maxima on `x`.
    pub fn fit<S: Shape>(x: &Inputs<S>) -> Self {
        let d = x.sample_len();
        let (mut min, mut max) = (vec![f64::INFINITY; d], vec![f64::NEG_INFINITY; d]);
        for row in x.iter() {
            for (k, &v) in row.iter().enumerate() {
                min[k] = min[k].min(f64::from(v));
                max[k] = max[k].max(f64::from(v));
            }
        }
        MinMaxScaler { min, max }
    }

    /// Applies the fitted scaling (a constant feature maps to 0) to data of the same
    /// width (another width is an error naming both).
    pub fn transform<S: Shape>(&self, x: &Inputs<S>) -> kiln_train::Result<Inputs<S>> {
        let d = self.min.len();
        check_width("MinMaxScaler", d, x)?;
        let data = x
            .data()
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let (lo, hi) = (self.min[i % d], self.max[i % d]);
                if hi > lo { ((f64::from(v) - lo) / (hi - lo)) as f32 } else { 0.0 }
            })
            .collect();
        Inputs::from_vec_shape(x.sample_shape(), data)
    }
}

/// A scaler fitted on `d` features applied to samples of another width would index
/// its statistics modulo `d`: refuse it.
fn check_width<S: Shape>(scaler: &'static str, d: usize, x: &Inputs<S>) -> kiln_train::Result<()> {
    if x.sample_len() == d {
        return Ok(());
    }
    Err(TrainError::InvalidArgument {
        name: scaler,
        message: format!(
            "it was fitted on samples of {d} features but is given samples of {} ({:?}); transform data with the columns it was fitted on",
            x.sample_len(),
            x.sample_shape()
        ),
    })
}

/// One-hot targets of `classes` columns from class indices.
pub fn one_hot<S: Shape>(y: &ClassLabels, classes: usize) -> kiln_train::Result<Targets<S>> {
    if classes == 0 {
        return Err(TrainError::InvalidArgument {
            name: "one_hot classes",
            message: format!(
                "0 classes leaves no column for any label; pass the number of classes (here at least {})",
                y.num_classes()
            ),
        });
    }
    y.check_classes(classes)?;
    let mut data = vec![0.0f32; y.len() * classes];
    for (i, &c) in y.as_slice().iter().enumerate() {
        data[i * classes + c] = 1.0;
    }
    Targets::from_vec_shape(&[classes], data)
}

/// A seeded permutation of `0..n`.
pub fn shuffled_indices(n: usize, seed: u64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    idx
}

/// Train and test row indices: a seeded split leaving `test_fraction` for testing;
/// with `stratify`, each class keeps its proportion in both parts.
pub fn train_test_split(
    n: usize,
    test_fraction: f64,
    seed: u64,
    stratify: Option<&ClassLabels>,
) -> kiln_train::Result<(Vec<usize>, Vec<usize>)> {
    if !(test_fraction > 0.0 && test_fraction < 1.0) {
        return Err(TrainError::InvalidArgument {
            name: "test_fraction",
            message: format!("{test_fraction} is outside (0, 1); pass a fraction such as 0.2"),
        });
    }
    let order = shuffled_indices(n, seed);
    let (mut train, mut test) = (Vec::new(), Vec::new());
    match stratify {
        None => {
            let n_test = ((n as f64) * test_fraction).round() as usize;
            test.extend_from_slice(&order[..n_test]);
            train.extend_from_slice(&order[n_test..]);
        }
        Some(y) => {
            if y.len() != n {
                return Err(TrainError::LengthMismatch { x: n, y: y.len() });
            }
            for class in 0..y.num_classes() {
                let members: Vec<usize> =
                    order.iter().copied().filter(|&i| y.as_slice()[i] == class).collect();
                let n_test = ((members.len() as f64) * test_fraction).round() as usize;
                test.extend_from_slice(&members[..n_test]);
                train.extend_from_slice(&members[n_test..]);
            }
        }
    }
    if train.is_empty() || test.is_empty() {
        return Err(TrainError::InvalidArgument {
            name: "test_fraction",
            message: format!("{test_fraction} of {n} samples leaves one side empty"),
        });
    }
    train.sort_unstable();
    test.sort_unstable();
    Ok((train, test))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_train::Dyn;

    #[test]
    fn scalers_fit_on_train_and_apply_elsewhere() {
        let x = Inputs::<Dyn>::from_vec_shape(&[2], vec![1.0, 10.0, 3.0, 10.0]).unwrap();
        let s = StandardScaler::fit(&x);
        assert_eq!((s.mean.clone(), s.std.clone()), (vec![2.0, 10.0], vec![1.0, 1.0]));
        assert_eq!(s.transform(&x).unwrap().data(), &[-1.0, 0.0, 1.0, 0.0]);
        let m = MinMaxScaler::fit(&x);
        let other = Inputs::<Dyn>::from_vec_shape(&[2], vec![2.0, 7.0]).unwrap();
        assert_eq!(m.transform(&other).unwrap().data(), &[0.5, 0.0]);
        let wide = Inputs::<Dyn>::from_vec_shape(&[3], vec![1.0; 6]).unwrap();
        for e in [s.transform(&wide).unwrap_err(), m.transform(&wide).unwrap_err()] {
            let e = e.to_string();
            assert!(e.contains("fitted on samples of 2 features but is given samples of 3"), "{e}");
        }
    }

    #[test]
    fn splits_are_seeded_disjoint_and_stratified() {
        let y = ClassLabels::new((0..100).map(|i| usize::from(i % 4 == 0)).collect());
        let (tr, te) = train_test_split(100, 0.2, 7, Some(&y)).unwrap();
        assert_eq!((tr.len(), te.len()), (80, 20));
        assert_eq!(
            te.iter().filter(|&&i| y.as_slice()[i] == 1).count(),
            5,
            "25% of the test part is class 1"
        );
        assert!(tr.iter().all(|i| !te.contains(i)));
        assert_eq!(train_test_split(100, 0.2, 7, Some(&y)).unwrap(), (tr, te));
        assert!(train_test_split(10, 1.5, 0, None).is_err());
        let t: Targets<Dyn> = one_hot(&ClassLabels::new(vec![2, 0]), 3).unwrap();
        assert_eq!(t.data(), &[0.0, 0.0, 1.0, 1.0, 0.0, 0.0]);
        assert!(one_hot::<Dyn>(&ClassLabels::new(vec![3]), 3).is_err());
    }

    #[test]
    fn one_hot_with_no_classes_says_how_many() {
        let y = ClassLabels::new(vec![0, 2, 1]);
        let e = one_hot::<Dyn>(&y, 0).unwrap_err().to_string();
        assert!(e.contains("0 classes leaves no column for any label; pass the number of classes (here at least 3)"), "{e}");
        assert_eq!(one_hot::<Dyn>(&y, 3).unwrap().data()[..3], [1.0, 0.0, 0.0]);
    }
}
