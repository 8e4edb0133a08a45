//! The element types kiln computes in (f32 and f64) and their GEMM dispatch.

use num_traits::{Float, FromPrimitive};
use std::fmt::{Debug, Display};
use std::iter::Sum;
use std::ops::{AddAssign, DivAssign, MulAssign, SubAssign};

/// A floating-point element type: `f32` (Keras's default) or `f64` (for gradient checks).
///
/// Carries the GEMM entry point (kiln's own SGEMM for row-major f32 output,
/// matrixmultiply otherwise) and the f32 views through which kernels reach their
/// f32-only fast paths, so kernels stay generic with no type-id checks or casts.
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

    /// This slice as `f32`s when the type is `f32` (the f32-only kernels' entry).
    fn as_f32(v: &[Self]) -> Option<&[f32]>;

    /// This slice as `f32`s, writable, when the type is `f32`.
    fn as_f32_mut(v: &mut [Self]) -> Option<&mut [f32]>;

    /// An `f32` slice as this type, when the type is `f32` (the way back, for callbacks
    /// written over `Self` that an f32 kernel calls).
    fn from_f32_mut(v: &mut [f32]) -> Option<&mut [Self]>;

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
    #[inline]
    fn as_f32(v: &[Self]) -> Option<&[f32]> {
        Some(v)
    }
    #[inline]
    fn as_f32_mut(v: &mut [Self]) -> Option<&mut [f32]> {
        Some(v)
    }
    #[inline]
    fn from_f32_mut(v: &mut [f32]) -> Option<&mut [Self]> {
        Some(v)
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
    #[inline]
    fn as_f32(_: &[Self]) -> Option<&[f32]> {
        None
    }
    #[inline]
    fn as_f32_mut(_: &mut [Self]) -> Option<&mut [f32]> {
        None
    }
    #[inline]
    fn from_f32_mut(_: &mut [f32]) -> Option<&mut [Self]> {
        None
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
