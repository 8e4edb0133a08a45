//! Dense, Flatten, Reshape, Dropout and the activation layers.

use super::{activation, elements, initializer};
use crate::LayerSpec;
use crate::names::{Activation as Act, Initializer};
use crate::value::{ArgDef, Args, Default as D, Kind, SpecError};

/// Keras `Dense`: `act(x·W + b)` over the last axis.
#[derive(Clone, Debug, PartialEq)]
pub struct Dense {
    /// Output units.
    pub units: usize,
    /// The activation applied to the output.
    pub activation: Act,
    /// Whether a bias is added.
    pub use_bias: bool,
    /// How the kernel starts.
    pub kernel_initializer: Initializer,
    /// How the bias starts.
    pub bias_initializer: Initializer,
}

impl Dense {
    /// `units` outputs with Keras's defaults.
    pub fn new(units: usize) -> Self {
        Dense {
            units,
            activation: Act::Linear,
            use_bias: true,
            kernel_initializer: Initializer::GlorotUniform,
            bias_initializer: Initializer::Zeros,
        }
    }
}

/// The arguments of a kernel-and-bias layer after its own.
macro_rules! kernel_bias_args {
    ($($own:expr),* $(,)?) => {
        &[
            $($own,)*
            ArgDef::new("activation", Kind::Activation, D::Name("linear")),
            ArgDef::new("use_bias", Kind::Bool, D::Bool(true)),
            ArgDef::new("kernel_initializer", Kind::Initializer, D::Name("glorot_uniform")),
            ArgDef::new("bias_initializer", Kind::Initializer, D::Name("zeros")),
        ]
    };
}
pub(crate) use kernel_bias_args;

impl LayerSpec for Dense {
    const CLASS: &'static str = "Dense";
    const BASE_NAME: &'static str = "dense";
    const ARGS: &'static [ArgDef] =
        kernel_bias_args![ArgDef::new("units", Kind::Count, D::Required)];
    const POSITIONAL: usize = 1;
    const DOC: &'static str = "A fully connected layer, `act(x·W + b)`, applied to the last axis.";

    fn from_args(a: &Args) -> Result<Self, SpecError> {
        Ok(Dense {
            units: a.count("units")?,
            activation: activation(a, "activation")?,
            use_bias: a.bool("use_bias")?,
            kernel_initializer: initializer(a, "kernel_initializer")?,
            bias_initializer: initializer(a, "bias_initializer")?,
        })
    }

    fn output(&self, input: &[usize]) -> Result<Vec<usize>, SpecError> {
        if self.units == 0 {
            return Err(SpecError::layer("Dense needs at least 1 unit, got 0"));
        }
        match input {
            [_] | [_, _] => {
                let mut out = input.to_vec();
                *out.last_mut().unwrap_or(&mut 0) = self.units;
                Ok(out)
            }
            _ => Err(SpecError::layer(format!(
                "Dense needs a flat input but gets {input:?}: add Flatten before it"
            ))),
        }
    }
}

/// Keras `Flatten`: each sample as one axis.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Flatten;

impl LayerSpec for Flatten {
    const CLASS: &'static str = "Flatten";
    const BASE_NAME: &'static str = "flatten";
    const DOC: &'static str = "Each sample's values as one axis.";
    fn from_args(_: &Args) -> Result<Self, SpecError> {
        Ok(Flatten)
    }
    fn output(&self, input: &[usize]) -> Result<Vec<usize>, SpecError> {
        Ok(vec![elements("Flatten", input)?])
    }
}

/// Keras `Reshape`: the same values under another per-sample shape.
#[derive(Clone, Debug, PartialEq)]
pub struct Reshape {
    /// The per-sample shape after the layer.
    pub target_shape: Vec<usize>,
}

impl LayerSpec for Reshape {
    const CLASS: &'static str = "Reshape";
    const BASE_NAME: &'static str = "reshape";
    const ARGS: &'static [ArgDef] = &[ArgDef::new("target_shape", Kind::Shape, D::Required)];
    const POSITIONAL: usize = 1;
    const DOC: &'static str = "The same values under another per-sample shape.";
    fn from_args(a: &Args) -> Result<Self, SpecError> {
        Ok(Reshape { target_shape: a.shape("target_shape")? })
    }
    fn output(&self, input: &[usize]) -> Result<Vec<usize>, SpecError> {
        let target = &self.target_shape;
        let (n_in, n_out) = (elements("Reshape", input)?, elements("Reshape", target)?);
        if n_in != n_out || target.contains(&0) || target.is_empty() {
            return Err(SpecError::layer(format!(
                "Reshape to {target:?} holds {n_out} values but its input {input:?} holds {n_in}: the element counts must match"
            )));
        }
        Ok(target.clone())
    }
}

/// Keras `Dropout`: inverted dropout while training, the identity at inference.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dropout {
    /// The fraction of values dropped, in [0, 1).
    pub rate: f64,
}

impl LayerSpec for Dropout {
    const CLASS: &'static str = "Dropout";
    const BASE_NAME: &'static str = "dropout";
    const ARGS: &'static [ArgDef] = &[ArgDef::new("rate", Kind::Number, D::Required)];
    const POSITIONAL: usize = 1;
    const DOC: &'static str = "Zeroes each value with probability `rate` while training, scaling the rest by 1/(1 − rate).";
    fn from_args(a: &Args) -> Result<Self, SpecError> {
        let d = Dropout { rate: a.number("rate")? };
        d.check()?;
        Ok(d)
    }
    fn output(&self, input: &[usize]) -> Result<Vec<usize>, SpecError> {
        self.check()?;
        Ok(input.to_vec())
    }
}

