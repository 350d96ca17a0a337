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
//! Every network can also be trained ([`Train`]): a train-mode forward pass, a backward pass
//! generated for its layers, PyTorch's losses ([`Loss`], [`mse`]) and optimizers ([`optim`]).
//!
//! ```
//! use cnn::{cnn, optim::Sgd, Loss, Model, Train};
//! use cnn::ndarray::{Array1, Array4};
//!
//! cnn! {
//!     struct Small { input(1, 6, 6) conv(1 -> 4, k3) bn relu maxpool(2) fc(3) }
//! }
//! let mut net = Small::seeded(0);
//! let mut opt = Sgd::new(0.1).momentum(0.9);
//! let x = Array4::from_shape_fn((4, 1, 6, 6), |(n, _, h, w)| ((n * 7 + h * 3 + w) % 5) as f32);
//! let y = Array1::from(vec![0, 1, 2, 1]);
//! let first = net.train_step(x.view(), y.view(), Loss::CrossEntropy, &mut opt).unwrap();
//! let mut last = first;
//! for _ in 0..20 {
//!     last = net.train_step(x.view(), y.view(), Loss::CrossEntropy, &mut opt).unwrap();
//! }
//! assert!(last < first / 2.0);
//!
//! // Lower level, for a loss of your own: gradients by `state_dict` key.
//! let (out, cache) = net.forward_train(x.view(), false).unwrap();
//! let (_, d_out) = Loss::CrossEntropy.compute(out.view(), y.view()).unwrap();
//! let grads = net.backward(&cache, d_out.view()).unwrap();
//! assert_eq!(grads.shape("0.weight"), Some(&[4, 1, 3, 3][..]));
//! assert_eq!(grads.get("0.weight").map(<[f32]>::len), Some(36));
//! assert_eq!(grads.get("no.such.key"), None);
//!
//! // Fine-tuning the classifier only: layers 0 to 3 keep their weights.
//! net.freeze(0..4).unwrap();
//! let before = net.layer_0.clone();
//! net.train_step(x.view(), y.view(), Loss::CrossEntropy, &mut opt).unwrap();
//! assert_eq!(net.layer_0, before);
//! ```
//!
//! # Precision
//!
//! A network computes in f32, PyTorch's numbers, unless told otherwise: `#[precision(bf16)]`
//! on the struct, or [`Model::set_precision`] at run time, rounds the operands of its
//! convolutions' and linear layers' products to bfloat16 and sums in f32 ([`Precision`]),
//! about twice the speed of those products on a CPU with AVX512_BF16, the same results
//! elsewhere.
//!
//! ```
//! use cnn::{cnn, Model, Precision};
//! cnn! {
//!     #[precision(bf16)]
//!     struct Fast { input(16, 8, 8) conv(16 -> 16, k3, p1) relu fc(10) }
//! }
//! let net = Fast::seeded(0);
//! assert_eq!(net.precision(), Precision::Bf16);
//! let exact = net.clone().with_precision(Precision::F32);
//! let x = [[[0.5f32; 8]; 8]; 16];
//! let (fast, slow) = (net.forward(&x), exact.forward(&x));
//! assert!(fast.iter().zip(&slow).all(|(a, b)| (a - b).abs() < 0.05 * (1.0 + b.abs())));
//! ```
//!
//! The layer language is described in `docs/dsl.md`, every compile error in `docs/errors.md`.

//!
//! Without the default `std` feature the crate is `#![no_std]` and needs no allocator: a
//! network with `#[weights]` runs from its static [`EMBEDDED`](docs/embedded.md) value with
//! `forward_in` on the caller's slices (see `docs/embedded.md`). `#[budget(ram = "64K",
//! flash = "256K", macs = 5_000_000)]` on a network makes an overrun of its exact RAM
//! (`Net::RAM_BYTES`), its flash (`Net::FLASH_BYTES`: weights plus an x86-64 code estimate) or
//! its MACs a compile error (`docs/dsl.md`, section Budgets).

#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use cnn_macros::cnn;
#[cfg(feature = "std")]
pub use cnn_runtime::{
    mse, ndarray, num_threads, optim, set_num_threads, Error, Grads, LayerInfo, Loss, Model,
    ParamVisitor, Parameters, Summary, Train, TrainCache, TrainLayout, Workspace, WorkspaceLayout,
};
pub use cnn_runtime::{ParsePrecisionError, Precision, SliceError, SliceModel};

/// Paths used by code that `cnn!` generates; not a public API.
#[doc(hidden)]
pub mod __private {
    pub use cnn_runtime::__private::*;
}
