//! The [`Model`] trait the training loop drives, and the parameter arena every model
//! keeps its weights in.

use crate::error::{Result, TrainError};
use crate::shape::Shape;
use kiln_tape::Scalar;

/// What a parameter is, so optimizers, checkpoints and summaries can treat kinds apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamKind {
    /// A weight matrix or convolution kernel.
    Kernel,
    /// An additive bias.
    Bias,
    /// A normalization scale (gamma).
    Scale,
    /// A normalization shift (beta).
    Shift,
    /// An embedding table.
    Embedding,
    /// A running statistic (BatchNormalization's moving mean/variance): not trained.
    Statistic,
    /// Anything a custom layer declares.
    Other,
}

/// One named tensor in the arena: `values[offset..offset + len]`, row-major `shape`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamEntry {
    /// Keras-style name, `layer/variable` (e.g. `dense_1/kernel`).
    pub name: String,
    /// The tensor's shape in Keras's layout (`[in, out]` kernels, HWIO conv kernels).
    pub shape: Vec<usize>,
    /// Where it starts in the arena.
    pub offset: usize,
    /// Whether the optimizer updates it.
    pub trainable: bool,
    /// What it is.
    pub kind: ParamKind,
}

impl ParamEntry {
    /// Number of values.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether it holds no value.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Its range in the arena.
    pub fn range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.len()
    }
}

/// All parameters of a model in one contiguous buffer, trainable ones first, so that an
/// optimizer updates `values[..trainable_len]` in one pass and restoring best weights is
/// one copy. The table keeps the declaration order for summaries and checkpoints.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamStore<T> {
    values: Vec<T>,
    entries: Vec<ParamEntry>,
    trainable_len: usize,
}

/// A parameter as a layer declares it, before the arena places it.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamDecl<T> {
    /// Full name, `layer/variable`.
    pub name: String,
    /// Shape in Keras's layout.
    pub shape: Vec<usize>,
    /// Whether it is trained.
    pub trainable: bool,
    /// What it is.
    pub kind: ParamKind,
    /// Its initial values (`shape.iter().product()` of them).
    pub init: Vec<T>,
}

impl<T: Scalar> ParamStore<T> {
    /// Lays declared parameters out: trainable ones first, each group in declaration order.
    pub fn new(decls: Vec<ParamDecl<T>>) -> Result<Self> {
        let mut values = Vec::with_capacity(decls.iter().map(|d| d.init.len()).sum());
        let mut placed: Vec<(usize, ParamEntry)> = Vec::with_capacity(decls.len());
        for pass in [true, false] {
            for (i, d) in decls.iter().enumerate().filter(|(_, d)| d.trainable == pass) {
                let len: usize = d.shape.iter().product();
                if d.init.len() != len {
                    return Err(TrainError::InvalidArgument {
                        name: "ParamStore",
                        message: format!(
                            "{} has shape {:?} but {} initial values",
                            d.name,
                            d.shape,
                            d.init.len()
                        ),
                    });
                }
                placed.push((
                    i,
                    ParamEntry {
                        name: d.name.clone(),
                        shape: d.shape.clone(),
                        offset: values.len(),
                        trainable: d.trainable,
                        kind: d.kind,
                    },
                ));
                values.extend_from_slice(&d.init);
            }
        }
        let trainable_len = placed.iter().filter(|(_, e)| e.trainable).map(|(_, e)| e.len()).sum();
        placed.sort_by_key(|(i, _)| *i);
        Ok(ParamStore {
            values,
            entries: placed.into_iter().map(|(_, e)| e).collect(),
            trainable_len,
        })
    }

    /// Every value; trainable ones are `[..trainable_len()]`.
    pub fn values(&self) -> &[T] {
        &self.values
    }

    /// Every value, writable.
    pub fn values_mut(&mut self) -> &mut [T] {
        &mut self.values
    }

    /// The table of entries in declaration order.
    pub fn entries(&self) -> &[ParamEntry] {
        &self.entries
    }

    /// Number of trainable values (the prefix the optimizer updates).
    pub fn trainable_len(&self) -> usize {
        self.trainable_len
    }

    /// Total number of values.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether the model has no parameter.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The entry called `name`.
    pub fn entry(&self, name: &str) -> Option<&ParamEntry> {
        self.entries.iter().find(|e| e.name == name)
    }

