//! MNIST from its four IDX files (gzipped or plain), typed and scaled to [0, 1].

use super::idx::read_idx;
use crate::error::{Error, Result};
use kiln_train::{ClassLabels, Inputs, S3};
use std::path::Path;

/// One split of MNIST.
pub struct Split {
    /// Images, 28×28×1, values in [0, 1].
    pub x: Inputs<S3<28, 28, 1>>,
    /// Digits 0–9.
    pub y: ClassLabels,
}

/// MNIST's training (60,000) and test (10,000) splits.
pub struct Mnist {
    /// The training split.
    pub train: Split,
    /// The test split.
    pub test: Split,
}

fn find(dir: &Path, stem: &str) -> std::path::PathBuf {
    let gz = dir.join(format!("{stem}.gz"));
    if gz.exists() { gz } else { dir.join(stem) }
}

fn split(dir: &Path, images: &str, labels: &str) -> Result<Split> {
    let (ip, lp) = (find(dir, images), find(dir, labels));
    let imgs = read_idx(&ip)?;
    let labs = read_idx(&lp)?;
    if imgs.dims.len() != 3 || imgs.dims[1..] != [28, 28] {
        return Err(Error::Data {
            path: ip,
            message: format!("MNIST images must be n×28×28, this file is {:?}", imgs.dims),
        });
    }
    if labs.dims != [imgs.dims[0]] {
        return Err(Error::Data {
            path: lp,
            message: format!(
                "{} labels for {} images",
                labs.dims.first().copied().unwrap_or(0),
                imgs.dims[0]
            ),
        });
    }
    if let Some(bad) = labs.data.iter().position(|&l| l > 9) {
        return Err(Error::Data {
            path: lp,
            message: format!("label {} at position {bad} is not a digit 0–9", labs.data[bad]),
        });
    }
    let x = Inputs::from_vec(imgs.data.iter().map(|&p| f32::from(p) / 255.0).collect())?;
    Ok(Split { x, y: ClassLabels::from(&labs.data[..]) })
}

/// Loads MNIST from `dir` holding `train-images-idx3-ubyte[.gz]`,
/// `train-labels-idx1-ubyte[.gz]`, `t10k-images-idx3-ubyte[.gz]` and
/// `t10k-labels-idx1-ubyte[.gz]` (the repository vendors them in `data/mnist`).
pub fn load(dir: impl AsRef<Path>) -> Result<Mnist> {
    load_at(dir.as_ref())
}

fn load_at(dir: &Path) -> Result<Mnist> {
    Ok(Mnist {
        train: split(dir, "train-images-idx3-ubyte", "train-labels-idx1-ubyte")?,
        test: split(dir, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")?,
    })
}
