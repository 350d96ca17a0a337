//! x86_64 micro-kernels: AVX-512F with a 14×32 tile (28 `zmm` accumulators) and AVX2+FMA with
//! a 6×16 tile (12 `ymm` accumulators), each behind one `#[target_feature]` wrapper.

use std::arch::x86_64::*;

use super::blis::{self, Kernel};
use super::kernel::{tile, Simd};

/// 16 lanes in a `zmm` register.
pub(super) struct Avx512;

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
    unsafe fn load_partial(p: *const f32, len: usize) -> __m512 {
        // SAFETY: the caller guarantees AVX-512F and `len` readable floats at `p`; masked-off
        // lanes are not accessed.
        unsafe { _mm512_maskz_loadu_ps(mask16(len), p) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m512) {
        // SAFETY: the caller guarantees AVX-512F and 16 writable floats at `p`.
        unsafe { _mm512_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn store_partial(p: *mut f32, v: __m512, len: usize) {
        // SAFETY: the caller guarantees AVX-512F and `len` writable floats at `p`; masked-off
        // lanes are not accessed.
        unsafe { _mm512_mask_storeu_ps(p, mask16(len), v) }
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
    unsafe fn prefetch(p: *const f32) {
        // SAFETY: SSE is part of x86_64; a prefetch never faults.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) }
    }
}

/// The low `len ≤ 16` bits set.
#[inline(always)]
fn mask16(len: usize) -> __mmask16 {
    ((1u32 << len) - 1) as __mmask16
}

/// 8 lanes in a `ymm` register.
pub(super) struct Avx2;

impl Avx2 {
    /// All-ones in the lanes below `len ≤ 8`, for `vmaskmovps`.
    #[inline(always)]
    unsafe fn mask(len: usize) -> __m256i {
        // SAFETY: the caller guarantees AVX2.
        unsafe {
            _mm256_cmpgt_epi32(
                _mm256_set1_epi32(len as i32),
                _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
            )
        }
    }
}

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
    unsafe fn load_partial(p: *const f32, len: usize) -> __m256 {
        // SAFETY: the caller guarantees AVX2 and `len` readable floats at `p`; masked-off lanes
        // are not accessed.
        unsafe { _mm256_maskload_ps(p, Self::mask(len)) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m256) {
        // SAFETY: the caller guarantees AVX and 8 writable floats at `p`.
        unsafe { _mm256_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn store_partial(p: *mut f32, v: __m256, len: usize) {
        // SAFETY: the caller guarantees AVX2 and `len` writable floats at `p`; masked-off lanes
        // are not accessed.
        unsafe { _mm256_maskstore_ps(p, Self::mask(len), v) }
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
    unsafe fn prefetch(p: *const f32) {
        // SAFETY: SSE is part of x86_64; a prefetch never faults.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) }
    }
}

/// Calls `tile::<$simd, MR, $nv>` with `MR = $mr`, one instantiation per row count.
macro_rules! tile_by_mr {
    ($simd:ty, $nv:literal, $mr:expr, $args:tt, [$($m:literal)*]) => {
        match $mr {
            $(
                // SAFETY: forwarded from `Kernel::tile` with `mr = $m`.
                $m => unsafe { tile::<$simd, $m, $nv> $args },
            )*
            _ => unreachable!("tile rows out of range"),
        }
    };
}

/// 14×32 tile: per k-step 2 loads of B, 14 broadcasts of A, 28 FMAs.
pub(super) struct Avx512Kernel;

impl Kernel for Avx512Kernel {
    const MR: usize = 14;
    const NR: usize = 32;
    const KC: usize = 256;
    const MC: usize = 8 * 14;
    const NC: usize = 512;

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
        tile_by_mr!(
            Avx512,
            2,
            mr,
            (kc, a, rsa, b, rsb, c, rsc, nr, load_c),
            [14 13 12 11 10 9 8 7 6 5 4 3 2 1]
        )
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
        tile_by_mr!(
            Avx2,
            2,
            mr,
            (kc, a, rsa, b, rsb, c, rsc, nr, load_c),
            [6 5 4 3 2 1]
        )
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
