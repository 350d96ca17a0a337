//! Train in Rust: the `Digits` network of `examples/digits.rs`, trained from `seeded(0)` on part
//! of the committed training split (`models/digits_train.safetensors`, written by
//! `tools/export_digits_train.py`), classifies the held-out test split, and its saved weights
//! load back into the same network. `examples/train_digits.rs` is the full run (15 epochs,
//! 97.8%).
//!
//! A training step costs about 25 ms per image in a debug build (the GEMMs are unoptimised), a
//! full epoch over 1,347 images about 33 s, so this test makes one pass over 896 of them in
//! batches of 8: in release builds that pass reached 84% to 92% test accuracy over six shuffle
//! seeds (84.2% with the seed used here), from 10% before training.

use cnn::ndarray::{Array1, Array2, Array4, Axis};
use cnn::optim::Adam;
use cnn::{cnn, Loss, Model, Train};
use safetensors::{Dtype, SafeTensors};

cnn! {
    struct Digits {
        input(1, 8, 8)
        conv(1 -> 16, k3, p1) relu conv(16 -> 32, k3, p1) relu maxpool(2) fc(64) relu fc(10)
    }
}

const TRAIN_SPLIT: &[u8] = include_bytes!("../models/digits_train.safetensors");
const TEST_SPLIT: &[u8] = include_bytes!("../models/digits_test.safetensors");

/// Steps of training: few enough for a debug build, enough for the accuracy asserted below.
const STEPS: usize = 112;
const BATCH: usize = 8;

fn split(bytes: &[u8]) -> (Array4<f32>, Array1<usize>) {
    let st = SafeTensors::deserialize(bytes).unwrap();
    let images = st.tensor("images").unwrap();
    let labels = st.tensor("labels").unwrap();
    assert_eq!(images.dtype(), Dtype::F32);
    assert_eq!(labels.dtype(), Dtype::I64);
    let n = labels.shape()[0];
    assert_eq!(images.shape(), [n, 1, 8, 8]);
    let pixels: Vec<f32> = images
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let labels: Vec<usize> = labels
        .data()
        .chunks_exact(8)
        .map(|b| usize::try_from(i64::from_le_bytes(b.try_into().unwrap())).unwrap())
        .collect();
    (
        Array4::from_shape_vec((n, 1, 8, 8), pixels).unwrap(),
        Array1::from(labels),
    )
}

fn predictions(logits: &Array2<f32>) -> Vec<usize> {
    logits
        .outer_iter()
        .map(|row| (0..10).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap())
        .collect()
}

/// A deterministic permutation of `0..n` per epoch (SplitMix64 and Fisher-Yates).
fn shuffled(n: usize, state: &mut u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        order.swap(i, (z % (i as u64 + 1)) as usize);
    }
    order
}

#[test]
fn the_committed_split_is_the_one_the_tools_describe() {
    let (train_x, train_y) = split(TRAIN_SPLIT);
    let (test_x, test_y) = split(TEST_SPLIT);
    assert_eq!((train_x.dim().0, test_x.dim().0), (1347, 450));
    // Stratified: every digit appears in both halves in the dataset's proportions.
    for digit in 0..10 {
        let train = train_y.iter().filter(|&&y| y == digit).count();
        let test = test_y.iter().filter(|&&y| y == digit).count();
        assert!(
            (131..=137).contains(&train),
            "digit {digit}: {train} training images"
        );
        assert!(
            (43..=46).contains(&test),
            "digit {digit}: {test} test images"
        );
    }
    // Pixels are sklearn's 0..=16 divided by 16.
    assert!(train_x
        .iter()
        .all(|&v| (0.0..=1.0).contains(&v) && (v * 16.0).fract() == 0.0));
}

#[test]
fn training_from_seeded_reaches_80_percent_and_the_weights_round_trip() {
    let (train_x, train_y) = split(TRAIN_SPLIT);
    let (test_x, test_y) = split(TEST_SPLIT);
    let mut net = Digits::seeded(0);
    let mut opt = Adam::new(3e-3);
    let order = shuffled(train_y.len(), &mut 1);
    let mut losses = Vec::new();
    for idx in order.chunks(BATCH).take(STEPS) {
        let x = train_x.select(Axis(0), idx);
        let y = train_y.select(Axis(0), idx);
        let loss = net
            .train_step(x.view(), y.view(), Loss::CrossEntropy, &mut opt)
            .unwrap();
        losses.push(loss);
    }
    assert_eq!(losses.len(), STEPS);
    // The first step's loss is the seeded network's: about ln 10 for ten classes.
    assert!((losses[0] - 10f32.ln()).abs() < 0.2, "losses {losses:?}");
    let mean = |l: &[f32]| l.iter().sum::<f32>() / l.len() as f32;
    let (first, last) = (mean(&losses[..16]), mean(&losses[STEPS - 16..]));
    assert!(
        last < 0.4 * first,
        "mean loss of the first 16 steps {first}, of the last 16 {last}: {losses:?}"
    );

    let logits = net.forward_batch(test_x.view()).unwrap();
    let (test_loss, _) = Loss::CrossEntropy
        .compute(logits.view(), test_y.view())
        .unwrap();
    let predicted = predictions(&logits);
    let correct = predicted
        .iter()
        .zip(&test_y)
        .filter(|(p, y)| p == y)
        .count();
    let accuracy = correct as f64 / test_y.len() as f64;
    println!(
        "{STEPS} steps of {BATCH}: loss {first:.3} -> {last:.3} (means of 16 steps), test loss \
         {test_loss:.3}, test accuracy {:.2}%",
        100.0 * accuracy
    );
    assert!(
        accuracy >= 0.80 && test_loss < 0.3 * 10f32.ln(),
        "test accuracy {accuracy}, loss {test_loss} after {STEPS} steps"
    );

    // The saved weights are the trained network: equal tensors, bit-identical outputs.
    let loaded = Digits::from_safetensors(&net.to_safetensors()).unwrap();
    assert_eq!(loaded, net);
    assert_ne!(loaded, Digits::seeded(0));
    let reloaded_logits = loaded.forward_batch(test_x.view()).unwrap();
    assert_eq!(reloaded_logits, logits);
    assert_eq!(predictions(&reloaded_logits), predicted);
}
