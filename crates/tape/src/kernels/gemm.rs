//! General matrix multiply on row-major slices, transposes by strides.

use crate::error::{Result, TapeError};
use crate::scalar::Scalar;

/// Whether an operand is read as stored or transposed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Trans {
    /// Use the matrix as stored.
    #[default]
    No,
    /// Use the transpose of the stored matrix.
    Yes,
}

/// `C ← alpha·op(A)·op(B) + beta·C` for row-major slices.
///
/// `op(A)` is `m×k` (A is stored `m×k`, or `k×m` when `ta` is [`Trans::Yes`]); `op(B)` is
/// `k×n`; C is `m×n`. With `beta = 0`, C is overwritten without being read, so it may
/// hold garbage; with `beta = 1` a bias pre-broadcast into C is accumulated into.
#[allow(clippy::too_many_arguments)]
pub fn gemm<T: Scalar>(
    m: usize,
    n: usize,
    k: usize,
    alpha: T,
    a: &[T],
    ta: Trans,
    b: &[T],
    tb: Trans,
    beta: T,
    c: &mut [T],
) -> Result<()> {
    let fits = a.len() == m * k && b.len() == k * n && c.len() == m * n;
    if !fits {
        let dims =
            |t: Trans, r: usize, cl: usize| if t == Trans::Yes { vec![cl, r] } else { vec![r, cl] };
        return Err(TapeError::InvalidArgument {
            op: "gemm",
            message: format!(
                "for m={m}, n={n}, k={k} the operands must hold A {:?} = {}, B {:?} = {}, C [{m}, {n}] = {} \
                 elements, but hold {}, {}, {}",
                dims(ta, m, k),
                m * k,
                dims(tb, k, n),
                k * n,
                m * n,
                a.len(),
                b.len(),
                c.len()
            ),
        });
    }
    gemm_in(m, n, k, alpha, a, ta, b, tb, beta, c);
    Ok(())
}

