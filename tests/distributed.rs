//! Data-parallel training over MPI (feature `mpi`; needs `mpirun` on the PATH): the MNIST
//! MLP and the MNIST convnet (with its Dropout) trained 2 epochs on 2 ranks equal the
//! same training in one process with the same global batch — History (loss, accuracy,
//! validation), `evaluate`, `predict` and the final weights — in float64 to 1e-12 and in float32 to
//! the bound stated below; two 2-rank runs give the same bits; a rank that fails ends
//! every rank with an error instead of a hang; after the first batch a data-parallel
//! step allocates nothing (a counting allocator in this binary).
//!
//! Each case runs this binary under `mpirun -np 2` as a child (`KILN_MPI_CHILD`), whose
//! rank 0 writes what it trained to a file; the test trains the same in this process,
//! alone, and compares.
//!
//! `cargo test --features mpi --test distributed`
#![cfg(feature = "mpi")]

use kiln::prelude::*;
use kiln::tape::Scalar;
use kiln::{Callback, CallbackContext, Logs};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

#[path = "common/counting.rs"]
mod counting;

model! {
    struct Mlp: [28, 28, 1] => [
        Flatten,
        Dense(128, activation = relu),
        Dense(10, activation = softmax),
    ]
}

model! {
    #[dtype(f64)]
    struct Mlp64: [28, 28, 1] => [
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
    #[dtype(f64)]
    struct ConvNet64: [28, 28, 1] => [
        Conv2D(32, kernel = 3, activation = relu),
        MaxPool2D(2),
        Conv2D(64, kernel = 3, activation = relu),
        MaxPool2D(2),
        Flatten,
        Dropout(0.5),
        Dense(10, activation = softmax),
    ]
}

/// What a run trained: every number as f64 (exact for f32), in a fixed order.
#[derive(Debug, Default, PartialEq)]
struct Trained {
    history: Vec<(String, Vec<f64>)>,
    evaluation: Vec<f64>,
    weights: Vec<f64>,
}

impl Trained {
    fn to_text(&self) -> String {
        let mut s = String::new();
        let line = |s: &mut String, name: &str, v: &[f64]| {
            let _ = write!(s, "{name}");
            for x in v {
                let _ = write!(s, " {:016x}", x.to_bits());
            }
            s.push('\n');
        };
        for (k, v) in &self.history {
            line(&mut s, k, v);
        }
        line(&mut s, "=evaluation", &self.evaluation);
        line(&mut s, "=weights", &self.weights);
        s
    }

    fn from_text(text: &str) -> Trained {
        let mut t = Trained { history: Vec::new(), evaluation: Vec::new(), weights: Vec::new() };
        for l in text.lines() {
            let mut parts = l.split(' ');
            let name = parts.next().unwrap().to_string();
            let v: Vec<f64> =
                parts.map(|h| f64::from_bits(u64::from_str_radix(h, 16).unwrap())).collect();
            match name.as_str() {
                "=evaluation" => t.evaluation = v,
                "=weights" => t.weights = v,
                _ => t.history.push((name, v)),
            }
        }
        t
    }
}

fn mnist(n: usize) -> (Inputs<S3<28, 28, 1>>, ClassLabels) {
    let m = kiln::datasets::mnist::load(Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist"))
        .unwrap();
    (m.train.x.head(n), m.train.y.head(n))
}

fn widen(x: &Inputs<S3<28, 28, 1>>) -> Inputs<S3<28, 28, 1>, f64> {
    Inputs::from_vec(x.data().iter().map(|&v| f64::from(v)).collect()).unwrap()
}

/// Trains `model` as the test's every case does: 2 epochs, a global batch of 31 (so the
/// ranks' slices differ by a row and the last batch is short), validation_split 0.2,
/// shuffled; then evaluates on the first 200 samples and predicts the first 100.
fn train<M>(model: M, x: &Inputs<M::Input, M::Scalar>, y: &ClassLabels) -> kiln::Result<Trained>
where
    M: Model,
    SparseCategoricalCrossentropy: kiln::loss::LossFor<M::Output, ClassLabels>,
{
    let mut m =
        model.compile(Adam::default(), SparseCategoricalCrossentropy::default(), [Accuracy])?;
    let h = m.fit(x, y).epochs(2).batch_size(31).validation_split(0.2).verbose(0).seed(7).run()?;
    let e = m.evaluate(&x.head(200), &y.head(200))?;
    let history = h.keys().map(|k| (k.to_string(), h.get(k).unwrap().to_vec())).collect();
    let mut evaluation = vec![e.loss];
    evaluation.extend(e.metrics.values());
    // predict with a batch of 7, so the ranks' slices differ and the last batch is short.
    let p = m.predict_batched(&x.head(100), 7)?;
    evaluation.extend(p.data().iter().map(|v| v.as_f64()));
    let weights = m.model().params().values().iter().map(|v| v.as_f64()).collect();
    Ok(Trained { history, evaluation, weights })
}

/// The case `name` trained in this process.
fn case(name: &str) -> kiln::Result<Trained> {
    let (x, y) = mnist(if name.starts_with("mlp") { 1000 } else { 320 });
    match name {
        "mlp32" => train(Mlp::new(Seed(3)), &x, &y),
        "mlp64" => train(Mlp64::new(Seed(3)), &widen(&x), &y),
        "convnet32" => train(ConvNet::new(Seed(3)), &x, &y),
        "convnet64" => train(ConvNet64::new(Seed(3)), &widen(&x), &y),
        other => panic!("unknown case {other}"),
    }
}

/// A callback that fails on rank 1 at the end of the first epoch.
struct FailOnRankOne;

impl Callback<f32> for FailOnRankOne {
    fn on_epoch_end(
        &mut self,
        _epoch: usize,
        _logs: &Logs,
        _ctx: &mut CallbackContext<'_, f32>,
    ) -> kiln::train::Result<()> {
        if kiln::distributed::rank() == 1 {
            return Err(kiln::TrainError::InvalidArgument {
                name: "test",
                message: "rank 1 fails on purpose".into(),
            });
        }
        Ok(())
    }
}

/// Under mpirun: trains the case `KILN_MPI_CHILD` names; rank 0 writes it to
/// `KILN_MPI_OUT`. Exits with 3 when training returned an error.
#[test]
fn child_under_mpirun() {
    let Some(which) = std::env::var("KILN_MPI_CHILD").ok() else {
        return;
    };
    let mpi = kiln::mpi::init().unwrap();
    assert_eq!(mpi.size(), 2, "the child runs on 2 ranks");
    let result = if which == "allocations" {
        // Allocations after each batch of one epoch, relative to the first batch.
        let (x, y) = mnist(640);
        let mut counts = Vec::with_capacity(64);
        let fit = |counts: &mut Vec<usize>| -> kiln::Result<()> {
            let mut m = ConvNet::new(Seed(3)).compile(
                Adam::default(),
                SparseCategoricalCrossentropy::default(),
                [Accuracy],
            )?;
            m.fit(&x, &y)
                .epochs(1)
                .batch_size(33)
                .verbose(0)
                .callbacks(LambdaCallback::new().on_batch_end(|_, _| {
                    counts.push(counting::allocations());
                }))
                .run()?;
            Ok(())
        };
        fit(&mut counts).map(|_| {
            let after: Vec<f64> = counts.iter().map(|c| (c - counts[0]) as f64).collect();
            Some(Trained { history: vec![("allocations".into(), after)], ..Trained::default() })
        })
    } else if which == "fail" {
        let (x, y) = mnist(200);
        let fit = |x, y| -> kiln::Result<()> {
            let mut m = Mlp::new(Seed(3)).compile(
                Adam::default(),
                SparseCategoricalCrossentropy::default(),
                [Accuracy],
            )?;
            m.fit(x, y).epochs(3).verbose(0).callbacks((FailOnRankOne,)).run()?;
            Ok(())
        };
        fit(&x, &y).map(|_| None)
    } else {
        case(&which).map(Some)
    };
    match result {
        Ok(Some(t)) => {
            if mpi.is_chief() {
                std::fs::write(std::env::var("KILN_MPI_OUT").unwrap(), t.to_text()).unwrap();
            }
        }
        Ok(None) => {}
        Err(e) => {
            // Into a file as well: once one rank exits non-zero, mpirun may end the
            // others before their output reaches it.
            let out = std::env::var("KILN_MPI_OUT").unwrap();
            std::fs::write(format!("{out}.err{}", mpi.rank()), e.to_string()).unwrap();
            eprintln!("rank {}: {e}", mpi.rank());
            drop(mpi);
            std::process::exit(3);
        }
    }
}

/// Runs the child for `case` on 2 ranks (failing after `limit`): its exit status and
/// output, and the file rank 0 wrote.
fn on_two_ranks(case: &str, limit: Duration) -> (bool, String, Option<Trained>) {
    let out: PathBuf = std::env::temp_dir().join(format!(
        "kiln-mpi-{}-{case}-{:?}.txt",
        std::process::id(),
        Instant::now()
    ));
    let mut child = Command::new("mpirun")
        .args(["-np", "2", "--oversubscribe", "--mca", "btl", "self,vader"])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", "child_under_mpirun", "--nocapture", "--test-threads", "1"])
        .env("KILN_MPI_CHILD", case)
        .env("KILN_MPI_OUT", &out)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("mpirun runs (install Open MPI: apt-get install openmpi-bin libopenmpi-dev)");
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("{case} on 2 ranks did not end within {limit:?}: a rank hangs");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let o = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    let trained = std::fs::read_to_string(&out).ok().map(|t| Trained::from_text(&t));
    let _ = std::fs::remove_file(&out);
    let mut text = text;
    for rank in 0..2 {
        let err = PathBuf::from(format!("{}.err{rank}", out.display()));
        if let Ok(e) = std::fs::read_to_string(&err) {
            text += &format!("\nrank {rank} returned: {e}");
            let _ = std::fs::remove_file(&err);
        }
    }
    (status.success(), text, trained)
}

/// The largest difference between `a` and `b` relative to `b`'s largest magnitude.
fn worst(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(1e-300f64, |m, v| m.max(v.abs()));
    a.iter().zip(b).fold(0.0f64, |m, (x, y)| m.max((x - y).abs() / scale))
}

fn compare(case_name: &str, bound: f64) {
    let (ok, text, two) = on_two_ranks(case_name, Duration::from_secs(600));
    assert!(ok, "{case_name} on 2 ranks failed:\n{text}");
    let two = two.expect("rank 0 wrote its results");
    let one = case(case_name).unwrap();
    assert_eq!(
        two.history.iter().map(|(k, _)| k).collect::<Vec<_>>(),
        one.history.iter().map(|(k, _)| k).collect::<Vec<_>>()
    );
    let mut report = Vec::new();
    for ((k, a), (_, b)) in two.history.iter().zip(&one.history) {
        report.push((k.clone(), worst(a, b)));
    }
    report.push(("evaluate and predict".into(), worst(&two.evaluation, &one.evaluation)));
    report.push(("weights".into(), worst(&two.weights, &one.weights)));
    println!("{case_name}: 2 ranks vs 1 process, relative differences: {report:?}");
    for (k, d) in &report {
        assert!(*d <= bound, "{case_name}: {k} differs by {d:e} (bound {bound:e})");
    }
}

#[test]
fn mlp_on_two_ranks_trains_as_one_process() {
    compare("mlp64", 1e-12);
    // float32: the ranks' slices sum their gradient rows separately and the all-reduce
    // adds the two sums, where one process sums all rows in one pass; the rounding
    // differences (~1e-7 relative per step) grow over the 52 steps to ~2e-6 in the weights.
    compare("mlp32", 1e-5);
}

#[test]
fn convnet_on_two_ranks_trains_as_one_process() {
    compare("convnet64", 1e-12);
    compare("convnet32", 1e-5);
}

#[test]
fn two_runs_on_two_ranks_give_the_same_bits() {
    let (ok_a, text_a, a) = on_two_ranks("mlp32", Duration::from_secs(600));
    let (ok_b, text_b, b) = on_two_ranks("mlp32", Duration::from_secs(600));
    assert!(ok_a && ok_b, "a run failed:\n{text_a}\n{text_b}");
    assert_eq!(a.unwrap(), b.unwrap(), "two runs trained different bits");
}

#[test]
fn a_rank_that_fails_ends_every_rank_with_an_error() {
    let (ok, text, _) = on_two_ranks("fail", Duration::from_secs(120));
    assert!(!ok, "the run should fail:\n{text}");
    assert!(text.contains("rank 1 returned: ") && text.contains("rank 1 fails on purpose"));
    assert!(
        text.contains("rank 0 returned: distributed training: rank 1 failed"),
        "rank 0 learns that rank 1 failed:\n{text}"
    );
}

#[test]
fn a_data_parallel_step_allocates_nothing_after_the_first_batch() {
    let (ok, text, t) = on_two_ranks("allocations", Duration::from_secs(600));
    assert!(ok, "the run failed:\n{text}");
    let after = &t.expect("rank 0 wrote its counts").history[0].1;
    println!("allocations after each batch, relative to the first: {after:?}");
    assert!(after.len() >= 15, "{after:?}");
    assert!(after.iter().all(|&a| a == 0.0), "steady-state steps allocate: {after:?}");
}
