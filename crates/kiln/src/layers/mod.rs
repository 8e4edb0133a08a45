//! The [`Layer`] trait and kiln's built-in layers, one file each.
//!
//! A layer owns its hyperparameters and the buffers its backward pass needs; its
//! parameters live in the model's arena and reach it as [`Params`] views, so the same
//! layer code serves `model!` networks and the runtime [`crate::Sequential`].

mod activations;
mod conv2d;
mod custom;
mod dense;
mod dropout;
mod embedding;
mod normalization;
mod pooling;
mod reshaping;

pub use activations::Activation;
pub use conv2d::Conv2D;
pub use custom::{InputIs, OutputIs, ShapedLayer, TapeLayer, TapeModule, check_custom_layer};
pub use dense::Dense;
pub use dropout::Dropout;
pub use embedding::Embedding;
pub use normalization::{BatchNormalization, LayerNormalization};
pub use pooling::{AveragePooling2D, GlobalAveragePooling2D, MaxPool2D};
pub use reshaping::{Flatten, Reshape};

use crate::init::Initializer;
use kiln_tape::Activation as Elementwise;
use kiln_tape::Scalar;
use kiln_tape::kernels::{softmax, softmax_backward};
use kiln_train::{OutputActivation, ParamKind};
use std::ops::Range;

/// A parameter as a layer declares it.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamSpec {
    /// The variable's name within the layer (`kernel`, `bias`, `gamma`, ...).
    pub name: &'static str,
    /// Its shape in Keras's layout.
    pub shape: Vec<usize>,
    /// How its first values are drawn.
    pub init: Initializer,
    /// Whether the optimizer updates it.
    pub trainable: bool,
    /// What it is.
    pub kind: ParamKind,
}

/// The parameters of a kernel-and-bias layer (Dense, Conv2D): `kernel` of
/// `kernel_shape`, then, with `use_bias`, a `bias` of `units` values.
pub fn kernel_and_bias(
    kernel_shape: Vec<usize>,
    units: usize,
    kernel: Initializer,
    bias: Initializer,
    use_bias: bool,
) -> Vec<ParamSpec> {
    let mut v = vec![ParamSpec {
        name: "kernel",
        shape: kernel_shape,
        init: kernel,
        trainable: true,
        kind: ParamKind::Kernel,
    }];
    if use_bias {
        v.push(ParamSpec {
            name: "bias",
            shape: vec![units],
            init: bias,
            trainable: true,
            kind: ParamKind::Bias,
        });
    }
    v
}

/// A layer's parameters, read-only, in the order it declared them.
#[derive(Clone, Copy, Debug)]
pub struct Params<'a, T> {
    values: &'a [T],
    ranges: &'a [Range<usize>],
}

impl<'a, T> Params<'a, T> {
    /// Views `values` through the layer's `ranges`.
    pub fn new(values: &'a [T], ranges: &'a [Range<usize>]) -> Self {
        Params { values, ranges }
    }
    /// The `i`-th declared parameter.
    pub fn get(&self, i: usize) -> &'a [T] {
        &self.values[self.ranges[i].clone()]
    }
}

/// A layer's parameters (or their gradients), writable.
#[derive(Debug)]
pub struct ParamsMut<'a, T> {
    values: &'a mut [T],
    ranges: &'a [Range<usize>],
}

impl<'a, T> ParamsMut<'a, T> {
    /// Views `values` through the layer's `ranges`.
    pub fn new(values: &'a mut [T], ranges: &'a [Range<usize>]) -> Self {
        ParamsMut { values, ranges }
    }
    /// The `i`-th declared parameter.
    pub fn get(&self, i: usize) -> &[T] {
        &self.values[self.ranges[i].clone()]
    }
    /// The `i`-th declared parameter, writable.
    pub fn get_mut(&mut self, i: usize) -> &mut [T] {
        &mut self.values[self.ranges[i].clone()]
    }
    /// Several declared parameters at once, writable (they never overlap).
    pub fn many_mut<const N: usize>(&mut self, idx: [usize; N]) -> [&mut [T]; N] {
        let ranges = idx.map(|i| self.ranges[i].clone());
        self.values.get_disjoint_mut(ranges).expect("a layer's parameters never overlap")
    }
    /// A read-only view.
    pub fn as_params(&self) -> Params<'_, T> {
        Params { values: self.values, ranges: self.ranges }
    }
}

/// A layer's activation: any elementwise [`kiln_tape::Activation`], or softmax over the
/// last axis.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub enum Act {
    /// Elementwise.
    Elementwise(Elementwise),
    /// Softmax over the last axis.
    #[default]
    Softmax,
}

impl Act {
    /// No activation.
    pub const LINEAR: Act = Act::Elementwise(Elementwise::Linear);

