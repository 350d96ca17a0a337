//! The plain-Rust depthwise blocks (one multiply and one add per tap), for the baseline
//! instruction set: [`ROWS`] output rows × [`LANES`] columns of sums in arrays the compiler
//! keeps in registers.

use super::{Geometry, Post, LANES, MAX_KW, ROWS};

/// All output rows of one plane, [`ROWS`] at a time. `KH`, `KW` fix the kernel size at
/// compile time (so the tap loops unroll); 0 reads it from `g`.
#[inline(always)]
pub(super) fn plane<const KH: usize, const KW: usize>(
    g: &Geometry,
    phases: &[f32],
    taps: &[f32],
    post: Post,
    y: &mut [f32],
) {
    let done = y.len() / (ROWS * g.w_out) * ROWS;
    let mut blocks = y.chunks_exact_mut(ROWS * g.w_out);
    // LOOP over blocks of ROWS output rows
    for (b, rows) in blocks.by_ref().enumerate() {
        row_block::<ROWS, KH, KW>(g, phases, taps, post, b * ROWS, rows);
    }
    // LOOP over the remaining output rows
    for (r, rows) in blocks
        .into_remainder()
        .chunks_exact_mut(g.w_out)
        .enumerate()
    {
        row_block::<1, KH, KW>(g, phases, taps, post, done + r, rows);
    }
}

/// Output rows `oy..oy + R` of one plane into `y: [R, OW]`: the taps in the order `a, b` (the
/// kernel row, then column), then the bias, then [`Post`].
#[inline(always)]
fn row_block<const R: usize, const KH: usize, const KW: usize>(
    g: &Geometry,
    phases: &[f32],
    taps: &[f32],
    post: Post,
    oy: usize,
    y: &mut [f32],
) {
    let kh = if KH > 0 { KH } else { g.kh };
    let kw = if KW > 0 { KW } else { g.kw };
    let start = |b: usize| if b < MAX_KW { g.starts[b] } else { g.start(b) };
    // LOOP over blocks of LANES output columns
    for x0 in (0..g.w_out).step_by(LANES) {
        let mut acc = [[0.0f32; LANES]; R];
        // LOOP over kernel rows
        for a in 0..kh {
            // LOOP over kernel columns
            for b in 0..kw {
                let t = taps[a * kw + b];
                let s = start(b) + x0;
                // LOOP over the block's output rows
                #[allow(clippy::needless_range_loop)] // an index loop over a constant range unrolls
                for r in 0..R {
                    let at = ((oy + r) * g.sh + a * g.dh) * g.rs + s;
                    // `phase_row` leaves LANES of slack after the last block's first column.
                    let v: &[f32; LANES] =
                        phases[at..at + LANES].try_into().expect("LANES elements");
                    for (acc, &v) in acc[r].iter_mut().zip(v) {
                        *acc += t * v;
                    }
                }
            }
        }
        // LOOP over the block's output rows
        #[allow(clippy::needless_range_loop)]
        for r in 0..R {
            let acc = &mut acc[r];
            finish(acc, post);
            let out = &mut y[r * g.w_out + x0..(r + 1) * g.w_out];
            if let Some(out) = out.first_chunk_mut::<LANES>() {
                *out = *acc;
            } else {
                // Through a copy: indexing `acc` at run time would keep every accumulator in
                // memory instead of registers.
                let last = *acc;
                let len = out.len();
                out.copy_from_slice(&last[..len]);
            }
        }
    }
}

/// Adds the bias, then applies the epilogue's affine part and ReLU, branch-free so that the
/// loop over a block's rows unrolls. An affine `(1, 0)` and a floor of −∞ change no bits: the
/// sum starts at +0, so it is never −0.
#[inline(always)]
fn finish(acc: &mut [f32; LANES], post: Post) {
    for v in acc.iter_mut() {
        *v += post.bias;
        *v = *v * post.scale + post.shift;
        // `activation`'s ReLU when the floor is 0, else nothing (no value is below −∞, NaN stays).
        *v = if *v < post.floor { 0.0 } else { *v };
    }
}
