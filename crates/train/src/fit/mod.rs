//! `compile`, `fit`, `evaluate` and `predict`: Keras's workflow over any [`Model`],
//! and Keras's `train_on_batch`, `test_on_batch` and `predict_on_batch`.
//!
//! `fit` reads like Keras's: a plan checks everything a user can get wrong before the
//! first step (`run.rs`), the batcher gathers each batch into reused buffers
//! (`batcher.rs`), `train_step` / `eval_step` run one batch through one shared
//! loss-and-metrics routine (`step.rs`), and a short epoch loop calls the callbacks —
//! the progress bar among them. After the first (largest) batch nothing is allocated.

mod batcher;
mod dtype;
mod run;
mod step;

pub use batcher::Batch;
pub use dtype::Dtype;
pub use run::Fit;
#[doc(hidden)]
pub use run::{FitArgs, FitOptions};
#[doc(hidden)]
pub use {batcher::Batcher, step::Engine};

use crate::callbacks::Logs;
use crate::data::{Inputs, Labels, Outputs, Samples};
use crate::error::{Result, TrainError};
use crate::loss::{IntoLoss, Loss, LossFor};
use crate::metrics::IntoMetrics;
use crate::model::{DynModel, Model};
use crate::optim::{IntoOptimizer, Optimizer};
use batcher::Weights;
use kiln_tape::Scalar;
use std::collections::BTreeMap;

/// `model.compile(optimizer, loss, metrics)` for every [`Model`].
pub trait Compile: Model + Sized {
    /// Attaches an optimizer, a loss and metrics, as Keras's `compile`. Each may be a
    /// typed value or a Keras name; unknown names and invalid settings are errors here.
    fn compile<O, L, Ms>(
        self,
        optimizer: O,
        loss: L,
        metrics: Ms,
    ) -> Result<Compiled<Self, L::Loss>>
    where
        O: IntoOptimizer<Self::Scalar>,
        L: IntoLoss<Self::Scalar>,
        Ms: IntoMetrics<Self::Scalar>,
    {
        // Metrics, like losses, score rows of the last output axis.
        let width = crate::data::loss_rows(self.output_shape()).1;
        let (optimizer, loss) = (optimizer.into_optimizer()?, loss.into_loss()?);
        let metrics = metrics.into_metrics(width)?;
        Ok(Compiled {
            model: self,
            loss,
            engine: Engine::new(optimizer, metrics),
            batcher: Batcher::default(),
            epochs_done: 0,
        })
    }
}

impl<M: Model> Compile for M {}

/// Never implemented: the bound that turns `fit` or `evaluate` on a model that was not
/// compiled into a compile error saying what to do (instead of "no method named `fit`").
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not compiled: call `.compile(optimizer, loss, metrics)` first",
    label = "fit and evaluate belong to the compiled model that `.compile(..)` returns",
    note = "e.g. `let mut net = Net::new(Seed(1)).compile(Adam::default(), SparseCategoricalCrossentropy::default(), [Accuracy])?;` then `net.fit(&x, &y).run()?`"
)]
pub trait CompileFirst {}

/// What a model that was not compiled answers to: `predict` (as Keras allows), and
/// `fit` / `evaluate`, which exist only to fail to compile with [`CompileFirst`]'s
/// message. The compiled model's own methods are the real ones.
pub trait NotCompiled: Model {
    /// Outputs for every sample of `x` in inference mode, batch size 32 (Keras's
    /// default): no compile needed, as in Keras.
    fn predict(
        &mut self,
        x: &Inputs<Self::Input, Self::Scalar>,
    ) -> Result<Outputs<Self::Output, Self::Scalar>>
    where
        Self: Sized,
    {
        predict(self, x, 32)
    }
    /// See [`Compiled::fit`]: compile the model first.
    fn fit<X, Y>(&mut self, _x: X, _y: Y)
    where
        Self: CompileFirst,
    {
    }
    /// See [`Compiled::evaluate`]: compile the model first.
    fn evaluate<X, Y>(&mut self, _x: X, _y: Y)
    where
        Self: CompileFirst,
    {
    }
}

impl<M: Model> NotCompiled for M {}

