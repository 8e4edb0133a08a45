//! Two custom layers inside `model!`, trained on MNIST:
//!
//! * `FeatureScale`, written by hand: a learnable scale per feature, `y = x ⊙ s`, with
//!   its own backward pass;
//! * `Gated`, written only as a forward pass on the tape, `y = x ⊙ sigmoid(a ⊙ x)`; the
//!   tape supplies its backward pass.
//!
//! `cargo run --release --example custom_layer` (add `-- --quick` for a smoke run)

use kiln::ParamKind;
use kiln::init::Initializer;
use kiln::layers::{Backward, ParamSpec, Params};
use kiln::prelude::*;
use kiln::tape::Var;

/// A learnable scale per feature of a 64-wide input.
struct FeatureScale;

impl ShapedLayer for FeatureScale {
    type Input = S1<64>;
    type Output = S1<64>;
}

impl Layer<f32> for FeatureScale {
    fn class_name(&self) -> &'static str {
        "FeatureScale"
    }
    fn base_name(&self) -> &'static str {
        "feature_scale"
    }
    fn build(&mut self, input: &[usize]) -> Result<Vec<usize>, String> {
        Ok(input.to_vec())
    }
    fn param_specs(&self) -> Vec<ParamSpec> {
        vec![ParamSpec {
            name: "scale",
            shape: vec![64],
            init: Initializer::Ones,
            trainable: true,
            kind: ParamKind::Scale,
        }]
    }
    fn forward(
        &mut self,
        p: Params<'_, f32>,
        x: &[f32],
        _batch: usize,
        y: &mut [f32],
    ) -> kiln::tape::Result<()> {
        let s = p.param("scale");
        for (yr, xr) in y.chunks_exact_mut(64).zip(x.chunks_exact(64)) {
            for k in 0..64 {
                yr[k] = xr[k] * s[k];
            }
        }
        Ok(())
    }
    fn backward(&mut self, mut b: Backward<'_, f32>) -> kiln::tape::Result<()> {
        let ds = b.grads.param_mut("scale");
        ds.fill(0.0);
        for (xr, dr) in b.x.chunks_exact(64).zip(b.dy.chunks_exact(64)) {
            for k in 0..64 {
                ds[k] += xr[k] * dr[k];
            }
        }
        if let Some(dx) = b.dx {
            let s = b.params.param("scale");
            for (dxr, dr) in dx.chunks_exact_mut(64).zip(b.dy.chunks_exact(64)) {
                for k in 0..64 {
                    dxr[k] = dr[k] * s[k];
                }
            }
        }
        Ok(())
    }
}

/// `y = x ⊙ sigmoid(a ⊙ x)`, written only as a forward pass.
struct Gated;

impl TapeModule<f32> for Gated {
    type Input = S1<64>;
    type Output = S1<64>;
    const NAME: &'static str = "gated";
    fn params(&self) -> Vec<ParamSpec> {
        vec![ParamSpec {
            name: "a",
            shape: vec![64],
            init: Initializer::Ones,
            trainable: true,
            kind: ParamKind::Other,
        }]
    }
    fn forward<'t>(&self, x: Var<'t, f32>, p: &[Var<'t, f32>]) -> kiln::tape::Result<Var<'t, f32>> {
        x.mul(p[0].mul(x)?.sigmoid())
    }
}

model! {
    /// An MLP with a hand-written and a tape-written custom layer.
    pub struct Custom: [28, 28, 1] => [
        Flatten,
        Dense(64, activation = relu),
        layer(FeatureScale),
        tape(Gated),
        Dense(10, activation = softmax),
    ]
}

fn main() -> kiln::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let mnist = kiln::datasets::mnist::load("data/mnist")?;
    let n = if quick { 4000 } else { 60_000 };
    let mut model = Custom::new(Seed(3)).compile(
        Adam::default(),
        SparseCategoricalCrossentropy::default(),
        [Accuracy],
    )?;
    println!("{}", model.model().summary());
    model
        .fit(&mnist.train.x.head(n), &mnist.train.y.head(n))
        .epochs(if quick { 1 } else { 3 })
        .batch_size(64)
        .verbose(2)
        .run()?;
    let eval = model.evaluate(&mnist.test.x, &mnist.test.y)?;
    println!("test loss {:.4}  accuracy {:.4}", eval.loss, eval["accuracy"]);
    Ok(())
}
