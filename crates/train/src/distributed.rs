//! Data-parallel training across processes: what `fit`, `evaluate` and the callbacks
//! do when the program runs as several ranks (under `mpirun -np N`, with kiln's `mpi`
//! feature and `kiln::mpi::init()` at the top of `main`).
//!
//! Every rank holds the whole data set and the same model. (`predict` on a compiled
//! model splits its batches the same way and gathers the outputs on every rank.) `batch_size` is the global
//! batch, as in Keras's distribution strategies: each rank runs forward and backward on
//! its slice of every batch (rows `part_range(batch, ranks, rank)`), then
//! - the outputs of all slices are gathered on every rank, so every rank computes the
//!   loss, its gradient and the metrics over the whole batch exactly as one process
//!   would: History, validation and `evaluate` equal the single-process ones;
//! - each rank's weight gradient (its rows' share of the batch gradient) is summed
//!   over ranks once per step by a fixed-order all-reduce: each rank receives block `r`
//!   of every rank's gradient, adds them in rank order 0, 1, …, and the sums are
//!   gathered back. MPI's own reduction order never enters, so a run repeats bit for
//!   bit, and every rank applies the same update to the same weights.
//!
//! Rank 0's weights are broadcast when training starts; the non-trainable state
//! (BatchNormalization's moving statistics, computed from each rank's slice) is taken
//! from rank 0 after every epoch. Only rank 0 prints progress and writes files
//! (checkpoints, CSV logs, TensorBoard events); callbacks that decide (EarlyStopping,
//! ReduceLROnPlateau) run on every rank on the same logs, so they decide alike. After
//! every step and every callback round the ranks agree on success: an error on one rank
//! ends `fit` with an error on all of them instead of leaving the others waiting.
//!
//! The transport is the [`Collective`] trait; the MPI implementation lives in kiln's
//! `mpi` feature. Nothing here allocates per step: buffers grow to the largest batch
//! once.

use crate::error::{Result, TrainError};
use crate::model::{OutputActivation, TrainOutput};
use kiln_tape::Scalar;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

/// The collective operations data-parallel training needs, over bytes. Every rank calls
/// each operation in the same order with buffers of the sizes described.
pub trait Collective: Send + Sync {
    /// This process's rank, `0..size()`.
    fn rank(&self) -> usize;
    /// How many ranks train together.
    fn size(&self) -> usize;
    /// Copies rank 0's `buf` into every rank's `buf` (same length everywhere).
    fn broadcast(&self, buf: &mut [u8]) -> Result<()>;
    /// Places every rank's `send` into `recv`: rank `r`'s `counts[r]` bytes at byte
    /// `displs[r]`.
    fn all_gather(
        &self,
        send: &[u8],
        recv: &mut [u8],
        counts: &[i32],
        displs: &[i32],
    ) -> Result<()>;
    /// Sends block `r` of `send` (`send.len() / size()` bytes) to rank `r` and receives
    /// rank `r`'s block for this rank into block `r` of `recv`.
    fn all_to_all(&self, send: &[u8], recv: &mut [u8]) -> Result<()>;
    /// The largest `v` over all ranks, on every rank.
    fn max(&self, v: u64) -> Result<u64>;
}

static WORLD: RwLock<Option<Arc<dyn Collective>>> = RwLock::new(None);

/// Makes `world` the ranks `fit` and `evaluate` train with, until the returned guard is
/// dropped. `kiln::mpi::init()` calls it; call it yourself for another transport.
pub fn set_world(world: Arc<dyn Collective>) -> WorldGuard {
    *WORLD.write().unwrap_or_else(|e| e.into_inner()) = Some(world);
    WorldGuard(())
}

/// Keeps the world set by [`set_world`]; dropping it returns to single-process training.
#[must_use = "the world is unset again when the guard is dropped"]
pub struct WorldGuard(());

