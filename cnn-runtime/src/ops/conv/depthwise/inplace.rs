//! MobileNet's depthwise convolutions, 3×3 with padding 1 and stride 1 or 2, read from the input
//! plane in place: the padding columns come from masked loads and a one-lane shift instead of a
//! zero-padded copy of the plane, and the padding rows are zero vectors. On MobileNet's small
//! planes (16×16 to 32×32 outputs) the copy, one row at a time, cost about as much as the
//! multiply-adds.
//!
//! Every output gets the same products in the same order as from
//! [`merged_block`](super::simd) over the padded copy, so the bits do not change.

use super::simd::{finish_block, post_vectors};
use super::{Post, ROWS};
use crate::ops::conv::Conv2dParams;
use crate::simd::Simd;

/// Whether [`plane`] computes `p` (its `out_hw` being the one the other fields give).
pub(super) fn fits(p: &Conv2dParams) -> bool {
    p.kernel == [3, 3]
        && p.padding == [1, 1]
        && p.dilation == [1, 1]
        && (p.stride == [1, 1] || p.stride == [2, 2])
}

/// Most vectors one block of a row holds.
const MAX_V: usize = 2;

/// One plane of a convolution that [`fits`]: `x: [H, W]` into `y: [OH, OW]`, blocks of
/// [`ROWS`] output rows × `V` vectors of columns, then the epilogue `post` before the store.
#[inline(always)]
pub(super) fn plane<S: Simd>(
    s: S,
    p: &Conv2dParams,
    x: &[f32],
    taps: &[f32],
    post: Post,
    y: &mut [f32],
) {
    match (p.stride[0], p.out_hw[1] > S::LANES) {
        (1, true) => rows::<S, 1, 2>(s, p, x, taps, post, y),
        (1, false) => rows::<S, 1, 1>(s, p, x, taps, post, y),
        (_, true) => rows::<S, 2, 2>(s, p, x, taps, post, y),
        (_, false) => rows::<S, 2, 1>(s, p, x, taps, post, y),
    }
}

/// [`plane`] for stride `ST` and `V` vectors per block.
#[inline(always)]
fn rows<S: Simd, const ST: usize, const V: usize>(
    s: S,
    p: &Conv2dParams,
    x: &[f32],
    taps: &[f32],
    post: Post,
    y: &mut [f32],
) {
    let taps = &taps[..9];
    let mut w = [[s.zero(); 3]; 3];
    for (a, w) in w.iter_mut().enumerate() {
        for (b, w) in w.iter_mut().enumerate() {
            *w = s.splat(&taps[a * 3 + b]);
        }
    }
    let e = post_vectors(s, &post);
    let w_out = p.out_hw[1];
    let input = Input {
        x,
        h: p.in_hw[0],
        w: p.in_hw[1],
    };
    let done = y.len() / (ROWS * w_out) * ROWS;
    // LOOP over blocks of V vectors of output columns: where their loads read, then the rows
    for x0 in (0..w_out).step_by(V * S::LANES) {
        // (Loops, not closures, here and below: a closure is compiled without the SIMD target
        // features, and its intrinsics become calls.)
        let mut loads = [Loads::new::<S, ST>(s, input.w, x0); V];
        for (v, l) in loads.iter_mut().enumerate().skip(1) {
            *l = Loads::new::<S, ST>(s, input.w, x0 + v * S::LANES);
        }
        let mut blocks = y.chunks_exact_mut(ROWS * w_out);
        // LOOP over blocks of ROWS output rows
        for (b, rows) in blocks.by_ref().enumerate() {
            block::<S, ROWS, ST, V>(s, &input, &w, &e, &loads, [b * ROWS, x0], rows);
        }
        // LOOP over the remaining output rows
        for (r, rows) in blocks.into_remainder().chunks_exact_mut(w_out).enumerate() {
            block::<S, 1, ST, V>(s, &input, &w, &e, &loads, [done + r, x0], rows);
        }
    }
}

/// One input plane `[h, w]`.
struct Input<'a> {
    x: &'a [f32],
    h: usize,
    w: usize,
}

impl Input<'_> {
    /// Input row `iy`, `None` in the padding (or past the slice).
    #[inline(always)]
    fn row(&self, iy: usize) -> Option<&[f32]> {
        (iy < self.h).then(|| self.x.get(iy * self.w..(iy + 1) * self.w))?
    }
}

