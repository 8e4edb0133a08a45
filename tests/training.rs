//! compile / fit / evaluate / predict: semantics, options, callbacks, and every bad
//! input the issue lists, each with the error message a user sees.

mod common;

use common::{blobs, compiled, mlp, tmpdir};
use kiln::*;
use std::collections::HashMap;

fn err<T: std::fmt::Debug>(r: std::result::Result<T, TrainError>) -> String {
    r.expect_err("expected an error").to_string()
}

#[test]
fn training_learns_and_evaluate_predict_do_not_change_weights() {
    let (x, y) = blobs(300, 1);
    let mut m = compiled(1);
    let h = m.fit(&x, &y).epochs(15).batch_size(16).validation_split(0.2).verbose(0).run().unwrap();
    assert_eq!(h.len(), 15);
    let keys: Vec<&str> = h.keys().collect();
    assert_eq!(keys, ["accuracy", "loss", "val_accuracy", "val_loss"]);
    assert!(h["loss"][14] < h["loss"][0] * 0.5, "{:?}", &h["loss"]);
    assert!(h["val_accuracy"][14] > 0.95, "{:?}", &h["val_accuracy"]);
    let before = m.model().params().values().to_vec();
    let e = m.evaluate(&x, &y).unwrap();
    let p = m.predict(&x).unwrap();
    assert_eq!(
        m.model().params().values(),
        &before[..],
        "evaluate/predict must not change weights"
    );
    assert!(e["accuracy"] > 0.95 && e.loss < h["loss"][0]);
    let acc = p.argmax().iter().zip(y.as_slice()).filter(|(a, b)| a == b).count() as f64 / 300.0;
    assert!((acc - e["accuracy"]).abs() < 1e-9, "predict and evaluate agree");
    assert!(p.iter().all(|row| (row.iter().sum::<f32>() - 1.0).abs() < 1e-5), "softmax outputs");
    assert_eq!(e.to_map().len(), 2);
}

#[test]
fn same_seed_same_run() {
    let (x, y) = blobs(120, 2);
    let run = |seed| {
        let mut m = compiled(3);
        let h = m.fit(&x, &y).epochs(3).seed(seed).verbose(0).run().unwrap();
        (h.history, m.model().params().values().to_vec())
    };
    assert_eq!(run(5), run(5));
    assert_ne!(run(5).1, run(6).1, "the shuffle seed matters");
}

