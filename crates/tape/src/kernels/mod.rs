//! CPU kernels as plain functions over slices.
//!
//! The tape's operations and the fused layer passes of `kiln` call these same functions,
//! so each piece of arithmetic exists once. Every kernel checks the lengths it is given
//! and returns an error rather than panicking.

pub mod activation;
pub mod conv;
pub mod conv1d;
mod conv_direct;
pub mod conv_pool;
pub mod elementwise;
pub mod gemm;
pub mod isa;
pub mod layout;
pub mod lstm;
pub mod parallel;
pub mod pool;
pub mod reduce;
pub mod sgemm;
pub mod simd;

pub use activation::{
    Activation, log_softmax, log_softmax_backward, sigmoid, softmax, softmax_backward,
};
pub use conv::{
    Conv2dGeometry, Padding, col2im, conv2d_backward, conv2d_forward, im2col, window_output,
};
pub use conv_pool::{conv2d_maxpool2_forward, conv2d_maxpool2_kernel_grad};
pub use conv1d::{Conv1dGeometry, conv1d_backward, conv1d_forward};
pub use elementwise::{broadcast_binary, sum_to_shape};
pub use gemm::{PackedB, Strided, Trans, gemm, gemm_packed, gemm_strided};
pub use layout::{concat, gather_rows, permute, scatter_add_rows, slice, slice_backward, split};
pub use pool::{
    Pool2dGeometry, avg_pool2d_backward, avg_pool2d_forward, global_avg_pool2d_backward,
    global_avg_pool2d_forward, global_max_pool_backward, global_max_pool_forward,
    max_pool_2x2_winners, max_pool2d_backward, max_pool2d_backward_from_values, max_pool2d_forward,
};
pub use reduce::{Reduce, argmax_all, argmax_axis, reduce_all, reduce_axis};
