//! `Conv2D`: 2-D convolution on `[height, width, channels]` samples with an HWIO kernel
//! `[kh, kw, in, filters]` (Keras's layouts), via im2col + GEMM in cache-sized tiles;
//! bias and activation applied to each tile's output while it is in cache.
//!
//! A Conv2D followed by a 2×2 MaxPool2D (the usual convnet block) absorbs the pool
//! (see [`Conv2D::absorb`]), in `model!` networks and `Sequential` alike: the
//! convolution's output stays in cache and only the pooled values and each one's
//! winner are stored.
//!
//! Shape rule (kiln-spec's `Conv2D`): `[h, w, c]` → `[oh, ow, filters]`, with
//! `oh = (h − kh)/sh + 1` for valid padding and `ceil(h / sh)` for same padding; a
//! window larger than a valid-padded input is an error.

use super::{
    Act, Backward, Builtin, Epilogue, Layer, ParamSpec, Params, ParamsMut, kernel_and_bias,
};
use kiln_spec::{LayerSpec, layers as spec};
use kiln_tape::Scalar;
use kiln_tape::kernels::conv::Prologue;
use kiln_tape::kernels::simd::with_simd;
use kiln_tape::kernels::{
    Conv2dGeometry, Padding, conv2d_backward, conv2d_forward, conv2d_maxpool2_forward,
    conv2d_maxpool2_kernel_grad,
};

/// A 2-D convolution layer (Keras `Conv2D`).
///
/// ```
/// use kiln::prelude::*;
/// model! { struct Net: [8, 8, 1] => [Conv2D(4, kernel = 3, padding = same), Conv2D(2, kernel = 3, strides = 2)] }
/// let y = Net::new(Seed(1)).predict(&Inputs::<S3<8, 8, 1>>::from_vec(vec![0.5; 64])?)?;
/// assert_eq!(y.sample_shape(), &[3, 3, 2]); // same keeps 8x8; valid with stride 2 gives 3x3
/// # Ok::<(), kiln::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Conv2D<T = f32> {
    cfg: spec::Conv2D,
    /// The activation as run (a final softmax/sigmoid may be split off for the loss).
    activation: Act,
    /// Whether the 2×2 max pool after it runs inside this layer's passes.
    pooled: bool,
    input: [usize; 3],
    col: Vec<T>,
    z: Vec<T>,
    scratch: Vec<T>,
    /// Which of its 2×2 window each pooled value came from, when fused with a pool.
    winners: Vec<T>,
    /// The pooled output's gradient through the activation, when fused with a pool.
    dpool: Vec<T>,
}

impl<T: Scalar> Builtin<T> for spec::Conv2D {
    type Layer = Conv2D<T>;
    fn into_layer(self) -> Conv2D<T> {
        Conv2D {
            activation: self.activation.into(),
            cfg: self,
            pooled: false,
            input: [0; 3],
            col: Vec::new(),
            z: Vec::new(),
            scratch: Vec::new(),
            winners: Vec::new(),
            dpool: Vec::new(),
        }
    }
}

impl<T: Scalar> Conv2D<T> {
    /// `filters` output channels with Keras's defaults: a 3×3 kernel (set another with
    /// [`Conv2D::kernel`]), stride 1, valid padding, linear, with bias.
    pub fn new(filters: usize) -> Self {
        spec::Conv2D::new(filters).into_layer()
    }
    /// Kernel height and width.
    pub fn kernel(mut self, kh: usize, kw: usize) -> Self {
        self.cfg.kernel_size = (kh, kw);
        self
    }
    /// Vertical and horizontal strides.
    pub fn strides(mut self, sh: usize, sw: usize) -> Self {
        self.cfg.strides = (sh, sw);
        self
    }
    /// Valid or same padding.
    pub fn padding(mut self, p: Padding) -> Self {
        self.cfg.padding = p;
        self
    }

    /// Forward through this layer and the absorbed 2×2 max pool: `pooled` receives the
    /// pool's output.
    fn forward_pooled(
        &mut self,
        p: &Params<'_, T>,
        x: &[T],
        batch: usize,
        pooled: &mut [T],
        training: bool,
    ) -> kiln_tape::Result<()> {
        let g = self.geometry(batch)?;
        if self.col.len() < g.workspace_len() {
            self.col.resize(g.workspace_len(), T::zero());
        }
        let n = g.n * (g.oh / 2) * (g.ow / 2) * g.o;
        let act = match self.activation {
            Act::Elementwise(a) if a != super::Elementwise::Linear => Some(a),
            _ => None,
        };
        let post = act.map(|a| move |yb: &mut [T]| a.forward_inplace(yb));
        if training {
            self.winners.resize(n, T::zero());
        }
        conv2d_maxpool2_forward(
            &g,
            &x[..g.n * g.h * g.w * g.c],
            p.param("kernel"),
            p.try_param("bias"),
            &mut pooled[..n],
            training.then(|| &mut self.winners[..n]),
            &mut self.col,
            post.as_ref().map(|f| f as &kiln_tape::kernels::conv::Epilogue<T>),
        )
    }

