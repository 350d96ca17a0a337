//! The benchmark networks of the performance issue (issue 4) and the drivers that time them.
//! Not published; nothing here is part of the `cnn` API.
//!
//! The seven networks are declared once, in [`declare_nets!`], and used by:
//!
//! - `src/bin/bench_nets.rs`: latency of `forward_batch`, one JSON line per cell; also prints the
//!   PyTorch twins for `bench/peers.py` (`cargo run --release --bin bench_nets -- --help`);
//! - `src/bin/bench_train.rs`: time of one training step (`Train::train_step`, cross-entropy,
//!   SGD with momentum), one JSON line per cell, for `bench/peers_train.py`;
//! - `benches/nets.rs`: the same networks under criterion (`cargo bench --bench nets`);
//! - `src/bin/memory.rs`: peak heap of `forward_batch` on `vgg` (`docs/reliability.md`);
//! - `src/bin/bench_build_nets.rs`: how long the code `cnn!` generates takes to compile, against
//!   `src/bin/bench_build_empty.rs` (`docs/benchmarks.md`). It expands [`declare_nets!`] itself,
//!   so that its own build compiles the generated code.
//!
//! `benches/embedded.rs` times `embedded()` on the digits model (`docs/pytorch.md`).

use cnn::Train;

/// Declares the seven benchmark networks, `Tiny`, `Lenet5`, `Vgg`, `Stem224`, `Mobile`,
/// `Resnet18` and `Mobilenetv2`, in the
/// invoking module (ResNet-18 through [`declare_resnet18!`]). The invoking crate needs `cnn` as a
/// dependency.
///
/// This crate expands it once at its root (so `cnn_bench::Vgg` and the others exist);
/// `bench_build_nets` expands it again to time the compilation of the generated code.
#[macro_export]
macro_rules! declare_nets {
    () => {
        $crate::declare_resnet18!();
        ::cnn::cnn! {
            /// `tiny`: one conv block and a classifier.
            pub struct Tiny {
                input(3, 32, 32)
                conv(3 -> 16, k3, p1) bn relu maxpool(2) fc(10)
            }
            /// `lenet5`: LeNet-5 with ReLU and max pooling.
            pub struct Lenet5 {
                input(1, 28, 28)
                conv(1 -> 6, k5, p2) relu maxpool(2) conv(6 -> 16, k5) relu maxpool(2)
                fc(120) relu fc(84) relu fc(10)
            }
            /// `vgg`: three VGG blocks on CIFAR-sized input.
            pub struct Vgg {
                input(3, 32, 32)
                conv(3 -> 64, k3, p1) bn relu conv(64 -> 64, k3, p1) bn relu maxpool(2)
                conv(64 -> 128, k3, p1) bn relu conv(128 -> 128, k3, p1) bn relu maxpool(2)
                conv(128 -> 256, k3, p1) bn relu conv(256 -> 256, k3, p1) bn relu maxpool(2)
                fc(10)
            }
            /// `stem224`: a ResNet-style stem on ImageNet-sized input.
            pub struct Stem224 {
                input(3, 224, 224)
                conv(3 -> 64, k7, s2, p3) bn relu maxpool(k3, s2, p1)
                conv(64 -> 128, k3, p1) bn relu maxpool(2)
                conv(128 -> 256, k3, p1) bn relu gap fc(1000)
            }
            /// `mobile`: MobileNet-style depthwise-separable blocks.
            pub struct Mobile {
                input(3, 64, 64)
                conv(3 -> 32, k3, s2, p1) bn relu conv(32 -> 32, k3, p1, g32) bn relu
                conv(32 -> 64, k1) bn relu conv(64 -> 64, k3, s2, p1, g64) bn relu
                conv(64 -> 128, k1) bn relu gap fc(10)
            }
            /// `mobilenetv2`: torchvision's MobileNetV2, width 1.0 (inverted residuals, relu6).
            pub struct Mobilenetv2 {
                input(3, 224, 224)
                conv(3 -> 32, k3, s2, p1, nobias) bn relu6
                conv(32 -> 32, k3, s1, p1, g32, nobias) bn relu6 conv(32 -> 16, k1, nobias) bn
                conv(16 -> 96, k1, nobias) bn relu6 conv(96 -> 96, k3, s2, p1, g96, nobias) bn relu6 conv(96 -> 24, k1, nobias) bn
                residual { conv(24 -> 144, k1, nobias) bn relu6 conv(144 -> 144, k3, s1, p1, g144, nobias) bn relu6 conv(144 -> 24, k1, nobias) bn }
                conv(24 -> 144, k1, nobias) bn relu6 conv(144 -> 144, k3, s2, p1, g144, nobias) bn relu6 conv(144 -> 32, k1, nobias) bn
                residual { conv(32 -> 192, k1, nobias) bn relu6 conv(192 -> 192, k3, s1, p1, g192, nobias) bn relu6 conv(192 -> 32, k1, nobias) bn }
                residual { conv(32 -> 192, k1, nobias) bn relu6 conv(192 -> 192, k3, s1, p1, g192, nobias) bn relu6 conv(192 -> 32, k1, nobias) bn }
                conv(32 -> 192, k1, nobias) bn relu6 conv(192 -> 192, k3, s2, p1, g192, nobias) bn relu6 conv(192 -> 64, k1, nobias) bn
                residual { conv(64 -> 384, k1, nobias) bn relu6 conv(384 -> 384, k3, s1, p1, g384, nobias) bn relu6 conv(384 -> 64, k1, nobias) bn }
                residual { conv(64 -> 384, k1, nobias) bn relu6 conv(384 -> 384, k3, s1, p1, g384, nobias) bn relu6 conv(384 -> 64, k1, nobias) bn }
                residual { conv(64 -> 384, k1, nobias) bn relu6 conv(384 -> 384, k3, s1, p1, g384, nobias) bn relu6 conv(384 -> 64, k1, nobias) bn }
                conv(64 -> 384, k1, nobias) bn relu6 conv(384 -> 384, k3, s1, p1, g384, nobias) bn relu6 conv(384 -> 96, k1, nobias) bn
                residual { conv(96 -> 576, k1, nobias) bn relu6 conv(576 -> 576, k3, s1, p1, g576, nobias) bn relu6 conv(576 -> 96, k1, nobias) bn }
                residual { conv(96 -> 576, k1, nobias) bn relu6 conv(576 -> 576, k3, s1, p1, g576, nobias) bn relu6 conv(576 -> 96, k1, nobias) bn }
                conv(96 -> 576, k1, nobias) bn relu6 conv(576 -> 576, k3, s2, p1, g576, nobias) bn relu6 conv(576 -> 160, k1, nobias) bn
                residual { conv(160 -> 960, k1, nobias) bn relu6 conv(960 -> 960, k3, s1, p1, g960, nobias) bn relu6 conv(960 -> 160, k1, nobias) bn }
                residual { conv(160 -> 960, k1, nobias) bn relu6 conv(960 -> 960, k3, s1, p1, g960, nobias) bn relu6 conv(960 -> 160, k1, nobias) bn }
                conv(160 -> 960, k1, nobias) bn relu6 conv(960 -> 960, k3, s1, p1, g960, nobias) bn relu6 conv(960 -> 320, k1, nobias) bn
                conv(320 -> 1280, k1, nobias) bn relu6
                gap dropout(0.2) fc(1000)
            }
        }
    };
}

