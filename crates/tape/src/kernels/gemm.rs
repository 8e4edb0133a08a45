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
