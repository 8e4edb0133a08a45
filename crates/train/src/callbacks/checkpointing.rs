//! Callbacks that write checkpoints: ModelCheckpoint and BackupAndRestore.

use super::builtin::Mode;
use super::{Callback, CallbackContext, Logs};
use crate::checkpoint::{load_store_full, save_store_full, save_store_weights};
use crate::error::{Result, TrainError};
use std::path::{Path, PathBuf};

/// How often [`ModelCheckpoint`] saves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SaveFreq {
    /// At the end of every epoch (Keras's `"epoch"`).
    #[default]
    Epoch,
    /// Every N training batches.
    Batches(usize),
}

/// Saves the model during training (Keras `ModelCheckpoint`).
///
/// The file name may hold Keras's placeholders: `{epoch:02d}` (1-based, as Keras) and any
/// log key with a format, e.g. `{val_loss:.4f}`. With `save_best_only` a file is written
/// only when the monitored value improves. Files are written atomically.
#[derive(Clone, Debug)]
pub struct ModelCheckpoint {
    filepath: String,
    monitor: String,
    save_best_only: bool,
    save_weights_only: bool,
    mode: Mode,
    save_freq: SaveFreq,
    initial_value_threshold: Option<f64>,
    best: Option<f64>,
    batches: usize,
    last_saved: Option<PathBuf>,
}

impl ModelCheckpoint {
    /// Saves to `filepath` (a template), monitoring `val_loss`, every epoch.
    pub fn to(filepath: impl Into<String>) -> Self {
        ModelCheckpoint {
            filepath: filepath.into(),
            monitor: "val_loss".into(),
            save_best_only: false,
            save_weights_only: true,
            mode: Mode::Auto,
            save_freq: SaveFreq::Epoch,
            initial_value_threshold: None,
            best: None,
            batches: 0,
            last_saved: None,
        }
    }
    /// The quantity that decides "best".
    pub fn monitor(mut self, m: &str) -> Self {
        self.monitor = m.into();
        self
    }
    /// Writes only when the monitored value improves.
    pub fn save_best_only(mut self) -> Self {
        self.save_best_only = true;
        self
    }
    /// Also saves the optimizer state and the epoch (a full checkpoint), not only weights.
    pub fn save_full(mut self) -> Self {
        self.save_weights_only = false;
        self
    }
    /// Whether smaller or larger is better.
    pub fn mode(mut self, m: Mode) -> Self {
        self.mode = m;
        self
    }
    /// Save every epoch or every N batches.
    pub fn save_freq(mut self, f: SaveFreq) -> Self {
        self.save_freq = f;
        self
    }
    /// Only save when the monitored value beats this.
    pub fn initial_value_threshold(mut self, v: f64) -> Self {
        self.initial_value_threshold = Some(v);
        self
    }
    /// The last file written.
    pub fn last_saved(&self) -> Option<&PathBuf> {
        self.last_saved.as_ref()
    }

    fn placeholders(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut rest = self.filepath.as_str();
        while let Some(open) = rest.find('{') {
            let Some(close) = rest[open..].find('}') else { break };
            let inner = &rest[open + 1..open + close];
            out.push(inner.split(':').next().unwrap_or("").to_string());
            rest = &rest[open + close + 1..];
        }
        out
    }

    fn save<T: crate::Dtype>(
        &mut self,
        epoch: usize,
        logs: &Logs,
        ctx: &mut CallbackContext<'_, T>,
    ) -> Result<()> {
        let path = PathBuf::from(format_path(&self.filepath, epoch + 1, logs)?);
        let kept_now = match &self.last_saved {
            Some(p) => {
                format!("nothing was saved, and the last good checkpoint, {}, is kept", p.display())
            }
            None if path.exists() => {
                format!("nothing was saved, and {} keeps the checkpoint it held", path.display())
            }
            None => "nothing was saved (no checkpoint had been written yet)".to_string(),
        };
        diverged_loss(logs, epoch, &kept_now)?;
        let saved = if self.save_weights_only {
            save_store_weights(ctx.params, ctx.model_name, &path)
        } else {
            save_store_full(ctx.params, ctx.model_name, ctx.optimizer, epoch + 1, &path)
        };
        saved.map_err(|e| diverged(e, epoch, kept_now))?;
        self.last_saved = Some(path);
        Ok(())
    }

    fn maybe_save<T: crate::Dtype>(
        &mut self,
        epoch: usize,
        logs: &Logs,
        ctx: &mut CallbackContext<'_, T>,
    ) -> Result<()> {
        if !self.save_best_only {
            return self.save(epoch, logs, ctx);
        }
        let Some(&current) = logs.get(&self.monitor) else { return Ok(()) };
        let better = match self.best {
            None => true,
            Some(b) if self.mode.maximize(&self.monitor) => current > b,
            Some(b) => current < b,
        };
        if better && current.is_finite() {
            self.best = Some(current);
            self.save(epoch, logs, ctx)?;
        }
        Ok(())
    }
}

