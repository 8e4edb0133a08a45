//! `Embedding`: integer token ids → learned vectors.
//!
//! Shape rule: `[seq]` of ids → `[seq, output_dim]`. Ids arrive as the model's floats
//! and must be whole numbers in `0..input_dim`; anything else is an error naming it.

use super::{Layer, ParamSpec, Params, ParamsMut};
use crate::init::Initializer;
use kiln_tape::kernels::{gather_rows, scatter_add_rows};
use kiln_tape::{Scalar, TapeError};
use kiln_train::ParamKind;

/// A lookup table of `input_dim` vectors of `output_dim` values (Keras `Embedding`).
#[derive(Clone, Debug)]
pub struct Embedding {
    input_dim: usize,
    output_dim: usize,
    ids: Vec<usize>,
}

impl Embedding {
    /// `input_dim` ids, each mapped to `output_dim` values (uniform(−0.05, 0.05) init).
    pub fn new(input_dim: usize, output_dim: usize) -> Self {
        Embedding { input_dim, output_dim, ids: Vec::new() }
    }

    fn ids<T: Scalar>(&mut self, x: &[T]) -> kiln_tape::Result<()> {
        self.ids.clear();
        for (i, &v) in x.iter().enumerate() {
            let f = v.as_f64();
            if f.fract() != 0.0 || f < 0.0 || f >= self.input_dim as f64 {
                return Err(TapeError::InvalidArgument {
                    op: "Embedding",
                    message: format!(
                        "input {i} is {f}, but ids must be whole numbers in 0..{}",
                        self.input_dim
                    ),
                });
            }
            self.ids.push(f as usize);
        }
        Ok(())
    }
}

impl<T: Scalar> Layer<T> for Embedding {
    fn class_name(&self) -> &'static str {
        "Embedding"
    }
    fn base_name(&self) -> &'static str {
        "embedding"
    }
    fn build(&mut self, input: &[usize]) -> Result<Vec<usize>, String> {
        if self.input_dim == 0 || self.output_dim == 0 {
            return Err("Embedding needs input_dim and output_dim of at least 1".into());
        }
        let mut out = input.to_vec();
        out.push(self.output_dim);
        Ok(out)
    }
    fn param_specs(&self) -> Vec<ParamSpec> {
        vec![ParamSpec {
            name: "embeddings",
            shape: vec![self.input_dim, self.output_dim],
            init: Initializer::RandomUniform { minval: -0.05, maxval: 0.05 },
            trainable: true,
            kind: ParamKind::Embedding,
        }]
    }
    fn forward(
        &mut self,
        p: Params<'_, T>,
        x: &[T],
        _batch: usize,
        y: &mut [T],
    ) -> kiln_tape::Result<()> {
        self.ids(x)?;
        gather_rows(p.get(0), self.output_dim, &self.ids, &mut y[..x.len() * self.output_dim])
    }
    fn backward(
        &mut self,
        _p: Params<'_, T>,
        x: &[T],
        _y: &[T],
        dy: &[T],
        _b: usize,
        mut g: ParamsMut<'_, T>,
        dx: Option<&mut [T]>,
    ) -> kiln_tape::Result<()> {
        let table = g.get_mut(0);
        table.fill(T::zero());
        scatter_add_rows(&dy[..x.len() * self.output_dim], self.output_dim, &self.ids, table)?;
        // Ids are not differentiable.
        if let Some(dx) = dx {
            dx[..x.len()].fill(T::zero());
        }
        Ok(())
    }
    fn describe(&self) -> String {
        format!("input_dim={}, output_dim={}", self.input_dim, self.output_dim)
    }
}
