//! The x86_64 vector tokens: [`Avx512`] (16 lanes in a `zmm` register) and [`Avx2`] (8 lanes
//! in a `ymm` register, with FMA).

use core::arch::x86_64::*;

use super::Simd;

/// Proof that the CPU has AVX-512 F, BW and VL, AVX2 and FMA ([`super::Isa::Avx512`]); 16
/// lanes in a `zmm` register.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Avx512 {
    _detected: (),
}

impl Simd for Avx512 {
    type V = __m512;
    type M = __mmask16;
    const LANES: usize = 16;

    #[inline(always)]
    unsafe fn new_unchecked() -> Self {
        Avx512 { _detected: () }
    }
    #[inline(always)]
    fn zero(self) -> __m512 {
        // SAFETY: the token proves AVX-512F.
        unsafe { _mm512_setzero_ps() }
    }
    #[inline(always)]
    fn splat(self, x: &f32) -> __m512 {
        // SAFETY: the token proves AVX-512F.
        unsafe { _mm512_set1_ps(*x) }
    }
    #[inline(always)]
    fn add(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: the token proves AVX-512F.
        unsafe { _mm512_add_ps(a, b) }
    }
    #[inline(always)]
    fn sub(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: the token proves AVX-512F.
        unsafe { _mm512_sub_ps(a, b) }
    }
    #[inline(always)]
    fn mul(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: the token proves AVX-512F.
        unsafe { _mm512_mul_ps(a, b) }
    }
    #[inline(always)]
    fn fmadd(self, a: __m512, b: __m512, c: __m512) -> __m512 {
        // SAFETY: the token proves AVX-512F.
        unsafe { _mm512_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    fn max(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: the token proves AVX-512F.
        unsafe { _mm512_max_ps(a, b) }
    }
    #[inline(always)]
    fn max_fold(self, acc: __m512, v: __m512) -> __m512 {
        // `maxps(v, acc)` is `v > acc ? v : acc` and gives `acc` when either is NaN; the lanes
        // where `v` is NaN then take `v`.
        // SAFETY: the token proves AVX-512F.
        unsafe {
            let m = _mm512_max_ps(v, acc);
            let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
            _mm512_mask_mov_ps(m, nan, v)
        }
    }
    #[inline(always)]
    unsafe fn load_deinterleaved(self, p: *const f32) -> (__m512, __m512) {
        // SAFETY: the token proves AVX-512F; the caller guarantees 32 readable floats at `p`.
        let (a, b) = unsafe { (_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(16))) };
        self.deinterleave(a, b)
    }
    #[inline(always)]
    fn deinterleave(self, a: __m512, b: __m512) -> (__m512, __m512) {
        // SAFETY: the token proves AVX-512F.
        unsafe {
            let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
            let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
            (
                _mm512_permutex2var_ps(a, even, b),
                _mm512_permutex2var_ps(a, odd, b),
            )
        }
    }
    #[inline(always)]
    fn shift_in(self, prev: __m512, cur: __m512) -> __m512 {
        // `valignd` by 15 of `cur:prev` (`cur` the high half): lane 0 is `prev[15]`, lane `i`
        // is `cur[i − 1]`.
        // SAFETY: the token proves AVX-512F.
        unsafe {
            _mm512_castsi512_ps(_mm512_alignr_epi32::<15>(
                _mm512_castps_si512(cur),
                _mm512_castps_si512(prev),
            ))
        }
    }
    #[inline(always)]
    fn prefetch(self, p: *const f32) {
        prefetch(p)
    }
    #[inline(always)]
    unsafe fn load(self, p: *const f32) -> __m512 {
        // SAFETY: the token proves AVX-512F; the caller guarantees 16 readable floats at `p`.
        unsafe { _mm512_loadu_ps(p) }
    }
    #[inline(always)]
    fn lanes(self, lo: usize, hi: usize) -> __mmask16 {
        let below = |n: usize| ((1u32 << n.min(16)) - 1) as __mmask16;
        below(hi) & !below(lo)
    }
    #[inline(always)]
    unsafe fn load_masked(self, p: *const f32, m: __mmask16) -> __m512 {
        // SAFETY: the token proves AVX-512F; the caller guarantees that the lanes of `m` are
        // readable, and the others are zeroed, neither read nor faulted on.
        unsafe { _mm512_maskz_loadu_ps(m, p) }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32, v: __m512) {
        // SAFETY: the token proves AVX-512F; the caller guarantees 16 writable floats at `p`.
        unsafe { _mm512_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn store_first(self, p: *mut f32, v: __m512, n: usize) {
        let mask = ((1u32 << n) - 1) as __mmask16;
        // SAFETY: the token proves AVX-512F; the caller guarantees `n` writable floats at
        // `p`, and the mask keeps the store to those (masked-off lanes are neither written
        // nor faulted on).
        unsafe { _mm512_mask_storeu_ps(p, mask, v) }
    }
    #[inline(always)]
    unsafe fn store_bf16(self, p: *mut u16, v: __m512) {
        // SAFETY: the token proves AVX-512F and BW (the 32 → 16-bit narrowing); the caller
        // guarantees 16 writable `u16` at `p`.
        unsafe { _mm256_storeu_si256(p.cast(), _mm512_cvtepi32_epi16(bf16_bits_512(v))) }
    }
    #[inline(always)]
    unsafe fn store_bf16_pairs(self, p: *mut u32, even: __m512, odd: __m512) {
        // SAFETY: the token proves AVX-512F; the caller guarantees 16 writable `u32` at `p`.
        unsafe {
            let high = _mm512_slli_epi32::<16>(bf16_bits_512(odd));
            _mm512_storeu_si512(p.cast(), _mm512_or_si512(bf16_bits_512(even), high))
        }
    }
    #[inline(always)]
    unsafe fn transpose_block(self, from: *const f32, fs: usize, to: *mut f32, ts: usize) {
        // Rows r[i] = from row i. Four rounds of shuffles (as oneDNN's and MLAS's 16×16
        // transposes): pairs of rows interleaved, then pairs of pairs, then 128-bit lanes twice.
        // SAFETY: the token proves AVX-512F; the caller guarantees 16 rows of 16 readable
        // floats at `from + i·fs`.
        let r: [__m512; 16] =
            core::array::from_fn(|i| unsafe { _mm512_loadu_ps(from.add(i * fs)) });
        // t[2k] = r[2k][0] r[2k+1][0] r[2k][1] r[2k+1][1] per 128-bit lane; t[2k+1] the upper pairs.
        // SAFETY: the token proves AVX-512F.
        let t: [__m512; 16] = core::array::from_fn(|i| unsafe {
            let (a, b) = (r[i & !1], r[i | 1]);
            if i % 2 == 0 {
                _mm512_unpacklo_ps(a, b)
            } else {
                _mm512_unpackhi_ps(a, b)
            }
        });
        // u[4q + j], per 128-bit lane l: column 4l + j of rows 4q..4q+4.
        // SAFETY: the token proves AVX-512F.
        let u: [__m512; 16] = core::array::from_fn(|i| unsafe {
            let (q, j) = (i / 4, i % 4);
            let (a, b) = (t[4 * q + j / 2], t[4 * q + 2 + j / 2]);
            if j % 2 == 0 {
                _mm512_shuffle_ps::<0x44>(a, b)
            } else {
                _mm512_shuffle_ps::<0xEE>(a, b)
            }
        });
        // v[8h + j] (h: rows 8h..8h+8; j < 4: columns j and j + 8; j ≥ 4: j and j + 8 too,
        // from lanes 1 and 3): rows 8h..8h+4 then 8h+4..8h+8 of those two columns.
        // SAFETY: the token proves AVX-512F.
        let v: [__m512; 16] = core::array::from_fn(|i| unsafe {
            let (h, j) = (i / 8, i % 8);
            let (a, b) = (u[8 * h + j % 4], u[8 * h + 4 + j % 4]);
            if j < 4 {
                _mm512_shuffle_f32x4::<0x88>(a, b)
            } else {
                _mm512_shuffle_f32x4::<0xDD>(a, b)
            }
        });
        // Column c: c < 8 from the even lanes of v[c] and v[c + 8], c ≥ 8 from their odd lanes.
        for c in 0..16 {
            let (a, b) = (v[c % 8], v[c % 8 + 8]);
            // SAFETY: AVX-512F; the caller guarantees 16 writable floats at `to + c·ts`.
            unsafe {
                let col = if c < 8 {
                    _mm512_shuffle_f32x4::<0x88>(a, b)
                } else {
                    _mm512_shuffle_f32x4::<0xDD>(a, b)
                };
                _mm512_storeu_ps(to.add(c * ts), col)
            }
        }
    }
}

/// Proof that the CPU has AVX2 and FMA ([`super::Isa::Avx2`]); 8 lanes in a `ymm` register.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Avx2 {
    _detected: (),
}

impl Simd for Avx2 {
    type V = __m256;
    type M = __m256i;
    const LANES: usize = 8;

    #[inline(always)]
    unsafe fn new_unchecked() -> Self {
        Avx2 { _detected: () }
    }
    #[inline(always)]
    fn zero(self) -> __m256 {
        // SAFETY: the token proves AVX.
        unsafe { _mm256_setzero_ps() }
    }
    #[inline(always)]
    fn splat(self, x: &f32) -> __m256 {
        // SAFETY: the token proves AVX; `x` is a reference to one float.
        unsafe { _mm256_broadcast_ss(x) }
    }
    #[inline(always)]
    fn add(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: the token proves AVX.
        unsafe { _mm256_add_ps(a, b) }
    }
    #[inline(always)]
    fn sub(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: the token proves AVX.
        unsafe { _mm256_sub_ps(a, b) }
    }
    #[inline(always)]
    fn mul(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: the token proves AVX.
        unsafe { _mm256_mul_ps(a, b) }
    }
    #[inline(always)]
    fn fmadd(self, a: __m256, b: __m256, c: __m256) -> __m256 {
        // SAFETY: the token proves FMA.
        unsafe { _mm256_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    fn max(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: the token proves AVX.
        unsafe { _mm256_max_ps(a, b) }
    }
    #[inline(always)]
    fn max_fold(self, acc: __m256, v: __m256) -> __m256 {
        // As `Avx512::max_fold`, with a blend on the NaN lanes of `v`.
        // SAFETY: the token proves AVX.
        unsafe {
            let m = _mm256_max_ps(v, acc);
            let nan = _mm256_cmp_ps::<_CMP_UNORD_Q>(v, v);
            _mm256_blendv_ps(m, v, nan)
        }
    }
    #[inline(always)]
    unsafe fn load_deinterleaved(self, p: *const f32) -> (__m256, __m256) {
        // SAFETY: the token proves AVX; the caller guarantees 16 readable floats at `p`.
        let (a, b) = unsafe { (_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8))) };
        self.deinterleave(a, b)
    }
    #[inline(always)]
    fn shift_in(self, prev: __m256, cur: __m256) -> __m256 {
        // Both rotated up one lane across the 128-bit halves; lane 0 then taken from `prev`.
        // SAFETY: the token proves AVX2.
        unsafe {
            let up = _mm256_setr_epi32(7, 0, 1, 2, 3, 4, 5, 6);
            _mm256_blend_ps::<1>(
                _mm256_permutevar8x32_ps(cur, up),
                _mm256_permutevar8x32_ps(prev, up),
            )
        }
    }
    #[inline(always)]
    fn deinterleave(self, a: __m256, b: __m256) -> (__m256, __m256) {
        // Within each 128-bit lane, `shufps` takes two values of `a` then two of `b`; the
        // 64-bit permutation then puts `a`'s four before `b`'s.
        // SAFETY: the token proves AVX2.
        unsafe {
            let order = |v: __m256| {
                _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(v)))
            };
            (
                order(_mm256_shuffle_ps::<0b10_00_10_00>(a, b)),
                order(_mm256_shuffle_ps::<0b11_01_11_01>(a, b)),
            )
        }
    }
    #[inline(always)]
    fn prefetch(self, p: *const f32) {
        prefetch(p)
    }
    #[inline(always)]
    unsafe fn load(self, p: *const f32) -> __m256 {
        // SAFETY: the token proves AVX; the caller guarantees 8 readable floats at `p`.
        unsafe { _mm256_loadu_ps(p) }
    }
    #[inline(always)]
    fn lanes(self, lo: usize, hi: usize) -> __m256i {
        // Lane `i` is in the set when `lo ≤ i < hi`: both compares true, sign bits set.
        let clamp = |n: usize| n.min(8) as i32;
        // SAFETY: the token proves AVX2.
        unsafe {
            let i = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            let below_hi = _mm256_cmpgt_epi32(_mm256_set1_epi32(clamp(hi)), i);
            let from_lo = _mm256_cmpgt_epi32(_mm256_set1_epi32(clamp(lo)), i);
            _mm256_andnot_si256(from_lo, below_hi)
        }
    }
    #[inline(always)]
    unsafe fn load_masked(self, p: *const f32, m: __m256i) -> __m256 {
        // SAFETY: AVX; the caller guarantees that the lanes of `m` (sign bits) are readable;
        // the masked load zeroes the others and does not fault on them.
        unsafe { _mm256_maskload_ps(p, m) }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32, v: __m256) {
        // SAFETY: the token proves AVX; the caller guarantees 8 writable floats at `p`.
        unsafe { _mm256_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn store_first(self, p: *mut f32, v: __m256, n: usize) {
        const FIRST: [i32; 16] = [-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0];
        // SAFETY: the token proves AVX, and the caller guarantees `n < 8`, so the 8 mask
        // lanes from `8 − n` lie inside FIRST; their sign bits select the first `n` lanes.
        let mask = unsafe { _mm256_loadu_si256(FIRST.as_ptr().add(8 - n).cast()) };
        // SAFETY: AVX; the masked store writes only the `n` floats the caller made writable
        // and does not fault on the others.
        unsafe { _mm256_maskstore_ps(p, mask, v) }
    }
    #[inline(always)]
    unsafe fn store_bf16(self, p: *mut u16, v: __m256) {
        // SAFETY: the token proves AVX2; the caller guarantees 8 writable `u16` at `p`. Every
        // lane is below 2^16, so the signed-saturating pack keeps it.
        unsafe {
            let r = bf16_bits_256(v);
            // Per 128-bit lane [r0..r3, r0..r3 | r4..r7, r4..r7]; quadwords 0 and 2 in order.
            let packed = _mm256_packus_epi32(r, r);
            let ordered = _mm256_permute4x64_epi64::<0b00_00_10_00>(packed);
            _mm_storeu_si128(p.cast(), _mm256_castsi256_si128(ordered))
        }
    }
    #[inline(always)]
    unsafe fn store_bf16_pairs(self, p: *mut u32, even: __m256, odd: __m256) {
        // SAFETY: the token proves AVX2; the caller guarantees 8 writable `u32` at `p`.
        unsafe {
            let high = _mm256_slli_epi32::<16>(bf16_bits_256(odd));
            _mm256_storeu_si256(p.cast(), _mm256_or_si256(bf16_bits_256(even), high))
        }
    }
    #[inline(always)]
    unsafe fn transpose_block(self, from: *const f32, fs: usize, to: *mut f32, ts: usize) {
        // SAFETY: the token proves AVX; the caller guarantees 8 rows of 8 readable floats at
        // `from + i·fs`.
        let r: [__m256; 8] = core::array::from_fn(|i| unsafe { _mm256_loadu_ps(from.add(i * fs)) });
        // t[2k], t[2k+1]: rows 2k and 2k+1 interleaved, low and high pairs of each 128-bit lane.
        // SAFETY: the token proves AVX.
        let t: [__m256; 8] = core::array::from_fn(|i| unsafe {
            let (a, b) = (r[i & !1], r[i | 1]);
            if i % 2 == 0 {
                _mm256_unpacklo_ps(a, b)
            } else {
                _mm256_unpackhi_ps(a, b)
            }
        });
        // u[4q + j]: columns j (low lane) and j + 4 (high lane) of rows 4q..4q+4.
        // SAFETY: the token proves AVX.
        let u: [__m256; 8] = core::array::from_fn(|i| unsafe {
            let (q, j) = (i / 4, i % 4);
            let (a, b) = (t[4 * q + j / 2], t[4 * q + 2 + j / 2]);
            if j % 2 == 0 {
                _mm256_shuffle_ps::<0x44>(a, b)
            } else {
                _mm256_shuffle_ps::<0xEE>(a, b)
            }
        });
        for c in 0..8 {
            let (a, b) = (u[c % 4], u[c % 4 + 4]);
            // SAFETY: AVX; the caller guarantees 8 writable floats at `to + c·ts`.
            unsafe {
                let col = if c < 4 {
                    _mm256_permute2f128_ps::<0x20>(a, b)
                } else {
                    _mm256_permute2f128_ps::<0x31>(a, b)
                };
                _mm256_storeu_ps(to.add(c * ts), col)
            }
        }
    }
}

/// Hints the cache line holding `p` into L1.
#[inline(always)]
pub(crate) fn prefetch(p: *const f32) {
    // SAFETY: SSE is part of x86_64, and a prefetch never faults, whatever the address.
    unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) }
}