/// Fills `{epoch:02d}`-style placeholders from the epoch (1-based) and the logs.
fn format_path(template: &str, epoch: usize, logs: &Logs) -> Result<String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}').ok_or_else(|| TrainError::InvalidArgument {
            name: "ModelCheckpoint filepath",
            message: format!("{template:?} has an unclosed '{{'; close it, as in {{epoch:02d}}"),
        })?;
        let inner = &rest[open + 1..open + close];
        let (key, spec) = inner.split_once(':').unwrap_or((inner, ""));
        let value = if key == "epoch" {
            epoch as f64
        } else {
            *logs.get(key).ok_or_else(|| TrainError::InvalidArgument {
                name: "ModelCheckpoint filepath",
                message: format!(
                    "{{{key}}} is not a log key; the logs hold epoch, {}",
                    logs.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            })?
        };
        out.push_str(&format_spec(value, spec));
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Python-style number formats: `02d`, `.4f`, `.3e`, or nothing.
fn format_spec(v: f64, spec: &str) -> String {
    let (zero, width_prec) = match spec.strip_prefix('0') {
        Some(r) => (true, r),
        None => (false, spec),
    };
    let kind = width_prec.chars().last().unwrap_or(' ');
    let body = width_prec.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let (width, prec) = match body.split_once('.') {
        Some((w, p)) => (w.parse().unwrap_or(0), p.parse().ok()),
        None => (body.parse().unwrap_or(0), None),
    };
    let s = match kind {
        'd' => format!("{}", v.round() as i64),
        'e' => format!("{:.*e}", prec.unwrap_or(6), v),
        'f' => format!("{:.*}", prec.unwrap_or(6), v),
        _ => format!("{v}"),
    };
    if zero { format!("{s:0>width$}") } else { format!("{s:>width$}") }
}

impl<T: crate::Dtype> Callback<T> for ModelCheckpoint {
    fn monitors(&self) -> Vec<String> {
        let mut m: Vec<String> = self.placeholders().into_iter().filter(|k| k != "epoch").collect();
        if self.save_best_only {
            m.push(self.monitor.clone());
        }
        m
    }
    fn name(&self) -> &'static str {
        "ModelCheckpoint"
    }
    fn chief_only(&self) -> bool {
        true
    }
    fn check(&self, keys: &[String]) -> Result<()> {
        let bad = |name: &'static str, message: String| {
            Err(TrainError::InvalidArgument { name, message })
        };
        if let SaveFreq::Batches(0) = self.save_freq {
            return bad(
                "ModelCheckpoint save_freq",
                "saving every 0 batches is not a frequency; use SaveFreq::Epoch or N ≥ 1".into(),
            );
        }
        // The template must format (balanced braces, known keys).
        let logs: Logs = keys.iter().map(|k| (k.clone(), 0.0)).collect();
        let path = PathBuf::from(format_path(&self.filepath, 1, &logs)?);
        if let SaveFreq::Batches(n) = self.save_freq {
            // Validation runs at epoch ends: a batch save cannot know val_ values.
            let in_path = self.placeholders().into_iter().find(|k| k.starts_with("val_"));
            if let Some(k) = in_path {
                return bad(
                    "ModelCheckpoint filepath",
                    format!(
                        "{{{k}}} is only known at the end of an epoch, but the file is saved every {n} batches; use SaveFreq::Epoch or leave val_ keys out of the path"
                    ),
                );
            }
            if self.save_best_only && self.monitor.starts_with("val_") {
                return bad(
                    "ModelCheckpoint monitor",
                    format!(
                        "save_best_only on {:?} with a save every {n} batches would never write (validation runs at epoch ends); monitor \"loss\" or use SaveFreq::Epoch",
                        self.monitor
                    ),
                );
            }
        }
        check_writable(&path)
    }
    fn on_train_begin(&mut self, _ctx: &mut CallbackContext<'_, T>) -> Result<()> {
        self.best = self.initial_value_threshold;
        self.batches = 0;
        Ok(())
    }
    fn on_train_batch_end(
        &mut self,
        _batch: usize,
        logs: &Logs,
        ctx: &mut CallbackContext<'_, T>,
    ) -> Result<()> {
        if let SaveFreq::Batches(n) = self.save_freq {
            self.batches += 1;
            if self.batches.is_multiple_of(n) {
                let epoch = ctx.epoch;
                self.maybe_save(epoch, logs, ctx)?;
            }
        }
        Ok(())
    }
    fn on_epoch_end(
        &mut self,
        epoch: usize,
        logs: &Logs,
        ctx: &mut CallbackContext<'_, T>,
    ) -> Result<()> {
        if self.save_freq == SaveFreq::Epoch {
            self.maybe_save(epoch, logs, ctx)?;
        }
        Ok(())
    }
}

