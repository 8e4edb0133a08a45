//! Optimizers with Keras 3's names, defaults and update rules.
//!
//! A typed configuration ([`Adam`], [`SGD`], ...) or a Keras name (`"adam"`) becomes an
//! [`Optimizer`], which owns the step count, the learning rate (constant or scheduled),
//! gradient clipping, decoupled weight decay and the rule's state, and updates the
//! model's trainable buffer in one pass per step.

mod rules;
mod schedule;

pub use rules::{
    AdadeltaRule, AdagradRule, AdamRule, AdamaxRule, LionRule, NadamRule, RmsPropRule, SgdRule,
    UpdateRule,
};
pub use schedule::{CosineDecay, ExponentialDecay, PiecewiseConstantDecay, Schedule};

use crate::error::{Result, TrainError, unknown_name};
use crate::model::ParamEntry;
use kiln_tape::Scalar;
use std::sync::Arc;

/// A learning rate: a constant or a schedule of the step.
#[derive(Clone, Debug)]
pub enum LearningRate {
    /// The same rate at every step.
    Constant(f64),
    /// A rate computed from the step count.
    Schedule(Arc<dyn Schedule + Sync>),
}

impl LearningRate {
    /// The rate at `step`.
    pub fn at(&self, step: u64) -> f64 {
        match self {
            LearningRate::Constant(v) => *v,
            LearningRate::Schedule(s) => s.at(step),
        }
    }
}

impl From<f64> for LearningRate {
    fn from(v: f64) -> Self {
        LearningRate::Constant(v)
    }
}
impl From<f32> for LearningRate {
    fn from(v: f32) -> Self {
        LearningRate::Constant(f64::from(v))
    }
}
impl From<ExponentialDecay> for LearningRate {
    fn from(s: ExponentialDecay) -> Self {
        LearningRate::Schedule(Arc::new(s))
    }
}
impl From<PiecewiseConstantDecay> for LearningRate {
    fn from(s: PiecewiseConstantDecay) -> Self {
        LearningRate::Schedule(Arc::new(s))
    }
}
impl From<CosineDecay> for LearningRate {
    fn from(s: CosineDecay) -> Self {
        LearningRate::Schedule(Arc::new(s))
    }
}

/// Options every Keras optimizer takes.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CommonOptions {
    /// Decoupled weight decay: before each update, `w -= w · weight_decay · lr`.
    pub weight_decay: Option<f64>,
    /// Clip each variable's gradient to this L2 norm.
    pub clipnorm: Option<f64>,
    /// Clip every gradient element into `[-clipvalue, clipvalue]`.
    pub clipvalue: Option<f64>,
    /// Clip all gradients together to this global L2 norm.
    pub global_clipnorm: Option<f64>,
}

