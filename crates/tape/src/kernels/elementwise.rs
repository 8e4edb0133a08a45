//! Elementwise arithmetic with NumPy broadcasting, its gradient reduction, and unary maps.

use crate::error::{Result, TapeError};
use crate::scalar::Scalar;
use crate::shape::{broadcast_shapes, broadcast_strides, check_len, numel};

/// Writes `f(a, b)` into `out`, broadcasting `a` and `b` to `out_shape`, which must be
/// their broadcast shape (see [`broadcast_shapes`]). Fast paths cover equal shapes and
/// a scalar or trailing-row operand (a bias); the general path walks strides.
pub fn broadcast_binary<T: Scalar>(
    op: &'static str,
    a: &[T],
    a_shape: &[usize],
    b: &[T],
    b_shape: &[usize],
    out: &mut [T],
    f: impl Fn(T, T) -> T,
) -> Result<Vec<usize>> {
    check_len(op, a_shape, a.len())?;
    check_len(op, b_shape, b.len())?;
    let out_shape = broadcast_shapes(op, a_shape, b_shape)?;
    check_len(op, &out_shape, out.len())?;
    if a_shape == b_shape {
        for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
            *o = f(x, y);
        }
    } else if b.len() == 1 {
        let y = b[0];
        for (o, &x) in out.iter_mut().zip(a) {
            *o = f(x, y);
        }
    } else if a.len() == 1 {
        let x = a[0];
        for (o, &y) in out.iter_mut().zip(b) {
            *o = f(x, y);
        }
    } else if a.len() == out.len()
        && out.len().is_multiple_of(b.len())
        && is_trailing(b_shape, &out_shape)
    {
        for (orow, arow) in out.chunks_exact_mut(b.len()).zip(a.chunks_exact(b.len())) {
            for ((o, &x), &y) in orow.iter_mut().zip(arow).zip(b) {
                *o = f(x, y);
            }
        }
    } else {
        let sa = broadcast_strides(a_shape, &out_shape);
        let sb = broadcast_strides(b_shape, &out_shape);
        for_each_index(&out_shape, |flat, idx| {
            let ia: usize = idx.iter().zip(&sa).map(|(i, s)| i * s).sum();
            let ib: usize = idx.iter().zip(&sb).map(|(i, s)| i * s).sum();
            out[flat] = f(a[ia], b[ib]);
        });
    }
    Ok(out_shape)
}

/// Whether `small` equals the trailing dimensions of `big` (after dropping leading 1s),
/// so that it repeats as contiguous rows.
fn is_trailing(small: &[usize], big: &[usize]) -> bool {
    let s: Vec<usize> = small.iter().copied().skip_while(|&d| d == 1).collect();
    s.len() <= big.len() && big[big.len() - s.len()..] == s[..]
}

/// Calls `f(flat, multi_index)` for every element of `shape` in row-major order.
pub(crate) fn for_each_index(shape: &[usize], mut f: impl FnMut(usize, &[usize])) {
    let total = numel(shape);
    let mut idx = vec![0usize; shape.len()];
    for flat in 0..total {
        f(flat, &idx);
        for d in (0..shape.len()).rev() {
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

/// Sums `grad` (of `grad_shape`) down to `target_shape`, the inverse of broadcasting:
/// the gradient of an operand that was stretched is the sum over the stretched axes.
pub fn sum_to_shape<T: Scalar>(
    grad: &[T],
    grad_shape: &[usize],
    target_shape: &[usize],
    out: &mut [T],
) -> Result<()> {
    check_len("sum_to_shape", grad_shape, grad.len())?;
    check_len("sum_to_shape", target_shape, out.len())?;
    let back = broadcast_shapes("sum_to_shape", grad_shape, target_shape)?;
    if back != grad_shape {
        return Err(TapeError::ShapeMismatch {
            op: "sum_to_shape",
            lhs: grad_shape.to_vec(),
            rhs: target_shape.to_vec(),
            hint: "the target must broadcast to the gradient's shape".into(),
        });
    }
    out.fill(T::zero());
    if grad_shape == target_shape {
        out.copy_from_slice(grad);
        return Ok(());
    }
    let st = broadcast_strides(target_shape, grad_shape);
    for_each_index(grad_shape, |flat, idx| {
        let it: usize = idx.iter().zip(&st).map(|(i, s)| i * s).sum();
        out[it] += grad[flat];
    });
    Ok(())
}

/// Applies `f` elementwise from `x` into `y` (equal lengths).
pub fn map<T: Scalar>(x: &[T], y: &mut [T], f: impl Fn(T) -> T) -> Result<()> {
    if x.len() != y.len() {
        return Err(TapeError::InvalidArgument {
            op: "map",
            message: format!(
                "input has {} elements but output {}; give equal lengths",
                x.len(),
                y.len()
            ),
        });
    }
    for (o, &v) in y.iter_mut().zip(x) {
        *o = f(v);
    }
    Ok(())
}

/// Elementwise `-x`.
pub fn neg<T: Scalar>(x: &[T], y: &mut [T]) -> Result<()> {
    map(x, y, |v| -v)
}
/// Elementwise `eˣ`.
pub fn exp<T: Scalar>(x: &[T], y: &mut [T]) -> Result<()> {
    map(x, y, T::exp)
}
/// Elementwise natural logarithm (−∞ at 0, NaN below, as IEEE defines).
pub fn log<T: Scalar>(x: &[T], y: &mut [T]) -> Result<()> {
    map(x, y, T::ln)
}
/// Elementwise square root.
pub fn sqrt<T: Scalar>(x: &[T], y: &mut [T]) -> Result<()> {
    map(x, y, T::sqrt)
}
/// Elementwise `xᵖ`.
pub fn powf<T: Scalar>(x: &[T], p: T, y: &mut [T]) -> Result<()> {
    map(x, y, |v| v.powf(p))
}
/// Elementwise `|x|`.
pub fn abs<T: Scalar>(x: &[T], y: &mut [T]) -> Result<()> {
    map(x, y, T::abs)
}
/// Elementwise clamp into `[lo, hi]`.
pub fn clamp<T: Scalar>(x: &[T], lo: T, hi: T, y: &mut [T]) -> Result<()> {
    if lo > hi || lo.is_nan() || hi.is_nan() {
        return Err(TapeError::InvalidArgument {
            op: "clamp",
            message: format!("bounds [{lo}, {hi}] are empty or NaN; pass lo <= hi"),
        });
    }
    map(x, y, |v| v.max(lo).min(hi))
}
