//! Data movement: permute/transpose, concat, slice, and row gather (embedding lookup)
//! with its scatter-add backward. Reshape needs no kernel: it only relabels the shape.

use crate::error::{Result, TapeError};
use crate::kernels::elementwise::for_each_index;
use crate::scalar::Scalar;
use crate::shape::{check_len, numel, strides};
use std::ops::Range;

/// The shape of `shape` permuted by `perm` (output axis i is input axis `perm[i]`), after
/// checking that `perm` is a permutation of `0..rank`.
pub fn permuted_shape(shape: &[usize], perm: &[usize]) -> Result<Vec<usize>> {
    let mut seen = vec![false; shape.len()];
    let ok = perm.len() == shape.len()
        && perm.iter().all(|&p| p < shape.len() && !std::mem::replace(&mut seen[p], true));
    if !ok {
        return Err(TapeError::InvalidArgument {
            op: "permute",
            message: format!(
                "{perm:?} is not a permutation of the {} axes of {shape:?}; list each of 0..{} once",
                shape.len(),
                shape.len()
            ),
        });
    }
    Ok(perm.iter().map(|&p| shape[p]).collect())
}

/// Writes `x` (of `shape`) with its axes reordered by `perm` into `out`.
pub fn permute<T: Scalar>(
    x: &[T],
    shape: &[usize],
    perm: &[usize],
    out: &mut [T],
) -> Result<Vec<usize>> {
    check_len("permute", shape, x.len())?;
    let out_shape = permuted_shape(shape, perm)?;
    check_len("permute", &out_shape, out.len())?;
    let src = strides(shape);
    let read: Vec<usize> = perm.iter().map(|&p| src[p]).collect();
    if out_shape.len() == 2 && perm == [1, 0] {
        // The common 2-D transpose, as a tiled loop for cache reuse.
        let (r, c) = (shape[0], shape[1]);
        const TILE: usize = 32;
        for i0 in (0..r).step_by(TILE) {
            for j0 in (0..c).step_by(TILE) {
                for i in i0..(i0 + TILE).min(r) {
                    for j in j0..(j0 + TILE).min(c) {
                        out[j * r + i] = x[i * c + j];
                    }
                }
            }
        }
        return Ok(out_shape);
    }
    for_each_index(&out_shape, |flat, idx| {
        out[flat] = x[idx.iter().zip(&read).map(|(i, s)| i * s).sum::<usize>()];
    });
    Ok(out_shape)
}

/// The shape of concatenating `shapes` along `axis`, after checking the other axes agree.
pub fn concat_shape(shapes: &[&[usize]], axis: usize) -> Result<Vec<usize>> {
    let first = shapes.first().ok_or(TapeError::InvalidArgument {
        op: "concat",
        message: "nothing to concatenate; pass at least one tensor".into(),
    })?;
    if axis >= first.len() {
        return Err(TapeError::BadAxis { op: "concat", axis, rank: first.len() });
    }
    let mut out = first.to_vec();
    for s in &shapes[1..] {
        let fits = s.len() == first.len()
            && s.iter().zip(first.iter()).enumerate().all(|(i, (a, b))| i == axis || a == b);
        if !fits {
            return Err(TapeError::ShapeMismatch {
                op: "concat",
                lhs: first.to_vec(),
                rhs: s.to_vec(),
                hint: format!("all axes but the concatenation axis {axis} must be equal"),
            });
        }
        out[axis] += s[axis];
    }
    Ok(out)
}

/// Concatenates `(data, shape)` parts along `axis` into `out`.
pub fn concat<T: Scalar>(
    parts: &[(&[T], &[usize])],
    axis: usize,
    out: &mut [T],
) -> Result<Vec<usize>> {
    let shapes: Vec<&[usize]> = parts.iter().map(|p| p.1).collect();
    let out_shape = concat_shape(&shapes, axis)?;
    for (d, s) in parts {
        check_len("concat", s, d.len())?;
    }
    check_len("concat", &out_shape, out.len())?;
    let outer = numel(&out_shape[..axis]);
    let mut pos = 0;
    for o in 0..outer {
        for (d, s) in parts {
            let chunk = numel(&s[axis..]);
            out[pos..pos + chunk].copy_from_slice(&d[o * chunk..(o + 1) * chunk]);
            pos += chunk;
        }
    }
    Ok(out_shape)
}

