//! Recurrent layers — `SimpleRNN`, `LSTM`, `GRU` (both reset modes) — on
//! `[steps, features]` samples, with Keras's weight layouts and gate orders (kernel
//! `[in, g·u]`, recurrent kernel `[u, g·u]`; LSTM gates i, f, c, o; GRU z, r, h with a
//! `[2, 3u]` bias when `reset_after`), so Keras checkpoints map one to one.
//!
//! How a pass runs: the batch is copied once into step-major order (row `s·batch + b`
//! holds sample `b` at processing step `s`; `go_backwards` is just the order of that
//! copy), then the input projection of every step is one GEMM (`[steps·batch, in] ×
//! [in, g·u]`); each step adds one recurrent GEMM (`[batch, u] × [u, g·u]`) and the
//! bias in Keras's order `(x·W + h·U) + b`, then the gate nonlinearities. The
//! backward pass walks the steps in reverse writing each step's pre-activation
//! gradient; the kernel, recurrent-kernel and bias gradients and the input gradient are
//! then one GEMM (or sum) each over all steps. Every buffer is the layer's and reused.
//!
//! Dropout (Keras's `dropout` / `recurrent_dropout`, training only): the masks are
//! drawn once per pass and reused at every step. With only `dropout`, one input mask
//! `[batch, features]` multiplies the step-major copy before the input GEMM (Keras's
//! implementation 2). With `recurrent_dropout`, every gate has its own input mask and
//! its own state mask `[batch, units]` (Keras switches to implementation 1 then), so
//! the input and recurrent products run one GEMM per gate on column blocks of the
//! kernels ([`gemm_strided`]). The state mask applies where `h_{t-1}` enters the
//! recurrent product only; the carried state is never masked.
//!
//! Shape rule (kiln-spec's `Recurrent`): `[steps, features]` → `[units]`, or
//! `[steps, units]` with `return_sequences` (in processing order, as Keras).

use super::dropout::draw_mask_at;
use super::{Backward, Builtin, Layer, ParamSpec, Params, ParamsMut};
use crate::init::Initializer;
use kiln_spec::{LayerSpec, layers as spec};
use kiln_tape::kernels::lstm::{lstm_cell_rows, lstm_grad_rows, lstm_state_rows};
use kiln_tape::kernels::parallel::{self, for_blocks, rows, split_batch, split_rows, steps};
use kiln_tape::kernels::{PackedB, Strided, Trans, gemm, gemm_packed, gemm_strided};
use kiln_tape::{Activation as A, Scalar, TapeError};
use kiln_train::ParamKind;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::ops::Range;
use std::sync::Mutex;

/// The sizes of one pass.
#[derive(Clone, Copy, Debug, Default)]
struct Dims {
    batch: usize,
    steps: usize,
    features: usize,
    units: usize,
    /// Gate blocks: 1 (SimpleRNN), 3 (GRU), 4 (LSTM).
    gates: usize,
}

impl Dims {
    fn width(&self) -> usize {
        self.gates * self.units
    }
}

/// Grows `v` to at least `n` values (never shrinks: no reallocation after the largest
/// batch).
fn grow<T: Scalar>(v: &mut Vec<T>, n: usize) {
    if v.len() < n {
        v.resize(n, T::zero());
    }
}

/// What every recurrent layer keeps: its configuration, its activations as run, and
/// the step-major copies of the input and of the states.
#[derive(Clone, Debug)]
struct Frame<T> {
    cfg: spec::Recurrent,
    act: A,
    gate: A,
    dims: Dims,
    /// Input, step-major `[steps·batch, features]`.
    xs: Vec<T>,
    /// `x·W` for every step, step-major `[steps·batch, g·u]`.
    xw: Vec<T>,
    /// States `h_0 = 0, h_1, …, h_steps`, step-major `[(steps + 1)·batch, u]`.
    h: Vec<T>,
    /// Gates' pre-activations and activations per step, `[steps·batch, g·u]`.
    z: Vec<T>,
    a: Vec<T>,
    /// Backward: pre-activation gradients of every step `[steps·batch, g·u]`, the
    /// running state gradient `[batch, u]` and a step's scratch.
    dz: Vec<T>,
    dh: Vec<T>,
    tmp: Vec<T>,
    dxs: Vec<T>,
    /// The incoming mask (1 kept, 0 masked per sample and input step), when any.
    mask: Vec<T>,
    use_mask: bool,
    /// Backward: masked rows' state gradient, carried past the step.
    dh_keep: Vec<T>,
    /// Dropout masks and their generator.
    drop: RnnDropout<T>,
    /// The recurrent kernel `U` and `Uᵀ`, packed once per pass for the per-step GEMMs.
    pu: PackedB<T>,
    put: PackedB<T>,
    /// The pre-activation gradients packed once for the weight-gradient GEMMs.
    pdz: PackedB<T>,
}

/// Keras's `dropout` / `recurrent_dropout` for one layer: masks drawn once per
/// training pass (a batch of sequences) and reused at every step.
#[derive(Clone, Debug)]
struct RnnDropout<T> {
    rng: ChaCha8Rng,
    /// Masks set by `with_dropout_masks` and used instead of drawing (for tests).
    fixed: bool,
    /// Whether this pass drops input features / state units.
    on_x: bool,
    on_h: bool,
    /// Scale factors (0 or `1/(1 − rate)`): input `[groups, batch, features]`, state
    /// `[groups, batch, units]`; one group, or one per gate with recurrent dropout.
    mx: Vec<T>,
    mh: Vec<T>,
    /// Scratch: masked copies of the inputs `[steps·batch, features]` and of states.
    sx: Vec<T>,
    sh: Vec<T>,
}

impl<T: Scalar> RnnDropout<T> {
    fn new() -> Self {
        RnnDropout {
            rng: ChaCha8Rng::seed_from_u64(0),
            fixed: false,
            on_x: false,
            on_h: false,
            mx: Vec::new(),
            mh: Vec::new(),
            sx: Vec::new(),
            sh: Vec::new(),
        }
    }
}

/// The state mask of group `k` for sample `b`, when this pass drops states.
fn state_mask<T>(drop: &RnnDropout<T>, d: Dims, k: usize, b: usize) -> Option<&[T]> {
    let (n, u) = (d.batch, d.units);
    drop.on_h.then(|| &drop.mh[(k * n + b) * u..(k * n + b + 1) * u])
}

/// `out[r] = src[r] ⊙ mask[r mod batch]` for step-major rows of `width` (each row's
/// sample takes its mask row).
fn mask_rows<T: Scalar>(src: &[T], mask: &[T], batch: usize, width: usize, out: &mut [T]) {
    for (r, (o, x)) in out.chunks_exact_mut(width).zip(src.chunks_exact(width)).enumerate() {
        let m = &mask[(r % batch) * width..(r % batch + 1) * width];
        for ((o, &x), &m) in o.iter_mut().zip(x).zip(m) {
            *o = x * m;
        }
    }
}

/// Adds (or, with `first`, writes) `src ⊙ mask` per step-major row into `out`.
fn add_masked<T: Scalar>(
    src: &[T],
    mask: &[T],
    batch: usize,
    width: usize,
    out: &mut [T],
    first: bool,
) {
    for (r, (o, x)) in out.chunks_exact_mut(width).zip(src.chunks_exact(width)).enumerate() {
        let m = &mask[(r % batch) * width..(r % batch + 1) * width];
        for ((o, &x), &m) in o.iter_mut().zip(x).zip(m) {
            *o = if first { x * m } else { *o + x * m };
        }
    }
}

/// Keeps the first error of a step's row jobs (lengths hold by construction; this
/// only carries a kernel's refusal out of the parallel part).
fn keep_err(slot: &Mutex<Option<kiln_tape::TapeError>>, r: kiln_tape::Result<()>) {
    if let Err(e) = r {
        slot.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
    }
}

/// What the state-gradient product of a step reads, shared by its row jobs.
#[derive(Clone, Copy)]
struct StateGrad<'a, T> {
    d: Dims,
    groups: usize,
    /// The recurrent kernel and its packed transpose.
    uk: &'a [T],
    put: &'a PackedB<T>,
    /// State masks `[groups, batch, units]` when states are dropped this pass.
    mh: Option<&'a [T]>,
}

impl<T: Scalar> StateGrad<'_, T> {
    /// `out = drs·Uᵀ` for the rows `r` of a step (`drs`, `out` and `scratch` hold just
    /// those rows), or with recurrent dropout `Σ_gate (drs_g·U_gᵀ) ⊙ mask_g`.
    fn rows(
        &self,
        r: Range<usize>,
        drs: &[T],
        out: &mut [T],
        scratch: &mut [T],
    ) -> kiln_tape::Result<()> {
        let (u, w, n) = (self.d.units, self.d.width(), r.len());
        let Some(mh) = self.mh else {
            return gemm_packed(n, T::one(), Strided::new(drs, w), self.put, T::zero(), out, u);
        };
        let (b, bw) = (self.d.batch, w / self.groups);
        for k in 0..self.groups {
            gemm_strided(
                n,
                u,
                bw,
                T::one(),
                Strided::new(&drs[k * bw..n * w], w),
                Strided::t(&self.uk[k * bw..], w),
                T::zero(),
                &mut scratch[..n * u],
                u,
            )?;
            let m = &mh[(k * b + r.start) * u..(k * b + r.end) * u];
            add_masked(&scratch[..n * u], m, n, u, &mut out[..n * u], k == 0);
        }
        Ok(())
    }
}

/// The gradient reaching the state read by a step from its recurrent products, for
/// the whole batch (rows split between the cores): see [`StateGrad::rows`].
fn state_grad<T: Scalar>(
    f: &mut Frame<T>,
    uk: &[T],
    drs: &[T],
    out: &mut [T],
) -> kiln_tape::Result<()> {
    let (d, min) = (f.dims, f.min_rows());
    let (b, u, w) = (d.batch, d.units, d.width());
    let sg = StateGrad {
        d,
        groups: f.groups(),
        uk,
        put: &f.put,
        mh: f.drop.on_h.then_some(&f.drop.mh[..]),
    };
    grow(&mut f.drop.sh, b * u);
    let err = Mutex::new(None);
    split_rows(b, min, [rows(out, u), rows(&mut f.drop.sh, u)], &|r, [o, sc]| {
        keep_err(&err, sg.rows(r.clone(), &drs[r.start * w..r.end * w], o, sc));
    });
    err.into_inner().ok().flatten().map_or(Ok(()), Err)
}

impl<T: Scalar> Frame<T> {
    /// Keeps the mask over the input's steps for the next passes.
    fn set_mask(&mut self, m: Option<&[T]>) {
        self.use_mask = m.is_some();
        if let Some(m) = m {
            self.mask.clear();
            self.mask.extend_from_slice(m);
        }
    }

