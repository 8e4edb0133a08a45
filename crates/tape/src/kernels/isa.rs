//! The one place the kernels ask the CPU what it has. Every runtime dispatch — the
//! SGEMM microkernel, the direct convolution, [`super::simd::with_simd`] — reads these
//! flags, detected once, so the predicates cannot drift apart.

use std::sync::OnceLock;

/// The x86-64 extensions the kernels dispatch on (all `false` elsewhere).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Features {
    /// AVX-512 Foundation: the 8×32 SGEMM microkernel and the direct 3×3 convolution.
    pub avx512f: bool,
    /// AVX-512 DQ: 64-bit multiplies in vectors (the Dropout mask's hash).
    pub avx512dq: bool,
    /// AVX2.
    pub avx2: bool,
    /// Fused multiply-add: every microkernel but the portable one rounds with it.
    pub fma: bool,
}

fn detect() -> Features {
    #[cfg(target_arch = "x86_64")]
    {
        Features {
            avx512f: std::arch::is_x86_feature_detected!("avx512f"),
            avx512dq: std::arch::is_x86_feature_detected!("avx512dq"),
            avx2: std::arch::is_x86_feature_detected!("avx2"),
            fma: std::arch::is_x86_feature_detected!("fma"),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        Features::default()
    }
}

/// This CPU's features, detected on first use.
pub fn features() -> Features {
    static FEATURES: OnceLock<Features> = OnceLock::new();
    *FEATURES.get_or_init(detect)
}

impl Features {
    /// AVX-512F with FMA: the widest microkernels.
    pub fn avx512(&self) -> bool {
        self.avx512f && self.fma
    }
    /// AVX2 with FMA.
    pub fn avx2_fma(&self) -> bool {
        self.avx2 && self.fma
    }
}
