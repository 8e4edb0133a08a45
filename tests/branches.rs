//! Networks with branches: residual blocks and every merge, declared with `model!` and
//! built at run time. Gradients through every merge are checked against central
//! differences (float64); the two ways of declaring a network give the same bits; the
//! summary says what feeds each layer; fusion still happens inside a branch; and a
//! misfit reads the same at run time as while compiling.

use kiln::layers::Dense;
use kiln::*;

/// `Σ out ⊙ r` and its gradient w.r.t. every parameter, in training mode.
fn loss_and_grads<M: Model<Scalar = f64>>(
    m: &mut M,
    x: &[f64],
    r: &[f64],
    batch: usize,
) -> (f64, Vec<f64>) {
    let out = m.forward_train(x, batch).unwrap();
    assert!(out.logits.is_none(), "the check needs a linear output");
    let loss = out.outputs.iter().zip(r).map(|(a, b)| a * b).sum();
    let mut grads = vec![0.0; m.params().len()];
    m.backward(x, r, false, &mut grads).unwrap();
    (loss, grads)
}

/// The worst relative difference between the backward pass and central differences.
fn gradient_error<M: Model<Scalar = f64>>(m: &mut M, batch: usize) -> f64 {
    let per: usize = m.input_shape().iter().product();
    let outs: usize = m.output_shape().iter().product();
    let x = Tensor::<f64>::random_uniform(&[batch * per], -1.0, 1.0, 3).into_vec();
    let r = Tensor::<f64>::random_uniform(&[batch * outs], -1.0, 1.0, 4).into_vec();
    let (_, grads) = loss_and_grads(m, &x, &r, batch);
    let h = 1e-6;
    let mut worst: f64 = 0.0;
    for (k, &g) in grads.iter().enumerate() {
        let v = m.params().values()[k];
        m.params_mut().values_mut()[k] = v + h;
        let (up, _) = loss_and_grads(m, &x, &r, batch);
        m.params_mut().values_mut()[k] = v - h;
        let (down, _) = loss_and_grads(m, &x, &r, batch);
        m.params_mut().values_mut()[k] = v;
        let fd = (up - down) / (2.0 * h);
        worst = worst.max((fd - g).abs() / fd.abs().max(g.abs()).max(1e-3));
    }
    worst
}

fn dense(units: usize) -> Dense<f64> {
    Dense::new(units).activation(kiln::layers::Act::from_name("tanh").unwrap())
}

/// A built-in layer from Keras-style arguments, as `model!` writes them.
fn layer(
    class: &str,
    args: &[(Option<&str>, kiln::spec::Value)],
) -> Box<dyn kiln::layers::Layer<f64>> {
    kiln::layers::builtin::<f64>(class, args).unwrap()
}

fn conv(
    filters: i64,
    kernel: i64,
    strides: i64,
    act: &str,
    bias: bool,
) -> Box<dyn kiln::layers::Layer<f64>> {
    use kiln::spec::Value;
    layer(
        "Conv2D",
        &[
            (None, Value::Int(filters)),
            (Some("kernel"), Value::Int(kernel)),
            (Some("strides"), Value::Int(strides)),
            (Some("padding"), Value::name(if kernel == 1 { "valid" } else { "same" })),
            (Some("activation"), Value::name(act)),
            (Some("use_bias"), Value::Bool(bias)),
        ],
    )
}

