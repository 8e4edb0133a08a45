//! The reverse-mode tape: records operations on [`Var`]s and replays them backwards.
//!
//! Each operation stores its output value, its parents and a closure that maps the
//! output's gradient to its parents' gradients. [`Tape::backward`] walks the records in
//! reverse creation order (a topological order by construction), so a variable used
//! several times accumulates every contribution.

use crate::error::{Result, TapeError};
use crate::kernels::{self, Activation, Conv2dGeometry, Padding, Pool2dGeometry, Reduce, Trans};
use crate::scalar::Scalar;
use crate::shape::{broadcast_shapes, numel, split_at_axis};
use crate::tensor::Tensor;
use std::cell::{Cell, Ref, RefCell};
use std::ops::Range;

/// Maps (output gradient, parent values, output value) to one gradient per parent.
type BackwardFn<T> =
    Box<dyn Fn(&Tensor<T>, &[&Tensor<T>], &Tensor<T>) -> Result<Vec<Option<Tensor<T>>>>>;

struct Node<T> {
    value: Tensor<T>,
    parents: Vec<usize>,
    backward: Option<BackwardFn<T>>,
    requires_grad: bool,
}

/// A recording of tensor operations, differentiated by [`Tape::backward`].
///
/// Variables borrow the tape, so the borrow checker guarantees none outlives it;
/// [`Tape::reset`] (which needs `&mut`) clears it for the next step.
pub struct Tape<T: Scalar> {
    nodes: RefCell<Vec<Node<T>>>,
    no_grad: Cell<usize>,
}

impl<T: Scalar> Default for Tape<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// A handle to a value recorded on a [`Tape`]; cheap to copy.
#[derive(Clone, Copy)]
pub struct Var<'t, T: Scalar> {
    tape: &'t Tape<T>,
    id: usize,
}

impl<T: Scalar> std::fmt::Debug for Var<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Var").field("id", &self.id).field("shape", &self.shape()).finish()
    }
}

/// The gradients a [`Tape::backward`] call produced, looked up by variable.
pub struct Gradients<T> {
    grads: Vec<Option<Tensor<T>>>,
}

impl<T: Scalar> Gradients<T> {
    /// The gradient of the loss with respect to `v`, or `None` when `v` does not require a
    /// gradient or the loss does not depend on it.
    pub fn get(&self, v: Var<'_, T>) -> Option<&Tensor<T>> {
        self.grads.get(v.id).and_then(Option::as_ref)
    }

    /// Takes the gradient of `v` out, leaving `None`.
    pub fn take(&mut self, v: Var<'_, T>) -> Option<Tensor<T>> {
        self.grads.get_mut(v.id).and_then(Option::take)
    }
}

/// While alive, operations on the tape record values only, no backward rules
/// (inference, metrics, finite differences).
pub struct NoGradGuard<'t, T: Scalar> {
    tape: &'t Tape<T>,
}

impl<T: Scalar> Drop for NoGradGuard<'_, T> {
    fn drop(&mut self) {
        self.tape.no_grad.set(self.tape.no_grad.get() - 1);
    }
}

impl<T: Scalar> Tape<T> {
    /// An empty tape.
    pub fn new() -> Self {
        Tape { nodes: RefCell::new(Vec::new()), no_grad: Cell::new(0) }
    }

