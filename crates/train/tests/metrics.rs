//! Metrics against hand computations and exact formulas.

use kiln_train::data::Truth;
use kiln_train::metrics::{Auc, Metric, MetricBatch, R2Score, metric_by_name};
use kiln_train::tape::Tensor;

fn run(
    m: &mut dyn Metric<f64>,
    outputs: &[f64],
    truth: Truth<'_, f64>,
    width: usize,
    w: Option<&[f64]>,
) -> f64 {
    m.reset();
    let batch = outputs.len() / width;
    // Feed in two batches to exercise the streaming accumulation.
    let half = batch / 2;
    for (lo, hi) in [(0, half), (half, batch)] {
        let truth = match truth {
            Truth::Classes(c) => Truth::Classes(&c[lo..hi]),
            Truth::Dense(d) => Truth::Dense(&d[lo * width..hi * width]),
        };
        m.update(&MetricBatch {
            outputs: &outputs[lo * width..hi * width],
            truth,
            batch: hi - lo,
            width,
            sample_weight: w.map(|w| &w[lo..hi]),
        });
    }
    m.result()
}

fn by_name(name: &str, width: usize) -> Box<dyn Metric<f64>> {
    metric_by_name(name, width).unwrap()
}

#[test]
fn accuracy_family() {
    // "accuracy" on one output is binary accuracy at 0.5.
    let p = [0.6, 0.4, 0.2, 0.9];
    assert_eq!(
        run(by_name("accuracy", 1).as_mut(), &p, Truth::Dense(&[1.0, 1.0, 0.0, 0.0]), 1, None),
        0.5
    );
    assert_eq!(
        run(by_name("accuracy", 1).as_mut(), &p, Truth::Classes(&[1, 1, 0, 0]), 1, None),
        0.5
    );
    // On several outputs it is categorical: from class indices or from one-hot targets.
    let p = [0.1, 0.7, 0.2, 0.5, 0.3, 0.2, 0.3, 0.3, 0.4, 0.9, 0.05, 0.05];
    let classes = [1usize, 0, 0, 0];
    let onehot: Vec<f64> =
        (0..12).map(|j| if classes[j / 3] == j % 3 { 1.0 } else { 0.0 }).collect();
    assert_eq!(run(by_name("accuracy", 3).as_mut(), &p, Truth::Classes(&classes), 3, None), 0.75);
    assert_eq!(
        run(by_name("categorical_accuracy", 3).as_mut(), &p, Truth::Dense(&onehot), 3, None),
        0.75
    );
    // Sample weights weight the mean.
    let w = [1.0, 1.0, 2.0, 0.0];
    assert_eq!(
        run(by_name("accuracy", 3).as_mut(), &p, Truth::Classes(&classes), 3, Some(&w)),
        0.5
    );
    // Top-5 of 6 classes: only the smallest output misses.
    let p = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1];
    assert_eq!(
        run(
            by_name("sparse_top_k_categorical_accuracy", 6).as_mut(),
            &p,
            Truth::Classes(&[0, 0]),
            6,
            None
        ),
        0.5
    );
    // Multi-hot targets on three sigmoid outputs: per-element binary accuracy.
    let p = [0.7, 0.2, 0.6, 0.1, 0.8, 0.3];
    let y = [1.0, 0.0, 0.0, 0.0, 1.0, 1.0];
    assert!(
        (run(by_name("binary_accuracy", 3).as_mut(), &p, Truth::Dense(&y), 3, None) - 4.0 / 6.0)
            .abs()
            < 1e-15
    );
}

#[test]
fn precision_recall_f1() {
    let p = [0.9, 0.8, 0.3, 0.6, 0.1, 0.7];
    let y = [1.0, 0.0, 1.0, 1.0, 0.0, 0.0];
    // Predicted positive: 0, 1, 3, 5. TP = 2 (0, 3), FP = 2 (1, 5), FN = 1 (2).
    assert_eq!(run(by_name("precision", 1).as_mut(), &p, Truth::Dense(&y), 1, None), 0.5);
    assert!(
        (run(by_name("recall", 1).as_mut(), &p, Truth::Dense(&y), 1, None) - 2.0 / 3.0).abs()
            < 1e-15
    );
    // Keras's F1Score: ε = 1e-7 in each denominator.
    let (pr, re) = (2.0 / (4.0 + 1e-7), 2.0 / (3.0 + 1e-7));
    let f1 = pr * re / (pr + re + 1e-7) * 2.0;
    assert!(
        (run(by_name("f1_score", 1).as_mut(), &p, Truth::Dense(&y), 1, None) - f1).abs() < 1e-15
    );
}

#[test]
fn auc_matches_the_exact_rank_statistic() {
    let n = 400;
    let y: Vec<f64> = (0..n).map(|i| f64::from(u8::from(i % 3 == 0))).collect();
    let noise = Tensor::<f64>::random_uniform(&[n], 0.0, 1.0, 3).into_vec();
    let p: Vec<f64> =
        y.iter().zip(&noise).map(|(y, u)| (0.35 * y + 0.65 * u).clamp(0.0, 1.0)).collect();
    // Exact ROC AUC = P(score of a positive > score of a negative).
    let (pos, neg): (Vec<_>, Vec<_>) = (0..n).partition(|&i| y[i] == 1.0);
    let wins: f64 = pos.iter().map(|&i| neg.iter().filter(|&&j| p[i] > p[j]).count() as f64).sum();
    let exact = wins / (pos.len() * neg.len()) as f64;
    let got = run(&mut Auc::new("auc"), &p, Truth::Dense(&y), 1, None);
    assert!((got - exact).abs() < 5e-3, "{got} vs {exact}");
    assert!(
        (run(&mut Auc::new("auc"), &y, Truth::Dense(&y), 1, None) - 1.0).abs() < 1e-12,
        "perfect separation"
    );
}

#[test]
fn regression_metrics() {
    let p = [1.0, 2.0, 3.0, 5.0];
    let y = [1.5, 2.0, 2.0, 4.0];
    let mse = (0.25 + 0.0 + 1.0 + 1.0) / 4.0;
    assert_eq!(run(by_name("mse", 1).as_mut(), &p, Truth::Dense(&y), 1, None), mse);
    assert_eq!(run(by_name("rmse", 1).as_mut(), &p, Truth::Dense(&y), 1, None), f64::sqrt(mse));
    assert_eq!(run(by_name("mae", 1).as_mut(), &p, Truth::Dense(&y), 1, None), 2.5 / 4.0);
    let mean = 9.5 / 4.0;
    let tot: f64 = y.iter().map(|v| (v - mean) * (v - mean)).sum();
    let want = 1.0 - 4.0 * mse / tot;
    assert!(
        (run(&mut R2Score::new("r2_score"), &p, Truth::Dense(&y), 1, None) - want).abs() < 1e-12
    );
}

#[test]
fn unknown_metric_names_suggest_the_closest() {
    let e = metric_by_name::<f32>("acuracy", 3).err().unwrap().to_string();
    assert!(e.contains("did you mean \"accuracy\""), "{e}");
}
