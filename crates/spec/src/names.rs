//! Name tables and naming rules: activations, initializers and paddings by their Keras
//! names, "did you mean" for every name a user types, and Keras's layer and model
//! naming (`dense`, `dense_1`; `ConvNet` → `conv_net`).

use std::collections::HashMap;

/// The candidate closest to `name` by edit distance (insertions, deletions,
/// substitutions and adjacent transpositions each count one), when it is close enough
/// to be a plausible typo: at most a third of the name's length, at least one edit.
pub fn did_you_mean<'a>(name: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let a: Vec<char> = name.to_ascii_lowercase().chars().collect();
    let dist = |c: &str| {
        let b: Vec<char> = c.to_ascii_lowercase().chars().collect();
        let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
        for (i, row) in d.iter_mut().enumerate() {
            row[0] = i;
        }
        for (j, v) in d[0].iter_mut().enumerate() {
            *v = j;
        }
        for i in 1..=a.len() {
            for j in 1..=b.len() {
                let cost = usize::from(a[i - 1] != b[j - 1]);
                d[i][j] = (d[i - 1][j - 1] + cost).min(d[i - 1][j] + 1).min(d[i][j - 1] + 1);
                if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                    d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
                }
            }
        }
        d[a.len()][b.len()]
    };
    candidates
        .iter()
        .map(|c| (dist(c), *c))
        .min()
        .filter(|(d, _)| *d <= (name.len() / 3).max(1) + usize::from(name.len() > 6))
        .map(|(_, c)| c)
}

/// `ConvNet` → `conv_net`, `MaxPooling2D` → `max_pooling2d` (Keras's `to_snake_case`).
pub fn snake_case(s: &str) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Hands out Keras's layer names: the first layer of a base is `base`, the next
/// `base_1`, then `base_2`, ...
#[derive(Clone, Debug, Default)]
pub struct Namer {
    counts: HashMap<String, usize>,
}

impl Namer {
    /// A namer with no name given out yet.
    pub fn new() -> Self {
        Namer::default()
    }
    /// The next name for `base`.
    pub fn next(&mut self, base: &str) -> String {
        let c = self.counts.entry(base.to_string()).or_insert(0);
        let n = if *c == 0 { base.to_string() } else { format!("{base}_{c}") };
        *c += 1;
        n
    }
}

/// An activation by its Keras name, with Keras's default parameters.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub enum Activation {
    /// `x` (Keras's default: `activation=None`).
    #[default]
    Linear,
    /// `max(x, 0)`.
    Relu,
    /// `x` for x ≥ 0, else `negative_slope·x` (the name's default slope is 0.2).
    LeakyRelu(f64),
    /// `x` for x > 0, else `alpha·(eˣ − 1)`.
    Elu(f64),
    /// Scaled ELU with SELU's fixed constants.
    Selu,
    /// Gaussian error linear unit; `approximate` uses the tanh form.
    Gelu {
        /// Use the tanh approximation instead of the exact erf form.
        approximate: bool,
    },
    /// `1 / (1 + e⁻ˣ)`.
    Sigmoid,
    /// `clip(x/6 + 1/2, 0, 1)`.
    HardSigmoid,
    /// `tanh(x)`.
    Tanh,
    /// `ln(1 + eˣ)`.
    Softplus,
    /// `x / (1 + |x|)`.
    Softsign,
    /// `x·sigmoid(x)` (also `silu`).
    Swish,
    /// Softmax over the last axis.
    Softmax,
}

/// Every activation name, elementwise ones first and `softmax` last.
pub const ACTIVATIONS: &[&str] = &[
    "linear",
    "relu",
    "leaky_relu",
    "elu",
    "selu",
    "gelu",
    "sigmoid",
    "hard_sigmoid",
    "tanh",
    "softplus",
    "softsign",
    "swish",
    "silu",
    "softmax",
];

/// The elementwise activation names (all but `softmax`).
pub const ELEMENTWISE_ACTIVATIONS: &[&str] = ACTIVATIONS.split_at(ACTIVATIONS.len() - 1).0;

