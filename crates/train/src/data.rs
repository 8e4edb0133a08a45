//! Typed training data: [`Inputs`] and [`Targets`] of a sample shape, integer
//! [`ClassLabels`], and the [`Outputs`] that predict returns.
//!
//! Each holds N samples contiguously (row-major, sample-major). Conversions from vectors
//! and tensors check sizes against the shape type and return errors.

use crate::error::{Result, TrainError};
use crate::shape::{Dyn, Shape};
use kiln_tape::{Scalar, Tensor};
use std::marker::PhantomData;
use std::ops::Range;

fn check_static<S: Shape>(what: &'static str, sample_shape: &[usize]) -> Result<()> {
    match S::DIMS {
        Some(d) if d != sample_shape => Err(TrainError::ShapeMismatch {
            what,
            expected: d.to_vec(),
            got: sample_shape.to_vec(),
            hint: "reshape the data to the model's sample shape".into(),
        }),
        _ => Ok(()),
    }
}

macro_rules! samples_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq)]
        pub struct $name<S: Shape, T: Scalar = f32> {
            data: Vec<T>,
            n: usize,
            sample_shape: Vec<usize>,
            _shape: PhantomData<S>,
        }

        impl<S: Shape, T: Scalar> $name<S, T> {
            /// Wraps `data` holding whole samples of the type's shape; errors when its
            /// length is not a multiple of one sample.
            pub fn from_vec(data: Vec<T>) -> Result<Self> {
                let dims = S::DIMS.ok_or(TrainError::InvalidArgument {
                    name: concat!($what, "::from_vec"),
                    message: "a dynamic shape needs its sample shape: use from_vec_shape".into(),
                })?;
                Self::from_vec_shape(dims, data)
            }

            /// Wraps `data` as samples of `sample_shape` (which must equal the type's
            /// shape unless it is [`Dyn`]).
            pub fn from_vec_shape(sample_shape: &[usize], data: Vec<T>) -> Result<Self> {
                check_static::<S>($what, sample_shape)?;
                let per: usize = sample_shape.iter().product();
                if per == 0 || data.len() % per != 0 {
                    return Err(TrainError::InvalidArgument {
                        name: $what,
                        message: format!(
                            "{} values do not split into whole samples of shape {sample_shape:?} ({per} values each)",
                            data.len()
                        ),
                    });
                }
                Ok($name { n: data.len() / per, data, sample_shape: sample_shape.to_vec(), _shape: PhantomData })
            }

            /// Converts a tensor of shape `[n, sample dims...]`.
            pub fn from_tensor(t: Tensor<T>) -> Result<Self> {
                let Some((_, rest)) = t.shape().split_first() else {
                    return Err(TrainError::InvalidArgument {
                        name: $what,
                        message: "a scalar tensor has no sample axis; give shape [n, ...]".into(),
                    });
                };
                let rest = rest.to_vec();
                Self::from_vec_shape(&rest, t.into_vec())
            }

            /// One vector per sample, each of the sample shape's size.
            pub fn from_rows(rows: &[Vec<T>]) -> Result<Self> {
                let dims = S::DIMS.map(<[usize]>::to_vec).unwrap_or_else(|| vec![rows.first().map_or(0, Vec::len)]);
                let per: usize = dims.iter().product();
                if let Some((i, r)) = rows.iter().enumerate().find(|(_, r)| r.len() != per) {
                    return Err(TrainError::InvalidArgument {
                        name: $what,
                        message: format!("row {i} has {} values but every sample needs {per}", r.len()),
                    });
                }
                Self::from_vec_shape(&dims, rows.concat())
            }

            /// Number of samples.
            pub fn len(&self) -> usize {
                self.n
            }

            /// Whether there is no sample.
            pub fn is_empty(&self) -> bool {
                self.n == 0
            }

            /// The shape of one sample.
            pub fn sample_shape(&self) -> &[usize] {
                &self.sample_shape
            }

            /// Values per sample.
            pub fn sample_len(&self) -> usize {
                self.sample_shape.iter().product()
            }

            /// All values, sample after sample.
            pub fn data(&self) -> &[T] {
                &self.data
            }

            /// Sample `i`'s values, or `None` past the end.
            pub fn get(&self, i: usize) -> Option<&[T]> {
                let p = self.sample_len();
                (i < self.n).then(|| &self.data[i * p..(i + 1) * p])
            }

            /// Iterates over the samples.
            pub fn iter(&self) -> std::slice::ChunksExact<'_, T> {
                self.data.chunks_exact(self.sample_len())
            }

            /// The samples in `range` (clamped to the data), as a new value.
            pub fn slice(&self, range: Range<usize>) -> Self {
                let (lo, hi) = (range.start.min(self.n), range.end.min(self.n).max(range.start.min(self.n)));
                let p = self.sample_len();
                $name { data: self.data[lo * p..hi * p].to_vec(), n: hi - lo, sample_shape: self.sample_shape.clone(), _shape: PhantomData }
            }

            /// The first `n` samples (all of them if there are fewer).
            pub fn head(&self, n: usize) -> Self {
                self.slice(0..n)
            }

            /// The samples at `indices`, in that order; errors on an index past the end.
            pub fn select(&self, indices: &[usize]) -> Result<Self> {
                let p = self.sample_len();
                let mut data = Vec::with_capacity(indices.len() * p);
                for &i in indices {
                    let s = self.get(i).ok_or(TrainError::InvalidArgument {
                        name: $what,
                        message: format!("index {i} is past the {} samples", self.n),
                    })?;
                    data.extend_from_slice(s);
                }
                Ok($name { data, n: indices.len(), sample_shape: self.sample_shape.clone(), _shape: PhantomData })
            }

            /// The same data under a static shape type, checked against the samples' shape.
            pub fn into_shape<S2: Shape>(self) -> Result<$name<S2, T>> {
                check_static::<S2>($what, &self.sample_shape)?;
                Ok($name { data: self.data, n: self.n, sample_shape: self.sample_shape, _shape: PhantomData })
            }

            /// The same values as samples of another static shape with as many values per
            /// sample (Keras's `x.reshape(-1, 28, 28)`): MNIST's `[28, 28, 1]` images as
            /// `[28, 28]` sequences of rows.
            pub fn reshape<S2: Shape>(self) -> Result<$name<S2, T>> {
                let Some(dims) = S2::DIMS else {
                    return Err(TrainError::InvalidArgument {
                        name: $what,
                        message: "reshape needs a static shape such as S2<28, 28>; use into_dyn to drop the static shape".into(),
                    });
                };
                let (have, want) = (self.sample_len(), dims.iter().product::<usize>());
                if have != want {
                    return Err(TrainError::ShapeMismatch {
                        what: $what,
                        expected: dims.to_vec(),
                        got: self.sample_shape.clone(),
                        hint: format!("a sample holds {have} values but {dims:?} holds {want}; the counts must match"),
                    });
                }
                Ok($name { data: self.data, n: self.n, sample_shape: dims.to_vec(), _shape: PhantomData })
            }

            /// The same data with its shape checked only at run time.
            pub fn into_dyn(self) -> $name<Dyn, T> {
                $name { data: self.data, n: self.n, sample_shape: self.sample_shape, _shape: PhantomData }
            }

            /// Gives up the container and returns its values.
            pub fn into_vec(self) -> Vec<T> {
                self.data
            }

            /// The data as a tensor of shape `[n, sample dims...]`.
            pub fn to_tensor(&self) -> Tensor<T> {
                let mut shape = vec![self.n];
                shape.extend_from_slice(&self.sample_shape);
                Tensor::from_vec(&shape, self.data.clone()).expect("length matches by construction")
            }

            /// The first non-finite value, as an error naming where it is.
            pub fn check_finite(&self) -> Result<()> {
                Samples { data: &self.data, shape: &self.sample_shape, len: self.n }.check_finite($what)
            }

            /// The samples as the training loop sees them (values, shape, count).
            #[doc(hidden)]
            pub fn samples(&self) -> Samples<'_, T> {
                Samples { data: &self.data, shape: &self.sample_shape, len: self.n }
            }
        }
    };
}

