//! The depthwise kernel against the reference convolution, and its epilogue and plane ranges
//! against applying them separately, bit for bit.

use super::*;
use crate::ops::activation::Activation;
use crate::ops::conv::tests::naive;
use crate::shape::out_len;
use crate::test_util::{assert_close, rand_vec};

/// `(channels, kernel, stride, padding, dilation, [h, w], n, bias)`.
type Case = (
    usize,
    [usize; 2],
    [usize; 2],
    [usize; 2],
    [usize; 2],
    [usize; 2],
    usize,
    bool,
);

/// Mobile's two layers, then strides 1–3, paddings 0–4, dilations, kernels 1–7 and 2×4,
/// 3×17, widths 1 to 48 around the 16 lanes (and 38, 40, 41, whose last block of two vectors
/// overlaps the one before), and row counts off the 4-row blocks.
const CASES: &[Case] = &[
    (32, [3, 3], [1, 1], [1, 1], [1, 1], [32, 32], 1, true),
    (64, [3, 3], [2, 2], [1, 1], [1, 1], [32, 32], 2, true),
    (3, [3, 3], [1, 1], [1, 1], [1, 1], [7, 5], 2, false),
    (3, [3, 3], [2, 2], [1, 1], [1, 1], [9, 17], 3, true),
    (2, [3, 3], [2, 2], [0, 0], [1, 1], [8, 33], 1, true),
    (2, [3, 3], [2, 2], [2, 3], [1, 1], [6, 21], 2, false),
    (4, [3, 3], [1, 1], [0, 0], [1, 1], [3, 3], 3, true),
    (2, [3, 3], [3, 3], [1, 1], [1, 1], [10, 40], 2, true),
    (3, [3, 3], [1, 2], [1, 1], [2, 2], [11, 19], 1, true),
    (4, [3, 5], [2, 1], [1, 2], [2, 1], [7, 5], 3, true),
    (2, [1, 1], [1, 1], [0, 0], [1, 1], [5, 31], 2, true),
    (2, [1, 1], [2, 2], [1, 1], [1, 1], [5, 6], 1, false),
    (5, [5, 5], [1, 1], [2, 2], [1, 1], [9, 23], 2, true),
    (5, [5, 5], [2, 2], [2, 2], [1, 1], [13, 35], 1, false),
    (2, [7, 7], [1, 1], [3, 3], [1, 1], [8, 48], 1, true),
    (2, [7, 7], [2, 2], [3, 3], [1, 1], [15, 15], 2, true),
    (3, [7, 7], [3, 3], [3, 3], [1, 1], [20, 20], 1, true),
    (6, [3, 3], [3, 2], [0, 2], [2, 2], [9, 8], 2, true),
    (3, [3, 3], [2, 2], [4, 4], [1, 1], [2, 3], 1, true),
    (3, [1, 1], [2, 2], [1, 1], [1, 1], [1, 1], 1, false),
    (2, [2, 4], [1, 3], [1, 2], [1, 1], [4, 10], 2, true),
    (2, [3, 17], [1, 1], [1, 8], [1, 1], [5, 20], 1, true),
    (2, [3, 3], [1, 1], [1, 1], [1, 1], [17, 1], 2, true),
    (3, [3, 3], [1, 1], [1, 1], [1, 1], [6, 40], 2, true),
    (2, [5, 5], [1, 1], [2, 2], [1, 1], [5, 41], 1, true),
    (2, [3, 3], [2, 2], [1, 1], [1, 1], [7, 75], 1, false),
    // The in-place blocks (3×3, padding 1, stride 1 or 2): widths and heights of 1 and 2, and
    // around one and two vectors of 8 and 16 lanes, and row counts off the 4-row blocks.
    (2, [3, 3], [1, 1], [1, 1], [1, 1], [1, 1], 1, true),
    // Pairs of planes (rows of one vector) across samples, and a last plane alone.
    (5, [3, 3], [1, 1], [1, 1], [1, 1], [6, 12], 1, true),
    (3, [3, 3], [2, 2], [1, 1], [1, 1], [9, 30], 3, false),
    (2, [3, 3], [2, 2], [1, 1], [1, 1], [2, 2], 1, true),
    (2, [3, 3], [1, 1], [1, 1], [1, 1], [2, 16], 2, false),
    (2, [3, 3], [1, 1], [1, 1], [1, 1], [5, 17], 1, true),
    (2, [3, 3], [1, 1], [1, 1], [1, 1], [3, 31], 1, true),
    (2, [3, 3], [1, 1], [1, 1], [1, 1], [9, 33], 1, true),
    (2, [3, 3], [1, 1], [1, 1], [1, 1], [1, 9], 1, true),
    (2, [3, 3], [2, 2], [1, 1], [1, 1], [5, 31], 2, true),
    (2, [3, 3], [2, 2], [1, 1], [1, 1], [10, 32], 1, false),
    (2, [3, 3], [2, 2], [1, 1], [1, 1], [3, 33], 1, true),
    (2, [3, 3], [2, 2], [1, 1], [1, 1], [11, 64], 1, true),
    (2, [3, 3], [2, 2], [1, 1], [1, 1], [4, 17], 1, true),
    (2, [3, 3], [2, 2], [1, 1], [1, 1], [1, 15], 2, true),
];

