//! Embedded networks: `#[weights]` laid out at compile time as static data (`Net::EMBEDDED`),
//! and `forward_in` on the caller's slices. The same networks loaded at run time are the
//! reference: an embedded network must equal them and compute the same bits.

use cnn::ndarray::Array4;
use cnn::optim::Sgd;
use cnn::{cnn, Loss, Model, SliceError, SliceModel, Train};
use safetensors::SafeTensors;

cnn! {
    #[weights = "models/digits.safetensors"]
    struct Digits {
        input(1, 8, 8)
        conv(1 -> 16, k3, p1) relu conv(16 -> 32, k3, p1) relu maxpool(2) fc(64) relu fc(10)
    }
    /// `resnet20_cifar` of tests/data: a direct stem, Winograd 3×3 layers, batch norms folded
    /// at compile time, residual blocks with projection shortcuts.
    #[weights = "tests/data/resnet20_cifar.safetensors"]
    struct Resnet20Cifar {
        input(3, 32, 32) conv(3 -> 16, k3, p1, nobias) bn relu residual { conv(16 -> 16, k3, p1, nobias) bn relu conv(16 -> 16, k3, p1, nobias) bn } relu residual { conv(16 -> 16, k3, p1, nobias) bn relu conv(16 -> 16, k3, p1, nobias) bn } relu residual { conv(16 -> 16, k3, p1, nobias) bn relu conv(16 -> 16, k3, p1, nobias) bn } relu residual(shortcut { conv(16 -> 32, k1, s2, nobias) bn }) { conv(16 -> 32, k3, s2, p1, nobias) bn relu conv(32 -> 32, k3, p1, nobias) bn } relu residual { conv(32 -> 32, k3, p1, nobias) bn relu conv(32 -> 32, k3, p1, nobias) bn } relu residual { conv(32 -> 32, k3, p1, nobias) bn relu conv(32 -> 32, k3, p1, nobias) bn } relu residual(shortcut { conv(32 -> 64, k1, s2, nobias) bn }) { conv(32 -> 64, k3, s2, p1, nobias) bn relu conv(64 -> 64, k3, p1, nobias) bn } relu residual { conv(64 -> 64, k3, p1, nobias) bn relu conv(64 -> 64, k3, p1, nobias) bn } relu residual { conv(64 -> 64, k3, p1, nobias) bn relu conv(64 -> 64, k3, p1, nobias) bn } relu gap fc(10)
    }
    /// `inception_like` of tests/data: concatenations with an identity branch, 5×5 and
    /// pooling branches.
    #[weights = "tests/data/inception_like.safetensors"]
    struct InceptionLike {
        input(3, 32, 32) conv(3 -> 16, k3, p1, nobias) bn relu maxpool(2) concat { branch { conv(16 -> 8, k1) bn relu } branch { conv(16 -> 8, k1) bn relu conv(8 -> 12, k3, p1) bn relu } branch { conv(16 -> 4, k1) bn relu conv(4 -> 6, k5, p2) bn relu } branch { maxpool(k3, s1, p1) conv(16 -> 6, k1) bn relu } branch {} } maxpool(2) concat { branch { conv(48 -> 8, k1) bn relu } branch { conv(48 -> 8, k1) bn relu conv(8 -> 12, k3, p1) bn relu } branch { conv(48 -> 4, k1) bn relu conv(4 -> 6, k5, p2) bn relu } branch { maxpool(k3, s1, p1) conv(48 -> 6, k1) bn relu } branch {} } gap fc(10)
    }
    /// `mobilenetv3_small_like` of tests/data: depthwise convolutions, hardswish.
    #[weights = "tests/data/mobilenetv3_small_like.safetensors"]
    struct Mobilenetv3SmallLike {
        input(3, 64, 64) conv(3 -> 8, k3, s2, p1, nobias) bn hardswish conv(8 -> 8, k3, s2, p1, g8, nobias) bn relu conv(8 -> 8, k1, nobias) bn conv(8 -> 24, k1, nobias) bn relu conv(24 -> 24, k3, s2, p1, g24, nobias) bn relu conv(24 -> 12, k1, nobias) bn residual { conv(12 -> 36, k1, nobias) bn relu conv(36 -> 36, k3, p1, g36, nobias) bn relu conv(36 -> 12, k1, nobias) bn } conv(12 -> 36, k1, nobias) bn hardswish conv(36 -> 36, k5, s2, p2, g36, nobias) bn hardswish conv(36 -> 16, k1, nobias) bn residual { conv(16 -> 48, k1, nobias) bn hardswish conv(48 -> 48, k5, p2, g48, nobias) bn hardsigmoid conv(48 -> 16, k1, nobias) bn } residual { conv(16 -> 32, k1, nobias) bn hardswish conv(32 -> 32, k3, p1, g32, nobias) bn hardswish conv(32 -> 16, k1, nobias) bn } conv(16 -> 48, k1, nobias) bn hardswish gap fc(32) hardswish dropout(0.2) fc(10)
    }
}

