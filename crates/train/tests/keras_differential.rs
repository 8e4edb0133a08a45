//! Every loss and metric against Keras 3 itself: tests/fixtures/keras-losses/cases.json
//! holds seeded cases recorded by its generate.py (real Keras on TensorFlow, float32 and
//! float64: edge values, soft labels, rank-3 targets, sample weights, every reduction),
//! each replayed here through kiln's public loss and metric API — losses with their
//! gradient, metrics fed in two chunks.
//!
//! Bounds: float64 1e-12; float32 1e-6 or Keras's own float32-vs-float64 difference on
//! the same case, whichever is larger (both relative to max(1, |Keras's value|)).
//! `cargo test -p kiln-train --test keras_differential -- --nocapture` prints the worst
//! error per loss and metric.

use kiln_train::data::Truth;
use kiln_train::loss::{self, LossBatch};
use kiln_train::metrics::{
    self, AtConstraint, Auc, Average, Confusion, ConfusionValue, Constrained, Curve, FBetaScore,
    IoU, LossMetric, Metric, MetricBatch, Summation,
};
use kiln_train::tape::Scalar;
use kiln_train::*;
use serde_json::Value;
use std::collections::BTreeMap;

fn cases() -> Vec<Value> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/keras-losses/cases.json");
    let text = std::fs::read_to_string(path).expect("the Keras recordings are vendored");
    let v: Value = serde_json::from_str(&text).expect("cases.json is JSON");
    v["cases"].as_array().expect("a case list").clone()
}

fn nums(v: &Value) -> Vec<f64> {
    v.as_array()
        .map(|a| a.iter().map(|x| x.as_f64().unwrap_or(f64::NAN)).collect())
        .unwrap_or_default()
}

fn arg_f(args: &Value, k: &str) -> Option<f64> {
    args.get(k).and_then(Value::as_f64)
}

fn arg_b(args: &Value, k: &str) -> bool {
    args.get(k).and_then(Value::as_bool).unwrap_or(false)
}

/// The kiln loss for a recorded Keras loss.
fn make_loss<T: Scalar>(name: &str, args: &Value, reduction: Reduction) -> Box<dyn Loss<T>> {
    let logits = arg_b(args, "from_logits");
    let ls = arg_f(args, "label_smoothing").unwrap_or(0.0);
    match name {
        "mean_squared_error" => Box::new(MeanSquaredError { reduction }),
        "mean_absolute_error" => Box::new(MeanAbsoluteError { reduction }),
        "mean_absolute_percentage_error" => Box::new(MeanAbsolutePercentageError { reduction }),
        "mean_squared_logarithmic_error" => Box::new(MeanSquaredLogarithmicError { reduction }),
        "cosine_similarity" => Box::new(CosineSimilarity { reduction }),
        "huber" => Box::new(Huber { delta: arg_f(args, "delta").unwrap_or(1.0), reduction }),
        "log_cosh" => Box::new(LogCosh { reduction }),
        "poisson" => Box::new(Poisson { reduction }),
        "kl_divergence" => Box::new(KLDivergence { reduction }),
        "hinge" => Box::new(Hinge { reduction }),
        "squared_hinge" => Box::new(SquaredHinge { reduction }),
        "categorical_hinge" => Box::new(CategoricalHinge { reduction }),
        "binary_crossentropy" => {
            Box::new(BinaryCrossentropy { from_logits: logits, label_smoothing: ls, reduction })
        }
        "categorical_crossentropy" => Box::new(CategoricalCrossentropy {
            from_logits: logits,
            label_smoothing: ls,
            reduction,
        }),
        "sparse_categorical_crossentropy" => Box::new(SparseCategoricalCrossentropy {
            from_logits: logits,
            ignore_class: args.get("ignore_class").and_then(Value::as_i64),
            reduction,
        }),
        "binary_focal_crossentropy" => Box::new(BinaryFocalCrossentropy {
            apply_class_balancing: arg_b(args, "apply_class_balancing"),
            alpha: arg_f(args, "alpha").unwrap_or(0.25),
            gamma: arg_f(args, "gamma").unwrap_or(2.0),
            from_logits: logits,
            label_smoothing: ls,
            reduction,
        }),
        "categorical_focal_crossentropy" => Box::new(CategoricalFocalCrossentropy {
            alpha: arg_f(args, "alpha").unwrap_or(0.25),
            gamma: arg_f(args, "gamma").unwrap_or(2.0),
            from_logits: logits,
            label_smoothing: ls,
            reduction,
        }),
        other => panic!("the recordings name a loss kiln lacks: {other}"),
    }
}

