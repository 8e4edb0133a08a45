//! Forecasting next week's atmospheric CO2 at Mauna Loa from the previous 52 weeks
//! with a GRU, trained on the weeks before 1997 and tested on 1997–2001 in time order.
//!
//! The 59 missing weeks are filled by linear interpolation between their neighbours.
//! Each window is expressed relative to its last week and scaled by the training
//! weeks' weekly-change spread, and the network predicts the change to the next week —
//! so "same as last week" is its zero, and it must learn the seasonal cycle and the
//! trend to beat it. The test MAE is printed beside two baselines: "same as last week"
//! and "same as 52 weeks ago".
//!
//! `cargo run --release --example co2_forecast` (add `-- --quick` for a smoke run)

use kiln::prelude::*;

const WINDOW: usize = 52;

model! {
    /// 52 weeks in, next week's change out.
    pub struct Forecaster: [52, 1] => [
        GRU(32),
        Dense(1),
    ]
}

/// (date, ppm) per week, gaps filled by linear interpolation.
fn load(path: &str) -> kiln::Result<Vec<(String, f64)>> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| kiln::Error::Io { path: path.into(), source })?;
    let mut rows: Vec<(String, Option<f64>)> = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        let (date, v) = line.split_once(',').ok_or_else(|| kiln::Error::Data {
            path: path.into(),
            message: format!("line {}: expected `week,co2`", i + 1),
        })?;
        let v = v.trim();
        let value = if v.is_empty() {
            None
        } else {
            Some(v.parse::<f64>().map_err(|e| kiln::Error::Data {
                path: path.into(),
                message: format!("line {}: {v:?} is not a number ({e})", i + 1),
            })?)
        };
        rows.push((date.to_string(), value));
    }
    let known: Vec<usize> = (0..rows.len()).filter(|&i| rows[i].1.is_some()).collect();
    let value = |i: usize| rows[i].1.unwrap_or(f64::NAN);
    let mut out = Vec::with_capacity(rows.len());
    for (i, (date, reading)) in rows.iter().enumerate() {
        let v = match *reading {
            Some(v) => v,
            None => {
                let after = known.partition_point(|&k| k < i);
                match (after.checked_sub(1).map(|a| known[a]), known.get(after)) {
                    (Some(a), Some(&b)) => {
                        value(a) + (value(b) - value(a)) * (i - a) as f64 / (b - a) as f64
                    }
                    (Some(a), None) => value(a),
                    (None, Some(&b)) => value(b),
                    (None, None) => f64::NAN,
                }
            }
        };
        out.push((date.clone(), v));
    }
    Ok(out)
}

fn main() -> kiln::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let weeks = load("data/timeseries/co2_weekly.csv")?;
    let ppm: Vec<f64> = weeks.iter().map(|w| w.1).collect();
    // Targets before 1997 train; 1997–2001 test.
    let first_test = weeks.iter().position(|w| w.0.as_str() >= "1997-01-01").unwrap_or(weeks.len());
    let diffs: Vec<f64> = (1..first_test).map(|i| ppm[i] - ppm[i - 1]).collect();
    let scale = (diffs.iter().map(|d| d * d).sum::<f64>() / diffs.len() as f64).sqrt();
    let window = |t: usize| -> Vec<f32> {
        let last = ppm[t - 1];
        (t - WINDOW..t).map(|i| ((ppm[i] - last) / scale) as f32).collect()
    };
    let (mut xtr, mut ytr, mut xte, mut yte) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for t in WINDOW..ppm.len() {
        let (x, y) = if t < first_test { (&mut xtr, &mut ytr) } else { (&mut xte, &mut yte) };
        x.extend(window(t));
        y.push(((ppm[t] - ppm[t - 1]) / scale) as f32);
    }
    let n_test = yte.len();
    let x_train = Inputs::<S2<52, 1>>::from_vec(xtr)?;
    let y_train = Targets::<S1<1>>::from_vec(ytr)?;
    let x_test = Inputs::<S2<52, 1>>::from_vec(xte)?;
    let epochs = if quick { 2 } else { 40 };
    let mut model =
        Forecaster::new(Seed(7)).compile(Adam::new(3e-3), MeanSquaredError::default(), ())?;
    model
        .fit(&x_train, &y_train)
        .epochs(epochs)
        .batch_size(32)
        .verbose(if quick { 0 } else { 2 })
        .run()?;
    let pred = model.predict(&x_test)?;
    let (mut mae, mut last_week, mut last_year) = (0.0, 0.0, 0.0);
    for (k, t) in (first_test.max(WINDOW)..ppm.len()).enumerate() {
        let forecast = ppm[t - 1] + f64::from(pred.data()[k]) * scale;
        mae += (forecast - ppm[t]).abs();
        last_week += (ppm[t - 1] - ppm[t]).abs();
        last_year += (ppm[t - 52] - ppm[t]).abs();
    }
    let n = n_test as f64;
    println!(
        "test MAE over {n_test} weeks of 1997–2001: GRU {:.3} ppm, same as last week {:.3}, same as 52 weeks ago {:.3}",
        mae / n,
        last_week / n,
        last_year / n
    );
    Ok(())
}
