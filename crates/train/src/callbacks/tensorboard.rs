//! Keras's `TensorBoard` callback: epoch (and optionally batch) scalars written as
//! TensorFlow event files that the real TensorBoard reads, and a reader for them.
//!
//! An event file is a TFRecord stream: per record a little-endian u64 length, the
//! masked CRC-32C of those 8 bytes, a serialized `Event` protobuf, and the masked
//! CRC-32C of the data. The first event holds `file_version: "brain.Event:2"`; each
//! scalar is a `Summary.Value { tag, tensor, metadata { plugin_data { plugin_name:
//! "scalars" } } }` whose tensor is a float32 rank-0 `TensorProto`, as
//! `tf.summary.scalar` writes it. The few protobuf fields needed are encoded by hand
//! (no generated code); the CRC is the `crc32c` crate's.
//!
//! Layout as Keras's: `log_dir/train/events.out.tfevents.*` with `epoch_loss`,
//! `epoch_<metric>` and `epoch_learning_rate`, and `log_dir/validation/…` with the
//! validation values under the same tags (without `val_`), step = epoch (0-based).
//! With `histogram_freq(n)`, every n-th epoch also writes a histogram of each weight
//! to `train/` as `layer/variable/histogram` (Keras's weight paths), in the layout
//! `tf.summary.histogram` uses (plugin `histograms`, a float64 `[30, 3]` tensor of
//! left edge, right edge and count).

use super::{Callback, CallbackContext, Logs};
use crate::error::{Result, TrainError};
use kiln_tape::Scalar;
use std::io::Write;
use std::path::{Path, PathBuf};

/// How often [`TensorBoard`] writes training scalars (Keras's `update_freq`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum UpdateFreq {
    /// Once per epoch (Keras's default, `"epoch"`).
    #[default]
    Epoch,
    /// Also every `n` training batches, as `batch_<name>` at the global batch index
    /// (Keras's integer `update_freq`; `"batch"` is `Batches(1)`).
    Batches(usize),
}

/// Writes the learning curves for TensorBoard (Keras's `keras.callbacks.TensorBoard`).
///
/// ```no_run
/// # use kiln_train::TensorBoard;
/// let tb = TensorBoard::new("logs/run1"); // then `tensorboard --logdir logs`
/// ```
pub struct TensorBoard {
    log_dir: PathBuf,
    update_freq: UpdateFreq,
    histogram_freq: usize,
    train: Option<EventWriter>,
    validation: Option<EventWriter>,
    batches: u64,
    /// One weight's values as float64, reused across weights.
    histogram_values: Vec<f64>,
}

impl TensorBoard {
    /// Logs under `log_dir` (created if missing), once per epoch.
    pub fn new(log_dir: impl Into<PathBuf>) -> Self {
        TensorBoard {
            log_dir: log_dir.into(),
            update_freq: UpdateFreq::Epoch,
            histogram_freq: 0,
            train: None,
            validation: None,
            batches: 0,
            histogram_values: Vec::new(),
        }
    }

    /// How often training scalars are written (see [`UpdateFreq`]).
    pub fn update_freq(mut self, f: UpdateFreq) -> Self {
        self.update_freq = f;
        self
    }

    /// Writes a histogram of every weight after epochs 0, n, 2n, … (Keras's
    /// `histogram_freq`; 0, the default, writes none).
    pub fn histogram_freq(mut self, n: usize) -> Self {
        self.histogram_freq = n;
        self
    }
}

