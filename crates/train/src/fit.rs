//! `compile`, `fit`, `evaluate` and `predict`: Keras's workflow over any [`Model`].
//!
//! One training step gathers the batch into reused buffers, runs the model's training
//! forward pass, takes the loss and its gradient (fused with a final softmax/sigmoid),
//! updates the metrics on the same outputs, runs the backward pass into the gradient
//! buffer and lets the optimizer update the trainable prefix of the parameter arena.
//! After the first (largest) batch nothing is allocated.

use crate::callbacks::{BoxedCallback, CallbackContext, IntoCallbacks, Logs};
use crate::data::{Inputs, LabelBatch, Labels, Outputs, Truth};
use crate::error::{Result, TrainError};
use crate::history::History;
use crate::loss::{IntoLoss, Loss, LossBatch, LossFor, reduce};
use crate::metrics::{IntoMetrics, Metric, MetricBatch};
use crate::model::Model;
use crate::optim::{IntoOptimizer, Optimizer};
use crate::progress::Progress;
use kiln_tape::{Float, One, Scalar, Zero};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

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
        let width = self.output_len();
        Ok(Compiled {
            optimizer: optimizer.into_optimizer()?,
            loss: loss.into_loss()?,
            metrics: metrics.into_metrics(width)?,
            model: self,
            bufs: Buffers::default(),
            phases: PhaseTimes::default(),
        })
    }
}

impl<M: Model> Compile for M {}

/// Buffers reused by every step; they grow to the largest batch once.
struct Buffers<T> {
    x: Vec<T>,
    y: LabelBatch<T>,
    sw: Vec<T>,
    losses: Vec<T>,
    dout: Vec<T>,
    grads: Vec<T>,
    rows: Vec<usize>,
    order: Vec<usize>,
}

impl<T> Default for Buffers<T> {
    fn default() -> Self {
        Buffers {
            x: Vec::new(),
            y: LabelBatch::default(),
            sw: Vec::new(),
            losses: Vec::new(),
            dout: Vec::new(),
            grads: Vec::new(),
            rows: Vec::new(),
            order: Vec::new(),
        }
    }
}

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
    /// Steps measured.
    pub steps: usize,
}

/// A compiled model: the model with its optimizer, loss and metrics.
pub struct Compiled<M: Model, L> {
    model: M,
    optimizer: Optimizer<M::Scalar>,
    loss: L,
    metrics: Vec<Box<dyn Metric<M::Scalar>>>,
    bufs: Buffers<M::Scalar>,
    phases: PhaseTimes,
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

type T<M> = <M as Model>::Scalar;

impl<M: Model, L: Loss<M::Scalar>> Compiled<M, L> {
    /// The model.
    pub fn model(&self) -> &M {
        &self.model
    }
    /// The model, writable (e.g. to set weights).
    pub fn model_mut(&mut self) -> &mut M {
        &mut self.model
    }
    /// The optimizer.
    pub fn optimizer(&self) -> &Optimizer<M::Scalar> {
        &self.optimizer
    }
    /// The optimizer, writable.
    pub fn optimizer_mut(&mut self) -> &mut Optimizer<M::Scalar> {
        &mut self.optimizer
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
        self.phases
    }

    /// Restarts the per-phase timing.
    pub fn reset_phase_times(&mut self) {
        self.phases = PhaseTimes::default();
    }

    /// The metrics' log keys, in compile order.
    pub fn metric_names(&self) -> Vec<String> {
        self.metrics.iter().map(|m| m.name().to_string()).collect()
    }

