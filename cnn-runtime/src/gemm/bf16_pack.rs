//! The bf16 GEMM's operand layouts, without `std`: rounding to pairs of bf16 and packing B
//! into panels, shared by the GEMM ([`super::bf16`], which re-exports them) and by the `cnn!`
//! macro, which lays out an embedded network's bf16 weights at compile time.

use crate::simd::{to_bf16, Simd};

/// Columns of a packed panel of B: four `zmm` vectors of 16 pairs on AVX-512.
pub(crate) const NR: usize = 64;

/// The pair `(even, odd)`: `even` in the low half.
#[inline]
pub(crate) fn pair(even: f32, odd: f32) -> u32 {
    to_bf16(even) as u32 | (to_bf16(odd) as u32) << 16
}

/// Pairs per row for `k` values: `⌈k/2⌉`.
pub(crate) const fn pairs(k: usize) -> usize {
    k.div_ceil(2)
}

/// `u32` elements of a packed B of `k` rows and `n` columns.
pub(crate) const fn packed_len(k: usize, n: usize) -> usize {
    pairs(k) * n.div_ceil(NR) * NR
}

/// Rows `[rows, k]` of row-major f32 `src` as pairs `[rows, ⌈k/2⌉]` into `dst`: each row's
/// bf16 values in order (two per `u32`, the first in the low half), and a zero after an odd
/// row.
///
/// # Panics
/// If a slice is shorter than its matrix.
pub(crate) fn pairs_into(src: &[f32], rows: usize, k: usize, dst: &mut [u32]) {
    let k2 = pairs(k);
    assert!(
        src.len() >= rows * k && dst.len() >= rows * k2,
        "bf16 pairs too short"
    );
    if k == 0 {
        return;
    }
    let halves = halves_mut(&mut dst[..rows * k2]);
    // LOOP over rows
    for (row, out) in src.chunks_exact(k).zip(halves.chunks_exact_mut(2 * k2)) {
        convert(row, &mut out[..k]);
        out[k..].fill(0);
    }
}

/// `out[i] = to_bf16(x[i])` for `i < min(x.len(), out.len())`, whole vectors by
/// [`crate::simd::Simd::store_bf16`].
pub(crate) fn convert(x: &[f32], out: &mut [u16]) {
    crate::simd::with_simd_bf16!(
        |s: S| { convert_with::<S>(s, x, out) },
        (x: &[f32], out: &mut [u16])
    )
}

/// [`convert`] with `S` vectors, inlined into a caller that dispatched once.
#[inline(always)]
pub(crate) fn convert_with<S: Simd>(s: S, x: &[f32], out: &mut [u16]) {
    let n = x.len().min(out.len());
    let whole = n & !(S::LANES - 1); // LANES is a power of two
                                     // LOOP over whole vectors
    for (o, v) in out[..whole]
        .chunks_exact_mut(S::LANES)
        .zip(x[..whole].chunks_exact(S::LANES))
    {
        // SAFETY: both chunks hold LANES values.
        unsafe { s.store_bf16(o.as_mut_ptr(), s.load(v.as_ptr())) }
    }
    for (o, &v) in out[whole..n].iter_mut().zip(&x[whole..n]) {
        *o = to_bf16(v);
    }
}

/// The bits of `v`'s floats as words, to be written (a buffer of `f32`s that holds pairs of
/// bf16 values).
pub(crate) fn words_mut(v: &mut [f32]) -> &mut [u32] {
    // SAFETY: `u32` has the size and alignment of `f32` and every bit pattern is valid for
    // both; the result covers the same bytes and reborrows `v` uniquely.
    unsafe { core::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<u32>(), v.len()) }
}

/// `v` as its `u16` halves in memory order (on x86, the low half of each `u32` first).
pub(crate) fn halves_mut(v: &mut [u32]) -> &mut [u16] {
    // SAFETY: `u16` needs less alignment than `u32` and every bit pattern is valid; the
    // result covers the same bytes and reborrows `v` uniquely.
    unsafe { core::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<u16>(), 2 * v.len()) }
}

/// Packs B (`k` rows, `n` columns, element `(p, j)` at `b[p·rsb + j·csb]`) into panels of
/// [`NR`] columns, `dst[(jp·k₂ + p)·NR + j'] = (B[2p, j], B[2p+1, j])` for column
/// `j = jp·NR + j'`, zero past row `k` and column `n`.
///
/// # Panics
/// If `b` is shorter than its matrix or `dst` than [`packed_len`].
pub(crate) fn pack_b(k: usize, n: usize, b: &[f32], (rsb, csb): (usize, usize), dst: &mut [u32]) {
    let k2 = pairs(k);
    assert!(dst.len() >= packed_len(k, n), "bf16 packed B too short");
    if k == 0 || n == 0 {
        return;
    }
    assert!(
        b.len() > (k - 1) * rsb + (n - 1) * csb,
        "bf16 B operand too short"
    );
    // LOOP over panels
    for (jp, panel) in dst
        .chunks_exact_mut(k2 * NR)
        .take(n.div_ceil(NR))
        .enumerate()
    {
        let j0 = jp * NR;
        let cols = NR.min(n - j0);
        // LOOP over pairs of rows
        for (p, row) in panel.chunks_exact_mut(NR).enumerate() {
            let (r0, r1) = (2 * p * rsb, (2 * p + 1 < k).then_some((2 * p + 1) * rsb));
            if csb == 1 {
                // Rows of B contiguous: whole vectors of columns at once.
                let even = &b[r0 + j0..r0 + j0 + cols];
                let odd = r1.map(|r1| &b[r1 + j0..r1 + j0 + cols]);
                pair_rows(even, odd, &mut row[..cols]);
            } else {
                for (jj, o) in row[..cols].iter_mut().enumerate() {
                    let at = (j0 + jj) * csb;
                    *o = pair(b[r0 + at], r1.map_or(0.0, |r1| b[r1 + at]));
                }
            }
            row[cols..].fill(0);
        }
    }
}

/// `out[j] = pair(even[j], odd[j])` (`odd` zero when absent) for `j < out.len()`, whole
/// vectors by [`Simd::store_bf16_pairs`].
///
/// # Panics
/// If `even` or `odd` is shorter than `out`.
pub(crate) fn pair_rows(even: &[f32], odd: Option<&[f32]>, out: &mut [u32]) {
    crate::simd::with_simd_bf16!(
        |s: S| { pair_rows_with::<S>(s, even, odd, out) },
        (even: &[f32], odd: Option<&[f32]>, out: &mut [u32])
    )
}

/// [`pair_rows`] with `S` vectors, inlined into a caller that dispatched once.
///
/// # Panics
/// If `even` or `odd` is shorter than `out`.
#[inline(always)]
pub(crate) fn pair_rows_with<S: Simd>(s: S, even: &[f32], odd: Option<&[f32]>, out: &mut [u32]) {
    let n = out.len();
    let (even, odd) = (&even[..n], odd.map(|o| &o[..n]));
    let whole = n & !(S::LANES - 1); // LANES is a power of two
    let zero = s.zero();
    // LOOP over whole vectors
    for j in (0..whole).step_by(S::LANES) {
        // SAFETY: j + LANES ≤ n, and every slice holds n values.
        unsafe {
            let e = s.load(even.as_ptr().add(j));
            let o = odd.map_or(zero, |o| s.load(o.as_ptr().add(j)));
            s.store_bf16_pairs(out.as_mut_ptr().add(j), e, o)
        }
    }
    for j in whole..n {
        out[j] = pair(even[j], odd.map_or(0.0, |o| o[j]));
    }
}