    /// Whether sample `b` is masked at processing step `s`: its state carries over.
    fn masked(&self, s: usize, b: usize) -> bool {
        masked_at(&self.mask, self.use_mask, self.cfg.go_backwards, self.dims.steps, s, b)
    }

    /// Masked samples keep their state `h` through step `s` (as Keras's `rnn`).
    fn carry_masked(&mut self, s: usize) {
        if self.use_mask {
            let (b, u) = (self.dims.batch, self.dims.units);
            carry_rows(&mut self.h, s, b, u, |bi| {
                masked_at(&self.mask, true, self.cfg.go_backwards, self.dims.steps, s, bi)
            });
        }
    }

    /// Before step `s`'s backward: keeps masked samples' state gradient aside.
    fn save_masked_dh(&mut self, s: usize) {
        if !self.use_mask {
            return;
        }
        let (b, u) = (self.dims.batch, self.dims.units);
        grow(&mut self.dh_keep, b * u);
        for bi in 0..b {
            if self.masked(s, bi) {
                self.dh_keep[bi * u..(bi + 1) * u].copy_from_slice(&self.dh[bi * u..(bi + 1) * u]);
            }
        }
    }

    /// After step `s`'s pre-activation gradients: masked samples took no part in the
    /// step, so theirs are zero (in `dz` and, for GRU, `extra`).
    fn finish_masked_step(&mut self, s: usize, extra: Option<&mut [T]>) {
        if !self.use_mask {
            return;
        }
        let (b, w) = (self.dims.batch, self.dims.width());
        let mut extra = extra;
        for bi in 0..b {
            if self.masked(s, bi) {
                let r = s * b + bi;
                self.dz[r * w..(r + 1) * w].fill(T::zero());
                if let Some(e) = extra.as_deref_mut() {
                    e[r * w..(r + 1) * w].fill(T::zero());
                }
            }
        }
    }

    /// After step `s`'s state gradient: masked samples' passes through unchanged.
    fn restore_masked_dh(&mut self, s: usize) {
        if !self.use_mask {
            return;
        }
        let u = self.dims.units;
        for bi in 0..self.dims.batch {
            if self.masked(s, bi) {
                self.dh[bi * u..(bi + 1) * u].copy_from_slice(&self.dh_keep[bi * u..(bi + 1) * u]);
            }
        }
    }

    fn new(cfg: spec::Recurrent, gates: usize) -> Self {
        let mut f = Frame {
            act: A::Tanh,
            gate: A::Sigmoid,
            cfg,
            dims: Dims { gates, ..Dims::default() },
            xs: Vec::new(),
            xw: Vec::new(),
            h: Vec::new(),
            z: Vec::new(),
            a: Vec::new(),
            dz: Vec::new(),
            dh: Vec::new(),
            tmp: Vec::new(),
            dxs: Vec::new(),
            mask: Vec::new(),
            use_mask: false,
            dh_keep: Vec::new(),
            drop: RnnDropout::new(),
            pu: PackedB::new(),
            put: PackedB::new(),
            pdz: PackedB::new(),
        };
        f.configure(cfg);
        f
    }

    /// Rows per part below which a step's row jobs stay on one thread: a step's
    /// recurrent product must be worth a fork-join (about 2^16 multiply-adds).
    fn min_rows(&self) -> usize {
        let d = self.dims;
        if d.batch * d.units * d.width() < 1 << 16 { usize::MAX } else { 2 }
    }

    /// As [`Frame::min_rows`] for a whole pass split once (all steps per part).
    fn min_rows_pass(&self) -> usize {
        let d = self.dims;
        if d.steps * d.batch * d.units * d.width() < 1 << 16 { usize::MAX } else { 2 }
    }

    /// Takes the layer's configuration (as the builder left it) before a build.
    fn configure(&mut self, cfg: spec::Recurrent) {
        let elementwise = |a: kiln_spec::Activation| A::try_from(a).unwrap_or(A::Tanh);
        (self.act, self.gate, self.cfg) =
            (elementwise(cfg.activation), elementwise(cfg.recurrent_activation), cfg);
    }

    /// Mask groups: one, or one per gate when the state is dropped (as Keras).
    fn groups(&self) -> usize {
        if self.cfg.recurrent_dropout > 0.0 { self.dims.gates } else { 1 }
    }

    /// Decides whether this pass drops, and draws its masks (unless fixed).
    fn draw_masks(&mut self, batch: usize, training: bool) -> kiln_tape::Result<()> {
        self.dims.batch = batch;
        let (c, d, g) = (self.cfg, self.dims, self.groups());
        self.drop.on_x = training && c.dropout > 0.0;
        self.drop.on_h = training && c.recurrent_dropout > 0.0;
        let (nx, nh) = (g * d.batch * d.features, g * d.batch * d.units);
        let dr = &mut self.drop;
        if dr.fixed {
            let fits = (!dr.on_x || dr.mx.len() >= nx) && (!dr.on_h || dr.mh.len() >= nh);
            if !fits {
                return Err(TapeError::InvalidArgument {
                    op: "recurrent dropout",
                    message: format!(
                        "fixed masks must hold {nx} input and {nh} state scale factors \
                         ([groups, batch, features] and [groups, batch, units]), got {} and {}",
                        dr.mx.len(),
                        dr.mh.len()
                    ),
                });
            }
            return Ok(());
        }
        // The masks are [groups, batch, width]: across ranks, this rank's rows are rows
        // `rows.start..` of a batch of `rows.end`, so each group's part is drawn at its
        // place in the whole batch's mask.
        let rows = kiln_train::distributed::batch_rows();
        let total = if rows.end > 0 { rows.end } else { d.batch };
        let at = |width: usize, gi: usize| (gi * total + rows.start) * width;
        if dr.on_x {
            grow(&mut dr.mx, nx);
            let key: u64 = dr.rng.random();
            let per = d.batch * d.features;
            for (gi, m) in dr.mx[..nx].chunks_mut(per.max(1)).enumerate() {
                draw_mask_at(key, c.dropout, m, at(d.features, gi));
            }
        }
        if dr.on_h {
            grow(&mut dr.mh, nh);
            let key: u64 = dr.rng.random();
            let per = d.batch * d.units;
            for (gi, m) in dr.mh[..nh].chunks_mut(per.max(1)).enumerate() {
                draw_mask_at(key, c.recurrent_dropout, m, at(d.units, gi));
            }
        }
        Ok(())
    }

    fn build(&mut self, class: &str, input: &[usize]) -> Result<Vec<usize>, String> {
        let out = self.cfg.output(class, input).map_err(|e| e.message)?;
        self.dims =
            Dims { steps: input[0], features: input[1], units: self.cfg.units, ..self.dims };
        Ok(out)
    }

    /// The three Keras parameters (recurrent kernel `recurrent_kernel`); `bias_rows`
    /// gives GRU's `[2, 3u]` bias.
    fn param_specs(&self, bias_init: Initializer, bias_rows: usize) -> Vec<ParamSpec> {
        let (d, c) = (self.dims, &self.cfg);
        let mut v = vec![
            ParamSpec {
                name: "kernel",
                shape: vec![d.features, d.width()],
                init: c.kernel_initializer,
                trainable: true,
                kind: ParamKind::Kernel,
            },
            ParamSpec {
                name: "recurrent_kernel",
                shape: vec![d.units, d.width()],
                init: c.recurrent_initializer,
                trainable: true,
                kind: ParamKind::Kernel,
            },
        ];
        if c.use_bias {
            let shape = if bias_rows == 1 { vec![d.width()] } else { vec![bias_rows, d.width()] };
            v.push(ParamSpec {
                name: "bias",
                shape,
                init: bias_init,
                trainable: true,
                kind: ParamKind::Bias,
            });
        }
        v
    }

    /// Sizes the buffers for `batch`, copies `x` step-major (reversed with
    /// `go_backwards`), computes `x·W` for all steps and zeroes `h_0`.
    fn begin(&mut self, p: &Params<'_, T>, x: &[T], batch: usize) -> kiln_tape::Result<()> {
        self.dims.batch = batch;
        let d = self.dims;
        let (n, w) = (d.steps * batch, d.width());
        grow(&mut self.xs, n * d.features);
        grow(&mut self.xw, n * w);
        grow(&mut self.h, (d.steps + 1) * batch * d.units);
        grow(&mut self.z, n * w);
        grow(&mut self.a, n * w);
        grow(&mut self.tmp, batch * w);
        let f = d.features;
        for s in 0..d.steps {
            let t = if self.cfg.go_backwards { d.steps - 1 - s } else { s };
            for b in 0..batch {
                let src = &x[(b * d.steps + t) * f..(b * d.steps + t + 1) * f];
                self.xs[(s * batch + b) * f..(s * batch + b + 1) * f].copy_from_slice(src);
            }
        }
        let kernel = p.param("kernel");
        if self.drop.on_x {
            // (x ⊙ m_g)·W_g per mask group, into that group's columns.
            let (g, dr) = (self.groups(), &mut self.drop);
            let bw = w / g;
            grow(&mut dr.sx, n * f);
            for k in 0..g {
                mask_rows(
                    &self.xs[..n * f],
                    &dr.mx[k * batch * f..],
                    batch,
                    f,
                    &mut dr.sx[..n * f],
                );
                gemm_strided(
                    n,
                    bw,
                    f,
                    T::one(),
                    Strided::new(&dr.sx[..n * f], f),
                    Strided::new(&kernel[k * bw..], w),
                    T::zero(),
                    &mut self.xw[k * bw..n * w],
                    w,
                )?;
            }
        } else {
            gemm(
                n,
                w,
                f,
                T::one(),
                &self.xs[..n * f],
                Trans::No,
                kernel,
                Trans::No,
                T::zero(),
                &mut self.xw[..n * w],
            )?;
        }
        self.h[..batch * d.units].fill(T::zero());
        Ok(())
    }

    /// Packs `U` for the forward steps' recurrent products (unless states are dropped,
    /// which multiplies per gate instead).
    fn pack_recurrent(&mut self, u: &[T]) -> kiln_tape::Result<()> {
        if self.drop.on_h {
            return Ok(());
        }
        let d = self.dims;
        self.pu.pack(d.units, d.width(), u, Trans::No)
    }

