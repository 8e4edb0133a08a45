//! Checkpoints in the safetensors format, readable by numpy's and PyTorch's safetensors
//! loaders: one tensor per parameter, named as Keras names weights (`dense_1/kernel`) in
//! Keras's layouts, with the model's name, its layer table and the kiln version in the
//! header's metadata. Full checkpoints add the optimizer's state and the next epoch.
//!
//! Every file is written to a temporary file in the same directory, flushed, then
//! renamed over the target, so a crash mid-save never loses the last good checkpoint.

use crate::Dtype as FloatType;
use crate::error::{Result, TrainError};
use crate::model::{Model, ParamEntry, ParamStore};
use crate::optim::Optimizer;
use kiln_tape::Scalar;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

const FORMAT: &str = "kiln";

fn ckpt_err(path: &Path, message: impl Into<String>) -> TrainError {
    TrainError::Checkpoint { path: path.to_path_buf(), message: message.into() }
}

fn dtype<T: Scalar>() -> Dtype {
    if T::DTYPE == "float64" { Dtype::F64 } else { Dtype::F32 }
}

fn to_bytes<T: Scalar>(v: &[T]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len() * 8);
    for &x in v {
        if T::DTYPE == "float64" {
            out.extend_from_slice(&x.as_f64().to_le_bytes());
        } else {
            out.extend_from_slice(&(x.as_f64() as f32).to_le_bytes());
        }
    }
    out
}

fn from_bytes<T: Scalar>(dt: Dtype, bytes: &[u8]) -> Option<Vec<T>> {
    match dt {
        Dtype::F32 => Some(
            bytes
                .chunks_exact(4)
                .map(|c| T::of(f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]]))))
                .collect(),
        ),
        Dtype::F64 => Some(
            bytes
                .chunks_exact(8)
                .map(|c| T::of(f64::from_le_bytes(c.try_into().expect("8 bytes"))))
                .collect(),
        ),
        _ => None,
    }
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, flushed to disk,
/// then renamed over `path`, and the directory flushed so the rename survives a power
/// cut. Nothing is left behind: a failed write or rename removes the temporary, and
/// temporaries of processes that died mid-save (killed) are removed by the next save.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_inner(path, bytes, false)
}

/// `<file name>.tmp-` : the prefix of `path`'s temporaries (the writer's pid follows).
fn temp_prefix(path: &Path) -> Option<String> {
    path.file_name().map(|n| format!("{}.tmp-", n.to_string_lossy()))
}

/// Removes temporaries of `path` left by processes that no longer run (a save killed
/// before its rename). A live writer's temporary is never touched; where liveness
/// cannot be told (no /proc), nothing is removed.
fn clean_stale_temps(path: &Path) {
    let (Some(prefix), Some(dir)) = (temp_prefix(path), path.parent()) else { return };
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(&prefix).and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

fn write_atomic_inner(path: &Path, bytes: &[u8], crash_before_rename: bool) -> Result<()> {
    let io = |source| TrainError::Io { path: path.to_path_buf(), source };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    clean_stale_temps(path);
    let written = std::fs::File::create(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(e));
    }
    if crash_before_rename {
        // As a kill between write and rename would leave it (the next save cleans it).
        return Err(io(std::io::Error::other("simulated crash before rename")));
    }
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(e));
    }
    sync_dir(path);
    Ok(())
}

/// Flushes the directory holding `path` so a completed rename is durable (Unix; a
/// no-op elsewhere, and best effort: the file itself is already on disk).
fn sync_dir(path: &Path) {
    #[cfg(unix)]
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

fn table_json(entries: &[ParamEntry]) -> String {
    let rows: Vec<serde_json::Value> = entries
        .iter()
        .map(|e| serde_json::json!({"name": e.name, "shape": e.shape, "trainable": e.trainable, "kind": format!("{:?}", e.kind)}))
        .collect();
    serde_json::Value::Array(rows).to_string()
}

fn serialize(
    tensors: Vec<(String, Vec<usize>, Vec<u8>)>,
    dt: Dtype,
    meta: HashMap<String, String>,
    path: &Path,
) -> Result<Vec<u8>> {
    let views = tensors
        .iter()
        .map(|(n, s, b)| TensorView::new(dt, s.clone(), b).map(|v| (n.clone(), v)))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| ckpt_err(path, format!("cannot lay out tensors: {e}")))?;
    let bytes = safetensors::serialize(views, Some(meta))
        .map_err(|e| ckpt_err(path, format!("cannot serialize: {e}")))?;
    Ok(canonical_header(bytes))
}

