//! Replays every Keras recording in tests/fixtures/keras and tests/fixtures/keras-layers
//! (or the one directory named by KILN_KERAS_FIXTURES) through kiln and compares
//! History, the weights at every epoch end, the final weights, evaluate() and predict()
//! with what Keras produced; for schema-2 recordings also the first batch's loss and
//! gradients.
//!
//! The network is built from each fixture's own description — schema 1's stack of
//! Dense layers, or schema 2's layer list with each layer's Keras `get_config()`, bound
//! through kiln-spec's argument tables exactly as `model!` binds written arguments —
//! so any recording in either format replays without code changes.
//!
//! What must agree: History, final weights, evaluate() and predict() — to 1e-5 relative
//! for float32 recordings (run in f32) and 1e-10 for the float64 ones (in `float64/`,
//! run in f64), plus the number of epochs run. The weights at every intermediate epoch
//! end are checked too: exactly as tight in f64, where they pin the semantics; in f32 a
//! long run's trajectory accumulates rounding (summation order in GEMMs, ulps in exp),
//! so it gets 1e-4.

use kiln::Dtype;
use kiln::layers::{Act, Dense, builtin};
use kiln::tape::Scalar;
use kiln::*;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Relative error with a floor on the scale, so values near zero compare absolutely.
fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / a.abs().max(b.abs()).max(1e-3)
}

fn flat(v: &Value) -> Vec<f64> {
    match v {
        Value::Array(a) => a.iter().flat_map(flat).collect(),
        Value::Number(n) => vec![n.as_f64().unwrap()],
        Value::Bool(b) => vec![f64::from(u8::from(*b))],
        other => panic!("not numeric: {other}"),
    }
}

fn num(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64)
}

fn optimizer<T: Scalar>(spec: &Value) -> Optimizer<T> {
    let c = &spec["config"];
    let lr = num(c, "learning_rate").unwrap();
    let common = kiln::optim::CommonOptions {
        weight_decay: num(c, "weight_decay"),
        clipnorm: num(c, "clipnorm"),
        clipvalue: num(c, "clipvalue"),
        global_clipnorm: num(c, "global_clipnorm"),
    };
    let flag = |k: &str| c.get(k).and_then(Value::as_bool).unwrap_or(false);
    let r = match spec["class_name"].as_str().unwrap() {
        "SGD" => SGD {
            learning_rate: lr.into(),
            momentum: num(c, "momentum").unwrap(),
            nesterov: flag("nesterov"),
            common,
        }
        .into_optimizer(),
        "Adam" => Adam {
            learning_rate: lr.into(),
            beta_1: num(c, "beta_1").unwrap(),
            beta_2: num(c, "beta_2").unwrap(),
            epsilon: num(c, "epsilon").unwrap(),
            amsgrad: flag("amsgrad"),
            common,
        }
        .into_optimizer(),
        "AdamW" => AdamW {
            learning_rate: lr.into(),
            beta_1: num(c, "beta_1").unwrap(),
            beta_2: num(c, "beta_2").unwrap(),
            epsilon: num(c, "epsilon").unwrap(),
            amsgrad: flag("amsgrad"),
            common,
        }
        .into_optimizer(),
        "RMSprop" => RMSprop {
            learning_rate: lr.into(),
            rho: num(c, "rho").unwrap(),
            momentum: num(c, "momentum").unwrap(),
            epsilon: num(c, "epsilon").unwrap(),
            centered: flag("centered"),
            common,
        }
        .into_optimizer(),
        "Adagrad" => Adagrad {
            learning_rate: lr.into(),
            initial_accumulator_value: num(c, "initial_accumulator_value").unwrap(),
            epsilon: num(c, "epsilon").unwrap(),
            common,
        }
        .into_optimizer(),
        other => panic!("fixture optimizer {other} is not mapped in the replay"),
    };
    r.unwrap()
}

fn loss<T: Scalar>(compile: &Value) -> Box<dyn Loss<T>> {
    if let Some(name) = compile["loss"].as_str().filter(|_| compile.get("loss_config").is_none()) {
        return kiln::loss::loss_by_name(name).unwrap();
    }
    let cfg = &compile["loss_config"];
    let from_logits = cfg.get("from_logits").and_then(Value::as_bool).unwrap_or(false);
    let ls = num(cfg, "label_smoothing").unwrap_or(0.0);
    match cfg["name"].as_str().unwrap() {
        "sparse_categorical_crossentropy" => {
            Box::new(SparseCategoricalCrossentropy { from_logits, ..Default::default() })
        }
        "categorical_crossentropy" => Box::new(CategoricalCrossentropy {
            from_logits,
            label_smoothing: ls,
            ..Default::default()
        }),
        "binary_crossentropy" => {
            Box::new(BinaryCrossentropy { from_logits, label_smoothing: ls, ..Default::default() })
        }
        "huber_loss" => {
            Box::new(Huber { delta: num(cfg, "delta").unwrap_or(1.0), ..Default::default() })
        }
        name => kiln::loss::loss_by_name(name).unwrap(),
    }
}

