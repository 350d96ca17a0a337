//! The instruction set, chosen once for every kernel, and the SIMD vector types.
//!
//! [`isa`] detects the best level this CPU supports ([`Isa::Avx512`], [`Isa::Avx2`] or
//! [`Isa::Baseline`]) once; the environment variable `CNN_SIMD=avx512|avx2|baseline`, read at
//! the first call, caps it, so that tests and benchmarks can run every path. The GEMM's
//! micro-kernel, the [`multiversion!`] bodies and the [`with_simd!`] kernels all follow it.
//!
//! The crate is compiled for the baseline target, so a plain loop vectorises to SSE2 at best.
//! [`multiversion!`] compiles a kernel body three times, for AVX-512, AVX2+FMA and the
//! baseline, and calls the one for [`isa`]. LLVM does not contract `a * b + c` into a fused
//! multiply-add without fast-math flags, so all three versions return the same bits.
//!
//! Where auto-vectorisation is not enough, kernels are written against [`Simd`]: a capability
//! token that only the dispatch can create (with [`Simd::new_unchecked`]), so its arithmetic is
//! safe to call, and only loads, stores and the dispatch itself are `unsafe` (as in the `pulp`
//! and `gemm` crates). Every method is `#[inline(always)]`, so it compiles to the bare
//! instruction inside the `#[target_feature]` function that the dispatch calls.

#[cfg(feature = "std")]
use std::sync::OnceLock;

mod scalar;
#[cfg(target_arch = "x86_64")]
mod x86;

pub(crate) use scalar::Scalar;
#[cfg(target_arch = "x86_64")]
pub(crate) use x86::{Avx2, Avx512, Avx512Bf16};

/// An instruction-set level, each one including the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Isa {
    /// The target's baseline (SSE2 on x86_64): plain Rust, `matrixmultiply` for the GEMM.
    Baseline,
    /// AVX2 and FMA: 8-lane `ymm` vectors.
    Avx2,
    /// AVX-512 F, BW and VL, with AVX2 and FMA: 16-lane `zmm` vectors.
    Avx512,
}

impl Isa {
    /// Fastest first.
    #[cfg(test)]
    pub(crate) const ALL: [Isa; 3] = [Isa::Avx512, Isa::Avx2, Isa::Baseline];

    /// The `CNN_SIMD` spelling.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Isa::Avx512 => "avx512",
            Isa::Avx2 => "avx2",
            Isa::Baseline => "baseline",
        }
    }

    /// Whether this CPU has every feature of the level.
    pub(crate) fn available(self) -> bool {
        self <= detect()
    }
}

/// The level every kernel runs at: the best this CPU supports ([`detect`]), capped by
/// `CNN_SIMD=avx512|avx2|baseline` (read once; other values are ignored).
///
/// In the crate's own tests, `testing::with_isa` forces a level for one thread (and the
/// pool work it starts) instead.
pub(crate) fn isa() -> Isa {
    #[cfg(test)]
    if let Some(forced) = testing::forced() {
        return forced;
    }
    #[cfg(feature = "std")]
    {
        static ISA: OnceLock<Isa> = OnceLock::new();
        *ISA.get_or_init(|| detect().min(cap(std::env::var("CNN_SIMD").ok().as_deref())))
    }
    #[cfg(not(feature = "std"))]
    detect()
}

#[cfg(feature = "std")]
/// The cap a `CNN_SIMD` value sets: `baseline` or `avx2`; anything else (`avx512`, unset,
/// unknown) caps nothing.
fn cap(value: Option<&str>) -> Isa {
    match value {
        Some("baseline") => Isa::Baseline,
        Some("avx2") => Isa::Avx2,
        _ => Isa::Avx512,
    }
}

