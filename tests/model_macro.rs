//! Networks declared with `model!`: generated fields, names, shapes and summary; the
//! whole ConvNet of the README against the tape end to end; training through `fit`.

use kiln::prelude::*;
use kiln::tape::{Scalar, Trans};

model! {
    /// The Keras "simple MNIST convnet".
    pub struct ConvNet: [28, 28, 1] => [
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
    /// A small convnet for exact end-to-end checks.
    struct Small: [8, 8, 2] => [
        Conv2D(3, kernel = 3, activation = relu),
        MaxPool2D(2),
        Conv2D(4, kernel = (2, 2), padding = same, activation = tanh),
        MaxPool2D(pool = 2, strides = 1),
        Flatten,
        Dropout(0.25),
        Dense(5, activation = softmax),
    ]
}

model! {
    struct Mlp: [4] => [
        Dense(16, activation = relu, kernel_initializer = he_normal),
        BatchNormalization(momentum = 0.9),
        Dense(3, activation = softmax),
    ]
}

#[test]
fn the_generated_struct_has_keras_names_shapes_and_parameter_counts() {
    let m = ConvNet::new(Seed(42));
    assert_eq!(m.name(), "conv_net");
    assert_eq!(m.input_shape(), &[28, 28, 1]);
    assert_eq!(m.output_shape(), &[10]);
    let s = m.summary();
    let rows: Vec<(&str, usize)> = s.rows.iter().map(|r| (r.0.as_str(), r.2)).collect();
    // Keras's model.summary() of the same network.
    assert_eq!(
        rows,
        [
            ("conv2d (Conv2D)", 320),
            ("max_pooling2d (MaxPooling2D)", 0),
            ("conv2d_1 (Conv2D)", 18496),
            ("max_pooling2d_1 (MaxPooling2D)", 0),
            ("flatten (Flatten)", 0),
            ("dropout (Dropout)", 0),
            ("dense (Dense)", 16010),
        ]
    );
    assert_eq!((s.total, s.trainable, m.count_params()), (34826, 34826, 34826));
    let text = s.to_string();
    assert!(text.contains("Model: \"conv_net\""));
    assert!(
        text.contains("conv2d_1 (Conv2D)")
            && text.contains("(None, 11, 11, 64)")
            && text.contains("18,496")
    );
    assert!(
        text.ends_with(
            " Total params: 34,826\n Trainable params: 34,826\n Non-trainable params: 0"
        ),
        "{text}"
    );
    let mlp = Mlp::new(Seed(1));
    assert_eq!(mlp.summary().total - mlp.summary().trainable, 32, "moving mean and variance");
    // Fields are the layers, named as Keras names them.
    let _: &kiln::layers::Conv2D = &m.conv2d_1;
    let _: &kiln::layers::Dense = &m.dense;
}

#[test]
fn same_seed_same_weights() {
    assert_eq!(ConvNet::new(Seed(1)).params().values(), ConvNet::new(Seed(1)).params().values());
    assert_ne!(ConvNet::new(Seed(1)).params().values(), ConvNet::new(Seed(2)).params().values());
}

/// The Small network on the tape, from the generated model's weights and Dropout mask.
fn tape_loss<'t>(
    tape: &'t Tape<f32>,
    x: Var<'t, f32>,
    p: &[Var<'t, f32>],
    mask: &[f32],
    labels: &[usize],
    batch: usize,
) -> kiln::tape::Result<Var<'t, f32>> {
    use kiln::tape::kernels::Padding;
    let h = x.conv2d(p[0], Some(p[1]), (1, 1), Padding::Valid)?.relu();
    let h = h.max_pool2d((2, 2), (2, 2), Padding::Valid)?;
    let h = h.conv2d(p[2], Some(p[3]), (1, 1), Padding::Same)?.tanh();
    let h = h.max_pool2d((2, 2), (1, 1), Padding::Valid)?;
    let h = h
        .reshape(&[batch, 16])?
        .mul(tape.constant(Tensor::from_vec(&[batch, 16], mask.to_vec())?))?;
    let logits = h.gemm(Trans::No, p[4], Trans::No, 1.0, Some(p[5]))?;
    let mut onehot = vec![0.0; batch * 5];
    for (i, &l) in labels.iter().enumerate() {
        onehot[i * 5 + l] = -1.0 / batch as f32;
    }
    logits.log_softmax()?.mul(tape.constant(Tensor::from_vec(&[batch, 5], onehot)?))?.sum()
}