    /// Records `value` as a variable that gradients are computed for (a parameter or input).
    pub fn var(&self, value: Tensor<T>) -> Var<'_, T> {
        self.push(Node { value, parents: Vec::new(), backward: None, requires_grad: true })
    }

    /// Records `value` as a constant: no gradient flows into it.
    pub fn constant(&self, value: Tensor<T>) -> Var<'_, T> {
        self.push(Node { value, parents: Vec::new(), backward: None, requires_grad: false })
    }

    /// Stops recording backward rules until the guard drops.
    pub fn no_grad(&self) -> NoGradGuard<'_, T> {
        self.no_grad.set(self.no_grad.get() + 1);
        NoGradGuard { tape: self }
    }

    /// Whether backward rules are being recorded now.
    pub fn is_recording(&self) -> bool {
        self.no_grad.get() == 0
    }

    /// Number of recorded values.
    pub fn len(&self) -> usize {
        self.nodes.borrow().len()
    }

    /// Whether nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every record, keeping the allocation for the next step.
    pub fn reset(&mut self) {
        self.nodes.get_mut().clear();
    }

    /// Gradients of the scalar `loss` with respect to every variable it depends on.
    pub fn backward(&self, loss: Var<'_, T>) -> Result<Gradients<T>> {
        if !std::ptr::eq(loss.tape, self) {
            return Err(TapeError::ForeignVariable);
        }
        let nodes = self.nodes.borrow();
        let out = &nodes[loss.id];
        if out.value.len() != 1 {
            return Err(TapeError::NonScalarLoss { shape: out.value.shape().to_vec() });
        }
        let mut grads: Vec<Option<Tensor<T>>> = (0..nodes.len()).map(|_| None).collect();
        grads[loss.id] = Some(Tensor::ones(out.value.shape()));
        for id in (0..=loss.id).rev() {
            let node = &nodes[id];
            let Some(bw) = &node.backward else { continue };
            // Interior gradients are dropped once used; only leaves keep theirs.
            let Some(g) = grads[id].take() else { continue };
            let parent_values: Vec<&Tensor<T>> =
                node.parents.iter().map(|&p| &nodes[p].value).collect();
            let parent_grads = bw(&g, &parent_values, &node.value)?;
            for (&p, pg) in node.parents.iter().zip(parent_grads) {
                let (Some(pg), true) = (pg, nodes[p].requires_grad) else { continue };
                debug_assert_eq!(pg.shape(), nodes[p].value.shape());
                match &mut grads[p] {
                    Some(acc) => {
                        acc.data_mut().iter_mut().zip(pg.data()).for_each(|(a, &b)| *a += b)
                    }
                    slot => *slot = Some(pg),
                }
            }
        }
        Ok(Gradients { grads })
    }

    fn push(&self, node: Node<T>) -> Var<'_, T> {
        let mut nodes = self.nodes.borrow_mut();
        nodes.push(node);
        Var { tape: self, id: nodes.len() - 1 }
    }

    /// Records an operation's output; its backward rule is kept only when recording and
    /// some parent needs a gradient.
    fn record<'t>(
        &'t self,
        value: Tensor<T>,
        parents: &[Var<'t, T>],
        backward: impl Fn(&Tensor<T>, &[&Tensor<T>], &Tensor<T>) -> Result<Vec<Option<Tensor<T>>>>
        + 'static,
    ) -> Var<'t, T> {
        let requires_grad = self.is_recording() && {
            let nodes = self.nodes.borrow();
            parents.iter().any(|p| nodes[p.id].requires_grad)
        };
        if requires_grad {
            self.push(Node {
                value,
                parents: parents.iter().map(|p| p.id).collect(),
                backward: Some(Box::new(backward)),
                requires_grad,
            })
        } else {
            self.push(Node { value, parents: Vec::new(), backward: None, requires_grad: false })
        }
    }
}

// ---------------------------------------------------------------------------------------
// Helpers that allocate outputs around the slice kernels.

fn bcast<T: Scalar>(
    op: &'static str,
    a: &Tensor<T>,
    b: &Tensor<T>,
    f: impl Fn(T, T) -> T,
) -> Result<Tensor<T>> {
    let shape = broadcast_shapes(op, a.shape(), b.shape())?;
    let mut out = vec![T::zero(); numel(&shape)];
    kernels::broadcast_binary(op, a.data(), a.shape(), b.data(), b.shape(), &mut out, f)?;
    Ok(Tensor::from_parts(shape, out))
}

fn sum_to<T: Scalar>(g: Tensor<T>, shape: &[usize]) -> Result<Tensor<T>> {
    if g.shape() == shape {
        return Ok(g);
    }
    let mut out = vec![T::zero(); numel(shape)];
    kernels::sum_to_shape(g.data(), g.shape(), shape, &mut out)?;
    Ok(Tensor::from_parts(shape.to_vec(), out))
}

fn zip_map<T: Scalar>(a: &Tensor<T>, b: &Tensor<T>, f: impl Fn(T, T) -> T) -> Tensor<T> {
    let data = a.data().iter().zip(b.data()).map(|(&x, &y)| f(x, y)).collect();
    Tensor::from_parts(a.shape().to_vec(), data)
}

fn matrix_dims(
    op: &'static str,
    t: &Tensor<impl Scalar>,
    trans: Trans,
    other: &[usize],
) -> Result<(usize, usize)> {
    match (t.shape(), trans) {
        (&[r, c], Trans::No) => Ok((r, c)),
        (&[r, c], Trans::Yes) => Ok((c, r)),
        _ => Err(TapeError::ShapeMismatch {
            op,
            lhs: t.shape().to_vec(),
            rhs: other.to_vec(),
            hint: "matrix products take rank-2 operands; reshape first".into(),
        }),
    }
}

fn flip(t: Trans) -> Trans {
    if t == Trans::Yes { Trans::No } else { Trans::Yes }
}

