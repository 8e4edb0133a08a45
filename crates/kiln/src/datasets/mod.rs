//! Dataset readers for the formats kiln's examples use.

pub mod idx;