#[test]
fn gradients_through_every_merge_match_central_differences() {
    let kinds = [
        MergeKind::Add,
        MergeKind::Subtract,
        MergeKind::Multiply,
        MergeKind::Average,
        MergeKind::Maximum,
        MergeKind::Minimum,
    ];
    for kind in kinds {
        // Three branches where the merge takes them; one is the identity, so the
        // block's input gets gradients from two consumers.
        let n = if kind == MergeKind::Subtract { 2 } else { 3 };
        let mut branches = vec![Branch::new(), Branch::new().add(dense(4))];
        if n == 3 {
            branches.push(Branch::new().add(dense(4)).add(dense(4)));
        }
        let mut m = SequentialBuilder::<f64>::new("merge", &[5])
            .add(dense(4))
            .merge(Merge::new(kind), branches)
            .add(Dense::new(3))
            .build(Seed(7))
            .unwrap();
        let e = gradient_error(&mut m, 4);
        println!("{kind:?}: worst relative error {e:.2e}");
        assert!(e < 1e-6, "{kind:?}: backward differs from central differences by {e:.2e}");
    }
    // Concatenate on the last and on the first axis of a sequence, and residual blocks
    // (identity, projection, nested).
    for axis in [-1, 1] {
        let mut m = SequentialBuilder::<f64>::new("concat", &[3, 2])
            .add(dense(4))
            .merge(
                Merge::concatenate(axis),
                vec![Branch::new().add(dense(4)), Branch::new(), Branch::new().add(dense(4))],
            )
            .add_boxed(layer("Activation", &[(None, kiln::spec::Value::name("tanh"))]))
            .add_boxed(layer("Flatten", &[]))
            .add(Dense::new(3))
            .build(Seed(8))
            .unwrap();
        let e = gradient_error(&mut m, 3);
        println!("Concatenate(axis = {axis}): worst relative error {e:.2e}");
        assert!(e < 1e-6, "Concatenate({axis}): {e:.2e}");
    }
    let mut m = SequentialBuilder::<f64>::new("residual", &[5])
        .add(dense(4))
        .residual(Branch::new().add(dense(4)).residual(Branch::new().add(dense(4))))
        .residual_with_shortcut(Branch::new().add(dense(6)), Branch::new().add(Dense::new(6)))
        .add(Dense::new(2))
        .build(Seed(9))
        .unwrap();
    let e = gradient_error(&mut m, 4);
    println!("residual blocks: worst relative error {e:.2e}");
    assert!(e < 1e-6, "residual: {e:.2e}");
}

model! {
    /// A small ResNet as DESIGN.md writes one.
    #[dtype(f64)]
    struct ResNet: [8, 8, 1] => [
        Conv2D(4, kernel = 3, padding = same, activation = relu),
        Residual[
            Conv2D(4, kernel = 3, padding = same, use_bias = false),
            BatchNormalization, ReLU,
            Conv2D(4, kernel = 3, padding = same),
        ],
        ReLU,
        Residual[
            Conv2D(6, kernel = 3, strides = 2, padding = same, activation = relu),
            Conv2D(6, kernel = 3, padding = same),
        ] + shortcut[ Conv2D(6, kernel = 1, strides = 2) ],
        Concatenate(axis = -1)[
            [Conv2D(2, kernel = 1, activation = relu), MaxPool2D(2)],
            [MaxPool2D(2)],
        ],
        GlobalAveragePooling2D,
        Dense(3),
    ]
}

fn resnet_at_run_time(fuse: bool) -> Sequential<f64> {
    let pool = || layer("MaxPool2D", &[(None, kiln::spec::Value::Int(2))]);
    SequentialBuilder::<f64>::new("res_net", &[8, 8, 1])
        .fuse(fuse)
        .add_boxed(conv(4, 3, 1, "relu", true))
        .residual(
            Branch::new()
                .add_boxed(conv(4, 3, 1, "linear", false))
                .add_boxed(layer("BatchNormalization", &[]))
                .add_boxed(layer("ReLU", &[]))
                .add_boxed(conv(4, 3, 1, "linear", true)),
        )
        .add_boxed(layer("ReLU", &[]))
        .residual_with_shortcut(
            Branch::new()
                .add_boxed(conv(6, 3, 2, "relu", true))
                .add_boxed(conv(6, 3, 1, "linear", true)),
            Branch::new().add_boxed(conv(6, 1, 2, "linear", true)),
        )
        .merge(
            Merge::concatenate(-1),
            vec![
                Branch::new().add_boxed(conv(2, 1, 1, "relu", true)).add_boxed(pool()),
                Branch::new().add_boxed(pool()),
            ],
        )
        .add_boxed(layer("GlobalAveragePooling2D", &[]))
        .add(Dense::new(3))
        .build(Seed(5))
        .unwrap()
}