#[test]
fn bad_inputs_are_errors_that_say_what_to_fix() {
    let (x, y) = blobs(40, 3);
    let mut m = compiled(1);
    let e = err(m.fit(&x, &y.head(30)).verbose(0).run());
    assert_eq!(e, "x has 40 samples but y has 30; pass the same number of samples in both");
    let e = err(m.fit(&x.head(0), &y.head(0)).verbose(0).run());
    assert_eq!(e, "x is empty; pass at least one sample");
    let e = err(m.fit(&x, &y).batch_size(0).verbose(0).run());
    assert!(e.starts_with("batch_size: 0 is not a batch size"), "{e}");
    let e = err(m.fit(&x, &y).validation_split(1.0).verbose(0).run());
    assert!(e.contains("1 is outside [0, 1)"), "{e}");
    let e = err(m.fit(&x, &y).validation_split(-0.1).verbose(0).run());
    assert!(e.contains("outside [0, 1)"), "{e}");
    let e = err(m.fit(&x.head(2), &y.head(2)).validation_split(0.6).verbose(0).run());
    assert_eq!(
        e,
        "validation_split: 0.6 of 2 samples leaves 0 for training and 2 for validation; both need at least one"
    );
    // floor(n·(1 − v)) as Keras: a split so small that 1 − v rounds to 1 validates nothing.
    let e = err(m.fit(&x.head(3), &y.head(3)).validation_split(1e-20).verbose(0).run());
    assert!(e.contains("leaves 3 for training and 0 for validation"), "{e}");
    let bad = ClassLabels::new((0..40).map(|i| if i == 7 { 3 } else { 0 }).collect());
    let e = err(m.fit(&x, &bad).verbose(0).run());
    assert_eq!(
        e,
        "label 3 of sample 7 is outside the model's 3 classes (0..3); fix the label or give the model more output units"
    );
    let mut nan = x.data().to_vec();
    nan[4 * 5 + 2] = f32::NAN;
    let xn = Inputs::<Dyn>::from_vec_shape(&[4], nan).unwrap();
    let e = err(m.fit(&xn, &y).verbose(0).run());
    assert_eq!(
        e,
        "Inputs holds a non-finite value (NaN) in sample 5, element 2; remove or impute it before training"
    );
    let e = err(m.predict(&xn));
    assert!(
        e.contains("non-finite value (NaN) in sample 5, element 2"),
        "predict refuses NaN rather than returning it: {e}"
    );
    let e = err(m.fit(&x, &y).verbose(0).callbacks(EarlyStopping::on("val_los")).run());
    assert!(e.contains("EarlyStopping monitors \"val_los\", but the logs will only hold loss, accuracy; monitor one of those"), "{e}");
    let e = err(m
        .fit(&x, &y)
        .validation_split(0.2)
        .verbose(0)
        .callbacks(EarlyStopping::on("val_acc"))
        .run());
    assert!(e.contains("loss, accuracy, val_loss, val_accuracy"), "{e}");
    let wrong = Inputs::<Dyn>::from_vec_shape(&[2], vec![0.0; 8]).unwrap();
    let e = err(m.fit(&wrong, &y.head(4)).verbose(0).run());
    assert!(e.contains("samples of shape [2] but the model needs [4]"), "{e}");
    let e = err(m.fit(&x, &y).sample_weight(&[1.0; 3]).verbose(0).run());
    assert!(e.contains("3 weights for 40 samples"), "{e}");
    // Settings Keras rejects (or that would silently do something else).
    let e = err(m.fit(&x, &y).steps_per_epoch(0).verbose(0).run());
    assert!(e.starts_with("steps_per_epoch: 0 runs no step; pass at least 1"), "{e}");
    let e = err(m.fit(&x, &y).validation_split(0.2).validation_freq(0).verbose(0).run());
    assert!(e.contains("0 is not a frequency; pass 1 to validate every epoch"), "{e}");
    let e = err(m.fit(&x, &y).validation_split(0.2).validation_freq(vec![0, 2]).verbose(0).run());
    assert!(e.contains("counts epochs from 1"), "{e}");
    let e = err(m.fit(&x, &y).epochs(3).initial_epoch(5).verbose(0).run());
    assert!(e.contains("5 is not before epochs = 3, so nothing would train"), "{e}");
    let e = err(m.fit(&x, &y).epochs(0).verbose(0).run());
    assert_eq!(e, "epochs: 0 trains nothing; pass at least 1");
    let e = err(m.fit(&x, &y).class_weight(HashMap::from([(0, 1.0), (7, 2.0)])).verbose(0).run());
    assert!(e.contains("it weights class 7, but the model has 3 classes (0..3)"), "{e}");
    let onehot = Targets::<Dyn>::from_vec_shape(&[3], vec![0.0; 120]).unwrap();
    let mut m2 = mlp(1).compile("adam", "sparse_categorical_crossentropy", ["accuracy"]).unwrap();
    let e = err(m2.fit(&x, &onehot).verbose(0).run());
    assert!(e.contains("use categorical_crossentropy for one-hot targets"), "{e}");
}

#[test]
fn compile_rejects_unknown_names_and_conflicting_settings() {
    let e = mlp(1).compile("adma", "mse", ()).err().unwrap().to_string();
    assert!(
        e.contains("unknown optimizer \"adma\" (did you mean \"adam\"?); valid names: sgd, adam"),
        "{e}"
    );
    let e =
        mlp(1).compile("adam", "sparse_categorical_crossentropi", ()).err().unwrap().to_string();
    assert!(e.contains("did you mean \"sparse_categorical_crossentropy\""), "{e}");
    let e = mlp(1).compile("adam", "mse", ["acuracy"]).err().unwrap().to_string();
    assert!(e.contains("unknown metric \"acuracy\" (did you mean \"accuracy\"?)"), "{e}");
    let e = mlp(1)
        .compile(SGD::default().clipnorm(1.0).global_clipnorm(1.0), "mse", ())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("set at most one of clipnorm, clipvalue and global_clipnorm"), "{e}");
    let e = mlp(1).compile(Adam::new(-1.0), "mse", ()).err().unwrap().to_string();
    assert!(e.contains("learning_rate: -1 must be a finite number ≥ 0"), "{e}");
}