/// Splits a gradient of a concatenation back into the parts' shapes (the inverse of [`concat()`]).
pub fn split<T: Scalar>(
    x: &[T],
    shapes: &[&[usize]],
    axis: usize,
    outs: &mut [&mut [T]],
) -> Result<()> {
    let full = concat_shape(shapes, axis)?;
    check_len("split", &full, x.len())?;
    let outer = numel(&full[..axis]);
    let mut pos = 0;
    for o in 0..outer {
        for (s, out) in shapes.iter().zip(outs.iter_mut()) {
            let chunk = numel(&s[axis..]);
            out[o * chunk..(o + 1) * chunk].copy_from_slice(&x[pos..pos + chunk]);
            pos += chunk;
        }
    }
    Ok(())
}

/// The shape of slicing `shape` by one range per axis, after checking the ranges.
pub fn slice_shape(shape: &[usize], ranges: &[Range<usize>]) -> Result<Vec<usize>> {
    if ranges.len() != shape.len()
        || ranges.iter().zip(shape).any(|(r, &d)| r.start > r.end || r.end > d)
    {
        return Err(TapeError::InvalidArgument {
            op: "slice",
            message: format!(
                "ranges {ranges:?} do not fit shape {shape:?}; give one start..end per axis within it"
            ),
        });
    }
    Ok(ranges.iter().map(|r| r.end - r.start).collect())
}

/// Copies the sub-block of `x` selected by `ranges` into `out`.
pub fn slice<T: Scalar>(
    x: &[T],
    shape: &[usize],
    ranges: &[Range<usize>],
    out: &mut [T],
) -> Result<Vec<usize>> {
    check_len("slice", shape, x.len())?;
    let out_shape = slice_shape(shape, ranges)?;
    check_len("slice", &out_shape, out.len())?;
    let st = strides(shape);
    let base: usize = ranges.iter().zip(&st).map(|(r, s)| r.start * s).sum();
    for_each_index(&out_shape, |flat, idx| {
        out[flat] = x[base + idx.iter().zip(&st).map(|(i, s)| i * s).sum::<usize>()];
    });
    Ok(out_shape)
}

/// Slice backward: adds `dy` into the selected block of `dx` (of `shape`).
pub fn slice_backward<T: Scalar>(
    dy: &[T],
    shape: &[usize],
    ranges: &[Range<usize>],
    dx: &mut [T],
) -> Result<()> {
    check_len("slice backward", shape, dx.len())?;
    let out_shape = slice_shape(shape, ranges)?;
    check_len("slice backward", &out_shape, dy.len())?;
    let st = strides(shape);
    let base: usize = ranges.iter().zip(&st).map(|(r, s)| r.start * s).sum();
    for_each_index(&out_shape, |flat, idx| {
        dx[base + idx.iter().zip(&st).map(|(i, s)| i * s).sum::<usize>()] += dy[flat];
    });
    Ok(())
}

fn check_indices(op: &'static str, indices: &[usize], rows: usize) -> Result<()> {
    if let Some((pos, &i)) = indices.iter().enumerate().find(|(_, i)| **i >= rows) {
        return Err(TapeError::InvalidArgument {
            op,
            message: format!(
                "index {i} at position {pos} is out of range for a table of {rows} rows; use indices below {rows}"
            ),
        });
    }
    Ok(())
}

/// Embedding lookup: `out[i] = table[indices[i]]`, rows of `cols` elements.
pub fn gather_rows<T: Scalar>(
    table: &[T],
    cols: usize,
    indices: &[usize],
    out: &mut [T],
) -> Result<()> {
    let rows = table.len().checked_div(cols).unwrap_or(0);
    check_indices("gather_rows", indices, rows)?;
    if out.len() != indices.len() * cols {
        return Err(TapeError::InvalidArgument {
            op: "gather_rows",
            message: format!(
                "output must hold {} elements, got {}",
                indices.len() * cols,
                out.len()
            ),
        });
    }
    for (dst, &i) in out.chunks_exact_mut(cols.max(1)).zip(indices) {
        dst.copy_from_slice(&table[i * cols..(i + 1) * cols]);
    }
    Ok(())
}

/// Gather backward: adds each row of `dout` into `dtable[indices[i]]` (repeats accumulate).
pub fn scatter_add_rows<T: Scalar>(
    dout: &[T],
    cols: usize,
    indices: &[usize],
    dtable: &mut [T],
) -> Result<()> {
    let rows = dtable.len().checked_div(cols).unwrap_or(0);
    check_indices("scatter_add_rows", indices, rows)?;
    if dout.len() != indices.len() * cols {
        return Err(TapeError::InvalidArgument {
            op: "scatter_add_rows",
            message: format!(
                "gradient must hold {} elements, got {}",
                indices.len() * cols,
                dout.len()
            ),
        });
    }
    for (src, &i) in dout.chunks_exact(cols.max(1)).zip(indices) {
        for (d, &v) in dtable[i * cols..(i + 1) * cols].iter_mut().zip(src) {
            *d += v;
        }
    }
    Ok(())
}
