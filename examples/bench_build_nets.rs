//! The five benchmark networks of the performance issue, for timing how long the code `cnn!`
//! generates takes to compile. `bench_build_empty` is the same program without the networks;
//! `docs/benchmarks.md` records both build times.
//!
//! `cargo run --release --example bench_build_nets`

use cnn::{cnn, Model};

cnn! {
    /// `tiny`: the design card's network.
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

    /// `vgg`: six 3x3 convolutions with batch norm on CIFAR-sized input.
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

    /// `mobile`: depthwise-separable blocks.
    pub struct Mobile {
        input(3, 64, 64)
        conv(3 -> 32, k3, s2, p1) bn relu
        conv(32 -> 32, k3, p1, g32) bn relu conv(32 -> 64, k1) bn relu
        conv(64 -> 64, k3, s2, p1, g64) bn relu conv(64 -> 128, k1) bn relu
        gap fc(10)
    }
}

/// A zero sample on the heap (a 3x224x224 array is 588 KiB).
fn zeros<const C: usize, const H: usize, const W: usize>() -> Box<[[[f32; W]; H]; C]> {
    vec![[[0.0f32; W]; H]; C]
        .into_boxed_slice()
        .try_into()
        .expect("the vector has C planes")
}

/// Builds `M` with seeded weights, runs one sample, prints its size.
fn report<M: Model>(x: Box<M::Input>)
where
    M::Output: AsRef<[f32]>,
{
    let net = M::seeded(0);
    let y = net.forward(&x);
    let sum: f32 = y.as_ref().iter().sum();
    println!(
        "{:<8} {:>9} params {:>12} MACs  output {:?}, sum {sum:.6}",
        M::NAME,
        M::PARAMS,
        M::MACS,
        M::OUTPUT_SHAPE
    );
}

fn main() {
    report::<Tiny>(zeros());
    report::<Lenet5>(zeros());
    report::<Vgg>(zeros());
    report::<Stem224>(zeros());
    report::<Mobile>(zeros());
}