    /// `tmp = h_s · U` for the step that reads state `s` (per gate `(h_s ⊙ m_g)·U_g`
    /// with recurrent dropout).
    fn recurrent(&mut self, u: &[T], s: usize) -> kiln_tape::Result<()> {
        let d = self.dims;
        let (b, n, w) = (d.batch, d.units, d.width());
        if self.drop.on_h {
            let (g, dr) = (self.groups(), &mut self.drop);
            let bw = w / g;
            grow(&mut dr.sh, b * n);
            for k in 0..g {
                let hs = &self.h[s * b * n..(s + 1) * b * n];
                mask_rows(hs, &dr.mh[k * b * n..], b, n, &mut dr.sh[..b * n]);
                gemm_strided(
                    b,
                    bw,
                    n,
                    T::one(),
                    Strided::new(&dr.sh[..b * n], n),
                    Strided::new(&u[k * bw..], w),
                    T::zero(),
                    &mut self.tmp[k * bw..b * w],
                    w,
                )?;
            }
            return Ok(());
        }
        let (hs, pu, err) = (&self.h[s * b * n..(s + 1) * b * n], &self.pu, Mutex::new(None));
        split_rows(b, self.min_rows(), [rows(&mut self.tmp, w)], &|r, [t]| {
            let hr = &hs[r.start * n..r.end * n];
            keep_err(
                &err,
                gemm_packed(r.len(), T::one(), Strided::new(hr, n), pu, T::zero(), t, w),
            );
        });
        err.into_inner().ok().flatten().map_or(Ok(()), Err)
    }

    /// Writes the layer's output from the states.
    fn output(&self, y: &mut [T]) {
        let d = self.dims;
        let (b, n) = (d.batch, d.units);
        if self.cfg.return_sequences {
            for s in 0..d.steps {
                for bi in 0..b {
                    let src = &self.h[((s + 1) * b + bi) * n..((s + 1) * b + bi + 1) * n];
                    y[(bi * d.steps + s) * n..(bi * d.steps + s + 1) * n].copy_from_slice(src);
                }
            }
        } else {
            y[..b * n].copy_from_slice(&self.h[d.steps * b * n..(d.steps + 1) * b * n]);
        }
    }

    /// Starts the backward pass: sizes the buffers and zeroes the state gradient.
    fn begin_backward(&mut self) {
        let d = self.dims;
        let n = d.steps * d.batch;
        grow(&mut self.dz, n * d.width());
        grow(&mut self.dh, d.batch * d.units);
        grow(&mut self.dxs, n * d.features);
        grow(&mut self.dh_keep, d.batch * d.units);
        self.dh[..d.batch * d.units].fill(T::zero());
    }

    /// Packs `Uᵀ` for the backward steps' state gradients (unless states are dropped,
    /// which multiplies per gate instead).
    fn pack_transposed(&mut self, u: &[T]) -> kiln_tape::Result<()> {
        if self.drop.on_h {
            return Ok(());
        }
        let d = self.dims;
        self.put.pack(d.width(), d.units, u, Trans::Yes)
    }

    /// Adds the output's gradient at processing step `s` into the state gradient.
    fn add_output_grad(&mut self, dy: &[T], s: usize) {
        let d = self.dims;
        let (b, n) = (d.batch, d.units);
        if self.cfg.return_sequences {
            for bi in 0..b {
                let g = &dy[(bi * d.steps + s) * n..(bi * d.steps + s + 1) * n];
                for (h, &v) in self.dh[bi * n..(bi + 1) * n].iter_mut().zip(g) {
                    *h += v;
                }
            }
        } else if s + 1 == d.steps {
            for (h, &v) in self.dh[..b * n].iter_mut().zip(&dy[..b * n]) {
                *h += v;
            }
        }
    }

    /// After the step loop: `dW = xsᵀ·dz`, `dU = h_{0..steps-1}ᵀ·drec` (one GEMM each;
    /// `drec` is `dz` itself when `None`, as for LSTM and SimpleRNN), the input gradient
    /// `dz·Wᵀ` scattered back to sample order.
    fn finish(
        &mut self,
        p: &Params<'_, T>,
        drec: Option<&[T]>,
        dk: &mut [T],
        du: &mut [T],
        dx: Option<&mut [T]>,
    ) -> kiln_tape::Result<()> {
        let d = self.dims;
        let (n, w, f, u, b) = (d.steps * d.batch, d.width(), d.features, d.units, d.batch);
        let (g, dr) = (self.groups(), &mut self.drop);
        let bw = w / g;
        let kernel = p.param("kernel");
        let shared = !dr.on_x && !dr.on_h && drec.is_none() && !parallel::idle();
        if shared {
            // Inside a fork-join (one block of a batch split between threads) the
            // GEMMs run on this thread: pack dz once for both weight gradients.
            self.pdz.pack(n, w, &self.dz[..n * w], Trans::No)?;
            gemm_packed(
                f,
                T::one(),
                Strided::t(&self.xs[..n * f], f),
                &self.pdz,
                T::zero(),
                dk,
                w,
            )?;
            gemm_packed(u, T::one(), Strided::t(&self.h[..n * u], u), &self.pdz, T::zero(), du, w)?;
        } else if dr.on_x {
            for k in 0..g {
                mask_rows(&self.xs[..n * f], &dr.mx[k * b * f..], b, f, &mut dr.sx[..n * f]);
                gemm_strided(
                    f,
                    bw,
                    n,
                    T::one(),
                    Strided::t(&dr.sx[..n * f], f),
                    Strided::new(&self.dz[k * bw..n * w], w),
                    T::zero(),
                    &mut dk[k * bw..],
                    w,
                )?;
            }
        } else {
            gemm(
                f,
                w,
                n,
                T::one(),
                &self.xs[..n * f],
                Trans::Yes,
                &self.dz[..n * w],
                Trans::No,
                T::zero(),
                dk,
            )?;
        }
        let drec = drec.unwrap_or(&self.dz);
        if shared {
            // dU was computed with dW above.
        } else if dr.on_h {
            grow(&mut dr.sh, n * u);
            for k in 0..g {
                mask_rows(&self.h[..n * u], &dr.mh[k * b * u..], b, u, &mut dr.sh[..n * u]);
                gemm_strided(
                    u,
                    bw,
                    n,
                    T::one(),
                    Strided::t(&dr.sh[..n * u], u),
                    Strided::new(&drec[k * bw..n * w], w),
                    T::zero(),
                    &mut du[k * bw..],
                    w,
                )?;
            }
        } else {
            gemm(
                u,
                w,
                n,
                T::one(),
                &self.h[..n * u],
                Trans::Yes,
                &drec[..n * w],
                Trans::No,
                T::zero(),
                du,
            )?;
        }
        if let Some(dx) = dx {
            if dr.on_x {
                // dx = Σ_g (dz_g·W_gᵀ) ⊙ m_g; the masked copy's buffer is free again.
                for k in 0..g {
                    gemm_strided(
                        n,
                        f,
                        bw,
                        T::one(),
                        Strided::new(&self.dz[k * bw..n * w], w),
                        Strided::t(&kernel[k * bw..], w),
                        T::zero(),
                        &mut dr.sx[..n * f],
                        f,
                    )?;
                    let m = &dr.mx[k * b * f..(k + 1) * b * f];
                    add_masked(&dr.sx[..n * f], m, b, f, &mut self.dxs[..n * f], k == 0);
                }
            } else {
                gemm(
                    n,
                    f,
                    w,
                    T::one(),
                    &self.dz[..n * w],
                    Trans::No,
                    kernel,
                    Trans::Yes,
                    T::zero(),
                    &mut self.dxs[..n * f],
                )?;
            }
            for s in 0..d.steps {
                let t = if self.cfg.go_backwards { d.steps - 1 - s } else { s };
                for b in 0..d.batch {
                    let src = &self.dxs[(s * d.batch + b) * f..(s * d.batch + b + 1) * f];
                    dx[(b * d.steps + t) * f..(b * d.steps + t + 1) * f].copy_from_slice(src);
                }
            }
        }
        Ok(())
    }
}

/// Whether sample `b` is masked at processing step `s` of a mask over input steps.
fn masked_at<T: Scalar>(
    mask: &[T],
    on: bool,
    backwards: bool,
    steps: usize,
    s: usize,
    b: usize,
) -> bool {
    let t = if backwards { steps - 1 - s } else { s };
    on && mask[b * steps + t] == T::zero()
}

/// Copies state `s` into state `s + 1` for the masked samples, in a step-major state
/// buffer `[(steps + 1)·batch, u]`.
fn carry_rows<T: Scalar>(
    state: &mut [T],
    s: usize,
    b: usize,
    u: usize,
    masked: impl Fn(usize) -> bool,
) {
    let (lo, hi) = state.split_at_mut((s + 1) * b * u);
    for bi in 0..b {
        if masked(bi) {
            hi[bi * u..(bi + 1) * u].copy_from_slice(&lo[(s * b + bi) * u..(s * b + bi + 1) * u]);
        }
    }
}

/// `out[k] = a'(z[k])` given `y[k] = a(z[k])`, with one `match` per call so the common
/// activations' loops vectorize.
fn derivatives<T: Scalar>(a: A, z: &[T], y: &[T], out: &mut [T]) {
    let one = T::one();
    match a {
        A::Sigmoid => out.iter_mut().zip(y).for_each(|(o, &v)| *o = v * (one - v)),
        A::Tanh => out.iter_mut().zip(y).for_each(|(o, &v)| *o = one - v * v),
        A::Linear => out.fill(one),
        _ => {
            for ((o, &zv), &yv) in out.iter_mut().zip(z).zip(y) {
                *o = a.derivative(zv, yv);
            }
        }
    }
}

/// Column sums of `rows` rows of `width` into `out` (a bias gradient).
fn column_sums<T: Scalar>(m: &[T], width: usize, out: &mut [T]) {
    out[..width].fill(T::zero());
    for row in m.chunks_exact(width) {
        for (o, &v) in out.iter_mut().zip(row) {
            *o += v;
        }
    }
}

/// The passes every cell's `Layer` impl shares: inference and training run the same
/// `run` (training draws the dropout masks), the incoming mask goes to the frame, and
/// the fit loop's seed to the dropout generator.
macro_rules! cell_passes {
    () => {
        fn forward(
            &mut self,
            p: Params<'_, T>,
            x: &[T],
            batch: usize,
            y: &mut [T],
        ) -> kiln_tape::Result<()> {
            self.run(&p, x, batch, y, false)
        }
        fn forward_train(
            &mut self,
            p: ParamsMut<'_, T>,
            x: &[T],
            batch: usize,
            y: &mut [T],
        ) -> kiln_tape::Result<()> {
            self.run(&p.as_params(), x, batch, y, true)
        }
        fn input_mask(&mut self, mask: Option<&[T]>) {
            self.f.set_mask(mask);
        }
        fn reseed(&mut self, seed: u64) {
            self.f.drop.rng = ChaCha8Rng::seed_from_u64(seed);
        }
    };
}