#[test]
fn model_macro_and_run_time_blocks_give_the_same_network_and_bits() {
    let mut a = ResNet::new(Seed(5));
    let mut b = resnet_at_run_time(true);
    let mut c = resnet_at_run_time(false);
    let names =
        |p: &ParamStore<f64>| p.entries().iter().map(|e| e.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(a.params()), names(b.params()));
    assert_eq!(a.params().values(), b.params().values());
    assert_eq!(b.layer_names().last(), Some(&"dense"));
    assert!(b.layer_names().contains(&"add_1") && b.layer_names().contains(&"concatenate"));
    // The pooling after the 1x1 convolution inside the first branch runs fused.
    assert_eq!(b.fused_layers(), vec!["max_pooling2d"]);
    assert!(c.fused_layers().is_empty());
    let x = Tensor::<f64>::random_uniform(&[4 * 64], 0.0, 1.0, 2).into_vec();
    let r = Tensor::<f64>::random_uniform(&[4 * 3], -1.0, 1.0, 6).into_vec();
    let (la, ga) = loss_and_grads(&mut a, &x, &r, 4);
    let (lb, gb) = loss_and_grads(&mut b, &x, &r, 4);
    let (lc, gc) = loss_and_grads(&mut c, &x, &r, 4);
    assert_eq!(la.to_bits(), lb.to_bits());
    assert_eq!(ga, gb);
    assert_eq!(la.to_bits(), lc.to_bits(), "fused and unfused passes differ");
    assert_eq!(ga, gc);
    // BatchNormalization in training mode makes this a check of the whole network too.
    let e = gradient_error(&mut a, 4);
    println!("ResNet: worst relative error {e:.2e}");
    assert!(e < 1e-5, "ResNet: backward differs from central differences by {e:.2e}");
}

#[test]
fn summary_says_what_feeds_each_layer() {
    let s = ResNet::new(Seed(1)).summary();
    let text = s.to_string();
    println!("{text}");
    assert!(text.contains("Connected to"));
    assert!(text.contains("input_layer (InputLayer)"));
    let add = s.rows.iter().position(|r| r.0 == "add (Add)").unwrap();
    assert_eq!(s.connected[add], vec!["conv2d_2[0][0]", "conv2d[0][0]"]);
    let cat = s.rows.iter().position(|r| r.0.starts_with("concatenate")).unwrap();
    assert_eq!(s.rows[cat].1, vec![2, 2, 8]);
    // A plain stack keeps Keras's Sequential summary, without the column.
    let plain =
        SequentialBuilder::<f32>::new("plain", &[4]).add(Dense::new(2)).build(Seed(1)).unwrap();
    assert!(!plain.summary().to_string().contains("Connected to"));
}

#[test]
fn a_misfit_at_run_time_reads_as_it_does_while_compiling() {
    let e = SequentialBuilder::<f32>::new("bad", &[8, 8, 4])
        .residual(
            Branch::new().add_boxed(
                kiln::layers::builtin::<f32>(
                    "Conv2D",
                    &[
                        (None, 8usize.into()),
                        (None, 3usize.into()),
                        (Some("strides"), 2usize.into()),
                        (Some("padding"), kiln::spec::Value::name("same")),
                    ],
                )
                .unwrap(),
            ),
        )
        .build(Seed(1))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("the block turns [8, 8, 4] into [4, 4, 8]")
            && e.contains("add shortcut[Conv2D(8, kernel = 1, strides = 2, padding = same)]"),
        "{e}"
    );
    let e = SequentialBuilder::<f32>::new("bad", &[6])
        .merge(Merge::ADD, vec![Branch::new().add(Dense::new(3)), Branch::new().add(Dense::new(4))])
        .build(Seed(1))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("branch 1 gives [3] and branch 2 gives [4]"), "{e}");
    let e = SequentialBuilder::<f32>::new("bad", &[6])
        .merge(Merge::concatenate(2), vec![Branch::new(), Branch::new()])
        .build(Seed(1))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("axis 2 is out of range"), "{e}");
    // A functional graph: a layer read before it is added, and a layer nothing reads.
    let e = Sequential::functional("bad", &[4])
        .layer("a", Box::new(Dense::new(2)), &["b"])
        .build(Seed(1))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("reads `b`, which is not added before it"), "{e}");
    let e = Sequential::functional("bad", &[4])
        .layer("a", Box::new(Dense::new(2)), &["input_layer"])
        .layer("b", Box::new(Dense::new(2)), &["input_layer"])
        .build(Seed(1))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("a (Dense)") && e.contains("feeds no other layer"), "{e}");
}

model! {
    /// Token ids read by two branches: both check the ids.
    struct TwoEmbeddings: [4] => [
        Concatenate[[Embedding(10, 3)], [Embedding(10, 2)]],
        Flatten,
        Dense(2, activation = softmax),
    ]
}

#[test]
fn every_layer_reading_the_input_checks_it() {
    let m = TwoEmbeddings::new(Seed(1));
    assert!(m.check_inputs(&[1.0, 2.0, 3.0, 4.0]).is_ok());
    let e = m.check_inputs(&[1.0, 2.0, 30.0, 4.0]).unwrap_err().to_string();
    assert!(e.contains("embedding"), "{e}");
}

