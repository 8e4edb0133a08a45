//! kiln's single-precision GEMM: BLIS-style blocking with packed panels, an AVX-512
//! microkernel (8×32), an AVX2+FMA one (6×16) and a portable one (4×16), chosen once
//! by runtime CPU detection — so one binary runs everywhere and uses what the CPU has.
//!
//! Why not a library GEMM: matrixmultiply and gemm both allocate their packing buffers
//! on every call, which would make every training step allocate. Here the packing
//! buffer lives in a thread-local vector that grows to the largest problem once.
//!
//! Summation order is fixed (k ascending within each block, blocks in order), so the
//! same inputs give the same bits on the same machine.

use std::cell::RefCell;
use std::sync::OnceLock;

/// Rows of A per block (the packed A block stays in L2).
const MC: usize = 144;
/// Depth per block.
pub(crate) const KC: usize = 512;
/// Columns of B per block (the packed B block stays in L3).
const NC: usize = 3072;

/// The largest packing buffer any GEMM needs: an MC × KC block of A and an NC × KC
/// block of B (MC and NC are multiples of every microkernel's MR and NR).
const PACK_LEN: usize = (MC + NC) * KC;

thread_local! {
    static PACK: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Grows this thread's packing buffer to what an `m × k × n` GEMM with a strided B needs.
fn reserve_for(imp: Impl, m: usize, k: usize, n: usize) {
    let (a_len, b_len) = pack_lens(imp, m, k, n, true);
    let need = a_len + b_len;
    PACK.with(|buf| {
        let mut buf = buf.borrow_mut();
        if buf.len() < need {
            buf.resize(need, 0.0);
        }
    });
}

/// The packed A block and B block an `m × k × n` GEMM needs (no B block when B comes
/// packed already).
#[inline]
fn pack_lens(imp: Impl, m: usize, k: usize, n: usize, strided_b: bool) -> (usize, usize) {
    let kc_max = KC.min(k);
    let a_len = MC.min(m).div_ceil(imp.mr) * imp.mr * kc_max;
    let b_len = if strided_b { NC.min(n).div_ceil(imp.nr) * imp.nr * kc_max } else { 0 };
    (a_len, b_len)
}

/// Gives this thread its packing buffer, at the size no GEMM exceeds, so no later GEMM
/// on it allocates. The buffer comes zeroed from the allocator (fresh pages), so the
/// part a thread never packs into costs address space, not memory. The fork-join
/// pool's workers call it when they start: they may run their first part of some GEMM
/// batches into training. Other threads grow theirs to what each GEMM needs: giving
/// the calling thread the full-size buffer too (or growing it to a parallel GEMM's
/// whole problem) made the MLP's 2-thread epoch 8–14% slower in A/B runs, for reasons
/// this VM's missing counters cannot show (the buffer's placement, it seems).
pub(crate) fn reserve_pack() {
    PACK.with(|buf| {
        let mut buf = buf.borrow_mut();
        if buf.len() < PACK_LEN {
            *buf = vec![0.0; PACK_LEN];
        }
    });
}

/// A microkernel: `C[rows × cols] = alpha·(Ap·Bp) + beta·C` for one MR×NR tile, where
/// Ap is `kc × MR` (MR values per k) and Bp is `kc × NR`. `beta = 0` never reads C.
type Kernel = unsafe fn(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    alpha: f32,
    beta: f32,
    rows: usize,
    cols: usize,
);

#[derive(Clone, Copy)]
struct Impl {
    mr: usize,
    nr: usize,
    kernel: Kernel,
    name: &'static str,
}

fn detect() -> Impl {
    #[cfg(target_arch = "x86_64")]
    {
        let f = super::isa::features();
        if f.avx512() {
            return Impl { mr: 8, nr: 32, kernel: x86::kernel_avx512, name: "avx512" };
        }
        if f.avx2_fma() {
            return Impl { mr: 6, nr: 16, kernel: x86::kernel_avx2, name: "avx2+fma" };
        }
    }
    Impl { mr: 4, nr: 16, kernel: kernel_portable, name: "portable" }
}

fn chosen() -> Impl {
    static IMPL: OnceLock<Impl> = OnceLock::new();
    *IMPL.get_or_init(detect)
}

/// Rows per packed A panel of this CPU's microkernel (8, 6 or 4).
pub fn panel_rows() -> usize {
    chosen().mr
}

/// Which microkernel this CPU uses ("avx512", "avx2+fma" or "portable").
pub fn kernel_name() -> &'static str {
    chosen().name
}

