//! One step on one [`Batch`]: the training step (forward, loss and its gradient,
//! metrics, backward, optimizer update) and the evaluation step (inference forward,
//! loss, metrics). Both take the loss and the metrics through one routine, so
//! `fit`'s logs, validation and `evaluate` cannot drift apart.

use super::PhaseTimes;
use super::batcher::Batch;
use crate::distributed::DataParallel;
use crate::error::Result;
use crate::loss::{Loss, LossBatch, LossInfo, reduce_with};
use crate::metrics::{Metric, MetricBatch};
use crate::model::{DynModel, TrainOutput};
use crate::optim::Optimizer;
use kiln_tape::Scalar;
use std::time::Instant;

/// What a step works with beside the model and the loss (which the steps take as
/// trait objects, so this code is compiled once per float type): the optimizer, the
/// metrics, and the buffers the loss and the gradients go into (grown once, then
/// reused).
pub struct Engine<T: Scalar> {
    pub(crate) optimizer: Optimizer<T>,
    pub(crate) metrics: Vec<Box<dyn Metric<T>>>,
    pub(crate) phases: PhaseTimes,
    losses: Vec<T>,
    row_weights: Vec<T>,
    dout: Vec<T>,
    grads: Vec<T>,
    /// This rank's part when training across ranks (see [`crate::distributed`]).
    pub(crate) dist: Option<DataParallel<T>>,
}

/// How a batch's outputs split into the rows a loss scores: Keras's losses and metrics
/// reduce along the last output axis, so a `[steps, classes]` output is `steps` rows of
/// `classes` values per sample (a flat output is one row).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rows {
    /// Rows per sample.
    pub per_sample: usize,
    /// Values per row (the last output axis).
    pub width: usize,
}

/// The batch's reduced loss, with the metrics updated on the same outputs; the output
/// gradient is written into `dout` when given. Per-sample weights are repeated over a
/// sample's rows (into `row_weights`, grown once) as Keras broadcasts them.
#[allow(clippy::too_many_arguments)]
fn loss_and_metrics<T: Scalar>(
    loss: &dyn Loss<T>,
    metrics: &mut [Box<dyn Metric<T>>],
    out: &TrainOutput<'_, T>,
    activation: crate::model::OutputActivation,
    batch: &Batch<'_, T>,
    rows: Rows,
    losses: &mut [T],
    row_weights: &mut Vec<T>,
    mut dout: Option<&mut [T]>,
) -> Result<(T, LossInfo)> {
    let n = batch.len * rows.per_sample;
    let sample_weight = match batch.sample_weight {
        Some(sw) if rows.per_sample > 1 => {
            row_weights.clear();
            for &w in sw {
                row_weights.extend(std::iter::repeat_n(w, rows.per_sample));
            }
            Some(&row_weights[..n])
        }
        sw => sw,
    };
    let lb = LossBatch {
        outputs: out.outputs,
        logits: out.logits,
        activation,
        truth: batch.truth,
        batch: n,
        width: rows.width,
    };
    let info = loss.compute(&lb, &mut losses[..n], dout.as_deref_mut())?;
    let value = reduce_with(loss, &lb, info, &mut losses[..n], sample_weight, dout);
    for m in metrics.iter_mut() {
        m.update(&MetricBatch {
            outputs: out.outputs,
            truth: batch.truth,
            batch: n,
            width: rows.width,
            sample_weight,
        });
    }
    Ok((value, info))
}

impl<T: Scalar> Engine<T> {
    pub(crate) fn new(optimizer: Optimizer<T>, metrics: Vec<Box<dyn Metric<T>>>) -> Self {
        Engine {
            optimizer,
            metrics,
            phases: PhaseTimes::default(),
            losses: Vec::new(),
            row_weights: Vec::new(),
            dout: Vec::new(),
            grads: Vec::new(),
            dist: None,
        }
    }

    /// Joins the ranks training together, if any (leaves them when the world is gone),
    /// and makes every rank's parameters rank 0's.
    pub(crate) fn join_world(&mut self, model: &mut dyn DynModel<T>) -> Result<()> {
        if crate::distributed::world().is_none() {
            self.dist = None;
            return Ok(());
        }
        if self.dist.is_none() {
            self.dist = DataParallel::join();
        }
        self.broadcast_params(model, 0)
    }

    /// Copies rank 0's parameters from index `from` on (0: all of them; the trainable
    /// count: the non-trainable state) to every rank.
    pub(crate) fn broadcast_params(
        &mut self,
        model: &mut dyn DynModel<T>,
        from: usize,
    ) -> Result<()> {
        if let Some(d) = &self.dist {
            d.broadcast(&mut model.params_mut().values_mut()[from..])?;
        }
        Ok(())
    }

    /// How the model's output splits into loss rows.
    pub(crate) fn rows(model: &dyn DynModel<T>) -> Rows {
        let (per_sample, width) = crate::data::loss_rows(model.output_shape());
        Rows { per_sample, width }
    }