#[test]
fn a_whole_generated_convnet_agrees_with_the_tape() {
    let batch = 3;
    let mut m = Small::new(Seed(5));
    let x = Tensor::<f32>::random_normal(&[batch, 8, 8, 2], 0.0, 1.0, 9).into_vec();
    let labels = [1usize, 4, 0];
    let out = m.forward_train(&x, batch).unwrap();
    let logits = out.logits.expect("softmax split off for the loss").to_vec();
    // The fused loss gradient w.r.t. the logits: (softmax − onehot) / batch.
    let probs = out.outputs.to_vec();
    let mut d = probs.clone();
    for (i, &l) in labels.iter().enumerate() {
        d[i * 5 + l] -= 1.0;
    }
    d.iter_mut().for_each(|v| *v /= batch as f32);
    let mut grads = vec![0.0; m.params().len()];
    m.backward(&x, &d, true, &mut grads).unwrap();
    let mask = m.dropout.mask().to_vec();
    assert!(mask.contains(&0.0) && mask.iter().any(|&v| v > 1.0), "dropout is active in training");

    let tape = Tape::new();
    let xv = tape.constant(Tensor::from_vec(&[batch, 8, 8, 2], x.clone()).unwrap());
    let names = [
        "conv2d/kernel",
        "conv2d/bias",
        "conv2d_1/kernel",
        "conv2d_1/bias",
        "dense/kernel",
        "dense/bias",
    ];
    let pv: Vec<_> = names
        .iter()
        .map(|n| {
            let e = m.params().entry(n).unwrap();
            tape.var(Tensor::from_vec(&e.shape, m.params().get(n).unwrap().to_vec()).unwrap())
        })
        .collect();
    let loss = tape_loss(&tape, xv, &pv, &mask, &labels, batch).unwrap();
    let tg = tape.backward(loss).unwrap();
    let mut worst: f64 = 0.0;
    for (n, v) in names.iter().zip(&pv) {
        let e = m.params().entry(n).unwrap();
        let ours = &grads[e.range()];
        let theirs = tg.get(*v).unwrap().data();
        let scale = theirs.iter().map(|t| t.abs()).fold(0.0f32, f32::max) as f64;
        let diff =
            ours.iter().zip(theirs).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max) as f64;
        worst = worst.max(diff / scale.max(1e-12));
    }
    println!("generated ConvNet vs tape, worst norm-wise relative gradient error: {worst:.1e}");
    assert!(worst < 1e-5, "{worst}");
    assert_eq!(logits.len(), batch * 5);
    assert!(logits.iter().all(|v| v.as_f64().is_finite()));
}

#[test]
fn a_generated_model_trains_with_fit() {
    let n = 200;
    let noise = Tensor::<f32>::random_normal(&[n, 4], 0.0, 0.4, 3).into_vec();
    let labels: Vec<usize> = (0..n).map(|i| i % 3).collect();
    let x: Vec<f32> =
        (0..n * 4).map(|j| noise[j] + if j % 4 == labels[j / 4] { 2.0 } else { 0.0 }).collect();
    let x = Inputs::<S1<4>>::from_vec(x).unwrap();
    let y = ClassLabels::new(labels);
    let mut m = Mlp::new(Seed(1))
        .compile(Adam::new(0.01), SparseCategoricalCrossentropy::default(), [Accuracy])
        .unwrap();
    let h = m.fit(&x, &y).epochs(10).batch_size(16).verbose(0).run().unwrap();
    assert!(h["accuracy"][9] > 0.9, "{:?}", &h["accuracy"]);
    let p: Outputs<S1<3>> = m.predict(&x).unwrap();
    assert_eq!(p.len(), n);
}

model! {
    /// Every kind of fusable Conv2D → MaxPool2D pair: relu on an odd-sized output (the
    /// last row and column are in no window), linear, sigmoid on a two-core batch.
    struct Blocks: [15, 15, 2] => [
        Conv2D(6, kernel = 3, activation = relu),
        MaxPool2D(2),
        Conv2D(5, kernel = 2, padding = same),
        MaxPool2D(2),
        Conv2D(4, kernel = 1, activation = sigmoid),
        MaxPool2D(2),
        Flatten,
        Dense(3),
    ]
}

