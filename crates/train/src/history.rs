//! [`History`]: what `fit` returns, keyed exactly as Keras keys `History.history`.

use serde::Serialize;
use std::collections::BTreeMap;

/// Per-epoch logs of one `fit` call.
///
/// `history` holds Keras's keys (`loss`, each metric, and `val_` counterparts for the
/// epochs that were validated); the learning rate and the wall-clock seconds of each
/// epoch are kept beside it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct History {
    /// Values by key, one per epoch run (validation keys: one per validated epoch).
    pub history: BTreeMap<String, Vec<f64>>,
    /// The epoch numbers that ran (0-based, as Keras's `History.epoch`).
    pub epoch: Vec<usize>,
    /// The learning rate at the end of each epoch.
    pub learning_rate: Vec<f64>,
    /// Seconds each epoch took, validation included.
    pub epoch_seconds: Vec<f64>,
    /// The epochs that were validated (the `val_` lists have one value for each).
    pub validated: Vec<usize>,
}

impl History {
    /// The values logged under `key`.
    pub fn get(&self, key: &str) -> Option<&[f64]> {
        self.history.get(key).map(Vec::as_slice)
    }

    /// Number of epochs run.
    pub fn len(&self) -> usize {
        self.epoch.len()
    }

    /// Whether no epoch ran.
    pub fn is_empty(&self) -> bool {
        self.epoch.is_empty()
    }

    /// The keys that have values, in Keras's (sorted) order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.history.keys().map(String::as_str)
    }

    /// The whole history as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// One CSV row per epoch: `epoch`, every key, `learning_rate`, `epoch_seconds`
    /// (empty cells where an epoch has no validation value).
    pub fn to_csv(&self) -> String {
        let mut w = csv::Writer::from_writer(Vec::new());
        let keys: Vec<&String> = self.history.keys().collect();
        let mut header = vec!["epoch".to_string()];
        header.extend(keys.iter().map(|k| k.to_string()));
        header.extend(["learning_rate".to_string(), "epoch_seconds".to_string()]);
        let _ = w.write_record(&header);
        for (row, &e) in self.epoch.iter().enumerate() {
            let val_row = self.validated.iter().position(|&v| v == e);
            let mut rec = vec![e.to_string()];
            for k in &keys {
                let at = if k.starts_with("val_") { val_row } else { Some(row) };
                rec.push(
                    at.and_then(|i| self.history[*k].get(i))
                        .map(|x| x.to_string())
                        .unwrap_or_default(),
                );
            }
            rec.push(self.learning_rate.get(row).map(|x| x.to_string()).unwrap_or_default());
            rec.push(self.epoch_seconds.get(row).map(|x| x.to_string()).unwrap_or_default());
            let _ = w.write_record(&rec);
        }
        String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default()
    }
}

impl std::ops::Index<&str> for History {
    type Output = [f64];
    /// The values under `key`; an unknown key gives an empty slice.
    fn index(&self, key: &str) -> &[f64] {
        self.get(key).unwrap_or(&[])
    }
}
