//! Tests of the level detection, the override and the dispatch (a file of its own: they call
//! the GEMM and the thread pool, which themselves depend on this module).

use super::*;

#[test]
fn cnn_simd_caps_the_level() {
    assert_eq!(cap(Some("baseline")), Isa::Baseline);
    assert_eq!(cap(Some("avx2")), Isa::Avx2);
    assert_eq!(cap(Some("avx512")), Isa::Avx512);
    assert_eq!(cap(Some("AVX2")), Isa::Avx512, "the spelling is lower case");
    assert_eq!(cap(Some("")), Isa::Avx512);
    assert_eq!(cap(None), Isa::Avx512);
    for level in Isa::ALL {
        assert_eq!(cap(Some(level.name())), level, "a level's name caps at it");
    }
}

/// Every combination of the five features: only all five make AVX-512, AVX2 needs FMA
/// too (a CPU with some AVX-512 subsets, as Knights Landing's F without BW and VL, is AVX2).
#[test]
fn each_level_needs_all_its_features() {
    const FEATURES: [&str; 5] = ["avx2", "fma", "avx512f", "avx512bw", "avx512vl"];
    for set in 0u32..32 {
        let has = |f: &str| {
            FEATURES
                .iter()
                .position(|&g| g == f)
                .is_some_and(|i| set >> i & 1 == 1)
        };
        let want = match (set & 3 == 3, set >> 2 == 7) {
            (true, true) => Isa::Avx512,
            (true, false) => Isa::Avx2,
            (false, _) => Isa::Baseline,
        };
        let names: Vec<_> = FEATURES.iter().filter(|f| has(f)).collect();
        assert_eq!(level_of(has), want, "{names:?}");
    }
    assert_eq!(level_of(|_| true), Isa::Avx512);
}

/// The process's level is the environment's cap on the detected level, and the log says
/// which level the kernel tests of this run exercise and which they skip.
#[test]
fn the_process_runs_the_level_cnn_simd_asks_for() {
    let asked = std::env::var("CNN_SIMD").ok();
    let want = detect().min(cap(asked.as_deref()));
    assert_eq!(testing::with_forced(None, isa), want, "CNN_SIMD={asked:?}");
    if let Some(asked) = &asked {
        if cap(Some(asked)) > detect() {
            eprintln!(
                "SKIPPED: CNN_SIMD={asked} asks for more than this CPU has; running `{}`",
                want.name()
            );
        }
    }
    eprintln!("kernel tests run at: {:?}", testing::levels());
}

/// `detect` agrees with the kernel's own list of CPU flags (Linux), an independent reading
/// of CPUID.
#[test]
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
fn detection_agrees_with_proc_cpuinfo() {
    let Ok(info) = std::fs::read_to_string("/proc/cpuinfo") else {
        eprintln!("SKIPPED: detection check, /proc/cpuinfo unreadable");
        return;
    };
    let flags: Vec<&str> = info
        .lines()
        .find(|l| l.starts_with("flags"))
        .expect("a flags line")
        .split_whitespace()
        .collect();
    let has = |f: &str| flags.contains(&f);
    let want = if has("avx2") && has("fma") {
        if has("avx512f") && has("avx512bw") && has("avx512vl") {
            Isa::Avx512
        } else {
            Isa::Avx2
        }
    } else {
        Isa::Baseline
    };
    assert_eq!(detect(), want, "flags: {flags:?}");
    for level in Isa::ALL {
        assert_eq!(level.available(), level <= want, "{}", level.name());
    }
}

/// Which token `with_simd!` handed its body, by its lane count.
fn lanes_of_with_simd() -> usize {
    let mut lanes = 0;
    with_lanes(&mut lanes);
    lanes
}

fn with_lanes(out: &mut usize) {
    crate::simd::with_simd!(|_s: S| { *out = S::LANES; }, (out: &mut usize))
}

multiversion! {
fn sum(v: &[f32]) -> f32 {
    v.iter().sum()
}
}