#[test]
fn accuracy_resolves_by_output_width_as_keras() {
    let (x, y) = blobs(60, 4);
    let bin = ClassLabels::new(y.as_slice().iter().map(|&c| usize::from(c == 0)).collect());
    let net = Sequential::builder("bin", &[4])
        .add(layers::Dense::new(1).activation(tape::Activation::Sigmoid))
        .build(Seed(1))
        .unwrap();
    let mut m = net.compile(Adam::new(0.05), BinaryCrossentropy::default(), ["accuracy"]).unwrap();
    let h = m.fit(&x, &bin).epochs(20).verbose(0).run().unwrap();
    assert!(h["accuracy"][19] > 0.9, "binary accuracy on a sigmoid output: {:?}", &h["accuracy"]);
}

#[test]
fn validation_options_and_resuming_epochs() {
    let (x, y) = blobs(90, 5);
    let (vx, vy) = blobs(30, 6);
    let mut m = compiled(1);
    let h = m
        .fit(&x, &y)
        .epochs(4)
        .validation_data(&vx, &vy)
        .validation_freq(2)
        .verbose(0)
        .run()
        .unwrap();
    assert_eq!(h["val_loss"].len(), 2, "validated at epochs 2 and 4 only");
    assert_eq!(h.validated, vec![1, 3]);
    let h = m.fit(&x, &y).epochs(5).initial_epoch(3).verbose(0).run().unwrap();
    assert_eq!(h.epoch, vec![3, 4], "initial_epoch: epochs is the final index");
    let h = m
        .fit(&x, &y)
        .epochs(1)
        .validation_data(&vx, &vy)
        .validation_freq(vec![1])
        .verbose(0)
        .run()
        .unwrap();
    assert_eq!(h["val_loss"].len(), 1);
    // validation_batch_size batches validation apart from training; the value is the
    // validation loss of the weights the epoch ended with.
    let hv = m
        .fit(&x, &y)
        .epochs(1)
        .validation_data(&vx, &vy)
        .validation_batch_size(7)
        .verbose(0)
        .run()
        .unwrap();
    let want = m.evaluate_batched(&vx, &vy, 7).unwrap().loss;
    assert!(
        (hv["val_loss"][0] - want).abs() < 1e-6 * want.abs().max(1.0),
        "{} vs {want}",
        hv["val_loss"][0]
    );
    let e = err(m.fit(&x, &y).validation_data(&vx, &vy).validation_batch_size(0).verbose(0).run());
    assert!(e.starts_with("batch_size: 0 is not a batch size"), "{e}");
    // steps_per_epoch: fewer steps, so fewer optimizer iterations.
    let before = m.optimizer().iterations();
    m.fit(&x, &y).epochs(2).batch_size(10).steps_per_epoch(3).verbose(0).run().unwrap();
    assert_eq!(m.optimizer().iterations() - before, 6);
    let csv = h.to_csv();
    assert!(
        csv.starts_with(
            "epoch,accuracy,loss,val_accuracy,val_loss,learning_rate,epoch_seconds\n0,"
        ),
        "{csv}"
    );
    let json: serde_json::Value = serde_json::from_str(&h.to_json()).unwrap();
    assert_eq!(json["history"]["val_loss"].as_array().unwrap().len(), 1);
}

