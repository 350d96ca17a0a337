//! Cost of `embedded()`: the first call decodes the embedded safetensors bytes once (measured
//! here as `from_safetensors` on the same bytes, which is exactly what the first call runs);
//! later calls return the cached reference.
//!
//! `cargo bench --bench embedded` (the `digits` model of `examples/digits.rs`; `#[weights]` paths
//! are relative to this package's directory, `bench/`)

use cnn::{cnn, Model};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;

cnn! {
    #[weights = "../models/digits.safetensors"]
    struct Digits {
        input(1, 8, 8)
        conv(1 -> 16, k3, p1) relu conv(16 -> 32, k3, p1) relu maxpool(2) fc(64) relu fc(10)
    }
}

const BYTES: &[u8] = include_bytes!("../../models/digits.safetensors");

fn embedded(c: &mut Criterion) {
    let mut group = c.benchmark_group("embedded");
    group.throughput(Throughput::Bytes(BYTES.len() as u64));
    group.bench_function("first_call_decode/digits", |b| {
        b.iter(|| Digits::from_safetensors(black_box(BYTES)).unwrap())
    });
    group.throughput(Throughput::Elements(1));
    Digits::embedded();
    group.bench_function("later_calls/digits", |b| {
        b.iter(|| black_box(Digits::embedded()))
    });
    group.finish();
}

criterion_group!(benches, embedded);
criterion_main!(benches);
