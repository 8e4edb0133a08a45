//! Keras's built-in callbacks, with Keras 3's defaults and decision rules.

use super::{Callback, CallbackContext, Logs};
use crate::error::{Result, TrainError};
use kiln_tape::Scalar;
use std::io::Write;
use std::path::PathBuf;

/// Whether a monitored quantity should go down or up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Decide from the name: accuracy, AUC, precision, recall, F1 and R2 go up; the
    /// rest (losses, errors) go down.
    #[default]
    Auto,
    /// Smaller is better.
    Min,
    /// Larger is better.
    Max,
}

impl Mode {
    pub(crate) fn maximize(self, monitor: &str) -> bool {
        match self {
            Mode::Min => false,
            Mode::Max => true,
            Mode::Auto => ["acc", "auc", "precision", "recall", "f1", "r2"]
                .iter()
                .any(|k| monitor.contains(k)),
        }
    }
}

/// Stops training when a monitored quantity has stopped improving (Keras `EarlyStopping`).
///
/// With `restore_best_weights`, the weights of the best epoch are restored when training
/// ends, whether or not it stopped early (as Keras 3).
#[derive(Clone, Debug)]
pub struct EarlyStopping {
    monitor: String,
    min_delta: f64,
    patience: usize,
    mode: Mode,
    baseline: Option<f64>,
    restore_best_weights: bool,
    start_from_epoch: usize,
    // State.
    wait: usize,
    best: Option<f64>,
    best_weights: Option<Vec<f64>>,
    best_epoch: usize,
    stopped_epoch: Option<usize>,
}

impl Default for EarlyStopping {
    fn default() -> Self {
        Self::on("val_loss")
    }
}

impl EarlyStopping {
    /// Watches `monitor` (Keras's default is `val_loss`) with patience 0.
    pub fn on(monitor: &str) -> Self {
        EarlyStopping {
            monitor: monitor.into(),
            min_delta: 0.0,
            patience: 0,
            mode: Mode::Auto,
            baseline: None,
            restore_best_weights: false,
            start_from_epoch: 0,
            wait: 0,
            best: None,
            best_weights: None,
            best_epoch: 0,
            stopped_epoch: None,
        }
    }
    /// Epochs without improvement to wait before stopping.
    pub fn patience(mut self, p: usize) -> Self {
        self.patience = p;
        self
    }
    /// The smallest change that counts as an improvement.
    pub fn min_delta(mut self, d: f64) -> Self {
        self.min_delta = d.abs();
        self
    }
    /// Whether smaller or larger is better.
    pub fn mode(mut self, m: Mode) -> Self {
        self.mode = m;
        self
    }
    /// Training must beat this value to reset the patience.
    pub fn baseline(mut self, b: f64) -> Self {
        self.baseline = Some(b);
        self
    }
    /// Restores the best epoch's weights at the end of training.
    pub fn restore_best_weights(mut self) -> Self {
        self.restore_best_weights = true;
        self
    }
    /// Ignores the first epochs (warm-up).
    pub fn start_from_epoch(mut self, e: usize) -> Self {
        self.start_from_epoch = e;
        self
    }
    /// The epoch at which training was stopped (0-based), if it was.
    pub fn stopped_epoch(&self) -> Option<usize> {
        self.stopped_epoch
    }
    /// The best epoch seen (0-based).
    pub fn best_epoch(&self) -> usize {
        self.best_epoch
    }

    fn is_improvement(&self, current: f64, reference: Option<f64>) -> bool {
        let Some(reference) = reference else { return true };
        if self.mode.maximize(&self.monitor) {
            current - self.min_delta > reference
        } else {
            current + self.min_delta < reference
        }
    }
}

fn snapshot<T: Scalar>(v: &[T]) -> Vec<f64> {
    v.iter().map(|x| x.as_f64()).collect()
}

fn restore<T: Scalar>(ctx: &mut CallbackContext<'_, T>, w: &[f64]) -> Result<()> {
    let v: Vec<T> = w.iter().map(|&x| T::of(x)).collect();
    ctx.params.set_values(&v)
}

