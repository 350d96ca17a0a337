//! Train in Rust, ship to PyTorch: the `Digits` network of `examples/digits.rs`, trained from
//! `Digits::seeded(0)` on the 1,347 training images of scikit-learn's 8x8 digits.
//!
//! Each epoch shuffles the training images (a fixed seed, so every run is the same), takes
//! mini-batches of 32 through [`Train::train_step`] with cross-entropy and [`Adam`], lowers the
//! learning rate along a cosine over the epochs ([`CosineAnnealingLr`]), and prints the mean
//! training loss, the accuracy on the 450 held-out test images and the epoch's time. About 5 s
//! in a release build; 97.78% at the end.
//!
//! At the end it writes two files:
//!
//! - `PATH` (default `digits_trained.safetensors` next to the executable, in `target/`): the
//!   trained weights, the `state_dict` of the PyTorch twin `Digits::TORCH`;
//! - the same path with the extension `.predictions.safetensors`: `predictions` I64 `[450]`
//!   and `logits` F32 `[450, 10]` on the test images, with `Digits::TORCH` in the metadata
//!   under `torch`; kept apart so that PyTorch's `load_state_dict(strict=True)` sees only the
//!   network's keys.
//!
//! `tools/check_trained_digits.py PATH` loads the weights into the PyTorch twin and checks that
//! it predicts the same class as Rust on all 450 test images.
//!
//! The data are committed: `models/digits_train.safetensors` (written by
//! `tools/export_digits_train.py`) and `models/digits_test.safetensors` (by
//! `tools/train_digits.py`), the two halves of one stratified split.
//!
//! `cargo run --release --example train_digits [-- PATH]`

use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use cnn::ndarray::{Array1, Array2, Array4, ArrayView1, ArrayView4, Axis};
use cnn::optim::{Adam, CosineAnnealingLr};
use cnn::{cnn, Loss, Model, Train};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

cnn! {
    /// A LeNet-style classifier for 8x8 grey-scale digits (as in `examples/digits.rs`).
    pub struct Digits {
        input(1, 8, 8)
        conv(1 -> 16, k3, p1) relu conv(16 -> 32, k3, p1) relu maxpool(2) fc(64) relu fc(10)
    }
}

/// `images` F32 [1347, 1, 8, 8] (pixels / 16) and `labels` I64 [1347].
static TRAIN_SPLIT: &[u8] = include_bytes!("../models/digits_train.safetensors");
/// `images` F32 [450, 1, 8, 8] and `labels` I64 [450] (and PyTorch's own model's outputs).
static TEST_SPLIT: &[u8] = include_bytes!("../models/digits_test.safetensors");

const EPOCHS: u64 = 15;
const BATCH: usize = 32;
const LR: f32 = 3e-3;
const SHUFFLE_SEED: u64 = 1;

/// A split: images `[N, 1, 8, 8]` and their class labels.
struct Split {
    images: Array4<f32>,
    labels: Array1<usize>,
}

/// Reads `images` and `labels` from a safetensors file, checking dtypes and shapes.
fn load_split(bytes: &[u8]) -> Result<Split, Box<dyn Error>> {
    let st = SafeTensors::deserialize(bytes)?;
    let images = st.tensor("images")?;
    let labels = st.tensor("labels")?;
    let n = labels.shape().first().copied().unwrap_or(0);
    if images.dtype() != Dtype::F32 || images.shape() != [n, 1, 8, 8] {
        return Err(format!(
            "`images` is {:?} {:?}, expected F32 [{n}, 1, 8, 8]",
            images.dtype(),
            images.shape()
        )
        .into());
    }
    if labels.dtype() != Dtype::I64 || labels.shape().len() != 1 {
        return Err(format!(
            "`labels` is {:?} {:?}, expected I64 [N]",
            labels.dtype(),
            labels.shape()
        )
        .into());
    }
    let pixels: Vec<f32> = images
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let labels = labels
        .data()
        .chunks_exact(8)
        .map(|b| {
            let v = i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
            usize::try_from(v)
                .ok()
                .filter(|&c| c < 10)
                .ok_or_else(|| format!("label {v} is not a digit"))
        })
        .collect::<Result<Vec<usize>, _>>()?;
    Ok(Split {
        images: Array4::from_shape_vec((n, 1, 8, 8), pixels)?,
        labels: Array1::from(labels),
    })
}

/// SplitMix64: a small deterministic generator for the shuffles.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Fisher-Yates.
    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next_u64() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}

/// The class with the largest logit in each row.
fn argmax_rows(logits: &Array2<f32>) -> Vec<usize> {
    logits
        .outer_iter()
        .map(|row| {
            (0..row.len())
                .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                .unwrap_or(0)
        })
        .collect()
}

/// The share of `predictions` equal to `labels`.
fn accuracy(predictions: &[usize], labels: ArrayView1<'_, usize>) -> f64 {
    let correct = predictions
        .iter()
        .zip(labels)
        .filter(|(p, l)| p == l)
        .count();
    correct as f64 / labels.len() as f64
}

