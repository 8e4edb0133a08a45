//! Embedding.

use super::at_least_one;
use crate::LayerSpec;
use crate::value::{ArgDef, Args, Default as D, Kind, SpecError};

/// Keras `Embedding`: token ids → learned vectors.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Embedding {
    /// The vocabulary size: ids are in `0..input_dim`.
    pub input_dim: usize,
    /// The vector length.
    pub output_dim: usize,
    /// Treat id 0 as padding: the steps holding it are masked for the layers after.
    pub mask_zero: bool,
}

impl LayerSpec for Embedding {
    const CLASS: &'static str = "Embedding";
    const BASE_NAME: &'static str = "embedding";
    const ARGS: &'static [ArgDef] = &[
        ArgDef::new("input_dim", Kind::Count, D::Required),
        ArgDef::new("output_dim", Kind::Count, D::Required),
        ArgDef::new("mask_zero", Kind::Bool, D::Bool(false)),
    ];
    const POSITIONAL: usize = 2;
    const DOC: &'static str =
        "Maps each id in `0..input_dim` to a learned vector of `output_dim` values.";
    fn from_args(a: &Args) -> Result<Self, SpecError> {
        let e = Embedding {
            input_dim: a.count("input_dim")?,
            output_dim: a.count("output_dim")?,
            mask_zero: a.bool("mask_zero")?,
        };
        at_least_one("Embedding", "input_dim", e.input_dim)?;
        at_least_one("Embedding", "output_dim", e.output_dim)?;
        Ok(e)
    }
    fn output(&self, input: &[usize]) -> Result<Vec<usize>, SpecError> {
        if self.input_dim == 0 || self.output_dim == 0 {
            return Err(SpecError::layer("input_dim and output_dim must be at least 1"));
        }
        if input.is_empty() {
            return Err(SpecError::layer(
                "Embedding needs ids of shape [steps] (or more axes), not a scalar",
            ));
        }
        let mut out = input.to_vec();
        out.push(self.output_dim);
        Ok(out)
    }
}
