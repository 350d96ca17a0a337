//! The arithmetic peak of this CPU, the yardstick of `docs/benchmarks.md`'s GFLOP/s figures
//! (issue 11): f32 fused multiply-adds (AVX-512 and AVX2+FMA), and bf16 dot products
//! (`vdpbf16ps`, AVX512_BF16, and AMX tiles' `tdpbf16ps`) accumulating into f32, on 1 thread and
//! on every thread.
//!
//! ```text
//! cargo run --release --bin peak                # all levels this CPU has, 1 and N threads
//! cargo run --release --bin peak -- --seconds 1 --threads 2
//! ```
//!
//! Each measurement is a loop of independent register-only operations (12 accumulators, more than
//! the FMA latency × throughput of current cores), no memory traffic, timed over `--seconds`
//! (default 0.5) after a warm-up of the same length; one JSON line per level and thread count:
//! `{"level":"avx512-fma","threads":1,"gflops":…,"flops_per_cycle_at_nominal":…}`. A FMA counts
//! 2 flops per lane; a `vdpbf16ps` 2 per bf16 pair, 64 per 512-bit instruction; a `tdpbf16ps` on
//! 16×16 tiles of f32 with 32 bf16 per row, 16 384 (the runtime's tiles: four C tiles, two of
//! A, two of B, as its GEMM's 2×2 blocks use them). The tiles need Linux's permission
//! (`arch_prctl(ARCH_REQ_XCOMP_PERM)`), asked for here.

use std::time::{Duration, Instant};

/// Operations of one timed call: the accumulators times the iterations.
const ACCUMULATORS: usize = 12;
const ITERATIONS: usize = 1 << 16;

/// One level's kernel: runs `ITERATIONS` rounds over the accumulators and returns a value that
/// depends on all of them (so the loop cannot be removed), and the flops of one call.
struct Level {
    name: &'static str,
    flops_per_call: f64,
    run: fn() -> f32,
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{ACCUMULATORS, ITERATIONS};

    /// `ITERATIONS` rounds of 12 independent `acc = acc · a + b` on 16-lane vectors.
    #[target_feature(enable = "avx512f")]
    pub fn fma512() -> f32 {
        let (a, b) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-7));
        let mut acc = [_mm512_set1_ps(1.0); ACCUMULATORS];
        for _ in 0..ITERATIONS {
            for v in acc.iter_mut() {
                *v = _mm512_fmadd_ps(*v, a, b);
            }
        }
        let sum = acc
            .iter()
            .fold(_mm512_setzero_ps(), |s, &v| _mm512_add_ps(s, v));
        _mm512_reduce_add_ps(sum)
    }

    /// The same on 8-lane AVX2 vectors with FMA.
    #[target_feature(enable = "avx2,fma")]
    pub fn fma256() -> f32 {
        let (a, b) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
        let mut acc = [_mm256_set1_ps(1.0); ACCUMULATORS];
        for _ in 0..ITERATIONS {
            for v in acc.iter_mut() {
                *v = _mm256_fmadd_ps(*v, a, b);
            }
        }
        let sum = acc
            .iter()
            .fold(_mm256_setzero_ps(), |s, &v| _mm256_add_ps(s, v));
        let mut out = [0.0f32; 8];
        // SAFETY: `out` holds 8 f32, what an unaligned 256-bit store writes.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), sum) };
        out.iter().sum()
    }

    /// `ITERATIONS` rounds of 12 independent `vdpbf16ps`: 16 f32 lanes each accumulate two
    /// bf16 products per instruction.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub fn dpbf16() -> f32 {
        let a = _mm512_cvtne2ps_pbh(_mm512_set1_ps(0.5), _mm512_set1_ps(0.25));
        let b = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1e-3), _mm512_set1_ps(2e-3));
        let mut acc = [_mm512_set1_ps(1.0); ACCUMULATORS];
        for _ in 0..ITERATIONS {
            for v in acc.iter_mut() {
                *v = _mm512_dpbf16_ps(*v, a, b);
            }
        }
        let sum = acc
            .iter()
            .fold(_mm512_setzero_ps(), |s, &v| _mm512_add_ps(s, v));
        _mm512_reduce_add_ps(sum)
    }
}