thread_local! {
    /// Set: the in-place 3×3 blocks are off and every plane goes through the padded copy
    /// (`in_place_blocks_give_the_bits_of_the_padded_copy`).
    pub(super) static PADDED_ONLY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Planes the in-place blocks computed on this thread.
    pub(super) static IN_PLACE: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn params(c: &Case) -> Conv2dParams {
    let &(ch, kernel, stride, padding, dilation, in_hw, _, _) = c;
    let axis = |a: usize| {
        out_len(
            in_hw[a],
            kernel[a],
            stride[a],
            padding[a],
            dilation[a],
            false,
        )
        .expect("the case fits its input")
    };
    Conv2dParams {
        c_in: ch,
        c_out: ch,
        groups: ch,
        kernel,
        stride,
        padding,
        dilation,
        in_hw,
        out_hw: [axis(0), axis(1)],
    }
}

/// Inputs of case `i`: `[x, weight, bias, scale, shift]`.
fn data(i: usize, p: &Conv2dParams, n: usize) -> [Vec<f32>; 5] {
    let seed = i as u64 * 10;
    let k = p.kernel[0] * p.kernel[1];
    [
        rand_vec(n * p.in_len(), seed),
        rand_vec(p.c_out * k, seed + 1),
        rand_vec(p.c_out, seed + 2),
        rand_vec(p.c_out, seed + 3),
        rand_vec(p.c_out, seed + 4),
    ]
}

/// All `n` samples in one call, with scratch of the wrong size and NaN-filled output.
fn run(
    p: &Conv2dParams,
    n: usize,
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    e: Epilogue<'_>,
) -> Vec<f32> {
    let mut out = vec![f32::NAN; n * p.out_len()];
    let mut scratch = vec![f32::NAN; 5];
    depthwise(p, 0, x, w, b, e, &mut out, &mut scratch);
    assert_eq!(scratch.len(), scratch_len(p) + crate::store::LINE - 1);
    out
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn matches_direct_convolution_over_awkward_shapes() {
    for (i, case) in CASES.iter().enumerate() {
        let p = params(case);
        let (n, has_bias) = (case.6, case.7);
        let [x, w, b, _, _] = data(i, &p, n);
        let bias = has_bias.then_some(&b[..]);
        let want = naive(&p, n, &x, &w, bias);
        crate::simd::testing::each_level(|_| {
            let got = run(&p, n, &x, &w, bias, Epilogue::default());
            assert_close(&got, &want, 1e-5);
        });
    }
}

/// The in-place blocks multiply the same products in the same order as the padded copy's
/// blocks, at every SIMD level and with every epilogue step in the blocks' registers; with
/// infinite and NaN weights, so that a padding tap left out instead of multiplied by zero shows.
#[test]
fn in_place_blocks_give_the_bits_of_the_padded_copy() {
    let mut fitting = 0;
    for (i, case) in CASES.iter().enumerate() {
        let p = params(case);
        if !inplace::fits(&p) {
            continue;
        }
        fitting += 1;
        let (n, has_bias) = (case.6, case.7);
        let [x, mut w, b, scale, shift] = data(i, &p, n);
        if p.c_out > 1 {
            w[9..18].copy_from_slice(&[
                f32::INFINITY,
                1.0,
                -1.0,
                0.5,
                2.0,
                1.0,
                1.0,
                f32::NAN,
                1.0,
            ]);
        }
        let bias = has_bias.then_some(&b[..]);
        let e = Epilogue {
            affine: Some((&scale, &shift)),
            act: Some(Activation::Relu),
            residual: None,
        };
        crate::simd::testing::each_level(|level| {
            for e in [Epilogue::default(), e] {
                IN_PLACE.set(0);
                let got = run(&p, n, &x, &w, bias, e);
                // Every plane in place on the SIMD levels, none on the baseline.
                let planes = if level == crate::simd::Isa::Baseline {
                    0
                } else {
                    n * p.c_out
                };
                assert_eq!(IN_PLACE.get(), planes, "{case:?} {level:?}");
                PADDED_ONLY.set(true);
                let want = run(&p, n, &x, &w, bias, e);
                PADDED_ONLY.set(false);
                assert_eq!(IN_PLACE.get(), planes, "{case:?} {level:?}: in place");
                assert_eq!(bits(&got), bits(&want), "{case:?} {level:?}");
            }
        });
    }
    assert!(fitting >= 15, "{fitting} cases fit the in-place blocks");
}

#[test]
fn fused_epilogue_equals_applying_it_afterwards_bit_for_bit() {
    let levels = crate::simd::testing::levels();
    let acts = [
        None,
        Some(Activation::Relu),
        Some(Activation::LeakyRelu(0.1)),
        Some(Activation::Gelu),
        Some(Activation::Sigmoid),
        Some(Activation::Relu6),
        Some(Activation::Hardswish),
        Some(Activation::Hardsigmoid),
    ];
    for (i, case) in CASES.iter().enumerate() {
        let p = params(case);
        let (n, has_bias) = (case.6, case.7);
        let [x, w, b, scale, shift] = data(i, &p, n);
        let bias = has_bias.then_some(&b[..]);
        let plain = run(&p, n, &x, &w, bias, Epilogue::default());
        let r = rand_vec(n * p.out_len(), i as u64 * 10 + 5);
        for (affine, residual) in [
            (None, None),
            (Some((&scale[..], &shift[..])), None),
            (None, Some(&r[..])),
            (Some((&scale[..], &shift[..])), Some(&r[..])),
        ] {
            for act in acts {
                let e = Epilogue {
                    affine,
                    act,
                    residual,
                };
                let mut want = plain.clone();
                let hw = p.out_hw[0] * p.out_hw[1];
                for (s, sample) in want.chunks_exact_mut(p.out_len()).enumerate() {
                    e.apply(0, s * p.c_out, sample.chunks_exact_mut(hw));
                }
                let got = run(&p, n, &x, &w, bias, e);
                assert_eq!(bits(&got), bits(&want), "{case:?} {act:?}");
                // The other levels (below the best) against the f64 definition.
                for &level in &levels[1..] {
                    crate::simd::testing::with_isa(level, || {
                        let got = run(&p, n, &x, &w, bias, e);
                        let plain = run(&p, n, &x, &w, bias, Epilogue::default());
                        let mut want = plain;
                        for (s, sample) in want.chunks_exact_mut(p.out_len()).enumerate() {
                            e.apply(0, s * p.c_out, sample.chunks_exact_mut(hw));
                        }
                        assert_eq!(bits(&got), bits(&want), "{case:?} {act:?} {level:?}");
                    });
                }
            }
        }
    }
}

#[test]
fn plane_ranges_give_the_bits_of_one_call() {
    for (i, case) in CASES.iter().enumerate() {
        let p = params(case);
        let (n, has_bias) = (case.6, case.7);
        let [x, w, b, scale, shift] = data(i, &p, n);
        let r = rand_vec(n * p.out_len(), i as u64 * 10 + 5);
        let e = Epilogue {
            affine: Some((&scale, &shift)),
            act: Some(Activation::Relu),
            residual: Some(&r),
        };
        let bias = has_bias.then_some(&b[..]);
        let whole = run(&p, n, &x, &w, bias, e);
        let (hw_in, hw_out) = (p.in_hw[0] * p.in_hw[1], p.out_hw[0] * p.out_hw[1]);
        let planes = n * p.c_out;
        for split in [1, planes / 2, planes - 1] {
            let mut out = vec![f32::NAN; whole.len()];
            let (lo, hi) = out.split_at_mut(split * hw_out);
            let mut scratch = Vec::new();
            let (x_lo, x_hi) = x.split_at(split * hw_in);
            depthwise(&p, 0, x_lo, &w, bias, e, lo, &mut scratch);
            depthwise(&p, split, x_hi, &w, bias, e, hi, &mut scratch);
            assert_eq!(bits(&out), bits(&whole), "{case:?} split at plane {split}");
        }
    }
}

/// The message of the panic `f` raises, `None` if it returns.
fn panic_message(f: impl FnOnce()) -> Option<String> {
    let payload = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).err()?;
    Some(match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(p) => p
            .downcast::<&str>()
            .map_or_else(|_| String::new(), |s| s.to_string()),
    })
}

