//! kiln: Keras's workflow for Rust. Declare a network once with `model!`, have its shapes
//! checked at compile time, then `compile`, `fit`, `evaluate` and `predict`.
//!
//! This crate holds the layers ([`layers`]), the engine every model runs on
//! ([`ModelCore`]), the runtime [`Sequential`], datasets, plots and the prelude, and
//! re-exports the workspace: [`spec`] (every built-in layer's arguments and shape
//! rule), [`tape`] (tensors, kernels, autograd) and [`train`] (optimizers, losses,
//! metrics, callbacks and the fit loop). docs/ARCHITECTURE.md maps the code; every
//! built-in layer, its arguments and defaults are listed in [`layers`].
//!
//! ```no_run
//! use kiln::prelude::*;
//!
//! model! {
//!     /// A small residual network over 8×8 images.
//!     struct Net: [8, 8, 1] => [
//!         Conv2D(16, kernel = 3, padding = same, activation = relu),
//!         Residual[
//!             Conv2D(16, kernel = 3, padding = same, use_bias = false),
//!             BatchNormalization,
//!         ],
//!         ReLU,
//!         GlobalAveragePooling2D,
//!         Dense(4, activation = softmax),
//!     ]
//! }
//!
//! fn main() -> kiln::Result<()> {
//!     let x = Inputs::<S3<8, 8, 1>>::from_vec(vec![0.5; 32 * 64])?;
//!     let y = ClassLabels::new((0..32).map(|i| i % 4).collect());
//!     let mut net = Net::new(Seed(1))
//!         .compile(Adam::default(), SparseCategoricalCrossentropy::default(), [Accuracy])?;
//!     let history = net.fit(&x, &y).epochs(2).batch_size(8).validation_split(0.25).run()?;
//!     println!("{:?}", &history["val_loss"]);
//!     net.save_weights("net.safetensors")?;
//!     Ok(())
//! }
//! ```

#![warn(missing_docs)]

pub mod core;
pub mod datasets;
pub mod error;
pub mod init;
pub mod keras;
pub mod layers;
#[cfg(feature = "mpi")]
pub mod mpi;
pub mod plot;
pub mod sequential;

pub use error::{Error, Result};
pub use kiln_macros::model;
pub use kiln_spec as spec;
pub use kiln_spec::{Merge, MergeKind};
pub use kiln_tape as tape;
pub use kiln_train as train;

pub use crate::core::{ModelCore, NodeDef, NodeOp, Src, Summary};
pub use kiln_tape::{Tape, TapeError, Tensor, Var};
pub use kiln_train::*;

mod callback_docs;
pub use callback_docs::{
    BackupAndRestore, CSVLogger, EarlyStopping, LambdaCallback, LearningRateScheduler,
    ModelCheckpoint, ReduceLROnPlateau, TensorBoard, TerminateOnNaN,
};
pub use sequential::{Branch, FunctionalBuilder, Sequential, SequentialBuilder};

/// Everything a typical program needs: `use kiln::prelude::*;`.
pub mod prelude {
    pub use crate::layers::{
        Act, Backward, Layer, Params, ParamsMut, ShapedLayer, TapeLayer, TapeModule,
    };
    pub use crate::plot::PlotHistory;
    pub use crate::{Error, Seed, Sequential, Summary, model};
    pub use kiln_tape::{Activation, Padding, Tape, Tensor, Var};
    pub use kiln_train::{
        Accuracy, Adadelta, Adagrad, Adam, AdamW, Adamax, BackupAndRestore, BinaryCrossentropy,
        BinaryFocalCrossentropy, CSVLogger, CategoricalCrossentropy, CategoricalFocalCrossentropy,
        ClassLabels, Compile, Compiled, CosineDecay, CosineSimilarity, Dyn, EarlyStopping,
        Evaluation, ExponentialDecay, History, Huber, Inputs, KLDivergence, LambdaCallback,
        LearningRateScheduler, Lion, LogCosh, MeanAbsoluteError, MeanAbsolutePercentageError,
        MeanSquaredError, MeanSquaredLogarithmicError, Model, ModelCheckpoint, Nadam, NotCompiled,
        Outputs, PiecewiseConstantDecay, Poisson, RMSprop, ReduceLROnPlateau, S1, S2, S3, S4, SGD,
        SparseCategoricalCrossentropy, Targets, TensorBoard, TerminateOnNaN, load_weights,
        save_weights,
    };
}

/// The README's Rust code, compiled as doctests (not run) so that it stays true.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct Readme;

/// The seed a model's initial weights (and its Dropout masks) are drawn from: same seed,
/// same model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Seed(pub u64);
