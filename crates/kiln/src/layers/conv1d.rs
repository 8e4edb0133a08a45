//! `Conv1D`: 1-D convolution on `[steps, channels]` samples with a `[k, in, filters]`
//! kernel (Keras's layout), with strides, dilation and valid/same/causal padding, via
//! tiled im2col + GEMM (`kiln_tape::kernels::conv1d`).
//!
//! Shape rule (kiln-spec's `Conv1D`): `[steps, c]` → `[out, filters]` with
//! `out = (steps − span)/stride + 1` for valid padding, `ceil(steps / stride)` for same
//! and `(steps − 1)/stride + 1` for causal, where `span = (k − 1)·dilation + 1`.

use super::{Act, Backward, Builtin, Layer, ParamSpec, Params, ParamsMut, kernel_and_bias};
use kiln_spec::{LayerSpec, layers as spec};
use kiln_tape::Scalar;
use kiln_tape::kernels::{Conv1dGeometry, Padding, conv1d_backward, conv1d_forward};

/// A 1-D convolution layer (Keras `Conv1D`).
///
/// ```
/// use kiln::prelude::*;
/// model! { struct Net: [10, 2] => [Conv1D(3, kernel = 3)] }
/// let y = Net::new(Seed(1)).predict(&Inputs::<S2<10, 2>>::from_vec(vec![0.5; 20])?)?;
/// assert_eq!(y.sample_shape(), &[8, 3]); // valid padding: 10 - 3 + 1 steps
/// # Ok::<(), kiln::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Conv1D<T = f32> {
    cfg: spec::Conv1D,
    /// The activation as run (a final softmax/sigmoid may be split off for the loss).
    activation: Act,
    input: [usize; 2],
    col: Vec<T>,
    z: Vec<T>,
    dz: Vec<T>,
    scratch: Vec<T>,
}

impl<T: Scalar> Builtin<T> for spec::Conv1D {
    type Layer = Conv1D<T>;
    fn into_layer(self) -> Conv1D<T> {
        Conv1D {
            activation: self.activation.into(),
            cfg: self,
            input: [0; 2],
            col: Vec::new(),
            z: Vec::new(),
            dz: Vec::new(),
            scratch: Vec::new(),
        }
    }
}

impl<T: Scalar> Conv1D<T> {
    /// `filters` output channels over `kernel_size` steps, with Keras's defaults: stride
    /// 1, no dilation, valid padding, linear, with bias.
    pub fn new(filters: usize, kernel_size: usize) -> Self {
        spec::Conv1D::new(filters, kernel_size).into_layer()
    }
    /// The stride.
    pub fn strides(mut self, s: usize) -> Self {
        self.cfg.strides = s;
        self
    }
    /// Valid, same or causal padding.
    pub fn padding(mut self, p: Padding) -> Self {
        self.cfg.padding = p;
        self
    }
    /// The spacing of the kernel's taps.
    pub fn dilation_rate(mut self, d: usize) -> Self {
        self.cfg.dilation_rate = d;
        self
    }

    fn geometry(&self, batch: usize) -> kiln_tape::Result<Conv1dGeometry> {
        let c = &self.cfg;
        Conv1dGeometry::new(
            [batch, self.input[0], self.input[1]],
            [c.kernel_size, self.input[1], c.filters],
            c.strides,
            c.dilation_rate,
            c.padding,
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
        let n = g.output_len();
        let (kernel, bias) = (p.param("kernel"), p.try_param("bias"));
        conv1d_forward(&g, &x[..g.input_len()], kernel, bias, &mut y[..n], &mut self.col)?;
        if training && self.activation.needs_input() {
            self.z.resize(n, T::zero());
            self.z.copy_from_slice(&y[..n]);
        }
        let act = self.activation;
        act.apply_inplace(&mut y[..n], g.o, &mut self.scratch);
        Ok(())
    }
}

super::kernel_bias_setters!(Conv1D);

impl<T: Scalar> Layer<T> for Conv1D<T> {
    fn class_name(&self) -> &'static str {
        spec::Conv1D::CLASS
    }
    fn base_name(&self) -> &'static str {
        spec::Conv1D::BASE_NAME
    }
    fn build(&mut self, input: &[usize]) -> Result<Vec<usize>, String> {
        let out = self.cfg.output(input).map_err(|e| e.message)?;
        self.input = [input[0], input[1]];
        Ok(out)
    }
    fn param_specs(&self) -> Vec<ParamSpec> {
        let c = &self.cfg;
        kernel_and_bias(
            vec![c.kernel_size, self.input[1], c.filters],
            c.filters,
            c.kernel_initializer,
            c.bias_initializer,
            c.use_bias,
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
    fn backward(&mut self, b: Backward<'_, T>) -> kiln_tape::Result<()> {
        let Backward { params: p, x, y, dy, batch, grads: mut g, dx } = b;
        let geom = self.geometry(batch)?;
        let n = geom.output_len();
        let dz = self.activation.grad_through(&self.z, y, &dy[..n], geom.o, &mut self.dz);
        let xin = &x[..geom.input_len()];
        let dx = dx.map(|d| &mut d[..geom.input_len()]);
        let (dk, db) = g.kernel_and_bias();
        conv1d_backward(&geom, xin, p.param("kernel"), dz, dx, dk, db, &mut self.col)
    }
    fn split_output_activation(&mut self) -> kiln_train::OutputActivation {
        self.activation.split_output()
    }
    fn describe(&self) -> String {
        let c = &self.cfg;
        format!(
            "filters={}, kernel_size={}, strides={}, padding={}, dilation_rate={}, activation={}",
            c.filters,
            c.kernel_size,
            c.strides,
            c.padding.name(),
            c.dilation_rate,
            c.activation.name()
        )
    }
}