impl Drop for WorldGuard {
    fn drop(&mut self) {
        *WORLD.write().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// The ranks training together, when more than one.
pub fn world() -> Option<Arc<dyn Collective>> {
    WORLD.read().unwrap_or_else(|e| e.into_inner()).clone().filter(|w| w.size() > 1)
}

/// This process's rank (0 when training alone).
pub fn rank() -> usize {
    world().map_or(0, |w| w.rank())
}

/// How many ranks train together (1 when alone).
pub fn size() -> usize {
    world().map_or(1, |w| w.size())
}

/// Whether this process prints and writes files: rank 0, or the only process.
pub fn is_chief() -> bool {
    rank() == 0
}

/// The rows of the whole batch this process computes, as `first..total`, while a
/// data-parallel step runs (`0..0` otherwise: all of the batch). Stochastic layers
/// (Dropout, recurrent dropout) draw their masks at those rows' places in the whole
/// batch's stream, so a rank drops exactly what one process would.
pub fn batch_rows() -> Range<usize> {
    BATCH_FIRST.load(Ordering::Relaxed)..BATCH_TOTAL.load(Ordering::Relaxed)
}

static BATCH_FIRST: AtomicUsize = AtomicUsize::new(0);
static BATCH_TOTAL: AtomicUsize = AtomicUsize::new(0);

/// Sets [`batch_rows`] for the passes of one step (and back to `0..0` after it).
fn set_batch_rows(rows: Range<usize>) {
    BATCH_FIRST.store(rows.start, Ordering::Relaxed);
    BATCH_TOTAL.store(rows.end, Ordering::Relaxed);
}

/// The bytes of a slice of f32 or f64 values.
fn bytes<T: Scalar>(v: &[T]) -> &[u8] {
    // SAFETY: `Scalar` is implemented for f32 and f64 only (plain old data, no padding,
    // every bit pattern valid), and u8 has alignment 1.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast(), std::mem::size_of_val(v)) }
}

fn bytes_mut<T: Scalar>(v: &mut [T]) -> &mut [u8] {
    // SAFETY: as in `bytes`; any bytes written are a valid f32/f64.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast(), std::mem::size_of_val(v)) }
}

fn bytes_u64(v: &mut [u64]) -> &mut [u8] {
    // SAFETY: u64 is plain old data; any bytes written are a valid u64.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast(), std::mem::size_of_val(v)) }
}

fn count(n: usize) -> Result<i32> {
    i32::try_from(n).map_err(|_| TrainError::Distributed {
        message: format!(
            "a message of {n} bytes is beyond MPI's 2 GiB count limit; use a smaller model or batch"
        ),
    })
}

/// One rank's part of data-parallel training: its slice of each batch and the buffers
/// the gathers and the gradient all-reduce use (grown once, then reused).
pub(crate) struct DataParallel<T> {
    world: Arc<dyn Collective>,
    rank: usize,
    size: usize,
    counts: Vec<i32>,
    displs: Vec<i32>,
    /// The whole batch's outputs and logits, gathered.
    outputs: Vec<T>,
    logits: Vec<T>,
    send: Vec<T>,
    recv: Vec<T>,
}

impl<T: Scalar> DataParallel<T> {
    /// The data-parallel state for `world`, or `None` when training alone.
    pub fn join() -> Option<Self> {
        let world = world()?;
        let (rank, size) = (world.rank(), world.size());
        Some(DataParallel {
            world,
            rank,
            size,
            counts: vec![0; size],
            displs: vec![0; size],
            outputs: Vec::new(),
            logits: Vec::new(),
            send: Vec::new(),
            recv: Vec::new(),
        })
    }

    /// Whether this is rank 0.
    pub fn chief(&self) -> bool {
        self.rank == 0
    }

    /// This rank's rows of a batch of `b`.
    pub fn slice(&self, b: usize) -> Range<usize> {
        kiln_tape::kernels::parallel::part_range(b, self.size, self.rank)
    }

    /// After every rank's forward pass over its slice (`out`: `None` for an empty
    /// slice): agrees that all succeeded, then gathers the whole batch's outputs, and
    /// its logits under a final softmax or sigmoid, for [`Self::gathered`].
    fn gather_outputs(
        &mut self,
        out: Result<Option<TrainOutput<'_, T>>>,
        b: usize,
        width: usize,
        act: OutputActivation,
    ) -> Result<()> {
        let out = self.agree(out)?;
        let has_logits = act != OutputActivation::Linear;
        if let Some(o) = &out
            && o.logits.is_some() != has_logits
        {
            return Err(TrainError::Distributed {
                message: "the model's outputs and its output activation disagree on logits".into(),
            });
        }
        let outputs = out.as_ref().map_or(&[][..], |o| o.outputs);
        self.gather_rows(outputs, b, width, false)?;
        if has_logits {
            let logits = out.as_ref().and_then(|o| o.logits).unwrap_or(&[]);
            self.gather_rows(logits, b, width, true)?;
        }
        Ok(())
    }

    /// Runs `forward` on this rank's rows of a batch of `b` samples of `inp` values
    /// (`x` holds the whole batch), with [`batch_rows`] set to them, and returns the
    /// whole batch's outputs, gathered from every rank.
    pub fn forward_gathered<'m, F>(
        &mut self,
        x: &[T],
        b: usize,
        inp: usize,
        width: usize,
        act: OutputActivation,
        forward: F,
    ) -> Result<TrainOutput<'_, T>>
    where
        F: FnOnce(&[T], usize) -> Result<TrainOutput<'m, T>>,
        T: 'm,
    {
        let local = self.slice(b);
        set_batch_rows(local.start..b);
        let out = if local.is_empty() {
            Ok(None)
        } else {
            forward(&x[local.start * inp..local.end * inp], local.len()).map(Some)
        };
        set_batch_rows(0..0);
        self.gather_outputs(out, b, width, act)?;
        Ok(self.gathered(b, width, act))
    }

    /// The whole batch's outputs gathered by [`Self::gather_outputs`].
    fn gathered(&self, b: usize, width: usize, act: OutputActivation) -> TrainOutput<'_, T> {
        TrainOutput {
            outputs: &self.outputs[..b * width],
            logits: (act != OutputActivation::Linear).then(|| &self.logits[..b * width]),
        }
    }

