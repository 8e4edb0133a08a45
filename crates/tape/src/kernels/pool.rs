//! Max and average pooling over NHWC inputs, and global average pooling.

use super::parallel::SharedMut;
use crate::error::{Result, TapeError};
use crate::scalar::Scalar;
use kiln_spec::window::{Padding, window_output};

/// Every size of one pooling: input `[n, h, w, c]`, output `[n, oh, ow, c]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool2dGeometry {
    /// Batch size.
    pub n: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Channels.
    pub c: usize,
    /// Window height.
    pub ph: usize,
    /// Window width.
    pub pw: usize,
    /// Vertical stride.
    pub sh: usize,
    /// Horizontal stride.
    pub sw: usize,
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
    /// Rows of padding above the input (ignored by both poolings, as TensorFlow).
    pub pad_top: usize,
    /// Columns of padding left of the input.
    pub pad_left: usize,
}

impl Pool2dGeometry {
    /// Checks an input shape `[n, h, w, c]` against a window and strides.
    pub fn new(
        input: &[usize],
        pool: (usize, usize),
        strides: (usize, usize),
        padding: Padding,
    ) -> Result<Self> {
        let err = |message: String| TapeError::InvalidArgument { op: "pool2d", message };
        let &[n, h, w, c] = input else {
            return Err(err(format!("pooling takes an NHWC input [n, h, w, c], got {input:?}")));
        };
        if pool.0 == 0 || pool.1 == 0 || strides.0 == 0 || strides.1 == 0 {
            return Err(err(format!(
                "pool size {pool:?} and strides {strides:?} must be at least 1"
            )));
        }
        let (Some((oh, pad_top)), Some((ow, pad_left))) = (
            window_output(h, pool.0, strides.0, padding),
            window_output(w, pool.1, strides.1, padding),
        ) else {
            return Err(err(format!(
                "the {}x{} window does not fit the {h}x{w} input {input:?} with valid padding; use padding same or a smaller pool",
                pool.0, pool.1
            )));
        };
        Ok(Pool2dGeometry {
            n,
            h,
            w,
            c,
            ph: pool.0,
            pw: pool.1,
            sh: strides.0,
            sw: strides.1,
            oh,
            ow,
            pad_top,
            pad_left,
        })
    }

    /// Output shape `[n, oh, ow, c]`.
    pub fn output_shape(&self) -> [usize; 4] {
        [self.n, self.oh, self.ow, self.c]
    }

    /// Elements of the input.
    pub fn input_len(&self) -> usize {
        self.n * self.h * self.w * self.c
    }

    /// Elements of the output.
    pub fn output_len(&self) -> usize {
        self.n * self.oh * self.ow * self.c
    }

    fn check(&self, what: &'static str, len: usize, expected: usize) -> Result<()> {
        if len != expected {
            return Err(TapeError::InvalidArgument {
                op: "pool2d",
                message: format!(
                    "{what} must hold {expected} elements for {self:?}, but holds {len}"
                ),
            });
        }
        Ok(())
    }

    /// The in-bounds input rows and columns of the window at output (oy, ox).
    #[inline]
    fn window(&self, oy: usize, ox: usize) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
        let y0 = (oy * self.sh) as isize - self.pad_top as isize;
        let x0 = (ox * self.sw) as isize - self.pad_left as isize;
        let ys = y0.max(0) as usize..((y0 + self.ph as isize).min(self.h as isize)) as usize;
        let xs = x0.max(0) as usize..((x0 + self.pw as isize).min(self.w as isize)) as usize;
        (ys, xs)
    }
}