#[test]
fn sample_and_class_weights_weight_the_loss() {
    let (x, y) = blobs(32, 7);
    // One batch, SGD lr 0: the logged loss is the weighted mean Σ wᵢLᵢ / batch size.
    let run = |sw: Option<&[f32]>, cw: Option<HashMap<usize, f64>>| {
        let mut m =
            mlp(2).compile(SGD::new(0.0), SparseCategoricalCrossentropy::default(), ()).unwrap();
        let mut f = m.fit(&x, &y).batch_size(32).shuffle(false).verbose(0);
        if let Some(sw) = sw {
            f = f.sample_weight(sw);
        }
        if let Some(cw) = cw {
            f = f.class_weight(cw);
        }
        f.run().unwrap()["loss"][0]
    };
    let plain = run(None, None);
    let double = run(Some(&[2.0; 32]), None);
    assert!((double - 2.0 * plain).abs() < 1e-5, "{double} vs 2×{plain}");
    let cw = HashMap::from([(0, 2.0), (1, 2.0), (2, 2.0)]);
    assert!((run(None, Some(cw)) - 2.0 * plain).abs() < 1e-5);
    let zero_class0 = run(None, Some(HashMap::from([(0, 0.0)])));
    assert!(zero_class0 < plain);
}

#[test]
fn callbacks_adjust_learning_rate_stop_and_log() {
    let (x, y) = blobs(60, 8);
    let mut m = compiled(1);
    let h = m
        .fit(&x, &y)
        .epochs(4)
        .verbose(0)
        .callbacks(LearningRateScheduler::new(|epoch, _lr| 0.1 / (epoch + 1) as f64))
        .run()
        .unwrap();
    let want = [0.1, 0.05, 0.1 / 3.0, 0.025];
    assert!(
        h.learning_rate.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-12),
        "{:?}",
        h.learning_rate
    );

    // A plateau from the start (lr 0 keeps the loss constant) triggers a reduction
    // after `patience` epochs.
    let mut m =
        mlp(1).compile(SGD::new(0.0), SparseCategoricalCrossentropy::default(), ()).unwrap();
    m.optimizer_mut().set_learning_rate(1e-12).unwrap();
    let h = m
        .fit(&x, &y)
        .epochs(4)
        .verbose(0)
        .callbacks(ReduceLROnPlateau::on("loss").patience(1).factor(0.5))
        .run()
        .unwrap();
    assert!(h.learning_rate[3] < 1e-12, "{:?}", h.learning_rate);

    // TerminateOnNaN stops within the first epoch once the loss blows up.
    let big = Targets::<Dyn>::from_vec_shape(&[3], vec![1e30; 180]).unwrap();
    let mut m = mlp(1).compile(SGD::new(10.0), MeanSquaredError::default(), ()).unwrap();
    let h = m.fit(&x, &big).epochs(5).verbose(0).callbacks(TerminateOnNaN).run().unwrap();
    assert_eq!(h.len(), 1, "stopped in the first epoch");

    let dir = tmpdir("csvlog");
    let path = dir.join("log.csv");
    let mut seen = Vec::new();
    let mut m = compiled(1);
    m.fit(&x, &y)
        .epochs(3)
        .verbose(0)
        .callbacks((
            CSVLogger::new(&path),
            LambdaCallback::new().on_epoch_end(|e, logs| seen.push((e, logs["loss"]))),
        ))
        .run()
        .unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert_eq!(lines[0], "epoch,accuracy,loss");
    assert_eq!(seen.len(), 3);
    assert!(lines[3].starts_with("2,"));
    // append keeps the rows and the single header; the separator applies to every field.
    m.fit(&x, &y).epochs(1).verbose(0).callbacks(CSVLogger::new(&path).append()).run().unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 5, "{text}");
    assert_eq!(text.lines().filter(|l| l.starts_with("epoch")).count(), 1, "{text}");
    m.fit(&x, &y)
        .epochs(1)
        .verbose(0)
        .callbacks(CSVLogger::new(&path).separator(';'))
        .run()
        .unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().collect::<Vec<_>>()[0], "epoch;accuracy;loss", "{text}");
    assert_eq!(text.lines().count(), 2, "without append the file is replaced: {text}");
}

