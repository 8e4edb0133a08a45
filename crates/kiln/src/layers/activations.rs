//! Activation layers: ReLU, LeakyReLU, ELU, SELU, GELU, Sigmoid, Tanh, Softmax, Softplus,
//! Swish, and `Activation(name)`. Shape rule: output shape = input shape (Softmax acts on
//! the last axis). At the end of a model, Softmax and Sigmoid hand the loss the logits.

use super::{Act, Backward, Builtin, Layer, Params};
use kiln_spec::{LayerSpec, layers as spec};
use kiln_tape::kernels::parallel::split_items;
use kiln_tape::{Activation as A, Scalar};
use kiln_train::OutputActivation;

/// Elements below which an activation layer stays on one thread.
const PARALLEL_MIN: usize = 1 << 16;

/// A layer that applies one activation (Keras's `Activation` and the dedicated
/// activation layers).
///
/// ```
/// use kiln::prelude::*;
/// model! { struct Net: [3] => [Dense(3), Softmax] }
/// let y = Net::new(Seed(1)).predict(&Inputs::<S1<3>>::from_vec(vec![1.0, 2.0, 3.0])?)?;
/// assert!((y.data().iter().sum::<f32>() - 1.0).abs() < 1e-6); // a distribution
/// # Ok::<(), kiln::Error>(())
/// ```
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
        spec::Activation { activation: act.into().into() }.into_layer()
    }
    fn named<S: LayerSpec>(act: impl Into<Act>) -> Self {
        Activation {
            act: act.into(),
            class: S::CLASS,
            base: S::BASE_NAME,
            width: 0,
            scratch: Vec::new(),
        }
    }
}

/// Each activation layer's spec type maps to [`Activation`] under its own class name,
/// with a constructor of the same name in lower case.
macro_rules! activation_layers {
    ($($(#[$doc:meta])* $t:ident, $name:ident($($arg:ident: $ty:ty),*) => $act:expr;)*) => {
        $(
            impl<T: Scalar> Builtin<T> for spec::$t {
                type Layer = Activation<T>;
                fn into_layer(self) -> Activation<T> {
                    Activation::named::<Self>(self.activation)
                }
            }
        )*
        impl<T: Scalar> Activation<T> {
            $(
                $(#[$doc])*
                pub fn $name($($arg: $ty),*) -> Self {
                    Self::named::<spec::$t>($act)
                }
            )*
        }
    };
}

impl<T: Scalar> Builtin<T> for spec::Activation {
    type Layer = Activation<T>;
    fn into_layer(self) -> Activation<T> {
        Activation::named::<Self>(self.activation)
    }
}

activation_layers! {
    /// Keras `ReLU`.
    ReLU, relu() => A::Relu;
    /// Keras `LeakyReLU` (the layer's default slope is 0.3).
    LeakyReLU, leaky_relu(negative_slope: f64) => A::LeakyRelu(negative_slope);
    /// Keras `ELU` (alpha 1.0 by default).
    ELU, elu(alpha: f64) => A::Elu(alpha);
    /// kiln `SELU` (Keras: `Activation("selu")`).
    SELU, selu() => A::Selu;
    /// kiln `GELU`: exact unless `approximate` (Keras: `Activation("gelu")`).
    GELU, gelu(approximate: bool) => A::Gelu { approximate };
    /// kiln `Sigmoid` (Keras: `Activation("sigmoid")`).
    Sigmoid, sigmoid() => A::Sigmoid;
    /// kiln `Tanh` (Keras: `Activation("tanh")`).
    Tanh, tanh() => A::Tanh;
    /// Keras `Softmax` over the last axis.
    Softmax, softmax() => Act::Softmax;
    /// kiln `Softplus` (Keras: `Activation("softplus")`).
    Softplus, softplus() => A::Softplus;
    /// kiln `Swish` (Keras: `Activation("swish")`).
    Swish, swish() => A::Swish;
}

impl<T: Scalar> Layer<T> for Activation<T> {
    fn class_name(&self) -> &'static str {
        self.class
    }
    fn base_name(&self) -> &'static str {
        self.base
    }
    fn build(&mut self, input: &[usize]) -> Result<Vec<usize>, String> {
        let out = spec::Activation { activation: self.act.into() }
            .output(input)
            .map_err(|e| e.message.replace(spec::Activation::CLASS, self.class))?;
        self.width = input[input.len() - 1];
        Ok(out)
    }
    fn forward(
        &mut self,
        _p: Params<'_, T>,
        x: &[T],
        _batch: usize,
        y: &mut [T],
    ) -> kiln_tape::Result<()> {
        let y = &mut y[..x.len()];
        let act = self.act;
        if act == Act::Elementwise(A::Relu) {
            // The common case in one pass over both cores (element-wise: the same bits
            // on any number of threads).
            split_items(y, x.len() / self.width.max(1), self.width, PARALLEL_MIN, &|rows, part| {
                let src = &x[rows.start * self.width..rows.end * self.width];
                for (o, &v) in part.iter_mut().zip(src) {
                    *o = if v > T::zero() { v } else { T::zero() };
                }
            });
            return Ok(());
        }
        y.copy_from_slice(x);
        act.apply_inplace(y, self.width, &mut self.scratch);
        Ok(())
    }
    fn backward(&mut self, b: Backward<'_, T>) -> kiln_tape::Result<()> {
        let Backward { x, y, dy, dx, .. } = b;
        if let Some(dx) = dx {
            let (act, width, n) = (self.act, self.width.max(1), x.len());
            let rows = n / width;
            split_items(&mut dx[..n], rows, width, PARALLEL_MIN, &|r, part| {
                let at = r.start * width..r.end * width;
                act.backward(&x[at.clone()], &y[at.clone()], &dy[at], width, part);
            });
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
