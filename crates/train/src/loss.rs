//! Losses with Keras's names, defaults and formulas.
//!
//! A loss writes each sample's loss and the gradient of that loss with respect to the
//! model's outputs, or to its logits when the model ends in softmax/sigmoid and the
//! loss is the matching crossentropy: then the stable fused form (`p − y`, log-sum-exp)
//! is used, as Keras's TensorFlow backend does. [`reduce_with`] applies the reduction and
//! sample weights, so no loss repeats that logic.

use crate::data::{ClassLabels, Targets, Truth};
use crate::error::{Result, TrainError, unknown_name};
use crate::model::OutputActivation;
use crate::shape::{Dyn, S1, S2, S3, Shape};
use kiln_tape::kernels::{sigmoid, softmax};
use kiln_tape::{Scalar, Tape, Tensor, Var};

/// Keras's fuzz factor (`keras.config.epsilon()`), used to clip probabilities.
pub const EPSILON: f64 = 1e-7;

/// How per-row losses become the batch loss (Keras's `reduction`). A row is a sample,
/// or one position of a sample whose output has more than one axis: as in Keras, a loss
/// reduces along the last output axis only.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reduction {
    /// Σ wᵢ·Lᵢ / rows (Keras's default `"sum_over_batch_size"`); rows a loss ignores
    /// (`ignore_class`) do not count.
    #[default]
    SumOverBatchSize,
    /// Σ wᵢ·Lᵢ (`"sum"`).
    Sum,
    /// Σ wᵢ·Lᵢ / Σ wᵢ (`"mean_with_sample_weight"`): a weighted mean; without sample
    /// weights the same as [`Reduction::SumOverBatchSize`]. 0 when every weight is 0.
    MeanWithSampleWeight,
    /// The weighted per-row losses themselves (`"none"`, Keras's `None`), for custom
    /// loops that reduce them their own way ([`LossBatch`] holds them after
    /// [`Loss::compute`]). `fit` trains on their mean over all rows, as Keras's compile
    /// reduces a loss that returns them.
    None,
}

impl Reduction {
    /// The reduction of a Keras name (`"sum_over_batch_size"`, `"sum"`,
    /// `"mean_with_sample_weight"`, `"none"`; `"mean"` is Keras's alias of the first).
    pub fn by_name(name: &str) -> Result<Self> {
        Ok(match name {
            "sum_over_batch_size" | "mean" | "auto" => Reduction::SumOverBatchSize,
            "sum" => Reduction::Sum,
            "mean_with_sample_weight" => Reduction::MeanWithSampleWeight,
            "none" => Reduction::None,
            _ => {
                return Err(unknown_name(
                    "reduction",
                    name,
                    &["sum_over_batch_size", "sum", "mean_with_sample_weight", "none", "mean"],
                ));
            }
        })
    }
}

/// One batch as a loss sees it.
#[derive(Clone, Copy, Debug)]
pub struct LossBatch<'a, T> {
    /// The model's outputs, `batch × width`.
    pub outputs: &'a [T],
    /// The values before the final softmax/sigmoid, when the model has one.
    pub logits: Option<&'a [T]>,
    /// The model's final activation.
    pub activation: OutputActivation,
    /// The labels.
    pub truth: Truth<'a, T>,
    /// Samples in the batch.
    pub batch: usize,
    /// Outputs per sample.
    pub width: usize,
}

/// What a loss computed besides its values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LossInfo {
    /// The gradient is with respect to the logits rather than the outputs.
    pub wrt_logits: bool,
    /// Samples that count for the mean (fewer than the batch when a class is ignored).
    pub counted: usize,
}

/// A loss function. Implement it for a custom loss, or wrap a forward-only function in
/// [`TapeLoss`] to get the gradient from the tape.
pub trait Loss<T: Scalar>: Send {
    /// The log name (Keras's function name, e.g. `sparse_categorical_crossentropy`).
    fn name(&self) -> &str;
    /// How per-sample losses are combined.
    fn reduction(&self) -> Reduction {
        Reduction::SumOverBatchSize
    }
    /// Checks the loss fits a model with `width` outputs and `activation`, trained on
    /// labels of `label_width` values per sample (`None` for class indices).
    fn check(
        &self,
        activation: OutputActivation,
        width: usize,
        label_width: Option<usize>,
    ) -> Result<()>;
    /// Writes each row's loss into `losses` and, when asked, the gradient of each
    /// row's loss into `grad` (`batch × width`).
    fn compute(
        &self,
        b: &LossBatch<'_, T>,
        losses: &mut [T],
        grad: Option<&mut [T]>,
    ) -> Result<LossInfo>;
    /// Whether the loss leaves row `row` out (its label is `ignore_class`); such rows
    /// count neither in the mean nor in a weighted mean's weights.
    fn ignores(&self, _truth: &Truth<'_, T>, _row: usize) -> bool {
        false
    }
}

/// Reduces per-row `losses` with optional per-row `sample_weight`, scaling the per-row
/// gradient rows in `grad` to match. Returns the batch loss. Rows for which `ignored`
/// holds add nothing and count in no divisor.
///
/// With [`Reduction::None`] the weighted losses are left in `losses` (each multiplied by
/// its weight) and their mean over all rows is returned, as `fit` trains on it.
#[allow(clippy::too_many_arguments)]
pub fn reduce_rows<T: Scalar>(
    reduction: Reduction,
    info: LossInfo,
    losses: &mut [T],
    sample_weight: Option<&[T]>,
    grad: Option<&mut [T]>,
    width: usize,
    ignored: impl Fn(usize) -> bool,
) -> T {
    let n = losses.len();
    let w = |i: usize| sample_weight.map_or(T::one(), |s| s[i]);
    let denom = match reduction {
        Reduction::SumOverBatchSize => T::of(info.counted as f64),
        Reduction::Sum => T::one(),
        Reduction::MeanWithSampleWeight if sample_weight.is_none() => T::of(info.counted as f64),
        Reduction::MeanWithSampleWeight => (0..n).filter(|&i| !ignored(i)).map(w).sum(),
        Reduction::None => T::of(n as f64),
    };
    // Keras's divide_no_nan: a batch with nothing to count has loss 0 and no gradient.
    let scale = if denom == T::zero() { T::zero() } else { T::one() / denom };
    let mut total = T::zero();
    for (i, l) in losses.iter_mut().enumerate() {
        let v = *l * w(i);
        total += v;
        if reduction == Reduction::None {
            *l = v;
        }
    }
    if let Some(grad) = grad {
        for (i, row) in grad.chunks_exact_mut(width.max(1)).enumerate().take(n) {
            let s = w(i) * scale;
            row.iter_mut().for_each(|g| *g *= s);
        }
    }
    if denom == T::zero() { T::zero() } else { total / denom }
}

/// The loss of `y_pred` against `y_true` with the loss's own reduction, as Keras's
/// `loss(y_true, y_pred)` gives it: `y_pred` holds rows of `width` values (the last
/// axis), `y_true` one class index per row or dense targets of `y_pred`'s length. For
/// custom loops and checks; `fit` and `evaluate` call [`Loss::compute`] themselves.
pub fn value<T: Scalar>(
    loss: &dyn Loss<T>,
    y_true: Truth<'_, T>,
    y_pred: &[T],
    width: usize,
) -> Result<T> {
    let rows = y_pred.len().checked_div(width).unwrap_or(0);
    let labels = match y_true {
        Truth::Classes(c) => (c.len() == rows).then_some(None),
        Truth::Dense(d) => (d.len() == y_pred.len()).then_some(Some(width)),
    };
    let Some(label_width) = labels.filter(|_| rows > 0 && rows * width == y_pred.len()) else {
        return Err(TrainError::InvalidArgument {
            name: "loss::value",
            message: format!(
                "{} predictions do not split into rows of {width} matching the labels; give one class index per row or dense targets of the predictions' length",
                y_pred.len()
            ),
        });
    };
    loss.check(OutputActivation::Linear, width, label_width)?;
    let b = LossBatch {
        outputs: y_pred,
        logits: None,
        activation: OutputActivation::Linear,
        truth: y_true,
        batch: rows,
        width,
    };
    let mut losses = vec![T::zero(); rows];
    let info = loss.compute(&b, &mut losses, None)?;
    Ok(reduce_with(loss, &b, info, &mut losses, None, None))
}

