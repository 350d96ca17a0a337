//! 3×3 stride-1 convolution by Winograd's minimal filtering F(2×2, 3×3): each 2×2 output tile
//! comes from a 4×4 input tile with 16 multiplications per (input, output) channel pair instead
//! of 36, as 16 GEMMs over all tiles.
//!
//! With `d` a 4×4 input tile, `g` a 3×3 filter and
//! `Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1]`, `G = [1 0 0; ½ ½ ½; ½ −½ ½; 0 0 1]`,
//! `Aᵀ = [1 1 1 0; 0 1 −1 −1]`: `Y = Aᵀ [Σ_c (G g Gᵀ) ⊙ (Bᵀ d B)] A`.

use super::conv2d::{apply, Conv2dParams, Epilogue};
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

/// 2×2 output tiles of one sample.
pub const fn tiles(p: &Conv2dParams) -> usize {
    p.out_hw[0].div_ceil(2) * p.out_hw[1].div_ceil(2)
}

/// Scratch elements for one sample: the transformed input `[16, T, c_in]`, the products
/// `[16, T, c_out]`, and channel-last copies of the input `[H, W, c_in]` and output
/// `[OH, OW, c_out]`.
pub const fn scratch_len(p: &Conv2dParams) -> usize {
    16 * tiles(p) * (p.c_in + p.c_out)
        + p.in_hw[0] * p.in_hw[1] * p.c_in
        + p.out_hw[0] * p.out_hw[1] * p.c_out
}

/// Elements of the transformed weights, `[16, c_in, c_out]`.
pub const fn weight_len(p: &Conv2dParams) -> usize {
    16 * p.c_in * p.c_out
}