/// How the bf16 GEMM (`gemm::bf16`) computes its dot products of pairs: on AMX tiles, with
/// their own order of roundings, or in the order of `vdpbf16ps`, which every other path
/// follows bit for bit (the two orders: `Chain`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bf16Path {
    /// AMX-BF16 tiles (`tdpbf16ps`), at [`Isa::Avx512`] on a CPU that has them, AVX512_BF16 and
    /// the operating system's permission to use them ([`amx_available`]).
    Amx,
    /// `vdpbf16ps` (AVX512_BF16), at [`Isa::Avx512`] on a CPU that has it.
    Dot,
    /// Two FMAs per pair at that level, the exact software equivalent of `vdpbf16ps`.
    Fma(Isa),
}

/// The order of roundings a bf16 path computes a sum of products of pairs in: the bits of C
/// (the tests compute each by hand).
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chain {
    /// `vdpbf16ps`'s: one chain over the pairs in order, `c ← c + a₂ₚ₊₁·b₂ₚ₊₁`, then
    /// `c ← c + a₂ₚ·b₂ₚ`, each rounded.
    Pairs,
    /// `tdpbf16ps`'s: per block of 16 pairs (a tile row of 64 bytes), the even and the odd
    /// products summed in two chains from zero, then `c ← c + (even + odd)`; every step rounded
    /// and a subnormal result flushed to zero.
    Tiles,
}

impl Bf16Path {
    /// The path's name: `amx`, `avx512bf16`, or the level's (the `CNN_SIMD` spellings).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Bf16Path::Amx => "amx",
            Bf16Path::Dot => "avx512bf16",
            Bf16Path::Fma(level) => level.name(),
        }
    }

    /// The order of roundings of the path's sums.
    #[cfg(test)]
    pub(crate) fn chain(self) -> Chain {
        match self {
            Bf16Path::Amx => Chain::Tiles,
            _ => Chain::Pairs,
        }
    }
}

/// The bf16 path at the current level ([`isa`]): at [`Isa::Avx512`], AMX tiles where
/// [`amx_available`] and `CNN_SIMD` does not name `avx512bf16` or a lower level, else
/// `vdpbf16ps` when the CPU has AVX512_BF16 and `CNN_SIMD` does not name `avx512` or a lower
/// level (so `CNN_SIMD=avx512` runs the FMA path at AVX-512); otherwise the FMA path of the
/// level.
pub(crate) fn bf16_path() -> Bf16Path {
    let level = isa();
    #[cfg(test)]
    let refused = testing::bf16_refused();
    #[cfg(not(test))]
    let refused = 0;
    if level == Isa::Avx512 && refused == 0 && amx_allowed() {
        Bf16Path::Amx
    } else if level == Isa::Avx512 && refused <= 1 && bf16_dot_allowed() {
        Bf16Path::Dot
    } else {
        Bf16Path::Fma(level)
    }
}

/// Whether this CPU has AMX-BF16 tiles, AVX512_BF16 and [`Isa::Avx512`], the operating
/// system saves the tiles' state, and it let this process use them (on Linux, the
/// `arch_prctl(ARCH_REQ_XCOMP_PERM)` request, made here once). Asked once.
pub(crate) fn amx_available() -> bool {
    #[cfg(all(target_arch = "x86_64", target_os = "linux", feature = "std"))]
    {
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| bf16_dot_available() && x86::amx_tiles() && x86::request_amx())
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux", feature = "std")))]
    false
}

/// [`amx_available`], unless `CNN_SIMD` names `avx512bf16` or a lower level.
fn amx_allowed() -> bool {
    bf16_cap() == 0 && amx_available()
}

/// What `CNN_SIMD` refuses the bf16 GEMM (read once): 0 nothing, 1 the AMX tiles
/// (`avx512bf16`), 2 the tiles and `vdpbf16ps` (`avx512`, `avx2`, `baseline`); the numbering of
/// the tests' refusals (`testing::bf16_refused`).
fn bf16_cap() -> u8 {
    #[cfg(feature = "std")]
    {
        static CAP: OnceLock<u8> = OnceLock::new();
        *CAP.get_or_init(|| match std::env::var("CNN_SIMD").ok().as_deref() {
            Some("avx512bf16") => 1,
            Some("avx512" | "avx2" | "baseline") => 2,
            _ => 0,
        })
    }
    #[cfg(not(feature = "std"))]
    2
}

