//! Streaming metrics with Keras's names and definitions; each accumulates over an epoch
//! (or an evaluation) and is reset between them.

use crate::data::Truth;
use crate::error::{Result, unknown_name};
use kiln_tape::Scalar;

/// One batch as a metric sees it.
#[derive(Clone, Copy, Debug)]
pub struct MetricBatch<'a, T> {
    /// The model's outputs, `batch × width`.
    pub outputs: &'a [T],
    /// The labels.
    pub truth: Truth<'a, T>,
    /// Samples in the batch.
    pub batch: usize,
    /// Outputs per sample.
    pub width: usize,
    /// Per-sample weights, if any.
    pub sample_weight: Option<&'a [T]>,
}

impl<T: Scalar> MetricBatch<'_, T> {
    fn row(&self, i: usize) -> &[T] {
        &self.outputs[i * self.width..(i + 1) * self.width]
    }
    fn weight(&self, i: usize) -> f64 {
        self.sample_weight.map_or(1.0, |w| w[i].as_f64())
    }
    /// Target value of sample `i`, output `k` (class indices one-hot, or the label itself
    /// for a single output).
    fn target(&self, i: usize, k: usize) -> f64 {
        match self.truth {
            Truth::Dense(d) => d[i * self.width + k].as_f64(),
            Truth::Classes(c) if self.width == 1 => c[i] as f64,
            Truth::Classes(c) => f64::from(u8::from(c[i] == k)),
        }
    }
    /// The true class of sample `i` (argmax of dense targets).
    fn class(&self, i: usize) -> usize {
        match self.truth {
            Truth::Classes(c) => c[i],
            Truth::Dense(d) => argmax(&d[i * self.width..(i + 1) * self.width]),
        }
    }
}

fn argmax<T: Scalar>(v: &[T]) -> usize {
    v.iter().enumerate().fold(0, |best, (i, x)| if *x > v[best] { i } else { best })
}

/// A streaming metric. Implement it for a custom metric.
pub trait Metric<T: Scalar>: Send {
    /// The log key (`accuracy`, `mae`, ...).
    fn name(&self) -> &str;
    /// Forgets everything accumulated.
    fn reset(&mut self);
    /// Accumulates one batch.
    fn update(&mut self, b: &MetricBatch<'_, T>);
    /// The value over everything accumulated since the last reset.
    fn result(&self) -> f64;
}

/// Weighted mean of a per-sample value: the shape of most Keras metrics.
struct MeanOf<F> {
    name: String,
    total: f64,
    count: f64,
    f: F,
}

impl<F> MeanOf<F> {
    fn new(name: impl Into<String>, f: F) -> Self {
        MeanOf { name: name.into(), total: 0.0, count: 0.0, f }
    }
}

impl<T: Scalar, F: Fn(&MetricBatch<'_, T>, usize) -> f64 + Send> Metric<T> for MeanOf<F> {
    fn name(&self) -> &str {
        &self.name
    }
    fn reset(&mut self) {
        self.total = 0.0;
        self.count = 0.0;
    }
    fn update(&mut self, b: &MetricBatch<'_, T>) {
        for i in 0..b.batch {
            let w = b.weight(i);
            self.total += w * (self.f)(b, i);
            self.count += w;
        }
    }
    fn result(&self) -> f64 {
        if self.count == 0.0 { 0.0 } else { self.total / self.count }
    }
}

fn mean_over_outputs<T: Scalar>(
    b: &MetricBatch<'_, T>,
    i: usize,
    f: impl Fn(f64, f64) -> f64,
) -> f64 {
    let row = b.row(i);
    let s: f64 = (0..b.width).map(|k| f(row[k].as_f64(), b.target(i, k))).sum();
    s / b.width as f64
}

/// Fraction of outputs on the right side of `threshold` (Keras `BinaryAccuracy`).
pub fn binary_accuracy<T: Scalar>(name: &str, threshold: f64) -> Box<dyn Metric<T>> {
    // Keras makes the threshold a float32 constant whatever the model's dtype.
    let threshold = f64::from(threshold as f32);
    Box::new(MeanOf::new(name, move |b: &MetricBatch<'_, T>, i| {
        mean_over_outputs(b, i, |p, y| f64::from(u8::from(f64::from(u8::from(p > threshold)) == y)))
    }))
}

/// Whether the largest output is the true class (Keras `CategoricalAccuracy` and
/// `SparseCategoricalAccuracy`; the class comes from whichever label type is given).
pub fn categorical_accuracy<T: Scalar>(name: &str) -> Box<dyn Metric<T>> {
    Box::new(MeanOf::new(name, |b: &MetricBatch<'_, T>, i| {
        f64::from(u8::from(argmax(b.row(i)) == b.class(i)))
    }))
}