/// The builder methods every cell shares; `$field` is where its spec keeps the
/// shared [`spec::Recurrent`].
macro_rules! recurrent_builders {
    ($field:tt) => {
        /// Output every step.
        pub fn return_sequences(mut self, on: bool) -> Self {
            self.cfg.$field.return_sequences = on;
            self
        }
        /// Read the sequence last step first.
        pub fn go_backwards(mut self, on: bool) -> Self {
            self.cfg.$field.go_backwards = on;
            self
        }
        /// Drops this fraction of the input features while training (Keras's
        /// `dropout`: one mask per sequence, reused at every step).
        pub fn dropout(mut self, rate: f64) -> Self {
            self.cfg.$field.dropout = rate;
            self
        }
        /// Drops this fraction of the previous state where it enters the recurrent
        /// product while training (Keras's `recurrent_dropout`).
        pub fn recurrent_dropout(mut self, rate: f64) -> Self {
            self.cfg.$field.recurrent_dropout = rate;
            self
        }
        /// Uses these dropout masks (scale factors: 0 or `1/(1 − rate)`) instead of
        /// drawing them, for tests: input `[groups, batch, features]` and state
        /// `[groups, batch, units]`, where `groups` is the number of gates with
        /// `recurrent_dropout` and 1 without.
        pub fn with_dropout_masks(mut self, input: Vec<T>, state: Vec<T>) -> Self {
            let d = &mut self.f.drop;
            (d.fixed, d.mx, d.mh) = (true, input, state);
            self
        }
    };
}

/// Keras `LSTM`.
///
/// ```
/// use kiln::prelude::*;
/// model! { struct Net: [6, 2] => [LSTM(8, return_sequences = true), LSTM(5)] }
/// let y = Net::new(Seed(1)).predict(&Inputs::<S2<6, 2>>::from_vec(vec![0.5; 12])?)?;
/// assert_eq!(y.sample_shape(), &[5]); // the last step of the second LSTM
/// # Ok::<(), kiln::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct LSTM<T = f32> {
    cfg: spec::LSTM,
    /// The whole batch's frame: configuration, step mask and dropout masks (the
    /// blocks' frames hold the buffers).
    f: Frame<T>,
    /// The batch in fixed blocks of [`BLOCK_ROWS`] rows, run in parallel; grown to the
    /// largest batch once.
    blocks: Vec<LstmCore<T>>,
}

/// Rows of the batch per LSTM block. Fixed (never derived from the thread count), so
/// the per-block weight gradients, summed in block order, give the same bits for any
/// number of threads. Each block runs all its steps without synchronizing: a sample's
/// recurrence touches only its own rows. 16 rows keep a block's step loop in L2 (for
/// LSTM(128) over 28 steps, against 32 and 8 rows: 2.5% and 3% faster in the bench).
const BLOCK_ROWS: usize = 16;

/// One block of rows of an LSTM's batch: its frame, cell states and gradients.
#[derive(Clone, Debug)]
struct LstmCore<T> {
    f: Frame<T>,
    /// Cell states `c_0 = 0, …, c_steps` and their tanh, step-major.
    c: Vec<T>,
    tc: Vec<T>,
    dc: Vec<T>,
    /// Backward: one step's gate derivatives `[batch, 4u]` and `tanh'(c)` `[batch, u]`.
    dd: Vec<T>,
    dtc: Vec<T>,
    /// A step's per-row scratch `[batch, u]` (masked states with recurrent dropout).
    srow: Vec<T>,
    /// This block's kernel, recurrent-kernel and bias gradients.
    gk: Vec<T>,
    gu: Vec<T>,
    gb: Vec<T>,
}

impl<T: Scalar> Builtin<T> for spec::LSTM {
    type Layer = LSTM<T>;
    fn into_layer(self) -> LSTM<T> {
        LSTM { f: Frame::new(self.rnn, 4), cfg: self, blocks: Vec::new() }
    }
}

impl<T: Scalar> LSTM<T> {
    /// `units` with Keras's defaults (tanh, sigmoid gates, unit forget bias, last output).
    pub fn new(units: usize) -> Self {
        spec::LSTM { rnn: spec::Recurrent::new(units), unit_forget_bias: true }.into_layer()
    }
    recurrent_builders!(rnn);

    /// Rows of block `j` of a batch.
    fn block_range(j: usize, batch: usize) -> Range<usize> {
        j * BLOCK_ROWS..((j + 1) * BLOCK_ROWS).min(batch)
    }

    /// Draws this pass's dropout masks, sizes the blocks and gives each its rows of the
    /// step mask and of the dropout masks. Returns the number of blocks.
    fn prepare(&mut self, batch: usize, training: bool) -> kiln_tape::Result<usize> {
        self.f.draw_masks(batch, training)?;
        let nb = batch.div_ceil(BLOCK_ROWS);
        while self.blocks.len() < nb {
            self.blocks.push(LstmCore {
                f: Frame::new(self.f.cfg, 4),
                c: Vec::new(),
                tc: Vec::new(),
                dc: Vec::new(),
                dd: Vec::new(),
                dtc: Vec::new(),
                srow: Vec::new(),
                gk: Vec::new(),
                gu: Vec::new(),
                gb: Vec::new(),
            });
        }
        let top = &self.f;
        let (d, g) = (top.dims, top.groups());
        for (j, blk) in self.blocks[..nb].iter_mut().enumerate() {
            let r = Self::block_range(j, batch);
            let bf = &mut blk.f;
            bf.dims = Dims { batch: r.len(), ..d };
            (bf.act, bf.gate, bf.cfg) = (top.act, top.gate, top.cfg);
            bf.use_mask = top.use_mask;
            if top.use_mask {
                bf.mask.clear();
                bf.mask.extend_from_slice(&top.mask[r.start * d.steps..r.end * d.steps]);
            }
            let (dr, td) = (&mut bf.drop, &top.drop);
            (dr.on_x, dr.on_h) = (td.on_x, td.on_h);
            // Each group's rows of the whole batch's masks.
            for (on, src, dst, width) in
                [(td.on_x, &td.mx, &mut dr.mx, d.features), (td.on_h, &td.mh, &mut dr.mh, d.units)]
            {
                if on {
                    dst.clear();
                    for k in 0..g {
                        let at = |i: usize| (k * batch + i) * width;
                        dst.extend_from_slice(&src[at(r.start)..at(r.end)]);
                    }
                }
            }
        }
        Ok(nb)
    }

    fn run(
        &mut self,
        p: &Params<'_, T>,
        x: &[T],
        batch: usize,
        y: &mut [T],
        training: bool,
    ) -> kiln_tape::Result<()> {
        let nb = self.prepare(batch, training)?;
        // One packed U for every block.
        self.f.pack_recurrent(p.param("recurrent_kernel"))?;
        let d = self.f.dims;
        let per_in = d.steps * d.features;
        let per_out = if self.f.cfg.return_sequences { d.steps * d.units } else { d.units };
        let err = Mutex::new(None);
        let pu = &self.f.pu;
        for_blocks(&mut self.blocks[..nb], y, BLOCK_ROWS * per_out, &|j, blk, yb| {
            let r = Self::block_range(j, batch);
            keep_err(&err, blk.run(p, &x[r.start * per_in..r.end * per_in], r.len(), yb, pu));
        });
        err.into_inner().ok().flatten().map_or(Ok(()), Err)
    }
}

impl<T: Scalar> LstmCore<T> {
    /// The forward pass of this block's `batch` rows `x` (sample-major) into `y`.
    fn run(
        &mut self,
        p: &Params<'_, T>,
        x: &[T],
        batch: usize,
        y: &mut [T],
        pu: &PackedB<T>,
    ) -> kiln_tape::Result<()> {
        self.f.begin(p, x, batch)?;
        let d = self.f.dims;
        let (b, u, w) = (batch, d.units, d.width());
        grow(&mut self.c, (d.steps + 1) * b * u);
        grow(&mut self.tc, d.steps * b * u);
        grow(&mut self.srow, b * u);
        self.c[..b * u].fill(T::zero());
        let (uk, bias) = (p.param("recurrent_kernel"), p.try_param("bias"));
        let f = &mut self.f;
        // Every step's x·W becomes that step's activations in place: the recurrent
        // GEMM accumulates into it, then the bias and the gates.
        std::mem::swap(&mut f.xw, &mut f.a);
        let min = f.min_rows_pass();
        let step = LstmStep {
            d,
            act: f.act,
            gate: f.gate,
            uk,
            bias,
            pu,
            mh: f.drop.on_h.then_some(&f.drop.mh[..]),
            mask: f.use_mask.then_some(&f.mask[..]),
            backwards: f.cfg.go_backwards,
        };
        let err = Mutex::new(None);
        let keep_z = step.keeps_z();
        let bufs = [
            steps(&mut f.z, b, w),
            steps(&mut f.a, b, w),
            steps(&mut self.c, b, u),
            steps(&mut self.tc, b, u),
            steps(&mut f.h, b, u),
            steps(&mut self.srow, b, u),
        ];
        // Each part runs every step for its own samples: no synchronization per step.
        split_batch(b, min, bufs, &|r, [mut z, mut a, mut c, mut tc, mut h, mut sc]| {
            for s in 0..d.steps {
                let (cp, cn) = c.pair(s, s + 1);
                let (hp, hn) = h.pair(s, s + 1);
                let rows = LstmRows {
                    z: keep_z.then(|| z.at(s)),
                    a: a.at(s),
                    cp,
                    cn,
                    tc: tc.at(s),
                    hp,
                    hn,
                    scratch: sc.at(0),
                };
                if let Err(e) = step.forward(s, r.clone(), rows) {
                    keep_err(&err, Err(e));
                    return;
                }
            }
        });
        if let Some(e) = err.into_inner().ok().flatten() {
            return Err(e);
        }
        self.f.output(y);
        Ok(())
    }
}

impl<T: Scalar> LstmCore<T> {
    /// The backward pass of this block's rows: `dy` its output gradient; the weight
    /// gradients land in `gk`, `gu`, `gb`, the input gradient in `dx`.
    fn backward(
        &mut self,
        p: &Params<'_, T>,
        dy: &[T],
        dx: Option<&mut [T]>,
        put: &PackedB<T>,
    ) -> kiln_tape::Result<()> {
        let uk = p.param("recurrent_kernel");
        self.f.begin_backward();
        let d = self.f.dims;
        let (b, u, w) = (d.batch, d.units, d.width());
        for v in [&mut self.dc, &mut self.dtc, &mut self.srow] {
            grow(v, b * u);
        }
        grow(&mut self.dd, b * w);
        self.dc[..b * u].fill(T::zero());
        let f = &mut self.f;
        let min = f.min_rows_pass();
        let sg =
            StateGrad { d, groups: f.groups(), uk, put, mh: f.drop.on_h.then_some(&f.drop.mh[..]) };
        let step = LstmBack {
            d,
            act: f.act,
            gate: f.gate,
            sg,
            mask: f.use_mask.then_some(&f.mask[..]),
            backwards: f.cfg.go_backwards,
            sequences: f.cfg.return_sequences,
            dy,
            // Without kept pre-activations the derivatives read only `a`.
            z: if from_output(f.act) && from_output(f.gate) { &f.a } else { &f.z },
            a: &f.a,
            c: &self.c,
            tc: &self.tc,
        };
        let err = Mutex::new(None);
        let bufs = [
            steps(&mut f.dz, b, w),
            steps(&mut self.dd, b, w),
            steps(&mut self.dtc, b, u),
            steps(&mut f.dh, b, u),
            steps(&mut self.dc, b, u),
            steps(&mut f.dh_keep, b, u),
            steps(&mut self.srow, b, u),
        ];
        // Each part runs every step for its own samples, last step first.
        split_batch(b, min, bufs, &|r,
                                    [
            mut dz,
            mut dd,
            mut dtc,
            mut dh,
            mut dc,
            mut keep,
            mut sc,
        ]| {
            for s in (0..d.steps).rev() {
                let rows =
                    [dz.at(s), dd.at(0), dtc.at(0), dh.at(0), dc.at(0), keep.at(0), sc.at(0)];
                if let Err(e) = step.rows(s, r.clone(), rows) {
                    keep_err(&err, Err(e));
                    return;
                }
            }
        });
        if let Some(e) = err.into_inner().ok().flatten() {
            return Err(e);
        }
        let n = d.steps * b;
        if p.try_param("bias").is_some() {
            grow(&mut self.gb, w);
            column_sums(&self.f.dz[..n * w], w, &mut self.gb[..w]);
        }
        grow(&mut self.gk, d.features * w);
        grow(&mut self.gu, u * w);
        let (gk, gu) = (&mut self.gk[..d.features * w], &mut self.gu[..u * w]);
        // LSTM's recurrent product takes the same pre-activation gradient as the input's.
        self.f.finish(p, None, gk, gu, dx)
    }
}

