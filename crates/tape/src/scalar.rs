//! The element types kiln computes in (f32 and f64) and their GEMM dispatch.

use num_traits::{Float, FromPrimitive};
use std::fmt::{Debug, Display};
use std::iter::Sum;
use std::ops::{AddAssign, DivAssign, MulAssign, SubAssign};

/// A floating-point element type: `f32` (Keras's default) or `f64` (for gradient checks).
///
/// Carries the GEMM entry point so kernels stay generic while matrixmultiply's
/// `sgemm`/`dgemm` do the work.
pub trait Scalar:
    Float
    + FromPrimitive
    + Default
    + Debug
    + Display
    + Sum
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
    + Send
    + Sync
    + 'static
{
    /// The type's name as Keras spells its dtype ("float32", "float64").
    const DTYPE: &'static str;

    /// Converts an `f64` constant into this type (rounding for `f32`).
    fn of(v: f64) -> Self;

    /// Widens to `f64` (exact for both f32 and f64).
    fn as_f64(self) -> f64;

    /// `C ← alpha·A·B + beta·C` on strided matrices (matrixmultiply's convention).
    ///
    /// # Safety
    /// Every index reached through the given dimensions and strides must be in bounds of
    /// the respective pointer's allocation, and `c` must not alias `a` or `b`.
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm_raw(
        m: usize,
        k: usize,
        n: usize,
        alpha: Self,
        a: *const Self,
        rsa: isize,
        csa: isize,
        b: *const Self,
        rsb: isize,
        csb: isize,
        beta: Self,
        c: *mut Self,
        rsc: isize,
        csc: isize,
    );
}

impl Scalar for f32 {
    const DTYPE: &'static str = "float32";
    #[inline]
    fn of(v: f64) -> Self {
        v as f32
    }
    #[inline]
    fn as_f64(self) -> f64 {
        f64::from(self)
    }
    unsafe fn gemm_raw(
        m: usize,
        k: usize,
        n: usize,
        alpha: Self,
        a: *const Self,
        rsa: isize,
        csa: isize,
        b: *const Self,
        rsb: isize,
        csb: isize,
        beta: Self,
        c: *mut Self,
        rsc: isize,
        csc: isize,
    ) {
        if csc == 1 && rsc >= 0 {
            // SAFETY: forwarded contract of `gemm_raw`; C is row-major with stride `rsc`.
            unsafe {
                crate::kernels::sgemm::sgemm(
                    m,
                    k,
                    n,
                    alpha,
                    a,
                    rsa,
                    csa,
                    b,
                    rsb,
                    csb,
                    beta,
                    c,
                    rsc as usize,
                )
            }
        } else {
            // SAFETY: forwarded contract of `gemm_raw`.
            unsafe {
                matrixmultiply::sgemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc)
            }
        }
    }
}

impl Scalar for f64 {
    const DTYPE: &'static str = "float64";
    #[inline]
    fn of(v: f64) -> Self {
        v
    }
    #[inline]
    fn as_f64(self) -> f64 {
        self
    }
    unsafe fn gemm_raw(
        m: usize,
        k: usize,
        n: usize,
        alpha: Self,
        a: *const Self,
        rsa: isize,
        csa: isize,
        b: *const Self,
        rsb: isize,
        csb: isize,
        beta: Self,
        c: *mut Self,
        rsc: isize,
        csc: isize,
    ) {
        // SAFETY: forwarded contract of `gemm_raw`.
        unsafe {
            matrixmultiply::dgemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc)
        }
    }
}
