//! One criterion group per kernel, on layer shapes of the five benchmark nets (`tiny`, `lenet5`,
//! `vgg`, `stem224`, `mobile`; declared once in `bench/src/lib.rs`), one sample per call, one thread.
//!
//! ```text
//! cargo bench -p cnn-runtime --bench kernels                 # everything, about 80 s
//! cargo bench -p cnn-runtime --bench kernels -- conv2d/      # one family (a regex on the id)
//! ```
//!
//! Every group sets `Throughput::Elements(flops)`, so criterion's "elem/s" column reads as
//! flop/s (`Gelem/s` = GFLOP/s). The flop counts are nominal:
//!
//! + convolution (im2col + SGEMM, Winograd, depthwise) and linear: `2·MACs` of the direct
//!   computation. Winograd F(2×2,3×3) does fewer multiplications, so its figure is the
//!   *effective* rate, comparable with im2col's in the same group;
//! + pooling: one compare (max) or add (avg) per window tap per output, `out·KH·KW`;
//!   global average pooling: one add per input value;
//! + batch norm (running statistics, folded into a scale and a shift): 2 per value;
//! + activations: 1 per value, whatever the function costs (so `gelu` and `relu` are compared
//!   in values per second).
//!
//! Each benchmark runs 10 samples over about 1 s after a 0.3 s warm-up, so the figures are
//! indicative; lengthen them with criterion's `--measurement-time` for careful comparisons.

use std::hint::black_box;
use std::time::Duration;

use cnn_runtime::__private::kernels::{
    activation, batchnorm, depthwise, direct, im2col, linear, out_len, pool2d, winograd, Epilogue,
};
use cnn_runtime::__private::{
    Activation, BatchNormParams, Conv2dParams, LinearParams, Pool2dParams, PoolKind,
};
use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BatchSize, BenchmarkGroup, Criterion, Throughput,
};

/// A group with the short timing shared by every benchmark of this file and `flops` per call.
fn group<'a>(c: &'a mut Criterion, name: &str, flops: usize) -> BenchmarkGroup<'a, WallTime> {
    let mut group = c.benchmark_group(name);
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(300));
    group.measurement_time(Duration::from_secs(1));
    group.throughput(Throughput::Elements(flops as u64));
    group
}

/// Deterministic values in `[-0.5, 0.6]`.
fn values(len: usize, seed: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 7 + seed) % 23) as f32 * 0.05 - 0.5)
        .collect()
}

