//! The update rules of Keras 3's optimizers, one pass over the trainable buffer each.
//!
//! Operation order follows Keras's `update_step` so float32 results agree with Keras to
//! rounding.

use kiln_tape::Scalar;
use kiln_tape::kernels::parallel::split_zip;
use kiln_tape::kernels::simd::with_simd;

/// Trainable values below which an update stays on one thread (the fork-join costs a
/// few microseconds; an AVX-512 Adam step over 16k values takes about as long).
const PARALLEL_MIN: usize = 1 << 14;

/// One optimizer's per-element update and its state ("slots").
pub trait UpdateRule<T: Scalar>: Send {
    /// Keras's class name ("Adam").
    fn name(&self) -> &'static str;
    /// Allocates state for `n` trainable values (called once, before the first step).
    fn build(&mut self, n: usize);
    /// Updates `w` in place from gradient `g`; `step` counts from 1.
    fn update(&mut self, w: &mut [T], g: &[T], lr: T, step: u64);
    /// The state buffers by name, for checkpoints.
    fn slots(&mut self) -> Vec<(&'static str, &mut Vec<T>)>;
    /// Scalar state beside the buffers (Nadam's momentum product), for checkpoints.
    fn scalars(&mut self) -> Vec<(&'static str, &mut f64)> {
        Vec::new()
    }
}

fn c<T: Scalar>(v: f64) -> T {
    T::of(v)
}

/// A hyperparameter as Keras's TensorFlow backend sees it after `ops.cast`: the Python
/// float first becomes a float32 tensor, then the variable's dtype. Doing the same makes
/// f64 runs agree with Keras's float64 runs to the last bits; in f32 it changes nothing.
pub(crate) fn kcast<T: Scalar>(v: f64) -> T {
    T::of(f64::from(v as f32))
}

/// Stochastic gradient descent with optional (Nesterov) momentum.
#[derive(Clone, Debug, PartialEq)]
pub struct SgdRule<T> {
    pub(crate) momentum: f64,
    pub(crate) nesterov: bool,
    pub(crate) m: Vec<T>,
}

impl<T: Scalar> UpdateRule<T> for SgdRule<T> {
    fn name(&self) -> &'static str {
        "SGD"
    }
    fn build(&mut self, n: usize) {
        if self.momentum != 0.0 {
            self.m = vec![T::zero(); n];
        }
    }
    fn update(&mut self, w: &mut [T], g: &[T], lr: T, _step: u64) {
        if self.momentum == 0.0 {
            split_zip([w], g, PARALLEL_MIN, &|[w], g| {
                with_simd(|| {
                    for (w, &g) in w.iter_mut().zip(g) {
                        *w -= g * lr;
                    }
                })
            });
            return;
        }
        let (mom, nesterov): (T, bool) = (kcast(self.momentum), self.nesterov);
        split_zip([w, &mut self.m[..]], g, PARALLEL_MIN, &|[w, m], g| {
            with_simd(|| {
                for ((w, &g), m) in w.iter_mut().zip(g).zip(m.iter_mut()) {
                    *m = -g * lr + *m * mom;
                    if nesterov {
                        *w += -g * lr + *m * mom;
                    } else {
                        *w += *m;
                    }
                }
            })
        });
    }
    fn slots(&mut self) -> Vec<(&'static str, &mut Vec<T>)> {
        vec![("momentum", &mut self.m)]
    }
}

/// Adam (and AMSGrad), with Keras's un-bias-corrected epsilon.
#[derive(Clone, Debug, PartialEq)]
pub struct AdamRule<T> {
    pub(crate) beta_1: f64,
    pub(crate) beta_2: f64,
    pub(crate) epsilon: f64,
    pub(crate) amsgrad: bool,
    pub(crate) m: Vec<T>,
    pub(crate) v: Vec<T>,
    pub(crate) v_hat: Vec<T>,
}

