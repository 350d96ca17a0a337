//! One module per operation: a parameter descriptor, the batch forward kernel, and its tests.
//! Convolution is a folder, with its algorithms as children (see [`conv`]).

pub mod activation;
pub mod batchnorm;
pub mod conv;
pub mod conv_transpose;
pub mod linear;
pub mod pool;
pub mod upsample;