/// Work (multiply-adds) below which a GEMM stays on one thread: splitting a smaller
/// product costs more in synchronization than it saves. With the worker spinning
/// between jobs, 2^21 lets the MLP's 32×784·784×128 products (3.2M) split: 0.20 ->
/// 0.15 s per epoch at batch 32 (2^23 kept them serial; 2^20 measured the same as 2^21).
const PARALLEL_MIN_WORK: usize = 1 << 21;

/// `C ← alpha·A·B + beta·C` with A `m×k` and B `k×n` given by element strides, C
/// row-major with row stride `ldc`. Large products are split in two by rows or columns
/// of C (whichever duplicates less packing) and run on both cores; each element of C is
/// computed exactly as on one thread.
///
/// # Safety
/// Every element reached through the dimensions and strides must be in bounds, and C
/// must not overlap A or B.
#[allow(clippy::too_many_arguments)]
pub unsafe fn sgemm(
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: *const f32,
    rsa: isize,
    csa: isize,
    b: *const f32,
    rsb: isize,
    csb: isize,
    beta: f32,
    c: *mut f32,
    ldc: usize,
) {
    let imp = chosen();
    if m * n * k >= PARALLEL_MIN_WORK && super::parallel::idle() {
        // Split the dimension whose other operand is cheaper to pack twice.
        let split_rows = m >= 2 * imp.mr && (m * k >= k * n || n < 2 * imp.nr);
        let split_cols = !split_rows && n >= 2 * imp.nr;
        if split_rows || split_cols {
            #[derive(Clone, Copy)]
            struct P(*const f32, *const f32, *mut f32);
            // SAFETY: the two halves write disjoint blocks of C and only read A and B.
            unsafe impl Sync for P {}
            impl P {
                fn get(self) -> (*const f32, *const f32, *mut f32) {
                    (self.0, self.1, self.2)
                }
            }
            let ptrs = P(a, b, c);
            // One part per thread, on whole register panels: every element of C is
            // computed as on one thread, wherever the split falls.
            let (unit, dim) = if split_rows { (imp.mr, m) } else { (imp.nr, n) };
            let panels = dim.div_ceil(unit);
            let parts = super::parallel::parts_for(panels);
            let part = |i: usize| {
                let (a, b, c) = ptrs.get();
                let r = super::parallel::part_range(panels, parts, i);
                let (start, len) = (r.start * unit, (r.end * unit).min(dim) - r.start * unit);
                if len == 0 {
                    return;
                }
                // SAFETY: each part is a sub-problem of the caller's in-bounds problem.
                unsafe {
                    if split_rows {
                        sgemm_serial(
                            imp,
                            len,
                            k,
                            n,
                            alpha,
                            a.offset(start as isize * rsa),
                            rsa,
                            csa,
                            b,
                            rsb,
                            csb,
                            beta,
                            c.add(start * ldc),
                            ldc,
                        );
                    } else {
                        sgemm_serial(
                            imp,
                            m,
                            k,
                            len,
                            alpha,
                            a,
                            rsa,
                            csa,
                            b.offset(start as isize * csb),
                            rsb,
                            csb,
                            beta,
                            c.add(start),
                            ldc,
                        );
                    }
                }
            };
            // The caller claims parts too, but not always the same ones: it takes the
            // buffer the largest part needs now, so no part it claims in a later step
            // grows it (the first part is the largest).
            let first = super::parallel::part_range(panels, parts, 0);
            let len = (first.end * unit).min(dim);
            let (pm, pn) = if split_rows { (len, n) } else { (m, len) };
            reserve_for(imp, pm, k, pn);
            super::parallel::for_parts(parts, &part);
            return;
        }
    }
    // SAFETY: forwarded contract.
    unsafe { sgemm_serial(imp, m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, ldc) }
}