cnn! {
    /// Batch statistics over a 1×1 map: one value per channel for a single sample.
    struct OnePixel {
        input(4, 1, 1) conv(4 -> 3, k1) bn(track_running_stats=false) fc(2)
    }
}

/// The embedded value of `Digits` is a constant usable in a `static`, as on a microcontroller.
static NET: &Digits = Digits::EMBEDDED;

const SPLIT: &[u8] = include_bytes!("../models/digits_test.safetensors");

fn tensor<T>(st: &SafeTensors<'_>, key: &str, size: usize, f: impl Fn(&[u8]) -> T) -> Vec<T> {
    st.tensor(key)
        .unwrap()
        .data()
        .chunks_exact(size)
        .map(f)
        .collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|v| v.to_bits()).collect()
}

/// A deterministic input of `len` values in [−1, 1).
fn input(len: usize, seed: u32) -> Vec<f32> {
    (0..len as u32)
        .map(|i| {
            let h = (i ^ seed.wrapping_mul(0x9E37_79B9)).wrapping_mul(0x85EB_CA6B);
            ((h >> 8) as f32 / (1 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

#[test]
fn the_embedded_digits_agree_with_pytorch_on_every_test_image() {
    let st = SafeTensors::deserialize(SPLIT).unwrap();
    let images = tensor(&st, "images", 4, |b| {
        f32::from_le_bytes(b.try_into().unwrap())
    });
    let torch = tensor(&st, "predictions", 8, |b| {
        i64::from_le_bytes(b.try_into().unwrap())
    });
    let mut ws = [0f32; Digits::WORKSPACE_LEN];
    let mut out = [0f32; Digits::OUTPUT_LEN];
    for (i, image) in images.chunks_exact(Digits::INPUT_LEN).enumerate() {
        NET.forward_in(image, &mut out, &mut ws).unwrap();
        let predicted = (0..10).max_by(|&a, &b| out[a].total_cmp(&out[b])).unwrap() as i64;
        assert_eq!(predicted, torch[i], "image {i}");
        let mut chw = [[[0f32; 8]; 8]; 1];
        chw.as_flattened_mut()
            .as_flattened_mut()
            .copy_from_slice(image);
        assert_eq!(
            bits(&out),
            bits(&NET.forward(&chw)),
            "image {i}: forward_in vs forward"
        );
    }
}

#[test]
fn the_embedded_value_is_the_loaded_network() {
    let loaded = Digits::from_safetensors(include_bytes!("../models/digits.safetensors")).unwrap();
    assert_eq!(*Digits::EMBEDDED, loaded);
    assert!(std::ptr::eq(Digits::embedded(), Digits::EMBEDDED));
    // The state_dict written from the static data loads back to the same network.
    let again = Digits::from_safetensors(&Digits::EMBEDDED.to_safetensors()).unwrap();
    assert_eq!(again, loaded);

    fn same<M: Model + SliceModel + PartialEq>(embedded: &M, file: &[u8]) {
        let loaded = M::from_safetensors(file).unwrap();
        assert!(*embedded == loaded, "{}: embedded != loaded", M::NAME);
        let mut ws = vec![f32::NAN; M::WORKSPACE_LEN];
        let (mut a, mut b) = (vec![0.0; M::OUTPUT_LEN], vec![0.0; M::OUTPUT_LEN]);
        for seed in 0..3 {
            let x = input(M::INPUT_LEN, seed);
            embedded.forward_in(&x, &mut a, &mut ws).unwrap();
            loaded.forward_in(&x, &mut b, &mut ws).unwrap();
            assert_eq!(bits(&a), bits(&b), "{}: seed {seed}", M::NAME);
            let [c, h, w] = M::INPUT_SHAPE;
            let batch = Array4::from_shape_vec((1, c, h, w), x).unwrap();
            let e = embedded.forward_batch(batch.view()).unwrap();
            let l = loaded.forward_batch(batch.view()).unwrap();
            assert_eq!(bits(e.as_slice().unwrap()), bits(l.as_slice().unwrap()));
            assert_eq!(
                bits(&a),
                bits(e.as_slice().unwrap()),
                "{}: forward_in vs batch",
                M::NAME
            );
        }
        assert_eq!(
            embedded.to_safetensors(),
            loaded.to_safetensors(),
            "{}",
            M::NAME
        );
    }
    same(
        Resnet20Cifar::EMBEDDED,
        include_bytes!("data/resnet20_cifar.safetensors"),
    );
    same(
        InceptionLike::EMBEDDED,
        include_bytes!("data/inception_like.safetensors"),
    );
    same(
        Mobilenetv3SmallLike::EMBEDDED,
        include_bytes!("data/mobilenetv3_small_like.safetensors"),
    );
}

#[test]
fn training_a_copy_of_an_embedded_network_leaves_the_static_one_alone() {
    let mut net = Resnet20Cifar::EMBEDDED.clone();
    let x = Array4::from_shape_fn((2, 3, 32, 32), |(n, c, h, w)| {
        ((n * 31 + c * 7 + h * 3 + w) % 11) as f32 / 11.0 - 0.5
    });
    let y = cnn::ndarray::Array1::from(vec![3, 7]);
    let before = net.forward_batch(x.view()).unwrap();
    let mut opt = Sgd::new(0.1);
    net.train_step(x.view(), y.view(), Loss::CrossEntropy, &mut opt)
        .unwrap();
    assert_ne!(net, *Resnet20Cifar::EMBEDDED);
    // The copy now runs its own weights (the static layouts were replaced) ...
    let after = net.forward_batch(x.view()).unwrap();
    assert_ne!(after, before);
    let reloaded = Resnet20Cifar::from_safetensors(&net.to_safetensors()).unwrap();
    assert_eq!(
        bits(after.as_slice().unwrap()),
        bits(
            reloaded
                .forward_batch(x.view())
                .unwrap()
                .as_slice()
                .unwrap()
        )
    );
    // ... and the static network is untouched.
    assert_eq!(
        bits(
            Resnet20Cifar::EMBEDDED
                .forward_batch(x.view())
                .unwrap()
                .as_slice()
                .unwrap()
        ),
        bits(before.as_slice().unwrap())
    );
}

#[test]
fn wrong_slices_are_refused_with_the_lengths() {
    let mut ws = vec![0.0; Digits::WORKSPACE_LEN];
    let (x, mut out) = ([0.5f32; 64], [0f32; 10]);
    assert_eq!(
        NET.forward_in(&x[..63], &mut out, &mut ws),
        Err(SliceError::Input {
            expected: 64,
            found: 63
        })
    );
    assert_eq!(
        NET.forward_in(&x, &mut out[..9], &mut ws),
        Err(SliceError::Output {
            expected: 10,
            found: 9
        })
    );
    let e = NET.forward_in(&x, &mut out, &mut ws[..100]).unwrap_err();
    assert_eq!(
        e,
        SliceError::Workspace {
            expected: Digits::WORKSPACE_LEN,
            found: 100
        }
    );
    assert_eq!(
        e.to_string(),
        format!(
            "workspace slice has 100 values, expected at least {}",
            Digits::WORKSPACE_LEN
        )
    );
    let e: cnn::Error = e.into();
    assert!(
        e.to_string().starts_with("workspace: expected at least"),
        "{e}"
    );
}

#[test]
fn batch_statistics_of_one_value_are_refused_not_computed() {
    let net = OnePixel::seeded(0);
    let mut ws = vec![0.0; OnePixel::WORKSPACE_LEN];
    let mut out = [f32::NAN; 2];
    let e = net.forward_in(&[0.5; 4], &mut out, &mut ws).unwrap_err();
    assert_eq!(
        e,
        SliceError::BatchStatistics {
            layer: "1",
            channels: 3
        }
    );
    assert!(e.to_string().contains("[1, 3, 1, 1]"), "{e}");
    let batch = Array4::from_elem((1, 4, 1, 1), 0.5);
    assert_eq!(
        net.forward_batch(batch.view()).unwrap_err(),
        cnn::Error::from(e),
        "forward_batch and forward_in refuse alike"
    );
}