/// [`reduce_rows`] for a loss's own reduction and ignored rows: what `fit` and `evaluate`
/// do with a batch after [`Loss::compute`].
pub fn reduce_with<T: Scalar, L: Loss<T> + ?Sized>(
    loss: &L,
    b: &LossBatch<'_, T>,
    info: LossInfo,
    losses: &mut [T],
    sample_weight: Option<&[T]>,
    grad: Option<&mut [T]>,
) -> T {
    reduce_rows(loss.reduction(), info, losses, sample_weight, grad, b.width, |i| {
        loss.ignores(&b.truth, i)
    })
}

fn incompatible(msg: String) -> Result<()> {
    Err(TrainError::Incompatible(msg))
}

/// The dense target value of sample `i`, output `k`: dense targets as they are; class
/// indices one-hot (or the label itself for a single output).
#[inline]
fn target<T: Scalar>(truth: &Truth<'_, T>, i: usize, k: usize, width: usize) -> T {
    match truth {
        Truth::Dense(d) => d[i * width + k],
        Truth::Classes(c) if width == 1 => T::of(c[i] as f64),
        Truth::Classes(c) => {
            if c[i] == k {
                T::one()
            } else {
                T::zero()
            }
        }
    }
}

fn check_dense(
    name: &str,
    width: usize,
    label_width: Option<usize>,
    allow_classes: bool,
) -> Result<()> {
    match label_width {
        Some(w) if w == width => Ok(()),
        Some(w) => incompatible(format!(
            "{name} needs targets with one value per output ({width}), but they have {w}; match the model's last layer to the targets"
        )),
        None if allow_classes => Ok(()),
        None => incompatible(format!(
            "{name} needs dense targets (Targets) of width {width}, but got class indices; one-hot encode them or use sparse_categorical_crossentropy"
        )),
    }
}

fn check_label_smoothing(ls: f64) -> Result<()> {
    if !(0.0..=1.0).contains(&ls) {
        return Err(TrainError::InvalidArgument {
            name: "label_smoothing",
            message: format!("{ls} is outside [0, 1]"),
        });
    }
    Ok(())
}