/// An empty range returns at once (its scratch sized, nothing read), while each short slice
/// is refused by its own check, not by an index out of bounds somewhere inside.
#[test]
fn an_empty_range_writes_nothing_and_each_short_slice_is_named() {
    let p = params(&CASES[0]);
    let none = Epilogue::default();
    let hw = p.out_hw[0] * p.out_hw[1];
    let w = rand_vec(p.c_out * 9, 1);
    let x = rand_vec(2 * p.in_hw[0] * p.in_hw[1], 2);
    let mut scratch = Vec::new();
    depthwise(&p, 3, &[], &w, None, none, &mut [], &mut scratch);
    assert_eq!(scratch.len(), scratch_len(&p) + crate::store::LINE - 1);
    // Two planes from plane 1 on: the right output, and nothing past it.
    let mut out = vec![f32::NAN; 3 * hw];
    depthwise(&p, 1, &x, &w, None, none, &mut out[..2 * hw], &mut scratch);
    assert!(out[..2 * hw].iter().all(|v| v.is_finite()));
    assert!(
        out[2 * hw..].iter().all(|v| v.is_nan()),
        "wrote past its range"
    );
    let one_plane = |c: usize, x: &[f32]| {
        let mut single = p;
        single.c_in = 1;
        single.c_out = 1;
        single.groups = 1;
        naive(&single, 1, x, &w[c * 9..(c + 1) * 9], None)
    };
    let plane = p.in_hw[0] * p.in_hw[1];
    assert_close(&out[..hw], &one_plane(1, &x[..plane]), 1e-5);
    assert_close(&out[hw..2 * hw], &one_plane(2, &x[plane..]), 1e-5);
    let r = vec![0.0; 2 * hw];
    let (scale, shift) = (vec![1.0; p.c_out - 1], vec![0.0; p.c_out - 1]);
    let short = |what: &str, f: &dyn Fn(&mut [f32])| {
        let mut out = vec![0.0; 2 * hw];
        let msg = panic_message(|| f(&mut out)).unwrap_or_else(|| panic!("{what} passed"));
        assert!(msg.contains(what), "{what}: {msg}");
    };
    let run = |x: &[f32], w: &[f32], b: Option<&[f32]>, e: Epilogue<'_>, out: &mut [f32]| {
        depthwise(&p, 0, x, w, b, e, out, &mut Vec::new())
    };
    short("input too short", &|out| {
        run(&x[..plane], &w, None, none, out)
    });
    short("weight too short", &|out| run(&x, &w[..9], None, none, out));
    short("bias too short", &|out| {
        run(&x, &w, Some(&[0.0; 3]), none, out)
    });
    let e = Epilogue {
        affine: Some((&scale, &shift)),
        ..none
    };
    short("epilogue too short", &|out| run(&x, &w, None, e, out));
    let e = Epilogue {
        residual: Some(&r[..hw]),
        ..none
    };
    short("residual too short", &|out| run(&x, &w, None, e, out));
    short("not whole planes", &|out| {
        run(&x, &w, None, none, &mut out[..hw + 1])
    });
}

