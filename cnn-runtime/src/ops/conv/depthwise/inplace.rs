//! MobileNet's depthwise convolutions, 3×3 with padding 1 and stride 1 or 2, read from the input
//! plane in place: the padding columns come from masked loads and a one-lane shift instead of a
//! zero-padded copy of the plane, and the padding rows are zero vectors. On MobileNet's small
//! planes (16×16 to 32×32 outputs) the copy, one row at a time, cost about as much as the
//! multiply-adds.
//!
//! Every output gets the same products in the same order as from
//! [`merged_block`](super::simd) over the padded copy, so the bits do not change.

use super::simd::{finish_block, post_vectors};
use super::Post;
use crate::ops::conv::Conv2dParams;
use crate::simd::Simd;

/// Whether [`plane`] computes `p` (its `out_hw` being the one the other fields give).
pub(super) fn fits(p: &Conv2dParams) -> bool {
    p.kernel == [3, 3]
        && p.padding == [1, 1]
        && p.dilation == [1, 1]
        && (p.stride == [1, 1] || p.stride == [2, 2])
}

/// One plane of a convolution that [`fits`]: `x: [H, W]` into `y: [OH, OW]`, by blocks of `V`
/// vectors of columns, each down the whole plane ([`rows`]), then the epilogue `post` before
/// the store.
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

/// [`plane`] for stride `ST` and `V` vectors per block: for each block of columns, a window
/// that slides down the plane, each input row loaded once and multiplied into the (up to three)
/// output rows that read it, each output row finished and stored as its last input row is in.
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
    let h_out = y.len() / w_out;
    // LOOP over blocks of V vectors of output columns: where their loads read, then the rows
    for x0 in (0..w_out).step_by(V * S::LANES) {
        // (Loops, not closures, here and below: a closure is compiled without the SIMD target
        // features, and its intrinsics become calls.)
        let mut loads = [Loads::new::<S, ST>(s, input.w, x0); V];
        for (v, l) in loads.iter_mut().enumerate().skip(1) {
            *l = Loads::new::<S, ST>(s, input.w, x0 + v * S::LANES);
        }
        // Output row `o` reads padded rows `o·ST .. o·ST + 3` (input rows one less; the
        // padding's are zero vectors, multiplied all the same, as `merged_block` does): kernel
        // row 0 starts its sum, rows 1 and 2 follow, each row's three columns in order.
        // `next` is output row `o + 1`'s sum, started by the row they share at stride 2 or by
        // the row below at stride 1, where `last` is row `o − 1`'s, finished by it.
        let zero = [s.zero(); V];
        let mut next = zero;
        let mut last = zero;
        let top = taps_of::<S, ST, V>(s, &input, &loads, usize::MAX);
        fold::<S, V>(s, &w[0], &top, &mut next);
        if ST == 1 {
            // Padded row 1 (input row 0): kernel row 1 of output 0, row 0 of output 1.
            let t = taps_of::<S, ST, V>(s, &input, &loads, 0);
            let mut cur = next;
            fold::<S, V>(s, &w[1], &t, &mut cur);
            next = zero;
            fold::<S, V>(s, &w[0], &t, &mut next);
            last = cur;
        }
        // LOOP over output rows
        for o in 0..h_out {
            let row = &mut y[o * w_out..(o + 1) * w_out];
            if ST == 1 {
                // Input row `o + 1`: kernel row 2 of output `o` (finished), 1 of `o + 1`, 0
                // of `o + 2`.
                let t = taps_of::<S, ST, V>(s, &input, &loads, o + 1);
                let mut done = last;
                fold::<S, V>(s, &w[2], &t, &mut done);
                finish_block::<S, 1, V>(s, &[done], &e, w_out, x0, row);
                let mut cur = next;
                fold::<S, V>(s, &w[1], &t, &mut cur);
                next = zero;
                fold::<S, V>(s, &w[0], &t, &mut next);
                last = cur;
            } else {
                // Input rows `2o` (kernel row 1) and `2o + 1` (row 2 of output `o`, row 0 of
                // output `o + 1`).
                let mut cur = next;
                let t = taps_of::<S, ST, V>(s, &input, &loads, 2 * o);
                fold::<S, V>(s, &w[1], &t, &mut cur);
                let t = taps_of::<S, ST, V>(s, &input, &loads, 2 * o + 1);
                fold::<S, V>(s, &w[2], &t, &mut cur);
                finish_block::<S, 1, V>(s, &[cur], &e, w_out, x0, row);
                next = zero;
                fold::<S, V>(s, &w[0], &t, &mut next);
            }
        }
    }
}

/// The tap vectors of input row `iy` (zero vectors in the padding) for each of the `V` loads.
#[inline(always)]
fn taps_of<S: Simd, const ST: usize, const V: usize>(
    s: S,
    input: &Input<'_>,
    loads: &[Loads<S::M>; V],
    iy: usize,
) -> [[S::V; 3]; V] {
    let mut taps = [[s.zero(); 3]; V];
    if let Some(row) = input.row(iy) {
        for (t, l) in taps.iter_mut().zip(loads) {
            *t = l.taps::<S, ST>(s, row);
        }
    }
    taps
}

/// `acc += w[b] · taps[b]` for the kernel columns `b` in order, on each of the `V` vectors.
#[inline(always)]
fn fold<S: Simd, const V: usize>(s: S, w: &[S::V; 3], taps: &[[S::V; 3]; V], acc: &mut [S::V; V]) {
    for (a, t) in acc.iter_mut().zip(taps) {
        for b in 0..3 {
            *a = s.fmadd(w[b], t[b], *a);
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