/// Declares `Resnet18`, torchvision's ResNet-18, in the invoking module: one of
/// [`declare_nets!`]'s networks, and alone the network `bench_build_resnet18` compiles.
#[macro_export]
macro_rules! declare_resnet18 {
    () => {
        ::cnn::cnn! {
        /// `resnet18`: torchvision's ResNet-18 (basic blocks, projection shortcuts).
        pub struct Resnet18 {
            input(3, 224, 224)
            conv(3 -> 64, k7, s2, p3, nobias) bn relu maxpool(k3, s2, p1)
            residual { conv(64 -> 64, k3, p1, nobias) bn relu conv(64 -> 64, k3, p1, nobias) bn } relu
            residual { conv(64 -> 64, k3, p1, nobias) bn relu conv(64 -> 64, k3, p1, nobias) bn } relu
            residual(shortcut { conv(64 -> 128, k1, s2, nobias) bn }) {
                conv(64 -> 128, k3, s2, p1, nobias) bn relu conv(128 -> 128, k3, p1, nobias) bn
            } relu
            residual { conv(128 -> 128, k3, p1, nobias) bn relu conv(128 -> 128, k3, p1, nobias) bn } relu
            residual(shortcut { conv(128 -> 256, k1, s2, nobias) bn }) {
                conv(128 -> 256, k3, s2, p1, nobias) bn relu conv(256 -> 256, k3, p1, nobias) bn
            } relu
            residual { conv(256 -> 256, k3, p1, nobias) bn relu conv(256 -> 256, k3, p1, nobias) bn } relu
            residual(shortcut { conv(256 -> 512, k1, s2, nobias) bn }) {
                conv(256 -> 512, k3, s2, p1, nobias) bn relu conv(512 -> 512, k3, p1, nobias) bn
            } relu
            residual { conv(512 -> 512, k3, p1, nobias) bn relu conv(512 -> 512, k3, p1, nobias) bn } relu
            gap fc(1000)
        }
        }
    };
}

