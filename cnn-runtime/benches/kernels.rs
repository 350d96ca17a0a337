//! Kernel benchmarks, each next to a naive baseline in the same group.
//!
//! Throughput is `2·M·N·K` flops of the equivalent GEMM, so criterion reports GFlop/s.

use std::hint::black_box;

use cnn_runtime::ops::conv2d::{conv2d, Conv2dParams};
use cnn_runtime::shape::out_len;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn conv_params(c_in: usize, c_out: usize, hw: usize, k: usize, p: usize) -> Conv2dParams {
    let o = out_len(hw, k, 1, p, 1, false).expect("the kernel fits the input");
    Conv2dParams {
        c_in,
        c_out,
        groups: 1,
        kernel: [k, k],
        stride: [1, 1],
        padding: [p, p],
        dilation: [1, 1],
        in_hw: [hw, hw],
        out_hw: [o, o],
    }
}

/// Direct convolution, one sample, no groups: the textbook seven loops minus the batch.
fn naive_conv(p: &Conv2dParams, x: &[f32], w: &[f32], b: &[f32], out: &mut [f32]) {
    let [kh, kw] = p.kernel;
    let [h, wd] = p.in_hw;
    let [oh, ow] = p.out_hw;
    for o in 0..p.c_out {
        for y in 0..oh {
            for xo in 0..ow {
                let mut acc = b[o];
                for c in 0..p.c_in {
                    for i in 0..kh {
                        for j in 0..kw {
                            let iy = (y + i).wrapping_sub(p.padding[0]);
                            let ix = (xo + j).wrapping_sub(p.padding[1]);
                            if iy < h && ix < wd {
                                acc += x[(c * h + iy) * wd + ix]
                                    * w[((o * p.c_in + c) * kh + i) * kw + j];
                            }
                        }
                    }
                }
                out[(o * oh + y) * ow + xo] = acc;
            }
        }
    }
}

fn bench_conv(c: &mut Criterion) {
    let p = conv_params(3, 16, 32, 3, 1);
    let x: Vec<f32> = (0..p.in_len())
        .map(|i| (i % 17) as f32 * 0.1 - 0.8)
        .collect();
    let w: Vec<f32> = (0..p.c_out * p.fan_in())
        .map(|i| (i % 13) as f32 * 0.05 - 0.3)
        .collect();
    let b = vec![0.1; p.c_out];
    let mut out = vec![0.0; p.out_len()];
    let mut scratch = Vec::new();
    // GEMM view: M = c_out, N = OH·OW, K = c_in·KH·KW.
    let (m, n, k) = (p.c_out, p.out_hw[0] * p.out_hw[1], p.fan_in());

    let mut group = c.benchmark_group("conv2d/3x32x32-16/k3p1");
    group.throughput(Throughput::Elements((2 * m * n * k) as u64));
    group.bench_function("im2col+sgemm", |bench| {
        bench.iter(|| {
            conv2d(
                &p,
                1,
                black_box(&x),
                black_box(&w),
                Some(&b),
                &mut out,
                &mut scratch,
            );
            black_box(&out);
        })
    });
    group.bench_function("naive", |bench| {
        bench.iter(|| {
            naive_conv(&p, black_box(&x), black_box(&w), &b, &mut out);
            black_box(&out);
        })
    });
    group.finish();
}

criterion_group!(benches, bench_conv);
criterion_main!(benches);
