//! The [`Layer`] trait and kiln's built-in layers, one file per layer or small family.
//!
//! A built-in layer holds its configuration as its kiln-spec type (the one place its
//! arguments, defaults and shape rule are written) plus the buffers its backward pass
//! needs; its parameters live in the model's arena and reach it as [`Params`] views, so
//! the same layer code serves `model!` networks and the runtime [`crate::Sequential`].
//! [`Builtin`] maps each spec type to its layer type: that is how `model!` finds a layer
//! without naming it.
//!
//! Fusion is a capability: a layer may describe itself as an [`Epilogue`] (work that
//! can run on its predecessor's output while it is in cache), and a layer may
//! [`Layer::absorb`] its successor's epilogue into its own pass. The engine asks every
//! adjacent pair once when the model is built; it knows no concrete layer.
//!
//! # The built-in layers
//!
//! What `model!` accepts (and [`builtin`] builds at run time), generated from kiln-spec's
//! argument tables:
//!
#![doc = include_str!(concat!(env!("OUT_DIR"), "/layer_reference.md"))]

mod activations;
mod conv1d;
mod conv2d;
mod custom;
mod dense;
mod dropout;
mod embedding;
mod global_pooling;
mod normalization;
mod pooling;
mod recurrent;
mod reshaping;

pub use activations::Activation;
pub use conv1d::Conv1D;
pub use conv2d::Conv2D;
pub use custom::{InputIs, OutputIs, ShapedLayer, TapeLayer, TapeModule, check_custom_layer};
pub use dense::Dense;
pub use dropout::Dropout;
pub use embedding::Embedding;
pub use global_pooling::{
    GlobalAveragePooling1D, GlobalAveragePooling2D, GlobalMaxPooling1D, GlobalMaxPooling2D,
};
pub use normalization::{BatchNormalization, LayerNormalization};
pub use pooling::{AveragePooling1D, AveragePooling2D, MaxPool1D, MaxPool2D};
pub use recurrent::{Bidirectional, GRU, LSTM, SimpleRNN};
pub use reshaping::{Flatten, Masking, Reshape};

use crate::error::{Error, Result};
use crate::init::Initializer;
use kiln_spec::{LayerSpec, Value};
use kiln_tape::Activation as Elementwise;
use kiln_tape::Scalar;
use kiln_tape::kernels::{softmax, softmax_backward};
use kiln_train::{OutputActivation, ParamKind};
use std::ops::Range;

/// A kiln-spec layer specification that has a kiln layer computing it for scalar `T`.
/// Each layer file implements it for its spec type; `model!` names a layer's type as
/// [`LayerOf`]`<T, kiln::spec::layers::Name>`.
pub trait Builtin<T: Scalar>: LayerSpec {
    /// The layer that computes this specification.
    type Layer: Layer<T> + 'static;
    /// The layer, configured as this specification says.
    fn into_layer(self) -> Self::Layer;
}

/// The kiln layer type of spec type `S` at scalar `T`.
pub type LayerOf<T, S> = <S as Builtin<T>>::Layer;

/// Builds the layer of spec type `S` from written Keras-style arguments (`None`
/// names are positional). This is what `model!` calls for every built-in layer.
pub fn from_args<T: Scalar, S: Builtin<T>>(given: &[(Option<&str>, Value)]) -> Result<S::Layer> {
    S::from_written(given)
        .map(S::into_layer)
        .map_err(|e| Error::Layer { layer: S::CLASS.into(), message: e.message })
}