declare_nets!();

/// The networks' names, in the order the drivers and tables use.
pub const NETS: [&str; 7] = [
    "tiny",
    "lenet5",
    "vgg",
    "stem224",
    "mobile",
    "resnet18",
    "mobilenetv2",
];

/// Something to do with one benchmark network, generic over its type; see [`with_net`].
pub trait WithNet {
    /// What [`WithNet::run`] returns.
    type Output;
    /// Runs on the network `M`, whose name in [`NETS`] is `name`. Every `cnn!` network
    /// implements [`Train`] (and so [`cnn::Model`]), so one bound serves the inference and the
    /// training drivers.
    fn run<M: Train>(self, name: &str) -> Self::Output;
}

/// Calls `f.run::<M>(name)` with `M` the network named `name`; `None` if `name` is not in
/// [`NETS`].
pub fn with_net<F: WithNet>(name: &str, f: F) -> Option<F::Output> {
    Some(match name {
        "tiny" => f.run::<Tiny>(name),
        "lenet5" => f.run::<Lenet5>(name),
        "vgg" => f.run::<Vgg>(name),
        "stem224" => f.run::<Stem224>(name),
        "mobile" => f.run::<Mobile>(name),
        "resnet18" => f.run::<Resnet18>(name),
        "mobilenetv2" => f.run::<Mobilenetv2>(name),
        _ => return None,
    })
}

/// `--batch` / `--threads` values of the drivers: comma-separated positive integers.
///
/// # Errors
/// A value that is not a positive integer, naming `flag`.
pub fn parse_list(flag: &str, v: &str) -> Result<Vec<usize>, String> {
    v.split(',')
        .map(|x| match x.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("`{flag}` expects positive integers, found `{v}`")),
        })
        .collect()
}

/// `--net` values of the drivers: comma-separated names of [`NETS`], or `all` for `all`.
///
/// # Errors
/// An unknown name.
pub fn parse_nets(v: &str, all: &[&str]) -> Result<Vec<String>, String> {
    if v == "all" {
        return Ok(all.iter().map(|s| s.to_string()).collect());
    }
    v.split(',')
        .map(|x| {
            if NETS.contains(&x) {
                Ok(x.to_string())
            } else {
                Err(format!("unknown net `{x}`"))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Name;
    impl WithNet for Name {
        type Output = &'static str;
        fn run<M: Train>(self, _: &str) -> &'static str {
            M::NAME
        }
    }

    #[test]
    fn every_name_selects_its_network() {
        for name in NETS {
            assert_eq!(
                with_net(name, Name).map(str::to_lowercase),
                Some(name.to_string())
            );
        }
        assert_eq!(with_net("resnet", Name), None);
    }
}
