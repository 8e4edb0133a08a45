//! Activation functions with their derivatives, and the row-wise softmax family.
//!
//! Each activation is written once, here; the tape's ops and the fused layer passes
//! both call these loops, so a fix or a speed-up lands everywhere.

use crate::error::{Result, TapeError};
use crate::scalar::Scalar;

/// SELU's fixed scale (Klambauer et al. 2017), as Keras.
pub const SELU_SCALE: f64 = 1.050_700_987_355_480_5;
/// SELU's fixed alpha, as Keras.
pub const SELU_ALPHA: f64 = 1.673_263_242_354_377_3;

/// An elementwise activation, by Keras's name and defaults.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub enum Activation {
    /// `x` ("linear", Keras's default for Dense).
    #[default]
    Linear,
    /// `max(x, 0)`.
    Relu,
    /// `x` for x ≥ 0, else `negative_slope·x`.
    LeakyRelu(f64),
    /// `x` for x > 0, else `alpha·(eˣ − 1)`.
    Elu(f64),
    /// `scale·elu(x, alpha)` with SELU's fixed constants.
    Selu,
    /// Gaussian error linear unit; `approximate` uses the tanh form.
    Gelu {
        /// Use the tanh approximation instead of the exact erf form.
        approximate: bool,
    },
    /// `1 / (1 + e⁻ˣ)`, computed without overflow.
    Sigmoid,
    /// `clip(x/6 + 1/2, 0, 1)` (Keras 3's definition).
    HardSigmoid,
    /// `tanh(x)`.
    Tanh,
    /// `ln(1 + eˣ)`, computed without overflow.
    Softplus,
    /// `x / (1 + |x|)`.
    Softsign,
    /// `x·sigmoid(x)` (also called SiLU).
    Swish,
}

/// The elementwise activations of kiln-spec's table; softmax (a row operation) is not
/// one of them.
impl TryFrom<kiln_spec::Activation> for Activation {
    type Error = kiln_spec::Activation;
    fn try_from(a: kiln_spec::Activation) -> std::result::Result<Self, Self::Error> {
        use kiln_spec::Activation as S;
        Ok(match a {
            S::Linear => Activation::Linear,
            S::Relu => Activation::Relu,
            S::LeakyRelu(s) => Activation::LeakyRelu(s),
            S::Elu(a) => Activation::Elu(a),
            S::Selu => Activation::Selu,
            S::Gelu { approximate } => Activation::Gelu { approximate },
            S::Sigmoid => Activation::Sigmoid,
            S::HardSigmoid => Activation::HardSigmoid,
            S::Tanh => Activation::Tanh,
            S::Softplus => Activation::Softplus,
            S::Softsign => Activation::Softsign,
            S::Swish => Activation::Swish,
            S::Softmax => return Err(a),
        })
    }
}