macro_rules! builtin_table {
    ($($t:ident),* $(,)?) => {
        /// Builds any built-in layer at run time from its Keras class name (or an
        /// alias) and Keras-style arguments, as `model!` would: for configuration
        /// files and recorded Keras models.
        pub fn builtin<T: Scalar>(
            class: &str,
            given: &[(Option<&str>, Value)],
        ) -> Result<Box<dyn Layer<T>>> {
            $(
                if <kiln_spec::layers::$t as LayerSpec>::CLASS == class
                    || <kiln_spec::layers::$t as LayerSpec>::ALIASES.contains(&class)
                {
                    return Ok(Box::new(from_args::<T, kiln_spec::layers::$t>(given)?));
                }
            )*
            let names = kiln_spec::layer_names();
            let hint = kiln_spec::did_you_mean(class, &names)
                .map(|s| format!("did you mean `{s}`? "))
                .unwrap_or_default();
            Err(Error::Layer {
                layer: class.into(),
                message: format!("unknown layer `{class}`; {hint}the built-in layers are listed in kiln::layers"),
            })
        }
    };
}
kiln_spec::with_layers!(builtin_table);

/// Work a layer can do on its predecessor's output tile while that is still in cache,
/// instead of as a pass of its own (see [`Layer::epilogue`] and [`Layer::absorb`]).
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum Epilogue {
    /// Windowed max pooling over `[height, width, channels]`.
    MaxPool2D(kiln_spec::layers::Pool2D),
}

/// The builder setters every kernel-and-bias layer (Dense, Conv1D, Conv2D) shares; the
/// layer holds its kiln-spec configuration in `cfg` and the activation it runs in
/// `activation`.
macro_rules! kernel_bias_setters {
    ($t:ident) => {
        impl<T: Scalar> $t<T> {
            /// The activation, fused into the layer's pass.
            pub fn activation(mut self, a: impl Into<$crate::layers::Act>) -> Self {
                self.activation = a.into();
                self.cfg.activation = self.activation.into();
                self
            }
            /// With or without the bias.
            pub fn use_bias(mut self, b: bool) -> Self {
                self.cfg.use_bias = b;
                self
            }
            /// The kernel's initializer.
            pub fn kernel_initializer(mut self, i: $crate::init::Initializer) -> Self {
                self.cfg.kernel_initializer = i;
                self
            }
            /// The bias's initializer.
            pub fn bias_initializer(mut self, i: $crate::init::Initializer) -> Self {
                self.cfg.bias_initializer = i;
                self
            }
            /// The configuration (kiln-spec's type for this layer).
            pub fn config(&self) -> &kiln_spec::layers::$t {
                &self.cfg
            }
        }
    };
}
use kernel_bias_setters;

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

/// A layer's parameters, read-only, by the names it declared them under (`kernel`,
/// `bias`, `gamma`, ...) or by position.
#[derive(Clone, Copy, Debug)]
pub struct Params<'a, T> {
    values: &'a [T],
    ranges: &'a [Range<usize>],
    names: &'a [&'static str],
}

fn position(names: &[&'static str], name: &str) -> Option<usize> {
    names.iter().position(|n| *n == name)
}

fn undeclared(name: &str, names: &[&'static str]) -> ! {
    panic!("a layer asked for parameter `{name}` but declared only {names:?} in param_specs")
}

impl<'a, T> Params<'a, T> {
    /// Views `values` through the layer's `ranges`, in the order of `names` (the names
    /// of its [`ParamSpec`]s).
    pub fn new(values: &'a [T], ranges: &'a [Range<usize>], names: &'a [&'static str]) -> Self {
        Params { values, ranges, names }
    }
    /// No parameters (a layer that declares none).
    pub fn none() -> Self {
        Params { values: &[], ranges: &[], names: &[] }
    }
    /// The `i`-th declared parameter.
    pub fn get(&self, i: usize) -> &'a [T] {
        &self.values[self.ranges[i].clone()]
    }
    /// The parameter declared as `name`, if the layer declared one (`bias` without
    /// `use_bias` is absent).
    pub fn try_param(&self, name: &str) -> Option<&'a [T]> {
        position(self.names, name).map(|i| self.get(i))
    }
    /// The parameter declared as `name`.
    ///
    /// # Panics
    /// If the layer declared no such parameter: a bug in the layer, not in its input.
    pub fn param(&self, name: &str) -> &'a [T] {
        self.try_param(name).unwrap_or_else(|| undeclared(name, self.names))
    }
}