/// Where the three tap vectors of output columns `x, x + 1, …` (`LANES` of them) come from in
/// an input row of `w` values at stride `ST`, the same for every row: for each load, its offset
/// from the row's start and the lanes inside the row (the others read as the zero padding).
///
/// Stride 1: the taps are columns `x − 1`, `x` and `x + 1` onwards. Stride 2: columns `2x` and
/// `2x + LANES` onwards, split into even and odd columns (the middle and right taps), and
/// column `2x − 1` in the last lane of the third load, shifted in below the odd ones for the
/// left tap.
#[derive(Clone, Copy)]
struct Loads<M> {
    at: [usize; 3],
    lanes: [M; 3],
    /// The row length the lanes were computed for.
    w: usize,
}

impl<M: Copy> Loads<M> {
    #[inline(always)]
    fn new<S: Simd<M = M>, const ST: usize>(s: S, w: usize, x: usize) -> Self {
        let (x, l) = (x as isize, S::LANES as isize);
        let starts = if ST == 1 {
            [x - 1, x, x + 1]
        } else {
            [2 * x, 2 * x + l, 2 * x - l]
        };
        let mut loads = Loads {
            at: [0; 3],
            lanes: [s.lanes(0, 0); 3],
            w,
        };
        for (k, &start) in starts.iter().enumerate() {
            // Lanes `i` with `0 ≤ start + i < w`.
            let lo = (-start).max(0) as usize;
            let hi = (w as isize - start).max(0) as usize;
            loads.at[k] = start as usize;
            loads.lanes[k] = s.lanes(lo, hi);
        }
        loads
    }

    /// The three tap vectors (left, middle, right) from `row`.
    #[inline(always)]
    fn taps<S: Simd<M = M>, const ST: usize>(&self, s: S, row: &[f32]) -> [S::V; 3] {
        assert!(row.len() >= self.w, "depthwise row shorter than its loads");
        let p = row.as_ptr();
        let mut v = [s.zero(); 3];
        for (k, v) in v.iter_mut().enumerate() {
            // SAFETY: the lanes of each load are columns `0..w` (`Loads::new`), inside `row`
            // (asserted above); the offset wraps for a start before the row, whose lanes there
            // are not read.
            *v = unsafe { s.load_masked(p.wrapping_add(self.at[k]), self.lanes[k]) };
        }
        let [a, b, c] = v;
        if ST == 1 {
            [a, b, c]
        } else {
            let (even, odd) = s.deinterleave(a, b);
            [s.shift_in(c, odd), even, odd]
        }
    }
}

/// Output rows `oy..oy + R`, columns `x0..x0 + V·LANES` (those of them inside the row) into
/// `y: [R, OW]`, with the loads of its `V` vectors. Input row `j` of the window is loaded once
/// and multiplied into every output row `r` that reads it, with kernel row `j − r·ST`: the
/// order of `merged_block`.
#[inline(always)]
fn block<S: Simd, const R: usize, const ST: usize, const V: usize>(
    s: S,
    input: &Input<'_>,
    w: &[[S::V; 3]; 3],
    e: &[S::V; 4],
    loads: &[Loads<S::M>; V],
    [oy, x0]: [usize; 2],
    y: &mut [f32],
) {
    const { assert!(V <= MAX_V) };
    let window = (R - 1) * ST + 3;
    let mut acc = [[s.zero(); V]; R];
    // LOOP over the window's input rows: padded row `oy·ST + j` is input row `oy·ST + j − 1`
    for j in 0..window {
        let mut taps = [[s.zero(); 3]; V];
        if let Some(row) = input.row((oy * ST + j).wrapping_sub(1)) {
            for (t, l) in taps.iter_mut().zip(loads) {
                *t = l.taps::<S, ST>(s, row);
            }
        }
        // LOOP over kernel columns
        for b in 0..3 {
            // LOOP over the block's output rows that read input row `j`
            for (r, acc) in acc.iter_mut().enumerate() {
                if j >= r * ST && j - r * ST < 3 {
                    let t = w[j - r * ST][b];
                    for (a, x) in acc.iter_mut().zip(&taps) {
                        *a = s.fmadd(t, x[b], *a);
                    }
                }
            }
        }
    }
    finish_block::<S, R, V>(s, &acc, e, y.len() / R, x0, y);
}