/// A forced level is the one every kind of dispatch runs: `with_simd!` (seen by its
/// token's lanes), `multiversion!` and the GEMM (seen by the per-thread count), also on
/// the pool's workers.
#[test]
fn a_forced_level_is_the_one_that_runs() {
    let levels = testing::levels();
    assert!(levels.contains(&Isa::Baseline));
    for level in Isa::ALL {
        if !level.available() {
            let refused = std::panic::catch_unwind(|| testing::with_isa(level, || ()));
            assert!(refused.is_err(), "forcing a missing level must panic");
            continue;
        }
        let lanes = match level {
            Isa::Avx512 => 16,
            Isa::Avx2 => 8,
            Isa::Baseline => 1,
        };
        testing::with_isa(level, || {
            assert_eq!(isa(), level);
            let before = testing::ran();
            assert_eq!(lanes_of_with_simd(), lanes, "{}", level.name());
            assert_eq!(sum(&[1.0, 2.0, 3.5]), 6.5);
            let mut c = [0.0; 4];
            crate::gemm::sgemm(2, 1, 2, &[1.0, 2.0], &[3.0, 4.0], &mut c, false);
            assert_eq!(c, [3.0, 4.0, 6.0, 8.0]);
            let after = testing::ran();
            for other in Isa::ALL {
                let runs = after[other as usize] - before[other as usize];
                let want = if other == level { 3 } else { 0 };
                assert_eq!(runs, want, "forced {}, ran {}", level.name(), other.name());
            }
            // On a worker of the pool, too.
            let on_worker = crate::threads::install(2, || (isa(), lanes_of_with_simd()));
            assert_eq!(on_worker, (level, lanes), "{} on a worker", level.name());
        });
    }
    assert_eq!(testing::forced(), None, "restored");
}

/// The bf16 GEMM takes AMX tiles exactly when the CPU has them (checked against the kernel's
/// flags on Linux), the level is AVX-512 and `CNN_SIMD` names no level (`avx512bf16` refuses
/// the tiles); otherwise `vdpbf16ps` exactly when the CPU has AVX512_BF16 and `CNN_SIMD` names
/// no level below `avx512bf16` (which forces the FMA path of that level).
#[test]
fn the_bf16_path_is_the_dot_product_where_the_cpu_has_it_and_cnn_simd_allows() {
    let asked = std::env::var("CNN_SIMD").ok();
    let capped = matches!(asked.as_deref(), Some("avx512" | "avx2" | "baseline"));
    let no_tiles = capped || asked.as_deref() == Some("avx512bf16");
    if let Ok(info) = std::fs::read_to_string("/proc/cpuinfo") {
        let has = |name: &str| info.split_whitespace().any(|f| f == name);
        assert_eq!(
            bf16_dot_available(),
            has("avx512_bf16") && Isa::Avx512.available()
        );
        // CPUID and XCR0 say what the kernel's flags say.
        #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
        assert_eq!(super::x86::amx_tiles(), has("amx_bf16") && has("amx_tile"));
        let tiles = has("amx_bf16") && has("amx_tile") && bf16_dot_available();
        assert!(!amx_available() || tiles, "AMX without the CPU's flags");
        // Linux grants the tile data from 5.16 on; an older kernel may refuse it.
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let version: Vec<u32> = release
            .split(|c: char| !c.is_ascii_digit())
            .take(2)
            .filter_map(|v| v.parse().ok())
            .collect();
        let grants = version >= vec![5, 16];
        if tiles && grants {
            assert!(amx_available(), "Linux {release} refused the AMX tile data");
        } else if tiles && !amx_available() {
            eprintln!("NOTE: this CPU has AMX-BF16 but Linux {release} refused the tile data: the `amx` path is not tested");
        }
    }
    let level = testing::with_forced(None, isa);
    let want = if amx_available() && !no_tiles && level == Isa::Avx512 {
        Bf16Path::Amx
    } else if bf16_dot_available() && !capped && level == Isa::Avx512 {
        Bf16Path::Dot
    } else {
        Bf16Path::Fma(level)
    };
    assert_eq!(
        testing::with_forced(None, bf16_path),
        want,
        "CNN_SIMD={asked:?}"
    );
    // Without the tiles (refused on this thread), `vdpbf16ps` where the CPU has it; without
    // both, the level's FMAs.
    let dot = if bf16_dot_available() && !capped && level == Isa::Avx512 {
        Bf16Path::Dot
    } else {
        Bf16Path::Fma(level)
    };
    let refused = |r| testing::with_forced(None, || testing::with_bf16_refused(r, bf16_path));
    assert_eq!(refused(1), dot, "CNN_SIMD={asked:?}");
    assert_eq!(refused(2), Bf16Path::Fma(level), "CNN_SIMD={asked:?}");
    assert_eq!(Bf16Path::Amx.name(), "amx");
    assert_eq!(Bf16Path::Amx.chain(), Chain::Tiles);
    assert_eq!(Bf16Path::Dot.chain(), Chain::Pairs);
    assert_eq!(Bf16Path::Fma(Isa::Baseline).chain(), Chain::Pairs);
    assert_eq!(Bf16Path::Dot.name(), "avx512bf16");
    // The benchmarks' report of it.
    assert_eq!(
        testing::with_forced(None, crate::__private::bf16_path),
        want.name()
    );
    assert_eq!(Bf16Path::Fma(Isa::Avx2).name(), "avx2");
}

