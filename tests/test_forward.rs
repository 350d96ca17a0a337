//! Inference: the typed `forward` agrees with `forward_batch`, inputs of any layout give the same
//! result, bad shapes and undefined batch statistics are errors, seeded networks follow
//! PyTorch's initialisation, and a network is shared freely between threads.

use std::fmt::Debug;

use cnn::ndarray::{s, Array4, ArrayView4, Axis, Ix2};
use cnn::{cnn, Error, Model};
use safetensors::{Dtype, SafeTensors};

cnn! {
    /// A classifier touching conv, bn, pooling, grouped conv, an activation and fc.
    struct Flat {
        input(3, 8, 8)
        conv(3 -> 4, k3, p1) bn relu maxpool(2) conv(4 -> 6, k3, s2, p1, g2) gelu fc(5)
    }
    /// Wider layers, for GEMMs of more than one tile.
    struct Wide {
        input(3, 16, 16)
        conv(3 -> 16, k3, p1) bn relu maxpool(2) fc(10)
    }
    /// A network whose output is a feature map.
    struct Map {
        input(2, 6, 5)
        conv(2 -> 3, k3, p1) tanh avgpool(k3, s2, p1, ceil)
    }
    /// A batch norm with batch statistics on a 1×1 map, at module index 2.
    struct BatchStats {
        input(3, 4, 4)
        conv(3 -> 4, k3, s2) gap bn(track_running_stats=false) fc(2)
    }
    /// Batch statistics alone, to check the values by hand.
    struct BnOnly {
        input(2, 1, 1)
        bn(track_running_stats=false)
    }
    struct MaxPool {
        input(1, 4, 4)
        maxpool(2)
    }
    struct GlobalMax {
        input(1, 3, 3)
        globalmaxpool
    }
    /// One of each weighted layer with distinct fan-ins: 27, 60 (grouped) and 120.
    struct Init {
        input(3, 9, 9)
        conv(3 -> 8, k3) bn conv(8 -> 8, k(3, 5), g2) fc(10)
    }
}

/// A reproducible batch with values in [-2, 2).
fn batch(shape: (usize, usize, usize, usize), seed: u64) -> Array4<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    Array4::from_shape_simple_fn(shape, move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32 * 4.0 - 2.0
    })
}

fn sample<const C: usize, const H: usize, const W: usize>(
    x: &Array4<f32>,
    n: usize,
) -> [[[f32; W]; H]; C] {
    std::array::from_fn(|c| std::array::from_fn(|y| std::array::from_fn(|w| x[[n, c, y, w]])))
}

fn bits<'a>(values: impl IntoIterator<Item = &'a f32>) -> Vec<u32> {
    values.into_iter().map(|v| v.to_bits()).collect()
}

/// Each sample through the typed `forward` gives bit for bit its row of `forward_batch`.
fn check_rows<M, const C: usize, const H: usize, const W: usize, const K: usize>(net: &M, n: usize)
where
    M: Model<Input = [[[f32; W]; H]; C], Output = [f32; K], Dim = Ix2>,
{
    let x = batch((n, C, H, W), n as u64);
    let out = net.forward_batch(x.view()).unwrap();
    assert_eq!(out.shape(), [n, K]);
    for i in 0..n {
        let one: [f32; K] = net.forward(&sample(&x, i));
        assert_eq!(bits(&one), bits(out.row(i)), "{} sample {i}", M::NAME);
    }
}

#[test]
fn test_forward_matches_forward_batch_flat() {
    check_rows(&Flat::seeded(1), 5);
    check_rows(&Wide::seeded(1), 9);
}

#[test]
fn test_forward_matches_forward_batch_feature_map() {
    let net = Map::seeded(2);
    let x = batch((4, 2, 6, 5), 2);
    let out = net.forward_batch(x.view()).unwrap();
    // avgpool(k3, s2, p1, ceil): height 6 -> 4, width 5 -> 3.
    assert_eq!(out.shape(), [4, 3, 4, 3]);
    for n in 0..4 {
        let one: Box<[[[f32; 3]; 4]; 3]> = net.forward(&sample(&x, n));
        assert_eq!(
            bits(one.as_flattened().as_flattened()),
            bits(out.index_axis(Axis(0), n)),
            "sample {n}"
        );
    }
}