/// Whether a checkpoint could be written at `path`: its nearest existing ancestor must
/// be a directory this process can write in (a probe file is created and removed).
fn check_writable(path: &Path) -> Result<()> {
    let mut dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    while !dir.exists() {
        match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => dir = p,
            _ => {
                dir = Path::new(".");
                break;
            }
        }
    }
    let bad = |message: String| {
        Err(TrainError::InvalidArgument { name: "ModelCheckpoint filepath", message })
    };
    if path.is_dir() {
        return bad(format!("{} is a directory; give a file name inside it", path.display()));
    }
    if !dir.is_dir() {
        return bad(format!(
            "{} cannot be created: {} is a file, not a directory; choose another path",
            path.display(),
            dir.display()
        ));
    }
    let probe = dir.join(format!(".kiln-write-probe-{}", std::process::id()));
    match std::fs::File::create(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => bad(format!(
            "{} cannot be written: {} refuses new files ({e}); choose a writable directory",
            path.display(),
            dir.display()
        )),
    }
}

/// A refused save of non-finite state, at the end of 0-based `epoch`, as the
/// divergence it is; other errors pass unchanged.
fn diverged(e: TrainError, epoch: usize, kept: String) -> TrainError {
    match e {
        TrainError::NonFiniteState { tensor, value, .. } => {
            TrainError::Diverged { epoch: epoch + 1, what: format!("{tensor} holds {value}"), kept }
        }
        e => e,
    }
}

/// A non-finite training loss in `logs` (the epoch diverged even if the weights are
/// still finite) as a [`TrainError::Diverged`].
fn diverged_loss(logs: &Logs, epoch: usize, kept: &str) -> Result<()> {
    match logs.get("loss") {
        Some(&l) if !l.is_finite() => Err(TrainError::Diverged {
            epoch: epoch + 1,
            what: format!("the loss is {l}"),
            kept: kept.to_string(),
        }),
        _ => Ok(()),
    }
}

/// Makes a fit resumable (Keras `BackupAndRestore`): a full checkpoint after every epoch
/// in `backup_dir`; a fit that finds one resumes at the epoch it reached, with the
/// optimizer's state, and (shuffling and Dropout being seeded per epoch) ends with the
/// same weights as an uninterrupted run. The backup is deleted when training completes.
#[derive(Clone, Debug)]
pub struct BackupAndRestore {
    dir: PathBuf,
    delete_checkpoint: bool,
}

impl BackupAndRestore {
    /// Backs up into `backup_dir`.
    pub fn new(backup_dir: impl Into<PathBuf>) -> Self {
        BackupAndRestore { dir: backup_dir.into(), delete_checkpoint: true }
    }
    /// Keeps the backup after training completes.
    pub fn keep_checkpoint(mut self) -> Self {
        self.delete_checkpoint = false;
        self
    }
    fn file(&self) -> PathBuf {
        self.dir.join("latest.safetensors")
    }
}

impl<T: crate::Dtype> Callback<T> for BackupAndRestore {
    fn name(&self) -> &'static str {
        "BackupAndRestore"
    }
    fn chief_only(&self) -> bool {
        true
    }
    fn on_train_begin(&mut self, ctx: &mut CallbackContext<'_, T>) -> Result<()> {
        let f = self.file();
        if f.exists() {
            let epoch = load_store_full(ctx.params, ctx.optimizer, &f)?;
            ctx.resume_at(epoch);
        }
        Ok(())
    }
    fn on_epoch_end(
        &mut self,
        epoch: usize,
        logs: &Logs,
        ctx: &mut CallbackContext<'_, T>,
    ) -> Result<()> {
        let f = self.file();
        let kept = if f.exists() {
            format!(
                "the backup was not overwritten: {} still holds the last good epoch, and a rerun resumes from it",
                f.display()
            )
        } else {
            "no backup had been written yet".to_string()
        };
        diverged_loss(logs, epoch, &kept)?;
        save_store_full(ctx.params, ctx.model_name, ctx.optimizer, epoch + 1, &f)
            .map_err(|e| diverged(e, epoch, kept))
    }
    fn on_train_end(&mut self, _ctx: &mut CallbackContext<'_, T>, _logs: &Logs) -> Result<()> {
        if self.delete_checkpoint {
            let _ = std::fs::remove_file(self.file());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_templated_as_keras() {
        let mut logs = Logs::new();
        logs.insert("val_loss".into(), 0.123456);
        assert_eq!(
            format_path("w-{epoch:02d}-{val_loss:.4f}.safetensors", 3, &logs).unwrap(),
            "w-03-0.1235.safetensors"
        );
        assert_eq!(format_path("plain.safetensors", 1, &logs).unwrap(), "plain.safetensors");
        let e = format_path("w-{val_acc}.st", 1, &logs).unwrap_err().to_string();
        assert!(e.contains("{val_acc} is not a log key"), "{e}");
        assert_eq!(format_spec(0.000123, ".2e"), "1.23e-4");
    }
}
