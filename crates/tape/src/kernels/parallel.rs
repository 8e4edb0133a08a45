//! kiln's fork-join runtime: [`for_parts`] runs `f(0)`, …, `f(n − 1)` on the calling
//! thread and the pool's workers together and returns when all are done.
//!
//! The pool has `KILN_THREADS` threads in all (default: every core the OS reports, or
//! its share of them under `mpirun`),
//! the caller included; the workers are started once, on first use (the only
//! allocation: the first call returns once every worker has started and holds its
//! buffers), and spin briefly before sleeping between jobs, so a training step pays
//! no allocation and little latency. Parts are claimed one at a time from a shared
//! counter, so any thread may run any part: kernels divide their work into parts whose
//! boundaries depend on the problem alone (never on the thread count) and compute each
//! part exactly as one thread would, so results are bit-identical for any thread count.
//! A fork-join inside another runs its parts on the calling thread, in order.
//!
//! Set `KILN_THREADS=1` to keep everything on the calling thread.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The job: a pointer to a closure on the caller's stack, valid until the caller has
/// seen every worker leave it.
#[derive(Clone, Copy)]
struct Job(*const (dyn Fn(usize) + Sync));
// SAFETY: the closure is `Sync` and outlives the job (for_parts waits for completion).
unsafe impl Send for Job {}

struct Pool {
    /// Threads in all, the caller included.
    threads: usize,
    /// Whether workers may spin between jobs (not when there are more threads than
    /// cores: a spinning worker would take the core a working thread needs).
    spin: bool,
    /// The current job and its part count (under the lock, with `epoch`).
    job: Mutex<(Option<Job>, usize)>,
    epoch: AtomicU64,
    wake: Condvar,
    /// The next part to claim, the parts finished, the workers inside the job.
    next: AtomicUsize,
    finished: AtomicUsize,
    active: AtomicUsize,
    busy: AtomicBool,
    /// Workers that have started and hold their per-thread buffers.
    ready: AtomicUsize,
}

/// The thread count `KILN_THREADS` asks for, else the cores the OS reports shared among
/// the MPI ranks on this machine (Open MPI and MPICH name their count), so that
/// `mpirun -np 2` on 2 cores runs one thread per rank rather than 2 spinning each.
fn configured_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let local_ranks = ["OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS"]
        .iter()
        .find_map(|k| std::env::var(k).ok()?.trim().parse::<usize>().ok())
        .filter(|&n| n >= 1)
        .unwrap_or(1);
    std::env::var("KILN_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n >= 1)
        .unwrap_or((cores / local_ranks).max(1))
}

fn pool() -> Option<&'static Pool> {
    static POOL: OnceLock<Option<&'static Pool>> = OnceLock::new();
    *POOL.get_or_init(|| {
        let threads = configured_threads();
        if threads < 2 {
            return None;
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let p: &'static Pool = Box::leak(Box::new(Pool {
            threads,
            spin: threads <= cores,
            job: Mutex::new((None, 0)),
            epoch: AtomicU64::new(0),
            wake: Condvar::new(),
            next: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
            busy: AtomicBool::new(false),
            ready: AtomicUsize::new(0),
        }));
        for w in 1..threads {
            std::thread::Builder::new()
                .name(format!("kiln-worker-{w}"))
                .spawn(move || worker(p))
                .ok()?;
        }
        // A starting thread allocates (its runtime state, its GEMM packing buffer):
        // wait for every worker here, so none does so later, inside a training step.
        while p.ready.load(Ordering::Acquire) < threads - 1 {
            std::thread::yield_now();
        }
        Some(p)
    })
}

/// Claims and runs parts of the current job until none is left.
fn claim_parts(p: &Pool, f: &(dyn Fn(usize) + Sync), n: usize) {
    loop {
        let i = p.next.fetch_add(1, Ordering::AcqRel);
        if i >= n {
            return;
        }
        f(i);
        p.finished.fetch_add(1, Ordering::Release);
    }
}

