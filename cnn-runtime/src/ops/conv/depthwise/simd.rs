//! The depthwise blocks on `S` vectors with fused multiply-adds.

use super::{Geometry, Post, LANES, MAX_KW, ROWS};
use crate::simd::Simd;

/// Most output columns one SIMD register block covers (two vectors of up to LANES).
const MAX_COLS: usize = 2 * LANES;

/// [`super::scalar::plane`] on `S` vectors with fused multiply-adds: blocks of [`ROWS`] output rows × one or
/// two vectors of columns, summed in registers. The 3×3 kernels with stride 1 or 2 (MobileNet's)
/// get their own blocks, unrolled, with each input vector loaded once for all the block's rows
/// that use it.
#[inline(always)]
pub(super) fn simd_plane<S: Simd>(
    s: S,
    g: &Geometry,
    phases: &[f32],
    taps: &[f32],
    post: Post,
    y: &mut [f32],
) {
    let two = g.w_out > S::LANES;
    match (g.kh, g.kw, g.sh, g.dh, two) {
        (3, 3, 1, 1, true) => merged_plane::<S, 3, 3, 1, 2>(s, g, phases, taps, post, y),
        (3, 3, 1, 1, false) => merged_plane::<S, 3, 3, 1, 1>(s, g, phases, taps, post, y),
        (3, 3, 2, 1, true) => merged_plane::<S, 3, 3, 2, 2>(s, g, phases, taps, post, y),
        (3, 3, 2, 1, false) => merged_plane::<S, 3, 3, 2, 1>(s, g, phases, taps, post, y),
        (.., true) => general_plane::<S, 2>(s, g, phases, taps, post, y),
        (.., false) => general_plane::<S, 1>(s, g, phases, taps, post, y),
    }
}

/// [`Post`] in `S` vectors: `[bias, scale, shift, floor]`.
#[inline(always)]
pub(super) fn post_vectors<S: Simd>(s: S, post: &Post) -> [S::V; 4] {
    [
        s.splat(&post.bias),
        s.splat(&post.scale),
        s.splat(&post.shift),
        s.splat(&post.floor),
    ]
}

/// Checks, once per plane, what every block's loads rely on: a block of `cols ≤ OW + LANES`
/// columns from any `x0 ≤ OW + LANES − cols`, shifted by any tap column's start (at most the
/// kernel's reach into a phase), stays inside its phase row, so inside `rs` floats of its padded
/// row. Rows are checked per block by slicing the row window.
fn check_columns(g: &Geometry, cols: usize) {
    let reach = (g.kw - 1) * g.dw / g.sw;
    assert!(
        cols <= MAX_COLS && cols <= g.w_out + LANES && g.w_out + reach + LANES <= g.row,
        "depthwise block wider than its phase row"
    );
}

/// `v = max(floor, (v + bias) · scale + shift)`: `scalar::finish` on vectors, the same roundings.
///
#[inline(always)]
fn finish_vector<S: Simd>(s: S, v: S::V, e: &[S::V; 4]) -> S::V {
    // `max(floor, v)` is `v` when `floor` is −∞ (NaN included) and
    // `activation`'s ReLU when it is 0.
    s.max(e[3], s.add(s.mul(s.add(v, e[0]), e[1]), e[2]))
}

/// Writes `R` rows of `V` finished vectors to `y: [R, OW]` from column `x0`, through a buffer
/// where a row has fewer than `V·LANES` columns left.
///
/// # Safety
/// `V·S::LANES ≤ MAX_COLS`.
#[inline(always)]
unsafe fn store_rows<S: Simd, const R: usize, const V: usize>(
    s: S,
    acc: &[[S::V; V]; R],
    e: &[S::V; 4],
    w_out: usize,
    x0: usize,
    y: &mut [f32],
) {
    let cols = V * S::LANES;
    // LOOP over the block's output rows
    for (r, acc) in acc.iter().enumerate() {
        let dst = &mut y[r * w_out + x0..(r + 1) * w_out];
        if dst.len() >= cols {
            for (v, &a) in acc.iter().enumerate() {
                // SAFETY: `dst` holds `V·LANES` floats, so LANES from `v·LANES` are writable.
                unsafe { s.store(dst.as_mut_ptr().add(v * S::LANES), finish_vector(s, a, e)) };
            }
        } else {
            let mut tmp = [0.0f32; MAX_COLS];
            for (v, &a) in acc.iter().enumerate() {
                // SAFETY: `tmp` holds MAX_COLS ≥ V·LANES floats (the caller's promise).
                unsafe { s.store(tmp.as_mut_ptr().add(v * S::LANES), finish_vector(s, a, e)) };
            }
            let len = dst.len();
            dst.copy_from_slice(&tmp[..len]);
        }
    }
}