#[test]
fn test_wrong_input_shape() {
    let net = Flat::seeded(0);
    for (shape, expected) in [
        ((2, 3, 8, 7), vec![2, 3, 8, 8]),
        ((1, 4, 8, 8), vec![1, 3, 8, 8]),
        ((3, 3, 9, 8), vec![3, 3, 8, 8]),
        ((0, 1, 1, 1), vec![0, 3, 8, 8]),
    ] {
        let x = Array4::<f32>::zeros(shape);
        let found = vec![shape.0, shape.1, shape.2, shape.3];
        let err = net.forward_batch(x.view()).unwrap_err();
        assert_eq!(
            err,
            Error::InputShape {
                expected: expected.clone(),
                found: found.clone()
            }
        );
        let msg = err.to_string();
        for part in [format!("{expected:?}"), format!("{found:?}")] {
            assert!(msg.contains(&part), "{msg:?} lacks {part}");
        }
    }
}

#[test]
fn test_transposed_view_gives_the_same_result() {
    let net = Flat::seeded(3);
    // Stored as [N, C, W, H], viewed as [N, C, H, W].
    let stored = batch((3, 3, 8, 8), 3);
    let view = stored.view().permuted_axes([0, 1, 3, 2]);
    assert!(!view.is_standard_layout());
    let contiguous = view.as_standard_layout().into_owned();
    assert!(contiguous.is_standard_layout());
    let a = net.forward_batch(view).unwrap();
    let b = net.forward_batch(contiguous.view()).unwrap();
    assert_eq!(bits(&a), bits(&b));
}

#[test]
fn test_strided_and_reversed_views_give_the_same_result() {
    let net = Map::seeded(4);
    let wide = batch((3, 2, 12, 5), 4);
    let every_other_row = wide.slice(s![.., .., ..;2, ..]);
    let contiguous = every_other_row.to_owned();
    let a = net.forward_batch(every_other_row).unwrap();
    let b = net.forward_batch(contiguous.view()).unwrap();
    assert_eq!(bits(&a), bits(&b));

    let reversed = contiguous.slice(s![..;-1, .., .., ..]);
    let c = net.forward_batch(reversed).unwrap();
    for n in 0..3 {
        assert_eq!(
            bits(c.index_axis(Axis(0), n)),
            bits(b.index_axis(Axis(0), 2 - n))
        );
    }
}

#[test]
fn test_empty_batch() {
    let out = Flat::seeded(0)
        .forward_batch(Array4::zeros((0, 3, 8, 8)).view())
        .unwrap();
    assert_eq!(out.shape(), [0, 5]);
    let out = Map::seeded(0)
        .forward_batch(Array4::zeros((0, 2, 6, 5)).view())
        .unwrap();
    assert_eq!(out.shape(), [0, 3, 4, 3]);
    let out = BatchStats::seeded(0)
        .forward_batch(Array4::zeros((0, 3, 4, 4)).view())
        .unwrap();
    assert_eq!(out.shape(), [0, 2]);
}

#[test]
fn test_batch_statistics_need_two_values() {
    let net = BatchStats::seeded(5);
    let err = net
        .forward_batch(batch((1, 3, 4, 4), 5).view())
        .unwrap_err();
    assert_eq!(
        err,
        Error::BatchStatistics {
            layer: "2",
            shape: vec![1, 4, 1, 1]
        }
    );
    let msg = err.to_string();
    assert!(msg.contains("[1, 4, 1, 1]"), "{msg}");
    let out = net.forward_batch(batch((2, 3, 4, 4), 5).view()).unwrap();
    assert_eq!(out.shape(), [2, 2]);
    assert!(out.iter().all(|v| v.is_finite()));
}

#[test]
#[should_panic(expected = "more than one value per channel")]
fn test_typed_forward_panics_on_batch_statistics_of_one_value() {
    BatchStats::seeded(5).forward(&[[[0.5; 4]; 4]; 3]);
}

#[test]
fn test_batch_statistics_values() {
    // Channel 0 holds {1, 3}: mean 2, biased variance 1. Channel 1 holds {5, −5}: mean 0,
    // variance 25. y = (x − mean) / √(var + 1e-5).
    let x = Array4::from_shape_vec((2, 2, 1, 1), vec![1.0, 5.0, 3.0, -5.0]).unwrap();
    let out = BnOnly::seeded(0).forward_batch(x.view()).unwrap();
    let a = 1.0 / (1.0f64 + 1e-5).sqrt();
    let b = 5.0 / (25.0f64 + 1e-5).sqrt();
    let want = [-a, b, a, -b];
    for (got, want) in out.iter().zip(want) {
        assert!((*got as f64 - want).abs() < 1e-6, "{out:?}");
    }
}

