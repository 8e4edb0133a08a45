//! Callbacks: hooks the fit loop calls at train, epoch and batch boundaries, with the
//! logs, the model's weights, the optimizer's learning rate and a stop request.

mod builtin;
mod checkpointing;
pub mod tensorboard;

pub use builtin::{
    CSVLogger, EarlyStopping, LambdaCallback, LearningRateScheduler, Mode, ReduceLROnPlateau,
    TerminateOnNaN,
};
pub use checkpointing::{BackupAndRestore, ModelCheckpoint, SaveFreq};
pub use tensorboard::{TensorBoard, UpdateFreq};

use crate::error::Result;
use crate::model::ParamStore;
use crate::optim::Optimizer;
use kiln_tape::Scalar;
use std::collections::BTreeMap;

/// Log values by Keras's keys (`loss`, `accuracy`, `val_loss`, ...), sorted by key.
pub type Logs = BTreeMap<String, f64>;

/// What a callback may read and change during training.
pub struct CallbackContext<'a, T: Scalar> {
    /// The model's parameters (read them to keep best weights, write them to restore).
    pub params: &'a mut ParamStore<T>,
    /// The optimizer (its learning rate, its state for full checkpoints).
    pub optimizer: &'a mut Optimizer<T>,
    /// The model's name.
    pub model_name: &'a str,
    /// The epoch the fit loop is in (0-based).
    pub epoch: usize,
    pub(crate) stop: &'a mut bool,
    pub(crate) resume: &'a mut Option<usize>,
}

impl<T: Scalar> CallbackContext<'_, T> {
    /// Asks the fit loop to stop after the current epoch (or batch).
    pub fn stop_training(&mut self) {
        *self.stop = true;
    }

    /// Whether a stop has been requested.
    pub fn stop_requested(&self) -> bool {
        *self.stop
    }

    /// From `on_train_begin`: start training at this epoch instead (resuming a run).
    pub fn resume_at(&mut self, epoch: usize) {
        *self.resume = Some(epoch);
    }
}

/// A training hook. Every method has a default that does nothing.
pub trait Callback<T: Scalar> {
    /// The log keys this callback reads; `fit` checks they will exist before it starts.
    fn monitors(&self) -> Vec<String> {
        Vec::new()
    }
    /// The callback's name in error messages.
    fn name(&self) -> &'static str {
        "callback"
    }
    /// Whether, when training across ranks ([`crate::distributed`]), only rank 0 runs
    /// it: true for callbacks that print or write files (progress, checkpoints, logs),
    /// false for those that decide (they run on every rank, on the same logs).
    fn chief_only(&self) -> bool {
        false
    }
    /// Checks the callback's settings against the log keys the run will have (`keys`,
    /// `val_` ones included when it validates), before the first step: what would
    /// only fail, or silently do nothing, after training ran.
    fn check(&self, _keys: &[String]) -> Result<()> {
        Ok(())
    }
    /// Before the first epoch.
    fn on_train_begin(&mut self, _ctx: &mut CallbackContext<'_, T>) -> Result<()> {
        Ok(())
    }
    /// After the last epoch (also after an early stop).
    fn on_train_end(&mut self, _ctx: &mut CallbackContext<'_, T>, _logs: &Logs) -> Result<()> {
        Ok(())
    }
    /// At the start of epoch `epoch` (0-based).
    fn on_epoch_begin(&mut self, _epoch: usize, _ctx: &mut CallbackContext<'_, T>) -> Result<()> {
        Ok(())
    }
    /// At the end of an epoch, with its training and validation logs.
    fn on_epoch_end(
        &mut self,
        _epoch: usize,
        _logs: &Logs,
        _ctx: &mut CallbackContext<'_, T>,
    ) -> Result<()> {
        Ok(())
    }
    /// After each training batch, with the epoch's running means so far.
    fn on_train_batch_end(
        &mut self,
        _batch: usize,
        _logs: &Logs,
        _ctx: &mut CallbackContext<'_, T>,
    ) -> Result<()> {
        Ok(())
    }
}

/// A boxed callback that may borrow from its surroundings for `'a`.
pub type BoxedCallback<'a, T> = Box<dyn Callback<T> + 'a>;

/// What `fit(..).callbacks(..)` accepts: one callback, a tuple of callbacks of different
/// types (Keras's list), an array of one type, a vector of boxed callbacks, or `()`.
pub trait IntoCallbacks<'a, T: Scalar> {
    /// Boxes every callback.
    fn into_callbacks(self) -> Vec<BoxedCallback<'a, T>>;
}

impl<'a, T: Scalar> IntoCallbacks<'a, T> for () {
    fn into_callbacks(self) -> Vec<BoxedCallback<'a, T>> {
        Vec::new()
    }
}
impl<'a, T: Scalar> IntoCallbacks<'a, T> for Vec<BoxedCallback<'a, T>> {
    fn into_callbacks(self) -> Vec<BoxedCallback<'a, T>> {
        self
    }
}
impl<'a, T: Scalar, C: Callback<T> + 'a, const N: usize> IntoCallbacks<'a, T> for [C; N] {
    fn into_callbacks(self) -> Vec<BoxedCallback<'a, T>> {
        self.into_iter().map(|c| Box::new(c) as BoxedCallback<'a, T>).collect()
    }
}
macro_rules! tuple_callbacks {
    ($($name:ident),+) => {
        impl<'a, T: Scalar, $($name: Callback<T> + 'a),+> IntoCallbacks<'a, T> for ($($name,)+) {
            #[allow(non_snake_case)]
            fn into_callbacks(self) -> Vec<BoxedCallback<'a, T>> {
                let ($($name,)+) = self;
                vec![$(Box::new($name)),+]
            }
        }
    };
}
tuple_callbacks!(A);
tuple_callbacks!(A, B);
tuple_callbacks!(A, B, C);
tuple_callbacks!(A, B, C, D);
tuple_callbacks!(A, B, C, D, E);
tuple_callbacks!(A, B, C, D, E, F);
tuple_callbacks!(A, B, C, D, E, F, G);
tuple_callbacks!(A, B, C, D, E, F, G, H);
macro_rules! single_callback {
    ($($t:ty),*) => {$(
        impl<'a, T: Scalar> IntoCallbacks<'a, T> for $t
        where
            $t: Callback<T>,
        {
            fn into_callbacks(self) -> Vec<BoxedCallback<'a, T>> {
                vec![Box::new(self)]
            }
        }
    )*};
}
single_callback!(
    EarlyStopping,
    ReduceLROnPlateau,
    TerminateOnNaN,
    CSVLogger,
    ModelCheckpoint,
    BackupAndRestore,
    TensorBoard
);
impl<'a, T: Scalar, F: FnMut(usize, f64) -> f64 + 'a> IntoCallbacks<'a, T>
    for LearningRateScheduler<F>
{
    fn into_callbacks(self) -> Vec<BoxedCallback<'a, T>> {
        vec![Box::new(self)]
    }
}
impl<'a, 'f: 'a, T: Scalar> IntoCallbacks<'a, T> for LambdaCallback<'f> {
    fn into_callbacks(self) -> Vec<BoxedCallback<'a, T>> {
        vec![Box::new(self)]
    }
}
