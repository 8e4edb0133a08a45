//! The Keras "simple MNIST convnet" (DESIGN.md's ConvNet), 3 epochs at batch 128 on
//! all 60,000 training images.
//!
//! `cargo run --release --example mnist_cnn` (add `-- --quick` for a smoke run)

use kiln::prelude::*;

model! {
    /// The Keras "simple MNIST convnet".
    pub struct ConvNet: [28, 28, 1] => [
        Conv2D(32, kernel = 3, activation = relu),
        MaxPool2D(2),
        Conv2D(64, kernel = 3, activation = relu),
        MaxPool2D(2),
        Flatten,
        Dropout(0.5),
        Dense(10, activation = softmax),
    ]
}

fn main() -> kiln::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let mnist = kiln::datasets::mnist::load("data/mnist")?;
    let n = if quick { 2048 } else { mnist.train.y.len() };
    let (x, y) = (mnist.train.x.head(n), mnist.train.y.head(n));
    let mut model = ConvNet::new(Seed(42)).compile(
        Adam::default(),
        SparseCategoricalCrossentropy::default(),
        [Accuracy],
    )?;
    println!("{}", model.model().summary());
    model.fit(&x, &y).epochs(if quick { 1 } else { 3 }).batch_size(128).run()?;
    let eval = model.evaluate(&mnist.test.x, &mnist.test.y)?;
    println!("test loss {:.4}  accuracy {:.4}", eval.loss, eval["accuracy"]);
    Ok(())
}