impl<T: Scalar> Callback<T> for EarlyStopping {
    fn monitors(&self) -> Vec<String> {
        vec![self.monitor.clone()]
    }
    fn name(&self) -> &'static str {
        "EarlyStopping"
    }
    fn on_train_begin(&mut self, _ctx: &mut CallbackContext<'_, T>) -> Result<()> {
        self.wait = 0;
        self.best = None;
        self.best_weights = None;
        self.best_epoch = 0;
        self.stopped_epoch = None;
        Ok(())
    }
    fn on_epoch_end(
        &mut self,
        epoch: usize,
        logs: &Logs,
        ctx: &mut CallbackContext<'_, T>,
    ) -> Result<()> {
        let Some(&current) = logs.get(&self.monitor) else { return Ok(()) };
        if epoch < self.start_from_epoch {
            return Ok(());
        }
        if self.restore_best_weights && self.best_weights.is_none() {
            self.best_weights = Some(snapshot(ctx.params.values()));
            self.best_epoch = epoch;
        }
        self.wait += 1;
        if self.is_improvement(current, self.best) {
            self.best = Some(current);
            self.best_epoch = epoch;
            if self.restore_best_weights {
                self.best_weights = Some(snapshot(ctx.params.values()));
            }
            if self.baseline.is_none() || self.is_improvement(current, self.baseline) {
                self.wait = 0;
            }
            return Ok(());
        }
        if self.wait >= self.patience && epoch > 0 {
            self.stopped_epoch = Some(epoch);
            ctx.stop_training();
        }
        Ok(())
    }
    fn on_train_end(&mut self, ctx: &mut CallbackContext<'_, T>, _logs: &Logs) -> Result<()> {
        if let (true, Some(w)) = (self.restore_best_weights, self.best_weights.take()) {
            restore(ctx, &w)?;
        }
        Ok(())
    }
}

/// Multiplies the learning rate by `factor` when a quantity stops improving (Keras
/// `ReduceLROnPlateau`: factor 0.1, patience 10, min_delta 1e-4, cooldown 0, min_lr 0).
#[derive(Clone, Debug)]
pub struct ReduceLROnPlateau {
    monitor: String,
    factor: f64,
    patience: usize,
    mode: Mode,
    min_delta: f64,
    cooldown: usize,
    min_lr: f64,
    best: Option<f64>,
    wait: usize,
    cooldown_counter: usize,
}

impl Default for ReduceLROnPlateau {
    fn default() -> Self {
        Self::on("val_loss")
    }
}

impl ReduceLROnPlateau {
    /// Watches `monitor` with Keras's defaults.
    pub fn on(monitor: &str) -> Self {
        ReduceLROnPlateau {
            monitor: monitor.into(),
            factor: 0.1,
            patience: 10,
            mode: Mode::Auto,
            min_delta: 1e-4,
            cooldown: 0,
            min_lr: 0.0,
            best: None,
            wait: 0,
            cooldown_counter: 0,
        }
    }
    /// The factor the learning rate is multiplied by (in (0, 1)).
    pub fn factor(mut self, f: f64) -> Self {
        self.factor = f;
        self
    }
    /// Epochs without improvement before reducing.
    pub fn patience(mut self, p: usize) -> Self {
        self.patience = p;
        self
    }
    /// Whether smaller or larger is better.
    pub fn mode(mut self, m: Mode) -> Self {
        self.mode = m;
        self
    }
    /// The smallest change that counts as an improvement.
    pub fn min_delta(mut self, d: f64) -> Self {
        self.min_delta = d;
        self
    }
    /// Epochs to wait after a reduction before counting again.
    pub fn cooldown(mut self, c: usize) -> Self {
        self.cooldown = c;
        self
    }
    /// The learning rate never goes below this.
    pub fn min_lr(mut self, m: f64) -> Self {
        self.min_lr = m;
        self
    }
}

