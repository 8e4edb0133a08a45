//! SimpleRNN, LSTM and GRU on `[steps, features]` samples, with Keras's weight layouts
//! (kernel `[in, g·u]`, recurrent kernel `[u, g·u]`; gates i, f, c, o for LSTM and z,
//! r, h for GRU) so that Keras checkpoints map one to one.

use super::{activation, at_least_one, initializer};
use crate::LayerSpec;
use crate::names::{Activation as Act, Initializer};
use crate::value::{ArgDef, Args, Default as D, Kind, SpecError};

/// What every recurrent layer shares.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Recurrent {
    /// Units of the state (and of each output step).
    pub units: usize,
    /// The activation of the candidate state and output (tanh).
    pub activation: Act,
    /// The gates' activation (sigmoid; SimpleRNN has none).
    pub recurrent_activation: Act,
    /// Whether the gates have biases.
    pub use_bias: bool,
    /// How the input kernel starts.
    pub kernel_initializer: Initializer,
    /// How the recurrent kernel starts (orthogonal).
    pub recurrent_initializer: Initializer,
    /// How the bias starts.
    pub bias_initializer: Initializer,
    /// Output every step (`[steps, units]`) instead of the last (`[units]`).
    pub return_sequences: bool,
    /// Read the steps last to first (and return the outputs in that order, as Keras).
    pub go_backwards: bool,
    /// Fraction of the input's features dropped while training, one mask per sequence
    /// reused at every step (Keras's `dropout`).
    pub dropout: f64,
    /// Fraction of the previous state's units dropped where it enters the recurrent
    /// product while training, one mask per sequence (Keras's `recurrent_dropout`;
    /// then, as in Keras, every gate draws its own input and state masks).
    pub recurrent_dropout: f64,
}

impl Recurrent {
    /// `units` with Keras's defaults.
    pub fn new(units: usize) -> Self {
        Recurrent {
            units,
            activation: Act::Tanh,
            recurrent_activation: Act::Sigmoid,
            use_bias: true,
            kernel_initializer: Initializer::GlorotUniform,
            recurrent_initializer: Initializer::Orthogonal { gain: 1.0 },
            bias_initializer: Initializer::Zeros,
            return_sequences: false,
            go_backwards: false,
            dropout: 0.0,
            recurrent_dropout: 0.0,
        }
    }

    fn from_args(class: &str, a: &Args, gates: bool) -> Result<Self, SpecError> {
        let units = a.count("units")?;
        at_least_one(class, "units", units)?;
        let r = Recurrent {
            units,
            activation: activation(a, "activation")?,
            recurrent_activation: if gates {
                activation(a, "recurrent_activation")?
            } else {
                Act::Sigmoid
            },
            use_bias: a.bool("use_bias")?,
            kernel_initializer: initializer(a, "kernel_initializer")?,
            recurrent_initializer: initializer(a, "recurrent_initializer")?,
            bias_initializer: initializer(a, "bias_initializer")?,
            return_sequences: a.bool("return_sequences")?,
            go_backwards: a.bool("go_backwards")?,
            dropout: a.number("dropout")?,
            recurrent_dropout: a.number("recurrent_dropout")?,
        };
        r.check_rates(class)?;
        for (name, act) in
            [("activation", r.activation), ("recurrent_activation", r.recurrent_activation)]
        {
            if act == Act::Softmax {
                return Err(SpecError::arg(
                    name,
                    format!("{class} takes an elementwise {name}, not softmax"),
                ));
            }
        }
        Ok(r)
    }