/// `max_fold` over `x` lane by lane (`acc[i]` folded with `v[i]`), and `load_deinterleaved`
/// of `x`, at the dispatched level: whole vectors, then one lane at a time.
fn fold_and_split(acc: &[f32], v: &[f32], folded: &mut [f32], even: &mut [f32], odd: &mut [f32]) {
    crate::simd::with_simd!(|s: S| {
        fn run<S: Simd>(s: S, acc: &[f32], v: &[f32], folded: &mut [f32], even: &mut [f32], odd: &mut [f32]) {
            let n = S::LANES;
            for i in (0..acc.len() / n).map(|i| i * n) {
                // SAFETY: `i + n ≤ len` of every slice, and `v` holds twice as many values.
                unsafe {
                    let r = s.max_fold(s.load(acc[i..].as_ptr()), s.load(v[i..].as_ptr()));
                    s.store(folded[i..i + n].as_mut_ptr(), r);
                    let (e, o) = s.load_deinterleaved(v[2 * i..2 * i + 2 * n].as_ptr());
                    s.store(even[i..i + n].as_mut_ptr(), e);
                    s.store(odd[i..i + n].as_mut_ptr(), o);
                }
            }
        }
        run::<S>(s, acc, v, folded, even, odd);
    }, (acc: &[f32], v: &[f32], folded: &mut [f32], even: &mut [f32], odd: &mut [f32]))
}

/// Every level's `max_fold` is PyTorch's `v > acc || isnan(v) ? v : acc` bit for bit (NaN
/// payloads, infinities and signed zeros included), and `load_deinterleaved` splits even and
/// odd positions.
#[test]
fn max_fold_and_deinterleave_agree_at_every_level() {
    let specials = [
        0.0,
        -0.0,
        1.0,
        -1.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        f32::from_bits(0x7fc0_1234),
        f32::from_bits(0xffc0_0001),
        f32::MIN_POSITIVE / 2.0,
        3.5,
    ];
    // Every ordered pair of specials, 16-lane aligned blocks of them.
    let pairs: Vec<(f32, f32)> = specials
        .iter()
        .flat_map(|&a| specials.iter().map(move |&b| (a, b)))
        .collect();
    let len = pairs.len().next_multiple_of(16);
    let acc: Vec<f32> = (0..len).map(|i| pairs[i % pairs.len()].0).collect();
    let v: Vec<f32> = (0..2 * len).map(|i| pairs[i % pairs.len()].1).collect();
    crate::simd::testing::each_level(|level| {
        let (mut folded, mut even, mut odd) = (vec![0.0; len], vec![0.0; len], vec![0.0; len]);
        fold_and_split(&acc, &v, &mut folded, &mut even, &mut odd);
        for i in 0..len {
            let (a, b) = (acc[i], v[i]);
            let want = if b > a || b.is_nan() { b } else { a };
            assert_eq!(
                folded[i].to_bits(),
                want.to_bits(),
                "{}: max_fold({a:?}, {b:?})",
                level.name()
            );
            assert_eq!(
                even[i].to_bits(),
                v[2 * i].to_bits(),
                "{}: even {i}",
                level.name()
            );
            assert_eq!(
                odd[i].to_bits(),
                v[2 * i + 1].to_bits(),
                "{}: odd {i}",
                level.name()
            );
        }
    });
}