/// Samples without their shape type: `len` samples of `shape`, one after the other,
/// as the training loop (compiled once per float type) takes them.
#[derive(Clone, Copy, Debug)]
pub struct Samples<'a, T> {
    /// All values, sample after sample.
    pub data: &'a [T],
    /// The shape of one sample.
    pub shape: &'a [usize],
    /// Number of samples.
    pub len: usize,
}

impl<T: Scalar> Samples<'_, T> {
    /// The first non-finite value, as an error naming `what` and where it is.
    pub fn check_finite(&self, what: &'static str) -> Result<()> {
        let per: usize = self.shape.iter().product::<usize>().max(1);
        match self.data.iter().position(|v| !v.is_finite()) {
            None => Ok(()),
            Some(i) => Err(TrainError::NonFinite {
                what,
                sample: i / per,
                element: i % per,
                at: position(i % per, self.shape),
                value: self.data[i].as_f64(),
            }),
        }
    }
}

/// ` (index [i, j, …] of [d0, d1, …])` for an element of a sample with more than one
/// axis — for a sequence `[steps, features]` that reads as step and feature — else "".
fn position(mut element: usize, shape: &[usize]) -> String {
    if shape.len() < 2 {
        return String::new();
    }
    let mut index = vec![0; shape.len()];
    for (ix, &d) in index.iter_mut().zip(shape).rev() {
        *ix = element % d.max(1);
        element /= d.max(1);
    }
    if let [step, feature] = index[..] {
        return format!(" (step {step}, feature {feature} of {shape:?})");
    }
    format!(" (index {index:?} of {shape:?})")
}

