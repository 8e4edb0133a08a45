//! Shape arithmetic shared by tensors, kernels and the tape: element counts,
//! row-major strides and NumPy broadcasting.

use crate::error::{Result, TapeError};

/// Number of elements a shape holds (1 for a scalar, i.e. the empty shape).
#[inline]
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Row-major strides of a contiguous tensor of this shape.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// The shape two operands broadcast to under NumPy's rules (align right; a dimension
/// of 1 stretches), or an error naming both shapes.
pub fn broadcast_shapes(op: &'static str, a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for i in 0..rank {
        let da = if i + a.len() >= rank { a[i + a.len() - rank] } else { 1 };
        let db = if i + b.len() >= rank { b[i + b.len() - rank] } else { 1 };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => {
                return Err(TapeError::ShapeMismatch {
                    op,
                    lhs: a.to_vec(),
                    rhs: b.to_vec(),
                    hint: format!(
                        "dimension {i} from the right is {da} vs {db}; broadcasting needs equal sizes or 1",
                        i = rank - 1 - i
                    ),
                });
            }
        };
    }
    Ok(out)
}

/// Strides for reading `shape` as if it had been broadcast to `out` (0 on stretched axes).
pub(crate) fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let own = strides(shape);
    let offset = out.len() - shape.len();
    (0..out.len())
        .map(|i| if i < offset || shape[i - offset] == 1 { 0 } else { own[i - offset] })
        .collect()
}

/// Splits `shape` around `axis` into (outer, axis length, inner) element counts,
/// the layout every axis-wise kernel iterates over.
pub fn split_at_axis(
    op: &'static str,
    shape: &[usize],
    axis: usize,
) -> Result<(usize, usize, usize)> {
    if axis >= shape.len() {
        return Err(TapeError::BadAxis { op, axis, rank: shape.len() });
    }
    Ok((numel(&shape[..axis]), shape[axis], numel(&shape[axis + 1..])))
}

/// Checks that `len` elements fill `shape` exactly.
pub(crate) fn check_len(op: &'static str, shape: &[usize], len: usize) -> Result<()> {
    let expected = numel(shape);
    if expected != len {
        return Err(TapeError::LengthMismatch { op, shape: shape.to_vec(), expected, got: len });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting_follows_numpy() {
        assert_eq!(broadcast_shapes("t", &[4, 1, 3], &[5, 1]).unwrap(), vec![4, 5, 3]);
        assert_eq!(broadcast_shapes("t", &[], &[2, 2]).unwrap(), vec![2, 2]);
        assert!(broadcast_shapes("t", &[3], &[4]).is_err());
        assert_eq!(broadcast_strides(&[5, 1], &[4, 5, 3]), vec![0, 1, 0]);
    }

    #[test]
    fn strides_are_row_major() {
        assert_eq!(strides(&[2, 3, 4]), vec![12, 4, 1]);
        assert_eq!(strides(&[]), Vec::<usize>::new());
    }
}