/// Seconds spent in each phase of the training steps since the last reset: where the
/// time goes, for benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PhaseTimes {
    /// Gathering the batch (inputs, labels, weights) into the step's buffers.
    pub gather: f64,
    /// The training forward pass.
    pub forward: f64,
    /// The loss, its gradient and the metrics.
    pub loss: f64,
    /// The backward pass.
    pub backward: f64,
    /// The optimizer update.
    pub optimizer: f64,
    /// Summing the gradients over ranks, when training across ranks (part of
    /// `backward`; the outputs' gather is part of `forward`).
    pub all_reduce: f64,
    /// Steps measured.
    pub steps: usize,
}

/// A compiled model: the model with its optimizer, loss and metrics.
pub struct Compiled<M: Model, L> {
    model: M,
    loss: L,
    engine: Engine<M::Scalar>,
    batcher: Batcher<M::Scalar>,
    /// Epochs trained so far (the next epoch a full save resumes at).
    epochs_done: usize,
}

/// A compiled model taken apart for the training loop: the model and the loss as
/// trait objects beside the engine, so the loop is compiled once per float type (see
/// [`Dtype`]).
#[doc(hidden)]
pub struct Parts<'c, T: Scalar> {
    model: &'c mut dyn DynModel<T>,
    loss: &'c dyn Loss<T>,
    engine: &'c mut Engine<T>,
    batcher: &'c mut Batcher<T>,
    epochs_done: &'c mut usize,
}

/// What `evaluate` returns: the loss and every metric, by name.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    /// The mean loss over the samples.
    pub loss: f64,
    /// Each metric by its log key.
    pub metrics: BTreeMap<String, f64>,
}

impl Evaluation {
    /// Loss and metrics in one map, as Keras's `evaluate(return_dict=True)`.
    pub fn to_map(&self) -> BTreeMap<String, f64> {
        let mut m = self.metrics.clone();
        m.insert("loss".into(), self.loss);
        m
    }
}

impl std::ops::Index<&str> for Evaluation {
    type Output = f64;
    /// `eval["accuracy"]`, or `eval["loss"]`; an unknown key gives NaN.
    fn index(&self, key: &str) -> &f64 {
        if key == "loss" {
            return &self.loss;
        }
        self.metrics.get(key).unwrap_or(&f64::NAN)
    }
}

/// Which epochs are validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ValidationFreq {
    /// Every N epochs (1 = every epoch).
    Every(usize),
    /// Exactly these epochs (1-based, as Keras).
    Epochs(Vec<usize>),
}

impl ValidationFreq {
    fn validates(&self, epoch: usize) -> bool {
        match self {
            ValidationFreq::Every(n) => (epoch + 1).is_multiple_of((*n).max(1)),
            ValidationFreq::Epochs(list) => list.contains(&(epoch + 1)),
        }
    }
}

impl From<usize> for ValidationFreq {
    fn from(n: usize) -> Self {
        ValidationFreq::Every(n)
    }
}
impl From<Vec<usize>> for ValidationFreq {
    fn from(v: Vec<usize>) -> Self {
        ValidationFreq::Epochs(v)
    }
}

/// The scalar type of model `M`.
type T<M> = <M as Model>::Scalar;

