//! Convolution fused with the 2×2 max pool after it: the pooled forward pass (each
//! conv tile pooled while in cache, recording each pooled value's winner), and for
//! one-channel inputs (a grayscale first layer) a direct path that skips im2col and the
//! GEMM — its forward in registers, its kernel gradient straight from the pool's
//! winners. Built on `conv` (geometry, tiles, GEMM path) and `pool` (the 2×2 window
//! maxima); the Conv2D layer reaches it when it absorbs a MaxPool2D.

use super::conv::{Conv2dGeometry, Epilogue, Shared, both_halves, check_workspace, forward_tile};
use crate::error::{Result, TapeError};
use crate::scalar::Scalar;

/// An f32 epilogue that may borrow (the direct path adapts a caller's `Epilogue<T>`).
type Post32<'a> = dyn Fn(&mut [f32]) + Sync + 'a;

/// Whether [`conv2d_maxpool2_forward`] can compute this convolution directly, without
/// im2col or GEMM: one input channel, stride 1, no padding, filters in blocks of 16,
/// f32 and a CPU with FMA (so it rounds exactly as the GEMM path: the same fused
/// multiply-adds in the same order).
fn direct_one_channel<T: Scalar>(g: &Conv2dGeometry) -> bool {
    T::as_f32(&[]).is_some()
        && g.c == 1
        && (g.sh, g.sw, g.pad_top, g.pad_left) == (1, 1, 0, 0)
        && g.o.is_multiple_of(16)
        && super::isa::features().fma
}

/// One-channel convolution, activation and 2×2 max pooling of `g.n` images, computed
/// directly: per pooled row, each of its conv outputs accumulates the kernel taps in
/// registers (16 filters at a time), then bias, activation (`post`, once per row) and
/// the pool. For a first layer on grayscale images this replaces im2col copies of
/// `kh·kw` values per pixel and a GEMM with a depth of 9. `buf` holds one pooled row's
/// conv outputs (`2·2·(ow/2)·o` values).
#[allow(clippy::too_many_arguments)]
fn conv_one_channel_pool2(
    g: &Conv2dGeometry,
    x: &[f32],
    kernel: &[f32],
    bias: Option<&[f32]>,
    post: Option<&Post32<'_>>,
    buf: &mut [f32],
    pooled: &mut [f32],
    mut winners: Option<&mut [f32]>,
) {
    let (o, ph, pw) = (g.o, g.oh / 2, g.ow / 2);
    for b in 0..g.n {
        let img = &x[b * g.h * g.w..(b + 1) * g.h * g.w];
        for py in 0..ph {
            let row = &mut buf[..pw * 4 * o];
            conv_one_channel_row(g, img, kernel, bias, py, row);
            if let Some(post) = post {
                post(row);
            }
            let first = ((b * ph + py) * pw) * o;
            let out_row = &mut pooled[first..first + pw * o];
            let mut win_row = winners.as_deref_mut().map(|w| &mut w[first..first + pw * o]);
            for (px, (quad, y)) in
                row.chunks_exact(4 * o).zip(out_row.chunks_exact_mut(o)).enumerate()
            {
                let (a, rest) = quad.split_at(o);
                let (bq, rest) = rest.split_at(o);
                let (cq, dq) = rest.split_at(o);
                match win_row.as_deref_mut() {
                    Some(w) => super::pool::max4_with_winner(
                        a,
                        bq,
                        cq,
                        dq,
                        y,
                        &mut w[px * o..(px + 1) * o],
                    ),
                    None => super::pool::max4(a, bq, cq, dq, y),
                }
            }
        }
    }
}

