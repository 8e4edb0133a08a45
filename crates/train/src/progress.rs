//! Keras's progress display for `fit`: `verbose = 1` redraws a bar in place on a terminal
//! (at most every 0.05 s) and prints plain lines to pipes; `verbose = 2` prints one line
//! per epoch; `verbose = 0` prints nothing.

use crate::callbacks::Logs;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Formats a value as Keras does: 4 decimals, scientific below 1e-3.
pub fn format_value(v: f64) -> String {
    if v == 0.0 || v.abs() >= 1e-3 { format!("{v:.4}") } else { format!("{v:.4e}") }
}

fn format_duration(secs: f64) -> String {
    if secs >= 3600.0 {
        format!("{}:{:02}:{:02}", secs as u64 / 3600, (secs as u64 % 3600) / 60, secs as u64 % 60)
    } else if secs >= 60.0 {
        format!("{}:{:02}", secs as u64 / 60, secs as u64 % 60)
    } else {
        format!("{}s", secs.round() as u64)
    }
}

fn format_per_step(secs: f64) -> String {
    if secs >= 1.0 {
        format!("{}s/step", secs.round() as u64)
    } else if secs >= 1e-3 {
        format!("{}ms/step", (secs * 1e3).round() as u64)
    } else {
        format!("{}us/step", (secs * 1e6).round() as u64)
    }
}

fn format_logs(logs: &Logs) -> String {
    logs.iter().map(|(k, v)| format!(" - {k}: {}", format_value(*v))).collect()
}

/// The progress printer of one `fit` call.
pub struct Progress {
    verbose: u8,
    tty: bool,
    steps: usize,
    start: Instant,
    last_draw: Option<Instant>,
}

impl Progress {
    /// A printer for `steps` batches per epoch.
    pub fn new(verbose: u8, steps: usize) -> Self {
        Progress {
            verbose,
            tty: std::io::stdout().is_terminal(),
            steps,
            start: Instant::now(),
            last_draw: None,
        }
    }

    /// `Epoch 3/10`.
    pub fn epoch_begin(&mut self, epoch: usize, epochs: usize) {
        self.start = Instant::now();
        self.last_draw = None;
        if self.verbose > 0 {
            println!("Epoch {}/{epochs}", epoch + 1);
        }
    }

    fn bar(&self, step: usize) -> String {
        const WIDTH: usize = 20;
        let done = (WIDTH * step).checked_div(self.steps).unwrap_or(WIDTH).min(WIDTH);
        if self.tty && done < WIDTH {
            format!("\x1b[1m{}\x1b[0m\x1b[2m{}\x1b[0m", "━".repeat(done), "━".repeat(WIDTH - done))
        } else {
            "━".repeat(WIDTH)
        }
    }

    /// After batch `step` (1-based) of the epoch, with the running logs.
    pub fn batch(&mut self, step: usize, logs: &Logs) {
        if self.verbose != 1 || !self.tty || step >= self.steps {
            return;
        }
        let now = Instant::now();
        if self.last_draw.is_some_and(|t| now - t < Duration::from_millis(50)) {
            return;
        }
        self.last_draw = Some(now);
        let elapsed = self.start.elapsed().as_secs_f64();
        let per = elapsed / step as f64;
        let eta = per * (self.steps - step) as f64;
        let w = self.steps.to_string().len();
        print!(
            "\r\x1b[2K{step:>w$}/{} {} {} {}{}",
            self.steps,
            self.bar(step),
            format_duration(eta),
            format_per_step(per),
            format_logs(logs)
        );
        let _ = std::io::stdout().flush();
    }

    /// The epoch's final line, with validation logs.
    pub fn epoch_end(&mut self, steps_done: usize, logs: &Logs) {
        let elapsed = self.start.elapsed().as_secs_f64();
        let per = elapsed / steps_done.max(1) as f64;
        match self.verbose {
            1 => {
                let w = self.steps.to_string().len();
                let lead = if self.tty { "\r\x1b[2K" } else { "" };
                println!(
                    "{lead}{steps_done:>w$}/{} {} {} {}{}",
                    self.steps,
                    self.bar(self.steps),
                    format_duration(elapsed),
                    format_per_step(per),
                    format_logs(logs)
                );
            }
            2 => println!(
                "{steps_done}/{} - {} - {}{}",
                self.steps,
                format_duration(elapsed),
                format_per_step(per),
                format_logs(logs)
            ),
            _ => {}
        }
    }
}

/// The progress printer as a callback: `fit` puts it first in its callback list, so
/// each line is printed before the other callbacks act, as Keras's `ProgbarLogger`.
pub struct ProgressBar {
    inner: Progress,
    epochs: usize,
    done: usize,
}

impl ProgressBar {
    /// A progress bar at `verbose` (0, 1 or 2) for `steps` batches per epoch over
    /// `epochs` epochs.
    pub fn new(verbose: u8, steps: usize, epochs: usize) -> Self {
        ProgressBar { inner: Progress::new(verbose, steps), epochs, done: 0 }
    }
}

impl<T: kiln_tape::Scalar> crate::callbacks::Callback<T> for ProgressBar {
    fn name(&self) -> &'static str {
        "progress bar"
    }
    fn chief_only(&self) -> bool {
        true
    }
    fn on_epoch_begin(
        &mut self,
        epoch: usize,
        _ctx: &mut crate::callbacks::CallbackContext<'_, T>,
    ) -> crate::Result<()> {
        self.done = 0;
        self.inner.epoch_begin(epoch, self.epochs);
        Ok(())
    }
    fn on_train_batch_end(
        &mut self,
        batch: usize,
        logs: &Logs,
        _ctx: &mut crate::callbacks::CallbackContext<'_, T>,
    ) -> crate::Result<()> {
        self.done = batch + 1;
        self.inner.batch(self.done, logs);
        Ok(())
    }
    fn on_epoch_end(
        &mut self,
        _epoch: usize,
        logs: &Logs,
        _ctx: &mut crate::callbacks::CallbackContext<'_, T>,
    ) -> crate::Result<()> {
        self.inner.epoch_end(self.done, logs);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_formatted_as_keras_does() {
        assert_eq!(format_value(0.97123), "0.9712");
        assert_eq!(format_value(0.00012345), "1.2345e-4");
        assert_eq!(format_value(0.0), "0.0000");
        assert_eq!(format_per_step(0.0012), "1ms/step");
        assert_eq!(format_duration(2.4), "2s");
        assert_eq!(format_duration(75.0), "1:15");
        let mut logs = Logs::new();
        logs.insert("loss".into(), 0.0934);
        logs.insert("accuracy".into(), 0.97123);
        assert_eq!(format_logs(&logs), " - accuracy: 0.9712 - loss: 0.0934");
    }
}
