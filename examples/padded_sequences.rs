//! Variable-length sequences, right-padded with id 0: does masking matter?
//!
//! Each sequence holds 2 to 10 tokens (ids 1–9) padded with 0 to 30 steps; the label is
//! its last real token. With `Embedding(mask_zero = true)` the LSTM skips the padding,
//! so its final state sits right after the token to report; without the mask it must
//! carry that token through 20 to 28 padding steps. Both networks train for the same
//! epochs from the same seed; the test accuracies are printed side by side.
//!
//! `cargo run --release --example padded_sequences` (add `-- --quick` for a smoke run)

use kiln::prelude::*;

const STEPS: usize = 30;

model! {
    /// Skips the padding.
    pub struct Masked: [30] => [
        Embedding(10, 8, mask_zero = true),
        LSTM(16),
        Dense(10, activation = softmax),
    ]
}

model! {
    /// Reads the padding like any other token.
    pub struct Unmasked: [30] => [
        Embedding(10, 8),
        LSTM(16),
        Dense(10, activation = softmax),
    ]
}

/// `n` seeded sequences (a 64-bit LCG, so the data needs no extra crate) and labels.
fn sequences(n: usize, seed: u64) -> kiln::Result<(Inputs<S1<30>>, ClassLabels)> {
    let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    let mut next = |m: u64| {
        state =
            state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) % m
    };
    let (mut x, mut y) = (Vec::with_capacity(n * STEPS), Vec::with_capacity(n));
    for _ in 0..n {
        let len = 2 + next(9) as usize;
        let mut last = 0;
        for t in 0..STEPS {
            let id = if t < len { 1 + next(9) } else { 0 };
            if t < len {
                last = id as usize;
            }
            x.push(id as f32);
        }
        y.push(last);
    }
    Ok((Inputs::from_vec(x)?, ClassLabels::new(y)))
}

fn accuracy<M: Model<Scalar = f32, Input = S1<30>, Output = S1<10>>>(
    model: M,
    epochs: usize,
    train: &(Inputs<S1<30>>, ClassLabels),
    test: &(Inputs<S1<30>>, ClassLabels),
) -> kiln::Result<f64> {
    let mut m =
        model.compile(Adam::new(1e-2), SparseCategoricalCrossentropy::default(), [Accuracy])?;
    m.fit(&train.0, &train.1).epochs(epochs).batch_size(64).verbose(0).run()?;
    Ok(m.evaluate(&test.0, &test.1)?["accuracy"])
}

fn main() -> kiln::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let (n, epochs) = if quick { (512, 1) } else { (4000, 3) };
    let (train, test) = (sequences(n, 1)?, sequences(2000, 2)?);
    let masked = accuracy(Masked::new(Seed(3)), epochs, &train, &test)?;
    let unmasked = accuracy(Unmasked::new(Seed(3)), epochs, &train, &test)?;
    println!(
        "test accuracy after {epochs} epochs: with mask_zero {masked:.4}, without {unmasked:.4} (chance 0.111)"
    );
    Ok(())
}
