//! 3×3 stride-1 convolution by Winograd's minimal filtering F(m×m, 3×3): each m×m output tile
//! comes from an α×α input tile (α = m + 2) with α² multiplications per (input, output) channel
//! pair instead of 9m², as α² GEMMs over all tiles. F(4×4, 3×3) (36 products for 16 outputs,
//! 4× fewer multiplies than direct) runs layers whose outputs are at least [`F4_MIN_SIDE`] on
//! a side; smaller ones use F(2×2, 3×3) (16 for 4, 2.25×), whose tiles waste less at the edges.
//!
//! `Y = Aᵀ [Σ_c (G g Gᵀ) ⊙ (Bᵀ d B)] A` with `d` an input tile and `g` a filter:
//!
//! - F(2×2): `Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1]`, `G = [1 0 0; ½ ½ ½; ½ −½ ½; 0 0 1]`,
//!   `Aᵀ = [1 1 1 0; 0 1 −1 −1]`.
//! - F(4×4) (Lavin & Gray's points 0, ±1, ±2): `Bᵀ = [4 0 −5 0 1 0; 0 −4 −4 1 1 0;
//!   0 4 −4 −1 1 0; 0 −2 −1 2 1 0; 0 2 −1 −2 1 0; 0 4 0 −5 0 1]`,
//!   `G = [¼ 0 0; −⅙ −⅙ −⅙; −⅙ ⅙ −⅙; 1⁄24 1⁄12 ⅙; 1⁄24 −1⁄12 ⅙; 0 0 1]`,
//!   `Aᵀ = [1 1 1 1 1 0; 0 1 −1 2 −2 0; 0 1 1 4 4 0; 0 1 −1 8 −8 1]`.
//!
//! The transforms are written out term by term, without multiplications by zero.

use super::conv2d::{apply, Conv2dParams, Epilogue};
use crate::gemm::Simd;
use crate::simd::multiversion;

/// Whether [`conv2d`](super::conv2d::conv2d_fused) runs `p` with Winograd: a 3×3 kernel,
/// stride 1, no dilation, one group, and enough channels and tiles for the transforms to pay.
pub const fn applies(p: &Conv2dParams) -> bool {
    p.kernel[0] == 3
        && p.kernel[1] == 3
        && p.stride[0] == 1
        && p.stride[1] == 1
        && p.dilation[0] == 1
        && p.dilation[1] == 1
        && p.groups == 1
        && p.c_in >= 16
        && p.c_out >= 16
        && p.out_hw[0] >= 4
        && p.out_hw[1] >= 4
}

/// Output sides from which a layer uses F(4×4, 3×3).
pub const F4_MIN_SIDE: usize = 12;

/// The output tile side m of `p`: 4 when both output sides are at least [`F4_MIN_SIDE`], else 2.
pub const fn out_tile(p: &Conv2dParams) -> usize {
    if p.out_hw[0] >= F4_MIN_SIDE && p.out_hw[1] >= F4_MIN_SIDE {
        4
    } else {
        2
    }
}

/// Products per tile: α² with α = m + 2.
const fn positions(m: usize) -> usize {
    (m + 2) * (m + 2)
}

/// Output tiles of one sample.
pub const fn tiles(p: &Conv2dParams) -> usize {
    tiles_for(out_tile(p), p)
}

/// Scratch elements for one sample: the transformed input `[α², T, c_in]`, the products
/// `[α², T, c_out]`, and channel-last copies of the input `[H, W, c_in]` and output
/// `[OH, OW, c_out]`.
pub const fn scratch_len(p: &Conv2dParams) -> usize {
    scratch_len_for(out_tile(p), p)
}

/// Elements of the transformed weights, `[α², c_in, c_out]`.
pub const fn weight_len(p: &Conv2dParams) -> usize {
    weight_len_for(out_tile(p), p)
}

/// [`tiles`] with output tiles of side `m`.
const fn tiles_for(m: usize, p: &Conv2dParams) -> usize {
    p.out_hw[0].div_ceil(m) * p.out_hw[1].div_ceil(m)
}

/// [`scratch_len`] with output tiles of side `m`.
const fn scratch_len_for(m: usize, p: &Conv2dParams) -> usize {
    positions(m) * tiles_for(m, p) * (p.c_in + p.c_out)
        + p.in_hw[0] * p.in_hw[1] * p.c_in
        + p.out_hw[0] * p.out_hw[1] * p.c_out
}