impl<M: Model, L: Loss<M::Scalar>> Compiled<M, L> {
    /// The model with the loop's other parts (see [`Parts`]).
    fn parts(&mut self) -> Parts<'_, M::Scalar> {
        Parts {
            model: &mut self.model,
            loss: &self.loss,
            engine: &mut self.engine,
            batcher: &mut self.batcher,
            epochs_done: &mut self.epochs_done,
        }
    }
    /// The model.
    pub fn model(&self) -> &M {
        &self.model
    }
    /// Saves the weights (Keras `model.save_weights`): safetensors with Keras's names,
    /// written atomically; refused, writing nothing, if a weight is not finite.
    pub fn save_weights(&self, path: impl AsRef<std::path::Path>) -> Result<()> {
        crate::checkpoint::save_weights(&self.model, path)
    }
    /// Loads weights saved by [`Compiled::save_weights`] (or [`Compiled::save`]).
    pub fn load_weights(&mut self, path: impl AsRef<std::path::Path>) -> Result<()> {
        crate::checkpoint::load_weights(&mut self.model, path)
    }
    /// Saves everything training needs to go on (Keras `model.save`): the weights,
    /// the optimizer's state and the epochs trained so far.
    pub fn save(&mut self, path: impl AsRef<std::path::Path>) -> Result<()> {
        let Compiled { model, engine, epochs_done, .. } = self;
        crate::checkpoint::save_full(&*model, &mut engine.optimizer, *epochs_done, path)
    }
    /// Loads what [`Compiled::save`] wrote, so that `fit(..).initial_epoch(e)` with the
    /// returned `e` goes on where the saved run stopped.
    pub fn load(&mut self, path: impl AsRef<std::path::Path>) -> Result<usize> {
        let e = crate::checkpoint::load_full(&mut self.model, &mut self.engine.optimizer, path)?;
        self.epochs_done = e;
        Ok(e)
    }
    /// Epochs trained so far by `fit` (or restored by [`Compiled::load`]).
    pub fn epochs_done(&self) -> usize {
        self.epochs_done
    }
    /// The model, writable (e.g. to set weights).
    pub fn model_mut(&mut self) -> &mut M {
        &mut self.model
    }
    /// The optimizer.
    pub fn optimizer(&self) -> &Optimizer<M::Scalar> {
        &self.engine.optimizer
    }
    /// The optimizer, writable.
    pub fn optimizer_mut(&mut self) -> &mut Optimizer<M::Scalar> {
        &mut self.engine.optimizer
    }
    /// The loss.
    pub fn loss(&self) -> &L {
        &self.loss
    }
    /// Gives the model back.
    pub fn into_model(self) -> M {
        self.model
    }
    /// Time spent per phase of the training steps since the last [`Compiled::reset_phase_times`].
    pub fn phase_times(&self) -> PhaseTimes {
        self.engine.phases
    }

    /// Restarts the per-phase timing.
    pub fn reset_phase_times(&mut self) {
        self.engine.phases = PhaseTimes::default();
    }

    /// The metrics' log keys, in compile order.
    pub fn metric_names(&self) -> Vec<String> {
        self.engine.metrics.iter().flat_map(|m| m.keys()).collect()
    }

    /// Starts a `fit` on `x` and `y`; set options on the returned builder, then `run()`.
    pub fn fit<'a, Y>(&'a mut self, x: &'a Inputs<M::Input, T<M>>, y: &'a Y) -> Fit<'a, M, L, Y>
    where
        Y: Labels<T<M>>,
        L: LossFor<M::Output, Y>,
    {
        Fit::new(self, x, y)
    }

    /// Loss and metrics on `x`, `y` in inference mode, batch size 32 (Keras's default).
    pub fn evaluate<Y>(&mut self, x: &Inputs<M::Input, T<M>>, y: &Y) -> Result<Evaluation>
    where
        Y: Labels<T<M>>,
        L: LossFor<M::Output, Y>,
    {
        self.evaluate_batched(x, y, 32)
    }

    /// [`Compiled::evaluate`] with another batch size.
    pub fn evaluate_batched<Y>(
        &mut self,
        x: &Inputs<M::Input, T<M>>,
        y: &Y,
        batch_size: usize,
    ) -> Result<Evaluation>
    where
        Y: Labels<T<M>>,
        L: LossFor<M::Output, Y>,
    {
        <T<M> as Dtype>::evaluate(self.parts(), x.samples(), y, batch_size)
    }

    /// Outputs for every sample of `x` in inference mode, batch size 32.
    pub fn predict(&mut self, x: &Inputs<M::Input, T<M>>) -> Result<Outputs<M::Output, T<M>>> {
        self.predict_batched(x, 32)
    }

    /// [`Compiled::predict`] with another batch size.
    pub fn predict_batched(
        &mut self,
        x: &Inputs<M::Input, T<M>>,
        batch_size: usize,
    ) -> Result<Outputs<M::Output, T<M>>> {
        let out = <T<M> as Dtype>::predict(
            &mut self.model,
            Some(&mut self.engine),
            x.samples(),
            batch_size,
        )?;
        Outputs::from_vec_shape(self.model.output_shape(), out)
    }

    /// One training step on all of `x`, `y` as a single batch (Keras's
    /// `train_on_batch`): the metrics are reset first, and the logs of that step
    /// (`loss` and each metric) are returned.
    pub fn train_on_batch<Y>(&mut self, x: &Inputs<M::Input, T<M>>, y: &Y) -> Result<Logs>
    where
        Y: Labels<T<M>>,
        L: LossFor<M::Output, Y>,
    {
        <T<M> as Dtype>::on_batch(self.parts(), x.samples(), y, true)
    }

    /// Loss and metrics of all of `x`, `y` as a single batch in inference mode (Keras's
    /// `test_on_batch`), metrics reset first.
    pub fn test_on_batch<Y>(&mut self, x: &Inputs<M::Input, T<M>>, y: &Y) -> Result<Logs>
    where
        Y: Labels<T<M>>,
        L: LossFor<M::Output, Y>,
    {
        <T<M> as Dtype>::on_batch(self.parts(), x.samples(), y, false)
    }

    /// Outputs for all of `x` as a single batch (Keras's `predict_on_batch`).
    pub fn predict_on_batch(
        &mut self,
        x: &Inputs<M::Input, T<M>>,
    ) -> Result<Outputs<M::Output, T<M>>> {
        predict(&mut self.model, x, x.len().max(1))
    }
}

