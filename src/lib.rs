//! Convolutional networks declared in Rust, shape-checked by the compiler, with PyTorch-exact
//! inference on the CPU.
//!
//! ```
//! use cnn::{cnn, Model};
//!
//! cnn! {
//!     /// The network from the README.
//!     pub struct TinyNet {
//!         input(3, 32, 32)
//!         conv(3 -> 16, k3, p1) bn relu maxpool(2) fc(10)
//!     }
//! }
//!
//! let net = TinyNet::seeded(0);
//! let logits: [f32; 10] = net.forward(&[[[0.5; 32]; 32]; 3]);
//! assert_eq!(logits.len(), 10);
//! assert_eq!(TinyNet::PARAMS, 3 * 16 * 9 + 16 + 2 * 16 + 4096 * 10 + 10);
//! ```
//!
//! A shape mistake is a compile error pointing at the layer:
//!
//! ```compile_fail
//! cnn::cnn! {
//!     struct Broken {
//!         input(3, 32, 32)
//!         conv(3 -> 16, k3) conv(8 -> 8, k3)
//!     }
//! }
//! ```
//!
//! The layer language is described in `docs/dsl.md`, every compile error in `docs/errors.md`.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use cnn_macros::cnn;
pub use cnn_runtime::{
    ndarray, num_threads, optim, set_num_threads, Error, LayerInfo, Model, Summary, Workspace,
    WorkspaceLayout,
};

/// Paths used by code that `cnn!` generates; not a public API.
#[doc(hidden)]
pub mod __private {
    pub use cnn_runtime::__private::*;
}