impl<T: Scalar> UpdateRule<T> for AdamRule<T> {
    fn name(&self) -> &'static str {
        "Adam"
    }
    fn build(&mut self, n: usize) {
        self.m = vec![T::zero(); n];
        self.v = vec![T::zero(); n];
        if self.amsgrad {
            self.v_hat = vec![T::zero(); n];
        }
    }
    fn update(&mut self, w: &mut [T], g: &[T], lr: T, step: u64) {
        let eps: T = c(self.epsilon);
        let t = T::of(step as f64);
        let (b1_power, b2_power) =
            (kcast::<T>(self.beta_1).powf(t), kcast::<T>(self.beta_2).powf(t));
        let alpha = lr * (T::one() - b2_power).sqrt() / (T::one() - b1_power);
        let (one_b1, one_b2): (T, T) = (c(1.0 - self.beta_1), c(1.0 - self.beta_2));
        if self.amsgrad {
            let bufs = [w, &mut self.m[..], &mut self.v[..], &mut self.v_hat[..]];
            split_zip(bufs, g, PARALLEL_MIN, &|[w, m, v, v_hat], g| {
                with_simd(|| {
                    for i in 0..w.len() {
                        let g = g[i];
                        m[i] = m[i] + (g - m[i]) * one_b1;
                        v[i] = v[i] + (g * g - v[i]) * one_b2;
                        v_hat[i] = v_hat[i].max(v[i]);
                        w[i] -= (m[i] * alpha) / (v_hat[i].sqrt() + eps);
                    }
                })
            });
        } else {
            let bufs = [w, &mut self.m[..], &mut self.v[..]];
            split_zip(bufs, g, PARALLEL_MIN, &|[w, m, v], g| {
                with_simd(|| {
                    for (((w, &g), m), v) in w.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut())
                    {
                        *m += (g - *m) * one_b1;
                        *v += (g * g - *v) * one_b2;
                        *w -= (*m * alpha) / (v.sqrt() + eps);
                    }
                })
            });
        }
    }
    fn slots(&mut self) -> Vec<(&'static str, &mut Vec<T>)> {
        vec![("m", &mut self.m), ("v", &mut self.v), ("v_hat", &mut self.v_hat)]
    }
}

/// RMSprop, optionally centered and with momentum; epsilon inside the square root.
#[derive(Clone, Debug, PartialEq)]
pub struct RmsPropRule<T> {
    pub(crate) rho: f64,
    pub(crate) momentum: f64,
    pub(crate) epsilon: f64,
    pub(crate) centered: bool,
    pub(crate) velocity: Vec<T>,
    pub(crate) average_grad: Vec<T>,
    pub(crate) mom: Vec<T>,
}

impl<T: Scalar> UpdateRule<T> for RmsPropRule<T> {
    fn name(&self) -> &'static str {
        "RMSprop"
    }
    fn build(&mut self, n: usize) {
        self.velocity = vec![T::zero(); n];
        if self.centered {
            self.average_grad = vec![T::zero(); n];
        }
        if self.momentum > 0.0 {
            self.mom = vec![T::zero(); n];
        }
    }
    fn update(&mut self, w: &mut [T], g: &[T], lr: T, _step: u64) {
        let (rho, eps, mom): (T, T, T) = (c(self.rho), c(self.epsilon), c(self.momentum));
        let one_rho = T::one() - rho;
        for i in 0..w.len() {
            let g = g[i];
            self.velocity[i] = rho * self.velocity[i] + one_rho * (g * g);
            let denominator = if self.centered {
                self.average_grad[i] = rho * self.average_grad[i] + one_rho * g;
                self.velocity[i] - self.average_grad[i] * self.average_grad[i] + eps
            } else {
                self.velocity[i] + eps
            };
            let increment = lr * g / denominator.sqrt();
            if self.momentum > 0.0 {
                self.mom[i] = mom * self.mom[i] + increment;
                w[i] -= self.mom[i];
            } else {
                w[i] -= increment;
            }
        }
    }
    fn slots(&mut self) -> Vec<(&'static str, &mut Vec<T>)> {
        vec![
            ("velocity", &mut self.velocity),
            ("average_gradient", &mut self.average_grad),
            ("momentum", &mut self.mom),
        ]
    }
}

