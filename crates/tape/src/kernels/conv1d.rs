//! 1-D convolution on `[n, steps, c]` inputs with `[k, c, o]` kernels (Keras's
//! layouts), with strides, dilation and valid/same/causal padding, via im2col + GEMM
//! over tiles of whole sequences.
//!
//! The im2col tile has one row per output step and `k·c` columns in (tap, channel)
//! order, which is the `[k, c, o]` kernel viewed as a `[k·c, o]` matrix, so each tile's
//! forward pass is one GEMM whose output is already `[steps, o]`. Tiles hold whole
//! sequences and are visited in order, so results do not depend on the tile size's
//! relation to the batch.

use crate::error::{Result, TapeError};
use crate::kernels::gemm::{Trans, gemm};
use crate::scalar::Scalar;
use kiln_spec::window::{Padding, window_output_dilated};

/// About this many values per im2col tile (1 MiB of f32): big enough for the GEMM to
/// run at speed, small enough to stay in L2 beside the output block.
const TILE_ELEMS: usize = 1 << 18;

/// Every size of one 1-D convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv1dGeometry {
    /// Batch size.
    pub n: usize,
    /// Input steps.
    pub steps: usize,
    /// Input channels.
    pub c: usize,
    /// Kernel taps.
    pub k: usize,
    /// Output channels.
    pub o: usize,
    /// Stride.
    pub stride: usize,
    /// Spacing of the taps.
    pub dilation: usize,
    /// Zero steps before the first input step.
    pub pad: usize,
    /// Output steps.
    pub out_steps: usize,
}

impl Conv1dGeometry {
    /// The geometry of `[n, steps, c]` convolved with `[k, c, o]`, or an error naming
    /// what does not fit.
    pub fn new(
        input: [usize; 3],
        kernel: [usize; 3],
        stride: usize,
        dilation: usize,
        padding: Padding,
    ) -> Result<Self> {
        let ([n, steps, c], [k, kc, o]) = (input, kernel);
        let bad = |message: String| TapeError::InvalidArgument { op: "conv1d", message };
        if kc != c || o == 0 || n == 0 {
            return Err(bad(format!("kernel {kernel:?} does not fit input {input:?}")));
        }
        let (out_steps, pad) = window_output_dilated(steps, k, stride, dilation, padding)
            .ok_or_else(|| {
                bad(format!("a {k}-tap kernel with dilation {dilation} does not fit {steps} steps"))
            })?;
        Ok(Conv1dGeometry { n, steps, c, k, o, stride, dilation, pad, out_steps })
    }
    /// Values of the input.
    pub fn input_len(&self) -> usize {
        self.n * self.steps * self.c
    }
    /// Values of the output.
    pub fn output_len(&self) -> usize {
        self.n * self.out_steps * self.o
    }
    /// Values of the kernel.
    pub fn kernel_len(&self) -> usize {
        self.k * self.c * self.o
    }
    /// Sequences per im2col tile.
    pub fn tile_sequences(&self) -> usize {
        (TILE_ELEMS / (self.out_steps * self.k * self.c).max(1)).clamp(1, self.n)
    }
    /// The workspace the passes need.
    pub fn workspace_len(&self) -> usize {
        self.tile_sequences() * self.out_steps * self.k * self.c
    }
    fn check(&self, what: &'static str, got: usize, want: usize) -> Result<()> {
        if got < want {
            return Err(TapeError::InvalidArgument {
                op: "conv1d",
                message: format!("{what} holds {got} values but needs {want}"),
            });
        }
        Ok(())
    }
    /// The input step that tap `t` of output step `s` reads, if inside the input.
    #[inline]
    fn source(&self, s: usize, t: usize) -> Option<usize> {
        (s * self.stride + t * self.dilation).checked_sub(self.pad).filter(|&i| i < self.steps)
    }
}

/// Fills `col` with the im2col rows of sequences `b0..b0 + count`.
fn im2col<T: Scalar>(g: &Conv1dGeometry, x: &[T], b0: usize, count: usize, col: &mut [T]) {
    let (c, kc) = (g.c, g.k * g.c);
    for b in 0..count {
        let xs = &x[(b0 + b) * g.steps * c..(b0 + b + 1) * g.steps * c];
        for s in 0..g.out_steps {
            let row = &mut col[(b * g.out_steps + s) * kc..(b * g.out_steps + s + 1) * kc];
            for (t, dst) in row.chunks_exact_mut(c).enumerate() {
                match g.source(s, t) {
                    Some(i) => dst.copy_from_slice(&xs[i * c..(i + 1) * c]),
                    None => dst.fill(T::zero()),
                }
            }
        }
    }
}

