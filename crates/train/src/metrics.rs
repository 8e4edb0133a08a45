//! Streaming metrics with Keras's names and definitions; each accumulates over an epoch
//! (or an evaluation) and is reset between them.

use crate::data::Truth;
use crate::error::{Result, unknown_name};
use crate::loss;
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
    /// The log keys the metric writes: its name, or one key per class for a metric that
    /// reports per-class values (F-beta with [`Average::PerClass`]). Read once per fit.
    fn keys(&self) -> Vec<String> {
        vec![self.name().to_string()]
    }
    /// Calls `f` with each log key and its value (allocates nothing: it runs after every
    /// batch).
    fn for_each_value(&self, f: &mut dyn FnMut(&str, f64)) {
        f(self.name(), self.result());
    }
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

/// Confusion counts at one threshold (weighted).
#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    tp: f64,
    fp: f64,
    tn: f64,
    fn_: f64,
}

impl Counts {
    fn add(&mut self, pred: bool, truth: bool, w: f64) {
        match (pred, truth) {
            (true, true) => self.tp += w,
            (true, false) => self.fp += w,
            (false, true) => self.fn_ += w,
            (false, false) => self.tn += w,
        }
    }
}

/// Keras's `divide_no_nan`: 0 where the divisor is 0.
fn div0(a: f64, b: f64) -> f64 {
    if b == 0.0 { 0.0 } else { a / b }
}

/// Keras's `NEG_INF` for the entries `top_k` filters out.
const NEG_INF: f64 = -1e10;

/// What a [`Confusion`] metric reports from its counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfusionValue {
    /// `tp / (tp + fp)` (Keras `Precision`).
    Precision,
    /// `tp / (tp + fn)` (Keras `Recall`).
    Recall,
    /// The weighted count of true positives (Keras `TruePositives`).
    TruePositives,
    /// False positives (Keras `FalsePositives`).
    FalsePositives,
    /// True negatives (Keras `TrueNegatives`).
    TrueNegatives,
    /// False negatives (Keras `FalseNegatives`).
    FalseNegatives,
}

/// Precision, recall or one confusion count at one threshold, as Keras's confusion
/// metrics: an element is predicted positive when it is above `threshold`, and is truly
/// positive when its label is non-zero (soft labels count as positive, as Keras casts
/// them to bool). `top_k` keeps only each row's `k` largest predictions (ties to the
/// lower index, as `top_k`); `class_id` scores one column alone. Elements are counted
/// over all rows and outputs (micro-averaged).
#[derive(Clone, Debug)]
pub struct Confusion {
    name: String,
    value: ConfusionValue,
    /// The decision threshold (Keras's default 0.5; with `top_k` and no threshold, every
    /// kept prediction counts).
    pub threshold: Option<f64>,
    /// Keep only the `k` largest predictions of each row.
    pub top_k: Option<usize>,
    /// Score only this output column.
    pub class_id: Option<usize>,
    c: Counts,
}

impl Confusion {
    /// A metric reporting `value`, logged under `name`, with Keras's defaults.
    pub fn new(name: &str, value: ConfusionValue) -> Self {
        Confusion {
            name: name.into(),
            value,
            threshold: None,
            top_k: None,
            class_id: None,
            c: Counts::default(),
        }
    }
    /// Sets the threshold.
    pub fn threshold(mut self, t: f64) -> Self {
        self.threshold = Some(t);
        self
    }
    /// Keeps only each row's `k` largest predictions.
    pub fn top_k(mut self, k: usize) -> Self {
        self.top_k = Some(k);
        self
    }
    /// Scores one output column.
    pub fn class_id(mut self, c: usize) -> Self {
        self.class_id = Some(c);
        self
    }
}

/// Whether column `k` of `row` is among its `top` largest (ties to the lower index).
fn in_top_k<T: Scalar>(row: &[T], k: usize, top: usize) -> bool {
    let v = row[k];
    let before = row.iter().enumerate().filter(|&(j, &x)| x > v || (x == v && j < k)).count();
    before < top
}

