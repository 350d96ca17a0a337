//! Run-time input beyond `test_forward.rs`: NaN and ±Inf through every layer kind as PyTorch
//! propagates them, views with zero or channel strides and batches across chunk boundaries, and
//! eight threads hammering one model for two seconds with results bit-identical to a
//! single-threaded run.

use std::time::{Duration, Instant};

use cnn::ndarray::{s, Array4, ArrayView4, Axis};
use cnn::{cnn, set_num_threads, Model};

const INF: f32 = f32::INFINITY;
const NAN: f32 = f32::NAN;

cnn! {
    struct Relu { input(1, 1, 7) relu }
    struct LeakyRelu { input(1, 1, 7) leakyrelu(0.01) }
    struct Sigmoid { input(1, 1, 7) sigmoid }
    struct Tanh { input(1, 1, 7) tanh }
    struct Silu { input(1, 1, 7) silu }
    struct Gelu { input(1, 1, 7) gelu }
    struct Relu6 { input(1, 1, 7) relu6 }
    struct Hardswish { input(1, 1, 7) hardswish }
    struct Hardsigmoid { input(1, 1, 7) hardsigmoid }
    /// No layer that computes anything: the output is the input.
    struct Identity { input(1, 1, 7) identity }
    struct Softmax { input(3, 1, 1) softmax }
    struct MaxPool { input(1, 2, 2) maxpool(2) }
    struct AvgPool { input(1, 2, 2) avgpool(2) }
    struct PaddedMaxPool { input(1, 1, 3) maxpool(k(1, 2), s(1, 2), p(0, 1)) }
    struct GlobalAvg { input(1, 2, 2) gap }
    struct Bn { input(1, 2, 2) bn }
    /// A conv whose batch norm and ReLU are fused into its epilogue.
    struct ConvBnRelu { input(2, 5, 5) conv(2 -> 3, k3, p1) bn relu }
    struct Fc { input(2, 2, 2) fc(4) }
}

/// The inputs every activation sees: +Inf, −Inf, NaN, 0, −0, 1, −1.
const SPECIAL: [f32; 7] = [INF, -INF, NAN, 0.0, -0.0, 1.0, -1.0];

fn row(x: &[f32]) -> Array4<f32> {
    Array4::from_shape_vec((1, 1, 1, x.len()), x.to_vec()).unwrap()
}

/// Equal as PyTorch's `torch.equal` with `equal_nan`: NaN matches NaN, and 0 matches −0.
fn assert_same(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            g == w || (g.is_nan() && w.is_nan()) || (g - w).abs() <= 1e-6,
            "{what}: element {i} is {g}, PyTorch gives {w}; got {got:?}"
        );
    }
}

fn flat<M: Model>(net: &M, x: &Array4<f32>) -> Vec<f32> {
    net.forward_batch(x.view())
        .unwrap()
        .iter()
        .copied()
        .collect()
}