/// A layer's parameters (or their gradients), writable, by name or by position.
#[derive(Debug)]
pub struct ParamsMut<'a, T> {
    values: &'a mut [T],
    ranges: &'a [Range<usize>],
    names: &'a [&'static str],
}

impl<'a, T> ParamsMut<'a, T> {
    /// Views `values` through the layer's `ranges`, in the order of `names`.
    pub fn new(values: &'a mut [T], ranges: &'a [Range<usize>], names: &'a [&'static str]) -> Self {
        ParamsMut { values, ranges, names }
    }
    /// No parameters (a layer that declares none).
    pub fn none() -> Self {
        ParamsMut { values: &mut [], ranges: &[], names: &[] }
    }
    /// The `i`-th declared parameter.
    pub fn get(&self, i: usize) -> &[T] {
        &self.values[self.ranges[i].clone()]
    }
    /// The `i`-th declared parameter, writable.
    pub fn get_mut(&mut self, i: usize) -> &mut [T] {
        &mut self.values[self.ranges[i].clone()]
    }
    /// The parameter declared as `name`, read-only.
    ///
    /// # Panics
    /// If the layer declared no such parameter: a bug in the layer.
    pub fn param(&self, name: &str) -> &[T] {
        match position(self.names, name) {
            Some(i) => self.get(i),
            None => undeclared(name, self.names),
        }
    }
    /// The parameter declared as `name`, writable, if the layer declared one.
    pub fn try_param_mut(&mut self, name: &str) -> Option<&mut [T]> {
        position(self.names, name).map(|i| self.get_mut(i))
    }
    /// The parameter declared as `name`, writable.
    ///
    /// # Panics
    /// If the layer declared no such parameter: a bug in the layer.
    pub fn param_mut(&mut self, name: &str) -> &mut [T] {
        match position(self.names, name) {
            Some(i) => self.get_mut(i),
            None => undeclared(name, self.names),
        }
    }
    /// Several declared parameters at once by name, writable (they never overlap).
    ///
    /// # Panics
    /// If the layer declared one of them under no such name.
    pub fn params_mut<const N: usize>(&mut self, names: [&str; N]) -> [&mut [T]; N] {
        let idx =
            names.map(|n| position(self.names, n).unwrap_or_else(|| undeclared(n, self.names)));
        self.many_mut(idx)
    }
    /// Several declared parameters at once by position, writable.
    pub fn many_mut<const N: usize>(&mut self, idx: [usize; N]) -> [&mut [T]; N] {
        let ranges = idx.map(|i| self.ranges[i].clone());
        self.values.get_disjoint_mut(ranges).expect("a layer's parameters never overlap")
    }
    /// `kernel` and, when declared, `bias`, writable: the gradients of a
    /// kernel-and-bias layer.
    pub fn kernel_and_bias(&mut self) -> (&mut [T], Option<&mut [T]>) {
        match position(self.names, "bias") {
            Some(_) => {
                let [k, b] = self.params_mut(["kernel", "bias"]);
                (k, Some(b))
            }
            None => (self.param_mut("kernel"), None),
        }
    }
    /// A read-only view.
    pub fn as_params(&self) -> Params<'_, T> {
        Params { values: self.values, ranges: self.ranges, names: self.names }
    }
}

/// What a layer's backward pass reads and writes, after its last `forward_train`.
pub struct Backward<'a, T> {
    /// The layer's parameters.
    pub params: Params<'a, T>,
    /// The input of the forward pass.
    pub x: &'a [T],
    /// Its output.
    pub y: &'a [T],
    /// The gradient with respect to that output.
    pub dy: &'a [T],
    /// Samples in the batch.
    pub batch: usize,
    /// Where the parameter gradients go (overwritten).
    pub grads: ParamsMut<'a, T>,
    /// Where the input gradient goes, when one is wanted (not below the first layer
    /// with parameters).
    pub dx: Option<&'a mut [T]>,
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

