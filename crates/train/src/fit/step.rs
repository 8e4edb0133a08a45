//! One step on one [`Batch`]: the training step (forward, loss and its gradient,
//! metrics, backward, optimizer update) and the evaluation step (inference forward,
//! loss, metrics). Both take the loss and the metrics through one routine, so
//! `fit`'s logs, validation and `evaluate` cannot drift apart.

use super::PhaseTimes;
use super::batcher::Batch;
use crate::error::Result;
use crate::loss::{Loss, LossBatch, LossInfo, reduce};
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
    dout: Vec<M::Scalar>,
    grads: Vec<M::Scalar>,
}

/// The batch's reduced loss, with the metrics updated on the same outputs; the output
/// gradient is written into `dout` when given.
#[allow(clippy::too_many_arguments)]
fn loss_and_metrics<T: Scalar, L: Loss<T>>(
    loss: &L,
    metrics: &mut [Box<dyn Metric<T>>],
    out: &TrainOutput<'_, T>,
    activation: crate::model::OutputActivation,
    batch: &Batch<'_, T>,
    width: usize,
    losses: &mut [T],
    mut dout: Option<&mut [T]>,
) -> Result<(T, LossInfo)> {
    let b = batch.len;
    let lb = LossBatch {
        outputs: out.outputs,
        logits: out.logits,
        activation,
        truth: batch.truth,
        batch: b,
        width,
    };
    let info = loss.compute(&lb, &mut losses[..b], dout.as_deref_mut())?;
    let value = reduce(loss.reduction(), info, &losses[..b], batch.sample_weight, dout, width);
    for m in metrics.iter_mut() {
        m.update(&MetricBatch {
            outputs: out.outputs,
            truth: batch.truth,
            batch: b,
            width,
            sample_weight: batch.sample_weight,
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
            dout: Vec::new(),
            grads: Vec::new(),
        }
    }

    fn grow(&mut self, b: usize) {
        let w = self.model.output_len();
        if self.losses.len() < b {
            self.losses.resize(b, M::Scalar::zero());
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
        let (b, w) = (batch.len, self.model.output_len());
        let Engine { model, optimizer, loss, metrics, phases, losses, dout, grads } = self;
        let act = model.output_activation();
        let out = model.forward_train(batch.x, b)?;
        let t_loss = Instant::now();
        let (value, info) = loss_and_metrics(
            &*loss,
            metrics,
            &out,
            act,
            batch,
            w,
            losses,
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
        let (b, w) = (batch.len, self.model.output_len());
        let Engine { model, loss, metrics, losses, .. } = self;
        let act = model.output_activation();
        let out = model.forward_infer(batch.x, b)?;
        let (value, _) = loss_and_metrics(&*loss, metrics, &out, act, batch, w, losses, None)?;
        Ok(value.as_f64())
    }
}
