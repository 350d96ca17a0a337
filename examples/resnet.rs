//! ResNet-18 (torchvision's architecture) declared in `cnn!`: print its summary, check the
//! parameter and multiply-accumulate counts against torchvision's, and time one forward pass.
//!
//! `cargo run --release --example resnet`
//!
//! The weights here are PyTorch's default initialisation from a seed. To run torchvision's
//! trained ResNet-18, save its `state_dict` under this network's keys (`docs/pytorch.md` shows
//! the renaming) and load it with `Resnet18::from_safetensors`.

use std::time::Instant;

use cnn::{cnn, Model};

cnn! {
    /// ResNet-18: a 7×7 stem, four stages of two basic blocks (projection shortcuts where the
    /// shape changes), global average pooling and a 1000-way classifier.
    pub struct Resnet18 {
        input(3, 224, 224)
        conv(3 -> 64, k7, s2, p3, nobias) bn relu maxpool(k3, s2, p1)
        residual { conv(64 -> 64, k3, p1, nobias) bn relu conv(64 -> 64, k3, p1, nobias) bn } relu
        residual { conv(64 -> 64, k3, p1, nobias) bn relu conv(64 -> 64, k3, p1, nobias) bn } relu
        residual(shortcut { conv(64 -> 128, k1, s2, nobias) bn }) {
            conv(64 -> 128, k3, s2, p1, nobias) bn relu conv(128 -> 128, k3, p1, nobias) bn
        } relu
        residual { conv(128 -> 128, k3, p1, nobias) bn relu conv(128 -> 128, k3, p1, nobias) bn } relu
        residual(shortcut { conv(128 -> 256, k1, s2, nobias) bn }) {
            conv(128 -> 256, k3, s2, p1, nobias) bn relu conv(256 -> 256, k3, p1, nobias) bn
        } relu
        residual { conv(256 -> 256, k3, p1, nobias) bn relu conv(256 -> 256, k3, p1, nobias) bn } relu
        residual(shortcut { conv(256 -> 512, k1, s2, nobias) bn }) {
            conv(256 -> 512, k3, s2, p1, nobias) bn relu conv(512 -> 512, k3, p1, nobias) bn
        } relu
        residual { conv(512 -> 512, k3, p1, nobias) bn relu conv(512 -> 512, k3, p1, nobias) bn } relu
        gap fc(1000)
    }
}

fn main() {
    let net = Resnet18::seeded(0);
    println!("{}", net.summary());
    println!();
    // torchvision.models.resnet18(): sum(p.numel() for p in m.parameters()), and the MACs of
    // its convolutions and final linear layer on one 224×224 image.
    assert_eq!(Resnet18::PARAMS, 11_689_512);
    assert_eq!(Resnet18::MACS, 1_814_073_344);
    println!(
        "{} parameters and {} multiply-accumulates per 224×224 image, as torchvision's resnet18",
        Resnet18::PARAMS,
        Resnet18::MACS
    );

    // A smooth test image, boxed: 600 KB is better off the stack.
    let mut image = vec![[[0.0f32; 224]; 224]; 3];
    for (c, plane) in image.iter_mut().enumerate() {
        for (y, row) in plane.iter_mut().enumerate() {
            for (x, v) in row.iter_mut().enumerate() {
                *v = ((x as f32 / 17.0) + c as f32).sin() * (y as f32 / 23.0).cos();
            }
        }
    }
    let image: Box<[[[f32; 224]; 224]; 3]> = match image.into_boxed_slice().try_into() {
        Ok(image) => image,
        Err(_) => unreachable!("three planes"),
    };
    let logits = net.forward(&image); // the first call also prepares the kernels' weights
    let start = Instant::now();
    let runs = 5;
    for _ in 0..runs {
        std::hint::black_box(net.forward(std::hint::black_box(&image)));
    }
    let ms = start.elapsed().as_secs_f64() * 1e3 / runs as f64;
    let best = (0..logits.len())
        .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
        .unwrap_or(0);
    println!("one forward pass: {ms:.1} ms on one thread (mean of {runs}); argmax class {best}");
}
