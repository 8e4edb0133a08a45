//! Small seeded datasets and models shared by the integration tests.
#![allow(dead_code)]

use kiln::layers::Dense;
use kiln::tape::{Activation, Tensor};
use kiln::*;

/// Three Gaussian blobs in 4-D: 3 well-separated classes, `n` samples, seeded.
pub fn blobs(n: usize, seed: u64) -> (Inputs<Dyn>, ClassLabels) {
    let noise = Tensor::<f32>::random_normal(&[n, 4], 0.0, 0.5, seed).into_vec();
    let labels: Vec<usize> = (0..n).map(|i| (i * 7 + seed as usize) % 3).collect();
    let centers = [[2.0, 0.0, -1.0, 0.5], [-2.0, 1.0, 1.0, -0.5], [0.0, -2.0, 0.0, 2.0]];
    let x: Vec<f32> = (0..n * 4).map(|j| centers[labels[j / 4]][j % 4] + noise[j]).collect();
    (Inputs::from_vec_shape(&[4], x).unwrap(), ClassLabels::new(labels))
}

/// 4 → 8 (relu) → 3 (softmax), named as Keras would.
pub fn mlp(seed: u64) -> Sequential {
    Sequential::builder("mlp", &[4])
        .add(Dense::new(8).activation(Activation::Relu))
        .add(Dense::new(3).activation(layers::Act::Softmax))
        .build(Seed(seed))
        .unwrap()
}

/// A compiled `mlp` with Adam, sparse crossentropy and accuracy.
pub fn compiled(seed: u64) -> Compiled<Sequential, SparseCategoricalCrossentropy> {
    mlp(seed)
        .compile(Adam::new(0.01), SparseCategoricalCrossentropy::default(), [Accuracy])
        .unwrap()
}

/// A fresh temporary directory for one test.
pub fn tmpdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("kiln-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
