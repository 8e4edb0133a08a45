//! `cargo xtask <task>`: the project's automation in plain Rust (no shell scripts).
//!
//! * `ci`    — exactly what CI runs: rustfmt check, clippy with warnings denied, the tests.
//! * `test`  — the README's test command.
//! * `bench` — the criterion benchmarks in release mode (extra arguments go to criterion).

use std::process::{Command, ExitCode};

/// The README's test command, shared by `ci` and `test` so they cannot drift apart.
const TEST: &[&str] = &["test", "--workspace", "--all-targets"];

fn cargo(args: &[&str]) -> bool {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("$ cargo {}", args.join(" "));
    match Command::new(cargo).args(args).status() {
        Ok(s) => s.success(),
        Err(e) => {
            eprintln!("xtask: could not run cargo: {e}");
            false
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    let ok = match args.first().map(String::as_str) {
        Some("ci") => {
            cargo(&["fmt", "--all", "--check"])
                && cargo(&["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"])
                && cargo(TEST)
                && cargo(&["test", "--workspace", "--doc"])
        }
        Some("test") => cargo(TEST) && cargo(&["test", "--workspace", "--doc"]),
        Some("bench") => {
            let mut a = vec!["bench", "--package", "kiln", "--bench", "kernels", "--"];
            a.extend(rest);
            cargo(&a)
        }
        _ => {
            eprintln!("usage: cargo xtask <ci | test | bench [criterion args]>");
            return ExitCode::from(2);
        }
    };
    if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