    /// Both dropout rates in [0, 1) (Keras clips other values, and ignores a rate of 1,
    /// silently; kiln refuses them).
    pub fn check_rates(&self, class: &str) -> Result<(), SpecError> {
        for (name, rate) in
            [("dropout", self.dropout), ("recurrent_dropout", self.recurrent_dropout)]
        {
            if !(0.0..1.0).contains(&rate) {
                return Err(SpecError::arg(
                    name,
                    format!(
                        "{class}'s {name} must be in [0, 1), got {rate}: it is the fraction of {} dropped while training",
                        if name == "dropout" { "input features" } else { "state units" }
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The shape rule of every recurrent layer.
    pub fn output(&self, class: &str, input: &[usize]) -> Result<Vec<usize>, SpecError> {
        self.check_rates(class).map_err(|e| SpecError::layer(e.message))?;
        if self.units == 0 {
            return Err(SpecError::layer(format!("{class} needs at least 1 unit, got 0")));
        }
        let &[steps, features] = input else {
            let fix = match input {
                [n] => format!(
                    ": after another recurrent layer, give that one return_sequences = true; otherwise add Reshape([steps, features]) before it (steps × features = {n}, e.g. Reshape([28, 28]) for a 784-pixel image)"
                ),
                [h, w, 1] => format!(": add Reshape([{h}, {w}]) to read each row as a step"),
                _ => String::new(),
            };
            return Err(SpecError::layer(format!(
                "{class} needs a sequence [steps, features] but gets {input:?}{fix}"
            )));
        };
        if steps == 0 || features == 0 {
            return Err(SpecError::layer(format!(
                "{class} needs at least one step of one feature, got {input:?}"
            )));
        }
        Ok(if self.return_sequences { vec![steps, self.units] } else { vec![self.units] })
    }
}

macro_rules! recurrent_args {
    ($($extra:expr),* $(,)?) => {
        &[
            ArgDef::new("units", Kind::Count, D::Required),
            ArgDef::new("activation", Kind::Activation, D::Name("tanh")),
            ArgDef::new("recurrent_activation", Kind::Activation, D::Name("sigmoid")),
            ArgDef::new("use_bias", Kind::Bool, D::Bool(true)),
            ArgDef::new("kernel_initializer", Kind::Initializer, D::Name("glorot_uniform")),
            ArgDef::new("recurrent_initializer", Kind::Initializer, D::Name("orthogonal")),
            ArgDef::new("bias_initializer", Kind::Initializer, D::Name("zeros")),
            ArgDef::new("return_sequences", Kind::Bool, D::Bool(false)),
            ArgDef::new("go_backwards", Kind::Bool, D::Bool(false)),
            ArgDef::new("dropout", Kind::Number, D::Float(0.0)),
            ArgDef::new("recurrent_dropout", Kind::Number, D::Float(0.0)),
            $($extra,)*
        ]
    };
}

/// Keras `SimpleRNN`: `h = act(x·W + b + h·U)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SimpleRNN(pub Recurrent);

impl LayerSpec for SimpleRNN {
    const CLASS: &'static str = "SimpleRNN";
    const BASE_NAME: &'static str = "simple_rnn";
    const ARGS: &'static [ArgDef] = &[
        ArgDef::new("units", Kind::Count, D::Required),
        ArgDef::new("activation", Kind::Activation, D::Name("tanh")),
        ArgDef::new("use_bias", Kind::Bool, D::Bool(true)),
        ArgDef::new("kernel_initializer", Kind::Initializer, D::Name("glorot_uniform")),
        ArgDef::new("recurrent_initializer", Kind::Initializer, D::Name("orthogonal")),
        ArgDef::new("bias_initializer", Kind::Initializer, D::Name("zeros")),
        ArgDef::new("return_sequences", Kind::Bool, D::Bool(false)),
        ArgDef::new("go_backwards", Kind::Bool, D::Bool(false)),
        ArgDef::new("dropout", Kind::Number, D::Float(0.0)),
        ArgDef::new("recurrent_dropout", Kind::Number, D::Float(0.0)),
    ];
    const POSITIONAL: usize = 1;
    const DOC: &'static str =
        "A fully connected recurrent layer: `h = act(x·W + b + h·U)` at each step.";
    fn from_args(a: &Args) -> Result<Self, SpecError> {
        Ok(SimpleRNN(Recurrent::from_args(Self::CLASS, a, false)?))
    }
    fn output(&self, input: &[usize]) -> Result<Vec<usize>, SpecError> {
        self.0.output(Self::CLASS, input)
    }
}

/// Keras `LSTM` (gates i, f, c, o).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LSTM {
    /// What every recurrent layer shares.
    pub rnn: Recurrent,
    /// Start the forget gate's bias at 1 (Keras's default; the bias initializer is then
    /// zeros elsewhere).
    pub unit_forget_bias: bool,
}

impl LayerSpec for LSTM {
    const CLASS: &'static str = "LSTM";
    const BASE_NAME: &'static str = "lstm";
    const ARGS: &'static [ArgDef] =
        recurrent_args![ArgDef::new("unit_forget_bias", Kind::Bool, D::Bool(true))];
    const POSITIONAL: usize = 1;
    const DOC: &'static str =
        "Long short-term memory: gated cell state over the steps of a sequence.";
    fn from_args(a: &Args) -> Result<Self, SpecError> {
        Ok(LSTM {
            rnn: Recurrent::from_args(Self::CLASS, a, true)?,
            unit_forget_bias: a.bool("unit_forget_bias")?,
        })
    }
    fn output(&self, input: &[usize]) -> Result<Vec<usize>, SpecError> {
        self.rnn.output(Self::CLASS, input)
    }
}

/// Keras `GRU` (gates z, r, h).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GRU {
    /// What every recurrent layer shares.
    pub rnn: Recurrent,
    /// Apply the reset gate after the recurrent product (Keras 3's default, with a
    /// `[2, 3u]` bias) rather than before it (`[3u]` bias).
    pub reset_after: bool,
}

impl LayerSpec for GRU {
    const CLASS: &'static str = "GRU";
    const BASE_NAME: &'static str = "gru";
    const ARGS: &'static [ArgDef] =
        recurrent_args![ArgDef::new("reset_after", Kind::Bool, D::Bool(true))];
    const POSITIONAL: usize = 1;
    const DOC: &'static str = "Gated recurrent unit over the steps of a sequence.";
    fn from_args(a: &Args) -> Result<Self, SpecError> {
        Ok(GRU {
            rnn: Recurrent::from_args(Self::CLASS, a, true)?,
            reset_after: a.bool("reset_after")?,
        })
    }
    fn output(&self, input: &[usize]) -> Result<Vec<usize>, SpecError> {
        self.rnn.output(Self::CLASS, input)
    }
}

/// The recurrent layer a [`Bidirectional`] wraps.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Wrapped {
    /// An LSTM.
    LSTM(LSTM),
    /// A GRU.
    GRU(GRU),
    /// A SimpleRNN.
    SimpleRNN(SimpleRNN),
}

impl Wrapped {
    /// The wrapped layer's shared settings.
    pub fn rnn(&self) -> &Recurrent {
        match self {
            Wrapped::LSTM(l) => &l.rnn,
            Wrapped::GRU(g) => &g.rnn,
            Wrapped::SimpleRNN(s) => &s.0,
        }
    }
    /// Its Keras base name (`lstm`), for the `forward_lstm` / `backward_lstm` weights.
    pub fn base_name(&self) -> &'static str {
        match self {
            Wrapped::LSTM(_) => LSTM::BASE_NAME,
            Wrapped::GRU(_) => GRU::BASE_NAME,
            Wrapped::SimpleRNN(_) => SimpleRNN::BASE_NAME,
        }
    }
}

/// How [`Bidirectional`] combines the two directions' outputs.
pub const MERGE_MODES: &[&str] = &["concat", "sum", "mul", "ave"];

/// Keras `Bidirectional(layer, merge_mode)`: the wrapped recurrent layer run over the
/// sequence forwards and (as a copy with its own weights) backwards, the outputs merged.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bidirectional {
    /// The forward layer's configuration (the backward copy reads the other way).
    pub layer: Wrapped,
    /// `concat` (last axis), `sum`, `mul` or `ave`.
    pub merge_mode: &'static str,
}