/// Whether this CPU has AVX512_BF16 on top of [`Isa::Avx512`].
pub(crate) fn bf16_dot_available() -> bool {
    #[cfg(all(target_arch = "x86_64", feature = "std"))]
    {
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| {
            Isa::Avx512.available() && std::arch::is_x86_feature_detected!("avx512bf16")
        })
    }
    #[cfg(not(all(target_arch = "x86_64", feature = "std")))]
    false
}

/// [`bf16_dot_available`], unless `CNN_SIMD` names `avx512` or a lower level.
fn bf16_dot_allowed() -> bool {
    bf16_cap() <= 1 && bf16_dot_available()
}

/// [`isa`], for a dispatch about to run that level's code: the crate's tests count it per
/// thread (`testing::ran`), so that a test can see which path ran.
#[inline]
pub(crate) fn dispatch() -> Isa {
    let level = isa();
    #[cfg(test)]
    testing::note(level);
    level
}

/// Without `std` there is no run-time detection: the level the target is compiled for
/// (`-C target-feature` / `-C target-cpu`), which every CPU that runs the binary has.
#[cfg(not(feature = "std"))]
const fn detect() -> Isa {
    target_level()
}

/// The level of `-C target-feature` / `-C target-cpu`: what every CPU that runs a `no_std` build
/// has.
#[cfg(not(feature = "std"))]
const fn target_level() -> Isa {
    let avx2 = cfg!(all(target_feature = "avx2", target_feature = "fma"));
    if avx2
        && cfg!(all(
            target_feature = "avx512f",
            target_feature = "avx512bw",
            target_feature = "avx512vl"
        ))
    {
        Isa::Avx512
    } else if avx2 {
        Isa::Avx2
    } else {
        Isa::Baseline
    }
}

/// The best level this CPU supports, detected once.
#[cfg(feature = "std")]
fn detect() -> Isa {
    static DETECTED: OnceLock<Isa> = OnceLock::new();
    *DETECTED.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            level_of(|feature| match feature {
                "avx2" => has!("avx2"),
                "fma" => has!("fma"),
                "avx512f" => has!("avx512f"),
                "avx512bw" => has!("avx512bw"),
                "avx512vl" => has!("avx512vl"),
                _ => false,
            })
        }
        #[cfg(not(target_arch = "x86_64"))]
        Isa::Baseline
    })
}

/// The level of a CPU that has the features `has` says (by their `is_x86_feature_detected!`
/// names): [`Isa::Avx512`] needs AVX-512 F, BW and VL with AVX2 and FMA, [`Isa::Avx2`] AVX2
/// and FMA. A function of the answers only, so that its tests can ask about other CPUs.
#[cfg_attr(
    any(not(target_arch = "x86_64"), not(feature = "std")),
    allow(dead_code)
)]
fn level_of(has: impl Fn(&str) -> bool) -> Isa {
    let avx2 = has("avx2") && has("fma");
    if avx2 && has("avx512f") && has("avx512bw") && has("avx512vl") {
        Isa::Avx512
    } else if avx2 {
        Isa::Avx2
    } else {
        Isa::Baseline
    }
}

/// One SIMD register of `f32` lanes, as a capability token: a value of an implementing type
/// exists only where the CPU has its features, so the arithmetic is safe to call. Loads and
/// stores through raw pointers stay `unsafe`.
pub(crate) trait Simd: Copy {
    /// The register type, `__m512`, `__m256` or `f32`.
    type V: Copy;
    /// A set of lanes for [`load_masked`](Simd::load_masked): `__mmask16`, a `__m256i` of
    /// sign bits, or a `bool`.
    type M: Copy;
    /// `f32` lanes in `V`.
    const LANES: usize;

    /// The token.
    ///
    /// # Safety
    /// The CPU has the implementation's features (the dispatch on [`isa`] checked them).
    unsafe fn new_unchecked() -> Self;

    /// All lanes zero.
    fn zero(self) -> Self::V;

    /// `*x` in every lane.
    fn splat(self, x: &f32) -> Self::V;

    /// `a + b`.
    fn add(self, a: Self::V, b: Self::V) -> Self::V;