/// The kiln metric for a recorded Keras metric (Keras's class and arguments).
fn make_metric<T: Scalar + 'static>(name: &str, args: &Value, width: usize) -> Box<dyn Metric<T>> {
    let logits = arg_b(args, "from_logits");
    let ls = arg_f(args, "label_smoothing").unwrap_or(0.0);
    let confusion = |value| {
        let mut m = Confusion::new(name, value);
        if let Some(t) = arg_f(args, "thresholds") {
            m = m.threshold(t);
        }
        if let Some(k) = args.get("top_k").and_then(Value::as_u64) {
            m = m.top_k(k as usize);
        }
        if let Some(c) = args.get("class_id").and_then(Value::as_u64) {
            m = m.class_id(c as usize);
        }
        Box::new(m) as Box<dyn Metric<T>>
    };
    let average = || match args.get("average") {
        Some(Value::Null) => Average::PerClass,
        Some(v) if v == "macro" => Average::Macro,
        Some(v) if v == "weighted" => Average::Weighted,
        _ => Average::Micro,
    };
    match name {
        "binary_accuracy" => {
            metrics::binary_accuracy(name, arg_f(args, "threshold").unwrap_or(0.5))
        }
        "top_k_categorical_accuracy" | "sparse_top_k_categorical_accuracy" => {
            metrics::top_k_accuracy(name, args["k"].as_u64().unwrap_or(5) as usize)
        }
        "precision" => confusion(ConfusionValue::Precision),
        "recall" => confusion(ConfusionValue::Recall),
        "true_positives" => confusion(ConfusionValue::TruePositives),
        "false_positives" => confusion(ConfusionValue::FalsePositives),
        "true_negatives" => confusion(ConfusionValue::TrueNegatives),
        "false_negatives" => confusion(ConfusionValue::FalseNegatives),
        "f1_score" | "fbeta_score" => Box::new(
            FBetaScore::new(name, arg_f(args, "beta").unwrap_or(1.0))
                .average(average())
                .threshold(arg_f(args, "threshold"))
                .classes(width),
        ),
        "auc" => {
            let mut m = Auc::new(name).from_logits(logits).multi_label(arg_b(args, "multi_label"));
            if let Some(n) = args.get("num_thresholds").and_then(Value::as_u64) {
                m = m.num_thresholds(n as usize);
            }
            if args.get("curve").and_then(Value::as_str) == Some("PR") {
                m = m.curve(Curve::Pr);
            }
            m = m.summation(match args.get("summation_method").and_then(Value::as_str) {
                Some("minoring") => Summation::Minoring,
                Some("majoring") => Summation::Majoring,
                _ => Summation::Interpolation,
            });
            Box::new(m)
        }
        "precision_at_recall"
        | "recall_at_precision"
        | "sensitivity_at_specificity"
        | "specificity_at_sensitivity" => {
            let (kind, key) = match name {
                "precision_at_recall" => (Constrained::PrecisionAtRecall, "recall"),
                "recall_at_precision" => (Constrained::RecallAtPrecision, "precision"),
                "sensitivity_at_specificity" => {
                    (Constrained::SensitivityAtSpecificity, "specificity")
                }
                _ => (Constrained::SpecificityAtSensitivity, "sensitivity"),
            };
            let mut m = AtConstraint::new(name, kind, arg_f(args, key).unwrap());
            if let Some(n) = args.get("num_thresholds").and_then(Value::as_u64) {
                m = m.num_thresholds(n as usize);
            }
            if let Some(c) = args.get("class_id").and_then(Value::as_u64) {
                m = m.class_id(c as usize);
            }
            Box::new(m)
        }
        "mean_iou" | "one_hot_mean_iou" => {
            Box::new(IoU::mean(name, args["num_classes"].as_u64().unwrap() as usize))
        }
        "iou" | "one_hot_iou" => {
            let ids: Vec<usize> =
                nums(&args["target_class_ids"]).iter().map(|&c| c as usize).collect();
            Box::new(IoU::new(name, args["num_classes"].as_u64().unwrap() as usize, &ids))
        }
        "binary_iou" => {
            let ids: Vec<usize> = args
                .get("target_class_ids")
                .map_or(vec![0, 1], |v| nums(v).iter().map(|&c| c as usize).collect());
            Box::new(IoU::binary(name, &ids, arg_f(args, "threshold").unwrap_or(0.5)))
        }
        "binary_crossentropy" if logits || ls != 0.0 => Box::new(LossMetric::new(
            name,
            BinaryCrossentropy { from_logits: logits, label_smoothing: ls, ..Default::default() },
        )),
        "categorical_crossentropy" if logits || ls != 0.0 => Box::new(LossMetric::new(
            name,
            CategoricalCrossentropy {
                from_logits: logits,
                label_smoothing: ls,
                ..Default::default()
            },
        )),
        "sparse_categorical_crossentropy" if logits => Box::new(LossMetric::new(
            name,
            SparseCategoricalCrossentropy { from_logits: true, ..Default::default() },
        )),
        _ => metrics::metric_by_name(name, width).expect("every recorded metric has a kiln name"),
    }
}