/// [`weight_len`] with output tiles of side `m`.
const fn weight_len_for(m: usize, p: &Conv2dParams) -> usize {
    positions(m) * p.c_in * p.c_out
}

/// `G` of F(m×m, 3×3) applied to the 3 values `g`, in f64: α values.
fn g_times(m: usize, [a, b, c]: [f64; 3]) -> [f64; 6] {
    if m == 2 {
        [a, 0.5 * (a + b + c), 0.5 * (a - b + c), c, 0.0, 0.0]
    } else {
        [
            a / 4.0,
            -(a + b + c) / 6.0,
            -(a - b + c) / 6.0,
            a / 24.0 + b / 12.0 + c / 6.0,
            a / 24.0 - b / 12.0 + c / 6.0,
            c,
        ]
    }
}

/// `U = G g Gᵀ` for every filter (computed in f64), laid out `[α², c_in, c_out]` (the GEMMs'
/// B operands), for the tile size [`out_tile`] picks.
///
/// + `weight`: `[c_out, c_in, 3, 3]` (PyTorch's layout)
pub fn transform_weights(p: &Conv2dParams, weight: &[f32]) -> Vec<f32> {
    transform_weights_for(out_tile(p), p, weight)
}

fn transform_weights_for(m: usize, p: &Conv2dParams, weight: &[f32]) -> Vec<f32> {
    let (c_in, c_out, a) = (p.c_in, p.c_out, m + 2);
    let mut u = vec![0.0f32; weight_len_for(m, p)];
    for o in 0..c_out {
        for c in 0..c_in {
            let g = &weight[(o * c_in + c) * 9..(o * c_in + c + 1) * 9];
            let g = |i: usize, j: usize| f64::from(g[i * 3 + j]);
            // G g: α×3, G applied to each column of the filter.
            let cols: [[f64; 6]; 3] =
                std::array::from_fn(|j| g_times(m, [g(0, j), g(1, j), g(2, j)]));
            for i in 0..a {
                // (G g) Gᵀ: G applied to row i of G g.
                let row = g_times(m, [cols[0][i], cols[1][i], cols[2][i]]);
                for (j, &v) in row.iter().take(a).enumerate() {
                    u[((i * a + j) * c_in + c) * c_out + o] = v as f32;
                }
            }
        }
    }
    u
}

/// The convolution of [`conv2d_fused`](super::conv2d::conv2d_fused) for a `p` where
/// [`applies`] holds, with transformed weights `u` from [`transform_weights`].
///
/// Each sample goes channel-last, then through blocks of whole tile rows: input transform,
/// the α² GEMMs and the output transform of one block run back to back while its data is in
/// cache. With `threads > 1` (on a worker of the pool) the blocks are shared out, and so are
/// the layout changes; a layer with too few tiles per thread splits the GEMMs instead.
///
/// # Panics
/// If a slice is shorter than its layout.
#[allow(clippy::too_many_arguments)] // conv2d_fused's arguments
pub fn conv2d(
    p: &Conv2dParams,
    n: usize,
    input: &[f32],
    u: &[f32],
    bias: Option<&[f32]>,
    epilogue: Epilogue<'_>,
    threads: usize,
    out: &mut [f32],
    scratch: &mut Vec<f32>,
) {
    conv2d_with(
        out_tile(p),
        p,
        n,
        input,
        u,
        bias,
        epilogue,
        threads,
        out,
        scratch,
    )
}

