//! Pooling layers: `MaxPool2D`, `AveragePooling2D` and `GlobalAveragePooling2D` on
//! `[height, width, channels]` samples.
//!
//! Shape rules: windows as in Conv2D (strides default to the pool size, as Keras);
//! GlobalAveragePooling2D turns `[h, w, c]` into `[c]`.

use super::{Layer, Params, ParamsMut};
use kiln_tape::Scalar;
use kiln_tape::kernels::{
    Padding, Pool2dGeometry, avg_pool2d_backward, avg_pool2d_forward, global_avg_pool2d_backward,
    global_avg_pool2d_forward, max_pool2d_backward_from_values, max_pool2d_forward, window_output,
};

/// Window, strides and padding shared by the two windowed poolings.
#[derive(Clone, Copy, Debug)]
struct Window {
    pool: (usize, usize),
    strides: Option<(usize, usize)>,
    padding: Padding,
    input: [usize; 3],
}

impl Window {
    fn strides(&self) -> (usize, usize) {
        self.strides.unwrap_or(self.pool)
    }
    fn build(&mut self, class: &str, input: &[usize]) -> Result<Vec<usize>, String> {
        let &[h, w, c] = input else {
            return Err(format!(
                "{class} needs an input [height, width, channels] but gets {input:?}"
            ));
        };
        let (sh, sw) = self.strides();
        if self.pool.0 == 0 || self.pool.1 == 0 || sh == 0 || sw == 0 {
            return Err(format!("{class} pool size and strides must be at least 1"));
        }
        let (Some((oh, _)), Some((ow, _))) = (
            window_output(h, self.pool.0, sh, self.padding),
            window_output(w, self.pool.1, sw, self.padding),
        ) else {
            return Err(format!(
                "{class} window {}x{} does not fit the {h}x{w} input {input:?} with padding = valid: use padding = same or a smaller pool",
                self.pool.0, self.pool.1
            ));
        };
        self.input = [h, w, c];
        Ok(vec![oh, ow, c])
    }
    fn geometry(&self, batch: usize) -> kiln_tape::Result<Pool2dGeometry> {
        let [h, w, c] = self.input;
        Pool2dGeometry::new(&[batch, h, w, c], self.pool, self.strides(), self.padding)
    }
    fn describe(&self) -> String {
        let (sh, sw) = self.strides();
        format!(
            "pool={}x{}, strides={sh}x{sw}, padding={:?}",
            self.pool.0, self.pool.1, self.padding
        )
    }
}

/// The window setters both windowed poolings share.
macro_rules! window_setters {
    ($t:ty) => {
        impl $t {
            /// A rectangular window.
            pub fn pool(mut self, ph: usize, pw: usize) -> Self {
                self.w.pool = (ph, pw);
                self
            }
            /// Strides (default: the pool size).
            pub fn strides(mut self, sh: usize, sw: usize) -> Self {
                self.w.strides = Some((sh, sw));
                self
            }
            /// Valid or same padding.
            pub fn padding(mut self, p: Padding) -> Self {
                self.w.padding = p;
                self
            }
        }
    };
}

window_setters!(MaxPool2D);
window_setters!(AveragePooling2D);

/// Max pooling (Keras `MaxPooling2D` / `MaxPool2D`).
#[derive(Clone, Debug)]
pub struct MaxPool2D {
    w: Window,
}

impl MaxPool2D {
    /// A `pool × pool` window, strides equal to the pool, valid padding.
    pub fn new(pool: usize) -> Self {
        MaxPool2D {
            w: Window { pool: (pool, pool), strides: None, padding: Padding::Valid, input: [0; 3] },
        }
    }

    /// Whether this is the common 2×2, stride-2, valid pool (which a preceding Conv2D
    /// can run fused).
    pub fn is_2x2_stride2_valid(&self) -> bool {
        self.w.pool == (2, 2) && self.w.strides() == (2, 2) && self.w.padding == Padding::Valid
    }
}

