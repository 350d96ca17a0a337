//! `forward_batch` of the seven benchmark networks (random weights from `seeded(42)`)
//! at batch 1 and batch 64, on one thread. The networks are declared in `bench/src/lib.rs`.
//!
//! ```text
//! cargo bench --bench nets                 # all ten cells, about 40 s
//! cargo bench --bench nets -- nets/vgg     # one network
//! ```
//!
//! Throughput is `2 · MACS · batch` flops per call (`Model::MACS` counts one sample), so
//! criterion's "elem/s" column reads as flop/s (`Gelem/s` = GFLOP/s). The runtime is pinned to
//! one thread with `cnn::set_num_threads(1)` so that figures do not depend on how busy the other
//! cores are; the `bench_nets` binary and `bench/peers.py` measure 2 threads and the peers.
//!
//! Each cell runs 10 samples after a short warm-up. Batch-64 cells use flat sampling (the same
//! number of calls per sample), so a cell costs at least 10 calls: about 2 s for `vgg` and 10 s
//! for `stem224`; criterion warns that it cannot finish in the target time, which is expected.

use std::hint::black_box;
use std::time::Duration;

use cnn::ndarray::Array4;
use cnn::Model;
use cnn_bench::{with_net, WithNet, NETS};
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};

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

/// [`bench_net`] as a [`WithNet`].
struct Bench<'a>(&'a mut Criterion);

impl WithNet for Bench<'_> {
    type Output = ();
    fn run<M: cnn::Train>(self, name: &str) {
        bench_net::<M>(self.0, name)
    }
}

/// Every network, one thread.
fn nets(c: &mut Criterion) {
    cnn::set_num_threads(1);
    for name in NETS {
        with_net(name, Bench(c)).expect("a name from NETS");
    }
}

criterion_group!(benches, nets);
criterion_main!(benches);