fn check_logits(
    name: &str,
    from_logits: bool,
    activation: OutputActivation,
    fused: OutputActivation,
) -> Result<()> {
    if from_logits && activation == fused {
        return incompatible(format!(
            "{name} has from_logits = true but the model already ends in {fused:?}; drop the final activation or use from_logits = false"
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------

/// Crossentropy for integer class labels (Keras `SparseCategoricalCrossentropy`).
///
/// ```
/// use kiln_train::{SparseCategoricalCrossentropy, Truth, loss};
/// let v = loss::value(&SparseCategoricalCrossentropy::default(), Truth::Classes(&[0]), &[0.8, 0.2], 2)?;
/// assert!((v - 0.22314355_f64).abs() < 1e-6, "{v}"); // −ln 0.8
/// # Ok::<(), kiln_train::TrainError>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SparseCategoricalCrossentropy {
    /// The outputs are logits (no softmax in the model).
    pub from_logits: bool,
    /// A label to leave out of the loss (padding, "unknown").
    /// Keras's `ignore_class`: a class index, or a negative label (Keras's usual −1 for
    /// padding) given through [`ClassLabels::from_i64_ignoring`].
    pub ignore_class: Option<i64>,
    /// How per-sample losses combine.
    pub reduction: Reduction,
}

impl SparseCategoricalCrossentropy {
    /// Whether `label` is the ignored class (a negative ignore_class matches the labels
    /// [`ClassLabels::from_i64_ignoring`] stored as [`ClassLabels::IGNORED`]).
    fn ignores_label(&self, label: usize) -> bool {
        match self.ignore_class {
            Some(ic) if ic < 0 => label == ClassLabels::IGNORED,
            Some(ic) => label as i64 == ic,
            None => false,
        }
    }
    /// Treats the model's outputs as logits.
    pub fn from_logits(mut self) -> Self {
        self.from_logits = true;
        self
    }
    /// Leaves samples of this label out of the loss.
    pub fn ignore_class(mut self, class: i64) -> Self {
        self.ignore_class = Some(class);
        self
    }
}

/// Crossentropy of one row of logits against targets `y`: `Σ y_k·(log s − (z_k − m))`
/// with `m = max z` and `s = Σ e^(z − m)` (finite for any finite logits). The shifted
/// logit is used as it is, never `m` added back, so a confident right answer keeps its
/// precision (logits [8, 0, 0], label 0: the loss is `log(1 + 2e⁻⁸)` to the last bit),
/// as TensorFlow's kernel computes it. Writes the fused gradient `softmax(z)·Σy − y`.
/// Needs no scratch memory.
fn softmax_ce_row<T: Scalar>(z: &[T], y: impl Fn(usize) -> T, grad: Option<&mut [T]>) -> T {
    let m = z.iter().copied().fold(T::neg_infinity(), T::max);
    let s: T = z.iter().map(|&v| (v - m).exp()).sum();
    let log_s = s.ln();
    let mut loss = T::zero();
    let mut ysum = T::zero();
    for (k, &v) in z.iter().enumerate() {
        let yk = y(k);
        loss += yk * (log_s - (v - m));
        ysum += yk;
    }
    if let Some(g) = grad {
        for (k, gk) in g.iter_mut().enumerate() {
            *gk = (z[k] - m).exp() / s * ysum - y(k);
        }
    }
    loss
}

/// Sparse crossentropy from probabilities, as Keras 3 on TensorFlow: clip into
/// [ε, 1 − ε], then the log-softmax of the logs, `−log c_y + log Σ c_k` (the row is
/// renormalised after clipping, unlike [`prob_ce_row`]). Writes its exact gradient;
/// the clip passes the gradient on its bounds.
fn sparse_prob_ce_row<T: Scalar>(p: &[T], y: usize, grad: Option<&mut [T]>) -> T {
    let eps = T::of(EPSILON);
    let c = |k: usize| p[k].max(eps).min(T::one() - eps);
    let s: T = (0..p.len()).map(c).sum();
    let loss = s.ln() - c(y).ln();
    if let Some(g) = grad {
        for (k, gk) in g.iter_mut().enumerate() {
            let inside = p[k] >= eps && p[k] <= T::one() - eps;
            let d = T::one() / s - if k == y { T::one() / c(k) } else { T::zero() };
            *gk = if inside { d } else { T::zero() };
        }
    }
    loss
}

impl<T: Scalar> Loss<T> for SparseCategoricalCrossentropy {
    fn name(&self) -> &str {
        "sparse_categorical_crossentropy"
    }
    fn reduction(&self) -> Reduction {
        self.reduction
    }
    fn check(
        &self,
        activation: OutputActivation,
        width: usize,
        label_width: Option<usize>,
    ) -> Result<()> {
        if label_width.is_some() {
            return incompatible(
                "sparse_categorical_crossentropy takes class indices (ClassLabels), but got dense targets; use categorical_crossentropy for one-hot targets".into(),
            );
        }
        if width < 2 {
            return incompatible(format!(
                "sparse_categorical_crossentropy needs one output per class (at least 2), but the model has {width}; use binary_crossentropy with a sigmoid output for two classes"
            ));
        }
        check_logits(
            "sparse_categorical_crossentropy",
            self.from_logits,
            activation,
            OutputActivation::Softmax,
        )
    }
    fn compute(
        &self,
        b: &LossBatch<'_, T>,
        losses: &mut [T],
        mut grad: Option<&mut [T]>,
    ) -> Result<LossInfo> {
        let Truth::Classes(labels) = b.truth else {
            return Err(TrainError::Incompatible(
                "sparse_categorical_crossentropy needs class indices".into(),
            ));
        };
        let w = b.width;
        let fused = self.from_logits || b.activation == OutputActivation::Softmax;
        let src = if fused { b.logits.unwrap_or(b.outputs) } else { b.outputs };
        let mut counted = 0;
        for i in 0..b.batch {
            let row = &src[i * w..(i + 1) * w];
            let g = grad.as_deref_mut().map(|g| &mut g[i * w..(i + 1) * w]);
            if self.ignores_label(labels[i]) {
                losses[i] = T::zero();
                if let Some(g) = g {
                    g.fill(T::zero());
                }
                continue;
            }
            counted += 1;
            let y = labels[i];
            if y >= w {
                return Err(TrainError::Incompatible(format!(
                    "row {i} has label {}, outside the model's {w} classes; an ignored position (ClassLabels::IGNORED) needs ignore_class(-1) on the loss",
                    if y == ClassLabels::IGNORED { "IGNORED".to_string() } else { y.to_string() }
                )));
            }
            losses[i] = if fused {
                softmax_ce_row(row, |k| if k == y { T::one() } else { T::zero() }, g)
            } else {
                sparse_prob_ce_row(row, y, g)
            };
        }
        Ok(LossInfo { wrt_logits: fused && !self.from_logits, counted })
    }
    fn ignores(&self, truth: &Truth<'_, T>, row: usize) -> bool {
        matches!(truth, Truth::Classes(c) if c.get(row).is_some_and(|&l| self.ignores_label(l)))
    }
}

/// Crossentropy from probabilities, as Keras: normalise the row to sum 1, clip into
/// [ε, 1 − ε], then −Σ y·log p. Writes the exact gradient of that expression.
fn prob_ce_row<T: Scalar>(p: &[T], y: impl Fn(usize) -> T, grad: Option<&mut [T]>) -> T {
    let eps = T::of(EPSILON);
    let s: T = p.iter().copied().sum();
    let mut loss = T::zero();
    for (k, &pk) in p.iter().enumerate() {
        loss -= y(k) * (pk / s).max(eps).min(T::one() - eps).ln();
    }
    if let Some(g) = grad {
        // d/dp_j of −Σ_k y_k log(clip(p_k/s)) = (a_j − Σ_k a_k q_k)/s with q = p/s and
        // a_k = −y_k/q_k where q_k is within the clip, its bounds included (0 beyond them).
        let a = |k: usize| {
            let q = p[k] / s;
            if q >= eps && q <= T::one() - eps { -y(k) / q } else { T::zero() }
        };
        let dot: T = (0..p.len()).map(|k| a(k) * p[k] / s).sum();
        for (j, gj) in g.iter_mut().enumerate() {
            *gj = (a(j) - dot) / s;
        }
    }
    loss
}

/// Crossentropy for one-hot (or soft) targets (Keras `CategoricalCrossentropy`).
///
/// ```
/// use kiln_train::{CategoricalCrossentropy, Truth, loss};
/// let v = loss::value(&CategoricalCrossentropy::default(), Truth::Dense(&[0.0, 1.0]), &[0.4, 0.6], 2)?;
/// assert!((v - 0.51082562_f64).abs() < 1e-6, "{v}"); // −ln 0.6
/// # Ok::<(), kiln_train::TrainError>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CategoricalCrossentropy {
    /// The outputs are logits.
    pub from_logits: bool,
    /// Mixes targets with the uniform distribution: `y·(1 − ls) + ls/K`.
    pub label_smoothing: f64,
    /// How per-sample losses combine.
    pub reduction: Reduction,
}

impl CategoricalCrossentropy {
    /// Treats the model's outputs as logits.
    pub fn from_logits(mut self) -> Self {
        self.from_logits = true;
        self
    }
    /// Sets label smoothing.
    pub fn label_smoothing(mut self, ls: f64) -> Self {
        self.label_smoothing = ls;
        self
    }
}

impl<T: Scalar> Loss<T> for CategoricalCrossentropy {
    fn name(&self) -> &str {
        "categorical_crossentropy"
    }
    fn reduction(&self) -> Reduction {
        self.reduction
    }
    fn check(
        &self,
        activation: OutputActivation,
        width: usize,
        label_width: Option<usize>,
    ) -> Result<()> {
        check_label_smoothing(self.label_smoothing)?;
        check_dense("categorical_crossentropy", width, label_width, false)?;
        check_logits(
            "categorical_crossentropy",
            self.from_logits,
            activation,
            OutputActivation::Softmax,
        )
    }
    fn compute(
        &self,
        b: &LossBatch<'_, T>,
        losses: &mut [T],
        mut grad: Option<&mut [T]>,
    ) -> Result<LossInfo> {
        let w = b.width;
        let ls = T::of(self.label_smoothing);
        let k_inv = T::one() / T::of(w as f64);
        let fused = self.from_logits || b.activation == OutputActivation::Softmax;
        let src = if fused { b.logits.unwrap_or(b.outputs) } else { b.outputs };
        for i in 0..b.batch {
            let y = |k| target(&b.truth, i, k, w) * (T::one() - ls) + ls * k_inv;
            let row = &src[i * w..(i + 1) * w];
            let g = grad.as_deref_mut().map(|g| &mut g[i * w..(i + 1) * w]);
            losses[i] = if fused { softmax_ce_row(row, y, g) } else { prob_ce_row(row, y, g) };
        }
        Ok(LossInfo { wrt_logits: fused && !self.from_logits, counted: b.batch })
    }
}

/// Crossentropy of independent binary outputs (Keras `BinaryCrossentropy`), the mean
/// over the last axis.
///
/// ```
/// use kiln_train::{BinaryCrossentropy, Truth, loss};
/// let v = loss::value(&BinaryCrossentropy::default(), Truth::Dense(&[1.0, 0.0]), &[0.9, 0.2], 1)?;
/// assert!((v - 0.16425204_f64).abs() < 1e-6, "{v}"); // mean of −ln 0.9 and −ln 0.8
/// # Ok::<(), kiln_train::TrainError>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BinaryCrossentropy {
    /// The outputs are logits.
    pub from_logits: bool,
    /// Moves targets towards 0.5: `y·(1 − ls) + ls/2`.
    pub label_smoothing: f64,
    /// How per-sample losses combine.
    pub reduction: Reduction,
}

impl BinaryCrossentropy {
    /// Treats the model's outputs as logits.
    pub fn from_logits(mut self) -> Self {
        self.from_logits = true;
        self
    }
    /// Sets label smoothing.
    pub fn label_smoothing(mut self, ls: f64) -> Self {
        self.label_smoothing = ls;
        self
    }
}

impl<T: Scalar> Loss<T> for BinaryCrossentropy {
    fn name(&self) -> &str {
        "binary_crossentropy"
    }
    fn reduction(&self) -> Reduction {
        self.reduction
    }
    fn check(
        &self,
        activation: OutputActivation,
        width: usize,
        label_width: Option<usize>,
    ) -> Result<()> {
        check_label_smoothing(self.label_smoothing)?;
        check_dense("binary_crossentropy", width, label_width, width == 1)?;
        check_logits("binary_crossentropy", self.from_logits, activation, OutputActivation::Sigmoid)
    }
    fn compute(
        &self,
        b: &LossBatch<'_, T>,
        losses: &mut [T],
        mut grad: Option<&mut [T]>,
    ) -> Result<LossInfo> {
        let w = b.width;
        let ls = T::of(self.label_smoothing);
        let half = T::of(0.5);
        let inv_w = T::one() / T::of(w as f64);
        let fused = self.from_logits || b.activation == OutputActivation::Sigmoid;
        let src = if fused { b.logits.unwrap_or(b.outputs) } else { b.outputs };
        let eps = T::of(EPSILON);
        for i in 0..b.batch {
            let mut sum = T::zero();
            for k in 0..w {
                let y = target(&b.truth, i, k, w) * (T::one() - ls) + ls * half;
                let v = src[i * w + k];
                let (l, d) = if fused {
                    // max(z, 0) − z·y + log(1 + e^−|z|), gradient σ(z) − y.
                    (v.max(T::zero()) - v * y + (-v.abs()).exp().ln_1p(), sigmoid(v) - y)
                } else {
                    // Keras 3 on every backend: log(clip(p, ε, 1 − ε)); the clip passes
                    // the gradient on its bounds (as TensorFlow's clip_by_value does).
                    let p = v.max(eps).min(T::one() - eps);
                    let l = -(y * p.ln() + (T::one() - y) * (T::one() - p).ln());
                    let inside = v >= eps && v <= T::one() - eps;
                    let d =
                        if inside { -y / p + (T::one() - y) / (T::one() - p) } else { T::zero() };
                    (l, d)
                };
                sum += l;
                if let Some(g) = grad.as_deref_mut() {
                    g[i * w + k] = d * inv_w;
                }
            }
            losses[i] = sum * inv_w;
        }
        Ok(LossInfo { wrt_logits: fused && !self.from_logits, counted: b.batch })
    }
}

/// Defines a regression-style loss that averages an elementwise function of
/// `(prediction, target)` over the last axis.
macro_rules! elementwise_loss {
    ($(#[$doc:meta])* $name:ident, $keras:literal, |$p:ident, $y:ident $(, binary $bin:ident)?| loss = $l:expr, grad = $d:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq)]
        pub struct $name {
            /// How per-sample losses combine.
            pub reduction: Reduction,
        }

        impl<T: Scalar> Loss<T> for $name {
            fn name(&self) -> &str {
                $keras
            }
            fn reduction(&self) -> Reduction {
                self.reduction
            }
            fn check(&self, _: OutputActivation, width: usize, label_width: Option<usize>) -> Result<()> {
                check_dense($keras, width, label_width, width == 1)
            }
            #[allow(unused_variables)]
            fn compute(&self, b: &LossBatch<'_, T>, losses: &mut [T], mut grad: Option<&mut [T]>) -> Result<LossInfo> {
                let w = b.width;
                let inv_w = T::one() / T::of(w as f64);
                $(let $bin = binary_targets(b);)?
                for i in 0..b.batch {
                    let mut sum = T::zero();
                    for k in 0..w {
                        let $p = b.outputs[i * w + k];
                        let $y = target(&b.truth, i, k, w);
                        sum += $l;
                        if let Some(g) = grad.as_deref_mut() {
                            g[i * w + k] = $d * inv_w;
                        }
                    }
                    losses[i] = sum * inv_w;
                }
                Ok(LossInfo { wrt_logits: false, counted: b.batch })
            }
        }
    };
}

fn sign<T: Scalar>(v: T) -> T {
    if v > T::zero() {
        T::one()
    } else if v < T::zero() {
        -T::one()
    } else {
        T::zero()
    }
}

/// Hinge labels: Keras maps 0/1 targets to −1/+1 when every label of the batch is 0
/// or 1 (`binary`), and leaves them as they are otherwise.
fn pm1<T: Scalar>(y: T, binary: bool) -> T {
    if binary { T::of(2.0) * y - T::one() } else { y }
}

/// Whether every target of the batch is 0 or 1 (Keras's test before mapping hinge
/// labels to ±1).
fn binary_targets<T: Scalar>(b: &LossBatch<'_, T>) -> bool {
    (0..b.batch).all(|i| {
        (0..b.width).all(|k| {
            let y = target(&b.truth, i, k, b.width);
            y == T::zero() || y == T::one()
        })
    })
}

elementwise_loss!(
    /// Mean squared error (`mse`).
    ///
    /// ```
    /// use kiln_train::{MeanSquaredError, Truth, loss};
    /// let v = loss::value(&MeanSquaredError::default(), Truth::Dense(&[1.0, 2.0]), &[1.5, 2.5], 2)?;
    /// assert!((v - 0.25_f64).abs() < 1e-6, "{v}"); // mean of 0.5² and 0.5²
    /// # Ok::<(), kiln_train::TrainError>(())
    /// ```
    MeanSquaredError, "mean_squared_error", |p, y| loss = (p - y) * (p - y), grad = T::of(2.0) * (p - y)
);
elementwise_loss!(
    /// Mean absolute error (`mae`).
    ///
    /// ```
    /// use kiln_train::{MeanAbsoluteError, Truth, loss};
    /// let v = loss::value(&MeanAbsoluteError::default(), Truth::Dense(&[1.0, 2.0]), &[1.5, 1.0], 2)?;
    /// assert!((v - 0.75_f64).abs() < 1e-6, "{v}"); // mean of 0.5 and 1
    /// # Ok::<(), kiln_train::TrainError>(())
    /// ```
    MeanAbsoluteError, "mean_absolute_error", |p, y| loss = (p - y).abs(), grad = sign(p - y)
);
elementwise_loss!(
    /// Mean absolute percentage error (`mape`): `100·|y − p| / max(|y|, ε)`.
    ///
    /// ```
    /// use kiln_train::{MeanAbsolutePercentageError, Truth, loss};
    /// let v = loss::value(&MeanAbsolutePercentageError::default(), Truth::Dense(&[2.0, 4.0]), &[1.0, 5.0], 2)?;
    /// assert!((v - 37.5_f64).abs() < 1e-6, "{v}"); // 100 × mean of 1/2 and 1/4
    /// # Ok::<(), kiln_train::TrainError>(())
    /// ```
    MeanAbsolutePercentageError, "mean_absolute_percentage_error",
    |p, y| loss = T::of(100.0) * (p - y).abs() / y.abs().max(T::of(EPSILON)),
    grad = T::of(100.0) * sign(p - y) / y.abs().max(T::of(EPSILON))
);
/// log 2 as Keras's `log_cosh` subtracts it: computed in float32, then cast to the
/// loss's dtype. In float64 this makes each element 2.1e-9 lower than the exact
/// `log(cosh(x))`; kiln keeps Keras's constant so that float64 training replays Keras
/// to the last bits (the constant offset does not change the gradient).
const KERAS_LN_2: f64 = std::f64::consts::LN_2 as f32 as f64;

elementwise_loss!(
    /// Logarithm of the hyperbolic cosine of the error, computed without overflow, with
    /// Keras's float32 log 2 (so float64 replays Keras to the last bits).
    ///
    /// ```
    /// use kiln_train::{LogCosh, Truth, loss};
    /// let v = loss::value(&LogCosh::default(), Truth::Dense(&[0.0]), &[1.0], 1)?;
    /// assert!((v - 0.43378083_f64).abs() < 1e-6, "{v}"); // ln cosh 1
    /// # Ok::<(), kiln_train::TrainError>(())
    /// ```
    LogCosh, "log_cosh",
    |p, y| loss = { let x = p - y; x.abs() + (T::of(-2.0) * x.abs()).exp().ln_1p() - T::of(KERAS_LN_2) },
    grad = (p - y).tanh()
);
elementwise_loss!(
    /// Mean squared logarithmic error: `(log(max(p, ε) + 1) − log(max(y, ε) + 1))²`.
    ///
    /// ```
    /// use kiln_train::{MeanSquaredLogarithmicError, Truth, loss};
    /// let v = loss::value(&MeanSquaredLogarithmicError::default(), Truth::Dense(&[0.0]), &[std::f64::consts::E - 1.0], 1)?;
    /// assert!((v - 1.0_f64).abs() < 1e-6, "{v}"); // (ln e − ln 1)²
    /// # Ok::<(), kiln_train::TrainError>(())
    /// ```
    MeanSquaredLogarithmicError, "mean_squared_logarithmic_error",
    |p, y| loss = { let eps = T::of(EPSILON); let d = (p.max(eps) + T::one()).ln() - (y.max(eps) + T::one()).ln(); d * d },
    grad = { let eps = T::of(EPSILON); let d = (p.max(eps) + T::one()).ln() - (y.max(eps) + T::one()).ln(); if p >= eps { T::of(2.0) * d / (p + T::one()) } else { T::zero() } }
);
elementwise_loss!(
    /// Poisson loss: `p − y·log(p + ε)`.
    ///
    /// ```
    /// use kiln_train::{Poisson, Truth, loss};
    /// let v = loss::value(&Poisson::default(), Truth::Dense(&[1.0]), &[2.0], 1)?;
    /// assert!((v - 1.30685282_f64).abs() < 1e-6, "{v}"); // 2 − 1·ln 2
    /// # Ok::<(), kiln_train::TrainError>(())
    /// ```
    Poisson, "poisson", |p, y| loss = p - y * (p + T::of(EPSILON)).ln(), grad = T::one() - y / (p + T::of(EPSILON))
);
elementwise_loss!(
    /// Hinge loss `max(1 − y·p, 0)`, 0/1 labels mapped to −1/+1 when the whole batch is
    /// 0/1 (as Keras); at the kink the gradient is −y, as TensorFlow's maximum passes it.
    ///
    /// ```
    /// use kiln_train::{Hinge, Truth, loss};
    /// let v = loss::value(&Hinge::default(), Truth::Dense(&[1.0, -1.0]), &[0.5, 0.5], 2)?;
    /// assert!((v - 1.0_f64).abs() < 1e-6, "{v}"); // mean of 1 − 0.5 and 1 + 0.5
    /// # Ok::<(), kiln_train::TrainError>(())
    /// ```
    Hinge, "hinge", |p, y, binary bin| loss = (T::one() - pm1(y, bin) * p).max(T::zero()),
    grad = if T::one() - pm1(y, bin) * p >= T::zero() { -pm1(y, bin) } else { T::zero() }
);
elementwise_loss!(
    /// Squared hinge loss `max(1 − y·p, 0)²`, labels mapped as [`Hinge`] maps them.
    ///
    /// ```
    /// use kiln_train::{SquaredHinge, Truth, loss};
    /// let v = loss::value(&SquaredHinge::default(), Truth::Dense(&[1.0, -1.0]), &[0.5, 0.5], 2)?;
    /// assert!((v - 1.25_f64).abs() < 1e-6, "{v}"); // mean of 0.5² and 1.5²
    /// # Ok::<(), kiln_train::TrainError>(())
    /// ```
    SquaredHinge, "squared_hinge", |p, y, binary bin| loss = { let m = (T::one() - pm1(y, bin) * p).max(T::zero()); m * m },
    grad = T::of(-2.0) * pm1(y, bin) * (T::one() - pm1(y, bin) * p).max(T::zero())
);

/// Huber loss: quadratic within `delta` of the target, linear beyond (Keras `Huber`).
///
/// ```
/// use kiln_train::{Huber, Truth, loss};
/// let v = loss::value(&Huber::default(), Truth::Dense(&[0.0, 0.0]), &[0.5, 2.0], 2)?;
/// assert!((v - 0.8125_f64).abs() < 1e-6, "{v}"); // mean of 0.5²/2 and 2 − 1/2 (delta 1)
/// # Ok::<(), kiln_train::TrainError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Huber {
    /// Where the loss turns from quadratic to linear.
    pub delta: f64,
    /// How per-sample losses combine.
    pub reduction: Reduction,
}

impl Default for Huber {
    fn default() -> Self {
        Huber { delta: 1.0, reduction: Reduction::SumOverBatchSize }
    }
}

impl<T: Scalar> Loss<T> for Huber {
    fn name(&self) -> &str {
        "huber_loss"
    }
    fn reduction(&self) -> Reduction {
        self.reduction
    }
    fn check(&self, _: OutputActivation, width: usize, label_width: Option<usize>) -> Result<()> {
        if self.delta.is_nan() || self.delta <= 0.0 {
            return Err(TrainError::InvalidArgument {
                name: "delta",
                message: format!("{} must be positive", self.delta),
            });
        }
        check_dense("huber", width, label_width, width == 1)
    }
    fn compute(
        &self,
        b: &LossBatch<'_, T>,
        losses: &mut [T],
        mut grad: Option<&mut [T]>,
    ) -> Result<LossInfo> {
        let (w, d, half) = (b.width, T::of(self.delta), T::of(0.5));
        let inv_w = T::one() / T::of(w as f64);
        for i in 0..b.batch {
            let mut sum = T::zero();
            for k in 0..w {
                let e = b.outputs[i * w + k] - target(&b.truth, i, k, w);
                let (l, g) = if e.abs() <= d {
                    (half * e * e, e)
                } else {
                    (d * e.abs() - half * d * d, d * sign(e))
                };
                sum += l;
                if let Some(gr) = grad.as_deref_mut() {
                    gr[i * w + k] = g * inv_w;
                }
            }
            losses[i] = sum * inv_w;
        }
        Ok(LossInfo { wrt_logits: false, counted: b.batch })
    }
}

/// Kullback–Leibler divergence `Σ y·log(y/p)` with both clipped into [ε, 1].
///
/// ```
/// use kiln_train::{KLDivergence, Truth, loss};
/// let v = loss::value(&KLDivergence::default(), Truth::Dense(&[0.5, 0.5]), &[0.25, 0.75], 2)?;
/// assert!((v - 0.14384104_f64).abs() < 1e-6, "{v}"); // ½ ln 2 + ½ ln ⅔
/// # Ok::<(), kiln_train::TrainError>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct KLDivergence {
    /// How per-sample losses combine.
    pub reduction: Reduction,
}

