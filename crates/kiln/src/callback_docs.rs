//! kiln-train's callbacks re-exported with an example each: the examples train a model
//! declared with `model!`, which kiln-train cannot use, so they live on these
//! re-exports (rustdoc shows them above each callback's own documentation).
//!
//! Every example fits `y = 2x + 1` with one Dense unit on 64 samples.

/// ```
/// use kiln::prelude::*;
/// # model! { struct Net: [1] => [Dense(1)] }
/// # let x = Inputs::<S1<1>>::from_vec((0..64).map(|i| i as f32 / 64.0).collect())?;
/// # let y = Targets::<S1<1>>::from_vec(x.data().iter().map(|v| 2.0 * v + 1.0).collect())?;
/// let mut net = Net::new(Seed(1)).compile(SGD::new(0.0), MeanSquaredError::default(), ())?;
/// // A learning rate of 0 never improves val_loss: training stops after `patience` epochs.
/// let history = net
///     .fit(&x, &y)
///     .epochs(50)
///     .validation_split(0.25)
///     .verbose(0)
///     .callbacks(EarlyStopping::on("val_loss").patience(3))
///     .run()?;
/// assert_eq!(history.epoch, [0, 1, 2, 3]);
/// # Ok::<(), kiln::Error>(())
/// ```
#[doc(inline)]
pub use kiln_train::EarlyStopping;

/// ```
/// use kiln::prelude::*;
/// # model! { struct Net: [1] => [Dense(1)] }
/// # let x = Inputs::<S1<1>>::from_vec((0..64).map(|i| i as f32 / 64.0).collect())?;
/// # let y = Targets::<S1<1>>::from_vec(x.data().iter().map(|v| 2.0 * v + 1.0).collect())?;
/// let file = std::env::temp_dir().join(format!("kiln-doc-{}-best.safetensors", std::process::id()));
/// let mut net = Net::new(Seed(1)).compile(Adam::new(0.1), MeanSquaredError::default(), ())?;
/// let checkpoint = ModelCheckpoint::to(file.to_string_lossy()).monitor("val_loss").save_best_only();
/// net.fit(&x, &y).epochs(5).validation_split(0.25).verbose(0).callbacks(checkpoint).run()?;
/// // The best epoch's weights, in a file Keras and safetensors readers open.
/// let mut again = Net::new(Seed(2)).compile(Adam::new(0.1), MeanSquaredError::default(), ())?;
/// again.load_weights(&file)?;
/// assert!(again.evaluate(&x, &y)?.loss.is_finite());
/// # std::fs::remove_file(&file).ok();
/// # Ok::<(), kiln::Error>(())
/// ```
#[doc(inline)]
pub use kiln_train::ModelCheckpoint;

/// ```
/// use kiln::prelude::*;
/// # model! { struct Net: [1] => [Dense(1)] }
/// # let x = Inputs::<S1<1>>::from_vec((0..64).map(|i| i as f32 / 64.0).collect())?;
/// # let y = Targets::<S1<1>>::from_vec(x.data().iter().map(|v| 2.0 * v + 1.0).collect())?;
/// let dir = std::env::temp_dir().join(format!("kiln-doc-{}-backup", std::process::id()));
/// let mut net = Net::new(Seed(1)).compile(Adam::new(0.1), MeanSquaredError::default(), ())?;
/// // Two epochs, the backup kept (as after a crash); the next fit resumes after them.
/// let backup = BackupAndRestore::new(&dir).keep_checkpoint();
/// net.fit(&x, &y).epochs(2).verbose(0).callbacks(backup).run()?;
/// let mut resumed = Net::new(Seed(1)).compile(Adam::new(0.1), MeanSquaredError::default(), ())?;
/// let history =
///     resumed.fit(&x, &y).epochs(3).verbose(0).callbacks(BackupAndRestore::new(&dir)).run()?;
/// assert_eq!(history.epoch, [2]);
/// assert!(!dir.join("latest.safetensors").exists()); // deleted once training completed
/// # std::fs::remove_dir_all(&dir).ok();
/// # Ok::<(), kiln::Error>(())
/// ```
#[doc(inline)]
pub use kiln_train::BackupAndRestore;

/// ```
/// use kiln::prelude::*;
/// # model! { struct Net: [1] => [Dense(1)] }
/// # let x = Inputs::<S1<1>>::from_vec((0..64).map(|i| i as f32 / 64.0).collect())?;
/// # let y = Targets::<S1<1>>::from_vec(x.data().iter().map(|v| 2.0 * v + 1.0).collect())?;
/// let file = std::env::temp_dir().join(format!("kiln-doc-{}-log.csv", std::process::id()));
/// let mut net =
///     Net::new(Seed(1)).compile(Adam::new(0.1), MeanSquaredError::default(), ["mae"])?;
/// net.fit(&x, &y).epochs(3).verbose(0).callbacks(CSVLogger::new(&file)).run()?;
/// let csv = std::fs::read_to_string(&file)?;
/// assert_eq!(csv.lines().next(), Some("epoch,loss,mae"));
/// assert_eq!(csv.lines().count(), 4); // the header and one row per epoch
/// # std::fs::remove_file(&file).ok();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[doc(inline)]
pub use kiln_train::CSVLogger;