impl<T: Scalar> Parts<'_, T> {
    /// `evaluate`: the checks, then the mean loss and the metrics over all of `x`.
    fn evaluate(
        &mut self,
        x: Samples<'_, T>,
        y: &dyn Labels<T>,
        batch: usize,
    ) -> Result<Evaluation> {
        self.check_data(x.shape, x.len, y, "x")?;
        x.check_finite("Inputs")?;
        self.model.check_inputs(x.data)?;
        check_batch_size(batch)?;
        self.engine.join_world(self.model)?;
        let (loss, metrics) = self.evaluate_rows(x.data, y, 0..x.len, batch)?;
        Ok(Evaluation { loss, metrics })
    }

    /// `train_on_batch` / `test_on_batch`: the checks, then one step on all of `x`.
    fn on_one_batch(&mut self, x: Samples<'_, T>, y: &dyn Labels<T>, train: bool) -> Result<Logs> {
        self.check_data(x.shape, x.len, y, "x")?;
        x.check_finite("Inputs")?;
        self.model.check_inputs(x.data)?;
        self.engine.join_world(self.model)?;
        let Parts { model, loss, engine, batcher, .. } = self;
        let (inp, w) = (model.input_len(), model.output_len());
        engine.metrics.iter_mut().for_each(|m| m.reset());
        batcher.take_rows(0..x.len);
        let batch = batcher.gather(x.data, inp, y, Weights::default(), w);
        let loss = if train {
            engine.train_step(&mut **model, *loss, &batch)?
        } else {
            engine.eval_step(&mut **model, *loss, &batch)?
        };
        let mut logs = Logs::new();
        for m in engine.metrics.iter() {
            m.for_each_value(&mut |k, v| {
                logs.insert(k.to_string(), v);
            });
        }
        logs.insert("loss".into(), loss);
        Ok(logs)
    }

    fn check_data(
        &self,
        shape: &[usize],
        n: usize,
        y: &dyn Labels<T>,
        what: &'static str,
    ) -> Result<()> {
        let model = &*self.model;
        if shape != model.input_shape() {
            return Err(TrainError::ShapeMismatch {
                what,
                expected: model.input_shape().to_vec(),
                got: shape.to_vec(),
                hint: "reshape the inputs to the model's input shape".into(),
            });
        }
        if n != y.count() {
            return Err(TrainError::LengthMismatch { x: n, y: y.count() });
        }
        if n == 0 {
            return Err(TrainError::EmptyData { what });
        }
        y.validate(model.output_shape())?;
        // Losses score rows of the last output axis (validate checked the rest).
        let width = crate::data::loss_rows(model.output_shape()).1;
        self.loss.check(model.output_activation(), width, y.width().map(|_| width))?;
        // Positions marked ignored (a negative label) need a loss that leaves them out.
        let truth = y.truth();
        if let crate::data::Truth::Classes(c) = truth
            && let Some(r) = (0..c.len()).find(|&r| {
                c[r] == crate::data::ClassLabels::IGNORED && !self.loss.ignores(&truth, r)
            })
        {
            return Err(TrainError::InvalidArgument {
                name: what,
                message: format!(
                    "label {r} marks an ignored position (a negative label), but the loss `{}` does not ignore it; give the loss the same ignore_class (SparseCategoricalCrossentropy::default().ignore_class(-1))",
                    self.loss.name()
                ),
            });
        }
        Ok(())
    }

    /// Mean loss and metrics over `rows` of `x`/`y`, in inference mode, `batch_size`
    /// rows at a time.
    fn evaluate_rows(
        &mut self,
        x: &[T],
        y: &dyn Labels<T>,
        rows: std::ops::Range<usize>,
        batch_size: usize,
    ) -> Result<(f64, BTreeMap<String, f64>)> {
        let Parts { model, loss, engine, batcher, .. } = self;
        let (inp, w) = (model.input_len(), model.output_len());
        engine.metrics.iter_mut().for_each(|m| m.reset());
        let (mut total, mut count) = (0.0, 0.0);
        let mut lo = rows.start;
        while lo < rows.end {
            let hi = (lo + batch_size).min(rows.end);
            batcher.take_rows(lo..hi);
            let batch = batcher.gather(x, inp, y, Weights::default(), w);
            let b = batch.len as f64;
            total += engine.eval_step(&mut **model, *loss, &batch)? * b;
            count += b;
            lo = hi;
        }
        let mut values = BTreeMap::new();
        for m in engine.metrics.iter() {
            m.for_each_value(&mut |k, v| {
                values.insert(k.to_string(), v);
            });
        }
        Ok((total / count, values))
    }
}