samples_type!(
    /// Model inputs: N samples of shape `S` (for example `Inputs<S3<28, 28, 1>>`).
    Inputs, "Inputs"
);
samples_type!(
    /// Dense targets of shape `S`: one-hot or multi-hot labels, or regression values.
    Targets, "Targets"
);
samples_type!(
    /// What `predict` returns: N outputs of shape `S`.
    Outputs, "Outputs"
);

impl<S: Shape, T: Scalar> Outputs<S, T> {
    /// The index of the largest value of each output (the predicted class).
    pub fn argmax(&self) -> Vec<usize> {
        self.iter()
            .map(|o| {
                o.iter().enumerate().fold(0, |best, (i, v)| if *v > o[best] { i } else { best })
            })
            .collect()
    }

    /// The indices of the `k` largest values of each output, largest first.
    pub fn top_k(&self, k: usize) -> Vec<Vec<usize>> {
        self.iter()
            .map(|o| {
                let mut idx: Vec<usize> = (0..o.len()).collect();
                idx.sort_by(|&a, &b| {
                    o[b].partial_cmp(&o[a]).unwrap_or(std::cmp::Ordering::Equal).then(a.cmp(&b))
                });
                idx.truncate(k);
                idx
            })
            .collect()
    }
}

/// Integer class labels (what `sparse_categorical_crossentropy` takes): one per sample,
/// or one per step of a sequence output ([`ClassLabels::per_step`]).
///
/// As in Keras, a loss or metric reduces along the model's last output axis: a model
/// whose output is `[steps, classes]` is scored step by step against one label per step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassLabels {
    labels: Vec<usize>,
    /// Labels per sample (1, or the steps of a sequence output).
    steps: usize,
}

impl ClassLabels {
    /// The label stored for an ignored position given as a negative label (Keras's −1
    /// padding) by [`ClassLabels::from_i64_ignoring`]: class checks pass over it, and
    /// `SparseCategoricalCrossentropy` with a negative `ignore_class` leaves it out.
    pub const IGNORED: usize = usize::MAX;

    /// Wraps class indices, one per sample.
    pub fn new(labels: Vec<usize>) -> Self {
        ClassLabels { labels, steps: 1 }
    }

    /// Wraps class indices after checking each is below `classes`.
    pub fn with_classes(labels: Vec<usize>, classes: usize) -> Result<Self> {
        let l = ClassLabels::new(labels);
        l.check_classes(classes)?;
        Ok(l)
    }

