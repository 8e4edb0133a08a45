//! Windowed pooling: `MaxPool2D` and `AveragePooling2D` on `[height, width, channels]`
//! samples, `MaxPool1D` and `AveragePooling1D` on `[steps, channels]` samples (run by
//! the same kernels as a `[1, steps, channels]` image).
//!
//! Shape rules (kiln-spec's `Pool2D` / `Pool1D`): windows as in convolutions, strides
//! defaulting to the pool size, as Keras. Same padding averages only the values inside
//! the input, as TensorFlow. A MaxPool2D can be absorbed by the Conv2D before it
//! ([`super::Epilogue::MaxPool2D`]).

use super::{Backward, Builtin, Epilogue, Layer, Params};
use kiln_spec::LayerSpec;
use kiln_spec::layers::{self as spec, Pool1D, Pool2D};
use kiln_tape::Scalar;
use kiln_tape::kernels::{
    Padding, Pool2dGeometry, avg_pool2d_backward, avg_pool2d_forward,
    max_pool2d_backward_from_values, max_pool2d_forward,
};

/// A pool's window as the kernels see it, and the input it was built for.
#[derive(Clone, Copy, Debug)]
struct Window {
    cfg: Pool2D,
    /// Whether the strides were set (else they follow the pool size).
    strides_set: bool,
    input: [usize; 3],
}

impl Window {
    fn new(cfg: Pool2D) -> Self {
        Window { cfg, strides_set: cfg.strides != cfg.pool_size, input: [0; 3] }
    }
    fn geometry(&self, batch: usize) -> kiln_tape::Result<Pool2dGeometry> {
        let [h, w, c] = self.input;
        Pool2dGeometry::new(
            &[batch, h, w, c],
            self.cfg.pool_size,
            self.cfg.strides,
            self.cfg.padding,
        )
    }
    fn describe(&self) -> String {
        let ((ph, pw), (sh, sw)) = (self.cfg.pool_size, self.cfg.strides);
        format!("pool={ph}x{pw}, strides={sh}x{sw}, padding={}", self.cfg.padding.name())
    }
    fn max_forward<T: Scalar>(&self, x: &[T], batch: usize, y: &mut [T]) -> kiln_tape::Result<()> {
        // No argmax is kept: backward finds each window's winner again from x and y.
        let g = self.geometry(batch)?;
        max_pool2d_forward(&g, &x[..g.input_len()], &mut y[..g.output_len()], None)
    }
    fn max_backward<T: Scalar>(
        &self,
        x: &[T],
        y: &[T],
        dy: &[T],
        batch: usize,
        dx: Option<&mut [T]>,
    ) -> kiln_tape::Result<()> {
        let Some(dx) = dx else { return Ok(()) };
        let g = self.geometry(batch)?;
        let (i, o) = (g.input_len(), g.output_len());
        max_pool2d_backward_from_values(&g, &x[..i], &y[..o], &dy[..o], &mut dx[..i])
    }
    fn avg_forward<T: Scalar>(&self, x: &[T], batch: usize, y: &mut [T]) -> kiln_tape::Result<()> {
        let g = self.geometry(batch)?;
        avg_pool2d_forward(&g, &x[..g.input_len()], &mut y[..g.output_len()])
    }
    fn avg_backward<T: Scalar>(
        &self,
        dy: &[T],
        batch: usize,
        dx: Option<&mut [T]>,
    ) -> kiln_tape::Result<()> {
        let Some(dx) = dx else { return Ok(()) };
        let g = self.geometry(batch)?;
        avg_pool2d_backward(&g, &dy[..g.output_len()], &mut dx[..g.input_len()])
    }
}