/// The same file with its JSON header's keys in sorted order (safetensors writes the
/// metadata map in hash order), so the same state always gives the same bytes. The
/// header keeps its length: the same keys and values, reordered.
fn canonical_header(mut bytes: Vec<u8>) -> Vec<u8> {
    let Some(len) =
        bytes.get(..8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()) as usize)
    else {
        return bytes;
    };
    let Some(header) = bytes.get(8..8 + len) else { return bytes };
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(header) else { return bytes };
    // serde_json's maps are sorted (no preserve_order feature).
    let Ok(sorted) = serde_json::to_vec(&value) else { return bytes };
    if sorted.len() <= len {
        let end = 8 + len;
        bytes[8..8 + sorted.len()].copy_from_slice(&sorted);
        // safetensors pads the header with spaces to its alignment.
        bytes[8 + sorted.len()..end].fill(b' ');
    }
    bytes
}

fn weight_tensors<T: Scalar>(p: &ParamStore<T>) -> Vec<(String, Vec<usize>, Vec<u8>)> {
    p.entries()
        .iter()
        .map(|e| (e.name.clone(), e.shape.clone(), to_bytes(&p.values()[e.range()])))
        .collect()
}

fn metadata<T: Scalar>(p: &ParamStore<T>, model: &str, kind: &str) -> HashMap<String, String> {
    HashMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("kind".to_string(), kind.to_string()),
        ("kiln_version".to_string(), env!("CARGO_PKG_VERSION").to_string()),
        ("model".to_string(), model.to_string()),
        ("layers".to_string(), table_json(p.entries())),
    ])
}

/// Saves the model's weights to `path` (safetensors, written atomically).
pub fn save_weights<M: Model>(model: &M, path: impl AsRef<Path>) -> Result<()> {
    save_store_weights(model.params(), model.name(), path.as_ref())
}

/// [`save_weights`] for a parameter arena and a model name (what callbacks hold).
/// Refuses (writing nothing) when a parameter is NaN or infinite.
pub fn save_store_weights<T: FloatType>(p: &ParamStore<T>, model: &str, path: &Path) -> Result<()> {
    T::save_weights(p, model, path)
}

pub(crate) fn save_weights_of<T: Scalar>(
    p: &ParamStore<T>,
    model: &str,
    path: &Path,
) -> Result<()> {
    check_finite_params(p, path)?;
    let bytes = serialize(weight_tensors(p), dtype::<T>(), metadata(p, model, "weights"), path)?;
    write_atomic(path, &bytes)
}

/// The first parameter tensor holding NaN or infinity, with that value.
pub fn first_non_finite<T: Scalar>(p: &ParamStore<T>) -> Option<(String, f64)> {
    p.entries().iter().find_map(|e| {
        p.values()[e.range()].iter().find(|v| !v.is_finite()).map(|v| (e.name.clone(), v.as_f64()))
    })
}

fn check_finite_params<T: Scalar>(p: &ParamStore<T>, path: &Path) -> Result<()> {
    match first_non_finite(p) {
        None => Ok(()),
        Some((tensor, value)) => {
            Err(TrainError::NonFiniteState { path: path.to_path_buf(), tensor, value })
        }
    }
}

/// Saves weights, the optimizer's state and the next epoch to run (for resuming).
pub fn save_full<M: Model>(
    model: &M,
    optimizer: &mut Optimizer<M::Scalar>,
    next_epoch: usize,
    path: impl AsRef<Path>,
) -> Result<()> {
    save_store_full(model.params(), model.name(), optimizer, next_epoch, path.as_ref())
}

/// [`save_full`] for a parameter arena and a model name (what callbacks hold).
pub fn save_store_full<T: FloatType>(
    p: &ParamStore<T>,
    model: &str,
    optimizer: &mut Optimizer<T>,
    next_epoch: usize,
    path: &Path,
) -> Result<()> {
    T::save_full(p, model, optimizer, next_epoch, path)
}