    /// Gathers every rank's rows (`width` values each) of a batch of `b` into the
    /// outputs (or logits) buffer, `b · width` values in row order.
    fn gather_rows(&mut self, local: &[T], b: usize, width: usize, logits: bool) -> Result<()> {
        let sz = std::mem::size_of::<T>();
        for r in 0..self.size {
            let rows = kiln_tape::kernels::parallel::part_range(b, self.size, r);
            self.counts[r] = count(rows.len() * width * sz)?;
            self.displs[r] = count(rows.start * width * sz)?;
        }
        let n = self.slice(b).len() * width;
        let all = if logits { &mut self.logits } else { &mut self.outputs };
        if all.len() < b * width {
            all.resize(b * width, T::zero());
        }
        self.world.all_gather(
            bytes(&local[..n]),
            bytes_mut(&mut all[..b * width]),
            &self.counts,
            &self.displs,
        )
    }

    /// Replaces `grads` on every rank by the sum over ranks, added in rank order.
    pub fn sum_gradients(&mut self, grads: &mut [T]) -> Result<()> {
        let (p, r) = (grads.len(), self.size);
        let block = p.div_ceil(r);
        if self.send.len() != block * r {
            self.send.resize(block * r, T::zero());
            self.recv.resize(block * r, T::zero());
        }
        self.send[..p].copy_from_slice(grads);
        self.world.all_to_all(bytes(&self.send), bytes_mut(&mut self.recv))?;
        // Block `rank` of every rank's gradient is in recv, rank after rank: add them in
        // rank order into this rank's block of `send`, then gather every rank's sums.
        let mine = self.rank * block..(self.rank + 1) * block;
        let (head, rest) = self.recv.split_at(block);
        let sums = &mut self.send[mine.clone()];
        sums.copy_from_slice(head);
        for from in rest.chunks_exact(block) {
            for (s, &g) in sums.iter_mut().zip(from) {
                *s += g;
            }
        }
        let sz = std::mem::size_of::<T>();
        for q in 0..r {
            self.counts[q] = count(block * sz)?;
            self.displs[q] = count(q * block * sz)?;
        }
        self.world.all_gather(
            bytes(&self.send[mine]),
            bytes_mut(&mut self.recv),
            &self.counts,
            &self.displs,
        )?;
        grads.copy_from_slice(&self.recv[..p]);
        Ok(())
    }

    /// Copies rank 0's `values` to every rank.
    pub fn broadcast(&self, values: &mut [T]) -> Result<()> {
        self.world.broadcast(bytes_mut(values))
    }

    /// After a round of callbacks: agrees on success as [`Self::agree`] does, and on
    /// whether to stop (any rank's callback asking stops every rank).
    pub fn agree_round(&self, result: Result<()>, stop: &mut bool) -> Result<()> {
        *stop = self.exchange(result, *stop)?.1;
        Ok(())
    }

    /// Copies rank 0's optimizer state (iterations, learning rate, slots, scalars) and
    /// resume epoch to every rank: after callbacks that run on rank 0 alone
    /// (BackupAndRestore) restored them there.
    pub fn broadcast_state(
        &self,
        optimizer: &mut crate::optim::Optimizer<T>,
        trainable: usize,
        resume: &mut Option<usize>,
    ) -> Result<()> {
        let mut head = [
            resume.map_or(u64::MAX, |e| e as u64),
            optimizer.iterations(),
            optimizer.learning_rate().to_bits(),
        ];
        self.world.broadcast(bytes_u64(&mut head))?;
        *resume = (head[0] != u64::MAX).then_some(head[0] as usize);
        optimizer.set_iterations(head[1]);
        optimizer.set_learning_rate(f64::from_bits(head[2]))?;
        for (_, slot) in optimizer.slots(trainable) {
            self.world.broadcast(bytes_mut(&mut slot[..]))?;
        }
        for (_, v) in optimizer.scalars() {
            let mut bits = [v.to_bits()];
            self.world.broadcast(bytes_u64(&mut bits))?;
            *v = f64::from_bits(bits[0]);
        }
        Ok(())
    }

    /// Whether every rank succeeded: this rank's `result` when it failed, an error naming
    /// the rank that did when another failed, `Ok` when none did.
    pub fn agree<R>(&self, result: Result<R>) -> Result<R> {
        Ok(self.exchange(result, false)?.0)
    }

    /// The one `max` behind [`Self::agree`] and [`Self::agree_round`]: the failing
    /// rank's code in the high bits, the stop request in bit 0 (with no failure
    /// anywhere, the maximum's bit 0 is the OR of the requests). Returns this rank's
    /// value and whether any rank asked to stop.
    fn exchange<R>(&self, result: Result<R>, stop: bool) -> Result<(R, bool)> {
        let failed = if result.is_err() { self.rank as u64 + 1 } else { 0 };
        let worst = self.world.max(failed << 1 | u64::from(stop))?;
        let value = result?;
        if worst >> 1 > 0 {
            return Err(TrainError::Distributed {
                message: format!(
                    "rank {} failed (its own error is in its output), so every rank stops",
                    (worst >> 1) - 1
                ),
            });
        }
        Ok((value, worst & 1 == 1))
    }
}