/// [`conv2d`] with output tiles of side `m` (2 or 4) and `u` transformed for them.
#[allow(clippy::too_many_arguments)] // conv2d's arguments and the tile size
fn conv2d_with(
    m_t: usize,
    p: &Conv2dParams,
    n: usize,
    input: &[f32],
    u: &[f32],
    bias: Option<&[f32]>,
    epilogue: Epilogue<'_>,
    threads: usize,
    out: &mut [f32],
    scratch: &mut Vec<f32>,
) {
    let (c_in, c_out, xis) = (p.c_in, p.c_out, positions(m_t));
    let ([h, w], [oh, ow]) = (p.in_hw, p.out_hw);
    let (th, tw) = (oh.div_ceil(m_t), ow.div_ceil(m_t));
    let t = th * tw;
    let len = scratch_len_for(m_t, p);
    assert!(
        u.len() >= weight_len_for(m_t, p),
        "winograd weights too short"
    );
    assert!(input.len() >= n * p.in_len(), "winograd input too short");
    assert!(out.len() >= n * p.out_len(), "winograd output too short");
    if scratch.len() < len {
        scratch.resize(len, 0.0);
    }
    let (vm, rest) = scratch[..len].split_at_mut(xis * t * (c_in + c_out));
    let (xt, yt) = rest.split_at_mut(h * w * c_in);
    let big = t * c_in * c_out * xis >= MIN_MACS_PER_SPLIT;
    let threads = if big { threads.max(1) } else { 1 };
    // Tile rows per block: the block's transformed input and products fit the cache budget,
    // and with threads every thread gets a block.
    let row_bytes = xis * tw * (c_in + c_out) * std::mem::size_of::<f32>();
    let mut rows = (BLOCK_BYTES / row_bytes)
        .max(MIN_BLOCK_TILES.div_ceil(tw))
        .clamp(1, th);
    if threads > 1 {
        rows = rows.min(th.div_ceil(threads));
    }
    let split_tiles = threads == 1 || rows * tw >= MIN_TILES_PER_BLOCK;
    let (v_block, m_block) = (xis * rows * tw * c_in, xis * rows * tw * c_out);
    // LOOP over samples
    for (x, y) in input
        .chunks_exact(p.in_len())
        .zip(out.chunks_exact_mut(p.out_len()))
        .take(n)
    {
        // LOOP over blocks of input rows: to channel-last
        let in_rows = h.div_ceil(threads);
        let xt_rows = xt.chunks_mut(in_rows * w * c_in);
        crate::threads::for_each(threads, xt_rows, |i, xt_part| {
            to_channels_last(x, h * w, c_in, i * in_rows * w, xt_part);
        });
        if split_tiles {
            // LOOP over blocks of tile rows, shared out over threads
            let (vs, ms) = vm.split_at_mut(xis * t * c_in);
            let blocks = vs
                .chunks_mut(v_block)
                .zip(ms.chunks_mut(m_block))
                .zip(yt.chunks_mut(m_t * rows * ow * c_out));
            crate::threads::for_each(threads, blocks, |b, ((v, m), yt_part)| {
                let (ty0, ty1) = (b * rows, ((b + 1) * rows).min(th));
                let tb = (ty1 - ty0) * tw;
                transform_input(m_t, p, xt, ty0, ty1, v);
                // LOOP over the α² tile positions: V[ξ] (tb × C) · U[ξ] (C × O)
                for (xi, m_xi) in m.chunks_exact_mut(tb * c_out).enumerate() {
                    let v_xi = &v[xi * tb * c_in..(xi + 1) * tb * c_in];
                    let u_xi = &u[xi * c_in * c_out..(xi + 1) * c_in * c_out];
                    crate::gemm::sgemm(tb, c_in, c_out, v_xi, u_xi, m_xi, false);
                }
                transform_output(m_t, p, m, ty0, ty1, bias, yt_part);
            });
        } else {
            // Few tiles: one block, its GEMMs split over threads.
            let (v, m) = vm.split_at_mut(xis * t * c_in);
            transform_input(m_t, p, xt, 0, th, v);
            let per = xis.div_ceil(threads.min(xis));
            let parts = m.chunks_mut(per * t * c_out);
            crate::threads::for_each(threads, parts, |b, part| {
                for (i, m_xi) in part.chunks_exact_mut(t * c_out).enumerate() {
                    let xi = b * per + i;
                    let v_xi = &v[xi * t * c_in..(xi + 1) * t * c_in];
                    let u_xi = &u[xi * c_in * c_out..(xi + 1) * c_in * c_out];
                    crate::gemm::sgemm(t, c_in, c_out, v_xi, u_xi, m_xi, false);
                }
            });
            transform_output(m_t, p, m, 0, th, bias, yt);
        }
        // LOOP over blocks of output channels: to channels-first, then the epilogue
        let per = c_out.div_ceil(threads);
        let planes = y.chunks_mut(per * oh * ow);
        let yt = &*yt;
        crate::threads::for_each(threads, planes, |i, y_part| {
            to_channels_first(yt, c_out, i * per, y_part);
            apply(epilogue, i * per, y_part.chunks_exact_mut(oh * ow));
        });
    }
}

