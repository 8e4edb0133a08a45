//! 2-D convolution on NHWC inputs with HWIO kernels (Keras's layouts), via im2col + GEMM.
//!
//! The im2col matrix has one row per output pixel and `kh·kw·c` columns in (ky, kx, c)
//! order, which is exactly an HWIO kernel viewed as a `[kh·kw·c, o]` matrix, so the
//! forward pass is a single GEMM whose output is already NHWC.

use crate::error::{Result, TapeError};
use crate::kernels::gemm::{Trans, gemm, gemm_in};
use crate::kernels::sgemm::{panel_rows, sgemm_packed_a};
use crate::scalar::Scalar;

pub use kiln_spec::window::{Padding, window_output};

/// Every size of one convolution: input `[n, h, w, c]`, kernel `[kh, kw, c, o]`, output
/// `[n, oh, ow, o]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dGeometry {
    /// Batch size.
    pub n: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Input channels.
    pub c: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Output channels (filters).
    pub o: usize,
    /// Vertical stride.
    pub sh: usize,
    /// Horizontal stride.
    pub sw: usize,
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
    /// Rows of zero padding above the input.
    pub pad_top: usize,
    /// Columns of zero padding left of the input.
    pub pad_left: usize,
}

impl Conv2dGeometry {
    /// Checks an input shape `[n, h, w, c]` against a kernel shape `[kh, kw, c, o]`.
    pub fn new(
        input: &[usize],
        kernel: &[usize],
        strides: (usize, usize),
        padding: Padding,
    ) -> Result<Self> {
        let err = |hint: String| TapeError::ShapeMismatch {
            op: "conv2d",
            lhs: input.to_vec(),
            rhs: kernel.to_vec(),
            hint,
        };
        let (&[n, h, w, c], &[kh, kw, kc, o]) = (input, kernel) else {
            return Err(err(
                "conv2d takes an NHWC input [n, h, w, c] and an HWIO kernel [kh, kw, c, o]".into(),
            ));
        };
        if kc != c {
            return Err(err(format!(
                "the kernel expects {kc} input channels but the input has {c}"
            )));
        }
        if strides.0 == 0 || strides.1 == 0 || kh == 0 || kw == 0 || o == 0 {
            return Err(err(format!(
                "kernel sizes, filters and strides {strides:?} must all be at least 1"
            )));
        }
        let fit = |i, k, s| window_output(i, k, s, padding);
        let (Some((oh, pad_top)), Some((ow, pad_left))) =
            (fit(h, kh, strides.0), fit(w, kw, strides.1))
        else {
            return Err(err(format!(
                "the {kh}x{kw} window does not fit the {h}x{w} input with valid padding; use padding same or a smaller kernel"
            )));
        };
        Ok(Conv2dGeometry {
            n,
            h,
            w,
            c,
            kh,
            kw,
            o,
            sh: strides.0,
            sw: strides.1,
            oh,
            ow,
            pad_top,
            pad_left,
        })
    }

    /// Output shape `[n, oh, ow, o]`.
    pub fn output_shape(&self) -> [usize; 4] {
        [self.n, self.oh, self.ow, self.o]
    }

    /// Rows of the im2col matrix (output pixels over the batch).
    pub fn rows(&self) -> usize {
        self.n * self.oh * self.ow
    }

    /// Columns of the im2col matrix (`kh·kw·c`).
    pub fn patch(&self) -> usize {
        self.kh * self.kw * self.c
    }

    /// Elements the im2col workspace must hold.
    pub fn col_len(&self) -> usize {
        self.rows() * self.patch()
    }

    pub(crate) fn check(&self, what: &'static str, len: usize, expected: usize) -> Result<()> {
        if len != expected {
            return Err(TapeError::InvalidArgument {
                op: "conv2d",
                message: format!(
                    "{what} must hold {expected} elements for {self:?}, but holds {len}"
                ),
            });
        }
        Ok(())
    }
}

/// im2col sizes below which the per-image loops stay on one thread.
const PARALLEL_MIN: usize = 1 << 18;

