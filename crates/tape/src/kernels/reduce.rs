//! Reductions over one axis or over everything, always in a fixed order so the same
//! inputs give the same bits.

use crate::error::{Result, TapeError};
use crate::scalar::Scalar;
use crate::shape::{check_len, split_at_axis};

/// What a reduction computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reduce {
    /// Σ
    Sum,
    /// Σ / n
    Mean,
    /// max
    Max,
    /// min
    Min,
}

fn check_nonempty(op: &'static str, n: usize) -> Result<()> {
    if n == 0 {
        return Err(TapeError::InvalidArgument {
            op,
            message: "cannot reduce an empty axis; give it at least one element".into(),
        });
    }
    Ok(())
}

/// Reduces `x` of `shape` over `axis` into `out`, whose shape is `shape` without `axis`.
pub fn reduce_axis<T: Scalar>(
    kind: Reduce,
    x: &[T],
    shape: &[usize],
    axis: usize,
    out: &mut [T],
) -> Result<()> {
    check_len("reduce_axis", shape, x.len())?;
    let (outer, n, inner) = split_at_axis("reduce_axis", shape, axis)?;
    if kind != Reduce::Sum {
        check_nonempty("reduce_axis", n)?;
    }
    if out.len() != outer * inner {
        return Err(TapeError::InvalidArgument {
            op: "reduce_axis",
            message: format!("output must hold {} elements, got {}", outer * inner, out.len()),
        });
    }
    for o in 0..outer {
        let dst = &mut out[o * inner..(o + 1) * inner];
        let src = &x[o * n * inner..(o + 1) * n * inner];
        match kind {
            Reduce::Sum | Reduce::Mean => dst.fill(T::zero()),
            Reduce::Max => dst.fill(T::neg_infinity()),
            Reduce::Min => dst.fill(T::infinity()),
        }
        for row in src.chunks_exact(inner.max(1)).take(n) {
            for (d, &v) in dst.iter_mut().zip(row) {
                *d = match kind {
                    Reduce::Sum | Reduce::Mean => *d + v,
                    // NaN propagates, as in NumPy.
                    Reduce::Max => {
                        if v > *d || v.is_nan() {
                            v
                        } else {
                            *d
                        }
                    }
                    Reduce::Min => {
                        if v < *d || v.is_nan() {
                            v
                        } else {
                            *d
                        }
                    }
                };
            }
        }
        if kind == Reduce::Mean {
            let inv = T::one() / T::of(n as f64);
            dst.iter_mut().for_each(|d| *d *= inv);
        }
    }
    Ok(())
}

/// Reduces every element of `x` to one value.
pub fn reduce_all<T: Scalar>(kind: Reduce, x: &[T]) -> Result<T> {
    if kind != Reduce::Sum {
        check_nonempty("reduce_all", x.len())?;
    }
    Ok(match kind {
        Reduce::Sum => x.iter().copied().sum(),
        Reduce::Mean => x.iter().copied().sum::<T>() / T::of(x.len() as f64),
        Reduce::Max => x
            .iter()
            .copied()
            .fold(T::neg_infinity(), |a, v| if v > a || v.is_nan() { v } else { a }),
        Reduce::Min => {
            x.iter().copied().fold(T::infinity(), |a, v| if v < a || v.is_nan() { v } else { a })
        }
    })
}

/// Index of the largest element along `axis` (the first on ties), for each position of
/// the other axes.
pub fn argmax_axis<T: Scalar>(
    x: &[T],
    shape: &[usize],
    axis: usize,
    out: &mut [usize],
) -> Result<()> {
    check_len("argmax_axis", shape, x.len())?;
    let (outer, n, inner) = split_at_axis("argmax_axis", shape, axis)?;
    check_nonempty("argmax_axis", n)?;
    if out.len() != outer * inner {
        return Err(TapeError::InvalidArgument {
            op: "argmax_axis",
            message: format!("output must hold {} indices, got {}", outer * inner, out.len()),
        });
    }
    for o in 0..outer {
        for i in 0..inner {
            let mut best = 0;
            let mut bv = x[o * n * inner + i];
            for j in 1..n {
                let v = x[(o * n + j) * inner + i];
                if v > bv {
                    bv = v;
                    best = j;
                }
            }
            out[o * inner + i] = best;
        }
    }
    Ok(())
}

/// Index of the largest element of all of `x` (the first on ties).
pub fn argmax_all<T: Scalar>(x: &[T]) -> Result<usize> {
    check_nonempty("argmax_all", x.len())?;
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    Ok(best)
}