/// Bytes of transformed input and products per block of tile rows: about half of L2.
const BLOCK_BYTES: usize = 512 << 10;
/// Tiles a block has at least (when the sample has them), however wide the channels: fewer
/// rows make the GEMMs too short to pay for streaming their B operands.
const MIN_BLOCK_TILES: usize = 48;
/// Tiles below which a block is too short a GEMM for a thread of its own.
const MIN_TILES_PER_BLOCK: usize = 32;
/// Multiply-accumulates below which a layer stays on one thread.
const MIN_MACS_PER_SPLIT: usize = 4 << 20;

/// Positions per block of the layout changes: a block's rows of the channel-last side stay in
/// L1 while every channel visits them.
const T_BLOCK: usize = 16;

multiversion! {
/// Positions `first..first + xt.len() / C` of `[C, H·W]` (`hw` = H·W) into `xt: [·, C]`, in
/// blocks of [`T_BLOCK`] positions.
fn to_channels_last(x: &[f32], hw: usize, c: usize, first: usize, xt: &mut [f32]) {
    let len = xt.len() / c;
    // LOOP over blocks of positions
    for (b, block) in xt.chunks_mut(T_BLOCK * c).enumerate() {
        let i0 = first + b * T_BLOCK;
        let rows = block.len() / c;
        // LOOP over channels: one contiguous run of the plane into a column of the block
        for (ch, plane) in x.chunks_exact(hw).take(c).enumerate() {
            for (i, &v) in plane[i0..i0 + rows].iter().enumerate() {
                block[i * c + ch] = v;
            }
        }
    }
    debug_assert!(first + len <= hw);
}
}

multiversion! {
/// Channels `first..` of `yt: [H·W, C]` into `y: [·, H·W]` (as many channels as `y` holds),
/// in blocks of [`T_BLOCK`] positions.
fn to_channels_first(yt: &[f32], c: usize, first: usize, y: &mut [f32]) {
    let hw = yt.len() / c;
    let channels = y.len() / hw;
    // LOOP over blocks of positions
    for i0 in (0..hw).step_by(T_BLOCK) {
        let rows = T_BLOCK.min(hw - i0);
        let block = &yt[i0 * c..(i0 + rows) * c];
        // LOOP over channels: a column of the block into one contiguous run of the plane
        for ch in 0..channels {
            let dst = &mut y[ch * hw + i0..ch * hw + i0 + rows];
            for (i, v) in dst.iter_mut().enumerate() {
                *v = block[i * c + first + ch];
            }
        }
    }
}
}

/// Runs `$body::<S, m>(args…, c0, c1)` over channels `0..$c`: whole vectors of the best
/// instruction set, then the remaining channels one at a time, each inside a function compiled
/// for that instruction set.
macro_rules! by_vectors {
    ($body:ident::<$m:literal>, $c:expr, ($($arg:ident: $ty:ty),*)) => {{
        let c: usize = $c;
        crate::simd::with_simd!(S => {
            // Whole vectors (`S::LANES` is a power of two; 1 for `Scalar`).
            let whole = c & !(S::LANES - 1);
            // SAFETY: `with_simd!` runs this body only where the CPU has `S`'s features.
            unsafe { $body::<S, $m>($($arg,)* 0, whole) };
            // SAFETY: `Scalar` needs no CPU feature.
            unsafe { $body::<crate::gemm::Scalar, $m>($($arg,)* whole, c) };
        }, ($($arg: $ty,)* c: usize))
    }};
}

/// `Bᵀ d` for one column `d` of an α×α input tile (α = m + 2; entries past α unused).
///
/// # Safety
/// The CPU has `S`'s features.
#[inline(always)]
unsafe fn bt<S: Simd>(m: usize, d: [S::V; 6]) -> [S::V; 6] {
    // SAFETY: the caller guarantees `S`'s features.
    unsafe {
        if m == 2 {
            [
                S::sub(d[0], d[2]),
                S::add(d[1], d[2]),
                S::sub(d[2], d[1]),
                S::sub(d[1], d[3]),
                d[4],
                d[5],
            ]
        } else {
            let (four, five, two) = (S::splat(&4.0), S::splat(&5.0), S::splat(&2.0));
            // 4·d0 − 5·d2 + d4; ∓4·(d1 ± ...) etc., with shared terms.
            let t42 = S::sub(d[4], S::mul(four, d[2])); // d4 − 4·d2
            let t31 = S::sub(d[3], S::mul(four, d[1])); // d3 − 4·d1
            let u42 = S::sub(d[4], d[2]); // d4 − d2
            let u31 = S::mul(two, S::sub(d[3], d[1])); // 2·(d3 − d1)
            [
                S::add(S::sub(S::mul(four, d[0]), S::mul(five, d[2])), d[4]),
                S::add(t42, t31),
                S::sub(t42, t31),
                S::add(u42, u31),
                S::sub(u42, u31),
                S::add(S::sub(S::mul(four, d[1]), S::mul(five, d[3])), d[5]),
            ]
        }
    }
}