/// Writes the im2col matrix of `x` into `col` (`rows × patch`), zeros where the window
/// hangs over the padding. Images are independent, so large batches are split across
/// both cores.
pub fn im2col<T: Scalar>(g: &Conv2dGeometry, x: &[T], col: &mut [T]) -> Result<()> {
    g.check("input", x.len(), g.n * g.h * g.w * g.c)?;
    g.check("im2col workspace", col.len(), g.col_len())?;
    let img = g.h * g.w * g.c;
    let min = if g.col_len() >= PARALLEL_MIN { 0 } else { usize::MAX };
    super::parallel::split_items(col, g.n, g.oh * g.ow * g.patch(), min, &|images, part| {
        let sub = Conv2dGeometry { n: images.len(), ..*g };
        im2col_images(&sub, &x[images.start * img..images.end * img], part);
    });
    Ok(())
}

fn im2col_images<T: Scalar>(g: &Conv2dGeometry, x: &[T], col: &mut [T]) {
    let c = g.c;
    let mut r = 0;
    for b in 0..g.n {
        let img = &x[b * g.h * g.w * c..(b + 1) * g.h * g.w * c];
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                let row = &mut col[r * g.patch()..(r + 1) * g.patch()];
                for ky in 0..g.kh {
                    let iy = (oy * g.sh + ky) as isize - g.pad_top as isize;
                    let dst = &mut row[ky * g.kw * c..(ky + 1) * g.kw * c];
                    if iy < 0 || iy >= g.h as isize {
                        dst.fill(T::zero());
                        continue;
                    }
                    let ix0 = (ox * g.sw) as isize - g.pad_left as isize;
                    if ix0 >= 0 && ix0 as usize + g.kw <= g.w {
                        // The whole kernel row is inside: one contiguous copy.
                        let s = (iy as usize * g.w + ix0 as usize) * c;
                        copy_inline(dst, &img[s..s + g.kw * c]);
                    } else {
                        for kx in 0..g.kw {
                            let ix = ix0 + kx as isize;
                            let d = &mut dst[kx * c..(kx + 1) * c];
                            if ix < 0 || ix >= g.w as isize {
                                d.fill(T::zero());
                            } else {
                                let s = (iy as usize * g.w + ix as usize) * c;
                                copy_inline(d, &img[s..s + c]);
                            }
                        }
                    }
                }
                r += 1;
            }
        }
    }
}

/// `dst.copy_from_slice(src)` for the short rows of convolutions (a kernel row of a few
/// channels, one bias row), copied inline in 16-value blocks: a `memcpy` call per row
/// costs more than the copy itself, and im2col makes one per output pixel and kernel
/// row.
#[inline(always)]
pub(crate) fn copy_inline<T: Copy>(dst: &mut [T], src: &[T]) {
    fn fixed<T: Copy, const N: usize>(dst: &mut [T], src: &[T]) {
        let d: &mut [T; N] = dst.try_into().expect("same length");
        *d = *<&[T; N]>::try_from(src).expect("same length");
    }
    assert_eq!(dst.len(), src.len(), "copy_inline lengths");
    let (mut d, mut s) = (dst.chunks_exact_mut(16), src.chunks_exact(16));
    for (a, b) in (&mut d).zip(&mut s) {
        fixed::<T, 16>(a, b);
    }
    let (dst, src) = (d.into_remainder(), s.remainder());
    match dst.len() {
        0 => {}
        1 => fixed::<T, 1>(dst, src),
        2 => fixed::<T, 2>(dst, src),
        3 => fixed::<T, 3>(dst, src),
        4 => fixed::<T, 4>(dst, src),
        6 => fixed::<T, 6>(dst, src),
        8 => fixed::<T, 8>(dst, src),
        9 => fixed::<T, 9>(dst, src),
        12 => fixed::<T, 12>(dst, src),
        _ => dst.copy_from_slice(src),
    }
}