pub(crate) fn save_full_of<T: Scalar>(
    p: &ParamStore<T>,
    model: &str,
    optimizer: &mut Optimizer<T>,
    next_epoch: usize,
    path: &Path,
) -> Result<()> {
    check_finite_params(p, path)?;
    let mut tensors = weight_tensors(p);
    let n = p.trainable_len();
    for (name, slot) in optimizer.slots(n) {
        if let Some(v) = slot.iter().find(|v| !v.is_finite()) {
            return Err(TrainError::NonFiniteState {
                path: path.to_path_buf(),
                tensor: format!("the optimizer's {name}"),
                value: v.as_f64(),
            });
        }
        if !slot.is_empty() {
            tensors.push((format!("optimizer/{name}"), vec![slot.len()], to_bytes(slot)));
        }
    }
    let mut meta = metadata(p, model, "full");
    meta.insert("epoch".into(), next_epoch.to_string());
    meta.insert("optimizer".into(), optimizer.name().into());
    meta.insert("iterations".into(), optimizer.iterations().to_string());
    if let Some(lr) = optimizer.constant_learning_rate() {
        meta.insert("learning_rate".into(), format!("{lr:e}"));
    }
    for (name, v) in optimizer.scalars() {
        meta.insert(format!("optimizer_scalar/{name}"), format!("{v:e}"));
    }
    let bytes = serialize(tensors, dtype::<T>(), meta, path)?;
    write_atomic(path, &bytes)
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| TrainError::Io { path: path.to_path_buf(), source })
}

/// Parses a kiln checkpoint and checks it against `model`'s parameter table; returns
/// the header metadata. Errors name the first tensor that differs.
fn load_into<T: Scalar>(
    store: &mut ParamStore<T>,
    path: &Path,
    bytes: &[u8],
) -> Result<HashMap<String, String>> {
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| {
        ckpt_err(path, format!("not a readable safetensors file ({e}); it is truncated, corrupt, or of another format: load another file, or save it again"))
    })?;
    let meta = header.metadata().clone().unwrap_or_default();
    if meta.get("format").map(String::as_str) != Some(FORMAT) {
        return Err(ckpt_err(
            path,
            "a safetensors file, but not a kiln checkpoint (its metadata has no format=kiln); it was written by another tool",
        ));
    }
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| ckpt_err(path, format!("corrupt checkpoint: {e}")))?;
    let entries = store.entries().to_vec();
    let mut values = store.values().to_vec();
    for e in &entries {
        let t = st.tensor(&e.name).map_err(|_| {
            ckpt_err(
                path,
                format!(
                    "it has no tensor {:?}; it was saved from another architecture (model {:?}): load it into the network it was saved from",
                    e.name,
                    meta.get("model").cloned().unwrap_or_default()
                ),
            )
        })?;
        if t.shape() != e.shape.as_slice() {
            return Err(ckpt_err(
                path,
                format!(
                    "tensor {:?} has shape {:?} in the file but {:?} in the model; it was saved from another architecture: load it into the network it was saved from",
                    e.name,
                    t.shape(),
                    e.shape
                ),
            ));
        }
        let v: Vec<T> = from_bytes(t.dtype(), t.data()).ok_or_else(|| {
            ckpt_err(
                path,
                format!("tensor {:?} has dtype {:?}; kiln reads F32 and F64", e.name, t.dtype()),
            )
        })?;
        if let Some(x) = v.iter().find(|x| !x.is_finite()) {
            return Err(ckpt_err(
                path,
                format!(
                    "tensor {:?} holds {}: it was saved after training diverged, or the file is damaged; load an earlier checkpoint",
                    e.name,
                    x.as_f64()
                ),
            ));
        }
        values[e.range()].copy_from_slice(&v);
    }
    if let Some(extra) = st
        .names()
        .into_iter()
        .find(|n| !n.starts_with("optimizer/") && !entries.iter().any(|e| e.name == *n))
    {
        return Err(ckpt_err(
            path,
            format!(
                "it holds tensor {extra:?}, which the model does not have; it was saved from another architecture: load it into the network it was saved from"
            ),
        ));
    }
    store.set_values(&values)?;
    Ok(meta)
}

/// Loads weights saved by [`save_weights`] (or [`save_full`]) into `model`.
pub fn load_weights<M: Model>(model: &mut M, path: impl AsRef<Path>) -> Result<()> {
    load_store_weights(model.params_mut(), path.as_ref())
}

/// [`load_weights`] into a parameter arena.
pub fn load_store_weights<T: FloatType>(store: &mut ParamStore<T>, path: &Path) -> Result<()> {
    T::load_weights(store, path)
}

pub(crate) fn load_weights_of<T: Scalar>(store: &mut ParamStore<T>, path: &Path) -> Result<()> {
    let bytes = read(path)?;
    load_into(store, path, &bytes).map(|_| ())
}

/// Loads a full checkpoint: weights, optimizer state; returns the epoch to resume at.
pub fn load_full<M: Model>(
    model: &mut M,
    optimizer: &mut Optimizer<M::Scalar>,
    path: impl AsRef<Path>,
) -> Result<usize> {
    load_store_full(model.params_mut(), optimizer, path.as_ref())
}

/// [`load_full`] into a parameter arena.
pub fn load_store_full<T: FloatType>(
    store: &mut ParamStore<T>,
    optimizer: &mut Optimizer<T>,
    path: &Path,
) -> Result<usize> {
    T::load_full(store, optimizer, path)
}

