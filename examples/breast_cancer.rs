//! Binary classification on the Wisconsin breast-cancer table: standardized features,
//! Dense(16, relu) → Dense(1, sigmoid), binary crossentropy, a seeded stratified 80/20 split.
//!
//! `cargo run --release --example breast_cancer`

use kiln::datasets::{
    csv,
    preprocessing::{StandardScaler, train_test_split},
};
use kiln::prelude::*;

model! {
    struct Net: [30] => [
        Dense(16, activation = relu),
        Dense(1, activation = sigmoid),
    ]
}

fn main() -> kiln::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let table = csv::read("data/tabular/breast_cancer.csv", "benign")?;
    let y = table.classes()?;
    let (train, test) = train_test_split(y.len(), 0.2, 42, Some(&y))?;
    let scaler = StandardScaler::fit(&table.x.select(&train)?);
    let x_train = scaler.transform(&table.x.select(&train)?)?.into_shape::<S1<30>>()?;
    let x_test = scaler.transform(&table.x.select(&test)?)?.into_shape::<S1<30>>()?;
    let (y_train, y_test) = (y.select(&train)?, y.select(&test)?);

    let mut model =
        Net::new(Seed(7)).compile(Adam::new(0.01), BinaryCrossentropy::default(), [Accuracy])?;
    model
        .fit(&x_train, &y_train)
        .epochs(if quick { 5 } else { 60 })
        .batch_size(32)
        .validation_split(0.1)
        .verbose(0)
        .run()?;
    let eval = model.evaluate(&x_test, &y_test)?;
    println!(
        "test loss {:.4}  accuracy {:.4} on {} held-out patients",
        eval.loss,
        eval["accuracy"],
        y_test.len()
    );

    // Save the weights (safetensors, Keras's names), reload them into a fresh model:
    // the same predictions, bit for bit.
    let path = std::env::temp_dir().join("breast_cancer.weights.safetensors");
    model.save_weights(&path)?;
    let mut again =
        Net::new(Seed(0)).compile(Adam::new(0.01), BinaryCrossentropy::default(), [Accuracy])?;
    again.load_weights(&path)?;
    assert_eq!(model.predict(&x_test)?.data(), again.predict(&x_test)?.data());
    println!("reloaded from {}: the same predictions", path.display());
    std::fs::remove_file(&path).map_err(|source| kiln::Error::Io { path, source })?;
    Ok(())
}
