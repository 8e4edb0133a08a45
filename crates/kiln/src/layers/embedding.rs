//! `Embedding`: integer token ids → learned vectors.
//!
//! Shape rule: `[seq]` of ids → `[seq, output_dim]`. Ids arrive as the model's floats
//! and must be whole numbers in `0..input_dim`; anything else is an error naming it.

use super::{Backward, Builtin, Layer, ParamSpec, Params};
use crate::init::Initializer;
use kiln_spec::{LayerSpec, layers as spec};
use kiln_tape::kernels::{gather_rows, scatter_add_rows};
use kiln_tape::{Scalar, TapeError};
use kiln_train::ParamKind;

/// A lookup table of `input_dim` vectors of `output_dim` values (Keras `Embedding`).
///
/// ```
/// use kiln::prelude::*;
/// model! { struct Net: [5] => [Embedding(10, 3)] }
/// let ids = Inputs::<S1<5>>::from_vec(vec![0.0, 1.0, 9.0, 1.0, 4.0])?; // token ids < 10
/// let y = Net::new(Seed(1)).predict(&ids)?;
/// assert_eq!(y.sample_shape(), &[5, 3]);
/// assert_eq!(y.data()[3..6], y.data()[9..12]); // the same id, the same vector
/// # Ok::<(), kiln::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Embedding {
    cfg: spec::Embedding,
    ids: Vec<usize>,
}

impl<T: Scalar> Builtin<T> for spec::Embedding {
    type Layer = Embedding;
    fn into_layer(self) -> Embedding {
        Embedding { cfg: self, ids: Vec::new() }
    }
}

impl Embedding {
    /// `input_dim` ids, each mapped to `output_dim` values (uniform(−0.05, 0.05) init).
    pub fn new(input_dim: usize, output_dim: usize) -> Self {
        Embedding {
            cfg: spec::Embedding { input_dim, output_dim, mask_zero: false },
            ids: Vec::new(),
        }
    }

    fn ids<T: Scalar>(&mut self, x: &[T]) -> kiln_tape::Result<()> {
        self.ids.clear();
        for (i, &v) in x.iter().enumerate() {
            let f = v.as_f64();
            if f.fract() != 0.0 || f < 0.0 || f >= self.cfg.input_dim as f64 {
                return Err(TapeError::InvalidArgument {
                    op: "Embedding",
                    message: format!(
                        "input {i} is {f}, but ids must be whole numbers in 0..{}",
                        self.cfg.input_dim
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
        spec::Embedding::CLASS
    }
    fn base_name(&self) -> &'static str {
        spec::Embedding::BASE_NAME
    }
    fn build(&mut self, input: &[usize]) -> Result<Vec<usize>, String> {
        self.cfg.output(input).map_err(|e| e.message)
    }
    /// With `mask_zero`, id 0 marks padding: those steps are masked.
    fn output_mask(&self, x: &[T], _batch: usize, mask: &mut Vec<T>) -> bool {
        if !self.cfg.mask_zero {
            return false;
        }
        mask.clear();
        mask.extend(x.iter().map(|&v| if v == T::zero() { T::zero() } else { T::one() }));
        true
    }
    fn param_specs(&self) -> Vec<ParamSpec> {
        vec![ParamSpec {
            name: "embeddings",
            shape: vec![self.cfg.input_dim, self.cfg.output_dim],
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
        gather_rows(
            p.param("embeddings"),
            self.cfg.output_dim,
            &self.ids,
            &mut y[..x.len() * self.cfg.output_dim],
        )
    }
    fn backward(&mut self, b: Backward<'_, T>) -> kiln_tape::Result<()> {
        let Backward { x, dy, grads: mut g, dx, .. } = b;
        let table = g.param_mut("embeddings");
        table.fill(T::zero());
        scatter_add_rows(
            &dy[..x.len() * self.cfg.output_dim],
            self.cfg.output_dim,
            &self.ids,
            table,
        )?;
        // Ids are not differentiable.
        if let Some(dx) = dx {
            dx[..x.len()].fill(T::zero());
        }
        Ok(())
    }
    fn check_input(&self, x: &[T], per_sample: usize) -> Result<(), String> {
        let vocab = self.cfg.input_dim;
        match x.iter().position(|&v| {
            let f = v.as_f64();
            f.fract() != 0.0 || f < 0.0 || f >= vocab as f64
        }) {
            None => Ok(()),
            Some(i) => Err(format!(
                "sample {}, position {} holds {}, but Embedding takes token ids, whole numbers in 0..{vocab} (its input_dim): map unknown tokens to an id below {vocab}, or give Embedding a larger input_dim",
                i / per_sample.max(1),
                i % per_sample.max(1),
                x[i].as_f64()
            )),
        }
    }
    fn describe(&self) -> String {
        format!("input_dim={}, output_dim={}", self.cfg.input_dim, self.cfg.output_dim)
    }
}
