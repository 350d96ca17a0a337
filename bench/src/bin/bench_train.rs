//! Time of one training step on the benchmark networks (issue 13, "Speed and memory"), one JSON
//! line per cell.
//!
//! The issue names this driver `examples/bench_train.rs`; in this repository `examples/` holds the
//! programs a user copies, and the benchmark drivers are binaries of the `cnn-bench` package, so it
//! lives here beside `bench_nets`.
//!
//! ```text
//! cargo run --release --bin bench_train -- --net vgg --threads 1 --seconds 5
//! cargo run --release --bin bench_train -- --net all     # the five nets × threads 1,2
//! ```
//!
//! A step is one call of `Train::train_step`: the train-mode forward pass (batch norms on batch
//! statistics, dropout on), `Loss::CrossEntropy` against class targets, the backward pass and the
//! update of `Sgd::new(0.001).momentum(0.9)`, the step `bench/peers_train.py` runs in PyTorch
//! (`model.train()`, `zero_grad`, forward, `F.cross_entropy`, `backward`, `SGD.step`).
//!
//! Inputs are uniform in [-1, 1) and targets uniform over the classes, drawn once per cell from a
//! fixed seed; the network starts from `seeded(42)`. Each cell runs warm-up steps (at least two:
//! the first one sizes the network's buffers and creates the momentum buffers) for a fifth of
//! `--seconds`, then steps until `--seconds` have passed (at least 3 steps) and reports the median
//! and minimum per step. `--batch` defaults to 64, and 16 for `stem224`, the issue's sizes;
//! `--threads` sets `cnn::set_num_threads` for the cell. `--net` also takes `resnet18` and
//! `mobilenetv2`, which `all` leaves out. The networks are declared in `bench/src/lib.rs`.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use cnn::ndarray::{Array1, Array4};
use cnn::optim::Sgd;
use cnn::{Loss, Train};
use cnn_bench::{parse_list, parse_nets, with_net, WithNet};

/// The networks of `--net all`: the five of the issue.
const TRAIN_NETS: [&str; 5] = ["tiny", "lenet5", "vgg", "stem224", "mobile"];

/// Learning rate of the SGD update (momentum 0.9); `bench/peers_train.py` uses the same.
const LR: f32 = 0.001;

struct Args {
    nets: Vec<String>,
    batches: Vec<usize>,
    threads: Vec<usize>,
    seconds: f64,
}

const USAGE: &str = "usage: bench_train [--net NET[,NET…]|all] [--batch N[,N…]] \
                     [--threads T[,T…]] [--seconds S]\n  NET: tiny, lenet5, vgg, stem224, mobile \
                     (all), resnet18, mobilenetv2\n  default batch: 64 (stem224: 16); default \
                     threads: 1,2";

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        nets: vec!["vgg".into()],
        batches: Vec::new(),
        threads: vec![1, 2],
        seconds: 2.0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            return Err(String::new());
        }
        let value = it
            .next()
            .ok_or_else(|| format!("`{flag}` expects a value"))?;
        match flag.as_str() {
            "--net" => args.nets = parse_nets(&value, &TRAIN_NETS)?,
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
    Ok(args)
}

/// The issue's batch size for a network: 64, and 16 for the 224×224 stem.
fn default_batch(name: &str) -> usize {
    match name {
        "stem224" | "resnet18" | "mobilenetv2" => 16,
        _ => 64,
    }
}

/// SplitMix64: the cell's inputs and targets, the same on every run.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    fn uniform(&mut self) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// What one cell measured.
struct Timed {
    times: Vec<f64>,
    warmup: usize,
    first_loss: f32,
    last_loss: f32,
}

/// Per-step times of `train_step` on a `batch`-sample input.
fn time_steps<M: Train>(batch: usize, seconds: f64) -> Result<Timed, cnn::Error> {
    let mut net = M::seeded(42);
    let [c, h, w] = M::INPUT_SHAPE;
    let classes: usize = M::OUTPUT_SHAPE.iter().product();
    let mut rng = SplitMix(0x5EED ^ batch as u64);
    let x = Array4::from_shape_simple_fn((batch, c, h, w), || rng.uniform());
    let y = Array1::from_shape_simple_fn(batch, || (rng.next() % classes as u64) as usize);
    let mut opt = Sgd::new(LR).momentum(0.9);
    let mut step = |net: &mut M| net.train_step(x.view(), y.view(), Loss::CrossEntropy, &mut opt);
    // Warm-up: the first step sizes the buffers and creates the momentum state; then page in and
    // settle the clock.
    let first_loss = step(&mut net)?;
    let mut warmup = 1;
    let warm = Instant::now();
    while warmup < 2 || warm.elapsed() < Duration::from_secs_f64(seconds * 0.2) {
        std::hint::black_box(step(&mut net)?);
        warmup += 1;
    }
    let mut times = Vec::new();
    let mut last_loss = first_loss;
    let start = Instant::now();
    while times.len() < 3 || start.elapsed() < Duration::from_secs_f64(seconds) {
        let t = Instant::now();
        last_loss = std::hint::black_box(step(&mut net)?);
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(Timed {
        times,
        warmup,
        first_loss,
        last_loss,
    })
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

/// A JSON number, or `null` for NaN and infinities (a diverged loss).
fn json_f32(v: f32) -> String {
    if v.is_finite() {
        format!("{v:.5}")
    } else {
        "null".into()
    }
}

fn cell<M: Train>(name: &str, batch: usize, threads: usize, seconds: f64) -> String {
    cnn::set_num_threads(threads);
    let mut t = match time_steps::<M>(batch, seconds) {
        Ok(t) => t,
        Err(e) => {
            return format!(
                "{{\"net\":{},\"batch\":{batch},\"threads\":{threads},\"error\":{}}}",
                json_str(name),
                json_str(&e.to_string())
            )
        }
    };
    t.times.sort_by(f64::total_cmp);
    let median = t.times[t.times.len() / 2];
    let simd = std::env::var("CNN_SIMD").unwrap_or_else(|_| "auto".into());
    format!(
        "{{\"net\":{},\"batch\":{batch},\"threads\":{threads},\"median_ms\":{median:.4},\
         \"min_ms\":{:.4},\"reps\":{},\"warmup_steps\":{},\"runtime_threads\":{},\"gemm\":{},\
         \"first_loss\":{},\"last_loss\":{}}}",
        json_str(name),
        t.times[0],
        t.times.len(),
        t.warmup,
        cnn::num_threads(),
        json_str(&simd),
        json_f32(t.first_loss),
        json_f32(t.last_loss),
    )
}

/// One timed cell of a network.
struct Cell {
    batch: usize,
    threads: usize,
    seconds: f64,
}

impl WithNet for Cell {
    type Output = String;
    fn run<M: Train>(self, name: &str) -> String {
        cell::<M>(name, self.batch, self.threads, self.seconds)
    }
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
        let batches = if args.batches.is_empty() {
            vec![default_batch(name)]
        } else {
            args.batches.clone()
        };
        for &batch in &batches {
            for &threads in &args.threads {
                let cell = Cell {
                    batch,
                    threads,
                    seconds: args.seconds,
                };
                let line = with_net(name, cell).expect("`parse_nets` checked the name");
                println!("{line}");
            }
        }
    }
    ExitCode::SUCCESS
}
