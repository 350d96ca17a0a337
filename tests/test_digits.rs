//! Train in PyTorch, ship in Rust: the embedded digits model reproduces PyTorch's predictions.
//!
//! Produced by `tools/train_digits.py` (PyTorch 2.15, scikit-learn's 8x8 digits, seed 0):
//! `models/digits.safetensors` and the test split with PyTorch's logits and predictions.

use cnn::{cnn, Model, Precision};
use safetensors::SafeTensors;

cnn! {
    #[weights = "models/digits.safetensors"]
    struct Digits {
        input(1, 8, 8)
        conv(1 -> 16, k3, p1) relu conv(16 -> 32, k3, p1) relu maxpool(2) fc(64) relu fc(10)
    }
}

cnn! {
    #[weights = "models/digits.safetensors"]
    #[precision(bf16)]
    struct DigitsBf16 {
        input(1, 8, 8)
        conv(1 -> 16, k3, p1) relu conv(16 -> 32, k3, p1) relu maxpool(2) fc(64) relu fc(10)
    }
}

const SPLIT: &[u8] = include_bytes!("../models/digits_test.safetensors");
const WEIGHTS: &[u8] = include_bytes!("../models/digits.safetensors");

fn f32s(st: &SafeTensors<'_>, key: &str) -> Vec<f32> {
    st.tensor(key)
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn i64s(st: &SafeTensors<'_>, key: &str) -> Vec<i64> {
    st.tensor(key)
        .unwrap()
        .data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

fn batch() -> cnn::ndarray::Array4<f32> {
    let st = SafeTensors::deserialize(SPLIT).unwrap();
    let pixels = f32s(&st, "images");
    let n = pixels.len() / 64;
    cnn::ndarray::Array4::from_shape_vec((n, 1, 8, 8), pixels).unwrap()
}

#[test]
fn predictions_equal_pytorch_on_every_test_image() {
    let st = SafeTensors::deserialize(SPLIT).unwrap();
    let labels = i64s(&st, "labels");
    let torch = i64s(&st, "predictions");
    let torch_logits = f32s(&st, "logits");
    let logits = Digits::embedded().forward_batch(batch().view()).unwrap();
    assert_eq!(logits.shape(), [labels.len(), 10]);
    let mut correct = 0;
    for (i, row) in logits.outer_iter().enumerate() {
        let predicted = (0..10).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap() as i64;
        assert_eq!(
            predicted, torch[i],
            "image {i}: PyTorch predicted {}",
            torch[i]
        );
        correct += usize::from(predicted == labels[i]);
        for (k, (&ours, &theirs)) in row.iter().zip(&torch_logits[i * 10..]).enumerate() {
            assert!(
                (ours - theirs).abs() <= 1e-4 * (1.0 + theirs.abs()),
                "image {i} logit {k}: {ours} vs {theirs}"
            );
        }
    }
    let accuracy = correct as f64 / labels.len() as f64;
    assert!(accuracy >= 0.95, "accuracy {accuracy}");
}

#[test]
fn embedded_and_loaded_models_are_bit_identical() {
    let loaded = Digits::from_safetensors(WEIGHTS).unwrap();
    let embedded = Digits::embedded();
    assert_eq!(&loaded, embedded);
    let x = batch();
    assert_eq!(
        loaded.forward_batch(x.view()).unwrap(),
        embedded.forward_batch(x.view()).unwrap()
    );
    assert!(
        std::ptr::eq(embedded, Digits::embedded()),
        "later calls return the same model"
    );
}

#[test]
fn the_torch_twin_is_the_trained_architecture() {
    let meta = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/models/digits.json"))
        .unwrap();
    let meta: serde_json::Value = serde_json::from_str(&meta).unwrap();
    assert_eq!(meta["torch"].as_str().unwrap(), Digits::TORCH);
}

#[test]
fn in_bf16_the_predictions_differ_on_at_most_two_images() {
    let st = SafeTensors::deserialize(SPLIT).unwrap();
    let torch = i64s(&st, "predictions");
    let net = Digits::embedded().clone().with_precision(Precision::Bf16);
    assert_eq!(net.precision(), Precision::Bf16);
    assert_eq!(Digits::embedded().precision(), Precision::F32);
    let f32_logits = Digits::embedded().forward_batch(batch().view()).unwrap();
    let logits = net.forward_batch(batch().view()).unwrap();
    assert_ne!(logits, f32_logits, "bf16 computed exactly as f32");
    let mut differ = Vec::new();
    let mut worst = 0.0f32;
    for (i, (row, f)) in logits.outer_iter().zip(f32_logits.outer_iter()).enumerate() {
        let predicted = (0..10).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap() as i64;
        if predicted != torch[i] {
            differ.push(i);
        }
        let scale = f.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        for (&ours, &exact) in row.iter().zip(f.iter()) {
            worst = worst.max((ours - exact).abs() / (1.0 + scale));
        }
    }
    eprintln!("bf16: {} of {} predictions differ ({differ:?}); worst logit error {worst:.2e} of the row's largest", differ.len(), torch.len());
    assert!(
        differ.len() <= 2,
        "images {differ:?} changed prediction in bf16"
    );
    // Four layers in bf16: 2⁻⁸ per layer of the row's scale at most.
    assert!(worst <= 4.0 * 2f32.powi(-8), "worst logit error {worst}");
}

#[test]
fn a_network_declared_bf16_starts_in_bf16_everywhere() {
    let runtime = Digits::embedded().clone().with_precision(Precision::Bf16);
    let want = runtime.forward_batch(batch().view()).unwrap();
    // The constant (its bf16 weights laid out by the macro), a clone of it, and the network
    // loaded or seeded at run time all compute in bf16, bit for bit as set at run time.
    assert_eq!(DigitsBf16::EMBEDDED.precision(), Precision::Bf16);
    // The constant converts nothing at run time: its three layers that multiply in bf16 (the
    // Winograd convolution and both fc; the 9-tap first convolution stays f32) carry their
    // bf16 weights in static data, and the f32 constant none.
    let statics = |net: &dyn std::fmt::Debug| format!("{net:?}").matches("Static(").count();
    assert_eq!(statics(DigitsBf16::EMBEDDED), 3);
    assert_eq!(statics(Digits::EMBEDDED), 0);
    assert_eq!(
        DigitsBf16::EMBEDDED.forward_batch(batch().view()).unwrap(),
        want
    );
    let clone = DigitsBf16::EMBEDDED.clone();
    for _ in 0..2 {
        assert_eq!(clone.forward_batch(batch().view()).unwrap(), want);
    }
    let loaded = DigitsBf16::from_safetensors(WEIGHTS).unwrap();
    assert_eq!(loaded.precision(), Precision::Bf16);
    assert_eq!(loaded.forward_batch(batch().view()).unwrap(), want);
    assert_eq!(DigitsBf16::seeded(1).precision(), Precision::Bf16);
    let back = loaded.with_precision(Precision::F32);
    assert_eq!(
        back.forward_batch(batch().view()).unwrap(),
        Digits::embedded().forward_batch(batch().view()).unwrap()
    );
}