/// Defines a pooling layer: its struct, constructor and setters, its `Builtin` mapping
/// and its `Layer` impl, which differ only in the kernels and the axes.
macro_rules! pooling_layer {
    (
        $(#[$doc:meta])* $name:ident, $spec:ident, 2d, $fwd:ident, |$w:ident, $x:ident, $y:ident, $dy:ident, $b:ident, $dx:ident| $bwd:expr,
        extra { $($extra:tt)* }
    ) => {
        $(#[$doc])*
        #[derive(Clone, Debug)]
        pub struct $name {
            w: Window,
        }
        impl<T: Scalar> Builtin<T> for spec::$spec {
            type Layer = $name;
            fn into_layer(self) -> $name {
                $name { w: Window::new(self.0) }
            }
        }
        impl $name {
            /// A `pool × pool` window, strides equal to the pool, valid padding.
            pub fn new(pool: usize) -> Self {
                $name { w: Window::new(Pool2D::new(pool)) }
            }
            /// A rectangular window (strides follow it unless set).
            pub fn pool(mut self, ph: usize, pw: usize) -> Self {
                self.w.cfg.pool_size = (ph, pw);
                if !self.w.strides_set {
                    self.w.cfg.strides = (ph, pw);
                }
                self
            }
            /// Strides (default: the pool size).
            pub fn strides(mut self, sh: usize, sw: usize) -> Self {
                self.w.cfg.strides = (sh, sw);
                self.w.strides_set = true;
                self
            }
            /// Valid or same padding.
            pub fn padding(mut self, p: Padding) -> Self {
                self.w.cfg.padding = p;
                self
            }
            /// The configuration.
            pub fn config(&self) -> &Pool2D {
                &self.w.cfg
            }
        }
        impl<T: Scalar> Layer<T> for $name {
            fn class_name(&self) -> &'static str {
                spec::$spec::CLASS
            }
            fn base_name(&self) -> &'static str {
                spec::$spec::BASE_NAME
            }
            fn build(&mut self, input: &[usize]) -> Result<Vec<usize>, String> {
                let out = spec::$spec(self.w.cfg).output(input).map_err(|e| e.message)?;
                self.w.input = [input[0], input[1], input[2]];
                Ok(out)
            }
            fn forward(&mut self, _p: Params<'_, T>, x: &[T], batch: usize, y: &mut [T]) -> kiln_tape::Result<()> {
                self.w.$fwd(x, batch, y)
            }
            #[allow(unused_variables)]
            fn backward(&mut self, b: Backward<'_, T>) -> kiln_tape::Result<()> {
                let Backward { x: $x, y: $y, dy: $dy, batch: $b, dx: $dx, .. } = b;
                let $w = &self.w;
                $bwd
            }
            fn describe(&self) -> String {
                self.w.describe()
            }
            $($extra)*
        }
    };
    (
        $(#[$doc:meta])* $name:ident, $spec:ident, 1d, $fwd:ident, |$w:ident, $x:ident, $y:ident, $dy:ident, $b:ident, $dx:ident| $bwd:expr
    ) => {
        $(#[$doc])*
        #[derive(Clone, Debug)]
        pub struct $name {
            cfg: Pool1D,
            w: Window,
        }
        impl<T: Scalar> Builtin<T> for spec::$spec {
            type Layer = $name;
            fn into_layer(self) -> $name {
                $name { cfg: self.0, w: Window::new(self.0.as_2d()) }
            }
        }
        impl $name {
            /// A `pool`-step window, stride equal to the pool, valid padding.
            pub fn new(pool: usize) -> Self {
                <spec::$spec as Builtin<f32>>::into_layer(spec::$spec(Pool1D::new(pool)))
            }
            /// The stride (default: the pool size).
            pub fn strides(mut self, s: usize) -> Self {
                self.cfg.strides = s;
                self
            }
            /// Valid or same padding.
            pub fn padding(mut self, p: Padding) -> Self {
                self.cfg.padding = p;
                self
            }
            /// The configuration.
            pub fn config(&self) -> &Pool1D {
                &self.cfg
            }
        }
        impl<T: Scalar> Layer<T> for $name {
            fn class_name(&self) -> &'static str {
                spec::$spec::CLASS
            }
            fn base_name(&self) -> &'static str {
                spec::$spec::BASE_NAME
            }
            fn build(&mut self, input: &[usize]) -> Result<Vec<usize>, String> {
                let out = spec::$spec(self.cfg).output(input).map_err(|e| e.message)?;
                self.w = Window::new(self.cfg.as_2d());
                self.w.input = [1, input[0], input[1]];
                Ok(out)
            }
            fn forward(&mut self, _p: Params<'_, T>, x: &[T], batch: usize, y: &mut [T]) -> kiln_tape::Result<()> {
                self.w.$fwd(x, batch, y)
            }
            #[allow(unused_variables)]
            fn backward(&mut self, b: Backward<'_, T>) -> kiln_tape::Result<()> {
                let Backward { x: $x, y: $y, dy: $dy, batch: $b, dx: $dx, .. } = b;
                let $w = &self.w;
                $bwd
            }
            fn describe(&self) -> String {
                format!("pool={}, strides={}, padding={}", self.cfg.pool_size, self.cfg.strides, self.cfg.padding.name())
            }
        }
    };
}