    /// `a − b`.
    fn sub(self, a: Self::V, b: Self::V) -> Self::V;

    /// `a · b`.
    fn mul(self, a: Self::V, b: Self::V) -> Self::V;

    /// `a · b + c`, fused.
    fn fmadd(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V;

    /// Per lane `a` if `a > b`, else `b` (x86's `maxps`: `b` when either is NaN), so
    /// `max(0, v)` is PyTorch's ReLU, NaN and −0 included.
    fn max(self, a: Self::V, b: Self::V) -> Self::V;

    /// One step of PyTorch's max fold, per lane: `v` if `v > acc` or `v` is NaN, else `acc`
    /// (so a NaN anywhere wins, the last one seen, and a tie keeps the earlier value: `−0`
    /// against `+0` included).
    fn max_fold(self, acc: Self::V, v: Self::V) -> Self::V;

    /// The `2·LANES` values from `p` split into their even-indexed and odd-indexed halves:
    /// `(p[0], p[2], …)` and `(p[1], p[3], …)`.
    ///
    /// # Safety
    /// `p` is valid for `2·LANES` reads.
    unsafe fn load_deinterleaved(self, p: *const f32) -> (Self::V, Self::V);

    /// `a` and `b` (the values `0..LANES` and `LANES..2·LANES` of a row) split into their
    /// even-indexed and odd-indexed values, as [`load_deinterleaved`](Simd::load_deinterleaved).
    fn deinterleave(self, a: Self::V, b: Self::V) -> (Self::V, Self::V);

    /// `[prev[LANES − 1], cur[0], …, cur[LANES − 2]]`: `cur` moved up one lane, the last lane of
    /// `prev` shifted in below it.
    fn shift_in(self, prev: Self::V, cur: Self::V) -> Self::V;

    /// Hints the cache line holding `p` into L1; any address, nothing is read.
    fn prefetch(self, p: *const f32);

    /// `LANES` values from `p`, any alignment.
    ///
    /// # Safety
    /// `p` is valid for `LANES` reads.
    unsafe fn load(self, p: *const f32) -> Self::V;

    /// The lanes `lo..hi` (clamped to `LANES`) of a masked load: what [`load_masked`]
    /// reads.
    ///
    /// [`load_masked`]: Simd::load_masked
    fn lanes(self, lo: usize, hi: usize) -> Self::M;

    /// `p[i]` in each lane `i` of `m`, zero in the others; reads nothing else (`p` itself may
    /// point outside any allocation when only lanes past it are read).
    ///
    /// # Safety
    /// `p.wrapping_add(i)` is valid for a read for every lane `i` of `m`.
    unsafe fn load_masked(self, p: *const f32, m: Self::M) -> Self::V;

    /// Writes `LANES` values to `p`, any alignment.
    ///
    /// # Safety
    /// `p` is valid for `LANES` writes.
    unsafe fn store(self, p: *mut f32, v: Self::V);

    /// Writes the first `n < LANES` lanes of `v` to `p`, any alignment.
    ///
    /// # Safety
    /// `p` is valid for `n` writes.
    unsafe fn store_first(self, p: *mut f32, v: Self::V, n: usize);

    /// Writes the `LANES` values of `v` rounded to bf16 ([`to_bf16`]) to `p`.
    ///
    /// # Safety
    /// `p` is valid for `LANES` writes of `u16`.
    unsafe fn store_bf16(self, p: *mut u16, v: Self::V);

    /// Writes `LANES` pairs `to_bf16(even[i]) | to_bf16(odd[i]) << 16` to `p` (the bf16 GEMM's
    /// packed operands).
    ///
    /// # Safety
    /// `p` is valid for `LANES` writes of `u32`.
    unsafe fn store_bf16_pairs(self, p: *mut u32, even: Self::V, odd: Self::V);

    /// Transposes a `LANES × LANES` block: `to[j·to_stride + i] = from[i·from_stride + j]`
    /// for `i, j < LANES`.
    ///
    /// # Safety
    /// For each `i < LANES`, `from + i·from_stride` is valid for `LANES` reads and
    /// `to + i·to_stride` for `LANES` writes, and the two blocks do not overlap.
    unsafe fn transpose_block(
        self,
        from: *const f32,
        from_stride: usize,
        to: *mut f32,
        to_stride: usize,
    );
}

/// `x` rounded to bf16 (round to nearest, ties to even), as its 16 bits. NaN stays a (quiet)
/// NaN, infinities stay, values that round past the largest bf16 become infinite, and
/// subnormals flush to a zero of their sign: Intel's `VCVTNEPS2BF16`, which `vdpbf16ps`'s
/// reading of subnormals as zero matches. Branch-free, so that loops of it vectorise; the
/// vector tokens' [`Simd::store_bf16`] compute the same bits.
#[inline(always)]
pub(crate) fn to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    let rounded = b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16;
    let nan = (b & 0x7fff_ffff) > 0x7f80_0000;
    let subnormal = b & 0x7f80_0000 == 0;
    let r = if nan {
        (b >> 16) | 0x40
    } else if subnormal {
        (b >> 16) & 0x8000
    } else {
        rounded
    };
    r as u16
}