#[test]
fn early_stopping_stops_and_restores_best_weights() {
    let (x, y) = blobs(60, 9);
    // lr 0: no epoch improves on the first, so patience 2 stops at epoch index 2.
    let mut m =
        mlp(1).compile(SGD::new(0.0), SparseCategoricalCrossentropy::default(), ()).unwrap();
    let h = m
        .fit(&x, &y)
        .epochs(10)
        .verbose(0)
        .callbacks(EarlyStopping::on("loss").patience(2))
        .run()
        .unwrap();
    assert_eq!(h.len(), 3);
    // min_delta larger than any change also counts as no improvement.
    let mut m = compiled(1);
    let h = m
        .fit(&x, &y)
        .epochs(10)
        .verbose(0)
        .callbacks(EarlyStopping::on("loss").patience(1).min_delta(100.0))
        .run()
        .unwrap();
    assert_eq!(h.len(), 2);
}

/// Keras's `train_on_batch`, `test_on_batch` and `predict_on_batch` are the same steps
/// `fit`, `evaluate` and `predict` take: one training step on the whole batch moves the
/// weights exactly as a one-epoch, one-batch, unshuffled `fit` does, and the logs match.
#[test]
fn on_batch_methods_are_the_fit_evaluate_and_predict_steps() {
    let (x, y) = blobs(40, 3);
    let (mut a, mut b) = (compiled(5), compiled(5));
    let logs = a.train_on_batch(&x, &y).unwrap();
    let h = b.fit(&x, &y).epochs(1).batch_size(40).shuffle(false).verbose(0).run().unwrap();
    assert_eq!(a.model().params().values(), b.model().params().values());
    assert_eq!(logs["loss"], h["loss"][0]);
    assert_eq!(logs["accuracy"], h["accuracy"][0]);
    // A second step starts from the moved weights, and its logs are that step's own.
    let second = a.train_on_batch(&x, &y).unwrap();
    assert!(second["loss"] < logs["loss"], "{second:?} vs {logs:?}");
    let t = a.test_on_batch(&x, &y).unwrap();
    let e = a.evaluate_batched(&x, &y, 40).unwrap();
    assert_eq!(t["loss"], e.loss);
    assert_eq!(t["accuracy"], e["accuracy"]);
    let before = a.model().params().values().to_vec();
    let p = a.predict_on_batch(&x).unwrap();
    assert_eq!(p.data(), a.predict(&x).unwrap().data());
    assert_eq!(a.model().params().values(), &before[..], "test and predict leave weights");
    let wrong = Inputs::<Dyn>::from_vec_shape(&[3], vec![0.0; 6]).unwrap();
    let e = err(a.train_on_batch(&wrong, &ClassLabels::new(vec![0, 1])));
    assert!(e.contains("reshape the inputs"), "{e}");
}

model! {
    /// Token sequences: an embedding read by an LSTM.
    struct Tokens: [6] => [
        Embedding(10, 4),
        LSTM(3),
        Dense(2, activation = softmax),
    ]
}

model! {
    /// Sequences of 5 steps of 2 features.
    struct Steps: [5, 2] => [
        LSTM(3),
        Dense(2, activation = softmax),
    ]
}