/// The conv outputs of pooled row `py` for [`conv_one_channel_pool2`], compiled for the
/// CPU's FMA extension: `f32::mul_add` must become one instruction (a baseline build
/// turns it into a library call).
fn conv_one_channel_row(
    g: &Conv2dGeometry,
    img: &[f32],
    kernel: &[f32],
    bias: Option<&[f32]>,
    py: usize,
    row: &mut [f32],
) {
    /// A `KH × KW` kernel: its 16-filter block sits in registers across the row.
    #[inline(always)]
    fn fixed<const KH: usize, const KW: usize>(
        g: &Conv2dGeometry,
        img: &[f32],
        kernel: &[f32],
        bias: Option<&[f32]>,
        py: usize,
        row: &mut [f32],
    ) {
        let o = g.o;
        for c0 in (0..o).step_by(16) {
            let mut kk = [[[0f32; 16]; KW]; KH];
            for (ky, kr) in kk.iter_mut().enumerate() {
                for (kx, k) in kr.iter_mut().enumerate() {
                    let t = ky * KW + kx;
                    k.copy_from_slice(&kernel[t * o + c0..t * o + c0 + 16]);
                }
            }
            let b: [f32; 16] = match bias {
                Some(b) => b[c0..c0 + 16].try_into().expect("16 filters"),
                None => [0.0; 16],
            };
            for (slot, out) in row.chunks_exact_mut(o).enumerate() {
                let (oy, ox) = (2 * py + slot % 4 / 2, 2 * (slot / 4) + slot % 2);
                let mut acc = [0f32; 16];
                // Taps in the GEMM's order (ky, then kx), so the sums round alike.
                for (ky, kr) in kk.iter().enumerate() {
                    let start = (oy + ky) * g.w + ox;
                    let xr: &[f32; KW] = img[start..start + KW].try_into().expect("KW");
                    for (k, &xv) in kr.iter().zip(xr) {
                        for (a, &kv) in acc.iter_mut().zip(k) {
                            *a = xv.mul_add(kv, *a);
                        }
                    }
                }
                let out: &mut [f32; 16] = (&mut out[c0..c0 + 16]).try_into().expect("16");
                if bias.is_some() {
                    for ((v, a), bv) in out.iter_mut().zip(acc).zip(b) {
                        *v = a + bv;
                    }
                } else {
                    *out = acc;
                }
            }
        }
    }
    #[inline(always)]
    fn body(
        g: &Conv2dGeometry,
        img: &[f32],
        kernel: &[f32],
        bias: Option<&[f32]>,
        py: usize,
        row: &mut [f32],
    ) {
        if (g.kh, g.kw) == (3, 3) {
            return fixed::<3, 3>(g, img, kernel, bias, py, row);
        }
        let o = g.o;
        for (slot, out) in row.chunks_exact_mut(o).enumerate() {
            let (px, q) = (slot / 4, slot % 4);
            let (oy, ox) = (2 * py + q / 2, 2 * px + q % 2);
            for (c0, out) in (0..o).step_by(16).zip(out.chunks_exact_mut(16)) {
                let mut acc = [0f32; 16];
                for ky in 0..g.kh {
                    let xr = &img[(oy + ky) * g.w + ox..(oy + ky) * g.w + ox + g.kw];
                    for (kx, &xv) in xr.iter().enumerate() {
                        let t = ky * g.kw + kx;
                        let kr = &kernel[t * o + c0..t * o + c0 + 16];
                        for (a, &k) in acc.iter_mut().zip(kr) {
                            *a = xv.mul_add(k, *a);
                        }
                    }
                }
                out.copy_from_slice(&acc);
                if let Some(bias) = bias {
                    for (v, &bv) in out.iter_mut().zip(&bias[c0..c0 + 16]) {
                        *v += bv;
                    }
                }
            }
        }
    }
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx2,fma")]
        unsafe fn avx512(
            g: &Conv2dGeometry,
            i: &[f32],
            k: &[f32],
            b: Option<&[f32]>,
            py: usize,
            r: &mut [f32],
        ) {
            body(g, i, k, b, py, r)
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2(
            g: &Conv2dGeometry,
            i: &[f32],
            k: &[f32],
            b: Option<&[f32]>,
            py: usize,
            r: &mut [f32],
        ) {
            body(g, i, k, b, py, r)
        }
        let f = super::isa::features();
        if f.avx512f {
            if (g.kh, g.kw) == (3, 3) {
                // SAFETY: AVX-512F checked here; FMA by `direct_one_channel`.
                return unsafe { row_3x3_avx512(g, img, kernel, bias, py, row) };
            }
            // SAFETY: AVX-512F checked here; FMA by `direct_one_channel`.
            return unsafe { avx512(g, img, kernel, bias, py, row) };
        }
        if f.avx2 {
            // SAFETY: AVX2 checked here; FMA by `direct_one_channel`.
            return unsafe { avx2(g, img, kernel, bias, py, row) };
        }
    }
    body(g, img, kernel, bias, py, row)
}