/// [`store_rows`] for blocks of at most [`MAX_COLS`] columns (checked when compiled).
#[inline(always)]
pub(super) fn finish_block<S: Simd, const R: usize, const V: usize>(
    s: S,
    acc: &[[S::V; V]; R],
    e: &[S::V; 4],
    w_out: usize,
    x0: usize,
    y: &mut [f32],
) {
    const { assert!(V * S::LANES <= MAX_COLS) };
    // SAFETY: V·LANES ≤ MAX_COLS, asserted above.
    unsafe { store_rows::<S, R, V>(s, acc, e, w_out, x0, y) }
}

/// [`simd_plane`] for a `KH×KW` kernel of vertical stride `SH`, no vertical dilation, `V`
/// vectors per row: the taps stay in registers.
#[inline(always)]
fn merged_plane<S: Simd, const KH: usize, const KW: usize, const SH: usize, const V: usize>(
    s: S,
    g: &Geometry,
    phases: &[f32],
    taps: &[f32],
    post: Post,
    y: &mut [f32],
) {
    check_columns(g, V * S::LANES);
    let taps = &taps[..KH * KW];
    let w: [[S::V; KW]; KH] =
        core::array::from_fn(|a| core::array::from_fn(|b| s.splat(&taps[a * KW + b])));
    let e = post_vectors(s, &post);
    let done = y.len() / (ROWS * g.w_out) * ROWS;
    let mut blocks = y.chunks_exact_mut(ROWS * g.w_out);
    // LOOP over blocks of ROWS output rows
    for (b, rows) in blocks.by_ref().enumerate() {
        // SAFETY: the columns are checked above.
        unsafe { merged_block::<S, ROWS, KH, KW, SH, V>(s, g, phases, &w, &e, b * ROWS, rows) };
    }
    // LOOP over the remaining output rows
    for (r, rows) in blocks
        .into_remainder()
        .chunks_exact_mut(g.w_out)
        .enumerate()
    {
        // SAFETY: as above.
        unsafe { merged_block::<S, 1, KH, KW, SH, V>(s, g, phases, &w, &e, done + r, rows) };
    }
}

/// Output rows `oy..oy + R` into `y: [R, OW]`, `V` vectors of columns at a time. Input row `j`
/// of the window is loaded once per tap column and multiplied into every output row `r` that
/// reads it, with kernel row `j − r·SH`.
///
/// # Safety
/// [`check_columns`] passed for `V·S::LANES` columns.
#[inline(always)]
unsafe fn merged_block<
    S: Simd,
    const R: usize,
    const KH: usize,
    const KW: usize,
    const SH: usize,
    const V: usize,
>(
    s: S,
    g: &Geometry,
    phases: &[f32],
    w: &[[S::V; KW]; KH],
    e: &[S::V; 4],
    oy: usize,
    y: &mut [f32],
) {
    let cols = V * S::LANES;
    let window = (R - 1) * SH + KH;
    let win = &phases[oy * SH * g.rs..(oy * SH + window) * g.rs];
    // LOOP over blocks of V vectors of output columns
    for x0 in (0..g.w_out).step_by(cols) {
        // The last block ends at most LANES past the output row (the slack): it may redo
        // columns of the block before, with the same bits.
        let x0 = x0.min(g.w_out + LANES - cols);
        let mut acc = [[s.zero(); V]; R];
        // LOOP over the window's input rows
        for j in 0..window {
            // LOOP over kernel columns
            #[allow(clippy::needless_range_loop)] // `b` also picks the tap's start
            for b in 0..KW {
                // SAFETY: the loads stay in row `j < window` of `win`, at most
                // `start(b) + x0 + V·LANES ≤ rs` floats into it (`check_columns`, and
                // `x0 ≤ OW + LANES − V·LANES`).
                let x: [S::V; V] = core::array::from_fn(|v| unsafe {
                    s.load(win.as_ptr().add(j * g.rs + g.starts[b] + x0 + v * S::LANES))
                });
                // LOOP over the block's output rows that read input row `j`
                for (r, acc) in acc.iter_mut().enumerate() {
                    if j >= r * SH && j - r * SH < KH {
                        let t = w[j - r * SH][b];
                        for (a, &x) in acc.iter_mut().zip(&x) {
                            *a = s.fmadd(t, x, *a);
                        }
                    }
                }
            }
        }
        // SAFETY: `check_columns` bounds V·LANES by MAX_COLS.
        unsafe { store_rows::<S, R, V>(s, &acc, e, g.w_out, x0, y) };
    }
}