/// ```
/// use kiln::prelude::*;
/// use kiln::callbacks::tensorboard::read_scalars;
/// # model! { struct Net: [1] => [Dense(1)] }
/// # let x = Inputs::<S1<1>>::from_vec((0..64).map(|i| i as f32 / 64.0).collect())?;
/// # let y = Targets::<S1<1>>::from_vec(x.data().iter().map(|v| 2.0 * v + 1.0).collect())?;
/// let dir = std::env::temp_dir().join(format!("kiln-doc-{}-logs", std::process::id()));
/// let mut net = Net::new(Seed(1)).compile(Adam::new(0.1), MeanSquaredError::default(), ())?;
/// net.fit(&x, &y).epochs(3).verbose(0).callbacks(TensorBoard::new(&dir)).run()?;
/// // `tensorboard --logdir` shows dir/train; read back here with every CRC checked.
/// let file = std::fs::read_dir(dir.join("train"))?.next().unwrap()?.path();
/// let losses = read_scalars(&file)?.into_iter().filter(|e| e.tag == "epoch_loss").count();
/// assert_eq!(losses, 3);
/// # std::fs::remove_dir_all(&dir).ok();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[doc(inline)]
pub use kiln_train::TensorBoard;

/// ```
/// use kiln::prelude::*;
/// # model! { struct Net: [1] => [Dense(1)] }
/// # let x = Inputs::<S1<1>>::from_vec((0..64).map(|i| i as f32 / 64.0).collect())?;
/// # let y = Targets::<S1<1>>::from_vec(x.data().iter().map(|v| 2.0 * v + 1.0).collect())?;
/// let mut net = Net::new(Seed(1)).compile(SGD::new(0.1), MeanSquaredError::default(), ())?;
/// // No epoch improves on the first by 1e9, so after one epoch without it the rate halves.
/// let plateau = ReduceLROnPlateau::on("loss").factor(0.5).patience(1).min_delta(1e9);
/// let history = net.fit(&x, &y).epochs(3).verbose(0).callbacks(plateau).run()?;
/// let rates: Vec<f32> = history.learning_rate.iter().map(|&r| r as f32).collect();
/// assert_eq!(rates, [0.1, 0.1, 0.05]);
/// # Ok::<(), kiln::Error>(())
/// ```
#[doc(inline)]
pub use kiln_train::ReduceLROnPlateau;

/// ```
/// use kiln::prelude::*;
/// # model! { struct Net: [1] => [Dense(1)] }
/// # let x = Inputs::<S1<1>>::from_vec((0..64).map(|i| i as f32 / 64.0).collect())?;
/// # let y = Targets::<S1<1>>::from_vec(x.data().iter().map(|v| 2.0 * v + 1.0).collect())?;
/// let mut net = Net::new(Seed(1)).compile(SGD::new(0.1), MeanSquaredError::default(), ())?;
/// // Keras's schedule(epoch, lr): keep the rate for the first epoch, then halve it.
/// let halve = LearningRateScheduler::new(|epoch, lr| if epoch == 0 { lr } else { lr / 2.0 });
/// let history = net.fit(&x, &y).epochs(3).verbose(0).callbacks(halve).run()?;
/// let rates: Vec<f32> = history.learning_rate.iter().map(|&r| r as f32).collect();
/// assert_eq!(rates, [0.1, 0.05, 0.025]);
/// # Ok::<(), kiln::Error>(())
/// ```
#[doc(inline)]
pub use kiln_train::LearningRateScheduler;

/// ```
/// use kiln::prelude::*;
/// # model! { struct Net: [1] => [Dense(1)] }
/// # let x = Inputs::<S1<1>>::from_vec((0..64).map(|i| i as f32 / 64.0).collect())?;
/// let y = Targets::<S1<1>>::from_vec(x.data().iter().map(|v| 1e30 * v).collect())?;
/// let mut net = Net::new(Seed(1)).compile(SGD::new(1.0), MeanSquaredError::default(), ())?;
/// // Squared errors of 1e30 overflow float32: the first batch's loss is infinite, and
/// // training stops there instead of running the epoch out.
/// let mut batches = 0;
/// let count = LambdaCallback::new().on_batch_end(|_, _| batches += 1);
/// let history =
///     net.fit(&x, &y).batch_size(8).verbose(0).callbacks((TerminateOnNaN, count)).run()?;
/// assert_eq!(batches, 1);
/// assert!(history.history["loss"][0].is_infinite());
/// # Ok::<(), kiln::Error>(())
/// ```
#[doc(inline)]
pub use kiln_train::TerminateOnNaN;

/// ```
/// use kiln::prelude::*;
/// # model! { struct Net: [1] => [Dense(1)] }
/// # let x = Inputs::<S1<1>>::from_vec((0..64).map(|i| i as f32 / 64.0).collect())?;
/// # let y = Targets::<S1<1>>::from_vec(x.data().iter().map(|v| 2.0 * v + 1.0).collect())?;
/// let mut net = Net::new(Seed(1)).compile(Adam::new(0.1), MeanSquaredError::default(), ())?;
/// let mut losses = Vec::new();
/// let record = LambdaCallback::new().on_epoch_end(|_, logs| losses.push(logs["loss"]));
/// net.fit(&x, &y).epochs(20).verbose(0).callbacks(record).run()?;
/// assert_eq!(losses.len(), 20);
/// assert!(losses[19] < losses[0] / 10.0); // it learns
/// # Ok::<(), kiln::Error>(())
/// ```
#[doc(inline)]
pub use kiln_train::LambdaCallback;