/// Adds the im2col-shaped gradient `col` back into `dx` for sequences `b0..b0 + count`.
fn col2im<T: Scalar>(g: &Conv1dGeometry, col: &[T], b0: usize, count: usize, dx: &mut [T]) {
    let (c, kc) = (g.c, g.k * g.c);
    for b in 0..count {
        let ds = &mut dx[(b0 + b) * g.steps * c..(b0 + b + 1) * g.steps * c];
        ds.fill(T::zero());
        for s in 0..g.out_steps {
            let row = &col[(b * g.out_steps + s) * kc..(b * g.out_steps + s + 1) * kc];
            for (t, src) in row.chunks_exact(c).enumerate() {
                if let Some(i) = g.source(s, t) {
                    for (d, &v) in ds[i * c..(i + 1) * c].iter_mut().zip(src) {
                        *d += v;
                    }
                }
            }
        }
    }
}

/// `y = conv1d(x, kernel) (+ bias)`; `col` is a workspace of at least
/// [`Conv1dGeometry::workspace_len`] values.
pub fn conv1d_forward<T: Scalar>(
    g: &Conv1dGeometry,
    x: &[T],
    kernel: &[T],
    bias: Option<&[T]>,
    y: &mut [T],
    col: &mut [T],
) -> Result<()> {
    g.check("x", x.len(), g.input_len())?;
    g.check("kernel", kernel.len(), g.kernel_len())?;
    g.check("y", y.len(), g.output_len())?;
    g.check("workspace", col.len(), g.workspace_len())?;
    let (kc, tile) = (g.k * g.c, g.tile_sequences());
    let mut b0 = 0;
    while b0 < g.n {
        let count = tile.min(g.n - b0);
        let rows = count * g.out_steps;
        im2col(g, x, b0, count, col);
        let yt = &mut y[b0 * g.out_steps * g.o..(b0 * g.out_steps + rows) * g.o];
        let beta = match bias {
            Some(b) => {
                for r in yt.chunks_exact_mut(g.o) {
                    r.copy_from_slice(&b[..g.o]);
                }
                T::one()
            }
            None => T::zero(),
        };
        gemm(
            rows,
            g.o,
            kc,
            T::one(),
            &col[..rows * kc],
            Trans::No,
            &kernel[..kc * g.o],
            Trans::No,
            beta,
            yt,
        )?;
        b0 += count;
    }
    Ok(())
}

/// The gradients of [`conv1d_forward`] from the output gradient `dy`: the kernel's
/// (overwritten), the bias's (overwritten, when given) and, when `dx` is given, the
/// input's.
#[allow(clippy::too_many_arguments)]
pub fn conv1d_backward<T: Scalar>(
    g: &Conv1dGeometry,
    x: &[T],
    kernel: &[T],
    dy: &[T],
    mut dx: Option<&mut [T]>,
    dkernel: &mut [T],
    dbias: Option<&mut [T]>,
    col: &mut [T],
) -> Result<()> {
    g.check("x", x.len(), g.input_len())?;
    g.check("dy", dy.len(), g.output_len())?;
    g.check("dkernel", dkernel.len(), g.kernel_len())?;
    g.check("workspace", col.len(), g.workspace_len())?;
    if let Some(dx) = dx.as_deref() {
        g.check("dx", dx.len(), g.input_len())?;
    }
    let (kc, tile) = (g.k * g.c, g.tile_sequences());
    if let Some(db) = dbias {
        let db = &mut db[..g.o];
        db.fill(T::zero());
        for r in dy[..g.output_len()].chunks_exact(g.o) {
            for (d, &v) in db.iter_mut().zip(r) {
                *d += v;
            }
        }
    }
    let mut b0 = 0;
    while b0 < g.n {
        let count = tile.min(g.n - b0);
        let rows = count * g.out_steps;
        let dyt = &dy[b0 * g.out_steps * g.o..(b0 * g.out_steps + rows) * g.o];
        im2col(g, x, b0, count, col);
        // dK (+)= colᵀ·dy, tile by tile in order.
        let beta = if b0 == 0 { T::zero() } else { T::one() };
        gemm(
            kc,
            g.o,
            rows,
            T::one(),
            &col[..rows * kc],
            Trans::Yes,
            dyt,
            Trans::No,
            beta,
            &mut dkernel[..kc * g.o],
        )?;
        if let Some(dx) = dx.as_deref_mut() {
            // dcol = dy·Kᵀ, then scattered back to the input steps.
            gemm(
                rows,
                kc,
                g.o,
                T::one(),
                dyt,
                Trans::No,
                &kernel[..kc * g.o],
                Trans::Yes,
                T::zero(),
                &mut col[..rows * kc],
            )?;
            col2im(g, col, b0, count, dx);
        }
        b0 += count;
    }
    Ok(())
}