/// Writes one block of A in packed form: rows `ic..ic + mc`, depth `pc..pc + kc`, as
/// panels of `mr` rows, each `kc × mr` (`dst[panel·kc·mr + p·mr + i]`), rows past `mc`
/// zero. Lets a caller produce A straight into the GEMM's layout (a convolution packs
/// from its input without an im2col matrix).
pub type PackA<'a> = dyn Fn(usize, usize, usize, usize, usize, &mut [f32]) + 'a;

/// `C ← alpha·A·B + beta·C` on this thread, with A produced block by block by `pack`
/// (see [`PackA`]) instead of read from memory.
///
/// # Safety
/// As [`sgemm`] for B and C; `pack` must fill exactly the block it is asked for.
#[allow(clippy::too_many_arguments)]
pub unsafe fn sgemm_packed_a(
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    pack: &PackA<'_>,
    b: *const f32,
    rsb: isize,
    csb: isize,
    beta: f32,
    c: *mut f32,
    ldc: usize,
) {
    // SAFETY: forwarded contract; `a` is unused when a packer is given.
    unsafe {
        sgemm_blocked(
            chosen(),
            m,
            k,
            n,
            alpha,
            ASource::Packer(pack),
            BSource::Strided(b, rsb, csb),
            beta,
            c,
            ldc,
        )
    }
}

/// Where the blocked loop gets B from: strided memory it packs per block, or blocks
/// packed once by [`PackedB::pack`].
#[derive(Clone, Copy)]
enum BSource<'p> {
    Strided(*const f32, isize, isize),
    Packed(&'p [f32]),
}

/// `op(B)` (`k × n`) packed once in this CPU's panel layout, block after block as the
/// blocked loop reads them, for many products with different A: a recurrent kernel is
/// multiplied by a new state at every step, and packing it once per batch instead of
/// per step removes a copy of the whole kernel from each step.
#[derive(Clone, Debug, Default)]
pub struct PackedB {
    data: Vec<f32>,
    k: usize,
    n: usize,
}

impl PackedB {
    /// An empty pack (grows on the first [`PackedB::pack`], then reuses its buffer).
    pub fn new() -> Self {
        PackedB::default()
    }

    /// `(k, n)` of the packed `op(B)`.
    pub fn dims(&self) -> (usize, usize) {
        (self.k, self.n)
    }

    /// Packs `op(B)`, `k × n` given by element strides.
    ///
    /// # Safety
    /// Every element reached through the dimensions and strides must be in bounds.
    pub unsafe fn pack(&mut self, k: usize, n: usize, b: *const f32, rsb: isize, csb: isize) {
        let nr = chosen().nr;
        let mut len = 0;
        for jc in (0..n).step_by(NC) {
            for pc in (0..k).step_by(KC) {
                len += NC.min(n - jc).div_ceil(nr) * nr * KC.min(k - pc);
            }
        }
        if self.data.len() < len {
            self.data.resize(len, 0.0);
        }
        (self.k, self.n) = (k, n);
        let mut off = 0;
        for jc in (0..n).step_by(NC) {
            let nc = NC.min(n - jc);
            for pc in (0..k).step_by(KC) {
                let kc = KC.min(k - pc);
                let size = nc.div_ceil(nr) * nr * kc;
                // SAFETY: in bounds per this function's contract.
                unsafe {
                    pack_b(
                        kc,
                        nc,
                        nr,
                        b.offset(pc as isize * rsb + jc as isize * csb),
                        rsb,
                        csb,
                        &mut self.data[off..off + size],
                    )
                };
                off += size;
            }
        }
    }
}

