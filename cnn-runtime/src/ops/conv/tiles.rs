//! Winograd's convolutions (3×3, stride 1, one group) in bf16 on AMX tiles, without Winograd:
//! the tiles read the taps straight from a padded, channel-last copy of the input.
//!
//! The input of a sample is copied once into `P`: `[(H + 2·PH)·(W + 2·PW) + margin, C₂]` bf16
//! pairs of channels (`C₂` = ⌈C/2⌉ rounded up to 16, a tile row; zero padding around the image,
//! zero channels past `C`). Output pixels are counted on the padded width `WP = W + 2·PW`
//! ("virtual" pixels `v = y·WP + x`, of which `x ≥ OW` are computed and dropped), so that tap
//! `(ky, kx)` of 16 consecutive virtual pixels is 16 rows of `P` at a uniform stride, starting
//! at `v + ky·WP + kx`: an A tile in place. The weights are nine B matrices (one per tap,
//! `[2·C₂, C_out]`, packed by [`pack_b`]). A 2×2 block of C tiles (32 virtual pixels by 32
//! output channels) sums `9·C₂/16` blocks of 16 pairs, tap by tap, channel block by channel
//! block: the GEMM's `block` with other sources.
//!
//! The sums round in the tiles' order (the tests' `Chain::Tiles`) over that order of `k`.
//! C goes channel-last to the output (or to a buffer transposed to channels-first after),
//! through the channels' bias, folded batch norm and ReLU in AVX-512 registers (the bits of
//! `PostOp::apply`); another activation and a residual run on the finished output.
//!
//! Winograd does 4 (F(4×4)) or 2.25 (F(2×2)) times fewer multiplications, but on the tiles its
//! products are short (`k = C`: 2 to 16 blocks of pairs per C tile, each tile then stored) and
//! its transforms run in f32 around them; here each C tile sums `9·C₂/16` blocks (18 to 72 in
//! vgg) before it leaves the tiles, and nothing is transformed. On Sapphire Rapids the kernel
//! runs at 1–1.5 TFLOP/s (a third to a half of the tiles' peak) and vgg in bf16 takes 27% less
//! time than with Winograd on the tiles (`docs/benchmarks.md`). The weights are packed from the
//! layer's f32 ones on first use ([`pack_weights`]; an embedded network's, which has no cell to
//! keep them, once per process: [`static_weights`]).
//!
//! `P`, the weights and the C buffer start on cache lines, as every tile load here does: a
//! tile load off a line's start runs several times slower.

use std::boxed::Box;
use std::sync::{Mutex, PoisonError};
use std::vec::Vec;

use super::{Conv2dParams, Epilogue, Layout};
use crate::gemm::bf16::amx::{self as tiles, CTiles, Src, KT, T};
use crate::gemm::bf16::Lines;
use crate::gemm::bf16_pack::{convert_with, halves_mut, pack_b, packed_len, pairs, NR};
use crate::ops::activation::activation;
use crate::simd::{Avx512, Simd};
use crate::store::Scratch;

/// Taps of the 3×3 kernel.
const TAPS: usize = 9;

/// Pairs of channels per pixel of `P`: ⌈C/2⌉ rounded up to a whole tile row.
const fn c2p(c_in: usize) -> usize {
    pairs(c_in).div_ceil(KT) * KT
}

/// Whether the tiles run `p` (on the AMX path): Winograd's shapes, 3×3 with stride 1.
pub(crate) fn applies(p: &Conv2dParams) -> bool {
    p.algorithm() == super::Algorithm::Winograd
        && p.kernel == [3, 3]
        && p.stride == [1, 1]
        && crate::simd::bf16_path() == crate::simd::Bf16Path::Amx
        && scratch_len(p) <= super::winograd::scratch_len(p)
}

/// `[P, the channel-last input, the channel-last output]` of one sample, in f32 elements.
fn parts(p: &Conv2dParams) -> [usize; 3] {
    let ([h, w], [oh, ow]) = (p.in_hw, p.out_hw);
    let wp = w + 2 * p.padding[1];
    // A thread's rows start a block of 32 virtual pixels anywhere: the last block of any
    // split ends before `OH·WP + 32`.
    let virt = oh * wp + 2 * T;
    [
        (virt + 2 * wp + 2) * c2p(p.c_in),
        h * w * p.c_in,
        oh * ow * p.c_out,
    ]
}