impl<T: Scalar> Loss<T> for KLDivergence {
    fn name(&self) -> &str {
        "kl_divergence"
    }
    fn reduction(&self) -> Reduction {
        self.reduction
    }
    fn check(&self, _: OutputActivation, width: usize, label_width: Option<usize>) -> Result<()> {
        check_dense("kl_divergence", width, label_width, false)
    }
    fn compute(
        &self,
        b: &LossBatch<'_, T>,
        losses: &mut [T],
        mut grad: Option<&mut [T]>,
    ) -> Result<LossInfo> {
        let (w, eps) = (b.width, T::of(EPSILON));
        for i in 0..b.batch {
            let mut sum = T::zero();
            for k in 0..w {
                let v = b.outputs[i * w + k];
                let y = target(&b.truth, i, k, w).max(eps).min(T::one());
                let p = v.max(eps).min(T::one());
                sum += y * (y / p).ln();
                if let Some(g) = grad.as_deref_mut() {
                    // The clip passes the gradient on its bounds: a softmax output of
                    // exactly 1.0 (common in float32) still gets −y.
                    g[i * w + k] = if v >= eps && v <= T::one() { -y / p } else { T::zero() };
                }
            }
            losses[i] = sum;
        }
        Ok(LossInfo { wrt_logits: false, counted: b.batch })
    }
}

