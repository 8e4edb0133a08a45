//! Each MNIST image read as a sequence: 28 steps (rows) of 28 pixels, an LSTM(128)
//! over the rows, then a softmax over the ten digits — Keras's classic recurrent
//! MNIST example, 3 epochs at batch 128 with Adam.
//!
//! `cargo run --release --example mnist_lstm` (add `-- --quick` for a smoke run)

use kiln::prelude::*;

model! {
    /// Reads an image row by row.
    pub struct RowReader: [28, 28] => [
        LSTM(128),
        Dense(10, activation = softmax),
    ]
}

fn main() -> kiln::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let mnist = kiln::datasets::mnist::load("data/mnist")?;
    let n = if quick { 2048 } else { mnist.train.y.len() };
    // The images' [28, 28, 1] samples, read as [28 steps, 28 features].
    let x = mnist.train.x.head(n).reshape::<S2<28, 28>>()?;
    let y = mnist.train.y.head(n);
    let test_x = mnist.test.x.clone().reshape::<S2<28, 28>>()?;
    let (epochs, batch_size) = (if quick { 1 } else { 3 }, 128);
    let steps = (n.div_ceil(batch_size) * epochs) as u64;
    let mut model = RowReader::new(Seed(42)).compile(
        Adam::new(CosineDecay::new(3e-3, steps)),
        SparseCategoricalCrossentropy::default(),
        [Accuracy],
    )?;
    println!("{}", model.model().summary());
    model.fit(&x, &y).epochs(epochs).batch_size(batch_size).run()?;
    let eval = model.evaluate(&test_x, &mnist.test.y)?;
    println!("test loss {:.4}  accuracy {:.4}", eval.loss, eval["accuracy"]);
    Ok(())
}