impl<T: Scalar> Metric<T> for Confusion {
    fn name(&self) -> &str {
        &self.name
    }
    fn reset(&mut self) {
        self.c = Counts::default();
    }
    fn update(&mut self, b: &MetricBatch<'_, T>) {
        let threshold = self.threshold.unwrap_or(if self.top_k.is_some() { NEG_INF } else { 0.5 });
        // Keras compares in the metric's dtype.
        let threshold = T::of(threshold).as_f64();
        for i in 0..b.batch {
            let w = b.weight(i);
            let row = b.row(i);
            for k in 0..b.width {
                if self.class_id.is_some_and(|c| c != k) {
                    continue;
                }
                let mut p = row[k].as_f64();
                if let Some(top) = self.top_k
                    && !in_top_k(row, k, top)
                {
                    p = NEG_INF;
                }
                self.c.add(p > threshold, b.target(i, k) != 0.0, w);
            }
        }
    }
    fn result(&self) -> f64 {
        let c = &self.c;
        match self.value {
            ConfusionValue::Precision => div0(c.tp, c.tp + c.fp),
            ConfusionValue::Recall => div0(c.tp, c.tp + c.fn_),
            ConfusionValue::TruePositives => c.tp,
            ConfusionValue::FalsePositives => c.fp,
            ConfusionValue::TrueNegatives => c.tn,
            ConfusionValue::FalseNegatives => c.fn_,
        }
    }
}

/// Precision (threshold 0.5) over all output elements.
pub fn precision<T: Scalar>(name: &str) -> Box<dyn Metric<T>> {
    Box::new(Confusion::new(name, ConfusionValue::Precision))
}

/// Recall (threshold 0.5) over all output elements.
pub fn recall<T: Scalar>(name: &str) -> Box<dyn Metric<T>> {
    Box::new(Confusion::new(name, ConfusionValue::Recall))
}

/// How [`FBetaScore`] combines its per-class scores (Keras's `average`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Average {
    /// One score over all elements' counts.
    #[default]
    Micro,
    /// The mean of the per-class scores.
    Macro,
    /// The per-class scores weighted by each class's (weighted) count of true labels.
    Weighted,
    /// Every class's score on its own (Keras's `average=None`), logged as
    /// `{name}_0`, `{name}_1`, … (a History holds numbers, not arrays).
    PerClass,
}

/// F-beta score (Keras `FBetaScore`; `F1Score` is beta 1): per class (output column)
/// weighted true-positive, false-positive and false-negative sums, the label value used
/// as a fractional count as Keras does, ε = 1e-7 in each of the three denominators.
/// With a `threshold` a prediction above it is positive; without one each row's
/// largest prediction(s) are (Keras's default for F1Score).
#[derive(Clone, Debug)]
pub struct FBetaScore {
    name: String,
    /// The weight of recall against precision.
    pub beta: f64,
    /// How per-class scores combine.
    pub average: Average,
    /// The decision threshold, or `None` for each row's maximum.
    pub threshold: Option<f64>,
    tp: Vec<f64>,
    fp: Vec<f64>,
    fn_: Vec<f64>,
    support: Vec<f64>,
    /// The per-class log keys (with [`Average::PerClass`]), made when the class count is
    /// known.
    keys: Vec<String>,
}

impl FBetaScore {
    /// An F-beta score logged under `name`: micro-averaged, threshold 0.5.
    pub fn new(name: &str, beta: f64) -> Self {
        FBetaScore {
            name: name.into(),
            beta,
            average: Average::Micro,
            threshold: Some(0.5),
            tp: Vec::new(),
            fp: Vec::new(),
            fn_: Vec::new(),
            support: Vec::new(),
            keys: Vec::new(),
        }
    }
    /// Sets the number of classes (output columns); `compile` sets it from the model.
    /// With [`Average::PerClass`] it names the log keys.
    pub fn classes(mut self, n: usize) -> Self {
        self.set_classes(n);
        self
    }
    fn set_classes(&mut self, n: usize) {
        for v in [&mut self.tp, &mut self.fp, &mut self.fn_, &mut self.support] {
            *v = vec![0.0; n];
        }
        self.keys = (0..n).map(|k| format!("{}_{k}", self.name)).collect();
    }
    /// Class `k`'s score.
    fn class_score(&self, k: usize) -> f64 {
        fbeta(self.beta, self.tp[k], self.fp[k], self.fn_[k])
    }
    /// Sets how per-class scores combine.
    pub fn average(mut self, a: Average) -> Self {
        self.average = a;
        self
    }
    /// Sets the threshold (`None`: each row's largest prediction is positive).
    pub fn threshold(mut self, t: Option<f64>) -> Self {
        self.threshold = t;
        self
    }
}