/// Produced by
/// ```python
/// x = torch.tensor([inf, -inf, nan, 0.0, -0.0, 1.0, -1.0])
/// F.relu(x), F.leaky_relu(x, 0.01), torch.sigmoid(x), torch.tanh(x), F.silu(x), F.gelu(x)
/// F.relu6(x), F.hardswish(x), F.hardsigmoid(x), nn.Identity()(x)
/// ```
/// (torch 2.15.0, CPU). GELU of +Inf is `inf` on PyTorch's scalar path (a one-element
/// tensor) and `nan` on its vectorised path (any longer tensor); ours is `inf`, the limit.
#[test]
fn test_activations_propagate_inf_and_nan_like_pytorch() {
    let x = row(&SPECIAL);
    let cases: [(&str, Vec<f32>, [f32; 7]); 10] = [
        (
            "relu",
            flat(&Relu::seeded(0), &x),
            [INF, 0.0, NAN, 0.0, -0.0, 1.0, 0.0],
        ),
        (
            "leakyrelu",
            flat(&LeakyRelu::seeded(0), &x),
            [INF, -INF, NAN, 0.0, -0.0, 1.0, -0.01],
        ),
        (
            "sigmoid",
            flat(&Sigmoid::seeded(0), &x),
            [1.0, 0.0, NAN, 0.5, 0.5, 0.731_058_6, 0.268_941_43],
        ),
        (
            "tanh",
            flat(&Tanh::seeded(0), &x),
            [1.0, -1.0, NAN, 0.0, -0.0, 0.761_594_2, -0.761_594_2],
        ),
        (
            "silu",
            flat(&Silu::seeded(0), &x),
            [INF, NAN, NAN, 0.0, -0.0, 0.731_058_6, -0.268_941_43],
        ),
        (
            "gelu",
            flat(&Gelu::seeded(0), &x),
            [INF, NAN, NAN, 0.0, -0.0, 0.841_344_7, -0.158_655_26],
        ),
        (
            "relu6",
            flat(&Relu6::seeded(0), &x),
            [6.0, 0.0, NAN, 0.0, -0.0, 1.0, 0.0],
        ),
        (
            "hardswish",
            flat(&Hardswish::seeded(0), &x),
            [INF, NAN, NAN, 0.0, -0.0, 0.666_666_7, -0.333_333_34],
        ),
        (
            "hardsigmoid",
            flat(&Hardsigmoid::seeded(0), &x),
            [1.0, 0.0, NAN, 0.5, 0.5, 0.666_666_7, 0.333_333_34],
        ),
        ("identity", flat(&Identity::seeded(0), &x), SPECIAL),
    ];
    for (name, got, want) in &cases {
        assert_same(got, want, name);
    }
}

/// Produced by `F.softmax(torch.tensor(v), dim=0)` for each `v` below: any +Inf or NaN makes
/// every channel NaN (`inf − inf`), −Inf channels get 0, all −Inf is NaN.
#[test]
fn test_softmax_with_inf_and_nan_like_pytorch() {
    let net = Softmax::seeded(0);
    let cases: [([f32; 3], [f32; 3]); 6] = [
        ([INF, 1.0, 2.0], [NAN; 3]),
        ([-INF, 1.0, 2.0], [0.0, 0.268_941_43, 0.731_058_6]),
        ([INF, INF, 1.0], [NAN; 3]),
        ([-INF, -INF, -INF], [NAN; 3]),
        ([NAN, 1.0, 2.0], [NAN; 3]),
        ([INF, -INF, 0.0], [NAN; 3]),
    ];
    for (x, want) in cases {
        let input = Array4::from_shape_vec((1, 3, 1, 1), x.to_vec()).unwrap();
        assert_same(&flat(&net, &input), &want, &format!("softmax {x:?}"));
    }
}

/// Produced by `F.max_pool2d(t, 2)`, `F.avg_pool2d(t, 2)`, `F.adaptive_avg_pool2d(t, 1)` and
/// `F.max_pool2d(t, (1, 2), stride=(1, 2), padding=(0, 1))` on the 2×2 (or 1×3) maps below.
#[test]
fn test_pooling_with_inf_and_nan_like_pytorch() {
    let map = |v: [f32; 4]| Array4::from_shape_vec((1, 1, 2, 2), v.to_vec()).unwrap();
    let (max, avg, gap) = (MaxPool::seeded(0), AvgPool::seeded(0), GlobalAvg::seeded(0));
    for (x, want_max, want_avg) in [
        ([1.0, INF, 2.0, 3.0], INF, INF),
        ([-INF; 4], -INF, -INF),
        ([NAN, INF, 2.0, 3.0], NAN, NAN),
        ([-INF, INF, 2.0, 3.0], INF, NAN),
        ([-INF, 1.0, 2.0, 3.0], 3.0, -INF),
    ] {
        let x = map(x);
        assert_same(&flat(&max, &x), &[want_max], &format!("maxpool {x}"));
        assert_same(&flat(&avg, &x), &[want_avg], &format!("avgpool {x}"));
        assert_same(&flat(&gap, &x), &[want_avg], &format!("gap {x}"));
    }
    // Max pooling pads with −Inf, so a padded window of −Inf stays −Inf rather than 0.
    let x = Array4::from_shape_vec((1, 1, 1, 3), vec![-INF; 3]).unwrap();
    assert_same(
        &flat(&PaddedMaxPool::seeded(0), &x),
        &[-INF, -INF],
        "padded maxpool",
    );
}