/// Keras's L2 normalisation factor `min(1/√Σx², 1/ε)` of a row and whether the bound
/// holds (then the factor is a constant).
fn inv_norm<T: Scalar>(x: impl Iterator<Item = T>) -> (T, bool) {
    let ss: T = x.map(|v| v * v).sum();
    let cap = T::one() / T::of(EPSILON);
    let inv = T::one() / ss.sqrt();
    if inv < cap { (inv, false) } else { (cap, true) }
}

/// Negative cosine similarity along the last axis, `−Σ ŷ·p̂` with each side scaled by
/// `min(1/‖·‖, 1/ε)` as Keras's `normalize` does (a zero vector gives 0).
///
/// ```
/// use kiln_train::{CosineSimilarity, Truth, loss};
/// let v = loss::value(&CosineSimilarity::default(), Truth::Dense(&[1.0, 0.0]), &[1.0, 1.0], 2)?;
/// assert!((v - -0.70710678_f64).abs() < 1e-6, "{v}"); // −cos 45°
/// # Ok::<(), kiln_train::TrainError>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CosineSimilarity {
    /// How per-row losses combine.
    pub reduction: Reduction,
}

impl<T: Scalar> Loss<T> for CosineSimilarity {
    fn name(&self) -> &str {
        "cosine_similarity"
    }
    fn reduction(&self) -> Reduction {
        self.reduction
    }
    fn check(&self, _: OutputActivation, width: usize, label_width: Option<usize>) -> Result<()> {
        check_dense("cosine_similarity", width, label_width, false)
    }
    fn compute(
        &self,
        b: &LossBatch<'_, T>,
        losses: &mut [T],
        mut grad: Option<&mut [T]>,
    ) -> Result<LossInfo> {
        let w = b.width;
        for i in 0..b.batch {
            let p = &b.outputs[i * w..(i + 1) * w];
            let y = |k| target(&b.truth, i, k, w);
            let (ny, _) = inv_norm((0..w).map(y));
            let (np, capped) = inv_norm(p.iter().copied());
            let dot: T = (0..w).map(|k| y(k) * ny * p[k]).sum();
            losses[i] = -(dot * np);
            if let Some(g) = grad.as_deref_mut() {
                // d/dp_j of −np·Σ a_k p_k with a = ŷ: −np·a_j + np³·p_j·(a·p) (np fixed
                // when capped).
                let n3 = if capped { T::zero() } else { np * np * np };
                for (k, gk) in g[i * w..(i + 1) * w].iter_mut().enumerate() {
                    *gk = -(np * y(k) * ny) + n3 * p[k] * dot;
                }
            }
        }
        Ok(LossInfo { wrt_logits: false, counted: b.batch })
    }
}

