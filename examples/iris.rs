//! Three-class classification of iris flowers with one-hot targets, categorical
//! crossentropy and RMSprop.
//!
//! `cargo run --release --example iris`

use kiln::datasets::{
    csv,
    preprocessing::{StandardScaler, one_hot, train_test_split},
};
use kiln::prelude::*;

model! {
    struct Net: [4] => [
        Dense(16, activation = relu),
        Dense(3, activation = softmax),
    ]
}

fn main() -> kiln::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let table = csv::read("data/tabular/iris.csv", "species")?;
    let classes = table.classes()?;
    let (train, test) = train_test_split(classes.len(), 0.2, 3, Some(&classes))?;
    let scaler = StandardScaler::fit(&table.x.select(&train)?);
    let x_train = scaler.transform(&table.x.select(&train)?)?.into_shape::<S1<4>>()?;
    let x_test = scaler.transform(&table.x.select(&test)?)?.into_shape::<S1<4>>()?;
    let y_train: Targets<S1<3>> = one_hot(&classes.select(&train)?, 3)?;
    let y_test: Targets<S1<3>> = one_hot(&classes.select(&test)?, 3)?;

    let mut model = Net::new(Seed(1)).compile(
        RMSprop::new(0.01),
        CategoricalCrossentropy::default(),
        [Accuracy],
    )?;
    model
        .fit(&x_train, &y_train)
        .epochs(if quick { 5 } else { 80 })
        .batch_size(16)
        .verbose(0)
        .run()?;
    let eval = model.evaluate(&x_test, &y_test)?;
    println!(
        "test loss {:.4}  accuracy {:.4} on {} held-out flowers",
        eval.loss,
        eval["accuracy"],
        test.len()
    );
    Ok(())
}