/// Sequence models' bad inputs fail before the first step, naming the sample and
/// what to fix, and leave the weights untouched: a token id outside the vocabulary
/// (in fit, validation data, evaluate and predict), NaN at a step, sequences of
/// another length.
#[test]
fn bad_sequence_inputs_fail_before_the_first_step() {
    let ids: Vec<f32> = (0..8 * 6).map(|i| (i % 7) as f32).collect();
    let y = ClassLabels::new((0..8).map(|i| i % 2).collect());
    let mut m = Tokens::new(Seed(1))
        .compile(Adam::default(), SparseCategoricalCrossentropy::default(), [Accuracy])
        .unwrap();
    let before = m.model().params().values().to_vec();
    let mut bad = ids.clone();
    bad[3 * 6 + 4] = 12.0;
    let xb = Inputs::<S1<6>>::from_vec(bad).unwrap();
    let want = "the inputs do not fit layer `embedding`: sample 3, position 4 holds 12, but Embedding takes token ids, whole numbers in 0..10 (its input_dim): map unknown tokens to an id below 10, or give Embedding a larger input_dim";
    assert_eq!(err(m.fit(&xb, &y).verbose(0).run()), want);
    let x = Inputs::<S1<6>>::from_vec(ids.clone()).unwrap();
    assert_eq!(err(m.fit(&x, &y).validation_data(&xb, &y).verbose(0).run()), want);
    assert_eq!(err(m.evaluate(&xb, &y)), want);
    assert_eq!(err(m.predict(&xb)), want);
    let mut frac = ids.clone();
    frac[0] = 2.5;
    let e = err(m.fit(&Inputs::<S1<6>>::from_vec(frac).unwrap(), &y).verbose(0).run());
    assert!(e.contains("sample 0, position 0 holds 2.5"), "{e}");
    assert_eq!(m.model().params().values(), &before[..], "nothing ran");
    m.fit(&x, &y).epochs(1).verbose(0).run().unwrap();

    let mut s = Steps::new(Seed(2))
        .compile(Adam::default(), SparseCategoricalCrossentropy::default(), [Accuracy])
        .unwrap();
    let mut v: Vec<f32> = (0..8 * 10).map(|i| (i % 5) as f32 / 5.0).collect();
    v[2 * 10 + 7] = f32::NAN;
    let xn = Inputs::<S2<5, 2>>::from_vec(v).unwrap();
    assert_eq!(
        err(s.fit(&xn, &y).verbose(0).run()),
        "Inputs holds a non-finite value (NaN) in sample 2, element 7 (step 3, feature 1 of [5, 2]); remove or impute it before training"
    );
    // Sequences of another length: a compile error for a model! network
    // (tests/ui/fit_with_inputs_of_another_shape.rs), an error before the first step
    // for one built at run time.
    let mut r = SequentialBuilder::<f32>::new("r", &[5, 2])
        .add(kiln::layers::LSTM::new(3))
        .add(kiln::layers::Dense::new(2).activation(kiln::layers::Act::Softmax))
        .build(Seed(3))
        .unwrap()
        .compile(Adam::default(), SparseCategoricalCrossentropy::default(), [Accuracy])
        .unwrap();
    let longer = Inputs::<Dyn>::from_vec_shape(&[6, 2], vec![0.0; 8 * 12]).unwrap();
    let e = err(r.fit(&longer, &y).verbose(0).run());
    assert!(e.contains("samples of shape [6, 2] but the model needs [5, 2]"), "{e}");
}

/// Weights that overflow stop the run the epoch they do, naming the tensor — even
/// while the reported loss is still finite (one input of 3e38 among ordinary ones) —
/// and a class weight beyond float32's range is refused before the first step.
#[test]
fn divergence_and_narrowing_are_errors() {
    let (x, y) = blobs(40, 8);
    let mut v = x.data().to_vec();
    v[13] = 3e38;
    let huge = Inputs::<Dyn>::from_vec_shape(&[4], v).unwrap();
    let mut m = compiled(1);
    let e = err(m.fit(&huge, &y).epochs(3).verbose(0).run());
    assert!(e.starts_with("training diverged at epoch 2: dense/kernel holds NaN"), "{e}");
    assert!(e.contains("the model's weights are unusable now"), "{e}");
    let mut m = compiled(1);
    let e = err(m.fit(&x, &y).class_weight(HashMap::from([(0, 1e300)])).verbose(0).run());
    assert!(e.contains("class 0 has weight 1e300; weights must be finite and ≥ 0 in the model's float32 (at most 3.4e38)"), "{e}");
}

