//! `fit`: the [`Fit`] options, the plan that checks all of them before the first step,
//! and the epoch loop.

use super::batcher::Weights;
use super::{Compiled, Engine, Parts, T, ValidationFreq, check_batch_size};
use crate::Dtype;
use crate::callbacks::{BoxedCallback, CallbackContext, IntoCallbacks, Logs};
use crate::checkpoint::first_non_finite;
use crate::data::{Inputs, Labels, Samples};
use crate::error::{Result, TrainError};
use crate::history::History;
use crate::loss::Loss;
use crate::model::Model;
use crate::progress::ProgressBar;
use kiln_tape::{Float, Scalar};
use std::collections::HashMap;
use std::ops::Range;
use std::time::Instant;

/// Validation inputs and labels borrowed for one `fit` call.
type ValidationData<'a, M, Y> = (&'a Inputs<<M as Model>::Input, T<M>>, &'a Y);

/// What validates each epoch.
enum Validation {
    None,
    /// `validation_data`.
    Data,
    /// The last rows of x/y (`validation_split`).
    Rows(Range<usize>),
}

/// Everything `fit` needs to know before the first step, checked.
struct Plan {
    /// Training rows: the first `n_train` of x/y.
    n_train: usize,
    validation: Validation,
    validation_batch: usize,
    /// Batches per epoch.
    steps: usize,
    /// The log keys the epochs will produce.
    keys: Vec<String>,
}

/// The options of one `fit` call that do not depend on the model's types.
#[doc(hidden)]
pub struct FitOptions<'a, T: Scalar> {
    epochs: usize,
    batch_size: usize,
    shuffle: bool,
    validation_split: f64,
    validation_batch_size: Option<usize>,
    validation_freq: ValidationFreq,
    initial_epoch: usize,
    steps_per_epoch: Option<usize>,
    class_weight: Option<HashMap<usize, f64>>,
    sample_weight: Option<&'a [T]>,
    verbose: u8,
    seed: u64,
    callbacks: Vec<BoxedCallback<'a, T>>,
}

/// One `fit` call as the training loop (compiled once per float type) takes it: the
/// data without its shape types, the labels and the loss as trait objects.
#[doc(hidden)]
pub struct FitArgs<'a, T: Scalar> {
    x: Samples<'a, T>,
    y: &'a dyn Labels<T>,
    validation_data: Option<(Samples<'a, T>, &'a dyn Labels<T>)>,
    opts: FitOptions<'a, T>,
}

/// The options of one `fit` call (Keras's names and defaults); finish with [`Fit::run`].
pub struct Fit<'a, M: Model, L, Y> {
    compiled: &'a mut Compiled<M, L>,
    x: &'a Inputs<M::Input, T<M>>,
    y: &'a Y,
    validation_data: Option<ValidationData<'a, M, Y>>,
    opts: FitOptions<'a, T<M>>,
}