impl<T: Scalar> Callback<T> for ReduceLROnPlateau {
    fn monitors(&self) -> Vec<String> {
        vec![self.monitor.clone()]
    }
    fn name(&self) -> &'static str {
        "ReduceLROnPlateau"
    }
    fn on_train_begin(&mut self, _ctx: &mut CallbackContext<'_, T>) -> Result<()> {
        if !(self.factor > 0.0 && self.factor < 1.0) {
            return Err(TrainError::InvalidArgument {
                name: "ReduceLROnPlateau factor",
                message: format!(
                    "{} must be in (0, 1); it multiplies the learning rate",
                    self.factor
                ),
            });
        }
        self.best = None;
        self.wait = 0;
        self.cooldown_counter = 0;
        Ok(())
    }
    fn on_epoch_end(
        &mut self,
        _epoch: usize,
        logs: &Logs,
        ctx: &mut CallbackContext<'_, T>,
    ) -> Result<()> {
        let Some(&current) = logs.get(&self.monitor) else { return Ok(()) };
        let better = match self.best {
            None => true,
            Some(b) if self.mode.maximize(&self.monitor) => current > b + self.min_delta,
            Some(b) => current < b - self.min_delta,
        };
        let in_cooldown = self.cooldown_counter > 0;
        if in_cooldown {
            self.cooldown_counter -= 1;
            self.wait = 0;
        }
        if better {
            self.best = Some(current);
            self.wait = 0;
        } else if !in_cooldown {
            self.wait += 1;
            if self.wait >= self.patience {
                let old = ctx.optimizer.learning_rate();
                if old > self.min_lr {
                    ctx.optimizer.set_learning_rate((old * self.factor).max(self.min_lr))?;
                    self.cooldown_counter = self.cooldown;
                    self.wait = 0;
                }
            }
        }
        Ok(())
    }
}

/// Sets the learning rate at the start of each epoch from `schedule(epoch, lr)` (Keras
/// `LearningRateScheduler`).
pub struct LearningRateScheduler<F> {
    schedule: F,
}

impl<F: FnMut(usize, f64) -> f64> LearningRateScheduler<F> {
    /// Wraps a schedule of (epoch, current learning rate).
    pub fn new(schedule: F) -> Self {
        LearningRateScheduler { schedule }
    }
}

impl<T: Scalar, F: FnMut(usize, f64) -> f64> Callback<T> for LearningRateScheduler<F> {
    fn name(&self) -> &'static str {
        "LearningRateScheduler"
    }
    fn on_epoch_begin(&mut self, epoch: usize, ctx: &mut CallbackContext<'_, T>) -> Result<()> {
        let lr = (self.schedule)(epoch, ctx.optimizer.learning_rate());
        ctx.optimizer.set_learning_rate(lr)
    }
}

/// Stops training as soon as the loss becomes NaN or infinite (Keras `TerminateOnNaN`).
#[derive(Clone, Copy, Debug, Default)]
pub struct TerminateOnNaN;

impl<T: Scalar> Callback<T> for TerminateOnNaN {
    fn name(&self) -> &'static str {
        "TerminateOnNaN"
    }
    fn on_train_batch_end(
        &mut self,
        batch: usize,
        logs: &Logs,
        ctx: &mut CallbackContext<'_, T>,
    ) -> Result<()> {
        if let Some(l) = logs.get("loss").filter(|l| !l.is_finite()) {
            eprintln!("Batch {batch}: invalid loss {l}, terminating training");
            ctx.stop_training();
        }
        Ok(())
    }
}

/// Writes each epoch's logs as a CSV row (Keras `CSVLogger`: separator ",", append false).
pub struct CSVLogger {
    path: PathBuf,
    separator: char,
    append: bool,
    file: Option<std::fs::File>,
    /// Whether the file already has its header row (written, or found when appending).
    has_header: bool,
}

impl CSVLogger {
    /// Logs to `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        CSVLogger {
            path: path.into(),
            separator: ',',
            append: false,
            file: None,
            has_header: false,
        }
    }
    /// Uses another separator.
    pub fn separator(mut self, s: char) -> Self {
        self.separator = s;
        self
    }
    /// Appends to an existing file instead of replacing it.
    pub fn append(mut self) -> Self {
        self.append = true;
        self
    }
    fn io(&self, source: std::io::Error) -> TrainError {
        TrainError::Io { path: self.path.clone(), source }
    }
}