impl From<kiln_spec::Activation> for Act {
    fn from(a: kiln_spec::Activation) -> Self {
        match Elementwise::try_from(a) {
            Ok(e) => Act::Elementwise(e),
            Err(_) => Act::Softmax,
        }
    }
}

impl From<Act> for kiln_spec::Activation {
    fn from(a: Act) -> Self {
        use kiln_spec::Activation as S;
        match a {
            Act::Softmax => S::Softmax,
            Act::Elementwise(e) => match e {
                Elementwise::Linear => S::Linear,
                Elementwise::Relu => S::Relu,
                Elementwise::LeakyRelu(s) => S::LeakyRelu(s),
                Elementwise::Elu(a) => S::Elu(a),
                Elementwise::Selu => S::Selu,
                Elementwise::Gelu { approximate } => S::Gelu { approximate },
                Elementwise::Sigmoid => S::Sigmoid,
                Elementwise::HardSigmoid => S::HardSigmoid,
                Elementwise::Tanh => S::Tanh,
                Elementwise::Softplus => S::Softplus,
                Elementwise::Softsign => S::Softsign,
                Elementwise::Swish => S::Swish,
            },
        }
    }
}

impl Act {
    /// No activation.
    pub const LINEAR: Act = Act::Elementwise(Elementwise::Linear);

    /// Every name [`Act::from_name`] accepts (kiln-spec's table).
    pub fn names() -> &'static [&'static str] {
        kiln_spec::ACTIVATIONS
    }

    /// Looks an activation up by its Keras name.
    pub fn from_name(name: &str) -> Option<Act> {
        kiln_spec::Activation::from_name(name).map(Act::from)
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
    /// Backward pass of the last `forward_train`: writes parameter gradients into
    /// `b.grads` (overwriting) and, when asked, the input gradient into `b.dx`.
    fn backward(&mut self, b: Backward<'_, T>) -> kiln_tape::Result<()>;
    /// If the layer ends in softmax or sigmoid, stops applying it and returns it, so the
    /// model can hand the loss the logits (called on a model's last layer only).
    fn split_output_activation(&mut self) -> OutputActivation {
        OutputActivation::Linear
    }
    /// Reseeds any randomness (Dropout).
    fn reseed(&mut self, _seed: u64) {}
    /// Checks a batch of the model's raw inputs `x` (`per_sample` values each) that
    /// this layer, as the first layer, would refuse, so that `fit`, `evaluate` and
    /// `predict` can say so before the first step: Embedding's token ids. The message
    /// names the sample and the value.
    fn check_input(&self, _x: &[T], _per_sample: usize) -> Result<(), String> {
        Ok(())
    }
    /// Writes the mask over its output's steps for the last forward's input `x` (one
    /// value per sample and step: 1 kept, 0 masked) and returns `true`, if this layer
    /// makes one (Masking, `Embedding(mask_zero = true)`). The engine carries it to the
    /// next layers while they keep the step axis.
    fn output_mask(&self, _x: &[T], _batch: usize, _mask: &mut Vec<T>) -> bool {
        false
    }
    /// Receives the mask over its input's steps before each forward pass (or `None`).
    /// The recurrent layers skip masked steps; layers that ignore masks need nothing.
    fn input_mask(&mut self, _mask: Option<&[T]>) {}
    /// This layer as work its predecessor could do on its output tile in cache, if it
    /// is one (MaxPool2D is a [`Epilogue::MaxPool2D`]).
    fn epilogue(&self) -> Option<Epilogue> {
        None
    }
    /// Offers the successor's `epilogue` to this layer (after both are built). A layer
    /// that accepts returns `true` and from then on computes the successor's output in
    /// its own passes: `forward` writes the successor's output, and `backward` gets the
    /// successor's output (as `y`) and its gradient (as `dy`); the engine then skips the
    /// successor. Declining (the default) leaves both layers to run one by one.
    fn absorb(&mut self, _epilogue: &Epilogue) -> bool {
        false
    }
    /// A one-line description of the configuration for `summary()`.
    fn describe(&self) -> String {
        String::new()
    }
}