/// [`gemm`] for kernels whose operand lengths hold by construction: no `Result` to
/// discard on a hot path. A violated length is a kiln bug, caught by the assertion
/// (which the unsafe call below needs anyway).
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_in<T: Scalar>(
    m: usize,
    n: usize,
    k: usize,
    alpha: T,
    a: &[T],
    ta: Trans,
    b: &[T],
    tb: Trans,
    beta: T,
    c: &mut [T],
) {
    assert!(
        a.len() >= m * k && b.len() >= k * n && c.len() >= m * n,
        "gemm_in: operands shorter than m={m}, n={n}, k={k}"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        // op(A)·op(B) is all zeros: only the beta scaling remains.
        for v in c.iter_mut() {
            *v = if beta == T::zero() { T::zero() } else { beta * *v };
        }
        return;
    }
    let (rsa, csa) = if ta == Trans::Yes { (1, m as isize) } else { (k as isize, 1) };
    let (rsb, csb) = if tb == Trans::Yes { (1, k as isize) } else { (n as isize, 1) };
    // SAFETY: the lengths were checked above against the exact extents the strides reach,
    // and `c` is a unique borrow, so it cannot alias `a` or `b`.
    unsafe {
        T::gemm_raw(
            m,
            k,
            n,
            alpha,
            a.as_ptr(),
            rsa,
            csa,
            b.as_ptr(),
            rsb,
            csb,
            beta,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

/// One operand of [`gemm_strided`]: a row-major matrix stored with `ld` values between
/// the starts of consecutive rows (`ld ≥` its stored width), so a block of columns of
/// a wider matrix is used in place.
#[derive(Clone, Copy, Debug)]
pub struct Strided<'a, T> {
    /// The values, from the first element of the block.
    pub data: &'a [T],
    /// Values from one stored row to the next.
    pub ld: usize,
    /// Read as stored or transposed.
    pub trans: Trans,
}

impl<'a, T> Strided<'a, T> {
    /// A block as stored.
    pub fn new(data: &'a [T], ld: usize) -> Self {
        Strided { data, ld, trans: Trans::No }
    }
    /// A block read transposed.
    pub fn t(data: &'a [T], ld: usize) -> Self {
        Strided { data, ld, trans: Trans::Yes }
    }
    /// Whether a stored `rows × cols` block fits the slice and its stride.
    fn fits(&self, rows: usize, cols: usize) -> bool {
        rows == 0
            || cols == 0
            || (cols <= self.ld && self.data.len() >= (rows - 1) * self.ld + cols)
    }
    /// (row stride, column stride) of `op(block)`.
    fn strides(&self) -> (isize, isize) {
        if self.trans == Trans::Yes { (1, self.ld as isize) } else { (self.ld as isize, 1) }
    }
}

/// `C ← alpha·op(A)·op(B) + beta·C` on blocks of wider row-major matrices (`C` stored
/// with `ldc` between rows): e.g. one gate's columns of a recurrent kernel `[u, g·u]`
/// times a `[batch, u]` state, written into that gate's columns of `[batch, g·u]`.
#[allow(clippy::too_many_arguments)]
pub fn gemm_strided<T: Scalar>(
    m: usize,
    n: usize,
    k: usize,
    alpha: T,
    a: Strided<'_, T>,
    b: Strided<'_, T>,
    beta: T,
    c: &mut [T],
    ldc: usize,
) -> Result<()> {
    let stored = |s: &Strided<'_, T>, r: usize, cl: usize| {
        if s.trans == Trans::Yes { (cl, r) } else { (r, cl) }
    };
    let (ar, ac) = stored(&a, m, k);
    let (br, bc) = stored(&b, k, n);
    let c_fits = m == 0 || n == 0 || (n <= ldc && c.len() >= (m - 1) * ldc + n);
    if !(a.fits(ar, ac) && b.fits(br, bc) && c_fits) {
        return Err(TapeError::InvalidArgument {
            op: "gemm_strided",
            message: format!(
                "for m={m}, n={n}, k={k} the blocks A [{ar}, {ac}] (ld {}, {} values), \
                 B [{br}, {bc}] (ld {}, {} values) and C [{m}, {n}] (ld {ldc}, {} values) \
                 do not fit their slices",
                a.ld,
                a.data.len(),
                b.ld,
                b.data.len(),
                c.len()
            ),
        });
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        for row in c.chunks_mut(ldc).take(m) {
            for v in &mut row[..n] {
                *v = if beta == T::zero() { T::zero() } else { beta * *v };
            }
        }
        return Ok(());
    }
    let (rsa, csa) = a.strides();
    let (rsb, csb) = b.strides();
    // SAFETY: every block was checked above against the extent its strides reach, and
    // `c` is a unique borrow, so it cannot alias `a` or `b`.
    unsafe {
        T::gemm_raw(
            m,
            k,
            n,
            alpha,
            a.data.as_ptr(),
            rsa,
            csa,
            b.data.as_ptr(),
            rsb,
            csb,
            beta,
            c.as_mut_ptr(),
            ldc as isize,
            1,
        );
    }
    Ok(())
}

#[cfg(test)]
mod strided_tests {
    use super::*;

    /// A block product equals the plain product of the blocks copied out.
    #[test]
    fn blocks_multiply_in_place() {
        let (m, k, n, lda, ldb, ldc) = (3, 4, 2, 7, 5, 6);
        let a: Vec<f64> = (0..m * lda).map(|i| (i as f64 * 0.37).sin()).collect();
        let b: Vec<f64> = (0..k * ldb).map(|i| (i as f64 * 0.11).cos()).collect();
        let (a_off, b_off, c_off) = (2, 1, 3);
        let mut c = vec![9.0f64; m * ldc];
        gemm_strided(
            m,
            n,
            k,
            1.0,
            Strided::new(&a[a_off..], lda),
            Strided::new(&b[b_off..], ldb),
            0.0,
            &mut c[c_off..],
            ldc,
        )
        .unwrap();
        for i in 0..m {
            for j in 0..n {
                let want: f64 =
                    (0..k).map(|p| a[a_off + i * lda + p] * b[b_off + p * ldb + j]).sum();
                assert!((c[c_off + i * ldc + j] - want).abs() < 1e-14);
            }
        }
        // Untouched outside the block.
        assert_eq!(c[..c_off], [9.0; 3]);
        assert_eq!(c[c_off + n], 9.0);
        // Transposed A: stored [k, m] with ld 5.
        let at: Vec<f64> = (0..k * 5).map(|i| i as f64).collect();
        let mut c2 = vec![0.0f64; m * n];
        gemm_strided(m, n, k, 1.0, Strided::t(&at, 5), Strided::new(&b, ldb), 0.0, &mut c2, n)
            .unwrap();
        for i in 0..m {
            for j in 0..n {
                let want: f64 = (0..k).map(|p| at[p * 5 + i] * b[p * ldb + j]).sum();
                assert!((c2[i * n + j] - want).abs() < 1e-12);
            }
        }
        let short = gemm_strided(
            m,
            n,
            k,
            1.0,
            Strided::new(&a[..10], lda),
            Strided::new(&b, ldb),
            0.0,
            &mut c2,
            n,
        );
        assert!(short.is_err());
    }
}