model! {
    /// A one-channel first block (computed directly, without im2col or GEMM), 32
    /// filters on an odd-sized output.
    struct Gray: [15, 15, 1] => [
        Conv2D(32, kernel = 3, activation = relu),
        MaxPool2D(2),
        Flatten,
        Dense(3),
    ]
}

/// Runs `fused` and `plain` (same weights) on the same rounded inputs and checks that
/// outputs and every gradient agree bit for bit, in training and in inference — except
/// the parameters named in `resummed`, whose gradients the fused path sums in another
/// order: those must agree norm-wise to 1e-5 (f32 sums over 100k terms).
fn assert_same_bits<M: Model<Scalar = f32>>(
    fused: &mut M,
    plain: &mut Sequential,
    shape: [usize; 3],
    resummed: &[&str],
) {
    plain.params_mut().values_mut().copy_from_slice(fused.params().values());
    for batch in [3, 600] {
        // Rounded values make ties in the pooling windows, where the first must win.
        let x: Vec<f32> =
            Tensor::<f32>::random_normal(&[batch, shape[0], shape[1], shape[2]], 0.0, 1.0, 4)
                .into_vec()
                .iter()
                .map(|v| (4.0 * v).round() / 4.0)
                .collect();
        let d = Tensor::<f32>::random_normal(&[batch, 3], 0.0, 1.0, 5).into_vec();
        let yf = fused.forward_train(&x, batch).unwrap().outputs.to_vec();
        let yp = plain.forward_train(&x, batch).unwrap().outputs.to_vec();
        assert_eq!(yf, yp, "training outputs, batch {batch}");
        let (mut gf, mut gp) = (vec![0.0; fused.params().len()], vec![0.0; plain.params().len()]);
        fused.backward(&x, &d, false, &mut gf).unwrap();
        plain.backward(&x, &d, false, &mut gp).unwrap();
        for e in fused.params().entries().iter().filter(|e| e.trainable) {
            let (a, b) = (&gf[e.range()], &gp[e.range()]);
            if resummed.contains(&e.name.as_str()) {
                let diff = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f32>().sqrt();
                let norm = b.iter().map(|y| y * y).sum::<f32>().sqrt();
                assert!(
                    diff <= 1e-5 * norm,
                    "{} gradient, batch {batch}: {diff} vs norm {norm}",
                    e.name
                );
                assert_ne!(norm, 0.0, "{} gradient is zero", e.name);
            } else {
                assert_eq!(a, b, "{} gradient, batch {batch}", e.name);
            }
        }
        assert!(gf.iter().all(|g| g.is_finite()) && gf.iter().any(|&g| g != 0.0));
        let yf = fused.forward_infer(&x, batch).unwrap().outputs.to_vec();
        let yp = plain.forward_infer(&x, batch).unwrap().outputs.to_vec();
        assert_eq!(yf, yp, "inference outputs, batch {batch}");
    }
}

/// `model!` runs each Conv2D → MaxPool2D pair fused; a Sequential of the same layers
/// built with `fuse(false)` runs them one by one. Outputs and every gradient must agree
/// bit for bit (up to the summation order of a one-channel block's kernel gradient),
/// for a batch that takes the one-core path and one that takes two.
#[test]
fn fused_conv_pool_blocks_equal_the_layers_run_one_by_one() {
    use kiln::layers::{Conv2D, Dense, Flatten, MaxPool2D};
    use kiln::tape::kernels::Padding;
    let mut plain = Sequential::builder("blocks", &[15, 15, 2])
        .fuse(false)
        .add(Conv2D::new(6).kernel(3, 3).activation(Activation::Relu))
        .add(MaxPool2D::new(2))
        .add(Conv2D::new(5).kernel(2, 2).padding(Padding::Same))
        .add(MaxPool2D::new(2))
        .add(Conv2D::new(4).kernel(1, 1).activation(Activation::Sigmoid))
        .add(MaxPool2D::new(2))
        .add(Flatten::new())
        .add(Dense::new(3))
        .build(Seed(99))
        .unwrap();
    assert_same_bits(&mut Blocks::new(Seed(3)), &mut plain, [15, 15, 2], &[]);
    let mut plain = Sequential::builder("gray", &[15, 15, 1])
        .fuse(false)
        .add(Conv2D::new(32).kernel(3, 3).activation(Activation::Relu))
        .add(MaxPool2D::new(2))
        .add(Flatten::new())
        .add(Dense::new(3))
        .build(Seed(99))
        .unwrap();
    // The one-channel block's kernel gradient is summed straight from the pool's winners.
    let resummed = ["conv2d/kernel", "conv2d/bias"];
    assert_same_bits(&mut Gray::new(Seed(3)), &mut plain, [15, 15, 1], &resummed);
}

