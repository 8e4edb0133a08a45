//! BatchNormalization and LayerNormalization.

use crate::LayerSpec;
use crate::value::{ArgDef, Args, Default as D, Kind, SpecError};

fn non_empty(class: &str, input: &[usize]) -> Result<Vec<usize>, SpecError> {
    if input.is_empty() || input.contains(&0) {
        return Err(SpecError::layer(format!(
            "{class} needs a non-empty input shape, got {input:?}"
        )));
    }
    Ok(input.to_vec())
}

/// Keras `BatchNormalization` over the last axis.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchNormalization {
    /// The moving statistics' momentum, in [0, 1].
    pub momentum: f64,
    /// Added to the variance, ≥ 0.
    pub epsilon: f64,
}

impl std::default::Default for BatchNormalization {
    fn default() -> Self {
        BatchNormalization { momentum: 0.99, epsilon: 1e-3 }
    }
}

impl BatchNormalization {
    fn check(&self) -> Result<(), SpecError> {
        if !(0.0..=1.0).contains(&self.momentum) {
            return Err(SpecError::arg(
                "momentum",
                format!("BatchNormalization needs momentum in [0, 1], got {}", self.momentum),
            ));
        }
        if !(self.epsilon >= 0.0 && self.epsilon.is_finite()) {
            return Err(SpecError::arg(
                "epsilon",
                format!("BatchNormalization needs a finite epsilon ≥ 0, got {}", self.epsilon),
            ));
        }
        Ok(())
    }
}

impl LayerSpec for BatchNormalization {
    const CLASS: &'static str = "BatchNormalization";
    const BASE_NAME: &'static str = "batch_normalization";
    const ARGS: &'static [ArgDef] = &[
        ArgDef::new("momentum", Kind::Number, D::Float(0.99)),
        ArgDef::new("epsilon", Kind::Number, D::Float(1e-3)),
    ];
    const DOC: &'static str =
        "Normalizes each channel (last axis) over the batch; moving statistics at inference.";
    fn from_args(a: &Args) -> Result<Self, SpecError> {
        let b =
            BatchNormalization { momentum: a.number("momentum")?, epsilon: a.number("epsilon")? };
        b.check()?;
        Ok(b)
    }
    fn output(&self, input: &[usize]) -> Result<Vec<usize>, SpecError> {
        self.check()?;
        non_empty(Self::CLASS, input)
    }
}

/// Keras `LayerNormalization` over the last axis.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LayerNormalization {
    /// Added to the variance, ≥ 0.
    pub epsilon: f64,
}

impl std::default::Default for LayerNormalization {
    fn default() -> Self {
        LayerNormalization { epsilon: 1e-3 }
    }
}

impl LayerSpec for LayerNormalization {
    const CLASS: &'static str = "LayerNormalization";
    const BASE_NAME: &'static str = "layer_normalization";
    const ARGS: &'static [ArgDef] = &[ArgDef::new("epsilon", Kind::Number, D::Float(1e-3))];
    const DOC: &'static str = "Normalizes each sample over its last axis.";
    fn from_args(a: &Args) -> Result<Self, SpecError> {
        let l = LayerNormalization { epsilon: a.number("epsilon")? };
        l.output(&[1])?;
        Ok(l)
    }
    fn output(&self, input: &[usize]) -> Result<Vec<usize>, SpecError> {
        if !(self.epsilon >= 0.0 && self.epsilon.is_finite()) {
            return Err(SpecError::arg(
                "epsilon",
                format!("LayerNormalization needs a finite epsilon ≥ 0, got {}", self.epsilon),
            ));
        }
        non_empty(Self::CLASS, input)
    }
}