#[allow(clippy::too_many_arguments)]
fn gemm_new<T: Scalar>(
    m: usize,
    n: usize,
    k: usize,
    alpha: T,
    a: &Tensor<T>,
    ta: Trans,
    b: &Tensor<T>,
    tb: Trans,
) -> Result<Tensor<T>> {
    let mut out = vec![T::zero(); m * n];
    kernels::gemm(m, n, k, alpha, a.data(), ta, b.data(), tb, T::zero(), &mut out)?;
    Ok(Tensor::from_parts(vec![m, n], out))
}

// `add`, `sub`, `mul` and `div` return `Result` (shapes may not broadcast), so they cannot
// be the `std::ops` traits; the names stay the ones users know.
#[allow(clippy::should_implement_trait)]
impl<'t, T: Scalar> Var<'t, T> {
    /// A copy-free view of the recorded value.
    ///
    /// The view borrows the tape: drop it before recording another operation (bind
    /// what you need, e.g. `let n = v.len();`, rather than calling `value()` inside the
    /// arguments of an operation), or the tape's `RefCell` reports a double borrow.
    pub fn value(&self) -> Ref<'t, Tensor<T>> {
        Ref::map(self.tape.nodes.borrow(), |n| &n[self.id].value)
    }

    /// The value's shape.
    pub fn shape(&self) -> Vec<usize> {
        self.value().shape().to_vec()
    }

    /// The value's number of elements.
    pub fn len(&self) -> usize {
        self.value().len()
    }

    /// Whether the value holds no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The tape this variable lives on.
    pub fn tape(&self) -> &'t Tape<T> {
        self.tape
    }

    fn same_tape(&self, other: &Var<'t, T>) -> Result<()> {
        if std::ptr::eq(self.tape, other.tape) { Ok(()) } else { Err(TapeError::ForeignVariable) }
    }

    fn unary(
        self,
        f: impl FnOnce(&Tensor<T>) -> Result<Tensor<T>>,
        bw: impl Fn(&Tensor<T>, &Tensor<T>, &Tensor<T>) -> Result<Tensor<T>> + 'static,
    ) -> Result<Var<'t, T>> {
        let y = f(&self.value())?;
        Ok(self.tape.record(y, &[self], move |g, p, y| Ok(vec![Some(bw(g, p[0], y)?)])))
    }

    fn elementwise(self, f: impl Fn(T) -> T, df: impl Fn(T, T) -> T + 'static) -> Var<'t, T> {
        // df(x, y) is dy/dx; elementwise ops cannot fail.
        let y = self.value().map(f);
        self.tape.record(y, &[self], move |g, p, y| {
            let d = zip_map(p[0], y, &df);
            Ok(vec![Some(zip_map(g, &d, |a, b| a * b))])
        })
    }

    // --- broadcasting arithmetic -------------------------------------------------------

    /// `self + other`, broadcasting as NumPy.
    pub fn add(self, other: Var<'t, T>) -> Result<Var<'t, T>> {
        self.same_tape(&other)?;
        let y = bcast("add", &self.value(), &other.value(), |a, b| a + b)?;
        Ok(self.tape.record(y, &[self, other], |g, p, _| {
            Ok(vec![Some(sum_to(g.clone(), p[0].shape())?), Some(sum_to(g.clone(), p[1].shape())?)])
        }))
    }

    /// `self − other`, broadcasting as NumPy.
    pub fn sub(self, other: Var<'t, T>) -> Result<Var<'t, T>> {
        self.same_tape(&other)?;
        let y = bcast("sub", &self.value(), &other.value(), |a, b| a - b)?;
        Ok(self.tape.record(y, &[self, other], |g, p, _| {
            Ok(vec![
                Some(sum_to(g.clone(), p[0].shape())?),
                Some(sum_to(g.map(|v| -v), p[1].shape())?),
            ])
        }))
    }

    /// `self ⊙ other` (elementwise), broadcasting as NumPy.
    pub fn mul(self, other: Var<'t, T>) -> Result<Var<'t, T>> {
        self.same_tape(&other)?;
        let y = bcast("mul", &self.value(), &other.value(), |a, b| a * b)?;
        Ok(self.tape.record(y, &[self, other], |g, p, _| {
            let ga = bcast("mul", g, p[1], |a, b| a * b)?;
            let gb = bcast("mul", g, p[0], |a, b| a * b)?;
            Ok(vec![Some(sum_to(ga, p[0].shape())?), Some(sum_to(gb, p[1].shape())?)])
        }))
    }

    /// `self / other` (elementwise), broadcasting as NumPy.
    pub fn div(self, other: Var<'t, T>) -> Result<Var<'t, T>> {
        self.same_tape(&other)?;
        let y = bcast("div", &self.value(), &other.value(), |a, b| a / b)?;
        Ok(self.tape.record(y, &[self, other], |g, p, _| {
            let ga = bcast("div", g, p[1], |a, b| a / b)?;
            let gax = bcast("div", &ga, p[0], |a, b| a * b)?;
            let gb = bcast("div", &gax, p[1], |a, b| -a / b)?;
            Ok(vec![Some(sum_to(ga, p[0].shape())?), Some(sum_to(gb, p[1].shape())?)])
        }))
    }

    /// `self + s` for a constant `s`.
    pub fn add_scalar(self, s: T) -> Var<'t, T> {
        self.elementwise(move |x| x + s, |_, _| T::one())
    }

    /// `self · s` for a constant `s`.
    pub fn mul_scalar(self, s: T) -> Var<'t, T> {
        self.elementwise(move |x| x * s, move |_, _| s)
    }

    // --- unary math ----------------------------------------------------------------------

    /// `−self`.
    pub fn neg(self) -> Var<'t, T> {
        self.elementwise(|x| -x, |_, _| -T::one())
    }

    /// `e^self`.
    pub fn exp(self) -> Var<'t, T> {
        self.elementwise(T::exp, |_, y| y)
    }

    /// Natural logarithm.
    pub fn log(self) -> Var<'t, T> {
        self.elementwise(T::ln, |x, _| T::one() / x)
    }

    /// Square root.
    pub fn sqrt(self) -> Var<'t, T> {
        self.elementwise(T::sqrt, |_, y| T::of(0.5) / y)
    }

    /// `self^p` for a constant exponent.
    pub fn powf(self, p: T) -> Var<'t, T> {
        self.elementwise(move |x| x.powf(p), move |x, _| p * x.powf(p - T::one()))
    }

    /// `|self|` (subgradient 0 at 0).
    pub fn abs(self) -> Var<'t, T> {
        self.elementwise(T::abs, |x, _| {
            if x > T::zero() {
                T::one()
            } else if x < T::zero() {
                -T::one()
            } else {
                T::zero()
            }
        })
    }

    /// Clamps into `[lo, hi]`; the gradient passes only where the value was inside.
    pub fn clamp(self, lo: T, hi: T) -> Result<Var<'t, T>> {
        let y = {
            let x = self.value();
            let mut y = vec![T::zero(); x.len()];
            kernels::elementwise::clamp(x.data(), lo, hi, &mut y)?;
            Tensor::from_parts(x.shape().to_vec(), y)
        };
        Ok(self.tape.record(y, &[self], move |g, p, _| {
            Ok(vec![Some(zip_map(g, p[0], |g, x| if x >= lo && x <= hi { g } else { T::zero() }))])
        }))
    }

    // --- activations ---------------------------------------------------------------------

    /// Any [`Activation`], with the same loops the fused layers use.
    pub fn activation(self, act: Activation) -> Var<'t, T> {
        let y = self.value().map(|v| act.apply(v));
        self.tape.record(y, &[self], move |g, p, y| {
            let mut dx = vec![T::zero(); g.len()];
            act.backward(p[0].data(), y.data(), g.data(), &mut dx)?;
            Ok(vec![Some(Tensor::from_parts(g.shape().to_vec(), dx))])
        })
    }

    /// `max(x, 0)`.
    pub fn relu(self) -> Var<'t, T> {
        self.activation(Activation::Relu)
    }

    /// Logistic sigmoid.
    pub fn sigmoid(self) -> Var<'t, T> {
        self.activation(Activation::Sigmoid)
    }

    /// Hyperbolic tangent.
    pub fn tanh(self) -> Var<'t, T> {
        self.activation(Activation::Tanh)
    }

    fn last_axis(&self, op: &'static str) -> Result<usize> {
        match self.value().shape().last() {
            Some(&c) if c > 0 => Ok(c),
            _ => Err(TapeError::InvalidArgument {
                op,
                message: "needs a tensor of rank ≥ 1 with a non-empty last axis".into(),
            }),
        }
    }

    /// Softmax over the last axis (max-subtracted: finite for any finite logits).
    pub fn softmax(self) -> Result<Var<'t, T>> {
        let cols = self.last_axis("softmax")?;
        self.unary(
            |x| {
                let mut y = vec![T::zero(); x.len()];
                kernels::softmax(x.data(), cols, &mut y)?;
                Ok(Tensor::from_parts(x.shape().to_vec(), y))
            },
            move |g, _, y| {
                let mut dx = vec![T::zero(); g.len()];
                kernels::softmax_backward(y.data(), g.data(), cols, &mut dx)?;
                Ok(Tensor::from_parts(g.shape().to_vec(), dx))
            },
        )
    }

    /// Log-softmax over the last axis (log-sum-exp: finite for any finite logits).
    pub fn log_softmax(self) -> Result<Var<'t, T>> {
        let cols = self.last_axis("log_softmax")?;
        self.unary(
            |x| {
                let mut y = vec![T::zero(); x.len()];
                kernels::log_softmax(x.data(), cols, &mut y)?;
                Ok(Tensor::from_parts(x.shape().to_vec(), y))
            },
            move |g, _, y| {
                let mut dx = vec![T::zero(); g.len()];
                kernels::log_softmax_backward(y.data(), g.data(), cols, &mut dx)?;
                Ok(Tensor::from_parts(g.shape().to_vec(), dx))
            },
        )
    }

    // --- reductions ----------------------------------------------------------------------

    fn reduce_all(self, kind: Reduce) -> Result<Var<'t, T>> {
        let (v, at) = {
            let x = self.value();
            let v = kernels::reduce_all(kind, x.data())?;
            let at =
                x.data().iter().position(|&e| e == v || (e.is_nan() && v.is_nan())).unwrap_or(0);
            (v, at)
        };
        Ok(self.tape.record(Tensor::scalar(v), &[self], move |g, p, _| {
            let g0 = g.data()[0];
            let x = p[0];
            let dx = match kind {
                Reduce::Sum => Tensor::full(x.shape(), g0),
                Reduce::Mean => Tensor::full(x.shape(), g0 / T::of(x.len() as f64)),
                Reduce::Max | Reduce::Min => {
                    let mut d = Tensor::zeros(x.shape());
                    d.data_mut()[at] = g0;
                    d
                }
            };
            Ok(vec![Some(dx)])
        }))
    }

    /// Sum of every element (a scalar).
    pub fn sum(self) -> Result<Var<'t, T>> {
        self.reduce_all(Reduce::Sum)
    }

    /// Mean of every element (a scalar).
    pub fn mean(self) -> Result<Var<'t, T>> {
        self.reduce_all(Reduce::Mean)
    }

    /// Largest element (a scalar); the gradient goes to its first occurrence.
    pub fn max(self) -> Result<Var<'t, T>> {
        self.reduce_all(Reduce::Max)
    }

    /// Smallest element (a scalar); the gradient goes to its first occurrence.
    pub fn min(self) -> Result<Var<'t, T>> {
        self.reduce_all(Reduce::Min)
    }

    fn reduce_axis(self, kind: Reduce, axis: usize) -> Result<Var<'t, T>> {
        let (y, pick) = {
            let x = self.value();
            let (outer, n, inner) = split_at_axis("reduce", x.shape(), axis)?;
            let mut out_shape = x.shape().to_vec();
            out_shape.remove(axis);
            let mut y = vec![T::zero(); outer * inner];
            kernels::reduce_axis(kind, x.data(), x.shape(), axis, &mut y)?;
            // For max/min remember which index along the axis won, for the backward.
            let pick: Vec<usize> = match kind {
                Reduce::Max | Reduce::Min => (0..outer * inner)
                    .map(|oi| {
                        let (o, i) = (oi / inner, oi % inner);
                        (0..n).find(|&j| x.data()[(o * n + j) * inner + i] == y[oi]).unwrap_or(0)
                    })
                    .collect(),
                _ => Vec::new(),
            };
            (Tensor::from_parts(out_shape, y), pick)
        };
        Ok(self.tape.record(y, &[self], move |g, p, _| {
            let x = p[0];
            let (outer, n, inner) = split_at_axis("reduce", x.shape(), axis)?;
            let mut dx = vec![T::zero(); x.len()];
            let scale = if kind == Reduce::Mean { T::one() / T::of(n as f64) } else { T::one() };
            for o in 0..outer {
                for i in 0..inner {
                    let gv = g.data()[o * inner + i];
                    match kind {
                        Reduce::Sum | Reduce::Mean => {
                            for j in 0..n {
                                dx[(o * n + j) * inner + i] = gv * scale;
                            }
                        }
                        Reduce::Max | Reduce::Min => {
                            dx[(o * n + pick[o * inner + i]) * inner + i] = gv
                        }
                    }
                }
            }
            Ok(vec![Some(Tensor::from_parts(x.shape().to_vec(), dx))])
        }))
    }

    /// Sum over `axis` (the axis is removed).
    pub fn sum_axis(self, axis: usize) -> Result<Var<'t, T>> {
        self.reduce_axis(Reduce::Sum, axis)
    }

    /// Mean over `axis` (the axis is removed).
    pub fn mean_axis(self, axis: usize) -> Result<Var<'t, T>> {
        self.reduce_axis(Reduce::Mean, axis)
    }

    /// Maximum over `axis` (the axis is removed); the gradient goes to the first maximum.
    pub fn max_axis(self, axis: usize) -> Result<Var<'t, T>> {
        self.reduce_axis(Reduce::Max, axis)
    }

    /// Minimum over `axis` (the axis is removed); the gradient goes to the first minimum.
    pub fn min_axis(self, axis: usize) -> Result<Var<'t, T>> {
        self.reduce_axis(Reduce::Min, axis)
    }

    /// Index of the maximum along `axis` (not differentiable, so a plain vector).
    pub fn argmax(self, axis: usize) -> Result<Vec<usize>> {
        let x = self.value();
        let (outer, _, inner) = split_at_axis("argmax", x.shape(), axis)?;
        let mut out = vec![0; outer * inner];
        kernels::argmax_axis(x.data(), x.shape(), axis, &mut out)?;
        Ok(out)
    }

    // --- matrix products ----------------------------------------------------------------

    /// Matrix product `self · other` of rank-2 tensors.
    pub fn matmul(self, other: Var<'t, T>) -> Result<Var<'t, T>> {
        self.gemm(Trans::No, other, Trans::No, T::one(), None)
    }

    /// The full GEMM: `alpha·op(self)·op(other) + c`, where `c` (already scaled by the
    /// caller if wanted) must be `m×n` or broadcast to it, e.g. a bias row.
    pub fn gemm(
        self,
        ta: Trans,
        other: Var<'t, T>,
        tb: Trans,
        alpha: T,
        c: Option<Var<'t, T>>,
    ) -> Result<Var<'t, T>> {
        self.same_tape(&other)?;
        let (m, k, n, mut y) = {
            let (a, b) = (self.value(), other.value());
            let (m, k) = matrix_dims("gemm", &a, ta, b.shape())?;
            let (k2, n) = matrix_dims("gemm", &b, tb, a.shape())?;
            if k != k2 {
                return Err(TapeError::ShapeMismatch {
                    op: "matmul",
                    lhs: a.shape().to_vec(),
                    rhs: b.shape().to_vec(),
                    hint: format!(
                        "the inner dimensions differ ({k} vs {k2}); op(A) must be m×k and op(B) k×n"
                    ),
                });
            }
            (m, k, n, gemm_new(m, n, k, alpha, &a, ta, &b, tb)?)
        };
        let mut parents = vec![self, other];
        if let Some(c) = c {
            self.same_tape(&c)?;
            y = bcast("gemm (adding C)", &y, &c.value(), |a, b| a + b)?;
            if y.shape() != [m, n] {
                return Err(TapeError::ShapeMismatch {
                    op: "gemm",
                    lhs: vec![m, n],
                    rhs: c.shape(),
                    hint: "C must broadcast to the product's shape m×n".into(),
                });
            }
            parents.push(c);
        }
        Ok(self.tape.record(y, &parents, move |g, p, _| {
            let (a, b) = (p[0], p[1]);
            let da = if ta == Trans::No {
                gemm_new(m, k, n, alpha, g, Trans::No, b, flip(tb))?
            } else {
                gemm_new(k, m, n, alpha, b, tb, g, Trans::Yes)?
            };
            let db = if tb == Trans::No {
                gemm_new(k, n, m, alpha, a, flip(ta), g, Trans::No)?
            } else {
                gemm_new(n, k, m, alpha, g, Trans::Yes, a, ta)?
            };
            let mut out = vec![Some(da), Some(db)];
            if p.len() == 3 {
                out.push(Some(sum_to(g.clone(), p[2].shape())?));
            }
            Ok(out)
        }))
    }

    /// Swaps the two axes of a rank-2 tensor.
    pub fn transpose(self) -> Result<Var<'t, T>> {
        self.permute(&[1, 0])
    }

    // --- convolution and pooling -----------------------------------------------------

    /// 2-D convolution of an NHWC input with an HWIO kernel and an optional bias `[o]`.
    pub fn conv2d(
        self,
        kernel: Var<'t, T>,
        bias: Option<Var<'t, T>>,
        strides: (usize, usize),
        padding: Padding,
    ) -> Result<Var<'t, T>> {
        self.same_tape(&kernel)?;
        let geom = Conv2dGeometry::new(&self.shape(), &kernel.shape(), strides, padding)?;
        let mut parents = vec![self, kernel];
        if let Some(b) = bias {
            self.same_tape(&b)?;
            if b.shape() != [geom.o] {
                return Err(TapeError::ShapeMismatch {
                    op: "conv2d",
                    lhs: kernel.shape(),
                    rhs: b.shape(),
                    hint: format!("the bias must have shape [{}], one value per filter", geom.o),
                });
            }
            parents.push(b);
        }
        let y = {
            let mut col = vec![T::zero(); geom.workspace_len()];
            let mut y = vec![T::zero(); geom.rows() * geom.o];
            let bv = bias.map(|b| b.value());
            kernels::conv2d_forward(
                &geom,
                self.value().data(),
                kernel.value().data(),
                bv.as_ref().map(|b| b.data()),
                &mut y,
                &mut col,
                None,
            )?;
            Tensor::from_parts(geom.output_shape().to_vec(), y)
        };
        Ok(self.tape.record(y, &parents, move |g, p, _| {
            let mut col = vec![T::zero(); geom.workspace_len()];
            let mut dx = vec![T::zero(); p[0].len()];
            let mut dk = vec![T::zero(); p[1].len()];
            let mut db = vec![T::zero(); geom.o];
            let want_db = p.len() == 3;
            kernels::conv2d_backward(
                &geom,
                p[0].data(),
                p[1].data(),
                g.data(),
                Some(&mut dx),
                &mut dk,
                want_db.then_some(&mut db[..]),
                &mut col,
                None,
            )?;
            let mut out = vec![
                Some(Tensor::from_parts(p[0].shape().to_vec(), dx)),
                Some(Tensor::from_parts(p[1].shape().to_vec(), dk)),
            ];
            if want_db {
                out.push(Some(Tensor::from_parts(vec![geom.o], db)));
            }
            Ok(out)
        }))
    }

    /// Max pooling over NHWC windows; the gradient goes to each window's maximum.
    pub fn max_pool2d(
        self,
        pool: (usize, usize),
        strides: (usize, usize),
        padding: Padding,
    ) -> Result<Var<'t, T>> {
        let geom = Pool2dGeometry::new(&self.shape(), pool, strides, padding)?;
        let mut y = vec![T::zero(); geom.output_len()];
        let mut argmax = vec![0usize; geom.output_len()];
        kernels::max_pool2d_forward(&geom, self.value().data(), &mut y, Some(&mut argmax))?;
        let y = Tensor::from_parts(geom.output_shape().to_vec(), y);
        Ok(self.tape.record(y, &[self], move |g, p, _| {
            let mut dx = vec![T::zero(); p[0].len()];
            kernels::max_pool2d_backward(&geom, &argmax, g.data(), &mut dx)?;
            Ok(vec![Some(Tensor::from_parts(p[0].shape().to_vec(), dx))])
        }))
    }

    /// Average pooling over NHWC windows (padding excluded from each mean, as TensorFlow).
    pub fn avg_pool2d(
        self,
        pool: (usize, usize),
        strides: (usize, usize),
        padding: Padding,
    ) -> Result<Var<'t, T>> {
        let geom = Pool2dGeometry::new(&self.shape(), pool, strides, padding)?;
        self.unary(
            |x| {
                let mut y = vec![T::zero(); geom.output_len()];
                kernels::avg_pool2d_forward(&geom, x.data(), &mut y)?;
                Ok(Tensor::from_parts(geom.output_shape().to_vec(), y))
            },
            move |g, x, _| {
                let mut dx = vec![T::zero(); x.len()];
                kernels::avg_pool2d_backward(&geom, g.data(), &mut dx)?;
                Ok(Tensor::from_parts(x.shape().to_vec(), dx))
            },
        )
    }

    /// Global average pooling: `[n, h, w, c]` → `[n, c]`.
    pub fn global_avg_pool2d(self) -> Result<Var<'t, T>> {
        let dims: [usize; 4] =
            self.shape().try_into().map_err(|s: Vec<usize>| TapeError::InvalidArgument {
                op: "global_avg_pool2d",
                message: format!("takes an NHWC input [n, h, w, c], got {s:?}"),
            })?;
        self.unary(
            |x| {
                let mut y = vec![T::zero(); dims[0] * dims[3]];
                kernels::global_avg_pool2d_forward(dims, x.data(), &mut y)?;
                Ok(Tensor::from_parts(vec![dims[0], dims[3]], y))
            },
            move |g, x, _| {
                let mut dx = vec![T::zero(); x.len()];
                kernels::global_avg_pool2d_backward(dims, g.data(), &mut dx)?;
                Ok(Tensor::from_parts(x.shape().to_vec(), dx))
            },
        )
    }

    // --- layout --------------------------------------------------------------------------

    /// The same elements under another shape with the same element count.
    pub fn reshape(self, shape: &[usize]) -> Result<Var<'t, T>> {
        let shape = shape.to_vec();
        self.unary(|x| x.clone().reshape(&shape), |g, x, _| g.clone().reshape(x.shape()))
    }

    /// Reorders axes: output axis i is input axis `perm[i]`.
    pub fn permute(self, perm: &[usize]) -> Result<Var<'t, T>> {
        let perm = perm.to_vec();
        let mut inverse = vec![0; perm.len()];
        for (i, &p) in perm.iter().enumerate() {
            if p < inverse.len() {
                inverse[p] = i;
            }
        }
        self.unary(
            |x| {
                let mut y = vec![T::zero(); x.len()];
                let shape = kernels::permute(x.data(), x.shape(), &perm, &mut y)?;
                Ok(Tensor::from_parts(shape, y))
            },
            move |g, _, _| {
                let mut dx = vec![T::zero(); g.len()];
                let shape = kernels::permute(g.data(), g.shape(), &inverse, &mut dx)?;
                Ok(Tensor::from_parts(shape, dx))
            },
        )
    }

    /// The block selected by one `start..end` range per axis.
    pub fn slice(self, ranges: &[Range<usize>]) -> Result<Var<'t, T>> {
        let ranges = ranges.to_vec();
        let r2 = ranges.clone();
        self.unary(
            |x| {
                let shape = kernels::layout::slice_shape(x.shape(), &ranges)?;
                let mut y = vec![T::zero(); numel(&shape)];
                kernels::slice(x.data(), x.shape(), &ranges, &mut y)?;
                Ok(Tensor::from_parts(shape, y))
            },
            move |g, x, _| {
                let mut dx = vec![T::zero(); x.len()];
                kernels::slice_backward(g.data(), x.shape(), &r2, &mut dx)?;
                Ok(Tensor::from_parts(x.shape().to_vec(), dx))
            },
        )
    }

    /// Embedding lookup on a `[rows, cols]` table: row `indices[i]` becomes output row i.
    pub fn gather_rows(self, indices: &[usize]) -> Result<Var<'t, T>> {
        let indices = indices.to_vec();
        let cols = match self.shape()[..] {
            [_, c] => c,
            ref s => {
                return Err(TapeError::InvalidArgument {
                    op: "gather_rows",
                    message: format!("the table must be rank 2 [rows, cols], got {s:?}"),
                });
            }
        };
        let y = {
            let t = self.value();
            let mut y = vec![T::zero(); indices.len() * cols];
            kernels::gather_rows(t.data(), cols, &indices, &mut y)?;
            Tensor::from_parts(vec![indices.len(), cols], y)
        };
        Ok(self.tape.record(y, &[self], move |g, p, _| {
            let mut dt = vec![T::zero(); p[0].len()];
            kernels::scatter_add_rows(g.data(), cols, &indices, &mut dt)?;
            Ok(vec![Some(Tensor::from_parts(p[0].shape().to_vec(), dt))])
        }))
    }
}

