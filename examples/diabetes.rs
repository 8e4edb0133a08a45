//! Regression of diabetes progression: mean squared error loss, mean absolute error
//! metric; the test MAE beside the MAE of always predicting the training mean.
//!
//! `cargo run --release --example diabetes`

use kiln::datasets::{
    csv,
    preprocessing::{StandardScaler, train_test_split},
};
use kiln::prelude::*;

model! {
    struct Net: [10] => [
        Dense(32, activation = relu),
        Dense(16, activation = relu),
        Dense(1),
    ]
}

fn main() -> kiln::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let table = csv::read("data/tabular/diabetes.csv", "progression")?;
    let (train, test) = train_test_split(table.target.len(), 0.2, 11, None)?;
    let scaler = StandardScaler::fit(&table.x.select(&train)?);
    let x_train = scaler.transform(&table.x.select(&train)?)?.into_shape::<S1<10>>()?;
    let x_test = scaler.transform(&table.x.select(&test)?)?.into_shape::<S1<10>>()?;
    let target = |rows: &[usize]| {
        Targets::<S1<1>>::from_vec(rows.iter().map(|&i| table.target[i] as f32).collect())
    };
    let (y_train, y_test) = (target(&train)?, target(&test)?);

    let mut model =
        Net::new(Seed(5)).compile(Adam::new(0.01), MeanSquaredError::default(), ["mae"])?;
    model
        .fit(&x_train, &y_train)
        .epochs(if quick { 5 } else { 300 })
        .batch_size(32)
        .verbose(0)
        .run()?;
    let eval = model.evaluate(&x_test, &y_test)?;
    let mean = y_train.data().iter().map(|&v| f64::from(v)).sum::<f64>() / y_train.len() as f64;
    let baseline = y_test.data().iter().map(|&v| (f64::from(v) - mean).abs()).sum::<f64>()
        / y_test.len() as f64;
    println!("test MAE {:.2}  (always predicting the training mean: {baseline:.2})", eval["mae"]);
    Ok(())
}
