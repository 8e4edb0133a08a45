//! The README's MNIST MLP trained data-parallel over MPI: the same compile / fit /
//! evaluate as `examples/mnist.rs`, with `kiln::mpi::init()` at the top. Every rank
//! runs its slice of each global batch of 32; rank 0 prints and writes the checkpoint.
//!
//! ```text
//! cargo build --release --features mpi --example mnist_distributed
//! mpirun -np 2 target/release/examples/mnist_distributed            # add --quick
//! ```
//!
//! Run without `mpirun` it trains alone, as `examples/mnist.rs` does.

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
    let mpi = kiln::mpi::init()?;
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
    if mpi.is_chief() {
        let params = model.model().params().len();
        println!(
            "{} ranks; each step sums {params} gradients ({} KB in float32) over them",
            mpi.size(),
            params * 4 / 1000
        );
    }
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
    let phases = model.phase_times();
    if mpi.is_chief() {
        println!("test loss {:.4}  accuracy {:.4}", eval.loss, eval["accuracy"]);
        println!(
            "{} epochs, {:.2} s per epoch; summing gradients over ranks took {:.3} ms per step",
            history.len(),
            history.epoch_seconds.iter().sum::<f64>() / history.len() as f64,
            1e3 * phases.all_reduce / phases.steps.max(1) as f64
        );
    }
    Ok(())
}