    /// Wraps `steps` class indices per sample, sample after sample: the labels of a
    /// model whose output is `[steps, classes]` (a sequence tagger: an LSTM with
    /// `return_sequences` then `Dense(classes, softmax)`). Keras's `y` of shape
    /// `(samples, steps)`.
    pub fn per_step(labels: Vec<usize>, steps: usize) -> Result<Self> {
        if steps == 0 || !labels.len().is_multiple_of(steps) {
            return Err(TrainError::InvalidArgument {
                name: "ClassLabels::per_step",
                message: format!(
                    "{} labels do not split into samples of {steps} steps; give steps ≥ 1 labels for every sample",
                    labels.len()
                ),
            });
        }
        Ok(ClassLabels { labels, steps })
    }

    /// Converts signed labels; a negative one is an error naming its position.
    pub fn from_i64(labels: &[i64]) -> Result<Self> {
        let labels = labels
            .iter()
            .enumerate()
            .map(|(i, &l)| {
                usize::try_from(l).map_err(|_| TrainError::InvalidArgument {
                    name: "ClassLabels",
                    message: format!(
                        "label {l} of sample {i} is negative; class labels are 0, 1, 2, ...: map the classes to those"
                    ),
                })
            })
            .collect::<Result<_>>()?;
        Ok(ClassLabels::new(labels))
    }

    /// Converts signed labels in which `ignore_class` marks positions to leave out of
    /// the loss (Keras's `ignore_class=-1` padding): those become [`ClassLabels::IGNORED`]
    /// when `ignore_class` is negative; any other negative label is an error naming it.
    /// Give the loss the same value, `SparseCategoricalCrossentropy::default()
    /// .ignore_class(-1)`, and per-step labels with [`ClassLabels::per_step`]'s shape
    /// through [`ClassLabels::with_steps`].
    pub fn from_i64_ignoring(labels: &[i64], ignore_class: i64) -> Result<Self> {
        let labels = labels
            .iter()
            .enumerate()
            .map(|(i, &l)| {
                if l == ignore_class && l < 0 {
                    return Ok(ClassLabels::IGNORED);
                }
                usize::try_from(l).map_err(|_| TrainError::InvalidArgument {
                    name: "ClassLabels",
                    message: format!(
                        "label {l} at position {i} is negative and is not the ignored class {ignore_class}; class labels are 0, 1, 2, ..."
                    ),
                })
            })
            .collect::<Result<_>>()?;
        Ok(ClassLabels::new(labels))
    }

    /// The same labels read as `steps` per sample (see [`ClassLabels::per_step`]).
    pub fn with_steps(self, steps: usize) -> Result<Self> {
        ClassLabels::per_step(self.labels, steps)
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len() / self.steps
    }

    /// Whether there is no label.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Labels per sample: 1, or the steps given to [`ClassLabels::per_step`].
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// The labels, sample after sample.
    pub fn as_slice(&self) -> &[usize] {
        &self.labels
    }

    /// One more than the largest label (0 when empty).
    pub fn num_classes(&self) -> usize {
        self.labels.iter().max().map_or(0, |m| m + 1)
    }

    /// The samples in `range` (clamped).
    pub fn slice(&self, range: Range<usize>) -> Self {
        let n = self.len();
        let (lo, hi) = (range.start.min(n), range.end.min(n).max(range.start.min(n)));
        ClassLabels {
            labels: self.labels[lo * self.steps..hi * self.steps].to_vec(),
            steps: self.steps,
        }
    }

    /// The first `n` samples.
    pub fn head(&self, n: usize) -> Self {
        self.slice(0..n)
    }

    /// The samples at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> Result<Self> {
        let mut labels = Vec::with_capacity(indices.len() * self.steps);
        for &i in indices {
            if i >= self.len() {
                return Err(TrainError::InvalidArgument {
                    name: "ClassLabels",
                    message: format!("index {i} is past the {} samples", self.len()),
                });
            }
            labels.extend_from_slice(&self.labels[i * self.steps..(i + 1) * self.steps]);
        }
        Ok(ClassLabels { labels, steps: self.steps })
    }

    /// Errors on the first label at or above `classes` ([`ClassLabels::IGNORED`]
    /// positions pass).
    pub fn check_classes(&self, classes: usize) -> Result<()> {
        match self.labels.iter().position(|&l| l >= classes && l != ClassLabels::IGNORED) {
            None => Ok(()),
            Some(i) => Err(TrainError::LabelOutOfRange {
                sample: i / self.steps,
                label: self.labels[i],
                classes,
            }),
        }
    }
}

