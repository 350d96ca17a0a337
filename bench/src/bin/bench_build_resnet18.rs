//! ResNet-18 alone, for timing how long the code `cnn!` generates for it takes to compile
//! (`docs/benchmarks.md`), against `bench_build_empty`. It expands
//! `cnn_bench::declare_resnet18!` itself, so an incremental build after
//! `touch bench/src/bin/bench_build_resnet18.rs` expands `cnn!` and compiles the generated code.
//!
//! `cargo run --release --bin bench_build_resnet18`

use cnn::Model;

cnn_bench::declare_resnet18!();

fn main() {
    let x: Box<[[[f32; 224]; 224]; 3]> = vec![[[0.0f32; 224]; 224]; 3]
        .into_boxed_slice()
        .try_into()
        .expect("the vector has 3 planes");
    let net = Resnet18::seeded(0);
    let y = net.forward(&x);
    let sum: f32 = y.iter().sum();
    println!(
        "{} {} params {} MACs, output sum {sum:.6}",
        Resnet18::NAME,
        Resnet18::PARAMS,
        Resnet18::MACS
    );
}