/// Concatenates variables along `axis`; every other axis must agree.
pub fn concat<'t, T: Scalar>(vars: &[Var<'t, T>], axis: usize) -> Result<Var<'t, T>> {
    let first = vars.first().ok_or(TapeError::InvalidArgument {
        op: "concat",
        message: "nothing to concatenate; pass at least one variable".into(),
    })?;
    for v in vars {
        first.same_tape(v)?;
    }
    let y = {
        let values: Vec<Ref<'_, Tensor<T>>> = vars.iter().map(|v| v.value()).collect();
        let parts: Vec<(&[T], &[usize])> = values.iter().map(|t| (t.data(), t.shape())).collect();
        let shapes: Vec<&[usize]> = parts.iter().map(|p| p.1).collect();
        let shape = kernels::layout::concat_shape(&shapes, axis)?;
        let mut y = vec![T::zero(); numel(&shape)];
        kernels::concat(&parts, axis, &mut y)?;
        Tensor::from_parts(shape, y)
    };
    Ok(first.tape.record(y, vars, move |g, p, _| {
        let shapes: Vec<&[usize]> = p.iter().map(|t| t.shape()).collect();
        let mut bufs: Vec<Vec<T>> = p.iter().map(|t| vec![T::zero(); t.len()]).collect();
        let mut outs: Vec<&mut [T]> = bufs.iter_mut().map(|b| &mut b[..]).collect();
        kernels::split(g.data(), &shapes, axis, &mut outs)?;
        Ok(bufs
            .into_iter()
            .zip(p)
            .map(|(b, t)| Some(Tensor::from_parts(t.shape().to_vec(), b)))
            .collect())
    }))
}
