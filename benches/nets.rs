//! `forward_batch` of the five benchmark networks of issue 4 (random weights from `seeded(42)`)
//! at batch 1 and batch 64, on one thread.
//!
//! ```text
//! cargo bench --bench nets                 # all ten cells, about 40 s
//! cargo bench --bench nets -- nets/vgg     # one network
//! ```
//!
//! Throughput is `2 · MACS · batch` flops per call (`Model::MACS` counts one sample), so
//! criterion's "elem/s" column reads as flop/s (`Gelem/s` = GFLOP/s). The runtime is pinned to
//! one thread with `cnn::set_num_threads(1)` so that figures do not depend on how busy the other
//! cores are; `examples/bench_nets.rs` and `bench/peers.py` measure 2 threads and the peers.
//!
//! Each cell runs 10 samples after a short warm-up. Batch-64 cells use flat sampling (the same
//! number of calls per sample), so a cell costs at least 10 calls: about 2 s for `vgg` and 10 s
//! for `stem224`; criterion warns that it cannot finish in the target time, which is expected.

use std::hint::black_box;
use std::time::Duration;

use cnn::ndarray::Array4;
use cnn::{cnn, Model};
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};

cnn! {
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
}

/// The batch sizes of every network, as in the peers table of `docs/benchmarks.md`.
const BATCHES: [usize; 2] = [1, 64];

/// Group `nets/<name>`: `forward_batch` at each of [`BATCHES`].
fn bench_net<M: Model>(c: &mut Criterion, name: &str) {
    let net = M::seeded(42);
    let [ch, h, w] = M::INPUT_SHAPE;
    let mut group = c.benchmark_group(format!("nets/{name}"));
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    for batch in BATCHES {
        let x = Array4::from_shape_fn((batch, ch, h, w), |(n, c, y, x)| {
            (((n * 31 + c * 17 + y * 7 + x * 3) % 29) as f32 / 14.0) - 1.0
        });
        group.sampling_mode(if batch > 1 {
            SamplingMode::Flat
        } else {
            SamplingMode::Auto
        });
        group.throughput(Throughput::Elements((2 * M::MACS * batch) as u64));
        group.bench_function(format!("batch{batch}"), |b| {
            b.iter(|| black_box(net.forward_batch(black_box(x.view())).expect("input shape")))
        });
    }
    group.finish();
}

/// Every network, one thread.
fn nets(c: &mut Criterion) {
    cnn::set_num_threads(1);
    bench_net::<Tiny>(c, "tiny");
    bench_net::<Lenet5>(c, "lenet5");
    bench_net::<Vgg>(c, "vgg");
    bench_net::<Stem224>(c, "stem224");
    bench_net::<Mobile>(c, "mobile");
}

criterion_group!(benches, nets);
criterion_main!(benches);