#[test]
fn planes_split_over_threads_give_the_bits_of_one_thread() {
    // Two MobileNetV2-sized layers (one with an odd plane count over 3 threads) are added to
    // the table: they are sure to split, whatever DEPTHWISE_MIN_MACS_PER_SPLIT is tuned to.
    let mut cases = CASES.to_vec();
    cases.push((96, [3, 3], [1, 1], [1, 1], [1, 1], [56, 56], 1, true));
    cases.push((37, [3, 3], [2, 2], [1, 1], [1, 1], [113, 111], 3, false));
    for (i, case) in cases.iter().enumerate() {
        let p = params(case);
        let (n, has_bias) = (case.6, case.7);
        let [x, w, b, scale, shift] = data(i, &p, n);
        let r = rand_vec(n * p.out_len(), i as u64 * 10 + 6);
        let e = Epilogue {
            affine: Some((&scale, &shift)),
            act: Some(Activation::Relu6),
            residual: Some(&r),
        };
        let bias = has_bias.then_some(&b[..]);
        let run_on = |threads: usize| {
            let mut out = vec![f32::NAN; n * p.out_len()];
            let mut scratch = Vec::new();
            crate::threads::install(threads, || {
                conv2d(&p, n, &x, &w, bias, e, threads, &mut out, &mut scratch)
            });
            (out, scratch.len())
        };
        let (one, used) = run_on(1);
        assert_eq!(
            used,
            scratch_len(&p) + crate::store::LINE - 1,
            "{case:?}: one thread, one scratch plane"
        );
        let split = n * p.macs() >= DEPTHWISE_MIN_MACS_PER_SPLIT;
        assert!(split || i < CASES.len(), "{case:?}: the added cases split");
        for threads in [2, 3] {
            let (out, used) = run_on(threads);
            assert_eq!(bits(&out), bits(&one), "{case:?} on {threads} threads");
            if split {
                assert_eq!(
                    used,
                    threads * scratch_len(&p) + crate::store::LINE - 1,
                    "{case:?}: a part per thread"
                );
            }
        }
    }
}
