//! The README's main job: a 784-128-10 MLP on the bundled MNIST, as in Keras —
//! validation_split 0.2, EarlyStopping(patience 3, restore_best_weights), ModelCheckpoint
//! (save_best_only); then the test accuracy, five predictions, and learning_curves.svg.
//!
//! `cargo run --release --example mnist` (add `-- --quick` for a seconds-long smoke run)

use kiln::prelude::*;

model! {
    /// Keras's MNIST MLP: flatten the image, one hidden layer of 128.
    pub struct Mlp: [28, 28, 1] => [
        Flatten,
        Dense(128, activation = relu),
        Dense(10, activation = softmax),
    ]
}

fn main() -> kiln::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let mnist = kiln::datasets::mnist::load("data/mnist")?;
    let (x, y) = if quick {
        (mnist.train.x.head(6000), mnist.train.y.head(6000))
    } else {
        (mnist.train.x, mnist.train.y)
    };

    let mut model = Mlp::new(Seed(42)).compile(
        Adam::default(),
        SparseCategoricalCrossentropy::default(),
        [Accuracy],
    )?;
    println!("{}", model.model().summary());
    let history = model
        .fit(&x, &y)
        .epochs(if quick { 2 } else { 30 })
        .batch_size(32)
        .validation_split(0.2)
        .callbacks((
            EarlyStopping::on("val_loss").patience(3).restore_best_weights(),
            ModelCheckpoint::to("best_model.safetensors").monitor("val_loss").save_best_only(),
        ))
        .run()?;

    let eval = model.evaluate(&mnist.test.x, &mnist.test.y)?;
    println!("test loss {:.4}  accuracy {:.4}", eval.loss, eval["accuracy"]);
    let probs = model.predict(&mnist.test.x.head(5))?;
    println!("predicted {:?}  true {:?}", probs.argmax(), mnist.test.y.head(5).as_slice());
    history.plot("learning_curves.svg")?;
    if cfg!(feature = "png") {
        history.plot("learning_curves.png")?;
        println!("wrote best_model.safetensors, learning_curves.svg and learning_curves.png");
    } else {
        println!("wrote best_model.safetensors and learning_curves.svg");
    }
    Ok(())
}
