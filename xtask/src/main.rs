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

use std::io::{BufRead, BufReader};
use std::process::{Command, ExitCode, Stdio};

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
            let mut a = vec!["bench", "--package", "kiln-workspace", "--bench", "kernels", "--"];
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
            let mut a = vec!["bench", "--package", "kiln-workspace", "--features", "mpi"];
            a.extend(["--bench", "workloads", "--"]);
            a.extend(&rest[2..]);
            cargo(&a)
        }
        Some("bench") => {
            let mut a = vec!["bench", "--package", "kiln-workspace", "--bench", "workloads", "--"];
            a.extend(rest);
            cargo(&a)
        }
        _ => {
            eprintln!(
                "usage: cargo xtask <ci | test | fuzz [--seconds N] | bench [--limit N] [--epochs N] [--only NAME] [--threads N] | bench --mpi N [options] | bench --kernels [criterion args]>"
            );
            return ExitCode::from(2);
        }
    };
    if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
