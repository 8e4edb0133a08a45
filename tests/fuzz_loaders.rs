//! Seeded mutation fuzzing of the file loaders (IDX, CSV, safetensors checkpoints) on
//! stable Rust: valid seed files are mutated (bit flips, byte overwrites, inserts,
//! deletions, truncations, duplicated spans, rewritten length fields) and each result
//! is loaded under `catch_unwind`. A loader must return `Ok` or an error; a panic
//! fails the test and prints the input. The loop runs in a child process, so an abort
//! (which `catch_unwind` cannot catch) fails the test too, naming the input it died
//! on. CI runs a short smoke; `cargo xtask fuzz --seconds N` runs for N seconds and
//! prints inputs per second.

mod common;

use common::{mlp, tmpdir};
use kiln::datasets::{csv, idx};
use kiln::*;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::time::{Duration, Instant};

/// A small seeded generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One to four mutations of `seed`.
fn mutate(seed: &[u8], r: &mut Rng) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..1 + r.below(4) {
        let at = r.below(b.len() + 1);
        match r.below(7) {
            0 if !b.is_empty() => {
                let i = at.min(b.len() - 1);
                b[i] ^= 1 << r.below(8);
            }
            1 if !b.is_empty() => {
                let i = at.min(b.len() - 1);
                b[i] = r.next() as u8;
            }
            2 => b.insert(at, r.next() as u8),
            3 if at < b.len() => {
                b.remove(at);
            }
            4 => b.truncate(at),
            5 if !b.is_empty() => {
                let (s, n) = (r.below(b.len()), 1 + r.below(16));
                let span: Vec<u8> = b[s..(s + n).min(b.len())].to_vec();
                let at = at.min(b.len());
                b.splice(at..at, span);
            }
            // A length-like field: 4 or 8 bytes at the start set to extreme values.
            _ if b.len() >= 8 => {
                let v = [0u64, 1, u32::MAX as u64, u64::MAX, 1 << 40][r.below(5)];
                let w = if r.below(2) == 0 { 4 } else { 8 };
                let at = r.below(b.len() - w + 1);
                b[at..at + w].copy_from_slice(&v.to_le_bytes()[..w]);
            }
            _ => {}
        }
    }
    b
}

fn idx_seed() -> Vec<u8> {
    let mut b = vec![0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 2];
    b.extend((0..12).map(|i| i as u8 * 20));
    b
}

fn csv_seed() -> Vec<u8> {
    b"a,b,label\n1.5,2,0\n-3,4e2,1\n0.25,7,2\n".to_vec()
}

fn checkpoint_seed(dir: &Path) -> Vec<u8> {
    let p = dir.join("seed.safetensors");
    save_weights(&mlp(1), &p).unwrap();
    std::fs::read(&p).unwrap()
}

/// Loads `input` with every loader; `Err` if one panicked (with its name).
fn load_all(input: &[u8], dir: &Path) -> Result<(), &'static str> {
    let run =
        |name: &'static str, f: &dyn Fn()| catch_unwind(AssertUnwindSafe(f)).map_err(|_| name);
    run("parse_idx", &|| {
        let _ = idx::parse_idx(input);
    })?;
    let csv_path = dir.join("in.csv");
    std::fs::write(&csv_path, input).unwrap();
    run("csv::read", &|| {
        if let Ok(t) = csv::read(&csv_path, "label") {
            let _ = t.classes();
        }
    })?;
    let st = dir.join("in.safetensors");
    std::fs::write(&st, input).unwrap();
    run("load_weights", &|| {
        let _ = load_weights(&mut mlp(2), &st);
    })?;
    let gz = dir.join("in.idx");
    std::fs::write(&gz, input).unwrap();
    run("read_idx", &|| {
        let _ = idx::read_idx(&gz);
    })
}

/// The parent: runs [`fuzz_child`] in a child process and reports how it ended.
#[test]
fn mutated_files_never_panic_or_abort_a_loader() {
    if std::env::var_os("KILN_FUZZ_CHILD").is_some() {
        return;
    }
    let dir = tmpdir("fuzz-parent");
    let progress = dir.join("progress");
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["fuzz_child", "--exact", "--nocapture", "--test-threads=1"])
        .env("KILN_FUZZ_CHILD", &progress)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let last = std::fs::read_to_string(&progress).unwrap_or_default();
        panic!(
            "the fuzz child failed ({}) at input {last}:\n{text}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let summary =
        text.lines().find_map(|l| l.find("fuzz:").map(|i| &l[i..])).unwrap_or("fuzz: (no summary)");
    println!("{summary}");
    assert!(summary.contains("no panic"), "{text}");
}

/// The fuzzing loop; runs only as the child of the test above.
#[test]
fn fuzz_child() {
    let Some(progress) = std::env::var_os("KILN_FUZZ_CHILD") else { return };
    let progress = std::path::PathBuf::from(progress);
    let seconds: f64 =
        std::env::var("KILN_FUZZ_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(0.0);
    let dir = tmpdir("fuzz");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &idx_seed()).unwrap();
    let seeds = [idx_seed(), gz.finish().unwrap(), csv_seed(), checkpoint_seed(&dir)];
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let start = Instant::now();
    let (mut n, mut r) = (0u64, Rng(0x6b69_6c6e));
    // The smoke: 400 inputs per seed; with KILN_FUZZ_SECONDS, until the time is up.
    let done = |n: u64| {
        if seconds > 0.0 {
            start.elapsed() >= Duration::from_secs_f64(seconds)
        } else {
            n >= 400 * seeds.len() as u64
        }
    };
    let mut failure = None;
    while !done(n) {
        let seed = &seeds[(n % seeds.len() as u64) as usize];
        let input = mutate(seed, &mut r);
        // Where an abort would have happened (inputs are a pure function of n).
        if n.is_multiple_of(64) {
            let _ = std::fs::write(&progress, format!("{n} (the next 64 inputs from here)"));
        }
        if let Err(loader) = load_all(&input, &dir) {
            failure = Some((loader, n, input));
            break;
        }
        n += 1;
    }
    std::panic::set_hook(hook);
    if let Some((loader, i, input)) = failure {
        panic!("{loader} panicked on input {i} ({} bytes): {input:?}", input.len());
    }
    let secs = start.elapsed().as_secs_f64();
    println!("fuzz: {n} inputs in {secs:.1} s ({:.0} inputs/s), no panic", n as f64 / secs);
}
