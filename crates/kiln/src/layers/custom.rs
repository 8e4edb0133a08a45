//! Custom layers, both usable inside `model!`:
//!
//! * hand-written: implement [`Layer`] (forward, forward_train, backward, parameters)
//!   and [`ShapedLayer`] (its input and output sample shapes, which `model!` checks
//!   against its neighbours while compiling);
//! * forward-only: implement [`TapeModule`] with tape operations and wrap it in
//!   [`TapeLayer`], which gets the backward pass from the tape.

use super::{Backward, Layer, ParamSpec, Params};
use kiln_tape::{Scalar, Tape, Tensor, Var};
use kiln_train::Shape;

/// The per-sample shapes a custom layer takes and gives, as types (`S1<128>`).
pub trait ShapedLayer {
    /// The input sample shape.
    type Input: Shape;
    /// The output sample shape.
    type Output: Shape;
}

/// `Self` (a custom layer's declared input shape) is `S` (the shape the layer before it
/// gives). `model!` requires it of custom layers, so a mismatch is a compile error.
#[diagnostic::on_unimplemented(
    message = "a custom layer takes inputs of shape `{Self}`, but the layer before it gives `{S}`",
    label = "this layer's `ShapedLayer::Input` is `{Self}`",
    note = "make the custom layer's `ShapedLayer::Input` `{S}`, or change the layers before it"
)]
pub trait InputIs<S> {}
impl<S> InputIs<S> for S {}

/// `Self` (a custom layer's declared output shape) is `S` (what `model!` expects after
/// it: the shape written as `-> [..]`, or its input shape when none is written).
#[diagnostic::on_unimplemented(
    message = "a custom layer gives outputs of shape `{Self}`, but `model!` expects `{S}` after it",
    label = "this layer's `ShapedLayer::Output` is `{Self}`",
    note = "write the layer's output shape after it in `model!` (`layer(..) -> [..]`), or fix its `ShapedLayer::Output`"
)]
pub trait OutputIs<S> {}
impl<S> OutputIs<S> for S {}

/// Compile-time check that `model!` emits for each custom layer.
pub fn check_custom_layer<L: ShapedLayer, I, O>(_layer: &L)
where
    L::Input: InputIs<I>,
    L::Output: OutputIs<O>,
{
}

/// A layer written only as a forward pass over tape variables; [`TapeLayer`] derives
/// its backward pass from the tape.
pub trait TapeModule<T: Scalar>: Send {
    /// The input sample shape.
    type Input: Shape;
    /// The output sample shape.
    type Output: Shape;
    /// The base of instance names (`gated` → `gated`, `gated_1`).
    const NAME: &'static str;
    /// The parameters it needs.
    fn params(&self) -> Vec<ParamSpec> {
        Vec::new()
    }
    /// The forward pass: `x` is `[batch, input dims..]`; `params` in declaration order.
    fn forward<'t>(&self, x: Var<'t, T>, params: &[Var<'t, T>]) -> kiln_tape::Result<Var<'t, T>>;
}

/// Wraps a [`TapeModule`] as a [`Layer`]: forward on a no-grad tape, backward by
/// differentiating the same forward. Convenient and exact, but it allocates every step;
/// hand-write a [`Layer`] where speed matters.
pub struct TapeLayer<M> {
    module: M,
    input: Vec<usize>,
    output: Vec<usize>,
    shapes: Vec<Vec<usize>>,
}

impl<M> TapeLayer<M> {
    /// Wraps `module`.
    pub fn new(module: M) -> Self {
        TapeLayer { module, input: Vec::new(), output: Vec::new(), shapes: Vec::new() }
    }
    /// The wrapped module.
    pub fn module(&self) -> &M {
        &self.module
    }
}

impl<M> TapeLayer<M> {
    fn run<'t, T: Scalar>(
        &self,
        x: Var<'t, T>,
        p: &[Var<'t, T>],
        batch: usize,
    ) -> kiln_tape::Result<Var<'t, T>>
    where
        M: TapeModule<T>,
    {
        let y = self.module.forward(x, p)?;
        let mut want = vec![batch];
        want.extend_from_slice(&self.output);
        if y.shape() != want {
            return Err(kiln_tape::TapeError::ShapeMismatch {
                op: M::NAME,
                lhs: want,
                rhs: y.shape(),
                hint: "the forward pass must return [batch, declared output shape]".into(),
            });
        }
        Ok(y)
    }