/// Whether the true class is among the `k` largest outputs (ties count as in, as
/// TensorFlow's `in_top_k`).
pub fn top_k_accuracy<T: Scalar>(name: &str, k: usize) -> Box<dyn Metric<T>> {
    Box::new(MeanOf::new(name, move |b: &MetricBatch<'_, T>, i| {
        let row = b.row(i);
        let c = b.class(i);
        let above = row.iter().filter(|&&v| v > row[c]).count();
        f64::from(u8::from(above < k))
    }))
}

/// Mean squared error as a metric.
pub fn mean_squared_error<T: Scalar>(name: &str) -> Box<dyn Metric<T>> {
    Box::new(MeanOf::new(name, |b: &MetricBatch<'_, T>, i| {
        mean_over_outputs(b, i, |p, y| (p - y) * (p - y))
    }))
}

/// Mean absolute error as a metric.
pub fn mean_absolute_error<T: Scalar>(name: &str) -> Box<dyn Metric<T>> {
    Box::new(MeanOf::new(name, |b: &MetricBatch<'_, T>, i| {
        mean_over_outputs(b, i, |p, y| (p - y).abs())
    }))
}

/// Root of the mean squared error over everything seen (Keras `RootMeanSquaredError`).
pub struct RootMeanSquaredError {
    name: String,
    sum: f64,
    count: f64,
}

impl RootMeanSquaredError {
    /// A fresh metric logged under `name`.
    pub fn new(name: &str) -> Self {
        RootMeanSquaredError { name: name.into(), sum: 0.0, count: 0.0 }
    }
}

impl<T: Scalar> Metric<T> for RootMeanSquaredError {
    fn name(&self) -> &str {
        &self.name
    }
    fn reset(&mut self) {
        self.sum = 0.0;
        self.count = 0.0;
    }
    fn update(&mut self, b: &MetricBatch<'_, T>) {
        for i in 0..b.batch {
            let w = b.weight(i);
            self.sum += w * mean_over_outputs(b, i, |p, y| (p - y) * (p - y));
            self.count += w;
        }
    }
    fn result(&self) -> f64 {
        if self.count == 0.0 { 0.0 } else { (self.sum / self.count).sqrt() }
    }
}

/// Confusion counts at one threshold over every output element (micro-averaged).
#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    tp: f64,
    fp: f64,
    tn: f64,
    fn_: f64,
}

/// Which ratio of the confusion counts a [`ConfusionMetric`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ratio {
    Precision,
    Recall,
    F1,
}

/// Precision, recall or F1 at threshold 0.5 over all output elements.
struct ConfusionMetric {
    name: String,
    threshold: f64,
    ratio: Ratio,
    c: Counts,
}

impl<T: Scalar> Metric<T> for ConfusionMetric {
    fn name(&self) -> &str {
        &self.name
    }
    fn reset(&mut self) {
        self.c = Counts::default();
    }
    fn update(&mut self, b: &MetricBatch<'_, T>) {
        for i in 0..b.batch {
            let w = b.weight(i);
            for k in 0..b.width {
                let pred = b.row(i)[k].as_f64() > self.threshold;
                let truth = b.target(i, k) > 0.5;
                match (pred, truth) {
                    (true, true) => self.c.tp += w,
                    (true, false) => self.c.fp += w,
                    (false, true) => self.c.fn_ += w,
                    (false, false) => self.c.tn += w,
                }
            }
        }
    }
    fn result(&self) -> f64 {
        let div = |a: f64, b: f64| if b == 0.0 { 0.0 } else { a / b };
        let p = div(self.c.tp, self.c.tp + self.c.fp);
        let r = div(self.c.tp, self.c.tp + self.c.fn_);
        match self.ratio {
            Ratio::Precision => p,
            Ratio::Recall => r,
            // Keras's F1Score (beta 1): ε = 1e-7 in each of its three denominators.
            Ratio::F1 => {
                let eps = crate::loss::EPSILON;
                let p = self.c.tp / (self.c.tp + self.c.fp + eps);
                let r = self.c.tp / (self.c.tp + self.c.fn_ + eps);
                p * r / (p + r + eps) * 2.0
            }
        }
    }
}

/// Precision (threshold 0.5) over all output elements.
pub fn precision<T: Scalar>(name: &str) -> Box<dyn Metric<T>> {
    Box::new(ConfusionMetric {
        name: name.into(),
        threshold: 0.5,
        ratio: Ratio::Precision,
        c: Counts::default(),
    })
}