/// An LSTM forward pass over some rows of the batch: what its parts share.
#[derive(Clone, Copy)]
struct LstmStep<'a, T> {
    d: Dims,
    act: A,
    gate: A,
    uk: &'a [T],
    bias: Option<&'a [T]>,
    pu: &'a PackedB<T>,
    /// State masks `[4, batch, units]` when states are dropped this pass.
    mh: Option<&'a [T]>,
    /// The incoming step mask `[batch, steps]`, when any.
    mask: Option<&'a [T]>,
    backwards: bool,
}

/// A part's rows of one step's buffers: pre-activations (kept only when a derivative
/// needs them) and activations `[rows, 4u]`, cell states before and after, `tanh(c)`,
/// states before and after `[rows, u]`, and scratch `[rows, u]`.
struct LstmRows<'r, T> {
    z: Option<&'r mut [T]>,
    a: &'r mut [T],
    cp: &'r [T],
    cn: &'r mut [T],
    tc: &'r mut [T],
    hp: &'r [T],
    hn: &'r mut [T],
    scratch: &'r mut [T],
}

/// The `g`-th block of `u` values of `v`.
fn block<T>(v: &[T], u: usize, g: usize) -> &[T] {
    &v[g * u..(g + 1) * u]
}

/// Whether `a`'s derivative follows from its output alone (no pre-activation needed).
fn from_output(a: A) -> bool {
    matches!(a, A::Sigmoid | A::Tanh | A::Linear)
}

impl<T: Scalar> LstmStep<'_, T> {
    /// Whether the backward pass needs the gates' pre-activations.
    fn keeps_z(&self) -> bool {
        !(from_output(self.act) && from_output(self.gate))
    }

    /// Rows `r` of the step: the recurrent product, `z = (x·W + h·U) + b`, the gates,
    /// `c = f ⊙ c + i ⊙ g` and `h = o ⊙ tanh(c)`; masked samples keep their states.
    fn forward(&self, s: usize, r: Range<usize>, rows: LstmRows<'_, T>) -> kiln_tape::Result<()> {
        let LstmRows { z, a, cp, cn, tc, hp, hn, scratch } = rows;
        let (b, u, w, n) = (self.d.batch, self.d.units, self.d.width(), r.len());
        // a holds x·W; += h·U by the GEMM itself (beta = 1: the same single rounding
        // of the sum as adding the two products), then += b.
        if s == 0 {
            // The first step reads h_0 = 0: no product to add.
        } else if let Some(mh) = self.mh {
            for g in 0..4 {
                let m = &mh[(g * b + r.start) * u..(g * b + r.end) * u];
                mask_rows(hp, m, n, u, &mut scratch[..n * u]);
                gemm_strided(
                    n,
                    u,
                    u,
                    T::one(),
                    Strided::new(&scratch[..n * u], u),
                    Strided::new(&self.uk[g * u..], w),
                    T::one(),
                    &mut a[g * u..n * w],
                    w,
                )?;
            }
        } else {
            gemm_packed(n, T::one(), Strided::new(hp, u), self.pu, T::one(), a, w)?;
        }
        if let Some(bv) = self.bias {
            for ar in a.chunks_exact_mut(w) {
                ar.iter_mut().zip(&bv[..w]).for_each(|(v, &bb)| *v += bb);
            }
        }
        // The pre-activations are kept only when a derivative needs them.
        if let Some(z) = z {
            z.copy_from_slice(a);
        }
        // i, f (one block) and o through the gate activation, c's candidate through act.
        for ar in a.chunks_exact_mut(w) {
            let (ifg, rest) = ar.split_at_mut(2 * u);
            let (g, o) = rest.split_at_mut(u);
            self.gate.forward_inplace(ifg);
            self.act.forward_inplace(g);
            self.gate.forward_inplace(o);
        }
        lstm_cell_rows(n, u, a, cp, cn, tc);
        self.act.forward_inplace(&mut tc[..n * u]);
        lstm_state_rows(n, u, a, tc, hn);
        if let Some(m) = self.mask {
            for k in 0..n {
                if masked_at(m, true, self.backwards, self.d.steps, s, r.start + k) {
                    // Skipped: the states carry over (tc keeps this step's own value).
                    hn[k * u..(k + 1) * u].copy_from_slice(&hp[k * u..(k + 1) * u]);
                    cn[k * u..(k + 1) * u].copy_from_slice(&cp[k * u..(k + 1) * u]);
                }
            }
        }
        Ok(())
    }
}

/// An LSTM backward pass over some rows of the batch: what its parts share.
#[derive(Clone, Copy)]
struct LstmBack<'a, T> {
    d: Dims,
    act: A,
    gate: A,
    sg: StateGrad<'a, T>,
    mask: Option<&'a [T]>,
    backwards: bool,
    sequences: bool,
    /// The layer's output gradient, sample-major.
    dy: &'a [T],
    /// Every step's pre-activations and activations, cell states and `tanh(c)`,
    /// step-major, whole batch.
    z: &'a [T],
    a: &'a [T],
    c: &'a [T],
    tc: &'a [T],
}

impl<T: Scalar> LstmBack<'_, T> {
    /// Rows `r` of step `s`: the output's gradient into `dh`, the gates'
    /// pre-activation gradients `dz`, the cell gradient carried to the previous step
    /// and `dh ← dz·Uᵀ`; masked samples pass both gradients through unchanged. `rows`
    /// holds the part's rows of `dz` (this step), the gate derivatives, `tanh'(c)`,
    /// `dh`, `dc`, the kept `dh` of masked samples and scratch.
    fn rows(&self, s: usize, r: Range<usize>, rows: [&mut [T]; 7]) -> kiln_tape::Result<()> {
        let [dz, dd, dtc, dh, dc, keep, scratch] = rows;
        let d = self.d;
        let (u, w, b) = (d.units, d.width(), d.batch);
        let masked = |bi: usize| {
            self.mask.is_some_and(|m| masked_at(m, true, self.backwards, d.steps, s, bi))
        };
        for (k, bi) in r.clone().enumerate() {
            let dhr = &mut dh[k * u..(k + 1) * u];
            let g = if self.sequences {
                Some(&self.dy[(bi * d.steps + s) * u..(bi * d.steps + s + 1) * u])
            } else {
                (s + 1 == d.steps).then(|| &self.dy[bi * u..(bi + 1) * u])
            };
            if let Some(g) = g {
                dhr.iter_mut().zip(g).for_each(|(h, &v)| *h += v);
            }
            if masked(bi) {
                keep[k * u..(k + 1) * u].copy_from_slice(dhr);
            }
        }
        let rw = (s * b + r.start) * w..(s * b + r.end) * w;
        let (zs, a) = (&self.z[rw.clone()], &self.a[rw]);
        let ru = |t: usize| (t * b + r.start) * u..(t * b + r.end) * u;
        let (cs, tcs) = (&self.c[ru(s + 1)], &self.tc[ru(s)]);
        let cprev = &self.c[ru(s)];
        if self.gate == A::Sigmoid && self.act == A::Tanh && self.mask.is_none() {
            // Keras's default cell: every derivative from the outputs, in one pass
            // compiled for the CPU's widest vectors.
            lstm_grad_rows(r.len(), u, a, cprev, tcs, dh, dc, dz);
            // The first step read h_0 = 0, a constant: no gradient goes further.
            return if s == 0 { Ok(()) } else { self.sg.rows(r, dz, dh, scratch) };
        }
        // Every gate's derivative for the rows, then plain arithmetic per unit.
        for ((ddr, zr), ar) in dd.chunks_exact_mut(w).zip(zs.chunks_exact(w)).zip(a.chunks_exact(w))
        {
            derivatives(self.gate, &zr[..2 * u], &ar[..2 * u], &mut ddr[..2 * u]);
            derivatives(self.act, &zr[2 * u..3 * u], &ar[2 * u..3 * u], &mut ddr[2 * u..3 * u]);
            derivatives(self.gate, &zr[3 * u..], &ar[3 * u..], &mut ddr[3 * u..]);
        }
        derivatives(self.act, cs, tcs, dtc);
        for (k, bi) in r.clone().enumerate() {
            let dzr = &mut dz[k * w..(k + 1) * w];
            if masked(bi) {
                // Skipped by the forward pass: no gradient enters this step, and the
                // cell gradient passes unchanged.
                dzr.fill(T::zero());
                continue;
            }
            let (ar, ddr) = (&a[k * w..(k + 1) * w], &dd[k * w..(k + 1) * w]);
            let (i, fg, g, o) =
                (block(ar, u, 0), block(ar, u, 1), block(ar, u, 2), block(ar, u, 3));
            let (di, df, dg, dout) =
                (block(ddr, u, 0), block(ddr, u, 1), block(ddr, u, 2), block(ddr, u, 3));
            let (cpr, tcr, dtcr) = (block(cprev, u, k), block(tcs, u, k), block(dtc, u, k));
            let dhr = block(dh, u, k);
            let dcr = &mut dc[k * u..(k + 1) * u];
            let (dzi, rest) = dzr.split_at_mut(u);
            let (dzf, rest) = rest.split_at_mut(u);
            let (dzg, dzo) = rest.split_at_mut(u);
            let (dzg, dzo) = (&mut dzg[..u], &mut dzo[..u]);
            // Every slice is exactly u long: the loop runs without bounds checks.
            for j in 0..u {
                let dct = dcr[j] + dhr[j] * o[j] * dtcr[j];
                dzi[j] = dct * g[j] * di[j];
                dzf[j] = dct * cpr[j] * df[j];
                dzg[j] = dct * i[j] * dg[j];
                dzo[j] = dhr[j] * tcr[j] * dout[j];
                dcr[j] = dct * fg[j];
            }
        }
        // dh_{s} = dz_s · Uᵀ (the state read by step s); masked samples keep theirs.
        self.sg.rows(r.clone(), dz, dh, scratch)?;
        for (k, bi) in r.enumerate() {
            if masked(bi) {
                dh[k * u..(k + 1) * u].copy_from_slice(&keep[k * u..(k + 1) * u]);
            }
        }
        Ok(())
    }
}

