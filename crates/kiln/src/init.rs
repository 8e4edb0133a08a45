//! Weight initializers with Keras's names and definitions, all seeded.

use crate::Seed;
use kiln_tape::Scalar;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

pub use kiln_spec::Initializer;

/// Draws an [`Initializer`]'s values (the enum itself is kiln-spec's, where `model!`
/// reads initializer names too).
pub trait Sample {
    /// Draws values for a parameter of `shape` (Keras's fan rules: the last axis is
    /// fan-out, the one before fan-in, leading axes a receptive field), seeded by `seed`.
    fn sample<T: Scalar>(&self, shape: &[usize], seed: u64) -> Vec<T>;
}

impl Sample for Initializer {
    fn sample<T: Scalar>(&self, shape: &[usize], seed: u64) -> Vec<T> {
        let n: usize = shape.iter().product();
        let (fan_in, fan_out) = fans(shape);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let uniform = |rng: &mut ChaCha8Rng, l: f64| -> Vec<T> {
            (0..n).map(|_| T::of(rng.random_range(-l..l))).collect()
        };
        // Keras's truncated normal keeps draws within 2σ; 0.8796... corrects the variance.
        let truncated = |rng: &mut ChaCha8Rng, var: f64| -> Vec<T> {
            let sd = var.sqrt() / 0.879_625_661_034_239_8;
            (0..n)
                .map(|_| {
                    loop {
                        let z: f64 = StandardNormal.sample(rng);
                        if z.abs() <= 2.0 {
                            break T::of(z * sd);
                        }
                    }
                })
                .collect()
        };
        match *self {
            Initializer::GlorotUniform => uniform(&mut rng, (6.0 / (fan_in + fan_out)).sqrt()),
            Initializer::GlorotNormal => truncated(&mut rng, 2.0 / (fan_in + fan_out)),
            Initializer::HeNormal => truncated(&mut rng, 2.0 / fan_in),
            Initializer::HeUniform => uniform(&mut rng, (6.0 / fan_in).sqrt()),
            Initializer::LecunNormal => truncated(&mut rng, 1.0 / fan_in),
            Initializer::LecunUniform => uniform(&mut rng, (3.0 / fan_in).sqrt()),
            Initializer::Zeros => vec![T::zero(); n],
            Initializer::Ones => vec![T::one(); n],
            Initializer::Constant(v) => vec![T::of(v); n],
            Initializer::RandomNormal { mean, stddev } => (0..n)
                .map(|_| {
                    let z: f64 = StandardNormal.sample(&mut rng);
                    T::of(mean + stddev * z)
                })
                .collect(),
            Initializer::RandomUniform { minval, maxval } => {
                (0..n).map(|_| T::of(minval + (maxval - minval) * rng.random::<f64>())).collect()
            }
            Initializer::Orthogonal { gain } => orthogonal(shape, gain, &mut rng),
            Initializer::UnitForgetBias => {
                // [i, f, c, o] quarters: ones for the forget gate only.
                let q = n / 4;
                (0..n).map(|i| if (q..2 * q).contains(&i) { T::one() } else { T::zero() }).collect()
            }
        }
    }
}

/// Keras's `Orthogonal`: the Q of a normal matrix's QR decomposition (signs fixed so
/// R's diagonal is positive), shaped `[prod(leading), last]` and transposed when wide.
fn orthogonal<T: Scalar>(shape: &[usize], gain: f64, rng: &mut ChaCha8Rng) -> Vec<T> {
    let cols = shape.last().copied().unwrap_or(1);
    let rows: usize = shape[..shape.len().saturating_sub(1)].iter().product();
    let (m, k) = (rows.max(cols), rows.min(cols));
    // Column-major m×k draw; modified Gram–Schmidt gives Q with R's diagonal > 0.
    let mut q: Vec<Vec<f64>> =
        (0..k).map(|_| (0..m).map(|_| StandardNormal.sample(&mut *rng)).collect()).collect();
    for j in 0..k {
        let (done, rest) = q.split_at_mut(j);
        let qj = &mut rest[0];
        for qi in done.iter() {
            let d: f64 = qi.iter().zip(qj.iter()).map(|(a, b)| a * b).sum();
            qj.iter_mut().zip(qi).for_each(|(v, &a)| *v -= d * a);
        }
        let norm = q[j].iter().map(|v| v * v).sum::<f64>().sqrt().max(f64::MIN_POSITIVE);
        q[j].iter_mut().for_each(|v| *v /= norm);
    }
    // Element (row, col) of the rows×cols result.
    (0..rows * cols)
        .map(|e| {
            let (r, c) = (e / cols, e % cols);
            let v = if rows >= cols { q[c][r] } else { q[r][c] };
            T::of(gain * v)
        })
        .collect()
}

