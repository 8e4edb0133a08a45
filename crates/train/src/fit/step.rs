//! One step on one [`Batch`]: the training step (forward, loss and its gradient,
//! metrics, backward, optimizer update) and the evaluation step (inference forward,
//! loss, metrics). Both take the loss and the metrics through one routine, so
//! `fit`'s logs, validation and `evaluate` cannot drift apart.

use super::PhaseTimes;
use super::batcher::Batch;
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
        }
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
    /// updates the metrics and the phase timings.
    pub fn train_step(&mut self, batch: &Batch<'_, M::Scalar>) -> Result<f64> {
        let t_forward = Instant::now();
        self.grow(batch.len);
        let (b, w, rows) = (batch.len, self.model.output_len(), self.rows());
        let Engine { model, optimizer, loss, metrics, phases, losses, row_weights, dout, grads } =
            self;
        let act = model.output_activation();
        let out = model.forward_train(batch.x, b)?;
        let t_loss = Instant::now();
        let (value, info) = loss_and_metrics(
            &*loss,
            metrics,
            &out,
            act,
            batch,
            rows,
            losses,
            row_weights,
            Some(&mut dout[..b * w]),
        )?;
        let t_backward = Instant::now();
        model.backward(batch.x, &dout[..b * w], info.wrt_logits, grads)?;
        let t_optimizer = Instant::now();
        let store = model.params_mut();
        let t = store.trainable_len();
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

    /// One evaluation step on `batch` in inference mode; returns its loss and updates
    /// the metrics.
    pub fn eval_step(&mut self, batch: &Batch<'_, M::Scalar>) -> Result<f64> {
        self.grow(batch.len);
        let (b, rows) = (batch.len, self.rows());
        let Engine { model, loss, metrics, losses, row_weights, .. } = self;
        let act = model.output_activation();
        let out = model.forward_infer(batch.x, b)?;
        let (value, _) =
            loss_and_metrics(&*loss, metrics, &out, act, batch, rows, losses, row_weights, None)?;
        Ok(value.as_f64())
    }
}