/// Proof that the CPU has AVX512_BF16 on top of [`Avx512`] (what the bf16 GEMM's `vdpbf16ps`
/// path runs on): the same 16-lane vectors, with the conversions to bf16 done by the
/// instruction that defines them, `vcvtneps2bf16`, instead of [`Avx512`]'s dozen integer
/// operations (the same bits: round to nearest even, NaN quieted, subnormals to zero).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Avx512Bf16 {
    base: Avx512,
}

impl Simd for Avx512Bf16 {
    type V = __m512;
    type M = __mmask16;
    const LANES: usize = 16;

    #[inline(always)]
    unsafe fn new_unchecked() -> Self {
        // SAFETY: the caller guarantees AVX512_BF16 and with it the AVX-512 level.
        let base = unsafe { Avx512::new_unchecked() };
        Avx512Bf16 { base }
    }
    #[inline(always)]
    fn zero(self) -> __m512 {
        self.base.zero()
    }
    #[inline(always)]
    fn splat(self, x: &f32) -> __m512 {
        self.base.splat(x)
    }
    #[inline(always)]
    fn add(self, a: __m512, b: __m512) -> __m512 {
        self.base.add(a, b)
    }
    #[inline(always)]
    fn sub(self, a: __m512, b: __m512) -> __m512 {
        self.base.sub(a, b)
    }
    #[inline(always)]
    fn mul(self, a: __m512, b: __m512) -> __m512 {
        self.base.mul(a, b)
    }
    #[inline(always)]
    fn fmadd(self, a: __m512, b: __m512, c: __m512) -> __m512 {
        self.base.fmadd(a, b, c)
    }
    #[inline(always)]
    fn max(self, a: __m512, b: __m512) -> __m512 {
        self.base.max(a, b)
    }
    #[inline(always)]
    fn max_fold(self, acc: __m512, v: __m512) -> __m512 {
        self.base.max_fold(acc, v)
    }
    #[inline(always)]
    unsafe fn load_deinterleaved(self, p: *const f32) -> (__m512, __m512) {
        // SAFETY: the caller's guarantee.
        unsafe { self.base.load_deinterleaved(p) }
    }
    #[inline(always)]
    fn deinterleave(self, a: __m512, b: __m512) -> (__m512, __m512) {
        self.base.deinterleave(a, b)
    }
    #[inline(always)]
    fn shift_in(self, prev: __m512, cur: __m512) -> __m512 {
        self.base.shift_in(prev, cur)
    }
    #[inline(always)]
    fn prefetch(self, p: *const f32) {
        self.base.prefetch(p)
    }
    #[inline(always)]
    unsafe fn load(self, p: *const f32) -> __m512 {
        // SAFETY: the caller's guarantee.
        unsafe { self.base.load(p) }
    }
    #[inline(always)]
    fn lanes(self, lo: usize, hi: usize) -> __mmask16 {
        self.base.lanes(lo, hi)
    }
    #[inline(always)]
    unsafe fn load_masked(self, p: *const f32, m: __mmask16) -> __m512 {
        // SAFETY: the caller's guarantee.
        unsafe { self.base.load_masked(p, m) }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32, v: __m512) {
        // SAFETY: the caller's guarantee.
        unsafe { self.base.store(p, v) }
    }
    #[inline(always)]
    unsafe fn store_first(self, p: *mut f32, v: __m512, n: usize) {
        // SAFETY: the caller's guarantee.
        unsafe { self.base.store_first(p, v, n) }
    }
    #[inline(always)]
    unsafe fn store_bf16(self, p: *mut u16, v: __m512) {
        // SAFETY: the token proves AVX512_BF16 and AVX-512F; the caller guarantees 16 writable
        // `u16` at `p`. `__m256bh` and `__m256i` are the same 256 bits.
        unsafe {
            let h = core::mem::transmute::<__m256bh, __m256i>(_mm512_cvtneps_pbh(v));
            _mm256_storeu_si256(p.cast(), h)
        }
    }
    #[inline(always)]
    unsafe fn store_bf16_pairs(self, p: *mut u32, even: __m512, odd: __m512) {
        // One conversion of both vectors gives `even`'s 16 halves then `odd`'s; a permutation
        // of the 32 halves interleaves them into pairs.
        // SAFETY: the token proves AVX512_BF16, F and BW (`vpermw`); the caller guarantees 16
        // writable `u32` at `p`. `__m512bh` and `__m512i` are the same 512 bits.
        unsafe {
            let both = core::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(odd, even));
            let pairs = _mm512_set_epi16(
                31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21, 5,
                20, 4, 19, 3, 18, 2, 17, 1, 16, 0,
            );
            _mm512_storeu_si512(p.cast(), _mm512_permutexvar_epi16(pairs, both))
        }
    }
    #[inline(always)]
    unsafe fn transpose_block(self, from: *const f32, fs: usize, to: *mut f32, ts: usize) {
        // SAFETY: the caller's guarantee.
        unsafe { self.base.transpose_block(from, fs, to, ts) }
    }
}