/// Scatter-adds an im2col-shaped gradient back onto the input gradient `dx` (zeroed
/// first); images are split across both cores as in [`im2col`].
pub fn col2im<T: Scalar>(g: &Conv2dGeometry, col: &[T], dx: &mut [T]) -> Result<()> {
    g.check("input gradient", dx.len(), g.n * g.h * g.w * g.c)?;
    g.check("im2col workspace", col.len(), g.col_len())?;
    let rows = g.oh * g.ow * g.patch();
    let min = if g.col_len() >= PARALLEL_MIN { 0 } else { usize::MAX };
    super::parallel::split_items(dx, g.n, g.h * g.w * g.c, min, &|images, part| {
        let sub = Conv2dGeometry { n: images.len(), ..*g };
        col2im_images(&sub, &col[images.start * rows..images.end * rows], part);
    });
    Ok(())
}

fn col2im_images<T: Scalar>(g: &Conv2dGeometry, col: &[T], dx: &mut [T]) {
    dx.fill(T::zero());
    let c = g.c;
    let mut r = 0;
    for b in 0..g.n {
        let img = &mut dx[b * g.h * g.w * c..(b + 1) * g.h * g.w * c];
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                let row = &col[r * g.patch()..(r + 1) * g.patch()];
                for ky in 0..g.kh {
                    let iy = (oy * g.sh + ky) as isize - g.pad_top as isize;
                    if iy < 0 || iy >= g.h as isize {
                        continue;
                    }
                    for kx in 0..g.kw {
                        let ix = (ox * g.sw + kx) as isize - g.pad_left as isize;
                        if ix < 0 || ix >= g.w as isize {
                            continue;
                        }
                        let s = (iy as usize * g.w + ix as usize) * c;
                        let src = &row[(ky * g.kw + kx) * c..(ky * g.kw + kx + 1) * c];
                        for (d, &v) in img[s..s + c].iter_mut().zip(src) {
                            *d += v;
                        }
                    }
                }
                r += 1;
            }
        }
    }
}

/// Packs a block of colᵀ (the im2col matrix of `x`, transposed: one row per patch
/// entry, one column per output pixel) in the GEMM's panel layout (see
/// [`PackA`](super::sgemm::PackA)), reading `x` directly: rows `ic..ic + mc` are patch
/// entries, depth `pc..pc + kc` output pixels. Channels must come in whole panels
/// (`c % mr == 0`), so each panel's `mr` entries are consecutive channels of one kernel
/// position: `mr` contiguous values of `x` per pixel.
fn pack_col_transposed(
    g: &Conv2dGeometry,
    x: &[f32],
    (ic, mc, pc, kc, mr): (usize, usize, usize, usize, usize),
    dst: &mut [f32],
) {
    let c = g.c;
    assert!(
        c.is_multiple_of(mr) && ic.is_multiple_of(mr),
        "channels must come in whole panels of {mr}"
    );
    for (panel, i0) in (ic..ic + mc).step_by(mr).enumerate() {
        let d = &mut dst[panel * kc * mr..(panel + 1) * kc * mr];
        let (ky, kx, c0) = (i0 / c / g.kw, (i0 / c) % g.kw, i0 % c);
        // Walk the pixels one output row (b, oy) at a time: along a row the source moves
        // by sw·c values per pixel.
        let (mut r, end) = (pc, pc + kc);
        let mut chunks = d.chunks_exact_mut(mr);
        while r < end {
            let (b, oy, ox0) = (r / (g.oh * g.ow), (r / g.ow) % g.oh, r % g.ow);
            let run = (g.ow - ox0).min(end - r);
            let iy = (oy * g.sh + ky) as isize - g.pad_top as isize;
            let row_in = iy >= 0 && (iy as usize) < g.h;
            let base = (b * g.h + iy.max(0) as usize) * g.w;
            for ox in ox0..ox0 + run {
                let dd = chunks.next().expect("kc pixels");
                let ix = (ox * g.sw + kx) as isize - g.pad_left as isize;
                if row_in && ix >= 0 && (ix as usize) < g.w {
                    let s = (base + ix as usize) * c + c0;
                    if mr == 8 {
                        // The AVX-512 kernel's panels: one fixed-size copy, no dispatch.
                        let d: &mut [f32; 8] = dd.try_into().expect("8");
                        *d = x[s..s + 8].try_into().expect("8");
                    } else {
                        copy_inline(dd, &x[s..s + mr]);
                    }
                } else {
                    dd.fill(0.0);
                }
            }
            r += run;
        }
    }
}

