//! `Dense`: `y = act(x·W + b)` with an `[in, out]` kernel (Keras's layout).
//!
//! Shape rule: input `[in]` → output `[units]`; any other rank is an error ("add Flatten
//! before it"). The bias is broadcast into the output and the GEMM accumulates onto it;
//! the activation is applied while the block is in cache; the backward pass derives the
//! activation's derivative from the output (keeping the pre-activation only for GELU
//! and Swish).

use super::{Act, Layer, ParamSpec, Params, ParamsMut, kernel_and_bias};
use crate::init::Initializer;
use kiln_tape::Scalar;
use kiln_tape::kernels::{Trans, gemm};
use kiln_train::OutputActivation;

/// A fully connected layer (Keras `Dense`).
#[derive(Clone, Debug)]
pub struct Dense<T = f32> {
    units: usize,
    activation: Act,
    use_bias: bool,
    kernel_initializer: Initializer,
    bias_initializer: Initializer,
    input: usize,
    z: Vec<T>,
    dz: Vec<T>,
    scratch: Vec<T>,
}

impl<T: Scalar> Dense<T> {
    /// `units` outputs, linear, with a bias; Glorot-uniform kernel and zero bias.
    pub fn new(units: usize) -> Self {
        Dense {
            units,
            activation: Act::LINEAR,
            use_bias: true,
            kernel_initializer: Initializer::GlorotUniform,
            bias_initializer: Initializer::Zeros,
            input: 0,
            z: Vec::new(),
            dz: Vec::new(),
            scratch: Vec::new(),
        }
    }
    /// Sets the activation.
    pub fn activation(mut self, a: impl Into<Act>) -> Self {
        self.activation = a.into();
        self
    }
    /// With or without the bias.
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
    /// Output units.
    pub fn units(&self) -> usize {
        self.units
    }
}

impl<T: Scalar> Dense<T> {
    fn affine(
        &self,
        p: &Params<'_, T>,
        x: &[T],
        batch: usize,
        y: &mut [T],
    ) -> kiln_tape::Result<()> {
        let (i, o) = (self.input, self.units);
        let beta = if self.use_bias {
            let b = p.get(1);
            for row in y[..batch * o].chunks_exact_mut(o) {
                row.copy_from_slice(b);
            }
            T::one()
        } else {
            T::zero()
        };
        gemm(
            batch,
            o,
            i,
            T::one(),
            &x[..batch * i],
            Trans::No,
            p.get(0),
            Trans::No,
            beta,
            &mut y[..batch * o],
        )
    }
}

impl<T: Scalar> Layer<T> for Dense<T> {
    fn class_name(&self) -> &'static str {
        "Dense"
    }
    fn base_name(&self) -> &'static str {
        "dense"
    }
    fn build(&mut self, input: &[usize]) -> Result<Vec<usize>, String> {
        if self.units == 0 {
            return Err("Dense needs at least 1 unit".into());
        }
        match input {
            [n] => {
                self.input = *n;
                Ok(vec![self.units])
            }
            _ => Err(format!("Dense needs a flat input but gets {input:?}: add Flatten before it")),
        }
    }
    fn param_specs(&self) -> Vec<ParamSpec> {
        kernel_and_bias(
            vec![self.input, self.units],
            self.units,
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
        self.affine(&p, x, batch, y)?;
        let act = self.activation;
        act.apply_inplace(&mut y[..batch * self.units], self.units, &mut self.scratch);
        Ok(())
    }
    fn forward_train(
        &mut self,
        p: ParamsMut<'_, T>,
        x: &[T],
        batch: usize,
        y: &mut [T],
    ) -> kiln_tape::Result<()> {
        self.affine(&p.as_params(), x, batch, y)?;
        let n = batch * self.units;
        if self.activation.needs_input() {
            self.z.resize(n, T::zero());
            self.z.copy_from_slice(&y[..n]);
        }
        let act = self.activation;
        act.apply_inplace(&mut y[..n], self.units, &mut self.scratch);
        Ok(())
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
        let (i, o) = (self.input, self.units);
        let n = batch * o;
        let dz = self.activation.grad_through(&self.z, y, &dy[..n], o, &mut self.dz);
        // dW = xᵀ·dz
        gemm(
            i,
            o,
            batch,
            T::one(),
            &x[..batch * i],
            Trans::Yes,
            dz,
            Trans::No,
            T::zero(),
            g.get_mut(0),
        )?;
        if self.use_bias {
            let db = g.get_mut(1);
            db.fill(T::zero());
            for row in dz.chunks_exact(o) {
                for (d, &v) in db.iter_mut().zip(row) {
                    *d += v;
                }
            }
        }
        if let Some(dx) = dx {
            // dx = dz·Wᵀ
            gemm(
                batch,
                i,
                o,
                T::one(),
                dz,
                Trans::No,
                p.get(0),
                Trans::Yes,
                T::zero(),
                &mut dx[..batch * i],
            )?;
        }
        Ok(())
    }
    fn split_output_activation(&mut self) -> OutputActivation {
        self.activation.split_output()
    }
    fn describe(&self) -> String {
        format!("units={}, activation={}", self.units, self.activation.name())
    }
}