impl<T: Scalar> Metric<T> for FBetaScore {
    fn name(&self) -> &str {
        &self.name
    }
    fn reset(&mut self) {
        for v in [&mut self.tp, &mut self.fp, &mut self.fn_, &mut self.support] {
            v.iter_mut().for_each(|x| *x = 0.0);
        }
    }
    fn update(&mut self, b: &MetricBatch<'_, T>) {
        if self.tp.len() != b.width {
            self.set_classes(b.width);
        }
        let threshold = self.threshold.map(|t| T::of(t).as_f64());
        for i in 0..b.batch {
            let w = b.weight(i);
            let row = b.row(i);
            let max = row.iter().fold(f64::NEG_INFINITY, |m, v| m.max(v.as_f64()));
            for (k, p) in row.iter().enumerate() {
                let p = p.as_f64();
                let pred = match threshold {
                    Some(t) => p > t,
                    None => p >= max && p.abs() > 1e-9,
                };
                let pred = f64::from(u8::from(pred));
                let y = b.target(i, k);
                self.tp[k] += w * pred * y;
                self.fp[k] += w * pred * (1.0 - y);
                self.fn_[k] += w * (1.0 - pred) * y;
                self.support[k] += w * y;
            }
        }
    }
    fn result(&self) -> f64 {
        let eps = crate::loss::EPSILON;
        let sum = |v: &[f64]| v.iter().sum::<f64>();
        let classes = self.tp.len();
        match self.average {
            Average::Micro => fbeta(self.beta, sum(&self.tp), sum(&self.fp), sum(&self.fn_)),
            // Per class, the value under the metric's own name is the macro mean.
            Average::Macro | Average::PerClass => {
                (0..classes).map(|k| self.class_score(k)).sum::<f64>() / classes.max(1) as f64
            }
            Average::Weighted => {
                let total = sum(&self.support) + eps;
                (0..classes).map(|k| self.class_score(k) * (self.support[k] / total)).sum()
            }
        }
    }
    fn keys(&self) -> Vec<String> {
        if self.average == Average::PerClass { self.keys.clone() } else { vec![self.name.clone()] }
    }
    fn for_each_value(&self, f: &mut dyn FnMut(&str, f64)) {
        if self.average == Average::PerClass {
            for (k, key) in self.keys.iter().enumerate() {
                f(key, if k < self.tp.len() { self.class_score(k) } else { 0.0 });
            }
        } else {
            f(&self.name, Metric::<T>::result(self));
        }
    }
}

/// F-beta from weighted counts with Keras's ε = 1e-7 in each of its three denominators.
fn fbeta(beta: f64, tp: f64, fp: f64, fn_: f64) -> f64 {
    let eps = crate::loss::EPSILON;
    let b2 = beta * beta;
    let p = tp / (tp + fp + eps);
    let r = tp / (tp + fn_ + eps);
    p * r / (b2 * p + r + eps) * (1.0 + b2)
}

/// F1 score (threshold 0.5), micro-averaged over all output elements (Keras
/// `F1Score(average="micro", threshold=0.5)`).
pub fn f1_score<T: Scalar>(name: &str) -> Box<dyn Metric<T>> {
    Box::new(FBetaScore::new(name, 1.0))
}

/// Which curve [`Auc`] integrates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Curve {
    /// True-positive rate against false-positive rate.
    #[default]
    Roc,
    /// Precision against recall.
    Pr,
}

/// How [`Auc`] sums the area between thresholds (Keras's `summation_method`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Summation {
    /// Trapezoids (for PR, Davis & Goadrich's interpolation).
    #[default]
    Interpolation,
    /// Rectangles under the lower end.
    Minoring,
    /// Rectangles under the higher end.
    Majoring,
}

/// Weighted positives and negatives per bucket of evenly spaced thresholds, as Keras's
/// optimized confusion-matrix update: a prediction clipped into [0, 1] falls in bucket
/// `⌈p·(n − 1)⌉ − 1`, computed in the model's dtype. `with_epsilon` (AUC's thresholds
/// −ε and 1 + ε at the ends) moves bucket −1 to 0; without it (thresholds 0 and 1) a
/// prediction of 0 is above no threshold and only counts in the totals.
#[derive(Clone, Debug, Default)]
struct Buckets {
    pos: Vec<f64>,
    neg: Vec<f64>,
    total_pos: f64,
    total_neg: f64,
}