impl LayerSpec for Bidirectional {
    const CLASS: &'static str = "Bidirectional";
    const BASE_NAME: &'static str = "bidirectional";
    const ARGS: &'static [ArgDef] = &[
        ArgDef::new("layer", Kind::Layer, D::Required),
        ArgDef::new("merge_mode", Kind::OneOf(MERGE_MODES), D::Name("concat")),
    ];
    const POSITIONAL: usize = 1;
    const DOC: &'static str =
        "Runs a recurrent layer over the sequence in both directions and merges the outputs.";
    fn from_args(a: &Args) -> Result<Self, SpecError> {
        let (class, args) = a.layer("layer")?;
        let given: Vec<(Option<&str>, crate::Value)> =
            args.iter().map(|(n, v)| (n.as_deref(), v.clone())).collect();
        let layer = match class.as_str() {
            "LSTM" => Wrapped::LSTM(LSTM::from_written(&given)?),
            "GRU" => Wrapped::GRU(GRU::from_written(&given)?),
            "SimpleRNN" => Wrapped::SimpleRNN(SimpleRNN::from_written(&given)?),
            other => {
                return Err(SpecError::arg(
                    "layer",
                    format!(
                        "Bidirectional wraps a recurrent layer (LSTM, GRU or SimpleRNN), not {other}: use Bidirectional(LSTM(units))"
                    ),
                ));
            }
        };
        let mode = a.choice("merge_mode", "merge_mode", MERGE_MODES)?;
        let merge_mode = MERGE_MODES.iter().copied().find(|m| *m == mode).unwrap_or("concat");
        Ok(Bidirectional { layer, merge_mode })
    }
    fn output(&self, input: &[usize]) -> Result<Vec<usize>, SpecError> {
        let mut out = self.layer.rnn().output(Self::CLASS, input)?;
        if self.merge_mode == "concat" {
            *out.last_mut().unwrap_or(&mut 0) *= 2;
        }
        Ok(out)
    }
}
