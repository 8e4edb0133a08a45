//! Crash safety: a child process that checkpoints every batch (ModelCheckpoint) and
//! backs up every epoch (BackupAndRestore) is killed with SIGKILL at seeded random
//! moments. After every kill each file that exists loads completely; the next run
//! cleans the killed writer's temporaries; and the run that finally completes ends
//! with exactly the weights of a run never interrupted.

mod common;

use common::{blobs, compiled, mlp, tmpdir};
use kiln::*;
use std::path::Path;
use std::time::Duration;

/// The training the child runs (and the uninterrupted reference).
fn train(dir: &Path) -> Compiled<Sequential, SparseCategoricalCrossentropy> {
    let (x, y) = blobs(1000, 12);
    let mut m = compiled(7);
    m.fit(&x, &y)
        .epochs(80)
        .batch_size(16)
        .seed(3)
        .verbose(0)
        .callbacks((
            BackupAndRestore::new(dir.join("backup")).keep_checkpoint(),
            ModelCheckpoint::to(dir.join("every-batch.safetensors").to_str().unwrap())
                .save_freq(SaveFreq::Batches(1)),
        ))
        .run()
        .unwrap();
    m
}

/// Runs only as the child of the test below (an environment variable names its
/// directory); as a plain test it does nothing.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os("KILN_CRASH_CHILD") else { return };
    let m = train(Path::new(&dir));
    save_weights(m.model(), Path::new(&dir).join("final.safetensors")).unwrap();
}

fn temporaries(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for sub in [dir.to_path_buf(), dir.join("backup")] {
        if let Ok(rd) = std::fs::read_dir(sub) {
            out.extend(
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.contains(".tmp-")),
            );
        }
    }
    out
}

#[cfg(unix)]
#[test]
fn killed_runs_never_break_a_checkpoint_or_leave_temporaries() {
    let dir = tmpdir("crash");
    let exe = std::env::current_exe().unwrap();
    let child = || {
        std::process::Command::new(&exe)
            .args(["crash_child", "--exact", "--test-threads=1"])
            .env("KILN_CRASH_CHILD", &dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut killed_mid_run = 0;
    for _ in 0..24 {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let delay = Duration::from_millis(20 + (state >> 33) % 130);
        let mut c = child();
        std::thread::sleep(delay);
        if c.try_wait().unwrap().is_none() {
            killed_mid_run += 1;
        }
        let _ = c.kill();
        c.wait().unwrap();
        // Whatever exists loads completely.
        let every = dir.join("every-batch.safetensors");
        if every.exists() {
            load_weights(&mut mlp(1), &every).unwrap_or_else(|e| panic!("after a kill: {e}"));
        }
        if dir.join("final.safetensors").exists() {
            break;
        }
    }
    assert!(killed_mid_run >= 20, "only {killed_mid_run} kills landed mid-run");
    // The run that completes resumes from the backup and cleans the temporaries.
    let status = child().wait().unwrap();
    assert!(status.success());
    assert_eq!(temporaries(&dir), Vec::<String>::new(), "temporaries left behind");
    let mut resumed = mlp(1);
    load_weights(&mut resumed, dir.join("final.safetensors")).unwrap();
    let reference = train(&tmpdir("crash-reference"));
    assert_eq!(resumed.params().values(), reference.model().params().values());
}