impl Activation {
    /// Every name [`Activation::from_name`] accepts, for error messages (kiln-spec's
    /// table, which `model!` checks names against too).
    pub const NAMES: &'static [&'static str] = kiln_spec::ELEMENTWISE_ACTIVATIONS;

    /// Looks an activation up by its Keras name, with Keras's default parameters
    /// (`leaky_relu` slope 0.2, `elu` alpha 1.0, exact `gelu`).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::try_from(kiln_spec::Activation::from_name(name)?).ok()
    }

    /// The Keras name of this activation.
    pub fn name(&self) -> &'static str {
        match self {
            Activation::Linear => "linear",
            Activation::Relu => "relu",
            Activation::LeakyRelu(_) => "leaky_relu",
            Activation::Elu(_) => "elu",
            Activation::Selu => "selu",
            Activation::Gelu { .. } => "gelu",
            Activation::Sigmoid => "sigmoid",
            Activation::HardSigmoid => "hard_sigmoid",
            Activation::Tanh => "tanh",
            Activation::Softplus => "softplus",
            Activation::Softsign => "softsign",
            Activation::Swish => "swish",
        }
    }

    /// The activation of one value.
    #[inline]
    pub fn apply<T: Scalar>(self, x: T) -> T {
        let zero = T::zero();
        let one = T::one();
        match self {
            Activation::Linear => x,
            Activation::Relu => x.max(zero),
            Activation::LeakyRelu(s) => {
                if x >= zero {
                    x
                } else {
                    T::of(s) * x
                }
            }
            Activation::Elu(a) => {
                if x > zero {
                    x
                } else {
                    T::of(a) * x.exp_m1()
                }
            }
            Activation::Selu => {
                let e = if x > zero { x } else { T::of(SELU_ALPHA) * x.exp_m1() };
                T::of(SELU_SCALE) * e
            }
            Activation::Gelu { approximate: false } => {
                T::of(0.5) * x * (one + erf(x * T::of(std::f64::consts::FRAC_1_SQRT_2)))
            }
            Activation::Gelu { approximate: true } => {
                let c = T::of((2.0 / std::f64::consts::PI).sqrt());
                let inner = c * (x + T::of(0.044715) * x * x * x);
                T::of(0.5) * x * (one + inner.tanh())
            }
            Activation::Sigmoid => sigmoid(x),
            Activation::HardSigmoid => (x / T::of(6.0) + T::of(0.5)).max(zero).min(one),
            Activation::Tanh => x.tanh(),
            Activation::Softplus => x.max(zero) + (-x.abs()).exp().ln_1p(),
            Activation::Softsign => x / (one + x.abs()),
            Activation::Swish => x * sigmoid(x),
        }
    }

    /// The derivative dy/dx at pre-activation `x` whose activation is `y`.
    ///
    /// Taking both lets each rule use the cheaper one (sigmoid and tanh reuse `y`).
    #[inline]
    pub fn derivative<T: Scalar>(self, x: T, y: T) -> T {
        let zero = T::zero();
        let one = T::one();
        match self {
            Activation::Linear => one,
            Activation::Relu => {
                if x > zero {
                    one
                } else {
                    zero
                }
            }
            Activation::LeakyRelu(s) => {
                if x >= zero {
                    one
                } else {
                    T::of(s)
                }
            }
            Activation::Elu(a) => {
                if x > zero {
                    one
                } else {
                    y + T::of(a)
                }
            }
            Activation::Selu => {
                if x > zero {
                    T::of(SELU_SCALE)
                } else {
                    y + T::of(SELU_SCALE * SELU_ALPHA)
                }
            }
            Activation::Gelu { approximate: false } => {
                let cdf = T::of(0.5) * (one + erf(x * T::of(std::f64::consts::FRAC_1_SQRT_2)));
                let pdf =
                    (T::of(-0.5) * x * x).exp() * T::of(1.0 / (2.0 * std::f64::consts::PI).sqrt());
                cdf + x * pdf
            }
            Activation::Gelu { approximate: true } => {
                let c = T::of((2.0 / std::f64::consts::PI).sqrt());
                let k = T::of(0.044715);
                let t = (c * (x + k * x * x * x)).tanh();
                T::of(0.5) * (one + t)
                    + T::of(0.5) * x * (one - t * t) * c * (one + T::of(3.0) * k * x * x)
            }
            Activation::Sigmoid => y * (one - y),
            Activation::HardSigmoid => {
                if x > T::of(-3.0) && x < T::of(3.0) {
                    T::of(1.0 / 6.0)
                } else {
                    zero
                }
            }
            Activation::Tanh => one - y * y,
            Activation::Softplus => sigmoid(x),
            Activation::Softsign => {
                let d = one + x.abs();
                one / (d * d)
            }
            Activation::Swish => {
                let s = sigmoid(x);
                s + x * s * (one - s)
            }
        }
    }

    /// Whether the derivative needs the pre-activation input (GELU and Swish); every
    /// other activation's derivative follows from its output alone, so layers need not
    /// keep the input.
    pub fn needs_input(self) -> bool {
        matches!(self, Activation::Gelu { .. } | Activation::Swish)
    }

    /// The derivative expressed through the output `y` (for activations where
    /// [`Activation::needs_input`] is false).
    #[inline]
    pub fn derivative_from_output<T: Scalar>(self, y: T) -> T {
        let (zero, one) = (T::zero(), T::one());
        match self {
            Activation::Linear => one,
            Activation::Relu => {
                if y > zero {
                    one
                } else {
                    zero
                }
            }
            Activation::LeakyRelu(s) => {
                if y >= zero {
                    one
                } else {
                    T::of(s)
                }
            }
            Activation::Elu(a) => {
                if y > zero {
                    one
                } else {
                    y + T::of(a)
                }
            }
            Activation::Selu => {
                if y > zero {
                    T::of(SELU_SCALE)
                } else {
                    y + T::of(SELU_SCALE * SELU_ALPHA)
                }
            }
            Activation::Sigmoid => y * (one - y),
            Activation::HardSigmoid => {
                if y > zero && y < one {
                    T::of(1.0 / 6.0)
                } else {
                    zero
                }
            }
            Activation::Tanh => one - y * y,
            // softplus' = σ(x) = 1 − e^(−y)
            Activation::Softplus => one - (-y).exp(),
            // softsign' = 1/(1+|x|)² = (1 − |y|)²
            Activation::Softsign => (one - y.abs()) * (one - y.abs()),
            Activation::Gelu { .. } | Activation::Swish => T::nan(),
        }
    }

    /// `y[i] = act(x[i])`.
    pub fn forward<T: Scalar>(self, x: &[T], y: &mut [T]) -> Result<()> {
        same_len("activation forward", &[x.len(), y.len()])?;
        if self == Activation::Linear {
            y.copy_from_slice(x);
            return Ok(());
        }
        for (o, &v) in y.iter_mut().zip(x) {
            *o = self.apply(v);
        }
        Ok(())
    }

    /// Applies the activation in place (the fused layer passes use this on a GEMM output).
    pub fn forward_inplace<T: Scalar>(self, x: &mut [T]) {
        // float32 sigmoid and tanh: branch-free loops the compiler vectorizes (see
        // `exp_f32`); float64 keeps the exact scalar forms.
        if matches!(self, Activation::Sigmoid | Activation::Tanh)
            && let Some(v) = T::as_f32_mut(x)
        {
            f32_loops::run(self == Activation::Tanh, v);
            return;
        }
        match self {
            Activation::Linear => {}
            // The most common case, as a loop LLVM vectorizes.
            Activation::Relu => {
                x.iter_mut().for_each(|v| *v = if *v > T::zero() { *v } else { T::zero() })
            }
            _ => x.iter_mut().for_each(|v| *v = self.apply(*v)),
        }
    }

    /// `dx[i] = dy[i] · act'(x[i])`, given the forward's input `x` and output `y`.
    pub fn backward<T: Scalar>(self, x: &[T], y: &[T], dy: &[T], dx: &mut [T]) -> Result<()> {
        same_len("activation backward", &[x.len(), y.len(), dy.len(), dx.len()])?;
        for i in 0..dx.len() {
            dx[i] = dy[i] * self.derivative(x[i], y[i]);
        }
        Ok(())
    }
}

