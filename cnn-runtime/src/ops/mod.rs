//! One file per operation: a parameter descriptor, the batch forward kernel, and its tests.

pub mod activation;
pub mod batchnorm;
pub mod conv2d;
mod depthwise;
pub mod direct;
pub mod linear;
pub mod pool;
pub mod winograd;