    /// Every name [`Act::from_name`] accepts.
    pub fn names() -> Vec<&'static str> {
        let mut v = Elementwise::NAMES.to_vec();
        v.push("softmax");
        v
    }

    /// Looks an activation up by its Keras name.
    pub fn from_name(name: &str) -> Option<Act> {
        if name == "softmax" {
            Some(Act::Softmax)
        } else {
            Elementwise::from_name(name).map(Act::Elementwise)
        }
    }

    /// The Keras name.
    pub fn name(&self) -> &'static str {
        match self {
            Act::Softmax => "softmax",
            Act::Elementwise(a) => a.name(),
        }
    }

    /// Whether this is the identity.
    pub fn is_linear(&self) -> bool {
        *self == Act::LINEAR
    }

    /// The loss-fusable form of this activation when it ends a model.
    pub fn as_output(&self) -> OutputActivation {
        match self {
            Act::Softmax => OutputActivation::Softmax,
            Act::Elementwise(Elementwise::Sigmoid) => OutputActivation::Sigmoid,
            _ => OutputActivation::Linear,
        }
    }

    /// Whether the backward pass needs the pre-activation values kept.
    pub fn needs_input(&self) -> bool {
        matches!(self, Act::Elementwise(a) if a.needs_input())
    }

    /// Applies the activation in place on rows of `width`.
    pub fn apply_inplace<T: Scalar>(&self, y: &mut [T], width: usize, scratch: &mut Vec<T>) {
        match self {
            Act::Elementwise(a) => a.forward_inplace(y),
            Act::Softmax => {
                scratch.clear();
                scratch.extend_from_slice(y);
                // Lengths match by construction.
                let _ = softmax(scratch, width, y);
            }
        }
    }

    /// Stops applying a final softmax/sigmoid and returns it (see
    /// [`Layer::split_output_activation`]); other activations stay.
    pub fn split_output(&mut self) -> OutputActivation {
        let out = self.as_output();
        if out != OutputActivation::Linear {
            *self = Act::LINEAR;
        }
        out
    }

    /// The gradient with respect to the pre-activation: `dy` itself when linear, else
    /// `dy ⊙ act'` written into `buf` (resized once to the largest batch).
    pub fn grad_through<'a, T: Scalar>(
        &self,
        z: &[T],
        y: &[T],
        dy: &'a [T],
        width: usize,
        buf: &'a mut Vec<T>,
    ) -> &'a [T] {
        if self.is_linear() {
            return dy;
        }
        if buf.len() < dy.len() {
            buf.resize(dy.len(), T::zero());
        }
        let out = &mut buf[..dy.len()];
        self.backward(z, &y[..dy.len()], dy, width, out);
        out
    }

    /// `dz = dy ⊙ act'(z)` from the output `y` (and the input `z` where needed).
    pub fn backward<T: Scalar>(&self, z: &[T], y: &[T], dy: &[T], width: usize, dz: &mut [T]) {
        match self {
            Act::Softmax => {
                let _ = softmax_backward(y, dy, width, dz);
            }
            Act::Elementwise(a) if a.needs_input() => {
                for i in 0..dz.len() {
                    dz[i] = dy[i] * a.derivative(z[i], y[i]);
                }
            }
            Act::Elementwise(Elementwise::Relu) => {
                for ((d, &g), &v) in dz.iter_mut().zip(dy).zip(y) {
                    *d = if v > T::zero() { g } else { T::zero() };
                }
            }
            Act::Elementwise(a) => {
                for i in 0..dz.len() {
                    dz[i] = dy[i] * a.derivative_from_output(y[i]);
                }
            }
        }
    }
}

impl From<Elementwise> for Act {
    fn from(a: Elementwise) -> Self {
        Act::Elementwise(a)
    }
}

/// A layer of a Sequential network. Implement it to write a layer by hand (see
/// `examples/custom_layer.rs`); the built-in layers implement it too.
pub trait Layer<T: Scalar>: Send {
    /// Keras's class name, shown by `summary()` (`Dense`).
    fn class_name(&self) -> &'static str;
    /// The base of instance names (`dense` → `dense`, `dense_1`, ...).
    fn base_name(&self) -> &'static str;
    /// Fixes the layer to a per-sample input shape and returns its output shape, or a
    /// sentence saying why the input does not fit and how to fix it.
    fn build(&mut self, input: &[usize]) -> Result<Vec<usize>, String>;
    /// The parameters it needs (after `build`).
    fn param_specs(&self) -> Vec<ParamSpec> {
        Vec::new()
    }
    /// Inference forward pass over `batch` samples from `x` into `y`.
    fn forward(
        &mut self,
        p: Params<'_, T>,
        x: &[T],
        batch: usize,
        y: &mut [T],
    ) -> kiln_tape::Result<()>;
    /// Training forward pass; keeps what `backward` needs in reused buffers. It may
    /// update non-trainable parameters (BatchNormalization's moving statistics).
    fn forward_train(
        &mut self,
        p: ParamsMut<'_, T>,
        x: &[T],
        batch: usize,
        y: &mut [T],
    ) -> kiln_tape::Result<()> {
        self.forward(p.as_params(), x, batch, y)
    }
    /// Backward pass of the last `forward_train`: writes parameter gradients into `g`
    /// (overwriting) and, when asked, the input gradient into `dx`.
    #[allow(clippy::too_many_arguments)]
    fn backward(
        &mut self,
        p: Params<'_, T>,
        x: &[T],
        y: &[T],
        dy: &[T],
        batch: usize,
        g: ParamsMut<'_, T>,
        dx: Option<&mut [T]>,
    ) -> kiln_tape::Result<()>;
    /// If the layer ends in softmax or sigmoid, stops applying it and returns it, so the
    /// model can hand the loss the logits (called on a model's last layer only).
    fn split_output_activation(&mut self) -> OutputActivation {
        OutputActivation::Linear
    }
    /// Reseeds any randomness (Dropout).
    fn reseed(&mut self, _seed: u64) {}
    /// A one-line description of the configuration for `summary()`.
    fn describe(&self) -> String {
        String::new()
    }
}