impl Buckets {
    fn new(n: usize) -> Self {
        Buckets { pos: vec![0.0; n], neg: vec![0.0; n], total_pos: 0.0, total_neg: 0.0 }
    }
    fn reset(&mut self) {
        self.pos.iter_mut().chain(self.neg.iter_mut()).for_each(|x| *x = 0.0);
        self.total_pos = 0.0;
        self.total_neg = 0.0;
    }
    fn add<T: Scalar>(&mut self, p: T, positive: bool, w: f64, with_epsilon: bool) {
        let n = self.pos.len();
        let p = p.max(T::zero()).min(T::one());
        let b = ((p * (T::of(n as f64) - T::one())).ceil() - T::one()).as_f64();
        let b = if with_epsilon { b.max(0.0) } else { b };
        let slot = if b >= 0.0 { Some((b as usize).min(n - 1)) } else { None };
        let (buckets, total) = if positive {
            (&mut self.pos, &mut self.total_pos)
        } else {
            (&mut self.neg, &mut self.total_neg)
        };
        *total += w;
        if let Some(i) = slot {
            buckets[i] += w;
        }
    }
    /// Calls `f(i, [tp, fp, tn, fn])` for each threshold `i` from the highest down (at
    /// threshold i everything in bucket i or above is predicted positive); allocates
    /// nothing, so a metric's result can be read after every batch.
    fn each_threshold_down(&self, mut f: impl FnMut(usize, [f64; 4])) {
        let (mut tp, mut fp) = (0.0, 0.0);
        for i in (0..self.pos.len()).rev() {
            tp += self.pos[i];
            fp += self.neg[i];
            f(i, [tp, fp, self.total_neg - fp, self.total_pos - tp]);
        }
    }
}

/// Area under the ROC or PR curve from weighted confusion counts at evenly spaced
/// thresholds, as Keras `AUC`: predictions are clipped into [0, 1] (after a sigmoid with
/// `from_logits`), each falls in bucket `max(⌈p·(n − 1)⌉ − 1, 0)` computed in the
/// model's dtype, and labels are positive when non-zero.
#[derive(Clone, Debug)]
pub struct Auc {
    name: String,
    /// Thresholds (Keras's default 200).
    pub num_thresholds: usize,
    /// Which curve.
    pub curve: Curve,
    /// How areas are summed.
    pub summation: Summation,
    /// Apply a sigmoid to the predictions first.
    pub from_logits: bool,
    /// One curve per output column, their AUCs averaged (otherwise every element is
    /// one point of one curve).
    pub multi_label: bool,
    /// Per label (one label unless `multi_label`).
    labels: Vec<Buckets>,
}

impl Auc {
    /// Keras's default: 200 thresholds, ROC curve, interpolated.
    pub fn new(name: &str) -> Self {
        Auc {
            name: name.into(),
            num_thresholds: 200,
            curve: Curve::Roc,
            summation: Summation::Interpolation,
            from_logits: false,
            multi_label: false,
            labels: Vec::new(),
        }
    }
    /// Sets the number of thresholds (at least 2).
    pub fn num_thresholds(mut self, n: usize) -> Self {
        self.num_thresholds = n.max(2);
        self
    }
    /// Sets the curve.
    pub fn curve(mut self, c: Curve) -> Self {
        self.curve = c;
        self
    }
    /// Sets the summation method.
    pub fn summation(mut self, s: Summation) -> Self {
        self.summation = s;
        self
    }
    /// Treats the predictions as logits.
    pub fn from_logits(mut self, on: bool) -> Self {
        self.from_logits = on;
        self
    }
    /// One curve per output column.
    pub fn multi_label(mut self, on: bool) -> Self {
        self.multi_label = on;
        self
    }

    /// The AUC of one label's bucket counts, summed over adjacent thresholds (i, i + 1)
    /// from the top down.
    fn area(&self, buckets: &Buckets) -> f64 {
        let mut above: Option<[f64; 4]> = None;
        let mut auc = 0.0;
        let pr_interpolated = self.curve == Curve::Pr && self.summation == Summation::Interpolation;
        buckets.each_threshold_down(|_, c| {
            if let Some(hi) = above {
                auc += if pr_interpolated { pr_piece(c, hi) } else { self.piece(c, hi) };
            }
            above = Some(c);
        });
        auc
    }

    /// The area between threshold i (counts `lo`) and i + 1 (`hi`) on the ROC or PR curve.
    fn piece(&self, lo: [f64; 4], hi: [f64; 4]) -> f64 {
        let point = |[tp, fp, tn, fn_]: [f64; 4]| {
            let recall = div0(tp, tp + fn_);
            match self.curve {
                Curve::Roc => (div0(fp, fp + tn), recall),
                Curve::Pr => (recall, div0(tp, tp + fp)),
            }
        };
        let ((x0, y0), (x1, y1)) = (point(lo), point(hi));
        let h = match self.summation {
            Summation::Interpolation => (y0 + y1) / 2.0,
            Summation::Minoring => y0.min(y1),
            Summation::Majoring => y0.max(y1),
        };
        (x0 - x1) * h
    }
}