/// Defines `fn name(args) -> ret { body }` that runs `body` compiled for [`isa`].
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn body($($arg: $ty),*) $(-> $ret)? $body
            let level = $crate::simd::dispatch();
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                fn avx512($($arg: $ty),*) $(-> $ret)? {
                    body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                fn avx2($($arg: $ty),*) $(-> $ret)? {
                    body($($arg),*)
                }
                match level {
                    // SAFETY: `isa()` detected every feature `avx512` is compiled with.
                    $crate::simd::Isa::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: `isa()` detected every feature `avx2` is compiled with.
                    $crate::simd::Isa::Avx2 => return unsafe { avx2($($arg),*) },
                    $crate::simd::Isa::Baseline => {}
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            let _ = level;
            body($($arg),*)
        }
    };
}
pub(crate) use multiversion;

/// Evaluates `$body` with the type `$S` naming the [`Simd`] implementation for [`isa`]
/// (`Avx512`, `Avx2`, else `Scalar`) and `$s` its token, inside a function compiled with that
/// instruction set; `$body` sees the listed arguments and returns `()`.
macro_rules! with_simd {
    (|$s:ident: $S:ident| $body:block, ($($arg:ident: $ty:ty),* $(,)?)) => {{
        let level = $crate::simd::dispatch();
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
            #[allow(clippy::too_many_arguments)]
            fn avx512($($arg: $ty),*) {
                type $S = $crate::simd::Avx512;
                // SAFETY: `avx512` is called only where `isa()` detected AVX-512.
                let $s = unsafe { <$S as $crate::simd::Simd>::new_unchecked() };
                $body
            }
            #[target_feature(enable = "avx2,fma")]
            #[allow(clippy::too_many_arguments)]
            fn avx2($($arg: $ty),*) {
                type $S = $crate::simd::Avx2;
                // SAFETY: `avx2` is called only where `isa()` detected AVX2 and FMA.
                let $s = unsafe { <$S as $crate::simd::Simd>::new_unchecked() };
                $body
            }
            match level {
                // SAFETY: `isa()` detected every feature `avx512` is compiled with.
                $crate::simd::Isa::Avx512 => return unsafe { avx512($($arg),*) },
                // SAFETY: `isa()` detected every feature `avx2` is compiled with.
                $crate::simd::Isa::Avx2 => return unsafe { avx2($($arg),*) },
                $crate::simd::Isa::Baseline => {}
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = level;
        {
            type $S = $crate::simd::Scalar;
            let $s = $crate::simd::Scalar;
            $body
        }
    }};
}
pub(crate) use with_simd;

/// [`with_simd!`], and on a CPU where the bf16 GEMM runs `vdpbf16ps` or AMX tiles
/// ([`bf16_path`] is [`Bf16Path::Dot`] or [`Bf16Path::Amx`]) the body with `$S` = [`Avx512Bf16`] instead of `Avx512`, compiled with
/// AVX512_BF16: for the code that rounds f32 to bf16 (`Simd::store_bf16`,
/// `Simd::store_bf16_pairs`), which that token does in one instruction. The bits are the same
/// either way.
macro_rules! with_simd_bf16 {
    (|$s:ident: $S:ident| $body:block, ($($arg:ident: $ty:ty),* $(,)?)) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma")]
            #[allow(clippy::too_many_arguments)]
            fn avx512bf16($($arg: $ty),*) {
                type $S = $crate::simd::Avx512Bf16;
                // SAFETY: `avx512bf16` is called only where the bf16 path is `vdpbf16ps`, which
                // needs AVX512_BF16 and the AVX-512 level.
                let $s = unsafe { <$S as $crate::simd::Simd>::new_unchecked() };
                $body
            }
            if matches!(
                $crate::simd::bf16_path(),
                $crate::simd::Bf16Path::Dot | $crate::simd::Bf16Path::Amx
            ) {
                let _ = $crate::simd::dispatch();
                // SAFETY: the `Dot` and `Amx` paths exist only where `bf16_dot_available()`
                // detected AVX512_BF16 on top of every feature of the AVX-512 level.
                return unsafe { avx512bf16($($arg),*) };
            }
        }
        $crate::simd::with_simd!(|$s: $S| $body, ($($arg: $ty),*))
    }};
}
pub(crate) use with_simd_bf16;

