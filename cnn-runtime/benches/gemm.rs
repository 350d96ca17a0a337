//! SGEMM on the GEMM shapes of the vgg and stem224 benchmark nets: ours against
//! `matrixmultiply` (through `ndarray::linalg::general_mat_mul`) in the same group.
//!
//! Names are `gemm/MxKxN`; throughput is `2·M·N·K` flops, so criterion reports GFLOP/s. Ours is
//! reached through a 1×1 convolution, which is exactly one `sgemm(c_out, c_in, H·W)` call. Set
//! `CNN_SIMD=avx512|avx2|baseline` to pin our path (the label shows it; `baseline` is
//! `matrixmultiply`).
//!
//! `cargo bench -p cnn-runtime --bench gemm`

use std::hint::black_box;
use std::time::Duration;

use cnn_runtime::__private::kernels::{im2col, Epilogue};
use cnn_runtime::__private::Conv2dParams;
use cnn_runtime::ndarray::{linalg::general_mat_mul, Array2};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// `(M, K, N)`: vgg's six im2col convolutions, stem224's three, then the GEMMs of Winograd
/// F(2×2,3×3) (`M` = 2×2 output tiles, `K` = `c_in`, `N` = `c_out`, 16 per convolution) for vgg's
/// five 3×3 convolutions with ≥ 16 input channels and stem224's two.
const SHAPES: &[(usize, usize, usize)] = &[
    (64, 27, 1024),
    (64, 576, 1024),
    (128, 576, 256),
    (128, 1152, 256),
    (256, 1152, 64),
    (256, 2304, 64),
    (64, 147, 12544),
    (128, 576, 3136),
    (256, 1152, 784),
    (256, 64, 64),
    (64, 64, 128),
    (64, 128, 128),
    (16, 128, 256),
    (16, 256, 256),
    (784, 64, 128),
    (196, 128, 256),
];

/// `c_out = m` filters of a 1×1 convolution over `k` channels of a `1 × n` image.
fn one_by_one(m: usize, k: usize, n: usize) -> Conv2dParams {
    Conv2dParams {
        c_in: k,
        c_out: m,
        groups: 1,
        kernel: [1, 1],
        stride: [1, 1],
        padding: [0, 0],
        dilation: [1, 1],
        in_hw: [1, n],
        out_hw: [1, n],
    }
}

fn values(len: usize, seed: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 7 + seed) % 23) as f32 * 0.05 - 0.5)
        .collect()
}

fn bench_gemm(c: &mut Criterion) {
    let ours = format!(
        "cnn-{}",
        std::env::var("CNN_SIMD").unwrap_or_else(|_| "auto".into())
    );
    for &(m, k, n) in SHAPES {
        let (a, b) = (values(m * k, 1), values(k * n, 2));
        let mut group = c.benchmark_group(format!("gemm/{m}x{k}x{n}"));
        group.throughput(Throughput::Elements((2 * m * n * k) as u64));
        group.warm_up_time(Duration::from_millis(500));
        group.measurement_time(Duration::from_secs(2));

        let p = one_by_one(m, k, n);
        let mut out = vec![0.0; m * n];
        let mut scratch = Vec::new();
        group.bench_function(&ours, |bench| {
            bench.iter(|| {
                // input [k, 1, n] is B, weight [m, k, 1, 1] is A
                im2col::conv2d(
                    &p,
                    1,
                    black_box(&b),
                    black_box(&a),
                    None,
                    Epilogue::default(),
                    1,
                    &mut out,
                    &mut scratch,
                );
                black_box(&out);
            })
        });

        let a2 = Array2::from_shape_vec((m, k), a.clone()).expect("m·k values");
        let b2 = Array2::from_shape_vec((k, n), b.clone()).expect("k·n values");
        let mut c2 = Array2::<f32>::zeros((m, n));
        group.bench_function("matrixmultiply", |bench| {
            bench.iter(|| {
                general_mat_mul(1.0, black_box(&a2), black_box(&b2), 0.0, &mut c2);
                black_box(&c2);
            })
        });
        group.finish();
    }
}

criterion_group!(benches, bench_gemm);
criterion_main!(benches);