/// Max pooling. When `argmax` is given it receives, per output element, the flat index
/// of the input element that won, which is all the backward pass needs.
pub fn max_pool2d_forward<T: Scalar>(
    g: &Pool2dGeometry,
    x: &[T],
    y: &mut [T],
    argmax: Option<&mut [usize]>,
) -> Result<()> {
    g.check("input", x.len(), g.input_len())?;
    g.check("output", y.len(), g.output_len())?;
    if let Some(a) = argmax.as_deref() {
        g.check("argmax", a.len(), g.output_len())?;
    }
    let c = g.c;
    if (g.ph, g.pw, g.sh, g.sw, g.pad_top, g.pad_left) == (2, 2, 2, 2, 0, 0)
        && g.oh * 2 <= g.h
        && g.ow * 2 <= g.w
    {
        let (per_in, per_out) = (g.h * g.w * c, g.oh * g.ow * c);
        let halves = halves(g.n);
        let (yp, ap) = (SharedMut::new(y), argmax.map(SharedMut::new));
        let run = |h: usize| {
            let imgs = halves[h].clone();
            if imgs.is_empty() {
                return;
            }
            let sub = Pool2dGeometry { n: imgs.len(), ..*g };
            // SAFETY: each half writes only its own images' outputs.
            let ys = unsafe { yp.slice(imgs.start * per_out..imgs.end * per_out) };
            let aa = ap.map(|a| unsafe { a.slice(imgs.start * per_out..imgs.end * per_out) });
            max_pool_2x2(
                &sub,
                &x[imgs.start * per_in..imgs.end * per_in],
                ys,
                aa,
                imgs.start * per_in,
            );
        };
        on_both_halves(g, &run);
        return Ok(());
    }
    // Two copies of the loop so that neither tests for `argmax` per element; each
    // compares whole channel rows, which vectorizes.
    match argmax {
        Some(a) => {
            for b in 0..g.n {
                for oy in 0..g.oh {
                    for ox in 0..g.ow {
                        let (ys, xs) = g.window(oy, ox);
                        let o = ((b * g.oh + oy) * g.ow + ox) * c;
                        let (yo, ao) = (&mut y[o..o + c], &mut a[o..o + c]);
                        let first = ((b * g.h + ys.start) * g.w + xs.start) * c;
                        yo.copy_from_slice(&x[first..first + c]);
                        for (ch, ai) in ao.iter_mut().enumerate() {
                            *ai = first + ch;
                        }
                        for iy in ys.clone() {
                            for ix in xs.clone() {
                                let i = ((b * g.h + iy) * g.w + ix) * c;
                                for (ch, ((yv, av), &v)) in
                                    yo.iter_mut().zip(ao.iter_mut()).zip(&x[i..i + c]).enumerate()
                                {
                                    let better = v > *yv;
                                    *yv = if better { v } else { *yv };
                                    *av = if better { i + ch } else { *av };
                                }
                            }
                        }
                    }
                }
            }
        }
        None => {
            for b in 0..g.n {
                for oy in 0..g.oh {
                    for ox in 0..g.ow {
                        let (ys, xs) = g.window(oy, ox);
                        let o = ((b * g.oh + oy) * g.ow + ox) * c;
                        let yo = &mut y[o..o + c];
                        let first = ((b * g.h + ys.start) * g.w + xs.start) * c;
                        yo.copy_from_slice(&x[first..first + c]);
                        for iy in ys.clone() {
                            for ix in xs.clone() {
                                let i = ((b * g.h + iy) * g.w + ix) * c;
                                for (yv, &v) in yo.iter_mut().zip(&x[i..i + c]) {
                                    *yv = if v > *yv { v } else { *yv };
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// The common 2×2, stride-2, unpadded max pooling: the four candidates of each output
/// are compared directly (first maximum wins, as in the general path), channel by
/// channel in a loop that vectorizes.
fn max_pool_2x2<T: Scalar>(
    g: &Pool2dGeometry,
    x: &[T],
    y: &mut [T],
    argmax: Option<&mut [usize]>,
    base: usize,
) {
    let c = g.c;
    let row = g.w * c;
    let mut a = argmax;
    for b in 0..g.n {
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                let i00 = ((b * g.h + 2 * oy) * g.w + 2 * ox) * c;
                let (i01, i10) = (i00 + c, i00 + row);
                let i11 = i10 + c;
                let o = ((b * g.oh + oy) * g.ow + ox) * c;
                let (x00, x01, x10, x11) =
                    (&x[i00..i00 + c], &x[i01..i01 + c], &x[i10..i10 + c], &x[i11..i11 + c]);
                let yo = &mut y[o..o + c];
                match a.as_deref_mut() {
                    Some(a) => {
                        let ao = &mut a[o..o + c];
                        for ch in 0..c {
                            let (mut m, mut at) = (x00[ch], i00 + ch);
                            if x01[ch] > m {
                                (m, at) = (x01[ch], i01 + ch);
                            }
                            if x10[ch] > m {
                                (m, at) = (x10[ch], i10 + ch);
                            }
                            if x11[ch] > m {
                                (m, at) = (x11[ch], i11 + ch);
                            }
                            yo[ch] = m;
                            ao[ch] = at + base;
                        }
                    }
                    None => {
                        for ch in 0..c {
                            let m01 = if x01[ch] > x00[ch] { x01[ch] } else { x00[ch] };
                            let m11 = if x11[ch] > x10[ch] { x11[ch] } else { x10[ch] };
                            yo[ch] = if m11 > m01 { m11 } else { m01 };
                        }
                    }
                }
            }
        }
    }
}

/// Max-pooling backward: routes each output gradient to the input that won (`dx` zeroed
/// first). The batch halves run on both cores.
pub fn max_pool2d_backward<T: Scalar>(
    g: &Pool2dGeometry,
    argmax: &[usize],
    dy: &[T],
    dx: &mut [T],
) -> Result<()> {
    g.check("output gradient", dy.len(), g.output_len())?;
    g.check("argmax", argmax.len(), g.output_len())?;
    g.check("input gradient", dx.len(), g.input_len())?;
    let (per_in, per_out) = (g.h * g.w * g.c, g.oh * g.ow * g.c);
    // Every index must point into its own image's input (as forward produces them);
    // checked per image with comparisons only (this runs every training step).
    for b in 0..g.n {
        let (lo, hi) = (b * per_in, (b + 1) * per_in);
        let outs = &argmax[b * per_out..(b + 1) * per_out];
        if let Some(k) = outs.iter().position(|&i| i < lo || i >= hi) {
            return Err(TapeError::InvalidArgument {
                op: "max_pool2d backward",
                message: format!(
                    "argmax index {} at output {} is not inside that output's image; pass the argmax from max_pool2d_forward",
                    outs[k],
                    b * per_out + k
                ),
            });
        }
    }
    let halves = halves(g.n);
    let dxp = SharedMut::new(dx);
    let run = |h: usize| {
        let imgs = halves[h].clone();
        // SAFETY: each half writes only its own images' input gradients.
        let d = unsafe { dxp.slice(imgs.start * per_in..imgs.end * per_in) };
        d.fill(T::zero());
        let base = imgs.start * per_in;
        let outs = imgs.start * per_out..imgs.end * per_out;
        for (&i, &v) in argmax[outs.clone()].iter().zip(&dy[outs]) {
            d[i - base] += v;
        }
    };
    on_both_halves(g, &run);
    Ok(())
}

/// Max-pooling backward from the values instead of stored indices: each output gradient
/// goes to the first input of its window (in the forward's scan order) equal to the
/// output, which is exactly the input the forward picked (an earlier element is strictly
/// smaller than the winner, so it cannot compare equal). `dx` is overwritten.
///
/// Needing no argmax lets the forward run its index-free loop in training too; the
/// 2×2 stride-2 case writes every input gradient once with compare masks, no scatter.
/// The batch halves run on both cores.
pub fn max_pool2d_backward_from_values<T: Scalar>(
    g: &Pool2dGeometry,
    x: &[T],
    y: &[T],
    dy: &[T],
    dx: &mut [T],
) -> Result<()> {
    g.check("input", x.len(), g.input_len())?;
    g.check("output", y.len(), g.output_len())?;
    g.check("output gradient", dy.len(), g.output_len())?;
    g.check("input gradient", dx.len(), g.input_len())?;
    let (per_in, per_out) = (g.h * g.w * g.c, g.oh * g.ow * g.c);
    let halves = halves(g.n);
    let dxp = SharedMut::new(dx);
    let run = |h: usize| {
        let imgs = halves[h].clone();
        if imgs.is_empty() {
            return;
        }
        let sub = Pool2dGeometry { n: imgs.len(), ..*g };
        let (ins, outs) =
            (imgs.start * per_in..imgs.end * per_in, imgs.start * per_out..imgs.end * per_out);
        // SAFETY: each half writes only its own images' input gradients.
        let d = unsafe { dxp.slice(ins.clone()) };
        let (x, y, dy) = (&x[ins], &y[outs.clone()], &dy[outs]);
        if (g.ph, g.pw, g.sh, g.sw, g.pad_top, g.pad_left) == (2, 2, 2, 2, 0, 0) {
            max_pool_2x2_backward(&sub, x, y, dy, d);
        } else {
            max_pool_backward_scan(&sub, x, y, dy, d);
        }
    };
    on_both_halves(g, &run);
    Ok(())
}

fn max_pool_2x2_backward<T: Scalar>(g: &Pool2dGeometry, x: &[T], y: &[T], dy: &[T], dx: &mut [T]) {
    let c = g.c;
    let row = g.w * c;
    let zero = T::zero();
    for b in 0..g.n {
        let img = b * g.h * row;
        // An odd last row or column belongs to no window: its gradient is zero.
        if g.h > 2 * g.oh {
            dx[img + 2 * g.oh * row..img + g.h * row].fill(zero);
        }
        for oy in 0..g.oh {
            let r0 = img + 2 * oy * row;
            if g.w > 2 * g.ow {
                dx[r0 + 2 * g.ow * c..r0 + row].fill(zero);
                dx[r0 + row + 2 * g.ow * c..r0 + 2 * row].fill(zero);
            }
            for ox in 0..g.ow {
                let i00 = r0 + 2 * ox * c;
                let o = ((b * g.oh + oy) * g.ow + ox) * c;
                let (yo, go) = (&y[o..o + c], &dy[o..o + c]);
                let (top, bottom) = dx[i00..i00 + row + 2 * c].split_at_mut(row);
                let (d00, d01) = top[..2 * c].split_at_mut(c);
                let (d10, d11) = bottom[..2 * c].split_at_mut(c);
                let (x00, x01) = (&x[i00..i00 + c], &x[i00 + c..i00 + 2 * c]);
                let (x10, x11) =
                    (&x[i00 + row..i00 + row + c], &x[i00 + row + c..i00 + row + 2 * c]);
                for ch in 0..c {
                    let (m, gv) = (yo[ch], go[ch]);
                    // `&`, not `&&`: no short-circuit branches, so the loop vectorizes.
                    let e00 = x00[ch] == m;
                    let e01 = !e00 & (x01[ch] == m);
                    let e10 = !(e00 | e01) & (x10[ch] == m);
                    let e11 = !(e00 | e01 | e10) & (x11[ch] == m);
                    d00[ch] = if e00 { gv } else { zero };
                    d01[ch] = if e01 { gv } else { zero };
                    d10[ch] = if e10 { gv } else { zero };
                    d11[ch] = if e11 { gv } else { zero };
                }
            }
        }
    }
}

/// Any window, stride and padding: zero `dx`, then add each output gradient at the first
/// window position equal to the output.
fn max_pool_backward_scan<T: Scalar>(g: &Pool2dGeometry, x: &[T], y: &[T], dy: &[T], dx: &mut [T]) {
    dx.fill(T::zero());
    let c = g.c;
    for b in 0..g.n {
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                let (ys, xs) = g.window(oy, ox);
                let o = ((b * g.oh + oy) * g.ow + ox) * c;
                for ch in 0..c {
                    let m = y[o + ch];
                    let hit = ys
                        .clone()
                        .flat_map(|iy| xs.clone().map(move |ix| (iy, ix)))
                        .find_map(|(iy, ix)| {
                            let i = ((b * g.h + iy) * g.w + ix) * c + ch;
                            (x[i] == m).then_some(i)
                        });
                    if let Some(i) = hit {
                        dx[i] += dy[o + ch];
                    }
                }
            }
        }
    }
}

/// 2×2 stride-2 max pooling of `n` images `[h, w, c]` (odd last row/column dropped, as
/// valid padding) with the winner of each output recorded as 0, 1, 2 or 3 (row-major in
/// its window; the first maximum wins, as everywhere in kiln). For pooling fused into a
/// convolution, where the winners replace the convolution's stored output. Winners are
/// stored as `T` so the loops that write and read them vectorize at one lane width.
pub fn max_pool_2x2_winners<T: Scalar>(
    (n, h, w, c): (usize, usize, usize, usize),
    x: &[T],
    y: &mut [T],
    winners: Option<&mut [T]>,
) {
    let (oh, ow, row) = (h / 2, w / 2, w * c);
    let mut wn = winners;
    for b in 0..n {
        for oy in 0..oh {
            for ox in 0..ow {
                let i00 = ((b * h + 2 * oy) * w + 2 * ox) * c;
                let o = ((b * oh + oy) * ow + ox) * c;
                let (x00, x01) = (&x[i00..i00 + c], &x[i00 + c..i00 + 2 * c]);
                let (x10, x11) =
                    (&x[i00 + row..i00 + row + c], &x[i00 + row + c..i00 + row + 2 * c]);
                let yo = &mut y[o..o + c];
                match wn.as_deref_mut() {
                    Some(wn) => max4_with_winner(x00, x01, x10, x11, yo, &mut wn[o..o + c]),
                    None => max4(x00, x01, x10, x11, yo),
                }
            }
        }
    }
}

/// `y = max(a, b, c, d)` per lane, the first maximum winning. Separate slice arguments
/// tell the compiler nothing aliases, so the loop vectorizes.
#[inline(always)]
pub(crate) fn max4<T: Scalar>(a: &[T], b: &[T], c: &[T], d: &[T], y: &mut [T]) {
    for ((((y, &a), &b), &c), &d) in y.iter_mut().zip(a).zip(b).zip(c).zip(d) {
        let m = if b > a { b } else { a };
        let m = if c > m { c } else { m };
        *y = if d > m { d } else { m };
    }
}

/// [`max4`] that also records which of the four won (0 to 3, as `T`).
#[inline(always)]
pub(crate) fn max4_with_winner<T: Scalar>(
    a: &[T],
    b: &[T],
    c: &[T],
    d: &[T],
    y: &mut [T],
    w: &mut [T],
) {
    let [k1, k2, k3] = [T::one(), T::of(2.0), T::of(3.0)];
    let lanes = y.iter_mut().zip(w.iter_mut());
    for (((((y, w), &a), &b), &c), &d) in lanes.zip(a).zip(b).zip(c).zip(d) {
        let (mut m, mut k) = (a, T::zero());
        let b1 = b > m;
        m = if b1 { b } else { m };
        k = if b1 { k1 } else { k };
        let b2 = c > m;
        m = if b2 { c } else { m };
        k = if b2 { k2 } else { k };
        let b3 = d > m;
        *y = if b3 { d } else { m };
        *w = if b3 { k3 } else { k };
    }
}

/// The two half-batches (image ranges); the split depends only on the batch size.
fn halves(n: usize) -> [std::ops::Range<usize>; 2] {
    let h = n / 2;
    if h == 0 { [0..n, n..n] } else { [0..h, h..n] }
}

/// Runs both halves, on both cores when the batch is large enough to pay for it.
fn on_both_halves(g: &Pool2dGeometry, f: &(dyn Fn(usize) + Sync)) {
    if g.n >= 2 && g.input_len() >= 1 << 18 {
        super::parallel::join2(f);
    } else {
        f(0);
        f(1);
    }
}

/// Average pooling; with same padding each window averages only its in-bounds elements,
/// as TensorFlow (and so Keras) does.
pub fn avg_pool2d_forward<T: Scalar>(g: &Pool2dGeometry, x: &[T], y: &mut [T]) -> Result<()> {
    g.check("input", x.len(), g.input_len())?;
    g.check("output", y.len(), g.output_len())?;
    let c = g.c;
    for b in 0..g.n {
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                let (ys, xs) = g.window(oy, ox);
                let inv = T::one() / T::of((ys.len() * xs.len()) as f64);
                let o = ((b * g.oh + oy) * g.ow + ox) * c;
                let dst = &mut y[o..o + c];
                dst.fill(T::zero());
                for iy in ys {
                    for ix in xs.clone() {
                        let i = ((b * g.h + iy) * g.w + ix) * c;
                        for (d, &v) in dst.iter_mut().zip(&x[i..i + c]) {
                            *d += v;
                        }
                    }
                }
                dst.iter_mut().for_each(|d| *d *= inv);
            }
        }
    }
    Ok(())
}

/// Average-pooling backward: spreads each output gradient evenly over its window.
pub fn avg_pool2d_backward<T: Scalar>(g: &Pool2dGeometry, dy: &[T], dx: &mut [T]) -> Result<()> {
    g.check("output gradient", dy.len(), g.output_len())?;
    g.check("input gradient", dx.len(), g.input_len())?;
    dx.fill(T::zero());
    let c = g.c;
    for b in 0..g.n {
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                let (ys, xs) = g.window(oy, ox);
                let inv = T::one() / T::of((ys.len() * xs.len()) as f64);
                let o = ((b * g.oh + oy) * g.ow + ox) * c;
                for iy in ys {
                    for ix in xs.clone() {
                        let i = ((b * g.h + iy) * g.w + ix) * c;
                        for (d, &v) in dx[i..i + c].iter_mut().zip(&dy[o..o + c]) {
                            *d += v * inv;
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// Global average pooling: `[n, h, w, c]` → `[n, c]`, the mean over all positions.
pub fn global_avg_pool2d_forward<T: Scalar>(input: [usize; 4], x: &[T], y: &mut [T]) -> Result<()> {
    let [n, h, w, c] = input;
    check2("global_avg_pool2d", x.len(), n * h * w * c, y.len(), n * c)?;
    let inv = T::one() / T::of((h * w) as f64);
    for b in 0..n {
        let dst = &mut y[b * c..(b + 1) * c];
        dst.fill(T::zero());
        for px in x[b * h * w * c..(b + 1) * h * w * c].chunks_exact(c) {
            for (d, &v) in dst.iter_mut().zip(px) {
                *d += v;
            }
        }
        dst.iter_mut().for_each(|d| *d *= inv);
    }
    Ok(())
}

/// Global-average-pooling backward: each position receives `dy / (h·w)`.
pub fn global_avg_pool2d_backward<T: Scalar>(
    input: [usize; 4],
    dy: &[T],
    dx: &mut [T],
) -> Result<()> {
    let [n, h, w, c] = input;
    check2("global_avg_pool2d backward", dx.len(), n * h * w * c, dy.len(), n * c)?;
    let inv = T::one() / T::of((h * w) as f64);
    for b in 0..n {
        let src = &dy[b * c..(b + 1) * c];
        for px in dx[b * h * w * c..(b + 1) * h * w * c].chunks_exact_mut(c) {
            for (d, &v) in px.iter_mut().zip(src) {
                *d = v * inv;
            }
        }
    }
    Ok(())
}

/// Global max pooling: `[n, positions, c]` → `[n, c]`, the maximum over all positions
/// (an image's `h·w` positions, or a sequence's steps).
pub fn global_max_pool_forward<T: Scalar>(input: [usize; 3], x: &[T], y: &mut [T]) -> Result<()> {
    let [n, p, c] = input;
    check2("global_max_pool", x.len(), n * p * c, y.len(), n * c)?;
    for b in 0..n {
        let dst = &mut y[b * c..(b + 1) * c];
        let mut rows = x[b * p * c..(b + 1) * p * c].chunks_exact(c);
        dst.copy_from_slice(rows.next().unwrap_or(&[]));
        for px in rows {
            for (d, &v) in dst.iter_mut().zip(px) {
                // NaN wins, as in TensorFlow's reduce_max.
                if v > *d || v.is_nan() {
                    *d = v;
                }
            }
        }
    }
    Ok(())
}

/// Global-max-pooling backward from the forward's input `x` and output `y`: `dy` is
/// split equally among the positions that equal the maximum, as the gradient of
/// TensorFlow's and JAX's `reduce_max` (ties share it).
pub fn global_max_pool_backward<T: Scalar>(
    input: [usize; 3],
    x: &[T],
    y: &[T],
    dy: &[T],
    dx: &mut [T],
    count: &mut Vec<T>,
) -> Result<()> {
    let [n, p, c] = input;
    check2("global_max_pool backward", dx.len(), n * p * c, dy.len(), n * c)?;
    check2("global_max_pool backward", x.len(), n * p * c, y.len(), n * c)?;
    count.resize(c, T::zero());
    for b in 0..n {
        let (xs, ys, g) =
            (&x[b * p * c..(b + 1) * p * c], &y[b * c..(b + 1) * c], &dy[b * c..(b + 1) * c]);
        count.fill(T::zero());
        for px in xs.chunks_exact(c) {
            for ((k, &v), &m) in count.iter_mut().zip(px).zip(ys) {
                if v == m {
                    *k += T::one();
                }
            }
        }
        for (dpx, px) in dx[b * p * c..(b + 1) * p * c].chunks_exact_mut(c).zip(xs.chunks_exact(c))
        {
            for ch in 0..c {
                dpx[ch] = if px[ch] == ys[ch] { g[ch] / count[ch] } else { T::zero() };
            }
        }
    }
    Ok(())
}

fn check2(op: &'static str, a: usize, ea: usize, b: usize, eb: usize) -> Result<()> {
    if a != ea || b != eb || ea == 0 {
        return Err(TapeError::InvalidArgument {
            op,
            message: format!(
                "buffers must hold {ea} (input) and {eb} (output) elements, got {a} and {b}"
            ),
        });
    }
    Ok(())
}
