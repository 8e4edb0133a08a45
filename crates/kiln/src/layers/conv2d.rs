//! `Conv2D`: 2-D convolution on `[height, width, channels]` samples with an HWIO kernel
//! `[kh, kw, in, filters]` (Keras's layouts), via im2col + one GEMM; bias folded into the
//! GEMM's accumulator, activation applied in place.
//!
//! Shape rule: `[h, w, c]` → `[oh, ow, filters]`, with `oh = (h − kh)/sh + 1` for valid
//! padding and `ceil(h / sh)` for same padding; a window larger than a valid-padded
//! input is an error.

use super::{Act, Layer, ParamSpec, Params, ParamsMut, kernel_and_bias};
use crate::init::Initializer;
use kiln_tape::Scalar;
use kiln_tape::kernels::conv::Prologue;
use kiln_tape::kernels::{Conv2dGeometry, Padding, conv2d_backward, conv2d_forward, window_output};

/// A 2-D convolution layer (Keras `Conv2D`).
#[derive(Clone, Debug)]
pub struct Conv2D<T = f32> {
    filters: usize,
    kernel: (usize, usize),
    strides: (usize, usize),
    padding: Padding,
    activation: Act,
    use_bias: bool,
    kernel_initializer: Initializer,
    bias_initializer: Initializer,
    input: [usize; 3],
    col: Vec<T>,
    z: Vec<T>,
    scratch: Vec<T>,
}

impl<T: Scalar> Conv2D<T> {
    /// `filters` output channels, a 3×3 kernel... set with [`Conv2D::kernel`]; stride 1,
    /// valid padding, linear, with bias (Keras's defaults).
    pub fn new(filters: usize) -> Self {
        Conv2D {
            filters,
            kernel: (3, 3),
            strides: (1, 1),
            padding: Padding::Valid,
            activation: Act::LINEAR,
            use_bias: true,
            kernel_initializer: Initializer::GlorotUniform,
            bias_initializer: Initializer::Zeros,
            input: [0; 3],
            col: Vec::new(),
            z: Vec::new(),
            scratch: Vec::new(),
        }
    }
    /// Kernel height and width.
    pub fn kernel(mut self, kh: usize, kw: usize) -> Self {
        self.kernel = (kh, kw);
        self
    }
    /// Vertical and horizontal strides.
    pub fn strides(mut self, sh: usize, sw: usize) -> Self {
        self.strides = (sh, sw);
        self
    }
    /// Valid or same padding.
    pub fn padding(mut self, p: Padding) -> Self {
        self.padding = p;
        self
    }
    /// The activation fused into the pass.
    pub fn activation(mut self, a: impl Into<Act>) -> Self {
        self.activation = a.into();
        self
    }
    /// With or without bias.
    pub fn use_bias(mut self, b: bool) -> Self {
        self.use_bias = b;
        self
    }
    /// The kernel's initializer.
    pub fn kernel_initializer(mut self, i: Initializer) -> Self {
        self.kernel_initializer = i;
        self
    }
    /// The bias's initializer.
    pub fn bias_initializer(mut self, i: Initializer) -> Self {
        self.bias_initializer = i;
        self
    }

    fn geometry(&self, batch: usize) -> kiln_tape::Result<Conv2dGeometry> {
        let [h, w, c] = self.input;
        Conv2dGeometry::new(
            &[batch, h, w, c],
            &[self.kernel.0, self.kernel.1, c, self.filters],
            self.strides,
            self.padding,
        )
    }

    fn run(
        &mut self,
        p: &Params<'_, T>,
        x: &[T],
        batch: usize,
        y: &mut [T],
        training: bool,
    ) -> kiln_tape::Result<()> {
        let g = self.geometry(batch)?;
        if self.col.len() < g.workspace_len() {
            self.col.resize(g.workspace_len(), T::zero());
        }
        let n = g.rows() * g.o;
        // An elementwise activation that needs only its output is applied block by
        // block inside the convolution, while the block is in cache.
        let fused = match self.activation {
            Act::Elementwise(a) if !a.needs_input() => Some(a),
            _ => None,
        };
        let post = fused.map(|a| move |yb: &mut [T]| a.forward_inplace(yb));
        conv2d_forward(
            &g,
            &x[..g.n * g.h * g.w * g.c],
            p.get(0),
            self.use_bias.then(|| p.get(1)),
            &mut y[..n],
            &mut self.col,
            post.as_ref().map(|f| f as &kiln_tape::kernels::conv::Epilogue<T>),
        )?;
        if fused.is_none() {
            if training && self.activation.needs_input() {
                self.z.resize(n, T::zero());
                self.z.copy_from_slice(&y[..n]);
            }
            let act = self.activation;
            act.apply_inplace(&mut y[..n], g.o, &mut self.scratch);
        }
        Ok(())
    }
}