/// Elements of one tile's im2col block plus output block (1 MiB of f32, about a core's
/// L2). Counting the output block too matters for few-channel inputs: the first MNIST
/// conv (patch 9, 32 filters) went from 43 to 9 images per tile and its forward and
/// backward from 0.83/1.50 to 0.67/1.21 ms per batch of 128. 2^17, 2^18 and 2^19 all
/// give 4.25–4.4 s per convnet epoch; 2^18 was fastest in earlier runs.
const TILE_ELEMS: usize = 1 << 18;

impl Conv2dGeometry {
    /// Images processed together: as many as keep one tile (im2col and output blocks)
    /// within `TILE_ELEMS`.
    pub fn tile_images(&self) -> usize {
        (TILE_ELEMS / (self.oh * self.ow * (self.patch() + self.o)).max(1)).clamp(1, self.n.max(1))
    }

    /// Elements of the workspace [`conv2d_forward`] and [`conv2d_backward`] need: per
    /// half-batch one im2col tile and one output-gradient tile, plus the second half's
    /// partial kernel and bias gradients.
    pub fn workspace_len(&self) -> usize {
        2 * self.tile_images() * self.oh * self.ow * (self.patch() + self.o)
            + 2 * self.patch() * self.o
            + self.o
    }

    /// The convolution that gives this one's input gradient when the stride is 1: the
    /// output gradient (`o` channels, `oh × ow`) correlated with the kernel turned by
    /// 180° and transposed to `[kh, kw, o, c]`, padded so its output is `h × w`.
    fn input_gradient(&self) -> Option<Conv2dGeometry> {
        ((self.sh, self.sw) == (1, 1) && self.pad_top < self.kh && self.pad_left < self.kw).then(
            || Conv2dGeometry {
                h: self.oh,
                w: self.ow,
                c: self.o,
                o: self.c,
                oh: self.h,
                ow: self.w,
                pad_top: self.kh - 1 - self.pad_top,
                pad_left: self.kw - 1 - self.pad_left,
                ..*self
            },
        )
    }

    /// The two half-batches (image ranges); the split depends only on the batch size.
    pub(crate) fn halves(&self) -> [std::ops::Range<usize>; 2] {
        let h = self.n / 2;
        if h == 0 { [0..self.n, self.n..self.n] } else { [0..h, h..self.n] }
    }
}

pub(crate) use super::parallel::SharedMut as Shared;

/// Runs `f(half)` for both half-batches: on both cores when the work is large enough.
pub(crate) fn both_halves(g: &Conv2dGeometry, f: &(dyn Fn(usize) + Sync)) {
    if g.n >= 2 && g.col_len() >= PARALLEL_MIN {
        super::parallel::join2(f);
    } else {
        f(0);
        f(1);
    }
}

/// Work applied to each block of a convolution's output while it is in cache.
pub type Epilogue<T> = dyn Fn(&mut [T]) + Sync;

/// Writes the gradient w.r.t. the convolution's output (before its activation) for the
/// given range of output elements into the block: the layer's activation gradient,
/// computed per tile on both cores instead of in a separate pass over the whole batch.
pub type Prologue<'a, T> = dyn Fn(std::ops::Range<usize>, &mut [T]) + Sync + 'a;

/// An error unless the caller's workspace holds at least `need` elements.
pub(crate) fn check_workspace(len: usize, need: usize) -> Result<()> {
    if len < need {
        return Err(TapeError::InvalidArgument {
            op: "conv2d",
            message: format!("the workspace holds {len} elements but needs {need}"),
        });
    }
    Ok(())
}