#[test]
fn keras_model_configs_build_or_say_why_not() {
    // A functional residual block, as `model.to_json()` writes it (trimmed to what the
    // loader reads).
    let tensor = |from: &str| {
        format!(
            r#"{{"class_name": "__keras_tensor__", "config": {{"keras_history": ["{from}", 0, 0]}}}}"#
        )
    };
    let layer = |class: &str, name: &str, cfg: &str, args: String| {
        format!(
            r#"{{"class_name": "{class}", "name": "{name}", "config": {{"name": "{name}"{cfg}}}, "inbound_nodes": [{{"args": [{args}], "kwargs": {{}}}}]}}"#
        )
    };
    let input = r#"{"class_name": "InputLayer", "name": "inp", "config": {"name": "inp", "batch_shape": [null, 6]}, "inbound_nodes": []}"#;
    let model = |layers: Vec<String>| {
        format!(
            r#"{{"class_name": "Functional", "config": {{"name": "net", "layers": [{input}, {}], "output_layers": [["out", 0, 0]]}}}}"#,
            layers.join(", ")
        )
    };
    let good = model(vec![
        layer("Dense", "d1", r#", "units": 6, "activation": "relu""#, tensor("inp")),
        layer("Add", "add", "", format!("[{}, {}]", tensor("d1"), tensor("inp"))),
        layer("Dense", "out", r#", "units": 3"#, tensor("add")),
    ]);
    let net = kiln::keras::from_json::<f32>(&good, Seed(1)).unwrap();
    assert_eq!(net.layer_names(), vec!["d1", "add", "out"]);
    assert_eq!(net.layer_inputs()[1], &[Src::Node(0), Src::Input]);
    assert!(net.params().get("d1/kernel").is_some());

    let err = |json: &str| kiln::keras::from_json::<f32>(json, Seed(1)).err().unwrap().to_string();
    let e = err(&model(vec![layer("Conv3D", "out", "", tensor("inp"))]));
    assert!(e.contains("unknown layer `Conv3D`"), "{e}");
    let e = err(&model(vec![
        layer("Dense", "d1", r#", "units": 4"#, tensor("inp")),
        layer("Add", "out", "", format!("[{}, {}]", tensor("d1"), tensor("inp"))),
    ]));
    assert!(e.contains("branch 1 gives [4] and branch 2 gives [6]"), "{e}");
    let e = err("{ not json");
    assert!(e.contains("not JSON"), "{e}");
    let e = err(r#"{"class_name": "Subclassed", "config": {"layers": []}}"#);
    assert!(e.contains("Sequential and Functional"), "{e}");
}

/// Output of `net` for one sample `x`.
fn run_one(net: &mut Sequential<f64>, x: &[f64]) -> Vec<f64> {
    net.forward_infer(x, 1).unwrap().outputs.to_vec()
}

#[test]
fn masks_pass_through_merges_as_keras_combines_them() {
    use kiln::layers::{LSTM, Masking};
    // 5 steps of 2 features, the last two all zero (masked by Masking(0.0)).
    let x = [0.3, -0.2, 0.5, 0.1, -0.4, 0.7, 0.0, 0.0, 0.0, 0.0];
    let lstm = |seq: bool| LSTM::<f64>::new(4).return_sequences(seq);
    for merge in [Merge::ADD, Merge::concatenate(-1)] {
        // Masked: the LSTM after the merge stops at step 3 and returns that state...
        let mut masked = SequentialBuilder::<f64>::new("m", &[5, 2])
            .add(Masking::new(0.0))
            .merge(merge, vec![Branch::new(), Branch::new()])
            .add_named("lstm", lstm(false))
            .build(Seed(3))
            .unwrap();
        // ...which is the unmasked network's output at step 3 (same weights, by name).
        let mut plain = SequentialBuilder::<f64>::new("m", &[5, 2])
            .merge(merge, vec![Branch::new(), Branch::new()])
            .add_named("lstm", lstm(true))
            .build(Seed(3))
            .unwrap();
        assert_eq!(masked.params().values(), plain.params().values());
        let want = run_one(&mut plain, &x)[2 * 4..3 * 4].to_vec();
        let last = run_one(&mut plain, &x)[4 * 4..].to_vec();
        let got = run_one(&mut masked, &x);
        assert_eq!(got, want, "{merge:?}: the mask did not reach the LSTM after the merge");
        assert_ne!(got, last, "{merge:?}: the padded steps must matter without the mask");
    }
}