/// Largest error of `got` against Keras's `want`, relative to max(1, |want|); NaN where
/// Keras has NaN is no error, anything else against NaN is infinite.
fn worst(got: &[f64], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .map(|(&g, &w)| {
            if w.is_nan() || g.is_nan() {
                if w.is_nan() && g.is_nan() { 0.0 } else { f64::INFINITY }
            } else {
                (g - w).abs() / w.abs().max(1.0)
            }
        })
        .fold(0.0, f64::max)
}

/// Rows per sample and values per row of a recorded shape `[batch, .., last]`.
fn rows(shape: &[usize]) -> (usize, usize, usize) {
    let b = shape[0];
    let last = if shape.len() > 1 { shape[shape.len() - 1] } else { 1 };
    let per: usize = if shape.len() > 2 { shape[1..shape.len() - 1].iter().product() } else { 1 };
    (b, per, last)
}

fn per_row(sw: &Option<Vec<f64>>, per: usize) -> Option<Vec<f64>> {
    sw.as_ref().map(|w| w.iter().flat_map(|&v| std::iter::repeat_n(v, per)).collect())
}

/// kiln's values for one loss case under `reduction`: (value(s), gradient).
fn run_loss<T: Scalar>(c: &Value, reduction: &str) -> (Vec<f64>, Vec<f64>) {
    let shape: Vec<usize> = nums(&c["shape"]).iter().map(|&d| d as usize).collect();
    let (b, per, width) = rows(&shape);
    let n = b * per;
    let red = Reduction::by_name(reduction).expect("a Keras reduction");
    let l = make_loss::<T>(c["name"].as_str().unwrap(), &c["args"], red);
    let p: Vec<T> = nums(&c["y_pred"]).iter().map(|&v| T::of(v)).collect();
    let dense: Vec<T> = nums(&c["y_true"]).iter().map(|&v| T::of(v)).collect();
    // Labels as kiln reads them: a negative ignored label (Keras's -1) through
    // ClassLabels::from_i64_ignoring.
    let signed: Vec<i64> = nums(&c["y_true"]).iter().map(|&v| v as i64).collect();
    let ignore = c["args"].get("ignore_class").and_then(Value::as_i64).unwrap_or(-1);
    let classes: Vec<usize> = if c["classes"].as_bool() == Some(true) {
        ClassLabels::from_i64_ignoring(&signed, ignore).expect("labels").as_slice().to_vec()
    } else {
        Vec::new()
    };
    let truth = if c["classes"].as_bool() == Some(true) {
        Truth::Classes(&classes)
    } else {
        Truth::Dense(&dense)
    };
    let sw: Option<Vec<T>> =
        per_row(&c["sample_weight"].as_array().map(|_| nums(&c["sample_weight"])), per)
            .map(|w| w.iter().map(|&v| T::of(v)).collect());
    let lb = LossBatch {
        outputs: &p,
        logits: None,
        activation: OutputActivation::Linear,
        truth,
        batch: n,
        width,
    };
    let mut losses = vec![T::zero(); n];
    let mut grad = vec![T::zero(); p.len()];
    let info = l.compute(&lb, &mut losses, Some(&mut grad)).expect("the loss fits the case");
    let value = loss::reduce_with(&*l, &lb, info, &mut losses, sw.as_deref(), Some(&mut grad));
    let f = |v: &[T]| v.iter().map(|x| x.as_f64()).collect::<Vec<f64>>();
    if red == Reduction::None {
        // Keras returns the weighted rows, and differentiates them as their sum; kiln's
        // gradient is that of the rows' mean, the loss fit trains on.
        let g = grad.iter().map(|g| g.as_f64() * n as f64).collect();
        (f(&losses), g)
    } else {
        (vec![value.as_f64()], f(&grad))
    }
}