impl<T: Scalar> Layer<T> for LSTM<T> {
    fn class_name(&self) -> &'static str {
        spec::LSTM::CLASS
    }
    fn base_name(&self) -> &'static str {
        spec::LSTM::BASE_NAME
    }
    fn build(&mut self, input: &[usize]) -> Result<Vec<usize>, String> {
        self.f.configure(self.cfg.rnn);
        self.blocks.clear();
        self.f.build(spec::LSTM::CLASS, input)
    }
    fn param_specs(&self) -> Vec<ParamSpec> {
        let init = if self.cfg.unit_forget_bias {
            Initializer::UnitForgetBias
        } else {
            self.cfg.rnn.bias_initializer
        };
        self.f.param_specs(init, 1)
    }
    cell_passes!();
    fn backward(&mut self, bw: Backward<'_, T>) -> kiln_tape::Result<()> {
        let Backward { params: p, dy, mut grads, dx, batch, .. } = bw;
        let nb = batch.div_ceil(BLOCK_ROWS);
        let d = self.f.dims;
        let per_out = if self.f.cfg.return_sequences { d.steps * d.units } else { d.units };
        let per_in = d.steps * d.features;
        let want_dx = dx.is_some();
        let mut none: [T; 0] = [];
        let (dxs, chunk) = match dx {
            Some(dx) => (dx, BLOCK_ROWS * per_in),
            None => (&mut none[..], 0),
        };
        let err = Mutex::new(None);
        // One packed Uᵀ for every block.
        self.f.pack_transposed(p.param("recurrent_kernel"))?;
        let (p, put) = (&p, &self.f.put);
        for_blocks(&mut self.blocks[..nb], dxs, chunk, &|j, blk, dxb| {
            let r = Self::block_range(j, batch);
            let dyb = &dy[r.start * per_out..r.end * per_out];
            keep_err(&err, blk.backward(p, dyb, want_dx.then_some(dxb), put));
        });
        if let Some(e) = err.into_inner().ok().flatten() {
            return Err(e);
        }
        // The blocks' weight gradients, summed in block order.
        let blocks = &self.blocks[..nb];
        let sum = |out: &mut [T], part: fn(&LstmCore<T>) -> &[T]| {
            out.copy_from_slice(&part(&blocks[0])[..out.len()]);
            for blk in &blocks[1..] {
                out.iter_mut().zip(part(blk)).for_each(|(o, &v)| *o += v);
            }
        };
        if let Some(db) = grads.try_param_mut("bias") {
            sum(db, |b| &b.gb);
        }
        let [dk, du] = grads.params_mut(["kernel", "recurrent_kernel"]);
        sum(dk, |b| &b.gk);
        sum(du, |b| &b.gu);
        Ok(())
    }
    fn describe(&self) -> String {
        let c = &self.cfg.rnn;
        format!(
            "units={}, return_sequences={}, go_backwards={}",
            c.units, c.return_sequences, c.go_backwards
        )
    }
}

/// Keras `GRU`: `reset_after` (Keras 3's default) applies the reset gate to the
/// recurrent product `r ⊙ (h·U_h + b_rh)` with a `[2, 3u]` bias (input row, recurrent
/// row); otherwise `(r ⊙ h)·U_h` with a `[3u]` bias.
///
/// ```
/// use kiln::prelude::*;
/// model! { struct Net: [6, 2] => [GRU(4, return_sequences = true)] }
/// let y = Net::new(Seed(1)).predict(&Inputs::<S2<6, 2>>::from_vec(vec![0.5; 12])?)?;
/// assert_eq!(y.sample_shape(), &[6, 4]); // one output per step
/// # Ok::<(), kiln::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct GRU<T = f32> {
    cfg: spec::GRU,
    f: Frame<T>,
    /// The recurrent-side pre-activation gradients `[steps·batch, 3u]`.
    drec: Vec<T>,
    /// Per step: `h·U_h + b_rh` (reset_after) or `r ⊙ h` (reset before), `[steps·batch, u]`.
    rh: Vec<T>,
    /// reset before: `U_h` as its own `[u, u]` matrix, the h-block gradients.
    uh: Vec<T>,
    dgh: Vec<T>,
    drh: Vec<T>,
    duh: Vec<T>,
}

impl<T: Scalar> Builtin<T> for spec::GRU {
    type Layer = GRU<T>;
    fn into_layer(self) -> GRU<T> {
        GRU {
            f: Frame::new(self.rnn, 3),
            cfg: self,
            drec: Vec::new(),
            rh: Vec::new(),
            uh: Vec::new(),
            dgh: Vec::new(),
            drh: Vec::new(),
            duh: Vec::new(),
        }
    }
}

impl<T: Scalar> GRU<T> {
    /// `units` with Keras's defaults (tanh, sigmoid gates, reset after, last output).
    pub fn new(units: usize) -> Self {
        spec::GRU { rnn: spec::Recurrent::new(units), reset_after: true }.into_layer()
    }
    recurrent_builders!(rnn);
    /// Apply the reset gate after (Keras 3's default) or before the recurrent product.
    pub fn reset_after(mut self, on: bool) -> Self {
        self.cfg.reset_after = on;
        self
    }

    fn run(
        &mut self,
        p: &Params<'_, T>,
        x: &[T],
        batch: usize,
        y: &mut [T],
        training: bool,
    ) -> kiln_tape::Result<()> {
        self.f.draw_masks(batch, training)?;
        self.f.begin(p, x, batch)?;
        self.f.pack_recurrent(p.param("recurrent_kernel"))?;
        let d = self.f.dims;
        let (b, u, w) = (batch, d.units, d.width());
        grow(&mut self.rh, d.steps * b * u);
        let uk = p.param("recurrent_kernel");
        let bias = p.try_param("bias");
        let after = self.cfg.reset_after;
        // Input and recurrent biases (reset after: the two rows of [2, 3u]).
        let (bx, br) = match (bias, after) {
            (Some(v), true) => (Some(&v[..w]), Some(&v[w..2 * w])),
            (Some(v), false) => (Some(&v[..w]), None),
            (None, _) => (None, None),
        };
        if !after {
            grow(&mut self.uh, u * u);
            for (r, row) in uk.chunks_exact(w).enumerate() {
                self.uh[r * u..(r + 1) * u].copy_from_slice(&row[2 * u..]);
            }
            grow(&mut self.drh, b * u);
        }
        let (act, gate) = (self.f.act, self.f.gate);
        for s in 0..d.steps {
            self.f.recurrent(uk, s)?;
            let f = &mut self.f;
            for bi in 0..b {
                let r = s * b + bi;
                let (zr, ar) = (&mut f.z[r * w..(r + 1) * w], &mut f.a[r * w..(r + 1) * w]);
                let (xw, hu) = (&f.xw[r * w..(r + 1) * w], &f.tmp[bi * w..(bi + 1) * w]);
                let rhr = &mut self.rh[r * u..(r + 1) * u];
                let hp = &f.h[(s * b + bi) * u..(s * b + bi + 1) * u];
                // reset before, recurrent dropout: the h gate's own state mask.
                let mh2 = state_mask(&f.drop, d, 2, bi);
                for k in 0..2 * u {
                    let xv = bx.map_or(xw[k], |v| xw[k] + v[k]);
                    let rv = br.map_or(hu[k], |v| hu[k] + v[k]);
                    zr[k] = xv + rv;
                }
                ar[..2 * u].copy_from_slice(&zr[..2 * u]);
                gate.forward_inplace(&mut ar[..2 * u]);
                for j in 0..u {
                    let k = 2 * u + j;
                    if after {
                        rhr[j] = br.map_or(hu[k], |v| hu[k] + v[k]);
                    } else {
                        rhr[j] = ar[u + j] * hp[j] * mh2.map_or(T::one(), |m| m[j]);
                    }
                }
            }
            if !after {
                // The reset state's product (r ⊙ h)·U_h for the whole batch.
                let rs = &self.rh[s * b * u..(s + 1) * b * u];
                gemm(
                    b,
                    u,
                    u,
                    T::one(),
                    rs,
                    Trans::No,
                    &self.uh[..u * u],
                    Trans::No,
                    T::zero(),
                    &mut self.drh[..b * u],
                )?;
            }
            let f = &mut self.f;
            for bi in 0..b {
                let r = s * b + bi;
                let (zr, ar) = (&mut f.z[r * w..(r + 1) * w], &mut f.a[r * w..(r + 1) * w]);
                let xw = &f.xw[r * w..(r + 1) * w];
                let rhr = &self.rh[r * u..(r + 1) * u];
                let (hp, hn) = f.h.split_at_mut((s + 1) * b * u);
                let hp = &hp[(s * b + bi) * u..(s * b + bi + 1) * u];
                let hn = &mut hn[bi * u..(bi + 1) * u];
                for j in 0..u {
                    let k = 2 * u + j;
                    let xv = bx.map_or(xw[k], |v| xw[k] + v[k]);
                    zr[k] = if after { xv + ar[u + j] * rhr[j] } else { xv + self.drh[bi * u + j] };
                }
                ar[2 * u..].copy_from_slice(&zr[2 * u..]);
                act.forward_inplace(&mut ar[2 * u..]);
                for j in 0..u {
                    let z = ar[j];
                    hn[j] = z * hp[j] + (T::one() - z) * ar[2 * u + j];
                }
            }
            self.f.carry_masked(s);
        }
        self.f.output(y);
        Ok(())
    }
}