/// The results of every [`Simd`] operation on the token `with_simd_bf16!` hands out, over the
/// first `LANES` values of `x` and `y` (a 16×16 block for the transpose): `f[op·16 + lane]`
/// for the float operations, `h` the bf16 halves, `p` the pairs, `t` the transposed block.
struct Every {
    f: Vec<f32>,
    h: Vec<u16>,
    p: Vec<u32>,
    t: Vec<f32>,
    lanes: usize,
}

fn every_operation(x: &[f32], y: &[f32], e: &mut Every) {
    crate::simd::with_simd_bf16!(|s: S| {
        fn run<S: Simd>(s: S, x: &[f32], y: &[f32], e: &mut Every) {
            let n = S::LANES;
            e.lanes = n;
            // SAFETY: `x` and `y` hold 256 values, `e.f` 16 rows of 16, `e.h` and `e.p` 16
            // values, `e.t` 256: every access below stays inside them.
            unsafe {
                let (a, b, c) = (s.load(x.as_ptr()), s.load(y.as_ptr()), s.load(x[16..].as_ptr()));
                let (even, odd) = s.load_deinterleaved(y.as_ptr());
                s.prefetch(x.as_ptr());
                let rows = [
                    s.add(a, b),
                    s.sub(a, b),
                    s.mul(a, b),
                    s.fmadd(a, b, c),
                    s.max(a, b),
                    s.max_fold(a, b),
                    even,
                    odd,
                    s.splat(&x[5]),
                    s.zero(),
                ];
                for (i, v) in rows.into_iter().enumerate() {
                    s.store(e.f[i * 16..].as_mut_ptr(), v);
                }
                if n > 1 {
                    s.store_first(e.f[10 * 16..].as_mut_ptr(), a, n - 1);
                }
                let (even, odd) = s.deinterleave(b, s.load(y[n..].as_ptr()));
                let inner = s.load_masked(x.as_ptr(), s.lanes(1, n - 1));
                let all = s.load_masked(x.as_ptr(), s.lanes(0, 99));
                let rows = [even, odd, s.shift_in(a, b), inner, all];
                for (i, v) in rows.into_iter().enumerate() {
                    s.store(e.f[(11 + i) * 16..].as_mut_ptr(), v);
                }
                s.store_bf16(e.h.as_mut_ptr(), a);
                s.store_bf16_pairs(e.p.as_mut_ptr(), a, b);
                s.transpose_block(x.as_ptr(), 16, e.t.as_mut_ptr(), 16);
            }
        }
        run::<S>(s, x, y, e);
    }, (x: &[f32], y: &[f32], e: &mut Every))
}

