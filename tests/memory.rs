//! Memory stays flat while training: the resident set after the 20th epoch is within a
//! few MB of the one after the 2nd (no per-step or per-epoch growth). Its own test
//! binary, so no other test shares the process. Linux only (reads /proc/self/status).

mod common;

use common::{blobs, compiled};
use kiln::*;
use std::sync::{Arc, Mutex};

fn rss_kb() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()
}

/// Records the resident set at each epoch's end.
struct Rss(Arc<Mutex<Vec<u64>>>);

impl<T: tape::Scalar> Callback<T> for Rss {
    fn on_epoch_end(
        &mut self,
        _e: usize,
        _l: &Logs,
        _c: &mut CallbackContext<'_, T>,
    ) -> Result<(), TrainError> {
        if let Some(kb) = rss_kb() {
            self.0.lock().unwrap().push(kb);
        }
        Ok(())
    }
}

#[test]
fn resident_memory_is_flat_across_epochs() {
    if rss_kb().is_none() {
        return;
    }
    let (x, y) = blobs(4000, 2);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut m = compiled(1);
    m.fit(&x, &y)
        .epochs(20)
        .batch_size(32)
        .validation_split(0.2)
        .verbose(0)
        .callbacks((Rss(seen.clone()), EarlyStopping::on("val_loss").patience(100)))
        .run()
        .unwrap();
    let rss = seen.lock().unwrap().clone();
    assert_eq!(rss.len(), 20);
    let growth = rss[19] as i64 - rss[1] as i64;
    println!("resident set after epoch 2: {} kB, after epoch 20: {} kB", rss[1], rss[19]);
    assert!(growth < 2048, "grew {growth} kB from epoch 2 to 20: {rss:?}");
}