/// A square convolution `c_in × hw × hw → c_out` with a `k × k` kernel.
fn conv_params(c_in: usize, c_out: usize, hw: usize, k: usize, s: usize, p: usize) -> Conv2dParams {
    let o = out_len(hw, k, s, p, 1, false).expect("the kernel fits the input");
    Conv2dParams {
        c_in,
        c_out,
        groups: 1,
        kernel: [k, k],
        stride: [s, s],
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

/// What a convolution group runs besides plain im2col + SGEMM.
#[derive(Clone, Copy)]
enum Extra {
    /// The naive seven loops.
    Naive,
    /// Winograd (F(4×4, 3×3), or F(2×2, 3×3) below 12×12 outputs), and im2col + SGEMM with a
    /// fused batch norm and ReLU.
    WinogradAndFused,
    /// Nothing.
    None,
}

/// `conv2d/<net>/<shape>`: im2col + SGEMM (or the direct depthwise kernel, or the plain GEMM of
/// a 1×1 convolution), the direct kernel where it applies, plus the variants of `extra`.
fn bench_conv(c: &mut Criterion, name: &str, p: Conv2dParams, extra: Extra) {
    let x = values(p.in_len(), 1);
    let w = values(p.c_out * p.fan_in(), 2);
    let b = values(p.c_out, 3);
    let mut out = vec![0.0; p.out_len()];
    let mut scratch = Vec::new();

    let mut g = group(c, name, 2 * p.macs());
    let label = if p.is_depthwise() {
        "depthwise"
    } else {
        "im2col+sgemm"
    };
    let kernel = if p.is_depthwise() {
        depthwise::conv2d
    } else {
        im2col::conv2d
    };
    g.bench_function(label, |bench| {
        bench.iter(|| {
            kernel(
                &p,
                1,
                black_box(&x),
                black_box(&w),
                Some(&b),
                Epilogue::default(),
                1,
                &mut out,
                &mut scratch,
            );
            black_box(&out);
        })
    });
    if direct::applies(&p) {
        let packed = direct::pack_weights(&p, &w);
        g.bench_function("direct", |bench| {
            bench.iter(|| {
                direct::conv2d(
                    &p,
                    1,
                    black_box(&x),
                    black_box(&packed),
                    Some(&b),
                    Epilogue::default(),
                    1,
                    &mut out,
                    &mut scratch,
                );
                black_box(&out);
            })
        });
    }
    match extra {
        Extra::Naive => {
            g.bench_function("naive", |bench| {
                bench.iter(|| {
                    naive_conv(&p, black_box(&x), black_box(&w), &b, &mut out);
                    black_box(&out);
                })
            });
        }
        Extra::WinogradAndFused => {
            assert!(winograd::applies(&p), "{name} is not a Winograd shape");
            let u = winograd::transform_weights(&p, &w);
            g.bench_function("winograd", |bench| {
                bench.iter(|| {
                    winograd::conv2d(
                        &p,
                        1,
                        black_box(&x),
                        black_box(&u),
                        Some(&b),
                        Epilogue::default(),
                        1,
                        &mut out,
                        &mut scratch,
                    );
                    black_box(&out);
                })
            });
            let (scale, shift) = (values(p.c_out, 4), values(p.c_out, 5));
            let epilogue = Epilogue {
                affine: Some((&scale, &shift)),
                act: Some(Activation::Relu),
                residual: None,
            };
            g.bench_function("im2col+sgemm+bn+relu", |bench| {
                bench.iter(|| {
                    im2col::conv2d(
                        &p,
                        1,
                        black_box(&x),
                        black_box(&w),
                        Some(&b),
                        epilogue,
                        1,
                        &mut out,
                        &mut scratch,
                    );
                    black_box(&out);
                })
            });
        }
        Extra::None => {}
    }
    g.finish();
}

/// The convolutions: im2col + SGEMM, Winograd, 1×1 and depthwise.
fn bench_convs(c: &mut Criterion) {
    let tiny = conv_params(3, 16, 32, 3, 1, 1);
    bench_conv(c, "conv2d/tiny/3x32x32-16-k3p1", tiny, Extra::Naive);
    let vgg1 = conv_params(3, 64, 32, 3, 1, 1);
    bench_conv(c, "conv2d/vgg/3x32x32-64-k3p1", vgg1, Extra::None);
    let vgg2 = conv_params(64, 64, 32, 3, 1, 1);
    bench_conv(
        c,
        "conv2d/vgg/64x32x32-64-k3p1",
        vgg2,
        Extra::WinogradAndFused,
    );
    let stem3 = conv_params(128, 256, 28, 3, 1, 1);
    bench_conv(
        c,
        "conv2d/stem224/128x28x28-256-k3p1",
        stem3,
        Extra::WinogradAndFused,
    );
    let stem1 = conv_params(3, 64, 224, 7, 2, 3);
    bench_conv(c, "conv2d/stem224/3x224x224-64-k7s2p3", stem1, Extra::None);
    let pointwise = conv_params(32, 64, 32, 1, 1, 0);
    bench_conv(c, "conv2d/mobile/32x32x32-64-k1", pointwise, Extra::None);

    let depthwise = |c: usize, s: usize| Conv2dParams {
        groups: c,
        ..conv_params(c, c, 32, 3, s, 1)
    };
    bench_conv(
        c,
        "depthwise/mobile/32x32x32-k3p1",
        depthwise(32, 1),
        Extra::None,
    );
    bench_conv(
        c,
        "depthwise/mobile/64x32x32-k3s2p1",
        depthwise(64, 2),
        Extra::None,
    );
}

/// `pool/<net>/<shape>`: max and average pooling over the same windows.
fn bench_pool(
    c: &mut Criterion,
    name: &str,
    channels: usize,
    hw: usize,
    k: usize,
    s: usize,
    p: usize,
) {
    let o = out_len(hw, k, s, p, 1, false).expect("the window fits the input");
    let params = |kind| Pool2dParams {
        kind,
        channels,
        kernel: [k, k],
        stride: [s, s],
        padding: [p, p],
        ceil_mode: false,
        in_hw: [hw, hw],
        out_hw: [o, o],
    };
    let max = params(PoolKind::Max);
    let x = values(max.in_len(), 1);
    let mut out = vec![0.0; max.out_len()];
    let flops = if k == hw {
        max.in_len()
    } else {
        max.out_len() * k * k
    };
    let mut g = group(c, name, flops);
    let avg = PoolKind::Avg {
        count_include_pad: true,
    };
    for (label, p) in [("max", max), ("avg", params(avg))] {
        g.bench_function(label, |bench| {
            bench.iter(|| {
                pool2d(&p, 1, black_box(&x), &mut out);
                black_box(&out);
            })
        });
    }
    g.finish();
}

/// Windowed and global pooling.
fn bench_pools(c: &mut Criterion) {
    bench_pool(c, "pool/vgg/64x32x32-k2s2", 64, 32, 2, 2, 0);
    bench_pool(c, "pool/stem224/64x112x112-k3s2p1", 64, 112, 3, 2, 1);
    bench_pool(c, "pool/stem224/128x56x56-k2s2", 128, 56, 2, 2, 0);
    bench_pool(c, "pool/other/64x56x56-k3s2p0", 64, 56, 3, 2, 0);
    bench_pool(c, "pool/other/64x28x28-k3s1p1", 64, 28, 3, 1, 1);
    bench_pool(c, "pool/other/32x27x27-k5s3p2", 32, 27, 5, 3, 2);
    bench_pool(c, "pool/stem224/gap-256x28x28", 256, 28, 28, 28, 0);
    bench_pool(c, "pool/mobile/gap-128x16x16", 128, 16, 16, 16, 0);
}

/// `batchnorm/vgg/64x32x32`: inference with running statistics, in place on a fresh copy.
fn bench_batchnorm(c: &mut Criterion) {
    let p = BatchNormParams {
        channels: 64,
        hw: 32 * 32,
        eps: 1e-5,
        momentum: 0.1,
        affine: true,
        track_running_stats: true,
    };
    let x = values(p.channels * p.hw, 1);
    let (weight, bias) = (values(p.channels, 2), values(p.channels, 3));
    let mean = values(p.channels, 4);
    let var: Vec<f32> = values(p.channels, 5).iter().map(|v| v + 1.0).collect();
    let mut g = group(c, "batchnorm/vgg/64x32x32", 2 * x.len());
    g.bench_function("running-stats", |bench| {
        bench.iter_batched_ref(
            || x.clone(),
            |x| batchnorm(&p, 1, x, Some(&weight), Some(&bias), Some((&mean, &var))),
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

/// `activation/vgg/64x32x32`: each element-wise activation, in place on a fresh copy.
fn bench_activations(c: &mut Criterion) {
    let x: Vec<f32> = values(64 * 32 * 32, 1).iter().map(|v| 8.0 * v).collect();
    let mut g = group(c, "activation/vgg/64x32x32", x.len());
    for (label, act) in [
        ("relu", Activation::Relu),
        ("leaky_relu", Activation::LeakyRelu(0.01)),
        ("sigmoid", Activation::Sigmoid),
        ("tanh", Activation::Tanh),
        ("silu", Activation::Silu),
        ("gelu", Activation::Gelu),
        ("relu6", Activation::Relu6),
        ("hardswish", Activation::Hardswish),
        ("hardsigmoid", Activation::Hardsigmoid),
    ] {
        g.bench_function(label, |bench| {
            bench.iter_batched_ref(|| x.clone(), |x| activation(act, x), BatchSize::LargeInput)
        });
    }
    g.finish();
}

/// `linear/<net>/<in>-<out>`: a fully connected layer at batch 1 and 64.
fn bench_linear(c: &mut Criterion, name: &str, in_features: usize, out_features: usize) {
    let p = LinearParams {
        in_features,
        out_features,
    };
    let w = values(in_features * out_features, 2);
    let b = values(out_features, 3);
    let mut g = group(c, name, 0);
    for n in [1, 64] {
        let x = values(n * in_features, 1);
        let mut out = vec![0.0; n * out_features];
        g.throughput(Throughput::Elements(
            (2 * n * in_features * out_features) as u64,
        ));
        g.bench_function(format!("batch{n}"), |bench| {
            bench.iter(|| {
                linear(&p, n, black_box(&x), black_box(&w), Some(&b), &mut out);
                black_box(&out);
            })
        });
    }
    g.finish();
}

/// The fully connected layers.
fn bench_linears(c: &mut Criterion) {
    bench_linear(c, "linear/stem224/256-1000", 256, 1000);
    bench_linear(c, "linear/vgg/4096-10", 4096, 10);
    bench_linear(c, "linear/lenet5/400-120", 400, 120);
}

criterion_group!(
    benches,
    bench_convs,
    bench_pools,
    bench_batchnorm,
    bench_activations,
    bench_linears
);
criterion_main!(benches);