/// `C ← alpha·A·op(B) + beta·C` with `op(B)` from a [`PackedB`] (`k × n` as packed), on
/// the calling thread: for callers that split the rows of one product between threads
/// themselves. The same bits as [`sgemm`] on the unpacked B.
///
/// # Safety
/// As [`sgemm`] for A and C (A `m × k`).
#[allow(clippy::too_many_arguments)]
pub unsafe fn sgemm_prepacked(
    m: usize,
    alpha: f32,
    a: *const f32,
    rsa: isize,
    csa: isize,
    b: &PackedB,
    beta: f32,
    c: *mut f32,
    ldc: usize,
) {
    let (k, n) = b.dims();
    // SAFETY: forwarded contract; the pack holds every block the loop reads.
    unsafe {
        sgemm_blocked(
            chosen(),
            m,
            k,
            n,
            alpha,
            ASource::Strided(a, rsa, csa),
            BSource::Packed(&b.data),
            beta,
            c,
            ldc,
        )
    }
}

/// Where the blocked loop gets A from.
#[derive(Clone, Copy)]
enum ASource<'p, 'a> {
    Strided(*const f32, isize, isize),
    Packer(&'p PackA<'a>),
}

#[allow(clippy::too_many_arguments)]
unsafe fn sgemm_serial(
    imp: Impl,
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: *const f32,
    rsa: isize,
    csa: isize,
    b: *const f32,
    rsb: isize,
    csb: isize,
    beta: f32,
    c: *mut f32,
    ldc: usize,
) {
    // SAFETY: forwarded contract.
    unsafe {
        sgemm_blocked(
            imp,
            m,
            k,
            n,
            alpha,
            ASource::Strided(a, rsa, csa),
            BSource::Strided(b, rsb, csb),
            beta,
            c,
            ldc,
        )
    }
}

#[allow(clippy::too_many_arguments)]
unsafe fn sgemm_blocked(
    imp: Impl,
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: ASource<'_, '_>,
    b: BSource<'_>,
    beta: f32,
    c: *mut f32,
    ldc: usize,
) {
    let (mr, nr) = (imp.mr, imp.nr);
    // Offset of the next block in a prepacked B.
    let mut packed_off = 0;
    PACK.with(|buf| {
        let mut buf = buf.borrow_mut();
        let (a_len, b_len) = pack_lens(imp, m, k, n, matches!(b, BSource::Strided(..)));
        if buf.len() < a_len + b_len {
            buf.resize(a_len + b_len, 0.0);
        }
        let (ap, bp) = buf.split_at_mut(a_len);
        let mut jc = 0;
        while jc < n {
            let nc = NC.min(n - jc);
            let mut pc = 0;
            while pc < k {
                let kc = KC.min(k - pc);
                let beta_here = if pc == 0 { beta } else { 1.0 };
                // A row-major B exactly one panel wide is already in packed layout
                // (kc rows of nr values): the kernel reads it in place. This skips a
                // copy of the whole output gradient in a few-filter conv's kernel
                // gradient (the first MNIST conv: 32 filters, nr = 32).
                let bpanel = match b {
                    BSource::Packed(data) => {
                        let p = data[packed_off..].as_ptr();
                        packed_off += nc.div_ceil(nr) * nr * kc;
                        p
                    }
                    BSource::Strided(b, rsb, csb) if n == nr && csb == 1 && rsb == nr as isize => {
                        // SAFETY: rows pc..pc + kc of B, in bounds per the caller.
                        unsafe { b.offset(pc as isize * rsb) }
                    }
                    BSource::Strided(b, rsb, csb) => {
                        // SAFETY: the caller guarantees the strides stay in bounds.
                        unsafe {
                            pack_b(
                                kc,
                                nc,
                                nr,
                                b.offset(pc as isize * rsb + jc as isize * csb),
                                rsb,
                                csb,
                                bp,
                            )
                        };
                        bp.as_ptr()
                    }
                };
                let mut ic = 0;
                while ic < m {
                    let mc = MC.min(m - ic);
                    match a {
                        ASource::Strided(a, rsa, csa) => unsafe {
                            pack_a(
                                mc,
                                kc,
                                mr,
                                a.offset(ic as isize * rsa + pc as isize * csa),
                                rsa,
                                csa,
                                ap,
                            )
                        },
                        ASource::Packer(f) => {
                            f(ic, mc, pc, kc, mr, &mut ap[..mc.div_ceil(mr) * mr * kc])
                        }
                    }
                    let mut jr = 0;
                    while jr < nc {
                        let cols = nr.min(nc - jr);
                        let mut ir = 0;
                        while ir < mc {
                            let rows = mr.min(mc - ir);
                            unsafe {
                                (imp.kernel)(
                                    kc,
                                    ap.as_ptr().add(ir * kc),
                                    bpanel.add(jr * kc),
                                    c.add((ic + ir) * ldc + jc + jr),
                                    ldc,
                                    alpha,
                                    beta_here,
                                    rows,
                                    cols,
                                );
                            }
                            ir += mr;
                        }
                        jr += nr;
                    }
                    ic += mc;
                }
                pc += kc;
            }
            jc += nc;
        }
    });
}

