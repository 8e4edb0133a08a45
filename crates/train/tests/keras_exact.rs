//! Cases where kiln's losses and metrics differed from Keras 3 (issue "Keras-exact
//! losses and metrics"), each with Keras's value and gradient, in float32 and float64.

use kiln_train::data::Truth;
use kiln_train::loss::LossBatch;
use kiln_train::metrics::{MetricBatch, metric_by_name};
use kiln_train::*;

/// Per-sample losses and the gradient w.r.t. the outputs (linear model output).
fn loss_of<T: kiln_train::tape::Scalar>(
    l: &dyn Loss<T>,
    p: &[f64],
    y: &[f64],
    width: usize,
) -> (Vec<f64>, Vec<f64>) {
    let p: Vec<T> = p.iter().map(|&v| T::of(v)).collect();
    let y: Vec<T> = y.iter().map(|&v| T::of(v)).collect();
    let batch = p.len() / width;
    let b = LossBatch {
        outputs: &p,
        logits: None,
        activation: OutputActivation::Linear,
        truth: Truth::Dense(&y),
        batch,
        width,
    };
    let mut losses = vec![T::zero(); batch];
    let mut grad = vec![T::zero(); p.len()];
    l.compute(&b, &mut losses, Some(&mut grad)).unwrap();
    (losses.iter().map(|v| v.as_f64()).collect(), grad.iter().map(|v| v.as_f64()).collect())
}

fn close(a: &[f64], b: &[f64], tol: f64, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}");
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= tol * y.abs().max(1.0), "{what}: {a:?} vs Keras {b:?}");
    }
}

fn both(f: impl Fn(&str, f64)) {
    f("float64", 1e-12);
    f("float32", 1e-6);
}

#[test]
fn binary_crossentropy_on_probabilities_clips_then_logs_and_passes_the_gradient_on_the_bounds() {
    both(|dtype, tol| {
        let run = |p: &[f64], y: &[f64]| {
            if dtype == "float64" {
                loss_of::<f64>(&BinaryCrossentropy::default(), p, y, 1)
            } else {
                loss_of::<f32>(&BinaryCrossentropy::default(), p, y, 1)
            }
        };
        // Keras 3: −log(clip(p, ε, 1 − ε)).
        let (l, _) = run(&[0.5, 0.0], &[1.0, 1.0]);
        close(&l, &[std::f64::consts::LN_2, 16.11809565095832], tol, dtype);
        // At the clip bound the gradient passes: −1/ε.
        let (_, g) = run(&[1e-7], &[1.0]);
        close(&g, &[-1e7], tol, dtype);
    });
}

#[test]
fn kl_divergence_has_a_gradient_where_the_prediction_is_exactly_one() {
    let (_, g) = loss_of::<f64>(&KLDivergence::default(), &[0.0, 1.0], &[0.2, 0.8], 2);
    close(&g, &[0.0, -0.8], 1e-12, "float64");
    let (_, g) = loss_of::<f32>(&KLDivergence::default(), &[0.0, 1.0], &[0.2, 0.8], 2);
    close(&g, &[0.0, -0.8], 1e-6, "float32");
}

#[test]
fn hinge_maps_labels_only_when_the_whole_batch_is_binary_and_has_a_gradient_at_the_kink() {
    // Labels −1, 0, 1 together: none is mapped. Mean of [1.5, 1, 0.5].
    let (l, _) = loss_of::<f64>(&Hinge::default(), &[0.5, 0.5, 0.5], &[-1.0, 0.0, 1.0], 3);
    close(&l, &[1.0], 1e-12, "float64");
    let (l, _) = loss_of::<f32>(&Hinge::default(), &[0.5, 0.5, 0.5], &[-1.0, 0.0, 1.0], 3);
    close(&l, &[1.0], 1e-6, "float32");
    // All labels 0/1: mapped to ±1; y = 1, p = 1 is the kink, where Keras's gradient is −1.
    let (l, g) = loss_of::<f64>(&Hinge::default(), &[1.0, 0.2], &[1.0, 0.0], 1);
    close(&l, &[0.0, 1.2], 1e-12, "float64 hinge");
    close(&g, &[-1.0, 1.0], 1e-12, "float64 hinge gradient");
    let (_, g) = loss_of::<f32>(&Hinge::default(), &[1.0, 0.2], &[1.0, 0.0], 1);
    close(&g, &[-1.0, 1.0], 1e-6, "float32 hinge gradient");
}

#[test]
fn categorical_hinge_splits_the_gradient_between_tied_maxima_and_passes_it_at_the_kink() {
    let (l, g) =
        loss_of::<f64>(&CategoricalHinge::default(), &[0.5, 0.5, 1.0], &[0.0, 0.0, 1.0], 3);
    close(&l, &[0.5], 1e-12, "float64");
    close(&g, &[0.5, 0.5, -1.0], 1e-12, "float64 ties");
    let (_, g) =
        loss_of::<f32>(&CategoricalHinge::default(), &[0.5, 0.5, 1.0], &[0.0, 0.0, 1.0], 3);
    close(&g, &[0.5, 0.5, -1.0], 1e-6, "float32 ties");
    // neg − pos + 1 = 0 exactly: the gradient still passes.
    let (l, g) = loss_of::<f64>(&CategoricalHinge::default(), &[0.5, 1.5], &[0.0, 1.0], 2);
    close(&l, &[0.0], 1e-12, "float64 kink");
    close(&g, &[1.0, -1.0], 1e-12, "float64 kink gradient");
}

fn metric(name: &str, p: &[f64], y: &[f64]) -> f64 {
    let mut m = metric_by_name::<f64>(name, 1).unwrap();
    m.update(&MetricBatch {
        outputs: p,
        truth: Truth::Dense(y),
        batch: p.len(),
        width: 1,
        sample_weight: None,
    });
    m.result()
}

#[test]
fn f1_has_keras_epsilons_and_binary_accuracy_a_float32_threshold() {
    // One true positive, nothing else: Keras's F1Score gives 0.99999985, not 1.
    let f1 = metric("f1_score", &[0.9], &[1.0]);
    let (p, r) = (1.0 / (1.0 + 1e-7), 1.0 / (1.0 + 1e-7));
    assert_eq!(f1, p * r / (p + r + 1e-7) * 2.0);
    assert!((f1 - 0.99999985).abs() < 1e-8, "{f1}");
    // The threshold 0.5 is exact in float32; a prediction just above the float32
    // rounding of 0.7 (0.699999988…) but below 0.7 counts as positive, as in Keras.
    let acc = kiln_train::metrics::binary_accuracy::<f64>("binary_accuracy", 0.7);
    let mut acc = acc;
    acc.update(&MetricBatch {
        outputs: &[0.699_999_995],
        truth: Truth::Dense(&[1.0]),
        batch: 1,
        width: 1,
        sample_weight: None,
    });
    assert_eq!(acc.result(), 1.0);
}
