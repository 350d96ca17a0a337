//! The seven benchmark networks, for timing how long the code `cnn!`
//! generates takes to compile. `bench_build_empty` is the same program without the networks;
//! `docs/benchmarks.md` records both build times.
//!
//! The networks' declaration is `cnn_bench::declare_nets!` (`bench/src/lib.rs`); this binary
//! expands that macro itself, so an incremental build of it after
//! `touch bench/src/bin/bench_build_nets.rs` expands `cnn!` and compiles the generated code,
//! while the library it uses is already built.
//!
//! `cargo run --release --bin bench_build_nets`

use cnn::Model;

// The seven networks, expanded here rather than imported from the library, so that building this
// binary compiles the code `cnn!` generates for them.
cnn_bench::declare_nets!();

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
    report::<Resnet18>(zeros());
    report::<Mobilenetv2>(zeros());
}