    fn vars<'t, T: Scalar>(
        &self,
        tape: &'t Tape<T>,
        p: Params<'_, T>,
        x: &[T],
        batch: usize,
        grad: bool,
    ) -> kiln_tape::Result<(Var<'t, T>, Vec<Var<'t, T>>)> {
        let mut xs = vec![batch];
        xs.extend_from_slice(&self.input);
        let n: usize = xs.iter().product();
        let xt = Tensor::from_vec(&xs, x[..n].to_vec())?;
        let xv = if grad { tape.var(xt) } else { tape.constant(xt) };
        let mut pv = Vec::new();
        for (i, s) in self.shapes.iter().enumerate() {
            let t = Tensor::from_vec(s, p.get(i).to_vec())?;
            pv.push(if grad { tape.var(t) } else { tape.constant(t) });
        }
        Ok((xv, pv))
    }
}

impl<T: Scalar, M: TapeModule<T>> Layer<T> for TapeLayer<M> {
    fn class_name(&self) -> &'static str {
        M::NAME
    }
    fn base_name(&self) -> &'static str {
        M::NAME
    }
    fn build(&mut self, input: &[usize]) -> Result<Vec<usize>, String> {
        let (Some(i), Some(o)) = (M::Input::DIMS, M::Output::DIMS) else {
            return Err(format!("{} must declare static Input and Output shapes", M::NAME));
        };
        if i != input {
            return Err(format!("{} takes inputs of shape {i:?} but gets {input:?}", M::NAME));
        }
        self.input = i.to_vec();
        self.output = o.to_vec();
        self.shapes = self.module.params().into_iter().map(|s| s.shape).collect();
        Ok(self.output.clone())
    }
    fn param_specs(&self) -> Vec<ParamSpec> {
        self.module.params()
    }
    fn forward(
        &mut self,
        p: Params<'_, T>,
        x: &[T],
        batch: usize,
        y: &mut [T],
    ) -> kiln_tape::Result<()> {
        let tape = Tape::new();
        let _g = tape.no_grad();
        let (xv, pv) = self.vars(&tape, p, x, batch, false)?;
        let out = self.run(xv, &pv, batch)?;
        let v = out.value();
        y[..v.len()].copy_from_slice(v.data());
        Ok(())
    }
    fn backward(&mut self, b: Backward<'_, T>) -> kiln_tape::Result<()> {
        let Backward { params: p, x, dy, batch, grads: mut g, dx, .. } = b;
        let tape = Tape::new();
        let (xv, pv) = self.vars(&tape, p, x, batch, true)?;
        let out = self.run(xv, &pv, batch)?;
        let n = out.len();
        let up = tape.constant(Tensor::from_vec(&out.shape(), dy[..n].to_vec())?);
        let grads = tape.backward(out.mul(up)?.sum()?)?;
        for (i, v) in pv.iter().enumerate() {
            let dst = g.get_mut(i);
            match grads.get(*v) {
                Some(t) => dst.copy_from_slice(t.data()),
                None => dst.fill(T::zero()),
            }
        }
        if let Some(dx) = dx {
            let n = xv.len();
            match grads.get(xv) {
                Some(t) => dx[..n].copy_from_slice(t.data()),
                None => dx[..n].fill(T::zero()),
            }
        }
        Ok(())
    }
}

impl<M: TapeModule<f32>> ShapedLayer for TapeLayer<M> {
    type Input = M::Input;
    type Output = M::Output;
}
