//! The one error type of kiln-tape.

use thiserror::Error;

/// What went wrong in a tensor operation; every variant says what to change.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum TapeError {
    /// Two operands whose shapes do not fit the operation.
    #[error("{op}: shapes {lhs:?} and {rhs:?} do not fit: {hint}")]
    ShapeMismatch {
        /// The operation that was called.
        op: &'static str,
        /// The first operand's shape.
        lhs: Vec<usize>,
        /// The second operand's shape.
        rhs: Vec<usize>,
        /// How to fix it.
        hint: String,
    },
    /// A buffer whose length disagrees with the shape given for it.
    #[error(
        "{op}: shape {shape:?} holds {expected} elements but {got} were given; pass exactly {expected}"
    )]
    LengthMismatch {
        /// The operation that was called.
        op: &'static str,
        /// The requested shape.
        shape: Vec<usize>,
        /// Elements the shape holds.
        expected: usize,
        /// Elements supplied.
        got: usize,
    },
    /// An axis index past the tensor's rank.
    #[error("{op}: axis {axis} is out of range for a rank-{rank} tensor; use an axis in 0..{rank}")]
    BadAxis {
        /// The operation that was called.
        op: &'static str,
        /// The requested axis.
        axis: usize,
        /// The tensor's rank.
        rank: usize,
    },
    /// An argument outside its valid range (a zero stride, an empty slice, a bad permutation...).
    #[error("{op}: {message}")]
    InvalidArgument {
        /// The operation that was called.
        op: &'static str,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// `backward` was asked to differentiate something other than a scalar.
    #[error(
        "backward needs a scalar loss, but the value has shape {shape:?}; reduce it first with sum() or mean()"
    )]
    NonScalarLoss {
        /// The shape of the value passed to backward.
        shape: Vec<usize>,
    },
    /// A variable from another tape was mixed into an operation.
    #[error("a variable from another tape was used; record every operand on the same Tape")]
    ForeignVariable,
}

/// Result alias for kiln-tape operations.
pub type Result<T, E = TapeError> = std::result::Result<T, E>;