    /// Starts a `fit` on `x` and `y`; set options on the returned builder, then `run()`.
    pub fn fit<'a, Y>(&'a mut self, x: &'a Inputs<M::Input, T<M>>, y: &'a Y) -> Fit<'a, M, L, Y>
    where
        Y: Labels<T<M>>,
        L: LossFor<M::Output, Y>,
    {
        Fit {
            compiled: self,
            x,
            y,
            epochs: 1,
            batch_size: 32,
            shuffle: true,
            validation_split: 0.0,
            validation_data: None,
            validation_batch_size: None,
            validation_freq: ValidationFreq::Every(1),
            initial_epoch: 0,
            steps_per_epoch: None,
            class_weight: None,
            sample_weight: None,
            verbose: 1,
            seed: 0,
            callbacks: Vec::new(),
        }
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
        self.check_data(x.sample_shape(), x.len(), y, "x")?;
        x.check_finite()?;
        check_batch_size(batch_size)?;
        let (loss, metrics) = self.evaluate_rows(x.data(), y, 0..x.len(), batch_size)?;
        Ok(Evaluation { loss, metrics })
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
        check_batch_size(batch_size)?;
        predict(&mut self.model, x, batch_size)
    }

    fn check_data<Y: Labels<T<M>>>(
        &self,
        shape: &[usize],
        n: usize,
        y: &Y,
        what: &'static str,
    ) -> Result<()> {
        if shape != self.model.input_shape() {
            return Err(TrainError::ShapeMismatch {
                what,
                expected: self.model.input_shape().to_vec(),
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
        let width = self.model.output_len();
        y.validate(width)?;
        self.loss.check(self.model.output_activation(), width, y.width())
    }

    /// Mean loss and metrics over `rows` of `x`/`y`, in inference mode.
    fn evaluate_rows<Y: Labels<T<M>>>(
        &mut self,
        x: &[T<M>],
        y: &Y,
        rows: std::ops::Range<usize>,
        batch_size: usize,
    ) -> Result<(f64, BTreeMap<String, f64>)> {
        let Compiled { model, loss, metrics, bufs, .. } = self;
        let (inp, w) = (model.input_len(), model.output_len());
        let act = model.output_activation();
        metrics.iter_mut().for_each(|m| m.reset());
        let (mut total, mut count) = (0.0, 0.0);
        bufs.losses.resize(batch_size.min(rows.len()), T::<M>::zero());
        let mut lo = rows.start;
        while lo < rows.end {
            let hi = (lo + batch_size).min(rows.end);
            let b = hi - lo;
            bufs.rows.clear();
            bufs.rows.extend(lo..hi);
            y.gather(&bufs.rows, &mut bufs.y);
            let truth = bufs.y.truth();
            let out = model.forward_infer(&x[lo * inp..hi * inp], b)?;
            let lb = LossBatch {
                outputs: out.outputs,
                logits: out.logits,
                activation: act,
                truth,
                batch: b,
                width: w,
            };
            let info = loss.compute(&lb, &mut bufs.losses[..b], None)?;
            let v = reduce(loss.reduction(), info, &bufs.losses[..b], None, None, w);
            total += v.as_f64() * b as f64;
            count += b as f64;
            for m in metrics.iter_mut() {
                m.update(&MetricBatch {
                    outputs: out.outputs,
                    truth,
                    batch: b,
                    width: w,
                    sample_weight: None,
                });
            }
            lo = hi;
        }
        let values = metrics.iter().map(|m| (m.name().to_string(), m.result())).collect();
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

/// Runs `model` in inference mode over `x` in batches (no compile needed).
pub fn predict<M: Model>(
    model: &mut M,
    x: &Inputs<M::Input, T<M>>,
    batch_size: usize,
) -> Result<Outputs<M::Output, T<M>>> {
    check_batch_size(batch_size)?;
    x.check_finite()?;
    if x.sample_shape() != model.input_shape() {
        return Err(TrainError::ShapeMismatch {
            what: "x",
            expected: model.input_shape().to_vec(),
            got: x.sample_shape().to_vec(),
            hint: "reshape the inputs to the model's input shape".into(),
        });
    }
    let (inp, w) = (model.input_len(), model.output_len());
    let mut out = vec![T::<M>::zero(); x.len() * w];
    let mut lo = 0;
    while lo < x.len() {
        let hi = (lo + batch_size).min(x.len());
        let o = model.forward_infer(&x.data()[lo * inp..hi * inp], hi - lo)?;
        out[lo * w..hi * w].copy_from_slice(&o.outputs[..(hi - lo) * w]);
        lo = hi;
    }
    Outputs::from_vec_shape(model.output_shape(), out)
}

/// Validation inputs and labels borrowed for one `fit` call.
type ValidationData<'a, M, Y> = (&'a Inputs<<M as Model>::Input, T<M>>, &'a Y);

/// The options of one `fit` call (Keras's names and defaults); finish with [`Fit::run`].
pub struct Fit<'a, M: Model, L, Y> {
    compiled: &'a mut Compiled<M, L>,
    x: &'a Inputs<M::Input, T<M>>,
    y: &'a Y,
    epochs: usize,
    batch_size: usize,
    shuffle: bool,
    validation_split: f64,
    validation_data: Option<ValidationData<'a, M, Y>>,
    validation_batch_size: Option<usize>,
    validation_freq: ValidationFreq,
    initial_epoch: usize,
    steps_per_epoch: Option<usize>,
    class_weight: Option<HashMap<usize, f64>>,
    sample_weight: Option<&'a [T<M>]>,
    verbose: u8,
    seed: u64,
    callbacks: Vec<BoxedCallback<'a, T<M>>>,
}

impl<'a, M: Model, L: Loss<M::Scalar>, Y: Labels<T<M>>> Fit<'a, M, L, Y> {
    /// The epoch index to stop at (Keras's default 1).
    pub fn epochs(mut self, e: usize) -> Self {
        self.epochs = e;
        self
    }
    /// Samples per gradient step (default 32).
    pub fn batch_size(mut self, b: usize) -> Self {
        self.batch_size = b;
        self
    }
    /// Reshuffle the training samples every epoch (default true; seeded).
    pub fn shuffle(mut self, s: bool) -> Self {
        self.shuffle = s;
        self
    }
    /// Holds out the last fraction of x/y (before shuffling) for validation.
    pub fn validation_split(mut self, v: f64) -> Self {
        self.validation_split = v;
        self
    }
    /// Validates on this data instead (overrides `validation_split`).
    pub fn validation_data(mut self, x: &'a Inputs<M::Input, T<M>>, y: &'a Y) -> Self {
        self.validation_data = Some((x, y));
        self
    }
    /// Batch size for validation (default: the training batch size).
    pub fn validation_batch_size(mut self, b: usize) -> Self {
        self.validation_batch_size = Some(b);
        self
    }
    /// Validate every N epochs, or at a list of (1-based) epochs.
    pub fn validation_freq(mut self, f: impl Into<ValidationFreq>) -> Self {
        self.validation_freq = f.into();
        self
    }
    /// Start at this epoch (resuming); `epochs` stays the final epoch index.
    pub fn initial_epoch(mut self, e: usize) -> Self {
        self.initial_epoch = e;
        self
    }
    /// Batches per epoch, at most one pass over the data.
    pub fn steps_per_epoch(mut self, s: usize) -> Self {
        self.steps_per_epoch = Some(s);
        self
    }
    /// Weights of each class in the loss (keyed by class index).
    pub fn class_weight(mut self, w: HashMap<usize, f64>) -> Self {
        self.class_weight = Some(w);
        self
    }
    /// A weight per training sample.
    pub fn sample_weight(mut self, w: &'a [T<M>]) -> Self {
        self.sample_weight = Some(w);
        self
    }
    /// 0 silent, 1 progress bar (default), 2 one line per epoch.
    pub fn verbose(mut self, v: u8) -> Self {
        self.verbose = v;
        self
    }
    /// Seed of the shuffling and of stochastic layers: same seed, same run.
    pub fn seed(mut self, s: u64) -> Self {
        self.seed = s;
        self
    }
    /// Callbacks: one, a tuple of several, an array, or a vector of boxed ones.
    pub fn callbacks(mut self, c: impl IntoCallbacks<'a, T<M>>) -> Self {
        self.callbacks.extend(c.into_callbacks());
        self
    }

    /// Trains, and returns the History.
    pub fn run(self) -> Result<History> {
        let Fit {
            compiled,
            x,
            y,
            epochs,
            batch_size,
            shuffle,
            validation_split,
            validation_data,
            validation_batch_size,
            validation_freq,
            initial_epoch,
            steps_per_epoch,
            class_weight,
            sample_weight,
            verbose,
            seed,
            mut callbacks,
        } = self;

        // --- everything a user can get wrong, checked before the first step ---------
        check_batch_size(batch_size)?;
        compiled.check_data(x.sample_shape(), x.len(), y, "x")?;
        x.check_finite()?;
        if let Some(w) = sample_weight {
            if w.len() != x.len() {
                return Err(TrainError::InvalidArgument {
                    name: "sample_weight",
                    message: format!(
                        "{} weights for {} samples; give one weight per sample",
                        w.len(),
                        x.len()
                    ),
                });
            }
            if let Some(i) = w.iter().position(|v| !v.is_finite() || *v < T::<M>::zero()) {
                return Err(TrainError::InvalidArgument {
                    name: "sample_weight",
                    message: format!("weight {i} is {}; weights must be finite and ≥ 0", w[i]),
                });
            }
        }
        if !(0.0..1.0).contains(&validation_split) {
            return Err(TrainError::InvalidArgument {
                name: "validation_split",
                message: format!(
                    "{validation_split} is outside [0, 1); pass a fraction such as 0.2"
                ),
            });
        }
        let n = x.len();
        let (n_train, val_rows) = match (&validation_data, validation_split) {
            (Some((vx, vy)), _) => {
                compiled.check_data(vx.sample_shape(), vx.len(), *vy, "validation x")?;
                vx.check_finite()?;
                (n, None)
            }
            (None, v) if v > 0.0 => {
                let split = (n as f64 * (1.0 - v)).floor() as usize;
                if split == 0 || split == n {
                    return Err(TrainError::InvalidArgument {
                        name: "validation_split",
                        message: format!(
                            "{v} of {n} samples leaves {split} for training and {} for validation; both need at least one",
                            n - split
                        ),
                    });
                }
                (split, Some(split..n))
            }
            _ => (n, None),
        };
        let validating = validation_data.is_some() || val_rows.is_some();
        let val_batch = validation_batch_size.unwrap_or(batch_size);
        check_batch_size(val_batch)?;
        if let Some(cw) = &class_weight
            && let Some((c, w)) = cw.iter().find(|(_, w)| !w.is_finite() || **w < 0.0)
        {
            return Err(TrainError::InvalidArgument {
                name: "class_weight",
                message: format!("class {c} has weight {w}; weights must be finite and ≥ 0"),
            });
        }
        let mut keys: Vec<String> =
            std::iter::once("loss".to_string()).chain(compiled.metric_names()).collect();
        if validating {
            keys.extend(keys.clone().into_iter().map(|k| format!("val_{k}")));
        }
        for cb in &callbacks {
            for m in cb.monitors() {
                if !keys.contains(&m) {
                    return Err(TrainError::UnknownMonitor {
                        callback: cb.name(),
                        monitor: m,
                        available: keys.clone(),
                    });
                }
            }
        }

        // --- the loop ---------------------------------------------------------------
        let model_name = compiled.model.name().to_string();
        let (inp, w) = (compiled.model.input_len(), compiled.model.output_len());
        let batches = n_train.div_ceil(batch_size);
        let steps = steps_per_epoch.map_or(batches, |s| s.clamp(1, batches));
        let mut history = History::default();
        let mut stop = false;
        let mut resume: Option<usize> = None;
        let mut logs: Logs =
            keys.iter().filter(|k| !k.starts_with("val_")).map(|k| (k.clone(), 0.0)).collect();
        let mut progress = Progress::new(verbose, steps);
        let weighted = sample_weight.is_some() || class_weight.is_some();
        {
            let b = &mut compiled.bufs;
            b.order.clear();
            b.order.extend(0..n_train);
            b.grads.resize(compiled.model.params().len(), T::<M>::zero());
        }
        macro_rules! ctx {
            ($epoch:expr) => {
                &mut CallbackContext {
                    params: compiled.model.params_mut(),
                    optimizer: &mut compiled.optimizer,
                    model_name: &model_name,
                    epoch: $epoch,
                    stop: &mut stop,
                    resume: &mut resume,
                }
            };
        }
        for cb in callbacks.iter_mut() {
            cb.on_train_begin(ctx!(initial_epoch))?;
        }
        // A callback (BackupAndRestore) may have restored a run and asked to resume.
        let mut epoch = resume.unwrap_or(initial_epoch);
        while epoch < epochs && !stop {
            let started = Instant::now();
            progress.epoch_begin(epoch, epochs);
            for cb in callbacks.iter_mut() {
                cb.on_epoch_begin(epoch, ctx!(epoch))?;
            }
            compiled.model.reseed(seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            if shuffle {
                // Each epoch's order depends only on (seed, epoch), so a resumed run
                // (BackupAndRestore, initial_epoch) sees the same batches.
                let order = &mut compiled.bufs.order;
                order.clear();
                order.extend(0..n_train);
                order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed.wrapping_add(epoch as u64)));
            }
            compiled.metrics.iter_mut().for_each(|m| m.reset());
            let (mut loss_sum, mut seen) = (0.0, 0.0);
            let mut done = 0;
            for step in 0..steps {
                let lo = step * batch_size;
                let hi = (lo + batch_size).min(n_train);
                let b = hi - lo;
                let Compiled { model, optimizer, loss, metrics, bufs, phases } = &mut *compiled;
                let t_gather = Instant::now();
                bufs.rows.clear();
                bufs.rows.extend_from_slice(&bufs.order[lo..hi]);
                // Inputs: contiguous rows are used in place; shuffled ones are gathered.
                let contiguous = bufs.rows.windows(2).all(|p| p[1] == p[0] + 1);
                let xb: &[T<M>] = if contiguous {
                    let r0 = bufs.rows[0];
                    &x.data()[r0 * inp..(r0 + b) * inp]
                } else {
                    bufs.x.resize(batch_size * inp, T::<M>::zero());
                    for (k, &r) in bufs.rows.iter().enumerate() {
                        bufs.x[k * inp..(k + 1) * inp]
                            .copy_from_slice(&x.data()[r * inp..(r + 1) * inp]);
                    }
                    &bufs.x[..b * inp]
                };
                y.gather(&bufs.rows, &mut bufs.y);
                let truth = bufs.y.truth();
                let sw: Option<&[T<M>]> = if weighted {
                    bufs.sw.clear();
                    for (k, &r) in bufs.rows.iter().enumerate() {
                        let mut wv = sample_weight.map_or(T::<M>::one(), |s| s[r]);
                        if let Some(cw) = &class_weight {
                            let class = match truth {
                                Truth::Classes(c) => c[k],
                                Truth::Dense(d) => argmax(&d[k * w..(k + 1) * w]),
                            };
                            wv *= T::<M>::of(cw.get(&class).copied().unwrap_or(1.0));
                        }
                        bufs.sw.push(wv);
                    }
                    Some(&bufs.sw)
                } else {
                    None
                };
                bufs.losses.resize(batch_size, T::<M>::zero());
                bufs.dout.resize(batch_size * w, T::<M>::zero());
                let act = model.output_activation();
                let t_forward = Instant::now();
                let out = model.forward_train(xb, b)?;
                let t_loss = Instant::now();
                let lb = LossBatch {
                    outputs: out.outputs,
                    logits: out.logits,
                    activation: act,
                    truth,
                    batch: b,
                    width: w,
                };
                let info =
                    loss.compute(&lb, &mut bufs.losses[..b], Some(&mut bufs.dout[..b * w]))?;
                let value = reduce(
                    loss.reduction(),
                    info,
                    &bufs.losses[..b],
                    sw,
                    Some(&mut bufs.dout[..b * w]),
                    w,
                );
                for m in metrics.iter_mut() {
                    m.update(&MetricBatch {
                        outputs: out.outputs,
                        truth,
                        batch: b,
                        width: w,
                        sample_weight: sw,
                    });
                }
                let t_backward = Instant::now();
                model.backward(xb, &bufs.dout[..b * w], info.wrt_logits, &mut bufs.grads)?;
                let t_optimizer = Instant::now();
                let store = model.params_mut();
                let t = store.trainable_len();
                let (values, entries) = store.split_trainable();
                optimizer.apply(values, &mut bufs.grads[..t], entries)?;
                let t_end = Instant::now();
                phases.gather += (t_forward - t_gather).as_secs_f64();
                phases.forward += (t_loss - t_forward).as_secs_f64();
                phases.loss += (t_backward - t_loss).as_secs_f64();
                phases.backward += (t_optimizer - t_backward).as_secs_f64();
                phases.optimizer += (t_end - t_optimizer).as_secs_f64();
                phases.steps += 1;

                loss_sum += value.as_f64() * b as f64;
                seen += b as f64;
                done = step + 1;
                if let Some(v) = logs.get_mut("loss") {
                    *v = loss_sum / seen;
                }
                for m in metrics.iter() {
                    if let Some(v) = logs.get_mut(m.name()) {
                        *v = m.result();
                    }
                }
                progress.batch(done, &logs);
                for cb in callbacks.iter_mut() {
                    cb.on_train_batch_end(step, &logs, ctx!(epoch))?;
                }
                if stop {
                    break;
                }
            }
            let mut epoch_logs = logs.clone();
            if validating && validation_freq.validates(epoch) {
                let (vl, vm) = match (&validation_data, &val_rows) {
                    (Some((vx, vy)), _) => {
                        compiled.evaluate_rows(vx.data(), *vy, 0..vx.len(), val_batch)?
                    }
                    (None, Some(r)) => compiled.evaluate_rows(x.data(), y, r.clone(), val_batch)?,
                    _ => unreachable!("validating implies validation data or rows"),
                };
                epoch_logs.insert("val_loss".into(), vl);
                for (k, v) in vm {
                    epoch_logs.insert(format!("val_{k}"), v);
                }
                history.validated.push(epoch);
            }
            progress.epoch_end(done, &epoch_logs);
            for (k, v) in &epoch_logs {
                history.history.entry(k.clone()).or_default().push(*v);
            }
            history.epoch.push(epoch);
            history.learning_rate.push(compiled.optimizer.learning_rate());
            history.epoch_seconds.push(started.elapsed().as_secs_f64());
            for cb in callbacks.iter_mut() {
                cb.on_epoch_end(epoch, &epoch_logs, ctx!(epoch))?;
            }
            epoch += 1;
        }
        let last: Logs =
            history.history.iter().filter_map(|(k, v)| v.last().map(|x| (k.clone(), *x))).collect();
        for cb in callbacks.iter_mut() {
            cb.on_train_end(ctx!(epoch.saturating_sub(1)), &last)?;
        }
        Ok(history)
    }
}

fn argmax<T: Scalar>(v: &[T]) -> usize {
    v.iter().enumerate().fold(0, |best, (i, x)| if *x > v[best] { i } else { best })
}