/// Davis & Goadrich's interpolated precision-recall area between thresholds i (`lo`) and
/// i + 1 (`hi`), as Keras's `interpolate_pr_auc`.
fn pr_piece(lo: [f64; 4], hi: [f64; 4]) -> f64 {
    let ([tp0, fp0, _, _], [tp1, fp1, _, fn1]) = (lo, hi);
    let dtp = tp0 - tp1;
    let (p0, p1) = (tp0 + fp0, tp1 + fp1);
    let slope = div0(dtp, (p0 - p1).max(0.0));
    let intercept = tp1 - slope * p1;
    let ratio = if p0 > 0.0 && p1 > 0.0 { div0(p0, p1.max(0.0)) } else { 1.0 };
    div0(slope * (dtp + intercept * ratio.ln()), (tp1 + fn1).max(0.0))
}

impl<T: Scalar> Metric<T> for Auc {
    fn name(&self) -> &str {
        &self.name
    }
    fn reset(&mut self) {
        self.labels.iter_mut().for_each(Buckets::reset);
    }
    fn update(&mut self, b: &MetricBatch<'_, T>) {
        let labels = if self.multi_label { b.width } else { 1 };
        if self.labels.len() != labels {
            self.labels = vec![Buckets::new(self.num_thresholds); labels];
        }
        for i in 0..b.batch {
            let w = b.weight(i);
            for k in 0..b.width {
                let mut p = b.row(i)[k];
                if self.from_logits {
                    p = kiln_tape::kernels::sigmoid(p);
                }
                let l = if self.multi_label { k } else { 0 };
                self.labels[l].add(p, b.target(i, k) != 0.0, w, true);
            }
        }
    }
    fn result(&self) -> f64 {
        if self.labels.is_empty() {
            return 0.0;
        }
        self.labels.iter().map(|l| self.area(l)).sum::<f64>() / self.labels.len() as f64
    }
}

/// Which constrained rate an [`AtConstraint`] metric reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Constrained {
    /// The best precision among thresholds whose recall is ≥ the target (Keras
    /// `PrecisionAtRecall`).
    PrecisionAtRecall,
    /// The best recall where precision ≥ the target (`RecallAtPrecision`).
    RecallAtPrecision,
    /// The best sensitivity (recall) where specificity ≥ the target
    /// (`SensitivityAtSpecificity`).
    SensitivityAtSpecificity,
    /// The best specificity where sensitivity ≥ the target (`SpecificityAtSensitivity`).
    SpecificityAtSensitivity,
}

/// The best value of one rate among the thresholds where another rate reaches a target,
/// as Keras's `PrecisionAtRecall`, `RecallAtPrecision`, `SensitivityAtSpecificity` and
/// `SpecificityAtSensitivity`: `num_thresholds` evenly spaced thresholds from 0 to 1
/// (a prediction is positive above one), labels positive when non-zero, optionally one
/// output column (`class_id`); 0 when no threshold reaches the target. The target is
/// compared as a float32 constant, as Keras does.
#[derive(Clone, Debug)]
pub struct AtConstraint {
    name: String,
    kind: Constrained,
    /// The rate the constrained side must reach, in [0, 1].
    pub target: f64,
    /// Score only this output column.
    pub class_id: Option<usize>,
    /// One bucket per threshold (Keras's default 200; set by `num_thresholds`).
    buckets: Buckets,
}

impl AtConstraint {
    /// `kind` at `target`, logged under `name`, with Keras's 200 thresholds.
    pub fn new(name: &str, kind: Constrained, target: f64) -> Self {
        AtConstraint { name: name.into(), kind, target, class_id: None, buckets: Buckets::new(200) }
    }
    /// Sets the number of thresholds (at least 2).
    pub fn num_thresholds(mut self, n: usize) -> Self {
        self.buckets = Buckets::new(n.max(2));
        self
    }
    /// Scores one output column.
    pub fn class_id(mut self, c: usize) -> Self {
        self.class_id = Some(c);
        self
    }
}

impl<T: Scalar> Metric<T> for AtConstraint {
    fn name(&self) -> &str {
        &self.name
    }
    fn reset(&mut self) {
        self.buckets.reset();
    }
    fn update(&mut self, b: &MetricBatch<'_, T>) {
        for i in 0..b.batch {
            let w = b.weight(i);
            for k in 0..b.width {
                if self.class_id.is_some_and(|c| c != k) {
                    continue;
                }
                self.buckets.add(b.row(i)[k], b.target(i, k) != 0.0, w, false);
            }
        }
    }
    fn result(&self) -> f64 {
        // Keras compares against the target as a float32 constant, whatever the dtype.
        let target = f64::from(self.target as f32);
        let mut best = 0.0f64;
        self.buckets.each_threshold_down(|_, [tp, fp, tn, fn_]| {
            let (recall, precision, specificity) =
                (div0(tp, tp + fn_), div0(tp, tp + fp), div0(tn, tn + fp));
            let (constrained, dependent) = match self.kind {
                Constrained::PrecisionAtRecall => (recall, precision),
                Constrained::RecallAtPrecision => (precision, recall),
                Constrained::SensitivityAtSpecificity => (specificity, recall),
                Constrained::SpecificityAtSensitivity => (recall, specificity),
            };
            if constrained >= target {
                best = best.max(dependent);
            }
        });
        best
    }
}

