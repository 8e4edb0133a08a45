//! End-to-end training workloads on the real MNIST: `cargo xtask bench` runs them in
//! release mode and prints one JSON line per workload, then writes a markdown table to
//! target/bench/workloads.md.
//!
//! Workloads: `mlp` (784-128-10, Adam 1e-3, batch 32, 3 epochs), `mlp-b256` (batch
//! 256), `cnn` (the README's ConvNet, batch 128, 2 epochs), `lstm` (each image as 28
//! steps of 28 pixels: LSTM(128) → Dense(10, softmax), batch 128, 2 epochs), `resnet`
//! (the mnist_resnet example's network, batch 128, 2 epochs, with its GFLOP per epoch
//! and the GFLOP/s achieved), and `predict-b32` /
//! `predict-b1024` (the MLP on the 10k test images). Options: `--limit N` (training
//! images), `--epochs N`, `--only NAME`.
//!
//! Built with the `mpi` feature and started under `mpirun -np N` (`cargo xtask bench
//! --mpi N`), the training workloads run data-parallel on N ranks with the same global
//! batch; rank 0 reports, with the seconds per step spent summing gradients over ranks.

use kiln::Loss;
use kiln::prelude::*;
use std::time::Instant;

model! {
    struct Mlp: [28, 28, 1] => [
        Flatten,
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
    struct RowReader: [28, 28] => [
        LSTM(128),
        Dense(10, activation = softmax),
    ]
}

model! {
    /// DESIGN.md's residual convnet (the mnist_resnet example).
    struct ResNet: [28, 28, 1] => [
        Conv2D(32, kernel = 3, padding = same, activation = relu),
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

/// Multiply-add FLOPs of one training step per sample, from the layers' kernels: each
/// kernel-and-bias layer's forward product (2 · kernel size · output positions), the
/// same again for its kernel gradient and for its input gradient (except the first
/// layer's, which nothing needs).
fn train_flops_per_sample<M: Model>(m: &M, layer_shapes: &[(&str, &[usize])]) -> f64 {
    let mut total = 0.0;
    for (i, (name, out)) in layer_shapes.iter().enumerate() {
        let Some(k) = m.params().get(&format!("{name}/kernel")) else { continue };
        let positions = out.iter().product::<usize>() / out.last().copied().unwrap_or(1);
        let fwd = 2.0 * k.len() as f64 * positions as f64;
        total += if i == 0 { 2.0 * fwd } else { 3.0 * fwd };
    }
    total
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

struct Opts {
    limit: usize,
    epochs: Option<usize>,
    only: Option<String>,
}

fn opts() -> Opts {
    let args: Vec<String> = std::env::args().collect();
    let value =
        |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned();
    Opts {
        limit: value("--limit").and_then(|v| v.parse().ok()).unwrap_or(usize::MAX),
        epochs: value("--epochs").and_then(|v| v.parse().ok()),
        only: value("--only"),
    }
}

fn predict_secs<S: kiln::Shape, M: Model<Scalar = f32, Input = S>, L: Loss<f32>>(
    m: &mut Compiled<M, L>,
    x: &Inputs<S>,
    batch: usize,
) -> kiln::Result<f64> {
    m.predict_batched(&x.head(1000), batch)?; // warm-up
    let t = Instant::now();
    m.predict_batched(x, batch)?;
    Ok(t.elapsed().as_secs_f64())
}

fn train<S: kiln::Shape, M: Model<Scalar = f32, Input = S, Output = S1<10>>>(
    name: &str,
    model: M,
    batch: usize,
    epochs: usize,
    mnist: &kiln::datasets::mnist::Mnist,
    o: &Opts,
) -> kiln::Result<serde_json::Value> {
    let n = o.limit.min(mnist.train.y.len());
    let (x, y) = (mnist.train.x.head(n).reshape::<S>()?, mnist.train.y.head(n));
    let test_x = mnist.test.x.clone().reshape::<S>()?;
    let mut m =
        model.compile(Adam::new(1e-3), SparseCategoricalCrossentropy::default(), [Accuracy])?;
    let epochs = o.epochs.unwrap_or(epochs);
    let h = m.fit(&x, &y).epochs(epochs).batch_size(batch).verbose(0).seed(1).run()?;
    let steady: Vec<f64> = h.epoch_seconds.iter().skip(1).copied().collect();
    let steady_epoch_s = if steady.is_empty() {
        h.epoch_seconds[0]
    } else {
        steady.iter().sum::<f64>() / steady.len() as f64
    };
    let p = m.phase_times();
    let per_epoch = |v: f64| v / epochs as f64;
    let eval = m.evaluate_batched(&test_x, &mnist.test.y, 1024)?;
    let predict_10k_s = predict_secs(&mut m, &test_x, 1024)?;
    Ok(serde_json::json!({
        "workload": name,
        "batch": batch,
        "epochs": epochs,
        "train_samples": n,
        "epoch_secs": h.epoch_seconds,
        "steady_epoch_s": steady_epoch_s,
        "samples_per_s": n as f64 / steady_epoch_s,
        "test_acc": eval["accuracy"],
        "predict_10k_s": predict_10k_s,
        "peak_rss_mb": peak_rss_mb(),
        "phase_s_per_epoch": {
            "gather": per_epoch(p.gather),
            "forward": per_epoch(p.forward),
            "loss": per_epoch(p.loss),
            "backward": per_epoch(p.backward),
            "optimizer": per_epoch(p.optimizer),
            "all_reduce": per_epoch(p.all_reduce),
        },
        "ranks": kiln::distributed::size(),
        "all_reduce_ms_per_step": 1e3 * p.all_reduce / p.steps.max(1) as f64,
        "gemm_kernel": kiln::tape::kernels::sgemm::kernel_name(),
        "threads": kiln::tape::kernels::parallel::threads(),
    }))
}

fn main() -> kiln::Result<()> {
    let o = opts();
    // `--threads N`: the thread count (KILN_THREADS), set before the pool first starts.
    let args: Vec<String> = std::env::args().collect();
    if let Some(t) = args.iter().position(|a| a == "--threads").and_then(|i| args.get(i + 1)) {
        // SAFETY: set before any thread of this process starts.
        unsafe { std::env::set_var("KILN_THREADS", t) };
    }
    #[cfg(feature = "mpi")]
    let _mpi = kiln::mpi::init()?;
    let mnist = kiln::datasets::mnist::load(concat!(env!("CARGO_MANIFEST_DIR"), "/../data/mnist"))?;
    let want = |name: &str| o.only.as_deref().is_none_or(|w| w == name);
    let mut rows = Vec::new();
    if want("mlp") {
        rows.push(train("mlp", Mlp::new(Seed(42)), 32, 3, &mnist, &o)?);
    }
    if want("mlp-b256") {
        rows.push(train("mlp-b256", Mlp::new(Seed(42)), 256, 3, &mnist, &o)?);
    }
    if want("cnn") {
        rows.push(train("cnn", ConvNet::new(Seed(42)), 128, 2, &mnist, &o)?);
    }
    if want("lstm") {
        rows.push(train("lstm", RowReader::new(Seed(42)), 128, 2, &mnist, &o)?);
    }
    if want("resnet") {
        let net = ResNet::new(Seed(42));
        let names: Vec<String> = net
            .summary()
            .rows
            .iter()
            .map(|r| r.0.split(' ').next().unwrap_or("").to_string())
            .collect();
        let shapes: Vec<Vec<usize>> = net.summary().rows.iter().map(|r| r.1.clone()).collect();
        let pairs: Vec<(&str, &[usize])> =
            names.iter().map(|n| n.as_str()).zip(shapes.iter().map(|s| s.as_slice())).collect();
        let flops = train_flops_per_sample(&net, &pairs);
        let mut row = train("resnet", net, 128, 2, &mnist, &o)?;
        let per_epoch = flops * 60_000.0;
        let secs = row["steady_epoch_s"].as_f64().unwrap_or(f64::NAN) * 60_000.0
            / row["train_samples"].as_f64().unwrap_or(60_000.0);
        row["gflop_per_epoch_60k"] = serde_json::json!(per_epoch / 1e9);
        row["epoch_s_60k"] = serde_json::json!(secs);
        row["gflop_per_s"] = serde_json::json!(per_epoch / 1e9 / secs);
        rows.push(row);
    }
    for batch in [32, 1024] {
        let name = format!("predict-b{batch}");
        if want(&name) {
            let mut m = Mlp::new(Seed(42)).compile(
                Adam::default(),
                SparseCategoricalCrossentropy::default(),
                (),
            )?;
            let s = predict_secs(&mut m, &mnist.test.x, batch)?;
            rows.push(serde_json::json!({"workload": name, "batch": batch, "predict_10k_s": s, "samples_per_s": 10_000.0 / s, "peak_rss_mb": peak_rss_mb()}));
        }
    }
    if !kiln::distributed::is_chief() {
        return Ok(());
    }
    for r in &rows {
        println!("{r}");
    }
    let mut md = String::from(
        "| workload | batch | epochs | steady epoch (s) | samples/s | test acc | predict 10k (s) | gather | forward | loss | backward | optimizer | all-reduce |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in &rows {
        let f = |k: &str| {
            r.get(k).and_then(|v| v.as_f64()).map_or("–".to_string(), |v| format!("{v:.4}"))
        };
        let ph = |k: &str| {
            r["phase_s_per_epoch"]
                .get(k)
                .and_then(|v| v.as_f64())
                .map_or("–".to_string(), |v| format!("{v:.3}"))
        };
        md += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r["workload"].as_str().unwrap_or(""),
            r["batch"],
            r.get("epochs").map_or("–".to_string(), |v| v.to_string()),
            f("steady_epoch_s"),
            r.get("samples_per_s")
                .and_then(|v| v.as_f64())
                .map_or("–".into(), |v| format!("{v:.0}")),
            f("test_acc"),
            f("predict_10k_s"),
            ph("gather"),
            ph("forward"),
            ph("loss"),
            ph("backward"),
            ph("optimizer"),
            ph("all_reduce"),
        );
    }
    let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/bench"));
    std::fs::create_dir_all(dir)
        .map_err(|source| kiln::Error::Io { path: dir.to_path_buf(), source })?;
    let path = dir.join("workloads.md");
    std::fs::write(&path, md).map_err(|source| kiln::Error::Io { path: path.clone(), source })?;
    eprintln!("wrote {}", path.display());
    Ok(())
}