    /// Backward through the absorbed pool and this layer, from the gradient `dy` of the
    /// pooled output `pooled` (after a pooled forward pass in training mode).
    #[allow(clippy::too_many_arguments)]
    fn backward_pooled(
        &mut self,
        p: Params<'_, T>,
        x: &[T],
        pooled: &[T],
        dy: &[T],
        batch: usize,
        mut g: ParamsMut<'_, T>,
        dx: Option<&mut [T]>,
    ) -> kiln_tape::Result<()> {
        let geom = self.geometry(batch)?;
        let (oh, ow, o) = (geom.oh, geom.ow, geom.o);
        let (ph, pw) = (oh / 2, ow / 2);
        let per_pool = ph * pw * o;
        let n = geom.n * per_pool;
        if self.winners.len() < n || pooled.len() < n || dy.len() < n {
            return Err(kiln_tape::TapeError::InvalidArgument {
                op: "conv2d + max_pool2d backward",
                message: "no pooled forward pass in training mode precedes this backward pass"
                    .into(),
            });
        }
        // The gradient through the activation at each window's winner, whose output is
        // the pooled value (vectorized over the whole batch first).
        self.dpool.resize(n, T::zero());
        self.activation.backward(&[], &pooled[..n], &dy[..n], o, &mut self.dpool[..n]);
        let (win, dpool) = (&self.winners[..n], &self.dpool[..n]);
        if dx.is_none() {
            // A one-channel first layer: kernel gradients straight from the winners.
            let xin = &x[..geom.n * geom.h * geom.w * geom.c];
            let (dk, db) = g.kernel_and_bias();
            if conv2d_maxpool2_kernel_grad(&geom, xin, win, dpool, dk, db, &mut self.col)? {
                return Ok(());
            }
        }
        // Each tile's gradient w.r.t. the convolution's pre-activation output: that
        // value at each window's winner, zero elsewhere.
        let through = move |r: std::ops::Range<usize>, dz: &mut [T]| {
            let per_img = oh * ow * o;
            let (b0, count) = (r.start / per_img, r.len() / per_img);
            let (row, zero) = (ow * o, T::zero());
            with_simd(|| {
                for b in 0..count {
                    let img = &mut dz[b * per_img..(b + 1) * per_img];
                    // An odd last row or column is in no window.
                    img[2 * ph * row..].fill(zero);
                    for py in 0..ph {
                        let r0 = 2 * py * row;
                        let (top, bottom) = img[r0..r0 + 2 * row].split_at_mut(row);
                        top[2 * pw * o..].fill(zero);
                        bottom[2 * pw * o..].fill(zero);
                        for px in 0..pw {
                            let j = ((b0 + b) * ph * pw + py * pw + px) * o;
                            let (d00, d01) = top[2 * px * o..2 * px * o + 2 * o].split_at_mut(o);
                            let (d10, d11) = bottom[2 * px * o..2 * px * o + 2 * o].split_at_mut(o);
                            let (wj, vj) = (&win[j..j + o], &dpool[j..j + o]);
                            route_to_winners(wj, vj, d00, d01, d10, d11);
                        }
                    }
                }
            })
        };
        let xin = &x[..geom.n * geom.h * geom.w * geom.c];
        let dx = dx.map(|d| &mut d[..xin.len()]);
        let (dk, db) = g.kernel_and_bias();
        let pre: &Prologue<'_, T> = &through;
        conv2d_backward(&geom, xin, p.param("kernel"), &[], dx, dk, db, &mut self.col, Some(pre))
    }

    fn geometry(&self, batch: usize) -> kiln_tape::Result<Conv2dGeometry> {
        let [h, w, c] = self.input;
        let (kh, kw) = self.cfg.kernel_size;
        Conv2dGeometry::new(
            &[batch, h, w, c],
            &[kh, kw, c, self.cfg.filters],
            self.cfg.strides,
            self.cfg.padding,
        )
    }

    fn run(
        &mut self,
        p: &Params<'_, T>,
        x: &[T],
        batch: usize,
        y: &mut [T],
        training: bool,
    ) -> kiln_tape::Result<()> {
        let g = self.geometry(batch)?;
        if self.col.len() < g.workspace_len() {
            self.col.resize(g.workspace_len(), T::zero());
        }
        let n = g.rows() * g.o;
        // An elementwise activation that needs only its output is applied block by
        // block inside the convolution, while the block is in cache.
        let fused = match self.activation {
            Act::Elementwise(a) if !a.needs_input() => Some(a),
            _ => None,
        };
        let post = fused.map(|a| move |yb: &mut [T]| a.forward_inplace(yb));
        conv2d_forward(
            &g,
            &x[..g.n * g.h * g.w * g.c],
            p.param("kernel"),
            p.try_param("bias"),
            &mut y[..n],
            &mut self.col,
            post.as_ref().map(|f| f as &kiln_tape::kernels::conv::Epilogue<T>),
        )?;
        if fused.is_none() {
            if training && self.activation.needs_input() {
                self.z.resize(n, T::zero());
                self.z.copy_from_slice(&y[..n]);
            }
            let act = self.activation;
            act.apply_inplace(&mut y[..n], g.o, &mut self.scratch);
        }
        Ok(())
    }
}