/// `to_bf16` of each lane, in the low 16 bits of its 32 (the high bits zero): the three cases
/// (rounded, a quiet NaN, a flushed subnormal) computed and one picked per lane.
///
/// # Safety
/// The CPU has AVX-512F.
#[inline(always)]
unsafe fn bf16_bits_512(v: __m512) -> __m512i {
    // SAFETY: the caller guarantees AVX-512F.
    unsafe {
        let b = _mm512_castps_si512(v);
        let high = _mm512_srli_epi32::<16>(b);
        let odd = _mm512_and_si512(high, _mm512_set1_epi32(1));
        let bias = _mm512_add_epi32(odd, _mm512_set1_epi32(0x7fff));
        let rounded = _mm512_srli_epi32::<16>(_mm512_add_epi32(b, bias));
        let magnitude = _mm512_and_si512(b, _mm512_set1_epi32(0x7fff_ffff));
        let nan = _mm512_cmpgt_epi32_mask(magnitude, _mm512_set1_epi32(0x7f80_0000));
        let exponent = _mm512_and_si512(b, _mm512_set1_epi32(0x7f80_0000));
        let subnormal = _mm512_cmpeq_epi32_mask(exponent, _mm512_setzero_si512());
        let signed_zero = _mm512_and_si512(high, _mm512_set1_epi32(0x8000));
        let quiet = _mm512_or_si512(high, _mm512_set1_epi32(0x40));
        let r = _mm512_mask_blend_epi32(subnormal, rounded, signed_zero);
        _mm512_mask_blend_epi32(nan, r, quiet)
    }
}