/// Records the weights at every epoch end, by name.
struct EpochWeights<'a>(&'a mut Vec<Vec<(String, Vec<f64>)>>);

impl<T: Scalar> Callback<T> for EpochWeights<'_> {
    fn on_epoch_end(
        &mut self,
        _e: usize,
        _l: &Logs,
        ctx: &mut CallbackContext<'_, T>,
    ) -> kiln::train::Result<()> {
        let p = &*ctx.params;
        self.0.push(
            p.entries()
                .iter()
                .map(|e| {
                    (e.name.clone(), p.get(&e.name).unwrap().iter().map(|v| v.as_f64()).collect())
                })
                .collect(),
        );
        Ok(())
    }
}

/// Worst relative error of one group of compared values, and where.
#[derive(Default)]
struct Worst {
    err: f64,
    at: String,
}

impl Worst {
    fn see(&mut self, what: impl Fn() -> String, got: f64, want: f64) {
        let e = rel(got, want);
        if e > self.err || e.is_nan() {
            self.err = e;
            self.at = format!("{} (kiln {got}, keras {want})", what());
        }
    }
}

/// One replay: the required results, and the trajectory of epoch-end weights.
struct Report {
    results: Worst,
    trajectory: Worst,
    epochs: usize,
}

/// The per-sample input shape of a fixture.
fn input_shape(fx: &Value) -> Vec<usize> {
    let model = &fx["model"];
    match model.get("input_shape") {
        Some(s) => flat(s).into_iter().map(|d| d as usize).collect(),
        None => vec![model["input_dim"].as_u64().unwrap() as usize],
    }
}

/// A layer of the fixture's own layer list, built from its Keras config.
fn layer_of<T: Scalar>(class: &str, cfg: &Value) -> Box<dyn kiln::layers::Layer<T>> {
    let owned = kiln::keras::config_args(class, cfg).unwrap_or_else(|| panic!("no layer {class}"));
    let given: Vec<(Option<&str>, kiln::spec::Value)> =
        owned.iter().map(|(n, v)| (n.as_deref(), v.clone())).collect();
    builtin::<T>(class, &given).unwrap()
}