/// Test hooks: force an instruction-set level for one thread, and count which level each
/// dispatch ran, so that the kernel tests run every path this CPU has in one process and can
/// check that a forced path is the one that ran.
#[cfg(test)]
pub(crate) mod testing {
    use std::cell::Cell;

    use super::Isa;

    thread_local! {
        static FORCED: Cell<Option<Isa>> = const { Cell::new(None) };
        static RAN: Cell<[u64; 3]> = const { Cell::new([0; 3]) };
        static RAN_BF16: Cell<Vec<super::Bf16Path>> = const { Cell::new(Vec::new()) };
        static REFUSED: Cell<u8> = const { Cell::new(0) };
    }

    /// What [`each_bf16_path`] refuses on this thread: 0 nothing, 1 AMX tiles, 2 AMX tiles
    /// and `vdpbf16ps`.
    pub(crate) fn bf16_refused() -> u8 {
        REFUSED.with(Cell::get)
    }

    /// Runs `f` with [`bf16_refused`] at `refused` on this thread, then restores it.
    pub(crate) fn with_bf16_refused<R>(refused: u8, f: impl FnOnce() -> R) -> R {
        let before = REFUSED.with(|c| c.replace(refused));
        let r = f();
        REFUSED.with(|c| c.set(before));
        r
    }

    /// Runs `f(path)` on every bf16 path this CPU has, fastest first: at each level of
    /// [`levels`] (forced), and at AVX-512 AMX tiles and `vdpbf16ps` (with the `Avx512Bf16`
    /// token's conversions) where the CPU has them, and the FMA path (with `Avx512`'s), which
    /// [`super::bf16_path`] then returns on this thread. The refusal stays on this thread: a
    /// test that splits work over the pool sees the level's own path on the workers.
    pub(crate) fn each_bf16_path(mut f: impl FnMut(super::Bf16Path)) {
        use super::Bf16Path;
        for level in levels() {
            with_isa(level, || {
                if level == Isa::Avx512 {
                    if super::bf16_path() == Bf16Path::Amx {
                        f(Bf16Path::Amx);
                    } else {
                        eprintln!("SKIPPED: the `amx` bf16 path is not tested: this CPU lacks AMX-BF16 (or the permission to use it) or CNN_SIMD caps it");
                    }
                    if with_bf16_refused(1, super::bf16_path) == Bf16Path::Dot {
                        with_bf16_refused(1, || f(Bf16Path::Dot));
                    } else {
                        eprintln!("SKIPPED: the `avx512bf16` bf16 path is not tested: this CPU lacks AVX512_BF16 or CNN_SIMD caps it");
                    }
                }
                with_bf16_refused(2, || f(Bf16Path::Fma(level)));
            });
        }
    }

