//! Every class of bad input, in one table: each case runs under `catch_unwind` and
//! must return an error (no panic), of the named kind, whose message says what is
//! wrong (the expected text) and what to do (a fix: one of the words that name an
//! action). Run with `--nocapture` for the count.

mod common;

use common::{blobs, compiled, mlp, tmpdir};
use kiln::spec::Value;
use kiln::*;
use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// What one case gives back: the error's alternate Debug text (its kind) and its message.
type Outcome = std::result::Result<(), (String, String)>;

struct Case {
    name: String,
    kind: &'static str,
    text: &'static str,
    run: Box<dyn Fn() -> Outcome>,
}

fn fail<T, E: std::fmt::Debug + std::fmt::Display>(r: std::result::Result<T, E>) -> Outcome {
    r.map(|_| ()).map_err(|e| (format!("{e:#?}"), e.to_string()))
}

/// Words that tell the user what to do.
const FIX: &[&str] = &[
    "pass",
    "use",
    "add",
    "remove",
    "give",
    "fix",
    "choose",
    "lower",
    "load",
    "map",
    "write",
    "rescale",
    "convert",
    "close",
    "reshape",
    "transform",
    "impute",
    "download",
    "monitor",
    "leave",
    "did you mean",
    "should",
    "must",
    "needs",
    "need",
    "expected",
    "restore",
    "delete",
    "take",
    "fit",
];

