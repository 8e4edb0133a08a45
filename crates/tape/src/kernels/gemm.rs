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

/// `op(B)` packed once for many products with different A, on the calling thread
/// ([`gemm_packed`]): a recurrent layer multiplies its recurrent kernel by a new state
/// at every step. float32 keeps the GEMM's panel layout; other scalars a row-major copy.
#[derive(Clone, Debug, Default)]
pub struct PackedB<T> {
    f32: crate::kernels::sgemm::PackedB,
    plain: Vec<T>,
    k: usize,
    n: usize,
}

impl<T: Scalar> PackedB<T> {
    /// An empty pack; its buffer grows on the first [`PackedB::pack`] and is reused.
    pub fn new() -> Self {
        PackedB { f32: Default::default(), plain: Vec::new(), k: 0, n: 0 }
    }

    /// Packs `op(B)`, `k × n` (B stored `k × n`, or `n × k` when `tb` is [`Trans::Yes`]).
    pub fn pack(&mut self, k: usize, n: usize, b: &[T], tb: Trans) -> Result<()> {
        if b.len() != k * n {
            return Err(TapeError::InvalidArgument {
                op: "gemm_packed",
                message: format!("op(B) is {k}×{n} = {} values, got {}", k * n, b.len()),
            });
        }
        (self.k, self.n) = (k, n);
        let (rsb, csb) = if tb == Trans::Yes { (1, k as isize) } else { (n as isize, 1) };
        if let Some(b) = T::as_f32(b) {
            // SAFETY: the length was checked against the extent the strides reach.
            unsafe { self.f32.pack(k, n, b.as_ptr(), rsb, csb) };
        } else {
            self.plain.resize(k * n, T::zero());
            for p in 0..k {
                for j in 0..n {
                    self.plain[p * n + j] = b[(p as isize * rsb + j as isize * csb) as usize];
                }
            }
        }
        Ok(())
    }
}

/// `C ← alpha·op(A)·op(B) + beta·C` for an `m × k` block `op(A)` and a packed `op(B)`,
/// C row-major with `ldc`; always on the calling thread, so callers can split one
/// product's rows between threads, or run several products on several threads,
/// themselves. float32 gives the same bits as [`gemm`] on the unpacked B.
pub fn gemm_packed<T: Scalar>(
    m: usize,
    alpha: T,
    a: Strided<'_, T>,
    b: &PackedB<T>,
    beta: T,
    c: &mut [T],
    ldc: usize,
) -> Result<()> {
    let (k, n) = (b.k, b.n);
    let (ar, ac) = if a.trans == Trans::Yes { (k, m) } else { (m, k) };
    let fits = m == 0 || (a.fits(ar, ac) && n <= ldc && c.len() >= (m - 1) * ldc + n);
    if !fits {
        return Err(TapeError::InvalidArgument {
            op: "gemm_packed",
            message: format!(
                "for m={m}, k={k}, n={n}: A [{ar}, {ac}] holds {} values (ld {}), C {} (ld {ldc})",
                a.data.len(),
                a.ld,
                c.len()
            ),
        });
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    let (rsa, csa) = a.strides();
    if let (Some(a32), Some(c32)) = (T::as_f32(a.data), T::as_f32_mut(c)) {
        let (alpha, beta) = (alpha.as_f64() as f32, beta.as_f64() as f32);
        if k == 0 {
            for row in c32.chunks_mut(ldc).take(m) {
                row[..n].iter_mut().for_each(|v| *v = if beta == 0.0 { 0.0 } else { beta * *v });
            }
            return Ok(());
        }
        // SAFETY: the extents were checked above; `c` is a unique borrow.
        unsafe {
            crate::kernels::sgemm::sgemm_prepacked(
                m,
                alpha,
                a32.as_ptr(),
                rsa,
                csa,
                &b.f32,
                beta,
                c32.as_mut_ptr(),
                ldc,
            )
        };
        return Ok(());
    }
    gemm_strided(m, n, k, alpha, a, Strided::new(&b.plain, n), beta, c, ldc)
}

#[cfg(test)]
mod packed_tests {
    use super::*;

    /// The packed product has the same bits as the plain one, for both operand orders,
    /// in float32 and float64, including sizes past one GEMM block.
    #[test]
    fn packed_equals_plain() {
        fn run<T: Scalar>(m: usize, k: usize, n: usize, tb: Trans) {
            let a: Vec<T> = (0..m * k).map(|i| T::of(((i * 31 % 17) as f64 - 8.0) / 7.0)).collect();
            let b: Vec<T> = (0..k * n).map(|i| T::of(((i * 13 % 11) as f64 - 5.0) / 3.0)).collect();
            let mut want = vec![T::zero(); m * n];
            gemm(m, n, k, T::one(), &a, Trans::No, &b, tb, T::zero(), &mut want).unwrap();
            let mut p = PackedB::new();
            p.pack(k, n, &b, tb).unwrap();
            let mut got = vec![T::of(7.0); m * n];
            gemm_packed(m, T::one(), Strided::new(&a, k), &p, T::zero(), &mut got, n).unwrap();
            assert!(
                want.iter().zip(&got).all(|(x, y)| x.as_f64().to_bits() == y.as_f64().to_bits()
                    || (x.as_f64() - y.as_f64()).abs() < 1e-9 * x.as_f64().abs().max(1.0)),
                "{m}x{k}x{n}"
            );
            if T::DTYPE == "float32" {
                assert!(
                    want.iter()
                        .zip(&got)
                        .all(|(x, y)| x.as_f64().to_bits() == y.as_f64().to_bits()),
                    "{m}x{k}x{n}: bits differ"
                );
            }
            // Two row halves computed apart give the same rows.
            let h = m / 2;
            let mut halves = vec![T::zero(); m * n];
            let (lo, hi) = halves.split_at_mut(h * n);
            gemm_packed(h, T::one(), Strided::new(&a, k), &p, T::zero(), lo, n).unwrap();
            gemm_packed(m - h, T::one(), Strided::new(&a[h * k..], k), &p, T::zero(), hi, n)
                .unwrap();
            assert_eq!(halves, got);
            // A read transposed: op(A) = (Aᵀ)ᵀ from a stored k × m copy.
            let at: Vec<T> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
            let mut tr = vec![T::zero(); m * n];
            gemm_packed(m, T::one(), Strided::t(&at, m), &p, T::zero(), &mut tr, n).unwrap();
            assert_eq!(tr, got);
        }
        for (m, k, n) in [(128, 128, 512), (13, 700, 37), (9, 5, 3100), (1, 1, 1)] {
            for tb in [Trans::No, Trans::Yes] {
                run::<f32>(m, k, n, tb);
                run::<f64>(m, k, n, tb);
            }
        }
    }
}