/// kiln's values for one metric case (one, or one per class), fed in Keras's two chunks.
fn run_metric<T: Scalar + 'static>(c: &Value) -> Vec<f64> {
    let shape: Vec<usize> = nums(&c["shape"]).iter().map(|&d| d as usize).collect();
    let (b, per, width) = rows(&shape);
    let mut m = make_metric::<T>(c["name"].as_str().unwrap(), &c["args"], width);
    let p: Vec<T> = nums(&c["y_pred"]).iter().map(|&v| T::of(v)).collect();
    let is_classes = c["classes"].as_bool() == Some(true);
    let dense: Vec<T> = nums(&c["y_true"]).iter().map(|&v| T::of(v)).collect();
    let classes: Vec<usize> = nums(&c["y_true"]).iter().map(|&v| v as usize).collect();
    let sw: Option<Vec<T>> =
        per_row(&c["sample_weight"].as_array().map(|_| nums(&c["sample_weight"])), per)
            .map(|w| w.iter().map(|&v| T::of(v)).collect());
    let split = c["split"].as_u64().unwrap() as usize;
    for (lo, hi) in [(0, split), (split, b)] {
        let (r0, r1) = (lo * per, hi * per);
        let truth = if is_classes {
            Truth::Classes(&classes[r0..r1])
        } else {
            Truth::Dense(&dense[r0 * width..r1 * width])
        };
        m.update(&MetricBatch {
            outputs: &p[r0 * width..r1 * width],
            truth,
            batch: r1 - r0,
            width,
            sample_weight: sw.as_deref().map(|w| &w[r0..r1]),
        });
    }
    let mut values = Vec::new();
    m.for_each_value(&mut |_, v| values.push(v));
    values
}

#[test]
fn every_loss_and_metric_matches_keras() {
    let all = cases();
    assert!(all.len() > 1000, "the recordings are all there");
    // Keras's own float32-vs-float64 difference per case: the float32 case comes first,
    // then the float64 case on the same inputs.
    let mut spread: Vec<BTreeMap<String, f64>> = vec![BTreeMap::new(); all.len()];
    for i in 0..all.len().saturating_sub(1) {
        let (a, b) = (&all[i], &all[i + 1]);
        if a["dtype"] == "float32"
            && b["dtype"] == "float64"
            && a["name"] == b["name"]
            && a["args"] == b["args"]
        {
            if a["kind"] == "loss" {
                for (r, v) in a["reductions"].as_object().unwrap() {
                    let w = &b["reductions"][r];
                    let s = worst(&nums(&v["value"]), &nums(&w["value"]))
                        .max(worst(&nums(&v["grad"]), &nums(&w["grad"])));
                    spread[i].insert(r.clone(), s);
                }
            } else {
                spread[i].insert(String::new(), worst(&nums(&a["value"]), &nums(&b["value"])));
            }
        }
    }
    let bound = |dtype: &str, s: f64| if dtype == "float64" { 1e-12 } else { (1e-6f64).max(s) };
    let mut table: BTreeMap<(String, String, String), (usize, f64)> = BTreeMap::new();
    let mut failures = Vec::new();
    for (i, c) in all.iter().enumerate() {
        let dtype = c["dtype"].as_str().unwrap();
        let name = c["name"].as_str().unwrap().to_string();
        let kind = c["kind"].as_str().unwrap().to_string();
        let mut record = |err: f64, what: String, s: f64| {
            let e =
                table.entry((kind.clone(), name.clone(), dtype.to_string())).or_insert((0, 0.0));
            e.0 += 1;
            e.1 = e.1.max(err);
            if err.is_nan() || err > bound(dtype, s) {
                failures.push(format!("{what}: error {err:.3e} (bound {:.1e})", bound(dtype, s)));
            }
        };
        let what = |extra: &str| {
            format!("{kind} {name} {} {dtype}{extra} [{}] case {i}", c["args"], c["note"])
        };
        if kind == "loss" {
            for (r, k) in c["reductions"].as_object().unwrap() {
                let (v, g) =
                    if dtype == "float64" { run_loss::<f64>(c, r) } else { run_loss::<f32>(c, r) };
                let err = worst(&v, &nums(&k["value"])).max(worst(&g, &nums(&k["grad"])));
                let s = spread[i].get(r).copied().unwrap_or(0.0);
                record(
                    err,
                    what(&format!(
                        " {r}: kiln {v:?} / {g:?}, Keras {} / {}",
                        k["value"], k["grad"]
                    )),
                    s,
                );
            }
        } else {
            let v = if dtype == "float64" { run_metric::<f64>(c) } else { run_metric::<f32>(c) };
            let want = nums(&c["value"]);
            let err = if v.len() == want.len() { worst(&v, &want) } else { f64::INFINITY };
            let s = spread[i].get("").copied().unwrap_or(0.0);
            record(err, what(&format!(": kiln {v:?}, Keras {want:?}")), s);
        }
    }
    println!("| kind | name | dtype | cases | worst error |\n|---|---|---|---|---|");
    for ((kind, name, dtype), (n, e)) in &table {
        println!("| {kind} | {name} | {dtype} | {n} | {e:.1e} |");
    }
    assert!(
        failures.is_empty(),
        "{} of the Keras cases differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