    fn grow(&mut self, model: &dyn DynModel<T>, b: usize) {
        let w = model.output_len();
        let n = b * Self::rows(model).per_sample;
        if self.losses.len() < n {
            self.losses.resize(n, T::zero());
            self.row_weights.reserve(n);
        }
        if self.dout.len() < b * w {
            self.dout.resize(b * w, T::zero());
        }
        let p = model.params().len();
        if self.grads.len() != p {
            self.grads.resize(p, T::zero());
        }
    }

    /// One training step on `batch`; returns its loss (as the loss reduces it) and
    /// updates the metrics and the phase timings. Across ranks, this rank runs forward
    /// and backward on its slice of the batch; the loss and the metrics see the whole
    /// batch's gathered outputs, and the gradients are summed over ranks.
    pub(crate) fn train_step(
        &mut self,
        model: &mut dyn DynModel<T>,
        loss: &dyn Loss<T>,
        batch: &Batch<'_, T>,
    ) -> Result<f64> {
        let t_forward = Instant::now();
        self.grow(model, batch.len);
        let (b, w, rows) = (batch.len, model.output_len(), Self::rows(model));
        let inp = model.input_len();
        let Engine { optimizer, metrics, phases, losses, row_weights, dout, grads, dist } = self;
        let act = model.output_activation();
        // This process's rows of the batch and the whole batch's outputs: across
        // ranks, its slice's forward pass and then every slice's outputs, gathered.
        let (local, out) = match dist {
            None => (0..b, model.forward_train(batch.x, b)?),
            Some(d) => {
                let local = d.slice(b);
                let out =
                    d.forward_gathered(batch.x, b, inp, w, act, |x, n| model.forward_train(x, n))?;
                (local, out)
            }
        };
        let t_loss = Instant::now();
        let dout_all = Some(&mut dout[..b * w]);
        let (value, info) =
            loss_and_metrics(loss, metrics, &out, act, batch, rows, losses, row_weights, dout_all)?;
        let t_backward = Instant::now();
        let backward = if local.is_empty() {
            grads.iter_mut().for_each(|g| *g = T::zero());
            Ok(())
        } else {
            let (x, dy) = (
                &batch.x[local.start * inp..local.end * inp],
                &dout[local.start * w..local.end * w],
            );
            model.backward(x, dy, info.wrt_logits, grads)
        };
        let t = model.params().trainable_len();
        match dist {
            None => backward?,
            Some(d) => {
                d.agree(backward)?;
                let t_sum = Instant::now();
                d.sum_gradients(&mut grads[..t])?;
                phases.all_reduce += t_sum.elapsed().as_secs_f64();
            }
        }
        let t_optimizer = Instant::now();
        let store = model.params_mut();
        let (values, entries) = store.split_trainable();
        optimizer.apply(values, &mut grads[..t], entries)?;
        let t_end = Instant::now();
        phases.forward += (t_loss - t_forward).as_secs_f64();
        phases.loss += (t_backward - t_loss).as_secs_f64();
        phases.backward += (t_optimizer - t_backward).as_secs_f64();
        phases.optimizer += (t_end - t_optimizer).as_secs_f64();
        phases.steps += 1;
        Ok(value.as_f64())
    }

    /// Outputs for every sample of `x` (`n` samples) in inference mode, `batch` at a
    /// time, across ranks: each rank computes its slice of every batch and the slices
    /// are gathered, so every rank returns all outputs. `None` when training alone
    /// (the caller predicts as usual).
    pub(crate) fn predict_across_ranks(
        &mut self,
        model: &mut dyn DynModel<T>,
        x: &[T],
        n: usize,
        batch: usize,
    ) -> Result<Option<Vec<T>>> {
        self.join_world(model)?;
        let (inp, w) = (model.input_len(), model.output_len());
        let Engine { dist, .. } = self;
        let Some(d) = dist else {
            return Ok(None);
        };
        let act = model.output_activation();
        let mut out = vec![T::zero(); n * w];
        let mut lo = 0;
        while lo < n {
            let b = batch.min(n - lo);
            let xb = &x[lo * inp..(lo + b) * inp];
            let o = d.forward_gathered(xb, b, inp, w, act, |x, n| model.forward_infer(x, n))?;
            out[lo * w..(lo + b) * w].copy_from_slice(o.outputs);
            lo += b;
        }
        Ok(Some(out))
    }

    /// One evaluation step on `batch` in inference mode; returns its loss and updates
    /// the metrics (across ranks: each rank's slice, gathered, as in [`Self::train_step`]).
    pub(crate) fn eval_step(
        &mut self,
        model: &mut dyn DynModel<T>,
        loss: &dyn Loss<T>,
        batch: &Batch<'_, T>,
    ) -> Result<f64> {
        self.grow(model, batch.len);
        let (b, w, rows) = (batch.len, model.output_len(), Self::rows(model));
        let inp = model.input_len();
        let Engine { metrics, losses, row_weights, dist, .. } = self;
        let act = model.output_activation();
        let out = match dist {
            None => model.forward_infer(batch.x, b)?,
            Some(d) => {
                d.forward_gathered(batch.x, b, inp, w, act, |x, n| model.forward_infer(x, n))?
            }
        };
        let (value, _) =
            loss_and_metrics(loss, metrics, &out, act, batch, rows, losses, row_weights, None)?;
        Ok(value.as_f64())
    }
}