/// Recall (threshold 0.5) over all output elements.
pub fn recall<T: Scalar>(name: &str) -> Box<dyn Metric<T>> {
    Box::new(ConfusionMetric {
        name: name.into(),
        threshold: 0.5,
        ratio: Ratio::Recall,
        c: Counts::default(),
    })
}

/// F1 score (threshold 0.5), micro-averaged over all output elements (Keras
/// `F1Score(average="micro", threshold=0.5)`).
pub fn f1_score<T: Scalar>(name: &str) -> Box<dyn Metric<T>> {
    Box::new(ConfusionMetric {
        name: name.into(),
        threshold: 0.5,
        ratio: Ratio::F1,
        c: Counts::default(),
    })
}

/// Area under the ROC curve from confusion counts at 200 thresholds, as Keras `AUC`.
pub struct Auc {
    name: String,
    thresholds: Vec<f64>,
    counts: Vec<Counts>,
}

impl Auc {
    /// Keras's default: 200 thresholds, ROC curve, interpolated.
    pub fn new(name: &str) -> Self {
        let n = 200;
        let eps = 1e-7;
        let mut thresholds = vec![0.0 - eps];
        thresholds.extend((1..n - 1).map(|i| i as f64 / (n - 1) as f64));
        thresholds.push(1.0 + eps);
        Auc { name: name.into(), counts: vec![Counts::default(); n], thresholds }
    }
}

impl<T: Scalar> Metric<T> for Auc {
    fn name(&self) -> &str {
        &self.name
    }
    fn reset(&mut self) {
        self.counts.iter_mut().for_each(|c| *c = Counts::default());
    }
    fn update(&mut self, b: &MetricBatch<'_, T>) {
        for i in 0..b.batch {
            let w = b.weight(i);
            for k in 0..b.width {
                let p = b.row(i)[k].as_f64();
                let truth = b.target(i, k) > 0.5;
                for (t, c) in self.thresholds.iter().zip(self.counts.iter_mut()) {
                    match (p > *t, truth) {
                        (true, true) => c.tp += w,
                        (true, false) => c.fp += w,
                        (false, true) => c.fn_ += w,
                        (false, false) => c.tn += w,
                    }
                }
            }
        }
    }
    fn result(&self) -> f64 {
        let div = |a: f64, b: f64| if b == 0.0 { 0.0 } else { a / b };
        let tpr: Vec<f64> = self.counts.iter().map(|c| div(c.tp, c.tp + c.fn_)).collect();
        let fpr: Vec<f64> = self.counts.iter().map(|c| div(c.fp, c.fp + c.tn)).collect();
        (0..tpr.len() - 1).map(|i| (fpr[i] - fpr[i + 1]) * (tpr[i] + tpr[i + 1]) / 2.0).sum()
    }
}

/// Coefficient of determination, averaged uniformly over outputs (Keras `R2Score`).
#[derive(Default)]
pub struct R2Score {
    name: String,
    sum: Vec<f64>,
    sum_sq: Vec<f64>,
    res: Vec<f64>,
    count: f64,
}

impl R2Score {
    /// A fresh metric logged under `name`.
    pub fn new(name: &str) -> Self {
        R2Score { name: name.into(), ..Default::default() }
    }
}

impl<T: Scalar> Metric<T> for R2Score {
    fn name(&self) -> &str {
        &self.name
    }
    fn reset(&mut self) {
        self.sum.clear();
        self.sum_sq.clear();
        self.res.clear();
        self.count = 0.0;
    }
    fn update(&mut self, b: &MetricBatch<'_, T>) {
        if self.sum.len() != b.width {
            self.sum = vec![0.0; b.width];
            self.sum_sq = vec![0.0; b.width];
            self.res = vec![0.0; b.width];
        }
        for i in 0..b.batch {
            let w = b.weight(i);
            for k in 0..b.width {
                let y = b.target(i, k);
                let p = b.row(i)[k].as_f64();
                self.sum[k] += w * y;
                self.sum_sq[k] += w * y * y;
                self.res[k] += w * (y - p) * (y - p);
            }
            self.count += w;
        }
    }
    fn result(&self) -> f64 {
        if self.count == 0.0 || self.sum.is_empty() {
            return 0.0;
        }
        let per: f64 = (0..self.sum.len())
            .map(|k| {
                let mean = self.sum[k] / self.count;
                let tot = self.sum_sq[k] - self.sum[k] * mean;
                if tot == 0.0 { 0.0 } else { 1.0 - self.res[k] / tot }
            })
            .sum();
        per / self.sum.len() as f64
    }
}