/// Adagrad with Keras's initial accumulator and epsilon inside the square root.
#[derive(Clone, Debug, PartialEq)]
pub struct AdagradRule<T> {
    pub(crate) initial_accumulator_value: f64,
    pub(crate) epsilon: f64,
    pub(crate) acc: Vec<T>,
}

impl<T: Scalar> UpdateRule<T> for AdagradRule<T> {
    fn name(&self) -> &'static str {
        "Adagrad"
    }
    fn build(&mut self, n: usize) {
        self.acc = vec![kcast(self.initial_accumulator_value); n];
    }
    fn update(&mut self, w: &mut [T], g: &[T], lr: T, _step: u64) {
        let eps: T = c(self.epsilon);
        for ((w, &g), a) in w.iter_mut().zip(g).zip(self.acc.iter_mut()) {
            *a += g * g;
            *w -= lr * g / (*a + eps).sqrt();
        }
    }
    fn slots(&mut self) -> Vec<(&'static str, &mut Vec<T>)> {
        vec![("accumulator", &mut self.acc)]
    }
}

/// Adadelta.
#[derive(Clone, Debug, PartialEq)]
pub struct AdadeltaRule<T> {
    pub(crate) rho: f64,
    pub(crate) epsilon: f64,
    pub(crate) acc_grad: Vec<T>,
    pub(crate) acc_delta: Vec<T>,
}

impl<T: Scalar> UpdateRule<T> for AdadeltaRule<T> {
    fn name(&self) -> &'static str {
        "Adadelta"
    }
    fn build(&mut self, n: usize) {
        self.acc_grad = vec![T::zero(); n];
        self.acc_delta = vec![T::zero(); n];
    }
    fn update(&mut self, w: &mut [T], g: &[T], lr: T, _step: u64) {
        let (rho, eps): (T, T) = (c(self.rho), c(self.epsilon));
        for i in 0..w.len() {
            let g = g[i];
            self.acc_grad[i] = rho * self.acc_grad[i] + (T::one() - rho) * g * g;
            let delta = -(self.acc_delta[i] + eps).sqrt() * g / (self.acc_grad[i] + eps).sqrt();
            self.acc_delta[i] = rho * self.acc_delta[i] + (T::one() - rho) * delta * delta;
            w[i] += lr * delta;
        }
    }
    fn slots(&mut self) -> Vec<(&'static str, &mut Vec<T>)> {
        vec![
            ("accumulated_grad", &mut self.acc_grad),
            ("accumulated_delta_var", &mut self.acc_delta),
        ]
    }
}

/// Adamax (the infinity-norm Adam).
#[derive(Clone, Debug, PartialEq)]
pub struct AdamaxRule<T> {
    pub(crate) beta_1: f64,
    pub(crate) beta_2: f64,
    pub(crate) epsilon: f64,
    pub(crate) m: Vec<T>,
    pub(crate) u: Vec<T>,
}

impl<T: Scalar> UpdateRule<T> for AdamaxRule<T> {
    fn name(&self) -> &'static str {
        "Adamax"
    }
    fn build(&mut self, n: usize) {
        self.m = vec![T::zero(); n];
        self.u = vec![T::zero(); n];
    }
    fn update(&mut self, w: &mut [T], g: &[T], lr: T, step: u64) {
        let (b2, eps): (T, T) = (c(self.beta_2), c(self.epsilon));
        let b1_power = kcast::<T>(self.beta_1).powf(T::of(step as f64));
        let one_b1: T = c(1.0 - self.beta_1);
        for i in 0..w.len() {
            let g = g[i];
            self.m[i] = self.m[i] + (g - self.m[i]) * one_b1;
            self.u[i] = (b2 * self.u[i]).max(g.abs());
            w[i] -= (lr * self.m[i]) / ((T::one() - b1_power) * (self.u[i] + eps));
        }
    }
    fn slots(&mut self) -> Vec<(&'static str, &mut Vec<T>)> {
        vec![("m", &mut self.m), ("u", &mut self.u)]
    }
}

