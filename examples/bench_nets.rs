//! Latency of the five benchmark networks of issue 4 (random weights), one JSON line per cell.
//!
//! ```text
//! cargo run --release --example bench_nets -- --net vgg --batch 1 --threads 1 --seconds 2
//! cargo run --release --example bench_nets -- --net all            # batch 1,64 × threads 1,2
//! cargo run --release --example bench_nets -- --torch all          # the PyTorch twins, as JSON
//! ```
//!
//! `--batch` and `--threads` take comma lists. Each cell warms up, then calls `forward_batch`
//! until `--seconds` have passed (at least 3 calls) and reports the median and minimum per call.
//! `--threads` sets `cnn::set_num_threads` for the cell. `bench/peers.py` reads `--torch` to
//! build the same nets in PyTorch.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use cnn::ndarray::Array4;
use cnn::{cnn, Model};

cnn! {
    /// `tiny`: one conv block and a classifier.
    pub struct Tiny {
        input(3, 32, 32)
        conv(3 -> 16, k3, p1) bn relu maxpool(2) fc(10)
    }
    /// `lenet5`: LeNet-5 with ReLU and max pooling.
    pub struct Lenet5 {
        input(1, 28, 28)
        conv(1 -> 6, k5, p2) relu maxpool(2) conv(6 -> 16, k5) relu maxpool(2)
        fc(120) relu fc(84) relu fc(10)
    }
    /// `vgg`: three VGG blocks on CIFAR-sized input.
    pub struct Vgg {
        input(3, 32, 32)
        conv(3 -> 64, k3, p1) bn relu conv(64 -> 64, k3, p1) bn relu maxpool(2)
        conv(64 -> 128, k3, p1) bn relu conv(128 -> 128, k3, p1) bn relu maxpool(2)
        conv(128 -> 256, k3, p1) bn relu conv(256 -> 256, k3, p1) bn relu maxpool(2)
        fc(10)
    }
    /// `stem224`: a ResNet-style stem on ImageNet-sized input.
    pub struct Stem224 {
        input(3, 224, 224)
        conv(3 -> 64, k7, s2, p3) bn relu maxpool(k3, s2, p1)
        conv(64 -> 128, k3, p1) bn relu maxpool(2)
        conv(128 -> 256, k3, p1) bn relu gap fc(1000)
    }
    /// `mobile`: MobileNet-style depthwise-separable blocks.
    pub struct Mobile {
        input(3, 64, 64)
        conv(3 -> 32, k3, s2, p1) bn relu conv(32 -> 32, k3, p1, g32) bn relu
        conv(32 -> 64, k1) bn relu conv(64 -> 64, k3, s2, p1, g64) bn relu
        conv(64 -> 128, k1) bn relu gap fc(10)
    }
}

const NETS: [&str; 5] = ["tiny", "lenet5", "vgg", "stem224", "mobile"];

struct Args {
    nets: Vec<String>,
    batches: Vec<usize>,
    threads: Vec<usize>,
    seconds: f64,
    torch: bool,
}

const USAGE: &str = "usage: bench_nets [--net NET|all] [--batch N[,N…]] [--threads T[,T…]] \
                     [--seconds S] [--torch NET|all]\n  NET: tiny, lenet5, vgg, stem224, mobile";

fn parse_list(flag: &str, v: &str) -> Result<Vec<usize>, String> {
    v.split(',')
        .map(|x| match x.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("`{flag}` expects positive integers, found `{v}`")),
        })
        .collect()
}

