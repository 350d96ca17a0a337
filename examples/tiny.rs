//! The network from the README: declare it, print its summary, run one sample.
//!
//! `cargo run --release --example tiny`

use cnn::{cnn, Model};

cnn! {
    /// The design card's network: one conv block and a classifier.
    pub struct TinyNet {
        input(3, 32, 32)
        conv(3 -> 16, k3, p1) bn relu maxpool(2) fc(10)
    }
}

fn main() {
    let net = TinyNet::seeded(42);
    println!("{}", net.summary());
    println!();
    println!("PyTorch twin:\n{}", TinyNet::TORCH);

    // A smooth test pattern: channel c holds sin(x + c) · cos(y).
    let mut image = [[[0.0f32; 32]; 32]; 3];
    for (c, plane) in image.iter_mut().enumerate() {
        for (y, row) in plane.iter_mut().enumerate() {
            for (x, v) in row.iter_mut().enumerate() {
                *v = ((x as f32 / 5.0) + c as f32).sin() * (y as f32 / 7.0).cos();
            }
        }
    }
    let logits: [f32; 10] = net.forward(&image);
    let best = logits
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
        .unwrap_or(0);
    println!();
    println!("logits: {logits:?}");
    println!("argmax: class {best}");
    println!(
        "{} parameters, {} MACs per sample",
        TinyNet::PARAMS,
        TinyNet::MACS
    );
}