/// One tile of a convolution forward (`g.n` images): im2col into `col`, the product
/// into `y`, then the bias (after the product, as Keras's bias_add) and `post`, while
/// the block is in cache.
pub(crate) fn forward_tile<T: Scalar>(
    g: &Conv2dGeometry,
    x: &[T],
    kernel: &[T],
    bias: Option<&[T]>,
    post: Option<&Epilogue<T>>,
    col: &mut [T],
    y: &mut [T],
) {
    let direct = super::conv_direct::usable(g)
        && super::conv_direct::padded_len(g).is_none_or(|len| len <= col.len());
    match (T::as_f32(x), T::as_f32(kernel), T::as_f32_mut(&mut *y), T::as_f32_mut(&mut *col)) {
        (Some(xs), Some(ks), Some(ys), Some(pad)) if direct => {
            super::conv_direct::forward_images(g, xs, ks, ys, pad)
        }
        _ => {
            im2col_images(g, x, col);
            // Lengths are consistent by construction.
            let _ = gemm(
                g.rows(),
                g.o,
                g.patch(),
                T::one(),
                col,
                Trans::No,
                kernel,
                Trans::No,
                T::zero(),
                y,
            );
        }
    }
    if let Some(b) = bias {
        for row in y.chunks_exact_mut(g.o) {
            for (v, &bv) in row.iter_mut().zip(b) {
                *v += bv;
            }
        }
    }
    if let Some(post) = post {
        post(y);
    }
}

/// Convolution forward: `y = im2col(x) · kernel (+ bias)`, `y` in NHWC, then `post` on
/// each block of `y` while it is in cache (the layer's activation).
///
/// The batch is processed in tiles of [`Conv2dGeometry::tile_images`] images so each
/// im2col block stays in cache; the two half-batches run on both cores. The bias is
/// added to each output block right after its product, while it is in cache. `ws` is a caller-owned
/// workspace of [`Conv2dGeometry::workspace_len`].
pub fn conv2d_forward<T: Scalar>(
    g: &Conv2dGeometry,
    x: &[T],
    kernel: &[T],
    bias: Option<&[T]>,
    y: &mut [T],
    ws: &mut [T],
    post: Option<&Epilogue<T>>,
) -> Result<()> {
    g.check("input", x.len(), g.n * g.h * g.w * g.c)?;
    g.check("kernel", kernel.len(), g.patch() * g.o)?;
    g.check("output", y.len(), g.rows() * g.o)?;
    check_workspace(ws.len(), g.workspace_len())?;
    if let Some(b) = bias {
        g.check("bias", b.len(), g.o)?;
    }
    let (img_in, per_out, tile) = (g.h * g.w * g.c, g.oh * g.ow, g.tile_images());
    let tile_len = tile * per_out * g.patch();
    let (yp, wp) = (Shared::new(y), Shared::new(ws));
    let halves = g.halves();
    let run = |h: usize| {
        // SAFETY: half `h` writes only the rows of its images and its own tile.
        let col = unsafe { wp.slice(h * tile_len..(h + 1) * tile_len) };
        let mut b0 = halves[h].start;
        while b0 < halves[h].end {
            let count = tile.min(halves[h].end - b0);
            let sub = Conv2dGeometry { n: count, ..*g };
            let rows = count * per_out;
            let col = &mut col[..rows * g.patch()];
            let yb = unsafe { yp.slice(b0 * per_out * g.o..(b0 + count) * per_out * g.o) };
            forward_tile(&sub, &x[b0 * img_in..(b0 + count) * img_in], kernel, bias, post, col, yb);
            b0 += count;
        }
    };
    both_halves(g, &run);
    Ok(())
}