/// `d[k][ch] = v[ch]` where the window position `k` won channel `ch`, zero at the
/// other three positions. A function of its own so the four outputs are known not to
/// alias and the loop vectorizes.
#[inline(always)]
fn route_to_winners<T: Scalar>(
    winner: &[T],
    v: &[T],
    d0: &mut [T],
    d1: &mut [T],
    d2: &mut [T],
    d3: &mut [T],
) {
    let (zero, k1, k2, k3) = (T::zero(), T::one(), T::of(2.0), T::of(3.0));
    let lanes = d0.iter_mut().zip(d1.iter_mut()).zip(d2.iter_mut()).zip(d3.iter_mut());
    for ((((a, b), c), e), (&k, &v)) in lanes.zip(winner.iter().zip(v)) {
        *a = if k == zero { v } else { zero };
        *b = if k == k1 { v } else { zero };
        *c = if k == k2 { v } else { zero };
        *e = if k == k3 { v } else { zero };
    }
}

super::kernel_bias_setters!(Conv2D);

impl<T: Scalar> Layer<T> for Conv2D<T> {
    fn class_name(&self) -> &'static str {
        spec::Conv2D::CLASS
    }
    fn base_name(&self) -> &'static str {
        spec::Conv2D::BASE_NAME
    }
    fn build(&mut self, input: &[usize]) -> Result<Vec<usize>, String> {
        let out = self.cfg.output(input).map_err(|e| e.message)?;
        self.input = [input[0], input[1], input[2]];
        self.pooled = false;
        Ok(out)
    }
    fn param_specs(&self) -> Vec<ParamSpec> {
        let c = &self.cfg;
        let (kh, kw) = c.kernel_size;
        kernel_and_bias(
            vec![kh, kw, self.input[2], c.filters],
            c.filters,
            c.kernel_initializer,
            c.bias_initializer,
            c.use_bias,
        )
    }
    /// Takes a following 2×2, stride-2, valid max pool into its passes when its
    /// activation's derivative follows from its output (the pooled value is the only
    /// output kept).
    fn absorb(&mut self, epilogue: &Epilogue) -> bool {
        let act_ok = match self.activation {
            Act::Elementwise(a) => !a.needs_input(),
            Act::Softmax => false,
        };
        let Epilogue::MaxPool2D(pool) = epilogue;
        let pool_ok =
            pool.pool_size == (2, 2) && pool.strides == (2, 2) && pool.padding == Padding::Valid;
        self.pooled = act_ok && pool_ok;
        self.pooled
    }
    fn forward(
        &mut self,
        p: Params<'_, T>,
        x: &[T],
        batch: usize,
        y: &mut [T],
    ) -> kiln_tape::Result<()> {
        if self.pooled {
            return self.forward_pooled(&p, x, batch, y, false);
        }
        self.run(&p, x, batch, y, false)
    }
    fn forward_train(
        &mut self,
        p: ParamsMut<'_, T>,
        x: &[T],
        batch: usize,
        y: &mut [T],
    ) -> kiln_tape::Result<()> {
        if self.pooled {
            return self.forward_pooled(&p.as_params(), x, batch, y, true);
        }
        self.run(&p.as_params(), x, batch, y, true)
    }
    fn backward(&mut self, b: Backward<'_, T>) -> kiln_tape::Result<()> {
        let Backward { params: p, x, y, dy, batch, grads: mut g, dx } = b;
        if self.pooled {
            return self.backward_pooled(p, x, y, dy, batch, g, dx);
        }
        let geom = self.geometry(batch)?;
        let n = geom.rows() * geom.o;
        let (dy, y, z, act) = (&dy[..n], &y[..n], &self.z, self.activation);
        // The activation's gradient is applied tile by tile inside the convolution.
        let through = move |r: std::ops::Range<usize>, dz: &mut [T]| {
            let z = if z.is_empty() { z } else { &z[r.clone()] };
            act.backward(z, &y[r.clone()], &dy[r], geom.o, dz);
        };
        let pre = (!act.is_linear()).then_some(&through as &Prologue<'_, T>);
        let xin = &x[..geom.n * geom.h * geom.w * geom.c];
        let dx = dx.map(|d| &mut d[..xin.len()]);
        let (dk, db) = g.kernel_and_bias();
        conv2d_backward(&geom, xin, p.param("kernel"), dy, dx, dk, db, &mut self.col, pre)
    }
    fn split_output_activation(&mut self) -> kiln_train::OutputActivation {
        self.activation.split_output()
    }
    fn describe(&self) -> String {
        let c = &self.cfg;
        format!(
            "filters={}, kernel={}x{}, strides={}x{}, padding={}, activation={}",
            c.filters,
            c.kernel_size.0,
            c.kernel_size.1,
            c.strides.0,
            c.strides.1,
            c.padding.name(),
            c.activation.name()
        )
    }
}
