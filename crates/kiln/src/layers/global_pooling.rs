//! Global pooling: the mean or the maximum over every position of each channel —
//! `GlobalAveragePooling1D` / `GlobalMaxPooling1D` on `[steps, channels]` samples and
//! `GlobalAveragePooling2D` / `GlobalMaxPooling2D` on `[height, width, channels]`.
//!
//! Shape rule (kiln-spec's `Global`): `[.., c]` → `[c]`, or with `keepdims` the pooled
//! axes kept as size 1. The max's gradient is shared equally by tied maxima, as the
//! gradient of TensorFlow's and JAX's `reduce_max`.

use super::{Backward, Builtin, Layer, Params};
use kiln_spec::LayerSpec;
use kiln_spec::layers::{self as spec, Global};
use kiln_tape::Scalar;
use kiln_tape::kernels::{
    global_avg_pool2d_backward, global_avg_pool2d_forward, global_max_pool_backward,
    global_max_pool_forward,
};

macro_rules! global_layer {
    ($($(#[$doc:meta])* $name:ident, $max:literal;)*) => {$(
        $(#[$doc])*
        #[derive(Clone, Debug, Default)]
        pub struct $name<T = f32> {
            cfg: Global,
            /// Positions pooled and channels.
            input: [usize; 2],
            count: Vec<T>,
        }
        impl<T: Scalar> Builtin<T> for spec::$name {
            type Layer = $name<T>;
            fn into_layer(self) -> $name<T> {
                $name { cfg: self.0, input: [0; 2], count: Vec::new() }
            }
        }
        impl<T: Scalar> $name<T> {
            /// The layer with Keras's defaults (pooled axes dropped).
            pub fn new() -> Self {
                spec::$name::default().into_layer()
            }
            /// Keeps the pooled axes as size 1.
            pub fn keepdims(mut self, keep: bool) -> Self {
                self.cfg.keepdims = keep;
                self
            }
        }
        impl<T: Scalar> Layer<T> for $name<T> {
            fn class_name(&self) -> &'static str {
                spec::$name::CLASS
            }
            fn base_name(&self) -> &'static str {
                spec::$name::BASE_NAME
            }
            fn build(&mut self, input: &[usize]) -> Result<Vec<usize>, String> {
                let out = spec::$name(self.cfg).output(input).map_err(|e| e.message)?;
                let c = input[input.len() - 1];
                self.input = [input[..input.len() - 1].iter().product(), c];
                Ok(out)
            }
            fn forward(&mut self, _p: Params<'_, T>, x: &[T], batch: usize, y: &mut [T]) -> kiln_tape::Result<()> {
                let [p, c] = self.input;
                let (x, y) = (&x[..batch * p * c], &mut y[..batch * c]);
                if $max {
                    global_max_pool_forward([batch, p, c], x, y)
                } else {
                    global_avg_pool2d_forward([batch, 1, p, c], x, y)
                }
            }
            fn backward(&mut self, b: Backward<'_, T>) -> kiln_tape::Result<()> {
                let Backward { x, y, dy, batch, dx, .. } = b;
                let Some(dx) = dx else { return Ok(()) };
                let [p, c] = self.input;
                let (dy, dx) = (&dy[..batch * c], &mut dx[..batch * p * c]);
                if $max {
                    global_max_pool_backward([batch, p, c], &x[..batch * p * c], &y[..batch * c], dy, dx, &mut self.count)
                } else {
                    global_avg_pool2d_backward([batch, 1, p, c], dy, dx)
                }
            }
            fn describe(&self) -> String {
                format!("keepdims={}", self.cfg.keepdims)
            }
        }
    )*};
}

global_layer! {
    /// The mean over all steps of each channel (Keras `GlobalAveragePooling1D`).
    ///
    /// ```
    /// use kiln::prelude::*;
    /// model! { struct Net: [3, 2] => [GlobalAveragePooling1D] }
    /// let y = Net::new(Seed(1)).predict(&Inputs::<S2<3, 2>>::from_vec(vec![1.0, 0.0, 2.0, 3.0, 3.0, 3.0])?)?;
    /// assert_eq!(y.data(), &[2.0, 2.0]); // per channel, over the steps
    /// # Ok::<(), kiln::Error>(())
    /// ```
    GlobalAveragePooling1D, false;
    /// The maximum over all steps of each channel (Keras `GlobalMaxPooling1D`).
    ///
    /// ```
    /// use kiln::prelude::*;
    /// model! { struct Net: [3, 2] => [GlobalMaxPooling1D] }
    /// let y = Net::new(Seed(1)).predict(&Inputs::<S2<3, 2>>::from_vec(vec![1.0, 0.0, 2.0, 3.0, 3.0, 1.0])?)?;
    /// assert_eq!(y.data(), &[3.0, 3.0]); // per channel, over the steps
    /// # Ok::<(), kiln::Error>(())
    /// ```
    GlobalMaxPooling1D, true;
    /// The mean over all positions of each channel (Keras `GlobalAveragePooling2D`).
    ///
    /// ```
    /// use kiln::prelude::*;
    /// model! { struct Net: [2, 2, 1] => [GlobalAveragePooling2D] }
    /// let y = Net::new(Seed(1)).predict(&Inputs::<S3<2, 2, 1>>::from_vec(vec![1.0, 5.0, -2.0, 4.0])?)?;
    /// assert_eq!(y.data(), &[2.0]); // per channel, over the image
    /// # Ok::<(), kiln::Error>(())
    /// ```
    GlobalAveragePooling2D, false;
    /// The maximum over all positions of each channel (Keras `GlobalMaxPooling2D`).
    ///
    /// ```
    /// use kiln::prelude::*;
    /// model! { struct Net: [2, 2, 1] => [GlobalMaxPooling2D] }
    /// let y = Net::new(Seed(1)).predict(&Inputs::<S3<2, 2, 1>>::from_vec(vec![1.0, 5.0, -2.0, 4.0])?)?;
    /// assert_eq!(y.data(), &[5.0]); // per channel, over the image
    /// # Ok::<(), kiln::Error>(())
    /// ```
    GlobalMaxPooling2D, true;
}
