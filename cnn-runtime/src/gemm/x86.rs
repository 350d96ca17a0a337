//! x86_64 micro-kernels: AVX-512F with a 6×64 tile (24 `zmm` accumulators) and AVX2+FMA with
//! a 6×16 tile (12 `ymm` accumulators), each behind one `#[target_feature]` wrapper.
//!
//! The AVX-512 tile was chosen by measurement on a Zen 4 core (issue 4's bench machine), where
//! 6×64 beat 14×32 by 5–25% and 8×48 by more: it needs the fewest loads per FMA (10 per 24) and
//! fits every `N` of the benchmark nets' convolutions (multiples of 64 or ≥ 784).

use std::arch::x86_64::*;

use super::blis::{self, Kernel};
use super::kernel::{dots, tile, Simd};

/// 16 lanes in a `zmm` register.
pub(crate) struct Avx512;

impl Simd for Avx512 {
    type V = __m512;
    const LANES: usize = 16;

    #[inline(always)]
    unsafe fn zero() -> __m512 {
        // SAFETY: the caller guarantees AVX-512F.
        unsafe { _mm512_setzero_ps() }
    }
    #[inline(always)]
    unsafe fn splat(p: *const f32) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F and one readable float at `p`.
        unsafe { _mm512_set1_ps(*p) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F and 16 readable floats at `p`.
        unsafe { _mm512_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m512) {
        // SAFETY: the caller guarantees AVX-512F and 16 writable floats at `p`.
        unsafe { _mm512_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn fmadd(a: __m512, b: __m512, c: __m512) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F.
        unsafe { _mm512_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn add(a: __m512, b: __m512) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F.
        unsafe { _mm512_add_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn sub(a: __m512, b: __m512) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F.
        unsafe { _mm512_sub_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn store_first(p: *mut f32, v: __m512, n: usize) {
        let mask = ((1u32 << n) - 1) as __mmask16;
        // SAFETY: the caller guarantees AVX-512F and `n` writable floats at `p`; the mask
        // keeps the store to those (masked-off lanes are neither written nor faulted on).
        unsafe { _mm512_mask_storeu_ps(p, mask, v) }
    }
    #[inline(always)]
    unsafe fn mul(a: __m512, b: __m512) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F.
        unsafe { _mm512_mul_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn max(a: __m512, b: __m512) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F.
        unsafe { _mm512_max_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn prefetch(p: *const f32) {
        prefetch(p)
    }
}

/// Hints the cache line holding `p` into L1.
#[inline(always)]
fn prefetch(p: *const f32) {
    // SAFETY: SSE is part of x86_64, and a prefetch never faults, whatever the address.
    unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) }
}

/// 8 lanes in a `ymm` register.
pub(crate) struct Avx2;

impl Simd for Avx2 {
    type V = __m256;
    const LANES: usize = 8;

    #[inline(always)]
    unsafe fn zero() -> __m256 {
        // SAFETY: the caller guarantees AVX.
        unsafe { _mm256_setzero_ps() }
    }
    #[inline(always)]
    unsafe fn splat(p: *const f32) -> __m256 {
        // SAFETY: the caller guarantees AVX and one readable float at `p`.
        unsafe { _mm256_broadcast_ss(&*p) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m256 {
        // SAFETY: the caller guarantees AVX and 8 readable floats at `p`.
        unsafe { _mm256_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m256) {
        // SAFETY: the caller guarantees AVX and 8 writable floats at `p`.
        unsafe { _mm256_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn fmadd(a: __m256, b: __m256, c: __m256) -> __m256 {
        // SAFETY: the caller guarantees FMA.
        unsafe { _mm256_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn add(a: __m256, b: __m256) -> __m256 {
        // SAFETY: the caller guarantees AVX.
        unsafe { _mm256_add_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn sub(a: __m256, b: __m256) -> __m256 {
        // SAFETY: the caller guarantees AVX.
        unsafe { _mm256_sub_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn store_first(p: *mut f32, v: __m256, n: usize) {
        const FIRST: [i32; 16] = [-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0];
        // SAFETY: the caller guarantees AVX and `n < 8`, so the 8 mask lanes from `8 − n` lie
        // inside FIRST; their sign bits select the first `n` lanes.
        let mask = unsafe { _mm256_loadu_si256(FIRST.as_ptr().add(8 - n).cast()) };
        // SAFETY: AVX; the masked store writes only the `n` floats the caller made writable
        // and does not fault on the others.
        unsafe { _mm256_maskstore_ps(p, mask, v) }
    }
    #[inline(always)]
    unsafe fn mul(a: __m256, b: __m256) -> __m256 {
        // SAFETY: the caller guarantees AVX.
        unsafe { _mm256_mul_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn max(a: __m256, b: __m256) -> __m256 {
        // SAFETY: the caller guarantees AVX.
        unsafe { _mm256_max_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn prefetch(p: *const f32) {
        prefetch(p)
    }
}

/// Calls `tile::<$simd, MR, $nv>` with `MR = $mr`, one instantiation per row count; `$args` is
/// the tuple of `tile`'s arguments.
macro_rules! tile_by_mr {
    ($simd:ty, $nv:literal, $mr:expr, $args:ident, [$($m:literal)*]) => {
        match $mr {
            $(
                // SAFETY: forwarded from `Kernel::tile` with `mr = $m`; the `$nv` vectors read
                // of each B row lie within its `NR` floats.
                $m => unsafe {
                    let (kc, a, rsa, b, rsb, c, rsc, nr, load_c) = $args;
                    tile::<$simd, $m, $nv>(kc, a, rsa, b, rsb, c, rsc, nr, load_c)
                },
            )*
            _ => unreachable!("tile rows out of range"),
        }
    };
}

/// Calls `dots::<$simd, R, Q>` with `(R, Q) = ($r, $q)`, one instantiation per block shape.
macro_rules! dots_by_rq {
    ($simd:ty, $r:expr, $q:expr, $args:tt, [$(($rr:literal, $qq:literal))*]) => {
        match ($r, $q) {
            $(
                // SAFETY: forwarded from `Kernel::dots` with `(r, q) = ($rr, $qq)`.
                ($rr, $qq) => unsafe { dots::<$simd, $rr, $qq> $args },
            )*
            _ => unreachable!("dot block out of range"),
        }
    };
}

/// The 16 `(r, q)` pairs of a 4×4 dot block.
macro_rules! dots_4x4 {
    ($simd:ty, $r:expr, $q:expr, $args:tt) => {
        dots_by_rq!(
            $simd,
            $r,
            $q,
            $args,
            [
                (4, 4)(4, 3)(4, 2)(4, 1)(3, 4)(3, 3)(3, 2)(3, 1)(2, 4)(2, 3)(2, 2)(2, 1)(1, 4)(
                    1, 3
                )(1, 2)(1, 1)
            ]
        )
    };
}

/// 6×64 tile: per k-step 4 loads of B, 6 broadcasts of A, 24 FMAs.
pub(super) struct Avx512Kernel;

impl Kernel for Avx512Kernel {
    const MR: usize = 6;
    const NR: usize = 64;
    const KC: usize = 256;
    const MC: usize = 24 * 6;
    const NC: usize = 512;
    const DR: usize = 4;
    const DQ: usize = 4;

    #[inline(always)]
    fn prefetch(p: *const f32) {
        prefetch(p)
    }

    #[inline(always)]
    unsafe fn tile(
        mr: usize,
        kc: usize,
        a: *const f32,
        rsa: usize,
        b: *const f32,
        rsb: usize,
        c: *mut f32,
        rsc: usize,
        nr: usize,
        load_c: bool,
    ) {
        let args = (kc, a, rsa, b, rsb, c, rsc, nr, load_c);
        // Only the vectors that hold some of the `nr` columns are computed.
        match nr.div_ceil(Avx512::LANES) {
            4 => tile_by_mr!(Avx512, 4, mr, args, [6 5 4 3 2 1]),
            3 => tile_by_mr!(Avx512, 3, mr, args, [6 5 4 3 2 1]),
            2 => tile_by_mr!(Avx512, 2, mr, args, [6 5 4 3 2 1]),
            1 => tile_by_mr!(Avx512, 1, mr, args, [6 5 4 3 2 1]),
            _ => unreachable!("tile columns out of range"),
        }
    }

    #[inline(always)]
    unsafe fn dots(
        r: usize,
        q: usize,
        k: usize,
        a: *const f32,
        rsa: usize,
        b: *const f32,
        rsb: usize,
        c: *mut f32,
        rsc: usize,
        load_c: bool,
    ) {
        dots_4x4!(Avx512, r, q, (k, a, rsa, b, rsb, c, rsc, load_c))
    }
}

/// 6×16 tile: per k-step 2 loads of B, 6 broadcasts of A, 12 FMAs.
pub(super) struct Avx2Kernel;

impl Kernel for Avx2Kernel {
    const MR: usize = 6;
    const NR: usize = 16;
    const KC: usize = 256;
    const MC: usize = 24 * 6;
    const NC: usize = 512;
    const DR: usize = 4;
    const DQ: usize = 4;

    #[inline(always)]
    fn prefetch(p: *const f32) {
        prefetch(p)
    }

    #[inline(always)]
    unsafe fn tile(
        mr: usize,
        kc: usize,
        a: *const f32,
        rsa: usize,
        b: *const f32,
        rsb: usize,
        c: *mut f32,
        rsc: usize,
        nr: usize,
        load_c: bool,
    ) {
        let args = (kc, a, rsa, b, rsb, c, rsc, nr, load_c);
        // Only the vectors that hold some of the `nr` columns are computed.
        match nr.div_ceil(Avx2::LANES) {
            2 => tile_by_mr!(Avx2, 2, mr, args, [6 5 4 3 2 1]),
            1 => tile_by_mr!(Avx2, 1, mr, args, [6 5 4 3 2 1]),
            _ => unreachable!("tile columns out of range"),
        }
    }

    #[inline(always)]
    unsafe fn dots(
        r: usize,
        q: usize,
        k: usize,
        a: *const f32,
        rsa: usize,
        b: *const f32,
        rsb: usize,
        c: *mut f32,
        rsc: usize,
        load_c: bool,
    ) {
        dots_4x4!(Avx2, r, q, (k, a, rsa, b, rsb, c, rsc, load_c))
    }
}

/// [`blis::gemm`] compiled for AVX-512F.
///
/// # Safety
/// The CPU supports AVX-512F.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)] // sgemm's own signature plus B's strides
pub(super) unsafe fn gemm_avx512(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    b: &[f32],
    strides_b: (usize, usize),
    c: &mut [f32],
    accumulate: bool,
) {
    // SAFETY: the caller guarantees AVX-512F, the kernel's only feature.
    unsafe { blis::gemm::<Avx512Kernel>(m, k, n, a, b, strides_b, c, accumulate) }
}

/// [`blis::gemm`] compiled for AVX2 and FMA.
///
/// # Safety
/// The CPU supports AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)] // sgemm's own signature plus B's strides
pub(super) unsafe fn gemm_avx2(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    b: &[f32],
    strides_b: (usize, usize),
    c: &mut [f32],
    accumulate: bool,
) {
    // SAFETY: the caller guarantees AVX2 and FMA, the kernel's only features.
    unsafe { blis::gemm::<Avx2Kernel>(m, k, n, a, b, strides_b, c, accumulate) }
}