/// `Aᵀ v` for one column `v` of α products (α = m + 2): m values (entries past m unused).
///
/// # Safety
/// The CPU has `S`'s features.
#[inline(always)]
unsafe fn at<S: Simd>(m: usize, v: [S::V; 6]) -> [S::V; 4] {
    // SAFETY: the caller guarantees `S`'s features.
    unsafe {
        if m == 2 {
            [
                S::add(S::add(v[0], v[1]), v[2]),
                S::sub(S::sub(v[1], v[2]), v[3]),
                v[0],
                v[0],
            ]
        } else {
            let (two, four, eight) = (S::splat(&2.0), S::splat(&4.0), S::splat(&8.0));
            let (s12, d12) = (S::add(v[1], v[2]), S::sub(v[1], v[2]));
            let (s34, d34) = (S::add(v[3], v[4]), S::sub(v[3], v[4]));
            [
                S::add(S::add(v[0], s12), s34),
                S::add(d12, S::mul(two, d34)),
                S::add(s12, S::mul(four, s34)),
                S::add(S::add(d12, S::mul(eight, d34)), v[5]),
            ]
        }
    }
}

/// `V[ξ, t, c] = (Bᵀ d B)[ξ]` for the α×α tile `d` of channel `c` at tile `t` of tile rows
/// `ty0..ty1` (zero outside the input), from the channel-last input `xt: [H, W, C]`.
fn transform_input(m: usize, p: &Conv2dParams, xt: &[f32], ty0: usize, ty1: usize, v: &mut [f32]) {
    if m == 2 {
        by_vectors!(input_tiles::<2>, p.c_in, (p: &Conv2dParams, xt: &[f32], ty0: usize, ty1: usize, v: &mut [f32]))
    } else {
        by_vectors!(input_tiles::<4>, p.c_in, (p: &Conv2dParams, xt: &[f32], ty0: usize, ty1: usize, v: &mut [f32]))
    }
}

/// [`transform_input`] for channels `c0..c1`, `S::LANES` at a time (`c1 − c0` a multiple).
///
/// # Safety
/// The CPU has `S`'s features.
#[inline(always)]
#[allow(clippy::too_many_arguments)] // transform_input's arguments and the channel range
unsafe fn input_tiles<S: Simd, const M: usize>(
    p: &Conv2dParams,
    xt: &[f32],
    ty0: usize,
    ty1: usize,
    v: &mut [f32],
    c0: usize,
    c1: usize,
) {
    let [h, w] = p.in_hw;
    let [ph, pw] = p.padding;
    let (m, a) = (M, M + 2);
    let tw = p.out_hw[1].div_ceil(m);
    let (c_in, t_all) = (p.c_in, (ty1 - ty0) * tw);
    let n = S::LANES;
    // SAFETY: the caller guarantees `S`'s features. (And in every block below; each pointer
    // there comes from a slice bounds-checked to hold the `LANES` floats accessed.)
    let zero = unsafe { S::zero() };
    // LOOP over tiles
    for ty in ty0..ty1 {
        for tx in 0..tw {
            let t = (ty - ty0) * tw + tx;
            // LOOP over vectors of channels
            for c in (c0..c1).step_by(n) {
                // d[j][i]: column j, row i of the tile
                let mut d = [[zero; 6]; 6];
                for i in 0..a {
                    let iy = (m * ty + i).wrapping_sub(ph);
                    if iy >= h {
                        continue;
                    }
                    for (j, col) in d.iter_mut().enumerate().take(a) {
                        let ix = (m * tx + j).wrapping_sub(pw);
                        if ix < w {
                            let at = (iy * w + ix) * c_in + c;
                            // SAFETY: see above.
                            col[i] = unsafe { S::load(xt[at..at + n].as_ptr()) };
                        }
                    }
                }
                // Bᵀ d, column by column; then rows of (Bᵀ d) times B
                let mut bd = [[zero; 6]; 6];
                for (j, col) in d.iter().enumerate().take(a) {
                    // SAFETY: see above.
                    let r = unsafe { bt::<S>(m, *col) };
                    for i in 0..a {
                        bd[i][j] = r[i];
                    }
                }
                for (i, row) in bd.iter().enumerate().take(a) {
                    // SAFETY: see above.
                    let r = unsafe { bt::<S>(m, *row) };
                    for (j, &val) in r.iter().enumerate().take(a) {
                        let at = ((i * a + j) * t_all + t) * c_in + c;
                        // SAFETY: see above.
                        unsafe { S::store(v[at..at + n].as_mut_ptr(), val) };
                    }
                }
            }
        }
    }
}

