//! Runtime CPU-feature dispatch for plain loops: [`with_simd`] runs a closure from a
//! function compiled for AVX-512 (or AVX2+FMA), so the closure's loop — inlined there —
//! is vectorized for the widest extension this CPU has, while the binary still runs on
//! any x86-64 (no `target-cpu=native` build needed).

/// Runs `f` compiled for the best vector extension available (AVX-512 F and DQ — DQ for
/// 64-bit multiplies — else AVX2+FMA, else the baseline). Keep `f`'s body a simple loop so the compiler inlines and
/// vectorizes it.
#[inline(always)]
pub fn with_simd<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        let cpu = super::isa::features();
        if cpu.avx512f && cpu.avx512dq {
            // SAFETY: the CPU supports AVX-512F and DQ, checked just above.
            return unsafe { avx512(f) };
        }
        if cpu.avx2_fma() {
            // SAFETY: the CPU supports AVX2 and FMA, checked just above.
            return unsafe { avx2(f) };
        }
    }
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
#[inline]
unsafe fn avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// Whether this CPU has fused multiply-add, which every GEMM microkernel but the
/// portable one uses: code that must round exactly as the GEMM does checks it.
pub fn has_fma() -> bool {
    super::isa::features().fma
}