impl From<Vec<usize>> for ClassLabels {
    fn from(labels: Vec<usize>) -> Self {
        ClassLabels::new(labels)
    }
}

impl From<&[u8]> for ClassLabels {
    fn from(labels: &[u8]) -> Self {
        ClassLabels::new(labels.iter().map(|&l| l as usize).collect())
    }
}

/// Labels as the losses and metrics see one batch of them.
#[derive(Clone, Copy, Debug)]
pub enum Truth<'a, T> {
    /// One class index per row (per sample, or per step of a sequence output).
    Classes(&'a [usize]),
    /// Dense targets, as many per sample as the model has outputs.
    Dense(&'a [T]),
}

/// What `fit` and `evaluate` accept as `y`: [`ClassLabels`] or [`Targets`].
pub trait Labels<T: Scalar> {
    /// Number of samples.
    fn count(&self) -> usize;
    /// Values per sample for dense targets; `None` for class indices.
    fn width(&self) -> Option<usize>;
    /// The whole label set as the losses see it.
    fn truth(&self) -> Truth<'_, T>;
    /// Checks the labels against a model whose output per sample has `out_shape`.
    fn validate(&self, out_shape: &[usize]) -> Result<()>;
    /// Copies the labels at `rows` into a batch buffer.
    fn gather(&self, rows: &[usize], batch: &mut LabelBatch<T>);
}

/// A reusable buffer for one batch of labels.
#[derive(Clone, Debug)]
pub struct LabelBatch<T> {
    classes: Vec<usize>,
    dense: Vec<T>,
    is_dense: bool,
}

impl<T> Default for LabelBatch<T> {
    fn default() -> Self {
        LabelBatch { classes: Vec::new(), dense: Vec::new(), is_dense: false }
    }
}

impl<T: Scalar> LabelBatch<T> {
    /// The batch as the losses see it.
    pub fn truth(&self) -> Truth<'_, T> {
        if self.is_dense { Truth::Dense(&self.dense) } else { Truth::Classes(&self.classes) }
    }
}

/// The rows a loss scores per sample (every axis but the last) and the values per row
/// (the last axis), as Keras's losses reduce along the last axis.
pub fn loss_rows(out_shape: &[usize]) -> (usize, usize) {
    match out_shape.split_last() {
        Some((&last, rest)) => (rest.iter().product(), last),
        None => (1, 1),
    }
}

impl<T: Scalar> Labels<T> for ClassLabels {
    fn count(&self) -> usize {
        self.len()
    }
    fn width(&self) -> Option<usize> {
        None
    }
    fn truth(&self) -> Truth<'_, T> {
        Truth::Classes(&self.labels)
    }
    fn validate(&self, out_shape: &[usize]) -> Result<()> {
        let (rows, classes) = loss_rows(out_shape);
        if rows != self.steps {
            let hint = if rows == 1 {
                format!(
                    "the model gives one prediction per sample, so give one label per sample (ClassLabels::new), not {}",
                    self.steps
                )
            } else {
                format!(
                    "the model scores {rows} rows per sample (its output {out_shape:?} is reduced along the last axis): give {rows} labels per sample with ClassLabels::per_step(labels, {rows})"
                )
            };
            return Err(TrainError::ShapeMismatch {
                what: "y",
                expected: out_shape[..out_shape.len().saturating_sub(1)].to_vec(),
                got: if self.steps == 1 { vec![] } else { vec![self.steps] },
                hint,
            });
        }
        // A single sigmoid output takes 0/1 labels as classes of a binary problem.
        self.check_classes(classes.max(2))
    }
    fn gather(&self, rows: &[usize], batch: &mut LabelBatch<T>) {
        batch.is_dense = false;
        batch.classes.clear();
        let s = self.steps;
        for &r in rows {
            batch.classes.extend_from_slice(&self.labels[r * s..(r + 1) * s]);
        }
    }
}