#[test]
fn test_nan_propagates_through_maxpool() {
    let net = MaxPool::seeded(0);
    let plain: Vec<f32> = (0..16).map(|i| i as f32).collect();
    // 2×2 windows of 0..16 row-major: each maximum is the window's bottom-right value.
    let maxima = [5.0, 7.0, 13.0, 15.0];
    for nan_at in 0..16 {
        let mut values = plain.clone();
        values[nan_at] = f32::NAN;
        let x = Array4::from_shape_vec((1, 1, 4, 4), values).unwrap();
        let out = net.forward_batch(x.view()).unwrap();
        let window = (nan_at / 8) * 2 + (nan_at % 4) / 2;
        for (i, &v) in out.iter().enumerate() {
            if i == window {
                assert!(v.is_nan(), "NaN at {nan_at}: {out:?}");
            } else {
                assert_eq!(v, maxima[i], "NaN at {nan_at}: {out:?}");
            }
        }
    }
}

#[test]
fn test_nan_propagates_through_global_maxpool() {
    let net = GlobalMax::seeded(0);
    let plain = [[[3.0, -1.0, 8.0], [0.5, 2.0, -4.0], [7.0, 1.0, 6.0]]];
    assert_eq!(net.forward(&plain).as_flattened().as_flattened(), [8.0]);
    for nan_at in 0..9 {
        let mut x = plain;
        x[0][nan_at / 3][nan_at % 3] = f32::NAN;
        let out = net.forward(&x);
        assert!(out[0][0][0].is_nan(), "NaN at {nan_at}: {out:?}");
    }
}

#[test]
fn test_seeded_is_deterministic() {
    assert_eq!(Flat::seeded(5), Flat::seeded(5));
    assert_eq!(
        Flat::seeded(5).to_safetensors(),
        Flat::seeded(5).to_safetensors()
    );
    let x = batch((2, 3, 8, 8), 5);
    let a = Flat::seeded(5).forward_batch(x.view()).unwrap();
    let b = Flat::seeded(5).forward_batch(x.view()).unwrap();
    assert_eq!(bits(&a), bits(&b));
}

#[test]
fn test_different_seeds_differ() {
    let (a, b) = (Init::seeded(5), Init::seeded(6));
    assert_ne!(a, b);
    let (fa, fb) = (a.to_safetensors(), b.to_safetensors());
    let (fa, fb) = (
        SafeTensors::deserialize(&fa).unwrap(),
        SafeTensors::deserialize(&fb).unwrap(),
    );
    for key in [
        "0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias",
    ] {
        assert_ne!(
            fa.tensor(key).unwrap().data(),
            fb.tensor(key).unwrap().data(),
            "{key}"
        );
    }
    let x = batch((2, 3, 9, 9), 6);
    let (ya, yb) = (
        a.forward_batch(x.view()).unwrap(),
        b.forward_batch(x.view()).unwrap(),
    );
    assert_ne!(bits(&ya), bits(&yb));
}