/// How an [`IoU`] metric reads labels and predictions.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum IouInput {
    /// Predictions are scores per class (their argmax is the class); labels are class
    /// indices or one-hot (their argmax). Keras's `MeanIoU(sparse_y_pred=False)`,
    /// `OneHotIoU`, `OneHotMeanIoU`.
    Argmax,
    /// One output per element: class 1 where it is ≥ the threshold, labels 0/1 (Keras
    /// `BinaryIoU`).
    Binary {
        /// The threshold.
        threshold: f64,
    },
}

/// Intersection over union per class from a weighted confusion matrix, averaged over
/// `target_class_ids` (Keras `IoU`, `MeanIoU`, `BinaryIoU`, `OneHotIoU`,
/// `OneHotMeanIoU`): `tp / (tp + fp + fn)`, classes that never occur left out of the
/// mean. As Keras, the ratios are formed in float32 with ε = 1e-7; unlike Keras (whose
/// confusion matrix is integer by default and truncates fractional weights), sample
/// weights count as they are.
#[derive(Clone, Debug)]
pub struct IoU {
    name: String,
    /// Classes of the confusion matrix.
    pub num_classes: usize,
    /// The classes averaged.
    pub target_class_ids: Vec<usize>,
    /// How inputs are read.
    pub input: IouInput,
    cm: Vec<f64>,
}

impl IoU {
    /// IoU of `target_class_ids` among `num_classes`, predictions by argmax.
    pub fn new(name: &str, num_classes: usize, target_class_ids: &[usize]) -> Self {
        IoU {
            name: name.into(),
            num_classes,
            target_class_ids: target_class_ids.to_vec(),
            input: IouInput::Argmax,
            cm: vec![0.0; num_classes * num_classes],
        }
    }
    /// The mean IoU over all `num_classes` classes (Keras `MeanIoU`).
    pub fn mean(name: &str, num_classes: usize) -> Self {
        IoU::new(name, num_classes, &(0..num_classes).collect::<Vec<_>>())
    }
    /// IoU of binary outputs thresholded at `threshold` (Keras `BinaryIoU`; its default
    /// targets are classes 0 and 1 at threshold 0.5).
    pub fn binary(name: &str, target_class_ids: &[usize], threshold: f64) -> Self {
        IoU { input: IouInput::Binary { threshold }, ..IoU::new(name, 2, target_class_ids) }
    }
}

impl<T: Scalar> Metric<T> for IoU {
    fn name(&self) -> &str {
        &self.name
    }
    fn reset(&mut self) {
        self.cm.iter_mut().for_each(|x| *x = 0.0);
    }
    fn update(&mut self, b: &MetricBatch<'_, T>) {
        let n = self.num_classes;
        let mut add = |t: usize, p: usize, w: f64| {
            // Out-of-range classes never reach the matrix, as in Keras.
            if t < n && p < n {
                self.cm[t * n + p] += w;
            }
        };
        for i in 0..b.batch {
            let w = b.weight(i);
            match self.input {
                IouInput::Argmax => add(b.class(i), argmax(b.row(i)), w),
                IouInput::Binary { threshold } => {
                    let t = threshold as f32;
                    for k in 0..b.width {
                        // Keras compares in float32 whatever the model's dtype.
                        let p = usize::from((b.row(i)[k].as_f64() as f32) >= t);
                        add(b.target(i, k).trunc() as usize, p, w);
                    }
                }
            }
        }
    }
    fn result(&self) -> f64 {
        let n = self.num_classes;
        let eps = 1e-7f32;
        let (mut sum, mut valid) = (0f32, 0f32);
        for &c in &self.target_class_ids {
            if c >= n {
                continue;
            }
            let row: f64 = (0..n).map(|j| self.cm[c * n + j]).sum();
            let col: f64 = (0..n).map(|j| self.cm[j * n + c]).sum();
            let tp = self.cm[c * n + c];
            let den = (row + col - tp) as f32;
            if den > 1e-9 {
                valid += 1.0;
                sum += tp as f32 / (den + eps);
            }
        }
        f64::from(sum / (valid + eps))
    }
}

