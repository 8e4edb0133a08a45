//! A direct f32 convolution forward for AVX-512: the SGEMM's 8×32 microkernel with its
//! A operand read straight from the input instead of from an im2col matrix.
//!
//! Row `r` of the im2col matrix is output pixel `r`'s window, and along a kernel
//! position `(ky, kx)` its entries are that input pixel's channels, contiguous in NHWC.
//! So eight output pixels need only eight base pointers into the input (or into a
//! zero-bordered copy of one image when the window hangs over the padding); every
//! depth step broadcasts one value from each and multiplies it with a 32-wide kernel
//! row, exactly as the GEMM does after packing. No im2col matrix is written (0.9 MB per
//! 28×28 image for a 3×3 convolution over 32 channels, more than L2 holds beside the
//! rest) and nothing is packed. Sums run in the GEMM's order, depth blocks of
//! [`super::sgemm::KC`] included, so the output is the same bits as im2col · kernel.

use super::conv::Conv2dGeometry;
use super::sgemm::KC;

/// One run of depth entries that are contiguous in the input: kernel position
/// `(ky, kx)`'s channels `c0..c0 + len`, starting a new depth block of the GEMM when
/// `block`.
#[derive(Clone, Copy, Default)]
struct Seg {
    /// Offset in the (padded) input from a window's corner.
    xoff: usize,
    /// First kernel row (depth entry).
    krow: usize,
    len: usize,
    block: bool,
}

/// The most segments a kernel may need (kernel positions, plus depth-block splits).
const MAX_SEGS: usize = 64;

/// Whether [`forward_images`] computes this convolution: AVX-512 with FMA (the SGEMM's
/// kernel, whose rounding it reproduces), filters in whole 32-wide panels, and a
/// window small enough for the segment table.
pub(crate) fn usable(g: &Conv2dGeometry) -> bool {
    super::isa::features().avx512()
        && g.o.is_multiple_of(32)
        && g.kh * g.kw * (1 + g.c.div_ceil(KC)) + g.patch() / KC < MAX_SEGS
}

/// The zero-bordered image size a geometry needs, or `None` when its windows never
/// leave the input (then the input is read in place).
pub(crate) fn padded_len(g: &Conv2dGeometry) -> Option<usize> {
    let (hp, wp) = ((g.oh - 1) * g.sh + g.kh, (g.ow - 1) * g.sw + g.kw);
    let inside = g.pad_top == 0 && g.pad_left == 0 && hp <= g.h && wp <= g.w;
    (!inside).then_some(hp * wp * g.c)
}

/// `y = im2col(x) · kernel` for the `g.n` images of `x`, `y` row-major `[pixels, o]`.
/// `pad` holds at least [`padded_len`] values when that is `Some`.
pub(crate) fn forward_images(
    g: &Conv2dGeometry,
    x: &[f32],
    kernel: &[f32],
    y: &mut [f32],
    pad: &mut [f32],
) {
    let c = g.c;
    let per = g.oh * g.ow;
    let img = g.h * g.w * c;
    let one = Conv2dGeometry { n: 1, ..*g };
    let wp = if padded_len(g).is_some() { (g.ow - 1) * g.sw + g.kw } else { g.w };
    // The depth runs, the same for every pixel.
    let mut segs = [Seg::default(); MAX_SEGS];
    let mut count = 0;
    for ky in 0..g.kh {
        for kx in 0..g.kw {
            let mut c0 = 0;
            while c0 < c {
                let krow = (ky * g.kw + kx) * c + c0;
                let len = (c - c0).min(KC - krow % KC);
                segs[count] = Seg {
                    xoff: (ky * wp + kx) * c + c0,
                    krow,
                    len,
                    block: krow.is_multiple_of(KC),
                };
                count += 1;
                c0 += len;
            }
        }
    }
    let segs = &segs[..count];
    for b in 0..g.n {
        // One image at a time, bordered with zeros where its windows need it.
        let (base, _, _) = bordered(&one, &x[b * img..(b + 1) * img], &mut *pad);
        let out = &mut y[b * per * g.o..(b + 1) * per * g.o];
        let mut r = 0;
        while r < per {
            let lanes = 8.min(per - r);
            let mut corner = [0usize; 8];
            for (i, cn) in corner.iter_mut().enumerate() {
                let p = r + i.min(lanes - 1);
                *cn = ((p / g.ow) * g.sh * wp + (p % g.ow) * g.sw) * c;
            }
            for j in (0..g.o).step_by(32) {
                // SAFETY: AVX-512F and FMA were checked by `usable`; every read stays in
                // `base` (a window's last entry is inside the (padded) image) and
                // `kernel` (patch × o), every write in `out` (pixels r..r + lanes).
                unsafe {
                    tile(
                        base,
                        &corner,
                        segs,
                        kernel.as_ptr().add(j),
                        g.o,
                        out.as_mut_ptr().add(r * g.o + j),
                        lanes,
                    )
                };
            }
            r += lanes;
        }
    }
}

