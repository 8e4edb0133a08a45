//! The float types kiln trains in, and the training loop compiled once for each.
//!
//! A release build does not share generic instances between crates: each generic
//! function a program calls is compiled again into that program. `fit`, `evaluate`,
//! `predict` and the rest are generic over the user's model, loss and labels only at
//! their surface; underneath they call this trait's functions, which take the model,
//! the loss and the labels as trait objects and are implemented for `f32` and `f64`
//! right here. Those implementations are ordinary (non-generic) functions, so kiln-train
//! compiles the loop once per type and a program links it: rebuilding a program after
//! an edit compiles the program, not the training loop again. The per-step cost is one
//! virtual call into the model per pass, against work measured in microseconds.

use super::run::{FitArgs, fit};
use super::{Engine, Evaluation, Parts, predict_values};
use crate::callbacks::Logs;
use crate::checkpoint;
use crate::data::{Labels, Samples};
use crate::error::Result;
use crate::history::History;
use crate::loss::Loss;
use crate::metrics::Metric;
use crate::model::{DynModel, ParamStore};
use crate::optim::Optimizer;
use kiln_tape::Scalar;
use std::path::Path;

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// A float type models train in: `f32` (Keras's default) or `f64`. Its functions are
/// the training loop's entry points, compiled once inside kiln-train (see the module
/// documentation); call them through [`crate::Compiled`]'s methods.
pub trait Dtype: Scalar + sealed::Sealed {
    /// `fit`'s checks and epoch loop.
    #[doc(hidden)]
    fn fit(parts: Parts<'_, Self>, args: FitArgs<'_, Self>) -> Result<History>;
    /// `evaluate`.
    #[doc(hidden)]
    fn evaluate(
        parts: Parts<'_, Self>,
        x: Samples<'_, Self>,
        y: &dyn Labels<Self>,
        batch_size: usize,
    ) -> Result<Evaluation>;
    /// `train_on_batch` (`train`) and `test_on_batch`.
    #[doc(hidden)]
    fn on_batch(
        parts: Parts<'_, Self>,
        x: Samples<'_, Self>,
        y: &dyn Labels<Self>,
        train: bool,
    ) -> Result<Logs>;
    /// `predict`, across ranks when a compiled model's engine is given.
    #[doc(hidden)]
    fn predict(
        model: &mut dyn DynModel<Self>,
        engine: Option<&mut Engine<Self>>,
        x: Samples<'_, Self>,
        batch_size: usize,
    ) -> Result<Vec<Self>>;
    /// [`crate::metrics::metric_by_name`].
    #[doc(hidden)]
    fn metric_by_name(name: &str, width: usize) -> Result<Box<dyn Metric<Self>>>;
    /// [`crate::loss::loss_by_name`].
    #[doc(hidden)]
    fn loss_by_name(name: &str) -> Result<Box<dyn Loss<Self>>>;
    /// [`checkpoint::save_store_weights`].
    #[doc(hidden)]
    fn save_weights(p: &ParamStore<Self>, model: &str, path: &Path) -> Result<()>;
    /// [`checkpoint::save_store_full`].
    #[doc(hidden)]
    fn save_full(
        p: &ParamStore<Self>,
        model: &str,
        optimizer: &mut Optimizer<Self>,
        next_epoch: usize,
        path: &Path,
    ) -> Result<()>;
    /// [`checkpoint::load_store_weights`].
    #[doc(hidden)]
    fn load_weights(store: &mut ParamStore<Self>, path: &Path) -> Result<()>;
    /// [`checkpoint::load_store_full`].
    #[doc(hidden)]
    fn load_full(
        store: &mut ParamStore<Self>,
        optimizer: &mut Optimizer<Self>,
        path: &Path,
    ) -> Result<usize>;
}

macro_rules! dtype {
    ($t:ty) => {
        impl Dtype for $t {
            fn fit(parts: Parts<'_, $t>, args: FitArgs<'_, $t>) -> Result<History> {
                fit(parts, args)
            }
            fn evaluate(
                mut parts: Parts<'_, $t>,
                x: Samples<'_, $t>,
                y: &dyn Labels<$t>,
                batch_size: usize,
            ) -> Result<Evaluation> {
                parts.evaluate(x, y, batch_size)
            }
            fn on_batch(
                mut parts: Parts<'_, $t>,
                x: Samples<'_, $t>,
                y: &dyn Labels<$t>,
                train: bool,
            ) -> Result<Logs> {
                parts.on_one_batch(x, y, train)
            }
            fn predict(
                model: &mut dyn DynModel<$t>,
                engine: Option<&mut Engine<$t>>,
                x: Samples<'_, $t>,
                batch_size: usize,
            ) -> Result<Vec<$t>> {
                predict_values(model, engine, x, batch_size)
            }
            fn metric_by_name(name: &str, width: usize) -> Result<Box<dyn Metric<$t>>> {
                crate::metrics::metric_by_name(name, width)
            }
            fn loss_by_name(name: &str) -> Result<Box<dyn Loss<$t>>> {
                crate::loss::loss_by_name(name)
            }
            fn save_weights(p: &ParamStore<$t>, model: &str, path: &Path) -> Result<()> {
                checkpoint::save_weights_of(p, model, path)
            }
            fn save_full(
                p: &ParamStore<$t>,
                model: &str,
                optimizer: &mut Optimizer<$t>,
                next_epoch: usize,
                path: &Path,
            ) -> Result<()> {
                checkpoint::save_full_of(p, model, optimizer, next_epoch, path)
            }
            fn load_weights(store: &mut ParamStore<$t>, path: &Path) -> Result<()> {
                checkpoint::load_weights_of(store, path)
            }
            fn load_full(
                store: &mut ParamStore<$t>,
                optimizer: &mut Optimizer<$t>,
                path: &Path,
            ) -> Result<usize> {
                checkpoint::load_full_of(store, optimizer, path)
            }
        }
    };
}
dtype!(f32);
dtype!(f64);