/// One epoch over `split` in the order `order`: returns the mean training loss.
fn train_epoch(
    net: &mut Digits,
    opt: &mut Adam,
    split: &Split,
    order: &[usize],
) -> Result<f64, Box<dyn Error>> {
    let mut total = 0.0f64;
    for idx in order.chunks(BATCH) {
        let x = split.images.select(Axis(0), idx);
        let y = split.labels.select(Axis(0), idx);
        let loss = net.train_step(x.view(), y.view(), Loss::CrossEntropy, opt)?;
        total += f64::from(loss) * idx.len() as f64;
    }
    Ok(total / order.len() as f64)
}

/// The test logits, in inference mode.
fn evaluate(net: &Digits, images: ArrayView4<'_, f32>) -> Result<Array2<f32>, Box<dyn Error>> {
    Ok(net.forward_batch(images)?)
}

/// Serialises `(name, dtype, shape, little-endian bytes)` tensors as safetensors, with the
/// network's PyTorch twin in the metadata under `torch`.
fn to_safetensors(
    tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)],
) -> Result<Vec<u8>, Box<dyn Error>> {
    let views = tensors
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            Ok((*name, TensorView::new(*dtype, shape.clone(), bytes)?))
        })
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
    let metadata = [("torch".to_string(), Digits::TORCH.to_string())].into();
    Ok(safetensors::serialize(views, Some(metadata))?)
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Writes `bytes` to `path`, naming the path in the error.
fn write(path: &Path, bytes: &[u8]) -> Result<(), Box<dyn Error>> {
    std::fs::write(path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()).into())
}

fn run() -> Result<(), Box<dyn Error>> {
    let weights_path = match std::env::args_os().nth(1) {
        Some(path) => PathBuf::from(path),
        None => std::env::current_exe()?.with_file_name("digits_trained.safetensors"),
    };
    let predictions_path = weights_path.with_extension("predictions.safetensors");
    if let Some(dir) = weights_path.parent() {
        if !dir.as_os_str().is_empty() && !dir.is_dir() {
            return Err(format!("{} is not a directory", dir.display()).into());
        }
    }

    let train = load_split(TRAIN_SPLIT)?;
    let test = load_split(TEST_SPLIT)?;
    println!(
        "{} training images, {} test images; {} parameters; batch {BATCH}, {EPOCHS} epochs",
        train.labels.len(),
        test.labels.len(),
        Digits::PARAMS
    );

    let mut net = Digits::seeded(0);
    let mut opt = Adam::new(LR);
    let mut schedule = CosineAnnealingLr::new(f64::from(LR), EPOCHS, 0.0);
    let mut rng = SplitMix64(SHUFFLE_SEED);
    let mut order: Vec<usize> = (0..train.labels.len()).collect();

    let start = Instant::now();
    for epoch in 1..=EPOCHS {
        let t = Instant::now();
        rng.shuffle(&mut order);
        let lr = opt.lr();
        let loss = train_epoch(&mut net, &mut opt, &train, &order)?;
        let train_time = t.elapsed();
        let test_accuracy = accuracy(
            &argmax_rows(&evaluate(&net, test.images.view())?),
            test.labels.view(),
        );
        println!(
            "epoch {epoch:2}  lr {lr:.5}  loss {loss:.4}  test accuracy {:6.2}%  {:6.1} ms (train {:.1} ms)",
            100.0 * test_accuracy,
            t.elapsed().as_secs_f64() * 1e3,
            train_time.as_secs_f64() * 1e3,
        );
        opt.set_lr(schedule.step() as f32);
    }

    let logits = evaluate(&net, test.images.view())?;
    let predictions = argmax_rows(&logits);
    let correct = predictions
        .iter()
        .zip(&test.labels)
        .filter(|(p, l)| p == l)
        .count();
    println!(
        "trained in {:.2} s: accuracy {:.2}% on {} test images ({correct} correct)",
        start.elapsed().as_secs_f64(),
        100.0 * correct as f64 / predictions.len() as f64,
        predictions.len()
    );

    write(&weights_path, &net.to_safetensors())?;
    let n = predictions.len();
    let predictions_bytes = predictions
        .iter()
        .flat_map(|&p| (p as i64).to_le_bytes())
        .collect();
    let logits_bytes = logits.iter().flat_map(|v| v.to_le_bytes()).collect();
    write(
        &predictions_path,
        &to_safetensors(&[
            ("predictions", Dtype::I64, vec![n], predictions_bytes),
            ("logits", Dtype::F32, vec![n, 10], logits_bytes),
        ])?,
    )?;
    println!("weights:     {}", weights_path.display());
    println!("predictions: {}", predictions_path.display());
    println!(
        "check with:  python3 tools/check_trained_digits.py {}",
        weights_path.display()
    );
    Ok(())
}