/// [`simd_plane`] for any kernel, stride and dilation: each tap loads its own vectors and
/// broadcasts its weight.
#[inline(always)]
fn general_plane<S: Simd, const V: usize>(
    s: S,
    g: &Geometry,
    phases: &[f32],
    taps: &[f32],
    post: Post,
    y: &mut [f32],
) {
    check_columns(g, V * S::LANES);
    let e = post_vectors(s, &post);
    let done = y.len() / (ROWS * g.w_out) * ROWS;
    let mut blocks = y.chunks_exact_mut(ROWS * g.w_out);
    // LOOP over blocks of ROWS output rows
    for (b, rows) in blocks.by_ref().enumerate() {
        // SAFETY: the columns are checked above.
        unsafe { general_block::<S, ROWS, V>(s, g, phases, taps, &e, b * ROWS, rows) };
    }
    // LOOP over the remaining output rows
    for (r, rows) in blocks
        .into_remainder()
        .chunks_exact_mut(g.w_out)
        .enumerate()
    {
        // SAFETY: as above.
        unsafe { general_block::<S, 1, V>(s, g, phases, taps, &e, done + r, rows) };
    }
}

/// Output rows `oy..oy + R` into `y: [R, OW]`, taps in the order `a, b` for each row.
///
/// # Safety
/// [`check_columns`] passed for `V·S::LANES` columns.
#[inline(always)]
#[allow(clippy::too_many_arguments)] // the block and the token
unsafe fn general_block<S: Simd, const R: usize, const V: usize>(
    s: S,
    g: &Geometry,
    phases: &[f32],
    taps: &[f32],
    e: &[S::V; 4],
    oy: usize,
    y: &mut [f32],
) {
    let cols = V * S::LANES;
    let window = (R - 1) * g.sh + (g.kh - 1) * g.dh + 1;
    let win = &phases[oy * g.sh * g.rs..(oy * g.sh + window) * g.rs];
    let taps = &taps[..g.kh * g.kw];
    let start = |b: usize| if b < MAX_KW { g.starts[b] } else { g.start(b) };
    // LOOP over blocks of V vectors of output columns
    for x0 in (0..g.w_out).step_by(cols) {
        // The last block ends at most LANES past the output row (the slack): it may redo
        // columns of the block before, with the same bits.
        let x0 = x0.min(g.w_out + LANES - cols);
        let mut acc = [[s.zero(); V]; R];
        // LOOP over the block's output rows
        for (r, acc) in acc.iter_mut().enumerate() {
            // LOOP over kernel rows, then columns
            for a in 0..g.kh {
                let j = r * g.sh + a * g.dh;
                for (b, t) in taps[a * g.kw..(a + 1) * g.kw].iter().enumerate() {
                    let t = s.splat(t);
                    let at = j * g.rs + start(b) + x0;
                    for (v, a) in acc.iter_mut().enumerate() {
                        // SAFETY: the load stays in row `j < window` of `win`,
                        // at most `start(b) + x0 + V·LANES ≤ rs` floats into it
                        // (`check_columns`, and `x0 ≤ OW + LANES − V·LANES`).
                        let x = unsafe { s.load(win.as_ptr().add(at + v * S::LANES)) };
                        *a = s.fmadd(t, x, *a);
                    }
                }
            }
        }
        // SAFETY: `check_columns` bounds V·LANES by MAX_COLS.
        unsafe { store_rows::<S, R, V>(s, &acc, e, g.w_out, x0, y) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 3×3, stride-1 geometry (reach 2) with `w_out` outputs and phase rows of `row`.
    fn geometry(w_out: usize, row: usize) -> Geometry {
        Geometry {
            kh: 3,
            kw: 3,
            sh: 1,
            dh: 1,
            sw: 1,
            dw: 1,
            w_out,
            row,
            rs: row,
            starts: [0; MAX_KW],
        }
    }

    /// The check the blocks' unchecked loads rely on passes at its limits and refuses each way
    /// a block could leave its phase row: a row one float short of the reach, a block wider
    /// than the outputs plus a vector, a block wider than `MAX_COLS`.
    #[test]
    fn blocks_leaving_their_phase_row_are_refused() {
        check_columns(&geometry(20, 20 + 2 + LANES), MAX_COLS);
        check_columns(&geometry(10, 10 + 2 + LANES), 10 + LANES);
        for (g, cols) in [
            (geometry(20, 20 + 1 + LANES), LANES),
            (geometry(10, 40), 10 + LANES + 1),
            (geometry(40, 100), MAX_COLS + 1),
        ] {
            let refused = std::panic::catch_unwind(|| check_columns(&g, cols)).is_err();
            assert!(refused, "{cols} columns, w_out {}, row {}", g.w_out, g.row);
        }
    }
}