/// A running weighted mean of values (Keras `metrics.Mean`), for custom loops: not a
/// compile metric (Keras's `Mean` has no `y_true`/`y_pred` either).
#[derive(Clone, Debug, Default)]
pub struct Mean {
    total: f64,
    count: f64,
}

impl Mean {
    /// Adds `values`, each with its weight (1 when `weights` is `None`).
    pub fn update_state(&mut self, values: &[f64], weights: Option<&[f64]>) {
        for (i, v) in values.iter().enumerate() {
            let w = weights.map_or(1.0, |w| w[i]);
            self.total += v * w;
            self.count += w;
        }
    }
    /// The weighted mean so far (0 before any weight).
    pub fn result(&self) -> f64 {
        div0(self.total, self.count)
    }
    /// Forgets everything added.
    pub fn reset_state(&mut self) {
        *self = Mean::default();
    }
}

/// A running weighted sum of values (Keras `metrics.Sum`), for custom loops.
#[derive(Clone, Debug, Default)]
pub struct Sum {
    total: f64,
}

impl Sum {
    /// Adds `values`, each times its weight (1 when `weights` is `None`).
    pub fn update_state(&mut self, values: &[f64], weights: Option<&[f64]>) {
        for (i, v) in values.iter().enumerate() {
            self.total += v * weights.map_or(1.0, |w| w[i]);
        }
    }
    /// The sum so far.
    pub fn result(&self) -> f64 {
        self.total
    }
    /// Forgets everything added.
    pub fn reset_state(&mut self) {
        self.total = 0.0;
    }
}

/// Keras's loss-style metrics (`BinaryCrossentropy`, `KLDivergence`, `Hinge`, …): the
/// weighted mean of a loss's per-row values over everything seen (`sign` −1 turns the
/// cosine-similarity loss into Keras's cosine-similarity metric).
pub struct LossMetric<T: Scalar> {
    name: String,
    loss: Box<dyn crate::loss::Loss<T>>,
    sign: f64,
    total: f64,
    count: f64,
    rows: Vec<T>,
    error: Option<String>,
}

impl<T: Scalar> LossMetric<T> {
    /// The mean of `loss` per row, logged under `name`.
    pub fn new(name: &str, loss: impl crate::loss::Loss<T> + 'static) -> Self {
        LossMetric {
            name: name.into(),
            loss: Box::new(loss),
            sign: 1.0,
            total: 0.0,
            count: 0.0,
            rows: Vec::new(),
            error: None,
        }
    }
    /// The mean of minus the loss (Keras's `CosineSimilarity` metric is +cos).
    pub fn negated(mut self) -> Self {
        self.sign = -self.sign;
        self
    }
}

impl<T: Scalar> Metric<T> for LossMetric<T> {
    fn name(&self) -> &str {
        &self.name
    }
    fn reset(&mut self) {
        self.total = 0.0;
        self.count = 0.0;
    }
    fn update(&mut self, b: &MetricBatch<'_, T>) {
        if self.rows.len() < b.batch {
            self.rows.resize(b.batch, T::zero());
        }
        let lb = crate::loss::LossBatch {
            outputs: b.outputs,
            logits: None,
            activation: crate::model::OutputActivation::Linear,
            truth: b.truth,
            batch: b.batch,
            width: b.width,
        };
        // The metrics' losses are the built-in ones, checked against the model at compile.
        // An error is a label type the loss cannot read: the metric shows NaN (and says
        // why through `LossMetric::error`) rather than a made-up value.
        if let Err(e) = self.loss.compute(&lb, &mut self.rows[..b.batch], None) {
            self.error = Some(e.to_string());
            return;
        }
        for i in 0..b.batch {
            let w = b.weight(i);
            self.total += w * self.sign * self.rows[i].as_f64();
            self.count += w;
        }
    }
    fn result(&self) -> f64 {
        if self.error.is_some() { f64::NAN } else { div0(self.total, self.count) }
    }
}

impl<T: Scalar> LossMetric<T> {
    /// Why the metric could not be computed, if it could not (NaN is its result then).
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }
}

/// How [`R2Score`] combines its per-output scores (Keras's `class_aggregation`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum R2Aggregation {
    /// The plain mean.
    #[default]
    UniformAverage,
    /// Weighted by each output's total sum of squares.
    VarianceWeightedAverage,
}