/// Keras's `compute_fans`: fan-in and fan-out of a parameter shape (at least 1 each).
pub fn fans(shape: &[usize]) -> (f64, f64) {
    let (i, o) = match shape {
        [] => (1, 1),
        [n] => (*n, *n),
        [i, o] => (*i, *o),
        _ => {
            let rf: usize = shape[..shape.len() - 2].iter().product();
            (shape[shape.len() - 2] * rf, shape[shape.len() - 1] * rf)
        }
    };
    (i.max(1) as f64, o.max(1) as f64)
}

/// Derives a parameter's seed from the model seed and the parameter's name, so each
/// parameter's values depend only on those two (not on declaration order).
pub fn param_seed(seed: Seed, name: &str) -> u64 {
    // FNV-1a over the name, mixed with the seed.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed.0.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fans_follow_keras() {
        assert_eq!(fans(&[784, 128]), (784.0, 128.0));
        assert_eq!(fans(&[3, 3, 32, 64]), (288.0, 576.0));
    }

    #[test]
    fn initializers_have_the_right_spread_and_are_seeded() {
        let v: Vec<f64> = Initializer::GlorotUniform.sample(&[200, 300], 1);
        let l = (6.0f64 / 500.0).sqrt();
        assert!(v.iter().all(|x| x.abs() < l));
        let var = v.iter().map(|x| x * x).sum::<f64>() / v.len() as f64;
        assert!((var - l * l / 3.0).abs() < 0.02 * l * l, "{var}");
        let he: Vec<f64> = Initializer::HeNormal.sample(&[400, 300], 2);
        let var = he.iter().map(|x| x * x).sum::<f64>() / he.len() as f64;
        assert!(
            (var - 2.0 / 400.0).abs() < 0.05 * 2.0 / 400.0,
            "truncation is variance-corrected: {var}"
        );
        assert_eq!(
            Initializer::GlorotUniform.sample::<f32>(&[5, 5], 7),
            Initializer::GlorotUniform.sample::<f32>(&[5, 5], 7)
        );
        assert_eq!(Initializer::Constant(0.5).sample::<f32>(&[2], 0), vec![0.5, 0.5]);
        // Orthogonal: QᵀQ = I for tall, square and wide shapes.
        for (r, c) in [(7, 3), (5, 5), (3, 8)] {
            let q: Vec<f64> = Initializer::Orthogonal { gain: 1.0 }.sample(&[r, c], 4);
            let (a, b) = if r >= c { (c, r) } else { (r, c) };
            for i in 0..a {
                for j in 0..a {
                    let dot: f64 = (0..b)
                        .map(|k| {
                            if r >= c {
                                q[k * c + i] * q[k * c + j]
                            } else {
                                q[i * c + k] * q[j * c + k]
                            }
                        })
                        .sum();
                    assert!((dot - f64::from(u8::from(i == j))).abs() < 1e-12, "{r}x{c}: {dot}");
                }
            }
        }
        let b: Vec<f32> = Initializer::UnitForgetBias.sample(&[8], 0);
        assert_eq!(b, [0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]);
        for n in Initializer::NAMES {
            assert!(Initializer::from_name(n).is_some());
        }
    }
}