impl<T: Scalar> Layer<T> for GRU<T> {
    fn class_name(&self) -> &'static str {
        spec::GRU::CLASS
    }
    fn base_name(&self) -> &'static str {
        spec::GRU::BASE_NAME
    }
    fn build(&mut self, input: &[usize]) -> Result<Vec<usize>, String> {
        self.f.configure(self.cfg.rnn);
        self.f.build(spec::GRU::CLASS, input)
    }
    fn param_specs(&self) -> Vec<ParamSpec> {
        self.f.param_specs(self.cfg.rnn.bias_initializer, if self.cfg.reset_after { 2 } else { 1 })
    }
    cell_passes!();
    fn backward(&mut self, bw: Backward<'_, T>) -> kiln_tape::Result<()> {
        let Backward { params: p, dy, mut grads, dx, .. } = bw;
        self.f.begin_backward();
        self.f.pack_transposed(p.param("recurrent_kernel"))?;
        let d = self.f.dims;
        let (b, u, w, n) = (d.batch, d.units, d.width(), d.steps * d.batch);
        grow(&mut self.drec, n * w);
        let after = self.cfg.reset_after;
        if !after {
            grow(&mut self.dgh, n * u);
        }
        let uk = p.param("recurrent_kernel");
        let (act, gate) = (self.f.act, self.f.gate);
        for s in (0..d.steps).rev() {
            self.f.add_output_grad(dy, s);
            self.f.save_masked_dh(s);
            let f = &mut self.f;
            for bi in 0..b {
                let r = s * b + bi;
                if masked_at(&f.mask, f.use_mask, f.cfg.go_backwards, d.steps, s, bi) {
                    // Skipped by the forward pass: no gradient enters this step.
                    if !after {
                        self.dgh[r * u..(r + 1) * u].fill(T::zero());
                    }
                    continue;
                }
                let (zr, ar) = (&f.z[r * w..(r + 1) * w], &f.a[r * w..(r + 1) * w]);
                let (dzr, dre) =
                    (&mut f.dz[r * w..(r + 1) * w], &mut self.drec[r * w..(r + 1) * w]);
                let hp = &f.h[(s * b + bi) * u..(s * b + bi + 1) * u];
                let rhr = &self.rh[r * u..(r + 1) * u];
                let dh = &f.dh[bi * u..(bi + 1) * u];
                for j in 0..u {
                    let (z, hh) = (ar[j], ar[2 * u + j]);
                    let dzg = dh[j] * (hp[j] - hh) * gate.derivative(zr[j], z);
                    let dgh = dh[j] * (T::one() - z) * act.derivative(zr[2 * u + j], hh);
                    dzr[j] = dzg;
                    dre[j] = dzg;
                    dzr[2 * u + j] = dgh;
                    if after {
                        let rg = ar[u + j];
                        let dzrg = dgh * rhr[j] * gate.derivative(zr[u + j], rg);
                        dzr[u + j] = dzrg;
                        dre[u + j] = dzrg;
                        dre[2 * u + j] = dgh * rg;
                    } else {
                        self.dgh[r * u + j] = dgh;
                        dre[2 * u + j] = T::zero();
                    }
                }
            }
            if !after {
                // d(r ⊙ h) = dgh · U_hᵀ; then the reset gate's and the state's share.
                let dg = &self.dgh[s * b * u..(s + 1) * b * u];
                gemm(
                    b,
                    u,
                    u,
                    T::one(),
                    dg,
                    Trans::No,
                    &self.uh[..u * u],
                    Trans::Yes,
                    T::zero(),
                    &mut self.drh[..b * u],
                )?;
                for bi in 0..b {
                    let r = s * b + bi;
                    let hp = &f.h[(s * b + bi) * u..(s * b + bi + 1) * u];
                    let mh2 = state_mask(&f.drop, d, 2, bi);
                    for (j, &h) in hp.iter().enumerate() {
                        let h = h * mh2.map_or(T::one(), |m| m[j]);
                        let drh = self.drh[bi * u + j];
                        let (zr, rg) = (f.z[r * w + u + j], f.a[r * w + u + j]);
                        let dzrg = drh * h * gate.derivative(zr, rg);
                        f.dz[r * w + u + j] = dzrg;
                        self.drec[r * w + u + j] = dzrg;
                    }
                }
            }
            self.f.finish_masked_step(s, Some(&mut self.drec));
            let f = &mut self.f;
            // The state read by step s: dh·z, plus the recurrent products' share.
            let mut out = std::mem::take(&mut f.tmp);
            let r = state_grad(f, uk, &self.drec[s * b * w..], &mut out);
            f.tmp = out;
            r?;
            for bi in 0..b {
                let r = s * b + bi;
                for j in 0..u {
                    let mut v = f.dh[bi * u + j] * f.a[r * w + j] + f.tmp[bi * u + j];
                    if !after {
                        let m = state_mask(&f.drop, d, 2, bi).map_or(T::one(), |m| m[j]);
                        v += self.drh[bi * u + j] * f.a[r * w + u + j] * m;
                    }
                    f.dh[bi * u + j] = v;
                }
            }
            f.restore_masked_dh(s);
        }
        if let Some(db) = grads.try_param_mut("bias") {
            column_sums(&self.f.dz[..n * w], w, &mut db[..w]);
            if after {
                column_sums(&self.drec[..n * w], w, &mut db[w..2 * w]);
            }
        }
        let [dk, du] = grads.params_mut(["kernel", "recurrent_kernel"]);
        self.f.finish(&p, Some(&self.drec), dk, du, dx)?;
        if !after {
            // dU_h = Σ (r ⊙ h)ᵀ · dgh, into the h block of the recurrent kernel's gradient.
            grow(&mut self.duh, u * u);
            gemm(
                u,
                u,
                n,
                T::one(),
                &self.rh[..n * u],
                Trans::Yes,
                &self.dgh[..n * u],
                Trans::No,
                T::zero(),
                &mut self.duh[..u * u],
            )?;
            let du = grads.param_mut("recurrent_kernel");
            for (row, src) in du.chunks_exact_mut(w).zip(self.duh.chunks_exact(u)) {
                for (d, &v) in row[2 * u..].iter_mut().zip(src) {
                    *d += v;
                }
            }
        }
        Ok(())
    }
    fn describe(&self) -> String {
        let c = &self.cfg.rnn;
        format!(
            "units={}, reset_after={}, return_sequences={}, go_backwards={}",
            c.units, self.cfg.reset_after, c.return_sequences, c.go_backwards
        )
    }
}

/// Keras `SimpleRNN`: `h = act(x·W + b + h·U)`.
///
/// ```
/// use kiln::prelude::*;
/// model! { struct Net: [6, 2] => [SimpleRNN(3)] }
/// let y = Net::new(Seed(1)).predict(&Inputs::<S2<6, 2>>::from_vec(vec![0.5; 12])?)?;
/// assert_eq!(y.sample_shape(), &[3]);
/// assert!(y.data().iter().all(|v| v.abs() < 1.0)); // tanh
/// # Ok::<(), kiln::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct SimpleRNN<T = f32> {
    cfg: spec::SimpleRNN,
    f: Frame<T>,
}

impl<T: Scalar> Builtin<T> for spec::SimpleRNN {
    type Layer = SimpleRNN<T>;
    fn into_layer(self) -> SimpleRNN<T> {
        SimpleRNN { f: Frame::new(self.0, 1), cfg: self }
    }
}

impl<T: Scalar> SimpleRNN<T> {
    /// `units` with Keras's defaults (tanh, last output).
    pub fn new(units: usize) -> Self {
        spec::SimpleRNN(spec::Recurrent::new(units)).into_layer()
    }
    recurrent_builders!(0);

    fn run(
        &mut self,
        p: &Params<'_, T>,
        x: &[T],
        batch: usize,
        y: &mut [T],
        training: bool,
    ) -> kiln_tape::Result<()> {
        self.f.draw_masks(batch, training)?;
        self.f.begin(p, x, batch)?;
        self.f.pack_recurrent(p.param("recurrent_kernel"))?;
        let d = self.f.dims;
        let (b, u) = (batch, d.units);
        let (uk, bias) = (p.param("recurrent_kernel"), p.try_param("bias"));
        let act = self.f.act;
        for s in 0..d.steps {
            self.f.recurrent(uk, s)?;
            let f = &mut self.f;
            for bi in 0..b {
                let r = s * b + bi;
                for j in 0..u {
                    let xv = bias.map_or(f.xw[r * u + j], |v| f.xw[r * u + j] + v[j]);
                    f.z[r * u + j] = xv + f.tmp[bi * u + j];
                }
            }
            let hn = &mut f.h[(s + 1) * b * u..(s + 2) * b * u];
            hn.copy_from_slice(&f.z[s * b * u..(s + 1) * b * u]);
            act.forward_inplace(hn);
            f.carry_masked(s);
        }
        self.f.output(y);
        Ok(())
    }
}

impl<T: Scalar> Layer<T> for SimpleRNN<T> {
    fn class_name(&self) -> &'static str {
        spec::SimpleRNN::CLASS
    }
    fn base_name(&self) -> &'static str {
        spec::SimpleRNN::BASE_NAME
    }
    fn build(&mut self, input: &[usize]) -> Result<Vec<usize>, String> {
        self.f.configure(self.cfg.0);
        self.f.build(spec::SimpleRNN::CLASS, input)
    }
    fn param_specs(&self) -> Vec<ParamSpec> {
        self.f.param_specs(self.cfg.0.bias_initializer, 1)
    }
    cell_passes!();
    fn backward(&mut self, bw: Backward<'_, T>) -> kiln_tape::Result<()> {
        let Backward { params: p, dy, mut grads, dx, .. } = bw;
        self.f.begin_backward();
        self.f.pack_transposed(p.param("recurrent_kernel"))?;
        let d = self.f.dims;
        let (b, u, n) = (d.batch, d.units, d.steps * d.batch);
        let uk = p.param("recurrent_kernel");
        let act = self.f.act;
        for s in (0..d.steps).rev() {
            self.f.add_output_grad(dy, s);
            self.f.save_masked_dh(s);
            let f = &mut self.f;
            for bi in 0..b {
                let r = s * b + bi;
                for j in 0..u {
                    let h = f.h[((s + 1) * b + bi) * u + j];
                    f.dz[r * u + j] = f.dh[bi * u + j] * act.derivative(f.z[r * u + j], h);
                }
            }
            f.finish_masked_step(s, None);
            let (dz, mut dh) = (std::mem::take(&mut f.dz), std::mem::take(&mut f.dh));
            let r = state_grad(f, uk, &dz[s * b * u..], &mut dh);
            (f.dz, f.dh) = (dz, dh);
            r?;
            f.restore_masked_dh(s);
        }
        if let Some(db) = grads.try_param_mut("bias") {
            column_sums(&self.f.dz[..n * u], u, db);
        }
        let [dk, du] = grads.params_mut(["kernel", "recurrent_kernel"]);
        self.f.finish(&p, None, dk, du, dx)
    }
    fn describe(&self) -> String {
        let c = &self.cfg.0;
        format!(
            "units={}, return_sequences={}, go_backwards={}",
            c.units, c.return_sequences, c.go_backwards
        )
    }
}

/// One direction of a [`Bidirectional`]: a recurrent layer of either kind.
#[derive(Clone, Debug)]
enum Rnn<T> {
    Lstm(LSTM<T>),
    Gru(GRU<T>),
    Simple(SimpleRNN<T>),
}