    /// The values of the entry called `name`.
    pub fn get(&self, name: &str) -> Option<&[T]> {
        self.entry(name).map(|e| &self.values[e.range()])
    }

    /// The values of the entry called `name`, writable.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut [T]> {
        let r = self.entry(name)?.range();
        Some(&mut self.values[r])
    }

    /// The trainable prefix, writable, beside the table (what an optimizer needs).
    pub fn split_trainable(&mut self) -> (&mut [T], &[ParamEntry]) {
        (&mut self.values[..self.trainable_len], &self.entries)
    }

    /// Replaces every value (same length), e.g. restoring best weights.
    pub fn set_values(&mut self, values: &[T]) -> Result<()> {
        if values.len() != self.values.len() {
            return Err(TrainError::InvalidArgument {
                name: "set_values",
                message: format!(
                    "the model has {} parameters but {} values were given",
                    self.values.len(),
                    values.len()
                ),
            });
        }
        self.values.copy_from_slice(values);
        Ok(())
    }
}

/// How the model's last layer turns logits into outputs; losses use it to take the
/// stable fused gradient (`p − y`) with respect to the logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OutputActivation {
    /// The outputs are the last layer's values as they are.
    #[default]
    Linear,
    /// Softmax over the last axis.
    Softmax,
    /// Elementwise logistic sigmoid.
    Sigmoid,
}

/// What a forward pass produced: the outputs, and the logits under a final softmax or
/// sigmoid (so losses can use the stable logit form, in training and in evaluation).
#[derive(Clone, Copy, Debug)]
pub struct TrainOutput<'a, T> {
    /// The model's outputs (after the final activation).
    pub outputs: &'a [T],
    /// The values before the final softmax/sigmoid, when there is one.
    pub logits: Option<&'a [T]>,
}

/// A network the training loop can drive: compile-time-shaped models from `model!` and
/// runtime-built ones alike.
///
/// Data cross this trait as flat, sample-major buffers of `batch` samples; the shapes
/// are [`Model::input_shape`] and [`Model::output_shape`] per sample. Implementations
/// keep their activations in buffers reused across steps, so a step allocates nothing
/// once the largest batch has been seen.
pub trait Model {
    /// Element type (f32 as Keras by default; f64 for exact checks).
    type Scalar: crate::Dtype;
    /// Sample shape of the inputs (a [`Shape`] type, or [`crate::Dyn`]).
    type Input: Shape;
    /// Sample shape of the outputs.
    type Output: Shape;

    /// The model's name (for summaries and checkpoints).
    fn name(&self) -> &str;
    /// Per-sample input shape.
    fn input_shape(&self) -> &[usize];
    /// Per-sample output shape.
    fn output_shape(&self) -> &[usize];
    /// The parameter arena.
    fn params(&self) -> &ParamStore<Self::Scalar>;
    /// The parameter arena, writable.
    fn params_mut(&mut self) -> &mut ParamStore<Self::Scalar>;
    /// The final activation, for fused losses.
    fn output_activation(&self) -> OutputActivation;
    /// Inference forward pass (no dropout, moving statistics) over `batch` samples;
    /// keeps nothing for a backward pass.
    fn forward_infer(
        &mut self,
        x: &[Self::Scalar],
        batch: usize,
    ) -> Result<TrainOutput<'_, Self::Scalar>>;
    /// Training forward pass; keeps what [`Model::backward`] needs.
    fn forward_train(
        &mut self,
        x: &[Self::Scalar],
        batch: usize,
    ) -> Result<TrainOutput<'_, Self::Scalar>>;
    /// Backward pass of the last [`Model::forward_train`], given the same input batch
    /// `x`: `d` is the loss gradient with respect to the logits (when `wrt_logits`) or
    /// the outputs. Overwrites `grads` (the arena's layout; non-trainable entries get
    /// zeros).
    fn backward(
        &mut self,
        x: &[Self::Scalar],
        d: &[Self::Scalar],
        wrt_logits: bool,
        grads: &mut [Self::Scalar],
    ) -> Result<()>;
    /// Reseeds stochastic layers (Dropout) so that runs repeat exactly.
    fn reseed(&mut self, _seed: u64) {}
    /// Checks raw inputs the first layer would refuse (an Embedding's token ids outside
    /// its vocabulary), so `fit`, `evaluate` and `predict` fail before the first step.
    fn check_inputs(&self, _x: &[Self::Scalar]) -> Result<()> {
        Ok(())
    }