pub(crate) fn load_full_of<T: Scalar>(
    store: &mut ParamStore<T>,
    optimizer: &mut Optimizer<T>,
    path: &Path,
) -> Result<usize> {
    let bytes = read(path)?;
    let meta = load_into(store, path, &bytes)?;
    let missing =
        |k: &str| ckpt_err(path, format!("not a full checkpoint: its metadata has no {k}"));
    let epoch: usize =
        meta.get("epoch").and_then(|v| v.parse().ok()).ok_or_else(|| missing("epoch"))?;
    let name = meta.get("optimizer").ok_or_else(|| missing("optimizer"))?;
    if name != optimizer.name() {
        return Err(ckpt_err(
            path,
            format!("it holds {name} state but the model is compiled with {}", optimizer.name()),
        ));
    }
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| ckpt_err(path, format!("corrupt checkpoint: {e}")))?;
    let n = store.trainable_len();
    for (slot, buf) in optimizer.slots(n) {
        if let Ok(t) = st.tensor(&format!("optimizer/{slot}")) {
            let v: Vec<T> = from_bytes(t.dtype(), t.data())
                .ok_or_else(|| ckpt_err(path, "optimizer state of an unknown dtype"))?;
            if let Some(x) = v.iter().find(|x| !x.is_finite()) {
                return Err(ckpt_err(
                    path,
                    format!(
                        "optimizer state {slot} holds {}: it was saved after training diverged, or the file is damaged; load an earlier checkpoint",
                        x.as_f64()
                    ),
                ));
            }
            if v.len() != buf.len() && !buf.is_empty() {
                return Err(ckpt_err(
                    path,
                    format!(
                        "optimizer state {slot} has {} values but the model has {}",
                        v.len(),
                        buf.len()
                    ),
                ));
            }
            *buf = v;
        }
    }
    // Every number in the metadata must parse and be finite: a value that does not is
    // an error, never silently skipped.
    let number = |key: &str, text: &str| -> Result<f64> {
        match text.parse::<f64>() {
            Ok(x) if x.is_finite() => Ok(x),
            _ => Err(ckpt_err(
                path,
                format!(
                    "its metadata {key} = {text:?} is not a finite number; the file is damaged"
                ),
            )),
        }
    };
    for (name, v) in optimizer.scalars() {
        let key = format!("optimizer_scalar/{name}");
        if let Some(text) = meta.get(&key) {
            *v = number(&key, text)?;
        }
    }
    let iterations = meta.get("iterations").ok_or_else(|| missing("iterations"))?;
    optimizer.set_iterations(iterations.parse().map_err(|_| {
        ckpt_err(
            path,
            format!("its metadata iterations = {iterations:?} is not a count; the file is damaged"),
        )
    })?);
    if let Some(text) = meta.get("learning_rate") {
        optimizer.set_learning_rate(number("learning_rate", text)?)?;
    }
    Ok(epoch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interrupted_save_leaves_the_previous_file_intact() {
        let dir = std::env::temp_dir().join(format!("kiln-atomic-{}", std::process::id()));
        let path = dir.join("ckpt.safetensors");
        write_atomic(&path, b"good").unwrap();
        assert!(write_atomic_inner(&path, b"half-written", true).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"good");
        write_atomic(&path, b"newer").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"newer");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Nothing is left behind: a temporary of a dead process is removed by the next
    /// save (a live one's, here this process's other file, is kept), and a failed
    /// rename removes its own temporary.
    #[test]
    fn temporaries_never_pile_up() {
        let dir = std::env::temp_dir().join(format!("kiln-temps-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("w.safetensors");
        std::fs::create_dir_all(&dir).unwrap();
        // pid 1 is always alive (init); a pid past the kernel's maximum never is.
        let (stale, live) =
            (dir.join("w.safetensors.tmp-4294967295"), dir.join("w.safetensors.tmp-1"));
        std::fs::write(&stale, b"x").unwrap();
        std::fs::write(&live, b"x").unwrap();
        write_atomic(&path, b"ok").unwrap();
        if Path::new("/proc/self").exists() {
            assert!(!stale.exists(), "a dead writer's temporary is removed");
        }
        assert!(live.exists(), "a live writer's temporary is kept");
        // A rename onto a directory fails: its temporary goes too.
        let blocked = dir.join("blocked");
        std::fs::create_dir_all(blocked.join("inner")).unwrap();
        assert!(write_atomic(&blocked, b"no").is_err());
        let left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("blocked.tmp-"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