macro_rules! optimizer_config {
    ($(#[$doc:meta])* $name:ident { $($(#[$fdoc:meta])* $field:ident : $ty:ty = $default:expr),* $(,)? } lr = $lr:expr) => {
        $(#[$doc])*
        ///
        /// One update of a two-value weight: each value moves against its gradient.
        ///
        #[doc = concat!("```
use kiln_train::{", stringify!($name), ", IntoOptimizer, Optimizer, ParamEntry, ParamKind};
let mut opt: Optimizer<f64> = ", stringify!($name), "::new(0.01).into_optimizer()?;
let w_entry = ParamEntry { name: \"w\".into(), shape: vec![2], offset: 0, trainable: true, kind: ParamKind::Kernel };
let mut w = [1.0, -1.0];
opt.apply(&mut w, &mut [0.5, -0.5], &[w_entry])?;
assert!(w[0] < 1.0 && w[1] > -1.0, \"{w:?}\");
assert_eq!(opt.iterations(), 1);
# Ok::<(), kiln_train::TrainError>(())
```")]
        #[derive(Clone, Debug)]
        pub struct $name {
            /// Learning rate (constant or schedule).
            pub learning_rate: LearningRate,
            $($(#[$fdoc])* pub $field: $ty,)*
            /// Weight decay and gradient clipping.
            pub common: CommonOptions,
        }

        impl Default for $name {
            fn default() -> Self {
                $name { learning_rate: LearningRate::Constant($lr), $($field: $default,)* common: CommonOptions::default() }
            }
        }

        impl $name {
            /// The optimizer with this learning rate and Keras's other defaults.
            pub fn new(learning_rate: impl Into<LearningRate>) -> Self {
                $name { learning_rate: learning_rate.into(), ..Self::default() }
            }
            /// Decoupled weight decay (applied to every trainable variable, as Keras).
            pub fn weight_decay(mut self, v: f64) -> Self {
                self.common.weight_decay = Some(v);
                self
            }
            /// Per-variable gradient norm clipping.
            pub fn clipnorm(mut self, v: f64) -> Self {
                self.common.clipnorm = Some(v);
                self
            }
            /// Elementwise gradient clipping.
            pub fn clipvalue(mut self, v: f64) -> Self {
                self.common.clipvalue = Some(v);
                self
            }
            /// Global gradient norm clipping.
            pub fn global_clipnorm(mut self, v: f64) -> Self {
                self.common.global_clipnorm = Some(v);
                self
            }
        }
    };
}

optimizer_config!(
    /// Stochastic gradient descent (Keras `SGD`: learning_rate 0.01, momentum 0, nesterov false).
    SGD { /// Momentum factor in [0, 1].
    momentum: f64 = 0.0, /// Use Nesterov momentum.
    nesterov: bool = false } lr = 0.01
);
optimizer_config!(
    /// Adam (learning_rate 0.001, beta_1 0.9, beta_2 0.999, epsilon 1e-7, amsgrad false).
    Adam { /// First-moment decay.
    beta_1: f64 = 0.9, /// Second-moment decay.
    beta_2: f64 = 0.999, /// Numerical floor.
    epsilon: f64 = 1e-7, /// Use AMSGrad's running maximum.
    amsgrad: bool = false } lr = 0.001
);
optimizer_config!(
    /// AdamW: Adam with decoupled weight decay (weight_decay 0.004 by default).
    AdamW { /// First-moment decay.
    beta_1: f64 = 0.9, /// Second-moment decay.
    beta_2: f64 = 0.999, /// Numerical floor.
    epsilon: f64 = 1e-7, /// Use AMSGrad's running maximum.
    amsgrad: bool = false } lr = 0.001
);
optimizer_config!(
    /// RMSprop (learning_rate 0.001, rho 0.9, momentum 0, epsilon 1e-7, centered false).
    RMSprop { /// Decay of the squared-gradient average.
    rho: f64 = 0.9, /// Momentum factor.
    momentum: f64 = 0.0, /// Numerical floor (inside the square root).
    epsilon: f64 = 1e-7, /// Normalize by the gradient's variance instead of its second moment.
    centered: bool = false } lr = 0.001
);
optimizer_config!(
    /// Adagrad (learning_rate 0.001, initial_accumulator_value 0.1, epsilon 1e-7).
    Adagrad { /// Starting value of the squared-gradient sums.
    initial_accumulator_value: f64 = 0.1, /// Numerical floor.
    epsilon: f64 = 1e-7 } lr = 0.001
);
optimizer_config!(
    /// Adadelta (learning_rate 0.001, rho 0.95, epsilon 1e-7).
    Adadelta { /// Decay of the running averages.
    rho: f64 = 0.95, /// Numerical floor.
    epsilon: f64 = 1e-7 } lr = 0.001
);
optimizer_config!(
    /// Adamax (learning_rate 0.001, beta_1 0.9, beta_2 0.999, epsilon 1e-7).
    Adamax { /// First-moment decay.
    beta_1: f64 = 0.9, /// Decay of the infinity norm.
    beta_2: f64 = 0.999, /// Numerical floor.
    epsilon: f64 = 1e-7 } lr = 0.001
);
optimizer_config!(
    /// Nadam (learning_rate 0.001, beta_1 0.9, beta_2 0.999, epsilon 1e-7).
    Nadam { /// First-moment decay.
    beta_1: f64 = 0.9, /// Second-moment decay.
    beta_2: f64 = 0.999, /// Numerical floor.
    epsilon: f64 = 1e-7 } lr = 0.001
);
optimizer_config!(
    /// Lion (learning_rate 0.001, beta_1 0.9, beta_2 0.99).
    Lion { /// Interpolation factor of the update direction.
    beta_1: f64 = 0.9, /// Momentum decay.
    beta_2: f64 = 0.99 } lr = 0.001
);

impl SGD {
    /// Sets the momentum factor.
    pub fn momentum(mut self, m: f64) -> Self {
        self.momentum = m;
        self
    }
    /// Uses Nesterov momentum.
    pub fn nesterov(mut self) -> Self {
        self.nesterov = true;
        self
    }
}

impl Adam {
    /// Uses AMSGrad.
    pub fn amsgrad(mut self) -> Self {
        self.amsgrad = true;
        self
    }
}

impl RMSprop {
    /// Sets the momentum factor.
    pub fn momentum(mut self, m: f64) -> Self {
        self.momentum = m;
        self
    }
    /// Uses the centered variant.
    pub fn centered(mut self) -> Self {
        self.centered = true;
        self
    }
}

/// The one list of built-in optimizers by Keras name: from it come
/// [`OPTIMIZER_NAMES`] and the by-name `IntoOptimizer` for `&str`.
macro_rules! optimizer_registry {
    ($($t:ident $name:literal),* $(,)?) => {
        /// The Keras names [`IntoOptimizer`] accepts as strings.
        pub const OPTIMIZER_NAMES: &[&str] = &[$($name),*];

        impl<T: Scalar> IntoOptimizer<T> for &str {
            fn into_optimizer(self) -> Result<Optimizer<T>> {
                match self.to_ascii_lowercase().as_str() {
                    $($name => $t::default().into_optimizer(),)*
                    _ => Err(unknown_name("optimizer", self, OPTIMIZER_NAMES)),
                }
            }
        }
    };
}

optimizer_registry! {
    SGD "sgd", Adam "adam", AdamW "adamw", RMSprop "rmsprop", Adagrad "adagrad",
    Adadelta "adadelta", Adamax "adamax", Nadam "nadam", Lion "lion",
}

/// An optimizer ready to update a model: rule, learning rate, clipping, weight decay and
/// step count.
pub struct Optimizer<T: Scalar> {
    rule: Box<dyn UpdateRule<T>>,
    learning_rate: LearningRate,
    common: CommonOptions,
    iterations: u64,
    built: bool,
}

impl<T: Scalar> std::fmt::Debug for Optimizer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Optimizer")
            .field("name", &self.rule.name())
            .field("learning_rate", &self.learning_rate)
            .field("iterations", &self.iterations)
            .finish()
    }
}

fn check(name: &'static str, ok: bool, message: impl FnOnce() -> String) -> Result<()> {
    if ok { Ok(()) } else { Err(TrainError::InvalidArgument { name, message: message() }) }
}

fn check_unit(name: &'static str, v: f64) -> Result<()> {
    check(name, (0.0..=1.0).contains(&v), || {
        format!("{v} is outside [0, 1]; Keras's default is usually 0.9 or 0.999")
    })
}

impl<T: Scalar> Optimizer<T> {
    /// Wraps an update rule after validating the common options.
    pub fn new(
        rule: Box<dyn UpdateRule<T>>,
        learning_rate: LearningRate,
        common: CommonOptions,
    ) -> Result<Self> {
        if let LearningRate::Constant(lr) = learning_rate {
            check("learning_rate", lr.is_finite() && lr >= 0.0, || {
                format!("{lr} must be a finite number ≥ 0")
            })?;
        }
        let clips = [common.clipnorm, common.clipvalue, common.global_clipnorm]
            .iter()
            .filter(|c| c.is_some())
            .count();
        check("clipnorm/clipvalue/global_clipnorm", clips <= 1, || {
            "set at most one of clipnorm, clipvalue and global_clipnorm, as Keras requires".into()
        })?;
        for (name, v) in [
            ("clipnorm", common.clipnorm),
            ("clipvalue", common.clipvalue),
            ("global_clipnorm", common.global_clipnorm),
        ] {
            if let Some(v) = v {
                check(name, v > 0.0 && v.is_finite(), || {
                    format!("{v} must be a positive finite number")
                })?;
            }
        }
        if let Some(wd) = common.weight_decay {
            check("weight_decay", wd >= 0.0 && wd.is_finite(), || {
                format!("{wd} must be a finite number ≥ 0")
            })?;
        }
        Ok(Optimizer { rule, learning_rate, common, iterations: 0, built: false })
    }

    /// The optimizer's Keras class name.
    pub fn name(&self) -> &'static str {
        self.rule.name()
    }

    /// Updates applied so far.
    pub fn iterations(&self) -> u64 {
        self.iterations
    }

    /// Sets the step count (when resuming from a checkpoint).
    pub fn set_iterations(&mut self, it: u64) {
        self.iterations = it;
    }

    /// The learning rate the next update will use.
    pub fn learning_rate(&self) -> f64 {
        self.learning_rate.at(self.iterations)
    }

    /// Replaces the learning rate (and any schedule) by a constant, as callbacks do.
    pub fn set_learning_rate(&mut self, lr: f64) -> Result<()> {
        check("learning_rate", lr.is_finite() && lr >= 0.0, || {
            format!("{lr} must be a finite number ≥ 0")
        })?;
        self.learning_rate = LearningRate::Constant(lr);
        Ok(())
    }

    /// The rule's state buffers by name (for full checkpoints), allocated for `n`
    /// trainable values if no step has run yet.
    pub fn slots(&mut self, n: usize) -> Vec<(&'static str, &mut Vec<T>)> {
        if !self.built {
            self.rule.build(n);
            self.built = true;
        }
        self.rule.slots()
    }

    /// The rule's scalar state by name (for full checkpoints).
    pub fn scalars(&mut self) -> Vec<(&'static str, &mut f64)> {
        self.rule.scalars()
    }

    /// The learning rate when it is a constant (schedules are not saved: they are code).
    pub fn constant_learning_rate(&self) -> Option<f64> {
        match self.learning_rate {
            LearningRate::Constant(v) => Some(v),
            LearningRate::Schedule(_) => None,
        }
    }

    /// One update of the trainable `params` from `grads` (same length; clipped in place).
    /// `entries` are the variables, for per-variable norm clipping.
    pub fn apply(
        &mut self,
        params: &mut [T],
        grads: &mut [T],
        entries: &[ParamEntry],
    ) -> Result<()> {
        if params.len() != grads.len() {
            return Err(TrainError::InvalidArgument {
                name: "Optimizer::apply",
                message: format!("{} parameters but {} gradients", params.len(), grads.len()),
            });
        }
        if !self.built {
            self.rule.build(params.len());
            self.built = true;
        }
        if let Some(v) = self.common.clipvalue {
            let v = T::of(v);
            grads.iter_mut().for_each(|g| *g = g.max(-v).min(v));
        }
        if let Some(c) = self.common.clipnorm {
            let n = grads.len();
            for e in entries.iter().filter(|e| e.trainable && e.offset + e.len() <= n) {
                clip_by_norm(&mut grads[e.range()], T::of(c));
            }
        }
        if let Some(c) = self.common.global_clipnorm {
            clip_by_norm(grads, T::of(c));
        }
        let lr = T::of(self.learning_rate());
        if let Some(wd) = self.common.weight_decay.filter(|&wd| wd > 0.0) {
            let f = rules::kcast::<T>(wd) * lr;
            params.iter_mut().for_each(|w| *w -= *w * f);
        }
        self.rule.update(params, grads, lr, self.iterations + 1);
        self.iterations += 1;
        Ok(())
    }
}

/// Scales `g` so its L2 norm is at most `c` (`g · c / max(‖g‖, c)`).
fn clip_by_norm<T: Scalar>(g: &mut [T], c: T) {
    let norm = g.iter().map(|&v| v * v).sum::<T>().sqrt();
    if norm > c {
        let s = c / norm;
        g.iter_mut().for_each(|v| *v *= s);
    }
}

/// Anything `compile` accepts as an optimizer: a typed configuration, a Keras name, or a
/// ready [`Optimizer`].
pub trait IntoOptimizer<T: Scalar> {
    /// Builds the optimizer, validating its settings.
    fn into_optimizer(self) -> Result<Optimizer<T>>;
}

impl<T: Scalar> IntoOptimizer<T> for Optimizer<T> {
    fn into_optimizer(self) -> Result<Optimizer<T>> {
        Ok(self)
    }
}

impl<T: Scalar> IntoOptimizer<T> for SGD {
    fn into_optimizer(self) -> Result<Optimizer<T>> {
        check("momentum", (0.0..=1.0).contains(&self.momentum), || {
            format!("{} is outside [0, 1]", self.momentum)
        })?;
        let rule = SgdRule { momentum: self.momentum, nesterov: self.nesterov, m: Vec::new() };
        Optimizer::new(Box::new(rule), self.learning_rate, self.common)
    }
}

fn adam_rule<T: Scalar>(
    beta_1: f64,
    beta_2: f64,
    epsilon: f64,
    amsgrad: bool,
) -> Result<Box<dyn UpdateRule<T>>> {
    check_unit("beta_1", beta_1)?;
    check_unit("beta_2", beta_2)?;
    check("epsilon", epsilon >= 0.0, || format!("{epsilon} must be ≥ 0"))?;
    Ok(Box::new(AdamRule {
        beta_1,
        beta_2,
        epsilon,
        amsgrad,
        m: Vec::new(),
        v: Vec::new(),
        v_hat: Vec::new(),
    }))
}

impl<T: Scalar> IntoOptimizer<T> for Adam {
    fn into_optimizer(self) -> Result<Optimizer<T>> {
        Optimizer::new(
            adam_rule(self.beta_1, self.beta_2, self.epsilon, self.amsgrad)?,
            self.learning_rate,
            self.common,
        )
    }
}

impl<T: Scalar> IntoOptimizer<T> for AdamW {
    fn into_optimizer(self) -> Result<Optimizer<T>> {
        let mut common = self.common;
        common.weight_decay = Some(common.weight_decay.unwrap_or(0.004));
        Optimizer::new(
            adam_rule(self.beta_1, self.beta_2, self.epsilon, self.amsgrad)?,
            self.learning_rate,
            common,
        )
    }
}

impl<T: Scalar> IntoOptimizer<T> for RMSprop {
    fn into_optimizer(self) -> Result<Optimizer<T>> {
        check_unit("rho", self.rho)?;
        check_unit("momentum", self.momentum)?;
        let rule = RmsPropRule {
            rho: self.rho,
            momentum: self.momentum,
            epsilon: self.epsilon,
            centered: self.centered,
            velocity: Vec::new(),
            average_grad: Vec::new(),
            mom: Vec::new(),
        };
        Optimizer::new(Box::new(rule), self.learning_rate, self.common)
    }
}

impl<T: Scalar> IntoOptimizer<T> for Adagrad {
    fn into_optimizer(self) -> Result<Optimizer<T>> {
        check("initial_accumulator_value", self.initial_accumulator_value >= 0.0, || {
            format!("{} must be ≥ 0", self.initial_accumulator_value)
        })?;
        let rule = AdagradRule {
            initial_accumulator_value: self.initial_accumulator_value,
            epsilon: self.epsilon,
            acc: Vec::new(),
        };
        Optimizer::new(Box::new(rule), self.learning_rate, self.common)
    }
}

impl<T: Scalar> IntoOptimizer<T> for Adadelta {
    fn into_optimizer(self) -> Result<Optimizer<T>> {
        check_unit("rho", self.rho)?;
        let rule = AdadeltaRule {
            rho: self.rho,
            epsilon: self.epsilon,
            acc_grad: Vec::new(),
            acc_delta: Vec::new(),
        };
        Optimizer::new(Box::new(rule), self.learning_rate, self.common)
    }
}

impl<T: Scalar> IntoOptimizer<T> for Adamax {
    fn into_optimizer(self) -> Result<Optimizer<T>> {
        check_unit("beta_1", self.beta_1)?;
        check_unit("beta_2", self.beta_2)?;
        let rule = AdamaxRule {
            beta_1: self.beta_1,
            beta_2: self.beta_2,
            epsilon: self.epsilon,
            m: Vec::new(),
            u: Vec::new(),
        };
        Optimizer::new(Box::new(rule), self.learning_rate, self.common)
    }
}

impl<T: Scalar> IntoOptimizer<T> for Nadam {
    fn into_optimizer(self) -> Result<Optimizer<T>> {
        check_unit("beta_1", self.beta_1)?;
        check_unit("beta_2", self.beta_2)?;
        let rule = NadamRule {
            beta_1: self.beta_1,
            beta_2: self.beta_2,
            epsilon: self.epsilon,
            u_product: 1.0,
            m: Vec::new(),
            v: Vec::new(),
        };
        Optimizer::new(Box::new(rule), self.learning_rate, self.common)
    }
}

impl<T: Scalar> IntoOptimizer<T> for Lion {
    fn into_optimizer(self) -> Result<Optimizer<T>> {
        check_unit("beta_1", self.beta_1)?;
        check_unit("beta_2", self.beta_2)?;
        let rule = LionRule { beta_1: self.beta_1, beta_2: self.beta_2, m: Vec::new() };
        Optimizer::new(Box::new(rule), self.learning_rate, self.common)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(opt: impl IntoOptimizer<f64>, w: f64, gs: &[f64]) -> f64 {
        let mut o = opt.into_optimizer().unwrap();
        let mut w = [w];
        for &g in gs {
            o.apply(&mut w, &mut [g], &[]).unwrap();
        }
        w[0]
    }

    /// Large buffers are updated in two halves on two cores, vectorized: every element
    /// must come out exactly as when it is updated alone (one element, one thread).
    #[test]
    fn split_updates_equal_element_by_element_updates() {
        let n = 40_001;
        let w0: Vec<f32> = (0..n).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
        let grad = |s: usize, i: usize| ((i * 13 + s * 7) % 29) as f32 / 7.0 - 2.0;
        let opts: [fn() -> Optimizer<f32>; 4] = [
            || Adam::new(0.01).into_optimizer().unwrap(),
            || Adam::new(0.01).amsgrad().into_optimizer().unwrap(),
            || SGD::new(0.1).momentum(0.9).nesterov().into_optimizer().unwrap(),
            || SGD::new(0.1).into_optimizer().unwrap(),
        ];
        for make in opts {
            let (mut whole, mut w) = (make(), w0.clone());
            for s in 0..3 {
                let mut g: Vec<f32> = (0..n).map(|i| grad(s, i)).collect();
                whole.apply(&mut w, &mut g, &[]).unwrap();
            }
            for i in (0..n).step_by(997).chain([n / 2, n / 2 + 1, n - 1]) {
                let (mut one, mut wi) = (make(), [w0[i]]);
                for s in 0..3 {
                    one.apply(&mut wi, &mut [grad(s, i)], &[]).unwrap();
                }
                assert_eq!(w[i].to_bits(), wi[0].to_bits(), "{} element {i}", whole.name());
            }
        }
    }

    /// A hyperparameter as Keras's TF backend casts it (through float32).
    fn k(v: f64) -> f64 {
        f64::from(v as f32)
    }

    #[test]
    fn single_steps_match_hand_computed_keras_rules() {
        // SGD: w − lr·g
        assert!((step(SGD::new(0.1), 1.0, &[2.0]) - 0.8).abs() < 1e-15);
        // Momentum μ, two steps: m1 = −0.2, w = 0.8; m2 = −0.2 + μ·m1, w = 0.8 + m2.
        let mu = k(0.9);
        assert!(
            (step(SGD::new(0.1).momentum(0.9), 1.0, &[2.0, 2.0]) - (0.8 - 0.2 - 0.2 * mu)).abs()
                < 1e-15
        );
        // Nesterov first step: m = −0.2; w += μ·m − lr·g
        assert!(
            (step(SGD::new(0.1).momentum(0.9).nesterov(), 1.0, &[2.0]) - (1.0 - 0.2 * mu - 0.2))
                .abs()
                < 1e-15
        );
        // Adam first step: alpha = lr·sqrt(1−β2)/(1−β1) with β cast; m = (1−β1)g, v = (1−β2)g².
        let alpha = 0.001 * (1.0 - k(0.999)).sqrt() / (1.0 - k(0.9));
        let (m, v) = ((1.0 - 0.9) * 2.0, (1.0 - 0.999) * 4.0);
        let adam = 1.0 - alpha * m / (f64::sqrt(v) + 1e-7);
        assert!((step(Adam::default(), 1.0, &[2.0]) - adam).abs() < 1e-15);
        // Adagrad: acc = 0.1 + g²; w −= lr·g/sqrt(acc + eps)
        let want = 1.0 - 0.001 * 2.0 / (k(0.1) + 4.0 + 1e-7).sqrt();
        assert!((step(Adagrad::default(), 1.0, &[2.0]) - want).abs() < 1e-15);
        // RMSprop: v = (1−ρ)·g²; w −= lr·g/sqrt(v + eps)
        let want = 1.0 - 0.001 * 2.0 / ((1.0 - 0.9) * 4.0 + 1e-7f64).sqrt();
        assert!((step(RMSprop::default(), 1.0, &[2.0]) - want).abs() < 1e-15);
        // AdamW decays first: w·(1 − wd·lr), then the same Adam step.
        let decayed = 1.0 - k(0.004) * 0.001;
        assert!((step(AdamW::default(), 1.0, &[2.0]) - (decayed - (1.0 - adam))).abs() < 1e-15);
        // Lion: w −= lr·sign(β1·m + (1−β1)·g)
        assert!((step(Lion::default(), 1.0, &[-3.0]) - 1.001).abs() < 1e-15);
        // Adamax first step: m = (1−β1)g, u = |g|; w −= lr·m/((1−β1^1)(u + eps))
        let want = 1.0 - 0.001 * ((1.0 - 0.9) * 2.0) / ((1.0 - k(0.9)) * (2.0 + 1e-7));
        assert!((step(Adamax::default(), 1.0, &[2.0]) - want).abs() < 1e-15);
        // Adadelta first step: ag = (1−ρ)g²; delta = −sqrt(eps)·g/sqrt(ag + eps); w += lr·delta
        let want = 1.0 - 0.001 * (1e-7f64).sqrt() * 2.0 / ((1.0 - 0.95) * 4.0 + 1e-7f64).sqrt();
        assert!((step(Adadelta::default(), 1.0, &[2.0]) - want).abs() < 1e-15);
        // Nadam's first step moves against the gradient by about lr.
        let w = step(Nadam::default(), 1.0, &[2.0]);
        assert!(w < 1.0 && (1.0 - w - 0.001).abs() < 5e-4, "{w}");
    }

    #[test]
    fn clipping_variants() {
        let mut o: Optimizer<f64> = SGD::new(1.0).clipvalue(0.5).into_optimizer().unwrap();
        let mut w = [0.0, 0.0];
        o.apply(&mut w, &mut [3.0, -0.2], &[]).unwrap();
        assert_eq!(w, [-0.5, 0.2]);
        let mut o: Optimizer<f64> = SGD::new(1.0).global_clipnorm(1.0).into_optimizer().unwrap();
        let mut w = [0.0, 0.0];
        o.apply(&mut w, &mut [3.0, 4.0], &[]).unwrap();
        assert!((w[0] + 0.6).abs() < 1e-15 && (w[1] + 0.8).abs() < 1e-15);
        let e: Result<Optimizer<f32>> =
            SGD::default().clipnorm(1.0).clipvalue(1.0).into_optimizer();
        assert!(e.unwrap_err().to_string().contains("at most one"));
    }

    #[test]
    fn names_resolve_and_typos_get_suggestions() {
        assert_eq!(IntoOptimizer::<f32>::into_optimizer("RMSprop").unwrap().name(), "RMSprop");
        let e = IntoOptimizer::<f32>::into_optimizer("adma").unwrap_err().to_string();
        assert!(e.contains("did you mean \"adam\""), "{e}");
    }

    #[test]
    fn schedules_drive_the_learning_rate_and_callbacks_can_override_it() {
        let mut o: Optimizer<f64> =
            SGD::new(ExponentialDecay::new(1.0, 1, 0.5)).into_optimizer().unwrap();
        let mut w = [0.0];
        assert_eq!(o.learning_rate(), 1.0);
        o.apply(&mut w, &mut [1.0], &[]).unwrap();
        assert_eq!(o.learning_rate(), 0.5);
        o.set_learning_rate(0.1).unwrap();
        assert_eq!(o.learning_rate(), 0.1);
        assert!(o.set_learning_rate(f64::NAN).is_err());
    }
}
