//! Checkpoints in the safetensors format, readable by numpy's and PyTorch's safetensors
//! loaders: one tensor per parameter, named as Keras names weights (`dense_1/kernel`) in
//! Keras's layouts, with the model's name, its layer table and the kiln version in the
//! header's metadata. Full checkpoints add the optimizer's state and the next epoch.
//!
//! Every file is written to a temporary file in the same directory, flushed, then
//! renamed over the target, so a crash mid-save never loses the last good checkpoint.

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
/// then renamed over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_inner(path, bytes, false)
}

fn write_atomic_inner(path: &Path, bytes: &[u8], crash_before_rename: bool) -> Result<()> {
    let io = |source| TrainError::Io { path: path.to_path_buf(), source };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(io)?;
    drop(f);
    if crash_before_rename {
        return Err(io(std::io::Error::other("simulated crash before rename")));
    }
    std::fs::rename(&tmp, path).map_err(io)
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
    safetensors::serialize(views, Some(meta))
        .map_err(|e| ckpt_err(path, format!("cannot serialize: {e}")))
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
pub fn save_store_weights<T: Scalar>(p: &ParamStore<T>, model: &str, path: &Path) -> Result<()> {
    let bytes = serialize(weight_tensors(p), dtype::<T>(), metadata(p, model, "weights"), path)?;
    write_atomic(path, &bytes)
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
pub fn save_store_full<T: Scalar>(
    p: &ParamStore<T>,
    model: &str,
    optimizer: &mut Optimizer<T>,
    next_epoch: usize,
    path: &Path,
) -> Result<()> {
    let mut tensors = weight_tensors(p);
    let n = p.trainable_len();
    for (name, slot) in optimizer.slots(n) {
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
        ckpt_err(path, format!("not a readable safetensors file ({e}); it is truncated, corrupt, or of another format"))
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
                    "it has no tensor {:?}; it was saved from another architecture (model {:?})",
                    e.name,
                    meta.get("model").cloned().unwrap_or_default()
                ),
            )
        })?;
        if t.shape() != e.shape.as_slice() {
            return Err(ckpt_err(
                path,
                format!(
                    "tensor {:?} has shape {:?} in the file but {:?} in the model; it was saved from another architecture",
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
        if v.iter().any(|x| !x.is_finite()) {
            return Err(ckpt_err(
                path,
                format!("tensor {:?} holds NaN or infinity; the checkpoint is corrupt", e.name),
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
                "it holds tensor {extra:?}, which the model does not have; it was saved from another architecture"
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
pub fn load_store_weights<T: Scalar>(store: &mut ParamStore<T>, path: &Path) -> Result<()> {
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
pub fn load_store_full<T: Scalar>(
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
    for (name, v) in optimizer.scalars() {
        if let Some(x) = meta.get(&format!("optimizer_scalar/{name}")).and_then(|s| s.parse().ok())
        {
            *v = x;
        }
    }
    optimizer.set_iterations(
        meta.get("iterations").and_then(|v| v.parse().ok()).ok_or_else(|| missing("iterations"))?,
    );
    if let Some(lr) = meta.get("learning_rate").and_then(|v| v.parse().ok()) {
        optimizer.set_learning_rate(lr)?;
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
}