/// [`conv_one_channel_row`] for a 3×3 kernel in AVX-512: the nine taps of a 16-filter
/// block stay in registers; each 2×2 pooling window's four outputs accumulate together
/// from a 4×4 patch of the input, taps in the GEMM's order.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn row_3x3_avx512(
    g: &Conv2dGeometry,
    img: &[f32],
    kernel: &[f32],
    bias: Option<&[f32]>,
    py: usize,
    row: &mut [f32],
) {
    use std::arch::x86_64::*;
    let (o, pw) = (g.o, g.ow / 2);
    assert!(kernel.len() >= 9 * o && row.len() >= pw * 4 * o && o.is_multiple_of(16));
    for c0 in (0..o).step_by(16) {
        // SAFETY (loads and stores below): in bounds by the assert above and the valid
        // convolution's geometry (rows 2py..2py+4 and columns 2px..2px+4 are inside).
        unsafe {
            let mut kk = [_mm512_setzero_ps(); 9];
            for (t, k) in kk.iter_mut().enumerate() {
                *k = _mm512_loadu_ps(kernel.as_ptr().add(t * o + c0));
            }
            let b = bias.map(|b| _mm512_loadu_ps(b[c0..c0 + 16].as_ptr()));
            for px in 0..pw {
                let mut acc = [_mm512_setzero_ps(); 4];
                for ky in 0..3 {
                    for dy in 0..2 {
                        let start = (2 * py + dy + ky) * g.w + 2 * px;
                        let xs: &[f32; 4] = img[start..start + 4].try_into().expect("4 columns");
                        for kx in 0..3 {
                            let k = kk[ky * 3 + kx];
                            let (l, r) = (dy * 2, dy * 2 + 1);
                            acc[l] = _mm512_fmadd_ps(_mm512_set1_ps(xs[kx]), k, acc[l]);
                            acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(xs[kx + 1]), k, acc[r]);
                        }
                    }
                }
                for (q, &a) in acc.iter().enumerate() {
                    let v = match b {
                        Some(b) => _mm512_add_ps(a, b),
                        None => a,
                    };
                    _mm512_storeu_ps(row.as_mut_ptr().add((px * 4 + q) * o + c0), v);
                }
            }
        }
    }
}

/// Kernel and bias gradients of a one-channel 3×3 convolution fused with a 2×2 max pool
/// (as [`conv2d_maxpool2_forward`] computes it directly), from the pooled gradient
/// `dpool` (already through the activation) and each pooled value's winner, without
/// forming the convolution's output gradient. Returns `Ok(false)`, touching nothing,
/// when the geometry or CPU does not allow it (then use [`conv2d_backward`](super::conv::conv2d_backward)). Sums run
/// in another order than the GEMM path's, so results differ from it by rounding.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_maxpool2_kernel_grad<T: Scalar>(
    g: &Conv2dGeometry,
    x: &[T],
    winners: &[T],
    dpool: &[T],
    dkernel: &mut [T],
    dbias: Option<&mut [T]>,
    ws: &mut [T],
) -> Result<bool> {
    #[cfg(target_arch = "x86_64")]
    {
        if !(direct_one_channel::<T>(g) && (g.kh, g.kw) == (3, 3) && super::isa::features().avx512f)
        {
            return Ok(false);
        }
        let (ph, pw) = (g.oh / 2, g.ow / 2);
        let per_pool = ph * pw * g.o;
        g.check("input", x.len(), g.n * g.h * g.w)?;
        g.check("pool winners", winners.len(), g.n * per_pool)?;
        g.check("pooled gradient", dpool.len(), g.n * per_pool)?;
        g.check("kernel gradient", dkernel.len(), 9 * g.o)?;
        let part = 10 * g.o;
        check_workspace(ws.len(), 2 * part)?;
        let wsp = Shared::new(ws);
        let halves = g.halves();
        let run = |h: usize| {
            let imgs = halves[h].clone();
            // SAFETY: each half writes only its own partial sums.
            let out = T::as_f32_mut(unsafe { wsp.slice(h * part..(h + 1) * part) });
            let sub = Conv2dGeometry { n: imgs.len(), ..*g };
            let xs = T::as_f32(&x[imgs.start * g.h * g.w..imgs.end * g.h * g.w]);
            let pool = imgs.start * per_pool..imgs.end * per_pool;
            let (w, v) = (T::as_f32(&winners[pool.clone()]), T::as_f32(&dpool[pool]));
            // `direct_one_channel` holds only for f32, where every view exists.
            if let (Some(out), Some(xs), Some(w), Some(v)) = (out, xs, w, v) {
                // SAFETY: AVX-512F checked above; FMA by `direct_one_channel`.
                unsafe { kernel_grad_3x3_avx512(&sub, xs, w, v, out) };
            }
        };
        both_halves(g, &run);
        let (p0, p1) = ws[..2 * part].split_at(part);
        for ((d, &a), &b) in dkernel.iter_mut().zip(p0).zip(p1) {
            *d = a + b;
        }
        if let Some(db) = dbias {
            g.check("bias gradient", db.len(), g.o)?;
            for ((d, &a), &b) in db.iter_mut().zip(&p0[9 * g.o..]).zip(&p1[9 * g.o..]) {
                *d = a + b;
            }
        }
        Ok(true)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (g, x, winners, dpool, dkernel, dbias, ws);
        Ok(false)
    }
}