impl<T: Scalar> Callback<T> for TensorBoard {
    fn name(&self) -> &'static str {
        "TensorBoard"
    }
    fn chief_only(&self) -> bool {
        true
    }
    fn check(&self, _keys: &[String]) -> Result<()> {
        if self.update_freq == UpdateFreq::Batches(0) {
            return Err(TrainError::InvalidArgument {
                name: "update_freq",
                message: "TensorBoard's update_freq must be at least 1 batch; use UpdateFreq::Epoch to write once per epoch".into(),
            });
        }
        Ok(())
    }
    fn on_train_begin(&mut self, _ctx: &mut CallbackContext<'_, T>) -> Result<()> {
        self.train = Some(EventWriter::create(&self.log_dir.join("train"), 0)?);
        self.validation = Some(EventWriter::create(&self.log_dir.join("validation"), 1)?);
        self.batches = 0;
        Ok(())
    }
    fn on_train_batch_end(
        &mut self,
        _batch: usize,
        logs: &Logs,
        _ctx: &mut CallbackContext<'_, T>,
    ) -> Result<()> {
        self.batches += 1;
        let UpdateFreq::Batches(n) = self.update_freq else { return Ok(()) };
        if n == 0 || !self.batches.is_multiple_of(n as u64) {
            return Ok(());
        }
        if let Some(w) = &mut self.train {
            let step = self.batches as i64 - 1;
            for (k, &v) in logs.iter().filter(|(k, _)| !k.starts_with("val_")) {
                w.scalar(&format!("batch_{k}"), step, v)?;
            }
            w.flush()?;
        }
        Ok(())
    }
    fn on_epoch_end(
        &mut self,
        epoch: usize,
        logs: &Logs,
        ctx: &mut CallbackContext<'_, T>,
    ) -> Result<()> {
        let step = epoch as i64;
        if let Some(w) = &mut self.train {
            for (k, &v) in
                logs.iter().filter(|(k, _)| !k.starts_with("val_") && *k != "learning_rate")
            {
                w.scalar(&format!("epoch_{k}"), step, v)?;
            }
            w.scalar("epoch_learning_rate", step, ctx.optimizer.learning_rate())?;
            if self.histogram_freq > 0 && epoch.is_multiple_of(self.histogram_freq) {
                let values = ctx.params.values();
                for e in ctx.params.entries() {
                    self.histogram_values.clear();
                    self.histogram_values.extend(values[e.range()].iter().map(|v| v.as_f64()));
                    w.histogram(&format!("{}/histogram", e.name), step, &self.histogram_values)?;
                }
            }
            w.flush()?;
        }
        if let Some(w) = &mut self.validation {
            let mut any = false;
            for (k, &v) in logs.iter().filter_map(|(k, v)| Some((k.strip_prefix("val_")?, v))) {
                w.scalar(&format!("epoch_{k}"), step, v)?;
                any = true;
            }
            if any {
                w.flush()?;
            }
        }
        Ok(())
    }
    fn on_train_end(&mut self, _ctx: &mut CallbackContext<'_, T>, _logs: &Logs) -> Result<()> {
        for w in [&mut self.train, &mut self.validation].into_iter().flatten() {
            w.flush()?;
        }
        Ok(())
    }
}

/// One event file being written (appended record by record, as TensorFlow writes
/// them: a run cut short leaves every whole record readable).
pub struct EventWriter {
    file: std::io::BufWriter<std::fs::File>,
    path: PathBuf,
    record: Vec<u8>,
}

