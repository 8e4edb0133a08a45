//! The batcher (Keras's `EpochIterator`): the order of the training rows, reshuffled
//! each epoch from (seed, epoch) alone, and the reused buffers a batch is gathered into.

use crate::data::{LabelBatch, Labels, Truth};
use kiln_tape::Scalar;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;
use std::ops::Range;

/// One batch as a step sees it: inputs, labels and per-sample weights.
#[derive(Clone, Copy, Debug)]
pub struct Batch<'b, T> {
    /// `len` samples' inputs, one after the other.
    pub x: &'b [T],
    /// Their labels.
    pub truth: Truth<'b, T>,
    /// Their loss weights (sample weight × class weight), when any were given.
    pub sample_weight: Option<&'b [T]>,
    /// Samples in the batch.
    pub len: usize,
}

/// Per-sample loss weights of a fit: `sample_weight[row] × class_weight[class]`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Weights<'w, T> {
    pub sample: Option<&'w [T]>,
    pub class: Option<&'w HashMap<usize, f64>>,
}

impl<T> Weights<'_, T> {
    fn any(&self) -> bool {
        self.sample.is_some() || self.class.is_some()
    }
}

/// Row order and batch buffers; they grow to the largest batch once and are reused.
pub struct Batcher<T> {
    order: Vec<usize>,
    rows: Vec<usize>,
    x: Vec<T>,
    y: LabelBatch<T>,
    sw: Vec<T>,
}

impl<T> Default for Batcher<T> {
    fn default() -> Self {
        Batcher {
            order: Vec::new(),
            rows: Vec::new(),
            x: Vec::new(),
            y: LabelBatch::default(),
            sw: Vec::new(),
        }
    }
}

impl<T: Scalar> Batcher<T> {
    /// Sets the order of rows `0..n` for `epoch`: shuffled from (seed, epoch) alone, so
    /// a resumed run (BackupAndRestore, `initial_epoch`) sees the same batches.
    pub(crate) fn start_epoch(&mut self, n: usize, shuffle: bool, seed: u64, epoch: usize) {
        self.order.clear();
        self.order.extend(0..n);
        if shuffle {
            self.order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed.wrapping_add(epoch as u64)));
        }
    }

    /// Takes positions `span` of the epoch's order as the next batch's rows.
    pub(crate) fn take_ordered(&mut self, span: Range<usize>) {
        self.rows.clear();
        self.rows.extend_from_slice(&self.order[span]);
    }

    /// Takes rows `span` themselves (evaluation, validation).
    pub(crate) fn take_rows(&mut self, span: Range<usize>) {
        self.rows.clear();
        self.rows.extend(span);
    }

    /// Gathers the taken rows of `x` (samples of `inp` values) and `y` into a batch:
    /// contiguous rows are used in place, others copied; weights are formed when given
    /// (class weights by the label's class, or the argmax of a dense label of `width`).
    pub(crate) fn gather<'b, Y: Labels<T> + ?Sized>(
        &'b mut self,
        x: &'b [T],
        inp: usize,
        y: &Y,
        weights: Weights<'_, T>,
        width: usize,
    ) -> Batch<'b, T> {
        let b = self.rows.len();
        let contiguous = self.rows.windows(2).all(|p| p[1] == p[0] + 1);
        let xb: &[T] = if contiguous {
            let r0 = self.rows.first().copied().unwrap_or(0);
            &x[r0 * inp..(r0 + b) * inp]
        } else {
            if self.x.len() < b * inp {
                self.x.resize(b * inp, T::zero());
            }
            for (k, &r) in self.rows.iter().enumerate() {
                self.x[k * inp..(k + 1) * inp].copy_from_slice(&x[r * inp..(r + 1) * inp]);
            }
            &self.x[..b * inp]
        };
        y.gather(&self.rows, &mut self.y);
        let truth = self.y.truth();
        let sample_weight = if weights.any() {
            self.sw.clear();
            for (k, &r) in self.rows.iter().enumerate() {
                let mut w = weights.sample.map_or(T::one(), |s| s[r]);
                if let Some(cw) = weights.class {
                    let class = match truth {
                        Truth::Classes(c) => c[k],
                        Truth::Dense(d) => argmax(&d[k * width..(k + 1) * width]),
                    };
                    w *= T::of(cw.get(&class).copied().unwrap_or(1.0));
                }
                self.sw.push(w);
            }
            Some(&self.sw[..])
        } else {
            None
        };
        Batch { x: xb, truth, sample_weight, len: b }
    }
}

fn argmax<T: Scalar>(v: &[T]) -> usize {
    v.iter().enumerate().fold(0, |best, (i, x)| if *x > v[best] { i } else { best })
}