/// [`bf16_bits_512`] on 8 lanes.
///
/// # Safety
/// The CPU has AVX2.
#[inline(always)]
unsafe fn bf16_bits_256(v: __m256) -> __m256i {
    // SAFETY: the caller guarantees AVX2.
    unsafe {
        let b = _mm256_castps_si256(v);
        let high = _mm256_srli_epi32::<16>(b);
        let odd = _mm256_and_si256(high, _mm256_set1_epi32(1));
        let bias = _mm256_add_epi32(odd, _mm256_set1_epi32(0x7fff));
        let rounded = _mm256_srli_epi32::<16>(_mm256_add_epi32(b, bias));
        let magnitude = _mm256_and_si256(b, _mm256_set1_epi32(0x7fff_ffff));
        let nan = _mm256_cmpgt_epi32(magnitude, _mm256_set1_epi32(0x7f80_0000));
        let exponent = _mm256_and_si256(b, _mm256_set1_epi32(0x7f80_0000));
        let subnormal = _mm256_cmpeq_epi32(exponent, _mm256_setzero_si256());
        let signed_zero = _mm256_and_si256(high, _mm256_set1_epi32(0x8000));
        let quiet = _mm256_or_si256(high, _mm256_set1_epi32(0x40));
        let r = _mm256_blendv_epi8(rounded, signed_zero, subnormal);
        _mm256_blendv_epi8(r, quiet, nan)
    }
}