/// Binary crossentropy weighted down on well-classified elements (Keras
/// `BinaryFocalCrossentropy`, Lin et al. 2017): `(1 − p_t)^γ · bce`, optionally times
/// `α` for positives and `1 − α` for negatives; the mean over the last axis.
///
/// ```
/// use kiln_train::{BinaryFocalCrossentropy, Truth, loss};
/// let v = loss::value(&BinaryFocalCrossentropy::default(), Truth::Dense(&[1.0]), &[0.9], 1)?;
/// assert!((v - 0.00105361_f64).abs() < 1e-6, "{v}"); // (1 − 0.9)² · −ln 0.9 (gamma 2)
/// # Ok::<(), kiln_train::TrainError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BinaryFocalCrossentropy {
    /// Weight the classes by `alpha` (Keras's `apply_class_balancing`).
    pub apply_class_balancing: bool,
    /// The positives' weight when balancing (Keras's default 0.25).
    pub alpha: f64,
    /// The focusing exponent (Keras's default 2; 0 is plain binary crossentropy).
    pub gamma: f64,
    /// The outputs are logits.
    pub from_logits: bool,
    /// Moves targets towards 0.5: `y·(1 − ls) + ls/2`.
    pub label_smoothing: f64,
    /// How per-row losses combine.
    pub reduction: Reduction,
}

impl Default for BinaryFocalCrossentropy {
    fn default() -> Self {
        BinaryFocalCrossentropy {
            apply_class_balancing: false,
            alpha: 0.25,
            gamma: 2.0,
            from_logits: false,
            label_smoothing: 0.0,
            reduction: Reduction::SumOverBatchSize,
        }
    }
}

fn check_gamma(gamma: f64) -> Result<()> {
    if !(gamma >= 0.0 && gamma.is_finite()) {
        return Err(TrainError::InvalidArgument {
            name: "gamma",
            message: format!("{gamma} must be finite and ≥ 0 (2 is usual)"),
        });
    }
    Ok(())
}

/// `γ·x^(γ−1)`, the derivative of `x^γ`, as TensorFlow's pow gradient forms it.
fn pow_grad<T: Scalar>(x: T, gamma: T) -> T {
    if gamma == T::zero() { T::zero() } else { gamma * x.powf(gamma - T::one()) }
}

impl<T: Scalar> Loss<T> for BinaryFocalCrossentropy {
    fn name(&self) -> &str {
        "binary_focal_crossentropy"
    }
    fn reduction(&self) -> Reduction {
        self.reduction
    }
    fn check(
        &self,
        activation: OutputActivation,
        width: usize,
        label_width: Option<usize>,
    ) -> Result<()> {
        check_label_smoothing(self.label_smoothing)?;
        check_gamma(self.gamma)?;
        check_dense("binary_focal_crossentropy", width, label_width, width == 1)?;
        check_logits(
            "binary_focal_crossentropy",
            self.from_logits,
            activation,
            OutputActivation::Sigmoid,
        )
    }
    fn compute(
        &self,
        b: &LossBatch<'_, T>,
        losses: &mut [T],
        mut grad: Option<&mut [T]>,
    ) -> Result<LossInfo> {
        let w = b.width;
        let (ls, half, eps, one) =
            (T::of(self.label_smoothing), T::of(0.5), T::of(EPSILON), T::one());
        let (gamma, alpha) = (T::of(self.gamma), T::of(self.alpha));
        let inv_w = one / T::of(w as f64);
        // With logits (from_logits, or a model ending in sigmoid) Keras on TensorFlow
        // computes the crossentropy factor from the logits, the stable way, and the focal
        // factor from the sigmoid; the gradient is then taken w.r.t. the logits.
        let fused = self.from_logits || b.activation == OutputActivation::Sigmoid;
        let src = if fused { b.logits.unwrap_or(b.outputs) } else { b.outputs };
        for i in 0..b.batch {
            let mut sum = T::zero();
            for k in 0..w {
                let y = target(&b.truth, i, k, w) * (one - ls) + ls * half;
                let v = src[i * w + k];
                let (p, bce, dbce) = if fused {
                    let p = sigmoid(v);
                    (p, v.max(T::zero()) - v * y + (-v.abs()).exp().ln_1p(), p - y)
                } else {
                    let c = v.max(eps).min(one - eps);
                    let inside = v >= eps && v <= one - eps;
                    let d = if inside { -y / c + (one - y) / (one - c) } else { T::zero() };
                    (v, -(y * c.ln() + (one - y) * (one - c).ln()), d)
                };
                let pt = y * p + (one - y) * (one - p);
                let base = one - pt;
                let f = base.powf(gamma);
                // d(1 − p_t)/dp = −(2y − 1); through the sigmoid when fused.
                let mut df = -pow_grad(base, gamma) * (T::of(2.0) * y - one);
                if fused {
                    df *= p * (one - p);
                }
                let weight = if self.apply_class_balancing {
                    y * alpha + (one - y) * (one - alpha)
                } else {
                    one
                };
                sum += weight * f * bce;
                if let Some(g) = grad.as_deref_mut() {
                    g[i * w + k] = weight * (df * bce + f * dbce) * inv_w;
                }
            }
            losses[i] = sum * inv_w;
        }
        Ok(LossInfo { wrt_logits: fused && !self.from_logits, counted: b.batch })
    }
}

/// Categorical crossentropy weighted down on well-classified classes (Keras
/// `CategoricalFocalCrossentropy`): `Σ α·(1 − q_k)^γ·(−y_k log q_k)` with `q` the
/// normalised, clipped prediction.
///
/// ```
/// use kiln_train::{CategoricalFocalCrossentropy, Truth, loss};
/// let v = loss::value(&CategoricalFocalCrossentropy::default(), Truth::Dense(&[0.0, 1.0]), &[0.4, 0.6], 2)?;
/// assert!((v - 0.02043302_f64).abs() < 1e-6, "{v}"); // 0.25 · 0.4² · −ln 0.6 (alpha 0.25, gamma 2)
/// # Ok::<(), kiln_train::TrainError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CategoricalFocalCrossentropy {
    /// The weight of every term (Keras's default 0.25).
    pub alpha: f64,
    /// The focusing exponent (Keras's default 2).
    pub gamma: f64,
    /// The outputs are logits.
    pub from_logits: bool,
    /// Mixes targets with the uniform distribution: `y·(1 − ls) + ls/K`.
    pub label_smoothing: f64,
    /// How per-row losses combine.
    pub reduction: Reduction,
}

