//! `cargo xtask <task>`: the project's automation in plain Rust (no shell scripts).
//!
//! * `ci`    — exactly what CI runs: rustfmt check, clippy with warnings denied, the
//!   README's test command, the examples in shortened form (release build), then the
//!   MPI checks (clippy and the tests with feature `mpi`, the distributed example on 2
//!   ranks; needs Open MPI, which .ci/run installs). It closes with one line
//!   `ci: N passed, M failed` totalling every test binary.
//! * `test`  — the README's test command.
//! * `bench` — the end-to-end MNIST workloads in release mode, one JSON line each and a
//!   table in target/bench/workloads.md (`--limit N`, `--epochs N`, `--only NAME`,
//!   `--threads N`); `bench --mpi N [options]` runs them data-parallel on N MPI ranks
//!   of one thread each (feature `mpi`, `mpirun` on the PATH);
//!   `bench --kernels [criterion args]` runs the kernel micro-benchmarks instead.
//! * `build-times` — what building costs a newcomer, from empty target directories
//!   under target/build-times: the main job's first release build and its rebuild
//!   after an edit, a small user crate's release rebuild after changing one layer
//!   width (cargo's default profile, kiln by path), and the test suite from clean
//!   (build, then run). Prints a table and writes target/build-times.md.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

/// The README's test command, shared by `ci` and `test` so they cannot drift apart.
const TEST: &[&str] = &["test", "--workspace"];

/// Each example with arguments that shorten it to seconds; CI checks they exit 0.
const SHORT_EXAMPLES: &[(&str, &[&str])] = &[
    ("mnist", &["--quick"]),
    ("mnist_cnn", &["--quick"]),
    ("mnist_lstm", &["--quick"]),
    ("mnist_resnet", &["--quick"]),
    ("co2_forecast", &["--quick"]),
    ("padded_sequences", &["--quick"]),
    ("breast_cancer", &["--quick"]),
    ("iris", &["--quick"]),
    ("diabetes", &["--quick"]),
    ("custom_layer", &["--quick"]),
    ("tape_mnist", &["1", "6000"]),
];

fn cargo_command(args: &[&str]) -> Command {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("$ cargo {}", args.join(" "));
    let mut c = Command::new(cargo);
    c.args(args);
    c
}

fn cargo(args: &[&str]) -> bool {
    match cargo_command(args).status() {
        Ok(s) => s.success(),
        Err(e) => {
            eprintln!("xtask: could not run cargo: {e}");
            false
        }
    }
}

/// Runs a `cargo test` command, echoing its output and adding up its
/// `test result: ... N passed; M failed` lines into `totals`.
fn cargo_test(args: &[&str], totals: &mut (u64, u64)) -> bool {
    let mut child = match cargo_command(args).stdout(Stdio::piped()).spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("xtask: could not run cargo: {e}");
            return false;
        }
    };
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            println!("{line}");
            if let Some(rest) = line.strip_prefix("test result: ") {
                let count = |word: &str| {
                    rest.split(';')
                        .find_map(|part| {
                            part.trim()
                                .trim_start_matches("ok. ")
                                .trim_start_matches("FAILED. ")
                                .strip_suffix(word)
                        })
                        .and_then(|n| n.trim().parse::<u64>().ok())
                        .unwrap_or(0)
                };
                totals.0 += count(" passed");
                totals.1 += count(" failed");
            }
        }
    }
    child.wait().map(|s| s.success()).unwrap_or(false)
}