/// `eˣ` in float32 without branches, table lookups or float-to-int conversions, so a
/// loop of it vectorizes: `x = n·ln 2 + r` with `|r| ≤ ln 2 / 2` (ln 2 split in two
/// for an exact product), Cephes's degree-6 polynomial for `eʳ`, and `2ⁿ` built in the
/// exponent bits. Within 1 ulp of the correctly rounded value over the whole range;
/// saturates instead of overflowing; NaN stays NaN.
#[inline(always)]
// Cephes's coefficients as published; the compiler rounds them to f32.
#[allow(clippy::excessive_precision)]
pub fn exp_f32(x: f32) -> f32 {
    // n stays in [-126, 127], so 2ⁿ is a normal float.
    let x = x.clamp(-87.336_55, 88.376_26);
    // Round to nearest by adding 1.5·2²³: the sum's low mantissa bits then hold n
    // itself as an integer, so neither a libm call nor a conversion is needed.
    const MAGIC: f32 = 12_582_912.0;
    let t = x * std::f32::consts::LOG2_E + MAGIC;
    let n = t - MAGIC;
    let ni = t.to_bits().wrapping_sub(MAGIC.to_bits());
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5.000_000_1e-1;
    let e = p * r * r + r + 1.0;
    e * f32::from_bits(ni.wrapping_add(127) << 23)
}

/// Logistic sigmoid in float32 as a vectorizable expression (see [`exp_f32`]).
#[inline(always)]
pub fn sigmoid_f32(x: f32) -> f32 {
    1.0 / (1.0 + exp_f32(-x))
}

/// `tanh` in float32 as a vectorizable expression: Cephes's odd polynomial below
/// |x| = 0.625 (where `1 − 2/(e²ˣ + 1)` would cancel), that form above, sign restored.
#[inline(always)]
#[allow(clippy::excessive_precision)]
pub fn tanh_f32(x: f32) -> f32 {
    let a = x.abs();
    let z = x * x;
    let small =
        ((((-5.704_988_7e-3 * z + 2.063_908_9e-2) * z - 5.373_971_6e-2) * z + 1.333_144_2e-1) * z
            - 3.333_328_2e-1)
            * z
            * x
            + x;
    let large = (1.0 - 2.0 / (exp_f32(2.0 * a) + 1.0)).copysign(x);
    if a < 0.625 { small } else { large }
}

/// Logistic sigmoid, exact for large |x| (no overflow in either tail).
#[inline]
pub fn sigmoid<T: Scalar>(x: T) -> T {
    if x >= T::zero() {
        T::one() / (T::one() + (-x).exp())
    } else {
        let e = x.exp();
        e / (T::one() + e)
    }
}

/// The error function, via libm's double-precision `erf` (exact to the last bit in f64).
#[inline]
pub fn erf<T: Scalar>(x: T) -> T {
    T::of(libm::erf(x.as_f64()))
}

fn same_len(op: &'static str, lens: &[usize]) -> Result<()> {
    if lens.windows(2).any(|w| w[0] != w[1]) {
        return Err(TapeError::InvalidArgument {
            op,
            message: format!("buffers have lengths {lens:?}; they must all be equal"),
        });
    }
    Ok(())
}