/// Every operation of every token, `Avx512Bf16` (whose own are the conversions, the rest
/// forwarded to `Avx512`) included, against one lane of plain Rust: bit for bit, with NaN,
/// signed zeros and values that round to bf16 at the halfway point among the inputs.
#[test]
fn every_token_operation_agrees_with_plain_rust_on_every_bf16_path() {
    let mut x: Vec<f32> = (0..256).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
    let y: Vec<f32> = (0..256).map(|i| (i as f32 * 0.91).cos() * 2.0).collect();
    x[2] = f32::NAN;
    x[3] = -0.0;
    x[4] = f32::from_bits(0x3f80_8000);
    let mut y = y;
    y[6] = f32::NAN;
    y[7] = 0.0;
    y[3] = 0.0;
    crate::simd::testing::each_bf16_path(|path| {
        let mut e = Every {
            f: vec![7.0; 16 * 16],
            h: vec![0xdead; 16],
            p: vec![0xdead_beef; 16],
            t: vec![7.0; 256],
            lanes: 0,
        };
        every_operation(&x, &y, &mut e);
        let n = e.lanes;
        let at = |op: usize, i: usize| e.f[op * 16 + i].to_bits();
        for i in 0..n {
            let (a, b, c) = (x[i], y[i], x[16 + i]);
            let want = [
                a + b,
                a - b,
                a * b,
                a.mul_add(b, c),
                if a > b { a } else { b },
                if b > a || b.is_nan() { b } else { a },
                y[2 * i],
                y[2 * i + 1],
                x[5],
                0.0,
            ];
            for (op, w) in want.into_iter().enumerate() {
                let (got, w) = (at(op, i), w.to_bits());
                let both_nan = f32::from_bits(got).is_nan() && f32::from_bits(w).is_nan();
                assert!(
                    got == w || both_nan,
                    "{}: op {op} lane {i}: {got:#x}, want {w:#x}",
                    path.name()
                );
            }
            // deinterleave, shift_in, load_masked (lanes 1..n − 1, zero in the others; all).
            let shifted = if i == 0 { x[n - 1] } else { y[i - 1] };
            let inner = if i >= 1 && i + 1 < n { a } else { 0.0 };
            let ops = [
                (11, y[2 * i]),
                (12, y[2 * i + 1]),
                (13, shifted),
                (14, inner),
                (15, a),
            ];
            for (op, w) in ops {
                assert_eq!(at(op, i), w.to_bits(), "{}: op {op} lane {i}", path.name());
            }
            if i + 1 < n {
                assert_eq!(
                    at(10, i),
                    a.to_bits(),
                    "{}: store_first lane {i}",
                    path.name()
                );
            }
            assert_eq!(e.h[i], to_bf16(a), "{}: store_bf16 lane {i}", path.name());
            let pair = to_bf16(a) as u32 | (to_bf16(b) as u32) << 16;
            assert_eq!(e.p[i], pair, "{}: store_bf16_pairs lane {i}", path.name());
            for j in 0..n {
                assert_eq!(
                    e.t[j * 16 + i].to_bits(),
                    x[i * 16 + j].to_bits(),
                    "{}: transpose ({i}, {j})",
                    path.name()
                );
            }
        }
        // Past the lanes (and past `n − 1` for store_first) nothing is written.
        assert!(
            n == 1 || e.f[10 * 16 + n - 1] == 7.0,
            "{}: store_first wrote lane n − 1",
            path.name()
        );
        assert!(e.h[n..].iter().all(|&h| h == 0xdead), "{}", path.name());
    });
}

/// The one-lane token's masked loads and lane moves, which no kernel reaches through it (the
/// in-place depthwise blocks run on vectors only): lane 0 is in `lanes(lo, hi)` exactly when
/// `lo = 0 < hi`, a masked load reads it only then, `shift_in` gives the previous vector's
/// last (only) lane, and `deinterleave` of one-lane halves is the pair itself.
#[test]
fn the_scalar_token_masks_and_moves_its_one_lane() {
    let s = Scalar;
    for (lo, hi, lane) in [
        (0, 1, true),
        (0, 5, true),
        (0, 0, false),
        (1, 1, false),
        (1, 3, false),
    ] {
        assert_eq!(s.lanes(lo, hi), lane, "lanes({lo}, {hi})");
    }
    let x = [3.5f32];
    // SAFETY: `x` holds the one float lane 0 reads.
    let (on, off) = unsafe {
        (
            s.load_masked(x.as_ptr(), true),
            s.load_masked(x.as_ptr(), false),
        )
    };
    assert_eq!((on, off.to_bits()), (3.5, 0));
    assert_eq!(s.shift_in(1.5, 2.5), 1.5);
    assert_eq!(s.deinterleave(1.5, 2.5), (1.5, 2.5));
}