/// One 8-pixel × 32-filter tile: `out[i·ldk + 0..32] = Σ_p x[corner_i + xoff(p)] ·
/// k[p·ldk + 0..32]`, summed per depth block as the GEMM sums.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn tile(
    x: &[f32],
    corner: &[usize; 8],
    segs: &[Seg],
    k: *const f32,
    ldk: usize,
    out: *mut f32,
    lanes: usize,
) {
    use std::arch::x86_64::*;
    let last = corner[7] + segs.iter().map(|s| s.xoff + s.len).max().unwrap_or(0);
    assert!(last <= x.len(), "every window inside the input");
    unsafe {
        let zero = _mm512_setzero_ps();
        let mut acc = [[zero; 2]; 8];
        let mut res = [[zero; 2]; 8];
        let mut started = false;
        let px: [*const f32; 8] = std::array::from_fn(|i| x.as_ptr().add(corner[i]));
        for (si, s) in segs.iter().enumerate() {
            if s.block && si > 0 {
                for i in 0..8 {
                    for h in 0..2 {
                        res[i][h] =
                            if started { _mm512_add_ps(res[i][h], acc[i][h]) } else { acc[i][h] };
                        acc[i][h] = zero;
                    }
                }
                started = true;
            }
            for t in 0..s.len {
                let kp = k.add((s.krow + t) * ldk);
                let b0 = _mm512_loadu_ps(kp);
                let b1 = _mm512_loadu_ps(kp.add(16));
                let off = s.xoff + t;
                for (i, row) in acc.iter_mut().enumerate() {
                    let a = _mm512_set1_ps(*px[i].add(off));
                    row[0] = _mm512_fmadd_ps(a, b0, row[0]);
                    row[1] = _mm512_fmadd_ps(a, b1, row[1]);
                }
            }
        }
        for i in 0..lanes {
            let (v0, v1) = if started {
                (_mm512_add_ps(res[i][0], acc[i][0]), _mm512_add_ps(res[i][1], acc[i][1]))
            } else {
                (acc[i][0], acc[i][1])
            };
            _mm512_storeu_ps(out.add(i * ldk), v0);
            _mm512_storeu_ps(out.add(i * ldk + 16), v1);
        }
    }
}

/// Whether [`kernel_gradient`] computes this convolution's kernel gradient: AVX-512
/// with FMA, filters in whole 32-wide panels, channels in whole groups of 8.
pub(crate) fn kernel_gradient_usable(g: &Conv2dGeometry) -> bool {
    super::isa::features().avx512() && g.o.is_multiple_of(32) && g.c.is_multiple_of(8)
}

/// Copies the `g.n` images of `x` into `pad` with zero borders (when the geometry
/// needs them) and returns the images to read and one image's stride and row width.
fn bordered<'a>(g: &Conv2dGeometry, x: &'a [f32], pad: &'a mut [f32]) -> (&'a [f32], usize, usize) {
    let c = g.c;
    let img = g.h * g.w * c;
    let Some(len) = padded_len(g) else { return (x, img, g.w) };
    let (hp, wp) = ((g.oh - 1) * g.sh + g.kh, (g.ow - 1) * g.sw + g.kw);
    let all = &mut pad[..g.n * len];
    all.fill(0.0);
    for b in 0..g.n {
        let src = &x[b * img..(b + 1) * img];
        for iy in 0..g.h {
            let py = iy + g.pad_top;
            if py >= hp {
                break;
            }
            let cols = g.w.min(wp - g.pad_left);
            let at = b * len + (py * wp + g.pad_left) * c;
            all[at..at + cols * c].copy_from_slice(&src[iy * g.w * c..iy * g.w * c + cols * c]);
        }
    }
    (all, len, wp)
}