fn worker(p: &'static Pool) {
    super::sgemm::reserve_pack();
    p.ready.fetch_add(1, Ordering::AcqRel);
    let mut seen = 0u64;
    loop {
        // Spin for a while (jobs come in bursts during training), then sleep. 300 µs
        // spans a whole MLP step at batch 32, so the optimizer's split finds the
        // workers awake: waking them through the condvar cost more than the split
        // saved (the Adam phase took 37 µs per step with a 50 µs spin, 14 µs with 300).
        let start = Instant::now();
        while p.spin
            && p.epoch.load(Ordering::Acquire) == seen
            && start.elapsed() < Duration::from_micros(300)
        {
            std::hint::spin_loop();
        }
        let (job, n) = {
            let mut guard = p.job.lock().unwrap_or_else(|e| e.into_inner());
            while p.epoch.load(Ordering::Acquire) == seen {
                guard = p.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
            }
            seen = p.epoch.load(Ordering::Acquire);
            // Entering under the lock: the caller clears the job under it, then waits
            // for every worker that entered to leave.
            if guard.0.is_some() {
                p.active.fetch_add(1, Ordering::AcqRel);
            }
            *guard
        };
        if let Some(Job(f)) = job {
            // SAFETY: the poster keeps the closure alive until `active` is back to 0.
            claim_parts(p, unsafe { &*f }, n);
            p.active.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Number of fork-joins that ran in parallel so far.
static JOINS: AtomicUsize = AtomicUsize::new(0);

/// How many fork-joins have run in parallel in this process: lets a test check that
/// the parallel paths it means to exercise did split.
pub fn parallel_joins() -> usize {
    JOINS.load(Ordering::Relaxed)
}

/// Threads kiln computes with (the caller included): `KILN_THREADS`, else every core.
pub fn threads() -> usize {
    pool().map_or(1, |p| p.threads)
}

/// Whether a second thread is available to [`for_parts`].
pub fn available() -> bool {
    pool().is_some()
}

/// Whether a [`for_parts`] now would run in parallel: workers exist and no fork-join is
/// under way (inside one, a nested call runs its parts on the calling thread, so a
/// kernel that would split only to run the parts in turn should not split).
pub fn idle() -> bool {
    pool().is_some_and(|p| !p.busy.load(Ordering::Acquire))
}

/// Runs `f(i)` for every part `i` in `0..n` on this thread and the workers, in
/// parallel, and returns when all are done. Without workers (one core,
/// `KILN_THREADS=1`, or inside another fork-join) it runs the parts here, in order.
pub fn for_parts(n: usize, f: &(dyn Fn(usize) + Sync)) {
    let pool = pool().filter(|_| n >= 2);
    let Some(p) = pool.filter(|p| !p.busy.swap(true, Ordering::Acquire)) else {
        (0..n).for_each(f);
        return;
    };
    JOINS.fetch_add(1, Ordering::Relaxed);
    // SAFETY (lifetime): `f` outlives the job because we wait below for every worker
    // to leave it before returning; the transmute only erases that lifetime.
    let job = Job(unsafe {
        std::mem::transmute::<
            *const (dyn Fn(usize) + Sync + '_),
            *const (dyn Fn(usize) + Sync + 'static),
        >(f)
    });
    {
        let mut guard = p.job.lock().unwrap_or_else(|e| e.into_inner());
        p.next.store(0, Ordering::Release);
        p.finished.store(0, Ordering::Release);
        *guard = (Some(job), n);
        p.epoch.fetch_add(1, Ordering::AcqRel);
        p.wake.notify_all();
    }
    claim_parts(p, f, n);
    while p.finished.load(Ordering::Acquire) < n {
        std::hint::spin_loop();
    }
    p.job.lock().unwrap_or_else(|e| e.into_inner()).0 = None;
    while p.active.load(Ordering::Acquire) > 0 {
        std::hint::spin_loop();
    }
    p.busy.store(false, Ordering::Release);
}

/// Runs `f(0)` and `f(1)` in parallel: [`for_parts`] with two parts.
pub fn join2(f: &(dyn Fn(usize) + Sync)) {
    for_parts(2, f);
}

/// Parts to divide `units` units of work into: one per thread, at most one per unit.
/// (The split points then depend on the thread count, so use it only for work whose
/// every output is computed the same wherever the split falls.)
pub fn parts_for(units: usize) -> usize {
    threads().min(units).max(1)
}

/// The `i`-th of `parts` contiguous, nearly equal ranges of `0..n`.
pub fn part_range(n: usize, parts: usize, i: usize) -> std::ops::Range<usize> {
    let (q, r) = (n / parts, n % parts);
    let start = i * q + i.min(r);
    start..start + q + usize::from(i < r)
}

/// Splits `out`, which holds `items` items of `per` elements each, into one part per
/// thread at item boundaries and runs `f(items_range, part)` on each, in parallel.
/// Small jobs (under `min_elems` elements) run on the calling thread in one call.
pub fn split_items<T: Send>(
    out: &mut [T],
    items: usize,
    per: usize,
    min_elems: usize,
    f: &(dyn Fn(std::ops::Range<usize>, &mut [T]) + Sync),
) {
    if items < 2 || out.len() < min_elems || !available() {
        f(0..items, out);
        return;
    }
    let parts = parts_for(items);
    let buf = SharedMut::new(out);
    for_parts(parts, &|i| {
        let r = part_range(items, parts, i);
        // SAFETY: parts take disjoint item ranges of the buffer borrowed for this call.
        let part = unsafe { buf.slice(r.start * per..r.end * per) };
        f(r, part);
    });
}

/// The work on one half of a [`split_zip`]: `K` buffers to update and the shared input.
pub type ZipPart<'a, T, const K: usize> = dyn Fn([&mut [T]; K], &[T]) + Sync + 'a;

/// Splits `K` equally long buffers and one shared input into one part per thread at
/// the same points and runs `f` on each part, in parallel when there are at least `min`
/// elements. Meant for elementwise updates (an optimizer's step over weights and its
/// slots): each element is computed exactly as on one thread.
pub fn split_zip<T: Send + Sync, const K: usize>(
    bufs: [&mut [T]; K],
    shared: &[T],
    min: usize,
    f: &ZipPart<'_, T, K>,
) {
    let len = shared.len();
    assert!(bufs.iter().all(|b| b.len() == len), "split_zip buffers must have one length");
    if len < min || !available() {
        f(bufs, shared);
        return;
    }
    // Parts of a multiple of 64 elements, so each starts on a cache line.
    let chunk = len.div_ceil(parts_for(len)).next_multiple_of(64);
    let parts = len.div_ceil(chunk);
    let ptrs: [SharedMut<T>; K] = bufs.map(SharedMut::new);
    for_parts(parts, &|i| {
        let range = i * chunk..((i + 1) * chunk).min(len);
        // SAFETY: the parts are disjoint ranges of buffers borrowed for this call.
        let parts = ptrs.map(|p| unsafe { p.slice(range.clone()) });
        f(parts, &shared[range]);
    });
}

/// One buffer of a [`split_rows`]: rows of `width` values from its start.
pub struct Rows<'a, T> {
    buf: &'a mut [T],
    width: usize,
}

/// `buf` as rows of `width` values, for [`split_rows`].
pub fn rows<T>(buf: &mut [T], width: usize) -> Rows<'_, T> {
    Rows { buf, width }
}

/// The work on one part of a [`split_rows`]: the rows it owns, then those rows of
/// every buffer.
pub type RowsPart<'a, T, const K: usize> =
    dyn Fn(std::ops::Range<usize>, [&mut [T]; K]) + Sync + 'a;

/// Splits rows `0..n` into one part per thread and runs `f(range, rows of each buffer)`
/// on each, in parallel when there are at least `min_rows` rows: for per-row work such as one
/// step of a recurrent layer over a batch (each sample's row of every buffer belongs
/// to one part). Rows are computed as on one thread, so results do not depend on the
/// thread count.
///
/// # Panics
/// If a buffer holds fewer than `n` rows (a caller's sizing bug).
pub fn split_rows<T: Send, const K: usize>(
    n: usize,
    min_rows: usize,
    bufs: [Rows<'_, T>; K],
    f: &RowsPart<'_, T, K>,
) {
    assert!(bufs.iter().all(|b| b.buf.len() >= n * b.width), "split_rows: a buffer is short");
    if n < min_rows.max(2) || !idle() {
        f(0..n, bufs.map(|b| &mut b.buf[..n * b.width]));
        return;
    }
    let count = parts_for(n);
    let parts: [(SharedMut<T>, usize); K] = bufs.map(|b| (SharedMut::new(b.buf), b.width));
    for_parts(count, &|i| {
        let range = part_range(n, count, i);
        // SAFETY: the parts take disjoint row ranges of buffers borrowed for this call,
        // and each part is the only user of its range.
        let slices = parts.map(|(p, w)| unsafe { p.slice(range.start * w..range.end * w) });
        f(range.clone(), slices);
    });
}

/// One buffer of a [`split_batch`]: `batch` rows of `width` values per step, the
/// steps one after another (step-major), from its start; a buffer without a step axis
/// is one step.
pub struct StepBuf<'a, T> {
    buf: &'a mut [T],
    batch: usize,
    width: usize,
}

/// `buf` as step-major blocks of `batch` rows of `width` values, for [`split_batch`].
pub fn steps<T>(buf: &mut [T], batch: usize, width: usize) -> StepBuf<'_, T> {
    StepBuf { buf, batch, width }
}

/// A part's view of a [`StepBuf`]: at every step, only the part's own rows.
pub struct StepRows<'a, T> {
    buf: SharedMut<T>,
    batch: usize,
    width: usize,
    rows: std::ops::Range<usize>,
    _borrow: std::marker::PhantomData<&'a mut [T]>,
}

impl<T> StepRows<'_, T> {
    fn span(&self, s: usize) -> std::ops::Range<usize> {
        let (b, w) = (self.batch, self.width);
        (s * b + self.rows.start) * w..(s * b + self.rows.end) * w
    }

    /// This part's rows at step `s`.
    ///
    /// # Panics
    /// If step `s` is past the buffer.
    pub fn at(&mut self, s: usize) -> &mut [T] {
        // SAFETY: the span is within the buffer (checked by `slice`), belongs to this
        // part alone (parts own disjoint rows at every step), and the `&mut self`
        // borrow keeps it unique within the part.
        unsafe { self.buf.slice(self.span(s)) }
    }

    /// This part's rows at steps `s` (to read) and `t` (to write), `s ≠ t`: a state
    /// read by a step and the one it writes.
    ///
    /// # Panics
    /// If `s == t` or a step is past the buffer.
    pub fn pair(&mut self, s: usize, t: usize) -> (&[T], &mut [T]) {
        assert_ne!(s, t, "StepRows::pair needs two different steps");
        // SAFETY: as `at`; two different steps' spans are disjoint.
        unsafe { (self.buf.slice(self.span(s)), self.buf.slice(self.span(t))) }
    }
}