impl<T: Scalar> Layer<T> for MaxPool2D {
    fn class_name(&self) -> &'static str {
        "MaxPooling2D"
    }
    fn base_name(&self) -> &'static str {
        "max_pooling2d"
    }
    fn build(&mut self, input: &[usize]) -> Result<Vec<usize>, String> {
        self.w.build("MaxPool2D", input)
    }
    fn forward(
        &mut self,
        _p: Params<'_, T>,
        x: &[T],
        batch: usize,
        y: &mut [T],
    ) -> kiln_tape::Result<()> {
        let g = self.w.geometry(batch)?;
        max_pool2d_forward(&g, &x[..g.input_len()], &mut y[..g.output_len()], None)
    }
    fn forward_train(
        &mut self,
        _p: ParamsMut<'_, T>,
        x: &[T],
        batch: usize,
        y: &mut [T],
    ) -> kiln_tape::Result<()> {
        // No argmax is kept: backward finds each window's winner again from x and y.
        let g = self.w.geometry(batch)?;
        max_pool2d_forward(&g, &x[..g.input_len()], &mut y[..g.output_len()], None)
    }
    fn backward(
        &mut self,
        _p: Params<'_, T>,
        x: &[T],
        y: &[T],
        dy: &[T],
        batch: usize,
        _g: ParamsMut<'_, T>,
        dx: Option<&mut [T]>,
    ) -> kiln_tape::Result<()> {
        let Some(dx) = dx else { return Ok(()) };
        let g = self.w.geometry(batch)?;
        max_pool2d_backward_from_values(
            &g,
            &x[..g.input_len()],
            &y[..g.output_len()],
            &dy[..g.output_len()],
            &mut dx[..g.input_len()],
        )
    }
    fn describe(&self) -> String {
        self.w.describe()
    }
}

/// Average pooling (Keras `AveragePooling2D`); same padding averages only the values
/// inside the input, as TensorFlow.
#[derive(Clone, Debug)]
pub struct AveragePooling2D {
    w: Window,
}

impl AveragePooling2D {
    /// A `pool × pool` window, strides equal to the pool, valid padding.
    pub fn new(pool: usize) -> Self {
        AveragePooling2D {
            w: Window { pool: (pool, pool), strides: None, padding: Padding::Valid, input: [0; 3] },
        }
    }
}

impl<T: Scalar> Layer<T> for AveragePooling2D {
    fn class_name(&self) -> &'static str {
        "AveragePooling2D"
    }
    fn base_name(&self) -> &'static str {
        "average_pooling2d"
    }
    fn build(&mut self, input: &[usize]) -> Result<Vec<usize>, String> {
        self.w.build("AveragePooling2D", input)
    }
    fn forward(
        &mut self,
        _p: Params<'_, T>,
        x: &[T],
        batch: usize,
        y: &mut [T],
    ) -> kiln_tape::Result<()> {
        let g = self.w.geometry(batch)?;
        avg_pool2d_forward(&g, &x[..g.input_len()], &mut y[..g.output_len()])
    }
    fn backward(
        &mut self,
        _p: Params<'_, T>,
        _x: &[T],
        _y: &[T],
        dy: &[T],
        batch: usize,
        _g: ParamsMut<'_, T>,
        dx: Option<&mut [T]>,
    ) -> kiln_tape::Result<()> {
        let Some(dx) = dx else { return Ok(()) };
        let g = self.w.geometry(batch)?;
        avg_pool2d_backward(&g, &dy[..g.output_len()], &mut dx[..g.input_len()])
    }
    fn describe(&self) -> String {
        self.w.describe()
    }
}

/// The mean over all positions of each channel (Keras `GlobalAveragePooling2D`).
#[derive(Clone, Copy, Debug, Default)]
pub struct GlobalAveragePooling2D {
    input: [usize; 3],
}

impl GlobalAveragePooling2D {
    /// A global average pooling layer.
    pub fn new() -> Self {
        GlobalAveragePooling2D::default()
    }
}

impl<T: Scalar> Layer<T> for GlobalAveragePooling2D {
    fn class_name(&self) -> &'static str {
        "GlobalAveragePooling2D"
    }
    fn base_name(&self) -> &'static str {
        "global_average_pooling2d"
    }
    fn build(&mut self, input: &[usize]) -> Result<Vec<usize>, String> {
        let &[h, w, c] = input else {
            return Err(format!(
                "GlobalAveragePooling2D needs an input [height, width, channels] but gets {input:?}"
            ));
        };
        self.input = [h, w, c];
        Ok(vec![c])
    }
    fn forward(
        &mut self,
        _p: Params<'_, T>,
        x: &[T],
        batch: usize,
        y: &mut [T],
    ) -> kiln_tape::Result<()> {
        let [h, w, c] = self.input;
        global_avg_pool2d_forward([batch, h, w, c], &x[..batch * h * w * c], &mut y[..batch * c])
    }
    fn backward(
        &mut self,
        _p: Params<'_, T>,
        _x: &[T],
        _y: &[T],
        dy: &[T],
        batch: usize,
        _g: ParamsMut<'_, T>,
        dx: Option<&mut [T]>,
    ) -> kiln_tape::Result<()> {
        let Some(dx) = dx else { return Ok(()) };
        let [h, w, c] = self.input;
        global_avg_pool2d_backward([batch, h, w, c], &dy[..batch * c], &mut dx[..batch * h * w * c])
    }
}