/// Data-parallel training over MPI (feature `mpi`; .ci/run installs Open MPI): clippy on
/// the feature's code, the 2-rank tests, and the distributed example on 2 ranks.
fn mpi_checks(totals: &mut (u64, u64)) -> bool {
    // SAFETY: set before any thread of this process starts.
    unsafe {
        std::env::set_var("OMPI_ALLOW_RUN_AS_ROOT", "1");
        std::env::set_var("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
    }
    let clippy = ["clippy", "--workspace", "--all-targets", "--features", "mpi"];
    cargo(&[&clippy[..], &["--", "-D", "warnings"]].concat())
        && cargo_test(&["test", "--features", "mpi", "--test", "distributed"], totals)
        && cargo(&["build", "--release", "--features", "mpi", "--example", "mnist_distributed"])
        && {
            let exe = "target/release/examples/mnist_distributed";
            eprintln!("$ mpirun -np 2 {exe} --quick");
            Command::new("mpirun")
                .args(["-np", "2", "--oversubscribe", "--mca", "btl", "self,vader", exe, "--quick"])
                .status()
                .map(|s| s.success())
                .unwrap_or_else(|e| {
                    eprintln!("xtask: could not run mpirun: {e}");
                    false
                })
        }
}

/// The host's target triple, as rustc reports it.
/// The user crate `build-times` rebuilds: a classifier as a newcomer writes one from
/// the README (CSV, split, scaler, fit with callbacks, evaluate, save and load, learning
/// curves). `{WIDTH}` is the layer width each rebuild changes; `{ROOT}` the repository.
const USER_MAIN: &str = r#"use kiln::datasets::{csv, preprocessing::{StandardScaler, train_test_split}};
use kiln::prelude::*;

model! {
    struct Net: [30] => [
        Dense({WIDTH}, activation = relu),
        Dense(1, activation = sigmoid),
    ]
}

fn main() -> kiln::Result<()> {
    let table = csv::read("{ROOT}/data/tabular/breast_cancer.csv", "benign")?;
    let y = table.classes()?;
    let (train, test) = train_test_split(y.len(), 0.2, 42, Some(&y))?;
    let scaler = StandardScaler::fit(&table.x.select(&train)?);
    let x_train = scaler.transform(&table.x.select(&train)?)?.into_shape::<S1<30>>()?;
    let x_test = scaler.transform(&table.x.select(&test)?)?.into_shape::<S1<30>>()?;
    let mut model =
        Net::new(Seed(7)).compile(Adam::new(0.01), BinaryCrossentropy::default(), [Accuracy])?;
    let history = model
        .fit(&x_train, &y.select(&train)?)
        .epochs(60)
        .validation_split(0.2)
        .callbacks((
            EarlyStopping::on("val_loss").patience(5).restore_best_weights(),
            ModelCheckpoint::to("best.safetensors").monitor("val_loss").save_best_only(),
        ))
        .run()?;
    history.plot("curves.svg")?;
    let eval = model.evaluate(&x_test, &y.select(&test)?)?;
    println!("test accuracy {:.4}", eval["accuracy"]);
    model.save_weights("net.safetensors")?;
    let mut again =
        Net::new(Seed(0)).compile(Adam::new(0.01), BinaryCrossentropy::default(), [Accuracy])?;
    again.load_weights("net.safetensors")?;
    println!("{:?}", &again.predict(&x_test)?.data()[..3]);
    Ok(())
}
"#;

/// Runs `cargo args` in `dir` with `target` as its target directory, quietly, and
/// returns the seconds it took (None if it failed).
fn timed_cargo(dir: &Path, target: &Path, args: &[&str]) -> Option<f64> {
    eprintln!("$ cargo {}   (in {}, target {})", args.join(" "), dir.display(), target.display());
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let start = Instant::now();
    let status = Command::new(cargo)
        .args(args)
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target)
        .stdout(Stdio::null())
        .status();
    let secs = start.elapsed().as_secs_f64();
    match status {
        Ok(s) if s.success() => Some(secs),
        Ok(s) => {
            eprintln!("xtask: cargo {} failed ({s})", args.join(" "));
            None
        }
        Err(e) => {
            eprintln!("xtask: could not run cargo: {e}");
            None
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `cargo xtask build-times [--no-tests]`: see the module documentation.
fn build_times(with_tests: bool) -> Option<Vec<(String, f64)>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent()?.to_path_buf();
    let base = root.join("target/build-times");
    let _ = std::fs::remove_dir_all(&base);
    let (target, user, user_target) =
        (base.join("target"), base.join("user"), base.join("user-target"));
    std::fs::create_dir_all(user.join("src")).ok()?;
    let mut rows = Vec::new();
    let build = ["build", "--release", "--example", "mnist"];
    rows.push(("main job, first release build".to_string(), timed_cargo(&root, &target, &build)?));
    let touch = || {
        let f = std::fs::File::options().append(true).open(root.join("examples/mnist.rs")).ok()?;
        f.set_modified(std::time::SystemTime::now()).ok()
    };
    let mut rebuilds = Vec::new();
    for _ in 0..3 {
        touch()?;
        rebuilds.push(timed_cargo(&root, &target, &build)?);
    }
    rows.push(("main job, release rebuild after an edit (median of 3)".into(), median(rebuilds)));
    let manifest = format!(
        "[package]\nname = \"user\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n[dependencies]\nkiln = {{ path = {:?} }}\n\n[workspace]\n",
        root.join("crates/kiln")
    );
    std::fs::write(user.join("Cargo.toml"), manifest).ok()?;
    let source = |width: usize| {
        USER_MAIN.replace("{WIDTH}", &width.to_string()).replace("{ROOT}", &root.to_string_lossy())
    };
    std::fs::write(user.join("src/main.rs"), source(16)).ok()?;
    rows.push((
        "user crate (60 lines), first release build".into(),
        timed_cargo(&user, &user_target, &["build", "--release"])?,
    ));
    let mut user_rebuilds = Vec::new();
    for width in [17, 18, 19] {
        std::fs::write(user.join("src/main.rs"), source(width)).ok()?;
        user_rebuilds.push(timed_cargo(&user, &user_target, &["build", "--release"])?);
    }
    rows.push((
        "user crate, release rebuild after changing a layer width (median of 3)".into(),
        median(user_rebuilds),
    ));
    if with_tests {
        let built = timed_cargo(&root, &target, &["test", "--workspace", "--no-run"])?;
        rows.push(("test suite from clean: build".into(), built));
        let ran = timed_cargo(&root, &target, TEST)?;
        rows.push(("test suite: run (already built)".into(), ran));
        rows.push(("test suite from clean: total".into(), built + ran));
    }
    Some(rows)
}

fn host_triple() -> Option<String> {
    let out = Command::new("rustc").arg("-vV").output().ok()?;
    String::from_utf8(out.stdout)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    let ok = match args.first().map(String::as_str) {
        Some("ci") => {
            let mut totals = (0, 0);
            let ok = cargo(&["fmt", "--all", "--check"])
                && cargo(&["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"])
                && cargo_test(TEST, &mut totals)
                // The optional PNG output (off by default): its plot test with the feature.
                && cargo_test(&["test", "-p", "kiln", "--features", "png", "--lib", "plot"], &mut totals)
                && SHORT_EXAMPLES.iter().all(|(name, args)| {
                    let mut a = vec!["run", "--release", "--example", name, "--"];
                    a.extend_from_slice(args);
                    cargo(&a)
                })
                && mpi_checks(&mut totals);
            println!("ci: {} passed, {} failed", totals.0, totals.1);
            ok
        }
        Some("test") => cargo(TEST),
        Some("build-times") => match build_times(!rest.contains(&"--no-tests")) {
            Some(rows) => {
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                let mut md = format!("| what ({cores} cores) | seconds |\n|---|---|\n");
                for (what, secs) in &rows {
                    md.push_str(&format!("| {what} | {secs:.1} |\n"));
                }
                print!("{md}");
                let out =
                    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/build-times.md");
                std::fs::write(out, md).is_ok()
            }
            None => false,
        },
        Some("fuzz") => {
            // `cargo xtask fuzz [--seconds N]`: the loaders' mutation fuzzer for N seconds.
            let secs = rest.iter().position(|a| *a == "--seconds").and_then(|i| rest.get(i + 1));
            // SAFETY: set before any thread of this process starts.
            unsafe { std::env::set_var("KILN_FUZZ_SECONDS", secs.copied().unwrap_or("60")) };
            cargo(&[
                "test",
                "--release",
                "--package",
                "kiln-workspace",
                "--test",
                "fuzz_loaders",
                "--",
                "--nocapture",
            ])
        }
        Some("bench") if rest.first() == Some(&"--kernels") => {
            let mut a = vec!["bench", "--package", "kiln-bench", "--bench", "kernels", "--"];
            a.extend(&rest[1..]);
            cargo(&a)
        }
        Some("bench") if rest.first() == Some(&"--mpi") => {
            // `cargo xtask bench --mpi N [options]`: the workloads data-parallel on N
            // ranks of one thread each, through cargo's runner so cargo still builds.
            let Some(ranks) = rest.get(1).filter(|n| n.parse::<usize>().is_ok_and(|n| n >= 1))
            else {
                eprintln!("xtask: --mpi takes a rank count, e.g. --mpi 2");
                return ExitCode::from(2);
            };
            let Some(host) = host_triple() else {
                eprintln!("xtask: could not read the host triple from rustc -vV");
                return ExitCode::from(2);
            };
            let runner = format!("mpirun -np {ranks} --oversubscribe --mca btl self,vader");
            let var = format!("CARGO_TARGET_{}_RUNNER", host.to_uppercase().replace('-', "_"));
            // SAFETY: set before any thread of this process starts.
            unsafe {
                std::env::set_var(var, runner);
                std::env::set_var("KILN_THREADS", "1");
                std::env::set_var("OMPI_ALLOW_RUN_AS_ROOT", "1");
                std::env::set_var("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
            }
            let mut a = vec!["bench", "--package", "kiln-bench", "--features", "mpi"];
            a.extend(["--bench", "workloads", "--"]);
            a.extend(&rest[2..]);
            cargo(&a)
        }
        Some("bench") => {
            let mut a = vec!["bench", "--package", "kiln-bench", "--bench", "workloads", "--"];
            a.extend(rest);
            cargo(&a)
        }
        _ => {
            eprintln!(
                "usage: cargo xtask <ci | test | build-times [--no-tests] | fuzz [--seconds N] | bench [--limit N] [--epochs N] [--only NAME] [--threads N] | bench --mpi N [options] | bench --kernels [criterion args]>"
            );
            return ExitCode::from(2);
        }
    };
    if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