/// `U = G g Gᵀ` for every filter, laid out `[16, c_in, c_out]` (the GEMMs' B operands).
///
/// + `weight`: `[c_out, c_in, 3, 3]` (PyTorch's layout)
pub fn transform_weights(p: &Conv2dParams, weight: &[f32]) -> Vec<f32> {
    let (c_in, c_out) = (p.c_in, p.c_out);
    let mut u = vec![0.0f32; weight_len(p)];
    for o in 0..c_out {
        for c in 0..c_in {
            let g = &weight[(o * c_in + c) * 9..(o * c_in + c + 1) * 9];
            // Gg: 4×3, rows of G applied to the filter's rows.
            let mut gg = [[0.0f32; 3]; 4];
            for j in 0..3 {
                let (a, b, e) = (g[j], g[3 + j], g[6 + j]);
                gg[0][j] = a;
                gg[1][j] = 0.5 * (a + b + e);
                gg[2][j] = 0.5 * (a - b + e);
                gg[3][j] = e;
            }
            for (i, row) in gg.iter().enumerate() {
                let [a, b, e] = *row;
                let t = [a, 0.5 * (a + b + e), 0.5 * (a - b + e), e];
                for (j, &v) in t.iter().enumerate() {
                    u[((i * 4 + j) * c_in + c) * c_out + o] = v;
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
/// the 16 GEMMs and the output transform of one block run back to back while its data is in
/// cache. With `threads > 1` (on a worker of the pool) the blocks are shared out, and so are
/// the layout changes; a layer with too few tiles per thread splits the 16 GEMMs instead.
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
    let (c_in, c_out, t) = (p.c_in, p.c_out, tiles(p));
    let ([h, w], [oh, ow]) = (p.in_hw, p.out_hw);
    let (th, tw) = (oh.div_ceil(2), ow.div_ceil(2));
    assert!(u.len() >= weight_len(p), "winograd weights too short");
    assert!(input.len() >= n * p.in_len(), "winograd input too short");
    assert!(out.len() >= n * p.out_len(), "winograd output too short");
    if scratch.len() < scratch_len(p) {
        scratch.resize(scratch_len(p), 0.0);
    }
    let (vm, rest) = scratch[..scratch_len(p)].split_at_mut(16 * t * (c_in + c_out));
    let (xt, yt) = rest.split_at_mut(h * w * c_in);
    let big = t * c_in * c_out * 16 >= MIN_MACS_PER_SPLIT;
    let threads = if big { threads.max(1) } else { 1 };
    // Tile rows per block: the block's transformed input and products fit the cache budget,
    // and with threads every thread gets a block.
    let row_bytes = 16 * tw * (c_in + c_out) * std::mem::size_of::<f32>();
    let mut rows = (BLOCK_BYTES / row_bytes).clamp(1, th);
    if threads > 1 {
        rows = rows.min(th.div_ceil(threads));
    }
    let split_tiles = threads == 1 || rows * tw >= MIN_TILES_PER_BLOCK;
    let (v_block, m_block) = (16 * rows * tw * c_in, 16 * rows * tw * c_out);
    // LOOP over samples
    for (x, y) in input
        .chunks_exact(p.in_len())
        .zip(out.chunks_exact_mut(p.out_len()))
        .take(n)
    {
        // LOOP over blocks of input rows: to channel-last
        let in_rows = h.div_ceil(threads);
        let xt_rows = xt.chunks_mut(in_rows * w * c_in);
        crate::threads::for_each(xt_rows, |i, xt_part| {
            to_channels_last(x, h * w, c_in, i * in_rows * w, xt_part);
        });
        if split_tiles {
            // LOOP over blocks of tile rows, shared out over threads
            let (vs, ms) = vm.split_at_mut(16 * t * c_in);
            let blocks = vs
                .chunks_mut(v_block)
                .zip(ms.chunks_mut(m_block))
                .zip(yt.chunks_mut(2 * rows * ow * c_out));
            crate::threads::for_each(blocks, |b, ((v, m), yt_part)| {
                let (ty0, ty1) = (b * rows, ((b + 1) * rows).min(th));
                let tb = (ty1 - ty0) * tw;
                transform_input(p, xt, ty0, ty1, v);
                // LOOP over the 16 tile positions: V[ξ] (tb × C) · U[ξ] (C × O)
                for (xi, m_xi) in m.chunks_exact_mut(tb * c_out).enumerate() {
                    let v_xi = &v[xi * tb * c_in..(xi + 1) * tb * c_in];
                    let u_xi = &u[xi * c_in * c_out..(xi + 1) * c_in * c_out];
                    crate::gemm::sgemm(tb, c_in, c_out, v_xi, u_xi, m_xi, false);
                }
                transform_output(p, m, ty0, ty1, bias, yt_part);
            });
        } else {
            // Few tiles: one block, its 16 GEMMs split over threads.
            let (v, m) = vm.split_at_mut(16 * t * c_in);
            transform_input(p, xt, 0, th, v);
            let per = 16usize.div_ceil(threads.min(16));
            let parts = m.chunks_mut(per * t * c_out);
            crate::threads::for_each(parts, |b, part| {
                for (i, m_xi) in part.chunks_exact_mut(t * c_out).enumerate() {
                    let xi = b * per + i;
                    let v_xi = &v[xi * t * c_in..(xi + 1) * t * c_in];
                    let u_xi = &u[xi * c_in * c_out..(xi + 1) * c_in * c_out];
                    crate::gemm::sgemm(t, c_in, c_out, v_xi, u_xi, m_xi, false);
                }
            });
            transform_output(p, m, 0, th, bias, yt);
        }
        // LOOP over blocks of output channels: to channels-first, then the epilogue
        let per = c_out.div_ceil(threads);
        let planes = y.chunks_mut(per * oh * ow);
        let yt = &*yt;
        crate::threads::for_each(planes, |i, y_part| {
            to_channels_first(yt, c_out, i * per, y_part);
            apply(epilogue, i * per, y_part.chunks_exact_mut(oh * ow));
        });
    }
}

/// Bytes of transformed input and products per block of tile rows: about half of L2.
const BLOCK_BYTES: usize = 512 << 10;
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

/// Runs `$body::<S>(args…, c0, c1)` over channels `0..$c`: whole vectors of the best
/// instruction set, then the remaining channels one at a time, each inside a function compiled
/// for that instruction set.
macro_rules! by_vectors {
    ($body:ident, $c:expr, ($($arg:ident: $ty:ty),*)) => {{
        use crate::gemm::{Scalar, Simd};
        #[cfg(target_arch = "x86_64")]
        {
            use crate::gemm::{Avx2, Avx512};
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
            fn avx512($($arg: $ty,)* c: usize) {
                let whole = c - c % Avx512::LANES;
                // SAFETY: compiled with AVX-512F, the only feature `Avx512` uses.
                unsafe { $body::<Avx512>($($arg,)* 0, whole) };
                // SAFETY: `Scalar` needs no feature.
                unsafe { $body::<Scalar>($($arg,)* whole, c) };
            }
            #[target_feature(enable = "avx2,fma")]
            fn avx2($($arg: $ty,)* c: usize) {
                let whole = c - c % Avx2::LANES;
                // SAFETY: compiled with AVX2, the only feature `Avx2` uses here.
                unsafe { $body::<Avx2>($($arg,)* 0, whole) };
                // SAFETY: `Scalar` needs no feature.
                unsafe { $body::<Scalar>($($arg,)* whole, c) };
            }
            match crate::simd::isa() {
                // SAFETY: `isa()` detected every feature `avx512` is compiled with.
                crate::simd::Isa::Avx512 => return unsafe { avx512($($arg,)* $c) },
                // SAFETY: `isa()` detected every feature `avx2` is compiled with.
                crate::simd::Isa::Avx2 => return unsafe { avx2($($arg,)* $c) },
                crate::simd::Isa::Baseline => {}
            }
        }
        let _ = Scalar::LANES;
        // SAFETY: `Scalar` needs no feature.
        unsafe { $body::<Scalar>($($arg,)* 0, $c) };
    }};
}

/// `V[ξ, t, c] = (Bᵀ d B)[ξ]` for the 4×4 tile `d` of channel `c` at tile `t` of tile rows
/// `ty0..ty1` (zero outside the input), from the channel-last input `xt: [H, W, C]`.
fn transform_input(p: &Conv2dParams, xt: &[f32], ty0: usize, ty1: usize, v: &mut [f32]) {
    by_vectors!(input_tiles, p.c_in, (p: &Conv2dParams, xt: &[f32], ty0: usize, ty1: usize, v: &mut [f32]))
}

/// [`transform_input`] for channels `c0..c1`, `S::LANES` at a time (`c1 − c0` a multiple).
///
/// # Safety
/// The CPU has `S`'s features.
#[inline(always)]
unsafe fn input_tiles<S: crate::gemm::Simd>(
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
    let tw = p.out_hw[1].div_ceil(2);
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
                let mut d = [[zero; 4]; 4];
                for (i, row) in d.iter_mut().enumerate() {
                    let iy = (2 * ty + i).wrapping_sub(ph);
                    if iy >= h {
                        continue;
                    }
                    for (j, e) in row.iter_mut().enumerate() {
                        let ix = (2 * tx + j).wrapping_sub(pw);
                        if ix < w {
                            let at = (iy * w + ix) * c_in + c;
                            // SAFETY: see above.
                            *e = unsafe { S::load(xt[at..at + n].as_ptr()) };
                        }
                    }
                }
                // Bᵀ d, then (Bᵀ d) B
                let mut b = [[zero; 4]; 4];
                for j in 0..4 {
                    // SAFETY: see above.
                    unsafe {
                        b[0][j] = S::sub(d[0][j], d[2][j]);
                        b[1][j] = S::add(d[1][j], d[2][j]);
                        b[2][j] = S::sub(d[2][j], d[1][j]);
                        b[3][j] = S::sub(d[1][j], d[3][j]);
                    }
                }
                for (i, r) in b.iter().enumerate() {
                    // SAFETY: see above.
                    let row = unsafe {
                        [
                            S::sub(r[0], r[2]),
                            S::add(r[1], r[2]),
                            S::sub(r[2], r[1]),
                            S::sub(r[1], r[3]),
                        ]
                    };
                    for (j, &val) in row.iter().enumerate() {
                        let at = ((i * 4 + j) * t_all + t) * c_in + c;
                        // SAFETY: see above.
                        unsafe { S::store(v[at..at + n].as_mut_ptr(), val) };
                    }
                }
            }
        }
    }
}

/// `yt[2ty + i, 2tx + j, o] = bias[o] + (Aᵀ m A)[i, j]` with `m[ξ] = M[ξ, t, o]` for the
/// tiles of tile rows `ty0..ty1`, clipped to the output (`yt` is channel-last
/// `[OH, OW, c_out]` from output row `2·ty0` on).
fn transform_output(
    p: &Conv2dParams,
    m: &[f32],
    ty0: usize,
    ty1: usize,
    bias: Option<&[f32]>,
    yt: &mut [f32],
) {
    by_vectors!(
        output_tiles,
        p.c_out,
        (p: &Conv2dParams, m: &[f32], ty0: usize, ty1: usize, bias: Option<&[f32]>, yt: &mut [f32])
    )
}

/// [`transform_output`] for channels `o0..o1`, `S::LANES` at a time (`o1 − o0` a multiple).
///
/// # Safety
/// The CPU has `S`'s features.
#[inline(always)]
#[allow(clippy::too_many_arguments)] // transform_output's arguments and the channel range
unsafe fn output_tiles<S: crate::gemm::Simd>(
    p: &Conv2dParams,
    m: &[f32],
    ty0: usize,
    ty1: usize,
    bias: Option<&[f32]>,
    yt: &mut [f32],
    o0: usize,
    o1: usize,
) {
    let [oh, ow] = p.out_hw;
    let tw = ow.div_ceil(2);
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
                let mut e = [zero; 16];
                for (xi, lane) in e.iter_mut().enumerate() {
                    let at = (xi * t_all + t) * c_out + o;
                    // SAFETY: see above.
                    *lane = unsafe { S::load(m[at..at + n].as_ptr()) };
                }
                let bv = match bias {
                    // SAFETY: see above.
                    Some(b) => unsafe { S::load(b[o..o + n].as_ptr()) },
                    None => zero,
                };
                // Aᵀ m: 2×4
                let mut a = [[zero; 4]; 2];
                for j in 0..4 {
                    // SAFETY: see above.
                    unsafe {
                        a[0][j] = S::add(S::add(e[j], e[4 + j]), e[8 + j]);
                        a[1][j] = S::sub(S::sub(e[4 + j], e[8 + j]), e[12 + j]);
                    }
                }
                for (i, r) in a.iter().enumerate() {
                    if 2 * ty + i >= oh {
                        continue;
                    }
                    let oy = 2 * (ty - ty0) + i;
                    // SAFETY: see above.
                    let vals = unsafe {
                        [
                            S::add(bv, S::add(S::add(r[0], r[1]), r[2])),
                            S::add(bv, S::sub(S::sub(r[1], r[2]), r[3])),
                        ]
                    };
                    for (j, &val) in vals.iter().enumerate() {
                        let ox = 2 * tx + j;
                        if ox < ow {
                            let at = (oy * ow + ox) * c_out + o;
                            // SAFETY: see above.
                            unsafe { S::store(yt[at..at + n].as_mut_ptr(), val) };
                        }
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
            let u = transform_weights(&p, &wt);
            for threads in [1, 2, 3] {
                let mut got = vec![f32::NAN; n * p.out_len()];
                crate::threads::pool(threads).install(|| {
                    conv2d(
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
                let mut want = vec![f32::NAN; n * p.out_len()];
                let mut scratch = Vec::new();
                conv2d_fused(&p, n, &x, &wt, bias, epilogue, 1, &mut want, &mut scratch);
                assert_close(&got, &want, 2e-5);
            }
        }
    }
}