/// Whether the CPU has AMX-TILE and AMX-BF16 (CPUID leaf 7: EDX bits 24 and 22) and the
/// operating system enabled the tiles' state in XCR0 (bits 17 and 18), which it saves on a
/// context switch.
#[cfg(all(target_os = "linux", feature = "std"))]
pub(super) fn amx_tiles() -> bool {
    let leaf7 = __cpuid_count(7, 0);
    let has = leaf7.edx & (1 << 24) != 0 && leaf7.edx & (1 << 22) != 0;
    // OSXSAVE (CPUID leaf 1, ECX bit 27): XGETBV may be executed.
    if !has || __cpuid(1).ecx & (1 << 27) == 0 {
        return false;
    }
    let (lo, _hi): (u32, u32);
    // SAFETY: OSXSAVE is set, so XGETBV with ECX = 0 (XCR0) is defined; it only reads a
    // register into EAX:EDX.
    unsafe {
        core::arch::asm!("xgetbv", in("ecx") 0u32, out("eax") lo, out("edx") _hi, options(nomem, nostack, preserves_flags));
    }
    lo & (0b11 << 17) == 0b11 << 17
}

/// Asks Linux for the permission to use the AMX tile data (`arch_prctl(ARCH_REQ_XCOMP_PERM,
/// XFEATURE_XTILEDATA)`, Linux 5.16 on): without it the first tile instruction kills the process.
/// The permission is the whole process's. `true` when granted.
#[cfg(all(target_os = "linux", feature = "std"))]
pub(super) fn request_amx() -> bool {
    const SYS_ARCH_PRCTL: i64 = 158;
    const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
    const XFEATURE_XTILEDATA: i64 = 18;
    let ret: i64;
    // SAFETY: the arch_prctl system call with this request only changes which extended states
    // the process may use; it reads no memory of ours. The kernel's convention: number in RAX,
    // arguments in RDI and RSI, result in RAX, RCX and R11 clobbered.
    unsafe {
        core::arch::asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL => ret,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret == 0
}