/// AMX-BF16 tiles, run on registers only.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod amx {
    use std::arch::asm;

    use super::ITERATIONS;

    /// `ldtilecfg`'s operand: palette 1, eight tiles of 16 rows of 64 bytes.
    #[repr(C, align(64))]
    struct Config([u8; 64]);

    /// Whether the CPU has AMX-TILE and AMX-BF16 (CPUID leaf 7, EDX bits 24 and 22) and Linux
    /// grants this process the tile data.
    pub fn available() -> bool {
        let leaf7 = std::arch::x86_64::__cpuid_count(7, 0);
        if leaf7.edx & (1 << 24) == 0 || leaf7.edx & (1 << 22) == 0 {
            return false;
        }
        let ret: i64;
        // SAFETY: arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) only changes which
        // extended states the process may use; RCX and R11 are clobbered by `syscall`.
        unsafe {
            asm!("syscall", inlateout("rax") 158i64 => ret, in("rdi") 0x1023i64,
                in("rsi") 18i64, lateout("rcx") _, lateout("r11") _, options(nostack));
        }
        ret == 0
    }

    /// `ITERATIONS / 4` rounds of four independent `tdpbf16ps` (tiles 0–3 from tiles 4–5 by
    /// 6–7), on zero tiles; returns 0.
    ///
    /// # Safety
    /// [`available`] returned `true`.
    pub unsafe fn tdpbf16() -> f32 {
        let mut c = [0u8; 64];
        c[0] = 1;
        for t in 0..8 {
            c[16 + 2 * t] = 64;
            c[48 + t] = 16;
        }
        let config = Config(c);
        // SAFETY: the caller vouches for the tiles; the configuration is valid and each tile
        // instruction reads and writes tile registers only.
        unsafe {
            asm!("ldtilecfg [{}]", in(reg) config.0.as_ptr(), options(nostack, readonly));
            asm!(
                "tilezero tmm4",
                "tilezero tmm5",
                "tilezero tmm6",
                "tilezero tmm7",
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                options(nomem, nostack)
            );
            for _ in 0..ITERATIONS / 4 {
                asm!(
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "tdpbf16ps tmm1, tmm4, tmm7",
                    "tdpbf16ps tmm2, tmm5, tmm6",
                    "tdpbf16ps tmm3, tmm5, tmm7",
                    options(nomem, nostack)
                );
            }
            asm!("tilerelease", options(nomem, nostack));
        }
        0.0
    }
}

/// The levels this CPU has, best first.
fn levels() -> Vec<Level> {
    let mut out = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        let per = (ACCUMULATORS * ITERATIONS) as f64;
        #[cfg(target_os = "linux")]
        if amx::available() {
            out.push(Level {
                name: "amx-bf16-tiles",
                flops_per_call: (ITERATIONS / 4 * 4) as f64 * 16384.0,
                // SAFETY: `available` checked the tiles and got the permission just above.
                run: || unsafe { amx::tdpbf16() },
            });
        }
        if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bf16") {
            out.push(Level {
                name: "avx512-bf16-dot",
                flops_per_call: per * 64.0,
                // SAFETY: both features were detected just above.
                run: || unsafe { x86::dpbf16() },
            });
        }
        if is_x86_feature_detected!("avx512f") {
            out.push(Level {
                name: "avx512-fma",
                flops_per_call: per * 32.0,
                // SAFETY: AVX-512 F was detected just above.
                run: || unsafe { x86::fma512() },
            });
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            out.push(Level {
                name: "avx2-fma",
                flops_per_call: per * 16.0,
                // SAFETY: AVX2 and FMA were detected just above.
                run: || unsafe { x86::fma256() },
            });
        }
    }
    out
}

/// Calls of `level` on each of `threads` threads for `seconds` after as long a warm-up:
/// GFLOP/s over all threads.
fn measure(level: &Level, threads: usize, seconds: f64) -> f64 {
    let run = level.run;
    let one = move |limit: Duration| {
        let start = Instant::now();
        let (mut calls, mut sink) = (0u64, 0.0f32);
        while start.elapsed() < limit {
            sink += run();
            calls += 1;
        }
        (calls, start.elapsed().as_secs_f64(), sink)
    };
    let limit = Duration::from_secs_f64(seconds);
    let results: Vec<(u64, f64, f32)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(move || {
                    one(limit);
                    one(limit)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a measuring thread panicked"))
            .collect()
    });
    let sink: f32 = results.iter().map(|r| r.2).sum();
    std::hint::black_box(sink);
    results
        .iter()
        .map(|&(calls, secs, _)| calls as f64 * level.flops_per_call / secs / 1e9)
        .sum()
}

/// The nominal clock in GHz from /proc/cpuinfo (`cpu MHz`), if it says.
fn nominal_ghz() -> Option<f64> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("cpu MHz"))?;
    let mhz: f64 = line.split(':').nth(1)?.trim().parse().ok()?;
    Some(mhz / 1000.0)
}

fn main() {
    let mut seconds = 0.5;
    let mut threads: Option<usize> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .unwrap_or_else(|| panic!("{name} needs a value"))
        };
        match arg.as_str() {
            "--seconds" => seconds = value("--seconds").parse().expect("--seconds: a number"),
            "--threads" => {
                threads = Some(value("--threads").parse().expect("--threads: an integer"))
            }
            "--help" | "-h" => {
                println!("usage: peak [--seconds S] [--threads N]");
                return;
            }
            other => panic!("unknown argument {other:?} (try --help)"),
        }
    }
    let all = std::thread::available_parallelism().map_or(1, |n| n.get());
    let counts = match threads {
        Some(n) => vec![n.max(1)],
        None if all > 1 => vec![1, all],
        None => vec![1],
    };
    let ghz = nominal_ghz();
    let levels = levels();
    if levels.is_empty() {
        eprintln!("no SIMD level with FMA on this CPU: nothing to measure");
    }
    for level in &levels {
        for &n in &counts {
            let gflops = measure(level, n, seconds);
            let per_cycle = ghz.map_or("null".to_string(), |g| {
                format!("{:.1}", gflops / n as f64 / g)
            });
            println!(
                "{{\"level\":\"{}\",\"threads\":{n},\"gflops\":{gflops:.1},\"flops_per_cycle_at_nominal\":{per_cycle}}}",
                level.name
            );
        }
    }
}