fn values(file: &SafeTensors<'_>, key: &str) -> Vec<f32> {
    let t = file.tensor(key).unwrap();
    assert_eq!(t.dtype(), Dtype::F32, "{key}");
    t.data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

#[test]
fn test_seeded_follows_pytorch_init() {
    for seed in [0, 1, 42] {
        let bytes = Init::seeded(seed).to_safetensors();
        let file = SafeTensors::deserialize(&bytes).unwrap();
        // PyTorch: kaiming_uniform_(a=√5) for weights and U(±1/√fan_in) for biases, both
        // U(−1/√fan_in, 1/√fan_in); fan_in = c_in / groups · KH · KW, or in_features.
        for (layer, fan_in) in [(0, 3 * 3 * 3), (2, (8 / 2) * 3 * 5), (4, 120)] {
            let bound = 1.0 / (fan_in as f64).sqrt();
            for key in [format!("{layer}.weight"), format!("{layer}.bias")] {
                let v = values(&file, &key);
                for &w in &v {
                    assert!(
                        (w as f64).abs() <= bound * (1.0 + 1e-6),
                        "{key}: {w} outside ±{bound}"
                    );
                }
                assert!(
                    v.iter().any(|&w| w > 0.0) && v.iter().any(|&w| w < 0.0),
                    "{key}"
                );
            }
            // The weights (216, 480 and 1200 samples) fill the range and centre on 0.
            let w = values(&file, &format!("{layer}.weight"));
            let max = w.iter().fold(0.0f64, |m, &x| m.max((x as f64).abs()));
            let mean = w.iter().map(|&x| x as f64).sum::<f64>() / w.len() as f64;
            assert!(
                max > 0.9 * bound,
                "{layer}.weight: max |w| {max}, bound {bound}"
            );
            assert!(mean.abs() < 0.2 * bound, "{layer}.weight: mean {mean}");
        }
        assert_eq!(values(&file, "1.weight"), [1.0; 8]);
        assert_eq!(values(&file, "1.bias"), [0.0; 8]);
        assert_eq!(values(&file, "1.running_mean"), [0.0; 8]);
        assert_eq!(values(&file, "1.running_var"), [1.0; 8]);
        let tracked = file.tensor("1.num_batches_tracked").unwrap();
        assert_eq!(tracked.data(), 0i64.to_le_bytes());
    }
}

fn assert_traits<T: Send + Sync + Clone + Debug + 'static>() {}

#[test]
fn test_send_sync_clone_debug() {
    assert_traits::<Flat>();
    assert_traits::<Map>();
    assert_traits::<BatchStats>();
    let net = Flat::seeded(9);
    assert_eq!(net.clone(), net);
    assert!(format!("{net:?}").starts_with("Flat {"), "{net:?}");
}

#[test]
fn test_threads_share_one_model() {
    let net = Flat::seeded(10);
    let x = batch((4, 3, 8, 8), 10);
    let want = bits(&net.forward_batch(x.view()).unwrap());
    let one = sample::<3, 8, 8>(&x, 1);
    let want_one = bits(&net.forward(&one));
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    let batch = bits(&net.forward_batch(x.view()).unwrap());
                    (batch, bits(&net.forward(&one)))
                })
            })
            .collect();
        for h in handles {
            let (batch, single) = h.join().unwrap();
            assert_eq!(batch, want);
            assert_eq!(single, want_one);
        }
    });
}

cnn! {
    struct Large {
        input(3, 224, 224)
        conv(3 -> 8, k3, s2, p1) relu gap fc(10)
    }
    /// A 16×224×224 output: 3.2 MB, more than the whole stack of the thread below.
    struct LargeMap {
        input(3, 224, 224)
        conv(3 -> 16, k3, p1)
    }
}

type Image = Box<[[[f32; 224]; 224]; 3]>;

fn large_image() -> Image {
    let mut image: Image = vec![[[0.0f32; 224]; 224]; 3]
        .into_boxed_slice()
        .try_into()
        .expect("three planes");
    for (i, v) in image
        .as_flattened_mut()
        .as_flattened_mut()
        .iter_mut()
        .enumerate()
    {
        *v = ((i * 7919) % 1000) as f32 / 500.0 - 1.0;
    }
    image
}

const SMALL_STACK: usize = 2 * 1024 * 1024;

#[test]
fn test_large_input_on_a_small_stack() {
    let net = Large::seeded(12);
    let image = large_image();
    let batch =
        ArrayView4::from_shape((1, 3, 224, 224), image.as_flattened().as_flattened()).unwrap();
    let want = net.forward_batch(batch).unwrap();
    let got = std::thread::scope(|s| {
        std::thread::Builder::new()
            .stack_size(SMALL_STACK)
            .spawn_scoped(s, || net.forward(&image))
            .unwrap()
            .join()
            .unwrap()
    });
    assert_eq!(bits(&got), bits(&want));
}

#[test]
fn test_large_feature_map_on_a_small_stack() {
    let net = LargeMap::seeded(13);
    let image = large_image();
    let batch =
        ArrayView4::from_shape((1, 3, 224, 224), image.as_flattened().as_flattened()).unwrap();
    let want = net.forward_batch(batch).unwrap();
    let got = std::thread::scope(|s| {
        std::thread::Builder::new()
            .stack_size(SMALL_STACK)
            .spawn_scoped(s, || net.forward(&image))
            .unwrap()
            .join()
            .unwrap()
    });
    assert_eq!(bits(got.as_flattened().as_flattened()), bits(&want));
}
