//! Cost of embedded weights: `Digits::EMBEDDED` is a constant whose weights the macro laid out at
//! compile time as static read-only data (`__CORE` / `__STD`, see `cnn-macros/src/prepare.rs`), so
//! reaching it costs nothing, neither on the first use nor later. Before that, `embedded()`
//! decoded the embedded safetensors bytes on its first call, which is what `from_safetensors` on
//! the same bytes measures here. So the bench compares:
//!
//! - `from_safetensors/digits`: decoding the file (the old first-call cost);
//! - `embedded_access/digits`: reading `Digits::EMBEDDED` (a reference to static data);
//! - `forward_in/embedded/digits` and `forward_in/decoded/digits`: one sample through
//!   `forward_in` in the caller's buffers, on the static network and on a decoded one (the
//!   static one reads prepared layouts; a decoded one prepares them on its first forward and
//!   keeps them, so after the warm-up both run the same kernels).
//!
//! `cargo bench --bench embedded` (the `digits` model of `examples/digits.rs`; `#[weights]` paths
//! are relative to this package's directory, `bench/`). Build time and binary size of embedded
//! weights, for larger networks too, are measured by `bench/build_embedded.sh`.

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
    group.bench_function("from_safetensors/digits", |b| {
        b.iter(|| Digits::from_safetensors(black_box(BYTES)).unwrap())
    });
    group.throughput(Throughput::Elements(1));
    group.bench_function("embedded_access/digits", |b| {
        b.iter(|| black_box(Digits::EMBEDDED))
    });
    let input = [0.5f32; Digits::INPUT_LEN];
    let mut out = [0f32; Digits::OUTPUT_LEN];
    let mut ws = vec![0f32; Digits::WORKSPACE_LEN];
    group.bench_function("forward_in/embedded/digits", |b| {
        b.iter(|| {
            black_box(Digits::EMBEDDED)
                .forward_in(black_box(&input), &mut out, &mut ws)
                .unwrap()
        })
    });
    let decoded = Digits::from_safetensors(BYTES).unwrap();
    group.bench_function("forward_in/decoded/digits", |b| {
        b.iter(|| {
            black_box(&decoded)
                .forward_in(black_box(&input), &mut out, &mut ws)
                .unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, embedded);
criterion_main!(benches);