/// The values [`kernel_gradient`] needs in `pad`.
pub(crate) fn kernel_gradient_scratch(g: &Conv2dGeometry) -> usize {
    padded_len(g).map_or(0, |len| g.n * len)
}

/// `dk += im2col(x)ᵀ · dy` for the `g.n` images of `x` (`dy` row-major `[pixels, o]`,
/// `dk` `[patch, o]`), without an im2col matrix or a packed copy of it: eight
/// consecutive channels of one kernel position against 32 filters at a time, over the
/// pixels in the GEMM's depth blocks of [`KC`], each block's sum added to `dk` as the
/// GEMM adds it — the same bits as the GEMM on the packed im2col matrix.
pub(crate) fn kernel_gradient(
    g: &Conv2dGeometry,
    x: &[f32],
    dy: &[f32],
    dk: &mut [f32],
    pad: &mut [f32],
) {
    let c = g.c;
    let per = g.oh * g.ow;
    let rows = g.n * per;
    let (base, stride, wp) = bordered(g, x, pad);
    let mut corner = [0usize; KC];
    let mut r0 = 0;
    while r0 < rows {
        let len = KC.min(rows - r0);
        for (t, cn) in corner.iter_mut().enumerate().take(len) {
            let r = r0 + t;
            let (b, p) = (r / per, r % per);
            *cn = b * stride + ((p / g.ow) * g.sh * wp + (p % g.ow) * g.sw) * c;
        }
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                for c0 in (0..c).step_by(8) {
                    let xoff = (ky * wp + kx) * c + c0;
                    let prow = (ky * g.kw + kx) * c + c0;
                    for j in (0..g.o).step_by(32) {
                        // SAFETY: AVX-512F and FMA were checked by
                        // `kernel_gradient_usable`; reads stay in `base` (8 channels
                        // of a pixel inside the bordered images) and `dy` (rows
                        // r0..r0 + len), writes in `dk` (rows prow..prow + 8).
                        unsafe {
                            tile_dk(
                                base,
                                &corner[..len],
                                xoff,
                                dy.as_ptr().add(r0 * g.o + j),
                                g.o,
                                dk.as_mut_ptr().add(prow * g.o + j),
                            )
                        };
                    }
                }
            }
        }
        r0 += len;
    }
}

/// `dk[i·ld + 0..32] += Σ_t x[corner_t + xoff + i] · dy[t·ld + 0..32]` for `i < 8`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn tile_dk(
    x: &[f32],
    corner: &[usize],
    xoff: usize,
    dy: *const f32,
    ld: usize,
    dk: *mut f32,
) {
    use std::arch::x86_64::*;
    let last = corner.iter().max().copied().unwrap_or(0) + xoff + 8;
    assert!(last <= x.len(), "every window inside the input");
    unsafe {
        let zero = _mm512_setzero_ps();
        let mut acc = [[zero; 2]; 8];
        for (t, &cn) in corner.iter().enumerate() {
            let b0 = _mm512_loadu_ps(dy.add(t * ld));
            let b1 = _mm512_loadu_ps(dy.add(t * ld + 16));
            let a = x.as_ptr().add(cn + xoff);
            for (i, row) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_ps(*a.add(i));
                row[0] = _mm512_fmadd_ps(av, b0, row[0]);
                row[1] = _mm512_fmadd_ps(av, b1, row[1]);
            }
        }
        for (i, row) in acc.iter().enumerate() {
            let d = dk.add(i * ld);
            _mm512_storeu_ps(d, _mm512_add_ps(_mm512_loadu_ps(d), row[0]));
            _mm512_storeu_ps(d.add(16), _mm512_add_ps(_mm512_loadu_ps(d.add(16)), row[1]));
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn tile_dk(_: &[f32], _: &[usize], _: usize, _: *const f32, _: usize, _: *mut f32) {
    unreachable!("`kernel_gradient_usable` holds only on x86-64 with AVX-512")
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn tile(
    _: &[f32],
    _: &[usize; 8],
    _: &[Seg],
    _: *const f32,
    _: usize,
    _: *mut f32,
    _: usize,
) {
    unreachable!("`usable` holds only on x86-64 with AVX-512")
}