fn parse_nets(v: &str) -> Result<Vec<String>, String> {
    if v == "all" {
        return Ok(NETS.iter().map(|s| s.to_string()).collect());
    }
    v.split(',')
        .map(|x| {
            if NETS.contains(&x) {
                Ok(x.to_string())
            } else {
                Err(format!("unknown net `{x}`"))
            }
        })
        .collect()
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        nets: vec!["vgg".into()],
        batches: Vec::new(),
        threads: Vec::new(),
        seconds: 2.0,
        torch: false,
    };
    let mut all = false;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            return Err(String::new());
        }
        let value = it
            .next()
            .ok_or_else(|| format!("`{flag}` expects a value"))?;
        match flag.as_str() {
            "--net" | "--torch" => {
                all = value == "all";
                args.nets = parse_nets(&value)?;
                args.torch = flag == "--torch";
            }
            "--batch" => args.batches = parse_list(&flag, &value)?,
            "--threads" => args.threads = parse_list(&flag, &value)?,
            "--seconds" => {
                args.seconds = value
                    .parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && *s > 0.0)
                    .ok_or_else(|| {
                        format!("`--seconds` expects a positive number, found `{value}`")
                    })?
            }
            _ => return Err(format!("unknown flag `{flag}`")),
        }
    }
    if args.batches.is_empty() {
        args.batches = if all { vec![1, 64] } else { vec![1] };
    }
    if args.threads.is_empty() {
        args.threads = if all { vec![1, 2] } else { vec![1] };
    }
    Ok(args)
}

/// Per-call latencies of `forward_batch` on a `batch`-sample input.
fn time_net<M: Model>(batch: usize, seconds: f64) -> Result<Vec<f64>, cnn::Error> {
    let net = M::seeded(42);
    let [c, h, w] = M::INPUT_SHAPE;
    let x = Array4::from_shape_fn((batch, c, h, w), |(n, c, y, x)| {
        (((n * 31 + c * 17 + y * 7 + x * 3) % 29) as f32 / 14.0) - 1.0
    });
    // Warm-up: page in weights and scratch, settle the clock.
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_secs_f64(seconds * 0.2) {
        std::hint::black_box(net.forward_batch(x.view())?);
    }
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < 3 || start.elapsed() < Duration::from_secs_f64(seconds) {
        let t = Instant::now();
        std::hint::black_box(net.forward_batch(x.view())?);
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(times)
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn torch_line<M: Model>(name: &str) -> String {
    let [c, h, w] = M::INPUT_SHAPE;
    format!(
        "{{\"net\":{},\"input\":[{c},{h},{w}],\"macs\":{},\"params\":{},\"torch\":{}}}",
        json_str(name),
        M::MACS,
        M::PARAMS,
        json_str(M::TORCH)
    )
}

fn cell<M: Model>(name: &str, batch: usize, threads: usize, seconds: f64) -> String {
    cnn::set_num_threads(threads);
    let mut times = match time_net::<M>(batch, seconds) {
        Ok(t) => t,
        Err(e) => {
            return format!(
                "{{\"net\":{},\"batch\":{batch},\"threads\":{threads},\"error\":{}}}",
                json_str(name),
                json_str(&e.to_string())
            )
        }
    };
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let gemm = std::env::var("CNN_SIMD").unwrap_or_else(|_| "auto".into());
    let mut line = format!(
        "{{\"net\":{},\"batch\":{batch},\"threads\":{threads},\"median_ms\":{median:.4},\
         \"min_ms\":{:.4},\"reps\":{},\"runtime_threads\":{},\"gemm\":{}",
        json_str(name),
        times[0],
        times.len(),
        cnn::num_threads(),
        json_str(&gemm),
    );
    line.push('}');
    line
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("error: {e}");
            }
            eprintln!("{USAGE}");
            return if e.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            };
        }
    };
    for name in &args.nets {
        if args.torch {
            let line = match name.as_str() {
                "tiny" => torch_line::<Tiny>(name),
                "lenet5" => torch_line::<Lenet5>(name),
                "vgg" => torch_line::<Vgg>(name),
                "stem224" => torch_line::<Stem224>(name),
                _ => torch_line::<Mobile>(name),
            };
            println!("{line}");
            continue;
        }
        for &batch in &args.batches {
            for &threads in &args.threads {
                let (b, t, s) = (batch, threads, args.seconds);
                let line = match name.as_str() {
                    "tiny" => cell::<Tiny>(name, b, t, s),
                    "lenet5" => cell::<Lenet5>(name, b, t, s),
                    "vgg" => cell::<Vgg>(name, b, t, s),
                    "stem224" => cell::<Stem224>(name, b, t, s),
                    _ => cell::<Mobile>(name, b, t, s),
                };
                println!("{line}");
            }
        }
    }
    ExitCode::SUCCESS
}
