//! Same seed, same bits, whatever the thread count: four networks (the MNIST MLP, the
//! MNIST convnet, an LSTM over image rows, and a residual convnet with
//! BatchNormalization, each at a batch large enough for every parallel path to split)
//! are trained a few steps in child processes with `KILN_THREADS` = 1, 2, 3, 4 and 7
//! (7 oversubscribes this machine: correctness does not depend on the cores), and every
//! weight must come out bit-identical.

use kiln::Shape;
use kiln::prelude::*;
use std::process::Command;

model! {
    struct Mlp: [784] => [
        Dense(128, activation = relu),
        Dense(10, activation = softmax),
    ]
}

model! {
    struct ConvNet: [28, 28, 1] => [
        Conv2D(32, kernel = 3, activation = relu),
        MaxPool2D(2),
        Conv2D(64, kernel = 3, activation = relu),
        MaxPool2D(2),
        Flatten,
        Dropout(0.5),
        Dense(10, activation = softmax),
    ]
}

model! {
    struct Rows: [28, 28] => [
        LSTM(64),
        Dense(10, activation = softmax),
    ]
}

model! {
    struct ResNet: [16, 16, 1] => [
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

/// The bits of every weight as one hash.
fn hash(values: &[f32]) -> u64 {
    values.iter().fold(0xcbf2_9ce4_8422_2325, |h, v| {
        (h ^ u64::from(v.to_bits())).wrapping_mul(0x100_0000_01b3)
    })
}

/// Trains `model` one epoch of `n` random samples at `batch`; returns the weights' hash.
fn train<M>(model: M, n: usize, batch: usize) -> u64
where
    M: Model<Scalar = f32>,
    SparseCategoricalCrossentropy: kiln::loss::LossFor<M::Output, ClassLabels>,
{
    let per: usize = <M::Input as Shape>::DIMS.unwrap().iter().product();
    let x = Inputs::<M::Input>::from_vec(
        Tensor::<f32>::random_uniform(&[n * per], 0.0, 1.0, 3).into_vec(),
    )
    .unwrap();
    let y = ClassLabels::new((0..n).map(|i| (i * 7) % 10).collect());
    let mut m = model
        .compile(Adam::default(), SparseCategoricalCrossentropy::default(), [Accuracy])
        .unwrap();
    m.fit(&x, &y).epochs(1).batch_size(batch).verbose(0).run().unwrap();
    hash(m.model().params().values())
}

/// In a child process: trains the network `KILN_BITS_CHILD` names and prints its hash.
#[test]
fn child_trains_and_prints_its_weights() {
    let Some(which) = std::env::var_os("KILN_BITS_CHILD") else {
        return;
    };
    let h = match which.to_str() {
        Some("mlp") => train(Mlp::new(Seed(4)), 256, 64),
        Some("convnet") => train(ConvNet::new(Seed(4)), 96, 32),
        Some("lstm") => train(Rows::new(Seed(4)), 192, 64),
        Some("resnet") => train(ResNet::new(Seed(4)), 192, 64),
        other => panic!("unknown network {other:?}"),
    };
    println!("WEIGHTS {h:016x} JOINS {}", kiln::tape::kernels::parallel::parallel_joins());
}

/// The child's weight hash, after checking that with several threads it did split.
fn weights_with(network: &str, threads: usize) -> String {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_trains_and_prints_its_weights",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("KILN_BITS_CHILD", network)
        .env("KILN_THREADS", threads.to_string())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{network} with KILN_THREADS={threads} failed: {text}");
    // The harness's own "test … ..." may start the line the child prints on.
    let line = text.lines().find_map(|l| l.split("WEIGHTS ").nth(1)).expect("the child prints");
    let joins: usize = line.split("JOINS ").nth(1).and_then(|j| j.trim().parse().ok()).unwrap();
    assert_eq!(joins > 0, threads > 1, "{network}, {threads} threads: {joins} parallel joins");
    line[..16].to_string()
}

#[test]
fn every_thread_count_trains_the_same_bits() {
    for network in ["mlp", "convnet", "lstm", "resnet"] {
        let runs: Vec<(usize, String)> =
            [1, 2, 3, 4, 7].into_iter().map(|t| (t, weights_with(network, t))).collect();
        println!("{network}: {runs:?}");
        for (t, w) in &runs[1..] {
            assert_eq!(w, &runs[0].1, "{network}: KILN_THREADS={t} trains other weights than 1");
        }
    }
}