impl<'a, M, L, Y> Fit<'a, M, L, Y>
where
    M: Model,
    L: Loss<M::Scalar>,
    Y: Labels<T<M>>,
{
    /// Keras's defaults: one epoch, batch size 32, shuffled, no validation, verbose 1.
    pub(super) fn new(
        compiled: &'a mut Compiled<M, L>,
        x: &'a Inputs<M::Input, T<M>>,
        y: &'a Y,
    ) -> Self {
        Fit {
            compiled,
            x,
            y,
            validation_data: None,
            opts: FitOptions {
                epochs: 1,
                batch_size: 32,
                shuffle: true,
                validation_split: 0.0,
                validation_batch_size: None,
                validation_freq: ValidationFreq::Every(1),
                initial_epoch: 0,
                steps_per_epoch: None,
                class_weight: None,
                sample_weight: None,
                verbose: 1,
                seed: 0,
                callbacks: Vec::new(),
            },
        }
    }

    /// The epoch index to stop at (Keras's default 1).
    pub fn epochs(mut self, e: usize) -> Self {
        self.opts.epochs = e;
        self
    }
    /// Samples per gradient step (default 32).
    pub fn batch_size(mut self, b: usize) -> Self {
        self.opts.batch_size = b;
        self
    }
    /// Reshuffle the training samples every epoch (default true; seeded).
    pub fn shuffle(mut self, s: bool) -> Self {
        self.opts.shuffle = s;
        self
    }
    /// Holds out the last fraction of x/y (before shuffling) for validation.
    pub fn validation_split(mut self, v: f64) -> Self {
        self.opts.validation_split = v;
        self
    }
    /// Validates on this data instead (overrides `validation_split`).
    pub fn validation_data(mut self, x: &'a Inputs<M::Input, T<M>>, y: &'a Y) -> Self {
        self.validation_data = Some((x, y));
        self
    }
    /// Batch size for validation (default: the training batch size).
    pub fn validation_batch_size(mut self, b: usize) -> Self {
        self.opts.validation_batch_size = Some(b);
        self
    }
    /// Validate every N epochs, or at a list of (1-based) epochs.
    pub fn validation_freq(mut self, f: impl Into<ValidationFreq>) -> Self {
        self.opts.validation_freq = f.into();
        self
    }
    /// Start at this epoch (resuming); `epochs` stays the final epoch index.
    pub fn initial_epoch(mut self, e: usize) -> Self {
        self.opts.initial_epoch = e;
        self
    }
    /// Batches per epoch, at most one pass over the data.
    pub fn steps_per_epoch(mut self, s: usize) -> Self {
        self.opts.steps_per_epoch = Some(s);
        self
    }
    /// Weights of each class in the loss (keyed by class index).
    pub fn class_weight(mut self, w: HashMap<usize, f64>) -> Self {
        self.opts.class_weight = Some(w);
        self
    }
    /// A weight per training sample.
    pub fn sample_weight(mut self, w: &'a [T<M>]) -> Self {
        self.opts.sample_weight = Some(w);
        self
    }
    /// 0 silent, 1 progress bar (default), 2 one line per epoch.
    pub fn verbose(mut self, v: u8) -> Self {
        self.opts.verbose = v;
        self
    }
    /// Seed of the shuffling and of stochastic layers: same seed, same run.
    pub fn seed(mut self, s: u64) -> Self {
        self.opts.seed = s;
        self
    }
    /// Callbacks: one, a tuple of several, an array, or a vector of boxed ones.
    pub fn callbacks(mut self, c: impl IntoCallbacks<'a, T<M>>) -> Self {
        self.opts.callbacks.extend(c.into_callbacks());
        self
    }

    /// Trains, and returns the History.
    pub fn run(self) -> Result<History> {
        let Fit { compiled, x, y, validation_data, opts } = self;
        let args = FitArgs {
            x: x.samples(),
            y,
            validation_data: validation_data.map(|(vx, vy)| (vx.samples(), vy as &dyn Labels<_>)),
            opts,
        };
        <T<M> as Dtype>::fit(compiled.parts(), args)
    }
}

impl<T: Scalar> FitArgs<'_, T> {
    /// Checks every option and the data against the model, before anything runs.
    fn plan(&self, parts: &Parts<'_, T>) -> Result<Plan> {
        let (x, y, o) = (&self.x, self.y, &self.opts);
        check_batch_size(o.batch_size)?;
        parts.check_data(x.shape, x.len, y, "x")?;
        x.check_finite("Inputs")?;
        parts.model.check_inputs(x.data)?;
        if let Some(w) = o.sample_weight {
            if w.len() != x.len {
                return Err(TrainError::InvalidArgument {
                    name: "sample_weight",
                    message: format!(
                        "{} weights for {} samples; give one weight per sample",
                        w.len(),
                        x.len
                    ),
                });
            }
            if let Some(i) = w.iter().position(|v| !v.is_finite() || *v < T::zero()) {
                return Err(TrainError::InvalidArgument {
                    name: "sample_weight",
                    message: format!("weight {i} is {}; weights must be finite and ≥ 0", w[i]),
                });
            }
        }
        let v = o.validation_split;
        if !(0.0..1.0).contains(&v) {
            return Err(TrainError::InvalidArgument {
                name: "validation_split",
                message: format!("{v} is outside [0, 1); pass a fraction such as 0.2"),
            });
        }
        let n = x.len;
        let (n_train, validation) = match (&self.validation_data, v) {
            (Some((vx, vy)), _) => {
                parts.check_data(vx.shape, vx.len, *vy, "validation x")?;
                vx.check_finite("Inputs")?;
                parts.model.check_inputs(vx.data)?;
                (n, Validation::Data)
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
                (split, Validation::Rows(split..n))
            }
            _ => (n, Validation::None),
        };
        let validation_batch = o.validation_batch_size.unwrap_or(o.batch_size);
        check_batch_size(validation_batch)?;
        o.check_schedule()?;
        if o.class_weight.is_some() && Engine::<T>::rows(&*parts.model).per_sample > 1 {
            return Err(TrainError::InvalidArgument {
                name: "class_weight",
                message: format!(
                    "class weights need one prediction per sample, but the model's output {:?} is scored per row of its last axis (as in Keras, which refuses class_weight for such targets); drop class_weight and give per-sample weights through sample_weight",
                    parts.model.output_shape()
                ),
            });
        }
        if let Some(cw) = &o.class_weight {
            // A sigmoid output (width 1) has the two classes 0 and 1.
            let classes = parts.model.output_len().max(2);
            let mut named: Vec<usize> = cw.keys().copied().filter(|&c| c >= classes).collect();
            named.sort_unstable();
            if let Some(c) = named.first() {
                return Err(TrainError::InvalidArgument {
                    name: "class_weight",
                    message: format!(
                        "it weights class {c}, but the model has {classes} classes (0..{classes}); remove it or fix the class index"
                    ),
                });
            }
        }
        if let Some(cw) = &o.class_weight
            && let Some((c, w)) =
                cw.iter().find(|(_, w)| !w.is_finite() || **w < 0.0 || !T::of(**w).is_finite())
        {
            return Err(TrainError::InvalidArgument {
                name: "class_weight",
                message: format!(
                    "class {c} has weight {w:e}; weights must be finite and ≥ 0 in the model's {} (at most {:.1e})",
                    T::DTYPE,
                    <T as Float>::max_value().as_f64()
                ),
            });
        }
        let mut keys: Vec<String> = std::iter::once("loss".to_string())
            .chain(parts.engine.metrics.iter().flat_map(|m| m.keys()))
            .collect();
        if !matches!(validation, Validation::None) {
            keys.extend(keys.clone().into_iter().map(|k| format!("val_{k}")));
        }
        for cb in &o.callbacks {
            for m in cb.monitors() {
                if !keys.contains(&m) {
                    return Err(TrainError::UnknownMonitor {
                        callback: cb.name(),
                        monitor: m,
                        available: keys.clone(),
                    });
                }
            }
            cb.check(&keys)?;
        }
        let batches = n_train.div_ceil(o.batch_size);
        let steps = o.steps_per_epoch.map_or(batches, |s| s.clamp(1, batches));
        Ok(Plan { n_train, validation, validation_batch, steps, keys })
    }
}