/// Coefficient of determination per output column, combined by `aggregation` (Keras
/// `R2Score`). As Keras: a column whose targets are constant scores 0 when the
/// predictions miss and NaN (0/0) when they are exact.
#[derive(Default)]
pub struct R2Score {
    name: String,
    /// How per-output scores combine.
    pub aggregation: R2Aggregation,
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
    /// Sets how per-output scores combine.
    pub fn aggregation(mut self, a: R2Aggregation) -> Self {
        self.aggregation = a;
        self
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
        let (mut sum, mut weighted, mut weights) = (0.0, 0.0, 0.0);
        for k in 0..self.sum.len() {
            let mean = self.sum[k] / self.count;
            let tot = self.sum_sq[k] - self.sum[k] * mean;
            let raw = 1.0 - self.res[k] / tot;
            let raw = if raw.is_infinite() { 0.0 } else { raw };
            sum += raw;
            weighted += tot * raw;
            weights += tot;
        }
        match self.aggregation {
            R2Aggregation::UniformAverage => sum / self.sum.len() as f64,
            R2Aggregation::VarianceWeightedAverage => weighted / weights,
        }
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
    ["true_positives"] => |n, w| Box::new(Confusion::new(n, ConfusionValue::TruePositives));
    ["false_positives"] => |n, w| Box::new(Confusion::new(n, ConfusionValue::FalsePositives));
    ["true_negatives"] => |n, w| Box::new(Confusion::new(n, ConfusionValue::TrueNegatives));
    ["false_negatives"] => |n, w| Box::new(Confusion::new(n, ConfusionValue::FalseNegatives));
    ["binary_crossentropy"] => |n, w| Box::new(LossMetric::new(n, loss::BinaryCrossentropy::default()));
    ["categorical_crossentropy"] => |n, w| Box::new(LossMetric::new(n, loss::CategoricalCrossentropy::default()));
    ["sparse_categorical_crossentropy"] => |n, w| Box::new(LossMetric::new(n, loss::SparseCategoricalCrossentropy::default()));
    ["kl_divergence", "kld"] => |n, w| Box::new(LossMetric::new(n, loss::KLDivergence::default()));
    ["poisson"] => |n, w| Box::new(LossMetric::new(n, loss::Poisson::default()));
    ["hinge"] => |n, w| Box::new(LossMetric::new(n, loss::Hinge::default()));
    ["squared_hinge"] => |n, w| Box::new(LossMetric::new(n, loss::SquaredHinge::default()));
    ["categorical_hinge"] => |n, w| Box::new(LossMetric::new(n, loss::CategoricalHinge::default()));
    ["log_cosh_error", "logcosh"] => |n, w| Box::new(LossMetric::new(n, loss::LogCosh::default()));
    ["mean_absolute_percentage_error", "mape"] => |n, w| Box::new(LossMetric::new(n, loss::MeanAbsolutePercentageError::default()));
    ["mean_squared_logarithmic_error", "msle"] => |n, w| Box::new(LossMetric::new(n, loss::MeanSquaredLogarithmicError::default()));
    ["cosine_similarity"] => |n, w| Box::new(LossMetric::new(n, loss::CosineSimilarity::default()).negated());
}

/// Anything `compile` accepts as a metric: [`Accuracy`], a Keras name, or a boxed metric.
pub trait IntoMetric<T: Scalar> {
    /// Builds the metric for a model with `width` outputs (a name may be unknown).
    fn into_metric(self, width: usize) -> Result<Box<dyn Metric<T>>>;
}

impl<T: crate::Dtype> IntoMetric<T> for Accuracy {
    fn into_metric(self, width: usize) -> Result<Box<dyn Metric<T>>> {
        T::metric_by_name("accuracy", width)
    }
}
impl<T: crate::Dtype> IntoMetric<T> for &str {
    fn into_metric(self, width: usize) -> Result<Box<dyn Metric<T>>> {
        T::metric_by_name(self, width)
    }
}
/// Typed metrics go to `compile` as they are (`[Auc::new("auc").curve(Curve::Pr)]`); a
/// list mixing kinds boxes them (`vec![Box::new(a) as Box<dyn Metric<f32>>, ..]`).
macro_rules! typed_metrics {
    ($($t:ty),*) => {$(
        impl<T: Scalar> IntoMetric<T> for $t {
            fn into_metric(self, _: usize) -> Result<Box<dyn Metric<T>>> {
                Ok(Box::new(self))
            }
        }
    )*};
}
typed_metrics!(Confusion, Auc, AtConstraint, IoU, R2Score, RootMeanSquaredError);

impl<T: Scalar> IntoMetric<T> for FBetaScore {
    fn into_metric(self, width: usize) -> Result<Box<dyn Metric<T>>> {
        Ok(Box::new(self.classes(width)))
    }
}

impl<T: Scalar> IntoMetric<T> for LossMetric<T> {
    fn into_metric(self, _: usize) -> Result<Box<dyn Metric<T>>> {
        Ok(Box::new(self))
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
