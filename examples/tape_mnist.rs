//! Trains a 784-128-10 MLP on the bundled MNIST with nothing but kiln-tape: the autograd
//! tape computes every gradient and a plain SGD loop applies them. It shows the
//! foundation end to end until `model!` and `fit` exist.
//!
//! `cargo run --release --example tape_mnist [-- EPOCHS [TRAIN_LIMIT]]`

use kiln::datasets::idx::read_idx;
use kiln::tape::{Tape, Tensor, Trans};

fn main() -> kiln::Result<()> {
    let mut args = std::env::args().skip(1);
    let epochs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let limit: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(60_000);

    let load = |images: &str, labels: &str| -> kiln::Result<(Vec<f32>, Vec<usize>)> {
        let x = read_idx(format!("data/mnist/{images}"))?;
        let y = read_idx(format!("data/mnist/{labels}"))?;
        Ok((
            x.data.iter().map(|&p| f32::from(p) / 255.0).collect(),
            y.data.iter().map(|&l| l as usize).collect(),
        ))
    };
    let (train_x, train_y) = load("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")?;
    let (test_x, test_y) = load("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")?;
    let n = limit.min(train_y.len());

    // Glorot-uniform kernels and zero biases, as Keras's Dense defaults.
    let glorot = |i: usize, o: usize, seed| {
        let l = (6.0 / (i + o) as f32).sqrt();
        Tensor::random_uniform(&[i, o], -l, l, seed)
    };
    let mut params =
        [glorot(784, 128, 1), Tensor::zeros(&[128]), glorot(128, 10, 2), Tensor::zeros(&[10])];
    let (batch, lr) = (32, 0.1f32);

    for epoch in 1..=epochs {
        let start = std::time::Instant::now();
        let mut total = 0.0;
        for lo in (0..n).step_by(batch) {
            let hi = (lo + batch).min(n);
            let tape = Tape::new();
            let x = tape
                .constant(Tensor::from_vec(&[hi - lo, 784], train_x[lo * 784..hi * 784].to_vec())?);
            let vars: Vec<_> = params.iter().map(|p| tape.var(p.clone())).collect();
            let h = x.gemm(Trans::No, vars[0], Trans::No, 1.0, Some(vars[1]))?.relu();
            let logits = h.gemm(Trans::No, vars[2], Trans::No, 1.0, Some(vars[3]))?;
            // Sparse categorical crossentropy: mean over the batch of −log_softmax[label].
            let mut onehot = Tensor::zeros(&[hi - lo, 10]);
            for (r, &label) in train_y[lo..hi].iter().enumerate() {
                onehot.data_mut()[r * 10 + label] = -1.0 / (hi - lo) as f32;
            }
            let loss = logits.log_softmax()?.mul(tape.constant(onehot))?.sum()?;
            total += loss.value().item()? * (hi - lo) as f32;
            let grads = tape.backward(loss)?;
            for (p, v) in params.iter_mut().zip(&vars) {
                let g = grads.get(*v).expect("every parameter feeds the loss");
                p.data_mut().iter_mut().zip(g.data()).for_each(|(w, d)| *w -= lr * d);
            }
        }
        println!(
            "epoch {epoch}/{epochs}: loss {:.4} ({:.1}s)",
            total / n as f32,
            start.elapsed().as_secs_f32()
        );
    }

    // Evaluate on the 10,000 test images with no gradient recording.
    let tape = Tape::new();
    let _no_grad = tape.no_grad();
    let x = tape.constant(Tensor::from_vec(&[test_y.len(), 784], test_x)?);
    let p: Vec<_> = params.iter().map(|t| tape.constant(t.clone())).collect();
    let h = x.gemm(Trans::No, p[0], Trans::No, 1.0, Some(p[1]))?.relu();
    let predicted = h.gemm(Trans::No, p[2], Trans::No, 1.0, Some(p[3]))?.argmax(1)?;
    let correct = predicted.iter().zip(&test_y).filter(|(a, b)| a == b).count();
    println!(
        "test accuracy {:.4} ({correct}/{})",
        correct as f32 / test_y.len() as f32,
        test_y.len()
    );
    Ok(())
}
