//! Datasets and preprocessing: the IDX format and MNIST, CSV tables, scalers, one-hot
//! encoding and seeded splits.

pub mod csv;
pub mod idx;
pub mod mnist;
pub mod preprocessing;