impl<T: Scalar> Rnn<T> {
    fn new(w: spec::Wrapped, backwards: bool) -> Self {
        let flip = |mut r: spec::Recurrent| {
            r.go_backwards ^= backwards;
            r
        };
        match w {
            spec::Wrapped::LSTM(l) => Rnn::Lstm(spec::LSTM { rnn: flip(l.rnn), ..l }.into_layer()),
            spec::Wrapped::GRU(g) => Rnn::Gru(spec::GRU { rnn: flip(g.rnn), ..g }.into_layer()),
            spec::Wrapped::SimpleRNN(s) => Rnn::Simple(spec::SimpleRNN(flip(s.0)).into_layer()),
        }
    }
    fn layer(&mut self) -> &mut dyn Layer<T> {
        match self {
            Rnn::Lstm(l) => l,
            Rnn::Gru(g) => g,
            Rnn::Simple(s) => s,
        }
    }
    fn specs(&self) -> Vec<ParamSpec> {
        match self {
            Rnn::Lstm(l) => l.param_specs(),
            Rnn::Gru(g) => g.param_specs(),
            Rnn::Simple(s) => s.param_specs(),
        }
    }
}

/// Keras's weight names inside a Bidirectional (`forward_lstm/kernel`, ...), as
/// `'static` strings for [`ParamSpec::name`].
const DIRECTED_NAMES: &[&str] = &[
    "forward_lstm/kernel",
    "forward_lstm/recurrent_kernel",
    "forward_lstm/bias",
    "backward_lstm/kernel",
    "backward_lstm/recurrent_kernel",
    "backward_lstm/bias",
    "forward_gru/kernel",
    "forward_gru/recurrent_kernel",
    "forward_gru/bias",
    "backward_gru/kernel",
    "backward_gru/recurrent_kernel",
    "backward_gru/bias",
    "forward_simple_rnn/kernel",
    "forward_simple_rnn/recurrent_kernel",
    "forward_simple_rnn/bias",
    "backward_simple_rnn/kernel",
    "backward_simple_rnn/recurrent_kernel",
    "backward_simple_rnn/bias",
];

/// The inner layers' own names for their parameters, in declaration order.
const INNER_NAMES: &[&str] = &["kernel", "recurrent_kernel", "bias"];

/// Keras `Bidirectional`: the wrapped recurrent layer forwards, a copy with its own
/// weights backwards (its outputs put back in time order when returning sequences,
/// as Keras), merged by `concat`, `sum`, `mul` or `ave`.
///
/// ```
/// use kiln::prelude::*;
/// model! { struct Net: [6, 2] => [Bidirectional(LSTM(3))] }
/// let y = Net::new(Seed(1)).predict(&Inputs::<S2<6, 2>>::from_vec(vec![0.5; 12])?)?;
/// assert_eq!(y.sample_shape(), &[6]); // forward and backward outputs, concatenated
/// # Ok::<(), kiln::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Bidirectional<T = f32> {
    cfg: spec::Bidirectional,
    fwd: Rnn<T>,
    bwd: Rnn<T>,
    /// Parameters per direction (2, or 3 with biases).
    per_dir: usize,
    /// `[steps, units]` or `[units]` per direction.
    inner_out: Vec<usize>,
    yf: Vec<T>,
    yb: Vec<T>,
    dyf: Vec<T>,
    dyb: Vec<T>,
    dxb: Vec<T>,
}

impl<T: Scalar> Builtin<T> for spec::Bidirectional {
    type Layer = Bidirectional<T>;
    fn into_layer(self) -> Bidirectional<T> {
        Bidirectional {
            fwd: Rnn::new(self.layer, false),
            bwd: Rnn::new(self.layer, true),
            cfg: self,
            per_dir: 0,
            inner_out: Vec::new(),
            yf: Vec::new(),
            yb: Vec::new(),
            dyf: Vec::new(),
            dyb: Vec::new(),
            dxb: Vec::new(),
        }
    }
}

impl<T: Scalar> Bidirectional<T> {
    /// Views of the two directions' parameters under their inner names.
    fn halves<'a>(
        &self,
        values: &'a [T],
        ranges: &'a [std::ops::Range<usize>],
    ) -> [Params<'a, T>; 2] {
        let k = self.per_dir;
        [0, 1].map(|h| Params::new(values, &ranges[h * k..(h + 1) * k], &INNER_NAMES[..k]))
    }

    /// `(steps, units)` of one direction's output (steps 1 for a last-step output).
    fn out_dims(&self) -> (usize, usize) {
        match self.inner_out[..] {
            [s, u] => (s, u),
            [u] => (1, u),
            _ => (0, 0),
        }
    }

    /// Merges the directions' outputs (the backward one put back in time order).
    fn merge(&self, batch: usize, y: &mut [T]) {
        let (steps, u) = self.out_dims();
        let half = T::of(0.5);
        for b in 0..batch {
            for t in 0..steps {
                let tb = if steps > 1 { steps - 1 - t } else { t };
                let f = &self.yf[(b * steps + t) * u..(b * steps + t + 1) * u];
                let r = &self.yb[(b * steps + tb) * u..(b * steps + tb + 1) * u];
                match self.cfg.merge_mode {
                    "concat" => {
                        let o = &mut y[(b * steps + t) * 2 * u..(b * steps + t + 1) * 2 * u];
                        o[..u].copy_from_slice(f);
                        o[u..].copy_from_slice(r);
                    }
                    mode => {
                        let o = &mut y[(b * steps + t) * u..(b * steps + t + 1) * u];
                        for j in 0..u {
                            o[j] = match mode {
                                "sum" => f[j] + r[j],
                                "mul" => f[j] * r[j],
                                _ => (f[j] + r[j]) * half,
                            };
                        }
                    }
                }
            }
        }
    }

    fn grow_outputs(&mut self, batch: usize) {
        let (steps, u) = self.out_dims();
        grow(&mut self.yf, batch * steps * u);
        grow(&mut self.yb, batch * steps * u);
    }
}

impl<T: Scalar> Layer<T> for Bidirectional<T> {
    fn class_name(&self) -> &'static str {
        spec::Bidirectional::CLASS
    }
    fn base_name(&self) -> &'static str {
        spec::Bidirectional::BASE_NAME
    }
    fn build(&mut self, input: &[usize]) -> Result<Vec<usize>, String> {
        let out = self.cfg.output(input).map_err(|e| e.message)?;
        self.inner_out = self.fwd.layer().build(input)?;
        self.bwd.layer().build(input)?;
        self.per_dir = self.fwd.specs().len();
        Ok(out)
    }
    fn input_mask(&mut self, mask: Option<&[T]>) {
        self.fwd.layer().input_mask(mask);
        self.bwd.layer().input_mask(mask);
    }
    fn reseed(&mut self, seed: u64) {
        // Two directions, two dropout streams (Keras gives each copy its own seed).
        self.fwd.layer().reseed(seed);
        self.bwd.layer().reseed(seed ^ 0x9e37_79b9_7f4a_7c15);
    }
    fn param_specs(&self) -> Vec<ParamSpec> {
        let base = self.cfg.layer.base_name();
        let mut v = Vec::new();
        for (dir, layer) in [("forward", &self.fwd), ("backward", &self.bwd)] {
            for mut s in layer.specs() {
                let full = format!("{dir}_{base}/{}", s.name);
                s.name = DIRECTED_NAMES.iter().copied().find(|n| *n == full).unwrap_or(s.name);
                v.push(s);
            }
        }
        v
    }
    fn forward(
        &mut self,
        p: Params<'_, T>,
        x: &[T],
        batch: usize,
        y: &mut [T],
    ) -> kiln_tape::Result<()> {
        self.grow_outputs(batch);
        let [pf, pb] = self.halves(p.values, p.ranges);
        self.fwd.layer().forward(pf, x, batch, &mut self.yf)?;
        self.bwd.layer().forward(pb, x, batch, &mut self.yb)?;
        self.merge(batch, y);
        Ok(())
    }
    fn forward_train(
        &mut self,
        p: ParamsMut<'_, T>,
        x: &[T],
        batch: usize,
        y: &mut [T],
    ) -> kiln_tape::Result<()> {
        self.grow_outputs(batch);
        let k = self.per_dir;
        let ranges = p.ranges;
        let values = p.values;
        self.fwd.layer().forward_train(
            ParamsMut::new(values, &ranges[..k], &INNER_NAMES[..k]),
            x,
            batch,
            &mut self.yf,
        )?;
        self.bwd.layer().forward_train(
            ParamsMut::new(values, &ranges[k..2 * k], &INNER_NAMES[..k]),
            x,
            batch,
            &mut self.yb,
        )?;
        self.merge(batch, y);
        Ok(())
    }
    fn backward(&mut self, bw: Backward<'_, T>) -> kiln_tape::Result<()> {
        let Backward { params: p, x, dy, batch, grads, dx, .. } = bw;
        let (steps, u) = self.out_dims();
        let n = batch * steps * u;
        grow(&mut self.dyf, n);
        grow(&mut self.dyb, n);
        let half = T::of(0.5);
        // Each direction's output gradient (the backward one in its own step order).
        for b in 0..batch {
            for t in 0..steps {
                let tb = if steps > 1 { steps - 1 - t } else { t };
                let (fi, ri) = ((b * steps + t) * u, (b * steps + tb) * u);
                for j in 0..u {
                    let (df, db) = match self.cfg.merge_mode {
                        "concat" => {
                            let o = (b * steps + t) * 2 * u;
                            (dy[o + j], dy[o + u + j])
                        }
                        "sum" => (dy[fi + j], dy[fi + j]),
                        "mul" => (dy[fi + j] * self.yb[ri + j], dy[fi + j] * self.yf[fi + j]),
                        _ => (dy[fi + j] * half, dy[fi + j] * half),
                    };
                    self.dyf[fi + j] = df;
                    self.dyb[ri + j] = db;
                }
            }
        }
        let [pf, pb] = self.halves(p.values, p.ranges);
        let k = self.per_dir;
        let (values, ranges) = (grads.values, grads.ranges);
        let mut dx = dx.map(|d| &mut d[..x.len()]);
        if dx.is_some() {
            grow(&mut self.dxb, x.len());
        }
        self.fwd.layer().backward(Backward {
            params: pf,
            x,
            y: &self.yf,
            dy: &self.dyf[..n],
            batch,
            grads: ParamsMut::new(values, &ranges[..k], &INNER_NAMES[..k]),
            dx: dx.as_deref_mut(),
        })?;
        let want = dx.is_some();
        self.bwd.layer().backward(Backward {
            params: pb,
            x,
            y: &self.yb,
            dy: &self.dyb[..n],
            batch,
            grads: ParamsMut::new(values, &ranges[k..2 * k], &INNER_NAMES[..k]),
            dx: want.then(|| &mut self.dxb[..x.len()]),
        })?;
        // The input gradient is the two directions' sum.
        if let Some(dx) = dx {
            dx.iter_mut().zip(&self.dxb).for_each(|(d, &v)| *d += v);
        }
        Ok(())
    }
    fn describe(&self) -> String {
        format!("merge_mode={}", self.cfg.merge_mode)
    }
}