impl Default for CategoricalFocalCrossentropy {
    fn default() -> Self {
        CategoricalFocalCrossentropy {
            alpha: 0.25,
            gamma: 2.0,
            from_logits: false,
            label_smoothing: 0.0,
            reduction: Reduction::SumOverBatchSize,
        }
    }
}

impl<T: Scalar> Loss<T> for CategoricalFocalCrossentropy {
    fn name(&self) -> &str {
        "categorical_focal_crossentropy"
    }
    fn reduction(&self) -> Reduction {
        self.reduction
    }
    fn check(
        &self,
        activation: OutputActivation,
        width: usize,
        label_width: Option<usize>,
    ) -> Result<()> {
        check_label_smoothing(self.label_smoothing)?;
        check_gamma(self.gamma)?;
        check_dense("categorical_focal_crossentropy", width, label_width, false)?;
        check_logits(
            "categorical_focal_crossentropy",
            self.from_logits,
            activation,
            OutputActivation::Softmax,
        )
    }
    fn compute(
        &self,
        b: &LossBatch<'_, T>,
        losses: &mut [T],
        mut grad: Option<&mut [T]>,
    ) -> Result<LossInfo> {
        let w = b.width;
        let (eps, one) = (T::of(EPSILON), T::one());
        let (gamma, alpha, ls) =
            (T::of(self.gamma), T::of(self.alpha), T::of(self.label_smoothing));
        let k_inv = one / T::of(w as f64);
        for i in 0..b.batch {
            let row = &b.outputs[i * w..(i + 1) * w];
            let y = |k| target(&b.truth, i, k, w) * (one - ls) + ls * k_inv;
            // From logits Keras applies the softmax itself, then the probability path.
            let m = row.iter().copied().fold(T::neg_infinity(), T::max);
            let es: T = row.iter().map(|&v| (v - m).exp()).sum();
            let prob = |k: usize| if self.from_logits { (row[k] - m).exp() / es } else { row[k] };
            let s: T = (0..w).map(prob).sum();
            let mut loss = T::zero();
            for k in 0..w {
                let q = (prob(k) / s).max(eps).min(one - eps);
                loss += alpha * (one - q).powf(gamma) * (-y(k) * q.ln());
            }
            losses[i] = loss;
            if let Some(g) = grad.as_deref_mut() {
                let g = &mut g[i * w..(i + 1) * w];
                // a_k = dL/dq_k where q_k is within the clip (bounds included), else 0.
                let a = |k: usize| {
                    let q0 = prob(k) / s;
                    if q0 < eps || q0 > one - eps {
                        return T::zero();
                    }
                    let cce = -y(k) * q0.ln();
                    alpha
                        * (-pow_grad(one - q0, gamma) * cce + (one - q0).powf(gamma) * (-y(k) / q0))
                };
                // Through the normalisation q = p/s: dL/dp_j = (a_j − Σ a_k q_k)/s.
                let dot: T = (0..w).map(|k| a(k) * prob(k) / s).sum();
                for (j, gj) in g.iter_mut().enumerate() {
                    *gj = (a(j) - dot) / s;
                }
                if self.from_logits {
                    // Through the softmax: dL/dz_j = p_j·(G_j − Σ G_k p_k).
                    let gp: T = (0..w).map(|k| g[k] * prob(k)).sum();
                    for (j, gj) in g.iter_mut().enumerate() {
                        *gj = prob(j) * (*gj - gp);
                    }
                }
            }
        }
        Ok(LossInfo { wrt_logits: false, counted: b.batch })
    }
}

/// Categorical hinge: `max(max_{k≠y}(p_k) − p_y + 1, 0)` for one-hot targets.
///
/// ```
/// use kiln_train::{CategoricalHinge, Truth, loss};
/// let v = loss::value(&CategoricalHinge::default(), Truth::Dense(&[0.0, 1.0]), &[0.3, 0.6], 2)?;
/// assert!((v - 0.7_f64).abs() < 1e-6, "{v}"); // max(0, 0.3 − 0.6 + 1)
/// # Ok::<(), kiln_train::TrainError>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CategoricalHinge {
    /// How per-sample losses combine.
    pub reduction: Reduction,
}

impl<T: Scalar> Loss<T> for CategoricalHinge {
    fn name(&self) -> &str {
        "categorical_hinge"
    }
    fn reduction(&self) -> Reduction {
        self.reduction
    }
    fn check(&self, _: OutputActivation, width: usize, label_width: Option<usize>) -> Result<()> {
        check_dense("categorical_hinge", width, label_width, false)
    }
    fn compute(
        &self,
        b: &LossBatch<'_, T>,
        losses: &mut [T],
        mut grad: Option<&mut [T]>,
    ) -> Result<LossInfo> {
        let w = b.width;
        for i in 0..b.batch {
            let row = &b.outputs[i * w..(i + 1) * w];
            let y = |k| target(&b.truth, i, k, w);
            let pos: T = (0..w).map(|k| y(k) * row[k]).sum();
            let neg = (0..w).map(|k| (T::one() - y(k)) * row[k]).fold(T::neg_infinity(), T::max);
            let l = neg - pos + T::one();
            losses[i] = l.max(T::zero());
            if let Some(g) = grad.as_deref_mut() {
                let g = &mut g[i * w..(i + 1) * w];
                // At the kink (l = 0) the gradient passes, as TensorFlow's maximum passes
                // it; tied maxima share the max's gradient equally, as reduce_max does.
                let ties = (0..w).filter(|&k| (T::one() - y(k)) * row[k] == neg).count();
                let share = T::one() / T::of(ties.max(1) as f64);
                for (k, gk) in g.iter_mut().enumerate() {
                    *gk = if l >= T::zero() { -y(k) } else { T::zero() };
                    if l >= T::zero() && (T::one() - y(k)) * row[k] == neg {
                        *gk += (T::one() - y(k)) * share;
                    }
                }
            }
        }
        Ok(LossInfo { wrt_logits: false, counted: b.batch })
    }
}

/// A loss written as a forward pass over tape variables: `f(y_pred, y_true)` returns
/// the per-sample losses `[batch]`, and the tape supplies the gradient.
pub struct TapeLoss<T, F> {
    name: String,
    f: F,
    _scalar: std::marker::PhantomData<fn() -> T>,
}

impl<T, F> TapeLoss<T, F>
where
    T: Scalar,
    F: for<'t> Fn(Var<'t, T>, Var<'t, T>) -> kiln_tape::Result<Var<'t, T>> + Send,
{
    /// Names a forward-only loss function `f(y_pred, y_true) → per-sample losses`.
    pub fn new(name: impl Into<String>, f: F) -> Self {
        TapeLoss { name: name.into(), f, _scalar: std::marker::PhantomData }
    }
}

impl<T, F> Loss<T> for TapeLoss<T, F>
where
    T: Scalar,
    F: for<'t> Fn(Var<'t, T>, Var<'t, T>) -> kiln_tape::Result<Var<'t, T>> + Send,
{
    fn name(&self) -> &str {
        &self.name
    }
    fn check(&self, _: OutputActivation, width: usize, label_width: Option<usize>) -> Result<()> {
        check_dense(&self.name, width, label_width, true)
    }
    fn compute(
        &self,
        b: &LossBatch<'_, T>,
        losses: &mut [T],
        grad: Option<&mut [T]>,
    ) -> Result<LossInfo> {
        let w = b.width;
        let tape = Tape::new();
        let pred = tape.var(Tensor::from_vec(&[b.batch, w], b.outputs[..b.batch * w].to_vec())?);
        let truth: Vec<T> = (0..b.batch * w).map(|j| target(&b.truth, j / w, j % w, w)).collect();
        let truth = tape.constant(Tensor::from_vec(&[b.batch, w], truth)?);
        let per_sample = (self.f)(pred, truth)?;
        if per_sample.shape() != [b.batch] {
            return Err(TrainError::Incompatible(format!(
                "loss {} must return one value per sample (shape [{}]) but returned {:?}",
                self.name,
                b.batch,
                per_sample.shape()
            )));
        }
        losses[..b.batch].copy_from_slice(per_sample.value().data());
        if let Some(g) = grad {
            let gs = tape.backward(per_sample.sum()?)?;
            match gs.get(pred) {
                Some(t) => g[..b.batch * w].copy_from_slice(t.data()),
                None => g.fill(T::zero()),
            }
        }
        Ok(LossInfo { wrt_logits: false, counted: b.batch })
    }
}