impl<T: Scalar> Callback<T> for CSVLogger {
    fn name(&self) -> &'static str {
        "CSVLogger"
    }
    fn chief_only(&self) -> bool {
        true
    }
    fn on_train_begin(&mut self, _ctx: &mut CallbackContext<'_, T>) -> Result<()> {
        let existed = self.append && self.path.exists();
        let f = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(self.append)
            .truncate(!self.append)
            .open(&self.path)
            .map_err(|e| self.io(e))?;
        self.file = Some(f);
        self.has_header = existed;
        Ok(())
    }
    fn on_epoch_end(
        &mut self,
        epoch: usize,
        logs: &Logs,
        _ctx: &mut CallbackContext<'_, T>,
    ) -> Result<()> {
        let sep = self.separator.to_string();
        let mut text = String::new();
        if !self.has_header {
            self.has_header = true;
            text += &std::iter::once("epoch")
                .chain(logs.keys().map(String::as_str))
                .collect::<Vec<_>>()
                .join(&sep);
            text.push('\n');
        }
        let values: Vec<String> = logs.values().map(|v| v.to_string()).collect();
        text += &std::iter::once(epoch.to_string()).chain(values).collect::<Vec<_>>().join(&sep);
        text.push('\n');
        let Some(f) = self.file.as_mut() else { return Ok(()) };
        let r = f.write_all(text.as_bytes()).and_then(|_| f.flush());
        r.map_err(|e| self.io(e))
    }
    fn on_train_end(&mut self, _ctx: &mut CallbackContext<'_, T>, _logs: &Logs) -> Result<()> {
        self.file = None;
        Ok(())
    }
}

/// Closures as a callback (Keras `LambdaCallback`).
#[allow(clippy::type_complexity)]
pub struct LambdaCallback<'f> {
    on_epoch_end: Option<Box<dyn FnMut(usize, &Logs) + 'f>>,
    on_batch_end: Option<Box<dyn FnMut(usize, &Logs) + 'f>>,
    on_train_end: Option<Box<dyn FnMut(&Logs) + 'f>>,
}

impl<'f> Default for LambdaCallback<'f> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'f> LambdaCallback<'f> {
    /// A callback that does nothing until given closures.
    pub fn new() -> Self {
        LambdaCallback { on_epoch_end: None, on_batch_end: None, on_train_end: None }
    }
    /// Runs `f(epoch, logs)` at each epoch end.
    pub fn on_epoch_end(mut self, f: impl FnMut(usize, &Logs) + 'f) -> Self {
        self.on_epoch_end = Some(Box::new(f));
        self
    }
    /// Runs `f(batch, logs)` after each training batch.
    pub fn on_batch_end(mut self, f: impl FnMut(usize, &Logs) + 'f) -> Self {
        self.on_batch_end = Some(Box::new(f));
        self
    }
    /// Runs `f(logs)` when training ends.
    pub fn on_train_end(mut self, f: impl FnMut(&Logs) + 'f) -> Self {
        self.on_train_end = Some(Box::new(f));
        self
    }
}

impl<T: Scalar> Callback<T> for LambdaCallback<'_> {
    fn name(&self) -> &'static str {
        "LambdaCallback"
    }
    fn on_epoch_end(
        &mut self,
        epoch: usize,
        logs: &Logs,
        _ctx: &mut CallbackContext<'_, T>,
    ) -> Result<()> {
        if let Some(f) = self.on_epoch_end.as_mut() {
            f(epoch, logs);
        }
        Ok(())
    }
    fn on_train_batch_end(
        &mut self,
        batch: usize,
        logs: &Logs,
        _ctx: &mut CallbackContext<'_, T>,
    ) -> Result<()> {
        if let Some(f) = self.on_batch_end.as_mut() {
            f(batch, logs);
        }
        Ok(())
    }
    fn on_train_end(&mut self, _ctx: &mut CallbackContext<'_, T>, logs: &Logs) -> Result<()> {
        if let Some(f) = self.on_train_end.as_mut() {
            f(logs);
        }
        Ok(())
    }
}
