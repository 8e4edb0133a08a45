//! Tabular data from CSV: a header row, one target column chosen by name, every other
//! column a numeric feature. An unparsable cell is an error naming its line and column.

use crate::error::{Error, Result};
use kiln_train::{Dyn, Inputs};
use std::path::Path;

/// A numeric table split into features and a target.
#[derive(Clone, Debug)]
pub struct Table {
    /// The feature columns' names, in file order.
    pub feature_names: Vec<String>,
    /// One row of features per sample.
    pub x: Inputs<Dyn>,
    /// The target of each sample.
    pub target: Vec<f64>,
}

impl Table {
    /// The targets as class indices (they must be whole numbers ≥ 0).
    pub fn classes(&self) -> Result<kiln_train::ClassLabels> {
        // Whole numbers that index a class: at most 2^24 (exact in float32, and far more
        // classes than any output layer has), so no value saturates into a huge label.
        const MAX: f64 = 16_777_216.0;
        let bad = self.target.iter().position(|&t| !(t.fract() == 0.0 && (0.0..=MAX).contains(&t)));
        if let Some(row) = bad {
            return Err(Error::Train(kiln_train::TrainError::InvalidArgument {
                name: "target",
                message: format!(
                    "row {} holds {}, but class targets must be whole numbers from 0 to 2^24; use the target as a regression target instead, or map it to a class index",
                    row + 1,
                    self.target[row]
                ),
            }));
        }
        let labels: Vec<i64> = self.target.iter().map(|&t| t as i64).collect();
        Ok(kiln_train::ClassLabels::from_i64(&labels)?)
    }
}

/// Reads `path`, taking the column called `target` as the target.
pub fn read(path: impl AsRef<Path>, target: &str) -> Result<Table> {
    read_at(path.as_ref(), target)
}

fn read_at(path: &Path, target: &str) -> Result<Table> {
    let data = |message: String| Error::Data { path: path.to_path_buf(), message };
    let mut r = csv::ReaderBuilder::new().has_headers(true).from_path(path).map_err(|e| match e
        .kind()
    {
        csv::ErrorKind::Io(_) => {
            Error::Io { path: path.to_path_buf(), source: std::io::Error::other(e.to_string()) }
        }
        _ => data(e.to_string()),
    })?;
    let header: Vec<String> =
        r.headers().map_err(|e| data(e.to_string()))?.iter().map(str::to_string).collect();
    if header.iter().all(|h| h.trim().is_empty()) {
        return Err(data(format!(
            "the file is empty (no header line); write a header naming the columns ({target:?} among them), then one row per sample"
        )));
    }
    let t = header.iter().position(|h| h == target).ok_or_else(|| {
        data(format!(
            "no column named {target:?}; the columns are {}: pass one of those as the target",
            header.join(", ")
        ))
    })?;
    if header.len() == 1 {
        return Err(data(format!(
            "the file holds only the target column {target:?}; a model needs at least one feature column beside it"
        )));
    }
    let mut x = Vec::new();
    let mut y = Vec::new();
    for (row, rec) in r.records().enumerate() {
        let line = row + 2;
        let rec = rec.map_err(|e| match e.kind() {
            csv::ErrorKind::UnequalLengths { len, .. } => data(format!(
                "line {line} has {len} cells but the header has {}; fix the row so every row has one cell per column",
                header.len()
            )),
            _ => data(format!("line {line}: {e}; fix the file's CSV syntax")),
        })?;
        if rec.len() != header.len() {
            return Err(data(format!(
                "line {line} has {} cells but the header has {}",
                rec.len(),
                header.len()
            )));
        }
        for (col, cell) in rec.iter().enumerate() {
            let v: f64 = cell.trim().parse().map_err(|_| {
                data(format!(
                    "line {line}, column {} ({:?}): {cell:?} is not a number; fix the cell or remove the row",
                    col + 1,
                    header[col]
                ))
            })?;
            if !v.is_finite() {
                return Err(data(format!(
                    "line {line}, column {} ({:?}): {cell:?} is not finite; impute it or remove the row",
                    col + 1,
                    header[col]
                )));
            }
            // Stored as float32: a value beyond its range would become infinity.
            if !(v as f32).is_finite() {
                return Err(data(format!(
                    "line {line}, column {} ({:?}): {cell:?} is beyond float32's range (±3.4e38); rescale the column",
                    col + 1,
                    header[col]
                )));
            }
            if col == t {
                y.push(v);
            } else {
                x.push(v as f32);
            }
        }
    }
    if y.is_empty() {
        return Err(data("the file has a header but no rows; add one row per sample".into()));
    }
    let feature_names: Vec<String> =
        header.iter().enumerate().filter(|(i, _)| *i != t).map(|(_, h)| h.clone()).collect();
    let x = Inputs::from_vec_shape(&[feature_names.len()], x)?;
    Ok(Table { feature_names, x, target: y })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!("kiln-csv-{}-{name}", std::process::id()));
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn reads_features_and_target_by_name() {
        let p = write("ok.csv", "a,label,b\n1,0,2\n3,1,4.5\n");
        let t = read(&p, "label").unwrap();
        assert_eq!(t.feature_names, ["a", "b"]);
        assert_eq!(t.x.data(), &[1.0, 2.0, 3.0, 4.5]);
        assert_eq!(t.target, vec![0.0, 1.0]);
        assert_eq!(t.classes().unwrap().as_slice(), &[0, 1]);
    }

    #[test]
    fn values_beyond_float32_and_huge_class_targets_are_errors() {
        let p = write("huge.csv", "a,label\n1,0\n1e300,1\n");
        let e = read(&p, "label").unwrap_err().to_string();
        assert!(e.contains("line 3, column 1 (\"a\"): \"1e300\" is beyond float32's range"), "{e}");
        let p = write("bigclass.csv", "a,label\n1,0\n2,1e30\n");
        let e = read(&p, "label").unwrap().classes().unwrap_err().to_string();
        assert!(e.contains("row 2 holds 1000000000000000000000000000000, but class targets must be whole numbers from 0 to 2^24"), "{e}");
    }

    #[test]
    fn empty_and_target_only_files_say_what_to_write() {
        let e = read(write("empty.csv", ""), "label").unwrap_err().to_string();
        assert!(e.contains("the file is empty (no header line); write a header"), "{e}");
        let e = read(write("only.csv", "label\n0\n1\n"), "label").unwrap_err().to_string();
        assert!(
            e.contains(
                "holds only the target column \"label\"; a model needs at least one feature column"
            ),
            "{e}"
        );
    }

    #[test]
    fn bad_cells_name_their_line_and_column() {
        let p = write("bad.csv", "a,label\n1,0\nx,1\n");
        let e = read(&p, "label").unwrap_err().to_string();
        assert!(e.contains("line 3, column 1 (\"a\"): \"x\" is not a number"), "{e}");
        let e = read(&p, "target").unwrap_err().to_string();
        assert!(e.contains("no column named \"target\"; the columns are a, label"), "{e}");
        let p = write("short.csv", "a,label\n1\n");
        assert!(read(&p, "label").is_err());
    }
}
