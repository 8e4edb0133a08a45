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
use crate::model::{Model, TrainOutput};
use crate::optim::Optimizer;
use kiln_tape::{Scalar, Zero};
use std::time::Instant;

/// What a step works with: the model, its optimizer, loss and metrics, and the
/// buffers the loss and the gradients go into (grown once, then reused).
pub(crate) struct Engine<M: Model, L> {
    pub model: M,
    pub optimizer: Optimizer<M::Scalar>,
    pub loss: L,
    pub metrics: Vec<Box<dyn Metric<M::Scalar>>>,
    pub phases: PhaseTimes,
    losses: Vec<M::Scalar>,
    row_weights: Vec<M::Scalar>,
    dout: Vec<M::Scalar>,
    grads: Vec<M::Scalar>,
    /// This rank's part when training across ranks (see [`crate::distributed`]).
    pub dist: Option<DataParallel<M::Scalar>>,
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
fn loss_and_metrics<T: Scalar, L: Loss<T>>(
    loss: &L,
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

impl<M: Model, L: Loss<M::Scalar>> Engine<M, L> {
    pub fn new(
        model: M,
        optimizer: Optimizer<M::Scalar>,
        loss: L,
        metrics: Vec<Box<dyn Metric<M::Scalar>>>,
    ) -> Self {
        Engine {
            model,
            optimizer,
            loss,
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
    pub fn join_world(&mut self) -> Result<()> {
        if crate::distributed::world().is_none() {
            self.dist = None;
            return Ok(());
        }
        if self.dist.is_none() {
            self.dist = DataParallel::join();
        }
        self.broadcast_params(0)
    }

    /// Copies rank 0's parameters from index `from` on (0: all of them; the trainable
    /// count: the non-trainable state) to every rank.
    pub fn broadcast_params(&mut self, from: usize) -> Result<()> {
        if let Some(d) = &self.dist {
            d.broadcast(&mut self.model.params_mut().values_mut()[from..])?;
        }
        Ok(())
    }

    /// How the model's output splits into loss rows.
    pub fn rows(&self) -> Rows {
        let (per_sample, width) = crate::data::loss_rows(self.model.output_shape());
        Rows { per_sample, width }
    }

    fn grow(&mut self, b: usize) {
        let w = self.model.output_len();
        let n = b * self.rows().per_sample;
        if self.losses.len() < n {
            self.losses.resize(n, M::Scalar::zero());
            self.row_weights.reserve(n);
        }
        if self.dout.len() < b * w {
            self.dout.resize(b * w, M::Scalar::zero());
        }
        let p = self.model.params().len();
        if self.grads.len() != p {
            self.grads.resize(p, M::Scalar::zero());
        }
    }

    /// One training step on `batch`; returns its loss (as the loss reduces it) and
    /// updates the metrics and the phase timings. Across ranks, this rank runs forward
    /// and backward on its slice of the batch; the loss and the metrics see the whole
    /// batch's gathered outputs, and the gradients are summed over ranks.
    pub fn train_step(&mut self, batch: &Batch<'_, M::Scalar>) -> Result<f64> {
        let t_forward = Instant::now();
        self.grow(batch.len);
        let (b, w, rows) = (batch.len, self.model.output_len(), self.rows());
        let inp = self.model.input_len();
        let Engine {
            model,
            optimizer,
            loss,
            metrics,
            phases,
            losses,
            row_weights,
            dout,
            grads,
            dist,
        } = self;
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
        let (value, info) = loss_and_metrics(
            &*loss,
            metrics,
            &out,
            act,
            batch,
            rows,
            losses,
            row_weights,
            dout_all,
        )?;
        let t_backward = Instant::now();
        let backward = if local.is_empty() {
            grads.iter_mut().for_each(|g| *g = M::Scalar::zero());
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
    pub fn predict_across_ranks(
        &mut self,
        x: &[M::Scalar],
        n: usize,
        batch: usize,
    ) -> Result<Option<Vec<M::Scalar>>> {
        self.join_world()?;
        let (inp, w) = (self.model.input_len(), self.model.output_len());
        let Engine { model, dist, .. } = self;
        let Some(d) = dist else {
            return Ok(None);
        };
        let act = model.output_activation();
        let mut out = vec![M::Scalar::zero(); n * w];
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
    pub fn eval_step(&mut self, batch: &Batch<'_, M::Scalar>) -> Result<f64> {
        self.grow(batch.len);
        let (b, w, rows) = (batch.len, self.model.output_len(), self.rows());
        let inp = self.model.input_len();
        let Engine { model, loss, metrics, losses, row_weights, dist, .. } = self;
        let act = model.output_activation();
        let out = match dist {
            None => model.forward_infer(batch.x, b)?,
            Some(d) => {
                d.forward_gathered(batch.x, b, inp, w, act, |x, n| model.forward_infer(x, n))?
            }
        };
        let (value, _) =
            loss_and_metrics(&*loss, metrics, &out, act, batch, rows, losses, row_weights, None)?;
        Ok(value.as_f64())
    }
}