#[test]
fn every_bad_input_is_a_typed_error_that_says_what_to_do() {
    let mut cases: Vec<Case> = Vec::new();
    macro_rules! case {
        ($name:expr, $kind:expr, $text:expr, $body:expr) => {
            cases.push(Case {
                name: $name.to_string(),
                kind: $kind,
                text: $text,
                run: Box::new(move || $body),
            });
        };
    }
    let dir = tmpdir("badinputs");
    let (x, y) = blobs(40, 1);

    // fit options and data.
    {
        let (x, y) = (x.clone(), y.clone());
        case!(
            "y shorter than x",
            "LengthMismatch",
            "x has 40 samples but y has 30",
            fail(compiled(1).fit(&x, &y.head(30)).verbose(0).run())
        );
    }
    {
        let (x, y) = (x.clone(), y.clone());
        case!(
            "empty data",
            "EmptyData",
            "x is empty",
            fail(compiled(1).fit(&x.head(0), &y.head(0)).verbose(0).run())
        );
    }
    {
        let (name, text, bs) = ("batch_size 0", "0 is not a batch size", 0usize);
        let (x, y) = (x.clone(), y.clone());
        case!(
            name,
            "InvalidArgument",
            text,
            fail(compiled(1).fit(&x, &y).batch_size(bs).verbose(0).run())
        );
    }
    for v in [1.0, -0.1, 1.5, f64::NAN] {
        let (x, y) = (x.clone(), y.clone());
        case!(
            format!("validation_split {v}"),
            "InvalidArgument",
            "outside [0, 1)",
            fail(compiled(1).fit(&x, &y).validation_split(v).verbose(0).run())
        );
    }
    {
        let (x, y) = (x.clone(), y.clone());
        case!(
            "validation_split leaving nothing",
            "InvalidArgument",
            "both need at least one",
            fail(compiled(1).fit(&x.head(2), &y.head(2)).validation_split(0.6).verbose(0).run())
        );
    }
    for (c, text) in [
        (3usize, "label 3 of sample 7 is outside the model's 3 classes"),
        (100, "label 100 of sample 7"),
    ] {
        let x = x.clone();
        let bad = ClassLabels::new((0..40).map(|i| if i == 7 { c } else { 0 }).collect());
        case!(
            format!("label {c}"),
            "LabelOutOfRange",
            text,
            fail(compiled(1).fit(&x, &bad).verbose(0).run())
        );
    }
    for (i, v) in [(22, f32::NAN), (3, f32::INFINITY), (39 * 4 + 3, f32::NEG_INFINITY)] {
        let y = y.clone();
        let mut d = x.data().to_vec();
        d[i] = v;
        let xn = Inputs::<Dyn>::from_vec_shape(&[4], d).unwrap();
        let xv = xn.clone();
        let (yv, xg) = (y.clone(), x.clone());
        case!(
            format!("x holds {v} at {i}"),
            "NonFinite",
            "non-finite value",
            fail(compiled(1).fit(&xn, &y).verbose(0).run())
        );
        case!(
            format!("validation x holds {v}"),
            "NonFinite",
            "non-finite value",
            fail(compiled(1).fit(&xg, &yv).validation_data(&xv, &yv).verbose(0).run())
        );
        let xp = Inputs::<Dyn>::from_vec_shape(&[4], {
            let mut d = x.data().to_vec();
            d[i] = v;
            d
        })
        .unwrap();
        case!(
            format!("predict x holds {v}"),
            "NonFinite",
            "non-finite value",
            fail(compiled(1).predict(&xp))
        );
    }
    {
        let (x, y) = (x.clone(), y.clone());
        case!(
            "EarlyStopping on a missing key",
            "UnknownMonitor",
            "EarlyStopping monitors \"val_los\"",
            fail(compiled(1).fit(&x, &y).verbose(0).callbacks(EarlyStopping::on("val_los")).run())
        );
    }
    {
        let (x, y) = (x.clone(), y.clone());
        case!(
            "ReduceLROnPlateau on val_ without validation",
            "UnknownMonitor",
            "val_loss",
            fail(
                compiled(1)
                    .fit(&x, &y)
                    .verbose(0)
                    .callbacks(ReduceLROnPlateau::on("val_loss"))
                    .run()
            )
        );
    }
    for shape in [vec![2usize], vec![8], vec![2, 2]] {
        let y = y.clone();
        let n: usize = shape.iter().product();
        let wrong = Inputs::<Dyn>::from_vec_shape(&shape, vec![0.0; n * 4]).unwrap();
        case!(
            format!("x of shape {shape:?}"),
            "ShapeMismatch",
            "but the model needs [4]",
            fail(compiled(1).fit(&wrong, &y.head(4)).verbose(0).run())
        );
    }
    for k in [3usize, 41] {
        let (x, y) = (x.clone(), y.clone());
        let w = vec![1.0f32; k];
        case!(
            format!("{k} sample weights"),
            "InvalidArgument",
            "weights for 40 samples",
            fail(compiled(1).fit(&x, &y).sample_weight(&w).verbose(0).run())
        );
    }
    {
        let (x, y) = (x.clone(), y.clone());
        let mut w = vec![1.0f32; 40];
        w[2] = -1.0;
        case!(
            "negative sample weight",
            "InvalidArgument",
            "sample_weight",
            fail(compiled(1).fit(&x, &y).sample_weight(&w).verbose(0).run())
        );
    }
    for (name, cw, text) in [
        (
            "negative class weight",
            HashMap::from([(0usize, -1.0)]),
            "weights must be finite and ≥ 0",
        ),
        ("NaN class weight", HashMap::from([(1, f64::NAN)]), "weights must be finite and ≥ 0"),
        ("class weight beyond float32", HashMap::from([(1, 1e300)]), "at most 3.4e38"),
        (
            "class weight for a missing class",
            HashMap::from([(9, 1.0)]),
            "it weights class 9, but the model has 3 classes",
        ),
    ] {
        let (x, y) = (x.clone(), y.clone());
        case!(
            name,
            "InvalidArgument",
            text,
            fail(compiled(1).fit(&x, &y).class_weight(cw.clone()).verbose(0).run())
        );
    }
    {
        let (x, y) = (x.clone(), y.clone());
        case!(
            "steps_per_epoch 0",
            "InvalidArgument",
            "0 runs no step",
            fail(compiled(1).fit(&x, &y).steps_per_epoch(0).verbose(0).run())
        );
    }
    {
        let (x, y) = (x.clone(), y.clone());
        case!(
            "validation_freq 0",
            "InvalidArgument",
            "0 is not a frequency",
            fail(compiled(1).fit(&x, &y).validation_split(0.2).validation_freq(0).verbose(0).run())
        );
    }
    {
        let (x, y) = (x.clone(), y.clone());
        case!(
            "initial_epoch past epochs",
            "InvalidArgument",
            "so nothing would train",
            fail(compiled(1).fit(&x, &y).epochs(2).initial_epoch(4).verbose(0).run())
        );
    }
    {
        let (x, y) = (x.clone(), y.clone());
        case!(
            "epochs 0",
            "InvalidArgument",
            "0 trains nothing",
            fail(compiled(1).fit(&x, &y).epochs(0).verbose(0).run())
        );
    }
    {
        let x = x.clone();
        let onehot = Targets::<Dyn>::from_vec_shape(&[3], vec![0.0; 120]).unwrap();
        case!(
            "one-hot targets with a sparse loss",
            "Incompatible",
            "use categorical_crossentropy for one-hot targets",
            fail(
                mlp(1)
                    .compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
                    .unwrap()
                    .fit(&x, &onehot)
                    .verbose(0)
                    .run()
            )
        );
    }
    {
        let (x, y) = (x.clone(), y.clone());
        case!(
            "evaluate with y shorter",
            "LengthMismatch",
            "pass the same number",
            fail(compiled(1).evaluate(&x, &y.head(10)))
        );
    }

    // Names.
    for (opt, loss, metric, text) in [
        ("adma", "mse", "accuracy", "did you mean \"adam\"?"),
        (
            "adam",
            "sparse_categorical_crossentropi",
            "accuracy",
            "did you mean \"sparse_categorical_crossentropy\"?",
        ),
        ("adam", "mse", "acurracy", "did you mean \"accuracy\"?"),
        ("rmsprob", "mse", "mae", "did you mean \"rmsprop\"?"),
    ] {
        case!(
            format!("names {opt}/{loss}/{metric}"),
            "UnknownName",
            text,
            fail(mlp(1).compile(opt, loss, [metric]))
        );
    }
    // Layers by name, with bad arguments.
    for (class, args, text) in [
        ("Dence", vec![(None, Value::Int(3))], "did you mean `Dense`?"),
        (
            "Dense",
            vec![(None, Value::Int(3)), (Some("activaton"), Value::name("relu"))],
            "did you mean `activation`?",
        ),
        (
            "Dense",
            vec![(None, Value::Int(3)), (Some("activation"), Value::name("rleu"))],
            "did you mean `relu`?",
        ),
        (
            "Dense",
            vec![(None, Value::Int(3)), (Some("mask_zero"), Value::Bool(true))],
            "`mask_zero` is an argument of Embedding",
        ),
        ("Dropout", vec![(None, Value::Float(1.0))], "the Dropout rate must be in [0, 1)"),
        ("Dropout", vec![(None, Value::Float(f64::NAN))], "the Dropout rate must be in [0, 1)"),
        ("LSTM", vec![(None, Value::Int(0))], "LSTM"),
        (
            "LSTM",
            vec![(None, Value::Int(4)), (Some("dropout"), Value::Float(1.5))],
            "must be in [0, 1)",
        ),
        (
            "GRU",
            vec![(None, Value::Int(4)), (Some("recurrent_dropout"), Value::Float(-0.5))],
            "must be in [0, 1)",
        ),
        (
            "Conv2D",
            vec![
                (None, Value::Int(8)),
                (None, Value::Int(3)),
                (Some("padding"), Value::name("sme")),
            ],
            "did you mean `same`?",
        ),
        (
            "Conv1D",
            vec![
                (None, Value::Int(8)),
                (None, Value::Int(3)),
                (Some("padding"), Value::name("casual")),
            ],
            "did you mean `causal`?",
        ),
        (
            "Bidirectional",
            vec![(None, Value::Layer("Dense".into(), vec![(None, Value::Int(3))]))],
            "Bidirectional wraps a recurrent layer",
        ),
    ] {
        case!(
            format!("layer {class}{args:?}"),
            "",
            text,
            fail(layers::builtin::<f32>(class, &args))
        );
    }
    // Shapes that do not fit, at build.
    for (input, class, args, text) in [
        (vec![28usize, 28, 1], "Dense", vec![(None, Value::Int(10))], "Flatten"),
        (vec![784], "LSTM", vec![(None, Value::Int(8))], "Reshape([28, 28])"),
        (
            vec![4, 4, 1],
            "Conv2D",
            vec![(None, Value::Int(2)), (Some("kernel_size"), Value::Int(7))],
            "kernel",
        ),
        (
            vec![10, 2],
            "Conv1D",
            vec![(None, Value::Int(2)), (Some("kernel_size"), Value::Int(13))],
            "use padding = same or causal",
        ),
        (
            vec![28, 28, 1],
            "Conv1D",
            vec![(None, Value::Int(2)), (Some("kernel_size"), Value::Int(3))],
            "use Conv2D for images",
        ),
        (
            vec![6],
            "Reshape",
            vec![(None, Value::List(vec![Value::Int(4), Value::Int(2)]))],
            "Reshape",
        ),
    ] {
        let name = format!("{class} on {input:?}");
        case!(name, "Layer", text, {
            let layer = layers::builtin::<f32>(class, &args).unwrap();
            fail(SequentialBuilder::<f32>::new("m", &input).add_boxed(layer).build(Seed(1)))
        });
    }
    case!(
        "Dense with 0 units",
        "Layer",
        "Dense needs at least 1 unit, got 0",
        fail(SequentialBuilder::<f32>::new("m", &[4]).add(layers::Dense::new(0)).build(Seed(1)))
    );
    case!(
        "a model without layers",
        "",
        "at least one layer",
        fail(SequentialBuilder::<f32>::new("m", &[4]).build(Seed(1)))
    );
    case!(
        "Dense too large for memory",
        "Layer",
        "more elements than memory can hold",
        fail(
            SequentialBuilder::<f32>::new("m", &[4096])
                .add(layers::Dense::new(1 << 62))
                .build(Seed(1))
        )
    );
    case!(
        "an input shape that overflows",
        "Layer",
        "more elements than memory can hold",
        fail(
            SequentialBuilder::<f32>::new("m", &[1 << 32, 1 << 32, 2])
                .add(layers::Dense::new(2))
                .build(Seed(1))
        )
    );

    // Checkpoints.
    let good = dir.join("good.safetensors");
    save_weights(&mlp(1), &good).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    for (name, data, text) in [
        ("empty checkpoint", vec![], "not a readable safetensors file"),
        ("truncated checkpoint", bytes[..bytes.len() / 2].to_vec(), "truncated"),
        ("header only", bytes[..40].to_vec(), "not a readable safetensors file"),
        ("zip file", b"PK\x03\x04 not a checkpoint".to_vec(), "not a readable safetensors file"),
    ] {
        let p = dir.join(format!("{}.safetensors", name.replace(' ', "-")));
        std::fs::write(&p, &data).unwrap();
        case!(name, "Checkpoint", text, fail(load_weights(&mut mlp(2), &p)));
    }
    {
        let p = dir.join("other-arch.safetensors");
        let other = SequentialBuilder::<f32>::new("o", &[4])
            .add(layers::Dense::new(5))
            .build(Seed(1))
            .unwrap();
        save_weights(&other, &p).unwrap();
        case!(
            "checkpoint of another architecture",
            "Checkpoint",
            "another architecture",
            fail(load_weights(&mut mlp(2), &p))
        );
    }
    case!(
        "missing checkpoint",
        "Io",
        "",
        fail(load_weights(&mut mlp(2), "/nonexistent/kiln/w.safetensors"))
    );
    {
        let mut nan = mlp(3);
        let mut v = nan.params().values().to_vec();
        v[0] = f32::NAN;
        nan.params_mut().set_values(&v).unwrap();
        let p = dir.join("nan.safetensors");
        case!(
            "saving NaN weights",
            "NonFiniteState",
            "the file was not written",
            fail(save_weights(&nan, &p))
        );
    }

    // Files: IDX and CSV.
    for (name, data, text) in [
        ("IDX with a bad magic", b"PK\x03\x04".to_vec(), "not an IDX file"),
        ("IDX of floats", vec![0, 0, 0x0d, 1, 0, 0, 0, 1, 0, 0, 0, 0], "only unsigned bytes"),
        ("IDX of rank 0", vec![0, 0, 8, 0], "zero dimensions"),
        ("IDX cut short", vec![0, 0, 8, 1, 0, 0, 0, 4, 1, 2], "truncated or corrupt"),
        ("IDX with trailing bytes", vec![0, 0, 8, 1, 0, 0, 0, 1, 1, 2], "truncated or corrupt"),
        ("gzip IDX cut short", vec![0x1f, 0x8b, 8, 0, 0, 0], "download the file again"),
    ] {
        let p = dir.join(format!("{}.idx", name.replace(' ', "-")));
        std::fs::write(&p, &data).unwrap();
        case!(name, "Data", text, fail(datasets::idx::read_idx(&p)));
    }
    for (name, text_in, expect) in [
        ("CSV without the target", "a,b\n1,2\n", "no column named \"label\""),
        ("empty CSV", "", "the file is empty"),
        ("CSV of only the target", "label\n1\n", "only the target column"),
        ("CSV with a word", "a,label\nx,1\n", "is not a number"),
        ("CSV with a short row", "a,b,label\n1,2\n", "cells but the header has"),
        ("CSV with inf", "a,label\ninf,1\n", "is not finite"),
        ("CSV beyond float32", "a,label\n1e300,1\n", "beyond float32's range"),
        ("CSV with a header only", "a,label\n", "no rows"),
    ] {
        let p = dir.join(format!("{}.csv", name.replace(' ', "-")));
        std::fs::write(&p, text_in).unwrap();
        case!(name, "Data", expect, fail(datasets::csv::read(&p, "label")));
    }
    for (name, text_in, expect) in [
        ("fractional class target", "a,label\n1,0.5\n", "whole numbers from 0 to 2^24"),
        ("negative class target", "a,label\n1,-1\n", "whole numbers from 0 to 2^24"),
        ("huge class target", "a,label\n1,1e30\n", "whole numbers from 0 to 2^24"),
    ] {
        let p = dir.join(format!("{}.csv", name.replace(' ', "-")));
        std::fs::write(&p, text_in).unwrap();
        case!(
            name,
            "InvalidArgument",
            expect,
            fail(datasets::csv::read(&p, "label").unwrap().classes())
        );
    }
    // Preprocessing.
    {
        let (x1, x2) = (x.clone(), x.clone());
        let wide = Inputs::<Dyn>::from_vec_shape(&[5], vec![1.0; 10]).unwrap();
        let wide2 = wide.clone();
        case!(
            "StandardScaler on another width",
            "InvalidArgument",
            "fitted on samples of 4 features",
            fail(datasets::preprocessing::StandardScaler::fit(&x1).transform(&wide))
        );
        case!(
            "MinMaxScaler on another width",
            "InvalidArgument",
            "fitted on samples of 4 features",
            fail(datasets::preprocessing::MinMaxScaler::fit(&x2).transform(&wide2))
        );
    }
    {
        let (y1, y2) = (y.clone(), y.clone());
        case!(
            "one_hot with 0 classes",
            "InvalidArgument",
            "0 classes leaves no column",
            fail(datasets::preprocessing::one_hot::<Dyn>(&y1, 0))
        );
        case!(
            "one_hot with too few classes",
            "LabelOutOfRange",
            "outside",
            fail(datasets::preprocessing::one_hot::<Dyn>(&y2, 2))
        );
    }
    for f in [0.0, 1.0, -0.2, f64::NAN] {
        case!(
            format!("train_test_split {f}"),
            "InvalidArgument",
            "outside (0, 1)",
            fail(datasets::preprocessing::train_test_split(10, f, 1, None))
        );
    }
    case!(
        "negative class label",
        "InvalidArgument",
        "is negative",
        fail(ClassLabels::from_i64(&[0, -1]))
    );
    case!(
        "inputs of a wrong length",
        "",
        "",
        fail(Inputs::<Dyn>::from_vec_shape(&[3], vec![0.0; 7]))
    );

    // ModelCheckpoint settings.
    for (name, cb, text) in [
        (
            "unclosed brace",
            ModelCheckpoint::to(dir.join("w-{epoch.st").to_str().unwrap()),
            "unclosed '{'",
        ),
        (
            "val_ key with batch saves",
            ModelCheckpoint::to(dir.join("w-{val_loss}.st").to_str().unwrap())
                .save_freq(SaveFreq::Batches(3)),
            "only known at the end of an epoch",
        ),
        (
            "best on val_ with batch saves",
            ModelCheckpoint::to(dir.join("b.st").to_str().unwrap())
                .save_best_only()
                .save_freq(SaveFreq::Batches(3)),
            "would never write",
        ),
        ("a directory as the file", ModelCheckpoint::to(dir.to_str().unwrap()), "is a directory"),
        (
            "save every 0 batches",
            ModelCheckpoint::to(dir.join("z.st").to_str().unwrap()).save_freq(SaveFreq::Batches(0)),
            "not a frequency",
        ),
        (
            "unknown key in the path",
            ModelCheckpoint::to(dir.join("w-{val_acc}.st").to_str().unwrap()),
            "val_acc",
        ),
    ] {
        let (x, y) = (x.clone(), y.clone());
        case!(
            format!("ModelCheckpoint: {name}"),
            "",
            text,
            fail(
                compiled(1)
                    .fit(&x, &y)
                    .validation_split(0.25)
                    .verbose(0)
                    .callbacks(cb.clone())
                    .run()
            )
        );
    }

    // Run every case.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut problems = Vec::new();
    for c in &cases {
        match catch_unwind(AssertUnwindSafe(|| (c.run)())) {
            Err(_) => problems.push(format!("{}: panicked", c.name)),
            Ok(Ok(())) => problems.push(format!("{}: accepted", c.name)),
            Ok(Err((debug, msg))) => {
                if !debug.contains(c.kind) {
                    problems.push(format!("{}: kind {debug} is not {}", c.name, c.kind));
                } else if !msg.contains(c.text) {
                    problems.push(format!("{}: {msg:?} lacks {:?}", c.name, c.text));
                } else if !FIX.iter().any(|w| msg.to_lowercase().contains(w)) && !c.text.is_empty()
                {
                    problems.push(format!("{}: {msg:?} says no fix", c.name));
                }
            }
        }
    }
    std::panic::set_hook(hook);
    println!("bad inputs: {} cases, {} problems", cases.len(), problems.len());
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(cases.len() >= 100, "{} cases", cases.len());
}
