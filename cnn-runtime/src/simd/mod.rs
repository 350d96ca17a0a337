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

use std::sync::OnceLock;

mod scalar;
#[cfg(target_arch = "x86_64")]
mod x86;

pub(crate) use scalar::Scalar;
#[cfg(target_arch = "x86_64")]
pub(crate) use x86::{Avx2, Avx512};

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
pub(crate) fn isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        let detected = detect();
        let cap = match std::env::var("CNN_SIMD").as_deref() {
            Ok("baseline") => Isa::Baseline,
            Ok("avx2") => Isa::Avx2,
            _ => Isa::Avx512,
        };
        detected.min(cap)
    })
}

/// The best level this CPU supports, detected once.
fn detect() -> Isa {
    static DETECTED: OnceLock<Isa> = OnceLock::new();
    *DETECTED.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            let avx2 = has!("avx2") && has!("fma");
            if avx2 && has!("avx512f") && has!("avx512bw") && has!("avx512vl") {
                return Isa::Avx512;
            }
            if avx2 {
                return Isa::Avx2;
            }
        }
        Isa::Baseline
    })
}

/// One SIMD register of `f32` lanes, as a capability token: a value of an implementing type
/// exists only where the CPU has its features, so the arithmetic is safe to call. Loads and
/// stores through raw pointers stay `unsafe`.
pub(crate) trait Simd: Copy {
    /// The register type, `__m512`, `__m256` or `f32`.
    type V: Copy;
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

    /// Hints the cache line holding `p` into L1; any address, nothing is read.
    fn prefetch(self, p: *const f32);

    /// `LANES` values from `p`, any alignment.
    ///
    /// # Safety
    /// `p` is valid for `LANES` reads.
    unsafe fn load(self, p: *const f32) -> Self::V;

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
                match $crate::simd::isa() {
                    // SAFETY: `isa()` detected every feature `avx512` is compiled with.
                    $crate::simd::Isa::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: `isa()` detected every feature `avx2` is compiled with.
                    $crate::simd::Isa::Avx2 => return unsafe { avx2($($arg),*) },
                    $crate::simd::Isa::Baseline => {}
                }
            }
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
            match $crate::simd::isa() {
                // SAFETY: `isa()` detected every feature `avx512` is compiled with.
                $crate::simd::Isa::Avx512 => return unsafe { avx512($($arg),*) },
                // SAFETY: `isa()` detected every feature `avx2` is compiled with.
                $crate::simd::Isa::Avx2 => return unsafe { avx2($($arg),*) },
                $crate::simd::Isa::Baseline => {}
            }
        }
        {
            type $S = $crate::simd::Scalar;
            let $s = $crate::simd::Scalar;
            $body
        }
    }};
}
pub(crate) use with_simd;