/// Packs `kc × nc` of B into panels of `nr` columns (zero-padded), each `kc × nr`.
unsafe fn pack_b(
    kc: usize,
    nc: usize,
    nr: usize,
    b: *const f32,
    rsb: isize,
    csb: isize,
    out: &mut [f32],
) {
    for (panel, j0) in (0..nc).step_by(nr).enumerate() {
        let cols = nr.min(nc - j0);
        let dst = &mut out[panel * kc * nr..(panel + 1) * kc * nr];
        for p in 0..kc {
            let row = &mut dst[p * nr..(p + 1) * nr];
            // SAFETY: in bounds per the caller of `sgemm`.
            unsafe {
                let src = b.offset(p as isize * rsb + j0 as isize * csb);
                if csb == 1 {
                    // Full panels are copied inline (a memcpy call per 32 values costs
                    // more than the copy).
                    match cols {
                        32 => copy_n::<32>(src, row),
                        16 => copy_n::<16>(src, row),
                        _ => row[..cols].copy_from_slice(std::slice::from_raw_parts(src, cols)),
                    }
                } else {
                    for (j, v) in row[..cols].iter_mut().enumerate() {
                        *v = *src.offset(j as isize * csb);
                    }
                }
            }
            row[cols..].fill(0.0);
        }
    }
}

/// Packs `mc × kc` of A into panels of `mr` rows (zero-padded), each `kc × mr`.
unsafe fn pack_a(
    mc: usize,
    kc: usize,
    mr: usize,
    a: *const f32,
    rsa: isize,
    csa: isize,
    out: &mut [f32],
) {
    for (panel, i0) in (0..mc).step_by(mr).enumerate() {
        let rows = mr.min(mc - i0);
        let dst = &mut out[panel * kc * mr..(panel + 1) * kc * mr];
        if rsa == 1 {
            // Aᵀ stored row-major: each k gives `rows` consecutive values.
            for p in 0..kc {
                let d = &mut dst[p * mr..(p + 1) * mr];
                // SAFETY: in bounds per the caller of `sgemm`.
                unsafe {
                    let src = a.offset(i0 as isize + p as isize * csa);
                    match rows {
                        8 => copy_n::<8>(src, d),
                        6 => copy_n::<6>(src, d),
                        4 => copy_n::<4>(src, d),
                        _ => d[..rows].copy_from_slice(std::slice::from_raw_parts(src, rows)),
                    }
                };
                d[rows..].fill(0.0);
            }
        } else if csa == 1 && rows == mr {
            // Row-major A, a full panel: read MR rows in lockstep, write contiguously.
            // SAFETY: in bounds per the caller of `sgemm`.
            unsafe {
                let first = a.offset(i0 as isize * rsa);
                match mr {
                    8 => pack_rows::<8>(kc, first, rsa, dst),
                    6 => pack_rows::<6>(kc, first, rsa, dst),
                    _ => pack_rows::<4>(kc, first, rsa, dst),
                }
            }
        } else {
            for i in 0..mr {
                if i < rows {
                    // SAFETY: in bounds per the caller of `sgemm`.
                    let src = unsafe { a.offset((i0 + i) as isize * rsa) };
                    for p in 0..kc {
                        dst[p * mr + i] = unsafe { *src.offset(p as isize * csa) };
                    }
                } else {
                    for p in 0..kc {
                        dst[p * mr + i] = 0.0;
                    }
                }
            }
        }
    }
}