/// Scratch of one sample: within Winograd's ([`applies`] checks), which sized the workspace.
fn scratch_len(p: &Conv2dParams) -> usize {
    parts(p).iter().sum()
}

/// `u32` elements of the weights in this layout.
pub(crate) fn weights_len(p: &Conv2dParams) -> usize {
    TAPS * packed_len(2 * c2p(p.c_in), p.c_out)
}

/// `weight: [c_out, c_in, 3, 3]` as nine B matrices `[2·C₂, c_out]`, tap by tap, each packed
/// for the bf16 GEMM (zero rows past `c_in`).
pub(crate) fn pack_weights(p: &Conv2dParams, weight: &[f32]) -> Vec<u32> {
    let (c_in, c_out, k) = (p.c_in, p.c_out, 2 * c2p(p.c_in));
    let per = packed_len(k, c_out);
    let mut out = vec![0; TAPS * per];
    let mut b = vec![0.0f32; k * c_out];
    // LOOP over taps
    for (t, dst) in out.chunks_exact_mut(per).enumerate() {
        for c in 0..c_in {
            for o in 0..c_out {
                b[c * c_out + o] = weight[(o * c_in + c) * TAPS + t];
            }
        }
        pack_b(k, c_out, &b, (c_out, 1), dst);
    }
    out
}