/// Produced by `nn.BatchNorm2d(1).eval()` on `[[inf, -inf], [nan, 1.0]]`.
#[test]
fn test_batch_norm_with_inf_and_nan_like_pytorch() {
    let x = Array4::from_shape_vec((1, 1, 2, 2), vec![INF, -INF, NAN, 1.0]).unwrap();
    assert_same(
        &flat(&Bn::seeded(0), &x),
        &[INF, -INF, NAN, 0.999_995],
        "bn",
    );
}

/// One non-finite input reaches exactly the outputs whose receptive field holds it: ±Inf with
/// the sign of the weight it meets (then ReLU), or NaN; every other output is bit for bit the
/// output of the same input with that element zeroed.
#[test]
fn test_inf_and_nan_stay_in_the_receptive_field() {
    let net = ConvBnRelu::seeded(7);
    let base = Array4::from_shape_fn((1, 2, 5, 5), |(_, c, y, x)| {
        ((c * 25 + y * 5 + x) % 7) as f32 / 3.0 - 1.0
    });
    for special in [INF, -INF, NAN] {
        for (c, y, x) in [(0, 0, 0), (1, 2, 3), (0, 4, 4)] {
            let mut zeroed = base.clone();
            zeroed[[0, c, y, x]] = 0.0;
            let mut hot = base.clone();
            hot[[0, c, y, x]] = special;
            let want = net.forward_batch(zeroed.view()).unwrap();
            let got = net.forward_batch(hot.view()).unwrap();
            for ((_, o, oy, ox), &g) in got.indexed_iter() {
                let w = want[[0, o, oy, ox]];
                let inside = oy.abs_diff(y) <= 1 && ox.abs_diff(x) <= 1;
                if !inside {
                    assert_eq!(
                        g.to_bits(),
                        w.to_bits(),
                        "{special} at {c},{y},{x}: out {o},{oy},{ox}"
                    );
                } else if special.is_nan() {
                    assert!(g.is_nan(), "NaN at {c},{y},{x}: out {o},{oy},{ox} = {g}");
                } else {
                    assert!(
                        g == 0.0 || g == INF,
                        "{special} at {c},{y},{x}: out {o},{oy},{ox} = {g}"
                    );
                }
            }
        }
    }
    // A linear layer mixes every input into every output.
    let fc = Fc::seeded(3);
    let mut x = Array4::from_elem((1, 2, 2, 2), 0.5f32);
    x[[0, 1, 0, 1]] = INF;
    assert!(flat(&fc, &x).iter().all(|v| v.is_infinite()));
    x[[0, 1, 0, 1]] = NAN;
    assert!(flat(&fc, &x).iter().all(|v| v.is_nan()));
}

cnn! {
    /// Wide enough that a small batch splits a convolution's output channels over threads.
    struct Shared {
        input(3, 16, 16)
        conv(3 -> 32, k3, p1) bn relu maxpool(2) conv(32 -> 32, k3, p1) relu gap fc(10)
    }
}

fn batch(n: usize, seed: u64) -> Array4<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    Array4::from_shape_simple_fn((n, 3, 16, 16), move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32 * 4.0 - 2.0
    })
}

fn bits<'a>(v: impl IntoIterator<Item = &'a f32>) -> Vec<u32> {
    v.into_iter().map(|x| x.to_bits()).collect()
}

