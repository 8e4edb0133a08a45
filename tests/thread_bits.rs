//! Same seed, same bits, whatever the thread count: a residual convnet (the parallel
//! convolution, BatchNormalization and activation paths all run on inputs large
//! enough to split) is trained a few steps in child processes with `KILN_THREADS=1`
//! and `KILN_THREADS=2`, and every weight must come out bit-identical.

use kiln::prelude::*;
use std::process::Command;

model! {
    struct Net: [16, 16, 1] => [
        Conv2D(32, kernel = 3, padding = same, use_bias = false),
        BatchNormalization, ReLU,
        Residual[
            Conv2D(32, kernel = 3, padding = same, use_bias = false),
            BatchNormalization, ReLU,
            Conv2D(32, kernel = 3, padding = same, use_bias = false),
            BatchNormalization,
        ],
        ReLU,
        Residual[
            Conv2D(64, kernel = 3, strides = 2, padding = same, activation = relu),
            Conv2D(64, kernel = 3, padding = same),
        ] + shortcut[ Conv2D(64, kernel = 1, strides = 2) ],
        GlobalAveragePooling2D,
        Dense(10, activation = softmax),
    ]
}

/// Trains 6 steps of batch 64 and prints the weights' bits as one hash.
#[test]
fn child_trains_and_prints_its_weights() {
    if std::env::var_os("KILN_BITS_CHILD").is_none() {
        return;
    }
    let n = 384;
    let x = Inputs::<S3<16, 16, 1>>::from_vec(
        Tensor::<f32>::random_uniform(&[n * 256], 0.0, 1.0, 3).into_vec(),
    )
    .unwrap();
    let y = ClassLabels::new((0..n).map(|i| (i * 7) % 10).collect());
    let mut m = Net::new(Seed(4))
        .compile(Adam::default(), SparseCategoricalCrossentropy::default(), [Accuracy])
        .unwrap();
    m.fit(&x, &y).epochs(1).batch_size(64).verbose(0).run().unwrap();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for v in m.model().params().values() {
        h = (h ^ u64::from(v.to_bits())).wrapping_mul(0x100_0000_01b3);
    }
    println!("WEIGHTS {h:016x}");
}

fn weights_with(threads: &str) -> String {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_trains_and_prints_its_weights",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("KILN_BITS_CHILD", "1")
        .env("KILN_THREADS", threads)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "child with KILN_THREADS={threads} failed: {text}");
    text.lines()
        .find_map(|l| l.split("WEIGHTS ").nth(1).map(|w| w[..16].to_string()))
        .unwrap_or_else(|| panic!("no weights printed: {text}"))
}

#[test]
fn one_thread_and_two_threads_train_the_same_bits() {
    let one = weights_with("1");
    let two = weights_with("2");
    println!("KILN_THREADS=1: {one}, KILN_THREADS=2: {two}");
    assert_eq!(one, two, "the weights depend on the thread count");
}