    /// Records that the bf16 GEMM ran on `path` on this thread.
    pub(crate) fn note_bf16(path: super::Bf16Path) {
        RAN_BF16.with(|c| {
            let mut ran = c.take();
            if !ran.contains(&path) {
                ran.push(path);
            }
            c.set(ran);
        });
    }

    /// The bf16 paths that ran on this thread since the last call, emptied.
    pub(crate) fn take_ran_bf16() -> Vec<super::Bf16Path> {
        RAN_BF16.with(Cell::take)
    }

    /// The level forced on this thread, if any.
    pub(crate) fn forced() -> Option<Isa> {
        FORCED.with(Cell::get)
    }

    /// Runs `f` with `level` forced (or none), restoring the previous value afterwards, even
    /// when `f` panics. [`crate::threads`] wraps the work it hands to the pool's workers in
    /// this, so a forced level follows the work onto other threads.
    ///
    /// # Panics
    /// If the CPU lacks `level`: the dispatch's `unsafe` calls rely on it.
    pub(crate) fn with_forced<R>(level: Option<Isa>, f: impl FnOnce() -> R) -> R {
        if let Some(level) = level {
            assert!(level.available(), "`{}` is not on this CPU", level.name());
        }
        struct Restore(Option<Isa>);
        impl Drop for Restore {
            fn drop(&mut self) {
                FORCED.with(|c| c.set(self.0));
            }
        }
        let _restore = Restore(FORCED.with(|c| c.replace(level)));
        f()
    }

    /// What this thread forces: the level ([`forced`]) and the bf16 refusal ([`bf16_refused`]),
    /// for [`with_context`] on another thread.
    pub(crate) fn context() -> (Option<Isa>, u8) {
        (forced(), bf16_refused())
    }

    /// Runs `f` under a [`context`] taken on another thread: [`crate::threads`] wraps the work
    /// it hands to the pool's workers in this, so a forced level and a refused bf16 path follow
    /// the work.
    pub(crate) fn with_context<R>((level, refused): (Option<Isa>, u8), f: impl FnOnce() -> R) -> R {
        with_forced(level, || with_bf16_refused(refused, f))
    }

    /// Runs `f` with every kernel it calls dispatching to `level`.
    pub(crate) fn with_isa<R>(level: Isa, f: impl FnOnce() -> R) -> R {
        with_forced(Some(level), f)
    }

    /// Records that a dispatch on this thread ran `level`.
    pub(crate) fn note(level: Isa) {
        RAN.with(|c| {
            let mut ran = c.get();
            ran[level as usize] += 1;
            c.set(ran);
        });
    }

    /// Dispatches this thread has run so far, per level, indexed by `Isa as usize`
    /// (`Baseline`, `Avx2`, `Avx512`).
    pub(crate) fn ran() -> [u64; 3] {
        RAN.with(Cell::get)
    }

    /// The levels the kernel tests run: every level this CPU has, up to the process's level
    /// (so `CNN_SIMD=baseline` runs the baseline only), fastest first. The levels left out are
    /// named on stderr, loudly, the first time (in the output of the test that asked first).
    pub(crate) fn levels() -> Vec<Isa> {
        static ONCE: std::sync::Once = std::sync::Once::new();
        let mut first = false;
        ONCE.call_once(|| first = true);
        let top = super::isa();
        let mut run = Vec::new();
        for level in Isa::ALL {
            let why = if !level.available() {
                "this CPU lacks them".to_string()
            } else if level > top {
                format!("CNN_SIMD caps the level at `{}`", top.name())
            } else {
                run.push(level);
                continue;
            };
            if first {
                eprintln!(
                    "SKIPPED: the `{}` kernels are not tested: {why}",
                    level.name()
                );
            }
        }
        run
    }

    /// Runs `f(level)` at every level of [`levels`], with that level forced.
    pub(crate) fn each_level(mut f: impl FnMut(Isa)) {
        for level in levels() {
            with_isa(level, || f(level));
        }
    }
}

#[cfg(test)]
mod tests;