/// Layers too large for memory are errors at build, with the size, never an abort, a
/// panic or a wrapped count.
#[test]
fn oversized_layers_are_errors_with_their_size() {
    use kiln::layers::Dense;
    let build = |input: &[usize], units: usize| {
        SequentialBuilder::<f32>::new("big", input)
            .add(Dense::new(units))
            .build(Seed(1))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    let e = build(&[1 << 12], 1 << 40);
    assert!(e.contains("dense (Dense)") && e.contains("kernel [4096, 1099511627776]"), "{e}");
    let e = build(&[1 << 12], 1 << 62);
    assert!(e.contains("has more elements than memory can hold"), "{e}");
    let e = build(&[1 << 32, 1 << 32, 2], 2);
    assert!(
        e.contains(
            "the input shape [4294967296, 4294967296, 2] has more elements than memory can hold"
        ),
        "{e}"
    );
}

/// A sequence tagger (`LSTM(return_sequences)` → `Dense(softmax)`, output `[steps,
/// classes]`) is scored as Keras scores it: one row per step, the loss and the metrics
/// averaged over every step of every sample (not one normalisation over the whole
/// sample), with one class label per step (`ClassLabels::per_step`) or one-hot targets
/// of the output's shape; sample weights weigh all of a sample's steps.
#[test]
fn per_step_targets_are_scored_per_step_as_keras() {
    let (steps, feats, classes, n) = (4, 3, 3, 10);
    let x: Vec<f32> = (0..n * steps * feats).map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0).collect();
    let x = Inputs::<Dyn>::from_vec_shape(&[steps, feats], x).unwrap();
    // Each step's label is its largest feature: learnable step by step.
    let xs = x.data();
    let labels: Vec<usize> = (0..n * steps)
        .map(|r| {
            (0..feats).fold(0, |b, k| if xs[r * feats + k] > xs[r * feats + b] { k } else { b })
        })
        .collect();
    let y = ClassLabels::per_step(labels.clone(), steps).unwrap();
    let net = || {
        SequentialBuilder::<f64>::new("tagger", &[steps, feats])
            .add(kiln::layers::LSTM::new(5).return_sequences(true))
            .add(kiln::layers::Dense::new(classes).activation(kiln::layers::Act::Softmax))
            .build(Seed(4))
            .unwrap()
    };
    let x64 = Inputs::<Dyn, f64>::from_vec_shape(
        &[steps, feats],
        x.data().iter().map(|&v| f64::from(v)).collect(),
    )
    .unwrap();
    let mut m =
        net().compile(Adam::new(0.05), "sparse_categorical_crossentropy", ["accuracy"]).unwrap();
    let p = m.predict(&x64).unwrap();
    let p = p.data();
    // By hand: the mean over all n·steps rows of −log p[label], and the fraction of rows
    // whose argmax is the label.
    let rows = n * steps;
    let ce: f64 = (0..rows).map(|r| -p[r * classes + labels[r]].ln()).sum::<f64>() / rows as f64;
    let argmax = |r: usize| {
        (0..classes).fold(0, |b, k| if p[r * classes + k] > p[r * classes + b] { k } else { b })
    };
    let acc = (0..rows).filter(|&r| argmax(r) == labels[r]).count() as f64 / rows as f64;
    let e = m.evaluate(&x64, &y).unwrap();
    assert!((e.loss - ce).abs() < 1e-12, "{} vs {ce}", e.loss);
    assert!((e.metrics["accuracy"] - acc).abs() < 1e-12);
    // One-hot targets of the output's shape give the same loss through categorical CE.
    let onehot: Vec<f64> = (0..rows * classes)
        .map(|j| f64::from(u8::from(labels[j / classes] == j % classes)))
        .collect();
    let t = Targets::<Dyn, f64>::from_vec_shape(&[steps, classes], onehot).unwrap();
    let mut c = net().compile(Adam::default(), "categorical_crossentropy", ()).unwrap();
    assert!((c.evaluate(&x64, &t).unwrap().loss - ce).abs() < 1e-12);
    // One label per sample for a per-step output is refused, saying what to give.
    let e = err(m.evaluate(&x64, &ClassLabels::new(vec![0; n])));
    assert!(e.contains("ClassLabels::per_step(labels, 4)"), "{e}");
    // Class weights need one prediction per sample (Keras refuses them too).
    let e = err(m.fit(&x64, &y).class_weight(HashMap::from([(0, 2.0)])).verbose(0).run());
    assert!(e.contains("class weights need one prediction per sample"), "{e}");
    // Training on per-step labels lowers the per-step loss.
    let h = m.fit(&x64, &y).epochs(30).batch_size(5).verbose(0).run().unwrap();
    let loss = &h.history["loss"];
    assert!(loss[29] < 0.5 * loss[0], "{loss:?}");
}