impl<T: Scalar> Layer<T> for Conv2D<T> {
    fn class_name(&self) -> &'static str {
        "Conv2D"
    }
    fn base_name(&self) -> &'static str {
        "conv2d"
    }
    fn build(&mut self, input: &[usize]) -> Result<Vec<usize>, String> {
        let &[h, w, c] = input else {
            return Err(format!(
                "Conv2D needs an input [height, width, channels] but gets {input:?}: add Reshape([h, w, c]) before it"
            ));
        };
        if self.filters == 0
            || self.kernel.0 == 0
            || self.kernel.1 == 0
            || self.strides.0 == 0
            || self.strides.1 == 0
        {
            return Err("Conv2D filters, kernel size and strides must all be at least 1".into());
        }
        let out = |i, k, s| window_output(i, k, s, self.padding);
        let (Some((oh, _)), Some((ow, _))) =
            (out(h, self.kernel.0, self.strides.0), out(w, self.kernel.1, self.strides.1))
        else {
            return Err(format!(
                "Conv2D kernel {}x{} does not fit the {h}x{w} input {input:?} with padding = valid: use padding = same or a smaller kernel",
                self.kernel.0, self.kernel.1
            ));
        };
        self.input = [h, w, c];
        Ok(vec![oh, ow, self.filters])
    }
    fn param_specs(&self) -> Vec<ParamSpec> {
        kernel_and_bias(
            vec![self.kernel.0, self.kernel.1, self.input[2], self.filters],
            self.filters,
            self.kernel_initializer,
            self.bias_initializer,
            self.use_bias,
        )
    }
    fn forward(
        &mut self,
        p: Params<'_, T>,
        x: &[T],
        batch: usize,
        y: &mut [T],
    ) -> kiln_tape::Result<()> {
        self.run(&p, x, batch, y, false)
    }
    fn forward_train(
        &mut self,
        p: ParamsMut<'_, T>,
        x: &[T],
        batch: usize,
        y: &mut [T],
    ) -> kiln_tape::Result<()> {
        self.run(&p.as_params(), x, batch, y, true)
    }
    fn backward(
        &mut self,
        p: Params<'_, T>,
        x: &[T],
        y: &[T],
        dy: &[T],
        batch: usize,
        mut g: ParamsMut<'_, T>,
        dx: Option<&mut [T]>,
    ) -> kiln_tape::Result<()> {
        let geom = self.geometry(batch)?;
        let n = geom.rows() * geom.o;
        let (dy, y, z, act) = (&dy[..n], &y[..n], &self.z, self.activation);
        // The activation's gradient is applied tile by tile inside the convolution.
        let through = move |r: std::ops::Range<usize>, dz: &mut [T]| {
            let z = if z.is_empty() { z } else { &z[r.clone()] };
            act.backward(z, &y[r.clone()], &dy[r], geom.o, dz);
        };
        let pre = (!act.is_linear()).then_some(&through as &Prologue<'_, T>);
        let xin = &x[..geom.n * geom.h * geom.w * geom.c];
        let dx = dx.map(|d| &mut d[..xin.len()]);
        let (dk, db) = if self.use_bias {
            let [dk, db] = g.many_mut([0, 1]);
            (dk, Some(db))
        } else {
            (g.get_mut(0), None)
        };
        conv2d_backward(&geom, xin, p.get(0), dy, dx, dk, db, &mut self.col, pre)
    }
    fn split_output_activation(&mut self) -> kiln_train::OutputActivation {
        self.activation.split_output()
    }
    fn describe(&self) -> String {
        format!(
            "filters={}, kernel={}x{}, strides={}x{}, padding={:?}, activation={}",
            self.filters,
            self.kernel.0,
            self.kernel.1,
            self.strides.0,
            self.strides.1,
            self.padding,
            self.activation.name()
        )
    }
}
