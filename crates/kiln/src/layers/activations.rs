//! Activation layers: ReLU, LeakyReLU, ELU, SELU, GELU, Sigmoid, Tanh, Softmax, Softplus,
//! Swish, and `Activation(name)`. Shape rule: output shape = input shape (Softmax acts on
//! the last axis). At the end of a model, Softmax and Sigmoid hand the loss the logits.

use super::{Act, Layer, Params, ParamsMut};
use kiln_tape::{Activation as A, Scalar};
use kiln_train::OutputActivation;

/// A layer that applies one activation (Keras's `Activation` and the dedicated
/// activation layers).
#[derive(Clone, Debug)]
pub struct Activation<T = f32> {
    act: Act,
    class: &'static str,
    base: &'static str,
    width: usize,
    scratch: Vec<T>,
}

impl<T: Scalar> Activation<T> {
    /// `Activation(act)`.
    pub fn new(act: impl Into<Act>) -> Self {
        Self::named(act.into(), "Activation", "activation")
    }
    fn named(act: Act, class: &'static str, base: &'static str) -> Self {
        Activation { act, class, base, width: 0, scratch: Vec::new() }
    }
}

macro_rules! activation_layers {
    ($($(#[$doc:meta])* $name:ident, $class:literal, $base:literal, $act:expr;)*) => {
        impl<T: Scalar> Activation<T> {
            $(
                $(#[$doc])*
                pub fn $name() -> Self {
                    Self::named($act, $class, $base)
                }
            )*

            /// Keras `LeakyReLU` (the layer's default slope is 0.3).
            pub fn leaky_relu(negative_slope: f64) -> Self {
                Self::named(Act::Elementwise(A::LeakyRelu(negative_slope)), "LeakyReLU", "leaky_re_lu")
            }

            /// Keras `ELU` (alpha 1.0 by default).
            pub fn elu(alpha: f64) -> Self {
                Self::named(Act::Elementwise(A::Elu(alpha)), "ELU", "elu")
            }

            /// kiln `GELU`: exact unless `approximate` (Keras: `Activation("gelu")`).
            pub fn gelu(approximate: bool) -> Self {
                Self::named(Act::Elementwise(A::Gelu { approximate }), "GELU", "gelu")
            }
        }
    };
}

activation_layers! {
    /// Keras `ReLU`.
    relu, "ReLU", "re_lu", Act::Elementwise(A::Relu);
    /// kiln `SELU` (Keras: `Activation("selu")`).
    selu, "SELU", "selu", Act::Elementwise(A::Selu);
    /// kiln `Sigmoid` (Keras: `Activation("sigmoid")`).
    sigmoid, "Sigmoid", "sigmoid", Act::Elementwise(A::Sigmoid);
    /// kiln `Tanh` (Keras: `Activation("tanh")`).
    tanh, "Tanh", "tanh", Act::Elementwise(A::Tanh);
    /// Keras `Softmax` over the last axis.
    softmax, "Softmax", "softmax", Act::Softmax;
    /// kiln `Softplus` (Keras: `Activation("softplus")`).
    softplus, "Softplus", "softplus", Act::Elementwise(A::Softplus);
    /// kiln `Swish` (Keras: `Activation("swish")`).
    swish, "Swish", "swish", Act::Elementwise(A::Swish);
}

impl<T: Scalar> Layer<T> for Activation<T> {
    fn class_name(&self) -> &'static str {
        self.class
    }
    fn base_name(&self) -> &'static str {
        self.base
    }
    fn build(&mut self, input: &[usize]) -> Result<Vec<usize>, String> {
        self.width = *input.last().ok_or("an activation needs a non-empty input shape")?;
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
        let act = self.act;
        act.apply_inplace(&mut y[..x.len()], self.width, &mut self.scratch);
        Ok(())
    }
    fn backward(
        &mut self,
        _p: Params<'_, T>,
        x: &[T],
        y: &[T],
        dy: &[T],
        _b: usize,
        _g: ParamsMut<'_, T>,
        dx: Option<&mut [T]>,
    ) -> kiln_tape::Result<()> {
        if let Some(dx) = dx {
            self.act.backward(x, &y[..x.len()], &dy[..x.len()], self.width, &mut dx[..x.len()]);
        }
        Ok(())
    }
    fn split_output_activation(&mut self) -> OutputActivation {
        self.act.split_output()
    }
    fn describe(&self) -> String {
        format!("activation={}", self.act.name())
    }
}
