//! A minimal two-way fork-join for kernels: [`join2`] runs `f(0)` on the calling thread
//! and `f(1)` on one persistent worker thread, and returns when both are done.
//!
//! The worker is started once (the only allocation) and then spins briefly before
//! sleeping between jobs, so a training step pays no allocation and little latency.
//! Kernels split work by output blocks, so every output element is computed exactly as
//! it would be on one thread: results do not depend on the thread count.
//!
//! Set `KILN_THREADS=1` to keep everything on the calling thread.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The job: a pointer to a closure on the caller's stack, valid until the caller has
/// seen the worker finish.
#[derive(Clone, Copy)]
struct Job(*const (dyn Fn(usize) + Sync));
// SAFETY: the closure is `Sync` and outlives the job (join2 waits for completion).
unsafe impl Send for Job {}

struct Pool {
    job: Mutex<Option<Job>>,
    posted: AtomicU64,
    done: AtomicU64,
    wake: Condvar,
    busy: AtomicBool,
}

fn pool() -> Option<&'static Pool> {
    static POOL: OnceLock<Option<&'static Pool>> = OnceLock::new();
    *POOL.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let wanted = std::env::var("KILN_THREADS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(cores);
        if cores < 2 || wanted < 2 {
            return None;
        }
        let p: &'static Pool = Box::leak(Box::new(Pool {
            job: Mutex::new(None),
            posted: AtomicU64::new(0),
            done: AtomicU64::new(0),
            wake: Condvar::new(),
            busy: AtomicBool::new(false),
        }));
        std::thread::Builder::new().name("kiln-worker".into()).spawn(move || worker(p)).ok()?;
        Some(p)
    })
}

fn worker(p: &'static Pool) {
    let mut seen = 0u64;
    loop {
        // Spin for a while (jobs come in bursts during training), then sleep. 300 µs
        // spans a whole MLP step at batch 32, so the optimizer's split finds the worker
        // awake: waking it through the condvar cost more than the split saved (the
        // Adam phase took 37 µs per step with a 50 µs spin, 14 µs with 300 µs).
        let start = Instant::now();
        while p.posted.load(Ordering::Acquire) == seen
            && start.elapsed() < Duration::from_micros(300)
        {
            std::hint::spin_loop();
        }
        let job = {
            let mut guard = p.job.lock().unwrap_or_else(|e| e.into_inner());
            while p.posted.load(Ordering::Acquire) == seen {
                guard = p.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
            }
            seen = p.posted.load(Ordering::Acquire);
            *guard
        };
        if let Some(Job(f)) = job {
            // SAFETY: the poster keeps the closure alive until `done` reaches `seen`.
            unsafe { (*f)(1) };
        }
        p.done.store(seen, Ordering::Release);
    }
}

/// Number of parallel calls made so far (for tests).
static JOINS: AtomicUsize = AtomicUsize::new(0);

/// Whether a second thread is available to [`join2`].
pub fn available() -> bool {
    pool().is_some()
}

/// Runs `f(0)` here and `f(1)` on the worker, in parallel, and returns when both are
/// done. Without a worker (one core, `KILN_THREADS=1`, or the worker busy with another
/// caller) it runs both parts here, one after the other.
pub fn join2(f: &(dyn Fn(usize) + Sync)) {
    let Some(p) = pool() else {
        f(0);
        f(1);
        return;
    };
    if p.busy.swap(true, Ordering::Acquire) {
        f(0);
        f(1);
        return;
    }
    JOINS.fetch_add(1, Ordering::Relaxed);
    // SAFETY (lifetime): `f` outlives the job because we wait for `done` below before
    // returning; the transmute only erases that lifetime.
    let job = Job(unsafe {
        std::mem::transmute::<
            *const (dyn Fn(usize) + Sync + '_),
            *const (dyn Fn(usize) + Sync + 'static),
        >(f)
    });
    let ticket = {
        let mut guard = p.job.lock().unwrap_or_else(|e| e.into_inner());
        *guard = Some(job);
        let t = p.posted.fetch_add(1, Ordering::AcqRel) + 1;
        p.wake.notify_one();
        t
    };
    f(0);
    while p.done.load(Ordering::Acquire) < ticket {
        std::hint::spin_loop();
    }
    *p.job.lock().unwrap_or_else(|e| e.into_inner()) = None;
    p.busy.store(false, Ordering::Release);
}

/// Splits `out`, which holds `items` items of `per` elements each, into two halves at
/// an item boundary and runs `f(items_range, half)` on each half in parallel. Small
/// jobs (under `min_elems` elements) run on the calling thread in one call.
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
    let half = items / 2;
    let (lo, hi) = out.split_at_mut(half * per);
    struct Halves<T>(*mut T, usize, *mut T, usize);
    // SAFETY: the two halves are disjoint; each is used by exactly one part.
    unsafe impl<T: Send> Sync for Halves<T> {}
    impl<T> Halves<T> {
        fn part(&self, i: usize) -> (*mut T, usize) {
            if i == 0 { (self.0, self.1) } else { (self.2, self.3) }
        }
    }
    let halves = Halves(lo.as_mut_ptr(), lo.len(), hi.as_mut_ptr(), hi.len());
    join2(&|i| {
        let (ptr, len) = halves.part(i);
        // SAFETY: see `Halves`; the borrow of `out` outlives `join2`.
        let part = unsafe { std::slice::from_raw_parts_mut(ptr, len) };
        f(if i == 0 { 0..half } else { half..items }, part);
    });
}

/// The work on one half of a [`split_zip`]: `K` buffers to update and the shared input.
pub type ZipPart<'a, T, const K: usize> = dyn Fn([&mut [T]; K], &[T]) + Sync + 'a;

/// Splits `K` equally long buffers and one shared input in two halves at the same point
/// and runs `f` on each half, on both cores when there are at least `min` elements.
/// Meant for elementwise updates (an optimizer's step over weights and its slots):
/// each element is computed exactly as on one thread.
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
    // A multiple of 64 elements, so both halves start on a cache line.
    let mid = (len / 2).next_multiple_of(64).min(len);
    let ptrs: [SharedMut<T>; K] = bufs.map(SharedMut::new);
    join2(&|i| {
        let range = if i == 0 { 0..mid } else { mid..len };
        // SAFETY: the halves are disjoint ranges of buffers borrowed for this call.
        let parts = ptrs.map(|p| unsafe { p.slice(range.clone()) });
        f(parts, &shared[range]);
    });
}

/// A buffer shared by the two halves of a [`join2`] job, each of which writes only its
/// own disjoint range: what `&mut` cannot express across the two closures.
pub(crate) struct SharedMut<T>(*mut T, usize);
// Manual impls: a pointer is copyable whatever `T` is (derive would require `T: Copy`).
impl<T> Clone for SharedMut<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SharedMut<T> {}
// SAFETY: users only hand out disjoint ranges to the two halves.
unsafe impl<T: Send> Sync for SharedMut<T> {}
unsafe impl<T: Send> Send for SharedMut<T> {}

impl<T> SharedMut<T> {
    /// Wraps `buf` for the duration of one `join2`.
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