fn rows_of(op: &'static str, len: usize, cols: usize) -> Result<usize> {
    if cols == 0 || !len.is_multiple_of(cols) {
        return Err(TapeError::InvalidArgument {
            op,
            message: format!(
                "{len} elements do not split into rows of {cols}; the last axis must be non-empty"
            ),
        });
    }
    Ok(len / cols)
}

/// Softmax over each row of `cols` elements, max-subtracted so logits of ±1e4 stay finite.
pub fn softmax<T: Scalar>(x: &[T], cols: usize, y: &mut [T]) -> Result<()> {
    same_len("softmax", &[x.len(), y.len()])?;
    rows_of("softmax", x.len(), cols)?;
    for (xr, yr) in x.chunks_exact(cols).zip(y.chunks_exact_mut(cols)) {
        let m = xr.iter().copied().fold(T::neg_infinity(), T::max);
        let mut s = T::zero();
        for (o, &v) in yr.iter_mut().zip(xr) {
            *o = (v - m).exp();
            s += *o;
        }
        let inv = T::one() / s;
        for o in yr.iter_mut() {
            *o *= inv;
        }
    }
    Ok(())
}

/// Gradient of softmax: `dx = y ⊙ (dy − Σ dy⊙y)` per row, from the forward's output `y`.
pub fn softmax_backward<T: Scalar>(y: &[T], dy: &[T], cols: usize, dx: &mut [T]) -> Result<()> {
    same_len("softmax backward", &[y.len(), dy.len(), dx.len()])?;
    rows_of("softmax backward", y.len(), cols)?;
    for ((yr, dyr), dxr) in
        y.chunks_exact(cols).zip(dy.chunks_exact(cols)).zip(dx.chunks_exact_mut(cols))
    {
        let dot: T = yr.iter().zip(dyr).map(|(&a, &b)| a * b).sum();
        for ((o, &yv), &g) in dxr.iter_mut().zip(yr).zip(dyr) {
            *o = yv * (g - dot);
        }
    }
    Ok(())
}

/// Log-softmax over each row: `x − max − ln Σ e^(x − max)`, finite for any finite logits.
pub fn log_softmax<T: Scalar>(x: &[T], cols: usize, y: &mut [T]) -> Result<()> {
    same_len("log_softmax", &[x.len(), y.len()])?;
    rows_of("log_softmax", x.len(), cols)?;
    for (xr, yr) in x.chunks_exact(cols).zip(y.chunks_exact_mut(cols)) {
        let m = xr.iter().copied().fold(T::neg_infinity(), T::max);
        let s: T = xr.iter().map(|&v| (v - m).exp()).sum();
        let lse = m + s.ln();
        for (o, &v) in yr.iter_mut().zip(xr) {
            *o = v - lse;
        }
    }
    Ok(())
}

/// Gradient of log-softmax: `dx = dy − softmax(x)·Σ dy` per row, from the forward's output.
pub fn log_softmax_backward<T: Scalar>(y: &[T], dy: &[T], cols: usize, dx: &mut [T]) -> Result<()> {
    same_len("log_softmax backward", &[y.len(), dy.len(), dx.len()])?;
    rows_of("log_softmax backward", y.len(), cols)?;
    for ((yr, dyr), dxr) in
        y.chunks_exact(cols).zip(dy.chunks_exact(cols)).zip(dx.chunks_exact_mut(cols))
    {
        let s: T = dyr.iter().copied().sum();
        for ((o, &yv), &g) in dxr.iter_mut().zip(yr).zip(dyr) {
            *o = g - yv.exp() * s;
        }
    }
    Ok(())
}

/// The float32 sigmoid and tanh loops, compiled for the widest vectors this CPU has
/// (each function carries its target features, so the inlined expression vectorizes
/// at that width).
mod f32_loops {
    use super::{sigmoid_f32, tanh_f32};

    #[inline(always)]
    fn portable(tanh: bool, v: &mut [f32]) {
        if tanh {
            v.iter_mut().for_each(|x| *x = tanh_f32(*x));
        } else {
            v.iter_mut().for_each(|x| *x = sigmoid_f32(*x));
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    fn avx512(tanh: bool, v: &mut [f32]) {
        portable(tanh, v)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn avx2(tanh: bool, v: &mut [f32]) {
        portable(tanh, v)
    }

    pub(super) fn run(tanh: bool, v: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        {
            let cpu = crate::kernels::isa::features();
            if cpu.avx512() {
                // SAFETY: the CPU has AVX-512F, AVX2 and FMA (checked just above).
                return unsafe { avx512(tanh, v) };
            }
            if cpu.avx2_fma() {
                // SAFETY: the CPU has AVX2 and FMA (checked just above).
                return unsafe { avx2(tanh, v) };
            }
        }
        portable(tanh, v)
    }
}
