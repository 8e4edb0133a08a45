//! `Dense`: `y = act(x·W + b)` with an `[in, out]` kernel (Keras's layout), applied to
//! the last axis.
//!
//! Shape rule (kiln-spec's `Dense`): `[in]` → `[units]`, and `[steps, in]` →
//! `[steps, units]` as Keras applies Dense to every step of a sequence; an image is an
//! error ("add Flatten before it"). A sequence is computed as `batch·steps` rows of one
//! GEMM. The bias is broadcast into the output and the GEMM accumulates onto it;
//! the activation is applied while the block is in cache; the backward pass derives the
//! activation's derivative from the output (keeping the pre-activation only for GELU
//! and Swish).

use super::{Act, Backward, Builtin, Layer, ParamSpec, Params, ParamsMut, kernel_and_bias};
use kiln_spec::{LayerSpec, layers as spec};
use kiln_tape::Scalar;
use kiln_tape::kernels::{Trans, gemm};
use kiln_train::OutputActivation;

/// A fully connected layer (Keras `Dense`).
///
/// ```
/// use kiln::prelude::*;
/// model! { struct Net: [4] => [Dense(3, activation = relu)] }
/// let y = Net::new(Seed(1)).predict(&Inputs::<S1<4>>::from_vec(vec![0.5; 8])?)?;
/// assert_eq!((y.len(), y.sample_shape()), (2, &[3][..]));
/// assert!(y.data().iter().all(|&v| v >= 0.0)); // relu
/// # Ok::<(), kiln::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Dense<T = f32> {
    cfg: spec::Dense,
    /// The activation as run (a final softmax/sigmoid may be split off for the loss).
    activation: Act,
    input: usize,
    /// Rows per sample: 1, or the steps of a sequence.
    steps: usize,
    z: Vec<T>,
    dz: Vec<T>,
    scratch: Vec<T>,
}

impl<T: Scalar> Builtin<T> for spec::Dense {
    type Layer = Dense<T>;
    fn into_layer(self) -> Dense<T> {
        Dense {
            activation: self.activation.into(),
            cfg: self,
            input: 0,
            steps: 1,
            z: Vec::new(),
            dz: Vec::new(),
            scratch: Vec::new(),
        }
    }
}

impl<T: Scalar> Dense<T> {
    /// `units` outputs, linear, with a bias; Glorot-uniform kernel and zero bias.
    pub fn new(units: usize) -> Self {
        spec::Dense::new(units).into_layer()
    }
    /// Output units.
    pub fn units(&self) -> usize {
        self.cfg.units
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
        let (i, o, rows) = (self.input, self.cfg.units, batch * self.steps);
        let beta = if let Some(b) = p.try_param("bias") {
            for row in y[..rows * o].chunks_exact_mut(o) {
                row.copy_from_slice(b);
            }
            T::one()
        } else {
            T::zero()
        };
        gemm(
            rows,
            o,
            i,
            T::one(),
            &x[..rows * i],
            Trans::No,
            p.param("kernel"),
            Trans::No,
            beta,
            &mut y[..rows * o],
        )
    }
}

super::kernel_bias_setters!(Dense);

impl<T: Scalar> Layer<T> for Dense<T> {
    fn class_name(&self) -> &'static str {
        spec::Dense::CLASS
    }
    fn base_name(&self) -> &'static str {
        spec::Dense::BASE_NAME
    }
    fn build(&mut self, input: &[usize]) -> Result<Vec<usize>, String> {
        let out = self.cfg.output(input).map_err(|e| e.message)?;
        self.input = input[input.len() - 1];
        self.steps = input[..input.len() - 1].iter().product();
        Ok(out)
    }
    fn param_specs(&self) -> Vec<ParamSpec> {
        let c = &self.cfg;
        kernel_and_bias(
            vec![self.input, c.units],
            c.units,
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
        self.affine(&p, x, batch, y)?;
        let act = self.activation;
        let (n, o) = (batch * self.steps * self.cfg.units, self.cfg.units);
        act.apply_inplace(&mut y[..n], o, &mut self.scratch);
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
        let (n, o) = (batch * self.steps * self.cfg.units, self.cfg.units);
        if self.activation.needs_input() {
            self.z.resize(n, T::zero());
            self.z.copy_from_slice(&y[..n]);
        }
        let act = self.activation;
        act.apply_inplace(&mut y[..n], o, &mut self.scratch);
        Ok(())
    }
    fn backward(&mut self, b: Backward<'_, T>) -> kiln_tape::Result<()> {
        let Backward { params: p, x, y, dy, batch, grads: mut g, dx } = b;
        let (i, o, rows) = (self.input, self.cfg.units, batch * self.steps);
        let n = rows * o;
        let dz = self.activation.grad_through(&self.z, y, &dy[..n], o, &mut self.dz);
        // dW = xᵀ·dz
        gemm(
            i,
            o,
            rows,
            T::one(),
            &x[..rows * i],
            Trans::Yes,
            dz,
            Trans::No,
            T::zero(),
            g.param_mut("kernel"),
        )?;
        if let Some(db) = g.try_param_mut("bias") {
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
                rows,
                i,
                o,
                T::one(),
                dz,
                Trans::No,
                p.param("kernel"),
                Trans::Yes,
                T::zero(),
                &mut dx[..rows * i],
            )?;
        }
        Ok(())
    }
    fn split_output_activation(&mut self) -> OutputActivation {
        self.activation.split_output()
    }
    fn describe(&self) -> String {
        format!("units={}, activation={}", self.cfg.units, self.cfg.activation.name())
    }
}
