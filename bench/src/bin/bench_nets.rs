//! Latency of the seven benchmark networks (issues 4 and 10) (random weights), one JSON line per cell.
//!
//! ```text
//! cargo run --release --bin bench_nets -- --net vgg --batch 1 --threads 1 --seconds 2
//! cargo run --release --bin bench_nets -- --net all            # batch 1,64 × threads 1,2
//! cargo run --release --bin bench_nets -- --torch all          # the PyTorch twins, as JSON
//! cargo run --release --bin bench_nets -- --net vgg --batch 64 --precision bf16
//! ```
//!
//! `--precision bf16|f32` (default f32) runs the network in that `cnn::Precision`; the line
//! names it (`precision`) and, in bf16, the GEMM path (`bf16_path`: `amx` for AMX tiles,
//! `avx512bf16` for `vdpbf16ps`, else the level of `vdpbf16ps`'s exact FMA equivalent).
//!
//! `--batch` and `--threads` take comma lists. Each cell warms up, then calls `forward_batch`
//! until `--seconds` have passed (at least 3 calls) and reports the median and minimum per call.
//! `--threads` sets `cnn::set_num_threads` for the cell. `bench/peers.py` reads `--torch` to
//! build the same nets in PyTorch. The networks are declared in `bench/src/lib.rs`.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use cnn::ndarray::Array4;
use cnn::{Model, Precision};
use cnn_bench::{parse_list, parse_nets, with_net, WithNet, NETS};

struct Args {
    nets: Vec<String>,
    batches: Vec<usize>,
    threads: Vec<usize>,
    seconds: f64,
    torch: bool,
    precision: Precision,
}

const USAGE: &str = "usage: bench_nets [--net NET|all] [--batch N[,N…]] [--threads T[,T…]] \
                     [--seconds S] [--torch NET|all] [--precision f32|bf16]\n  NET: tiny, lenet5, vgg, stem224, mobile, resnet18, mobilenetv2";

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        nets: vec!["vgg".into()],
        batches: Vec::new(),
        threads: Vec::new(),
        seconds: 2.0,
        torch: false,
        precision: Precision::F32,
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
                args.nets = parse_nets(&value, &NETS)?;
                args.torch = flag == "--torch";
            }
            "--batch" => args.batches = parse_list(&flag, &value)?,
            "--precision" => {
                args.precision = value.parse().map_err(|e| format!("`--precision`: {e}"))?
            }
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
fn time_net<M: Model>(
    batch: usize,
    seconds: f64,
    precision: Precision,
) -> Result<Vec<f64>, cnn::Error> {
    let net = M::seeded(42).with_precision(precision);
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

fn cell<M: Model>(name: &str, c: &Cell) -> String {
    let (batch, threads) = (c.batch, c.threads);
    cnn::set_num_threads(threads);
    let mut times = match time_net::<M>(batch, c.seconds, c.precision) {
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
    line.push_str(&format!(",\"precision\":{}", json_str(c.precision.name())));
    if c.precision == Precision::Bf16 {
        line.push_str(&format!(
            ",\"bf16_path\":{}",
            json_str(cnn::__private::bf16_path())
        ));
    }
    line.push('}');
    line
}

/// The `--torch` line of a network.
struct TorchLine;

impl WithNet for TorchLine {
    type Output = String;
    fn run<M: cnn::Train>(self, name: &str) -> String {
        torch_line::<M>(name)
    }
}

/// One timed cell of a network.
struct Cell {
    batch: usize,
    threads: usize,
    seconds: f64,
    precision: Precision,
}

impl WithNet for Cell {
    type Output = String;
    fn run<M: cnn::Train>(self, name: &str) -> String {
        cell::<M>(name, &self)
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
        if args.torch {
            let line = with_net(name, TorchLine).expect("`parse_nets` checked the name");
            println!("{line}");
            continue;
        }
        for &batch in &args.batches {
            for &threads in &args.threads {
                let cell = Cell {
                    batch,
                    threads,
                    seconds: args.seconds,
                    precision: args.precision,
                };
                let line = with_net(name, cell).expect("`parse_nets` checked the name");
                println!("{line}");
            }
        }
    }
    ExitCode::SUCCESS
}