/// A Sequential fuses the same pairs as `model!` (fusion is the layers' capability, not
/// the macro's): the same layers built at run time absorb each pool into its
/// convolution and compute exactly what the generated network computes.
#[test]
fn sequential_fuses_the_same_pairs_as_model() {
    use kiln::layers::{Conv2D, Dense, Flatten, MaxPool2D};
    use kiln::tape::kernels::Padding;
    let build = |fuse: bool| {
        Sequential::builder("blocks", &[15, 15, 2])
            .fuse(fuse)
            .add(Conv2D::new(6).kernel(3, 3).activation(Activation::Relu))
            .add(MaxPool2D::new(2))
            .add(Conv2D::new(5).kernel(2, 2).padding(Padding::Same))
            .add(MaxPool2D::new(2))
            .add(Conv2D::new(4).kernel(1, 1).activation(Activation::Sigmoid))
            .add(MaxPool2D::new(2))
            .add(Flatten::new())
            .add(Dense::new(3))
            .build(Seed(99))
            .unwrap()
    };
    let mut fused = build(true);
    assert_eq!(fused.fused_layers(), ["max_pooling2d", "max_pooling2d_1", "max_pooling2d_2"]);
    assert!(build(false).fused_layers().is_empty());
    let mut generated = Blocks::new(Seed(3));
    fused.params_mut().values_mut().copy_from_slice(generated.params().values());
    let x = Tensor::<f32>::random_normal(&[5, 15, 15, 2], 0.0, 1.0, 4).into_vec();
    let a = generated.forward_train(&x, 5).unwrap().outputs.to_vec();
    let b = fused.forward_train(&x, 5).unwrap().outputs.to_vec();
    assert_eq!(a, b);
    // A pool the convolution cannot take in (3×3 windows) runs by itself.
    let s = Sequential::builder("odd", &[9, 9, 1])
        .add(Conv2D::new(2).kernel(3, 3))
        .add(MaxPool2D::new(3))
        .add(Flatten::new())
        .build(Seed(1))
        .unwrap();
    assert!(s.fused_layers().is_empty());
}

model! {
    /// The ConvNet's blocks in float64.
    #[dtype(f64)]
    struct Convnet64: [9, 9, 2] => [
        Conv2D(3, kernel = 3, activation = relu),
        MaxPool2D(2),
        Flatten,
        Dense(4, activation = softmax),
    ]
}

/// `#[dtype(f64)]` makes a float64 network: its scalar is f64, and it computes exactly
/// what a `Sequential<f64>` of the same layers computes (outputs and every gradient).
#[test]
fn dtype_f64_networks_compute_in_f64() {
    use kiln::layers::{Conv2D, Dense, Flatten, MaxPool2D};
    let mut generated = Convnet64::new(Seed(7));
    let _: &kiln::ParamStore<f64> = generated.params();
    let mut plain = kiln::SequentialBuilder::<f64>::new("plain", &[9, 9, 2])
        .add(Conv2D::<f64>::new(3).kernel(3, 3).activation(Activation::Relu))
        .add(MaxPool2D::new(2))
        .add(Flatten::new())
        .add(Dense::<f64>::new(4).activation(kiln::layers::Act::Softmax))
        .build(Seed(1))
        .unwrap();
    plain.params_mut().values_mut().copy_from_slice(generated.params().values());
    let x = Tensor::<f64>::random_normal(&[3, 9, 9, 2], 0.0, 1.0, 2).into_vec();
    let a = generated.forward_train(&x, 3).unwrap().outputs.to_vec();
    let b = plain.forward_train(&x, 3).unwrap().outputs.to_vec();
    assert_eq!(a, b);
    // Not the float32 values: a float32 network of the same weights rounds differently.
    assert!(a.iter().any(|v| (*v as f32) as f64 != *v), "outputs carry float64 precision");
    let d = Tensor::<f64>::random_normal(&[3, 4], 0.0, 1.0, 3).into_vec();
    let (mut ga, mut gb) = (vec![0.0; generated.params().len()], vec![0.0; plain.params().len()]);
    generated.backward(&x, &d, false, &mut ga).unwrap();
    plain.backward(&x, &d, false, &mut gb).unwrap();
    assert_eq!(ga, gb);
}
