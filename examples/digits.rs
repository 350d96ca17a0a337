//! Train in PyTorch, ship in Rust: a digit classifier whose weights are embedded in the binary and
//! checked against the architecture at compile time.
//!
//! `tools/train_digits.py` trained the PyTorch twin of `Digits` (`Digits::TORCH`) on
//! scikit-learn's 8x8 digits and saved `models/digits.safetensors` plus the test split.
//!
//! `cargo run --release --example digits`
//!
//! It also runs the same network declared `#[precision(bf16)]`, whose bf16 weights the macro
//! converted at compile time, and counts the predictions that match the f32 network's.
//!
//! With `--predictions` it prints only the predicted class of each test image, one per line
//! (`embedded/run.sh` compares them with the C program's that links the `no_std` model).

use cnn::{cnn, Model, Precision};
use safetensors::SafeTensors;

cnn! {
    /// A LeNet-style classifier for 8x8 grey-scale digits.
    #[weights = "models/digits.safetensors"]
    pub struct Digits {
        input(1, 8, 8)
        conv(1 -> 16, k3, p1) relu conv(16 -> 32, k3, p1) relu maxpool(2) fc(64) relu fc(10)
    }
}

cnn! {
    /// The same classifier multiplying in bf16 (f32 sums), its bf16 weights in static data.
    #[weights = "models/digits.safetensors"]
    #[precision(bf16)]
    pub struct DigitsBf16 {
        input(1, 8, 8)
        conv(1 -> 16, k3, p1) relu conv(16 -> 32, k3, p1) relu maxpool(2) fc(64) relu fc(10)
    }
}

/// The class with the largest logit.
fn argmax(logits: &[f32; 10]) -> i64 {
    (0..10)
        .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
        .unwrap_or(0) as i64
}

/// The held-out test split, with PyTorch's predictions.
static TEST_SPLIT: &[u8] = include_bytes!("../models/digits_test.safetensors");

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn i64s(bytes: &[u8]) -> Vec<i64> {
    bytes
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().expect("chunks of 8")))
        .collect()
}

fn draw(image: &[[f32; 8]; 8]) -> Vec<String> {
    const SHADES: [char; 5] = [' ', '.', ':', '#', '@'];
    image
        .iter()
        .map(|row| {
            row.iter()
                .map(|&v| SHADES[((v * 4.0).round() as usize).min(4)])
                .flat_map(|c| [c, c])
                .collect()
        })
        .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let predictions_only = match std::env::args().nth(1).as_deref() {
        None => false,
        Some("--predictions") => true,
        Some(other) => {
            return Err(format!("unknown argument {other:?} (only --predictions)").into())
        }
    };
    let net: &'static Digits = Digits::embedded();
    let net_bf16: &'static DigitsBf16 = DigitsBf16::EMBEDDED;
    assert_eq!(net_bf16.precision(), Precision::Bf16);
    let split = SafeTensors::deserialize(TEST_SPLIT)?;
    let pixels = f32s(split.tensor("images")?.data());
    let labels = i64s(split.tensor("labels")?.data());
    let torch_predictions = i64s(split.tensor("predictions")?.data());

    let mut correct = 0;
    let mut agree = 0;
    let mut agree_bf16 = 0;
    let mut shown = Vec::new();
    for (i, (&label, &torch)) in labels.iter().zip(&torch_predictions).enumerate() {
        let mut image = [[[0.0f32; 8]; 8]; 1];
        image
            .as_flattened_mut()
            .as_flattened_mut()
            .copy_from_slice(&pixels[i * 64..(i + 1) * 64]);
        let predicted = argmax(&net.forward(&image));
        if predictions_only {
            println!("{predicted}");
            continue;
        }
        correct += usize::from(predicted == label);
        agree += usize::from(predicted == torch);
        agree_bf16 += usize::from(argmax(&net_bf16.forward(&image)) == predicted);
        if shown.len() < 4 && (i % 37 == 0 || predicted != label) {
            shown.push((draw(&image[0]), label, predicted));
        }
    }

    if predictions_only {
        return Ok(());
    }
    for (rows, label, predicted) in &shown {
        for row in rows {
            println!("  |{row}|");
        }
        let mark = if label == predicted { "" } else { "  <- wrong" };
        println!("  label {label}, predicted {predicted}{mark}\n");
    }
    let n = labels.len();
    println!(
        "accuracy {:.2}% on {n} test images ({correct} correct); {agree}/{n} predictions equal PyTorch's",
        100.0 * correct as f64 / n as f64
    );
    println!("in bf16: {agree_bf16}/{n} predictions equal the f32 network's");
    Ok(())
}