/// The work on one part of a [`split_batch`]: its rows of the batch, then its view of
/// every buffer.
pub type BatchPart<'a, T, const K: usize> =
    dyn Fn(std::ops::Range<usize>, [StepRows<'_, T>; K]) + Sync + 'a;

/// Splits the batch's rows `0..batch` into one part per thread and runs `f(rows, views)`
/// on each, in parallel when there are at least `min_rows` rows; each part sees only its own
/// rows of every step-major buffer. Meant for a recurrent layer's whole step loop: a
/// sample's recurrence touches only its own rows, so each part runs every step
/// without waiting for the other (one fork-join per pass instead of one per step).
/// Rows are computed as on one thread: results do not depend on the thread count.
///
/// # Panics
/// If a buffer's batch differs from `batch`.
pub fn split_batch<T: Send, const K: usize>(
    batch: usize,
    min_rows: usize,
    bufs: [StepBuf<'_, T>; K],
    f: &BatchPart<'_, T, K>,
) {
    assert!(bufs.iter().all(|b| b.batch == batch), "split_batch: buffers of another batch");
    let parts: [(SharedMut<T>, usize); K] = bufs.map(|b| (SharedMut::new(b.buf), b.width));
    let view = |rows: std::ops::Range<usize>| {
        parts.map(|(buf, width)| StepRows {
            buf,
            batch,
            width,
            rows: rows.clone(),
            _borrow: std::marker::PhantomData,
        })
    };
    if batch < min_rows.max(2) || !idle() {
        f(0..batch, view(0..batch));
        return;
    }
    let count = parts_for(batch);
    for_parts(count, &|i| {
        let rows = part_range(batch, count, i);
        f(rows.clone(), view(rows));
    });
}

/// The work on one item of a [`for_blocks`]: its index, the item, its chunk of `out`.
pub type BlockPart<'a, X, T> = dyn Fn(usize, &mut X, &mut [T]) + Sync + 'a;

/// Runs `f(j, items[j], chunk j of out)` for every item, the items divided among the
/// threads in contiguous runs (one fork-join for all of them); chunk
/// `j` is `out[j·chunk..(j + 1)·chunk]` cut at the end of `out`. For work divided in
/// fixed blocks (a recurrent layer's row blocks of a batch): which thread runs a block
/// never changes what it computes.
pub fn for_blocks<X: Send, T: Send>(
    items: &mut [X],
    out: &mut [T],
    chunk: usize,
    f: &BlockPart<'_, X, T>,
) {
    let n = items.len();
    let part = |j: usize, len: usize| (j * chunk).min(len)..((j + 1) * chunk).min(len);
    if n < 2 || !idle() {
        for (j, item) in items.iter_mut().enumerate() {
            let r = part(j, out.len());
            f(j, item, &mut out[r]);
        }
        return;
    }
    let count = parts_for(n);
    let (its, outs) = (SharedMut::new(items), SharedMut::new(out));
    for_parts(count, &|h| {
        for j in part_range(n, count, h) {
            let r = part(j, outs.len());
            // SAFETY: item j and chunk j belong to this part alone (parts take disjoint
            // item ranges, and chunks of different items are disjoint).
            let (item, o) = unsafe { (&mut its.slice(j..j + 1)[0], outs.slice(r)) };
            f(j, item, o);
        }
    });
}

/// A buffer shared by the parts of a [`for_parts`] job, each of which writes only its
/// own disjoint range: what `&mut` cannot express across the parts' closures.
pub(crate) struct SharedMut<T>(*mut T, usize);
// Manual impls: a pointer is copyable whatever `T` is (derive would require `T: Copy`).
impl<T> Clone for SharedMut<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SharedMut<T> {}
// SAFETY: users only hand out disjoint ranges to the parts.
unsafe impl<T: Send> Sync for SharedMut<T> {}
unsafe impl<T: Send> Send for SharedMut<T> {}

impl<T> SharedMut<T> {
    /// Wraps `buf` for the duration of one `for_parts`.
    pub(crate) fn new(buf: &mut [T]) -> Self {
        SharedMut(buf.as_mut_ptr(), buf.len())
    }

    /// The elements in `range`.
    ///
    /// # Safety
    /// `range` must be within the buffer, the buffer must outlive the use, and no other
    /// live reference may overlap `range`.
    pub(crate) unsafe fn slice<'a>(self, range: std::ops::Range<usize>) -> &'a mut [T] {
        assert!(
            range.start <= range.end && range.end <= self.1,
            "range {range:?} outside {}",
            self.1
        );
        // SAFETY: in bounds (asserted); exclusivity per the caller.
        unsafe { std::slice::from_raw_parts_mut(self.0.add(range.start), range.end - range.start) }
    }

    /// Length of the wrapped buffer.
    pub(crate) fn len(self) -> usize {
        self.1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn split_items_covers_every_item_once() {
        let mut out = vec![0u32; 7 * 3];
        split_items(&mut out, 7, 3, 0, &|items, part| {
            for (k, item) in items.clone().enumerate() {
                for v in &mut part[k * 3..(k + 1) * 3] {
                    *v += item as u32 + 1;
                }
            }
        });
        let want: Vec<u32> = (0..21).map(|j| (j / 3) as u32 + 1).collect();
        assert_eq!(out, want);
    }

    #[test]
    fn split_rows_gives_each_row_to_one_part() {
        for n in [0, 1, 2, 7, 128] {
            let (mut a, mut b) = (vec![0u32; n * 3], vec![0u32; n * 2 + 5]);
            split_rows(n, 0, [rows(&mut a, 3), rows(&mut b, 2)], &|r, [a, b]| {
                for (k, row) in r.clone().enumerate() {
                    a[k * 3..(k + 1) * 3].iter_mut().for_each(|v| *v += row as u32 + 1);
                    b[k * 2..(k + 1) * 2].iter_mut().for_each(|v| *v += 10 * row as u32 + 1);
                }
            });
            assert_eq!(a, (0..n * 3).map(|j| (j / 3) as u32 + 1).collect::<Vec<_>>());
            assert_eq!(b[..n * 2], (0..n * 2).map(|j| 10 * (j / 2) as u32 + 1).collect::<Vec<_>>());
            assert!(b[n * 2..].iter().all(|&v| v == 0));
        }
    }

    #[test]
    fn split_batch_gives_each_part_its_rows_at_every_step() {
        for batch in [1, 2, 5, 64] {
            let (steps, w) = (3, 2);
            let mut a = vec![0u32; steps * batch * w];
            let mut h = vec![1u32; (steps + 1) * batch];
            split_batch(
                batch,
                0,
                [super::steps(&mut a, batch, w), super::steps(&mut h, batch, 1)],
                &|r, [mut a, mut h]| {
                    for s in 0..steps {
                        for (k, v) in a.at(s).chunks_mut(w).enumerate() {
                            v.iter_mut().for_each(|x| *x = (s * 100 + r.start + k) as u32);
                        }
                        let (prev, next) = h.pair(s, s + 1);
                        next.iter_mut().zip(prev).for_each(|(n, &p)| *n = 2 * p);
                    }
                },
            );
            for s in 0..steps {
                for b in 0..batch {
                    assert_eq!(
                        a[(s * batch + b) * w..(s * batch + b + 1) * w],
                        [(s * 100 + b) as u32; 2]
                    );
                }
            }
            assert_eq!(h[steps * batch..], vec![8u32; batch][..]);
        }
    }

    #[test]
    fn for_blocks_runs_every_block_once_with_its_chunk() {
        for n in [0usize, 1, 2, 3, 7] {
            let mut items = vec![0usize; n];
            let mut out = vec![0usize; 10];
            for_blocks(&mut items, &mut out, 3, &|j, it, o| {
                *it += j + 1;
                o.iter_mut().for_each(|v| *v += j + 1);
            });
            assert_eq!(items, (1..=n).collect::<Vec<_>>());
            let want: Vec<usize> = (0..10).map(|i| if i / 3 < n { i / 3 + 1 } else { 0 }).collect();
            assert_eq!(out, want);
        }
    }

    #[test]
    fn every_part_runs_once() {
        for n in [0usize, 1, 2, 3, 7, 64] {
            for _ in 0..200 {
                let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                for_parts(n, &|i| {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                });
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
            }
        }
    }

    #[test]
    fn part_ranges_tile_the_range() {
        for n in [0usize, 1, 5, 64, 1000] {
            for parts in 1..9 {
                let mut next = 0;
                for i in 0..parts {
                    let r = part_range(n, parts, i);
                    assert_eq!(r.start, next);
                    assert!(r.len() == n / parts || r.len() == n / parts + 1);
                    next = r.end;
                }
                assert_eq!(next, n);
            }
        }
    }

    #[test]
    fn both_parts_run_once_and_results_are_visible() {
        for _ in 0..1000 {
            let hits = [AtomicUsize::new(0), AtomicUsize::new(0)];
            join2(&|i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
            assert_eq!((hits[0].load(Ordering::Relaxed), hits[1].load(Ordering::Relaxed)), (1, 1));
        }
    }
}