/// Nadam (Adam with Nesterov momentum and Keras's momentum schedule).
#[derive(Clone, Debug, PartialEq)]
pub struct NadamRule<T> {
    pub(crate) beta_1: f64,
    pub(crate) beta_2: f64,
    pub(crate) epsilon: f64,
    pub(crate) u_product: f64,
    pub(crate) m: Vec<T>,
    pub(crate) v: Vec<T>,
}

impl<T: Scalar> UpdateRule<T> for NadamRule<T> {
    fn name(&self) -> &'static str {
        "Nadam"
    }
    fn build(&mut self, n: usize) {
        self.m = vec![T::zero(); n];
        self.v = vec![T::zero(); n];
        self.u_product = 1.0;
    }
    fn update(&mut self, w: &mut [T], g: &[T], lr: T, step: u64) {
        let (b1, b2, eps): (T, T, T) = (kcast(self.beta_1), kcast(self.beta_2), c(self.epsilon));
        let decay: T = kcast(0.96);
        let u_t = b1 * (T::one() - c::<T>(0.5) * decay.powf(T::of(step as f64 * 0.004)));
        let u_t_1 = b1 * (T::one() - c::<T>(0.5) * decay.powf(T::of((step + 1) as f64 * 0.004)));
        let u_product_t = T::of(self.u_product) * u_t;
        self.u_product = u_product_t.as_f64();
        let u_product_t_1 = u_product_t * u_t_1;
        let b2_power = b2.powf(T::of(step as f64));
        for i in 0..w.len() {
            let g = g[i];
            self.m[i] = self.m[i] + (g - self.m[i]) * (T::one() - b1);
            self.v[i] = self.v[i] + (g * g - self.v[i]) * (T::one() - b2);
            let m_hat = u_t_1 * self.m[i] / (T::one() - u_product_t_1)
                + (T::one() - u_t) * g / (T::one() - u_product_t);
            let v_hat = self.v[i] / (T::one() - b2_power);
            w[i] -= (m_hat * lr) / (v_hat.sqrt() + eps);
        }
    }
    fn slots(&mut self) -> Vec<(&'static str, &mut Vec<T>)> {
        vec![("m", &mut self.m), ("v", &mut self.v)]
    }
    fn scalars(&mut self) -> Vec<(&'static str, &mut f64)> {
        vec![("u_product", &mut self.u_product)]
    }
}

/// Lion (sign of an interpolated momentum).
#[derive(Clone, Debug, PartialEq)]
pub struct LionRule<T> {
    pub(crate) beta_1: f64,
    pub(crate) beta_2: f64,
    pub(crate) m: Vec<T>,
}

impl<T: Scalar> UpdateRule<T> for LionRule<T> {
    fn name(&self) -> &'static str {
        "Lion"
    }
    fn build(&mut self, n: usize) {
        self.m = vec![T::zero(); n];
    }
    fn update(&mut self, w: &mut [T], g: &[T], lr: T, _step: u64) {
        let (b1, b2): (T, T) = (kcast(self.beta_1), kcast(self.beta_2));
        for ((w, &g), m) in w.iter_mut().zip(g).zip(self.m.iter_mut()) {
            let d = *m * b1 + g * (T::one() - b1);
            let s = if d > T::zero() {
                T::one()
            } else if d < T::zero() {
                -T::one()
            } else {
                T::zero()
            };
            *w -= lr * s;
            *m = *m * b2 + g * (T::one() - b2);
        }
    }
    fn slots(&mut self) -> Vec<(&'static str, &mut Vec<T>)> {
        vec![("momentum", &mut self.m)]
    }
}