/// A functional fixture's network: every layer fed by its `inbound` layers.
fn functional<T: Scalar>(fx: &Value) -> Sequential<T> {
    let model = &fx["model"];
    let mut b = FunctionalBuilder::<T>::new(fx["name"].as_str().unwrap(), &input_shape(fx));
    for l in model["layers"].as_array().unwrap() {
        let (name, class) = (l["name"].as_str().unwrap(), l["class_name"].as_str().unwrap());
        let inbound: Vec<&str> =
            l["inbound"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        if class == "InputLayer" {
            assert_eq!(name, "input_layer");
            continue;
        }
        if kiln::spec::merge_lookup(class).is_some() {
            let axis: Vec<_> = l["config"]
                .get("axis")
                .and_then(serde_json::Value::as_i64)
                .map(|a| (Some("axis"), kiln::spec::Value::Int(a)))
                .into_iter()
                .collect();
            let m = kiln::Merge::from_written(class, &axis).unwrap();
            b = b.merge(name, m, &inbound);
            continue;
        }
        b = b.layer(name, layer_of::<T>(class, &l["config"]), &inbound);
    }
    b.build(Seed(0)).unwrap()
}

/// The network a fixture describes, at its initial weights.
fn network<T: Dtype>(fx: &Value) -> Sequential<T> {
    let model = &fx["model"];
    let shape = input_shape(fx);
    let mut b = SequentialBuilder::<T>::new(fx["name"].as_str().unwrap(), &shape);
    let functional_model = model["functional"] == true;
    for l in model["layers"].as_array().unwrap() {
        if functional_model {
            break;
        }
        let (name, class) = (l["name"].as_str().unwrap(), l["class_name"].as_str().unwrap());
        if fx["schema_version"] == 2 {
            b = b.add_named_boxed(name, layer_of::<T>(class, &l["config"]));
            continue;
        }
        assert_eq!(class, "Dense", "schema 1 holds Dense stacks");
        let act = Act::from_name(l["activation"].as_str().unwrap()).expect("known activation");
        let dense = Dense::<T>::new(l["units"].as_u64().unwrap() as usize)
            .activation(act)
            .use_bias(l["use_bias"].as_bool().unwrap_or(true));
        b = b.add_named(name, dense);
    }
    let described = if functional_model { functional::<T>(fx) } else { b.build(Seed(0)).unwrap() };
    // Schema 2 carries Keras's own model JSON: the network is built from it by the
    // public loader, and must be the one the fixture's layer list describes.
    let mut net = if fx["schema_version"] == 2 {
        let json = model["keras_json"].to_string();
        let net = kiln::keras::from_json::<T>(&json, Seed(0))
            .unwrap_or_else(|e| panic!("{}: {e}", fx["name"]));
        assert_eq!(net.layer_names(), described.layer_names(), "{}", fx["name"]);
        assert_eq!(net.layer_inputs(), described.layer_inputs(), "{}", fx["name"]);
        assert_eq!(net.layer_shapes(), described.layer_shapes(), "{}", fx["name"]);
        net
    } else {
        described
    };
    for (name, w) in fx["initial_weights"].as_object().unwrap() {
        let dst = net.params_mut().get_mut(name).unwrap_or_else(|| panic!("no parameter {name}"));
        let src = flat(w);
        assert_eq!(dst.len(), src.len(), "{name}");
        dst.iter_mut().zip(src).for_each(|(d, s)| *d = T::of(s));
    }
    net
}

/// The first batch's loss and gradients: one plain SGD step at learning rate 2²⁰ on
/// that batch, from the initial weights, moves each weight by exactly −2²⁰·g (a power of
/// two scales without rounding), and History holds that batch's loss.
fn first_batch<T: Dtype>(fx: &Value, r: &mut Worst) {
    let fb = &fx["first_batch"];
    let [lo, hi] = [0, 1].map(|i| fb["batch"][i].as_u64().unwrap() as usize);
    let shape = input_shape(fx);
    let per: usize = shape.iter().product();
    let lr = f64::from(1u32 << 20);
    let mut net = network::<T>(fx);
    let before: Vec<f64> = net.params().values().iter().map(|v| v.as_f64()).collect();
    let data = &fx["data"];
    let xs: Vec<T> = flat(&data["x_train"])[lo * per..hi * per].iter().map(|&v| T::of(v)).collect();
    // The training-mode forward pass at the initial weights.
    let out = net.forward_train(&xs, hi - lo).unwrap().outputs.to_vec();
    for (i, (a, b)) in out.iter().zip(flat(&fb["outputs"])).enumerate() {
        r.see(|| format!("first batch output[{i}]"), a.as_f64(), b);
    }
    if std::env::var_os("KILN_FIXTURE_DEBUG").is_some() {
        let o = out
            .iter()
            .zip(flat(&fb["outputs"]))
            .map(|(a, b)| rel(a.as_f64(), b))
            .fold(0.0, f64::max);
        println!("{}: first batch outputs {o:.1e}", fx["name"]);
    }
    let sgd = SGD {
        learning_rate: lr.into(),
        momentum: 0.0,
        nesterov: false,
        common: Default::default(),
    };
    let mut m = net
        .compile(sgd.into_optimizer().unwrap(), loss::<T>(&fx["compile"]), Vec::<&str>::new())
        .unwrap();
    let x = Inputs::<Dyn, T>::from_vec_shape(&shape, xs).unwrap();
    let ys = flat(&data["y_train"]);
    let h = if data["task"] == "sparse" {
        let y = ClassLabels::new(ys[lo..hi].iter().map(|&v| v as usize).collect());
        m.fit(&x, &y).epochs(1).batch_size(hi - lo).shuffle(false).verbose(0).run().unwrap()
    } else {
        let w = ys.len() / flat(&data["x_train"]).len().div_ceil(per).max(1);
        let t: Vec<T> = ys[lo * w..hi * w].iter().map(|&v| T::of(v)).collect();
        let y = Targets::<Dyn, T>::from_vec_shape(&[w], t).unwrap();
        m.fit(&x, &y).epochs(1).batch_size(hi - lo).shuffle(false).verbose(0).run().unwrap()
    };
    r.see(|| "first batch loss".into(), h.get("loss").unwrap()[0], fb["loss"].as_f64().unwrap());
    // Norm-wise per tensor, ‖ours − keras‖∞ / max(‖keras‖∞, 1e-3) (the floor `rel` uses):
    // a gradient entry is a sum over the batch, entries that nearly cancel carry no
    // relative accuracy in float32, and a bias before BatchNormalization has a zero
    // gradient that both sides hold as rounding residue.
    let p = m.model().params();
    for (name, want) in fb["grads"].as_object().unwrap() {
        let e = p.entries().iter().find(|e| &e.name == name).unwrap();
        let want = flat(want);
        let ours: Vec<f64> = before[e.range()]
            .iter()
            .zip(&p.values()[e.range()])
            .map(|(&b, a)| (b - a.as_f64()) / lr)
            .collect();
        let scale = want.iter().fold(0.0f64, |m, w| m.max(w.abs()));
        let (i, diff) =
            ours.iter().zip(&want).map(|(a, b)| (a - b).abs()).enumerate().fold(
                (0, 0.0f64),
                |best, (i, d)| if d > best.1 || d.is_nan() { (i, d) } else { best },
            );
        let err = diff / scale.max(1e-3);
        if std::env::var_os("KILN_FIXTURE_DEBUG").is_some() {
            println!("{}: first batch gradient {name} {err:.1e}", fx["name"]);
        }
        if err > r.err || err.is_nan() {
            r.err = err;
            r.at = format!(
                "first batch gradient {name} (norm-wise; worst entry {i}: kiln {}, keras {})",
                ours[i], want[i]
            );
        }
    }
}

fn replay<T: Dtype>(fx: &Value) -> Report {
    let model = &fx["model"];
    let shape = input_shape(fx);
    let net = network::<T>(fx);
    let compile = &fx["compile"];
    let metrics: Vec<&str> =
        compile["metrics"].as_array().unwrap().iter().map(|m| m.as_str().unwrap()).collect();
    let mut m =
        net.compile(optimizer::<T>(&compile["optimizer"]), loss::<T>(compile), metrics).unwrap();

    let data = &fx["data"];
    let x = |k: &str| {
        Inputs::<Dyn, T>::from_vec_shape(&shape, flat(&data[k]).into_iter().map(T::of).collect())
            .unwrap()
    };
    let (x_train, x_test) = (x("x_train"), x("x_test"));
    let fit = &fx["fit"];
    let mut epoch_weights = Vec::new();
    let history;
    let eval;
    let pred;
    macro_rules! run {
        ($y_train:expr, $y_test:expr) => {{
            let (y_train, y_test) = ($y_train, $y_test);
            let mut f = m
                .fit(&x_train, &y_train)
                .epochs(fit["epochs"].as_u64().unwrap() as usize)
                .batch_size(fit["batch_size"].as_u64().unwrap() as usize)
                .shuffle(fit["shuffle"].as_bool().unwrap())
                .validation_split(fit["validation_split"].as_f64().unwrap_or(0.0))
                .verbose(0)
                .callbacks((EpochWeights(&mut epoch_weights),));
            if let Some(es) = fx.get("early_stopping").filter(|v| !v.is_null()) {
                let c = &es["config"];
                let mut cb = EarlyStopping::on(c["monitor"].as_str().unwrap())
                    .patience(c["patience"].as_u64().unwrap() as usize);
                if c["restore_best_weights"].as_bool().unwrap_or(false) {
                    cb = cb.restore_best_weights();
                }
                f = f.callbacks(cb);
            }
            history = f.run().unwrap();
            eval = m
                .evaluate_batched(
                    &x_test,
                    &y_test,
                    fx["evaluate"]["batch_size"].as_u64().unwrap() as usize,
                )
                .unwrap();
            pred = m
                .predict_batched(&x_test, fx["predict"]["batch_size"].as_u64().unwrap() as usize)
                .unwrap();
        }};
    }
    if data["task"] == "sparse" {
        let labels =
            |k: &str| ClassLabels::new(flat(&data[k]).into_iter().map(|v| v as usize).collect());
        run!(labels("y_train"), labels("y_test"));
    } else {
        let last = model["layers"].as_array().unwrap().last().unwrap();
        let units = last.get("units").unwrap_or(&last["config"]["units"]);
        let width = units.as_u64().unwrap() as usize;
        let t = |k: &str| {
            Targets::<Dyn, T>::from_vec_shape(
                &[width],
                flat(&data[k]).into_iter().map(T::of).collect(),
            )
            .unwrap()
        };
        run!(t("y_train"), t("y_test"));
    }

    let mut r =
        Report { results: Worst::default(), trajectory: Worst::default(), epochs: history.len() };
    let keras_epochs =
        fx.get("epochs_run").unwrap_or(&fx["fit"]["epochs"]).as_u64().unwrap() as usize;
    assert_eq!(history.len(), keras_epochs, "{}: epochs run", fx["name"]);
    for (key, values) in fx["history"].as_object().unwrap() {
        let ours =
            history.get(key).unwrap_or_else(|| panic!("{}: History has no {key}", fx["name"]));
        for (e, (a, b)) in ours.iter().zip(flat(values)).enumerate() {
            r.results.see(|| format!("history[{key}][{e}]"), *a, b);
        }
    }
    for (e, want) in fx["epoch_end_weights"].as_array().unwrap().iter().enumerate() {
        for (name, ours) in &epoch_weights[e] {
            for (i, (a, b)) in ours.iter().zip(flat(&want[name])).enumerate() {
                r.trajectory.see(|| format!("epoch {e} weights {name}[{i}]"), *a, b);
            }
        }
    }
    for (name, want) in fx["final_weights"].as_object().unwrap() {
        let ours = m.model().params().get(name).unwrap();
        for (i, (a, b)) in ours.iter().zip(flat(want)).enumerate() {
            r.results.see(|| format!("final {name}[{i}]"), a.as_f64(), b);
        }
    }
    for (key, want) in fx["evaluate"]["results"].as_object().unwrap() {
        r.results.see(|| format!("evaluate[{key}]"), eval[key.as_str()], want.as_f64().unwrap());
    }
    for (i, (a, b)) in pred.data().iter().zip(flat(&fx["predict"]["outputs"])).enumerate() {
        r.results.see(|| format!("predict[{i}]"), a.as_f64(), b);
    }
    if fx.get("first_batch").is_some() {
        first_batch::<T>(fx, &mut r.results);
    }
    r
}

fn fixture_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter(|p| {
            let v: Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
            v.get("schema_version").is_some()
        })
        .collect();
    files.sort();
    files
}