/// Views with a zero stride (a broadcast sample), a channel stride (every other channel of a
/// wider array) and both permuted, across chunk boundaries, give the contiguous copy's result.
#[test]
fn test_unusual_strides_give_the_contiguous_result() {
    let net = Shared::seeded(4);
    let one = batch(1, 4);
    let broadcast = one.broadcast((19, 3, 16, 16)).unwrap();
    assert_eq!(broadcast.strides()[0], 0);
    let a = net.forward_batch(broadcast).unwrap();
    let b = net.forward_batch(broadcast.to_owned().view()).unwrap();
    assert_eq!(bits(&a), bits(&b));
    for row in a.axis_iter(Axis(0)) {
        assert_eq!(bits(row), bits(a.row(0)));
    }

    let wide = Array4::from_shape_fn((17, 6, 16, 16), |(n, c, y, x)| {
        ((n * 31 + c * 7 + y * 3 + x) % 23) as f32 / 11.0 - 1.0
    });
    let every_other_channel = wide.slice(s![.., ..;2, .., ..]);
    let transposed_back: ArrayView4<f32> = every_other_channel.permuted_axes([0, 1, 3, 2]);
    for view in [every_other_channel, transposed_back] {
        assert!(!view.is_standard_layout());
        let a = net.forward_batch(view).unwrap();
        let b = net.forward_batch(view.to_owned().view()).unwrap();
        assert_eq!(bits(&a), bits(&b));
    }
}

/// Eight threads call `forward_batch` on one shared model for two seconds, on batches from 1
/// to 33 samples, with the pool at four threads; every result equals, bit for bit, the result
/// of the same batch on one thread. A batch of one chunk (up to 8 samples of `Shared`) runs on
/// its calling thread, from 8 samples (`WARM_MIN_MACS`, 6 M at `Shared`'s 0.8 M
/// multiply-accumulates per sample) with its layers shared among the spinning helpers, which
/// the eight callers share; larger batches' chunks (the 33 samples' five) go to the pool's
/// workers, several callers' chunks at once. The calls must overlap (this is a concurrency test) and every batch size
/// must have been checked by at least two threads.
#[test]
fn test_eight_threads_for_two_seconds_match_one_thread() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let net = Shared::seeded(11);
    let sizes = [1, 2, 3, 7, 8, 9, 16, 17, 33];
    let inputs: Vec<Array4<f32>> = sizes.iter().map(|&n| batch(n, n as u64)).collect();
    set_num_threads(1);
    let want: Vec<Vec<u32>> = inputs
        .iter()
        .map(|x| bits(&net.forward_batch(x.view()).unwrap()))
        .collect();
    set_num_threads(4);
    let deadline = Instant::now() + Duration::from_secs(2);
    let (in_flight, most_in_flight) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let per_thread: Vec<Vec<usize>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let (net, inputs, want) = (&net, &inputs, &want);
                let (in_flight, most) = (&in_flight, &most_in_flight);
                s.spawn(move || {
                    let mut calls = vec![0; inputs.len()];
                    let mut i = t;
                    // Thread t runs the sizes t, t + 3, t + 6 (mod 9) in turn, each at least
                    // once: every size by two or three threads.
                    while Instant::now() < deadline || calls.iter().sum::<usize>() < 3 {
                        let k = i % inputs.len();
                        let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        let got = bits(&net.forward_batch(inputs[k].view()).unwrap());
                        in_flight.fetch_sub(1, Ordering::SeqCst);
                        assert!(got == want[k], "thread {t}, batch of {}", sizes[k]);
                        calls[k] += 1;
                        i += 3;
                    }
                    calls
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    set_num_threads(0);
    let most = most_in_flight.into_inner();
    assert!(
        most >= 2,
        "the calls never overlapped (at most {most} at once)"
    );
    for (k, &n) in sizes.iter().enumerate() {
        let threads = per_thread.iter().filter(|calls| calls[k] > 0).count();
        assert!(threads >= 2, "batch of {n}: checked by {threads} thread(s)");
    }
    let calls: usize = per_thread.iter().flatten().sum();
    eprintln!("{calls} calls, at most {most} at once");
}
