//! The Keras "simple MNIST convnet" (the README's ConvNet), 3 epochs at batch 128 on
//! all 60,000 training images.
//!
//! Adam's learning rate follows a cosine decay from 5e-3 to 0 over the whole run: with
//! Adam's constant 1e-3 the net ends 3 epochs at 98.4–98.6% test accuracy, with the
//! decay at 98.86–98.96% (seeds 42, 1, 2, 3).
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
    let (epochs, batch_size) = (if quick { 1 } else { 3 }, 128);
    let steps = (n.div_ceil(batch_size) * epochs) as u64;
    let mut model = ConvNet::new(Seed(42)).compile(
        Adam::new(CosineDecay::new(5e-3, steps)),
        SparseCategoricalCrossentropy::default(),
        [Accuracy],
    )?;
    println!("{}", model.model().summary());
    model.fit(&x, &y).epochs(epochs).batch_size(batch_size).run()?;
    let eval = model.evaluate(&mnist.test.x, &mnist.test.y)?;
    println!("test loss {:.4}  accuracy {:.4}", eval.loss, eval["accuracy"]);
    Ok(())
}