impl<T: Scalar> FitOptions<'_, T> {
    /// Epoch counts and frequencies that would silently train or validate other than
    /// asked (Keras rejects them too, or does nothing).
    fn check_schedule(&self) -> Result<()> {
        let bad = |name: &'static str, message: String| {
            Err(TrainError::InvalidArgument { name, message })
        };
        if self.steps_per_epoch == Some(0) {
            return bad("steps_per_epoch", "0 runs no step; pass at least 1, or leave it unset to use the whole data each epoch".into());
        }
        match &self.validation_freq {
            ValidationFreq::Every(0) => {
                return bad(
                    "validation_freq",
                    "0 is not a frequency; pass 1 to validate every epoch, N for every N-th".into(),
                );
            }
            ValidationFreq::Epochs(list) if list.contains(&0) => {
                return bad(
                    "validation_freq",
                    "epoch 0 is not an epoch: the list counts epochs from 1, as Keras".into(),
                );
            }
            _ => {}
        }
        if self.epochs == 0 {
            return bad("epochs", "0 trains nothing; pass at least 1".into());
        }
        if self.initial_epoch >= self.epochs {
            return bad(
                "initial_epoch",
                format!(
                    "{} is not before epochs = {}, so nothing would train; pass an initial_epoch below epochs, which is the index of the last epoch, not a count from initial_epoch (initial_epoch(5).epochs(8) trains epochs 6 to 8)",
                    self.initial_epoch, self.epochs
                ),
            );
        }
        Ok(())
    }
}