/// `yt[m·ty + i, m·tx + j, o] = bias[o] + (Aᵀ M A)[i, j]` with `M[ξ] = M[ξ, t, o]` for the
/// tiles of tile rows `ty0..ty1`, clipped to the output (`yt` is channel-last
/// `[OH, OW, c_out]` from output row `m·ty0` on).
fn transform_output(
    m: usize,
    p: &Conv2dParams,
    prods: &[f32],
    ty0: usize,
    ty1: usize,
    bias: Option<&[f32]>,
    yt: &mut [f32],
) {
    if m == 2 {
        by_vectors!(
            output_tiles::<2>,
            p.c_out,
            (p: &Conv2dParams, prods: &[f32], ty0: usize, ty1: usize, bias: Option<&[f32]>, yt: &mut [f32])
        )
    } else {
        by_vectors!(
            output_tiles::<4>,
            p.c_out,
            (p: &Conv2dParams, prods: &[f32], ty0: usize, ty1: usize, bias: Option<&[f32]>, yt: &mut [f32])
        )
    }
}

/// [`transform_output`] for channels `o0..o1`, `S::LANES` at a time (`o1 − o0` a multiple).
///
/// # Safety
/// The CPU has `S`'s features.
#[inline(always)]
#[allow(clippy::too_many_arguments)] // transform_output's arguments and the channel range
unsafe fn output_tiles<S: Simd, const M: usize>(
    p: &Conv2dParams,
    prods: &[f32],
    ty0: usize,
    ty1: usize,
    bias: Option<&[f32]>,
    yt: &mut [f32],
    o0: usize,
    o1: usize,
) {
    let [oh, ow] = p.out_hw;
    let (m, a) = (M, M + 2);
    let tw = ow.div_ceil(m);
    let (c_out, t_all) = (p.c_out, (ty1 - ty0) * tw);
    let n = S::LANES;
    // SAFETY: the caller guarantees `S`'s features. (And in every block below; each pointer
    // there comes from a slice bounds-checked to hold the `LANES` floats accessed.)
    let zero = unsafe { S::zero() };
    // LOOP over tiles
    for ty in ty0..ty1 {
        for tx in 0..tw {
            let t = (ty - ty0) * tw + tx;
            // LOOP over vectors of output channels
            for o in (o0..o1).step_by(n) {
                // e[j][i]: column j, row i of the α×α products
                let mut e = [[zero; 6]; 6];
                for i in 0..a {
                    for (j, col) in e.iter_mut().enumerate().take(a) {
                        let at = ((i * a + j) * t_all + t) * c_out + o;
                        // SAFETY: see above.
                        col[i] = unsafe { S::load(prods[at..at + n].as_ptr()) };
                    }
                }
                let bv = match bias {
                    // SAFETY: see above.
                    Some(b) => unsafe { S::load(b[o..o + n].as_ptr()) },
                    None => zero,
                };
                // Aᵀ e, column by column: m×α; then rows of that times A: m×m
                let mut ae = [[zero; 6]; 4];
                for (j, col) in e.iter().enumerate().take(a) {
                    // SAFETY: see above.
                    let r = unsafe { at::<S>(m, *col) };
                    for i in 0..m {
                        ae[i][j] = r[i];
                    }
                }
                for (i, row) in ae.iter().enumerate().take(m) {
                    if m * ty + i >= oh {
                        break;
                    }
                    let oy = m * (ty - ty0) + i;
                    // SAFETY: see above.
                    let r = unsafe { at::<S>(m, *row) };
                    for (j, &val) in r.iter().enumerate().take(m) {
                        let ox = m * tx + j;
                        if ox >= ow {
                            break;
                        }
                        let at = (oy * ow + ox) * c_out + o;
                        // SAFETY: see above.
                        unsafe { S::store(yt[at..at + n].as_mut_ptr(), S::add(bv, val)) };
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::activation::Activation;
    use crate::ops::conv2d::conv2d_fused;
    use crate::shape::out_len;
    use crate::test_util::{assert_close, rand_vec};

    #[test]
    fn the_tile_size_follows_the_output_size() {
        let p = |side| Conv2dParams {
            c_in: 16,
            c_out: 16,
            groups: 1,
            kernel: [3, 3],
            stride: [1, 1],
            padding: [1, 1],
            dilation: [1, 1],
            in_hw: [side, side],
            out_hw: [side, side],
        };
        assert_eq!(out_tile(&p(8)), 2);
        assert_eq!(out_tile(&p(F4_MIN_SIDE)), 4);
        assert_eq!(tiles(&p(13)), 16);
        assert_eq!(weight_len(&p(32)), 36 * 16 * 16);
        assert_eq!(
            transform_weights(&p(32), &vec![0.5; 16 * 16 * 9]).len(),
            weight_len(&p(32))
        );
    }

    #[test]
    fn matches_im2col_convolution_over_awkward_shapes() {
        // (c_in, c_out, padding, [h, w], n, bias)
        let cases = [
            (16, 16, [1, 1], [8, 8], 1, true),
            (16, 24, [1, 1], [7, 9], 2, false),
            (20, 16, [0, 0], [9, 6], 1, true),
            (16, 32, [2, 1], [5, 5], 3, true),
            (17, 19, [1, 0], [4, 11], 1, true),
            (64, 64, [1, 1], [16, 16], 1, true),
            // Several blocks of tile rows, the last one shorter.
            (64, 64, [1, 1], [40, 36], 2, true),
            // Enough work to split over threads, too few tiles: the 16 GEMMs are split.
            (128, 128, [1, 1], [8, 8], 1, false),
            // F(4×4)'s own sizes: edges of 1, 2 and 3 outputs past the last whole tile.
            (16, 16, [1, 1], [13, 14], 1, true),
            (24, 17, [1, 1], [15, 12], 2, true),
            (64, 64, [1, 1], [32, 32], 1, true),
        ];
        for (seed, &(c_in, c_out, padding, [h, w], n, bias)) in cases.iter().enumerate() {
            let out_hw = [
                out_len(h, 3, 1, padding[0], 1, false).unwrap(),
                out_len(w, 3, 1, padding[1], 1, false).unwrap(),
            ];
            let p = Conv2dParams {
                c_in,
                c_out,
                groups: 1,
                kernel: [3, 3],
                stride: [1, 1],
                padding,
                dilation: [1, 1],
                in_hw: [h, w],
                out_hw,
            };
            assert!(applies(&p));
            let s = seed as u64 * 10;
            let x = rand_vec(n * p.in_len(), s);
            let wt = rand_vec(p.c_out * p.fan_in(), s + 1);
            let b = rand_vec(c_out, s + 2);
            let (scale, shift) = (rand_vec(c_out, s + 3), rand_vec(c_out, s + 4));
            let bias = bias.then_some(&b[..]);
            let epilogue = Epilogue {
                affine: Some((&scale, &shift)),
                act: Some(Activation::Tanh),
            };
            let mut want = vec![f32::NAN; n * p.out_len()];
            conv2d_fused(
                &p,
                n,
                &x,
                &wt,
                bias,
                epilogue,
                1,
                &mut want,
                &mut Vec::new(),
            );
            for m in [2, 4] {
                let u = transform_weights_for(m, &p, &wt);
                for threads in [1, 2, 3] {
                    let mut got = vec![f32::NAN; n * p.out_len()];
                    crate::threads::install(threads, || {
                        conv2d_with(
                            m,
                            &p,
                            n,
                            &x,
                            &u,
                            bias,
                            epilogue,
                            threads,
                            &mut got,
                            &mut Vec::new(),
                        )
                    });
                    // F(4×4)'s larger transform constants cost about 8× F(2×2)'s rounding
                    // error (measured up to 6e-5 here, on outputs of magnitude ~8 before the
                    // epilogue), still far inside the PyTorch fixtures' rtol of 1e-4.
                    assert_close(&got, &want, if m == 4 { 2e-4 } else { 5e-5 });
                }
            }
        }
    }
}