/// Convolution backward from the output gradient `dy`: overwrites `dkernel`, `dbias` (if
/// given) and `dx` (if given; the first layer of a network passes `None`). With `pre`,
/// `dy` is ignored and each tile's output gradient is written by `pre` instead.
///
/// Tiled like [`conv2d_forward`] (im2col is recomputed per tile, from cache). Each
/// half-batch accumulates its own kernel and bias gradient; the second half's is added
/// to the first's at the end, so the sums do not depend on how many cores ran.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward<T: Scalar>(
    g: &Conv2dGeometry,
    x: &[T],
    kernel: &[T],
    dy: &[T],
    dx: Option<&mut [T]>,
    dkernel: &mut [T],
    dbias: Option<&mut [T]>,
    ws: &mut [T],
    pre: Option<&Prologue<'_, T>>,
) -> Result<()> {
    g.check("input", x.len(), g.n * g.h * g.w * g.c)?;
    g.check("kernel", kernel.len(), g.patch() * g.o)?;
    g.check("kernel gradient", dkernel.len(), g.patch() * g.o)?;
    if pre.is_none() {
        g.check("output gradient", dy.len(), g.rows() * g.o)?;
    }
    if let Some(db) = dbias.as_deref() {
        g.check("bias gradient", db.len(), g.o)?;
    }
    if let Some(d) = dx.as_deref() {
        g.check("input gradient", d.len(), g.n * g.h * g.w * g.c)?;
    }
    check_workspace(ws.len(), g.workspace_len())?;
    let (img_in, per_out, tile, kl) =
        (g.h * g.w * g.c, g.oh * g.ow, g.tile_images(), g.patch() * g.o);
    let tile_len = tile * per_out * g.patch();
    let dz_len = tile * per_out * g.o;
    // Workspace: [col 0 | col 1 | dz 0 | dz 1 | partial dK of half 1 | partial db of half 1].
    let tail0 = 2 * tile_len + 2 * dz_len;
    let want_db = dbias.is_some();
    // With stride 1 and whole panels of input channels, dx is itself a direct
    // convolution of the output gradient (no dcol matrix, no col2im scatter); its
    // kernel, turned and transposed, is built once here in the workspace's last part.
    let flip_at = tail0 + kl + g.o;
    let dx_geom = g.input_gradient().filter(|d| {
        dx.is_some()
            && super::conv_direct::usable(d)
            && super::conv_direct::padded_len(d).is_none_or(|len| len <= tile_len)
            && T::as_f32(x).is_some()
    });
    if dx_geom.is_some() {
        let flip = &mut ws[flip_at..flip_at + kl];
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let (src, dst) =
                    ((ky * g.kw + kx) * g.c, ((g.kh - 1 - ky) * g.kw + g.kw - 1 - kx) * g.o);
                for ci in 0..g.c {
                    for oi in 0..g.o {
                        flip[(dst + oi) * g.c + ci] = kernel[(src + ci) * g.o + oi];
                    }
                }
            }
        }
    }
    let mut no_bias: [T; 0] = [];
    let db0: &mut [T] = match dbias {
        Some(d) => d,
        None => &mut no_bias,
    };
    let wp = Shared::new(ws);
    let (dk0p, db0p) = (Shared::new(dkernel), Shared::new(db0));
    let dxp = dx.map(Shared::new);
    let halves = g.halves();
    // SAFETY: the turned kernel lies past every part the halves write; both only read it.
    let flip: &[T] =
        if dx_geom.is_some() { unsafe { wp.slice(flip_at..flip_at + kl) } } else { &[] };
    let run = |h: usize| {
        // SAFETY: half `h` uses its own tile and gradient buffers and only its images' dx.
        let col = unsafe { wp.slice(h * tile_len..(h + 1) * tile_len) };
        let dz = unsafe { wp.slice(2 * tile_len + h * dz_len..2 * tile_len + (h + 1) * dz_len) };
        let (dk, db) = unsafe {
            if h == 0 {
                (dk0p.slice(0..kl), db0p.slice(0..db0p.len()))
            } else {
                (wp.slice(tail0..tail0 + kl), wp.slice(tail0 + kl..tail0 + kl + g.o))
            }
        };
        dk.fill(T::zero());
        db.fill(T::zero());
        let mut b0 = halves[h].start;
        while b0 < halves[h].end {
            let count = tile.min(halves[h].end - b0);
            let sub = Conv2dGeometry { n: count, ..*g };
            let rows = count * per_out;
            let col = &mut col[..rows * g.patch()];
            let out = b0 * per_out * g.o..(b0 + count) * per_out * g.o;
            let dyb: &[T] = match pre {
                Some(pre) => {
                    let dzb = &mut dz[..out.len()];
                    pre(out, dzb);
                    dzb
                }
                None => &dy[out],
            };
            let xb = &x[b0 * img_in..(b0 + count) * img_in];
            // dK += colᵀ · dY; in f32, with channels in whole panels, the GEMM packs colᵀ
            // straight from x (no im2col).
            let whole_panels = g.c.is_multiple_of(panel_rows());
            let direct_dk = super::conv_direct::kernel_gradient_usable(&sub)
                && super::conv_direct::kernel_gradient_scratch(&sub) <= col.len();
            let packed = match (T::as_f32(xb), T::as_f32(dyb), T::as_f32_mut(&mut *dk)) {
                (Some(xs), Some(dys), Some(dks)) if direct_dk => {
                    if let Some(pad) = T::as_f32_mut(&mut *col) {
                        super::conv_direct::kernel_gradient(&sub, xs, dys, dks, pad);
                    }
                    true
                }
                (Some(xs), Some(dys), Some(dks)) if whole_panels => {
                    let pack = |ic, mc, pc, kc, mr, dst: &mut [f32]| {
                        pack_col_transposed(&sub, xs, (ic, mc, pc, kc, mr), dst)
                    };
                    // SAFETY: dY is rows × o and dK is patch × o, both row-major.
                    unsafe {
                        sgemm_packed_a(
                            g.patch(),
                            rows,
                            g.o,
                            1.0,
                            &pack,
                            dys.as_ptr(),
                            g.o as isize,
                            1,
                            1.0,
                            dks.as_mut_ptr(),
                            g.o,
                        )
                    };
                    true
                }
                _ => false,
            };
            if !packed {
                im2col_images(&sub, xb, col);
                gemm_in(
                    g.patch(),
                    g.o,
                    rows,
                    T::one(),
                    col,
                    Trans::Yes,
                    dyb,
                    Trans::No,
                    T::one(),
                    dk,
                );
            }
            if want_db {
                for row in dyb.chunks_exact(g.o) {
                    for (d, &v) in db.iter_mut().zip(row) {
                        *d += v;
                    }
                }
            }
            if let (Some(dxp), Some(dg)) = (dxp, dx_geom) {
                let dxb = unsafe { dxp.slice(b0 * img_in..(b0 + count) * img_in) };
                let dg = Conv2dGeometry { n: count, ..dg };
                // `dx_geom` is set only in f32, where these views exist.
                if let (Some(d), Some(k), Some(o), Some(pad)) =
                    (T::as_f32(dyb), T::as_f32(flip), T::as_f32_mut(dxb), T::as_f32_mut(col))
                {
                    super::conv_direct::forward_images(&dg, d, k, o, pad);
                }
            } else if let Some(dxp) = dxp {
                // dcol = dY · Kᵀ, scattered back onto this tile's images.
                gemm_in(
                    rows,
                    g.patch(),
                    g.o,
                    T::one(),
                    dyb,
                    Trans::No,
                    kernel,
                    Trans::Yes,
                    T::zero(),
                    col,
                );
                let dxb = unsafe { dxp.slice(b0 * img_in..(b0 + count) * img_in) };
                col2im_images(&sub, col, dxb);
            }
            b0 += count;
        }
    };
    both_halves(g, &run);
    let tail = &ws[tail0..tail0 + kl + g.o];
    for (d, &v) in dkernel.iter_mut().zip(&tail[..kl]) {
        *d += v;
    }
    if want_db {
        for (d, &v) in db0.iter_mut().zip(&tail[kl..]) {
            *d += v;
        }
    }
    Ok(())
}