fn check_batch_size(b: usize) -> Result<()> {
    if b == 0 {
        return Err(TrainError::InvalidArgument {
            name: "batch_size",
            message: "0 is not a batch size; use 32 (Keras's default) or another positive number"
                .into(),
        });
    }
    Ok(())
}

/// What `predict` checks before the first batch: finite values the model takes, of its
/// input shape.
fn check_predict_inputs<T: Scalar>(model: &dyn DynModel<T>, x: Samples<'_, T>) -> Result<()> {
    x.check_finite("Inputs")?;
    model.check_inputs(x.data)?;
    if x.shape != model.input_shape() {
        return Err(TrainError::ShapeMismatch {
            what: "x",
            expected: model.input_shape().to_vec(),
            got: x.shape.to_vec(),
            hint: "reshape the inputs to the model's input shape".into(),
        });
    }
    Ok(())
}

/// Runs `model` in inference mode over `x` in batches (no compile needed).
pub fn predict<M: Model>(
    model: &mut M,
    x: &Inputs<M::Input, T<M>>,
    batch_size: usize,
) -> Result<Outputs<M::Output, T<M>>> {
    let out = <T<M> as Dtype>::predict(model, None, x.samples(), batch_size)?;
    Outputs::from_vec_shape(model.output_shape(), out)
}

/// `predict`'s loop: outputs for every sample of `x`, `batch_size` at a time (across
/// ranks when a compiled model's engine is given and ranks train together).
fn predict_values<T: Scalar>(
    model: &mut dyn DynModel<T>,
    engine: Option<&mut Engine<T>>,
    x: Samples<'_, T>,
    batch_size: usize,
) -> Result<Vec<T>> {
    check_batch_size(batch_size)?;
    check_predict_inputs(model, x)?;
    if let Some(engine) = engine
        && crate::distributed::world().is_some()
        && let Some(out) = engine.predict_across_ranks(model, x.data, x.len, batch_size)?
    {
        return Ok(out);
    }
    let (inp, w) = (model.input_len(), model.output_len());
    let mut out = vec![T::zero(); x.len * w];
    let mut lo = 0;
    while lo < x.len {
        let hi = (lo + batch_size).min(x.len);
        let o = model.forward_infer(&x.data[lo * inp..hi * inp], hi - lo)?;
        out[lo * w..hi * w].copy_from_slice(&o.outputs[..(hi - lo) * w]);
        lo = hi;
    }
    Ok(out)
}