pooling_layer! {
    /// Max pooling (Keras `MaxPooling2D` / `MaxPool2D`).
    ///
    /// ```
    /// use kiln::prelude::*;
    /// model! { struct Net: [2, 2, 1] => [MaxPool2D(2)] }
    /// let y = Net::new(Seed(1)).predict(&Inputs::<S3<2, 2, 1>>::from_vec(vec![1.0, 5.0, -2.0, 3.0])?)?;
    /// assert_eq!((y.sample_shape(), y.data()), (&[1, 1, 1][..], &[5.0][..]));
    /// # Ok::<(), kiln::Error>(())
    /// ```
    MaxPool2D, MaxPooling2D, 2d, max_forward, |w, x, y, dy, batch, dx| w.max_backward(x, y, dy, batch, dx),
    extra {
        fn epilogue(&self) -> Option<Epilogue> {
            Some(Epilogue::MaxPool2D(self.w.cfg))
        }
    }
}

pooling_layer! {
    /// Average pooling (Keras `AveragePooling2D`); same padding averages only the values
    /// inside the input, as TensorFlow.
    ///
    /// ```
    /// use kiln::prelude::*;
    /// model! { struct Net: [2, 2, 1] => [AveragePooling2D(2)] }
    /// let y = Net::new(Seed(1)).predict(&Inputs::<S3<2, 2, 1>>::from_vec(vec![1.0, 5.0, -2.0, 4.0])?)?;
    /// assert_eq!((y.sample_shape(), y.data()), (&[1, 1, 1][..], &[2.0][..]));
    /// # Ok::<(), kiln::Error>(())
    /// ```
    AveragePooling2D, AveragePooling2D, 2d, avg_forward, |w, x, y, dy, batch, dx| w.avg_backward(dy, batch, dx),
    extra {}
}

pooling_layer! {
    /// Max pooling over steps (Keras `MaxPooling1D`).
    ///
    /// ```
    /// use kiln::prelude::*;
    /// model! { struct Net: [4, 1] => [MaxPool1D(2)] }
    /// let y = Net::new(Seed(1)).predict(&Inputs::<S2<4, 1>>::from_vec(vec![1.0, 5.0, -2.0, 3.0])?)?;
    /// assert_eq!((y.sample_shape(), y.data()), (&[2, 1][..], &[5.0, 3.0][..]));
    /// # Ok::<(), kiln::Error>(())
    /// ```
    MaxPool1D, MaxPooling1D, 1d, max_forward, |w, x, y, dy, batch, dx| w.max_backward(x, y, dy, batch, dx)
}

pooling_layer! {
    /// Average pooling over steps (Keras `AveragePooling1D`).
    ///
    /// ```
    /// use kiln::prelude::*;
    /// model! { struct Net: [4, 1] => [AveragePooling1D(2)] }
    /// let y = Net::new(Seed(1)).predict(&Inputs::<S2<4, 1>>::from_vec(vec![1.0, 5.0, -2.0, 4.0])?)?;
    /// assert_eq!((y.sample_shape(), y.data()), (&[2, 1][..], &[3.0, 1.0][..]));
    /// # Ok::<(), kiln::Error>(())
    /// ```
    AveragePooling1D, AveragePooling1D, 1d, avg_forward, |w, x, y, dy, batch, dx| w.avg_backward(dy, batch, dx)
}