    /// Values per input sample.
    fn input_len(&self) -> usize {
        self.input_shape().iter().product()
    }
    /// Values per output sample.
    fn output_len(&self) -> usize {
        self.output_shape().iter().product()
    }
}

/// [`Model`] without its shape types, as a trait object: what the training loop,
/// compiled once per float type inside this crate, drives (every `Model` is one).
pub trait DynModel<T: Scalar> {
    /// See [`Model::name`].
    fn name(&self) -> &str;
    /// See [`Model::input_shape`].
    fn input_shape(&self) -> &[usize];
    /// See [`Model::output_shape`].
    fn output_shape(&self) -> &[usize];
    /// See [`Model::params`].
    fn params(&self) -> &ParamStore<T>;
    /// See [`Model::params_mut`].
    fn params_mut(&mut self) -> &mut ParamStore<T>;
    /// See [`Model::output_activation`].
    fn output_activation(&self) -> OutputActivation;
    /// See [`Model::forward_infer`].
    fn forward_infer(&mut self, x: &[T], batch: usize) -> Result<TrainOutput<'_, T>>;
    /// See [`Model::forward_train`].
    fn forward_train(&mut self, x: &[T], batch: usize) -> Result<TrainOutput<'_, T>>;
    /// See [`Model::backward`].
    fn backward(&mut self, x: &[T], d: &[T], wrt_logits: bool, grads: &mut [T]) -> Result<()>;
    /// See [`Model::reseed`].
    fn reseed(&mut self, seed: u64);
    /// See [`Model::check_inputs`].
    fn check_inputs(&self, x: &[T]) -> Result<()>;
    /// Values per input sample.
    fn input_len(&self) -> usize {
        self.input_shape().iter().product()
    }
    /// Values per output sample.
    fn output_len(&self) -> usize {
        self.output_shape().iter().product()
    }
}

impl<M: Model> DynModel<M::Scalar> for M {
    fn name(&self) -> &str {
        Model::name(self)
    }
    fn input_shape(&self) -> &[usize] {
        Model::input_shape(self)
    }
    fn output_shape(&self) -> &[usize] {
        Model::output_shape(self)
    }
    fn params(&self) -> &ParamStore<M::Scalar> {
        Model::params(self)
    }
    fn params_mut(&mut self) -> &mut ParamStore<M::Scalar> {
        Model::params_mut(self)
    }
    fn output_activation(&self) -> OutputActivation {
        Model::output_activation(self)
    }
    fn forward_infer(
        &mut self,
        x: &[M::Scalar],
        batch: usize,
    ) -> Result<TrainOutput<'_, M::Scalar>> {
        Model::forward_infer(self, x, batch)
    }
    fn forward_train(
        &mut self,
        x: &[M::Scalar],
        batch: usize,
    ) -> Result<TrainOutput<'_, M::Scalar>> {
        Model::forward_train(self, x, batch)
    }
    fn backward(
        &mut self,
        x: &[M::Scalar],
        d: &[M::Scalar],
        wrt_logits: bool,
        grads: &mut [M::Scalar],
    ) -> Result<()> {
        Model::backward(self, x, d, wrt_logits, grads)
    }
    fn reseed(&mut self, seed: u64) {
        Model::reseed(self, seed)
    }
    fn check_inputs(&self, x: &[M::Scalar]) -> Result<()> {
        Model::check_inputs(self, x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decl(name: &str, n: usize, trainable: bool) -> ParamDecl<f32> {
        ParamDecl {
            name: name.into(),
            shape: vec![n],
            trainable,
            kind: ParamKind::Other,
            init: vec![n as f32; n],
        }
    }

    #[test]
    fn trainable_parameters_come_first_and_the_table_keeps_declaration_order() {
        let s =
            ParamStore::new(vec![decl("a", 2, true), decl("stat", 3, false), decl("b", 1, true)])
                .unwrap();
        assert_eq!(s.trainable_len(), 3);
        assert_eq!(s.values(), &[2.0, 2.0, 1.0, 3.0, 3.0, 3.0]);
        let names: Vec<&str> = s.entries().iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["a", "stat", "b"]);
        assert_eq!(s.get("stat").unwrap(), &[3.0; 3]);
        assert!(
            ParamStore::new(vec![ParamDecl { init: vec![1.0], ..decl("x", 2, true) }]).is_err()
        );
    }
}