/// Copies `N` values from `src` to the start of `dst`, inline.
///
/// # Safety
/// `src` must be valid for `N` reads.
#[inline(always)]
unsafe fn copy_n<const N: usize>(src: *const f32, dst: &mut [f32]) {
    let d: &mut [f32; N] = (&mut dst[..N]).try_into().expect("N values");
    // SAFETY: per the caller; unaligned reads are allowed.
    *d = unsafe { std::ptr::read_unaligned(src.cast::<[f32; N]>()) };
}

/// Interleaves `MR` rows of a row-major matrix (row stride `rsa`) into `dst[p·MR + i]`.
#[inline(always)]
unsafe fn pack_rows<const MR: usize>(kc: usize, first: *const f32, rsa: isize, dst: &mut [f32]) {
    // SAFETY: the caller guarantees MR rows of kc values from `first`.
    let rows: [&[f32]; MR] = std::array::from_fn(|i| unsafe {
        std::slice::from_raw_parts(first.offset(i as isize * rsa), kc)
    });
    for (p, d) in dst[..kc * MR].chunks_exact_mut(MR).enumerate() {
        for i in 0..MR {
            d[i] = rows[i][p];
        }
    }
}

/// Portable 4×16 kernel; LLVM vectorizes the inner loops for the baseline target.
#[allow(clippy::too_many_arguments)]
unsafe fn kernel_portable(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    alpha: f32,
    beta: f32,
    rows: usize,
    cols: usize,
) {
    const MR: usize = 4;
    const NR: usize = 16;
    let mut acc = [[0.0f32; NR]; MR];
    for p in 0..kc {
        // SAFETY: packed panels hold kc·MR and kc·NR values.
        let (ap, bp) = unsafe {
            (
                std::slice::from_raw_parts(a.add(p * MR), MR),
                std::slice::from_raw_parts(b.add(p * NR), NR),
            )
        };
        for r in 0..MR {
            for j in 0..NR {
                acc[r][j] += ap[r] * bp[j];
            }
        }
    }
    for (r, row) in acc.iter().enumerate().take(rows) {
        for (j, &v) in row.iter().enumerate().take(cols) {
            // SAFETY: the tile lies within C.
            unsafe {
                let dst = c.add(r * ldc + j);
                *dst = if beta == 0.0 { alpha * v } else { alpha * v + beta * *dst };
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// AVX-512 8×32 kernel: 16 accumulators, two B loads and eight broadcasts per k.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn kernel_avx512(
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        alpha: f32,
        beta: f32,
        rows: usize,
        cols: usize,
    ) {
        const MR: usize = 8;
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); 2]; MR];
            for p in 0..kc {
                let b0 = _mm512_loadu_ps(b.add(p * 32));
                let b1 = _mm512_loadu_ps(b.add(p * 32 + 16));
                let ap = a.add(p * MR);
                for (r, row) in acc.iter_mut().enumerate() {
                    let av = _mm512_set1_ps(*ap.add(r));
                    row[0] = _mm512_fmadd_ps(av, b0, row[0]);
                    row[1] = _mm512_fmadd_ps(av, b1, row[1]);
                }
            }
            let m0: __mmask16 = if cols >= 16 { 0xFFFF } else { ((1u32 << cols) - 1) as u16 };
            let m1: __mmask16 = if cols >= 32 {
                0xFFFF
            } else if cols > 16 {
                ((1u32 << (cols - 16)) - 1) as u16
            } else {
                0
            };
            let va = _mm512_set1_ps(alpha);
            let vb = _mm512_set1_ps(beta);
            for (r, row) in acc.iter().enumerate().take(rows) {
                let dst = c.add(r * ldc);
                let mut v0 = _mm512_mul_ps(row[0], va);
                let mut v1 = _mm512_mul_ps(row[1], va);
                if beta != 0.0 {
                    v0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m0, dst), vb, v0);
                    v1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m1, dst.add(16)), vb, v1);
                }
                _mm512_mask_storeu_ps(dst, m0, v0);
                _mm512_mask_storeu_ps(dst.add(16), m1, v1);
            }
        }
    }

    /// AVX2+FMA 6×16 kernel: 12 accumulators; edge tiles go through a stack tile.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn kernel_avx2(
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        alpha: f32,
        beta: f32,
        rows: usize,
        cols: usize,
    ) {
        const MR: usize = 6;
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); 2]; MR];
            for p in 0..kc {
                let b0 = _mm256_loadu_ps(b.add(p * 16));
                let b1 = _mm256_loadu_ps(b.add(p * 16 + 8));
                let ap = a.add(p * MR);
                for (r, row) in acc.iter_mut().enumerate() {
                    let av = _mm256_broadcast_ss(&*ap.add(r));
                    row[0] = _mm256_fmadd_ps(av, b0, row[0]);
                    row[1] = _mm256_fmadd_ps(av, b1, row[1]);
                }
            }
            let mut tile = [[0.0f32; 16]; MR];
            for (r, row) in acc.iter().enumerate() {
                _mm256_storeu_ps(tile[r].as_mut_ptr(), row[0]);
                _mm256_storeu_ps(tile[r].as_mut_ptr().add(8), row[1]);
            }
            for (r, row) in tile.iter().enumerate().take(rows) {
                for (j, &v) in row.iter().enumerate().take(cols) {
                    let dst = c.add(r * ldc + j);
                    *dst = if beta == 0.0 { alpha * v } else { alpha * v + beta * *dst };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(m: usize, k: usize, n: usize, a: &[f32], b: &[f32]) -> Vec<f64> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] =
                    (0..k).map(|p| f64::from(a[i * k + p]) * f64::from(b[p * n + j])).sum();
            }
        }
        c
    }

    #[test]
    fn every_kernel_matches_a_naive_product_across_block_edges() {
        let kernels: Vec<Impl> = {
            let mut v = vec![Impl { mr: 4, nr: 16, kernel: kernel_portable, name: "portable" }];
            #[cfg(target_arch = "x86_64")]
            {
                let f = crate::kernels::isa::features();
                if f.avx512() {
                    v.push(Impl { mr: 8, nr: 32, kernel: x86::kernel_avx512, name: "avx512" });
                }
                if f.avx2_fma() {
                    v.push(Impl { mr: 6, nr: 16, kernel: x86::kernel_avx2, name: "avx2" });
                }
            }
            v
        };
        // Shapes that cross MC, KC and NC and leave partial tiles.
        for &(m, k, n) in &[(1, 1, 1), (7, 3, 5), (33, 300, 47), (200, 9, 3100), (13, 513, 33)] {
            let a: Vec<f32> = (0..m * k).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
            let b: Vec<f32> = (0..k * n).map(|i| ((i * 53 % 97) as f32 - 48.0) / 48.0).collect();
            let want = naive(m, k, n, &a, &b);
            for imp in &kernels {
                let mut c = vec![f32::NAN; m * n];
                // Drive the blocked loop with this kernel.
                run_with(*imp, m, k, n, &a, &b, &mut c);
                for (i, (x, y)) in c.iter().zip(&want).enumerate() {
                    assert!(
                        (f64::from(*x) - y).abs() <= 1e-4 * (1.0 + y.abs()),
                        "{} {m}x{k}x{n} at {i}: {x} vs {y}",
                        imp.name
                    );
                }
            }
        }
    }

    #[test]
    fn the_two_core_split_is_bit_identical_to_one_thread() {
        // Tall (split by rows) and wide (split by columns), both above the threshold.
        for &(m, k, n) in &[(301, 300, 97), (32, 260, 1100)] {
            assert!(m * n * k >= PARALLEL_MIN_WORK);
            let a: Vec<f32> = (0..m * k).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
            let b: Vec<f32> = (0..k * n).map(|i| ((i * 53 % 97) as f32 - 48.0) / 48.0).collect();
            let c0: Vec<f32> = (0..m * n).map(|i| (i % 7) as f32).collect();
            let (mut par, mut ser) = (c0.clone(), c0.clone());
            unsafe {
                sgemm(
                    m,
                    k,
                    n,
                    0.5,
                    a.as_ptr(),
                    k as isize,
                    1,
                    b.as_ptr(),
                    n as isize,
                    1,
                    2.0,
                    par.as_mut_ptr(),
                    n,
                );
                sgemm_serial(
                    chosen(),
                    m,
                    k,
                    n,
                    0.5,
                    a.as_ptr(),
                    k as isize,
                    1,
                    b.as_ptr(),
                    n as isize,
                    1,
                    2.0,
                    ser.as_mut_ptr(),
                    n,
                );
            }
            assert!(par.iter().zip(&ser).all(|(x, y)| x.to_bits() == y.to_bits()), "{m}x{k}x{n}");
            let want = naive(m, k, n, &a, &b);
            for (i, (x, y)) in par.iter().zip(&want).enumerate() {
                let y = 0.5 * y + 2.0 * f64::from(c0[i]);
                assert!(
                    (f64::from(*x) - y).abs() <= 1e-4 * (1.0 + y.abs()),
                    "{m}x{k}x{n} at {i}: {x} vs {y}"
                );
            }
        }
    }

    fn run_with(imp: Impl, m: usize, k: usize, n: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
        let (mr, nr) = (imp.mr, imp.nr);
        let mut ap = vec![0.0; MC.div_ceil(mr) * mr * KC];
        let mut bp = vec![0.0; NC.div_ceil(nr) * nr * KC];
        for jc in (0..n).step_by(NC) {
            let nc = NC.min(n - jc);
            for pc in (0..k).step_by(KC) {
                let kc = KC.min(k - pc);
                unsafe { pack_b(kc, nc, nr, b.as_ptr().add(pc * n + jc), n as isize, 1, &mut bp) };
                for ic in (0..m).step_by(MC) {
                    let mc = MC.min(m - ic);
                    unsafe {
                        pack_a(mc, kc, mr, a.as_ptr().add(ic * k + pc), k as isize, 1, &mut ap)
                    };
                    for jr in (0..nc).step_by(nr) {
                        for ir in (0..mc).step_by(mr) {
                            unsafe {
                                (imp.kernel)(
                                    kc,
                                    ap.as_ptr().add(ir * kc),
                                    bp.as_ptr().add(jr * kc),
                                    c.as_mut_ptr().add((ic + ir) * n + jc + jr),
                                    n,
                                    1.0,
                                    if pc == 0 { 0.0 } else { 1.0 },
                                    mr.min(mc - ir),
                                    nr.min(nc - jr),
                                )
                            };
                        }
                    }
                }
            }
        }
    }
}