/// The spread between Keras's own backends per fixture, from the README beside the
/// recordings (`| `name` | jax | torch |`): the larger of the two.
fn backend_spread(dir: &Path) -> std::collections::HashMap<String, f64> {
    let text = std::fs::read_to_string(dir.join("README.md")).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let name = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            let a: f64 = cells.get(2)?.parse().ok()?;
            let b: f64 = cells.get(3)?.parse().ok()?;
            Some((name.to_string(), a.max(b)))
        })
        .collect()
}

#[test]
fn keras_fixtures_replay_step_for_step() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let dirs = match std::env::var_os("KILN_KERAS_FIXTURES") {
        Some(d) => vec![PathBuf::from(d)],
        None => vec![root.join("keras"), root.join("keras-layers")],
    };
    // (directory, float64?, the backend spreads of its float32 recordings)
    let mut sets = Vec::new();
    for dir in dirs {
        let spread = backend_spread(&dir);
        if dir.join("float64").is_dir() {
            sets.push((dir.join("float64"), true, spread.clone()));
        }
        sets.push((dir, false, spread));
    }
    let mut failures = Vec::new();
    let mut count = 0;
    println!(
        "{:<52} {:>6}  {:>9}  {:>10}  {:>9}",
        "fixture", "epochs", "results", "trajectory", "bound"
    );
    for (dir, f64_set, spread) in sets {
        for path in fixture_files(&dir) {
            let fx: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let r = if fx["generator"]["floatx"] == "float64" {
                replay::<f64>(&fx)
            } else {
                replay::<f32>(&fx)
            };
            let name = fx["name"].as_str().unwrap();
            // float64: the semantics to rounding (schema 2 asks 1e-12); float32: within
            // the larger of 1e-5 and the spread between Keras's own backends.
            let schema2 = fx["schema_version"] == 2;
            let (tol, traj_tol) = match (f64_set, schema2) {
                (true, true) => (1e-12, 1e-12),
                (true, false) => (1e-10, 1e-10),
                (false, _) => {
                    let s = spread.get(name).copied().unwrap_or(0.0);
                    (s.max(1e-5), s.max(1e-4))
                }
            };
            let name = format!("{}{name}", if f64_set { "float64/" } else { "" });
            println!(
                "{name:<52} {:>6}  {:>9.1e}  {:>10.1e}  {tol:>9.1e}",
                r.epochs, r.results.err, r.trajectory.err
            );
            if r.results.err.is_nan() || r.results.err > tol {
                failures.push(format!(
                    "{name}: results differ by {:.2e} at {}",
                    r.results.err, r.results.at
                ));
            }
            if r.trajectory.err.is_nan() || r.trajectory.err > traj_tol {
                failures.push(format!(
                    "{name}: trajectory differs by {:.2e} at {}",
                    r.trajectory.err, r.trajectory.at
                ));
            }
            count += 1;
        }
    }
    assert!(count > 0, "no fixture found");
    assert!(
        failures.is_empty(),
        "{} of {count} fixtures differ from Keras:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