/// Marks which model outputs and label types a loss can train, so that a mismatch
/// (class indices with a one-hot loss, a multi-class loss on one output) is a compile
/// error rather than a run-time one. Losses chosen by name check at run time instead.
#[diagnostic::on_unimplemented(
    message = "the loss `{Self}` cannot train a model with output shape `{Out}` on labels of type `{Y}`",
    label = "this loss does not fit these labels or outputs",
    note = "class indices (ClassLabels) go with SparseCategoricalCrossentropy; one-hot Targets with CategoricalCrossentropy; binary 0/1 labels with BinaryCrossentropy on a sigmoid output of width 1"
)]
pub trait LossFor<Out: Shape, Y> {}

impl<const N: usize> LossFor<S1<N>, ClassLabels> for SparseCategoricalCrossentropy {}
/// One label per step of a sequence output `[steps, classes]` (`ClassLabels::per_step`).
impl<const A: usize, const N: usize> LossFor<S2<A, N>, ClassLabels>
    for SparseCategoricalCrossentropy
{
}
/// One label per position of an image-shaped output `[h, w, classes]` (segmentation).
impl<const A: usize, const B: usize, const N: usize> LossFor<S3<A, B, N>, ClassLabels>
    for SparseCategoricalCrossentropy
{
}
impl<const A: usize> LossFor<S2<A, 1>, ClassLabels> for BinaryCrossentropy {}
impl LossFor<Dyn, ClassLabels> for SparseCategoricalCrossentropy {}
impl<S: Shape> LossFor<S, Targets<S>> for CategoricalCrossentropy {}
impl<S: Shape> LossFor<S, Targets<S>> for BinaryCrossentropy {}
impl LossFor<S1<1>, ClassLabels> for BinaryCrossentropy {}
impl LossFor<Dyn, ClassLabels> for BinaryCrossentropy {}
/// A label type that cannot exist. Every typed loss also "fits" it, so that rustc never
/// infers the label type of `fit`/`evaluate` from the loss (there are always two
/// candidates): the label type comes from the argument, and a mismatch is reported
/// through [`LossFor`]'s message instead of as a bare type mismatch.
#[doc(hidden)]
#[derive(Debug)]
pub enum NotLabels {}

impl<T: Scalar, Out: Shape, Y> LossFor<Out, Y> for Box<dyn Loss<T>> {}
impl<T, F, Out: Shape, Y> LossFor<Out, Y> for TapeLoss<T, F> {}

/// Anything `compile` accepts as a loss: a typed loss, a Keras name, or a boxed loss.
pub trait IntoLoss<T: Scalar> {
    /// The loss as the trainer stores it.
    type Loss: Loss<T>;
    /// Builds it (a name may be unknown).
    fn into_loss(self) -> Result<Self::Loss>;
}

impl<T: crate::Dtype> IntoLoss<T> for &str {
    type Loss = Box<dyn Loss<T>>;
    fn into_loss(self) -> Result<Self::Loss> {
        T::loss_by_name(self)
    }
}

impl<T: Scalar, L: Loss<T> + ?Sized> Loss<T> for Box<L> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn reduction(&self) -> Reduction {
        (**self).reduction()
    }
    fn check(&self, a: OutputActivation, w: usize, lw: Option<usize>) -> Result<()> {
        (**self).check(a, w, lw)
    }
    fn compute(
        &self,
        b: &LossBatch<'_, T>,
        losses: &mut [T],
        grad: Option<&mut [T]>,
    ) -> Result<LossInfo> {
        (**self).compute(b, losses, grad)
    }
}

impl<T: Scalar> IntoLoss<T> for Box<dyn Loss<T>> {
    type Loss = Box<dyn Loss<T>>;
    fn into_loss(self) -> Result<Self::Loss> {
        Ok(self)
    }
}

/// The one list of built-in losses: each type with its Keras names, and `dense` for
/// those that train on dense targets of the model's own shape. From it come
/// [`LOSS_NAMES`], [`loss_by_name`], and each type's `IntoLoss` and `LossFor` impls —
/// adding a loss is its type and one line here.
macro_rules! loss_registry {
    ($($t:ident [$($name:literal),+] $($dense:ident)?;)*) => {
        /// The Keras names [`loss_by_name`] accepts.
        pub const LOSS_NAMES: &[&str] = &[$($($name),+),*];

        /// A loss by its Keras name, with Keras's defaults.
        pub fn loss_by_name<T: Scalar>(name: &str) -> Result<Box<dyn Loss<T>>> {
            $(
                if [$($name),+].contains(&name) {
                    return Ok(Box::new($t::default()));
                }
            )*
            Err(unknown_name("loss", name, LOSS_NAMES))
        }

        $(
            impl<T: Scalar> IntoLoss<T> for $t {
                type Loss = $t;
                fn into_loss(self) -> Result<Self::Loss> {
                    Ok(self)
                }
            }
            #[diagnostic::do_not_recommend]
            impl<S: Shape> LossFor<S, NotLabels> for $t {}
            $(loss_registry!(@$dense $t);)?
        )*
    };
    (@dense $t:ident) => {
        impl<S: Shape> LossFor<S, Targets<S>> for $t {}
    };
}

loss_registry! {
    SparseCategoricalCrossentropy ["sparse_categorical_crossentropy"];
    CategoricalCrossentropy ["categorical_crossentropy"];
    BinaryCrossentropy ["binary_crossentropy"];
    MeanSquaredError ["mean_squared_error", "mse"] dense;
    MeanAbsoluteError ["mean_absolute_error", "mae"] dense;
    MeanAbsolutePercentageError ["mean_absolute_percentage_error", "mape"] dense;
    Huber ["huber", "huber_loss"] dense;
    LogCosh ["log_cosh", "logcosh"] dense;
    KLDivergence ["kl_divergence", "kld", "kullback_leibler_divergence"] dense;
    Poisson ["poisson"] dense;
    MeanSquaredLogarithmicError ["mean_squared_logarithmic_error", "msle"] dense;
    CosineSimilarity ["cosine_similarity"] dense;
    BinaryFocalCrossentropy ["binary_focal_crossentropy"] dense;
    CategoricalFocalCrossentropy ["categorical_focal_crossentropy"] dense;
    Hinge ["hinge"] dense;
    SquaredHinge ["squared_hinge"] dense;
    CategoricalHinge ["categorical_hinge"] dense;
}

impl<T, F> IntoLoss<T> for TapeLoss<T, F>
where
    T: Scalar,
    F: for<'t> Fn(Var<'t, T>, Var<'t, T>) -> kiln_tape::Result<Var<'t, T>> + Send,
{
    type Loss = TapeLoss<T, F>;
    fn into_loss(self) -> Result<Self::Loss> {
        Ok(self)
    }
}

/// Writes softmax or sigmoid of `logits` into `out` (used by tests and by models that
/// expose logits).
pub fn activate<T: Scalar>(act: OutputActivation, logits: &[T], width: usize, out: &mut [T]) {
    match act {
        OutputActivation::Linear => out.copy_from_slice(logits),
        OutputActivation::Softmax => {
            let _ = softmax(logits, width, out);
        }
        OutputActivation::Sigmoid => out.iter_mut().zip(logits).for_each(|(o, &z)| *o = sigmoid(z)),
    }
}
