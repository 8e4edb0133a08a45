//! The one error type of kiln-train. Every message says what is wrong and how to fix it.

use std::path::PathBuf;
use thiserror::Error;

/// What went wrong while compiling, fitting, evaluating or predicting.
#[derive(Debug, Error)]
pub enum TrainError {
    /// A tensor operation failed (shapes that do not fit).
    #[error(transparent)]
    Tape(#[from] kiln_tape::TapeError),
    /// Inputs and labels disagree on the number of samples.
    #[error("x has {x} samples but y has {y}; pass the same number of samples in both")]
    LengthMismatch {
        /// Samples in x.
        x: usize,
        /// Samples in y.
        y: usize,
    },
    /// Nothing to train or evaluate on.
    #[error("{what} is empty; pass at least one sample")]
    EmptyData {
        /// Which data.
        what: &'static str,
    },
    /// Data whose per-sample shape does not match what the model takes or gives.
    #[error("{what} has samples of shape {got:?} but the model needs {expected:?}; {hint}")]
    ShapeMismatch {
        /// Which data.
        what: &'static str,
        /// The model's shape.
        expected: Vec<usize>,
        /// The data's shape.
        got: Vec<usize>,
        /// How to fix it.
        hint: String,
    },
    /// Inputs the model's first layer cannot take (token ids outside an Embedding's
    /// vocabulary), found before the first step.
    #[error("the inputs do not fit layer `{layer}`: {message}")]
    BadInput {
        /// The first layer's name.
        layer: String,
        /// What is wrong, where, and how to fix it.
        message: String,
    },
    /// NaN or infinity in data.
    #[error(
        "{what} holds a non-finite value ({value}) in sample {sample}, element {element}{at}; remove or impute it before training"
    )]
    NonFinite {
        /// Which data.
        what: &'static str,
        /// The sample's index.
        sample: usize,
        /// The element's index within the sample.
        element: usize,
        /// For samples of more than one axis, the element's index per axis
        /// (` (step 2, feature 1 of [28, 28])`), else empty.
        at: String,
        /// The offending value.
        value: f64,
    },
    /// A class label the model cannot output.
    #[error(
        "label {label} of sample {sample} is outside the model's {classes} classes (0..{classes}); fix the label or give the model more output units"
    )]
    LabelOutOfRange {
        /// The sample's index.
        sample: usize,
        /// The label.
        label: usize,
        /// The number of classes the model outputs.
        classes: usize,
    },
    /// An argument outside its valid range.
    #[error("{name}: {message}")]
    InvalidArgument {
        /// The argument.
        name: &'static str,
        /// What is wrong and what would be valid.
        message: String,
    },
    /// A name (optimizer, loss, metric, activation...) kiln does not know.
    #[error("unknown {kind} {name:?}{}; valid names: {}", suggestion.map(|s| format!(" (did you mean {s:?}?)")).unwrap_or_default(), valid.join(", "))]
    UnknownName {
        /// What kind of name.
        kind: &'static str,
        /// The name given.
        name: String,
        /// Every valid name.
        valid: Vec<&'static str>,
        /// The closest valid name, if any is close.
        suggestion: Option<&'static str>,
    },
    /// A callback watching a quantity the logs will never hold.
    #[error("{callback} monitors {monitor:?}, but the logs will only hold {}; monitor one of those{}", available.join(", "), if monitor.starts_with("val_") { " (val_ keys need validation_split or validation_data)" } else { "" })]
    UnknownMonitor {
        /// The callback.
        callback: &'static str,
        /// What it monitors.
        monitor: String,
        /// The keys that will exist.
        available: Vec<String>,
    },
    /// A loss, metric or label type that does not fit the model's output.
    #[error("{0}")]
    Incompatible(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// Parameters (or optimizer state) holding NaN or infinity were about to be saved:
    /// nothing was written, so an earlier good file stays as it was.
    #[error(
        "not saved to {path}: {tensor} holds {value} (training diverged); the file was not written, so any earlier checkpoint there is intact: restore it, or lower the learning rate and train again"
    )]
    NonFiniteState {
        /// The file that was not written.
        path: PathBuf,
        /// The first tensor holding a non-finite value.
        tensor: String,
        /// That value.
        value: f64,
    },
    /// Data-parallel training across ranks failed: a rank failed, or the transport did.
    #[error("distributed training: {message}")]
    Distributed {
        /// What failed and where.
        message: String,
    },
    /// Training diverged: a checkpointing callback found NaN or infinity in the
    /// parameters and wrote nothing, keeping the last good file.
    #[error(
        "training diverged at epoch {epoch}: {what}; {kept}. Lower the learning rate (or normalize the inputs) and train again"
    )]
    Diverged {
        /// The 1-based epoch at whose end the loss or the parameters were non-finite.
        epoch: usize,
        /// What was non-finite ("the loss is NaN", "dense/kernel holds inf").
        what: String,
        /// What was kept ("the last good checkpoint, X, is kept").
        kept: String,
    },
    /// A checkpoint that is corrupt, foreign or of another architecture.
    #[error("{path}: {message}")]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Result alias for kiln-train.
pub type Result<T, E = TrainError> = std::result::Result<T, E>;

/// The candidate closest to `name` by edit distance, when it is close enough to be a
/// plausible typo (kiln-spec's rule, which `model!` uses too).
pub fn did_you_mean(name: &str, candidates: &[&'static str]) -> Option<&'static str> {
    kiln_spec::did_you_mean(name, candidates)
}

/// Builds an [`TrainError::UnknownName`] with a suggestion.
pub fn unknown_name(kind: &'static str, name: &str, valid: &[&'static str]) -> TrainError {
    TrainError::UnknownName {
        kind,
        name: name.to_string(),
        valid: valid.to_vec(),
        suggestion: did_you_mean(name, valid),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        let names = ["adam", "adamw", "sgd", "rmsprop"];
        assert_eq!(did_you_mean("adma", &names), Some("adam"));
        assert_eq!(did_you_mean("rmsprp", &names), Some("rmsprop"));
        assert_eq!(did_you_mean("banana", &names), None);
        let e = unknown_name("optimizer", "adma", &names).to_string();
        assert_eq!(
            e,
            "unknown optimizer \"adma\" (did you mean \"adam\"?); valid names: adam, adamw, sgd, rmsprop"
        );
    }
}