impl Dropout {
    fn check(&self) -> Result<(), SpecError> {
        // `contains` is false for NaN, so NaN is refused too.
        if (0.0..1.0).contains(&self.rate) {
            Ok(())
        } else {
            Err(SpecError::layer(format!(
                "the Dropout rate must be in [0, 1), got {}: it is the fraction of inputs dropped",
                self.rate
            )))
        }
    }
}

/// The shape rule of every activation layer: any non-empty shape, unchanged.
fn same_shape(class: &str, input: &[usize]) -> Result<Vec<usize>, SpecError> {
    if input.is_empty() {
        return Err(SpecError::layer(format!("{class} needs a non-empty input shape")));
    }
    Ok(input.to_vec())
}

/// Keras `Activation(name)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Activation {
    /// The activation applied.
    pub activation: Act,
}

impl LayerSpec for Activation {
    const CLASS: &'static str = "Activation";
    const BASE_NAME: &'static str = "activation";
    const ARGS: &'static [ArgDef] = &[ArgDef::new("activation", Kind::Activation, D::Required)];
    const POSITIONAL: usize = 1;
    const DOC: &'static str = "Applies the named activation (softmax over the last axis).";
    fn from_args(a: &Args) -> Result<Self, SpecError> {
        Ok(Activation { activation: activation(a, "activation")? })
    }
    fn output(&self, input: &[usize]) -> Result<Vec<usize>, SpecError> {
        same_shape(Self::CLASS, input)
    }
}

/// The activation layers with a fixed activation, or one parameter of it.
macro_rules! activation_layers {
    ($($(#[$doc:meta])* $t:ident, $class:literal, $base:literal, $doc_s:literal,
       [$($arg:expr),*], |$a:ident| $act:expr;)*) => {$(
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq)]
        pub struct $t {
            /// The activation applied.
            pub activation: Act,
        }
        impl LayerSpec for $t {
            const CLASS: &'static str = $class;
            const BASE_NAME: &'static str = $base;
            const ARGS: &'static [ArgDef] = &[$($arg),*];
            const POSITIONAL: usize = Self::ARGS.len();
            const DOC: &'static str = $doc_s;
            fn from_args($a: &Args) -> Result<Self, SpecError> {
                Ok($t { activation: $act })
            }
            fn output(&self, input: &[usize]) -> Result<Vec<usize>, SpecError> {
                same_shape(Self::CLASS, input)
            }
        }
    )*};
}

activation_layers! {
    /// Keras `ReLU`.
    ReLU, "ReLU", "re_lu", "max(x, 0).", [], |_a| Act::Relu;
    /// Keras `LeakyReLU` (the layer's default slope is 0.3).
    LeakyReLU, "LeakyReLU", "leaky_re_lu", "x, or negative_slope·x below zero.",
        [ArgDef::new("negative_slope", Kind::Number, D::Float(0.3))],
        |a| Act::LeakyRelu(a.number("negative_slope")?);
    /// Keras `ELU`.
    ELU, "ELU", "elu", "x, or alpha·(eˣ − 1) below zero.",
        [ArgDef::new("alpha", Kind::Number, D::Float(1.0))], |a| Act::Elu(a.number("alpha")?);
    /// kiln `SELU` (Keras: `Activation("selu")`).
    SELU, "SELU", "selu", "Scaled ELU with SELU's constants.", [], |_a| Act::Selu;
    /// kiln `GELU` (Keras: `Activation("gelu")`).
    GELU, "GELU", "gelu", "Gaussian error linear unit (tanh form when approximate).",
        [ArgDef::new("approximate", Kind::Bool, D::Bool(false))],
        |a| Act::Gelu { approximate: a.bool("approximate")? };
    /// kiln `Sigmoid` (Keras: `Activation("sigmoid")`).
    Sigmoid, "Sigmoid", "sigmoid", "1 / (1 + e⁻ˣ).", [], |_a| Act::Sigmoid;
    /// kiln `Tanh` (Keras: `Activation("tanh")`).
    Tanh, "Tanh", "tanh", "tanh(x).", [], |_a| Act::Tanh;
    /// Keras `Softmax` over the last axis.
    Softmax, "Softmax", "softmax", "Softmax over the last axis.", [], |_a| Act::Softmax;
    /// kiln `Softplus` (Keras: `Activation("softplus")`).
    Softplus, "Softplus", "softplus", "ln(1 + eˣ).", [], |_a| Act::Softplus;
    /// kiln `Swish` (Keras: `Activation("swish")`).
    Swish, "Swish", "swish", "x·sigmoid(x).", [], |_a| Act::Swish;
}

/// Keras `Masking(mask_value)`: a step whose features all equal `mask_value` is masked
/// (zeroed, and skipped by the recurrent layers after it).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Masking {
    /// The padding value.
    pub mask_value: f64,
}

impl LayerSpec for Masking {
    const CLASS: &'static str = "Masking";
    const BASE_NAME: &'static str = "masking";
    const ARGS: &'static [ArgDef] = &[ArgDef::new("mask_value", Kind::Number, D::Float(0.0))];
    const POSITIONAL: usize = 1;
    const DOC: &'static str =
        "Masks the steps whose features all equal mask_value, for the recurrent layers after it.";
    fn from_args(a: &Args) -> Result<Self, SpecError> {
        Ok(Masking { mask_value: a.number("mask_value")? })
    }
    fn output(&self, input: &[usize]) -> Result<Vec<usize>, SpecError> {
        if input.len() != 2 {
            return Err(SpecError::layer(format!(
                "Masking needs a sequence [steps, features] but gets {input:?}"
            )));
        }
        Ok(input.to_vec())
    }
}