/// The sums of [`conv2d_maxpool2_kernel_grad`] over `g.n` images into `out`
/// (`9·o` kernel values, then `o` bias values): per 16-filter block, the nine tap sums
/// stay in registers over every pooled value; each window's gradient goes to its winner
/// by a compare mask.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn kernel_grad_3x3_avx512(
    g: &Conv2dGeometry,
    x: &[f32],
    winners: &[f32],
    dpool: &[f32],
    out: &mut [f32],
) {
    use std::arch::x86_64::*;
    let (o, ph, pw) = (g.o, g.oh / 2, g.ow / 2);
    assert!(
        out.len() >= 10 * o && winners.len() >= g.n * ph * pw * o && dpool.len() >= winners.len()
    );
    // SAFETY (loads and stores): in bounds by the assert above and the valid
    // convolution's geometry (input rows 2py..2py+4, columns 2px..2px+4).
    unsafe {
        let q =
            [_mm512_set1_ps(0.0), _mm512_set1_ps(1.0), _mm512_set1_ps(2.0), _mm512_set1_ps(3.0)];
        for c0 in (0..o).step_by(16) {
            let mut acc = [_mm512_setzero_ps(); 9];
            let mut bacc = _mm512_setzero_ps();
            for b in 0..g.n {
                let img = &x[b * g.h * g.w..(b + 1) * g.h * g.w];
                for py in 0..ph {
                    for px in 0..pw {
                        let j = ((b * ph + py) * pw + px) * o + c0;
                        let w = _mm512_loadu_ps(winners.as_ptr().add(j));
                        let v = _mm512_loadu_ps(dpool.as_ptr().add(j));
                        bacc = _mm512_add_ps(bacc, v);
                        let vq = q.map(|k| _mm512_maskz_mov_ps(_mm512_cmpeq_ps_mask(w, k), v));
                        for ky in 0..3 {
                            for dy in 0..2 {
                                let start = (2 * py + dy + ky) * g.w + 2 * px;
                                let xs: &[f32; 4] = img[start..start + 4].try_into().expect("4");
                                for kx in 0..3 {
                                    let t = ky * 3 + kx;
                                    acc[t] =
                                        _mm512_fmadd_ps(_mm512_set1_ps(xs[kx]), vq[dy * 2], acc[t]);
                                    acc[t] = _mm512_fmadd_ps(
                                        _mm512_set1_ps(xs[kx + 1]),
                                        vq[dy * 2 + 1],
                                        acc[t],
                                    );
                                }
                            }
                        }
                    }
                }
            }
            for (t, &a) in acc.iter().enumerate() {
                _mm512_storeu_ps(out.as_mut_ptr().add(t * o + c0), a);
            }
            _mm512_storeu_ps(out.as_mut_ptr().add(9 * o + c0), bacc);
        }
    }
}