/// `fit`'s plan and epoch loop, compiled once per float type (see [`Dtype`]).
pub(crate) fn fit<T: Scalar>(mut parts: Parts<'_, T>, args: FitArgs<'_, T>) -> Result<History> {
    let plan = args.plan(&parts)?;
    let FitArgs { x, y, validation_data, opts } = args;
    let FitOptions {
        epochs,
        batch_size,
        shuffle,
        validation_freq,
        initial_epoch,
        class_weight,
        sample_weight,
        verbose,
        seed,
        mut callbacks,
        ..
    } = opts;
    // Across ranks, the others print and write nothing (see crate::distributed).
    parts.engine.join_world(parts.model)?;
    let chief = parts.engine.dist.as_ref().is_none_or(|d| d.chief());
    if !chief {
        callbacks.retain(|cb| !cb.chief_only());
    }
    // The progress bar is the first callback, so it prints before the others act
    // (silent runs have none).
    if verbose > 0 && chief {
        callbacks.insert(0, Box::new(ProgressBar::new(verbose, plan.steps, epochs)));
    }
    let weights = Weights { sample: sample_weight, class: class_weight.as_ref() };
    let model_name = parts.model.name().to_string();
    let (inp, w) = (parts.model.input_len(), parts.model.output_len());
    let trainable = parts.model.params().trainable_len();
    let mut history = History::default();
    let (mut stop, mut resume) = (false, None);
    let mut logs: Logs =
        plan.keys.iter().filter(|k| !k.starts_with("val_")).map(|k| (k.clone(), 0.0)).collect();
    // What the callbacks may read and change, between steps.
    macro_rules! ctx {
        ($epoch:expr) => {
            &mut CallbackContext {
                params: parts.model.params_mut(),
                optimizer: &mut parts.engine.optimizer,
                model_name: &model_name,
                epoch: $epoch,
                stop: &mut stop,
                resume: &mut resume,
            }
        };
    }
    // Runs every callback's hook (up to the first error); across ranks, every rank
    // then learns whether any failed or asked to stop.
    macro_rules! round {
        (|$cb:ident| $call:expr) => {{
            let mut result = Ok(());
            for $cb in callbacks.iter_mut() {
                if let Err(e) = $call {
                    result = Err(e);
                    break;
                }
            }
            match &parts.engine.dist {
                Some(d) => d.agree_round(result, &mut stop)?,
                None => result?,
            }
        }};
    }
    round!(|cb| cb.on_train_begin(ctx!(initial_epoch)));
    // A callback (BackupAndRestore) may have restored a run and asked to resume: on
    // rank 0, which every rank then follows.
    if let Some(d) = &parts.engine.dist {
        d.broadcast_state(&mut parts.engine.optimizer, trainable, &mut resume)?;
        parts.engine.broadcast_params(parts.model, 0)?;
    }
    let mut epoch = resume.unwrap_or(initial_epoch);
    while epoch < epochs && !stop {
        let started = Instant::now();
        round!(|cb| cb.on_epoch_begin(epoch, ctx!(epoch)));
        let Parts { model, engine, batcher, .. } = &mut parts;
        model.reseed(seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        batcher.start_epoch(plan.n_train, shuffle, seed, epoch);
        engine.metrics.iter_mut().for_each(|m| m.reset());
        let (mut loss_sum, mut seen) = (0.0, 0.0);
        for step in 0..plan.steps {
            let Parts { model, loss, engine, batcher, .. } = &mut parts;
            let t_gather = Instant::now();
            let lo = step * batch_size;
            batcher.take_ordered(lo..(lo + batch_size).min(plan.n_train));
            let batch = batcher.gather(x.data, inp, y, weights, w);
            engine.phases.gather += t_gather.elapsed().as_secs_f64();
            let value = engine.train_step(&mut **model, *loss, &batch)?;
            loss_sum += value * batch.len as f64;
            seen += batch.len as f64;
            if let Some(v) = logs.get_mut("loss") {
                *v = loss_sum / seen;
            }
            for m in engine.metrics.iter() {
                m.for_each_value(&mut |k, value| {
                    if let Some(v) = logs.get_mut(k) {
                        *v = value;
                    }
                });
            }
            round!(|cb| cb.on_train_batch_end(step, &logs, ctx!(epoch)));
            if stop {
                break;
            }
        }
        // Each rank's BatchNormalization statistics came from its slices: take rank
        // 0's, so validation and checkpoints see one model.
        parts.engine.broadcast_params(parts.model, trainable)?;
        let mut epoch_logs = logs.clone();
        if validation_freq.validates(epoch) {
            let (vb, evaluated) = (
                plan.validation_batch,
                match (&plan.validation, &validation_data) {
                    (Validation::Data, Some((vx, vy))) => Some((vx.data, *vy, 0..vx.len)),
                    (Validation::Rows(r), _) => Some((x.data, y, r.clone())),
                    _ => None,
                },
            );
            if let Some((vx, vy, rows)) = evaluated {
                let (vl, vm) = parts.evaluate_rows(vx, vy, rows, vb)?;
                epoch_logs.insert("val_loss".into(), vl);
                for (k, v) in vm {
                    epoch_logs.insert(format!("val_{k}"), v);
                }
                history.validated.push(epoch);
            }
        }
        for (k, v) in &epoch_logs {
            history.history.entry(k.clone()).or_default().push(*v);
        }
        history.epoch.push(epoch);
        history.learning_rate.push(parts.engine.optimizer.learning_rate());
        history.epoch_seconds.push(started.elapsed().as_secs_f64());
        round!(|cb| cb.on_epoch_end(epoch, &epoch_logs, ctx!(epoch)));
        // Weights that overflowed can hide behind a finite loss for a while: a scan
        // per epoch stops the run the epoch it happens, naming the tensor.
        if let Some((tensor, v)) = first_non_finite(parts.model.params()) {
            return Err(TrainError::Diverged {
                epoch: epoch + 1,
                what: format!("{tensor} holds {v}"),
                kept: "the model's weights are unusable now (restore a checkpoint)".into(),
            });
        }
        epoch += 1;
    }
    let last: Logs =
        history.history.iter().filter_map(|(k, v)| v.last().map(|x| (k.clone(), *x))).collect();
    round!(|cb| cb.on_train_end(ctx!(epoch.saturating_sub(1)), &last));
    *parts.epochs_done = epoch;
    Ok(history)
}