/// [`pack_weights`] of weights in static data (a layer of an embedded network, which has no
/// cell to keep them in): made on first use and kept for the rest of the process, found again
/// by the weights' address.
pub(crate) fn static_weights(p: &Conv2dParams, weight: &'static [f32]) -> &'static [u32] {
    type Kept = (usize, usize, [usize; 2], &'static [u32]);
    static KEPT: Mutex<Vec<Kept>> = Mutex::new(Vec::new());
    let key = (weight.as_ptr() as usize, weight.len(), [p.c_in, p.c_out]);
    // A panic elsewhere while the lock was held leaves the list as it was: still valid.
    let mut kept = KEPT.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(&(.., w)) = kept.iter().find(|k| (k.0, k.1, k.2) == key) {
        return w;
    }
    let w = Box::leak(Box::new(Lines::new(pack_weights(p, weight)))).get();
    kept.push((key.0, key.1, key.2, w));
    w
}

/// The convolution of `n` samples on the tiles: `input` in `layout`, `w` from
/// [`pack_weights`]; the output channel-last when `out_last`, else channels-first with the
/// residual added. Returns nothing: the caller knows the layout it asked for.
///
/// # Panics
/// If a slice is shorter than its layout, or the tiles are not [`applies`]'s.
#[allow(clippy::too_many_arguments)] // the convolution's arguments and the layouts
pub(crate) fn conv2d(
    p: &Conv2dParams,
    n: usize,
    (input, layout): (&[f32], Layout),
    w: &[u32],
    bias: Option<&[f32]>,
    epilogue: Epilogue<'_>,
    threads: usize,
    (out, out_last): (&mut [f32], bool),
    scratch: &mut (impl Scratch + ?Sized),
) {
    assert!(applies(p), "the tiles do not run this convolution");
    assert!(
        !out_last || epilogue.residual.is_none(),
        "tiles: a residual is added to channels-first output only"
    );
    assert!(w.len() >= weights_len(p), "tiles: weights too short");
    assert!(input.len() >= n * p.in_len(), "tiles: input too short");
    assert!(out.len() >= n * p.out_len(), "tiles: output too short");
    epilogue.check(p.c_out, n * p.out_len());
    #[cfg(test)]
    crate::simd::testing::note_bf16(crate::simd::Bf16Path::Amx);
    let (c_in, c_out) = (p.c_in, p.c_out);
    let ([h, wd], [oh, ow]) = (p.in_hw, p.out_hw);
    let [lp, lx, ly] = parts(p);
    let buf = &mut scratch.at_least(lp + lx + ly)[..lp + lx + ly];
    let (pp, rest) = buf.split_at_mut(lp);
    let (xt, yt) = rest.split_at_mut(lx);
    let pp = crate::gemm::bf16::f32_as_pairs_mut(pp);
    // The channels' steps as three vectors over channels (`PostOp::row_coef`), padded to
    // whole vectors with steps that change no bit.
    let first = epilogue.channel(bias, 0);
    let (relu, left) = (first.relu, first.act);
    let cols = c_out.div_ceil(T) * T;
    let mut coef = vec![0.0f32; 3 * cols];
    let (add, rest) = coef.split_at_mut(cols);
    let (scale, shift) = rest.split_at_mut(cols);
    // LOOP over channels, padded
    for c in 0..cols {
        let k = if c < c_out {
            epilogue.channel(bias, c).row_coef()
        } else {
            [-0.0, 1.0, -0.0]
        };
        (add[c], scale[c], shift[c]) = (k[0], k[1], k[2]);
    }
    let steps = Steps {
        add,
        scale,
        shift,
        relu,
    };
    // LOOP over samples
    for (s, (x, y)) in input
        .chunks_exact(p.in_len())
        .zip(out.chunks_exact_mut(p.out_len()))
        .take(n)
        .enumerate()
    {
        let x: &[f32] = if layout == Layout::ChannelsLast {
            x
        } else {
            crate::transpose::transpose(c_in, h * wd, x, h * wd, xt, c_in);
            xt
        };
        pad_pairs(p, x, pp);
        let pp: &[u32] = pp;
        let dst: &mut [f32] = if out_last { &mut *y } else { &mut *yt };
        // Output rows per thread, whole rows (each writes its own).
        let per = oh.div_ceil(threads.max(1)).max(1);
        let chunks = dst.chunks_mut(per * ow * c_out);
        crate::threads::for_each(threads.max(1), chunks, |i, part| {
            let rows = (i * per, (i * per + part.len() / (ow * c_out)).min(oh));
            // SAFETY: `applies` saw the AMX path, which exists only where
            // `amx_available()` (AVX-512 included); `pp` is `parts(p)[0]` long, `w` holds
            // `weights_len(p)`, `part` holds the channel-last output rows `rows`.
            unsafe { rows_on_tiles(p, pp, w, rows, part, &steps) };
        });
        if !out_last {
            crate::transpose::transpose(oh * ow, c_out, yt, c_out, y, oh * ow);
        }
        if let Some(act) = left {
            activation(act, y);
        }
        if epilogue.residual.is_some() {
            // LOOP over output channels: the residual and the activation, on whole planes
            for (o, plane) in y.chunks_exact_mut(oh * ow).take(c_out).enumerate() {
                epilogue.after(s * c_out + o, plane);
            }
        }
    }
}

/// The channels' bias, folded batch norm and ReLU, per output channel (padded to whole
/// vectors): `(v + add)·scale + shift`, then `max(0, ·)` with `relu`.
struct Steps<'a> {
    add: &'a [f32],
    scale: &'a [f32],
    shift: &'a [f32],
    relu: bool,
}

/// Channel-last `x: [H·W, C]` into `pp`: each pixel's channels as pairs at its padded place,
/// zero everywhere else (the padding around the image, the channels past `C`, the margin);
/// whatever `pp` held before does not matter.
fn pad_pairs(p: &Conv2dParams, x: &[f32], pp: &mut [u32]) {
    crate::simd::with_simd_bf16!(
        |s: S| {
            let (c_in, [h, w], [ph, pw]) = (p.c_in, p.in_hw, p.padding);
            let (c2, wp) = (c2p(c_in), w + 2 * pw);
            // Padded pixel of the image's pixel `(yy, 0)`.
            let row = |yy: usize| (yy + ph) * wp + pw;
            if h == 0 {
                pp.fill(0);
                return;
            }
            pp[..row(0) * c2].fill(0);
            // LOOP over input rows: the row's pixels, then the padding up to the next row's
            for yy in 0..h {
                let halves = halves_mut(pp);
                for xx in 0..w {
                    let at = 2 * (row(yy) + xx) * c2;
                    let src = &x[(yy * w + xx) * c_in..][..c_in];
                    convert_with::<S>(s, src, &mut halves[at..at + c_in]);
                    halves[at + c_in..at + 2 * c2].fill(0);
                }
                let next = if yy + 1 < h { row(yy + 1) * c2 } else { pp.len() };
                pp[(row(yy) + w) * c2..next].fill(0);
            }
        },
        (p: &Conv2dParams, x: &[f32], pp: &mut [u32])
    )
}

/// Output rows `y0..y1` of one sample on the tiles, channel-last into `part` (those rows).
///
/// # Safety
/// [`crate::simd::amx_available`]. (The lengths are checked: `pp` must hold what the rows'
/// blocks read, as [`parts`]`(p)[0]` does for any rows, `w` [`weights_len`]`(p)`, `part`
/// `(y1 − y0)·OW·C_out` floats; panics otherwise.)
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
unsafe fn rows_on_tiles(
    p: &Conv2dParams,
    pp: &[u32],
    w: &[u32],
    (y0, y1): (usize, usize),
    part: &mut [f32],
    steps: &Steps<'_>,
) {
    // SAFETY: the caller guarantees AVX-512.
    let s = unsafe { Avx512::new_unchecked() };
    let (c_out, ow) = (p.c_out, p.out_hw[1]);
    let (c2, wp) = (c2p(p.c_in), p.in_hw[1] + 2 * p.padding[1]);
    let blocks = c2 / KT;
    let per = packed_len(2 * c2, c_out);
    let (v_start, v_end) = (y0 * wp, y1 * wp);
    // What the blocks below read and write, checked (the raw accesses rely on it): the A
    // tiles of the last block of 32 virtual pixels, 16 rows past its start, and the reach of
    // the last tap (`2·WP + 2`); the output rows `y0..y1`; the nine packed taps.
    let reach = v_start + (v_end - v_start).div_ceil(2 * T) * 2 * T + 2 * wp + 2;
    assert!(pp.len() >= reach * c2, "tiles: input copy too short");
    assert!(
        part.len() >= (y1 - y0) * ow * c_out,
        "tiles: output rows too short"
    );
    assert!(w.len() >= TAPS * per, "tiles: weights too short");
    let (pp, w) = (pp.as_ptr(), w.as_ptr());
    let mut out = CTiles([[0.0; T * T]; 4]);
    // SAFETY: the caller's guarantee.
    unsafe { tiles::configure() };
    // LOOP over blocks of 32 virtual pixels
    for v0 in (v_start..v_end).step_by(2 * T) {
        let two_rows = v0 + T < v_end;
        // LOOP over blocks of 32 output channels
        for c0 in (0..c_out).step_by(2 * T) {
            let two_cols = c0 + T < c_out;
            // Tap `t = blk / blocks`, channel block `blk % blocks`.
            let a = |blk: usize| {
                let (t, cb) = (blk / blocks, blk % blocks);
                let at = |v: usize| (v + t / 3 * wp + t % 3) * c2 + cb * KT;
                [
                    Src(pp.wrapping_add(at(v0)), c2 * 4),
                    Src(pp.wrapping_add(at(v0 + T)), c2 * 4),
                ]
            };
            let b = |blk: usize| {
                let (t, cb) = (blk / blocks, blk % blocks);
                let at = |c: usize| t * per + (c / NR * c2 + cb * KT) * NR + c % NR;
                [
                    Src(w.wrapping_add(at(c0)), NR * 4),
                    Src(w.wrapping_add(at(c0 + T)), NR * 4),
                ]
            };
            // SAFETY: A tiles: 16 rows from virtual pixel `v0 + 16` at most, plus the reach of
            // a tap (`2·WP + 2`), lie within `reach·C₂ ≤ pp.len()` pairs (asserted above);
            // pairs `cb·16 + 16 ≤ C₂`. B tiles: rows `cb·16 + 16 ≤
            // C₂` of tap `t`'s packed matrix, columns `c0 + 32 ≤` the panel's 64 (blocks of
            // 32 start at multiples of 32). The tiles are configured; `out` is not C.
            unsafe {
                tiles::block(
                    TAPS * blocks,
                    (two_rows, two_cols),
                    a,
                    b,
                    (&mut out, [None; 4], 0),
                );
            }
            // LOOP over the block's tiles: the valid pixels and channels to the output
            for (t, tile) in out.0.iter().enumerate() {
                let (r, q) = (t / 2, t % 2);
                let (vt, ct) = (v0 + r * T, c0 + q * T);
                if vt >= v_end || ct >= c_out {
                    continue;
                }
                let cols = T.min(c_out - ct);
                // SAFETY: the steps hold whole vectors past `c_out`.
                let (add, scale, shift) = unsafe {
                    (
                        s.load(steps.add.as_ptr().add(ct)),
                        s.load(steps.scale.as_ptr().add(ct)),
                        s.load(steps.shift.as_ptr().add(ct)),
                    )
                };
                // LOOP over the tile's virtual pixels
                let (mut yy, mut xx) = (vt / wp, vt % wp);
                for i in 0..T.min(v_end - vt) {
                    let (y_at, x_at) = (yy, xx);
                    xx += 1;
                    if xx == wp {
                        (yy, xx) = (yy + 1, 0);
                    }
                    if x_at >= ow {
                        continue;
                    }
                    // SAFETY: `tile` holds 16 rows of 16 floats.
                    let x = unsafe { s.load(tile.as_ptr().add(i * T)) };
                    let y = s.add(s.mul(s.add(x, add), scale), shift);
                    let y = if steps.relu { s.max(s.zero(), y) } else { y };
                    let at = ((y_at - y0) * ow + x_at) * c_out + ct;
                    // SAFETY: pixel `(yy, xx)` of rows `y0..y1` and channels `ct..ct + cols`
                    // lie in `part`.
                    unsafe {
                        if cols == T {
                            s.store(part.as_mut_ptr().add(at), y);
                        } else {
                            s.store_first(part.as_mut_ptr().add(at), y, cols);
                        }
                    }
                }
            }
        }
    }
    // SAFETY: configured above.
    unsafe { tiles::release() };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemm::bf16_pack::pair;
    use crate::ops::activation::Activation;
    use crate::simd::{bf16_path, Bf16Path, Chain};
    use crate::test_util::{chain_sum, rand_vec};

    /// `(c_in, c_out, [h, w], n)`: channels not a multiple of 32 (a short block of pairs, an
    /// odd last pair), outputs not a multiple of 16 or 32 (a short tile, a single column
    /// tile), rows shorter and longer than a tile, more pixels than a block of 32 leaves
    /// whole.
    const CASES: [(usize, usize, [usize; 2], usize); 9] = [
        (16, 24, [7, 9], 2),
        (19, 24, [9, 7], 2),
        (17, 20, [13, 12], 1),
        (32, 17, [14, 13], 1),
        (64, 64, [16, 16], 1),
        (40, 80, [5, 33], 1),
        (33, 48, [8, 8], 3),
        // Without padding (the output two smaller than the input each way).
        (24, 16, [10, 12], 1),
        (17, 40, [6, 19], 2),
    ];

    /// The sums by hand in the tiles' order (tap by tap, 16 pairs of channels at a time, each
    /// block summed as `tdpbf16ps` does): `[n, c_out, OH, OW]`.
    fn by_hand(p: &Conv2dParams, n: usize, x: &[f32], wt: &[f32]) -> Vec<f32> {
        let (c_in, c_out, [h, w], [oh, ow]) = (p.c_in, p.c_out, p.in_hw, p.out_hw);
        let [ph, pw] = p.padding;
        let c2 = c2p(c_in);
        let mut y = vec![0.0; n * p.out_len()];
        for s in 0..n {
            for o in 0..c_out {
                for yy in 0..oh {
                    for xx in 0..ow {
                        let a = |q: usize| {
                            let (t, j) = (q / c2, q % c2);
                            let (iy, ix) =
                                ((yy + t / 3).wrapping_sub(ph), (xx + t % 3).wrapping_sub(pw));
                            let v = |c: usize| {
                                if c < c_in && iy < h && ix < w {
                                    x[((s * c_in + c) * h + iy) * w + ix]
                                } else {
                                    0.0
                                }
                            };
                            pair(v(2 * j), v(2 * j + 1))
                        };
                        let b = |q: usize| {
                            let (t, j) = (q / c2, q % c2);
                            let v = |c: usize| {
                                if c < c_in {
                                    wt[(o * c_in + c) * TAPS + t]
                                } else {
                                    0.0
                                }
                            };
                            pair(v(2 * j), v(2 * j + 1))
                        };
                        y[((s * c_out + o) * oh + yy) * ow + xx] =
                            chain_sum(Chain::Tiles, TAPS * c2, a, b);
                    }
                }
            }
        }
        y
    }

    /// `[n, c, hw]` as `[n, hw, c]`.
    fn channels_last(n: usize, c: usize, hw: usize, x: &[f32]) -> Vec<f32> {
        let mut out = vec![0.0; n * c * hw];
        for s in 0..n {
            for ch in 0..c {
                for i in 0..hw {
                    out[(s * hw + i) * c + ch] = x[(s * c + ch) * hw + i];
                }
            }
        }
        out
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// On the tiles (on a machine without them, or with them refused, there is nothing to
    /// run), every layout of input and output and one or two threads give the sums by hand
    /// bit for bit; with the channels' steps, those sums through the separate pass.
    #[test]
    fn the_tiles_give_their_order_by_hand_in_every_layout() {
        if bf16_path() != Bf16Path::Amx {
            return;
        }
        for (seed, &(c_in, c_out, hw, n)) in CASES.iter().enumerate() {
            let p = if seed < 7 {
                Conv2dParams::same3x3(c_in, c_out, hw)
            } else {
                let out_hw = hw.map(|s| s - 2);
                Conv2dParams {
                    padding: [0, 0],
                    out_hw,
                    ..Conv2dParams::same3x3(c_in, c_out, hw)
                }
            };
            assert!(applies(&p), "{p:?}");
            let s = 40 + seed as u64 * 7;
            // Inputs of different sizes, so that the order of the roundings matters.
            let x: Vec<f32> = rand_vec(n * p.in_len(), s)
                .iter()
                .map(|v| v * 4.0)
                .collect();
            let wt = rand_vec(c_out * c_in * TAPS, s + 1);
            let (b, scale, shift) = (
                rand_vec(c_out, s + 2),
                rand_vec(c_out, s + 3),
                rand_vec(c_out, s + 4),
            );
            let r = rand_vec(n * p.out_len(), s + 5);
            let w = pack_weights(&p, &wt);
            let plane = p.out_hw[0] * p.out_hw[1];
            let sums = by_hand(&p, n, &x, &wt);
            let x_last = channels_last(n, c_in, hw[0] * hw[1], &x);
            for (what, bias, epilogue) in [
                ("plain", None, Epilogue::default()),
                (
                    "bias, batch norm, relu",
                    Some(&b[..]),
                    Epilogue {
                        affine: Some((&scale[..], &shift[..])),
                        act: Some(Activation::Relu),
                        residual: None,
                    },
                ),
                (
                    "bias, gelu",
                    Some(&b[..]),
                    Epilogue {
                        affine: None,
                        act: Some(Activation::Gelu),
                        residual: None,
                    },
                ),
                (
                    "batch norm, residual, relu",
                    None,
                    Epilogue {
                        affine: Some((&scale[..], &shift[..])),
                        act: Some(Activation::Relu),
                        residual: Some(&r[..]),
                    },
                ),
            ] {
                let mut want = sums.clone();
                for (i, row) in want.chunks_exact_mut(plane).enumerate() {
                    epilogue.channel(bias, i % c_out).apply(row);
                    epilogue.after(i, row);
                }
                let want_last = channels_last(n, c_out, plane, &want);
                for (input, layout) in
                    [(&x, Layout::ChannelsFirst), (&x_last, Layout::ChannelsLast)]
                {
                    for out_last in [false, true] {
                        if out_last && epilogue.residual.is_some() {
                            continue;
                        }
                        for threads in [1, 2] {
                            let mut y = vec![f32::NAN; n * p.out_len()];
                            // Scratch left full of NaN by another layer: none of it may
                            // enter a sum.
                            let len = scratch_len(&p) + crate::store::LINE;
                            let mut scratch = vec![f32::NAN; len];
                            crate::threads::install(threads, || {
                                conv2d(
                                    &p,
                                    n,
                                    (input, layout),
                                    &w,
                                    bias,
                                    epilogue,
                                    threads,
                                    (&mut y, out_last),
                                    &mut scratch,
                                )
                            });
                            let want = if out_last { &want_last } else { &want };
                            let bad = bits(&y).iter().zip(bits(want)).position(|(a, b)| *a != b);
                            assert!(
                                bad.is_none(),
                                "{p:?} n {n}: {what}, input {layout:?}, output last {out_last}, \
                                 {threads} threads: y[{i}] = {}, by hand {}",
                                y[bad.unwrap_or(0)],
                                want[bad.unwrap_or(0)],
                                i = bad.unwrap_or(0),
                            );
                        }
                    }
                }
            }
        }
    }

    /// The buffers' sizes by hand; an exact slice of scratch is enough, and a short operand
    /// is refused.
    #[test]
    fn sizes_by_hand_and_short_operands_refused() {
        use std::panic::{catch_unwind, AssertUnwindSafe};
        let p = Conv2dParams::same3x3(16, 24, [7, 9]);
        // Padded width 11: 77 virtual pixels and a block of 32 past them, and the reach of
        // the last tap (2·11 + 2); 16 channels are 8 pairs, rounded up to a tile row of 16.
        assert_eq!(parts(&p), [(77 + 32 + 24) * 16, 7 * 9 * 16, 7 * 9 * 24]);
        assert_eq!(scratch_len(&p), (77 + 32 + 24) * 16 + 63 * 16 + 63 * 24);
        // Nine taps of 32 rows (16 pairs) by one packed panel of 64 columns.
        assert_eq!(weights_len(&p), 9 * 16 * 64);
        if bf16_path() != Bf16Path::Amx {
            return;
        }
        let w = pack_weights(&p, &rand_vec(24 * 16 * TAPS, 1));
        assert_eq!(w.len(), weights_len(&p));
        let x = rand_vec(p.in_len(), 2);
        let e = Epilogue::default();
        let run = |w: &[u32], x: &[f32], y_len: usize, scratch: &mut [f32]| {
            let mut y = vec![0.0; y_len];
            conv2d(
                &p,
                1,
                (x, Layout::ChannelsFirst),
                w,
                None,
                e,
                1,
                (&mut y, true),
                scratch,
            );
        };
        let len = scratch_len(&p);
        run(&w, &x, p.out_len(), &mut vec![0.0; len]);
        for (what, result) in [
            (
                "scratch",
                catch_unwind(AssertUnwindSafe(|| {
                    run(&w, &x, p.out_len(), &mut vec![0.0; len - 1])
                })),
            ),
            (
                "weights",
                catch_unwind(AssertUnwindSafe(|| {
                    run(&w[1..], &x, p.out_len(), &mut vec![0.0; len])
                })),
            ),
            (
                "input",
                catch_unwind(AssertUnwindSafe(|| {
                    run(&w, &x[1..], p.out_len(), &mut vec![0.0; len])
                })),
            ),
            (
                "output",
                catch_unwind(AssertUnwindSafe(|| {
                    run(&w, &x, p.out_len() - 1, &mut vec![0.0; len])
                })),
            ),
        ] {
            assert!(result.is_err(), "{what} one short was taken");
        }
        let r = vec![0.0; p.out_len() - 1];
        let residual = catch_unwind(AssertUnwindSafe(|| {
            let mut y = vec![0.0; p.out_len()];
            let e = Epilogue {
                residual: Some(&r),
                ..Epilogue::default()
            };
            let input = (&x[..], Layout::ChannelsFirst);
            conv2d(
                &p,
                1,
                input,
                &w,
                None,
                e,
                1,
                (&mut y, false),
                &mut vec![0.0; len],
            );
        }));
        // Refused up front, not by an index out of bounds once the sums are made.
        let message = residual.expect_err("a residual one short was taken");
        assert_eq!(
            message.downcast_ref::<&str>(),
            Some(&"conv2d residual too short")
        );
    }

    /// A layer in bf16 of Winograd's shape runs on the tiles through `forward` and
    /// `forward_in` (the tiles' bits, not Winograd's), with its weights packed once; in f32 it
    /// does not.
    #[test]
    fn bf16_layers_of_winograds_shape_take_the_tiles() {
        use crate::ops::conv::{forward, forward_in, Filters};
        use crate::Precision;
        if bf16_path() != Bf16Path::Amx {
            return;
        }
        let (p, n) = (Conv2dParams::same3x3(32, 40, [9, 10]), 2);
        let x = rand_vec(n * p.in_len(), 3);
        let wt = rand_vec(40 * 32 * TAPS, 4);
        let b = rand_vec(40, 5);
        let mut filters = Filters::new(wt.clone(), Some(b.clone()));
        let e = Epilogue::default();
        let mut want = vec![0.0; n * p.out_len()];
        let input = (&x[..], Layout::ChannelsFirst);
        let w = pack_weights(&p, &wt);
        conv2d(
            &p,
            n,
            input,
            &w,
            Some(&b),
            e,
            1,
            (&mut want, false),
            &mut Vec::new(),
        );
        let mut got = vec![f32::NAN; n * p.out_len()];
        forward(&p, n, &x, &filters, e, 1, &mut got, &mut Vec::new());
        assert_ne!(bits(&got), bits(&want), "f32 ran on the tiles");
        filters.set_precision(Precision::Bf16);
        forward(&p, n, &x, &filters, e, 1, &mut got, &mut Vec::new());
        assert_eq!(bits(&got), bits(&want), "forward");
        let kept = filters.for_tiles(&p).unwrap();
        assert!(
            matches!(kept, std::borrow::Cow::Borrowed(_)),
            "packed on every call"
        );
        assert_eq!(&kept[..], &w[..]);
        let mut last = vec![f32::NAN; n * p.out_len()];
        let layout = forward_in(&p, n, input, &filters, e, 1, &mut last, &mut Vec::new());
        assert_eq!(layout, Layout::ChannelsLast);
        let plane = p.out_hw[0] * p.out_hw[1];
        assert_eq!(
            bits(&last),
            bits(&channels_last(n, 40, plane, &want)),
            "forward_in"
        );
        // A constant's layer (static weights, no cell) borrows the copy kept for the process;
        // a layer with a cell keeps its own, even with static weights.
        let [wt, b]: [&'static [f32]; 2] = [wt, b].map(|v| &*Box::leak(v.into_boxed_slice()));
        let mut constant = Filters::embedded(wt, Some(b), None);
        constant.mark_precision(Precision::Bf16);
        let process = static_weights(&p, wt);
        let kept = constant.for_tiles(&p).unwrap();
        assert!(matches!(kept, std::borrow::Cow::Borrowed(w) if core::ptr::eq(w, process)));
        forward(&p, n, &x, &constant, e, 1, &mut got, &mut Vec::new());
        assert_eq!(bits(&got), bits(&want), "a constant's layer");
        let mut cell = Filters::embedded(wt, Some(b), None);
        cell.set_precision(Precision::Bf16);
        let own = cell.for_tiles(&p).unwrap();
        assert!(matches!(own, std::borrow::Cow::Borrowed(w) if !core::ptr::eq(w, process)));
    }

    /// Weights in static data are packed once per layer and kept, from a cache line's start.
    #[test]
    fn static_weights_are_packed_once_per_layer() {
        let p = Conv2dParams::same3x3(16, 24, [4, 4]);
        let [a, b]: [&'static [f32]; 2] =
            [1, 2].map(|s| &*Box::leak(rand_vec(24 * 16 * TAPS, s).into_boxed_slice()));
        let wa = static_weights(&p, a);
        assert_eq!(wa, &pack_weights(&p, a)[..]);
        assert_eq!(crate::store::to_line(wa), 0);
        assert!(core::ptr::eq(wa, static_weights(&p, a)), "packed again");
        let wb = static_weights(&p, b);
        assert!(!core::ptr::eq(wa, wb));
        assert_eq!(wb, &pack_weights(&p, b)[..]);
    }

    /// The tiles take Winograd's shapes (3×3, stride 1, one group) on the AMX path only.
    #[test]
    fn the_tiles_take_winograds_shapes_on_the_amx_path_only() {
        let p = Conv2dParams::same3x3(64, 64, [16, 16]);
        assert_eq!(applies(&p), bf16_path() == Bf16Path::Amx);
        crate::simd::testing::with_bf16_refused(1, || assert!(!applies(&p)));
        let strided = Conv2dParams {
            stride: [2, 2],
            out_hw: [8, 8],
            ..p
        };
        let grouped = Conv2dParams { groups: 2, ..p };
        let five = Conv2dParams {
            kernel: [5, 5],
            padding: [2, 2],
            ..p
        };
        for q in [strided, grouped, five] {
            assert!(!applies(&q), "{q:?}");
        }
    }
}