impl Activation {
    /// Looks an activation up by its Keras name (`None` is read as linear, as Keras).
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "linear" | "None" | "none" => Activation::Linear,
            "relu" => Activation::Relu,
            "leaky_relu" => Activation::LeakyRelu(0.2),
            "elu" => Activation::Elu(1.0),
            "selu" => Activation::Selu,
            "gelu" => Activation::Gelu { approximate: false },
            "sigmoid" => Activation::Sigmoid,
            "hard_sigmoid" => Activation::HardSigmoid,
            "tanh" => Activation::Tanh,
            "softplus" => Activation::Softplus,
            "softsign" => Activation::Softsign,
            "swish" | "silu" => Activation::Swish,
            "softmax" => Activation::Softmax,
            _ => return None,
        })
    }

    /// The Keras name.
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
            Activation::Softmax => "softmax",
        }
    }
}

/// How a parameter's first values are drawn (Keras's initializer names); kiln's
/// `init` module draws them.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub enum Initializer {
    /// U(−l, l) with l = √(6 / (fan_in + fan_out)) — Keras's default for kernels.
    #[default]
    GlorotUniform,
    /// Truncated normal with σ = √(2 / (fan_in + fan_out)).
    GlorotNormal,
    /// Truncated normal with σ = √(2 / fan_in).
    HeNormal,
    /// U(−l, l) with l = √(6 / fan_in).
    HeUniform,
    /// Truncated normal with σ = √(1 / fan_in).
    LecunNormal,
    /// U(−l, l) with l = √(3 / fan_in).
    LecunUniform,
    /// All zeros — Keras's default for biases.
    Zeros,
    /// All ones.
    Ones,
    /// Every value the same.
    Constant(f64),
    /// N(mean, stddev²).
    RandomNormal {
        /// Mean.
        mean: f64,
        /// Standard deviation.
        stddev: f64,
    },
    /// U(minval, maxval).
    RandomUniform {
        /// Lower bound.
        minval: f64,
        /// Upper bound.
        maxval: f64,
    },
    /// A (semi-)orthogonal matrix times `gain`, from the QR decomposition of a normal
    /// draw — Keras's default for recurrent kernels.
    Orthogonal {
        /// The scale.
        gain: f64,
    },
    /// An LSTM bias with Keras's `unit_forget_bias`: zeros, and ones for the forget gate
    /// (the second quarter).
    UnitForgetBias,
}

/// Every initializer name [`Initializer::from_name`] accepts.
pub const INITIALIZERS: &[&str] = &[
    "glorot_uniform",
    "glorot_normal",
    "he_normal",
    "he_uniform",
    "lecun_normal",
    "lecun_uniform",
    "zeros",
    "ones",
    "random_normal",
    "random_uniform",
    "orthogonal",
];

impl Initializer {
    /// Every name [`Initializer::from_name`] accepts.
    pub const NAMES: &'static [&'static str] = INITIALIZERS;

    /// Looks an initializer up by its Keras name, with Keras's default arguments.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "glorot_uniform" => Initializer::GlorotUniform,
            "glorot_normal" => Initializer::GlorotNormal,
            "he_normal" => Initializer::HeNormal,
            "he_uniform" => Initializer::HeUniform,
            "lecun_normal" => Initializer::LecunNormal,
            "lecun_uniform" => Initializer::LecunUniform,
            "zeros" => Initializer::Zeros,
            "ones" => Initializer::Ones,
            "random_normal" => Initializer::RandomNormal { mean: 0.0, stddev: 0.05 },
            "random_uniform" => Initializer::RandomUniform { minval: -0.05, maxval: 0.05 },
            "orthogonal" => Initializer::Orthogonal { gain: 1.0 },
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_name_resolves_and_softmax_is_last() {
        for n in ACTIVATIONS {
            assert!(Activation::from_name(n).is_some(), "{n}");
        }
        assert!(!ELEMENTWISE_ACTIVATIONS.contains(&"softmax"));
        assert_eq!(ELEMENTWISE_ACTIVATIONS.len() + 1, ACTIVATIONS.len());
        for n in INITIALIZERS {
            assert!(Initializer::from_name(n).is_some(), "{n}");
        }
    }

    #[test]
    fn suggestions_and_names() {
        assert_eq!(did_you_mean("rleu", ACTIVATIONS), Some("relu"));
        assert_eq!(did_you_mean("Dence", &["Dense", "Conv2D"]), Some("Dense"));
        assert_eq!(did_you_mean("qqqqqq", &["Dense"]), None);
        assert_eq!(snake_case("ConvNet"), "conv_net");
        let mut n = Namer::new();
        assert_eq!(
            [n.next("dense"), n.next("dense"), n.next("conv2d")],
            ["dense", "dense_1", "conv2d"]
        );
    }
}