/// Keras's `"accuracy"`, resolved by Keras's rule once the model's output width is
/// known: binary accuracy (threshold 0.5) for one output, otherwise categorical accuracy,
/// which reads the true class from class indices (Keras's sparse variant) or from the
/// argmax of one-hot targets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Accuracy;

/// The one list of metrics by Keras name: each name group with how it is built for a
/// model of `width` outputs (the log key is the name as given, as in Keras). From it
/// come [`METRIC_NAMES`] and [`metric_by_name`].
macro_rules! metric_registry {
    ($([$($name:literal),+] => |$n:ident, $w:ident| $make:expr;)*) => {
        /// The Keras names [`metric_by_name`] accepts.
        pub const METRIC_NAMES: &[&str] = &[$($($name),+),*];

        /// A metric by its Keras name for a model with `width` outputs.
        #[allow(unused_variables)]
        pub fn metric_by_name<T: Scalar>(name: &str, width: usize) -> Result<Box<dyn Metric<T>>> {
            $(
                if [$($name),+].contains(&name) {
                    let ($n, $w) = (name, width);
                    return Ok($make);
                }
            )*
            Err(unknown_name("metric", name, METRIC_NAMES))
        }
    };
}

metric_registry! {
    ["accuracy", "acc"] => |n, w| if w == 1 { binary_accuracy(n, 0.5) } else { categorical_accuracy(n) };
    ["binary_accuracy"] => |n, w| binary_accuracy(n, 0.5);
    ["categorical_accuracy", "sparse_categorical_accuracy"] => |n, w| categorical_accuracy(n);
    ["top_k_categorical_accuracy", "sparse_top_k_categorical_accuracy"] => |n, w| top_k_accuracy(n, 5);
    ["precision"] => |n, w| precision(n);
    ["recall"] => |n, w| recall(n);
    ["f1_score"] => |n, w| f1_score(n);
    ["auc"] => |n, w| Box::new(Auc::new(n));
    ["mean_squared_error", "mse"] => |n, w| mean_squared_error(n);
    ["root_mean_squared_error", "rmse"] => |n, w| Box::new(RootMeanSquaredError::new(n));
    ["mean_absolute_error", "mae"] => |n, w| mean_absolute_error(n);
    ["r2_score"] => |n, w| Box::new(R2Score::new(n));
}

/// Anything `compile` accepts as a metric: [`Accuracy`], a Keras name, or a boxed metric.
pub trait IntoMetric<T: Scalar> {
    /// Builds the metric for a model with `width` outputs (a name may be unknown).
    fn into_metric(self, width: usize) -> Result<Box<dyn Metric<T>>>;
}

impl<T: Scalar> IntoMetric<T> for Accuracy {
    fn into_metric(self, width: usize) -> Result<Box<dyn Metric<T>>> {
        metric_by_name("accuracy", width)
    }
}
impl<T: Scalar> IntoMetric<T> for &str {
    fn into_metric(self, width: usize) -> Result<Box<dyn Metric<T>>> {
        metric_by_name(self, width)
    }
}
impl<T: Scalar> IntoMetric<T> for Box<dyn Metric<T>> {
    fn into_metric(self, _: usize) -> Result<Box<dyn Metric<T>>> {
        Ok(self)
    }
}

/// A list of metrics for `compile`: an array or a vector of anything [`IntoMetric`], or
/// `()` for none.
pub trait IntoMetrics<T: Scalar> {
    /// Builds every metric for a model with `width` outputs.
    fn into_metrics(self, width: usize) -> Result<Vec<Box<dyn Metric<T>>>>;
}

impl<T: Scalar, M: IntoMetric<T>, const N: usize> IntoMetrics<T> for [M; N] {
    fn into_metrics(self, width: usize) -> Result<Vec<Box<dyn Metric<T>>>> {
        self.into_iter().map(|m| m.into_metric(width)).collect()
    }
}
impl<T: Scalar, M: IntoMetric<T>> IntoMetrics<T> for Vec<M> {
    fn into_metrics(self, width: usize) -> Result<Vec<Box<dyn Metric<T>>>> {
        self.into_iter().map(|m| m.into_metric(width)).collect()
    }
}
impl<T: Scalar> IntoMetrics<T> for () {
    fn into_metrics(self, _: usize) -> Result<Vec<Box<dyn Metric<T>>>> {
        Ok(Vec::new())
    }
}