/// Convolution, activation and 2×2 stride-2 max pooling in one pass per tile
/// (`pooled` is `[n, oh/2, ow/2, o]`): the convolution's full output is never written
/// to memory, only the pooled values and, when training, each one's winner (0 to 3, see
/// [`max_pool_2x2_winners`](super::pool::max_pool_2x2_winners)). For the first MNIST
/// conv that avoids writing and re-reading 11 MB per batch of 128. A one-channel input
/// (stride 1, no padding, filters in blocks of 16, f32 with FMA) skips im2col and GEMM
/// too: each output is accumulated directly, rounding exactly as the GEMM would.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_maxpool2_forward<T: Scalar>(
    g: &Conv2dGeometry,
    x: &[T],
    kernel: &[T],
    bias: Option<&[T]>,
    pooled: &mut [T],
    winners: Option<&mut [T]>,
    ws: &mut [T],
    post: Option<&Epilogue<T>>,
) -> Result<()> {
    g.check("input", x.len(), g.n * g.h * g.w * g.c)?;
    g.check("kernel", kernel.len(), g.patch() * g.o)?;
    let (ph, pw) = (g.oh / 2, g.ow / 2);
    let per_pool = ph * pw * g.o;
    if per_pool == 0 {
        return Err(TapeError::InvalidArgument {
            op: "conv2d + max_pool2d",
            message: format!("a 2x2 pool does not fit the {}x{} convolution output", g.oh, g.ow),
        });
    }
    g.check("pooled output", pooled.len(), g.n * per_pool)?;
    if let Some(w) = winners.as_deref() {
        g.check("pool winners", w.len(), g.n * per_pool)?;
    }
    if let Some(b) = bias {
        g.check("bias", b.len(), g.o)?;
    }
    check_workspace(ws.len(), g.workspace_len())?;
    let (img_in, per_out, tile) = (g.h * g.w * g.c, g.oh * g.ow, g.tile_images());
    let (tile_len, out_len) = (tile * per_out * g.patch(), tile * per_out * g.o);
    let (pp, wp, sp) = (Shared::new(pooled), winners.map(Shared::new), Shared::new(ws));
    let halves = g.halves();
    let direct = direct_one_channel::<T>(g);
    let run = |h: usize| {
        // SAFETY: half `h` uses its own tiles and writes only its images' outputs.
        let col = unsafe { sp.slice(h * tile_len..(h + 1) * tile_len) };
        let out = unsafe { sp.slice(2 * tile_len + h * out_len..2 * tile_len + (h + 1) * out_len) };
        if direct {
            let imgs = halves[h].clone();
            let dst = imgs.start * per_pool..imgs.end * per_pool;
            let sub = Conv2dGeometry { n: imgs.len(), ..*g };
            // `direct` holds only for f32, where every view below exists.
            let win = wp.map(|w| T::as_f32_mut(unsafe { w.slice(dst.clone()) }));
            let views = (
                T::as_f32(&x[imgs.start * img_in..imgs.end * img_in]),
                T::as_f32(kernel),
                bias.map(T::as_f32),
                T::as_f32_mut(out),
                T::as_f32_mut(unsafe { pp.slice(dst) }),
                win,
            );
            if let (Some(xs), Some(k), b, Some(o), Some(py), w) = views {
                // The epilogue is written over T; here T is f32, so it is called on the
                // same values viewed back as T.
                let adapted = post.map(|p| {
                    move |y: &mut [f32]| {
                        if let Some(v) = T::from_f32_mut(y) {
                            p(v)
                        }
                    }
                });
                let post32 = adapted.as_ref().map(|f| f as &Post32<'_>);
                conv_one_channel_pool2(&sub, xs, k, b.flatten(), post32, o, py, w.flatten());
            }
            return;
        }
        let mut b0 = halves[h].start;
        while b0 < halves[h].end {
            let count = tile.min(halves[h].end - b0);
            let sub = Conv2dGeometry { n: count, ..*g };
            let rows = count * per_out;
            let (col, yb) = (&mut col[..rows * g.patch()], &mut out[..rows * g.o]);
            forward_tile(&sub, &x[b0 * img_in..(b0 + count) * img_in], kernel, bias, post, col, yb);
            let dst = b0 * per_pool..(b0 + count) * per_pool;
            let win = wp.map(|w| unsafe { w.slice(dst.clone()) });
            let py = unsafe { pp.slice(dst) };
            super::pool::max_pool_2x2_winners((count, g.oh, g.ow, g.o), yb, py, win);
            b0 += count;
        }
    };
    both_halves(g, &run);
    Ok(())
}