/// A per-class metric (F1 with Keras's `average=None`) logs one key per class in fit,
/// validation and evaluate, and callbacks may monitor any of them.
#[test]
fn per_class_metrics_log_one_key_per_class() {
    use kiln::metrics::{Average, FBetaScore};
    let (x, y) = blobs(120, 2);
    let f1 = FBetaScore::new("f1", 1.0).average(Average::PerClass).threshold(None);
    let mut m =
        mlp(1).compile(Adam::new(0.05), SparseCategoricalCrossentropy::default(), [f1]).unwrap();
    let h = m
        .fit(&x, &y)
        .epochs(3)
        .validation_split(0.25)
        .callbacks(EarlyStopping::on("val_f1_2").patience(5))
        .verbose(0)
        .run()
        .unwrap();
    let keys: Vec<&str> = h.keys().collect();
    assert_eq!(
        keys,
        ["f1_0", "f1_1", "f1_2", "loss", "val_f1_0", "val_f1_1", "val_f1_2", "val_loss"]
    );
    let e = m.evaluate(&x, &y).unwrap();
    assert_eq!(e.metrics.keys().collect::<Vec<_>>(), ["f1_0", "f1_1", "f1_2"]);
    assert!(e.metrics.values().all(|v| (0.0..=1.0).contains(v)));
    // A monitor naming the metric itself (not a class) is refused before training.
    let e = err(m.fit(&x, &y).callbacks(EarlyStopping::on("f1")).verbose(0).run());
    assert!(e.contains("f1_0"), "{e}");
}

/// Keras's padding convention for sequence labels: −1 marks a position to leave out,
/// with `ignore_class = -1` on the loss. The loss is the mean over the other positions;
/// a loss that does not ignore them is refused before the first step.
#[test]
fn padded_per_step_labels_with_ignore_class_minus_one() {
    let (steps, feats, classes, n) = (3, 2, 2, 6);
    let x: Vec<f64> = (0..n * steps * feats).map(|i| ((i * 13 % 7) as f64 - 3.0) / 3.0).collect();
    let x = Inputs::<Dyn, f64>::from_vec_shape(&[steps, feats], x).unwrap();
    // Each sample's last step is padding.
    let signed: Vec<i64> =
        (0..n * steps).map(|r| if r % steps == steps - 1 { -1 } else { (r % 2) as i64 }).collect();
    let y = ClassLabels::from_i64_ignoring(&signed, -1).unwrap().with_steps(steps).unwrap();
    let net = || {
        SequentialBuilder::<f64>::new("tagger", &[steps, feats])
            .add(kiln::layers::Dense::new(classes).activation(kiln::layers::Act::Softmax))
            .build(Seed(2))
            .unwrap()
    };
    let loss = SparseCategoricalCrossentropy::default().ignore_class(-1);
    let mut m = net().compile(SGD::new(0.1), loss, ()).unwrap();
    let p = m.predict(&x).unwrap();
    let p = p.data();
    let kept: Vec<usize> = (0..n * steps).filter(|r| signed[*r] >= 0).collect();
    let want = kept.iter().map(|&r| -p[r * classes + signed[r] as usize].ln()).sum::<f64>()
        / kept.len() as f64;
    let got = m.evaluate(&x, &y).unwrap().loss;
    assert!((got - want).abs() < 1e-12, "{got} vs {want}");
    let mut plain =
        net().compile(SGD::new(0.1), SparseCategoricalCrossentropy::default(), ()).unwrap();
    let e = err(plain.fit(&x, &y).verbose(0).run());
    assert!(e.contains("marks an ignored position") && e.contains("ignore_class(-1)"), "{e}");
    // Other negative labels are still errors, by position.
    let e = ClassLabels::from_i64_ignoring(&[0, -2], -1).unwrap_err().to_string();
    assert!(e.contains("label -2 at position 1"), "{e}");
}