impl EventWriter {
    /// Creates `dir` and a new event file in it, named as TensorFlow names them
    /// (`events.out.tfevents.<seconds>.<host>.<pid>.<index>.v2`), and writes the
    /// file-version event.
    pub fn create(dir: &Path, index: usize) -> Result<Self> {
        let io = |path: &Path, source| TrainError::Io { path: path.to_path_buf(), source };
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let host = std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| {
                !h.is_empty()
                    && h.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            })
            .unwrap_or_else(|| "localhost".into());
        let path = dir
            .join(format!("events.out.tfevents.{secs}.{host}.{}.{index}.v2", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&path)
            .map_err(|e| io(&path, e))?;
        let mut w = EventWriter { file: std::io::BufWriter::new(file), path, record: Vec::new() };
        let mut ev = Vec::new();
        put_f64(&mut ev, 1, wall_time());
        put_bytes(&mut ev, 3, b"brain.Event:2");
        w.write_record(ev)?;
        Ok(w)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends the scalar `tag` = `value` (as float32, as Keras logs it) at `step`.
    pub fn scalar(&mut self, tag: &str, step: i64, value: f64) -> Result<()> {
        // TensorProto { dtype: DT_FLOAT, tensor_shape: {}, tensor_content: 4 bytes }
        let mut tensor = Vec::new();
        put_varint_field(&mut tensor, 1, 1);
        put_bytes(&mut tensor, 2, &[]);
        put_bytes(&mut tensor, 4, &(value as f32).to_le_bytes());
        self.summary(tag, step, &tensor, b"scalars")
    }

    /// Appends a histogram of `values` under `tag` at `step`, as `tf.summary.histogram`
    /// writes one (TensorBoard's histogram and distribution views): 30 buckets of equal
    /// width from the least to the greatest value, the last closed, as a float64
    /// `[buckets, 3]` tensor of (left edge, right edge, count); all values equal give
    /// 30 zero-width buckets at that value, the last holding the count.
    pub fn histogram(&mut self, tag: &str, step: i64, values: &[f64]) -> Result<()> {
        let rows = histogram_buckets(values, HISTOGRAM_BUCKETS);
        let mut content = Vec::with_capacity(rows.len() * 24);
        for v in rows.iter().flatten() {
            content.extend_from_slice(&v.to_le_bytes());
        }
        // TensorProto { dtype: DT_DOUBLE, tensor_shape: [rows, 3], tensor_content }
        let mut shape = Vec::new();
        for n in [rows.len() as u64, 3] {
            let mut dim = Vec::new();
            put_varint_field(&mut dim, 1, n);
            put_bytes(&mut shape, 2, &dim);
        }
        let mut tensor = Vec::new();
        put_varint_field(&mut tensor, 1, 2);
        put_bytes(&mut tensor, 2, &shape);
        put_bytes(&mut tensor, 4, &content);
        self.summary(tag, step, &tensor, b"histograms")
    }

    /// Appends one `Summary.Value { tag, tensor, metadata { plugin_data { plugin_name } } }`
    /// event at `step`.
    fn summary(&mut self, tag: &str, step: i64, tensor: &[u8], plugin_name: &[u8]) -> Result<()> {
        let mut plugin = Vec::new();
        put_bytes(&mut plugin, 1, plugin_name);
        let mut meta = Vec::new();
        put_bytes(&mut meta, 1, &plugin);
        let mut val = Vec::new();
        put_bytes(&mut val, 1, tag.as_bytes());
        put_bytes(&mut val, 8, tensor);
        put_bytes(&mut val, 9, &meta);
        let mut summary = Vec::new();
        put_bytes(&mut summary, 1, &val);
        let mut ev = Vec::new();
        put_f64(&mut ev, 1, wall_time());
        put_varint_field(&mut ev, 2, step as u64);
        put_bytes(&mut ev, 5, &summary);
        self.write_record(ev)
    }

    /// Writes buffered records to the file.
    pub fn flush(&mut self) -> Result<()> {
        self.file.flush().map_err(|source| TrainError::Io { path: self.path.clone(), source })
    }

    fn write_record(&mut self, data: Vec<u8>) -> Result<()> {
        let len = (data.len() as u64).to_le_bytes();
        self.record.clear();
        self.record.extend_from_slice(&len);
        self.record.extend_from_slice(&masked_crc(&len).to_le_bytes());
        self.record.extend_from_slice(&data);
        self.record.extend_from_slice(&masked_crc(&data).to_le_bytes());
        self.file
            .write_all(&self.record)
            .map_err(|source| TrainError::Io { path: self.path.clone(), source })
    }
}

/// Buckets per histogram (`tf.summary.histogram`'s default).
const HISTOGRAM_BUCKETS: usize = 30;

/// `tf.summary.histogram`'s buckets of the finite `values`: `k` buckets of width
/// `(max − min) / k` from the least value, a value's bucket `floor((v − min) / width)`
/// clamped to the last, the last right edge exactly the greatest value; one value
/// repeated gives `k` zero-width buckets at it with the count in the last; no value
/// gives none. Rows are (left edge, right edge, count).
pub fn histogram_buckets(values: &[f64], k: usize) -> Vec<[f64; 3]> {
    let finite = || values.iter().copied().filter(|v| v.is_finite());
    let (Some(min), Some(max)) = (finite().reduce(f64::min), finite().reduce(f64::max)) else {
        return Vec::new();
    };
    let n = finite().count() as f64;
    if min == max || k == 0 {
        let mut rows = vec![[min, min, 0.0]; k.max(1)];
        if let Some(last) = rows.last_mut() {
            last[2] = n;
        }
        return rows;
    }
    let width = (max - min) / k as f64;
    let mut rows: Vec<[f64; 3]> = (0..k)
        .map(|i| {
            let right = if i + 1 == k { max } else { min + (i + 1) as f64 * width };
            [min + i as f64 * width, right, 0.0]
        })
        .collect();
    for v in finite() {
        let i = (((v - min) / width).floor() as usize).min(k - 1);
        rows[i][2] += 1.0;
    }
    rows
}

fn wall_time() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// TFRecord's masked CRC-32C.
fn masked_crc(bytes: &[u8]) -> u32 {
    let c = crc32c::crc32c(bytes);
    c.rotate_right(15).wrapping_add(0xa282_ead8)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_varint_field(out: &mut Vec<u8>, field: u32, v: u64) {
    put_varint(out, u64::from(field) << 3);
    put_varint(out, v);
}

fn put_f64(out: &mut Vec<u8>, field: u32, v: f64) {
    put_varint(out, (u64::from(field) << 3) | 1);
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_varint(out, (u64::from(field) << 3) | 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// One scalar read back from an event file.
#[derive(Clone, Debug, PartialEq)]
pub struct ScalarEvent {
    /// The tag (`epoch_loss`).
    pub tag: String,
    /// The step (the epoch, for `epoch_*` tags).
    pub step: i64,
    /// The value.
    pub value: f32,
}

/// Reads every scalar of an event file, verifying every record's two CRCs and the
/// file-version header, as TensorBoard reads them: `tensor` scalars (float32, from
/// `float_val` or `tensor_content`) and the older `simple_value`. A damaged or
/// foreign file is an error saying where.
pub fn read_scalars(path: impl AsRef<Path>) -> Result<Vec<ScalarEvent>> {
    read_scalars_at(path.as_ref())
}

fn read_scalars_at(path: &Path) -> Result<Vec<ScalarEvent>> {
    read_events(path, parse_scalars)
}

/// Reads the event file at `path` and parses it with `parse`, an error naming the file.
fn read_events<E>(
    path: &Path,
    parse: fn(&[u8]) -> std::result::Result<Vec<E>, String>,
) -> Result<Vec<E>> {
    let bytes = std::fs::read(path)
        .map_err(|source| TrainError::Io { path: path.to_path_buf(), source })?;
    parse(&bytes).map_err(|message| TrainError::InvalidArgument {
        name: "event file",
        message: format!("{}: {message}", path.display()),
    })
}

/// [`read_scalars`] on bytes.
pub fn parse_scalars(bytes: &[u8]) -> std::result::Result<Vec<ScalarEvent>, String> {
    let mut out = Vec::new();
    for (step, value) in summary_values(bytes)? {
        let vf = fields(value)?;
        let tag = vf.iter().find(|f| f.0 == 1).and_then(|f| f.2).unwrap_or_default();
        let tag = String::from_utf8(tag.to_vec()).map_err(|_| "a tag is not UTF-8")?;
        let simple = vf.iter().find(|f| f.0 == 2).map(|f| f32::from_bits(f.1 as u32));
        let tensor = vf.iter().find(|f| f.0 == 8).and_then(|f| f.2);
        let v = match (simple, tensor) {
            (Some(v), _) => Some(v),
            (None, Some(t)) => tensor_scalar(t)?,
            _ => None,
        };
        if let Some(value) = v {
            out.push(ScalarEvent { tag, step, value });
        }
    }
    Ok(out)
}

/// One histogram read back from an event file.
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramEvent {
    /// The tag (`dense/kernel/histogram`).
    pub tag: String,
    /// The step (the epoch).
    pub step: i64,
    /// The buckets: (left edge, right edge, count).
    pub buckets: Vec<[f64; 3]>,
}

/// Reads every histogram of an event file (float64 `[k, 3]` tensors, as
/// `tf.summary.histogram` writes them), verifying every record's CRCs.
pub fn read_histograms(path: impl AsRef<Path>) -> Result<Vec<HistogramEvent>> {
    read_histograms_at(path.as_ref())
}

fn read_histograms_at(path: &Path) -> Result<Vec<HistogramEvent>> {
    read_events(path, parse_histograms)
}

fn parse_histograms(bytes: &[u8]) -> std::result::Result<Vec<HistogramEvent>, String> {
    let mut out = Vec::new();
    for (step, value) in summary_values(bytes)? {
        let vf = fields(value)?;
        let tag = vf.iter().find(|f| f.0 == 1).and_then(|f| f.2).unwrap_or_default();
        let Some(t) = vf.iter().find(|f| f.0 == 8).and_then(|f| f.2) else { continue };
        let tf = fields(t)?;
        let content = tf.iter().find(|f| f.0 == 4).and_then(|f| f.2);
        let (Some(2), Some(content)) = (tf.iter().find(|f| f.0 == 1).map(|f| f.1), content) else {
            continue; // not a float64 tensor with its content
        };
        let dims: Vec<u64> = match tf.iter().find(|f| f.0 == 2).and_then(|f| f.2) {
            Some(shape) => fields(shape)?
                .iter()
                .filter(|f| f.0 == 2)
                .filter_map(|f| f.2)
                .map(|d| Ok(fields(d)?.iter().find(|f| f.0 == 1).map_or(0, |f| f.1)))
                .collect::<std::result::Result<_, String>>()?,
            None => Vec::new(),
        };
        if dims.len() != 2 || dims[1] != 3 || content.len() as u64 != dims[0] * 24 {
            continue; // not a histogram
        }
        let v: Vec<f64> = content
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        let tag = String::from_utf8(tag.to_vec()).map_err(|_| "a tag is not UTF-8")?;
        out.push(HistogramEvent {
            tag,
            step,
            buckets: v.chunks_exact(3).map(|r| [r[0], r[1], r[2]]).collect(),
        });
    }
    Ok(out)
}

/// Every `Summary.Value` of an event stream with its event's step, after checking
/// each record's two CRCs and the file-version header.
fn summary_values(bytes: &[u8]) -> std::result::Result<Vec<(i64, &[u8])>, String> {
    let mut out = Vec::new();
    let mut at = 0;
    let mut first = true;
    while at < bytes.len() {
        let head = bytes.get(at..at + 12).ok_or(format!("record at byte {at} is cut short"))?;
        let len_bytes = &head[..8];
        let len = u64::from_le_bytes(len_bytes.try_into().expect("8 bytes"));
        if u32::from_le_bytes(head[8..12].try_into().expect("4 bytes")) != masked_crc(len_bytes) {
            return Err(format!("the length CRC of the record at byte {at} does not match"));
        }
        let len = usize::try_from(len).map_err(|_| format!("record at byte {at} is too long"))?;
        let end = at.checked_add(12 + len + 4).filter(|&e| e <= bytes.len());
        let Some(end) = end else { return Err(format!("record at byte {at} is cut short")) };
        let data = &bytes[at + 12..at + 12 + len];
        if u32::from_le_bytes(bytes[end - 4..end].try_into().expect("4 bytes")) != masked_crc(data)
        {
            return Err(format!("the data CRC of the record at byte {at} does not match"));
        }
        let ev = fields(data)?;
        if first {
            let version = ev.iter().find(|f| f.0 == 3).and_then(|f| f.2);
            if version != Some(b"brain.Event:2".as_slice()) {
                return Err("the first event is not the file version brain.Event:2".into());
            }
            first = false;
        }
        let step = ev.iter().find(|f| f.0 == 2).map_or(0, |f| f.1 as i64);
        for summary in ev.iter().filter(|f| f.0 == 5).filter_map(|f| f.2) {
            for value in fields(summary)?.iter().filter(|f| f.0 == 1).filter_map(|f| f.2) {
                out.push((step, value));
            }
        }
        at = end;
    }
    Ok(out)
}

/// A float32 rank-0 TensorProto's value.
fn tensor_scalar(t: &[u8]) -> std::result::Result<Option<f32>, String> {
    let tf = fields(t)?;
    if tf.iter().find(|f| f.0 == 1).map(|f| f.1) != Some(1) {
        return Ok(None);
    }
    if let Some(c) = tf.iter().find(|f| f.0 == 4).and_then(|f| f.2) {
        return Ok(c.get(..4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))));
    }
    // float_val, packed (wire type 2) or not (wire type 5).
    Ok(tf.iter().find(|f| f.0 == 5).map(|f| match f.2 {
        Some(b) if b.len() >= 4 => f32::from_le_bytes(b[..4].try_into().expect("4 bytes")),
        _ => f32::from_bits(f.1 as u32),
    }))
}

/// A protobuf message's fields: (number, varint or fixed value, bytes of a
/// length-delimited one).
type Field<'a> = (u64, u64, Option<&'a [u8]>);

fn fields(b: &[u8]) -> std::result::Result<Vec<Field<'_>>, String> {
    let mut out = Vec::new();
    let mut i = 0;
    let varint = |i: &mut usize| -> std::result::Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let c = *b.get(*i).ok_or("a protobuf varint is cut short")?;
            *i += 1;
            v |= u64::from(c & 0x7f) << shift;
            if c < 0x80 {
                return Ok(v);
            }
        }
        Err("a protobuf varint is too long".into())
    };
    while i < b.len() {
        let key = varint(&mut i)?;
        let (field, wire) = (key >> 3, key & 7);
        match wire {
            0 => out.push((field, varint(&mut i)?, None)),
            1 => {
                let v = b.get(i..i + 8).ok_or("a protobuf double is cut short")?;
                out.push((field, u64::from_le_bytes(v.try_into().expect("8 bytes")), None));
                i += 8;
            }
            5 => {
                let v = b.get(i..i + 4).ok_or("a protobuf float is cut short")?;
                out.push((
                    field,
                    u64::from(u32::from_le_bytes(v.try_into().expect("4 bytes"))),
                    None,
                ));
                i += 4;
            }
            2 => {
                let n =
                    usize::try_from(varint(&mut i)?).map_err(|_| "a protobuf field is too long")?;
                let v = b.get(i..i.checked_add(n).ok_or("a protobuf field is too long")?);
                out.push((field, 0, Some(v.ok_or("a protobuf field is cut short")?)));
                i += n;
            }
            w => return Err(format!("protobuf wire type {w} is not used by event files")),
        }
    }
    Ok(out)
}
