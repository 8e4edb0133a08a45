//! `kiln::Error`: every failure a kiln user can meet, each saying what to fix.

use std::path::PathBuf;
use thiserror::Error;

/// The error type of kiln; the errors of the crates below it convert into it with `?`.
///
/// `Debug` prints the sentence (what `fn main() -> kiln::Result<()>` shows on failure,
/// as well-kept command-line crates do); `{:#?}` prints the variant and its fields.
#[derive(Error)]
pub enum Error {
    /// A tensor operation got shapes or arguments that do not fit.
    #[error(transparent)]
    Tape(#[from] kiln_tape::TapeError),
    /// Training, evaluation or prediction failed (bad data, names, settings).
    #[error(transparent)]
    Train(#[from] kiln_train::TrainError),
    /// A layer that does not fit where it was put.
    #[error("layer {layer}: {message}")]
    Layer {
        /// The layer's name and class.
        layer: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// A data file whose contents are not what its format promises.
    #[error("{path}: {message}")]
    Data {
        /// The file.
        path: PathBuf,
        /// What is wrong and how to fix it.
        message: String,
    },
}

impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !f.alternate() {
            return write!(f, "{self}");
        }
        match self {
            Error::Tape(e) => f.debug_tuple("Tape").field(e).finish(),
            Error::Train(e) => f.debug_tuple("Train").field(e).finish(),
            Error::Layer { layer, message } => {
                f.debug_struct("Layer").field("layer", layer).field("message", message).finish()
            }
            Error::Io { path, source } => {
                f.debug_struct("Io").field("path", path).field("source", source).finish()
            }
            Error::Data { path, message } => {
                f.debug_struct("Data").field("path", path).field("message", message).finish()
            }
        }
    }
}

/// Result alias for kiln.
pub type Result<T, E = Error> = std::result::Result<T, E>;