/// Whether two per-sample shapes are one up to trailing axes of 1 (`[28]` and `[28, 1]`),
/// which Keras's losses accept as the same.
fn same_up_to_trailing_ones(a: &[usize], b: &[usize]) -> bool {
    let trim = |s: &[usize]| s.len() - s.iter().rev().take_while(|&&d| d == 1).count();
    let (a, b) = (&a[..trim(a)], &b[..trim(b)]);
    a == b
}

impl<S: Shape, T: Scalar> Labels<T> for Targets<S, T> {
    fn count(&self) -> usize {
        self.len()
    }
    fn width(&self) -> Option<usize> {
        Some(self.sample_len())
    }
    fn truth(&self) -> Truth<'_, T> {
        Truth::Dense(self.data())
    }
    fn validate(&self, out_shape: &[usize]) -> Result<()> {
        let out_len: usize = out_shape.iter().product();
        let rank_one = self.sample_shape().len() <= 1 && out_shape.len() <= 1;
        let fits = if rank_one {
            self.sample_len() == out_len
        } else {
            same_up_to_trailing_ones(self.sample_shape(), out_shape)
        };
        if !fits {
            return Err(TrainError::ShapeMismatch {
                what: "y",
                expected: out_shape.to_vec(),
                got: self.sample_shape().to_vec(),
                hint: "targets need the model's output shape per sample (one-hot encode class indices, or use ClassLabels)"
                    .into(),
            });
        }
        self.check_finite()
    }
    fn gather(&self, rows: &[usize], batch: &mut LabelBatch<T>) {
        batch.is_dense = true;
        batch.dense.clear();
        let p = self.sample_len();
        for &r in rows {
            batch.dense.extend_from_slice(&self.data()[r * p..(r + 1) * p]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shape::{S1, S2};

    #[test]
    fn conversions_check_sizes() {
        assert_eq!(Inputs::<S1<3>>::from_vec(vec![0.0; 6]).unwrap().len(), 2);
        let e = Inputs::<S1<3>>::from_vec(vec![0.0; 7]).unwrap_err().to_string();
        assert!(e.contains("7 values do not split into whole samples of shape [3]"), "{e}");
        let e = Inputs::<S2<2, 2>>::from_vec_shape(&[4], vec![0.0; 8]).unwrap_err().to_string();
        assert!(e.contains("[4]") && e.contains("[2, 2]"), "{e}");
        let t = Tensor::<f32>::zeros(&[5, 2, 2]);
        assert_eq!(Inputs::<S2<2, 2>>::from_tensor(t).unwrap().len(), 5);
        assert!(Inputs::<S1<4>>::from_rows(&[vec![1.0; 4], vec![1.0; 3]]).is_err());
        assert!(Inputs::<Dyn>::from_vec(vec![1.0]).is_err());
    }

    #[test]
    fn outputs_helpers() {
        let o = Outputs::<S1<3>>::from_vec(vec![0.1, 0.7, 0.2, 0.5, 0.1, 0.4]).unwrap();
        assert_eq!(o.argmax(), vec![1, 0]);
        assert_eq!(o.top_k(2), vec![vec![1, 2], vec![0, 2]]);
        assert_eq!(o.head(1).len(), 1);
        assert_eq!(o.slice(1..5).len(), 1);
        assert_eq!(o.iter().count(), 2);
    }

    #[test]
    fn labels_are_validated() {
        let y = ClassLabels::new(vec![0, 3, 1]);
        let e = Labels::<f32>::validate(&y, &[3]).unwrap_err().to_string();
        assert!(e.contains("label 3 of sample 1 is outside the model's 3 classes"), "{e}");
        assert!(ClassLabels::from_i64(&[1, -1]).is_err());
        let t = Targets::<S1<2>>::from_vec(vec![0.0, f32::NAN]).unwrap();
        let e = Labels::<f32>::validate(&t, &[2]).unwrap_err().to_string();
        assert!(e.contains("non-finite value (NaN) in sample 0, element 1"), "{e}");
    }
}
